//! Always-valid sequential inference on `Δ` (METHODS.md §2b): what the scheduler acts on.
//!
//! This is the asymptotic confidence sequence (CS) of Waudby-Smith et al. in GrowthBook's
//! parameterisation (gbstats `SequentialTwoSidedTTest`, tuning `S`), in two forms:
//! - two-sided, for display and promotion, with the always-valid p-value `min(1, 1/E)`;
//! - one-sided "harm" bounds (ρ computed with `2α`, GrowthBook Safe Rollouts), for throttle
//!   and rollback.
//!
//! The e-value is exactly Optimizely's mSPRT normal-mixture likelihood ratio with mixing
//! variance `τ² = ρ²·N·V`; both forms are reported so the audit log can show either.
//!
//! Validity across looks requires `S` and `α` to stay fixed for the whole rollout: resolve `S`
//! once when the rollout starts ([`planning_tuning`], [`super::FuseConfig::resolve_tuning`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::proportions::ProportionCounts;
use super::{check_open, z_quantile, AnalysisStatus, Interval, StatsError};

/// gbstats' default tuning `S`, used when no smallest harm of interest is known.
pub const DEFAULT_TUNING: f64 = 5000.0;

/// `ρ = sqrt((−2 ln a + ln(1 − 2 ln a)) / S)`; `a` is `α` (two-sided) or `2α` (one-sided).
fn rho_for(a: f64, tuning: f64) -> f64 {
    let l = -2.0 * a.ln();
    ((l + (l + 1.0).ln()) / tuning).sqrt()
}

fn check_tuning(tuning: f64) -> Result<(), StatsError> {
    check_open("tuning", tuning, 0.0, f64::INFINITY, "(0, inf)")
}

/// Checks the shared (estimate, variance, N) inputs: finite, variance and N non-negative.
fn check_estimate(estimate: f64, variance: f64, n_total: f64) -> Result<(), StatsError> {
    if !estimate.is_finite() {
        return Err(StatsError::OutOfRange {
            name: "estimate",
            range: "(-inf, inf)",
            value: estimate,
        });
    }
    if !(variance.is_finite() && variance >= 0.0) {
        return Err(StatsError::OutOfRange {
            name: "variance",
            range: "[0, inf)",
            value: variance,
        });
    }
    if !(n_total.is_finite() && n_total >= 0.0) {
        return Err(StatsError::OutOfRange {
            name: "n_total",
            range: "[0, inf)",
            value: n_total,
        });
    }
    Ok(())
}

/// Two-sided `ρ₂` for level `alpha ∈ (0, 1)` and tuning `S > 0`.
pub fn rho_two_sided(alpha: f64, tuning: f64) -> Result<f64, StatsError> {
    check_open("alpha", alpha, 0.0, 1.0, "(0, 1)")?;
    check_tuning(tuning)?;
    Ok(rho_for(alpha, tuning))
}

/// One-sided `ρ₁` (computed with `2α`), for `alpha ∈ (0, 0.5)` and tuning `S > 0`.
pub fn rho_one_sided(alpha: f64, tuning: f64) -> Result<f64, StatsError> {
    check_open("alpha", alpha, 0.0, 0.5, "(0, 0.5)")?;
    check_tuning(tuning)?;
    Ok(rho_for(2.0 * alpha, tuning))
}

/// A one-sided confidence-sequence bound pair at one `α`.
///
/// `upper` is the harm bound of a higher-is-better metric (harm proven if `upper < −tol`);
/// `lower` that of a lower-is-better metric (harm proven if `lower > tol`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OneSidedBounds {
    /// `ρ₁` used.
    pub rho: f64,
    /// `HW₁`.
    pub halfwidth: f64,
    /// `Δ̂ − HW₁`.
    pub lower: f64,
    /// `Δ̂ + HW₁`.
    pub upper: f64,
}

/// One-sided CS bounds `Δ̂ ± HW₁` with
/// `HW₁ = sqrt(s²·2(Nρ₁²+1)/(Nρ₁)²·ln(1 + sqrt(Nρ₁²+1)/(2α)))`, `s² = V·N`.
///
/// Returns `Ok(None)` ("no decision") when `N = 0` or `V = 0`. Also used for the one-sample
/// error-rate ceiling with `V = p_t(1−p_t)/n_t` and `N = n_t` (METHODS.md §2e).
pub fn one_sided_bounds(
    estimate: f64,
    variance: f64,
    n_total: f64,
    alpha: f64,
    tuning: f64,
) -> Result<Option<OneSidedBounds>, StatsError> {
    check_estimate(estimate, variance, n_total)?;
    let rho = rho_one_sided(alpha, tuning)?;
    if n_total <= 0.0 || variance <= 0.0 {
        return Ok(None);
    }
    let halfwidth = halfwidth_one_sided(variance, n_total, alpha, rho);
    Ok(Some(OneSidedBounds {
        rho,
        halfwidth,
        lower: estimate - halfwidth,
        upper: estimate + halfwidth,
    }))
}

