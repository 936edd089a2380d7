//! Event ingestion (`POST /api/events`) and its admin side: quarantine, and a user's
//! data export and erasure.
//!
//! A batch is validated event by event; rejected events are quarantined with their
//! raw JSON and reason and never sink the batch. The response (202) is sent only
//! after the group commit that stored the accepted ones.

use actix_web::http::header;
use actix_web::{delete, get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::error::{ApiError, ApiResult, Code, ErrorBody};
use super::extract::{payload_error, AdminToken, Caller, EvaluationToken};
use crate::app::AppState;
use crate::domain::events::{self, parse_batch, Event, Rules};
use crate::ingest::SubmitError;
use crate::snapshot::EnvSnapshot;
use crate::store::{now_ms, Exposure, NewEvent, NewQuarantine, QuarantineItem, StoredEvent};

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(ingest_events)
        .service(list_quarantine)
        .service(replay_quarantined)
        .service(discard_quarantined)
        .service(export_user)
        .service(erase_user);
}

/// Longest raw body kept when a whole body is quarantined.
const MAX_QUARANTINED_BODY: usize = 64 * 1024;

/// One refused event.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedEvent {
    /// Position in the batch.
    pub index: usize,
    /// missing_field, invalid_field, unknown_type, unknown_field, timestamp_in_future,
    /// timestamp_too_old, score_out_of_range, unknown_feature, environment_not_allowed,
    /// invalid_event.
    pub code: String,
    pub message: String,
}

/// What happened to a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResponse {
    /// Events newly stored.
    pub accepted: usize,
    /// Events whose id was already stored.
    pub duplicates: usize,
    pub rejected: Vec<RejectedEvent>,
}

/// A batch: a JSON array of events, or `{"events": [...]}`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct EventBatch {
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
}

/// One event of a batch: validated by the fast path (with its raw JSON text, kept for
/// quarantine should the token's scope refuse it), or parsed for the general path.
// Nearly every item is `Valid`: boxing the event would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
enum BatchItem<'a> {
    Valid(Event, &'a serde_json::value::RawValue),
    Parsed(serde_json::Value),
}

impl<'a> BatchItem<'a> {
    /// The verdict on the event, and its JSON for quarantine.
    fn judge(self, rules: &Rules<'_>) -> (Result<Event, events::Rejection>, EventJson<'a>) {
        match self {
            BatchItem::Valid(event, raw) => (Ok(event), EventJson::Text(raw)),
            BatchItem::Parsed(value) => (events::validate(&value, rules), EventJson::Value(value)),
        }
    }
}

/// An event's JSON, as it came.
enum EventJson<'a> {
    Text(&'a serde_json::value::RawValue),
    Value(serde_json::Value),
}

impl EventJson<'_> {
    /// The JSON as quarantine stores it (compact, keys sorted).
    fn quarantine_text(&self) -> String {
        match self {
            // The fast path read every value of this text, so it parses; the raw
            // text is the fallback all the same.
            EventJson::Text(raw) => serde_json::from_str::<serde_json::Value>(raw.get())
                .map(|v| v.to_string())
                .unwrap_or_else(|_| raw.get().to_string()),
            EventJson::Value(value) => value.to_string(),
        }
    }
}

/// The fast path's reading of a split batch: each event validated straight from its
/// text, or else parsed in full for [`events::validate`]. `None` when an event does not
/// parse in full: the split only delimits values (it skips number ranges, escapes and
/// nesting depth), so such a body goes to [`parse_batch`], which refuses it whole.
fn read_split<'a>(
    raws: Vec<&'a serde_json::value::RawValue>,
    rules: &Rules<'_>,
) -> Option<Vec<BatchItem<'a>>> {
    raws.into_iter()
        .map(|raw| match events::validate_fast(raw, rules) {
            Some(event) => Some(BatchItem::Valid(event, raw)),
            None => serde_json::from_str(raw.get()).ok().map(BatchItem::Parsed),
        })
        .collect()
}

fn too_many(count: usize, max: usize) -> ApiError {
    ApiError::new(
        Code::PayloadTooLarge,
        format!("a batch may hold at most {max} events, this one has {count}"),
    )
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Checks what validation cannot know: the event's environment against the token,
/// and its feature against the environment's flags the token may see.
fn check_scope(
    event: &Event,
    caller: &Caller,
    snapshot: &EnvSnapshot,
) -> Result<(), (&'static str, String)> {
    if let Some(env) = &event.environment {
        if !caller.scope.allows_environment(env) {
            return Err((
                "environment_not_allowed",
                format!("this token may not send events for environment `{env}`"),
            ));
        }
    }
    if let Some(feature) = &event.feature {
        let visible = snapshot
            .projects
            .get(feature)
            .is_some_and(|p| caller.scope.allows_project(p));
        if !visible {
            return Err((
                "unknown_feature",
                format!(
                    "feature `{feature}` does not exist in environment `{}`",
                    snapshot.environment
                ),
            ));
        }
    }
    Ok(())
}

fn to_new_event(event: Event, environment: &str, received_at: i64) -> NewEvent {
    NewEvent {
        id: event.id,
        environment: event.environment.unwrap_or_else(|| environment.to_string()),
        kind: event.kind.as_str(),
        user_id: event.user_id,
        feature: event.feature,
        name: event.name,
        enabled: event.enabled,
        variant: event.variant,
        score: event.score,
        session_id: event.session_id,
        properties: event.properties,
        ts: event.timestamp_ms,
        received_at,
    }
}

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::Busy | SubmitError::Closed => {
            ApiError::new(Code::ServiceUnavailable, format!("{e}; retry in a second"))
        }
        SubmitError::Store(message) => ApiError::internal(anyhow::anyhow!(message)),
    }
}

