//! The UI's pages and form handlers. Every change goes through the same store calls
//! and validation as the admin API and is audited as `user:<email>`.

use std::collections::HashMap;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::auth::{self, Session, LOGIN_CSRF_COOKIE, SESSION_COOKIE};
use super::charts::{ChartBuilder, Unit};
use super::{describe, parse_form, render, UiError};
use crate::api::error::ApiError;
use crate::app::AppState;
use crate::domain::admin::Feature;
use crate::domain::fuse::settings::FuseSettings;
use crate::domain::model::Strategy;
use crate::domain::stats::{Decision, RolloutState};
use crate::domain::tokens::{generate_secret, hash_secret, TokenKind, TokenScope};
use crate::domain::users::{check_password, normalize_email, Role};
use crate::scheduler::rollout_text;
use crate::store::{now_ms, AuditQuery, FeatureFields, FuseRecord};

type UiResult = Result<HttpResponse, UiError>;
type Form = HashMap<String, String>;
type Query = web::Query<HashMap<String, String>>;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(overview))
        .route("/login", web::get().to(login_page))
        .route("/login", web::post().to(login))
        .route("/setup", web::get().to(setup_page))
        .route("/setup", web::post().to(setup))
        .route("/logout", web::post().to(logout))
        .route("/flags/new", web::get().to(new_flag_page))
        .route("/flags", web::post().to(create_flag))
        .route(
            "/projects/{project}/features/{name}",
            web::get().to(flag_page),
        )
        .route(
            "/projects/{project}/features/{name}/environments/{env}/toggle",
            web::post().to(toggle),
        )
        .route(
            "/projects/{project}/features/{name}/environments/{env}/exposure",
            web::post().to(exposure),
        )
        .route(
            "/projects/{project}/features/{name}/environments/{env}/fuse",
            web::post().to(save_fuse),
        )
        .route(
            "/projects/{project}/features/{name}/environments/{env}/fuse/{action}",
            web::get().to(confirm_page),
        )
        .route(
            "/projects/{project}/features/{name}/environments/{env}/fuse/{action}",
            web::post().to(fuse_action),
        )
        .route("/audit", web::get().to(audit_page))
        .route("/events", web::get().to(events_page))
        .route(
            "/events/quarantine/{id}/{action}",
            web::post().to(quarantine_action),
        )
        .route("/tokens", web::get().to(tokens_page))
        .route("/tokens", web::post().to(create_token))
        .route("/tokens/{id}/delete", web::post().to(delete_token))
        .route("/users", web::get().to(users_page))
        .route("/users", web::post().to(create_user))
        .route("/users/{id}/role", web::post().to(set_role))
        .route("/users/{id}/delete", web::post().to(delete_user))
        .route("/account", web::get().to(account_page))
        .route("/account/token", web::post().to(account_token))
        .route("/account/password", web::post().to(account_password));
}

// ---------------------------------------------------------------------------- helpers

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// Encodes one path segment or query value.
fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn flag_url(project: &str, name: &str, env: &str) -> String {
    format!(
        "/ui/projects/{}/features/{}?env={}",
        enc(project),
        enc(name),
        enc(env)
    )
}

/// What every page's layout needs.
fn base(session: &Session, nav: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "me".into(),
        json!({ "email": session.user.email, "role": session.user.role.as_str() }),
    );
    m.insert("csrf".into(), json!(session.csrf));
    m.insert("nav".into(), json!(nav));
    m.insert("is_editor".into(), json!(session.user.role >= Role::Editor));
    m.insert("is_admin".into(), json!(session.user.role >= Role::Admin));
    m
}

/// Notices shown after a redirect, by key (never text from the URL).
fn notice(query: &HashMap<String, String>) -> Option<&'static str> {
    Some(match query.get("done")?.as_str() {
        "created" => "Flag created.",
        "toggled" => "Flag state changed.",
        "exposure" => "Exposure updated.",
        "fuse" => "Fuse settings saved.",
        "pause" => "Fuse paused: it makes no automatic decisions until resumed.",
        "resume" => "Fuse resumed.",
        "unlock" => "Fuse unlocked: the rollout starts again at the first step.",
        "replayed" => "The event was replayed and stored.",
        "duplicate" => "The event was replayed; it had already been stored.",
        "discarded" => "The quarantined record was discarded.",
        "token-deleted" => "Token deleted.",
        "user-created" => "User created.",
        "user-updated" => "Role changed.",
        "user-deleted" => "User deleted.",
        "password" => "Password changed.",
        _ => return None,
    })
}

async fn environments(state: &AppState) -> Result<Vec<String>, UiError> {
    let mut envs = state.store.list_environments().await?;
    envs.sort_by_key(|e| e.sort_order);
    Ok(envs.into_iter().map(|e| e.name).collect())
}

/// The environment asked for, else the first one.
fn pick_env(envs: &[String], asked: Option<&String>) -> String {
    asked
        .filter(|e| envs.contains(e))
        .cloned()
        .or_else(|| envs.first().cloned())
        .unwrap_or_default()
}

fn status_label(status: &str) -> &'static str {
    match status {
        "off" => "off",
        "on" => "on",
        "ramping" => "ramping",
        "throttled" => "throttled",
        "rolled_back" => "rolled back",
        "released" => "released",
        "paused" => "paused",
        "srm_hold" => "held for SRM",
        "held" => "held",
        _ => "unknown",
    }
}

/// States a PM should look at now.
fn needs_attention(status: &str) -> bool {
    matches!(status, "rolled_back" | "throttled" | "srm_hold" | "held")
}

/// The badge of a flag in an environment.
fn flag_status(enabled: bool, fuse: Option<&FuseRecord>) -> String {
    match fuse {
        Some(f) if f.locked => "rolled_back".into(),
        Some(f) if f.paused => "paused".into(),
        _ if !enabled => "off".into(),
        Some(f) => f.status.clone(),
        None => "on".into(),
    }
}

/// The share of users a feature reaches in an environment without a fuse: 100 with a
/// strategy for everyone (or none at all), else the largest gradual rollout.
fn plain_exposure(enabled: bool, strategies: &[Strategy]) -> f64 {
    if !enabled {
        return 0.0;
    }
    let live: Vec<&Strategy> = strategies
        .iter()
        .filter(|s| s.disabled != Some(true))
        .collect();
    if live.is_empty() {
        return 100.0;
    }
    live.iter()
        .map(|s| match describe::gradual_rollout(s) {
            Some(pct) => pct.trim().parse::<f64>().unwrap_or(0.0),
            None if s.name == "default" && s.constraints.is_empty() => 100.0,
            // Targeted strategies reach some users; the share is unknown.
            None => 0.0,
        })
        .fold(0.0, f64::max)
}

fn fuse_exposure(f: &FuseRecord) -> f64 {
    serde_json::from_value::<RolloutState>(f.state.clone())
        .map(|s| s.exposure_pct)
        .unwrap_or(0.0)
}

fn pp(v: f64) -> String {
    format!("{:+.1} pp", v * 100.0)
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "—".into())
}

/// "D1 −1.2 pp [−3.0, +0.6]" from a stored decision's first retention guardrail.
fn retention_summary(decision: Option<&Value>) -> Option<String> {
    let decision: Decision = serde_json::from_value(decision?.clone()).ok()?;
    let g = decision
        .guardrails
        .iter()
        .find(|g| g.name.starts_with("retention_d") && g.delta.is_some())?;
    let label = g.name.trim_start_matches("retention_").to_uppercase();
    let delta = g.delta?;
    Some(match &g.cs {
        Some(cs) => format!(
            "{label} {} [{:+.1}, {:+.1}]",
            pp(delta),
            cs.lower * 100.0,
            cs.upper * 100.0
        ),
        None => format!("{label} {}", pp(delta)),
    })
}

