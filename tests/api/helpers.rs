//! Test support: `spawn_app(Backend)` starts the real server through
//! `Application::build` on a random port against a fresh database (a temp SQLite
//! file, or a uniquely named PostgreSQL database that is dropped afterwards).
//!
//! PostgreSQL comes from `TEST_DATABASE_URL` (default: the local trust-auth server).
//! Without a reachable server the PostgreSQL variant is skipped with a printed reason,
//! except under `CI=true`, where that is a failure.

use std::sync::LazyLock;

use fusebox::app::Application;
use fusebox::config::Settings;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection};

pub const ADMIN_TOKEN: &str = "*:*.test-admin-secret";
pub const CLIENT_TOKEN: &str = "*:development.test-client-secret";
pub const FRONTEND_TOKEN: &str = "*:development.test-frontend-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        // Never exports (no OTLP endpoint in tests); the handle is not needed.
        let _ = fusebox::telemetry::init(fusebox::config::LogFormat::Pretty);
    }
});

/// The admin URL of the PostgreSQL server used to create test databases.
pub fn pg_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for one test.
pub enum TestDb {
    /// Kept only so the directory lives as long as the test.
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres {
        name: String,
    },
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { name } = self {
            let name = name.clone();
            // Drop runs outside any runtime guarantee: use a private thread+runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(mut conn) = PgConnection::connect(&pg_admin_url()).await {
                            let _ = conn
                                .execute(sqlx::AssertSqlSafe(format!(
                                    "drop database if exists \"{name}\" with (force)"
                                )))
                                .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// Creates a fresh database; `None` (after printing why) when PostgreSQL is not
/// reachable outside CI.
pub async fn fresh_database(backend: Backend) -> Option<(String, TestDb)> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite://{}", dir.path().join("fusebox.db").display());
            Some((url, TestDb::Sqlite(dir)))
        }
        Backend::Postgres => {
            let admin = pg_admin_url();
            let mut conn = match PgConnection::connect(&admin).await {
                Ok(c) => c,
                Err(e) => {
                    if std::env::var("CI").as_deref() == Ok("true") {
                        panic!("PostgreSQL is required in CI but {admin} is unreachable: {e}");
                    }
                    eprintln!("SKIP (PostgreSQL unreachable at {admin}: {e})");
                    return None;
                }
            };
            let name = format!("fusebox_test_{}", uuid::Uuid::new_v4().simple());
            conn.execute(sqlx::AssertSqlSafe(format!("create database \"{name}\"")))
                .await
                .expect("create test database");
            let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
            Some((format!("{base}/{name}"), TestDb::Postgres { name }))
        }
    }
}

/// A running server and a client for it.
#[allow(dead_code)] // not every test module reads every field
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub backend: Backend,
    pub client: reqwest::Client,
    pub database_url: String,
    pub state: actix_web::web::Data<fusebox::app::AppState>,
    _db: TestDb,
}

/// Settings every test starts from.
pub fn test_settings(database_url: String) -> Settings {
    Settings {
        addr: "127.0.0.1:0".into(),
        database_url,
        init_admin_tokens: vec![ADMIN_TOKEN.into()],
        init_client_tokens: vec![CLIENT_TOKEN.into()],
        init_frontend_tokens: vec![FRONTEND_TOKEN.into()],
        workers: Some(2),
        // Tests drive the scheduler with explicit clocks.
        scheduler_interval_secs: 0,
        // A tiny in-memory event index on SQLite, so nearly every group also moves
        // events to the on-disk index and every query reads both halves.
        sqlite_event_tail: 3,
        ..Settings::default()
    }
}

/// Starts the server; `None` if the backend is unavailable (and that is allowed).
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |s| s).await
}

pub async fn spawn_app_with(
    backend: Backend,
    tweak: impl FnOnce(Settings) -> Settings,
) -> Option<TestApp> {
    LazyLock::force(&TRACING);
    let (url, db) = fresh_database(backend).await?;
    let settings = tweak(test_settings(url.clone()));
    let app = Application::build(settings).await.expect("build app");
    let port = app.port();
    let state = app.state();
    tokio::spawn(app.run_until_stopped());
    Some(TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        backend,
        client: reqwest::Client::new(),
        database_url: url,
        state,
        _db: db,
    })
}

impl TestApp {
    /// A request with the admin token.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path)
            .header("Authorization", ADMIN_TOKEN)
    }

    /// A request with no token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.address, path))
    }

    pub async fn get(&self, path: &str) -> Response {
        self.admin(Method::GET, path).send().await.expect("request")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.admin(Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn put(&self, path: &str, body: &Value) -> Response {
        self.admin(Method::PUT, path)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.admin(Method::DELETE, path)
            .send()
            .await
            .expect("request")
    }

    /// Creates a feature in `default` and returns its JSON.
    pub async fn create_feature(&self, name: &str) -> Value {
        let r = self
            .post(
                "/api/admin/projects/default/features",
                &serde_json::json!({ "name": name }),
            )
            .await;
        assert_eq!(r.status(), 201, "creating {name}");
        r.json().await.expect("json")
    }

    /// Imports a client-features document into `environment`.
    pub async fn import(&self, environment: &str, state: &Value) {
        let r = self
            .post(
                &format!("/api/admin/state/import?environment={environment}"),
                state,
            )
            .await;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "import failed: {body}");
    }
}

/// Reads a JSON body, asserting the status first (with the body in the message).
pub async fn json_with_status(r: Response, status: u16) -> Value {
    let got = r.status().as_u16();
    let text = r.text().await.expect("body");
    assert_eq!(got, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Defines one test per backend from `async fn $name(app: TestApp)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        pub mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(app) = $crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await {
                        super::$name(app).await;
                    }
                }
            )+
        }
        pub mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(app) = $crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await {
                        super::$name(app).await;
                    }
                }
            )+
        }
    };
}

/// An activity event named `name`, happening now, as the store takes it; tests
/// change other fields with struct update syntax.
#[allow(dead_code)] // not every test module stores events directly
pub fn store_activity(
    id: &str,
    environment: &str,
    user: &str,
    name: &str,
) -> fusebox::store::NewEvent {
    let now = chrono::Utc::now().timestamp_millis();
    fusebox::store::NewEvent {
        id: id.into(),
        environment: environment.into(),
        kind: "activity",
        user_id: user.into(),
        feature: None,
        name: Some(name.into()),
        enabled: None,
        variant: None,
        score: None,
        session_id: None,
        properties: None,
        ts: now,
        received_at: now,
    }
}
