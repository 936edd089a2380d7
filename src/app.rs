//! The app factory: `Application::build` turns `Settings` into a running server (store
//! connected and migrated, tokens bootstrapped, listener bound). `main` and every
//! integration test go through it, so tests exercise exactly what ships.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, Service};
use actix_web::{http::Method, web, App, HttpServer};
use utoipa_actix_web::AppExt;

use crate::api;
use crate::api::tokens_registry::TokenRegistry;
use crate::config::Settings;
use crate::domain::events::PiiRules;
use crate::domain::tokens::{
    generate_secret, hash_secret, parse_init_token, TokenKind, TokenScope,
};
use crate::ingest::Ingest;
use crate::scheduler::Scheduler;
use crate::snapshot::SnapshotCache;
use crate::store::{self, Actor, Store};

/// Shared by every request handler.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub tokens: Arc<TokenRegistry>,
    pub snapshots: Arc<SnapshotCache>,
    pub ingest: Arc<Ingest>,
    pub scheduler: Arc<Scheduler>,
    pub pii: PiiRules,
    pub settings: Settings,
    pub ui: crate::web::UiState,
}

/// How often raw events past the retention period are purged.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// How often each replica re-reads the flag revision, so a change made through
/// another replica is served within this long.
const REVISION_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// A built, bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    /// The admin token generated at first start, if one was.
    pub generated_admin_token: Option<String>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let store = store::connect(
            &settings.database_url,
            settings.db_pool_size,
            settings.sqlite_event_tail,
        )
        .await?;
        let generated_admin_token = bootstrap_tokens(store.as_ref(), &settings).await?;
        crate::web::auth::bootstrap_admin(
            store.as_ref(),
            settings.admin_email.as_deref(),
            settings.admin_password.as_ref().map(|s| s.0.as_str()),
        )
        .await?;
        let jwt_secret = crate::web::auth::signing_secret(
            store.as_ref(),
            settings.jwt_secret.as_ref().map(|s| s.0.as_str()),
        )
        .await?;
        let ui = crate::web::UiState {
            sessions: crate::web::auth::Sessions::new(&jwt_secret, settings.session_hours),
            limiter: Default::default(),
        };
        let tokens = TokenRegistry::load(store.clone()).await?;
        tokio::spawn(tokens.clone().run_reloader());
        let snapshots = SnapshotCache::new(store.clone()).await?;
        tokio::spawn(snapshots.clone().run_poller(REVISION_POLL));
        let ingest = Ingest::start(store.clone(), settings.ingest_queue_events);
        let scheduler = Scheduler::new(store.clone(), snapshots.clone());
        if settings.scheduler_interval_secs > 0 {
            let every = std::time::Duration::from_secs(settings.scheduler_interval_secs);
            tokio::spawn(scheduler.clone().run(every));
        }
        tokio::spawn(purge_old_events(
            store.clone(),
            settings.event_retention_days,
        ));
        let pii = match &settings.pii_keys {
            Some(keys) => PiiRules::new(keys),
            None => PiiRules::default_terms(),
        };

        let listener = TcpListener::bind(&settings.addr)
            .map_err(|e| anyhow::anyhow!("binding {}: {e}", settings.addr))?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            store,
            tokens,
            snapshots,
            ingest,
            scheduler,
            pii,
            settings,
            ui,
        });
        let app_state = state.clone();
        let mut server = HttpServer::new(move || build_app(app_state.clone()));
        if let Some(workers) = state.settings.workers {
            server = server.workers(workers.max(1));
        }
        let server = server.listen(listener)?.shutdown_timeout(10).run();
        Ok(Application {
            port,
            server,
            state,
            generated_admin_token,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until SIGINT/SIGTERM: actix stops accepting and finishes in-flight
    /// requests, the scheduler finishes the pass under way, then the event writer
    /// drains what it accepted.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        self.state.scheduler.shutdown().await;
        self.state.ingest.shutdown().await;
        tracing::info!("event writer drained; stopped");
        served
    }
}

