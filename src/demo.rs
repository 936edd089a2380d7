//! `fusebox demo`: starts the server on a temporary SQLite database seeded with a
//! fortnight of history, so a newcomer sees every fuse state at once: one rollout the
//! fuse promoted to 100%, one it throttled and rolled back, one still ramping.
//!
//! The history is made the way production makes it: events go through
//! `POST /api/events`, fuses are armed through the API, and decisions come from the
//! scheduler's own evaluation at simulated times in the past.

use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use crate::app::{AppState, Application};
use crate::config::Settings;
use crate::domain::eval::normalized_hash;
use crate::domain::stats::RolloutState;
use crate::scheduler::rollout_text;
use crate::store::{Actor, FuseChange, Store};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const ADMIN: &str = "*:*.demo-admin-token";
const CLIENT: &str = "*:development.demo-client-token";

/// Options of `fusebox demo`.
#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:4242")]
    pub listen: String,
}

/// Builds, seeds and serves the demo until interrupted.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("fusebox-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let settings = Settings {
        addr: args.listen.clone(),
        database_url: format!("sqlite://{}", dir.join("demo.db").display()),
        init_admin_tokens: vec![ADMIN.into()],
        init_client_tokens: vec![CLIENT.into()],
        ..Settings::default()
    };
    let app = Application::build(settings).await?;
    let port = app.port();
    let state = app.state();
    let server = tokio::spawn(app.run_until_stopped());
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    println!("Seeding the demo (a fortnight of events for three rollouts)...");
    seed(&state, &http, &base).await?;
    println!(
        "\nFusebox demo on {base} (database in {})\n  admin token:  {ADMIN}\n  client token: {CLIENT}\n\n\
         Try:\n  curl -H 'Authorization: {ADMIN}' {base}/api/admin/projects/default/features/checkout-v2/environments/development/fuse\n  \
         curl -H 'Authorization: {ADMIN}' '{base}/api/admin/events?limit=5'\n  open {base}/docs/\n",
        dir.display()
    );
    server.await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    let r = http
        .request(method, url)
        .header("Authorization", token)
        .json(body)
        .send()
        .await?;
    let status = r.status();
    let text = r.text().await?;
    anyhow::ensure!(status.is_success(), "{status}: {text}");
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn send(http: &reqwest::Client, base: &str, events: Vec<Value>) -> anyhow::Result<()> {
    for chunk in events.chunks(5000) {
        call(
            http,
            reqwest::Method::POST,
            format!("{base}/api/events"),
            CLIENT,
            &json!(chunk),
        )
        .await?;
    }
    Ok(())
}

/// Moves a fuse's rollout start (and its only exposure epoch) to `t0`, at `pct`, as
/// if it had been armed then; the managed strategy follows. For seeding history (the
/// demo, tests), never for production decisions.
pub async fn rewind_fuse(
    store: &dyn Store,
    feature: &str,
    environment: &str,
    t0: i64,
    pct: f64,
) -> anyhow::Result<()> {
    let mut record = store
        .get_fuse(feature, environment)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no fuse on {feature} in {environment}"))?;
    let mut rollout: RolloutState = serde_json::from_value(record.state.clone())?;
    rollout.rollout_started_at_ms = t0;
    rollout.step_started_at_ms = t0;
    rollout.exposure_pct = pct;
    record.state = serde_json::to_value(&rollout)?;
    record.rollout_history = json!([[t0, pct]]);
    let saved = store.put_fuse(&record, None, &Actor::system()).await?;
    let change = FuseChange {
        expected_version: saved.version,
        record: saved,
        rollout: Some(rollout_text(pct)),
        audit: None,
        snapshot: None,
    };
    anyhow::ensure!(
        store.apply_fuse_change(&change, &Actor::system()).await?,
        "the fuse changed meanwhile"
    );
    Ok(())
}

/// Arms a fuse and moves its timeline to `t0` at `pct`, as if armed back then.
async fn arm_in_past(
    state: &AppState,
    http: &reqwest::Client,
    base: &str,
    feature: &str,
    config: Value,
    t0: i64,
    pct: f64,
) -> anyhow::Result<()> {
    let features = format!("{base}/api/admin/projects/default/features");
    call(
        http,
        reqwest::Method::POST,
        features.clone(),
        ADMIN,
        &json!({"name": feature, "description": format!("Demo rollout {feature}")}),
    )
    .await?;
    call(
        http,
        reqwest::Method::POST,
        format!("{features}/{feature}/environments/development/on"),
        ADMIN,
        &json!({}),
    )
    .await?;
    call(
        http,
        reqwest::Method::PUT,
        format!("{features}/{feature}/environments/development/fuse"),
        ADMIN,
        &config,
    )
    .await?;
    rewind_fuse(state.store.as_ref(), feature, "development", t0, pct).await
}

