//! Webhook notifications of fuse decisions: Slack-compatible JSON (`text`) plus
//! structured fields, retried with exponential backoff; a final failure is written to
//! the audit log so it is visible where the decision is.

use std::sync::Arc;
use std::time::Duration;

use super::FuseEvaluation;
use crate::store::{Actor, Store};

/// Attempts per URL (1 s, 2 s, 4 s between them).
const ATTEMPTS: u32 = 4;

/// Sends notifications in the background.
#[derive(Clone)]
pub struct Notifier {
    store: Arc<dyn Store>,
    client: reqwest::Client,
}

impl Notifier {
    pub fn new(store: Arc<dyn Store>) -> Notifier {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Notifier { store, client }
    }

    /// Posts the decision to every URL, without blocking the caller.
    pub fn notify(
        &self,
        project: &str,
        evaluation: &FuseEvaluation,
        kind: &str,
        rule: &str,
        urls: Vec<String>,
    ) {
        let text = format!(
            "Fusebox: {} on `{}` ({}): exposure {}% → {}% — rule {} ({})",
            kind,
            evaluation.feature,
            evaluation.environment,
            super::rollout_text(evaluation.exposure_before),
            super::rollout_text(evaluation.exposure_after),
            rule,
            evaluation.status
        );
        let body = serde_json::json!({
            "text": text,
            "fuse": {
                "project": project,
                "feature": evaluation.feature,
                "environment": evaluation.environment,
                "decision": kind,
                "rule": rule,
                "status": evaluation.status,
                "exposureBefore": evaluation.exposure_before,
                "exposureAfter": evaluation.exposure_after,
                "evaluatedAt": evaluation.evaluated_at,
                "triggeredBy": evaluation.decision.triggered_by,
            }
        });
        for url in urls {
            let this = self.clone();
            let body = body.clone();
            let project = project.to_string();
            let (feature, environment) =
                (evaluation.feature.clone(), evaluation.environment.clone());
            tokio::spawn(async move {
                let mut last_error = String::new();
                for attempt in 0..ATTEMPTS {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
                    }
                    match this.client.post(&url).json(&body).send().await {
                        Ok(r) if r.status().is_success() => return,
                        Ok(r) => last_error = format!("HTTP {}", r.status()),
                        Err(e) => last_error = e.to_string(),
                    }
                }
                tracing::warn!(%url, error = %last_error, "webhook delivery failed");
                if let Some(m) = crate::metrics::metrics() {
                    m.webhook_failures.inc();
                }
                let failure =
                    serde_json::json!({ "url": url, "error": last_error, "attempts": ATTEMPTS });
                if let Err(e) = this
                    .store
                    .record_webhook_failure(
                        &project,
                        &feature,
                        &environment,
                        failure,
                        &Actor("fuse".into()),
                    )
                    .await
                {
                    tracing::warn!(error = %e, "recording a webhook failure failed");
                }
            });
        }
    }
}
