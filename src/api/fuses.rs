//! Fuse configuration, analysis and manual control on
//! `/api/admin/projects/{project}/features/{name}/environments/{env}/fuse`.

use actix_web::{get, post, put, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::error::{ApiError, ApiResult, Code, ErrorBody, ErrorDetail};
use super::extract::{AdminToken, Caller, Json};
use crate::app::AppState;
use crate::domain::fuse::settings::FuseSettings;
use crate::domain::model::Strategy;
use crate::domain::stats::RolloutState;
use crate::scheduler::{rollout_text, status_of, BacktestLook, FuseError, FuseEvaluation};
use crate::store::{now_ms, Actor, FuseChange, FuseRecord, FuseSnapshot};

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(get_fuse)
        .service(put_fuse)
        .service(fuse_analysis)
        .service(fuse_history)
        .service(evaluate_fuse)
        .service(pause_fuse)
        .service(resume_fuse)
        .service(unlock_fuse)
        .service(set_fuse_exposure)
        .service(backtest_fuse);
}

impl From<FuseError> for ApiError {
    fn from(e: FuseError) -> Self {
        match e {
            FuseError::NotFound(m) => ApiError::not_found(m),
            FuseError::Store(s) => s.into(),
            FuseError::Corrupt(m) => ApiError::internal(anyhow::anyhow!(m)),
        }
    }
}

/// A fuse as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FuseResponse {
    pub feature: String,
    pub environment: String,
    pub strategy_id: String,
    /// ramping, throttled, rolled_back, released, paused, srm_hold, held.
    pub status: String,
    pub exposure_pct: f64,
    pub locked: bool,
    pub paused: bool,
    pub config: FuseSettings,
    #[schema(value_type = Object)]
    pub state: RolloutState,
    #[schema(value_type = Option<Object>)]
    pub last_decision: Option<serde_json::Value>,
    pub last_evaluated_at: Option<i64>,
    /// `[[time_ms, exposure_pct], ...]`
    #[schema(value_type = Vec<Vec<f64>>)]
    pub rollout_history: serde_json::Value,
}

pub(crate) fn response(record: FuseRecord) -> ApiResult<FuseResponse> {
    let config: FuseSettings = serde_json::from_value(record.config)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("stored fuse config: {e}")))?;
    let state: RolloutState = serde_json::from_value(record.state)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("stored fuse state: {e}")))?;
    Ok(FuseResponse {
        feature: record.feature,
        environment: record.environment,
        strategy_id: record.strategy_id,
        status: record.status,
        exposure_pct: state.exposure_pct,
        locked: record.locked,
        paused: record.paused,
        config,
        state,
        last_decision: record.last_decision,
        last_evaluated_at: record.last_evaluated_at,
        rollout_history: record.rollout_history,
    })
}

type FusePath = web::Path<(String, String, String)>;

async fn load(
    state: &AppState,
    caller: &Caller,
    path: &(String, String, String),
) -> ApiResult<FuseRecord> {
    let (project, name, env) = path;
    caller.require_project(project)?;
    find_fuse(state, project, name, env).await
}

