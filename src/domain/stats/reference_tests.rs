//! Checks the Rust implementation against `shared/stats/reference_vectors.json` (METHODS.md §3),
//! which `oracle.py` computed with statsmodels, scipy and gbstats.
//!
//! Every field whose computation METHODS.md defines is compared, to 1e-9 relative. The only
//! absolute floor is for expected values below 1e-300 (exact zeros such as `abs_delta` of
//! identical arms, and p-values that underflow to 0 like `srm_90_10_pvalue`): there the
//! implementation must also be below 1e-300. `null` is compared with `None` or with the
//! documented degenerate status. Fields deliberately not compared (no formula in METHODS.md):
//! `statsmodels_ci95_newcomb_*`, gbstats' Welch-t `ci_*`/`p_value` of the frequentist results
//! (§2a says test against z, not gbstats), gbstats' relative sequential `ci_*`/`p_value`
//! (METHODS.md defines the sequence on `Δ` only), and every gbstats block whose
//! `error_message` is set (gbstats refused; §2a documents our own answer for those).
//! The number of comparisons is asserted so the test cannot pass by checking nothing.

use serde_json::Value;

use super::proportions::{analyze_two_proportions, ProportionCounts, TwoProportionAnalysis};
use super::sequential::{analyze_sequential, SequentialAnalysis};
use super::srm::{srm_check, SrmEpoch, SrmResult, SRM_P_THRESHOLD};
use super::AnalysisStatus;

const VECTORS_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/stats/reference_vectors.json"
);
const REL_TOL: f64 = 1e-9;
const ZERO_FLOOR: f64 = 1e-300;
/// 12 cases × 44 always-checked fields + 10 cases without a gbstats error × 11 gbstats fields.
const EXPECTED_CHECKS: usize = 12 * 44 + 10 * 11;

struct Checker {
    case: String,
    checks: usize,
    failures: Vec<String>,
}

impl Checker {
    fn fail(&mut self, field: &str, msg: String) {
        self.failures
            .push(format!("{} / {}: {}", self.case, field, msg));
    }

    fn close(expected: f64, actual: f64) -> bool {
        if expected.abs() < ZERO_FLOOR {
            actual.abs() < ZERO_FLOOR
        } else {
            (actual - expected).abs() <= REL_TOL * expected.abs()
        }
    }

    /// Compares a numeric field; `null` must map to `None`.
    fn num(&mut self, e: &Value, field: &str, actual: Option<f64>) {
        self.num_at(e, field, field, actual);
    }

    fn num_at(&mut self, e: &Value, path: &str, label: &str, actual: Option<f64>) {
        self.checks += 1;
        let expected = e.pointer(path).or_else(|| e.get(path));
        match (
            expected.and_then(Value::as_f64),
            expected.is_some_and(Value::is_null),
            actual,
        ) {
            (Some(x), _, Some(a)) if Self::close(x, a) => {}
            (None, true, None) => {}
            (x, _, a) => self.fail(label, format!("expected {x:?}, got {a:?}")),
        }
    }

    /// A field that is `null` in the oracle where METHODS.md prescribes a documented
    /// degenerate answer instead: `null` must coincide with `status`, and a number with `actual`.
    fn num_or_status(&mut self, e: &Value, field: &str, actual: Option<f64>, status_ok: bool) {
        if e.get(field).is_some_and(Value::is_null) {
            self.checks += 1;
            if !status_ok {
                self.fail(field, format!("expected degenerate status, got {actual:?}"));
            }
        } else {
            self.num(e, field, actual);
        }
    }

    fn boolean(&mut self, e: &Value, field: &str, actual: bool) {
        self.checks += 1;
        if e.get(field).and_then(Value::as_bool) != Some(actual) {
            self.fail(field, format!("expected {:?}, got {actual}", e.get(field)));
        }
    }
}

fn u(inputs: &Value, key: &str) -> Result<u64, String> {
    inputs
        .get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("input {key} missing or not an unsigned integer"))
}