fn halfwidth_one_sided(variance: f64, n: f64, alpha: f64, rho: f64) -> f64 {
    let s2 = variance * n;
    let nr2 = n * rho * rho;
    let nrho = n * rho;
    (s2 * 2.0 * (nr2 + 1.0) / (nrho * nrho) * (1.0 + (nr2 + 1.0).sqrt() / (2.0 * alpha)).ln())
        .sqrt()
}

fn halfwidth_two_sided(variance: f64, n: f64, alpha: f64, rho: f64) -> f64 {
    let s2 = variance * n;
    let nr2 = n * rho * rho;
    let nrho = n * rho;
    s2.sqrt() * (2.0 * (nr2 + 1.0) * ((nr2 + 1.0).sqrt() / alpha).ln() / (nrho * nrho)).sqrt()
}

/// `ln E = ρ₂²·st²/(2(Nρ₂²+1)) − ½ ln(Nρ₂²+1)` with `st² = (Δ̂−θ0)²·N/V`.
fn log_e_value(estimate: f64, theta0: f64, variance: f64, n: f64, rho: f64) -> f64 {
    let nr2 = n * rho * rho;
    let d = estimate - theta0;
    let st2 = d * d * n / variance;
    rho * rho * st2 / (2.0 * (nr2 + 1.0)) - 0.5 * (nr2 + 1.0).ln()
}

/// Always-valid two-sided p-value for `H0: Δ = theta0`: `min(1, exp(−ln E))`.
///
/// `Ok(None)` when `N = 0` or `V = 0`. Keep the running minimum across looks
/// ([`StickyPValue`]) to report the p-value of the whole monitoring history.
pub fn always_valid_p_value(
    estimate: f64,
    theta0: f64,
    variance: f64,
    n_total: f64,
    alpha: f64,
    tuning: f64,
) -> Result<Option<f64>, StatsError> {
    check_estimate(estimate, variance, n_total)?;
    if !theta0.is_finite() {
        return Err(StatsError::OutOfRange {
            name: "theta0",
            range: "(-inf, inf)",
            value: theta0,
        });
    }
    let rho = rho_two_sided(alpha, tuning)?;
    if n_total <= 0.0 || variance <= 0.0 {
        return Ok(None);
    }
    let log_e = log_e_value(estimate, theta0, variance, n_total, rho);
    Ok(Some((-log_e).exp().min(1.0)))
}

/// Sequential result on `Δ` at one look (METHODS.md §2b), for display and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SequentialAnalysis {
    /// `ok`, or why nothing could be computed (`empty_arm`, `insufficient_variance`).
    pub status: AnalysisStatus,
    /// α of the two-sided CS; the one-sided bounds below use the same α.
    pub alpha: f64,
    /// Tuning `S` (fixed for the rollout).
    pub tuning: f64,
    /// `N` (both arms, or `n_t` for a one-sample sequence).
    pub n_total: f64,
    /// `Δ̂`.
    pub estimate: Option<f64>,
    /// `V`, the plug-in variance of `Δ̂`.
    pub variance: Option<f64>,
    /// `ρ₂`.
    pub rho_two_sided: Option<f64>,
    /// `HW₂`.
    pub halfwidth_two_sided: Option<f64>,
    /// Two-sided CS `Δ̂ ± HW₂`.
    pub cs: Option<Interval>,
    /// Always-valid p-value for `Δ = 0` at this look (not yet the running minimum).
    pub p_value: Option<f64>,
    /// `ln E` for `Δ = 0`.
    pub log_e_value: Option<f64>,
    /// `ρ₁`.
    pub rho_one_sided: Option<f64>,
    /// `HW₁`.
    pub halfwidth_one_sided: Option<f64>,
    /// `Δ̂ + HW₁` (harm bound of a higher-is-better metric).
    pub upper_bound_one_sided: Option<f64>,
    /// `Δ̂ − HW₁` (harm bound of a lower-is-better metric).
    pub lower_bound_one_sided: Option<f64>,
    /// mSPRT mixing variance `τ² = ρ₂²·N·V`.
    pub msprt_tau2: Option<f64>,
    /// mSPRT `ln Λ = ½ ln(V/(V+τ²)) + Δ̂²τ²/(2V(V+τ²))`, equal to `ln E`.
    pub msprt_log_lr: Option<f64>,
}

