//! The fuse scheduler: every interval, the leader evaluates each active fuse with the
//! rules of METHODS.md §2(e) and applies the decision once.
//!
//! One evaluation = load the fuse and its users' aggregates (store) → classify users
//! into treatment and control by the managed strategy's bucket → build the decision
//! input (`domain::fuse::build_tick_input`) → decide (`domain::stats::evaluate`) →
//! apply atomically with an optimistic version check (two replicas, or a retry after a
//! crash, cannot apply a decision twice) → notify webhooks. Time is a parameter, so
//! tests and the backtest drive it without sleeping.

mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::eval::normalized_hash;
use crate::domain::events::MAX_FUTURE_SKEW_MS;
use crate::domain::fuse::outcomes::OutcomeNames;
use crate::domain::fuse::settings::FuseSettings;
use crate::domain::fuse::{build_tick_input, Arm, CohortUser, Epoch, MetricSummary};
use crate::domain::stats::{evaluate, Decision, DecisionKind, DecisionRule, RolloutState};
use crate::snapshot::SnapshotCache;
use crate::store::{Actor, FuseChange, FuseRecord, FuseSnapshot, Store, StoreError};

pub use webhooks::Notifier;

const MS_PER_HOUR: i64 = 3_600_000;

/// Errors of one fuse evaluation.
#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    #[error("{0}")]
    NotFound(String),
    #[error("the fuse's stored configuration is invalid: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One evaluation's result: what the API shows and the UI charts.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FuseEvaluation {
    pub feature: String,
    pub environment: String,
    pub evaluated_at: i64,
    /// Status after this evaluation: ramping, throttled, rolled_back, released,
    /// paused, srm_hold, held.
    pub status: String,
    pub exposure_before: f64,
    pub exposure_after: f64,
    /// Whether the decision was carried out (false for dry runs and lost races).
    pub applied: bool,
    pub treatment_users: u64,
    pub control_users: u64,
    /// Users evaluated by the flag but outside both arms (e.g. excluded by targeting).
    pub excluded_users: u64,
    pub metrics: Vec<MetricSummary>,
    #[schema(value_type = Object)]
    pub decision: Decision,
}

/// One look of a backtest.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BacktestLook {
    pub at: i64,
    #[schema(value_type = String)]
    pub decision: DecisionKind,
    #[schema(value_type = String)]
    pub rule: DecisionRule,
    /// The simulated fuse's exposure before and after this look.
    pub exposure_before: f64,
    pub exposure_after: f64,
    /// The exposure that was really in force at this time.
    pub actual_exposure: f64,
    pub treatment_users: u64,
    pub control_users: u64,
}

/// The scheduler's shared handle.
pub struct Scheduler {
    store: Arc<dyn Store>,
    snapshots: Arc<SnapshotCache>,
    notifier: Notifier,
    /// Whether this replica led at its last leadership check (shown by /health).
    leading: std::sync::atomic::AtomicBool,
    /// Held for the length of a pass, so shutdown can wait for the one under way.
    pass: tokio::sync::Mutex<()>,
    stopping: std::sync::atomic::AtomicBool,
}

/// Status name for a fuse after a decision.
pub fn status_of(record: &FuseRecord, state: &RolloutState, decision: Option<&Decision>) -> String {
    if record.paused {
        return "paused".into();
    }
    if record.locked {
        return "rolled_back".into();
    }
    if let Some(d) = decision {
        if d.kind == DecisionKind::Hold {
            return if matches!(
                d.rule,
                DecisionRule::SrmDetected | DecisionRule::SrmPersisted
            ) {
                "srm_hold".into()
            } else {
                "held".into()
            };
        }
    }
    if state.exposure_pct >= 100.0 {
        "released".into()
    } else if state.throttles_without_recovery > 0 {
        "throttled".into()
    } else {
        "ramping".into()
    }
}

/// `rollout` parameter text for an exposure: integers without a fraction.
pub fn rollout_text(pct: f64) -> String {
    if (pct - pct.round()).abs() < 1e-9 {
        format!("{}", pct.round() as i64)
    } else {
        format!("{pct:.2}").trim_end_matches('0').to_string()
    }
}

