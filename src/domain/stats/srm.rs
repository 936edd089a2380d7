//! Sample-ratio-mismatch (SRM) check (METHODS.md §2c).
//!
//! Compares users *assigned* to treatment vs holdout control (counted at assignment, before
//! any outcome filtering) with the configured split `w_t : w_c` by a chi-square
//! goodness-of-fit test. With two arms (df = 1) the p-value is computed through the identity
//! `ChiSquared(1).sf(χ²) = 2Φ(−√χ²)`, which keeps full precision in the far tail.
//!
//! The expectation restarts with every exposure epoch (each throttle or promotion changes
//! `w_t`), so the scheduler passes counts assigned within the current epoch only
//! ([`srm_check`]). [`srm_check_epochs`] is the documented alternative: χ² summed over epochs
//! with df = number of epochs.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};
use utoipa::ToSchema;

use super::{check_open, phi, StatsError};

/// GrowthBook's default SRM threshold; strict because the scheduler checks continuously.
pub const SRM_P_THRESHOLD: f64 = 0.001;

/// Assignment counts of one exposure epoch and the split configured during it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SrmEpoch {
    /// Users assigned to treatment in this epoch.
    pub treatment_users: u64,
    /// Users assigned to the holdout control in this epoch.
    pub control_users: u64,
    /// `w_t`, e.g. the exposure % (any positive scale; only the ratio matters).
    pub treatment_weight: f64,
    /// `w_c`, e.g. the holdout %.
    pub control_weight: f64,
}

/// Whether the SRM test could be run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SrmStatus {
    /// χ² and p computed.
    Ok,
    /// No assigned users yet: nothing to test, never a mismatch.
    NoData,
    /// One arm has weight 0 and no users (e.g. 100% exposure without holdout): one category,
    /// nothing to test.
    NotApplicable,
    /// Users were assigned to an arm whose configured weight is 0: a certain mismatch
    /// (χ² is infinite, so it is reported as `null` with p = 0).
    ImpossibleAssignment,
}

/// SRM test result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SrmResult {
    /// Whether the test ran.
    pub status: SrmStatus,
    /// Summed χ² statistic.
    pub chi2: Option<f64>,
    /// Degrees of freedom (1 per epoch with data).
    pub degrees_of_freedom: u32,
    /// Goodness-of-fit p-value.
    pub p_value: Option<f64>,
    /// Threshold the p-value was compared with.
    pub threshold: f64,
    /// `p < threshold`: hold the flag and alert (METHODS.md §2e rule 0).
    pub mismatch: bool,
}

fn check_weight(name: &'static str, w: f64) -> Result<(), StatsError> {
    if w.is_finite() && w >= 0.0 {
        Ok(())
    } else {
        Err(StatsError::OutOfRange {
            name,
            range: "[0, inf)",
            value: w,
        })
    }
}

/// One epoch's contribution: `Ok(Some(χ²))`, `Ok(None)` when there is nothing to test, or the
/// status explaining why not.
fn epoch_chi2(e: &SrmEpoch) -> Result<Result<f64, SrmStatus>, StatsError> {
    check_weight("treatment_weight", e.treatment_weight)?;
    check_weight("control_weight", e.control_weight)?;
    let w_sum = e.treatment_weight + e.control_weight;
    if w_sum <= 0.0 {
        return Err(StatsError::OutOfRange {
            name: "treatment_weight + control_weight",
            range: "(0, inf)",
            value: w_sum,
        });
    }
    let (nt, nc) = (e.treatment_users as f64, e.control_users as f64);
    let total = nt + nc;
    if total <= 0.0 {
        return Ok(Err(SrmStatus::NoData));
    }
    let zero_weight_with_users =
        (e.treatment_weight == 0.0 && nt > 0.0) || (e.control_weight == 0.0 && nc > 0.0);
    if zero_weight_with_users {
        return Ok(Err(SrmStatus::ImpossibleAssignment));
    }
    if e.treatment_weight == 0.0 || e.control_weight == 0.0 {
        return Ok(Err(SrmStatus::NotApplicable));
    }
    let exp_t = total * e.treatment_weight / w_sum;
    let exp_c = total * e.control_weight / w_sum;
    Ok(Ok(
        (nt - exp_t).powi(2) / exp_t + (nc - exp_c).powi(2) / exp_c
    ))
}

/// SRM check of one epoch (df = 1), flagging `p < threshold` (use [`SRM_P_THRESHOLD`]).
pub fn srm_check(epoch: &SrmEpoch, threshold: f64) -> Result<SrmResult, StatsError> {
    srm_check_epochs(std::slice::from_ref(epoch), threshold)
}

