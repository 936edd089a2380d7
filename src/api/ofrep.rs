//! OpenFeature Remote Evaluation Protocol (`/ofrep/v1/...`), contract
//! `shared/ofrep/openapi.yaml`. Tokens come as `Authorization: Bearer <token>` or
//! `X-API-Key`; frontend and client tokens both work, scoped as everywhere else.
//!
//! Values: a flag without a chosen variant evaluates to a boolean; a flag with a
//! variant evaluates to its payload (parsed JSON for `json`, a number for `number`,
//! else the string; the variant name when there is no payload). A disabled flag is
//! `false` with reason `DISABLED`.

use actix_web::http::header;
use actix_web::{post, web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::error::{ApiResult, ErrorBody};
use super::extract::{Caller, EvaluationToken};
use super::frontend::body_etag;
use crate::app::AppState;
use crate::domain::eval::{Context, FlagEvaluation};
use crate::snapshot::EnvSnapshot;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(evaluate_flag).service(evaluate_flags);
}

/// A successful evaluation.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationSuccess {
    pub key: String,
    /// A boolean (no variant, or variant without payload), or the variant's payload:
    /// a string, a number or JSON.
    pub value: Value,
    /// TARGETING_MATCH, SPLIT (a weighted variant) or DISABLED.
    pub reason: &'static str,
    pub variant: String,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

/// An evaluation that failed (also used for FLAG_NOT_FOUND).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationFailure {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// PARSE_ERROR, INVALID_CONTEXT, FLAG_NOT_FOUND, GENERAL.
    pub error_code: &'static str,
    pub error_details: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkEvaluationSuccess {
    pub flags: Vec<EvaluationSuccess>,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

/// `{"context": {"targetingKey": ..., ...}}`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct EvaluationRequest {
    #[schema(value_type = Object)]
    pub context: Value,
}

fn failure(
    status: actix_web::http::StatusCode,
    key: Option<&str>,
    code: &'static str,
    details: String,
) -> HttpResponse {
    HttpResponse::build(status).json(EvaluationFailure {
        key: key.map(String::from),
        error_code: code,
        error_details: details,
    })
}

/// Parses the body into an Unleash context: `targetingKey` is the `userId` (unless one
/// is given); standard Unleash keys map to their fields; every other scalar becomes a
/// property. Nested objects and arrays are refused (Unleash contexts are flat).
fn parse_context(body: &[u8]) -> Result<Context, (&'static str, String)> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ("PARSE_ERROR", format!("body is not valid JSON: {e}")))?;
    let context = match value.get("context") {
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err(("INVALID_CONTEXT", "`context` must be an object".into())),
        None => {
            return Err((
                "INVALID_CONTEXT",
                "the body must have a `context` object".into(),
            ))
        }
    };
    let mut ctx = Context::default();
    for (key, value) in context {
        let text = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => continue,
            Value::Object(_) | Value::Array(_) if key == "properties" => {
                let Value::Object(props) = value else {
                    return Err(("INVALID_CONTEXT", "`properties` must be an object".into()));
                };
                for (k, v) in props {
                    match v {
                        Value::String(s) => {
                            ctx.properties.insert(k, s);
                        }
                        Value::Number(n) => {
                            ctx.properties.insert(k, n.to_string());
                        }
                        Value::Bool(b) => {
                            ctx.properties.insert(k, b.to_string());
                        }
                        Value::Null => {}
                        _ => {
                            return Err((
                                "INVALID_CONTEXT",
                                format!("context property `{k}` must be a scalar"),
                            ))
                        }
                    }
                }
                continue;
            }
            _ => {
                return Err((
                    "INVALID_CONTEXT",
                    format!("context key `{key}` must be a scalar"),
                ))
            }
        };
        match key.as_str() {
            "targetingKey" => {
                ctx.user_id.get_or_insert(text);
            }
            "userId" => ctx.user_id = Some(text),
            "sessionId" => ctx.session_id = Some(text),
            "remoteAddress" => ctx.remote_address = Some(text),
            "environment" => ctx.environment = Some(text),
            "appName" => ctx.app_name = Some(text),
            "currentTime" => ctx.current_time = Some(text),
            _ => {
                ctx.properties.insert(key, text);
            }
        }
    }
    Ok(ctx)
}

fn visible(snapshot: &EnvSnapshot, caller: &Caller, name: &str) -> bool {
    caller.scope.all_projects()
        || snapshot
            .projects
            .get(name)
            .is_some_and(|p| caller.scope.allows_project(p))
}