/// Read a fuse.
#[utoipa::path(tag = "fuses", params(("project" = String, Path), ("name" = String, Path), ("env" = String, Path)),
    responses((status = 200, body = FuseResponse), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[get("/api/admin/projects/{project}/features/{name}/environments/{env}/fuse")]
async fn get_fuse(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: FusePath,
) -> ApiResult<HttpResponse> {
    let record = load(&state, &auth.0, &path).await?;
    Ok(HttpResponse::Ok().json(response(record)?))
}

/// Arm a fuse (every field optional: `{}` arms one with the defaults) or change its
/// configuration. Arming creates the managed flexibleRollout strategy if there is
/// none, starts at the step matching the current exposure, and never resets the
/// statistics of data already collected.
#[utoipa::path(tag = "fuses", request_body = FuseSettings,
    params(("project" = String, Path), ("name" = String, Path), ("env" = String, Path)),
    responses((status = 200, body = FuseResponse), (status = 201, body = FuseResponse),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[put("/api/admin/projects/{project}/features/{name}/environments/{env}/fuse")]
async fn put_fuse(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: FusePath,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<HttpResponse> {
    let (project, name, env) = path.into_inner();
    auth.0.require_project(&project)?;
    auth.0.require_environment(&env)?;
    let (record, created) =
        configure_fuse(&state, &project, &name, &env, body, &auth.0.actor()).await?;
    let body = response(record)?;
    Ok(if created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// Arms or reconfigures a fuse from its JSON settings, validated field by field; the
/// API and the web UI both go through here. Returns the fuse and whether it is new.
pub(crate) async fn configure_fuse(
    state: &AppState,
    project: &str,
    name: &str,
    env: &str,
    body: serde_json::Value,
    actor: &Actor,
) -> ApiResult<(FuseRecord, bool)> {
    let (project, name, env) = (project.to_string(), name.to_string(), env.to_string());
    let serde_json::Value::Object(map) = &body else {
        return Err(ApiError::invalid("$", "must be a JSON object"));
    };
    let known = FuseSettings::field_names();
    if let Some(unknown) = map.keys().find(|k| !known.contains(k)) {
        return Err(ApiError::invalid(
            unknown.clone(),
            format!("unknown field; expected one of {}", known.join(", ")),
        ));
    }
    let settings: FuseSettings = match serde_json::from_value(body.clone()) {
        Ok(s) => s,
        Err(e) => {
            // serde loses the field name through `flatten`: find it by parsing each
            // field on its own.
            let field = map
                .iter()
                .find(|(k, v)| {
                    let one = serde_json::json!({ k.as_str(): v });
                    serde_json::from_value::<FuseSettings>(one).is_err()
                })
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| "$".into());
            return Err(ApiError::invalid(field, e.to_string()));
        }
    };
    let problems = settings.validate();
    if !problems.is_empty() {
        let details: Vec<ErrorDetail> = problems
            .into_iter()
            .map(|p| ErrorDetail {
                path: p.field,
                message: p.message,
            })
            .collect();
        let message = details
            .iter()
            .map(|d| format!("{}: {}", d.path, d.message))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(ApiError::new(Code::ValidationError, message).with_details(details));
    }
    let feature = state.store.get_feature(&project, &name).await?;
    let environment = feature
        .environments
        .iter()
        .find(|e| e.name == env)
        .ok_or_else(|| ApiError::not_found(format!("environment `{env}` not found")))?;
    let actor = actor.clone();
    let now = now_ms();
    let existing = state.store.get_fuse(&name, &env).await?;

    // The managed strategy: the one named, else the current one, else the first
    // flexibleRollout of the environment, else a new one at the first step.
    let wanted = settings
        .strategy_id
        .clone()
        .or_else(|| existing.as_ref().map(|f| f.strategy_id.clone()));
    let strategy: Strategy = match wanted {
        Some(id) => environment
            .strategies
            .iter()
            .find(|s| s.id.as_deref() == Some(id.as_str()))
            .cloned()
            .ok_or_else(|| {
                ApiError::invalid("strategy_id", format!("no strategy `{id}` in `{env}`"))
            })?,
        None => match environment
            .strategies
            .iter()
            .find(|s| s.name == "flexibleRollout")
        {
            Some(s) => s.clone(),
            None => {
                let first = settings
                    .stats
                    .ramp_steps_pct
                    .first()
                    .copied()
                    .unwrap_or(100.0);
                let new = rollout_strategy(&name, first, Some("Managed by fuse"));
                state
                    .store
                    .add_strategy(&project, &name, &env, &new, &actor)
                    .await?
            }
        },
    };
    if strategy.name != "flexibleRollout" {
        return Err(ApiError::invalid(
            "strategy_id",
            "the managed strategy must be a flexibleRollout",
        ));
    }
    let strategy_id = strategy.id.clone().unwrap_or_default();
    let mut settings = settings;
    settings.strategy_id = Some(strategy_id.clone());
    let config = serde_json::to_value(&settings).map_err(ApiError::internal)?;

    let (record, created) = match existing {
        Some(mut record) => {
            let before = record.config.clone();
            record.config = config.clone();
            record.strategy_id = strategy_id;
            let saved = state
                .store
                .put_fuse(&record, Some(("fuse-configured", before, config)), &actor)
                .await?;
            (saved, false)
        }
        None => {
            let current: f64 = strategy
                .parameters
                .get("rollout")
                .and_then(|r| r.trim().parse().ok())
                .unwrap_or(0.0);
            let mut rollout = RolloutState::start(&settings.stats, now, None)
                .map_err(|e| ApiError::invalid("$", e.to_string()))?;
            // Arm at the current exposure (a rollout already under way keeps it).
            if current > 0.0 {
                rollout.exposure_pct = current;
            }
            let mut record = FuseRecord {
                project: project.clone(),
                feature: name.clone(),
                environment: env.clone(),
                strategy_id,
                config: config.clone(),
                state: serde_json::to_value(&rollout).map_err(ApiError::internal)?,
                status: String::new(),
                locked: false,
                paused: false,
                min_p: serde_json::json!({}),
                rollout_history: serde_json::json!([[now, rollout.exposure_pct]]),
                last_decision: None,
                last_evaluated_at: None,
                version: 0,
                created_at: now,
                updated_at: now,
            };
            record.status = status_of(&record, &rollout, None);
            let armed = serde_json::json!({ "exposure": rollout.exposure_pct, "config": config });
            let mut saved = state
                .store
                .put_fuse(
                    &record,
                    Some(("fuse-armed", serde_json::Value::Null, armed)),
                    &actor,
                )
                .await?;
            if current <= 0.0 {
                // Start the rollout at the first step.
                let change = FuseChange {
                    expected_version: saved.version,
                    record: saved.clone(),
                    rollout: Some(rollout_text(rollout.exposure_pct)),
                    audit: None,
                    snapshot: None,
                };
                state.store.apply_fuse_change(&change, &actor).await?;
                saved = state
                    .store
                    .get_fuse(&name, &env)
                    .await?
                    .ok_or_else(|| ApiError::not_found("fuse vanished"))?;
            }
            (saved, true)
        }
    };
    state.snapshots.refresh().await?;
    Ok((record, created))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AtQuery {
    /// Evaluate as of this time (epoch ms) instead of now.
    pub at: Option<i64>,
}

/// The current analysis: per metric both cohorts' counts and rates, the sequential
/// bounds, always-valid p, SRM, eligible and pending users, and the decision the rules
/// would take now (not applied).
#[utoipa::path(tag = "fuses", params(("project" = String, Path), ("name" = String, Path), ("env" = String, Path), AtQuery),
    responses((status = 200, body = FuseEvaluation),
              (status = 400, description = "`at` is not a 64-bit integer", body = ErrorBody),
              (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[get("/api/admin/projects/{project}/features/{name}/environments/{env}/fuse/analysis")]
async fn fuse_analysis(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: FusePath,
    query: web::Query<AtQuery>,
) -> ApiResult<HttpResponse> {
    load(&state, &auth.0, &path).await?;
    let (_, name, env) = path.into_inner();
    let at = query.at.unwrap_or_else(now_ms);
    let evaluation = state.scheduler.evaluate(&name, &env, at, false).await?;
    Ok(HttpResponse::Ok().json(evaluation))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryResponse {
    pub snapshots: Vec<FuseSnapshot>,
}

/// Analysis snapshots over time, oldest first (the last 500).
#[utoipa::path(tag = "fuses", params(("project" = String, Path), ("name" = String, Path), ("env" = String, Path)),
    responses((status = 200, body = HistoryResponse), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[get("/api/admin/projects/{project}/features/{name}/environments/{env}/fuse/history")]
async fn fuse_history(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: FusePath,
) -> ApiResult<HttpResponse> {
    load(&state, &auth.0, &path).await?;
    let (_, name, env) = path.into_inner();
    let snapshots = state.store.fuse_history(&name, &env, 500).await?;
    Ok(HttpResponse::Ok().json(HistoryResponse { snapshots }))
}

/// Run the fuse now (as the scheduler would) and apply its decision.
#[utoipa::path(tag = "fuses", params(("project" = String, Path), ("name" = String, Path), ("env" = String, Path), AtQuery),
    responses((status = 200, body = FuseEvaluation),
              (status = 400, description = "`at` is not a 64-bit integer", body = ErrorBody),
              (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[post("/api/admin/projects/{project}/features/{name}/environments/{env}/fuse/evaluate")]
async fn evaluate_fuse(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: FusePath,
    query: web::Query<AtQuery>,
) -> ApiResult<HttpResponse> {
    load(&state, &auth.0, &path).await?;
    let (_, name, env) = path.into_inner();
    let at = query.at.unwrap_or_else(now_ms);
    let evaluation = state.scheduler.evaluate(&name, &env, at, true).await?;
    Ok(HttpResponse::Ok().json(evaluation))
}

/// Applies a manual action (audited with who did it).
async fn manual(
    state: &AppState,
    caller: &Caller,
    path: &(String, String, String),
    action: &str,
) -> ApiResult<FuseResponse> {
    let (project, name, env) = path;
    caller.require_project(project)?;
    response(manual_action(state, project, name, env, action, &caller.actor()).await?)
}

/// The fuse of a feature in an environment, or 404.
pub(crate) async fn find_fuse(
    state: &AppState,
    project: &str,
    name: &str,
    env: &str,
) -> ApiResult<FuseRecord> {
    state.store.get_feature(project, name).await?;
    state
        .store
        .get_fuse(name, env)
        .await?
        .filter(|f| f.project == project)
        .ok_or_else(|| {
            ApiError::not_found(format!("no fuse on `{name}` in `{env}`; PUT one to arm it"))
        })
}

/// Pause, resume or unlock, audited as done by `actor`; also used by the web UI.
pub(crate) async fn manual_action(
    state: &AppState,
    project: &str,
    name: &str,
    env: &str,
    action: &str,
    actor: &Actor,
) -> ApiResult<FuseRecord> {
    let record = find_fuse(state, project, name, env).await?;
    let settings: FuseSettings = serde_json::from_value(record.config.clone())
        .map_err(|e| ApiError::internal(anyhow::anyhow!("stored fuse config: {e}")))?;
    let rollout: RolloutState = serde_json::from_value(record.state.clone())
        .map_err(|e| ApiError::internal(anyhow::anyhow!("stored fuse state: {e}")))?;
    let now = now_ms();
    let mut updated = record.clone();
    let mut next = rollout.clone();
    let mut new_rollout = None;
    match action {
        "pause" => updated.paused = true,
        "resume" => updated.paused = false,
        "unlock" => {
            if !record.locked {
                return Err(ApiError::conflict("the fuse is not locked"));
            }
            // A person takes responsibility: start again at the first step.
            updated.locked = false;
            next = RolloutState::start(&settings.stats, now, None)
                .map_err(|e| ApiError::internal(anyhow::anyhow!(e.to_string())))?;
            next.tuning_s = rollout.tuning_s;
            new_rollout = Some(rollout_text(next.exposure_pct));
            let mut history: Vec<(i64, f64)> =
                serde_json::from_value(record.rollout_history.clone()).unwrap_or_default();
            history.push((now, next.exposure_pct));
            updated.rollout_history = serde_json::to_value(history).map_err(ApiError::internal)?;
        }
        _ => return Err(ApiError::not_found(format!("no action `{action}`"))),
    }
    updated.state = serde_json::to_value(&next).map_err(ApiError::internal)?;
    updated.status = status_of(&updated, &next, None);
    let change = FuseChange {
        expected_version: record.version,
        rollout: new_rollout,
        audit: Some((
            format!("fuse-{action}"),
            serde_json::json!({ "status": record.status, "exposure": rollout.exposure_pct }),
            serde_json::json!({ "status": updated.status, "exposure": next.exposure_pct, "by": actor.0 }),
        )),
        snapshot: None,
        record: updated,
    };
    apply_manual(state, &change, name, env, actor).await
}

/// Freeze the fuse: no automatic decisions until resumed.
#[utoipa::path(tag = "fuses", params(("project" = String, Path), ("name" = String, Path), ("env" = String, Path)),
    responses((status = 200, body = FuseResponse), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/admin/projects/{project}/features/{name}/environments/{env}/fuse/pause")]
async fn pause_fuse(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: FusePath,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(manual(&state, &auth.0, &path, "pause").await?))
}

/// Let the fuse decide again.
#[utoipa::path(tag = "fuses", params(("project" = String, Path), ("name" = String, Path), ("env" = String, Path)),
    responses((status = 200, body = FuseResponse), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/admin/projects/{project}/features/{name}/environments/{env}/fuse/resume")]
async fn resume_fuse(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: FusePath,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(manual(&state, &auth.0, &path, "resume").await?))
}

/// Unlock a rolled-back fuse: it starts again at the first ramp step.
#[utoipa::path(tag = "fuses", params(("project" = String, Path), ("name" = String, Path), ("env" = String, Path)),
    responses((status = 200, body = FuseResponse), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/admin/projects/{project}/features/{name}/environments/{env}/fuse/unlock")]
async fn unlock_fuse(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: FusePath,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(manual(&state, &auth.0, &path, "unlock").await?))
}

/// A manual exposure.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExposureRequest {
    /// Share of users who get the feature, 0-100.
    pub exposure_pct: f64,
}

/// Set the managed rollout's exposure by hand (audited with who). The fuse goes on
/// deciding from there; its current step restarts now. A rolled-back fuse must be
/// unlocked first.
#[utoipa::path(tag = "fuses", request_body = ExposureRequest,
    params(("project" = String, Path), ("name" = String, Path), ("env" = String, Path)),
    responses((status = 200, body = FuseResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/admin/projects/{project}/features/{name}/environments/{env}/fuse/exposure")]
async fn set_fuse_exposure(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: FusePath,
    Json(body): Json<ExposureRequest>,
) -> ApiResult<HttpResponse> {
    let (project, name, env) = path.into_inner();
    auth.0.require_project(&project)?;
    auth.0.require_environment(&env)?;
    let record = set_exposure(
        &state,
        &project,
        &name,
        &env,
        body.exposure_pct,
        &auth.0.actor(),
    )
    .await?;
    Ok(HttpResponse::Ok().json(response(record)?))
}

/// Applies a change made by a person (only if nobody changed the fuse since it was
/// read), makes it visible to SDKs now, and returns the fuse as stored.
async fn apply_manual(
    state: &AppState,
    change: &FuseChange,
    name: &str,
    env: &str,
    actor: &Actor,
) -> ApiResult<FuseRecord> {
    if !state.store.apply_fuse_change(change, actor).await? {
        return Err(ApiError::conflict("the fuse changed meanwhile; try again"));
    }
    state.snapshots.refresh().await?;
    state
        .store
        .get_fuse(name, env)
        .await?
        .ok_or_else(|| ApiError::not_found("fuse vanished"))
}

/// A new flexibleRollout at `pct` for everyone, sticky on the default context.
pub(crate) fn rollout_strategy(feature: &str, pct: f64, title: Option<&str>) -> Strategy {
    Strategy {
        id: None,
        name: "flexibleRollout".into(),
        title: title.map(String::from),
        disabled: None,
        sort_order: None,
        parameters: [
            ("rollout".to_string(), rollout_text(pct)),
            ("stickiness".to_string(), "default".to_string()),
            ("groupId".to_string(), feature.to_string()),
        ]
        .into_iter()
        .collect(),
        constraints: Vec::new(),
        segments: None,
        variants: None,
    }
}

/// Checks a manual exposure: a finite percentage in [0, 100].
pub(crate) fn check_exposure(pct: f64) -> ApiResult<f64> {
    if pct.is_finite() && (0.0..=100.0).contains(&pct) {
        Ok(pct)
    } else {
        Err(ApiError::invalid(
            "exposurePct",
            "must be a number from 0 to 100",
        ))
    }
}

/// Moves an armed fuse's exposure by hand; also used by the web UI.
pub(crate) async fn set_exposure(
    state: &AppState,
    project: &str,
    name: &str,
    env: &str,
    pct: f64,
    actor: &Actor,
) -> ApiResult<FuseRecord> {
    let pct = check_exposure(pct)?;
    let record = find_fuse(state, project, name, env).await?;
    if record.locked {
        return Err(ApiError::conflict(
            "the fuse rolled back; unlock it before changing exposure",
        ));
    }
    let rollout: RolloutState = serde_json::from_value(record.state.clone())
        .map_err(|e| ApiError::internal(anyhow::anyhow!("stored fuse state: {e}")))?;
    let now = now_ms();
    let mut next = rollout.clone();
    next.exposure_pct = pct;
    next.step_started_at_ms = now;
    let mut updated = record.clone();
    let mut history: Vec<(i64, f64)> =
        serde_json::from_value(record.rollout_history.clone()).unwrap_or_default();
    history.push((now, pct));
    updated.rollout_history = serde_json::to_value(history).map_err(ApiError::internal)?;
    updated.state = serde_json::to_value(&next).map_err(ApiError::internal)?;
    updated.status = status_of(&updated, &next, None);
    let change = FuseChange {
        expected_version: record.version,
        rollout: Some(rollout_text(pct)),
        audit: Some((
            "fuse-exposure-set".into(),
            serde_json::json!({ "status": record.status, "exposure": rollout.exposure_pct }),
            serde_json::json!({ "status": updated.status, "exposure": pct, "by": actor.0 }),
        )),
        snapshot: None,
        record: updated,
    };
    apply_manual(state, &change, name, env, actor).await
}

/// What to replay.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktestRequest {
    /// A configuration to try instead of the fuse's own (same fields as PUT).
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    /// First look: epoch ms or RFC 3339 [default: 14 days before `to`].
    #[schema(value_type = Option<String>)]
    pub from: Option<serde_json::Value>,
    /// Last look [default: now].
    #[schema(value_type = Option<String>)]
    pub to: Option<serde_json::Value>,
    /// Time between looks: `30m`, `1h`, `1d`, or milliseconds [default: 1h].
    #[schema(value_type = Option<String>)]
    pub step: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BacktestResponse {
    pub from: i64,
    pub to: i64,
    pub step_ms: i64,
    pub looks: Vec<BacktestLook>,
    /// The simulated exposure after the last look.
    pub final_exposure: f64,
    pub rollbacks: usize,
    pub throttles: usize,
    pub promotions: usize,
}

/// Most looks one backtest may take.
const MAX_LOOKS: i64 = 5000;

fn parse_instant(field: &str, v: &serde_json::Value) -> ApiResult<i64> {
    crate::api::client::parse_instant(v)
        .ok_or_else(|| ApiError::invalid(field, "must be epoch milliseconds or an RFC 3339 time"))
}

fn parse_step(v: &serde_json::Value) -> ApiResult<i64> {
    let bad = || ApiError::invalid("step", "must be like 30m, 1h, 1d, or milliseconds");
    let ms = match v {
        serde_json::Value::Number(n) => n.as_i64().ok_or_else(bad)?,
        serde_json::Value::String(s) => {
            let s = s.trim();
            let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let n: i64 = num.parse().map_err(|_| bad())?;
            match unit {
                "" | "ms" => n,
                "s" => n * 1000,
                "m" => n * 60_000,
                "h" => n * 3_600_000,
                "d" => n * 86_400_000,
                _ => return Err(bad()),
            }
        }
        _ => return Err(bad()),
    };
    if ms < 60_000 {
        return Err(ApiError::invalid("step", "must be at least one minute"));
    }
    Ok(ms)
}

/// Replay the decision rules over the stored events (only events up to each look),
/// optionally with another configuration, and return the timeline of decisions and
/// exposures. Nothing is applied.
#[utoipa::path(tag = "fuses", request_body = BacktestRequest,
    params(("project" = String, Path), ("name" = String, Path), ("env" = String, Path)),
    responses((status = 200, body = BacktestResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
#[post("/api/admin/projects/{project}/features/{name}/environments/{env}/fuse/backtest")]
async fn backtest_fuse(
    state: web::Data<AppState>,
    auth: AdminToken,
    path: FusePath,
    Json(body): Json<BacktestRequest>,
) -> ApiResult<HttpResponse> {
    load(&state, &auth.0, &path).await?;
    let (_, name, env) = path.into_inner();
    let to = body
        .to
        .as_ref()
        .map(|v| parse_instant("to", v))
        .transpose()?
        .unwrap_or_else(now_ms);
    let from = body
        .from
        .as_ref()
        .map(|v| parse_instant("from", v))
        .transpose()?
        .unwrap_or(to - 14 * 86_400_000);
    let step = body
        .step
        .as_ref()
        .map(parse_step)
        .transpose()?
        .unwrap_or(3_600_000);
    if from > to {
        return Err(ApiError::invalid("from", "must not be after `to`"));
    }
    if (to - from) / step > MAX_LOOKS {
        return Err(ApiError::invalid(
            "step",
            format!("at most {MAX_LOOKS} looks; use a larger step"),
        ));
    }
    let settings = match body.config {
        None => None,
        Some(config) => {
            let s: FuseSettings = serde_json::from_value(config)
                .map_err(|e| ApiError::invalid("config", e.to_string()))?;
            if let Some(p) = s.validate().into_iter().next() {
                return Err(ApiError::invalid(format!("config.{}", p.field), p.message));
            }
            Some(s)
        }
    };
    let looks = state
        .scheduler
        .backtest(&name, &env, settings, from, to, step)
        .await?;
    let count =
        |k: crate::domain::stats::DecisionKind| looks.iter().filter(|l| l.decision == k).count();
    use crate::domain::stats::DecisionKind as K;
    Ok(HttpResponse::Ok().json(BacktestResponse {
        from,
        to,
        step_ms: step,
        final_exposure: looks.last().map_or(0.0, |l| l.exposure_after),
        rollbacks: count(K::Rollback),
        throttles: count(K::Throttle),
        promotions: count(K::Promote),
        looks,
    }))
}