/// SRM check summing χ² over epochs, df = number of epochs with a testable split.
///
/// Epochs without data or without a holdout contribute nothing; an epoch with users in a
/// zero-weight arm makes the whole result a mismatch.
pub fn srm_check_epochs(epochs: &[SrmEpoch], threshold: f64) -> Result<SrmResult, StatsError> {
    check_open("srm_p_threshold", threshold, 0.0, 1.0, "(0, 1)")?;
    let mut chi2 = 0.0;
    let mut df: u32 = 0;
    let mut saw_not_applicable = false;
    for e in epochs {
        match epoch_chi2(e)? {
            Ok(c) => {
                chi2 += c;
                df += 1;
            }
            Err(SrmStatus::ImpossibleAssignment) => {
                return Ok(SrmResult {
                    status: SrmStatus::ImpossibleAssignment,
                    chi2: None,
                    degrees_of_freedom: df,
                    p_value: Some(0.0),
                    threshold,
                    mismatch: true,
                });
            }
            Err(SrmStatus::NotApplicable) => saw_not_applicable = true,
            Err(_) => {}
        }
    }
    if df == 0 {
        let status = if saw_not_applicable {
            SrmStatus::NotApplicable
        } else {
            SrmStatus::NoData
        };
        return Ok(SrmResult {
            status,
            chi2: None,
            degrees_of_freedom: 0,
            p_value: None,
            threshold,
            mismatch: false,
        });
    }
    let p = if df == 1 {
        // Identity for df = 1; avoids the cancellation of 1 − cdf in the tail.
        2.0 * phi(-chi2.sqrt())
    } else {
        match ChiSquared::new(f64::from(df)) {
            Ok(dist) => dist.sf(chi2),
            // Unreachable for df ≥ 1; reported as "no result" rather than a panic.
            Err(_) => f64::NAN,
        }
    };
    let p_value = p.is_finite().then_some(p.clamp(0.0, 1.0));
    Ok(SrmResult {
        status: SrmStatus::Ok,
        chi2: Some(chi2),
        degrees_of_freedom: df,
        p_value,
        threshold,
        mismatch: p_value.is_some_and(|p| p < threshold),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(nt: u64, nc: u64, wt: f64, wc: f64) -> SrmEpoch {
        SrmEpoch {
            treatment_users: nt,
            control_users: nc,
            treatment_weight: wt,
            control_weight: wc,
        }
    }

    #[test]
    fn ten_thousand_against_nine_thousand_on_a_50_50_split_is_a_mismatch() -> Result<(), StatsError>
    {
        let r = srm_check(&epoch(9_000, 10_000, 50.0, 50.0), SRM_P_THRESHOLD)?;
        assert!(r.mismatch);
        assert!(
            r.p_value.is_some_and(|p| (p - 4.0e-13).abs() < 0.1e-13),
            "{r:?}"
        );
        Ok(())
    }

    #[test]
    fn a_90_10_split_passes_against_its_own_weights_in_percent() -> Result<(), StatsError> {
        let r = srm_check(&epoch(10_000, 90_000, 10.0, 90.0), SRM_P_THRESHOLD)?;
        assert!(!r.mismatch);
        assert_eq!(r.p_value, Some(1.0));
        Ok(())
    }

    #[test]
    fn no_assigned_users_is_no_data_and_never_a_mismatch() -> Result<(), StatsError> {
        let r = srm_check(&epoch(0, 0, 5.0, 95.0), SRM_P_THRESHOLD)?;
        assert_eq!(
            (r.status, r.p_value, r.mismatch),
            (SrmStatus::NoData, None, false)
        );
        Ok(())
    }

    #[test]
    fn full_exposure_without_holdout_is_not_applicable() -> Result<(), StatsError> {
        let r = srm_check(&epoch(500, 0, 100.0, 0.0), SRM_P_THRESHOLD)?;
        assert_eq!((r.status, r.mismatch), (SrmStatus::NotApplicable, false));
        Ok(())
    }

    #[test]
    fn users_in_an_arm_with_zero_weight_are_a_certain_mismatch() -> Result<(), StatsError> {
        let r = srm_check(&epoch(500, 3, 100.0, 0.0), SRM_P_THRESHOLD)?;
        assert_eq!(r.status, SrmStatus::ImpossibleAssignment);
        assert!(r.mismatch && r.chi2.is_none());
        Ok(())
    }

    #[test]
    fn two_epochs_sum_chi_square_with_two_degrees_of_freedom() -> Result<(), StatsError> {
        let epochs = [epoch(520, 480, 50.0, 50.0), epoch(260, 740, 25.0, 75.0)];
        let r = srm_check_epochs(&epochs, SRM_P_THRESHOLD)?;
        let chi2 = 1.6 + (10.0f64.powi(2) / 250.0 + 10.0f64.powi(2) / 750.0);
        assert_eq!(r.degrees_of_freedom, 2);
        assert!(r.chi2.is_some_and(|c| (c - chi2).abs() < 1e-12));
        // For df = 2 the chi-square survival function is exp(−χ²/2).
        let p = r.p_value.unwrap_or(f64::NAN);
        assert!((p - (-chi2 / 2.0).exp()).abs() < 1e-9 * p, "{p}");
        Ok(())
    }

    #[test]
    fn invalid_weights_and_thresholds_are_rejected_by_name() {
        let e = srm_check(&epoch(1, 1, -1.0, 1.0), SRM_P_THRESHOLD).map_err(|e| e.to_string());
        assert_eq!(
            e,
            Err("treatment_weight must be in [0, inf), got -1".to_string())
        );
        assert!(srm_check(&epoch(1, 1, 0.0, 0.0), SRM_P_THRESHOLD).is_err());
        assert!(srm_check(&epoch(1, 1, 1.0, 1.0), 0.0).is_err());
    }
}