fn check_proportions(c: &mut Checker, e: &Value, a: &TwoProportionAnalysis) {
    let degenerate = a.status == AnalysisStatus::InsufficientVariance;
    c.num(e, "p_control", a.p_control);
    c.num(e, "p_treatment", a.p_treatment);
    c.num(e, "abs_delta", a.abs_delta);
    c.num(e, "abs_delta_se_unpooled", a.abs_delta_se);
    c.num(e, "pooled_z", a.pooled_z);
    c.num(e, "pooled_z_pvalue", a.p_value);
    // statsmodels gives NaN (null) where §2a prescribes p = 1 with insufficient_variance.
    c.num(e, "statsmodels_proportions_ztest_z", a.pooled_z);
    c.num_or_status(
        e,
        "statsmodels_proportions_ztest_pvalue",
        a.p_value,
        degenerate && a.p_value == Some(1.0),
    );
    c.num(e, "unpooled_z", a.unpooled_z);
    c.num(e, "unpooled_z_pvalue", a.unpooled_p_value);
    // The oracle's raw Wald CI is null at V = 0; §2a reports [Δ, Δ] flagged instead.
    let ci = a.abs_delta_ci;
    let point = degenerate
        && ci.is_some_and(|i| Some(i.lower) == a.abs_delta && Some(i.upper) == a.abs_delta);
    c.num_or_status(e, "abs_delta_ci95_wald_lower", ci.map(|i| i.lower), point);
    c.num_or_status(e, "abs_delta_ci95_wald_upper", ci.map(|i| i.upper), point);
    c.num(e, "statsmodels_ci95_wald_lower", ci.map(|i| i.lower));
    c.num(e, "statsmodels_ci95_wald_upper", ci.map(|i| i.upper));
    let ac = a.agresti_caffo_ci;
    c.num(
        e,
        "statsmodels_ci95_agresti_caffo_lower",
        ac.map(|i| i.lower),
    );
    c.num(
        e,
        "statsmodels_ci95_agresti_caffo_upper",
        ac.map(|i| i.upper),
    );
    let r = &a.relative;
    c.num(e, "rel_lift", r.lift);
    c.num(e, "rel_lift_se_delta_method", r.se);
    c.num(e, "rel_lift_z_pvalue", r.p_value);
    c.num(e, "rel_lift_ci95_lower", r.ci.map(|i| i.lower));
    c.num(e, "rel_lift_ci95_upper", r.ci.map(|i| i.upper));
}

fn check_srm(c: &mut Checker, e: &Value, tag: &str, s: &SrmResult) {
    let f = |suffix: &str| format!("srm_{tag}_{suffix}");
    c.num(e, &f("chi2"), s.chi2);
    // scipy's chi-square sf, the df = 1 normal identity and gbstats agree; all are compared.
    c.num(e, &f("pvalue"), s.p_value);
    c.num(e, &f("pvalue_normal_identity"), s.p_value);
    c.num(e, &f("pvalue_gbstats"), s.p_value);
    c.boolean(e, &f("flag_p_lt_0.001"), s.mismatch);
}

fn check_sequential(c: &mut Checker, e: &Value, s: &SequentialAnalysis) {
    c.num(e, "seq_abs_rho_two_sided", s.rho_two_sided);
    c.num(e, "seq_abs_halfwidth_two_sided", s.halfwidth_two_sided);
    c.num(e, "seq_abs_cs_lower", s.cs.map(|i| i.lower));
    c.num(e, "seq_abs_cs_upper", s.cs.map(|i| i.upper));
    c.num(e, "seq_abs_pvalue_always_valid", s.p_value);
    c.num(e, "seq_abs_log_evalue", s.log_e_value);
    c.num(e, "seq_abs_rho_one_sided", s.rho_one_sided);
    c.num(e, "seq_abs_halfwidth_one_sided", s.halfwidth_one_sided);
    c.num(e, "seq_abs_one_sided_upper_bound", s.upper_bound_one_sided);
    c.num(e, "seq_abs_one_sided_lower_bound", s.lower_bound_one_sided);
    c.num(e, "msprt_tau2_equivalent", s.msprt_tau2);
    c.num(e, "msprt_log_lr", s.msprt_log_lr);
    // The mSPRT p-value is min(1, 1/Λ) with Λ = E, i.e. the same always-valid p-value.
    c.num(
        e,
        "msprt_pvalue",
        s.msprt_log_lr.map(|l| (-l).exp().min(1.0)),
    );
}

