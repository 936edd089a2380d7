//! The web UI for product managers, at `/ui/`: server-rendered pages from auto-escaping
//! minijinja templates compiled into the binary (`web-ui/`), SVG charts drawn on the
//! server, and no script at all, so it works offline and under a CSP that forbids
//! inline script. Forms post back and redirect (POST/redirect/GET).

pub mod auth;
pub mod charts;
pub mod describe;
mod pages;

use std::collections::HashMap;
use std::sync::LazyLock;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpResponse, ResponseError};
use minijinja::Environment;
use serde::Serialize;

use crate::api::error::{ApiError, Code};
use auth::{LoginLimiter, Sessions};

/// UI state shared by handlers.
pub struct UiState {
    pub sessions: Sessions,
    pub limiter: LoginLimiter,
}

/// Templates compiled into the binary; `.html` names are auto-escaped.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    macro_rules! add {
        ($($name:literal),+) => {
            $(
                if let Err(e) = env.add_template($name, include_str!(concat!("../../web-ui/templates/", $name))) {
                    tracing::error!(template = $name, error = %e, "template does not compile");
                }
            )+
        };
    }
    add!(
        "base.html",
        "macros.html",
        "error.html",
        "login.html",
        "setup.html",
        "overview.html",
        "new_flag.html",
        "flag.html",
        "confirm.html",
        "audit.html",
        "events.html",
        "tokens.html",
        "users.html",
        "account.html",
        "secret.html"
    );
    env.add_filter("time", format_time);
    env.add_filter("pct", |v: f64| {
        format!("{}%", crate::scheduler::rollout_text(v))
    });
    env
});

const STYLE_CSS: &str = include_str!("../../web-ui/static/style.css");

/// `ms` since the epoch as a UTC time.
fn format_time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "—".into())
}

/// Renders a template to a response with `status`.
pub fn render(
    name: &str,
    ctx: &impl Serialize,
    status: StatusCode,
) -> Result<HttpResponse, UiError> {
    let html = TEMPLATES
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| UiError::Internal(anyhow::anyhow!("rendering {name}: {e:#}")))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(html))
}

/// A UI failure, shown as a page (never JSON) with the right status.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// No valid session: go to the login page, then back to `.0`.
    #[error("login required")]
    LoginRequired(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the form expired or came from another site; reload the page and try again")]
    Csrf,
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("{0}")]
    Internal(anyhow::Error),
}

impl From<crate::store::StoreError> for UiError {
    fn from(e: crate::store::StoreError) -> Self {
        UiError::Api(e.into())
    }
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            UiError::LoginRequired(_) => StatusCode::SEE_OTHER,
            UiError::Forbidden(_) | UiError::Csrf => StatusCode::FORBIDDEN,
            UiError::Api(e) => e.code.status(),
            UiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let UiError::LoginRequired(next) = self {
            let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, format!("/ui/login?next={next}")))
                .finish();
        }
        let status = self.status_code();
        let message = match self {
            UiError::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "web UI request failed");
                "Something went wrong on our side; the details are in the server log.".to_string()
            }
            UiError::Api(e) if e.code == Code::Internal => {
                tracing::error!(error = %e, source = ?e.source, "web UI request failed");
                "Something went wrong on our side; the details are in the server log.".to_string()
            }
            other => other.to_string(),
        };
        let ctx = serde_json::json!({
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "message": message,
        });
        render("error.html", &ctx, status).unwrap_or_else(|_| {
            HttpResponse::build(status)
                .content_type("text/plain; charset=utf-8")
                .body(message)
        })
    }
}

/// Parses an `application/x-www-form-urlencoded` body (last value wins).
pub fn parse_form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// The Content-Security-Policy of every UI page: only our own stylesheet, no script
/// at all, inline SVG only, never framed, forms post only to us.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, CSP))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "same-origin"))
        .add(("Cross-Origin-Opener-Policy", "same-origin"))
        .add((header::CACHE_CONTROL, "no-store"))
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(STYLE_CSS)
}

fn to_ui() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/ui/"))
        .finish()
}

/// A redirect to the login page is routine, not a failure: strip the error from the
/// response so the request log does not report it as one.
fn quiet_login_redirect(response: ServiceResponse) -> ServiceResponse {
    let is_login = response
        .response()
        .error()
        .and_then(|e| e.as_error::<UiError>())
        .is_some_and(|e| matches!(e, UiError::LoginRequired(_)));
    if !is_login {
        return response;
    }
    let location = response.headers().get(header::LOCATION).cloned();
    let (req, _) = response.into_parts();
    let mut fresh = HttpResponse::SeeOther();
    if let Some(location) = location {
        fresh.insert_header((header::LOCATION, location));
    }
    ServiceResponse::new(req, fresh.finish())
}

/// Registers `/` (redirect) and everything under `/ui`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(|| async { to_ui() }))
        .route("/ui", web::get().to(|| async { to_ui() }))
        .service(
            web::scope("/ui")
                .wrap_fn(|req, srv| {
                    let response = srv.call(req);
                    async move { Ok(quiet_login_redirect(response.await?)) }
                })
                .wrap(security_headers())
                .route("/static/style.css", web::get().to(style))
                .configure(pages::configure),
        );
}
