//! The Unleash frontend API for browser/mobile SDKs (`/api/frontend`), with frontend
//! tokens: the server evaluates every flag for the given context and returns the
//! enabled ones. Contract: `shared/unleash/CLIENT-API.md` §4.

use actix_web::http::header;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::client::{etag_matches, record_metrics, register, MetricsRequest, RegisterRequest};
use super::error::{ApiResult, ErrorBody};
use super::extract::{Caller, FrontendToken, Json};
use crate::app::AppState;
use crate::domain::eval::Context;
use crate::domain::model::Payload;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(get_frontend)
        .service(post_frontend)
        .service(frontend_metrics)
        .service(frontend_register);
}

/// The variant of an enabled flag, with both spellings of `feature_enabled`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FrontendVariant {
    pub name: String,
    pub enabled: bool,
    pub feature_enabled: bool,
    #[serde(rename = "featureEnabled")]
    pub feature_enabled_camel: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrontendToggle {
    pub name: String,
    pub enabled: bool,
    pub impression_data: bool,
    pub variant: FrontendVariant,
}

/// Enabled flags only, as Unleash returns them.
#[derive(Debug, Serialize, ToSchema)]
pub struct FrontendResponse {
    pub toggles: Vec<FrontendToggle>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct FrontendRequest {
    /// Unleash context: userId, sessionId, remoteAddress, appName, environment,
    /// currentTime, properties; other keys become properties.
    #[schema(value_type = Object)]
    pub context: Context,
}

/// Builds the context from query parameters: `properties[x]=y` and any non-standard
/// key become properties, as the Unleash server does.
fn context_from_query(query: &str) -> Context {
    let mut ctx = Context::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "userId" => ctx.user_id = Some(value),
            "sessionId" => ctx.session_id = Some(value),
            "remoteAddress" => ctx.remote_address = Some(value),
            "environment" => ctx.environment = Some(value),
            "appName" => ctx.app_name = Some(value),
            "currentTime" => ctx.current_time = Some(value),
            other => {
                let name = other
                    .strip_prefix("properties[")
                    .and_then(|k| k.strip_suffix(']'))
                    .unwrap_or(other);
                ctx.properties.insert(name.to_string(), value);
            }
        }
    }
    ctx
}

/// Fills what Unleash fills: the caller's address when the context has none.
fn complete_context(req: &HttpRequest, mut ctx: Context) -> Context {
    if ctx.remote_address.is_none() {
        ctx.remote_address = req.peer_addr().map(|a| a.ip().to_string());
    }
    ctx
}

async fn evaluate(
    req: &HttpRequest,
    state: &AppState,
    caller: &Caller,
    ctx: Context,
) -> ApiResult<HttpResponse> {
    let ctx = complete_context(req, ctx);
    let snapshot = state.snapshots.env(&caller.scope.environment).await?;
    let toggles: Vec<FrontendToggle> = snapshot
        .engine
        .evaluate_all(&ctx)
        .filter(|e| e.enabled)
        .filter(|e| {
            caller.scope.all_projects()
                || snapshot
                    .projects
                    .get(e.name)
                    .is_some_and(|p| caller.scope.allows_project(p))
        })
        .map(|e| FrontendToggle {
            name: e.name.to_string(),
            enabled: true,
            impression_data: e.impression_data,
            variant: FrontendVariant {
                name: e.variant.name,
                enabled: e.variant.enabled,
                feature_enabled: true,
                feature_enabled_camel: true,
                payload: e.variant.payload,
            },
        })
        .collect();
    let body = serde_json::to_vec(&FrontendResponse { toggles })
        .map_err(super::error::ApiError::internal)?;
    let etag = body_etag(&body);
    if etag_matches(req, &etag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body))
}

/// A strong ETag over a response body.
pub(crate) fn body_etag(body: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    format!("\"{:x}-{:016x}\"", body.len(), hasher.finish())
}

/// Evaluate every flag for a context given as query parameters.
#[utoipa::path(tag = "frontend",
    params(("userId" = Option<String>, Query), ("sessionId" = Option<String>, Query),
           ("appName" = Option<String>, Query),
           ("properties[name]" = Option<String>, Query, description = "Custom context properties")),
    responses((status = 200, body = FrontendResponse, headers(("ETag" = String))),
              (status = 304, description = "Not modified"),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[get("/api/frontend")]
async fn get_frontend(
    req: HttpRequest,
    state: web::Data<AppState>,
    token: FrontendToken,
) -> ApiResult<HttpResponse> {
    let ctx = context_from_query(req.query_string());
    evaluate(&req, &state, &token.0, ctx).await
}

/// Evaluate every flag for a context given in the body.
#[utoipa::path(tag = "frontend", request_body = FrontendRequest,
    responses((status = 200, body = FrontendResponse, headers(("ETag" = String))),
              (status = 304, description = "Not modified"), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/api/frontend")]
async fn post_frontend(
    req: HttpRequest,
    state: web::Data<AppState>,
    token: FrontendToken,
    Json(body): Json<FrontendRequest>,
) -> ApiResult<HttpResponse> {
    evaluate(&req, &state, &token.0, body.context).await
}

/// Record browser SDK evaluation counts (200).
#[utoipa::path(tag = "frontend", request_body = MetricsRequest,
    responses((status = 200, description = "Recorded"), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/api/frontend/client/metrics")]
async fn frontend_metrics(
    state: web::Data<AppState>,
    token: FrontendToken,
    Json(body): Json<MetricsRequest>,
) -> ApiResult<HttpResponse> {
    record_metrics(&state, &token.0, body).await?;
    Ok(HttpResponse::Ok().finish())
}

/// Register a browser SDK instance (200).
#[utoipa::path(tag = "frontend", request_body = RegisterRequest,
    responses((status = 200, description = "Registered"), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/api/frontend/client/register")]
async fn frontend_register(
    state: web::Data<AppState>,
    token: FrontendToken,
    Json(body): Json<RegisterRequest>,
) -> ApiResult<HttpResponse> {
    register(&state, &token.0, body).await?;
    Ok(HttpResponse::Ok().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_become_the_context_with_properties() {
        let ctx = context_from_query(
            "userId=1&sessionId=s&appName=web&properties%5Bplan%5D=pro&country=NO",
        );
        assert_eq!(ctx.user_id.as_deref(), Some("1"));
        assert_eq!(ctx.session_id.as_deref(), Some("s"));
        assert_eq!(ctx.app_name.as_deref(), Some("web"));
        assert_eq!(ctx.properties.get("plan").map(String::as_str), Some("pro"));
        assert_eq!(
            ctx.properties.get("country").map(String::as_str),
            Some("NO")
        );
    }
}
