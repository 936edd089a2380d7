//! API tokens: created with a scope, shown once, stored as a hash.

use actix_web::{delete, get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::api::error::{ApiError, ApiResult, ErrorBody};
use crate::api::extract::{AdminToken, Json};
use crate::app::AppState;
use crate::domain::admin::StoredToken;
use crate::domain::tokens::{generate_secret, hash_secret, TokenKind, TokenScope};
use crate::domain::users::Role;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_tokens)
        .service(create_token)
        .service(delete_token);
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokensResponse {
    pub tokens: Vec<StoredToken>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub token_name: String,
    /// admin, client or frontend (case-insensitive, as Unleash).
    #[serde(rename = "type")]
    pub kind: String,
    /// Required for client and frontend tokens; admin tokens are always `*`.
    #[serde(default)]
    pub environment: Option<String>,
    /// Projects the token may read; `["*"]` (the default) for all.
    #[serde(default)]
    pub projects: Option<Vec<String>>,
    /// Single-project shorthand, as in older Unleash versions.
    #[serde(default)]
    pub project: Option<String>,
    /// Admin tokens: viewer (read only), editor (no users or tokens) or admin (the
    /// default).
    #[serde(default)]
    pub role: Option<String>,
}

/// A created token: the only response that carries its secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedTokenResponse {
    #[serde(flatten)]
    pub token: StoredToken,
    /// The token to give to the SDK; not retrievable later.
    pub secret: String,
}

/// List tokens (without secrets).
#[utoipa::path(tag = "admin", responses(
    (status = 200, body = TokensResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[get("/api/admin/api-tokens")]
async fn list_tokens(state: web::Data<AppState>, _auth: AdminToken) -> ApiResult<HttpResponse> {
    let tokens = state.store.list_tokens().await?;
    Ok(HttpResponse::Ok().json(TokensResponse { tokens }))
}

/// Create a token.
#[utoipa::path(tag = "admin", request_body = CreateTokenRequest, responses(
    (status = 201, body = CreatedTokenResponse), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[post("/api/admin/api-tokens")]
async fn create_token(
    state: web::Data<AppState>,
    auth: AdminToken,
    Json(body): Json<CreateTokenRequest>,
) -> ApiResult<HttpResponse> {
    crate::domain::names::validate_printable(&body.token_name)
        .map_err(|e| ApiError::invalid("tokenName", e))?;
    let kind = TokenKind::parse(&body.kind).ok_or_else(|| {
        ApiError::invalid(
            "type",
            format!("must be admin, client or frontend, got `{}`", body.kind),
        )
    })?;
    let scope = match kind {
        TokenKind::Admin => TokenScope {
            kind,
            projects: vec!["*".into()],
            environment: "*".into(),
            role: Some(match body.role.as_deref() {
                None => Role::Admin,
                Some(r) => Role::parse(r).ok_or_else(|| {
                    ApiError::invalid(
                        "role",
                        format!("must be viewer, editor or admin, got `{r}`"),
                    )
                })?,
            }),
        },
        TokenKind::Client | TokenKind::Frontend => {
            let environment = body.environment.filter(|e| !e.is_empty()).ok_or_else(|| {
                ApiError::invalid("environment", "is required for client and frontend tokens")
            })?;
            let environments = state.store.list_environments().await?;
            if !environments.iter().any(|e| e.name == environment) {
                return Err(ApiError::not_found(format!(
                    "environment `{environment}` not found"
                )));
            }
            let projects = match (body.projects, body.project) {
                (Some(p), _) if !p.is_empty() => p,
                (_, Some(p)) => vec![p],
                _ => vec!["*".into()],
            };
            if projects.len() > 1 && projects.iter().any(|p| p == "*") {
                return Err(ApiError::invalid(
                    "projects",
                    "`*` cannot be combined with other projects",
                ));
            }
            let known = state.store.list_projects().await?;
            for (i, p) in projects.iter().enumerate() {
                if p != "*" && !known.iter().any(|k| &k.id == p) {
                    return Err(ApiError::invalid(
                        format!("projects[{i}]"),
                        format!("project `{p}` not found"),
                    ));
                }
            }
            if body.role.is_some() {
                return Err(ApiError::invalid("role", "only admin tokens have a role"));
            }
            TokenScope {
                kind,
                projects,
                environment,
                role: None,
            }
        }
    };
    let secret = generate_secret(&scope);
    let token = state
        .store
        .create_token(
            &body.token_name,
            &scope,
            &hash_secret(&secret),
            &auth.0.actor(),
        )
        .await?
        .ok_or_else(|| ApiError::conflict("token collision; try again"))?;
    state.tokens.reload().await?;
    Ok(HttpResponse::Created().json(CreatedTokenResponse { token, secret }))
}

/// Delete a token; it stops working at once on this replica.
#[utoipa::path(tag = "admin",
    params(("id" = i64, Path, description = "Token id")),
    responses((status = 204, description = "Deleted"),
              (status = 400, description = "`id` is not a 64-bit integer", body = ErrorBody),
              (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[delete("/api/admin/api-tokens/{id}")]
async fn delete_token(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<i64>,
) -> ApiResult<HttpResponse> {
    state
        .store
        .delete_token(path.into_inner(), &auth.0.actor())
        .await?;
    state.tokens.reload().await?;
    Ok(HttpResponse::NoContent().finish())
}
