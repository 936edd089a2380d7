//! Fuse policy glue between per-user cohort data and the pure decision rules in
//! [`crate::domain::stats`].
//!
//! The scheduler loads one [`CohortUser`] per exposed or held-out user from the store; the
//! `simulate` command generates the same records synthetically. Both then call
//! [`build_tick_input`] and [`crate::domain::stats::evaluate`], so the simulation exercises
//! exactly the analysis and decision path that production runs.

pub mod cohort;
pub mod outcomes;
pub mod settings;

pub use cohort::{
    build_tick_input, retention_metric, Arm, ArmSummary, CohortAnalysis, CohortUser, CohortWindows,
    Epoch, MetricSummary, ACTIVATION_METRIC, ERROR_RATE_METRIC,
};
