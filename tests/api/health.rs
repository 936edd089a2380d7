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