fn busy_response(e: ApiError) -> HttpResponse {
    let mut response = actix_web::ResponseError::error_response(&e);
    if e.code == Code::ServiceUnavailable {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

/// Ingest a batch of exposure, activity, error and feedback events (202 once stored).
#[utoipa::path(tag = "events", request_body = EventBatch,
    responses((status = 202, body = IngestResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 413, body = ErrorBody),
              (status = 503, body = ErrorBody, headers(("Retry-After" = String)))))]
#[post("/api/events")]
async fn ingest_events(
    state: web::Data<AppState>,
    token: EvaluationToken,
    body: Result<web::Bytes, actix_web::Error>,
) -> ApiResult<HttpResponse> {
    let caller = token.0;
    let settings = &state.settings;
    let body = body.map_err(|e| payload_error(e, settings.max_body_bytes))?;
    let received_at = now_ms();
    let environment = caller.scope.environment.clone();
    let rules = Rules {
        now_ms: received_at,
        retention_ms: settings.event_retention_days.saturating_mul(86_400_000),
        pii: &state.pii,
    };
    // Most batches split into raw events that validate without a `Value` tree; the
    // rest (and every event the fast path declines) take the general path.
    let split = events::split_batch(&body);
    if let Some(raws) = &split {
        if raws.len() > settings.max_batch_events {
            return Err(too_many(raws.len(), settings.max_batch_events));
        }
    }
    let items = match split.and_then(|raws| read_split(raws, &rules)) {
        Some(items) => items,
        None => match parse_batch(&body) {
            Ok(values) => values.into_iter().map(BatchItem::Parsed).collect(),
            Err(e) => {
                let record = NewQuarantine {
                    received_at,
                    environment: Some(environment),
                    token_name: Some(caller.token_name.clone()),
                    reason: "invalid_body".into(),
                    message: e.to_string(),
                    raw: truncate(&String::from_utf8_lossy(&body), MAX_QUARANTINED_BODY),
                };
                // Keep the evidence even though nothing in the body is usable.
                if let Err(q) = state.ingest.submit(Vec::new(), vec![record]).await {
                    tracing::warn!(error = %q, "quarantining an unreadable body failed");
                }
                return Err(ApiError::new(
                    Code::InvalidJson,
                    format!("not an event batch: {e}"),
                ));
            }
        },
    };
    if items.len() > settings.max_batch_events {
        return Err(too_many(items.len(), settings.max_batch_events));
    }
    let snapshot = state.snapshots.env(&environment).await?;
    let mut accepted = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    let mut quarantine = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let (validated, json) = item.judge(&rules);
        let outcome = validated
            .map_err(|r| (r.code, r.message))
            .and_then(|event| {
                check_scope(&event, &caller, &snapshot)?;
                Ok(event)
            });
        match outcome {
            Ok(event) => accepted.push(to_new_event(event, &environment, received_at)),
            Err((code, message)) => {
                quarantine.push(NewQuarantine {
                    received_at,
                    environment: Some(environment.clone()),
                    token_name: Some(caller.token_name.clone()),
                    reason: code.to_string(),
                    message: message.clone(),
                    raw: truncate(&json.quarantine_text(), MAX_QUARANTINED_BODY),
                });
                rejected.push(RejectedEvent {
                    index,
                    code: code.to_string(),
                    message,
                });
            }
        }
    }
    let total = accepted.len();
    let outcome = match state.ingest.submit(accepted, quarantine).await {
        Ok(outcome) => outcome,
        Err(e) => return Ok(busy_response(submit_error(e))),
    };
    let stored = outcome.stored.iter().filter(|s| **s).count();
    if let Some(m) = crate::metrics::metrics() {
        m.events
            .with_label_values(&["accepted"])
            .inc_by(stored as u64);
        m.events
            .with_label_values(&["duplicate"])
            .inc_by((total - stored) as u64);
        m.events
            .with_label_values(&["rejected"])
            .inc_by(rejected.len() as u64);
    }
    Ok(HttpResponse::Accepted().json(IngestResponse {
        accepted: stored,
        duplicates: total - stored,
        rejected,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct QuarantineQuery {
    /// Only records with this rejection code.
    pub reason: Option<String>,
    /// At most this many (1-1000, default 100), newest first.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuarantineResponse {
    pub items: Vec<QuarantineItem>,
}

/// List quarantined events, newest first.
#[utoipa::path(tag = "events", params(QuarantineQuery),
    responses((status = 200, body = QuarantineResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[get("/api/admin/events/quarantine")]
async fn list_quarantine(
    state: web::Data<AppState>,
    _auth: AdminToken,
    query: web::Query<QuarantineQuery>,
) -> ApiResult<HttpResponse> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let items = state
        .store
        .list_quarantine(query.reason.as_deref(), limit)
        .await?;
    Ok(HttpResponse::Ok().json(QuarantineResponse { items }))
}

/// The result of a replay.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayResponse {
    /// `accepted` (stored now) or `duplicate` (its id was already stored).
    pub outcome: String,
}

/// Validate a quarantined event again (e.g. after its feature was created); if it now
/// passes it is stored and leaves the quarantine, otherwise 422 with the reason.
#[utoipa::path(tag = "events", params(("id" = i64, Path, description = "Quarantine record id")),
    responses((status = 200, body = ReplayResponse),
              (status = 400, description = "`id` is not a 64-bit integer", body = ErrorBody),
              (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
#[post("/api/admin/events/quarantine/{id}/replay")]
async fn replay_quarantined(
    state: web::Data<AppState>,
    _auth: AdminToken,
    path: web::Path<i64>,
) -> ApiResult<HttpResponse> {
    let stored = replay(&state, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(ReplayResponse {
        outcome: if stored { "accepted" } else { "duplicate" }.into(),
    }))
}

/// Replays one quarantined record: `Ok(true)` if stored now, `Ok(false)` if its id was
/// already stored; 422 if it still fails. Shared by the API and the web UI.
pub(crate) async fn replay(state: &AppState, id: i64) -> ApiResult<bool> {
    let item = state.store.get_quarantine(id).await?;
    let unprocessable = |message: String| ApiError::new(Code::Unprocessable, message);
    let raw: serde_json::Value = serde_json::from_str(&item.raw).map_err(|_| {
        unprocessable("the quarantined record is not a JSON event; discard it".into())
    })?;
    let environment = item
        .environment
        .clone()
        .ok_or_else(|| unprocessable("the record has no environment".into()))?;
    let received_at = now_ms();
    let rules = Rules {
        now_ms: received_at,
        retention_ms: state
            .settings
            .event_retention_days
            .saturating_mul(86_400_000),
        pii: &state.pii,
    };
    let event = events::validate(&raw, &rules)
        .map_err(|r| unprocessable(format!("{}: {}", r.code, r.message)))?;
    let snapshot = state.snapshots.env(&environment).await?;
    if let Some(feature) = &event.feature {
        if !snapshot.projects.contains_key(feature) {
            return Err(unprocessable(format!(
                "unknown_feature: feature `{feature}` does not exist in environment `{environment}`"
            )));
        }
    }
    let outcome = state
        .ingest
        .submit(
            vec![to_new_event(event, &environment, received_at)],
            Vec::new(),
        )
        .await
        .map_err(submit_error)?;
    state.store.delete_quarantine(id).await?;
    Ok(outcome.stored.first().copied().unwrap_or(false))
}

/// Discard a quarantined record.
#[utoipa::path(tag = "events", params(("id" = i64, Path, description = "Quarantine record id")),
    responses((status = 204, description = "Discarded"),
              (status = 400, description = "`id` is not a 64-bit integer", body = ErrorBody),
              (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[delete("/api/admin/events/quarantine/{id}")]
async fn discard_quarantined(
    state: web::Data<AppState>,
    _auth: AdminToken,
    path: web::Path<i64>,
) -> ApiResult<HttpResponse> {
    state.store.delete_quarantine(path.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Everything stored about one user.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserDataResponse {
    pub user_id: String,
    pub events: Vec<StoredEvent>,
    pub exposures: Vec<Exposure>,
}

/// Export everything stored for a user (events and cohort assignments).
#[utoipa::path(tag = "events", params(("user_id" = String, Path)),
    responses((status = 200, body = UserDataResponse), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
#[get("/api/admin/users/{user_id}/events")]
async fn export_user(
    state: web::Data<AppState>,
    _auth: AdminToken,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let user_id = path.into_inner();
    let (events, exposures) = state.store.user_data(&user_id).await?;
    Ok(HttpResponse::Ok().json(UserDataResponse {
        user_id,
        events,
        exposures,
    }))
}

/// What an erasure removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct EraseResponse {
    pub events: u64,
    pub exposures: u64,
}

/// Erase everything stored for a user (audited with a hash of the id, not the id).
#[utoipa::path(tag = "events", params(("user_id" = String, Path)),
    responses((status = 200, body = EraseResponse), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
#[delete("/api/admin/users/{user_id}")]
async fn erase_user(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let (events, exposures) = state
        .store
        .erase_user(&path.into_inner(), &auth.0.actor())
        .await?;
    Ok(HttpResponse::Ok().json(EraseResponse { events, exposures }))
}
