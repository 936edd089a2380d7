//! The Unleash client API for server-side SDKs (`/api/client/*`), with client tokens.
//! Contract: `shared/unleash/CLIENT-API.md` §1-3.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::http::header;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Caller, ClientToken, Json};
use crate::app::AppState;
use crate::domain::delta::ClientFeaturesDelta;
use crate::domain::model::ClientFeatures;
use crate::snapshot::{DeltaAnswer, FeaturesQuery};
use crate::store::{ClientRegistration, FeatureCounts, Tag};

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(client_features)
        .service(client_delta)
        .service(register_client)
        .service(client_metrics);
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ClientFeaturesQuery {
    /// Only this project (must be within the token's projects).
    pub project: Option<String>,
    /// Only features whose name starts with this.
    pub name_prefix: Option<String>,
    /// `type:value`, repeatable: only features with any of these tags.
    pub tag: Option<Vec<String>>,
}

impl ClientFeaturesQuery {
    /// Parses the query string by hand: `tag` repeats, which serde_urlencoded
    /// cannot express.
    pub fn parse(query: &str) -> ApiResult<ClientFeaturesQuery> {
        let mut out = ClientFeaturesQuery::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "project" => out.project = Some(value.into_owned()),
                "namePrefix" => out.name_prefix = Some(value.into_owned()),
                "tag" => out
                    .tag
                    .get_or_insert_with(Vec::new)
                    .push(value.into_owned()),
                _ => {}
            }
        }
        Ok(out)
    }

    fn tags(&self) -> ApiResult<Option<BTreeSet<Tag>>> {
        let Some(raw) = &self.tag else {
            return Ok(None);
        };
        raw.iter()
            .map(|t| {
                t.split_once(':')
                    .map(|(tag_type, value)| Tag {
                        tag_type: tag_type.to_string(),
                        value: value.to_string(),
                    })
                    .ok_or_else(|| {
                        ApiError::new(
                            crate::api::error::Code::InvalidQuery,
                            format!("tag `{t}` must be type:value"),
                        )
                    })
            })
            .collect::<ApiResult<BTreeSet<Tag>>>()
            .map(Some)
    }
}

/// Whether the SDK's `Unleash-Client-Spec` header is at least 4.2.0 (then segments
/// are sent by reference; older SDKs get them inlined into constraints).
pub(crate) fn supports_segments(req: &HttpRequest) -> bool {
    let Some(v) = req
        .headers()
        .get("unleash-client-spec")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = v.trim().split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let version = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    version >= (4, 2, 0)
}

/// The token's projects intersected with an optional `project` filter.
pub(crate) fn project_scope(caller: &Caller, filter: Option<&str>) -> Option<BTreeSet<String>> {
    match filter {
        Some(p) if caller.scope.allows_project(p) => Some(BTreeSet::from([p.to_string()])),
        Some(_) => Some(BTreeSet::new()),
        None if caller.scope.all_projects() => None,
        None => Some(caller.scope.projects.iter().cloned().collect()),
    }
}

/// What an SDK poll asks for: its token's scope narrowed by the query string.
fn features_query(
    req: &HttpRequest,
    caller: &Caller,
    inline_segments: bool,
) -> ApiResult<FeaturesQuery> {
    let query = ClientFeaturesQuery::parse(req.query_string())?;
    Ok(FeaturesQuery {
        tags: query.tags()?,
        environment: caller.scope.environment.clone(),
        projects: project_scope(caller, query.project.as_deref()),
        name_prefix: query.name_prefix.clone().filter(|p| !p.is_empty()),
        inline_segments,
    })
}

/// Whether `If-None-Match` names this ETag (exactly, in a list, or `*`).
pub(crate) fn etag_matches(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|candidate| candidate == etag || candidate == "*")
}

/// All features of the token's environment and projects, in Unleash's format, with a
/// strong ETag; 304 when `If-None-Match` matches. Served from memory.
#[utoipa::path(tag = "client", params(ClientFeaturesQuery,
        ("Unleash-Client-Spec" = Option<String>, Header, description = "SDK spec version; >= 4.2.0 gets segments by reference"),
        ("If-None-Match" = Option<String>, Header, description = "ETag of a previous response")),
    responses((status = 200, body = ClientFeatures, headers(("ETag" = String))),
              (status = 304, description = "Not modified"),
              (status = 400, description = "A `tag` is not `type:value`", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[get("/api/client/features")]
async fn client_features(
    req: HttpRequest,
    state: web::Data<AppState>,
    token: ClientToken,
) -> ApiResult<HttpResponse> {
    let query = features_query(&req, &token.0, !supports_segments(&req))?;
    let cached = state.snapshots.client_features(&query).await?;
    if etag_matches(&req, &cached.etag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, cached.etag.clone()))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::ETAG, cached.etag.clone()))
        .body(cached.body.clone()))
}

