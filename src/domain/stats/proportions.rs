//! Fixed-horizon two-proportion analysis for display and the final read (METHODS.md §2a).
//!
//! Absolute delta `Δ = p_t − p_c` with the unpooled (Wald) standard error and CI, the pooled
//! z-test p-value (= `statsmodels.proportions_ztest`), the relative lift `Δ/p_c` with its
//! delta-method CI (= gbstats `frequentist_variance(relative=True)`), and the Agresti–Caffo
//! interval for display at small n. The scheduler does **not** act on these numbers: it acts on
//! the always-valid sequences in [`super::sequential`].

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{check_open, two_sided_p, z_quantile, AnalysisStatus, Interval, StatsError};

/// User and success counts of one binary metric in both arms.
///
/// "Control" means users hashed into the holdout range (eligible, not exposed), METHODS.md §6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProportionCounts {
    /// `n_c`: eligible control users.
    pub control_users: u64,
    /// `x_c`: control users with the outcome (retained, activated, saw an error...).
    pub control_successes: u64,
    /// `n_t`: eligible treatment users.
    pub treatment_users: u64,
    /// `x_t`: treatment users with the outcome.
    pub treatment_successes: u64,
}

impl ProportionCounts {
    /// Builds validated counts (successes may not exceed users in either arm).
    pub fn new(
        control_users: u64,
        control_successes: u64,
        treatment_users: u64,
        treatment_successes: u64,
    ) -> Result<Self, StatsError> {
        let counts = Self {
            control_users,
            control_successes,
            treatment_users,
            treatment_successes,
        };
        counts.validate()?;
        Ok(counts)
    }

    /// Rejects successes > users. Fields are public (they come from JSON), so every analysis
    /// re-checks instead of trusting the constructor.
    pub fn validate(&self) -> Result<(), StatsError> {
        if self.control_successes > self.control_users {
            return Err(StatsError::SuccessesExceedUsers {
                arm: "control",
                successes: self.control_successes,
                users: self.control_users,
            });
        }
        if self.treatment_successes > self.treatment_users {
            return Err(StatsError::SuccessesExceedUsers {
                arm: "treatment",
                successes: self.treatment_successes,
                users: self.treatment_users,
            });
        }
        Ok(())
    }

    /// `N = n_c + n_t` as a float (the sequential methods' sample size).
    pub fn total_users(&self) -> f64 {
        self.control_users as f64 + self.treatment_users as f64
    }

    /// Successes summed over both arms.
    pub fn total_successes(&self) -> u64 {
        self.control_successes
            .saturating_add(self.treatment_successes)
    }

    /// Failures (users without the outcome) summed over both arms.
    pub fn total_failures(&self) -> u64 {
        // Saturating, so unvalidated counts (successes > users) cannot underflow and panic.
        (self.control_users.saturating_sub(self.control_successes)).saturating_add(
            self.treatment_users
                .saturating_sub(self.treatment_successes),
        )
    }

    /// `(p_c, p_t)`, or `None` when an arm is empty.
    pub(crate) fn rates(&self) -> Option<(f64, f64)> {
        if self.control_users == 0 || self.treatment_users == 0 {
            return None;
        }
        Some((
            self.control_successes as f64 / self.control_users as f64,
            self.treatment_successes as f64 / self.treatment_users as f64,
        ))
    }

    /// `(Δ̂, V)` with the unpooled variance `V = p_c(1−p_c)/n_c + p_t(1−p_t)/n_t`, or `None`
    /// when an arm is empty. Written exactly as in `oracle.py` so rounding matches.
    pub(crate) fn delta_and_variance(&self) -> Option<(f64, f64)> {
        let (pc, pt) = self.rates()?;
        let var = pc * (1.0 - pc) / self.control_users as f64
            + pt * (1.0 - pt) / self.treatment_users as f64;
        Some((pt - pc, var))
    }
}

/// Relative lift `r = (p_t − p_c)/p_c` with its delta-method standard error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RelativeLift {
    /// `r`; `None` when `p_c = 0` (or an arm is empty).
    pub lift: Option<f64>,
    /// `sqrt(V_r)`; may be `Some(0.0)`, e.g. when the treatment arm has no successes.
    pub se: Option<f64>,
    /// Two-sided z p-value of `r/se`; `None` when `se` is missing or 0.
    pub p_value: Option<f64>,
    /// `r ± z_{1−α/2}·se`; `None` when `se` is missing or 0 (as in `oracle.py`).
    pub ci: Option<Interval>,
}

