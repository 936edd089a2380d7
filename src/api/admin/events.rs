//! The audit log: every change, newest first.

use actix_web::{get, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::api::error::{ApiError, ApiResult, ErrorBody};
use crate::api::extract::AdminToken;
use crate::app::AppState;
use crate::domain::admin::AuditEvent;
use crate::store::AuditQuery;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_events);
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only this feature's entries.
    pub feature: Option<String>,
    /// Only this project's entries.
    pub project: Option<String>,
    /// Only entries at or after this time: RFC 3339 or epoch milliseconds.
    pub since: Option<String>,
    /// Only entries before this time: RFC 3339 or epoch milliseconds.
    pub until: Option<String>,
    /// Only entries by this actor, e.g. `user:pm@example.com`, `token:ci`, `fuse`.
    pub actor: Option<String>,
    /// Only entries of this kind, e.g. `feature-updated`, `fuse-rollback`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// At most this many entries (1-1000, default 100).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventsResponse {
    pub events: Vec<AuditEvent>,
}

/// Read the audit log, newest first.
#[utoipa::path(tag = "admin", params(EventsQuery),
    responses((status = 200, body = EventsResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[get("/api/admin/events")]
async fn list_events(
    state: web::Data<AppState>,
    _auth: AdminToken,
    query: web::Query<EventsQuery>,
) -> ApiResult<HttpResponse> {
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let since = query.since.as_deref().map(parse_time).transpose()?;
    let events = state
        .store
        .list_audit(&AuditQuery {
            feature: query.feature,
            project: query.project,
            since,
            until: query
                .until
                .as_deref()
                .map(|u| {
                    parse_time(u).map_err(|_| {
                        ApiError::invalid("until", "must be RFC 3339 or epoch milliseconds")
                    })
                })
                .transpose()?,
            actor: query.actor,
            kind: query.kind,
            limit,
        })
        .await?;
    Ok(HttpResponse::Ok().json(EventsResponse { events }))
}

fn parse_time(raw: &str) -> ApiResult<i64> {
    if let Ok(ms) = raw.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.timestamp_millis())
        .map_err(|_| ApiError::invalid("since", "must be RFC 3339 or epoch milliseconds"))
}