/// Sequential analysis of two-arm counts: `Δ̂`, `V` as in §2a and `N = n_c + n_t`.
pub fn analyze_sequential(
    counts: &ProportionCounts,
    alpha: f64,
    tuning: f64,
) -> Result<SequentialAnalysis, StatsError> {
    counts.validate()?;
    match counts.delta_and_variance() {
        Some((delta, var)) => {
            sequential_from_estimate(delta, var, counts.total_users(), alpha, tuning)
        }
        None => {
            // Validate the parameters anyway so bad config is reported even with no data.
            rho_two_sided(alpha, tuning)?;
            rho_one_sided(alpha, tuning)?;
            Ok(degenerate(
                AnalysisStatus::EmptyArm,
                alpha,
                tuning,
                counts.total_users(),
                None,
                None,
            ))
        }
    }
}

/// Sequential analysis from an estimate, its variance and `N`; `alpha ∈ (0, 0.5)` because the
/// one-sided bounds are computed at the same α.
pub fn sequential_from_estimate(
    estimate: f64,
    variance: f64,
    n_total: f64,
    alpha: f64,
    tuning: f64,
) -> Result<SequentialAnalysis, StatsError> {
    check_estimate(estimate, variance, n_total)?;
    let rho2 = rho_two_sided(alpha, tuning)?;
    let rho1 = rho_one_sided(alpha, tuning)?;
    if n_total <= 0.0 {
        return Ok(degenerate(
            AnalysisStatus::EmptyArm,
            alpha,
            tuning,
            n_total,
            None,
            None,
        ));
    }
    if variance <= 0.0 {
        return Ok(degenerate(
            AnalysisStatus::InsufficientVariance,
            alpha,
            tuning,
            n_total,
            Some(estimate),
            Some(variance),
        ));
    }
    let hw2 = halfwidth_two_sided(variance, n_total, alpha, rho2);
    let hw1 = halfwidth_one_sided(variance, n_total, alpha, rho1);
    let log_e = log_e_value(estimate, 0.0, variance, n_total, rho2);
    let tau2 = rho2 * rho2 * variance * n_total;
    let log_lr = 0.5 * (variance / (variance + tau2)).ln()
        + estimate * estimate * tau2 / (2.0 * variance * (variance + tau2));
    Ok(SequentialAnalysis {
        status: AnalysisStatus::Ok,
        alpha,
        tuning,
        n_total,
        estimate: Some(estimate),
        variance: Some(variance),
        rho_two_sided: Some(rho2),
        halfwidth_two_sided: Some(hw2),
        cs: Some(Interval::around(estimate, hw2)),
        p_value: Some((-log_e).exp().min(1.0)),
        log_e_value: Some(log_e),
        rho_one_sided: Some(rho1),
        halfwidth_one_sided: Some(hw1),
        upper_bound_one_sided: Some(estimate + hw1),
        lower_bound_one_sided: Some(estimate - hw1),
        msprt_tau2: Some(tau2),
        msprt_log_lr: Some(log_lr),
    })
}

fn degenerate(
    status: AnalysisStatus,
    alpha: f64,
    tuning: f64,
    n_total: f64,
    estimate: Option<f64>,
    variance: Option<f64>,
) -> SequentialAnalysis {
    SequentialAnalysis {
        status,
        alpha,
        tuning,
        n_total,
        estimate,
        variance,
        rho_two_sided: None,
        halfwidth_two_sided: None,
        cs: None,
        p_value: None,
        log_e_value: None,
        rho_one_sided: None,
        halfwidth_one_sided: None,
        upper_bound_one_sided: None,
        lower_bound_one_sided: None,
        msprt_tau2: None,
        msprt_log_lr: None,
    }
}

