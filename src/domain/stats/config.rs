//! Fuse thresholds with the product defaults, and their validation (METHODS.md §2b, §2d, §2e).
//!
//! Durations are whole hours and instants elsewhere are Unix milliseconds passed in by the
//! caller: nothing here reads a clock. [`FuseConfig::validate`] reports every invalid field at
//! once, each error naming the field, so the REST API can show all problems in one response.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::sequential::{planning_tuning, DEFAULT_TUNING};
use super::srm::SRM_P_THRESHOLD;
use super::StatsError;

/// What to do at the end of the observation window before 100% when no harm was detected
/// but non-inferiority is not (yet) shown (METHODS.md §2e rule 4, GrowthBook "bias to action").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndOfWindowPolicy {
    /// Ship anyway (bias to action).
    PromoteIfNoHarm,
    /// Stay at the current step and wait for a human (or for non-inferiority to show).
    Hold,
}

/// Per-flag fuse configuration. Missing JSON fields take the product defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct FuseConfig {
    /// Ramp steps in % of traffic, strictly increasing, ending at 100. Default 5,10,25,50,100.
    pub ramp_steps_pct: Vec<f64>,
    /// `T_min`: minimum hours at a step before promoting; also the throttle cooldown. Default 24.
    pub min_hours_per_step: u32,
    /// Minimum hours at the last step before 100% (the observation window). Default 72.
    pub observation_window_hours: u32,
    /// Minimum total runtime before 100%, covering day-of-week effects. Default 168 (7 days).
    pub min_total_runtime_hours: u32,
    /// N of the N-day retention guardrails. Default [1, 7].
    pub retention_days: Vec<u32>,
    /// Retention window width `W` in days. Default 1.
    pub retention_window_days: u32,
    /// Allowed ingestion lag `L` in hours, added to every maturity time. Default 6.
    pub ingestion_lag_hours: u32,
    /// Maximum age of the newest data before the flag is held as stale. Default 6 (= `L`,
    /// since older data breaks the eligibility rule that assumes at most `L` of lag).
    pub max_data_staleness_hours: u32,
    /// Lowest acceptable treatment − control delta of retention/activation, ≤ 0. Harm is
    /// proven when the one-sided upper bound is below it. Default −0.02 (absolute).
    pub min_retention_delta: f64,
    /// Absolute ceiling on the treatment error rate. Default 0.02.
    pub max_error_rate: f64,
    /// Tolerated absolute error-rate increase over control, ≥ 0. Default 0.
    pub max_error_delta: f64,
    /// Minimum share of exposed users who use the feature, for promotion. Default 0.15.
    pub min_adoption: f64,
    /// Minimum satisfaction (mean score in [0, 1]), for promotion when reported. Default 0.7.
    pub min_satisfaction: f64,
    /// One-sided α of rollback, Bonferroni-split over the guardrails. Default 0.05.
    pub alpha_rollback: f64,
    /// One-sided α of throttle ("probable harm"), split the same way. Default 0.20.
    pub alpha_throttle: f64,
    /// Two-sided α of the displayed intervals and always-valid p-values. Default 0.05.
    pub display_alpha: f64,
    /// Tuning `S`; when absent it is computed from the smallest harm at rollout start.
    pub tuning_s: Option<f64>,
    /// Minimum eligible users per arm before a metric may drive a decision. Default 200.
    pub min_users_per_arm: u64,
    /// Minimum successes and minimum failures, each summed over both arms. Default 5.
    pub min_successes_and_failures: u64,
    /// SRM p-value threshold. Default 0.001.
    pub srm_p_threshold: f64,
    /// Roll back when SRM has persisted this many hours. Default 24.
    pub srm_rollback_after_hours: u32,
    /// Hold when more than this share of users saw both variants. Default 0.01.
    pub max_multiple_exposure_rate: f64,
    /// Throttles without recovery after which probable harm means rollback. Default 2.
    pub max_throttles_without_recovery: u32,
    /// Policy at the end of the observation window. Default promote if no harm.
    pub end_of_window_policy: EndOfWindowPolicy,
}

