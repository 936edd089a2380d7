//! CORS for the browser-facing APIs only (`/api/frontend`, `/ofrep`): the admin and
//! client APIs are for servers and get no CORS headers.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use futures_util::future::LocalBoxFuture;

use crate::app::AppState;

fn browser_facing(path: &str) -> bool {
    path.starts_with("/api/frontend") || path.starts_with("/ofrep/")
}

/// The `Access-Control-Allow-Origin` value for `origin`, if it is allowed.
fn allowed_origin(allowed: &[String], origin: &str) -> Option<HeaderValue> {
    if allowed.iter().any(|o| o == "*") {
        Some(HeaderValue::from_static("*"))
    } else if allowed.iter().any(|o| o == origin) {
        HeaderValue::from_str(origin).ok()
    } else {
        None
    }
}

/// Middleware body for `wrap_fn`: answers preflights and decorates responses.
pub fn handle<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let allow = match (&origin, browser_facing(req.path())) {
        (Some(origin), true) => req
            .app_data::<web::Data<AppState>>()
            .and_then(|s| allowed_origin(&s.settings.cors_origins, origin)),
        _ => None,
    };
    if let Some(allow) = &allow {
        if req.method() == Method::OPTIONS {
            let requested = req
                .headers()
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .cloned()
                .unwrap_or_else(|| {
                    HeaderValue::from_static(
                        "authorization, content-type, if-none-match, x-api-key",
                    )
                });
            let response = HttpResponse::NoContent()
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, allow.clone()))
                .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, OPTIONS"))
                .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, requested))
                .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
                .insert_header((header::VARY, "Origin"))
                .finish();
            return Box::pin(async move { Ok(req.into_response(response)) });
        }
    }
    let fut = srv.call(req);
    Box::pin(async move {
        let mut response = fut.await?.map_into_boxed_body();
        if let Some(allow) = allow {
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("ETag"),
            );
            headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        Ok(response)
    })
}
