//! The admin API (`/api/admin/...`), Unleash's paths and shapes, for admin tokens.

mod environments;
mod events;
pub(crate) mod features;
mod projects;
mod segments;
mod state;
mod tags;
mod tokens;

use utoipa_actix_web::service_config::ServiceConfig;

use super::error::{ApiError, ErrorDetail};
use crate::domain::validate::Problem;

pub fn configure(cfg: &mut ServiceConfig) {
    environments::configure(cfg);
    projects::configure(cfg);
    features::configure(cfg);
    segments::configure(cfg);
    tags::configure(cfg);
    tokens::configure(cfg);
    state::configure(cfg);
    events::configure(cfg);
}

/// A 400 listing every problem, paths prefixed with `base`.
pub(crate) fn problems_error(base: &str, problems: Vec<Problem>) -> ApiError {
    let details: Vec<ErrorDetail> = problems
        .into_iter()
        .map(|p| ErrorDetail {
            path: join_path(base, &p.path),
            message: p.message,
        })
        .collect();
    let message = details
        .iter()
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect::<Vec<_>>()
        .join("; ");
    ApiError::new(super::error::Code::ValidationError, message).with_details(details)
}

fn join_path(base: &str, path: &str) -> String {
    match (base.is_empty(), path.is_empty()) {
        (true, true) => "$".into(),
        (true, false) => path.into(),
        (false, true) => base.into(),
        (false, false) if path.starts_with('[') => format!("{base}{path}"),
        (false, false) => format!("{base}.{path}"),
    }
}

/// Checks a URL-friendly name field.
pub(crate) fn check_name(path: &str, name: &str) -> Result<(), ApiError> {
    crate::domain::names::validate_url_friendly(name).map_err(|e| ApiError::invalid(path, e))
}