fn decision_words(decision: &Value) -> String {
    let kind = decision.get("kind").and_then(Value::as_str).unwrap_or("?");
    let rule = decision
        .get("rule")
        .and_then(Value::as_str)
        .unwrap_or("")
        .replace('_', " ");
    match decision.get("triggered_by").and_then(Value::as_str) {
        Some(metric) => format!("{kind}: {rule} ({metric})"),
        None => format!("{kind}: {rule}"),
    }
}

// ----------------------------------------------------------------------- login, setup

fn login_csrf_cookie(token: &str) -> actix_web::cookie::Cookie<'static> {
    actix_web::cookie::Cookie::build(LOGIN_CSRF_COOKIE, token.to_string())
        .path("/ui")
        .http_only(true)
        .same_site(actix_web::cookie::SameSite::Strict)
        .finish()
}

/// `next` only if it stays inside the UI (no open redirect).
fn safe_next(next: Option<&String>) -> String {
    next.filter(|n| n.starts_with("/ui/") && !n.starts_with("//") && !n.contains('\\'))
        .cloned()
        .unwrap_or_else(|| "/ui/".into())
}

fn login_form(
    req: &HttpRequest,
    template: &str,
    next: &str,
    email: &str,
    error: Option<String>,
    status: StatusCode,
) -> UiResult {
    let token = auth::random_hex();
    let ctx = json!({ "csrf": token, "next": next, "email": email, "error": error });
    let mut response = render(template, &ctx, status)?;
    response
        .add_cookie(&{
            let mut c = login_csrf_cookie(&token);
            c.set_secure(auth::is_https(req));
            c
        })
        .map_err(|e| UiError::Internal(anyhow::anyhow!("setting a cookie: {e}")))?;
    Ok(response)
}

async fn login_page(state: web::Data<AppState>, req: HttpRequest, query: Query) -> UiResult {
    if state.store.count_users().await? == 0 {
        return Ok(see_other("/ui/setup"));
    }
    let next = safe_next(query.get("next"));
    login_form(&req, "login.html", &next, "", None, StatusCode::OK)
}

fn login_csrf_ok(req: &HttpRequest, form: &Form) -> bool {
    match (req.cookie(LOGIN_CSRF_COOKIE), form.get("csrf")) {
        (Some(cookie), Some(field)) => auth::same_secret(cookie.value(), field),
        _ => false,
    }
}

fn logged_in(
    state: &AppState,
    req: &HttpRequest,
    user: &crate::domain::users::User,
    next: &str,
) -> UiResult {
    let cookie = state.ui.sessions.issue(user, auth::is_https(req))?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, next.to_string()))
        .cookie(cookie)
        .cookie(auth::removal(LOGIN_CSRF_COOKIE))
        .finish())
}

async fn login(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> UiResult {
    let form = parse_form(&body);
    let next = safe_next(form.get("next"));
    let email_raw = form.get("email").cloned().unwrap_or_default();
    if !login_csrf_ok(&req, &form) {
        return login_form(
            &req,
            "login.html",
            &next,
            &email_raw,
            Some("The form expired; please try again.".into()),
            StatusCode::FORBIDDEN,
        );
    }
    let email = normalize_email(&email_raw).unwrap_or_default();
    let ip = req
        .connection_info()
        .realip_remote_addr()
        .unwrap_or("unknown")
        .to_string();
    let keys = vec![format!("ip:{ip}"), format!("email:{email}")];
    if let Some(wait) = state.ui.limiter.blocked(&keys) {
        let mut response = login_form(
            &req,
            "login.html",
            &next,
            &email_raw,
            Some(format!(
                "Too many failed logins; try again in {} minutes.",
                wait.div_ceil(60)
            )),
            StatusCode::TOO_MANY_REQUESTS,
        )?;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(wait));
        return Ok(response);
    }
    let password = form.get("password").cloned().unwrap_or_default();
    let found = state.store.find_user(&email).await?;
    // Hash even for unknown emails so timing does not reveal who has an account.
    let ok = match &found {
        Some(record) => auth::verify_password(&password, &record.password_hash),
        None => {
            auth::verify_password(&password, "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0000000000000000000000000000000000000000000");
            false
        }
    };
    match found.filter(|_| ok) {
        Some(record) => {
            state.ui.limiter.succeeded(&keys);
            tracing::info!(user = %record.user.email, "web UI login");
            logged_in(&state, &req, &record.user, &next)
        }
        None => {
            state.ui.limiter.failed(&keys);
            login_form(
                &req,
                "login.html",
                &next,
                &email_raw,
                Some("Wrong email or password.".into()),
                StatusCode::UNAUTHORIZED,
            )
        }
    }
}

async fn setup_page(state: web::Data<AppState>, req: HttpRequest) -> UiResult {
    if state.store.count_users().await? > 0 {
        return Ok(see_other("/ui/login"));
    }
    login_form(&req, "setup.html", "/ui/", "", None, StatusCode::OK)
}

async fn setup(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> UiResult {
    let form = parse_form(&body);
    let email_raw = form.get("email").cloned().unwrap_or_default();
    let fail = |message: String, status| {
        login_form(
            &req,
            "setup.html",
            "/ui/",
            &email_raw,
            Some(message),
            status,
        )
    };
    if !login_csrf_ok(&req, &form) {
        return fail(
            "The form expired; please try again.".into(),
            StatusCode::FORBIDDEN,
        );
    }
    let email = match normalize_email(&email_raw) {
        Ok(e) => e,
        Err(e) => return fail(format!("Email {e}."), StatusCode::BAD_REQUEST),
    };
    let password = form.get("password").cloned().unwrap_or_default();
    if let Err(e) = check_password(&password) {
        return fail(format!("Password {e}."), StatusCode::BAD_REQUEST);
    }
    if form.get("confirm") != Some(&password) {
        return fail("The passwords differ.".into(), StatusCode::BAD_REQUEST);
    }
    let hash = auth::hash_password(&password).map_err(UiError::Internal)?;
    let user = match state
        .store
        .create_user(
            &email,
            &hash,
            Role::Admin,
            true,
            &crate::store::Actor(format!("user:{email}")),
        )
        .await
    {
        Ok(user) => user,
        Err(crate::store::StoreError::Conflict(_)) => return Ok(see_other("/ui/login")),
        Err(e) => return Err(e.into()),
    };
    logged_in(&state, &req, &user, "/ui/")
}

async fn logout(session: Session, body: web::Bytes) -> UiResult {
    session.check_csrf(&parse_form(&body))?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/ui/login"))
        .cookie(auth::removal(SESSION_COOKIE))
        .finish())
}

// --------------------------------------------------------------------------- overview

