//! The OpenAPI document: generated from the `#[utoipa::path]` of every mounted
//! handler, served at `/api/openapi.json` with Swagger UI at `/docs` (bundled in the
//! binary, so it works offline), and committed as `openapi/openapi.json`.

use actix_web::App;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Fusebox",
        description = "Feature flags where every rollout has a fuse. Unleash-compatible client API; admin API for flags, segments, tokens and fuses.",
    ),
    modifiers(&TokenAuth),
    security(("apiToken" = [])),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "admin", description = "Projects, environments, features, strategies, segments, tokens, audit"),
        (name = "client", description = "Unleash client API for server-side SDKs (client tokens)"),
        (name = "frontend", description = "Unleash frontend API for browser SDKs (frontend tokens)"),
        (name = "events", description = "Event ingestion, quarantine, user export and erasure"),
        (name = "fuses", description = "Fuse configuration, analysis, history and manual control"),
        (name = "ofrep", description = "OpenFeature Remote Evaluation Protocol (frontend or client tokens)"),
    )
)]
struct ApiDoc;

/// Unleash SDKs send the token raw in `Authorization`, without a scheme.
struct TokenAuth;

impl Modify for TokenAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiToken",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "An API token, e.g. `*:*.3f9c…` (admin) or `default:development.…` (client)",
            ))),
        );
    }
}

/// The document's fixed parts; paths are added as routes are mounted.
pub fn base() -> OpenApiDoc {
    ApiDoc::openapi()
}

/// The complete document, exactly as the server serves it.
pub fn document() -> OpenApiDoc {
    let (_, doc) = App::new()
        .into_utoipa_app()
        .openapi(base())
        .configure(super::configure)
        .split_for_parts();
    doc
}

/// The document as pretty JSON (what `openapi/openapi.json` holds).
pub fn document_json() -> String {
    document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Serves the document and Swagger UI.
pub fn serve(doc: OpenApiDoc) -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").url("/api/openapi.json", doc)
}
