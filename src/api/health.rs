//! Liveness and readiness probes.

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::error::{ApiError, ApiResult, Code};
use crate::app::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(health).service(ready);
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