async fn overview(state: web::Data<AppState>, session: Session, query: Query) -> UiResult {
    let envs = environments(&state).await?;
    let env = pick_env(&envs, query.get("env"));
    let search = query
        .get("q")
        .map(|q| q.trim().to_lowercase())
        .unwrap_or_default();
    let wanted = query.get("status").cloned().unwrap_or_default();
    let mut rows = Vec::new();
    for project in state.store.list_projects().await? {
        for meta in state.store.list_features(&project.id).await? {
            if !search.is_empty()
                && !meta.name.to_lowercase().contains(&search)
                && !meta
                    .description
                    .as_deref()
                    .unwrap_or("")
                    .to_lowercase()
                    .contains(&search)
            {
                continue;
            }
            let feature = state.store.get_feature(&project.id, &meta.name).await?;
            let fe = feature.environments.iter().find(|e| e.name == env);
            let enabled = fe.is_some_and(|e| e.enabled);
            let fuse = state
                .store
                .get_fuse(&meta.name, &env)
                .await?
                .filter(|f| f.project == project.id);
            let status = flag_status(enabled, fuse.as_ref());
            let filtered = match wanted.as_str() {
                "" => false,
                "attention" => !needs_attention(&status),
                s => s != status,
            };
            if filtered {
                continue;
            }
            let exposure = match &fuse {
                Some(f) if enabled || f.locked => fuse_exposure(f),
                _ => plain_exposure(enabled, fe.map(|e| e.strategies.as_slice()).unwrap_or(&[])),
            };
            rows.push(json!({
                "name": meta.name,
                "project": project.id,
                "description": meta.description,
                "url": flag_url(&project.id, &meta.name, &env),
                "status": status,
                "status_label": status_label(&status),
                "attention": needs_attention(&status),
                "exposure": rollout_text(if enabled || fuse.as_ref().is_some_and(|f| f.locked) { exposure } else { 0.0 }),
                "fused": fuse.is_some(),
                "retention": fuse.as_ref().and_then(|f| retention_summary(f.last_decision.as_ref())),
                "decision": fuse.as_ref().and_then(|f| f.last_decision.as_ref()).map(decision_words),
                "decided_at": fuse.as_ref().and_then(|f| f.last_evaluated_at),
            }));
        }
    }
    // Attention first, then by name.
    rows.sort_by(|a, b| {
        let att = |v: &Value| !v["attention"].as_bool().unwrap_or(false);
        (att(a), a["name"].as_str()).cmp(&(att(b), b["name"].as_str()))
    });
    let attention = rows.iter().filter(|r| r["attention"] == true).count();
    let mut ctx = base(&session, "overview");
    ctx.insert("title".into(), json!("Overview"));
    ctx.insert("envs".into(), json!(envs));
    ctx.insert("env".into(), json!(env));
    ctx.insert(
        "q".into(),
        json!(query.get("q").cloned().unwrap_or_default()),
    );
    ctx.insert("status".into(), json!(wanted));
    ctx.insert(
        "statuses".into(),
        json!([
            "off",
            "on",
            "ramping",
            "throttled",
            "rolled_back",
            "released",
            "paused",
            "srm_hold",
            "held"
        ]
        .iter()
        .map(|s| json!({ "value": s, "label": status_label(s) }))
        .collect::<Vec<_>>()),
    );
    ctx.insert("rows".into(), json!(rows));
    ctx.insert("attention".into(), json!(attention));
    ctx.insert("notice".into(), json!(notice(&query)));
    render("overview.html", &ctx, StatusCode::OK)
}

// --------------------------------------------------------------------------- new flag

async fn new_flag_page(state: web::Data<AppState>, session: Session) -> UiResult {
    session.require(Role::Editor)?;
    new_flag_form(&state, &session, &Form::new(), None, StatusCode::OK).await
}

async fn new_flag_form(
    state: &AppState,
    session: &Session,
    form: &Form,
    error: Option<(String, String)>,
    status: StatusCode,
) -> UiResult {
    let projects: Vec<String> = state
        .store
        .list_projects()
        .await?
        .into_iter()
        .map(|p| p.id)
        .collect();
    let mut ctx = base(session, "overview");
    ctx.insert("title".into(), json!("New flag"));
    ctx.insert("projects".into(), json!(projects));
    ctx.insert(
        "types".into(),
        json!(crate::api::admin::features::FEATURE_TYPES),
    );
    ctx.insert("form".into(), json!(form));
    ctx.insert(
        "error".into(),
        json!(error.map(|(field, message)| json!({ "field": field, "message": message }))),
    );
    render("new_flag.html", &ctx, status)
}