/// One arriving user's events: exposure with the split in force, a first session
/// (attributed to the feature for treatment users: adoption), and a day-1 return
/// with probability `d1` (a deterministic low-discrepancy draw).
#[allow(clippy::too_many_arguments)]
fn user_events(
    feature: &str,
    user: &str,
    index: usize,
    t: i64,
    exposure: f64,
    d1_control: f64,
    d1_treatment: f64,
) -> Vec<Value> {
    let treated = f64::from(normalized_hash(feature, user, 100, 0)) <= exposure;
    let mut first = json!({"type": "activity", "user_id": user, "name": "session_start", "timestamp": t + HOUR});
    if treated {
        first["feature"] = json!(feature);
    }
    let mut events = vec![
        json!({"type": "exposure", "user_id": user, "feature": feature, "enabled": treated, "timestamp": t}),
        first,
    ];
    let p = if treated { d1_treatment } else { d1_control };
    if ((index as f64 * 0.618_033_988_7) % 1.0) < p {
        events.push(json!({"type": "activity", "user_id": user, "name": "session_start", "timestamp": t + 30 * HOUR}));
    }
    events
}

/// Users arrive in 3-hour slices under the exposure in force; the fuse looks after
/// each slice. Returns the final exposure.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn replay(
    state: &AppState,
    http: &reqwest::Client,
    base: &str,
    feature: &str,
    t0: i64,
    slices: i64,
    per_slice: usize,
    d1: (f64, f64),
) -> anyhow::Result<f64> {
    let mut exposure = state
        .store
        .get_fuse(feature, "development")
        .await?
        .and_then(|f| serde_json::from_value::<RolloutState>(f.state).ok())
        .map_or(0.0, |s| s.exposure_pct);
    let mut index = 0;
    for slice in 0..slices {
        let start = t0 + slice * 3 * HOUR;
        let mut events = Vec::new();
        for k in 0..per_slice {
            index += 1;
            let user = format!("{feature}-user-{index}");
            let t = start + (k as i64 * 3 * HOUR) / per_slice as i64;
            events.extend(user_events(feature, &user, index, t, exposure, d1.0, d1.1));
        }
        send(http, base, events).await?;
        let look = state
            .scheduler
            .evaluate(feature, "development", start + 3 * HOUR, true)
            .await?;
        exposure = look.exposure_after;
        if look.status == "rolled_back" || look.status == "released" {
            break;
        }
    }
    Ok(exposure)
}

async fn seed(state: &AppState, http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let now = crate::store::now_ms();
    let config =
        json!({"ramp_steps_pct": [10, 50, 100], "retention_days": [1], "min_users_per_arm": 100});
    // A good feature: equal retention, adopted; promoted step by step to 100%.
    let t0 = now - 14 * DAY;
    arm_in_past(state, http, base, "checkout-v2", config.clone(), t0, 10.0).await?;
    let good = replay(
        state,
        http,
        base,
        "checkout-v2",
        t0,
        12 * 8,
        125,
        (0.30, 0.30),
    )
    .await?;
    println!("  checkout-v2: released at {good}% (promoted by the fuse)");
    // A harmful feature: D1 retention 40% -> 32% for those who get it.
    arm_in_past(state, http, base, "dark-mode", config.clone(), t0, 50.0).await?;
    let harmful = replay(
        state,
        http,
        base,
        "dark-mode",
        t0,
        12 * 8,
        125,
        (0.40, 0.32),
    )
    .await?;
    println!("  dark-mode: rolled back to {harmful}% and locked (retention harm)");
    // A recent rollout, still collecting evidence.
    let recent = now - 2 * DAY;
    arm_in_past(state, http, base, "search-v2", config, recent, 10.0).await?;
    let ramping = replay(
        state,
        http,
        base,
        "search-v2",
        recent,
        12,
        125,
        (0.30, 0.30),
    )
    .await?;
    println!("  search-v2: ramping at {ramping}%");
    Ok(())
}
