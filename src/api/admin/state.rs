//! Import and export in Unleash's client-features format, per environment.

use actix_web::{get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::api::error::{ApiError, ApiResult, ErrorBody};
use crate::api::extract::{AdminToken, Json};
use crate::app::AppState;
use crate::domain::model::ClientFeatures;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(import_state).service(export_state);
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct EnvironmentQuery {
    /// The environment to import into / export from.
    pub environment: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportResponse {
    /// Features upserted.
    pub features: usize,
    /// Segments upserted.
    pub segments: usize,
}

/// Import a client-features document into an environment: upserts features (to
/// `default` when they name no project), their strategies, variants and
/// dependencies in that environment, and segments (keeping their ids).
#[utoipa::path(tag = "admin", request_body = ClientFeatures, params(EnvironmentQuery),
    responses((status = 200, body = ImportResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/admin/state/import")]
async fn import_state(
    state: web::Data<AppState>,
    auth: AdminToken,
    query: web::Query<EnvironmentQuery>,
    Json(body): Json<ClientFeatures>,
) -> ApiResult<HttpResponse> {
    let mut seen = std::collections::HashSet::new();
    for (i, f) in body.features.iter().enumerate() {
        crate::domain::names::validate_printable(&f.name)
            .map_err(|e| ApiError::invalid(format!("features[{i}].name"), e))?;
        if !seen.insert(f.name.as_str()) {
            return Err(ApiError::invalid(
                format!("features[{i}].name"),
                "duplicate feature name",
            ));
        }
        if let Some(p) = &f.project {
            crate::domain::names::validate_url_friendly(p)
                .map_err(|e| ApiError::invalid(format!("features[{i}].project"), e))?;
        }
    }
    let summary = state
        .store
        .import_state(&query.environment, &body, &auth.0.actor())
        .await?;
    Ok(HttpResponse::Ok().json(ImportResponse {
        features: summary.features,
        segments: summary.segments,
    }))
}

/// Export an environment as a client-features document (import's inverse).
#[utoipa::path(tag = "admin", params(EnvironmentQuery),
    responses((status = 200, body = ClientFeatures), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
#[get("/api/admin/state/export")]
async fn export_state(
    state: web::Data<AppState>,
    _auth: AdminToken,
    query: web::Query<EnvironmentQuery>,
) -> ApiResult<HttpResponse> {
    let features = state.store.client_features(&query.environment).await?;
    Ok(HttpResponse::Ok().json(features))
}