async fn create_flag(state: web::Data<AppState>, session: Session, body: web::Bytes) -> UiResult {
    session.require(Role::Editor)?;
    let form = parse_form(&body);
    session.check_csrf(&form)?;
    let project = form.get("project").cloned().unwrap_or_default();
    let name = form
        .get("name")
        .map(|n| n.trim().to_string())
        .unwrap_or_default();
    let feature_type = form
        .get("type")
        .cloned()
        .unwrap_or_else(|| "release".into());
    let description = form
        .get("description")
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty());
    let checked = crate::api::admin::check_name("name", &name)
        .and_then(|_| crate::api::admin::features::check_type(&feature_type));
    let result = match checked {
        Ok(()) => state
            .store
            .create_feature(
                &project,
                &FeatureFields {
                    name: name.clone(),
                    description,
                    feature_type,
                    impression_data: false,
                    stale: false,
                },
                &session.actor(),
            )
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => {
            let envs = environments(&state).await?;
            let env = pick_env(&envs, None);
            Ok(see_other(&format!(
                "{}&done=created",
                flag_url(&project, &name, &env)
            )))
        }
        Err(e) if e.code.status().is_client_error() => {
            let field = e
                .details
                .first()
                .map(|d| d.path.clone())
                .unwrap_or_else(|| "name".into());
            let message = e
                .details
                .first()
                .map(|d| d.message.clone())
                .unwrap_or_else(|| e.message.clone());
            new_flag_form(
                &state,
                &session,
                &form,
                Some((field, message)),
                e.code.status(),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

// -------------------------------------------------------------------------- flag page

/// Thresholds form fields: every fuse setting except the strategy id, in API order.
fn settings_fields(
    settings: &Value,
    submitted: Option<&Form>,
    errors: &HashMap<String, String>,
) -> Vec<Value> {
    let Value::Object(map) = settings else {
        return Vec::new();
    };
    map.iter()
        .filter(|(k, _)| k.as_str() != "strategy_id")
        .map(|(k, v)| {
            let text = match submitted.and_then(|f| f.get(k)) {
                Some(s) => s.clone(),
                None => match v {
                    Value::Array(items) => items
                        .iter()
                        .map(|i| match i {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            };
            let kind = match (k.as_str(), v) {
                ("end_of_window_policy", _) => "select",
                (_, Value::Array(_)) => "list",
                (_, Value::Number(_)) | (_, Value::Null) => "number",
                _ => "text",
            };
            json!({
                "name": k,
                "label": k.replace('_', " "),
                "value": text,
                "kind": kind,
                "error": errors.get(k),
            })
        })
        .collect()
}

/// List settings whose items are numbers.
const NUMERIC_LISTS: [&str; 2] = ["ramp_steps_pct", "retention_days"];

/// Turns the thresholds form into the API's JSON; a value that is not even a number
/// is reported against its field without calling the API.
fn settings_json(form: &Form) -> Result<Value, (String, String)> {
    let defaults = serde_json::to_value(FuseSettings::default()).unwrap_or_default();
    let Value::Object(defaults) = defaults else {
        return Ok(json!({}));
    };
    let number = |field: &str, text: &str| -> Result<Value, (String, String)> {
        let t = text.trim();
        if let Ok(i) = t.parse::<i64>() {
            return Ok(json!(i));
        }
        t.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| json!(f))
            .ok_or_else(|| (field.to_string(), format!("`{t}` is not a number")))
    };
    let mut out = Map::new();
    for (field, default) in &defaults {
        let Some(text) = form.get(field) else {
            continue;
        };
        let value = match default {
            Value::Array(_) => {
                let items = text.split(',').map(str::trim).filter(|s| !s.is_empty());
                if NUMERIC_LISTS.contains(&field.as_str()) {
                    Value::Array(items.map(|i| number(field, i)).collect::<Result<_, _>>()?)
                } else {
                    Value::Array(items.map(|i| json!(i)).collect())
                }
            }
            Value::Null if text.trim().is_empty() => Value::Null,
            Value::Number(_) | Value::Null => number(field, text)?,
            Value::Bool(_) => json!(text == "true" || text == "on"),
            _ => json!(text.trim()),
        };
        out.insert(field.clone(), value);
    }
    Ok(Value::Object(out))
}

/// Ramp steps with the current one marked.
fn ramp_plan(steps: &[f64], exposure: f64) -> Vec<Value> {
    let current = steps
        .iter()
        .rposition(|s| *s <= exposure + 1e-9)
        .unwrap_or(0);
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "pct": rollout_text(*s),
                "current": i == current && exposure > 0.0,
                "done": i < current,
            })
        })
        .collect()
}

/// The retention, delta and exposure charts from the stored analyses.
fn fuse_charts(
    record: &FuseRecord,
    settings: &FuseSettings,
    snapshots: &[crate::store::FuseSnapshot],
) -> Vec<super::charts::Chart> {
    let mut charts = Vec::new();
    for n in &settings.stats.retention_days {
        let name = format!("retention_d{n}");
        let mut treatment = Vec::new();
        let mut control = Vec::new();
        let (mut t_lo, mut t_hi, mut c_lo, mut c_hi) = (vec![], vec![], vec![], vec![]);
        let mut delta = Vec::new();
        let (mut d_lo, mut d_hi) = (vec![], vec![]);
        for snap in snapshots {
            let t = snap.created_at as f64;
            let metric = snap.analysis["metrics"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["name"] == name.as_str()));
            if let Some(m) = metric {
                for (arm, line, lo, hi) in [
                    ("treatment", &mut treatment, &mut t_lo, &mut t_hi),
                    ("control", &mut control, &mut c_lo, &mut c_hi),
                ] {
                    let rate = m[arm]["rate"].as_f64();
                    let n = m[arm]["eligible"].as_f64().unwrap_or(0.0);
                    if let Some(p) = rate {
                        line.push((t, p));
                        // 95% normal interval of the arm's rate.
                        let half = 1.96 * (p * (1.0 - p) / n.max(1.0)).sqrt();
                        lo.push((t, (p - half).max(0.0)));
                        hi.push((t, (p + half).min(1.0)));
                    }
                }
            }
            let guardrail = snap.analysis["decision"]["guardrails"]
                .as_array()
                .and_then(|g| g.iter().find(|g| g["name"] == name.as_str()));
            if let Some(g) = guardrail {
                if let Some(d) = g["delta"].as_f64() {
                    delta.push((t, d));
                    if let (Some(lo), Some(hi)) =
                        (g["cs"]["lower"].as_f64(), g["cs"]["upper"].as_f64())
                    {
                        d_lo.push((t, lo));
                        d_hi.push((t, hi));
                    }
                }
            }
        }
        let mut retention = ChartBuilder::new(
            format!("Day-{n} retention: treatment vs control"),
            Unit::Fraction,
        );
        retention.band("band-treatment", "treatment 95% interval", t_lo, t_hi);
        retention.band("band-control", "control 95% interval", c_lo, c_hi);
        retention.line("line-treatment", "treatment", treatment);
        retention.line("line-control", "control", control);
        charts.push(retention.build());
        let mut diff = ChartBuilder::new(
            format!("Day-{n} retention delta with its always-valid bounds"),
            Unit::Points,
        );
        diff.band("band-delta", "always-valid interval", d_lo, d_hi);
        diff.line("line-delta", "delta (treatment − control)", delta);
        diff.rule(0.0, "rule-zero", "no difference");
        diff.rule(
            settings.stats.min_retention_delta,
            "rule-tolerance",
            "tolerance",
        );
        charts.push(diff.build());
    }
    let history: Vec<(i64, f64)> =
        serde_json::from_value(record.rollout_history.clone()).unwrap_or_default();
    let mut exposure =
        ChartBuilder::new("Exposure over time, with decisions", Unit::Percent).y_range(0.0, 100.0);
    exposure.steps(
        "line-exposure",
        "exposure",
        history.iter().map(|(t, p)| (*t as f64, *p)).collect(),
    );
    for snap in snapshots {
        if matches!(
            snap.kind.as_str(),
            "rollback" | "throttle" | "promote" | "hold"
        ) {
            exposure.marker(
                snap.created_at as f64,
                snap.exposure_after,
                &format!("marker-{}", snap.kind),
                &format!("{}: {}", snap.kind, snap.rule.replace('_', " ")),
            );
        }
    }
    charts.push(exposure.build());
    charts
}

struct FlagPage<'a> {
    project: &'a str,
    name: &'a str,
    env: Option<&'a String>,
    notice: Option<&'static str>,
    submitted: Option<&'a Form>,
    errors: HashMap<String, String>,
    status: StatusCode,
}

async fn flag_page(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<(String, String)>,
    query: Query,
) -> UiResult {
    let (project, name) = path.into_inner();
    render_flag(
        &state,
        &session,
        FlagPage {
            project: &project,
            name: &name,
            env: query.get("env"),
            notice: notice(&query),
            submitted: None,
            errors: HashMap::new(),
            status: StatusCode::OK,
        },
    )
    .await
}