fn history(record: &FuseRecord) -> Vec<(i64, f64)> {
    serde_json::from_value(record.rollout_history.clone()).unwrap_or_default()
}

/// The exposure in force at `t` (before the history begins: its first value).
fn exposure_at(history: &[(i64, f64)], t: i64) -> Option<f64> {
    history
        .iter()
        .rev()
        .find(|(at, _)| *at <= t)
        .or(history.first())
        .map(|(_, pct)| *pct)
}

impl Scheduler {
    pub fn new(store: Arc<dyn Store>, snapshots: Arc<SnapshotCache>) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            notifier: Notifier::new(store.clone()),
            store,
            snapshots,
            leading: std::sync::atomic::AtomicBool::new(false),
            pass: tokio::sync::Mutex::new(()),
            stopping: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Lets a pass under way finish, and starts no other.
    pub async fn shutdown(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        let _pass = self.pass.lock().await;
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether this replica currently runs the scheduler.
    pub fn is_leading(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs until the process ends: every `interval`, if this replica leads, one tick.
    pub async fn run(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if self.is_stopping() {
                return;
            }
            let lead = self.store.try_lead().await;
            self.leading.store(
                matches!(lead, Ok(true)),
                std::sync::atomic::Ordering::Relaxed,
            );
            match lead {
                Ok(true) => {
                    let started = std::time::Instant::now();
                    let evaluated = self.tick(crate::store::now_ms()).await;
                    if let Some(m) = crate::metrics::metrics() {
                        m.scheduler_pass.observe(started.elapsed().as_secs_f64());
                    }
                    tracing::debug!(
                        fuses = evaluated,
                        took_ms = started.elapsed().as_millis() as u64,
                        "scheduler pass"
                    );
                }
                Ok(false) => tracing::debug!("another replica leads the scheduler"),
                Err(e) => tracing::warn!(error = %e, "scheduler leadership check failed"),
            }
        }
    }

    /// One pass over every active fuse at `now_ms`; returns how many were evaluated
    /// (none once shutdown has begun).
    pub async fn tick(&self, now_ms: i64) -> usize {
        let _pass = self.pass.lock().await;
        if self.is_stopping() {
            return 0;
        }
        let fuses = match self.store.active_fuses().await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "listing fuses failed");
                return 0;
            }
        };
        let mut evaluated = 0;
        for (feature, environment) in fuses {
            match self.evaluate(&feature, &environment, now_ms, true).await {
                Ok(_) => evaluated += 1,
                Err(e) => {
                    tracing::warn!(%feature, %environment, error = %e, "fuse evaluation failed")
                }
            }
        }
        evaluated
    }

    /// Analyses a fuse at `now_ms` and decides; with `apply`, carries the decision out
    /// (once) and notifies. Paused or locked fuses are analysed but never changed.
    pub async fn evaluate(
        &self,
        feature: &str,
        environment: &str,
        now_ms: i64,
        apply: bool,
    ) -> Result<FuseEvaluation, FuseError> {
        let record = self
            .store
            .get_fuse(feature, environment)
            .await?
            .ok_or_else(|| {
                FuseError::NotFound(format!("no fuse on `{feature}` in `{environment}`"))
            })?;
        let settings: FuseSettings = serde_json::from_value(record.config.clone())
            .map_err(|e| FuseError::Corrupt(e.to_string()))?;
        let state: RolloutState = serde_json::from_value(record.state.clone())
            .map_err(|e| FuseError::Corrupt(e.to_string()))?;
        let min_p: HashMap<String, f64> =
            serde_json::from_value(record.min_p.clone()).unwrap_or_default();
        let history = history(&record);

        let look = self
            .analyze(&record, &settings, &state, &history, &min_p, now_ms, None)
            .await?;
        let (analysis_metrics, treatment_users, control_users, excluded, decision) = (
            look.metrics,
            look.treatment_users,
            look.control_users,
            look.excluded_users,
            look.decision,
        );

        let frozen = record.paused || record.locked;
        let next = if frozen {
            state.clone()
        } else {
            state.apply(&decision, now_ms)
        };
        let exposure_changed = (next.exposure_pct - state.exposure_pct).abs() > 1e-9;
        let mut updated = record.clone();
        let locked = record.locked || (!frozen && decision.kind == DecisionKind::Rollback);
        updated.locked = locked;
        updated.status = status_of(&updated, &next, (!frozen).then_some(&decision));
        let mut evaluation = FuseEvaluation {
            feature: feature.to_string(),
            environment: environment.to_string(),
            evaluated_at: now_ms,
            status: updated.status.clone(),
            exposure_before: state.exposure_pct,
            exposure_after: next.exposure_pct,
            applied: false,
            treatment_users,
            control_users,
            excluded_users: excluded,
            metrics: analysis_metrics,
            decision,
        };
        if !apply || frozen {
            return Ok(evaluation);
        }

        let mut sticky = min_p;
        for g in &evaluation.decision.guardrails {
            if let Some(p) = g.p_value_sticky {
                sticky.insert(g.name.clone(), p);
            }
        }
        let mut history = history;
        if exposure_changed {
            history.push((now_ms, next.exposure_pct));
        }
        let analysis_json = serde_json::to_value(&evaluation).unwrap_or_default();
        updated.state = serde_json::to_value(&next).unwrap_or_default();
        updated.min_p = serde_json::to_value(&sticky).unwrap_or_default();
        updated.rollout_history = serde_json::to_value(&history).unwrap_or_default();
        updated.last_decision = serde_json::to_value(&evaluation.decision).ok();
        updated.last_evaluated_at = Some(now_ms);
        let kind = serde_json::to_value(evaluation.decision.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let rule = serde_json::to_value(evaluation.decision.rule)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let status_changed = updated.status != record.status;
        let hour_passed = record
            .last_evaluated_at
            .is_none_or(|last| last.div_euclid(MS_PER_HOUR) != now_ms.div_euclid(MS_PER_HOUR));
        let audit = (exposure_changed || status_changed).then(|| {
            (
                format!("fuse-{}", kind.replace('_', "-")),
                serde_json::json!({ "exposure": state.exposure_pct, "status": record.status }),
                serde_json::json!({
                    "exposure": next.exposure_pct,
                    "status": updated.status,
                    "rule": rule,
                    "triggeredBy": evaluation.decision.triggered_by,
                    "analysis": analysis_json,
                }),
            )
        });
        let change = FuseChange {
            expected_version: record.version,
            rollout: exposure_changed.then(|| rollout_text(next.exposure_pct)),
            audit,
            snapshot: (exposure_changed || status_changed || hour_passed).then(|| FuseSnapshot {
                id: 0,
                created_at: now_ms,
                kind: kind.clone(),
                rule: rule.clone(),
                exposure_before: state.exposure_pct,
                exposure_after: next.exposure_pct,
                analysis: analysis_json.clone(),
            }),
            record: updated,
        };
        let applied = self
            .store
            .apply_fuse_change(&change, &Actor("fuse".into()))
            .await?;
        evaluation.applied = applied;
        if applied {
            if let Some(m) = crate::metrics::metrics() {
                m.fuse_decisions.with_label_values(&[kind.as_str()]).inc();
            }
        }
        if applied && (exposure_changed || status_changed) {
            if exposure_changed {
                if let Err(e) = self.snapshots.refresh().await {
                    tracing::warn!(error = %e, "refreshing flags after a fuse decision failed");
                }
            }
            let settings_urls = settings.webhook_urls.clone();
            if !settings_urls.is_empty() {
                self.notifier
                    .notify(&record.project, &evaluation, &kind, &rule, settings_urls);
            }
        }
        Ok(evaluation)
    }

    /// Replays the decision rules over stored events from `from` to `to` every `step`
    /// ms, as the scheduler would have decided at each look with only the events it
    /// could have seen. The data cannot know what the simulated policy would have
    /// changed, so users are classified and the SRM split taken from the rollout that
    /// was actually in force (the rollout history; before it, the current rollout). The
    /// simulated fuse starts at the ramp step matching the exposure at `from`.
    pub async fn backtest(
        &self,
        feature: &str,
        environment: &str,
        settings_override: Option<FuseSettings>,
        from: i64,
        to: i64,
        step: i64,
    ) -> Result<Vec<BacktestLook>, FuseError> {
        let record = self
            .store
            .get_fuse(feature, environment)
            .await?
            .ok_or_else(|| {
                FuseError::NotFound(format!("no fuse on `{feature}` in `{environment}`"))
            })?;
        let settings = match settings_override {
            Some(s) => s,
            None => serde_json::from_value(record.config.clone())
                .map_err(|e| FuseError::Corrupt(e.to_string()))?,
        };
        let current: RolloutState = serde_json::from_value(record.state.clone())
            .map_err(|e| FuseError::Corrupt(e.to_string()))?;
        let history = history(&record);
        let actual_at = |t: i64| -> f64 {
            match history.first() {
                Some((first, _)) if t >= *first => {
                    exposure_at(&history, t).unwrap_or(current.exposure_pct)
                }
                _ => current.exposure_pct,
            }
        };
        let mut state = RolloutState::start(&settings.stats, from, None)
            .map_err(|e| FuseError::Corrupt(e.to_string()))?;
        // The rollout's clock is the real one when it began before `from`, so the
        // maturity gates see the time that really passed.
        state.rollout_started_at_ms = current.rollout_started_at_ms.min(from);
        state.step_started_at_ms = history
            .iter()
            .rev()
            .find(|(at, _)| *at <= from)
            .map_or(state.rollout_started_at_ms, |(at, _)| *at);
        let start_pct = actual_at(from);
        state.exposure_pct = settings
            .stats
            .ramp_steps_pct
            .iter()
            .copied()
            .filter(|s| *s <= start_pct + 1e-9)
            .fold(state.exposure_pct, f64::max);
        let mut min_p = HashMap::new();
        let mut looks = Vec::new();
        let mut t = from;
        while t <= to {
            let epoch_start = history
                .iter()
                .rev()
                .find(|(at, _)| *at <= t)
                .map_or(from, |(at, _)| (*at).max(from));
            let epoch = Epoch {
                started_at_ms: epoch_start,
                treatment_pct: actual_at(t),
            };
            let look = self
                .analyze(&record, &settings, &state, &history, &min_p, t, Some(epoch))
                .await?;
            for g in &look.decision.guardrails {
                if let Some(p) = g.p_value_sticky {
                    min_p.insert(g.name.clone(), p);
                }
            }
            let next = state.apply(&look.decision, t);
            let kind = look.decision.kind;
            looks.push(BacktestLook {
                at: t,
                decision: kind,
                rule: look.decision.rule,
                exposure_before: state.exposure_pct,
                exposure_after: next.exposure_pct,
                actual_exposure: actual_at(t),
                treatment_users: look.treatment_users,
                control_users: look.control_users,
            });
            state = next;
            if kind == DecisionKind::Rollback {
                break; // locked until a person unlocks
            }
            t += step.max(1);
        }
        Ok(looks)
    }

    /// One look at `now_ms`: classify users, build the input, decide. `epoch_override`
    /// replaces the SRM epoch (the backtest takes it from the rollout history).
    #[allow(clippy::too_many_arguments)]
    async fn analyze(
        &self,
        record: &FuseRecord,
        settings: &FuseSettings,
        state: &RolloutState,
        history: &[(i64, f64)],
        min_p: &HashMap<String, f64>,
        now_ms: i64,
        epoch_override: Option<Epoch>,
    ) -> Result<Look, FuseError> {
        let feature = record.feature.as_str();
        let environment = record.environment.as_str();
        let strategy = self
            .store
            .get_feature(&record.project, feature)
            .await?
            .environments
            .into_iter()
            .find(|e| e.name == environment)
            .and_then(|e| {
                e.strategies
                    .into_iter()
                    .find(|s| s.id.as_deref() == Some(record.strategy_id.as_str()))
            })
            .ok_or_else(|| {
                FuseError::NotFound(format!(
                    "the managed strategy `{}` is gone",
                    record.strategy_id
                ))
            })?;
        let group_id = strategy
            .parameters
            .get("groupId")
            .filter(|g| !g.is_empty())
            .cloned()
            .unwrap_or_else(|| feature.to_string());
        // Buckets can be checked only when the user id is the hashing unit.
        let by_user = matches!(
            strategy.parameters.get("stickiness").map(String::as_str),
            None | Some("") | Some("default") | Some("userId")
        );

        let names = OutcomeNames {
            activation: settings.activation_events.clone(),
            adoption: settings.adoption_events.clone(),
        };
        // A look at the present reads the aggregates ingest keeps (one row per user).
        // A backtest look, or one asked for at a past time (`?at=`), must see only the
        // events up to its time, so it aggregates those.
        let present = now_ms >= crate::store::now_ms().saturating_sub(MAX_FUTURE_SKEW_MS);
        let rows = if epoch_override.is_none() && present {
            let mut rows = self
                .store
                .live_cohort_rows(environment, feature, &names)
                .await?;
            // Timestamps up to 5 minutes ahead are accepted at ingest; like the
            // backtest's as-of filter, a look does not count what has not happened yet.
            rows.retain(|r| r.t0 <= now_ms);
            for r in &mut rows {
                r.first_activation = r.first_activation.filter(|t| *t <= now_ms);
                r.first_error = r.first_error.filter(|t| *t <= now_ms);
            }
            rows
        } else {
            self.store
                .cohort_rows(environment, feature, now_ms, &names)
                .await?
        };
        let mut users = Vec::with_capacity(rows.len());
        let mut excluded = 0u64;
        for row in rows {
            let mut planned_move = false;
            let arm = if by_user {
                // Control = evaluated into the holdout range; a disabled user inside
                // the rollout range was excluded by targeting, an enabled user outside
                // it got the feature from another strategy: neither is in the experiment.
                let bucket = f64::from(normalized_hash(&group_id, &row.user_id, 100, 0));
                let pct = exposure_at(history, row.t0).unwrap_or(state.exposure_pct);
                // A promotion or throttle since t0 moves users across the boundary on
                // purpose: their changed assignment is not a multiple exposure.
                planned_move = (bucket <= pct) != (bucket <= state.exposure_pct);
                match (row.enabled, bucket <= pct) {
                    (true, true) => Some(Arm::Treatment),
                    (false, false) => Some(Arm::Control),
                    _ => None,
                }
            } else if row.enabled {
                Some(Arm::Treatment)
            } else {
                Some(Arm::Control)
            };
            let Some(arm) = arm else {
                excluded += 1;
                continue;
            };
            users.push(CohortUser {
                arm,
                t0_ms: row.t0,
                active_days: row.active_days,
                first_activation_ms: row.first_activation,
                first_error_ms: row.first_error,
                adopted: row.adopted,
                feedback: row.feedback,
                crossed_over: row.crossovers > 0 && !planned_move,
            });
        }
        let data_as_of = self
            .store
            .data_as_of(environment)
            .await?
            .unwrap_or(now_ms)
            .min(now_ms);
        let epoch = epoch_override.unwrap_or(Epoch {
            started_at_ms: state.step_started_at_ms,
            treatment_pct: state.exposure_pct,
        });
        let analysis = build_tick_input(
            &users,
            &settings.stats,
            &settings.windows(),
            !settings.activation_events.is_empty(),
            &epoch,
            now_ms,
            data_as_of,
            min_p,
        );
        let decision = evaluate(&settings.stats, state, &analysis.tick)
            .map_err(|e| FuseError::Corrupt(e.to_string()))?;
        Ok(Look {
            treatment_users: analysis.treatment_users,
            control_users: analysis.control_users,
            excluded_users: excluded,
            metrics: analysis.metrics,
            decision,
        })
    }
}

/// What one look found.
struct Look {
    treatment_users: u64,
    control_users: u64,
    excluded_users: u64,
    metrics: Vec<MetricSummary>,
    decision: Decision,
}
