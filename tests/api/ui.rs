//! The web UI over HTTP, on both backends: login and sessions, CSRF, the login rate
//! limit, roles (in the UI and on the API tokens users get), the one-time setup, the
//! persisted session key, security headers, and the data behind the pages.

use reqwest::{redirect::Policy, Client, Response, StatusCode};
use serde_json::json;

use crate::helpers::{json_with_status, spawn_app_with, Backend, TestApp, CLIENT_TOKEN};
use fusebox::domain::users::Role;

pub const EMAIL: &str = "pm@example.com";
pub const PASSWORD: &str = "correct-horse-battery";

fn with_admin(s: fusebox::config::Settings) -> fusebox::config::Settings {
    fusebox::config::Settings {
        admin_email: Some(EMAIL.into()),
        admin_password: Some(fusebox::config::Secret(PASSWORD.into())),
        ..s
    }
}

/// A browser-like client: no redirects followed, cookies kept by hand.
pub struct Browser {
    base: String,
    http: Client,
    cookies: Vec<(String, String)>,
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        Browser {
            base: base.to_string(),
            http: Client::builder().redirect(Policy::none()).build().unwrap(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, r: &Response) {
        for value in r.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let (pair, _) = text.split_once(';').unwrap_or((text, ""));
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            if !v.is_empty() {
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
    }

    pub async fn get(&mut self, path: &str) -> Response {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("Cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&r);
        r
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Response {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Cookie", self.cookie_header())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish(),
            )
            .send()
            .await
            .unwrap();
        self.keep(&r);
        r
    }

    /// The page's CSRF token (the hidden `csrf` field).
    pub async fn csrf(&mut self, path: &str) -> String {
        let html = self.get(path).await.text().await.unwrap();
        let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
        html[at..at + 64].to_string()
    }

    pub async fn login(&mut self, email: &str, password: &str) -> Response {
        let csrf = self.csrf("/ui/login").await;
        self.post(
            "/ui/login",
            &[
                ("csrf", &csrf),
                ("email", email),
                ("password", password),
                ("next", "/ui/"),
            ],
        )
        .await
    }

    pub fn has_cookie(&self, name: &str) -> bool {
        self.cookies.iter().any(|(k, _)| k == name)
    }
}

/// Undoes the template's HTML escaping, to compare with plain text.
fn unescape(html: &str) -> String {
    html.replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn location(r: &Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn spawn(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, with_admin).await
}

async fn add_user(app: &TestApp, email: &str, role: Role) {
    let hash = fusebox::web::auth::hash_password(PASSWORD).unwrap();
    app.state
        .store
        .create_user(email, &hash, role, false, &fusebox::store::Actor::system())
        .await
        .unwrap();
}

async fn login_sets_a_strict_session_and_pages_need_it(app: TestApp) {
    let mut b = Browser::new(&app.address);
    let r = b.get("/ui/").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/ui/login?next=%2Fui%2F");
    let r = b.get("/").await;
    assert_eq!(location(&r), "/ui/");

    let r = b.login(EMAIL, "wrong password").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(!b.has_cookie("fusebox_session"));

    let r = b.login("PM@Example.com", PASSWORD).await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    assert_eq!(location(&r), "/ui/");
    let set = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("fusebox_session="))
        .expect("a session cookie");
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(set.contains("Max-Age=43200"), "{set}");
    // The session is a JWT, not a password or token.
    let jwt = set
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("fusebox_session=");
    assert_eq!(jwt.split('.').count(), 3);

    for page in [
        "/ui/",
        "/ui/audit",
        "/ui/events",
        "/ui/account",
        "/ui/tokens",
        "/ui/users",
    ] {
        let r = b.get(page).await;
        assert_eq!(r.status(), StatusCode::OK, "{page}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(
            !csp.contains("script-src"),
            "no script is allowed at all: {csp}"
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(r.headers()["x-frame-options"], "DENY");
        let html = r.text().await.unwrap();
        assert!(!html.contains("<script"), "{page} has a script");
        assert!(html.contains(EMAIL), "{page} shows who is logged in");
    }
    let css = b.get("/ui/static/style.css").await;
    assert_eq!(css.status(), StatusCode::OK);
    assert!(css.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));

    // Logging out needs the CSRF token, then drops the cookie.
    assert_eq!(
        b.post("/ui/logout", &[]).await.status(),
        StatusCode::FORBIDDEN
    );
    let csrf = b.csrf("/ui/").await;
    let r = b.post("/ui/logout", &[("csrf", &csrf)]).await;
    assert_eq!(location(&r), "/ui/login");
    assert_eq!(b.get("/ui/").await.status(), StatusCode::SEE_OTHER);
}

async fn forms_need_the_session_csrf_token_and_changes_are_audited(app: TestApp) {
    let mut b = Browser::new(&app.address);
    b.login(EMAIL, PASSWORD).await;
    let form = [
        ("project", "default"),
        ("name", "from-ui"),
        ("type", "release"),
    ];
    let r = b.post("/ui/flags", &form).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = b
        .post(
            "/ui/flags",
            &[form[0], form[1], form[2], ("csrf", &"0".repeat(64))],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.get("/api/admin/projects/default/features/from-ui")
            .await
            .status(),
        404
    );

    let csrf = b.csrf("/ui/flags/new").await;
    let r = b
        .post("/ui/flags", &[form[0], form[1], form[2], ("csrf", &csrf)])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/ui/projects/default/features/from-ui?env="));
    // An invalid name gets the API's validation message on the form.
    let r = b
        .post(
            "/ui/flags",
            &[
                form[0],
                ("name", "no spaces allowed"),
                form[2],
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("id=\"form-error\""));

    // Turn it on, set exposure; each is audited as the person.
    let base = "/ui/projects/default/features/from-ui/environments/development";
    let r = b
        .post(
            &format!("{base}/toggle"),
            &[("csrf", &csrf), ("enabled", "true")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = b
        .post(
            &format!("{base}/exposure"),
            &[("csrf", &csrf), ("exposure", "40")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = b
        .post(
            &format!("{base}/exposure"),
            &[("csrf", &csrf), ("exposure", "-1")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let feature = json_with_status(
        app.get("/api/admin/projects/default/features/from-ui")
            .await,
        200,
    )
    .await;
    let dev = feature["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "development")
        .unwrap();
    assert_eq!(dev["enabled"], true);
    assert_eq!(dev["strategies"][0]["parameters"]["rollout"], "40");

    // Arm a fuse from the form, then a bad threshold gets the API's field message.
    let r = b.post(&format!("{base}/fuse"), &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = b
        .post(
            &format!("{base}/fuse"),
            &[("csrf", &csrf), ("alpha_rollback", "0.9")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("id=\"e-alpha_rollback\""),
        "the error sits at its field"
    );
    let api = app
        .put(
            "/api/admin/projects/default/features/from-ui/environments/development/fuse",
            &json!({"alpha_rollback": 0.9}),
        )
        .await;
    let api = json_with_status(api, 400).await;
    let message = api["details"][0]["message"].as_str().unwrap();
    assert!(
        unescape(&html).contains(message),
        "the UI shows the API's message: {message}"
    );
    let r = b
        .post(
            &format!("{base}/fuse"),
            &[
                ("csrf", &csrf),
                ("min_hours_per_step", "12"),
                ("ramp_steps_pct", "10, 50, 100"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let fuse = json_with_status(
        app.get("/api/admin/projects/default/features/from-ui/environments/development/fuse")
            .await,
        200,
    )
    .await;
    assert_eq!(fuse["config"]["min_hours_per_step"], 12);
    assert_eq!(fuse["config"]["ramp_steps_pct"], json!([10.0, 50.0, 100.0]));

    // Pause needs a confirmation page, then is audited with who.
    let confirm = b.get(&format!("{base}/fuse/pause")).await;
    assert_eq!(confirm.status(), StatusCode::OK);
    assert!(confirm.text().await.unwrap().contains(EMAIL));
    let r = b
        .post(&format!("{base}/fuse/pause"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = b
        .get("/ui/projects/default/features/from-ui?env=development")
        .await;
    let html = page.text().await.unwrap();
    assert!(
        unescape(&html).contains("Paused by user:pm@example.com"),
        "who paused it is shown"
    );

    let audit = json_with_status(
        app.get("/api/admin/events?feature=from-ui&limit=50").await,
        200,
    )
    .await;
    let by_pm: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["createdBy"] == "user:pm@example.com")
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for kind in [
        "feature-created",
        "fuse-armed",
        "fuse-configured",
        "fuse-pause",
    ] {
        assert!(by_pm.contains(&kind), "{kind} by the user: {by_pm:?}");
    }
    // The audit API filters by actor, kind and time too.
    let only = json_with_status(
        app.get("/api/admin/events?actor=user:pm@example.com&type=fuse-pause")
            .await,
        200,
    )
    .await;
    assert_eq!(only["events"].as_array().unwrap().len(), 1);
    let none = json_with_status(app.get("/api/admin/events?until=1000").await, 200).await;
    assert_eq!(none["events"].as_array().unwrap().len(), 0);
}

async fn logins_are_rate_limited(app: TestApp) {
    let mut b = Browser::new(&app.address);
    for _ in 0..10 {
        assert_eq!(
            b.login(EMAIL, "nope").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let r = b.login(EMAIL, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert!(!b.has_cookie("fusebox_session"));
}

async fn roles_bound_the_ui_and_the_api_tokens_users_get(app: TestApp) {
    add_user(&app, "viewer@example.com", Role::Viewer).await;
    add_user(&app, "editor@example.com", Role::Editor).await;
    app.create_feature("guarded").await;

    let mut viewer = Browser::new(&app.address);
    assert_eq!(
        viewer.login("viewer@example.com", PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    let csrf = viewer.csrf("/ui/").await;
    let toggle = "/ui/projects/default/features/guarded/environments/development/toggle";
    assert_eq!(
        viewer
            .post(toggle, &[("csrf", &csrf), ("enabled", "true")])
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        viewer.get("/ui/tokens").await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        viewer.get("/ui/flags/new").await.status(),
        StatusCode::FORBIDDEN
    );
    let page = viewer
        .get("/ui/projects/default/features/guarded")
        .await
        .text()
        .await
        .unwrap();
    assert!(!page.contains("/toggle"), "a viewer sees no toggles");

    // A viewer's own API token reads but cannot write.
    let r = viewer
        .post("/ui/account/token", &[("csrf", &csrf), ("name", "laptop")])
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let html = r.text().await.unwrap();
    let at = html.find("value=\"*:*.").expect("the secret") + 7;
    let secret = html[at..].split('"').next().unwrap().to_string();
    let read = app
        .request(reqwest::Method::GET, "/api/admin/projects")
        .header("Authorization", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let write = app
        .request(
            reqwest::Method::POST,
            "/api/admin/projects/default/features",
        )
        .header("Authorization", &secret)
        .json(&json!({"name": "nope"}))
        .send()
        .await
        .unwrap();
    let body = json_with_status(write, 403).await;
    assert!(
        body["message"].as_str().unwrap().contains("viewer"),
        "{body}"
    );

    // An editor's token changes flags but not tokens.
    let mut editor = Browser::new(&app.address);
    editor.login("editor@example.com", PASSWORD).await;
    let csrf = editor.csrf("/ui/account").await;
    assert_eq!(
        editor
            .post(toggle, &[("csrf", &csrf), ("enabled", "true")])
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        editor.get("/ui/users").await.status(),
        StatusCode::FORBIDDEN
    );
    let html = editor
        .post("/ui/account/token", &[("csrf", &csrf)])
        .await
        .text()
        .await
        .unwrap();
    let at = html.find("value=\"*:*.").unwrap() + 7;
    let secret = html[at..].split('"').next().unwrap().to_string();
    let create = app
        .request(
            reqwest::Method::POST,
            "/api/admin/projects/default/features",
        )
        .header("Authorization", &secret)
        .json(&json!({"name": "by-editor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 201);
    let tokens = app
        .request(reqwest::Method::GET, "/api/admin/api-tokens")
        .header("Authorization", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(tokens.status(), 403);

    // Admin tokens with a role through the API; the role is listed, never the secret.
    let r = app
        .post(
            "/api/admin/api-tokens",
            &json!({"tokenName": "ro", "type": "admin", "role": "viewer"}),
        )
        .await;
    let created = json_with_status(r, 201).await;
    assert_eq!(created["role"], "viewer");
    let r = app
        .post(
            "/api/admin/api-tokens",
            &json!({"tokenName": "x", "type": "admin", "role": "root"}),
        )
        .await;
    assert_eq!(json_with_status(r, 400).await["details"][0]["path"], "role");
    let r = app
        .post("/api/admin/api-tokens", &json!({"tokenName": "x", "type": "client", "environment": "development", "role": "viewer"}))
        .await;
    assert_eq!(r.status(), 400);

    // The last admin cannot be demoted or deleted.
    let users = app.state.store.list_users().await.unwrap();
    let pm = users.iter().find(|u| u.email == EMAIL).unwrap();
    let mut admin = Browser::new(&app.address);
    admin.login(EMAIL, PASSWORD).await;
    let csrf = admin.csrf("/ui/users").await;
    let r = admin
        .post(
            &format!("/ui/users/{}/role", pm.id),
            &[("csrf", &csrf), ("role", "viewer")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = admin
        .post(&format!("/ui/users/{}/delete", pm.id), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(app.state.store.get_user(pm.id).await.unwrap().is_some());
    // A role change applies to a live session at once.
    let v = users
        .iter()
        .find(|u| u.email == "editor@example.com")
        .unwrap();
    let r = admin
        .post(
            &format!("/ui/users/{}/role", v.id),
            &[("csrf", &csrf), ("role", "viewer")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let csrf_e = editor.csrf("/ui/account").await;
    assert_eq!(
        editor
            .post(toggle, &[("csrf", &csrf_e), ("enabled", "false")])
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}

async fn setup_creates_the_first_admin_once(app: TestApp) {
    // This app was started without FUSEBOX_ADMIN_*: no user exists.
    let mut b = Browser::new(&app.address);
    let r = b.get("/ui/login").await;
    assert_eq!(location(&r), "/ui/setup");
    let csrf = b.csrf("/ui/setup").await;
    let short = b
        .post(
            "/ui/setup",
            &[
                ("csrf", &csrf),
                ("email", "first@example.com"),
                ("password", "short"),
                ("confirm", "short"),
            ],
        )
        .await;
    assert_eq!(short.status(), StatusCode::BAD_REQUEST);
    let csrf = b.csrf("/ui/setup").await;
    let ok = b
        .post(
            "/ui/setup",
            &[
                ("csrf", &csrf),
                ("email", "first@example.com"),
                ("password", PASSWORD),
                ("confirm", PASSWORD),
            ],
        )
        .await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert!(b.has_cookie("fusebox_session"));
    assert_eq!(
        b.get("/ui/users").await.status(),
        StatusCode::OK,
        "the first user is an admin"
    );
    // Setup is gone now.
    let mut other = Browser::new(&app.address);
    assert_eq!(location(&other.get("/ui/setup").await), "/ui/login");
    let users = app.state.store.list_users().await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].role, Role::Admin);
}

async fn the_session_key_is_generated_once_and_shared_through_the_database(app: TestApp) {
    let mut b = Browser::new(&app.address);
    assert_eq!(
        b.login(EMAIL, PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    let stored = app
        .state
        .store
        .server_secret("jwt_secret", "another")
        .await
        .unwrap();
    assert_ne!(stored, "another", "the first generated key stays");
    assert_eq!(stored.len(), 64);

    // A second server on the same database (a replica, or a restart) accepts the session.
    let second = fusebox::app::Application::build(fusebox::config::Settings {
        init_admin_tokens: vec![],
        init_client_tokens: vec![],
        init_frontend_tokens: vec![],
        ..with_admin(crate::helpers::test_settings(app.database_url.clone()))
    })
    .await
    .unwrap();
    let port = second.port();
    tokio::spawn(second.run_until_stopped());
    let mut b2 = Browser::new(&format!("http://127.0.0.1:{port}"));
    b2.cookies = b.cookies.clone();
    assert_eq!(b2.get("/ui/").await.status(), StatusCode::OK);

    // One with another FUSEBOX_JWT_SECRET does not.
    let third = fusebox::app::Application::build(fusebox::config::Settings {
        init_admin_tokens: vec![],
        init_client_tokens: vec![],
        init_frontend_tokens: vec![],
        jwt_secret: Some(fusebox::config::Secret("x".repeat(40))),
        ..crate::helpers::test_settings(app.database_url.clone())
    })
    .await
    .unwrap();
    let port = third.port();
    tokio::spawn(third.run_until_stopped());
    let mut b3 = Browser::new(&format!("http://127.0.0.1:{port}"));
    b3.cookies = b.cookies.clone();
    assert_eq!(b3.get("/ui/").await.status(), StatusCode::SEE_OTHER);
    // A short configured key is refused at start.
    let short = fusebox::app::Application::build(fusebox::config::Settings {
        jwt_secret: Some(fusebox::config::Secret("short".into())),
        ..crate::helpers::test_settings(app.database_url.clone())
    })
    .await;
    assert!(short.is_err());
}

async fn the_events_page_counts_ingestion_per_hour(app: TestApp) {
    app.create_feature("counted").await;
    let now = chrono::Utc::now().timestamp_millis();
    let events = json!([
        {"type": "exposure", "id": "123e4567-e89b-12d3-a456-426614174001", "user_id": "u1", "feature": "counted", "enabled": true, "timestamp": now},
        {"type": "activity", "id": "123e4567-e89b-12d3-a456-426614174002", "user_id": "u1", "name": "click", "timestamp": now},
        {"type": "exposure", "id": "123e4567-e89b-12d3-a456-426614174003", "user_id": "u1", "feature": "no-such-flag", "enabled": true, "timestamp": now}
    ]);
    // The same batch twice: the second time its two good events are duplicates.
    for _ in 0..2 {
        let r = app
            .request(reqwest::Method::POST, "/api/events")
            .header("Authorization", CLIENT_TOKEN)
            .json(&events)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let hours = app.state.store.ingest_hourly(0).await.unwrap();
    let total = |f: fn(&fusebox::store::IngestHour) -> i64| hours.iter().map(f).sum::<i64>();
    assert_eq!(total(|h| h.accepted), 2, "{hours:?}");
    assert_eq!(total(|h| h.duplicates), 2, "{hours:?}");
    assert_eq!(total(|h| h.quarantined), 2, "{hours:?}");

    let mut b = Browser::new(&app.address);
    b.login(EMAIL, PASSWORD).await;
    let html = b.get("/ui/events").await.text().await.unwrap();
    assert!(
        html.contains("unknown_feature"),
        "the quarantine lists the reason"
    );
    assert!(html.contains("<svg"), "the hourly chart");
    // Discard it from the UI.
    let csrf = b.csrf("/ui/events").await;
    let item = app.state.store.list_quarantine(None, 10).await.unwrap();
    let r = b
        .post(
            &format!("/ui/events/quarantine/{}/discard", item[0].id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(location(&r), "/ui/events?done=discarded");
    assert_eq!(
        app.state
            .store
            .list_quarantine(None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

mod with_admin_env {
    use super::*;

    macro_rules! ui_tests {
        ($($name:ident),+) => {
            pub mod sqlite { $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(app) = super::spawn(crate::helpers::Backend::Sqlite).await { super::$name(app).await; }
                }
            )+ }
            pub mod postgres { $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(app) = super::spawn(crate::helpers::Backend::Postgres).await { super::$name(app).await; }
                }
            )+ }
        };
    }
    ui_tests!(
        login_sets_a_strict_session_and_pages_need_it,
        forms_need_the_session_csrf_token_and_changes_are_audited,
        logins_are_rate_limited,
        roles_bound_the_ui_and_the_api_tokens_users_get,
        the_session_key_is_generated_once_and_shared_through_the_database,
        the_events_page_counts_ingestion_per_hour
    );
}

crate::both_backends!(setup_creates_the_first_admin_once);