/// Fixed-horizon two-proportion result (METHODS.md §2a), for display and the final read.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TwoProportionAnalysis {
    /// Degenerate-case flag; anything but `ok` means "take no decision".
    pub status: AnalysisStatus,
    /// Two-sided α of the intervals (0.05 gives 95% intervals).
    pub alpha: f64,
    /// `p_c`.
    pub p_control: Option<f64>,
    /// `p_t`.
    pub p_treatment: Option<f64>,
    /// `Δ = p_t − p_c`.
    pub abs_delta: Option<f64>,
    /// Unpooled `SE = sqrt(V)` (0 on `insufficient_variance`).
    pub abs_delta_se: Option<f64>,
    /// Wald CI `Δ ± z·SE`; `[Δ, Δ]` on `insufficient_variance`.
    pub abs_delta_ci: Option<Interval>,
    /// `Δ/SE`; `None` when `SE = 0`.
    pub unpooled_z: Option<f64>,
    /// `2Φ(−|Δ/SE|)`; `None` when `SE = 0`.
    pub unpooled_p_value: Option<f64>,
    /// Pooled `z = Δ/SE0`; `None` on `insufficient_variance`.
    pub pooled_z: Option<f64>,
    /// The reported p-value: pooled two-sided z-test; 1 on `insufficient_variance`.
    pub p_value: Option<f64>,
    /// Agresti–Caffo interval (one success and one failure added per arm), for small n.
    pub agresti_caffo_ci: Option<Interval>,
    /// Relative lift with delta-method CI.
    pub relative: RelativeLift,
}

/// Computes every §2a quantity for `counts` at two-sided level `alpha ∈ (0, 1)`.
///
/// Degenerate data never errors: an empty arm gives status `empty_arm` and all `None`;
/// `V = 0` gives `insufficient_variance`, p = 1 and CI `[Δ, Δ]`.
pub fn analyze_two_proportions(
    counts: &ProportionCounts,
    alpha: f64,
) -> Result<TwoProportionAnalysis, StatsError> {
    counts.validate()?;
    check_open("alpha", alpha, 0.0, 1.0, "(0, 1)")?;
    let z_crit = z_quantile(1.0 - alpha / 2.0);

    let Some((pc, pt)) = counts.rates() else {
        return Ok(empty(alpha));
    };
    let (nc, nt) = (counts.control_users as f64, counts.treatment_users as f64);
    let delta = pt - pc;
    let var = pc * (1.0 - pc) / nc + pt * (1.0 - pt) / nt;
    let se = var.sqrt();
    let agresti_caffo_ci = Some(agresti_caffo(counts, z_crit));
    let relative = relative_lift(pc, pt, nc, nt, z_crit);

    if var <= 0.0 {
        // METHODS.md §2a: both arms at 0% or 100% → p = 1, CI [Δ, Δ], no test statistic.
        return Ok(TwoProportionAnalysis {
            status: AnalysisStatus::InsufficientVariance,
            alpha,
            p_control: Some(pc),
            p_treatment: Some(pt),
            abs_delta: Some(delta),
            abs_delta_se: Some(0.0),
            abs_delta_ci: Some(Interval::around(delta, 0.0)),
            unpooled_z: None,
            unpooled_p_value: None,
            pooled_z: None,
            p_value: Some(1.0),
            agresti_caffo_ci,
            relative,
        });
    }

    let unpooled_z = delta / se;
    // V > 0 implies the pooled rate is strictly inside (0, 1), so SE0 > 0 here.
    let pooled = (counts.control_successes as f64 + counts.treatment_successes as f64) / (nc + nt);
    let se0 = (pooled * (1.0 - pooled) * (1.0 / nc + 1.0 / nt)).sqrt();
    let (pooled_z, p_value) = if se0 > 0.0 {
        let z = delta / se0;
        (Some(z), two_sided_p(z))
    } else {
        (None, 1.0)
    };

    Ok(TwoProportionAnalysis {
        status: AnalysisStatus::Ok,
        alpha,
        p_control: Some(pc),
        p_treatment: Some(pt),
        abs_delta: Some(delta),
        abs_delta_se: Some(se),
        abs_delta_ci: Some(Interval::around(delta, z_crit * se)),
        unpooled_z: Some(unpooled_z),
        unpooled_p_value: Some(two_sided_p(unpooled_z)),
        pooled_z,
        p_value: Some(p_value),
        agresti_caffo_ci,
        relative,
    })
}