/// Deletes raw events older than the retention period, hourly.
async fn purge_old_events(store: Arc<dyn Store>, retention_days: i64) {
    let mut interval = tokio::time::interval(PURGE_EVERY);
    loop {
        interval.tick().await;
        let before = store::now_ms() - retention_days.saturating_mul(86_400_000);
        match store.purge_events_before(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "purged events past retention"),
            Err(e) => tracing::warn!(error = %e, "purging old events failed"),
        }
    }
}

/// The actix `App` with every route; also used to generate the OpenAPI document.
pub fn build_app(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let max_body = state.settings.max_body_bytes;
    App::new()
        .into_utoipa_app()
        .openapi(api::openapi::base())
        .app_data(state)
        .app_data(web::PayloadConfig::new(max_body))
        .app_data(web::QueryConfig::default().error_handler(|e, _| api::error::query_error(e)))
        .app_data(web::PathConfig::default().error_handler(|e, _| api::error::path_error(e)))
        .configure(api::configure)
        .openapi_service(api::openapi::serve)
        .map(|app| {
            app.configure(crate::web::configure).wrap_fn(|req, srv| {
                // A successful admin write changes the revision: re-read it now so this
                // replica's next poll sees the change (others see it via the poller).
                let write = !matches!(*req.method(), Method::GET | Method::HEAD)
                    && (req.path().starts_with("/api/admin") || req.path().starts_with("/ui/"));
                let state = req.app_data::<web::Data<AppState>>().cloned();
                let response = srv.call(req);
                async move {
                    let response = response.await?;
                    let status = response.status();
                    if write && (status.is_success() || status.is_redirection()) {
                        if let Some(state) = state {
                            if let Err(e) = state.snapshots.refresh().await {
                                tracing::warn!(error = %e, "refreshing the flag revision failed");
                            }
                        }
                    }
                    Ok(response)
                }
            })
            .wrap_fn(api::cors::handle)
            .wrap_fn(|req, srv| {
                // Route patterns, not raw paths, keep label cardinality bounded.
                let started = std::time::Instant::now();
                let method = req.method().to_string();
                let response = srv.call(req);
                async move {
                    let response = response.await?;
                    if let Some(m) = crate::metrics::metrics() {
                        let route = response
                            .request()
                            .match_pattern()
                            .unwrap_or_else(|| "unmatched".into());
                        let status = response.status().as_u16().to_string();
                        m.http_requests
                            .with_label_values(&[&method, &route, &status])
                            .inc();
                        m.http_duration
                            .with_label_values(&[&method, &route])
                            .observe(started.elapsed().as_secs_f64());
                    }
                    Ok(response)
                }
            })
            .wrap(tracing_actix_web::TracingLogger::default())
            .default_service(web::to(api::not_found))
        })
        .into_app()
}

/// Creates the `FUSEBOX_INIT_*_TOKENS`; with none at all and no admin token stored,
/// generates one admin token and returns it so the operator can log in once.
async fn bootstrap_tokens(
    store: &dyn Store,
    settings: &Settings,
) -> anyhow::Result<Option<String>> {
    let actor = Actor::system();
    let lists = [
        (TokenKind::Admin, &settings.init_admin_tokens),
        (TokenKind::Client, &settings.init_client_tokens),
        (TokenKind::Frontend, &settings.init_frontend_tokens),
    ];
    for (kind, list) in lists {
        for (i, token) in list.iter().enumerate() {
            let scope = parse_init_token(kind, token).map_err(|e| {
                anyhow::anyhow!("FUSEBOX_INIT_{}_TOKENS: {e}", kind.as_str().to_uppercase())
            })?;
            let name = format!("init-{}-{}", kind.as_str(), i + 1);
            store
                .create_token(&name, &scope, &hash_secret(token), &actor)
                .await?;
        }
    }
    if !settings.bootstrap_admin_token {
        return Ok(None);
    }
    let has_admin = store
        .list_tokens()
        .await?
        .iter()
        .any(|t| t.kind == TokenKind::Admin);
    if has_admin {
        return Ok(None);
    }
    let scope = TokenScope {
        kind: TokenKind::Admin,
        projects: vec!["*".into()],
        environment: "*".into(),
        role: Some(crate::domain::users::Role::Admin),
    };
    let secret = generate_secret(&scope);
    store
        .create_token("bootstrap-admin", &scope, &hash_secret(&secret), &actor)
        .await?;
    Ok(Some(secret))
}
