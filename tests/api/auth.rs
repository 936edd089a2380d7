//! Token authentication on the admin API; token lifecycle.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{json_with_status, TestApp, CLIENT_TOKEN, FRONTEND_TOKEN};

async fn the_admin_api_needs_an_admin_token(app: TestApp) {
    let path = "/api/admin/projects";
    let r = app.request(Method::GET, path).send().await.unwrap();
    assert_eq!(json_with_status(r, 401).await["code"], "unauthorized");
    let r = app
        .request(Method::GET, path)
        .header("Authorization", "*:*.wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for token in [CLIENT_TOKEN, FRONTEND_TOKEN] {
        let r = app
            .request(Method::GET, path)
            .header("Authorization", token)
            .send()
            .await
            .unwrap();
        assert_eq!(json_with_status(r, 403).await["code"], "forbidden");
    }
    let r = app
        .request(Method::GET, path)
        .header(
            "Authorization",
            format!("Bearer {}", crate::helpers::ADMIN_TOKEN),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn a_created_token_works_once_shown_and_stops_when_deleted(app: TestApp) {
    let r = app
        .post(
            "/api/admin/api-tokens",
            &json!({"tokenName": "ops", "type": "admin"}),
        )
        .await;
    let created = json_with_status(r, 201).await;
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("*:*."), "{secret}");
    let id = created["id"].as_i64().unwrap();
    let r = app
        .request(Method::GET, "/api/admin/projects")
        .header("Authorization", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let list = json_with_status(app.get("/api/admin/api-tokens").await, 200).await;
    let text = list.to_string();
    assert!(
        !text.contains(&secret[4..]),
        "secret leaked in the token list"
    );
    assert!(list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t.get("secret").is_none()));

    let r = app
        .post("/api/admin/api-tokens", &json!({"tokenName": "sdk", "type": "client", "environment": "production", "projects": ["default"]}))
        .await;
    let client = json_with_status(r, 201).await;
    assert!(client["secret"]
        .as_str()
        .unwrap()
        .starts_with("default:production."));

    assert_eq!(
        app.delete(&format!("/api/admin/api-tokens/{id}"))
            .await
            .status(),
        204
    );
    let r = app
        .request(Method::GET, "/api/admin/projects")
        .header("Authorization", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        app.delete(&format!("/api/admin/api-tokens/{id}"))
            .await
            .status(),
        404
    );
}

async fn token_requests_are_validated(app: TestApp) {
    let cases = [
        (json!({"tokenName": "x", "type": "root"}), 400, "type"),
        (
            json!({"tokenName": "x", "type": "client"}),
            400,
            "environment",
        ),
        (json!({"tokenName": "", "type": "admin"}), 400, "tokenName"),
        (
            json!({"tokenName": "x", "type": "client", "environment": "development", "projects": ["ghost"]}),
            400,
            "projects[0]",
        ),
    ];
    for (body, status, path) in cases {
        let got = json_with_status(app.post("/api/admin/api-tokens", &body).await, status).await;
        assert_eq!(got["details"][0]["path"], path, "{body}");
    }
    let r = app
        .post(
            "/api/admin/api-tokens",
            &json!({"tokenName": "x", "type": "client", "environment": "nowhere"}),
        )
        .await;
    assert_eq!(r.status(), 404);
}

crate::both_backends!(
    the_admin_api_needs_an_admin_token,
    a_created_token_works_once_shown_and_stops_when_deleted,
    token_requests_are_validated,
);