async fn render_flag(state: &AppState, session: &Session, page: FlagPage<'_>) -> UiResult {
    let feature: Feature = state.store.get_feature(page.project, page.name).await?;
    let envs = environments(state).await?;
    let env = pick_env(&envs, page.env);
    let fe = feature.environments.iter().find(|e| e.name == env);
    let enabled = fe.is_some_and(|e| e.enabled);
    let env_rows: Vec<Value> = feature
        .environments
        .iter()
        .map(|e| {
            json!({
                "name": e.name,
                "enabled": e.enabled,
                "selected": e.name == env,
                "url": flag_url(page.project, page.name, &e.name),
                "strategies": e.strategies.iter().map(describe::strategy).collect::<Vec<_>>(),
            })
        })
        .collect();
    let fuse = state
        .store
        .get_fuse(page.name, &env)
        .await?
        .filter(|f| f.project == page.project);
    let status = flag_status(enabled, fuse.as_ref());
    let mut ctx = base(session, "overview");
    ctx.insert("title".into(), json!(feature.meta.name));
    ctx.insert("feature".into(), json!(feature.meta));
    ctx.insert("env".into(), json!(env));
    ctx.insert("enabled".into(), json!(enabled));
    ctx.insert("env_rows".into(), json!(env_rows));
    ctx.insert("status".into(), json!(status));
    ctx.insert("status_label".into(), json!(status_label(&status)));
    ctx.insert("notice".into(), json!(page.notice));
    let base_url = format!(
        "/ui/projects/{}/features/{}/environments/{}",
        enc(page.project),
        enc(page.name),
        enc(&env)
    );
    ctx.insert("base_url".into(), json!(base_url));
    let settings_value = match &fuse {
        Some(f) => f.config.clone(),
        None => serde_json::to_value(FuseSettings::default()).unwrap_or_default(),
    };
    ctx.insert(
        "fields".into(),
        json!(settings_fields(
            &settings_value,
            page.submitted,
            &page.errors
        )),
    );
    ctx.insert("form_error".into(), json!(page.errors.get("$")));
    ctx.insert("exposure_error".into(), json!(page.errors.get("exposure")));
    match &fuse {
        Some(record) => {
            let settings: FuseSettings =
                serde_json::from_value(record.config.clone()).unwrap_or_default();
            let exposure = fuse_exposure(record);
            ctx.insert(
                "fuse".into(),
                json!({
                    "status": record.status,
                    "locked": record.locked,
                    "paused": record.paused,
                    "exposure": rollout_text(exposure),
                    "last_decision": record.last_decision.as_ref().map(decision_words),
                    "last_evaluated_at": record.last_evaluated_at,
                    "retention": retention_summary(record.last_decision.as_ref()),
                }),
            );
            ctx.insert("exposure".into(), json!(rollout_text(exposure)));
            ctx.insert(
                "ramp".into(),
                json!(ramp_plan(&settings.stats.ramp_steps_pct, exposure)),
            );
            let snapshots = state.store.fuse_history(page.name, &env, 500).await?;
            ctx.insert(
                "charts".into(),
                json!(fuse_charts(record, &settings, &snapshots)),
            );
            // The current analysis (a dry run: nothing is applied).
            match state
                .scheduler
                .evaluate(page.name, &env, now_ms(), false)
                .await
            {
                Ok(evaluation) => {
                    let rows: Vec<Value> = evaluation
                        .metrics
                        .iter()
                        .map(|m| {
                            let g = evaluation.decision.guardrails.iter().find(|g| g.name == m.name);
                            json!({
                                "name": m.name,
                                "treatment": format!("{} of {}", pct(m.treatment.rate), m.treatment.eligible),
                                "control": format!("{} of {}", pct(m.control.rate), m.control.eligible),
                                "pending": m.treatment.pending + m.control.pending,
                                "delta": g.and_then(|g| g.delta).map(pp),
                                "interval": g.and_then(|g| g.cs.as_ref()).map(|cs| format!("[{:+.1}, {:+.1}] pp", cs.lower * 100.0, cs.upper * 100.0)),
                                "p": g.and_then(|g| g.p_value).map(|p| format!("{p:.3}")),
                                "harm": g.map(|g| format!("{:?}", g.harm).to_lowercase()),
                            })
                        })
                        .collect();
                    ctx.insert(
                        "analysis".into(),
                        json!({
                            "rows": rows,
                            "treatment_users": evaluation.treatment_users,
                            "control_users": evaluation.control_users,
                            "decision": decision_words(&serde_json::to_value(&evaluation.decision).unwrap_or_default()),
                            "srm_p": evaluation.decision.srm.p_value.map_or_else(|| "—".to_string(), |p| format!("{p:.4}")),
                        }),
                    );
                }
                Err(e) => {
                    ctx.insert("analysis_error".into(), json!(e.to_string()));
                }
            }
            let paused_by = if record.paused {
                state
                    .store
                    .list_audit(&AuditQuery {
                        feature: Some(page.name.to_string()),
                        kind: Some("fuse-pause".into()),
                        limit: 1,
                        ..AuditQuery::default()
                    })
                    .await?
                    .first()
                    .map(|a| a.created_by.clone())
            } else {
                None
            };
            ctx.insert("paused_by".into(), json!(paused_by));
        }
        None => {
            let exposure =
                plain_exposure(enabled, fe.map(|e| e.strategies.as_slice()).unwrap_or(&[]));
            ctx.insert("exposure".into(), json!(rollout_text(exposure)));
        }
    }
    let audit = state
        .store
        .list_audit(&AuditQuery {
            feature: Some(page.name.to_string()),
            limit: 50,
            ..AuditQuery::default()
        })
        .await?;
    ctx.insert("audit".into(), json!(audit_rows(&audit)));
    render("flag.html", &ctx, page.status)
}

fn audit_rows(entries: &[crate::domain::admin::AuditEvent]) -> Vec<Value> {
    entries
        .iter()
        .map(|a| {
            let data = a.data.as_ref().or(a.pre_data.as_ref());
            let why = data
                .and_then(|d| {
                    let rule = d.get("rule").and_then(Value::as_str)?;
                    Some(match d.get("triggeredBy").and_then(Value::as_str) {
                        Some(m) => format!("rule {} on {m}", rule.replace('_', " ")),
                        None => format!("rule {}", rule.replace('_', " ")),
                    })
                })
                .or_else(|| {
                    data.map(|d| {
                        let mut s = d.to_string();
                        if s.len() > 160 {
                            let cut = (0..=160).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
                            s.truncate(cut);
                            s.push('…');
                        }
                        s
                    })
                });
            json!({
                "id": a.id,
                "at": a.created_at,
                "by": a.created_by,
                "kind": a.kind,
                "feature": a.feature,
                "project": a.project,
                "environment": a.environment,
                "url": match (&a.project, &a.feature) {
                    (Some(p), Some(f)) => Some(flag_url(p, f, a.environment.as_deref().unwrap_or(""))),
                    _ => None,
                },
                "why": why,
            })
        })
        .collect()
}

type EnvPath = web::Path<(String, String, String)>;

async fn toggle(
    state: web::Data<AppState>,
    session: Session,
    path: EnvPath,
    body: web::Bytes,
) -> UiResult {
    session.require(Role::Editor)?;
    let form = parse_form(&body);
    session.check_csrf(&form)?;
    let (project, name, env) = path.into_inner();
    let on = form.get("enabled").map(String::as_str) == Some("true");
    state
        .store
        .set_feature_enabled(&project, &name, &env, on, &session.actor())
        .await?;
    Ok(see_other(&format!(
        "{}&done=toggled",
        flag_url(&project, &name, &env)
    )))
}

