//! Environments: `development` and `production` exist; more can be added.

use actix_web::{get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::check_name;
use crate::api::error::{ApiError, ApiResult, ErrorBody};
use crate::api::extract::{AdminToken, Json};
use crate::app::AppState;
use crate::domain::admin::Environment;
use crate::store::NewEnvironment;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_environments).service(create_environment);
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnvironmentsResponse {
    pub version: u32,
    pub environments: Vec<Environment>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateEnvironmentRequest {
    /// URL-friendly, unique.
    pub name: String,
    /// e.g. `development`, `test`, `production`.
    #[serde(rename = "type")]
    pub environment_type: String,
    #[serde(default)]
    pub sort_order: Option<i64>,
}

/// List environments.
#[utoipa::path(tag = "admin", responses(
    (status = 200, body = EnvironmentsResponse),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
))]
#[get("/api/admin/environments")]
async fn list_environments(
    state: web::Data<AppState>,
    _auth: AdminToken,
) -> ApiResult<HttpResponse> {
    let environments = state.store.list_environments().await?;
    Ok(HttpResponse::Ok().json(EnvironmentsResponse {
        version: 1,
        environments,
    }))
}

/// Create an environment.
#[utoipa::path(tag = "admin", request_body = CreateEnvironmentRequest, responses(
    (status = 201, body = Environment),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
))]
#[post("/api/admin/environments")]
async fn create_environment(
    state: web::Data<AppState>,
    auth: AdminToken,
    Json(body): Json<CreateEnvironmentRequest>,
) -> ApiResult<HttpResponse> {
    check_name("name", &body.name)?;
    if body.environment_type.trim().is_empty() {
        return Err(ApiError::invalid("type", "must not be empty"));
    }
    let env = NewEnvironment {
        name: body.name,
        environment_type: body.environment_type,
        sort_order: body.sort_order.unwrap_or(100),
    };
    let created = state
        .store
        .create_environment(&env, &auth.0.actor())
        .await?;
    Ok(HttpResponse::Created().json(created))
}