fn success(e: FlagEvaluation<'_>, snapshot: &EnvSnapshot) -> EvaluationSuccess {
    let mut metadata = Map::new();
    if let Some(project) = snapshot.projects.get(e.name) {
        metadata.insert("project".into(), Value::String(project.clone()));
    }
    metadata.insert("impressionData".into(), Value::Bool(e.impression_data));
    let (value, reason, variant) = if !e.enabled {
        (Value::Bool(false), "DISABLED", "disabled".to_string())
    } else if e.variant.enabled {
        let value = match &e.variant.payload {
            Some(p) if p.payload_type == "json" => {
                serde_json::from_str(&p.value).unwrap_or_else(|_| Value::String(p.value.clone()))
            }
            Some(p) if p.payload_type == "number" => p
                .value
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(|n| {
                    if n.fract() == 0.0 && n.abs() < 9.0e15 {
                        Some(Value::from(n as i64))
                    } else {
                        serde_json::Number::from_f64(n).map(Value::Number)
                    }
                })
                .unwrap_or_else(|| Value::String(p.value.clone())),
            Some(p) => Value::String(p.value.clone()),
            None => Value::String(e.variant.name.clone()),
        };
        (value, "SPLIT", e.variant.name.clone())
    } else {
        (Value::Bool(true), "TARGETING_MATCH", "enabled".to_string())
    };
    EvaluationSuccess {
        key: e.name.to_string(),
        value,
        reason,
        variant,
        metadata,
    }
}

/// Evaluate one flag.
#[utoipa::path(tag = "ofrep", request_body = EvaluationRequest,
    params(("key" = String, Path, description = "Flag name")),
    responses((status = 200, body = EvaluationSuccess), (status = 400, body = EvaluationFailure),
              (status = 404, body = EvaluationFailure), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
#[post("/ofrep/v1/evaluate/flags/{key}")]
async fn evaluate_flag(
    state: web::Data<AppState>,
    token: EvaluationToken,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let key = path.into_inner();
    let ctx = match parse_context(&body) {
        Ok(ctx) => ctx,
        Err((code, details)) => {
            return Ok(failure(
                actix_web::http::StatusCode::BAD_REQUEST,
                Some(&key),
                code,
                details,
            ))
        }
    };
    let snapshot = state.snapshots.env(&token.0.scope.environment).await?;
    let evaluation = visible(&snapshot, &token.0, &key)
        .then(|| snapshot.engine.evaluate(&key, &ctx))
        .flatten();
    Ok(match evaluation {
        Some(e) => HttpResponse::Ok().json(success(e, &snapshot)),
        None => failure(
            actix_web::http::StatusCode::NOT_FOUND,
            Some(&key),
            "FLAG_NOT_FOUND",
            format!("flag `{key}` was not found"),
        ),
    })
}

/// Evaluate every flag the token can see; ETag and 304 as the protocol describes.
#[utoipa::path(tag = "ofrep", request_body = EvaluationRequest,
    params(("If-None-Match" = Option<String>, Header)),
    responses((status = 200, body = BulkEvaluationSuccess, headers(("ETag" = String))),
              (status = 304, description = "Not modified"), (status = 400, body = EvaluationFailure),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/ofrep/v1/evaluate/flags")]
async fn evaluate_flags(
    req: HttpRequest,
    state: web::Data<AppState>,
    token: EvaluationToken,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let ctx = match parse_context(&body) {
        Ok(ctx) => ctx,
        Err((code, details)) => {
            return Ok(failure(
                actix_web::http::StatusCode::BAD_REQUEST,
                None,
                code,
                details,
            ))
        }
    };
    let snapshot = state.snapshots.env(&token.0.scope.environment).await?;
    let flags: Vec<EvaluationSuccess> = snapshot
        .engine
        .evaluate_all(&ctx)
        .filter(|e| visible(&snapshot, &token.0, e.name))
        .map(|e| success(e, &snapshot))
        .collect();
    let body = serde_json::to_vec(&BulkEvaluationSuccess {
        flags,
        metadata: Map::new(),
    })
    .map_err(super::error::ApiError::internal)?;
    let etag = body_etag(&body);
    if super::client::etag_matches(&req, &etag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::ETAG, etag))
        .body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_targeting_key_is_the_user_id_and_other_keys_are_properties() {
        let ctx = parse_context(br#"{"context": {"targetingKey": "u1", "plan": "pro", "seats": 5, "beta": true, "appName": "web"}}"#).unwrap();
        assert_eq!(ctx.user_id.as_deref(), Some("u1"));
        assert_eq!(ctx.app_name.as_deref(), Some("web"));
        assert_eq!(ctx.properties["plan"], "pro");
        assert_eq!(ctx.properties["seats"], "5");
        assert_eq!(ctx.properties["beta"], "true");
    }

    #[test]
    fn bad_bodies_map_to_ofrep_error_codes() {
        assert_eq!(parse_context(b"{nope").unwrap_err().0, "PARSE_ERROR");
        assert_eq!(parse_context(b"{}").unwrap_err().0, "INVALID_CONTEXT");
        assert_eq!(
            parse_context(br#"{"context": 5}"#).unwrap_err().0,
            "INVALID_CONTEXT"
        );
        assert_eq!(
            parse_context(br#"{"context": {"a": {"b": 1}}}"#)
                .unwrap_err()
                .0,
            "INVALID_CONTEXT"
        );
    }
}