/// Changes since the state named by `If-None-Match` (or a full hydration), for SDKs
/// in delta mode; 304 when nothing changed.
#[utoipa::path(tag = "client", params(ClientFeaturesQuery,
        ("If-None-Match" = Option<String>, Header, description = "ETag of the state the SDK holds")),
    responses((status = 200, body = ClientFeaturesDelta, headers(("ETag" = String))),
              (status = 304, description = "Not modified"),
              (status = 400, description = "A `tag` is not `type:value`", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[get("/api/client/delta")]
async fn client_delta(
    req: HttpRequest,
    state: web::Data<AppState>,
    token: ClientToken,
) -> ApiResult<HttpResponse> {
    // Delta SDKs (spec >= 5.2) always take segments by reference.
    let query = features_query(&req, &token.0, false)?;
    let client_etag = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    Ok(
        match state.snapshots.client_delta(&query, client_etag).await? {
            DeltaAnswer::NotModified(etag) => HttpResponse::NotModified()
                .insert_header((header::ETAG, etag))
                .finish(),
            DeltaAnswer::Events(body, etag) => HttpResponse::Ok()
                .insert_header((header::ETAG, etag))
                .json(body),
        },
    )
}

/// An SDK's registration (sent once at start).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    pub app_name: String,
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub sdk_version: Option<String>,
    #[serde(default)]
    pub strategies: Vec<String>,
    /// RFC 3339 string or epoch milliseconds.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub started: Option<serde_json::Value>,
    /// Polling interval in ms.
    #[serde(default)]
    pub interval: Option<i64>,
    /// Ignored: the token decides the environment.
    #[serde(default)]
    pub environment: Option<String>,
}

pub(crate) fn parse_instant(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis()),
        _ => None,
    }
}

/// Register an SDK instance (202).
#[utoipa::path(tag = "client", request_body = RegisterRequest,
    responses((status = 202, description = "Registered"), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/api/client/register")]
async fn register_client(
    state: web::Data<AppState>,
    token: ClientToken,
    Json(body): Json<RegisterRequest>,
) -> ApiResult<HttpResponse> {
    register(&state, &token.0, body).await?;
    Ok(HttpResponse::Accepted().finish())
}

pub(crate) async fn register(
    state: &AppState,
    caller: &Caller,
    body: RegisterRequest,
) -> ApiResult<()> {
    if body.app_name.trim().is_empty() {
        return Err(ApiError::invalid("appName", "must not be empty"));
    }
    let registration = ClientRegistration {
        app_name: body.app_name,
        instance_id: body.instance_id.unwrap_or_else(|| "default".into()),
        sdk_version: body.sdk_version,
        strategies: body.strategies,
        started_at: body.started.as_ref().and_then(parse_instant),
        interval_ms: body.interval,
    };
    state
        .store
        .register_client(&caller.scope.environment, &registration)
        .await?;
    Ok(())
}

/// One feature's counts in a metrics bucket.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct ToggleCounts {
    #[serde(default)]
    pub yes: u32,
    #[serde(default)]
    pub no: u32,
    #[serde(default)]
    pub variants: BTreeMap<String, u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct MetricsBucket {
    #[schema(value_type = String)]
    pub start: serde_json::Value,
    #[schema(value_type = String)]
    pub stop: serde_json::Value,
    pub toggles: BTreeMap<String, ToggleCounts>,
}

/// An SDK metrics report.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsRequest {
    pub app_name: String,
    #[serde(default)]
    pub instance_id: Option<String>,
    pub bucket: MetricsBucket,
}

/// Most features one metrics report may carry.
const MAX_TOGGLES_PER_REPORT: usize = 10_000;

/// Record SDK evaluation counts into hourly buckets (202).
#[utoipa::path(tag = "client", request_body = MetricsRequest,
    responses((status = 202, description = "Recorded"), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/api/client/metrics")]
async fn client_metrics(
    state: web::Data<AppState>,
    token: ClientToken,
    Json(body): Json<MetricsRequest>,
) -> ApiResult<HttpResponse> {
    record_metrics(&state, &token.0, body).await?;
    Ok(HttpResponse::Accepted().finish())
}

pub(crate) async fn record_metrics(
    state: &AppState,
    caller: &Caller,
    body: MetricsRequest,
) -> ApiResult<()> {
    if body.app_name.trim().is_empty() {
        return Err(ApiError::invalid("appName", "must not be empty"));
    }
    if body.bucket.toggles.len() > MAX_TOGGLES_PER_REPORT {
        return Err(ApiError::invalid(
            "bucket.toggles",
            format!("at most {MAX_TOGGLES_PER_REPORT} features per report"),
        ));
    }
    let at = parse_instant(&body.bucket.start).ok_or_else(|| {
        ApiError::invalid(
            "bucket.start",
            "must be an RFC 3339 time or epoch milliseconds",
        )
    })?;
    parse_instant(&body.bucket.stop).ok_or_else(|| {
        ApiError::invalid(
            "bucket.stop",
            "must be an RFC 3339 time or epoch milliseconds",
        )
    })?;
    let counts: Vec<FeatureCounts> = body
        .bucket
        .toggles
        .into_iter()
        .map(|(feature, c)| FeatureCounts {
            feature,
            yes: i64::from(c.yes),
            no: i64::from(c.no),
            variants: c
                .variants
                .into_iter()
                .map(|(k, v)| (k, i64::from(v)))
                .collect(),
        })
        .collect();
    state
        .store
        .record_client_metrics(&caller.scope.environment, at, &counts)
        .await?;
    Ok(())
}
