//! Per-tick fuse decision rules (METHODS.md §2d gates and §2e rules; first match wins).
//!
//! 0. `hold` on SRM, stale data or multiple exposure (`rollback` if SRM persists);
//! 1. metrics failing the §2d gates `wait` (are ignored this tick);
//! 2. `rollback` on proven harm (one-sided CS at `α_rb/k`);
//! 3. `throttle` on probable harm (at `α_th/k` but not `α_rb/k`), at most once per `T_min`,
//!    `rollback` after repeated throttles without recovery;
//! 4. `promote` when the step has run long enough, adoption is met and, for 100%, the
//!    retention read is mature and non-inferior (or the end-of-window policy says ship);
//! 5. otherwise `continue`.
//!
//! [`evaluate`] is pure: the caller passes the frozen [`RolloutState`], this tick's data and
//! the current time, and persists the state returned by [`RolloutState::apply`].

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::config::{ConfigError, EndOfWindowPolicy, FuseConfig};
use super::proportions::ProportionCounts;
use super::sequential::{one_sided_bounds, sequential_from_estimate, sticky_min, OneSidedBounds};
use super::srm::{srm_check, SrmEpoch, SrmResult};
use super::{Interval, StatsError};

const MS_PER_HOUR: f64 = 3_600_000.0;
/// Tolerance for comparing exposure percentages (they can be halved repeatedly).
const PCT_EPS: f64 = 1e-9;

/// What a guardrail measures; fixes its direction and when its read is mature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetricKind {
    /// N-day retention (higher is better); mature `(N + W)` days plus lag after first exposure.
    Retention {
        /// N.
        day: u32,
    },
    /// Activation within `window_hours` of first exposure (higher is better).
    Activation {
        /// Activation window `A` in hours.
        window_hours: u32,
    },
    /// Share of users with at least one error within `window_hours` (lower is better).
    ErrorRate {
        /// Error window `E` in hours.
        window_hours: u32,
    },
}

impl MetricKind {
    fn higher_is_better(self) -> bool {
        !matches!(self, MetricKind::ErrorRate { .. })
    }

    /// Hours after rollout start before any user's read can be complete (§2d gate 1, §2f).
    fn maturity_hours(self, cfg: &FuseConfig) -> f64 {
        let lag = f64::from(cfg.ingestion_lag_hours);
        match self {
            MetricKind::Retention { day } => {
                (f64::from(day) + f64::from(cfg.retention_window_days)) * 24.0 + lag
            }
            MetricKind::Activation { window_hours } | MetricKind::ErrorRate { window_hours } => {
                f64::from(window_hours) + lag
            }
        }
    }
}

/// One guardrail metric's counts this tick (eligible users only, METHODS.md §2f).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GuardrailInput {
    /// Metric name, echoed in the audit log.
    pub name: String,
    /// Kind (direction and maturity).
    pub kind: MetricKind,
    /// Cumulative counts since the rollout started (statistics are never reset).
    pub counts: ProportionCounts,
    /// Running minimum always-valid p-value from earlier ticks, if any.
    #[serde(default)]
    pub previous_min_p_value: Option<f64>,
}

/// A point estimate `total / count` (adoption share, mean satisfaction score).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RateEstimate {
    /// Sum of the per-user values (adopters, or summed scores in [0, 1]).
    pub total: f64,
    /// Users contributing.
    pub count: u64,
}

impl RateEstimate {
    /// `total / count`, or `None` when nobody contributed or the total is not finite.
    pub fn rate(&self) -> Option<f64> {
        (self.count > 0 && self.total.is_finite()).then(|| self.total / self.count as f64)
    }
}

/// Everything the rules read for one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TickInput {
    /// Scheduler time, Unix ms.
    pub now_ms: i64,
    /// Time up to which events have been ingested, Unix ms.
    pub data_as_of_ms: i64,
    /// Assignment counts of the current exposure epoch and its configured split (SRM input).
    pub assignment: SrmEpoch,
    /// Share of users exposed to both variants.
    pub multiple_exposure_rate: f64,
    /// Guardrail metrics; `k` for Bonferroni is their number.
    pub guardrails: Vec<GuardrailInput>,
    /// Adoption among exposed users.
    pub adoption: RateEstimate,
    /// Satisfaction among exposed users, if collected (absent: not gated).
    #[serde(default)]
    pub satisfaction: Option<RateEstimate>,
}

/// State the scheduler persists per rollout between ticks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RolloutState {
    /// Current exposure %; 0 after a rollback (terminal until a human re-enables).
    pub exposure_pct: f64,
    /// When the rollout started, Unix ms.
    pub rollout_started_at_ms: i64,
    /// When the current step (exposure epoch) started, Unix ms.
    pub step_started_at_ms: i64,
    /// Tuning `S`, fixed at start.
    pub tuning_s: f64,
    /// Throttles since the last tick without probable harm.
    pub throttles_without_recovery: u32,
    /// Last throttle time, Unix ms.
    pub last_throttle_at_ms: Option<i64>,
    /// Since when SRM has been failing continuously, Unix ms.
    pub srm_failing_since_ms: Option<i64>,
}

/// The action of a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Freeze exposure and alert (data quality or end-of-window policy).
    Hold,
    /// Not enough data or time yet; keep exposure.
    Wait,
    /// Set exposure to 0 and disable the flag.
    Rollback,
    /// Halve exposure (floored at the first step).
    Throttle,
    /// Move to the next step.
    Promote,
    /// Keep exposure; nothing to do.
    Continue,
}

/// The rule that fired (audit-log rule id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionRule {
    /// Exposure is 0 (rolled back): nothing is evaluated.
    NotActive,
    /// Rule 0: SRM p below threshold.
    SrmDetected,
    /// Rule 0: SRM has persisted past `srm_rollback_after_hours`.
    SrmPersisted,
    /// Rule 0: data older than `max_data_staleness_hours`.
    StaleData,
    /// Rule 0: multiple-exposure rate above the maximum.
    MultipleExposure,
    /// Rule 2: retention/activation upper bound below `min_retention_delta`.
    RetentionOrActivationHarm,
    /// Rule 2: error-rate lower bound above `max_error_delta`.
    ErrorRateIncrease,
    /// Rule 2: one-sample lower bound of the treatment error rate above `max_error_rate`.
    ErrorRateCeiling,
    /// Rule 3: probable harm and the throttle budget is used up.
    RepeatedThrottle,
    /// Rule 3: probable harm.
    ProbableHarm,
    /// Rule 3: probable harm, but the last throttle was less than `T_min` ago.
    ThrottleCooldown,
    /// Rule 4 blocked: less than `T_min` (or the observation window) at this step.
    MinStepTime,
    /// Rule 4 blocked: fewer than `min_users_per_arm` assigned per arm in this step.
    SampleGate,
    /// Rule 4 blocked (to 100%): runtime or retention maturity not reached.
    RetentionImmature,
    /// Rule 4 blocked (to 100%): a retention read is missing or fails the §2d gates.
    RetentionNotReadable,
    /// Rule 4 blocked: adoption below `min_adoption` (or unknown).
    AdoptionBelowMinimum,
    /// Rule 4 blocked: reported satisfaction below `min_satisfaction`.
    SatisfactionBelowMinimum,
    /// Rule 4: intermediate step complete.
    StepComplete,
    /// Rule 4: to 100% with non-inferiority shown on every retention read.
    NonInferiorityShown,
    /// Rule 4: to 100% at the end of the window without harm (policy `promote_if_no_harm`).
    EndOfWindowNoHarm,
    /// Rule 4: end of window, inconclusive, policy `hold`.
    EndOfWindowInconclusive,
    /// Rule 5: already at the last step.
    AtFullExposure,
}