/// Tuning `S` from the smallest harm of interest (METHODS.md §2b):
/// `N* = 2·(z_{1−α} + z_{power})²·(p(1−p) + p'(1−p'))/(p − p')²`, the total N (both arms) at
/// which a fixed-horizon one-sided test would catch the drop from `p_baseline` to
/// `p_alternative`. Example: 0.30 → 0.27 at α = 0.05, power 0.8 gives ≈ 5 590.
pub fn planning_tuning(
    p_baseline: f64,
    p_alternative: f64,
    alpha_one_sided: f64,
    power: f64,
) -> Result<f64, StatsError> {
    check_open("alpha", alpha_one_sided, 0.0, 1.0, "(0, 1)")?;
    check_open("power", power, 0.0, 1.0, "(0, 1)")?;
    for (name, p) in [("p_baseline", p_baseline), ("p_alternative", p_alternative)] {
        if !(p.is_finite() && (0.0..=1.0).contains(&p)) {
            return Err(StatsError::OutOfRange {
                name,
                range: "[0, 1]",
                value: p,
            });
        }
    }
    let delta = (p_baseline - p_alternative).abs();
    let var_sum = p_baseline * (1.0 - p_baseline) + p_alternative * (1.0 - p_alternative);
    if delta <= 0.0 {
        return Err(StatsError::OutOfRange {
            name: "|p_baseline - p_alternative|",
            range: "(0, 1]",
            value: delta,
        });
    }
    if var_sum <= 0.0 {
        return Err(StatsError::OutOfRange {
            name: "p_baseline(1-p_baseline) + p_alternative(1-p_alternative)",
            range: "(0, 0.5]",
            value: var_sum,
        });
    }
    let z = z_quantile(1.0 - alpha_one_sided) + z_quantile(power);
    Ok(2.0 * z * z * var_sum / (delta * delta))
}

/// Running minimum of always-valid p-values across looks (METHODS.md §2b, "sticky").
///
/// Always-valid p-values may be minimised over time without losing validity, so once a
/// look has shown evidence it stays shown. Only valid while `S` and `α` are unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StickyPValue {
    /// Smallest p-value seen so far; `None` until a look produced one.
    pub min_p_value: Option<f64>,
}

impl StickyPValue {
    /// Folds in this look's p-value (ignoring `None`/NaN looks) and returns the running minimum.
    pub fn observe(&mut self, p_value: Option<f64>) -> Option<f64> {
        self.min_p_value = sticky_min(self.min_p_value, p_value);
        self.min_p_value
    }
}

