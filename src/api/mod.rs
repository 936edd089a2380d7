//! HTTP API: handlers grouped per resource, each module with its own `configure`.
//! Handlers extract, call the store/domain, and map; they hold no SQL.

pub mod admin;
pub mod client;
pub mod cors;
pub mod error;
pub mod events;
pub mod extract;
pub mod frontend;
pub mod fuses;
pub mod health;
pub mod ofrep;
pub mod openapi;
pub mod tokens_registry;

use actix_web::HttpRequest;
use utoipa_actix_web::service_config::ServiceConfig;

use error::{ApiError, Code};

/// Mounts every documented route.
pub fn configure(cfg: &mut ServiceConfig) {
    health::configure(cfg);
    admin::configure(cfg);
    client::configure(cfg);
    frontend::configure(cfg);
    events::configure(cfg);
    fuses::configure(cfg);
    ofrep::configure(cfg);
}

/// The JSON 404 for unknown paths.
pub async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::new(
        Code::NotFound,
        format!("no route for {} {}", req.method(), req.path()),
    ))
}