impl Default for FuseConfig {
    fn default() -> Self {
        Self {
            ramp_steps_pct: vec![5.0, 10.0, 25.0, 50.0, 100.0],
            min_hours_per_step: 24,
            observation_window_hours: 72,
            min_total_runtime_hours: 168,
            retention_days: vec![1, 7],
            retention_window_days: 1,
            ingestion_lag_hours: 6,
            max_data_staleness_hours: 6,
            min_retention_delta: -0.02,
            max_error_rate: 0.02,
            max_error_delta: 0.0,
            min_adoption: 0.15,
            min_satisfaction: 0.7,
            alpha_rollback: 0.05,
            alpha_throttle: 0.20,
            display_alpha: 0.05,
            tuning_s: None,
            min_users_per_arm: 200,
            min_successes_and_failures: 5,
            srm_p_threshold: SRM_P_THRESHOLD,
            srm_rollback_after_hours: 24,
            max_multiple_exposure_rate: 0.01,
            max_throttles_without_recovery: 2,
            end_of_window_policy: EndOfWindowPolicy::PromoteIfNoHarm,
        }
    }
}

/// One invalid configuration field; displays as e.g. `alpha_rollback must be in (0, 0.5)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, thiserror::Error)]
#[error("{field} {message}")]
pub struct ConfigError {
    /// The offending field's name, as in JSON.
    pub field: &'static str,
    /// What it must satisfy.
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        message: message.into(),
    }
}

/// Pushes an error unless `lo < v < hi` (open) / `lo ≤ v ≤ hi` (closed) and `v` is finite.
fn in_range(
    errors: &mut Vec<ConfigError>,
    field: &'static str,
    v: f64,
    (lo, hi): (f64, f64),
    (lo_closed, hi_closed): (bool, bool),
) {
    let lo_ok = if lo_closed { v >= lo } else { v > lo };
    let hi_ok = if hi_closed { v <= hi } else { v < hi };
    if !(v.is_finite() && lo_ok && hi_ok) {
        let l = if lo_closed { '[' } else { '(' };
        let r = if hi_closed { ']' } else { ')' };
        errors.push(err(field, format!("must be in {l}{lo}, {hi}{r}")));
    }
}