/// Why a guardrail may not drive a decision this tick (§2d).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// The metric's window plus lag has not elapsed since rollout start.
    WindowNotClosed,
    /// An arm has fewer than `min_users_per_arm` eligible users.
    TooFewUsers,
    /// Successes or failures summed over both arms below `min_successes_and_failures`.
    TooFewSuccessesOrFailures,
    /// Error-rate metric with no observed error.
    NoErrorsObserved,
    /// `V = 0`: no variance, no decision.
    InsufficientVariance,
}

/// Whether a guardrail was evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuardrailStatus {
    /// Bounds computed.
    Evaluated,
    /// Ignored this tick; see `wait_reason`.
    Waiting,
}

/// Harm verdict of one guardrail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HarmLevel {
    /// No harm shown (or not evaluated).
    None,
    /// Throttle inequality met, rollback inequality not.
    Probable,
    /// Rollback inequality met.
    Proven,
}

/// Audit record of one guardrail at one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GuardrailEvaluation {
    /// Metric name.
    pub name: String,
    /// Kind.
    pub kind: MetricKind,
    /// Evaluated or waiting.
    pub status: GuardrailStatus,
    /// Why it waits.
    pub wait_reason: Option<WaitReason>,
    /// Counts used.
    pub counts: ProportionCounts,
    /// `N = n_c + n_t`.
    pub n_total: f64,
    /// `Δ̂`.
    pub delta: Option<f64>,
    /// `V`.
    pub variance: Option<f64>,
    /// Harm bound at `α_rb/k` (upper bound if higher is better, lower bound otherwise).
    pub harm_bound_rollback: Option<f64>,
    /// Harm bound at `α_th/k`.
    pub harm_bound_throttle: Option<f64>,
    /// `ρ₁` at `α_rb/k`.
    pub rho_rollback: Option<f64>,
    /// `ρ₁` at `α_th/k`.
    pub rho_throttle: Option<f64>,
    /// Error rates: one-sample lower bound of `p_t` at `α_rb/k`.
    pub ceiling_bound_rollback: Option<f64>,
    /// Error rates: one-sample lower bound of `p_t` at `α_th/k`.
    pub ceiling_bound_throttle: Option<f64>,
    /// Retention: `Δ̂ − HW₁(α_rb)` (not split), compared with `min_retention_delta`.
    pub non_inferiority_bound: Option<f64>,
    /// Two-sided CS at `display_alpha`.
    pub cs: Option<Interval>,
    /// Always-valid p-value for `Δ = 0` at this look.
    pub p_value: Option<f64>,
    /// Running minimum including this look; persist it as `previous_min_p_value`.
    pub p_value_sticky: Option<f64>,
    /// Harm verdict.
    pub harm: HarmLevel,
    /// Rule that would fire for this metric alone (rollback rules only).
    pub harm_rule: Option<DecisionRule>,
}

/// Decision of one tick with everything the audit log needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    /// Action.
    pub kind: DecisionKind,
    /// Rule id.
    pub rule: DecisionRule,
    /// Exposure before the decision.
    pub from_exposure_pct: f64,
    /// Exposure after the decision (equal to `from_exposure_pct` unless it changes).
    pub target_exposure_pct: f64,
    /// Metric that triggered rollback or throttle.
    pub triggered_by: Option<String>,
    /// `S` used.
    pub tuning_s: f64,
    /// `k`, the Bonferroni divisor.
    pub guardrail_count: usize,
    /// `α_rb / k`.
    pub alpha_rollback_per_guardrail: f64,
    /// `α_th / k`.
    pub alpha_throttle_per_guardrail: f64,
    /// SRM result of the current epoch.
    pub srm: SrmResult,
    /// Hours since `data_as_of_ms`.
    pub data_lag_hours: f64,
    /// Hours at the current step.
    pub hours_at_step: f64,
    /// Hours since rollout start.
    pub hours_since_start: f64,
    /// Adoption point estimate.
    pub adoption_rate: Option<f64>,
    /// Satisfaction point estimate.
    pub satisfaction_rate: Option<f64>,
    /// True when some guardrail shows probable or proven harm this tick.
    pub probable_harm: bool,
    /// Per-guardrail audit records.
    pub guardrails: Vec<GuardrailEvaluation>,
}

/// Invalid configuration or input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecisionError {
    /// The fuse configuration fails validation.
    #[error("invalid fuse config: {}", join(.0))]
    InvalidConfig(Vec<ConfigError>),
    /// A count or parameter is invalid.
    #[error("invalid input: {0}")]
    InvalidInput(#[from] StatsError),
}

