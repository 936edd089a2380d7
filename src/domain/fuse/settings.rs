//! A fuse's configuration as engineers set it through the API: the statistical
//! thresholds of [`FuseConfig`] plus what the analysis needs to know about events
//! (activation and adoption event names, windows) and where to send notifications.
//! Every field is optional in JSON (defaults from DESIGN.md / METHODS.md), and
//! validation names the field at fault.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::cohort::CohortWindows;
use crate::domain::stats::FuseConfig;

/// The whole fuse configuration (snake_case, as the statistics name their fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct FuseSettings {
    /// Id of the managed flexibleRollout strategy; created when absent.
    pub strategy_id: Option<String>,
    #[serde(flatten)]
    pub stats: FuseConfig,
    /// Activity event names that count as activation (none: no activation metric).
    pub activation_events: Vec<String>,
    /// Hours after t0 within which activation counts (default 72).
    pub activation_window_hours: u32,
    /// Hours after t0 within which an error counts against the user (default 24).
    pub error_window_hours: u32,
    /// Activity event names that count as using the feature, besides any activity
    /// attributed to it.
    pub adoption_events: Vec<String>,
    /// Slack-compatible webhook URLs notified of every automatic decision.
    pub webhook_urls: Vec<String>,
}

impl Default for FuseSettings {
    fn default() -> Self {
        Self {
            strategy_id: None,
            stats: FuseConfig::default(),
            activation_events: Vec::new(),
            activation_window_hours: 72,
            error_window_hours: 24,
            adoption_events: Vec::new(),
            webhook_urls: Vec::new(),
        }
    }
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsProblem {
    pub field: String,
    pub message: String,
}

impl FuseSettings {
    /// Every field name the JSON form accepts (for rejecting unknown keys: serde
    /// cannot deny unknown fields through `flatten`).
    pub fn field_names() -> Vec<String> {
        match serde_json::to_value(FuseSettings::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    pub fn windows(&self) -> CohortWindows {
        CohortWindows {
            activation_hours: self.activation_window_hours,
            error_hours: self.error_window_hours,
        }
    }

    /// All problems, each naming its field.
    pub fn validate(&self) -> Vec<SettingsProblem> {
        let mut problems: Vec<SettingsProblem> = match self.stats.validate() {
            Ok(()) => Vec::new(),
            Err(errors) => errors
                .into_iter()
                .map(|e| SettingsProblem {
                    field: e.field.to_string(),
                    message: e.message,
                })
                .collect(),
        };
        let mut bad = |field: &str, message: &str| {
            problems.push(SettingsProblem {
                field: field.into(),
                message: message.into(),
            })
        };
        if self.activation_window_hours == 0 || self.activation_window_hours > 24 * 60 {
            bad("activation_window_hours", "must be between 1 and 1440");
        }
        if self.error_window_hours == 0 || self.error_window_hours > 24 * 60 {
            bad("error_window_hours", "must be between 1 and 1440");
        }
        for (field, names) in [
            ("activation_events", &self.activation_events),
            ("adoption_events", &self.adoption_events),
        ] {
            if names.iter().any(|n| n.trim().is_empty() || n.len() > 256) {
                bad(field, "names must be non-empty and at most 256 characters");
            }
        }
        if self.webhook_urls.len() > 10 {
            bad("webhook_urls", "at most 10 URLs");
        }
        for url in &self.webhook_urls {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && url.len() > 8
                && !url.contains(char::is_whitespace);
            if !ok {
                bad(
                    "webhook_urls",
                    "each URL must be an http:// or https:// URL",
                );
                break;
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_object_means_every_default() {
        let s: FuseSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(s, FuseSettings::default());
        assert!(s.validate().is_empty());
        assert_eq!(s.stats.ramp_steps_pct, vec![5.0, 10.0, 25.0, 50.0, 100.0]);
    }

    #[test]
    fn problems_name_their_field() {
        let s: FuseSettings = serde_json::from_str(
            r#"{"alpha_rollback": 2.0, "webhook_urls": ["ftp://x"], "error_window_hours": 0}"#,
        )
        .unwrap();
        let fields: Vec<String> = s.validate().into_iter().map(|p| p.field).collect();
        assert!(fields.contains(&"alpha_rollback".to_string()), "{fields:?}");
        assert!(fields.contains(&"webhook_urls".to_string()));
        assert!(fields.contains(&"error_window_hours".to_string()));
    }

    #[test]
    fn field_names_cover_statistics_and_extras() {
        let names = FuseSettings::field_names();
        for n in [
            "alpha_rollback",
            "ramp_steps_pct",
            "webhook_urls",
            "strategy_id",
            "min_users_per_arm",
        ] {
            assert!(names.contains(&n.to_string()), "{n} missing from {names:?}");
        }
    }
}
