//! Segments: reusable constraint lists referenced by strategies.

use actix_web::{delete, get, post, put, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::problems_error;
use crate::api::error::{ApiError, ApiResult, ErrorBody};
use crate::api::extract::{AdminToken, Json};
use crate::app::AppState;
use crate::domain::admin::AdminSegment;
use crate::domain::model::Constraint;
use crate::domain::validate::validate_constraints;
use crate::store::SegmentFields;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_segments)
        .service(create_segment)
        .service(update_segment)
        .service(delete_segment);
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentsResponse {
    pub segments: Vec<AdminSegment>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SegmentRequest {
    /// Unique.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Restricts the segment to one project (informational).
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub constraints: Vec<Constraint>,
}

impl SegmentRequest {
    fn into_fields(self) -> ApiResult<SegmentFields> {
        crate::domain::names::validate_printable(&self.name)
            .map_err(|e| ApiError::invalid("name", e))?;
        let problems = validate_constraints("constraints", &self.constraints);
        if !problems.is_empty() {
            return Err(problems_error("", problems));
        }
        Ok(SegmentFields {
            name: self.name,
            description: self.description,
            project: self.project,
            constraints: self.constraints,
        })
    }
}

/// List segments.
#[utoipa::path(tag = "admin", responses(
    (status = 200, body = SegmentsResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[get("/api/admin/segments")]
async fn list_segments(state: web::Data<AppState>, _auth: AdminToken) -> ApiResult<HttpResponse> {
    let segments = state.store.list_segments().await?;
    Ok(HttpResponse::Ok().json(SegmentsResponse { segments }))
}

/// Create a segment.
#[utoipa::path(tag = "admin", request_body = SegmentRequest, responses(
    (status = 201, body = AdminSegment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/admin/segments")]
async fn create_segment(
    state: web::Data<AppState>,
    auth: AdminToken,
    Json(body): Json<SegmentRequest>,
) -> ApiResult<HttpResponse> {
    let fields = body.into_fields()?;
    let created = state.store.create_segment(&fields, &auth.0.actor()).await?;
    Ok(HttpResponse::Created().json(created))
}

/// Replace a segment.
#[utoipa::path(tag = "admin", request_body = SegmentRequest,
    params(("id" = i64, Path, description = "Segment id")),
    responses((status = 200, body = AdminSegment), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[put("/api/admin/segments/{id}")]
async fn update_segment(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<i64>,
    Json(body): Json<SegmentRequest>,
) -> ApiResult<HttpResponse> {
    let fields = body.into_fields()?;
    let updated = state
        .store
        .update_segment(path.into_inner(), &fields, &auth.0.actor())
        .await?;
    Ok(HttpResponse::Ok().json(updated))
}

/// Delete a segment (409 while a strategy uses it).
#[utoipa::path(tag = "admin",
    params(("id" = i64, Path, description = "Segment id")),
    responses((status = 204, description = "Deleted"),
              (status = 400, description = "`id` is not a 64-bit integer", body = ErrorBody),
              (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
#[delete("/api/admin/segments/{id}")]
async fn delete_segment(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<i64>,
) -> ApiResult<HttpResponse> {
    state
        .store
        .delete_segment(path.into_inner(), &auth.0.actor())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