fn join(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn hours_between(from_ms: i64, to_ms: i64) -> f64 {
    // Clock skew (to < from) counts as no time elapsed rather than negative time.
    (to_ms.saturating_sub(from_ms).max(0)) as f64 / MS_PER_HOUR
}

impl RolloutState {
    /// Starts a rollout at the first step, fixing `S` for its lifetime.
    pub fn start(
        config: &FuseConfig,
        now_ms: i64,
        baseline_rate: Option<f64>,
    ) -> Result<Self, DecisionError> {
        config.validate().map_err(DecisionError::InvalidConfig)?;
        let first = config.ramp_steps_pct.first().copied().unwrap_or(100.0);
        Ok(Self {
            exposure_pct: first,
            rollout_started_at_ms: now_ms,
            step_started_at_ms: now_ms,
            tuning_s: config.resolve_tuning(baseline_rate)?,
            throttles_without_recovery: 0,
            last_throttle_at_ms: None,
            srm_failing_since_ms: None,
        })
    }

    /// The state after `decision` was carried out at `now_ms`.
    ///
    /// A changed exposure starts a new step (and so a new SRM epoch: the caller resets its
    /// per-epoch assignment counts). A tick with evaluated guardrails and no probable harm
    /// counts as recovery and clears the throttle counter.
    pub fn apply(&self, decision: &Decision, now_ms: i64) -> Self {
        let mut next = self.clone();
        next.srm_failing_since_ms = if decision.srm.mismatch {
            self.srm_failing_since_ms.or(Some(now_ms))
        } else {
            None
        };
        let evaluated = decision
            .guardrails
            .iter()
            .any(|g| g.status == GuardrailStatus::Evaluated);
        if evaluated && !decision.probable_harm {
            next.throttles_without_recovery = 0;
        }
        match decision.kind {
            DecisionKind::Throttle => {
                next.throttles_without_recovery = self.throttles_without_recovery.saturating_add(1);
                next.last_throttle_at_ms = Some(now_ms);
            }
            DecisionKind::Rollback => next.srm_failing_since_ms = None,
            _ => {}
        }
        if (decision.target_exposure_pct - self.exposure_pct).abs() > PCT_EPS
            || decision.kind == DecisionKind::Throttle
        {
            next.exposure_pct = decision.target_exposure_pct;
            next.step_started_at_ms = now_ms;
        }
        next
    }
}

/// Per-guardrail evaluation context shared by all metrics of a tick.
struct Ctx<'a> {
    cfg: &'a FuseConfig,
    tuning: f64,
    alpha_rb_k: f64,
    alpha_th_k: f64,
    hours_since_start: f64,
}

/// Evaluates one tick (METHODS.md §2e). Errors only on invalid config or input.
pub fn evaluate(
    config: &FuseConfig,
    state: &RolloutState,
    input: &TickInput,
) -> Result<Decision, DecisionError> {
    config.validate().map_err(DecisionError::InvalidConfig)?;
    if !(state.tuning_s.is_finite() && state.tuning_s > 0.0) {
        return Err(StatsError::OutOfRange {
            name: "tuning_s",
            range: "(0, inf)",
            value: state.tuning_s,
        }
        .into());
    }
    if !(input.multiple_exposure_rate.is_finite()
        && (0.0..=1.0).contains(&input.multiple_exposure_rate))
    {
        return Err(StatsError::OutOfRange {
            name: "multiple_exposure_rate",
            range: "[0, 1]",
            value: input.multiple_exposure_rate,
        }
        .into());
    }

    // k counts every configured guardrail, waiting or not, so α/k stays fixed over the rollout.
    let k = input.guardrails.len().max(1);
    let ctx = Ctx {
        cfg: config,
        tuning: state.tuning_s,
        alpha_rb_k: config.alpha_rollback / k as f64,
        alpha_th_k: config.alpha_throttle / k as f64,
        hours_since_start: hours_between(state.rollout_started_at_ms, input.now_ms),
    };
    let guardrails = input
        .guardrails
        .iter()
        .map(|g| evaluate_guardrail(&ctx, g))
        .collect::<Result<Vec<_>, _>>()?;
    let srm = srm_check(&input.assignment, config.srm_p_threshold)?;

    let mut d = Decision {
        kind: DecisionKind::Continue,
        rule: DecisionRule::AtFullExposure,
        from_exposure_pct: state.exposure_pct,
        target_exposure_pct: state.exposure_pct,
        triggered_by: None,
        tuning_s: state.tuning_s,
        guardrail_count: input.guardrails.len(),
        alpha_rollback_per_guardrail: ctx.alpha_rb_k,
        alpha_throttle_per_guardrail: ctx.alpha_th_k,
        srm,
        data_lag_hours: hours_between(input.data_as_of_ms, input.now_ms),
        hours_at_step: hours_between(state.step_started_at_ms, input.now_ms),
        hours_since_start: ctx.hours_since_start,
        adoption_rate: input.adoption.rate(),
        satisfaction_rate: input.satisfaction.and_then(|s| s.rate()),
        probable_harm: guardrails.iter().any(|g| g.harm != HarmLevel::None),
        guardrails,
    };
    let (kind, rule, target, by) = decide(config, state, input, &d);
    d.kind = kind;
    d.rule = rule;
    d.target_exposure_pct = target;
    d.triggered_by = by;
    Ok(d)
}

type Outcome = (DecisionKind, DecisionRule, f64, Option<String>);