/// `min(previous, current)` over the defined, finite values, clamped to `[0, 1]`.
pub fn sticky_min(previous: Option<f64>, current: Option<f64>) -> Option<f64> {
    let clean = |p: Option<f64>| p.filter(|v| !v.is_nan()).map(|v| v.clamp(0.0, 1.0));
    match (clean(previous), clean(current)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::stats::z_quantile;
    use proptest::prelude::*;

    #[test]
    fn the_sticky_p_value_keeps_the_smallest_value_seen_across_looks() {
        let mut sticky = StickyPValue::default();
        let looks = [
            Some(0.5),
            Some(0.2),
            Some(0.9),
            None,
            Some(f64::NAN),
            Some(0.3),
        ];
        let seen: Vec<_> = looks.iter().map(|&p| sticky.observe(p)).collect();
        assert_eq!(
            seen,
            vec![
                Some(0.5),
                Some(0.2),
                Some(0.2),
                Some(0.2),
                Some(0.2),
                Some(0.2)
            ]
        );
        assert_eq!(sticky.observe(Some(0.01)), Some(0.01));
    }

    #[test]
    fn the_sticky_p_value_is_undefined_until_a_look_produces_one_and_stays_in_unit_interval() {
        assert_eq!(sticky_min(None, None), None);
        assert_eq!(sticky_min(None, Some(1.5)), Some(1.0));
        assert_eq!(sticky_min(Some(-0.1), None), Some(0.0));
    }

    #[test]
    fn zero_variance_gives_status_and_no_bounds() -> Result<(), StatsError> {
        let s = sequential_from_estimate(0.0, 0.0, 400.0, 0.05, DEFAULT_TUNING)?;
        assert_eq!(s.status, AnalysisStatus::InsufficientVariance);
        assert_eq!(
            (s.cs, s.p_value, s.upper_bound_one_sided),
            (None, None, None)
        );
        assert_eq!(
            one_sided_bounds(0.0, 0.0, 400.0, 0.05, DEFAULT_TUNING)?,
            None
        );
        assert_eq!(
            always_valid_p_value(0.1, 0.0, 0.0, 10.0, 0.05, DEFAULT_TUNING)?,
            None
        );
        Ok(())
    }

    #[test]
    fn zero_users_give_status_empty_arm() -> Result<(), StatsError> {
        let c = ProportionCounts::new(0, 0, 10, 3)?;
        let s = analyze_sequential(&c, 0.05, DEFAULT_TUNING)?;
        assert_eq!(s.status, AnalysisStatus::EmptyArm);
        assert_eq!((s.estimate, s.cs, s.p_value), (None, None, None));
        Ok(())
    }

    #[test]
    fn one_sided_alpha_must_be_below_one_half_and_tuning_positive() {
        assert!(rho_one_sided(0.5, DEFAULT_TUNING).is_err());
        assert!(rho_one_sided(0.05, 0.0).is_err());
        assert!(rho_two_sided(0.05, f64::INFINITY).is_err());
        assert!(one_sided_bounds(0.0, f64::NAN, 10.0, 0.05, DEFAULT_TUNING).is_err());
    }

    /// METHODS.md §2d quotes the cost of validity in units of the fixed-horizon half-width;
    /// the ratio does not depend on V, so it pins down the N-dependence of both forms.
    #[test]
    fn half_width_ratios_match_the_figures_quoted_in_methods() -> Result<(), StatsError> {
        let v = 1e-4;
        let s = DEFAULT_TUNING;
        let ratio = |n: f64, one_sided: bool| -> Result<f64, StatsError> {
            let a = sequential_from_estimate(0.0, v, n, 0.05, s)?;
            let (hw, z) = if one_sided {
                (a.halfwidth_one_sided, z_quantile(0.95))
            } else {
                (a.halfwidth_two_sided, z_quantile(0.975))
            };
            Ok(hw.unwrap_or(f64::NAN) / (z * v.sqrt()))
        };
        let round2 = |x: f64| (x * 100.0).round() / 100.0;
        assert_eq!(round2(ratio(s, true)?), 1.69);
        assert_eq!(round2(ratio(s, false)?), 1.55);
        assert_eq!(round2(ratio(s / 5.0, true)?), 1.92);
        assert_eq!(round2(ratio(10.0 * s, true)?), 1.82);
        Ok(())
    }

    #[test]
    fn planning_tuning_reproduces_the_methods_example() -> Result<(), StatsError> {
        // 30% → 27%, α = 0.05 one-sided, 80% power: ≈ 2 800 per arm, so N* ≈ 5 600 in total.
        let n = planning_tuning(0.30, 0.27, 0.05, 0.8)?;
        assert!((5500.0..5700.0).contains(&n), "{n}");
        assert!(planning_tuning(0.3, 0.3, 0.05, 0.8).is_err());
        assert!(planning_tuning(0.3, 1.2, 0.05, 0.8).is_err());
        Ok(())
    }

    #[test]
    fn a_smaller_alpha_gives_a_wider_harm_bound() -> Result<(), StatsError> {
        let strict = one_sided_bounds(-0.01, 2e-5, 20_000.0, 0.05, DEFAULT_TUNING)?;
        let loose = one_sided_bounds(-0.01, 2e-5, 20_000.0, 0.20, DEFAULT_TUNING)?;
        let (Some(strict), Some(loose)) = (strict, loose) else {
            panic!("bounds expected");
        };
        assert!(strict.upper > loose.upper && strict.lower < loose.lower);
        Ok(())
    }

    #[test]
    fn the_p_value_at_theta0_equal_to_the_estimate_is_one() -> Result<(), StatsError> {
        let p = always_valid_p_value(0.03, 0.03, 1e-4, 1000.0, 0.05, DEFAULT_TUNING)?;
        assert_eq!(p, Some(1.0));
        Ok(())
    }

    proptest! {
        #[test]
        fn any_counts_give_a_sequence_around_the_estimate_and_a_valid_p(
            (nc, xc, nt, xt) in (0u64..=500, 0u64..=500)
                .prop_flat_map(|(nc, nt)| (Just(nc), 0..=nc, Just(nt), 0..=nt)),
            tuning in 10.0f64..1e6,
        ) {
            let c = ProportionCounts::new(nc, xc, nt, xt).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let s = analyze_sequential(&c, 0.05, tuning).map_err(|e| TestCaseError::fail(e.to_string()))?;
            if let (Some(d), Some(cs)) = (s.estimate, s.cs) {
                prop_assert!(cs.contains(d) && cs.lower.is_finite() && cs.upper.is_finite());
            }
            if let Some(p) = s.p_value {
                prop_assert!((0.0..=1.0).contains(&p));
            }
            if let (Some(a), Some(b)) = (s.log_e_value, s.msprt_log_lr) {
                // The mSPRT form equals ln E (METHODS.md §2b).
                prop_assert!((a - b).abs() <= 1e-9 * (1.0 + a.abs()));
            }
            prop_assert_eq!(s.status == AnalysisStatus::Ok, s.cs.is_some());
        }
    }
}