async fn exposure(
    state: web::Data<AppState>,
    session: Session,
    path: EnvPath,
    body: web::Bytes,
) -> UiResult {
    session.require(Role::Editor)?;
    let form = parse_form(&body);
    session.check_csrf(&form)?;
    let (project, name, env) = path.into_inner();
    let raw = form
        .get("exposure")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let pct = raw
        .parse::<f64>()
        .map_err(|_| ApiError::invalid("exposure", "must be a number from 0 to 100"))
        .and_then(crate::api::fuses::check_exposure);
    let pct = match pct {
        Ok(p) => p,
        Err(e) => {
            return flag_with_errors(
                &state,
                &session,
                &project,
                &name,
                &env,
                None,
                "exposure",
                &e.message,
                e.code.status(),
            )
            .await
        }
    };
    let actor = session.actor();
    let fuse = state
        .store
        .get_fuse(&name, &env)
        .await?
        .filter(|f| f.project == project);
    let result = match fuse {
        Some(_) => crate::api::fuses::set_exposure(&state, &project, &name, &env, pct, &actor)
            .await
            .map(|_| ()),
        None => set_plain_rollout(&state, &project, &name, &env, pct, &actor).await,
    };
    match result {
        Ok(()) => Ok(see_other(&format!(
            "{}&done=exposure",
            flag_url(&project, &name, &env)
        ))),
        Err(e) if e.code.status().is_client_error() && e.code.status() != StatusCode::NOT_FOUND => {
            flag_with_errors(
                &state,
                &session,
                &project,
                &name,
                &env,
                None,
                "exposure",
                &e.message,
                e.code.status(),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// Without a fuse: sets the first gradual rollout's percentage (adding one if there
/// is none), as editing the strategy in the API would.
async fn set_plain_rollout(
    state: &AppState,
    project: &str,
    name: &str,
    env: &str,
    pct: f64,
    actor: &crate::store::Actor,
) -> Result<(), ApiError> {
    let feature = state.store.get_feature(project, name).await?;
    let fe = feature
        .environments
        .iter()
        .find(|e| e.name == env)
        .ok_or_else(|| ApiError::not_found(format!("environment `{env}` not found")))?;
    match fe.strategies.iter().find(|s| s.name == "flexibleRollout") {
        Some(existing) => {
            let mut s = existing.clone();
            s.parameters.insert("rollout".into(), rollout_text(pct));
            state
                .store
                .update_strategy(project, name, env, &s, actor)
                .await?;
        }
        None => {
            let s = crate::api::fuses::rollout_strategy(name, pct, None);
            state
                .store
                .add_strategy(project, name, env, &s, actor)
                .await?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn flag_with_errors(
    state: &AppState,
    session: &Session,
    project: &str,
    name: &str,
    env: &str,
    submitted: Option<&Form>,
    field: &str,
    message: &str,
    status: StatusCode,
) -> UiResult {
    let env = env.to_string();
    render_flag(
        state,
        session,
        FlagPage {
            project,
            name,
            env: Some(&env),
            notice: None,
            submitted,
            errors: [(field.to_string(), message.to_string())]
                .into_iter()
                .collect(),
            status,
        },
    )
    .await
}

async fn save_fuse(
    state: web::Data<AppState>,
    session: Session,
    path: EnvPath,
    body: web::Bytes,
) -> UiResult {
    session.require(Role::Editor)?;
    let form = parse_form(&body);
    session.check_csrf(&form)?;
    let (project, name, env) = path.into_inner();
    let json = match settings_json(&form) {
        Ok(j) => j,
        Err((field, message)) => {
            return flag_with_errors(
                &state,
                &session,
                &project,
                &name,
                &env,
                Some(&form),
                &field,
                &message,
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    };
    match crate::api::fuses::configure_fuse(&state, &project, &name, &env, json, &session.actor())
        .await
    {
        Ok(_) => Ok(see_other(&format!(
            "{}&done=fuse",
            flag_url(&project, &name, &env)
        ))),
        Err(e) if e.code.status().is_client_error() && e.code.status() != StatusCode::NOT_FOUND => {
            let env_s = env.clone();
            let errors: HashMap<String, String> = if e.details.is_empty() {
                [("$".to_string(), e.message.clone())].into_iter().collect()
            } else {
                e.details
                    .iter()
                    .map(|d| (d.path.clone(), d.message.clone()))
                    .collect()
            };
            render_flag(
                &state,
                &session,
                FlagPage {
                    project: &project,
                    name: &name,
                    env: Some(&env_s),
                    notice: None,
                    submitted: Some(&form),
                    errors,
                    status: e.code.status(),
                },
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

fn action_words(action: &str) -> Option<(&'static str, &'static str)> {
    Some(match action {
        "pause" => ("Pause", "The fuse stops making automatic decisions; exposure stays where it is until someone resumes it."),
        "resume" => ("Resume", "The fuse decides again at its next pass: it may promote, throttle or roll back."),
        "unlock" => ("Unlock", "The rollout starts again at the first ramp step. You take responsibility for re-exposing users after a rollback."),
        _ => return None,
    })
}

async fn confirm_page(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<(String, String, String, String)>,
) -> UiResult {
    session.require(Role::Editor)?;
    let (project, name, env, action) = path.into_inner();
    let (verb, consequence) = action_words(&action)
        .ok_or_else(|| ApiError::not_found(format!("no action `{action}`")))?;
    crate::api::fuses::find_fuse(&state, &project, &name, &env).await?;
    let mut ctx = base(&session, "overview");
    ctx.insert("title".into(), json!(format!("{verb} the fuse of {name}?")));
    ctx.insert("verb".into(), json!(verb));
    ctx.insert("consequence".into(), json!(consequence));
    ctx.insert("name".into(), json!(name));
    ctx.insert("env".into(), json!(env));
    ctx.insert(
        "action_url".into(),
        json!(format!(
            "/ui/projects/{}/features/{}/environments/{}/fuse/{}",
            enc(&project),
            enc(&name),
            enc(&env),
            enc(&action)
        )),
    );
    ctx.insert("back_url".into(), json!(flag_url(&project, &name, &env)));
    render("confirm.html", &ctx, StatusCode::OK)
}

async fn fuse_action(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<(String, String, String, String)>,
    body: web::Bytes,
) -> UiResult {
    session.require(Role::Editor)?;
    session.check_csrf(&parse_form(&body))?;
    let (project, name, env, action) = path.into_inner();
    if action_words(&action).is_none() {
        return Err(ApiError::not_found(format!("no action `{action}`")).into());
    }
    match crate::api::fuses::manual_action(&state, &project, &name, &env, &action, &session.actor())
        .await
    {
        Ok(_) => Ok(see_other(&format!(
            "{}&done={action}",
            flag_url(&project, &name, &env)
        ))),
        Err(e) if e.code == crate::api::error::Code::Conflict => {
            flag_with_errors(
                &state,
                &session,
                &project,
                &name,
                &env,
                None,
                "$",
                &e.message,
                StatusCode::CONFLICT,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

// ------------------------------------------------------------------------------ audit

/// `YYYY-MM-DDTHH:MM` (a datetime-local input, read as UTC) or RFC 3339, to ms.
fn parse_local_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
        .map(|t| t.and_utc().timestamp_millis())
        .ok()
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.timestamp_millis())
        })
}

async fn audit_page(state: web::Data<AppState>, session: Session, query: Query) -> UiResult {
    let get = |k: &str| {
        query
            .get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let mut errors = Vec::new();
    let mut time = |k: &str| match get(k) {
        Some(v) => match parse_local_time(&v) {
            Some(ms) => Some(ms),
            None => {
                errors.push(format!("`{k}` must be a date and time"));
                None
            }
        },
        None => None,
    };
    let since = time("since");
    let until = time("until");
    let entries = state
        .store
        .list_audit(&AuditQuery {
            feature: get("flag"),
            project: None,
            since,
            until,
            actor: get("actor"),
            kind: get("kind"),
            limit: 200,
        })
        .await?;
    let mut ctx = base(&session, "audit");
    ctx.insert("title".into(), json!("Audit log"));
    ctx.insert("rows".into(), json!(audit_rows(&entries)));
    ctx.insert(
        "filter".into(),
        json!({
            "flag": get("flag"), "actor": get("actor"), "kind": get("kind"),
            "since": get("since"), "until": get("until"),
        }),
    );
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    ctx.insert("errors".into(), json!(errors));
    ctx.insert(
        "kinds".into(),
        json!([
            "feature-created",
            "feature-updated",
            "feature-environment-enabled",
            "feature-environment-disabled",
            "feature-strategy-added",
            "feature-strategy-updated",
            "fuse-armed",
            "fuse-configured",
            "fuse-promote",
            "fuse-throttle",
            "fuse-rollback",
            "fuse-hold",
            "fuse-pause",
            "fuse-resume",
            "fuse-unlock",
            "fuse-exposure-set",
            "api-token-created",
            "api-token-deleted",
            "user-created",
            "user-updated",
            "user-deleted"
        ]),
    );
    render("audit.html", &ctx, status)
}

// ----------------------------------------------------------------------------- events

async fn events_page(state: web::Data<AppState>, session: Session, query: Query) -> UiResult {
    let since = now_ms() - 48 * 3_600_000;
    let hours = state.store.ingest_hourly(since).await?;
    let reason = query.get("reason").filter(|r| !r.is_empty()).cloned();
    let quarantine = state.store.list_quarantine(reason.as_deref(), 100).await?;
    let mut chart = ChartBuilder::new("Events accepted per hour (last 48 hours)", Unit::Count);
    let mut per_hour: std::collections::BTreeMap<i64, (i64, i64, i64)> = Default::default();
    for h in &hours {
        let e = per_hour.entry(h.hour).or_default();
        e.0 += h.accepted;
        e.1 += h.duplicates;
        e.2 += h.quarantined;
    }
    chart.line(
        "line-treatment",
        "accepted",
        per_hour
            .iter()
            .map(|(t, c)| (*t as f64, c.0 as f64))
            .collect(),
    );
    chart.line(
        "line-control",
        "quarantined",
        per_hour
            .iter()
            .map(|(t, c)| (*t as f64, c.2 as f64))
            .collect(),
    );
    let chart = chart.build();
    let rows: Vec<Value> = hours
        .iter()
        .rev()
        .map(|h| json!({ "hour": h.hour, "environment": if h.environment.is_empty() { "—" } else { h.environment.as_str() }, "accepted": h.accepted, "duplicates": h.duplicates, "quarantined": h.quarantined }))
        .collect();
    let items: Vec<Value> = quarantine
        .iter()
        .map(|q| {
            let mut raw = q.raw.clone();
            if raw.len() > 300 {
                let cut = (0..=300)
                    .rev()
                    .find(|i| raw.is_char_boundary(*i))
                    .unwrap_or(0);
                raw.truncate(cut);
                raw.push('…');
            }
            json!({
                "id": q.id, "at": q.received_at, "environment": q.environment,
                "reason": q.reason, "message": q.message, "raw": raw,
            })
        })
        .collect();
    let mut ctx = base(&session, "events");
    ctx.insert("title".into(), json!("Events"));
    ctx.insert("chart".into(), json!(chart));
    ctx.insert("hours".into(), json!(rows));
    ctx.insert("items".into(), json!(items));
    ctx.insert("reason".into(), json!(reason));
    ctx.insert(
        "reasons".into(),
        json!([
            "invalid_json",
            "missing_field",
            "invalid_field",
            "unknown_feature",
            "too_old",
            "in_future",
            "too_large",
            "pii"
        ]),
    );
    ctx.insert("notice".into(), json!(notice(&query)));
    render("events.html", &ctx, StatusCode::OK)
}

async fn quarantine_action(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<(i64, String)>,
    body: web::Bytes,
) -> UiResult {
    session.require(Role::Editor)?;
    session.check_csrf(&parse_form(&body))?;
    let (id, action) = path.into_inner();
    let done = match action.as_str() {
        "replay" => {
            if crate::api::events::replay(&state, id).await? {
                "replayed"
            } else {
                "duplicate"
            }
        }
        "discard" => {
            state.store.delete_quarantine(id).await?;
            "discarded"
        }
        other => return Err(ApiError::not_found(format!("no action `{other}`")).into()),
    };
    Ok(see_other(&format!("/ui/events?done={done}")))
}

// ----------------------------------------------------------------------------- tokens

async fn tokens_page(state: web::Data<AppState>, session: Session, query: Query) -> UiResult {
    session.require(Role::Admin)?;
    tokens_view(
        &state,
        &session,
        &Form::new(),
        None,
        notice(&query),
        StatusCode::OK,
    )
    .await
}

async fn tokens_view(
    state: &AppState,
    session: &Session,
    form: &Form,
    error: Option<String>,
    notice: Option<&'static str>,
    status: StatusCode,
) -> UiResult {
    let tokens = state.store.list_tokens().await?;
    let mut ctx = base(session, "tokens");
    ctx.insert("title".into(), json!("API tokens"));
    ctx.insert("tokens".into(), json!(tokens));
    ctx.insert("envs".into(), json!(environments(state).await?));
    let projects: Vec<String> = state
        .store
        .list_projects()
        .await?
        .into_iter()
        .map(|p| p.id)
        .collect();
    ctx.insert("projects".into(), json!(projects));
    ctx.insert(
        "roles".into(),
        json!(Role::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>()),
    );
    ctx.insert("form".into(), json!(form));
    ctx.insert("error".into(), json!(error));
    ctx.insert("notice".into(), json!(notice));
    render("tokens.html", &ctx, status)
}

/// Creates a token and shows its secret, once.
async fn issue_token(
    state: &AppState,
    session: &Session,
    name: &str,
    scope: &TokenScope,
    back: &str,
) -> UiResult {
    let secret = generate_secret(scope);
    state
        .store
        .create_token(name, scope, &hash_secret(&secret), &session.actor())
        .await?
        .ok_or_else(|| ApiError::conflict("token collision; try again"))?;
    state.tokens.reload().await?;
    secret_page(session, name, &secret, back)
}

/// Shows a new token's secret, once.
fn secret_page(session: &Session, token_name: &str, secret: &str, back: &str) -> UiResult {
    let mut ctx = base(session, "tokens");
    ctx.insert("title".into(), json!("Token created"));
    ctx.insert("token_name".into(), json!(token_name));
    ctx.insert("secret".into(), json!(secret));
    ctx.insert("back".into(), json!(back));
    render("secret.html", &ctx, StatusCode::CREATED)
}

async fn create_token(state: web::Data<AppState>, session: Session, body: web::Bytes) -> UiResult {
    session.require(Role::Admin)?;
    let form = parse_form(&body);
    session.check_csrf(&form)?;
    let name = form
        .get("name")
        .map(|n| n.trim().to_string())
        .unwrap_or_default();
    let fail = |m: String| {
        tokens_view(
            &state,
            &session,
            &form,
            Some(m),
            None,
            StatusCode::BAD_REQUEST,
        )
    };
    if let Err(e) = crate::domain::names::validate_printable(&name) {
        return fail(format!("Name {e}.")).await;
    }
    let Some(kind) = form.get("type").and_then(|t| TokenKind::parse(t)) else {
        return fail("Type must be admin, client or frontend.".into()).await;
    };
    let scope = match kind {
        TokenKind::Admin => {
            let Some(role) = form.get("role").and_then(|r| Role::parse(r)) else {
                return fail("Role must be viewer, editor or admin.".into()).await;
            };
            TokenScope {
                kind,
                projects: vec!["*".into()],
                environment: "*".into(),
                role: Some(role),
            }
        }
        _ => {
            let env = form.get("environment").cloned().unwrap_or_default();
            if !environments(&state).await?.contains(&env) {
                return fail("Choose the environment the token reads.".into()).await;
            }
            let project = form
                .get("project")
                .cloned()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "*".into());
            TokenScope {
                kind,
                projects: vec![project],
                environment: env,
                role: None,
            }
        }
    };
    issue_token(&state, &session, &name, &scope, "/ui/tokens").await
}

async fn delete_token(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<i64>,
    body: web::Bytes,
) -> UiResult {
    session.require(Role::Admin)?;
    session.check_csrf(&parse_form(&body))?;
    state
        .store
        .delete_token(path.into_inner(), &session.actor())
        .await?;
    state.tokens.reload().await?;
    Ok(see_other("/ui/tokens?done=token-deleted"))
}

// ------------------------------------------------------------------------------ users

async fn users_page(state: web::Data<AppState>, session: Session, query: Query) -> UiResult {
    session.require(Role::Admin)?;
    users_view(
        &state,
        &session,
        &Form::new(),
        None,
        notice(&query),
        StatusCode::OK,
    )
    .await
}

async fn users_view(
    state: &AppState,
    session: &Session,
    form: &Form,
    error: Option<String>,
    notice: Option<&'static str>,
    status: StatusCode,
) -> UiResult {
    let mut ctx = base(session, "users");
    ctx.insert("title".into(), json!("Users"));
    ctx.insert("users".into(), json!(state.store.list_users().await?));
    ctx.insert(
        "roles".into(),
        json!(Role::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>()),
    );
    ctx.insert("form".into(), json!(form));
    ctx.insert("error".into(), json!(error));
    ctx.insert("notice".into(), json!(notice));
    render("users.html", &ctx, status)
}

async fn create_user(state: web::Data<AppState>, session: Session, body: web::Bytes) -> UiResult {
    session.require(Role::Admin)?;
    let form = parse_form(&body);
    session.check_csrf(&form)?;
    let fail = |m: String, status| users_view(&state, &session, &form, Some(m), None, status);
    let email = match normalize_email(form.get("email").map(String::as_str).unwrap_or("")) {
        Ok(e) => e,
        Err(e) => return fail(format!("Email {e}."), StatusCode::BAD_REQUEST).await,
    };
    let password = form.get("password").cloned().unwrap_or_default();
    if let Err(e) = check_password(&password) {
        return fail(format!("Password {e}."), StatusCode::BAD_REQUEST).await;
    }
    let Some(role) = form.get("role").and_then(|r| Role::parse(r)) else {
        return fail(
            "Role must be viewer, editor or admin.".into(),
            StatusCode::BAD_REQUEST,
        )
        .await;
    };
    let hash = auth::hash_password(&password).map_err(UiError::Internal)?;
    match state
        .store
        .create_user(&email, &hash, role, false, &session.actor())
        .await
    {
        Ok(_) => Ok(see_other("/ui/users?done=user-created")),
        Err(crate::store::StoreError::Conflict(m)) => fail(m, StatusCode::CONFLICT).await,
        Err(e) => Err(e.into()),
    }
}

async fn set_role(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<i64>,
    body: web::Bytes,
) -> UiResult {
    session.require(Role::Admin)?;
    let form = parse_form(&body);
    session.check_csrf(&form)?;
    let role = form
        .get("role")
        .and_then(|r| Role::parse(r))
        .ok_or_else(|| ApiError::invalid("role", "must be viewer, editor or admin"))?;
    match state
        .store
        .set_user_role(path.into_inner(), role, &session.actor())
        .await
    {
        Ok(_) => Ok(see_other("/ui/users?done=user-updated")),
        Err(crate::store::StoreError::Conflict(m)) => {
            users_view(
                &state,
                &session,
                &Form::new(),
                Some(m),
                None,
                StatusCode::CONFLICT,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

async fn delete_user(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<i64>,
    body: web::Bytes,
) -> UiResult {
    session.require(Role::Admin)?;
    session.check_csrf(&parse_form(&body))?;
    match state
        .store
        .delete_user(path.into_inner(), &session.actor())
        .await
    {
        Ok(()) => Ok(see_other("/ui/users?done=user-deleted")),
        Err(crate::store::StoreError::Conflict(m)) => {
            users_view(
                &state,
                &session,
                &Form::new(),
                Some(m),
                None,
                StatusCode::CONFLICT,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------- account

async fn account_page(session: Session, query: Query) -> UiResult {
    account_view(&session, None, notice(&query), StatusCode::OK)
}

fn account_view(
    session: &Session,
    error: Option<String>,
    notice: Option<&'static str>,
    status: StatusCode,
) -> UiResult {
    let mut ctx = base(session, "account");
    ctx.insert("title".into(), json!("Your account"));
    ctx.insert("error".into(), json!(error));
    ctx.insert("notice".into(), json!(notice));
    render("account.html", &ctx, status)
}

/// An admin-API token that can do what the user can, and no more.
async fn account_token(state: web::Data<AppState>, session: Session, body: web::Bytes) -> UiResult {
    let form = parse_form(&body);
    session.check_csrf(&form)?;
    let label = form
        .get("name")
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    let name = match label {
        Some(l) => format!("{} ({l})", session.user.email),
        None => session.user.email.clone(),
    };
    if let Err(e) = crate::domain::names::validate_printable(&name) {
        return account_view(
            &session,
            Some(format!("Name {e}.")),
            None,
            StatusCode::BAD_REQUEST,
        );
    }
    let scope = TokenScope {
        kind: TokenKind::Admin,
        projects: vec!["*".into()],
        environment: "*".into(),
        role: Some(session.user.role),
    };
    issue_token(&state, &session, &name, &scope, "/ui/account").await
}

async fn account_password(
    state: web::Data<AppState>,
    session: Session,
    body: web::Bytes,
) -> UiResult {
    let form = parse_form(&body);
    session.check_csrf(&form)?;
    let current = form.get("current").cloned().unwrap_or_default();
    let new = form.get("password").cloned().unwrap_or_default();
    let record = state
        .store
        .get_user(session.user.id)
        .await?
        .ok_or_else(|| UiError::LoginRequired("/ui/account".into()))?;
    if !auth::verify_password(&current, &record.password_hash) {
        return account_view(
            &session,
            Some("The current password is wrong.".into()),
            None,
            StatusCode::BAD_REQUEST,
        );
    }
    if let Err(e) = check_password(&new) {
        return account_view(
            &session,
            Some(format!("The new password {e}.")),
            None,
            StatusCode::BAD_REQUEST,
        );
    }
    let hash = auth::hash_password(&new).map_err(UiError::Internal)?;
    state
        .store
        .set_user_password(session.user.id, &hash, &session.actor())
        .await?;
    Ok(see_other("/ui/account?done=password"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_form_becomes_api_json() {
        let form: Form = [
            ("ramp_steps_pct", "5, 20, 100"),
            ("min_hours_per_step", "12"),
            ("min_retention_delta", "-0.01"),
            ("tuning_s", ""),
            ("activation_events", "signup, checkout"),
            ("end_of_window_policy", "hold"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let json = settings_json(&form).unwrap();
        assert_eq!(json["ramp_steps_pct"], json!([5, 20, 100]));
        assert_eq!(json["min_hours_per_step"], json!(12));
        assert_eq!(json["min_retention_delta"], json!(-0.01));
        assert_eq!(json["tuning_s"], Value::Null);
        assert_eq!(json["activation_events"], json!(["signup", "checkout"]));
        let parsed: FuseSettings = serde_json::from_value(json).unwrap();
        assert_eq!(parsed.stats.min_hours_per_step, 12);

        let bad: Form = [("max_error_rate".to_string(), "lots".to_string())]
            .into_iter()
            .collect();
        assert_eq!(settings_json(&bad).unwrap_err().0, "max_error_rate");
    }

    #[test]
    fn ramp_plan_marks_the_current_step() {
        let plan = ramp_plan(&[5.0, 10.0, 25.0, 100.0], 10.0);
        assert_eq!(plan[1]["current"], true);
        assert_eq!(plan[0]["done"], true);
        assert_eq!(plan[2]["current"], false);
        assert!(ramp_plan(&[5.0, 100.0], 0.0)
            .iter()
            .all(|s| s["current"] == false));
    }

    #[test]
    fn next_stays_inside_the_ui() {
        assert_eq!(safe_next(Some(&"/ui/audit".to_string())), "/ui/audit");
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/api/admin",
            "/ui\\..\\x",
        ] {
            assert_eq!(safe_next(Some(&bad.to_string())), "/ui/", "{bad}");
        }
    }

    #[test]
    fn badges_follow_the_fuse() {
        assert_eq!(flag_status(false, None), "off");
        assert_eq!(flag_status(true, None), "on");
        assert!(needs_attention("rolled_back") && !needs_attention("ramping"));
        assert_eq!(status_label("srm_hold"), "held for SRM");
    }

    #[test]
    fn exposure_without_a_fuse() {
        let s: Vec<Strategy> = serde_json::from_value(json!([
            {"name": "flexibleRollout", "parameters": {"rollout": "30"}},
            {"name": "userWithId", "parameters": {"userIds": "a"}}
        ]))
        .unwrap();
        assert_eq!(plain_exposure(true, &s), 30.0);
        assert_eq!(plain_exposure(false, &s), 0.0);
        assert_eq!(plain_exposure(true, &[]), 100.0);
    }
}