/// Applies rules 0–5 in order to the already computed evaluations.
fn decide(cfg: &FuseConfig, state: &RolloutState, input: &TickInput, d: &Decision) -> Outcome {
    let cur = state.exposure_pct;
    let keep = |kind, rule| (kind, rule, cur, None);
    if cur <= PCT_EPS {
        return keep(DecisionKind::Continue, DecisionRule::NotActive);
    }

    // Rule 0: data quality. SRM makes comparisons untrustworthy, not harmful, so it holds;
    // only SRM persisting beyond the configured time rolls back.
    if d.srm.mismatch {
        let persisted = state.srm_failing_since_ms.is_some_and(|since| {
            hours_between(since, input.now_ms) >= f64::from(cfg.srm_rollback_after_hours)
        });
        return if persisted {
            (
                DecisionKind::Rollback,
                DecisionRule::SrmPersisted,
                0.0,
                None,
            )
        } else {
            keep(DecisionKind::Hold, DecisionRule::SrmDetected)
        };
    }
    if d.data_lag_hours > f64::from(cfg.max_data_staleness_hours) {
        return keep(DecisionKind::Hold, DecisionRule::StaleData);
    }
    if input.multiple_exposure_rate > cfg.max_multiple_exposure_rate {
        return keep(DecisionKind::Hold, DecisionRule::MultipleExposure);
    }

    // Rule 2: proven harm on any evaluated guardrail (waiting ones have HarmLevel::None).
    if let Some(g) = d.guardrails.iter().find(|g| g.harm == HarmLevel::Proven) {
        let rule = g
            .harm_rule
            .unwrap_or(DecisionRule::RetentionOrActivationHarm);
        return (DecisionKind::Rollback, rule, 0.0, Some(g.name.clone()));
    }

    // Rule 3: probable harm. Throttle at most once per T_min; after the allowed number of
    // throttles without recovery, the next one becomes a rollback.
    if let Some(g) = d.guardrails.iter().find(|g| g.harm == HarmLevel::Probable) {
        let by = Some(g.name.clone());
        let cooling = state
            .last_throttle_at_ms
            .is_some_and(|t| hours_between(t, input.now_ms) < f64::from(cfg.min_hours_per_step));
        if cooling {
            return (
                DecisionKind::Continue,
                DecisionRule::ThrottleCooldown,
                cur,
                by,
            );
        }
        if state.throttles_without_recovery >= cfg.max_throttles_without_recovery {
            return (
                DecisionKind::Rollback,
                DecisionRule::RepeatedThrottle,
                0.0,
                by,
            );
        }
        let floor = cfg.ramp_steps_pct.first().copied().unwrap_or(cur);
        let target = (cur / 2.0).max(floor).min(cur);
        return (
            DecisionKind::Throttle,
            DecisionRule::ProbableHarm,
            target,
            by,
        );
    }

    // Rule 4: promotion.
    let Some(next) = cfg
        .ramp_steps_pct
        .iter()
        .copied()
        .find(|&s| s > cur + PCT_EPS)
    else {
        return keep(DecisionKind::Continue, DecisionRule::AtFullExposure);
    };
    let to_full = next >= 100.0 - PCT_EPS;
    let required_hours = if to_full {
        cfg.min_hours_per_step.max(cfg.observation_window_hours)
    } else {
        cfg.min_hours_per_step
    };
    if d.hours_at_step < f64::from(required_hours) {
        return keep(DecisionKind::Wait, DecisionRule::MinStepTime);
    }
    let n_min = cfg.min_users_per_arm;
    if input.assignment.treatment_users < n_min || input.assignment.control_users < n_min {
        return keep(DecisionKind::Wait, DecisionRule::SampleGate);
    }
    if d.adoption_rate.is_none_or(|a| a < cfg.min_adoption) {
        return keep(DecisionKind::Continue, DecisionRule::AdoptionBelowMinimum);
    }
    if d.satisfaction_rate
        .is_some_and(|s| s < cfg.min_satisfaction)
    {
        return keep(
            DecisionKind::Continue,
            DecisionRule::SatisfactionBelowMinimum,
        );
    }
    if !to_full {
        return (
            DecisionKind::Promote,
            DecisionRule::StepComplete,
            next,
            None,
        );
    }

    // To 100%: ≥ 7 days runtime and every configured retention read mature, gated and
    // non-inferior; otherwise the end-of-window policy decides (no harm was found above).
    let mature_at = f64::from(cfg.min_total_runtime_hours).max(cfg.retention_maturity_hours());
    if d.hours_since_start < mature_at {
        return keep(DecisionKind::Wait, DecisionRule::RetentionImmature);
    }
    let mut all_non_inferior = true;
    for &day in &cfg.retention_days {
        let read = d
            .guardrails
            .iter()
            .find(|g| g.kind == MetricKind::Retention { day });
        match read {
            Some(g) if g.status == GuardrailStatus::Evaluated => {
                all_non_inferior &= g
                    .non_inferiority_bound
                    .is_some_and(|b| b > cfg.min_retention_delta);
            }
            _ => return keep(DecisionKind::Wait, DecisionRule::RetentionNotReadable),
        }
    }
    if all_non_inferior {
        return (
            DecisionKind::Promote,
            DecisionRule::NonInferiorityShown,
            next,
            None,
        );
    }
    match cfg.end_of_window_policy {
        EndOfWindowPolicy::PromoteIfNoHarm => (
            DecisionKind::Promote,
            DecisionRule::EndOfWindowNoHarm,
            next,
            None,
        ),
        EndOfWindowPolicy::Hold => keep(DecisionKind::Hold, DecisionRule::EndOfWindowInconclusive),
    }
}

/// §2d gates 1–2 for one metric; `None` when it may drive a decision.
fn gate(ctx: &Ctx<'_>, g: &GuardrailInput) -> Option<WaitReason> {
    let c = &g.counts;
    let n_min = ctx.cfg.min_users_per_arm;
    let min_sf = ctx.cfg.min_successes_and_failures;
    if ctx.hours_since_start < g.kind.maturity_hours(ctx.cfg) {
        Some(WaitReason::WindowNotClosed)
    } else if c.control_users < n_min || c.treatment_users < n_min {
        Some(WaitReason::TooFewUsers)
    } else if c.total_successes() < min_sf || c.total_failures() < min_sf {
        Some(WaitReason::TooFewSuccessesOrFailures)
    } else if matches!(g.kind, MetricKind::ErrorRate { .. }) && c.total_successes() == 0 {
        Some(WaitReason::NoErrorsObserved)
    } else {
        None
    }
}

fn evaluate_guardrail(
    ctx: &Ctx<'_>,
    g: &GuardrailInput,
) -> Result<GuardrailEvaluation, DecisionError> {
    g.counts.validate()?;
    let cfg = ctx.cfg;
    let n = g.counts.total_users();
    // The display part (two-sided CS, p-value) is computed even while waiting: it is shown,
    // never acted on, and the sticky p-value must see every look.
    let (delta, variance) = match g.counts.delta_and_variance() {
        Some((dl, v)) => (Some(dl), Some(v)),
        None => (None, None),
    };
    let display = match (delta, variance) {
        (Some(dl), Some(v)) => Some(sequential_from_estimate(
            dl,
            v,
            n,
            cfg.display_alpha,
            ctx.tuning,
        )?),
        _ => None,
    };
    let p_value = display.and_then(|s| s.p_value);
    let mut ev = GuardrailEvaluation {
        name: g.name.clone(),
        kind: g.kind,
        status: GuardrailStatus::Waiting,
        wait_reason: None,
        counts: g.counts,
        n_total: n,
        delta,
        variance,
        harm_bound_rollback: None,
        harm_bound_throttle: None,
        rho_rollback: None,
        rho_throttle: None,
        ceiling_bound_rollback: None,
        ceiling_bound_throttle: None,
        non_inferiority_bound: None,
        cs: display.and_then(|s| s.cs),
        p_value,
        p_value_sticky: sticky_min(g.previous_min_p_value, p_value),
        harm: HarmLevel::None,
        harm_rule: None,
    };
    let wait = gate(ctx, g).or(match variance {
        Some(v) if v > 0.0 => None,
        _ => Some(WaitReason::InsufficientVariance),
    });
    if let Some(reason) = wait {
        ev.wait_reason = Some(reason);
        return Ok(ev);
    }
    let (Some(dl), Some(v)) = (delta, variance) else {
        ev.wait_reason = Some(WaitReason::InsufficientVariance);
        return Ok(ev);
    };
    ev.status = GuardrailStatus::Evaluated;

    let bounds = |alpha: f64| one_sided_bounds(dl, v, n, alpha, ctx.tuning);
    let rb = bounds(ctx.alpha_rb_k)?;
    let th = bounds(ctx.alpha_th_k)?;
    ev.rho_rollback = rb.map(|b| b.rho);
    ev.rho_throttle = th.map(|b| b.rho);

    if g.kind.higher_is_better() {
        // Harm: upper bound below the lowest acceptable delta.
        let harmed =
            |b: Option<OneSidedBounds>| b.is_some_and(|b| b.upper < cfg.min_retention_delta);
        ev.harm_bound_rollback = rb.map(|b| b.upper);
        ev.harm_bound_throttle = th.map(|b| b.upper);
        if matches!(g.kind, MetricKind::Retention { .. }) {
            // Non-inferiority for 100% is an intersection-union test over the retention
            // reads, so it uses α_rb unsplit.
            ev.non_inferiority_bound = bounds(cfg.alpha_rollback)?.map(|b| b.lower);
        }
        ev.harm = level(harmed(rb), harmed(th));
        if ev.harm == HarmLevel::Proven {
            ev.harm_rule = Some(DecisionRule::RetentionOrActivationHarm);
        }
    } else {
        let harmed = |b: Option<OneSidedBounds>| b.is_some_and(|b| b.lower > cfg.max_error_delta);
        ev.harm_bound_rollback = rb.map(|b| b.lower);
        ev.harm_bound_throttle = th.map(|b| b.lower);
        // Hard ceiling: one-sample CS on the treatment error rate, V = p_t(1−p_t)/n_t, N = n_t.
        let nt = g.counts.treatment_users as f64;
        let pt = g.counts.treatment_successes as f64 / nt;
        let v1 = pt * (1.0 - pt) / nt;
        let ceiling = |alpha: f64| one_sided_bounds(pt, v1, nt, alpha, ctx.tuning);
        let c_rb = ceiling(ctx.alpha_rb_k)?;
        let c_th = ceiling(ctx.alpha_th_k)?;
        ev.ceiling_bound_rollback = c_rb.map(|b| b.lower);
        ev.ceiling_bound_throttle = c_th.map(|b| b.lower);
        let over = |b: Option<OneSidedBounds>| b.is_some_and(|b| b.lower > cfg.max_error_rate);
        let delta_level = level(harmed(rb), harmed(th));
        let ceiling_level = level(over(c_rb), over(c_th));
        ev.harm = delta_level.max_by_severity(ceiling_level);
        ev.harm_rule = if delta_level == HarmLevel::Proven {
            Some(DecisionRule::ErrorRateIncrease)
        } else if ceiling_level == HarmLevel::Proven {
            Some(DecisionRule::ErrorRateCeiling)
        } else {
            None
        };
    }
    Ok(ev)
}

