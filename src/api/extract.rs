//! Extractors: a JSON body extractor that reports the exact field path of a
//! deserialisation error, and token authentication for every API surface.

use std::future::Future;
use std::pin::Pin;

use actix_web::{dev::Payload, http::Method, web, FromRequest, HttpRequest};
use serde::de::DeserializeOwned;

use super::error::{ApiError, Code, ErrorDetail};
use crate::app::AppState;
use crate::domain::tokens::{TokenKind, TokenScope};

/// Like `web::Json`, but errors carry the JSON path of the field at fault
/// (`strategies[0].constraints[1].operator`), and the body limit is the configured one.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = web::Bytes::from_request(req, payload);
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map(|s| s.settings.max_body_bytes)
            .unwrap_or(usize::MAX);
        Box::pin(async move {
            let bytes = bytes.await.map_err(|e| payload_error(e, limit))?;
            parse_json(&bytes).map(Json)
        })
    }
}

/// Parses JSON, turning serde's error into a 400 with the field path.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let path = if path == "." { "$".to_string() } else { path };
        ApiError::new(
            Code::InvalidJson,
            format!("invalid JSON body at {path}: {inner}"),
        )
        .with_details(vec![ErrorDetail {
            path,
            message: inner.to_string(),
        }])
    })
}

/// Maps body-reading failures (size, encoding) to the error body.
pub fn payload_error(e: actix_web::Error, limit: usize) -> ApiError {
    use actix_web::error::PayloadError;
    match e.as_error::<PayloadError>() {
        Some(PayloadError::Overflow) => ApiError::new(
            Code::PayloadTooLarge,
            format!("request body is over the limit of {limit} bytes"),
        ),
        _ => {
            let text = e.to_string();
            if text.contains("overflow") || text.contains("larger than") {
                ApiError::new(
                    Code::PayloadTooLarge,
                    format!("request body is over the limit of {limit} bytes"),
                )
            } else {
                ApiError::new(
                    Code::InvalidJson,
                    format!("could not read the body: {text}"),
                )
            }
        }
    }
}

/// An authenticated caller: the token's name and scope.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_name: String,
    pub scope: TokenScope,
}

impl Caller {
    /// How the caller appears in the audit log.
    pub fn actor(&self) -> crate::store::Actor {
        crate::store::Actor(format!("token:{}", self.token_name))
    }

    pub fn require_project(&self, project: &str) -> Result<(), ApiError> {
        if self.scope.allows_project(project) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this token is not allowed to access project `{project}`"
            )))
        }
    }

    pub fn require_environment(&self, environment: &str) -> Result<(), ApiError> {
        if self.scope.allows_environment(environment) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this token is not allowed to access environment `{environment}`"
            )))
        }
    }
}

fn authenticate(req: &HttpRequest, kinds: &[TokenKind]) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("app state missing")))?;
    let raw = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .or_else(|| req.headers().get("x-api-key"))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                Code::Unauthorized,
                "missing Authorization header with an API token",
            )
        })?;
    let raw = raw
        .strip_prefix("Bearer ")
        .or_else(|| raw.strip_prefix("bearer "))
        .unwrap_or(raw)
        .trim();
    let token = state
        .tokens
        .lookup(raw)
        .ok_or_else(|| ApiError::new(Code::Unauthorized, "unknown or deleted API token"))?;
    if !kinds.contains(&token.kind) {
        let wanted: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        return Err(ApiError::forbidden(format!(
            "a {} token cannot be used here; this endpoint takes a {} token",
            token.kind.as_str(),
            wanted.join(" or ")
        )));
    }
    if let Some(role) = token.role {
        let read = matches!(*req.method(), Method::GET | Method::HEAD);
        crate::domain::users::role_allows(role, read, req.path()).map_err(ApiError::forbidden)?;
    }
    Ok(Caller {
        token_name: token.token_name.clone(),
        scope: TokenScope {
            kind: token.kind,
            projects: token.projects.clone(),
            environment: token.environment.clone(),
            role: token.role,
        },
    })
}

macro_rules! token_extractor {
    ($(#[$doc:meta])* $name:ident, [$($kind:expr),+]) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Caller);

        impl FromRequest for $name {
            type Error = ApiError;
            type Future = std::future::Ready<Result<Self, ApiError>>;

            fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
                std::future::ready(authenticate(req, &[$($kind),+]).map($name))
            }
        }
    };
}

token_extractor!(
    /// An admin token (`*:*.secret`): the admin API.
    AdminToken,
    [TokenKind::Admin]
);
token_extractor!(
    /// A client token: server-side SDKs on `/api/client/*`.
    ClientToken,
    [TokenKind::Client]
);
token_extractor!(
    /// A frontend token: browser SDKs on `/api/frontend`.
    FrontendToken,
    [TokenKind::Frontend]
);
token_extractor!(
    /// A frontend or client token: OFREP remote evaluation (server or browser).
    EvaluationToken,
    [TokenKind::Frontend, TokenKind::Client]
);