/// Agresti–Caffo: add one success and one failure to each arm, then Wald. Matches
/// `statsmodels confint_proportions_2indep(method="agresti-caffo")`. Never degenerate, since the
/// adjusted rates lie strictly inside (0, 1).
fn agresti_caffo(counts: &ProportionCounts, z_crit: f64) -> Interval {
    let nc = counts.control_users as f64 + 2.0;
    let nt = counts.treatment_users as f64 + 2.0;
    let pc = (counts.control_successes as f64 + 1.0) / nc;
    let pt = (counts.treatment_successes as f64 + 1.0) / nt;
    let var = pc * (1.0 - pc) / nc + pt * (1.0 - pt) / nt;
    Interval::around(pt - pc, z_crit * var.sqrt())
}

/// Delta-method relative lift: `V_r = p_t(1−p_t)/(p_c² n_t) + p_c(1−p_c) p_t²/(p_c⁴ n_c)`.
fn relative_lift(pc: f64, pt: f64, nc: f64, nt: f64, z_crit: f64) -> RelativeLift {
    if pc <= 0.0 {
        // Lift relative to a zero baseline is undefined: report null (METHODS.md §2a).
        return RelativeLift {
            lift: None,
            se: None,
            p_value: None,
            ci: None,
        };
    }
    let lift = (pt - pc) / pc;
    let var = pt * (1.0 - pt) / (pc * pc * nt) + pc * (1.0 - pc) * pt * pt / (pc.powi(4) * nc);
    let se = var.sqrt();
    if se > 0.0 {
        RelativeLift {
            lift: Some(lift),
            se: Some(se),
            p_value: Some(two_sided_p(lift / se)),
            ci: Some(Interval::around(lift, z_crit * se)),
        }
    } else {
        RelativeLift {
            lift: Some(lift),
            se: Some(0.0),
            p_value: None,
            ci: None,
        }
    }
}