/// gbstats blocks that compute a quantity METHODS.md defines (skipped when gbstats refused).
fn check_gbstats(c: &mut Checker, e: &Value, a: &TwoProportionAnalysis, s: &SequentialAnalysis) {
    let refused = |k: &str| {
        !e.pointer(&format!("/{k}/error_message"))
            .is_some_and(Value::is_null)
    };
    if ["absolute", "relative"]
        .iter()
        .flat_map(|d| {
            [
                format!("gbstats_frequentist_{d}"),
                format!("gbstats_sequential_{d}"),
            ]
        })
        .any(|k| refused(&k))
    {
        return;
    }
    for block in [
        "gbstats_frequentist_absolute",
        "gbstats_sequential_absolute",
    ] {
        c.num_at(
            e,
            &format!("/{block}/expected"),
            &format!("{block}.expected"),
            a.abs_delta,
        );
        c.num_at(
            e,
            &format!("/{block}/stddev"),
            &format!("{block}.stddev"),
            a.abs_delta_se,
        );
    }
    for block in [
        "gbstats_frequentist_relative",
        "gbstats_sequential_relative",
    ] {
        c.num_at(
            e,
            &format!("/{block}/expected"),
            &format!("{block}.expected"),
            a.relative.lift,
        );
        c.num_at(
            e,
            &format!("/{block}/stddev"),
            &format!("{block}.stddev"),
            a.relative.se,
        );
    }
    // gbstats' sequential absolute result is exactly the §2b two-sided CS.
    let b = "gbstats_sequential_absolute";
    c.num_at(
        e,
        &format!("/{b}/ci_lower"),
        &format!("{b}.ci_lower"),
        s.cs.map(|i| i.lower),
    );
    c.num_at(
        e,
        &format!("/{b}/ci_upper"),
        &format!("{b}.ci_upper"),
        s.cs.map(|i| i.upper),
    );
    c.num_at(
        e,
        &format!("/{b}/p_value"),
        &format!("{b}.p_value"),
        s.p_value,
    );
}

#[test]
fn every_defined_reference_field_matches_the_oracle() -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(VECTORS_PATH)
        .map_err(|err| format!("cannot read {VECTORS_PATH}: {err}"))?;
    let root: Value = serde_json::from_str(&text)?;
    let cases = root
        .get("cases")
        .and_then(Value::as_array)
        .ok_or("reference_vectors.json has no cases array")?;
    assert_eq!(cases.len(), 12, "METHODS.md §3 documents 12 cases");

    let mut total = 0;
    let mut failures = Vec::new();
    for case in cases {
        let name = case.get("name").and_then(Value::as_str).unwrap_or("?");
        let inputs = case.get("inputs").ok_or("case without inputs")?;
        let e = case.get("expected").ok_or("case without expected")?;
        let alpha = inputs
            .get("alpha")
            .and_then(Value::as_f64)
            .ok_or("no alpha")?;
        let tuning = inputs
            .get("sequential_tuning_parameter")
            .and_then(Value::as_f64)
            .ok_or("no tuning")?;
        let counts = ProportionCounts::new(
            u(inputs, "n_control")?,
            u(inputs, "conv_control")?,
            u(inputs, "n_treatment")?,
            u(inputs, "conv_treatment")?,
        )?;
        let a = analyze_two_proportions(&counts, alpha)?;
        let s = analyze_sequential(&counts, alpha, tuning)?;
        let srm = |wc: f64, wt: f64| {
            srm_check(
                &SrmEpoch {
                    treatment_users: counts.treatment_users,
                    control_users: counts.control_users,
                    treatment_weight: wt,
                    control_weight: wc,
                },
                SRM_P_THRESHOLD,
            )
        };

        let mut c = Checker {
            case: name.to_string(),
            checks: 0,
            failures: Vec::new(),
        };
        check_proportions(&mut c, e, &a);
        check_srm(&mut c, e, "50_50", &srm(0.5, 0.5)?);
        check_srm(&mut c, e, "90_10", &srm(0.9, 0.1)?);
        check_sequential(&mut c, e, &s);
        check_gbstats(&mut c, e, &a, &s);
        total += c.checks;
        failures.extend(c.failures);
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        total, EXPECTED_CHECKS,
        "number of reference comparisons changed"
    );
    println!("{total} reference checks passed");
    Ok(())
}