impl FuseConfig {
    /// Checks every field; returns all errors, each naming its field.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut e = Vec::new();
        self.validate_steps(&mut e);
        if self.min_hours_per_step == 0 {
            e.push(err("min_hours_per_step", "must be at least 1"));
        }
        if self.retention_days.contains(&0) {
            e.push(err("retention_days", "must all be at least 1"));
        }
        let mut days = self.retention_days.clone();
        days.sort_unstable();
        days.dedup();
        if days.len() != self.retention_days.len() {
            e.push(err("retention_days", "must not contain duplicates"));
        }
        if self.retention_window_days == 0 {
            e.push(err("retention_window_days", "must be at least 1"));
        }
        in_range(
            &mut e,
            "min_retention_delta",
            self.min_retention_delta,
            (-1.0, 0.0),
            (true, true),
        );
        in_range(
            &mut e,
            "max_error_rate",
            self.max_error_rate,
            (0.0, 1.0),
            (false, true),
        );
        in_range(
            &mut e,
            "max_error_delta",
            self.max_error_delta,
            (0.0, 1.0),
            (true, false),
        );
        in_range(
            &mut e,
            "min_adoption",
            self.min_adoption,
            (0.0, 1.0),
            (true, true),
        );
        in_range(
            &mut e,
            "min_satisfaction",
            self.min_satisfaction,
            (0.0, 1.0),
            (true, true),
        );
        in_range(
            &mut e,
            "alpha_rollback",
            self.alpha_rollback,
            (0.0, 0.5),
            (false, false),
        );
        in_range(
            &mut e,
            "alpha_throttle",
            self.alpha_throttle,
            (0.0, 0.5),
            (false, false),
        );
        // Throttle is "probable harm": it must be the looser test or it could never fire
        // before rollback does.
        if self.alpha_throttle.is_finite()
            && self.alpha_rollback.is_finite()
            && self.alpha_throttle <= self.alpha_rollback
        {
            e.push(err("alpha_throttle", "must be greater than alpha_rollback"));
        }
        // The displayed CS also reports one-sided bounds at the same α, hence < 0.5.
        in_range(
            &mut e,
            "display_alpha",
            self.display_alpha,
            (0.0, 0.5),
            (false, false),
        );
        if let Some(s) = self.tuning_s {
            in_range(&mut e, "tuning_s", s, (0.0, f64::MAX), (false, true));
        }
        if self.min_users_per_arm == 0 {
            e.push(err("min_users_per_arm", "must be at least 1"));
        }
        in_range(
            &mut e,
            "srm_p_threshold",
            self.srm_p_threshold,
            (0.0, 1.0),
            (false, false),
        );
        in_range(
            &mut e,
            "max_multiple_exposure_rate",
            self.max_multiple_exposure_rate,
            (0.0, 1.0),
            (true, true),
        );
        if e.is_empty() {
            Ok(())
        } else {
            Err(e)
        }
    }

    fn validate_steps(&self, e: &mut Vec<ConfigError>) {
        let steps = &self.ramp_steps_pct;
        if steps.is_empty() {
            e.push(err("ramp_steps_pct", "must not be empty"));
            return;
        }
        if steps
            .iter()
            .any(|s| !(s.is_finite() && *s > 0.0 && *s <= 100.0))
        {
            e.push(err("ramp_steps_pct", "must all be in (0, 100]"));
        }
        if steps.windows(2).any(|w| w[0] >= w[1]) {
            e.push(err("ramp_steps_pct", "must be strictly increasing"));
        }
        if steps.last() != Some(&100.0) {
            e.push(err("ramp_steps_pct", "must end at 100"));
        }
    }

    /// Hours after a user's first exposure at which every configured N-day retention read is
    /// complete: `max_N (N + W)·24 + L` (METHODS.md §2d, §2f).
    pub fn retention_maturity_hours(&self) -> f64 {
        let max_day = self.retention_days.iter().copied().max().unwrap_or(0);
        if max_day == 0 {
            return 0.0;
        }
        (f64::from(max_day) + f64::from(self.retention_window_days)) * 24.0
            + f64::from(self.ingestion_lag_hours)
    }

    /// Resolves `S` once, when the rollout starts (METHODS.md §2b "fix S, never change it").
    ///
    /// `tuning_s` wins when set. Otherwise, with a baseline retention rate, `S` is the planning
    /// N for detecting the smallest harm `|min_retention_delta|` at one-sided `alpha_rollback`
    /// and 80% power. Without a baseline, or with a zero tolerated drop (no smallest harm to
    /// plan for), the gbstats default 5000 is used.
    pub fn resolve_tuning(&self, baseline_rate: Option<f64>) -> Result<f64, StatsError> {
        if let Some(s) = self.tuning_s {
            return Ok(s);
        }
        let harm = -self.min_retention_delta;
        match baseline_rate {
            Some(p) if harm > 0.0 => {
                // Plan for a drop, or for a rise when the baseline is too low to drop by `harm`.
                let alt = if p - harm >= 0.0 { p - harm } else { p + harm };
                planning_tuning(p, alt, self.alpha_rollback, 0.8)
            }
            _ => Ok(DEFAULT_TUNING),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(c: &FuseConfig) -> Vec<String> {
        c.validate()
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn the_product_defaults_are_valid_and_match_the_brief() {
        let c = FuseConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.ramp_steps_pct, vec![5.0, 10.0, 25.0, 50.0, 100.0]);
        assert_eq!((c.min_hours_per_step, c.observation_window_hours), (24, 72));
        assert_eq!(c.retention_days, vec![1, 7]);
        assert_eq!((c.alpha_rollback, c.alpha_throttle), (0.05, 0.20));
        assert_eq!((c.min_adoption, c.min_satisfaction), (0.15, 0.7));
        assert_eq!((c.min_retention_delta, c.max_error_rate), (-0.02, 0.02));
        assert_eq!(c.min_users_per_arm, 200);
        assert_eq!(c.end_of_window_policy, EndOfWindowPolicy::PromoteIfNoHarm);
    }

    #[test]
    fn an_out_of_range_alpha_is_reported_with_its_field_name() {
        let c = FuseConfig {
            alpha_rollback: 0.6,
            alpha_throttle: 0.7,
            ..FuseConfig::default()
        };
        assert_eq!(
            messages(&c),
            vec![
                "alpha_rollback must be in (0, 0.5)",
                "alpha_throttle must be in (0, 0.5)",
            ]
        );
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let c = FuseConfig {
            ramp_steps_pct: vec![10.0, 5.0, 50.0],
            retention_days: vec![0, 7, 7],
            min_retention_delta: 0.02,
            alpha_throttle: 0.01,
            tuning_s: Some(f64::NAN),
            min_users_per_arm: 0,
            ..FuseConfig::default()
        };
        let fields: Vec<_> = c
            .validate()
            .err()
            .unwrap_or_default()
            .iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            vec![
                "ramp_steps_pct",
                "ramp_steps_pct",
                "retention_days",
                "retention_days",
                "min_retention_delta",
                "alpha_throttle",
                "tuning_s",
                "min_users_per_arm",
            ]
        );
        assert!(messages(&c)
            .contains(&"alpha_throttle must be greater than alpha_rollback".to_string()));
    }

    #[test]
    fn tuning_is_explicit_planned_from_the_smallest_harm_or_the_gbstats_default(
    ) -> Result<(), StatsError> {
        let explicit = FuseConfig {
            tuning_s: Some(1234.0),
            ..FuseConfig::default()
        };
        assert_eq!(explicit.resolve_tuning(Some(0.3))?, 1234.0);
        let planned = FuseConfig::default().resolve_tuning(Some(0.3))?;
        let expected = planning_tuning(0.3, 0.28, 0.05, 0.8)?;
        assert!(
            (planned - expected).abs() < 1e-9 * expected,
            "{planned} vs {expected}"
        );
        assert_eq!(FuseConfig::default().resolve_tuning(None)?, DEFAULT_TUNING);
        let no_tolerance = FuseConfig {
            min_retention_delta: 0.0,
            ..FuseConfig::default()
        };
        assert_eq!(no_tolerance.resolve_tuning(Some(0.3))?, DEFAULT_TUNING);
        Ok(())
    }

    #[test]
    fn retention_maturity_covers_the_longest_window_plus_lag() {
        // D7 with W = 1 day and L = 6 h: (7 + 1)·24 + 6.
        assert_eq!(FuseConfig::default().retention_maturity_hours(), 198.0);
    }

    #[test]
    fn partial_json_takes_defaults_and_enums_are_snake_case() -> Result<(), serde_json::Error> {
        let c: FuseConfig =
            serde_json::from_str(r#"{"min_adoption":0.3,"end_of_window_policy":"hold"}"#)?;
        assert_eq!(c.min_adoption, 0.3);
        assert_eq!(c.end_of_window_policy, EndOfWindowPolicy::Hold);
        assert_eq!(c.alpha_rollback, 0.05);
        let json = serde_json::to_value(FuseConfig::default())?;
        assert_eq!(json["end_of_window_policy"], "promote_if_no_harm");
        assert!(json["tuning_s"].is_null());
        Ok(())
    }
}