fn empty(alpha: f64) -> TwoProportionAnalysis {
    TwoProportionAnalysis {
        status: AnalysisStatus::EmptyArm,
        alpha,
        p_control: None,
        p_treatment: None,
        abs_delta: None,
        abs_delta_se: None,
        abs_delta_ci: None,
        unpooled_z: None,
        unpooled_p_value: None,
        pooled_z: None,
        p_value: None,
        agresti_caffo_ci: None,
        relative: RelativeLift {
            lift: None,
            se: None,
            p_value: None,
            ci: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counts(nc: u64, xc: u64, nt: u64, xt: u64) -> ProportionCounts {
        ProportionCounts {
            control_users: nc,
            control_successes: xc,
            treatment_users: nt,
            treatment_successes: xt,
        }
    }

    /// Every float the analysis reports, to check none is NaN or infinite.
    fn floats(a: &TwoProportionAnalysis) -> Vec<f64> {
        let ci = |i: Option<Interval>| i.map_or(vec![], |i| vec![i.lower, i.upper]);
        let mut v: Vec<f64> = [
            a.p_control,
            a.p_treatment,
            a.abs_delta,
            a.abs_delta_se,
            a.unpooled_z,
            a.unpooled_p_value,
            a.pooled_z,
            a.p_value,
            a.relative.lift,
            a.relative.se,
            a.relative.p_value,
        ]
        .into_iter()
        .flatten()
        .collect();
        v.extend(ci(a.abs_delta_ci));
        v.extend(ci(a.agresti_caffo_ci));
        v.extend(ci(a.relative.ci));
        v
    }

    #[test]
    fn an_empty_arm_gives_no_numbers_and_status_empty_arm() -> Result<(), StatsError> {
        for c in [
            counts(0, 0, 100, 10),
            counts(100, 10, 0, 0),
            counts(0, 0, 0, 0),
        ] {
            let a = analyze_two_proportions(&c, 0.05)?;
            assert_eq!(a.status, AnalysisStatus::EmptyArm);
            assert!(floats(&a).is_empty(), "{a:?}");
        }
        Ok(())
    }

    #[test]
    fn both_arms_at_zero_percent_give_p_one_and_a_point_interval() -> Result<(), StatsError> {
        let a = analyze_two_proportions(&counts(200, 0, 200, 0), 0.05)?;
        assert_eq!(a.status, AnalysisStatus::InsufficientVariance);
        assert_eq!(a.p_value, Some(1.0));
        assert_eq!(
            a.abs_delta_ci,
            Some(Interval {
                lower: 0.0,
                upper: 0.0
            })
        );
        assert_eq!(
            (a.pooled_z, a.unpooled_z, a.unpooled_p_value),
            (None, None, None)
        );
        assert_eq!(
            a.relative.lift, None,
            "lift over a zero baseline is undefined"
        );
        assert!(floats(&a).iter().all(|x| x.is_finite()));
        Ok(())
    }

    #[test]
    fn both_arms_at_one_hundred_percent_are_insufficient_variance() -> Result<(), StatsError> {
        let a = analyze_two_proportions(&counts(50, 50, 70, 70), 0.05)?;
        assert_eq!(a.status, AnalysisStatus::InsufficientVariance);
        assert_eq!(a.p_value, Some(1.0));
        assert_eq!(a.relative.lift, Some(0.0));
        assert_eq!(a.relative.ci, None);
        Ok(())
    }

    #[test]
    fn zero_percent_against_one_hundred_percent_takes_no_decision() -> Result<(), StatsError> {
        // V = 0 although Δ = 1: the §2a rule is about the variance, so p = 1 and no z.
        let a = analyze_two_proportions(&counts(30, 0, 30, 30), 0.05)?;
        assert_eq!(a.status, AnalysisStatus::InsufficientVariance);
        assert_eq!(
            a.abs_delta_ci,
            Some(Interval {
                lower: 1.0,
                upper: 1.0
            })
        );
        assert_eq!(a.p_value, Some(1.0));
        Ok(())
    }

    #[test]
    fn a_treatment_arm_with_no_successes_still_has_an_absolute_result() -> Result<(), StatsError> {
        let a = analyze_two_proportions(&counts(1000, 50, 1000, 0), 0.05)?;
        assert_eq!(a.status, AnalysisStatus::Ok);
        assert!(a.p_value.is_some_and(|p| p < 1e-9));
        // r = −1 with V_r = 0: no relative p-value or CI rather than a zero-width interval.
        assert_eq!(a.relative.lift, Some(-1.0));
        assert_eq!(a.relative.se, Some(0.0));
        assert_eq!((a.relative.p_value, a.relative.ci), (None, None));
        Ok(())
    }

    #[test]
    fn agresti_caffo_is_wider_than_wald_when_an_arm_is_at_zero() -> Result<(), StatsError> {
        let a = analyze_two_proportions(&counts(40, 4, 40, 0), 0.05)?;
        let (Some(w), Some(ac)) = (a.abs_delta_ci, a.agresti_caffo_ci) else {
            panic!("both intervals expected: {a:?}");
        };
        assert!(ac.upper - ac.lower > w.upper - w.lower);
        Ok(())
    }

    #[test]
    fn more_successes_than_users_is_rejected_naming_the_arm() {
        let e = analyze_two_proportions(&counts(10, 11, 10, 1), 0.05);
        assert_eq!(
            e.map_err(|e| e.to_string()),
            Err("control_successes (11) must not exceed control_users (10)".to_string())
        );
        assert!(ProportionCounts::new(10, 1, 5, 6).is_err());
    }

    #[test]
    fn alpha_outside_zero_one_is_rejected() {
        for alpha in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(analyze_two_proportions(&counts(10, 1, 10, 2), alpha).is_err());
        }
    }

    fn any_counts() -> impl Strategy<Value = ProportionCounts> {
        (0u64..=60, 0u64..=60).prop_flat_map(|(nc, nt)| {
            (0..=nc, 0..=nt).prop_map(move |(xc, xt)| counts(nc, xc, nt, xt))
        })
    }

    proptest! {
        #[test]
        fn any_counts_give_finite_numbers_p_in_unit_interval_and_cis_around_the_estimate(
            c in any_counts(),
            alpha in 0.001f64..0.5,
        ) {
            let a = analyze_two_proportions(&c, alpha).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(floats(&a).iter().all(|x| x.is_finite()), "{:?}", a);
            for p in [a.p_value, a.unpooled_p_value, a.relative.p_value].into_iter().flatten() {
                prop_assert!((0.0..=1.0).contains(&p));
            }
            if let (Some(d), Some(ci)) = (a.abs_delta, a.abs_delta_ci) {
                prop_assert!(ci.contains(d));
            }
            if let (Some(r), Some(ci)) = (a.relative.lift, a.relative.ci) {
                prop_assert!(ci.contains(r));
            }
            let empty = c.control_users == 0 || c.treatment_users == 0;
            prop_assert_eq!(a.status == AnalysisStatus::EmptyArm, empty);
            prop_assert_eq!(a.p_value.is_some(), !empty);
        }
    }
}
