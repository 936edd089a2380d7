use crate::helpers::{Backend, TestApp};

async fn health_and_ready_answer_200_while_the_database_answers(app: TestApp) {
    let r = app
        .request(reqwest::Method::GET, "/health")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .request(reqwest::Method::GET, "/ready")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn unknown_paths_get_a_json_404(app: TestApp) {
    let r = app.get("/api/admin/nope").await;
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
}

crate::both_backends!(
    health_and_ready_answer_200_while_the_database_answers,
    unknown_paths_get_a_json_404
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_answers_503_once_the_postgres_database_is_gone() {
    use sqlx::{Connection, Executor};
    let Some(app) = crate::helpers::spawn_app(Backend::Postgres).await else {
        return;
    };
    let name = app.database_url.rsplit('/').next().unwrap().to_string();
    let mut admin = sqlx::PgConnection::connect(&crate::helpers::pg_admin_url())
        .await
        .unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "drop database \"{name}\" with (force)"
        )))
        .await
        .unwrap();
    let r = app
        .request(reqwest::Method::GET, "/ready")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "service_unavailable");
    let r = app
        .request(reqwest::Method::GET, "/health")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_per_route_events_and_cache_hits() {
    let app = crate::helpers::spawn_app(Backend::Sqlite).await.unwrap();
    for _ in 0..2 {
        let r = app
            .request(reqwest::Method::GET, "/api/client/features")
            .header("Authorization", crate::helpers::CLIENT_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let now = chrono::Utc::now().timestamp_millis();
    let r = app
        .request(reqwest::Method::POST, "/api/events")
        .header("Authorization", crate::helpers::CLIENT_TOKEN)
        .json(
            &serde_json::json!([{"type": "activity", "user_id": "m", "name": "a", "timestamp": now},
                                   {"type": "nope", "user_id": "m", "timestamp": now}]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let text = app
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} missing from:\n{text}"))
    };
    assert!(value("fusebox_http_requests_total{method=\"GET\",route=\"/api/client/features\",status=\"200\"}") >= 2.0);
    assert!(value("fusebox_client_features_cache_total{result=\"hit\"}") >= 1.0);
    assert!(value("fusebox_events_total{outcome=\"accepted\"}") >= 1.0);
    assert!(value("fusebox_events_total{outcome=\"rejected\"}") >= 1.0);
    assert!(text.contains("fusebox_http_request_duration_seconds_bucket"));
    assert!(text.contains("fusebox_ingest_queue_events"));
}
