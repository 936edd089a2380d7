//! Per-user outcome aggregates of a feature under a fuse, folded one event at a time.
//!
//! A scheduler pass must not scan every stored event: at 1M exposed users and 10M
//! events that alone takes longer than the pass may. The store therefore keeps, on
//! each exposure row of a fused feature, the few numbers the analysis reads
//! ([`UserOutcomes`]) and updates them as events are ingested. This module is the one
//! definition of how an event changes them; the store's from-scratch SQL (used for
//! backtests and rebuilds) computes the same thing, and a test holds the two equal.

use serde::{Deserialize, Serialize};

const MS_PER_DAY: i64 = 86_400_000;
/// Activity days tracked from t0: bits 0..62 keep the mask a non-negative i64 in SQL.
pub const TRACKED_DAYS: i64 = 63;

/// The event names a fuse's outcomes depend on. Aggregates are built for one set of
/// names; when a fuse's configuration changes them, the aggregates are rebuilt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeNames {
    /// Activity names that count as activation.
    pub activation: Vec<String>,
    /// Activity names that count as adoption (besides activity attributed to the feature).
    pub adoption: Vec<String>,
}

/// What the analysis needs to know about one exposed user beyond the assignment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UserOutcomes {
    /// Bit k: activity in `[t0 + k days, t0 + (k+1) days)`, k < 63.
    pub active_days: u64,
    pub first_activation: Option<i64>,
    pub first_error: Option<i64>,
    pub adopted: bool,
    pub feedback_sum: f64,
    pub feedback_count: i64,
}

/// The fields of a stored event that outcomes depend on.
#[derive(Debug, Clone, Copy)]
pub struct OutcomeEvent<'a> {
    pub kind: &'a str,
    pub feature: Option<&'a str>,
    pub name: Option<&'a str>,
    pub score: Option<f64>,
    pub ts: i64,
}

impl UserOutcomes {
    /// Folds one event of the user into the outcomes of `feature`, exposed at `t0`.
    /// Events before t0 do not count (METHODS.md §2f measures from the exposure).
    pub fn apply(&mut self, feature: &str, t0: i64, names: &OutcomeNames, e: &OutcomeEvent<'_>) {
        if e.ts < t0 {
            return;
        }
        let named = |list: &[String]| e.name.is_some_and(|n| list.iter().any(|x| x == n));
        match e.kind {
            "activity" => {
                let day = (e.ts - t0) / MS_PER_DAY;
                if day < TRACKED_DAYS {
                    self.active_days |= 1u64 << day;
                }
                if named(&names.activation) {
                    self.first_activation =
                        Some(self.first_activation.map_or(e.ts, |t| t.min(e.ts)));
                }
                if e.feature == Some(feature) || named(&names.adoption) {
                    self.adopted = true;
                }
            }
            "error" => {
                self.first_error = Some(self.first_error.map_or(e.ts, |t| t.min(e.ts)));
            }
            "feedback" => {
                if let (Some(score), true) = (e.score, e.feature == Some(feature)) {
                    self.feedback_sum += score;
                    self.feedback_count += 1;
                }
            }
            _ => {}
        }
    }

    /// Mean feedback score, if the user gave any.
    pub fn feedback(&self) -> Option<f64> {
        (self.feedback_count > 0).then(|| self.feedback_sum / self.feedback_count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev<'a>(
        kind: &'a str,
        feature: Option<&'a str>,
        name: Option<&'a str>,
        ts: i64,
    ) -> OutcomeEvent<'a> {
        OutcomeEvent {
            kind,
            feature,
            name,
            score: None,
            ts,
        }
    }

    #[test]
    fn folds_each_kind_from_t0_on() {
        let names = OutcomeNames {
            activation: vec!["signup".into()],
            adoption: vec!["used_x".into()],
        };
        let t0 = 1_000 * MS_PER_DAY;
        let mut o = UserOutcomes::default();
        o.apply(
            "f",
            t0,
            &names,
            &ev("activity", None, Some("signup"), t0 - 1),
        );
        assert_eq!(o, UserOutcomes::default(), "before t0 nothing counts");
        o.apply(
            "f",
            t0,
            &names,
            &ev("activity", None, Some("signup"), t0 + 5),
        );
        o.apply(
            "f",
            t0,
            &names,
            &ev("activity", None, Some("signup"), t0 + 2),
        );
        o.apply(
            "f",
            t0,
            &names,
            &ev("activity", None, None, t0 + MS_PER_DAY),
        );
        o.apply(
            "f",
            t0,
            &names,
            &ev("activity", None, None, t0 + 63 * MS_PER_DAY),
        );
        assert_eq!(o.active_days, 0b11);
        assert_eq!(o.first_activation, Some(t0 + 2));
        assert!(!o.adopted);
        o.apply("f", t0, &names, &ev("activity", Some("g"), None, t0 + 9));
        assert!(
            !o.adopted,
            "activity attributed to another feature is not adoption"
        );
        o.apply(
            "f",
            t0,
            &names,
            &ev("activity", None, Some("used_x"), t0 + 9),
        );
        assert!(o.adopted);
        o.apply(
            "f",
            t0,
            &names,
            &ev("error", Some("g"), Some("boom"), t0 + 7),
        );
        o.apply("f", t0, &names, &ev("error", None, None, t0 + 3));
        assert_eq!(o.first_error, Some(t0 + 3));
        let mut fb = ev("feedback", Some("f"), None, t0 + 1);
        fb.score = Some(0.5);
        o.apply("f", t0, &names, &fb);
        fb.score = Some(1.0);
        o.apply("f", t0, &names, &fb);
        fb.feature = Some("g");
        o.apply("f", t0, &names, &fb);
        assert_eq!(o.feedback(), Some(0.75));
        o.apply("f", t0, &names, &ev("exposure", Some("f"), None, t0 + 1));
        assert_eq!(o.feedback_count, 2);
    }
}
