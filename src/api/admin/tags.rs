//! Feature tags on Unleash's paths (`/api/admin/features/{name}/tags`).

use actix_web::{delete, get, post, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::check_name;
use crate::api::error::{ApiResult, ErrorBody};
use crate::api::extract::{AdminToken, Json};
use crate::app::AppState;
use crate::store::Tag;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_tags).service(add_tag).service(remove_tag);
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TagsResponse {
    pub version: u32,
    pub tags: Vec<Tag>,
}

/// List a feature's tags.
#[utoipa::path(tag = "admin", params(("name" = String, Path, description = "Feature name")),
    responses((status = 200, body = TagsResponse), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[get("/api/admin/features/{name}/tags")]
async fn list_tags(
    state: web::Data<AppState>,
    _auth: AdminToken,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let tags = state.store.list_tags(&path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(TagsResponse { version: 1, tags }))
}

/// Tag a feature (201; 200 if it already had the tag).
#[utoipa::path(tag = "admin", request_body = Tag, params(("name" = String, Path)),
    responses((status = 201, body = Tag), (status = 200, body = Tag), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
#[post("/api/admin/features/{name}/tags")]
async fn add_tag(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<String>,
    Json(tag): Json<Tag>,
) -> ApiResult<HttpResponse> {
    check_name("type", &tag.tag_type)?;
    crate::domain::names::validate_printable(&tag.value)
        .map_err(|e| crate::api::error::ApiError::invalid("value", e))?;
    let created = state
        .store
        .add_tag(&path.into_inner(), &tag, &auth.0.actor())
        .await?;
    Ok(if created {
        HttpResponse::Created().json(tag)
    } else {
        HttpResponse::Ok().json(tag)
    })
}

/// Remove a tag from a feature.
#[utoipa::path(tag = "admin",
    params(("name" = String, Path), ("tag_type" = String, Path), ("value" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[delete("/api/admin/features/{name}/tags/{tag_type}/{value}")]
async fn remove_tag(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<(String, String, String)>,
) -> ApiResult<HttpResponse> {
    let (name, tag_type, value) = path.into_inner();
    state
        .store
        .remove_tag(&name, &Tag { tag_type, value }, &auth.0.actor())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