fn level(proven: bool, probable: bool) -> HarmLevel {
    if proven {
        HarmLevel::Proven
    } else if probable {
        HarmLevel::Probable
    } else {
        HarmLevel::None
    }
}

impl HarmLevel {
    fn rank(self) -> u8 {
        match self {
            HarmLevel::None => 0,
            HarmLevel::Probable => 1,
            HarmLevel::Proven => 2,
        }
    }

    fn max_by_severity(self, other: Self) -> Self {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type R = Result<(), DecisionError>;
    const H: i64 = 3_600_000;
    const NOW: i64 = 300 * H;

    fn counts(nc: u64, xc: u64, nt: u64, xt: u64) -> ProportionCounts {
        ProportionCounts {
            control_users: nc,
            control_successes: xc,
            treatment_users: nt,
            treatment_successes: xt,
        }
    }

    fn metric(name: &str, kind: MetricKind, c: ProportionCounts) -> GuardrailInput {
        GuardrailInput {
            name: name.to_string(),
            kind,
            counts: c,
            previous_min_p_value: None,
        }
    }

    fn d1(c: ProportionCounts) -> GuardrailInput {
        metric("d1_retention", MetricKind::Retention { day: 1 }, c)
    }

    fn d7(c: ProportionCounts) -> GuardrailInput {
        metric("d7_retention", MetricKind::Retention { day: 7 }, c)
    }

    fn errors(c: ProportionCounts) -> GuardrailInput {
        metric("error_rate", MetricKind::ErrorRate { window_hours: 24 }, c)
    }

    // With k = 1, S = 5000 and 20 000 users per arm at a 30% baseline (see METHODS.md §2b):
    fn healthy() -> ProportionCounts {
        counts(20_000, 6_000, 20_000, 6_000)
    }
    /// 30% → 26.8%: the upper bound is below −0.02 at α = 0.20 but not at α = 0.05.
    fn probable_harm() -> ProportionCounts {
        counts(20_000, 6_000, 20_000, 5_360)
    }
    /// 30% → 26%: the upper bound is below −0.02 even at α = 0.05.
    fn proven_harm() -> ProportionCounts {
        counts(20_000, 6_000, 20_000, 5_200)
    }

    fn cfg() -> FuseConfig {
        FuseConfig {
            tuning_s: Some(5000.0),
            ..FuseConfig::default()
        }
    }

    /// Started 300 h ago (every window closed), 30 h into the current step.
    fn state(exposure_pct: f64) -> RolloutState {
        RolloutState {
            exposure_pct,
            rollout_started_at_ms: 0,
            step_started_at_ms: NOW - 30 * H,
            tuning_s: 5000.0,
            throttles_without_recovery: 0,
            last_throttle_at_ms: None,
            srm_failing_since_ms: None,
        }
    }

    fn tick(guardrails: Vec<GuardrailInput>) -> TickInput {
        TickInput {
            now_ms: NOW,
            data_as_of_ms: NOW - H,
            assignment: SrmEpoch {
                treatment_users: 1_000,
                control_users: 1_000,
                treatment_weight: 50.0,
                control_weight: 50.0,
            },
            multiple_exposure_rate: 0.0,
            guardrails,
            adoption: RateEstimate {
                total: 300.0,
                count: 1_000,
            },
            satisfaction: None,
        }
    }

    fn outcome(d: &Decision) -> (DecisionKind, DecisionRule, f64) {
        (d.kind, d.rule, d.target_exposure_pct)
    }

    #[test]
    fn a_healthy_step_that_ran_long_enough_is_promoted_to_the_next_step() -> R {
        let d = evaluate(&cfg(), &state(25.0), &tick(vec![d1(healthy())]))?;
        assert_eq!(
            outcome(&d),
            (DecisionKind::Promote, DecisionRule::StepComplete, 50.0)
        );
        assert!(!d.probable_harm);
        assert_eq!(d.guardrails[0].status, GuardrailStatus::Evaluated);
        Ok(())
    }

    #[test]
    fn a_sample_ratio_mismatch_holds_the_flag_even_with_proven_harm() -> R {
        let mut t = tick(vec![d1(proven_harm())]);
        t.assignment.treatment_users = 800;
        let d = evaluate(&cfg(), &state(25.0), &t)?;
        assert_eq!(
            outcome(&d),
            (DecisionKind::Hold, DecisionRule::SrmDetected, 25.0)
        );
        assert!(d.srm.mismatch);
        Ok(())
    }

    #[test]
    fn a_sample_ratio_mismatch_that_persisted_for_a_day_rolls_back() -> R {
        let mut t = tick(vec![d1(healthy())]);
        t.assignment.treatment_users = 800;
        let mut s = state(25.0);
        s.srm_failing_since_ms = Some(NOW - 25 * H);
        let d = evaluate(&cfg(), &s, &t)?;
        assert_eq!(
            outcome(&d),
            (DecisionKind::Rollback, DecisionRule::SrmPersisted, 0.0)
        );
        Ok(())
    }

    #[test]
    fn stale_data_holds_the_flag() -> R {
        let mut t = tick(vec![d1(proven_harm())]);
        t.data_as_of_ms = NOW - 7 * H;
        let d = evaluate(&cfg(), &state(25.0), &t)?;
        assert_eq!(
            outcome(&d),
            (DecisionKind::Hold, DecisionRule::StaleData, 25.0)
        );
        Ok(())
    }

    #[test]
    fn a_multiple_exposure_rate_above_one_percent_holds_the_flag() -> R {
        let mut t = tick(vec![d1(healthy())]);
        t.multiple_exposure_rate = 0.02;
        let d = evaluate(&cfg(), &state(25.0), &t)?;
        assert_eq!(
            outcome(&d),
            (DecisionKind::Hold, DecisionRule::MultipleExposure, 25.0)
        );
        Ok(())
    }

    #[test]
    fn proven_retention_harm_rolls_back_and_names_the_metric() -> R {
        let d = evaluate(&cfg(), &state(25.0), &tick(vec![d1(proven_harm())]))?;
        assert_eq!(
            outcome(&d),
            (
                DecisionKind::Rollback,
                DecisionRule::RetentionOrActivationHarm,
                0.0
            )
        );
        assert_eq!(d.triggered_by.as_deref(), Some("d1_retention"));
        let g = &d.guardrails[0];
        assert!(g.harm_bound_rollback.is_some_and(|u| u < -0.02));
        Ok(())
    }

    #[test]
    fn a_proven_error_rate_increase_rolls_back() -> R {
        let t = tick(vec![errors(counts(20_000, 200, 20_000, 400))]);
        let d = evaluate(&cfg(), &state(25.0), &t)?;
        assert_eq!(
            outcome(&d),
            (DecisionKind::Rollback, DecisionRule::ErrorRateIncrease, 0.0)
        );
        Ok(())
    }

    #[test]
    fn an_error_rate_above_the_ceiling_rolls_back_even_when_the_increase_is_tolerated() -> R {
        let c = FuseConfig {
            max_error_delta: 0.05,
            ..cfg()
        };
        let t = tick(vec![errors(counts(20_000, 200, 20_000, 500))]);
        let d = evaluate(&c, &state(25.0), &t)?;
        assert_eq!(
            outcome(&d),
            (DecisionKind::Rollback, DecisionRule::ErrorRateCeiling, 0.0)
        );
        assert!(d.guardrails[0]
            .ceiling_bound_rollback
            .is_some_and(|l| l > 0.02));
        Ok(())
    }

    #[test]
    fn probable_harm_halves_the_exposure() -> R {
        let d = evaluate(&cfg(), &state(50.0), &tick(vec![d1(probable_harm())]))?;
        assert_eq!(
            outcome(&d),
            (DecisionKind::Throttle, DecisionRule::ProbableHarm, 25.0)
        );
        assert_eq!(d.guardrails[0].harm, HarmLevel::Probable);
        Ok(())
    }

    #[test]
    fn a_throttle_is_floored_at_the_first_step() -> R {
        let d = evaluate(&cfg(), &state(5.0), &tick(vec![d1(probable_harm())]))?;
        assert_eq!(
            outcome(&d),
            (DecisionKind::Throttle, DecisionRule::ProbableHarm, 5.0)
        );
        Ok(())
    }

    #[test]
    fn a_second_throttle_within_the_minimum_step_time_is_deferred() -> R {
        let mut s = state(25.0);
        s.throttles_without_recovery = 1;
        s.last_throttle_at_ms = Some(NOW - 10 * H);
        let d = evaluate(&cfg(), &s, &tick(vec![d1(probable_harm())]))?;
        assert_eq!(
            outcome(&d),
            (DecisionKind::Continue, DecisionRule::ThrottleCooldown, 25.0)
        );
        Ok(())
    }

    #[test]
    fn probable_harm_after_two_throttles_without_recovery_rolls_back() -> R {
        let mut s = state(12.5);
        s.throttles_without_recovery = 2;
        s.last_throttle_at_ms = Some(NOW - 30 * H);
        let d = evaluate(&cfg(), &s, &tick(vec![d1(probable_harm())]))?;
        assert_eq!(
            outcome(&d),
            (DecisionKind::Rollback, DecisionRule::RepeatedThrottle, 0.0)
        );
        Ok(())
    }

    #[test]
    fn guardrails_split_alpha_over_their_number() -> R {
        // The same counts that throttle alone are not even probable harm at α/3.
        let t = tick(vec![
            d1(probable_harm()),
            d7(healthy()),
            errors(counts(20_000, 200, 20_000, 200)),
        ]);
        let d = evaluate(&cfg(), &state(25.0), &t)?;
        assert_eq!(d.guardrail_count, 3);
        assert!((d.alpha_rollback_per_guardrail - 0.05 / 3.0).abs() < 1e-15);
        assert_eq!(d.kind, DecisionKind::Promote);
        Ok(())
    }

    #[test]
    fn a_harmful_metric_below_the_sample_gate_waits_and_cannot_roll_back() -> R {
        let d = evaluate(
            &cfg(),
            &state(25.0),
            &tick(vec![d1(counts(150, 45, 150, 15))]),
        )?;
        let g = &d.guardrails[0];
        assert_eq!(
            (g.status, g.wait_reason),
            (GuardrailStatus::Waiting, Some(WaitReason::TooFewUsers))
        );
        assert_eq!((g.harm, g.harm_bound_rollback), (HarmLevel::None, None));
        assert_eq!(d.kind, DecisionKind::Promote);
        Ok(())
    }

    #[test]
    fn retention_waits_until_its_window_and_the_ingestion_lag_have_passed() -> R {
        let mut s = state(5.0);
        s.rollout_started_at_ms = NOW - 50 * H; // D1 needs (1 + 1)·24 + 6 = 54 h
        let d = evaluate(&cfg(), &s, &tick(vec![d1(proven_harm())]))?;
        assert_eq!(
            d.guardrails[0].wait_reason,
            Some(WaitReason::WindowNotClosed)
        );
        assert_ne!(d.kind, DecisionKind::Rollback);
        Ok(())
    }

    #[test]
    fn an_error_metric_with_too_few_errors_waits() -> R {
        let d = evaluate(
            &cfg(),
            &state(25.0),
            &tick(vec![errors(counts(500, 0, 500, 3))]),
        )?;
        assert_eq!(
            d.guardrails[0].wait_reason,
            Some(WaitReason::TooFewSuccessesOrFailures)
        );
        let c = FuseConfig {
            min_successes_and_failures: 0,
            ..cfg()
        };
        let d = evaluate(
            &c,
            &state(25.0),
            &tick(vec![errors(counts(500, 0, 500, 0))]),
        )?;
        assert_eq!(
            d.guardrails[0].wait_reason,
            Some(WaitReason::NoErrorsObserved)
        );
        Ok(())
    }

    #[test]
    fn one_arm_all_zero_and_the_other_all_one_waits_for_lack_of_variance() -> R {
        let d = evaluate(
            &cfg(),
            &state(25.0),
            &tick(vec![d1(counts(300, 300, 300, 0))]),
        )?;
        let g = &d.guardrails[0];
        assert_eq!(g.wait_reason, Some(WaitReason::InsufficientVariance));
        assert_eq!((g.p_value, g.cs), (None, None));
        assert_ne!(d.kind, DecisionKind::Rollback);
        Ok(())
    }

    #[test]
    fn zero_users_give_a_waiting_metric_without_numbers() -> R {
        let d = evaluate(&cfg(), &state(25.0), &tick(vec![d1(counts(0, 0, 0, 0))]))?;
        let g = &d.guardrails[0];
        assert_eq!(g.wait_reason, Some(WaitReason::TooFewUsers));
        assert_eq!(
            (g.delta, g.variance, g.p_value, g.p_value_sticky),
            (None, None, None, None)
        );
        Ok(())
    }

    #[test]
    fn promotion_waits_for_the_minimum_time_at_the_step() -> R {
        let mut s = state(25.0);
        s.step_started_at_ms = NOW - 10 * H;
        let d = evaluate(&cfg(), &s, &tick(vec![d1(healthy())]))?;
        assert_eq!(
            outcome(&d),
            (DecisionKind::Wait, DecisionRule::MinStepTime, 25.0)
        );
        Ok(())
    }

    #[test]
    fn promotion_waits_for_the_minimum_users_per_arm_in_the_step() -> R {
        let mut t = tick(vec![d1(healthy())]);
        t.assignment.treatment_users = 150;
        t.assignment.control_users = 150;
        let d = evaluate(&cfg(), &state(25.0), &t)?;
        assert_eq!(
            outcome(&d),
            (DecisionKind::Wait, DecisionRule::SampleGate, 25.0)
        );
        Ok(())
    }

    #[test]
    fn adoption_below_the_minimum_blocks_promotion() -> R {
        let mut t = tick(vec![d1(healthy())]);
        t.adoption.total = 100.0; // 10% < 15%
        let d = evaluate(&cfg(), &state(25.0), &t)?;
        assert_eq!(
            outcome(&d),
            (
                DecisionKind::Continue,
                DecisionRule::AdoptionBelowMinimum,
                25.0
            )
        );
        t.adoption = RateEstimate {
            total: 0.0,
            count: 0,
        };
        let d = evaluate(&cfg(), &state(25.0), &t)?;
        assert_eq!(
            d.rule,
            DecisionRule::AdoptionBelowMinimum,
            "unknown adoption is not met"
        );
        Ok(())
    }

    #[test]
    fn reported_low_satisfaction_blocks_promotion_and_missing_satisfaction_does_not() -> R {
        let mut t = tick(vec![d1(healthy())]);
        t.satisfaction = Some(RateEstimate {
            total: 60.0,
            count: 100,
        });
        let d = evaluate(&cfg(), &state(25.0), &t)?;
        assert_eq!(d.rule, DecisionRule::SatisfactionBelowMinimum);
        t.satisfaction = Some(RateEstimate {
            total: 0.0,
            count: 0,
        });
        assert_eq!(
            evaluate(&cfg(), &state(25.0), &t)?.kind,
            DecisionKind::Promote
        );
        Ok(())
    }

    /// At 50%, 80 h into the step, 300 h since start, D1 and D7 both read.
    fn final_state() -> RolloutState {
        RolloutState {
            step_started_at_ms: NOW - 80 * H,
            ..state(50.0)
        }
    }

    #[test]
    fn promotion_to_full_exposure_with_non_inferiority_shown() -> R {
        let d = evaluate(
            &cfg(),
            &final_state(),
            &tick(vec![d1(healthy()), d7(healthy())]),
        )?;
        assert_eq!(
            outcome(&d),
            (
                DecisionKind::Promote,
                DecisionRule::NonInferiorityShown,
                100.0
            )
        );
        assert!(d
            .guardrails
            .iter()
            .all(|g| g.non_inferiority_bound.is_some_and(|b| b > -0.02)));
        Ok(())
    }

    #[test]
    fn promotion_to_full_exposure_waits_for_the_observation_window() -> R {
        let mut s = final_state();
        s.step_started_at_ms = NOW - 48 * H;
        let d = evaluate(&cfg(), &s, &tick(vec![d1(healthy()), d7(healthy())]))?;
        assert_eq!(
            outcome(&d),
            (DecisionKind::Wait, DecisionRule::MinStepTime, 50.0)
        );
        Ok(())
    }

    #[test]
    fn promotion_to_full_exposure_waits_for_seven_days_and_mature_retention() -> R {
        let mut s = final_state();
        s.rollout_started_at_ms = NOW - 190 * H; // ≥ 168 h but D7 needs 198 h
        let d = evaluate(&cfg(), &s, &tick(vec![d1(healthy()), d7(healthy())]))?;
        assert_eq!(
            outcome(&d),
            (DecisionKind::Wait, DecisionRule::RetentionImmature, 50.0)
        );
        Ok(())
    }

    #[test]
    fn promotion_to_full_exposure_needs_every_configured_retention_read() -> R {
        let d = evaluate(&cfg(), &final_state(), &tick(vec![d1(healthy())]))?;
        assert_eq!(
            outcome(&d),
            (DecisionKind::Wait, DecisionRule::RetentionNotReadable, 50.0)
        );
        let small = counts(150, 45, 150, 45);
        let d = evaluate(
            &cfg(),
            &final_state(),
            &tick(vec![d1(healthy()), d7(small)]),
        )?;
        assert_eq!(d.rule, DecisionRule::RetentionNotReadable);
        Ok(())
    }

    #[test]
    fn an_inconclusive_end_of_window_ships_under_bias_to_action() -> R {
        let inconclusive = counts(1_000, 300, 1_000, 300);
        let t = tick(vec![d1(inconclusive), d7(inconclusive)]);
        let d = evaluate(&cfg(), &final_state(), &t)?;
        assert_eq!(
            outcome(&d),
            (
                DecisionKind::Promote,
                DecisionRule::EndOfWindowNoHarm,
                100.0
            )
        );
        Ok(())
    }

    #[test]
    fn an_inconclusive_end_of_window_holds_under_the_hold_policy() -> R {
        let c = FuseConfig {
            end_of_window_policy: EndOfWindowPolicy::Hold,
            ..cfg()
        };
        let inconclusive = counts(1_000, 300, 1_000, 300);
        let d = evaluate(
            &c,
            &final_state(),
            &tick(vec![d1(inconclusive), d7(inconclusive)]),
        )?;
        assert_eq!(
            outcome(&d),
            (
                DecisionKind::Hold,
                DecisionRule::EndOfWindowInconclusive,
                50.0
            )
        );
        Ok(())
    }

    #[test]
    fn full_exposure_continues_and_a_rolled_back_flag_is_not_evaluated() -> R {
        let d = evaluate(&cfg(), &state(100.0), &tick(vec![d1(healthy())]))?;
        assert_eq!(
            outcome(&d),
            (DecisionKind::Continue, DecisionRule::AtFullExposure, 100.0)
        );
        let d = evaluate(&cfg(), &state(0.0), &tick(vec![d1(proven_harm())]))?;
        assert_eq!(
            outcome(&d),
            (DecisionKind::Continue, DecisionRule::NotActive, 0.0)
        );
        Ok(())
    }

    #[test]
    fn the_sticky_p_value_carries_over_from_earlier_ticks() -> R {
        let mut g = d1(healthy());
        g.previous_min_p_value = Some(1e-6);
        let d = evaluate(&cfg(), &state(25.0), &tick(vec![g]))?;
        assert_eq!(d.guardrails[0].p_value, Some(1.0));
        assert_eq!(d.guardrails[0].p_value_sticky, Some(1e-6));
        Ok(())
    }

    #[test]
    fn an_invalid_config_is_rejected_with_the_field_named() {
        let c = FuseConfig {
            alpha_rollback: 0.0,
            ..cfg()
        };
        let e = evaluate(&c, &state(25.0), &tick(vec![])).map_err(|e| e.to_string());
        assert_eq!(
            e,
            Err("invalid fuse config: alpha_rollback must be in (0, 0.5)".to_string())
        );
    }

    #[test]
    fn invalid_counts_are_rejected_rather_than_analysed() {
        let r = evaluate(&cfg(), &state(25.0), &tick(vec![d1(counts(10, 20, 10, 1))]));
        assert!(matches!(r, Err(DecisionError::InvalidInput(_))));
    }

    #[test]
    fn decisions_serialize_with_snake_case_names() -> Result<(), Box<dyn std::error::Error>> {
        let d = evaluate(&cfg(), &state(25.0), &tick(vec![d1(proven_harm())]))?;
        let json = serde_json::to_value(&d)?;
        assert_eq!(json["kind"], "rollback");
        assert_eq!(json["rule"], "retention_or_activation_harm");
        assert_eq!(json["guardrails"][0]["kind"]["type"], "retention");
        assert_eq!(json["guardrails"][0]["harm"], "proven");
        assert_eq!(json["srm"]["status"], "ok");
        Ok(())
    }

    #[test]
    fn a_throttle_starts_a_new_step_and_counts_towards_rollback() -> R {
        let s = state(50.0);
        let d = evaluate(&cfg(), &s, &tick(vec![d1(probable_harm())]))?;
        let next = s.apply(&d, NOW);
        assert_eq!(next.exposure_pct, 25.0);
        assert_eq!(next.step_started_at_ms, NOW);
        assert_eq!(next.throttles_without_recovery, 1);
        assert_eq!(next.last_throttle_at_ms, Some(NOW));
        Ok(())
    }

    #[test]
    fn a_tick_without_probable_harm_is_a_recovery_and_a_promotion_starts_a_new_step() -> R {
        let mut s = state(25.0);
        s.throttles_without_recovery = 1;
        let d = evaluate(&cfg(), &s, &tick(vec![d1(healthy())]))?;
        let next = s.apply(&d, NOW);
        assert_eq!(next.throttles_without_recovery, 0);
        assert_eq!((next.exposure_pct, next.step_started_at_ms), (50.0, NOW));
        Ok(())
    }

    #[test]
    fn the_srm_clock_starts_at_the_first_mismatch_and_stops_when_it_clears() -> R {
        let mut t = tick(vec![d1(healthy())]);
        t.assignment.treatment_users = 800;
        let s = state(25.0);
        let first = s.apply(&evaluate(&cfg(), &s, &t)?, NOW);
        assert_eq!(first.srm_failing_since_ms, Some(NOW));
        let later = first.apply(&evaluate(&cfg(), &first, &t)?, NOW + H);
        assert_eq!(later.srm_failing_since_ms, Some(NOW));
        let cleared = later.apply(&evaluate(&cfg(), &later, &tick(vec![]))?, NOW + 2 * H);
        assert_eq!(cleared.srm_failing_since_ms, None);
        Ok(())
    }

    #[test]
    fn a_rollout_starts_at_the_first_step_with_tuning_fixed_from_the_baseline() -> R {
        let s = RolloutState::start(&FuseConfig::default(), 42, Some(0.3))?;
        assert_eq!(
            (
                s.exposure_pct,
                s.rollout_started_at_ms,
                s.step_started_at_ms
            ),
            (5.0, 42, 42)
        );
        assert!(
            s.tuning_s > 10_000.0,
            "planned for a 2-point drop: {}",
            s.tuning_s
        );
        Ok(())
    }

    fn finite(v: &[Option<f64>]) -> bool {
        v.iter().flatten().all(|x| x.is_finite())
    }

    proptest! {
        #[test]
        fn any_counts_give_a_decision_with_finite_numbers_and_waiting_metrics_never_act(
            (nc, xc, nt, xt) in (0u64..=400, 0u64..=400)
                .prop_flat_map(|(nc, nt)| (Just(nc), 0..=nc, Just(nt), 0..=nt)),
            error_metric in any::<bool>(),
        ) {
            let c = counts(nc, xc, nt, xt);
            let g = if error_metric { errors(c) } else { d1(c) };
            let d = evaluate(&cfg(), &state(25.0), &tick(vec![g]))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let e = &d.guardrails[0];
            prop_assert!(finite(&[
                e.delta, e.variance, e.harm_bound_rollback, e.harm_bound_throttle,
                e.rho_rollback, e.rho_throttle, e.ceiling_bound_rollback, e.ceiling_bound_throttle,
                e.non_inferiority_bound, e.p_value, e.p_value_sticky,
                e.cs.map(|i| i.lower), e.cs.map(|i| i.upper),
                d.adoption_rate, d.srm.p_value, d.srm.chi2, Some(d.data_lag_hours),
            ]));
            if e.status == GuardrailStatus::Waiting {
                prop_assert_eq!(e.harm, HarmLevel::None);
                prop_assert!(!matches!(d.kind, DecisionKind::Rollback | DecisionKind::Throttle));
            }
        }
    }
}
