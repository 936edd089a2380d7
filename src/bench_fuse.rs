//! `fusebox bench-fuse`: how long one scheduler evaluation of a fuse takes as its
//! data grows. Arms a fuse, then generates `--users` exposed users with
//! `--events-per-user` events (one exposure, the rest activity over two weeks)
//! straight into the store (no HTTP, no validation: this measures the analysis, not
//! ingestion; the store still maintains the fuse's per-user aggregates as it does at
//! ingest), and times full evaluations (aggregate read, classification, statistics,
//! decision, snapshot). For comparison it also times the from-scratch aggregation over
//! the raw events that backtests use.

use std::sync::Arc;
use std::time::Instant;

use clap::Args;

use crate::domain::eval::normalized_hash;
use crate::domain::fuse::settings::FuseSettings;
use crate::domain::model::Strategy;
use crate::domain::stats::RolloutState;
use crate::scheduler::Scheduler;
use crate::snapshot::SnapshotCache;
use crate::store::{self, Actor, FeatureFields, FuseRecord, NewEvent};

/// Options of `fusebox bench-fuse`.
#[derive(Debug, Args, Clone)]
pub struct BenchFuseArgs {
    /// Exposed users.
    #[arg(long, default_value_t = 100_000)]
    pub users: usize,
    /// Events per user (one exposure, the rest activity).
    #[arg(long, default_value_t = 10)]
    pub events_per_user: usize,
    /// Database [default: a temporary SQLite file].
    #[arg(long = "database-url")]
    pub database_url: Option<String>,
    /// Timed evaluations.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
}

const DAY: i64 = 86_400_000;

pub async fn run(args: BenchFuseArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("fusebox-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("bench.db").display()));
    let store = store::connect(&url, None, store::DEFAULT_SQLITE_EVENT_TAIL).await?;
    let actor = Actor::system();
    let feature = format!("bench.{}", uuid::Uuid::new_v4().simple());
    store
        .create_feature(
            "default",
            &FeatureFields {
                name: feature.clone(),
                description: None,
                feature_type: "release".into(),
                impression_data: false,
                stale: false,
            },
            &actor,
        )
        .await?;
    let strategy = Strategy {
        id: None,
        name: "flexibleRollout".into(),
        title: None,
        disabled: None,
        sort_order: None,
        parameters: [
            ("rollout", "50"),
            ("stickiness", "default"),
            ("groupId", feature.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        constraints: Vec::new(),
        segments: None,
        variants: None,
    };
    let strategy = store
        .add_strategy("default", &feature, "development", &strategy, &actor)
        .await?;

    let now = store::now_ms();
    let t0 = now - 20 * DAY;
    let settings = FuseSettings {
        strategy_id: strategy.id.clone(),
        ..FuseSettings::default()
    };
    let mut rollout = RolloutState::start(&settings.stats, t0, None)?;
    rollout.exposure_pct = 50.0;
    let record = FuseRecord {
        project: "default".into(),
        feature: feature.clone(),
        environment: "development".into(),
        strategy_id: strategy.id.clone().unwrap_or_default(),
        config: serde_json::to_value(&settings)?,
        state: serde_json::to_value(&rollout)?,
        status: "ramping".into(),
        locked: false,
        paused: false,
        min_p: serde_json::json!({}),
        rollout_history: serde_json::json!([[t0, 50.0]]),
        last_decision: None,
        last_evaluated_at: None,
        version: 0,
        created_at: t0,
        updated_at: t0,
    };
    store.put_fuse(&record, None, &actor).await?;
    // Aggregates are built at the first live look (empty here) and kept current by
    // ingest from then on, as in production.
    let names = crate::domain::fuse::outcomes::OutcomeNames::default();
    store
        .live_cohort_rows("development", &feature, &names)
        .await?;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(20_000);
    let mut written = 0usize;
    for u in 0..args.users {
        let user = format!("user-{u}");
        let treated = normalized_hash(&feature, &user, 100, 0) <= 50;
        let at = t0 + (u as i64 * 2 * DAY) / args.users.max(1) as i64;
        for k in 0..args.events_per_user {
            let (kind, name, ts) = if k == 0 {
                ("exposure", None, at)
            } else {
                (
                    "activity",
                    Some("session_start".to_string()),
                    at + (k as i64 * 14 * DAY) / args.events_per_user as i64,
                )
            };
            batch.push(NewEvent {
                id: format!("{u:08x}-0000-4000-8000-{k:012x}"),
                environment: "development".into(),
                kind,
                user_id: user.clone(),
                feature: (k == 0 || k == 1).then(|| feature.clone()),
                name,
                enabled: (k == 0).then_some(treated),
                variant: None,
                score: None,
                session_id: None,
                properties: None,
                ts,
                received_at: now,
            });
            if batch.len() == batch.capacity() {
                written += batch.len();
                store.ingest(&batch, &[]).await?;
                batch.clear();
            }
        }
    }
    written += batch.len();
    store.ingest(&batch, &[]).await?;
    println!(
        "generated {} users, {} events in {:.1} s",
        args.users,
        written,
        started.elapsed().as_secs_f64()
    );

    let snapshots = SnapshotCache::new(store.clone()).await?;
    let scheduler = Scheduler::new(Arc::clone(&store), snapshots);
    let mut times = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let started = Instant::now();
        // A look at the present (generation can take minutes): it reads the aggregates.
        let look = scheduler
            .evaluate(&feature, "development", store::now_ms(), false)
            .await?;
        times.push(started.elapsed().as_secs_f64());
        println!(
            "evaluation: {:.3} s ({} treatment, {} control users; decision {:?})",
            started.elapsed().as_secs_f64(),
            look.treatment_users,
            look.control_users,
            look.decision.kind
        );
    }
    let started = Instant::now();
    let live = store
        .live_cohort_rows("development", &feature, &names)
        .await?;
    println!(
        "of which reading the {} users' aggregates: {:.3} s",
        live.len(),
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let scanned = store
        .cohort_rows("development", &feature, now, &names)
        .await?;
    println!(
        "for comparison, aggregating the {} users from the raw events (backtest path): {:.3} s",
        scanned.len(),
        started.elapsed().as_secs_f64()
    );
    times.sort_by(f64::total_cmp);
    println!(
        "{} users, {} events on {}: median scheduler evaluation {:.3} s",
        args.users,
        written,
        if url.starts_with("postgres") {
            "postgresql"
        } else {
            "sqlite"
        },
        times[times.len() / 2]
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
