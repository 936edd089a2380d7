//! Liveness and readiness probes.

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::error::{ApiError, ApiResult, Code};
use crate::app::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(health)
        .service(ready)
        .service(prometheus_metrics);
}

/// Prometheus metrics (text format): requests and latency per route, events by
/// outcome, writer queue depth, SDK cache hits, scheduler pass duration, fuse
/// decisions by kind.
#[utoipa::path(tag = "health", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
#[get("/metrics")]
async fn prometheus_metrics(state: web::Data<AppState>) -> HttpResponse {
    if let Some(m) = crate::metrics::metrics() {
        m.ingest_queue
            .set(i64::try_from(state.ingest.queued()).unwrap_or(i64::MAX));
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render())
}

/// Probe body.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`.
    pub status: String,
    /// Whether this replica runs the fuse scheduler (one replica does).
    pub scheduler_leader: bool,
}

/// Liveness: 200 while the process runs.
#[utoipa::path(tag = "health", responses((status = 200, body = HealthResponse)))]
#[get("/health")]
async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(HealthResponse {
        status: "ok".into(),
        scheduler_leader: state.scheduler.is_leading(),
    })
}

/// Readiness: 200 only while the database answers.
#[utoipa::path(tag = "health", responses(
    (status = 200, body = HealthResponse),
    (status = 503, body = super::error::ErrorBody),
))]
#[get("/ready")]
async fn ready(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::new(Code::ServiceUnavailable, "the database does not answer")
    })?;
    Ok(HttpResponse::Ok().json(HealthResponse {
        status: "ok".into(),
        scheduler_leader: state.scheduler.is_leading(),
    }))
}
