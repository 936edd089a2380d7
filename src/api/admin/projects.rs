//! Projects group features; `default` exists from the start.

use actix_web::{get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::check_name;
use crate::api::error::{ApiError, ApiResult, ErrorBody};
use crate::api::extract::{AdminToken, Json};
use crate::app::AppState;
use crate::domain::admin::Project;
use crate::store::NewProject;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_projects).service(create_project);
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectsResponse {
    pub version: u32,
    pub projects: Vec<Project>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProjectRequest {
    /// URL-friendly, unique.
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// List projects.
#[utoipa::path(tag = "admin", responses(
    (status = 200, body = ProjectsResponse),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
))]
#[get("/api/admin/projects")]
async fn list_projects(state: web::Data<AppState>, _auth: AdminToken) -> ApiResult<HttpResponse> {
    let projects = state.store.list_projects().await?;
    Ok(HttpResponse::Ok().json(ProjectsResponse {
        version: 1,
        projects,
    }))
}

/// Create a project.
#[utoipa::path(tag = "admin", request_body = CreateProjectRequest, responses(
    (status = 201, body = Project),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
))]
#[post("/api/admin/projects")]
async fn create_project(
    state: web::Data<AppState>,
    auth: AdminToken,
    Json(body): Json<CreateProjectRequest>,
) -> ApiResult<HttpResponse> {
    check_name("id", &body.id)?;
    if body.name.trim().is_empty() {
        return Err(ApiError::invalid("name", "must not be empty"));
    }
    let project = NewProject {
        id: body.id,
        name: body.name,
        description: body.description,
    };
    let created = state
        .store
        .create_project(&project, &auth.0.actor())
        .await?;
    Ok(HttpResponse::Created().json(created))
}
