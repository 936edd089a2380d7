//! Features, their per-environment state, strategies, variants and dependencies,
//! on Unleash's admin paths.

use actix_web::{delete, get, post, put, web, HttpResponse};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::{check_name, problems_error};
use crate::api::error::{ApiError, ApiResult, ErrorBody};
use crate::api::extract::{AdminToken, Json};
use crate::app::AppState;
use crate::domain::admin::{Feature, FeatureMeta};
use crate::domain::model::{Constraint, Dependency, Strategy, Variant};
use crate::domain::validate::{normalize_variants, validate_strategy};
use crate::store::FeatureFields;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_features)
        .service(create_feature)
        .service(get_feature)
        .service(update_feature)
        .service(archive_feature)
        .service(enable_feature)
        .service(disable_feature)
        .service(list_strategies)
        .service(add_strategy)
        .service(update_strategy)
        .service(delete_strategy)
        .service(set_variants)
        .service(set_dependencies)
        .service(feature_metrics);
}

pub(crate) const FEATURE_TYPES: &[&str] = &[
    "release",
    "experiment",
    "operational",
    "kill-switch",
    "permission",
];

#[derive(Debug, Serialize, ToSchema)]
pub struct FeaturesResponse {
    pub version: u32,
    pub features: Vec<FeatureMeta>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateFeatureRequest {
    /// URL-friendly, unique across projects (archived features keep their name).
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// release (default), experiment, operational, kill-switch, permission.
    #[serde(rename = "type", default)]
    pub feature_type: Option<String>,
    #[serde(default)]
    pub impression_data: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateFeatureRequest {
    /// If given, must equal the path's name (renaming is not supported).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(rename = "type", default)]
    pub feature_type: Option<String>,
    #[serde(default)]
    pub impression_data: Option<bool>,
    #[serde(default)]
    pub stale: Option<bool>,
    /// Accepted for Unleash compatibility; must equal the path's project.
    #[serde(default)]
    pub project: Option<String>,
}

/// A strategy as sent to the admin API.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrategyRequest {
    /// Ignored (the path names the strategy on update); accepted because the
    /// Unleash UI echoes it.
    #[serde(default)]
    #[allow(dead_code)]
    pub id: Option<String>,
    /// default, flexibleRollout, userWithId, remoteAddress, applicationHostname,
    /// gradualRollout*, or a custom strategy name.
    pub name: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub sort_order: Option<i64>,
    #[serde(default)]
    pub parameters: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    #[serde(default)]
    pub segments: Option<Vec<i64>>,
    #[serde(default)]
    pub variants: Option<Vec<Variant>>,
}

impl StrategyRequest {
    fn into_strategy(self, id: Option<String>) -> ApiResult<Strategy> {
        let mut parameters = BTreeMap::new();
        for (k, v) in self.parameters {
            let text = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => continue,
                _ => {
                    return Err(ApiError::invalid(
                        format!("parameters.{k}"),
                        "must be a string, number or boolean",
                    ))
                }
            };
            parameters.insert(k, text);
        }
        let strategy = Strategy {
            id,
            name: self.name,
            title: self.title,
            disabled: self.disabled,
            sort_order: self.sort_order,
            parameters,
            constraints: self.constraints,
            segments: self.segments,
            variants: self.variants,
        };
        let problems = validate_strategy(&strategy);
        if !problems.is_empty() {
            return Err(problems_error("", problems));
        }
        Ok(strategy)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VariantsResponse {
    pub version: u32,
    pub variants: Vec<Variant>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DependenciesResponse {
    pub dependencies: Vec<Dependency>,
}

pub(crate) fn check_type(feature_type: &str) -> ApiResult<()> {
    if FEATURE_TYPES.contains(&feature_type) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "type",
            format!(
                "must be one of {}, got `{feature_type}`",
                FEATURE_TYPES.join(", ")
            ),
        ))
    }
}

