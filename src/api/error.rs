//! The one API error type: every failure becomes `{"code", "message", "details"}` with
//! a status fixed by its `Code`, so clients can branch on `code` without parsing prose.
//! 5xx bodies are opaque; the cause is logged inside the request span.

use actix_web::{http::StatusCode, HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

/// Stable error codes; each fixes its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    InvalidJson,
    InvalidQuery,
    InvalidPath,
    ValidationError,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
    ServiceUnavailable,
    Internal,
}

impl Code {
    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidJson | Code::InvalidQuery | Code::InvalidPath | Code::ValidationError => {
                StatusCode::BAD_REQUEST
            }
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::Conflict => StatusCode::CONFLICT,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Where in the input a problem is, and what it is.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// JSON path of the offending field, e.g. `strategies[0].parameters.rollout`.
    pub path: String,
    pub message: String,
}

/// The JSON error body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub code: Code,
    pub message: String,
    pub details: Vec<ErrorDetail>,
}

/// An API failure.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub details: Vec<ErrorDetail>,
    /// The underlying cause for 5xx, logged and never sent.
    #[source]
    pub source: Option<anyhow::Error>,
}

pub type ApiResult<T, E = ApiError> = Result<T, E>;

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
            source: None,
        }
    }

    /// A 400 pointing at one field.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        let path = path.into();
        let message = message.into();
        Self {
            code: Code::ValidationError,
            message: format!("{path}: {message}"),
            details: vec![ErrorDetail { path, message }],
            source: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Code::Conflict, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Code::Forbidden, message)
    }

    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        Self {
            code: Code::Internal,
            message: "internal error; see the server log".into(),
            details: Vec::new(),
            source: Some(source.into()),
        }
    }

    pub fn with_details(mut self, details: Vec<ErrorDetail>) -> Self {
        self.details = details;
        self
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        if let Some(source) = &self.source {
            tracing::error!(error.cause_chain = ?source, "request failed");
        }
        HttpResponse::build(self.status_code()).json(ErrorBody {
            code: self.code,
            message: self.message.clone(),
            details: self.details.clone(),
        })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(what) => ApiError::conflict(what),
            StoreError::Invalid { path, message } => ApiError::invalid(path, message),
            StoreError::Database(e) => ApiError::internal(e),
            StoreError::Other(e) => ApiError::internal(e),
        }
    }
}

pub fn query_error(err: actix_web::error::QueryPayloadError) -> actix_web::Error {
    ApiError::new(Code::InvalidQuery, format!("invalid query string: {err}")).into()
}

pub fn path_error(err: actix_web::error::PathError) -> actix_web::Error {
    ApiError::new(Code::InvalidPath, format!("invalid path: {err}")).into()
}
