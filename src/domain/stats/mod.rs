//! Pure statistics behind Fusebox fuses (see `shared/stats/METHODS.md`).
//!
//! Everything here is deterministic and free of I/O, clocks and async: the scheduler passes
//! counts and timestamps in and gets plain, serialisable results back. Results never contain
//! NaN or infinities; undefined quantities are `None` (JSON `null`) together with a documented
//! status such as [`AnalysisStatus::InsufficientVariance`].
//!
//! Layout (METHODS.md section in brackets):
//! - [`proportions`]: fixed-horizon two-proportion analysis for display (§2a).
//! - [`sequential`]: always-valid confidence sequences and p-values (§2b).
//! - [`srm`]: sample-ratio-mismatch check per exposure epoch (§2c).
//! - [`config`]: fuse thresholds with the product defaults and their validation (§2b, §2d, §2e).
//! - [`decision`]: the per-tick decision rules and the rollout state they read (§2d, §2e).

pub mod config;
pub mod decision;
pub mod proportions;
pub mod sequential;
pub mod srm;

#[cfg(test)]
mod reference_tests;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};
use utoipa::ToSchema;

pub use config::{ConfigError, EndOfWindowPolicy, FuseConfig};
pub use decision::{
    evaluate, Decision, DecisionError, DecisionKind, DecisionRule, GuardrailEvaluation,
    GuardrailInput, GuardrailStatus, HarmLevel, MetricKind, RateEstimate, RolloutState, TickInput,
    WaitReason,
};
pub use proportions::{
    analyze_two_proportions, ProportionCounts, RelativeLift, TwoProportionAnalysis,
};
pub use sequential::{
    always_valid_p_value, analyze_sequential, one_sided_bounds, planning_tuning,
    sequential_from_estimate, sticky_min, OneSidedBounds, SequentialAnalysis, StickyPValue,
    DEFAULT_TUNING,
};
pub use srm::{srm_check, srm_check_epochs, SrmEpoch, SrmResult, SrmStatus, SRM_P_THRESHOLD};

/// A closed interval `[lower, upper]`, used for confidence intervals and sequences.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Interval {
    /// Lower end.
    pub lower: f64,
    /// Upper end.
    pub upper: f64,
}

impl Interval {
    /// `estimate ± halfwidth`.
    pub fn around(estimate: f64, halfwidth: f64) -> Self {
        Self {
            lower: estimate - halfwidth,
            upper: estimate + halfwidth,
        }
    }

    /// Whether `x` lies in the interval (ends included).
    pub fn contains(&self, x: f64) -> bool {
        self.lower <= x && x <= self.upper
    }
}

/// Whether an analysis could be computed, and if not, why (METHODS.md §2a degenerate cases).
///
/// Anything other than `Ok` means "no decision": decision rules treat the metric as waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisStatus {
    /// All quantities defined.
    Ok,
    /// At least one arm has zero users, so no rate can be estimated.
    EmptyArm,
    /// The unpooled variance `V` is 0 (every arm at 0% or 100%): p = 1, CI = `[Δ, Δ]`.
    InsufficientVariance,
}

/// Invalid input to a statistics function (as opposed to degenerate data, which is a status).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// A parameter is outside its allowed range (or not finite).
    #[error("{name} must be in {range}, got {value}")]
    OutOfRange {
        /// Parameter name as the caller knows it.
        name: &'static str,
        /// Human-readable allowed range, e.g. `(0, 1)`.
        range: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// More successes than users in an arm.
    #[error("{arm}_successes ({successes}) must not exceed {arm}_users ({users})")]
    SuccessesExceedUsers {
        /// `control` or `treatment`.
        arm: &'static str,
        /// Successes reported.
        successes: u64,
        /// Users reported.
        users: u64,
    },
}

/// Checks `lo < value < hi` (open interval) and finiteness, naming the parameter on failure.
pub(crate) fn check_open(
    name: &'static str,
    value: f64,
    lo: f64,
    hi: f64,
    range: &'static str,
) -> Result<(), StatsError> {
    if value.is_finite() && value > lo && value < hi {
        Ok(())
    } else {
        Err(StatsError::OutOfRange { name, range, value })
    }
}

/// Standard normal CDF `Φ(x)`. statrs evaluates it through `erfc`, so the far tail keeps
/// full relative precision (needed for p-values like 1e-156 in the reference vectors).
pub(crate) fn phi(x: f64) -> f64 {
    Normal::standard().cdf(x)
}

/// Standard normal quantile `Φ⁻¹(q)`. Callers validate `q ∈ (0, 1)` first, because statrs
/// panics outside `[0, 1]`; the clamp below only guards against that panic.
pub(crate) fn z_quantile(q: f64) -> f64 {
    let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
    Normal::standard().inverse_cdf(q)
}

/// Two-sided normal p-value `2·Φ(−|z|)`, written this way (not `2·(1−Φ(|z|))`) so that
/// small p-values do not cancel to 0 (METHODS.md §2a).
pub(crate) fn two_sided_p(z: f64) -> f64 {
    (2.0 * phi(-z.abs())).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    /// The REST API returns these types, so their OpenAPI schemas must build and serialise.
    #[test]
    fn every_api_facing_type_has_an_openapi_schema() -> Result<(), serde_json::Error> {
        let schemas = [
            Decision::schema(),
            FuseConfig::schema(),
            RolloutState::schema(),
            TickInput::schema(),
            TwoProportionAnalysis::schema(),
            SequentialAnalysis::schema(),
            SrmResult::schema(),
            StickyPValue::schema(),
            ConfigError::schema(),
        ];
        for schema in schemas {
            assert!(serde_json::to_string(&schema)?.len() > 10);
        }
        Ok(())
    }

    #[test]
    fn two_sided_p_values_keep_precision_in_the_far_tail() {
        // 2Φ(−10) ≈ 1.5e-23 would be 0 if written as 2(1 − Φ(10)).
        let p = two_sided_p(10.0);
        assert!(p > 1.5e-23 && p < 1.6e-23, "{p}");
        assert_eq!(two_sided_p(0.0), 1.0);
    }
}