/// List a project's live features.
#[utoipa::path(tag = "admin",
    params(("project" = String, Path, description = "Project id")),
    responses((status = 200, body = FeaturesResponse), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[get("/api/admin/projects/{project}/features")]
async fn list_features(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let project = path.into_inner();
    auth.0.require_project(&project)?;
    let features = state.store.list_features(&project).await?;
    Ok(HttpResponse::Ok().json(FeaturesResponse {
        version: 1,
        features,
    }))
}

/// Create a feature (off in every environment, no strategies).
#[utoipa::path(tag = "admin", request_body = CreateFeatureRequest,
    params(("project" = String, Path, description = "Project id")),
    responses((status = 201, body = Feature), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/admin/projects/{project}/features")]
async fn create_feature(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<String>,
    Json(body): Json<CreateFeatureRequest>,
) -> ApiResult<HttpResponse> {
    let project = path.into_inner();
    auth.0.require_project(&project)?;
    check_name("name", &body.name)?;
    let feature_type = body.feature_type.unwrap_or_else(|| "release".into());
    check_type(&feature_type)?;
    let fields = FeatureFields {
        name: body.name,
        description: body.description,
        feature_type,
        impression_data: body.impression_data.unwrap_or(false),
        stale: false,
    };
    let feature = state
        .store
        .create_feature(&project, &fields, &auth.0.actor())
        .await?;
    Ok(HttpResponse::Created().json(feature))
}

/// Get a feature with every environment's state, strategies and variants.
#[utoipa::path(tag = "admin",
    params(("project" = String, Path), ("name" = String, Path, description = "Feature name")),
    responses((status = 200, body = Feature), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[get("/api/admin/projects/{project}/features/{name}")]
async fn get_feature(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (project, name) = path.into_inner();
    auth.0.require_project(&project)?;
    Ok(HttpResponse::Ok().json(state.store.get_feature(&project, &name).await?))
}

/// Update a feature's description, type, impression data or staleness.
#[utoipa::path(tag = "admin", request_body = UpdateFeatureRequest,
    params(("project" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = Feature), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
#[put("/api/admin/projects/{project}/features/{name}")]
async fn update_feature(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<(String, String)>,
    Json(body): Json<UpdateFeatureRequest>,
) -> ApiResult<HttpResponse> {
    let (project, name) = path.into_inner();
    auth.0.require_project(&project)?;
    if body.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::invalid(
            "name",
            "renaming a feature is not supported",
        ));
    }
    if body.project.as_ref().is_some_and(|p| *p != project) {
        return Err(ApiError::invalid(
            "project",
            "moving a feature between projects is not supported here",
        ));
    }
    let current = state.store.get_feature(&project, &name).await?.meta;
    let feature_type = body.feature_type.unwrap_or(current.feature_type);
    check_type(&feature_type)?;
    let fields = FeatureFields {
        name,
        description: body.description.or(current.description),
        feature_type,
        impression_data: body.impression_data.unwrap_or(current.impression_data),
        stale: body.stale.unwrap_or(current.stale),
    };
    let feature = state
        .store
        .update_feature(&project, &fields, &auth.0.actor())
        .await?;
    Ok(HttpResponse::Ok().json(feature))
}

/// Archive a feature: SDKs stop seeing it; the name stays taken.
#[utoipa::path(tag = "admin",
    params(("project" = String, Path), ("name" = String, Path)),
    responses((status = 202, description = "Archived"), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
#[delete("/api/admin/projects/{project}/features/{name}")]
async fn archive_feature(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (project, name) = path.into_inner();
    auth.0.require_project(&project)?;
    state
        .store
        .archive_feature(&project, &name, &auth.0.actor())
        .await?;
    Ok(HttpResponse::Accepted().finish())
}

async fn toggle(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<(String, String, String)>,
    enabled: bool,
) -> ApiResult<HttpResponse> {
    let (project, name, env) = path.into_inner();
    auth.0.require_project(&project)?;
    auth.0.require_environment(&env)?;
    let feature = state
        .store
        .set_feature_enabled(&project, &name, &env, enabled, &auth.0.actor())
        .await?;
    Ok(HttpResponse::Ok().json(feature))
}

/// Turn a feature on in an environment.
#[utoipa::path(tag = "admin",
    params(("project" = String, Path), ("name" = String, Path), ("env" = String, Path)),
    responses((status = 200, body = Feature), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[post("/api/admin/projects/{project}/features/{name}/environments/{env}/on")]
async fn enable_feature(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<(String, String, String)>,
) -> ApiResult<HttpResponse> {
    toggle(state, auth, path, true).await
}

/// Turn a feature off in an environment.
#[utoipa::path(tag = "admin",
    params(("project" = String, Path), ("name" = String, Path), ("env" = String, Path)),
    responses((status = 200, body = Feature), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[post("/api/admin/projects/{project}/features/{name}/environments/{env}/off")]
async fn disable_feature(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<(String, String, String)>,
) -> ApiResult<HttpResponse> {
    toggle(state, auth, path, false).await
}

/// List a feature's strategies in an environment, in evaluation order.
#[utoipa::path(tag = "admin",
    params(("project" = String, Path), ("name" = String, Path), ("env" = String, Path)),
    responses((status = 200, body = Vec<Strategy>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[get("/api/admin/projects/{project}/features/{name}/environments/{env}/strategies")]
async fn list_strategies(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<(String, String, String)>,
) -> ApiResult<HttpResponse> {
    let (project, name, env) = path.into_inner();
    auth.0.require_project(&project)?;
    let strategies = state.store.list_strategies(&project, &name, &env).await?;
    Ok(HttpResponse::Ok().json(strategies))
}

/// Add a strategy to a feature in an environment.
#[utoipa::path(tag = "admin", request_body = StrategyRequest,
    params(("project" = String, Path), ("name" = String, Path), ("env" = String, Path)),
    responses((status = 200, body = Strategy), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
#[post("/api/admin/projects/{project}/features/{name}/environments/{env}/strategies")]
async fn add_strategy(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<(String, String, String)>,
    Json(body): Json<StrategyRequest>,
) -> ApiResult<HttpResponse> {
    let (project, name, env) = path.into_inner();
    auth.0.require_project(&project)?;
    auth.0.require_environment(&env)?;
    let strategy = body.into_strategy(None)?;
    let created = state
        .store
        .add_strategy(&project, &name, &env, &strategy, &auth.0.actor())
        .await?;
    Ok(HttpResponse::Ok().json(created))
}

/// Replace a strategy.
#[utoipa::path(tag = "admin", request_body = StrategyRequest,
    params(("project" = String, Path), ("name" = String, Path), ("env" = String, Path),
           ("strategy_id" = String, Path, description = "Strategy id")),
    responses((status = 200, body = Strategy), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
#[put("/api/admin/projects/{project}/features/{name}/environments/{env}/strategies/{strategy_id}")]
async fn update_strategy(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<(String, String, String, String)>,
    Json(body): Json<StrategyRequest>,
) -> ApiResult<HttpResponse> {
    let (project, name, env, id) = path.into_inner();
    auth.0.require_project(&project)?;
    auth.0.require_environment(&env)?;
    let strategy = body.into_strategy(Some(id))?;
    let updated = state
        .store
        .update_strategy(&project, &name, &env, &strategy, &auth.0.actor())
        .await?;
    Ok(HttpResponse::Ok().json(updated))
}

/// Remove a strategy.
#[utoipa::path(tag = "admin",
    params(("project" = String, Path), ("name" = String, Path), ("env" = String, Path),
           ("strategy_id" = String, Path)),
    responses((status = 200, description = "Removed"), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[delete(
    "/api/admin/projects/{project}/features/{name}/environments/{env}/strategies/{strategy_id}"
)]
async fn delete_strategy(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<(String, String, String, String)>,
) -> ApiResult<HttpResponse> {
    let (project, name, env, id) = path.into_inner();
    auth.0.require_project(&project)?;
    auth.0.require_environment(&env)?;
    state
        .store
        .delete_strategy(&project, &name, &env, &id, &auth.0.actor())
        .await?;
    Ok(HttpResponse::Ok().finish())
}

/// Replace a feature's variants in an environment. Weights of `variable` variants
/// are recomputed to share what `fix` variants leave of 1000, as Unleash does.
#[utoipa::path(tag = "admin", request_body = Vec<Variant>,
    params(("project" = String, Path), ("name" = String, Path), ("env" = String, Path)),
    responses((status = 200, body = VariantsResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
#[put("/api/admin/projects/{project}/features/{name}/environments/{env}/variants")]
async fn set_variants(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<(String, String, String)>,
    Json(body): Json<Vec<Variant>>,
) -> ApiResult<HttpResponse> {
    let (project, name, env) = path.into_inner();
    auth.0.require_project(&project)?;
    auth.0.require_environment(&env)?;
    let variants = normalize_variants(&body).map_err(|p| problems_error("", p))?;
    let variants = state
        .store
        .set_variants(&project, &name, &env, &variants, &auth.0.actor())
        .await?;
    Ok(HttpResponse::Ok().json(VariantsResponse {
        version: 1,
        variants,
    }))
}

/// Replace a feature's parent dependencies (one level: a parent may not itself
/// depend on another feature).
#[utoipa::path(tag = "admin", request_body = Vec<Dependency>,
    params(("project" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = DependenciesResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
#[put("/api/admin/projects/{project}/features/{name}/dependencies")]
async fn set_dependencies(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<(String, String)>,
    Json(body): Json<Vec<Dependency>>,
) -> ApiResult<HttpResponse> {
    let (project, name) = path.into_inner();
    auth.0.require_project(&project)?;
    let mut seen = std::collections::HashSet::new();
    for (i, dep) in body.iter().enumerate() {
        if !seen.insert(dep.feature.as_str()) {
            return Err(ApiError::invalid(
                format!("[{i}].feature"),
                "duplicate parent",
            ));
        }
    }
    let dependencies = state
        .store
        .set_dependencies(&project, &name, &body, &auth.0.actor())
        .await?;
    Ok(HttpResponse::Ok().json(DependenciesResponse { dependencies }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    /// Environment whose SDK counts to read.
    pub environment: String,
    /// How many hours back (1-720, default 24).
    pub hours: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureMetricsResponse {
    pub feature: String,
    pub environment: String,
    pub buckets: Vec<crate::store::HourlyMetrics>,
}

/// SDK evaluation counts (yes/no/variants) per hour, from `/api/client/metrics`.
#[utoipa::path(tag = "admin", params(("project" = String, Path), ("name" = String, Path), MetricsQuery),
    responses((status = 200, body = FeatureMetricsResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
#[get("/api/admin/projects/{project}/features/{name}/metrics")]
async fn feature_metrics(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: web::Path<(String, String)>,
    query: web::Query<MetricsQuery>,
) -> ApiResult<HttpResponse> {
    let (project, name) = path.into_inner();
    auth.0.require_project(&project)?;
    let hours = query.hours.unwrap_or(24);
    if !(1..=720).contains(&hours) {
        return Err(ApiError::invalid("hours", "must be between 1 and 720"));
    }
    state.store.get_feature(&project, &name).await?;
    if !state
        .store
        .list_environments()
        .await?
        .iter()
        .any(|e| e.name == query.environment)
    {
        return Err(ApiError::not_found(format!(
            "environment `{}` not found",
            query.environment
        )));
    }
    const HOUR: i64 = 3_600_000;
    let now = crate::store::now_ms();
    let since = (now.div_euclid(HOUR) - hours + 1) * HOUR;
    let buckets = state
        .store
        .feature_metrics(&name, &query.environment, since)
        .await?;
    Ok(HttpResponse::Ok().json(FeatureMetricsResponse {
        feature: name,
        environment: query.environment.clone(),
        buckets,
    }))
}
