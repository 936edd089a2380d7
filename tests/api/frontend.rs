//! Server-side evaluation: the Unleash frontend API and OFREP, with CORS.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{json_with_status, TestApp, CLIENT_TOKEN, FRONTEND_TOKEN};

async fn seed(app: &TestApp) {
    app.import("development", &json!({"version": 1, "features": [
        {"name": "fe.on", "enabled": true, "impressionData": true, "strategies": [{"name": "default"}]},
        {"name": "fe.off", "enabled": false, "strategies": [{"name": "default"}]},
        {"name": "fe.user", "enabled": true, "strategies": [{"name": "userWithId", "parameters": {"userIds": "123"}}]},
        {"name": "fe.plan", "enabled": true, "strategies": [{"name": "default", "constraints": [
            {"contextName": "plan", "operator": "IN", "values": ["pro"]}]}]},
        {"name": "fe.variant", "enabled": true, "strategies": [{"name": "default"}], "variants": [
            {"name": "blue", "weight": 1000, "stickiness": "default", "payload": {"type": "json", "value": "{\"color\":\"blue\"}"}}]},
        {"name": "fe.number", "enabled": true, "strategies": [{"name": "default"}], "variants": [
            {"name": "n", "weight": 1000, "payload": {"type": "number", "value": "42"}}]}
    ]})).await;
}

fn names(body: &Value) -> Vec<String> {
    body["toggles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

async fn the_frontend_api_returns_enabled_flags_for_the_context(app: TestApp) {
    seed(&app).await;
    let get = |q: &'static str| {
        app.request(Method::GET, &format!("/api/frontend{q}"))
            .header("Authorization", FRONTEND_TOKEN)
            .send()
    };
    let body = json_with_status(
        get("?userId=123&properties%5Bplan%5D=pro").await.unwrap(),
        200,
    )
    .await;
    assert_eq!(
        names(&body),
        vec!["fe.number", "fe.on", "fe.plan", "fe.user", "fe.variant"]
    );
    let on = &body["toggles"][1];
    assert_eq!(on["impressionData"], true);
    assert_eq!(
        on["variant"],
        json!({"name": "disabled", "enabled": false, "feature_enabled": true, "featureEnabled": true})
    );
    assert_eq!(body["toggles"][4]["variant"]["name"], "blue");
    assert_eq!(
        body["toggles"][4]["variant"]["payload"]["value"],
        "{\"color\":\"blue\"}"
    );

    let r = get("?userId=7").await.unwrap();
    let etag = r
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(r.headers().get("cache-control").unwrap(), "no-cache");
    assert_eq!(
        names(&json_with_status(r, 200).await),
        vec!["fe.number", "fe.on", "fe.variant"]
    );
    let r = app
        .request(Method::GET, "/api/frontend?userId=7")
        .header("Authorization", FRONTEND_TOKEN)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    let r = app
        .request(Method::POST, "/api/frontend")
        .header("Authorization", FRONTEND_TOKEN)
        .json(&json!({"context": {"userId": "123", "properties": {"plan": "pro"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(names(&json_with_status(r, 200).await).len(), 5);
    let r = app
        .request(Method::POST, "/api/frontend")
        .header("Authorization", FRONTEND_TOKEN)
        .json(&json!({"context": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Client tokens are for /api/client only, and frontend tokens only for this API.
    let r = app
        .request(Method::GET, "/api/frontend")
        .header("Authorization", CLIENT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .request(Method::GET, "/api/frontend")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let now = chrono::Utc::now().to_rfc3339();
    let r = app.request(Method::POST, "/api/frontend/client/metrics").header("Authorization", FRONTEND_TOKEN)
        .json(&json!({"appName": "web", "bucket": {"start": now, "stop": now, "toggles": {"fe.on": {"yes": 1, "no": 0}}}}))
        .send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = app.request(Method::POST, "/api/frontend/client/register").header("Authorization", FRONTEND_TOKEN)
        .json(&json!({"appName": "web", "instanceId": "b1", "strategies": [], "started": now, "interval": 1000}))
        .send().await.unwrap();
    assert_eq!(r.status(), 200);
}

async fn a_project_scoped_frontend_token_sees_only_its_project(app: TestApp) {
    seed(&app).await;
    app.post("/api/admin/projects", &json!({"id": "web", "name": "Web"}))
        .await;
    app.import("development", &json!({"version": 1, "features": [
        {"name": "web.on", "project": "web", "enabled": true, "strategies": [{"name": "default"}]}]})).await;
    let created = json_with_status(app.post("/api/admin/api-tokens",
        &json!({"tokenName": "web-fe", "type": "frontend", "environment": "development", "projects": ["web"]})).await, 201).await;
    let token = created["secret"].as_str().unwrap().to_string();
    let r = app
        .request(Method::GET, "/api/frontend")
        .header("Authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(names(&json_with_status(r, 200).await), vec!["web.on"]);
    let r = app
        .request(Method::POST, "/ofrep/v1/evaluate/flags/fe.on")
        .header("Authorization", format!("Bearer {token}"))
        .json(&json!({"context": {"targetingKey": "1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_with_status(r, 404).await["errorCode"],
        "FLAG_NOT_FOUND"
    );
}

async fn ofrep_evaluates_single_and_bulk_with_its_error_codes(app: TestApp) {
    seed(&app).await;
    let eval = |key: &str, body: Value| {
        app.request(Method::POST, &format!("/ofrep/v1/evaluate/flags/{key}"))
            .header("Authorization", format!("Bearer {FRONTEND_TOKEN}"))
            .json(&body)
            .send()
    };
    let body = json_with_status(
        eval("fe.user", json!({"context": {"targetingKey": "123"}}))
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        body,
        json!({"key": "fe.user", "value": true, "reason": "TARGETING_MATCH", "variant": "enabled",
        "metadata": {"project": "default", "impressionData": false}})
    );
    let body = json_with_status(
        eval("fe.user", json!({"context": {"targetingKey": "9"}}))
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(body["value"], false);
    assert_eq!(body["reason"], "DISABLED");
    let body = json_with_status(
        eval("fe.variant", json!({"context": {"targetingKey": "9"}}))
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(body["value"], json!({"color": "blue"}));
    assert_eq!(body["variant"], "blue");
    assert_eq!(body["reason"], "SPLIT");
    let body = json_with_status(
        eval("fe.number", json!({"context": {"targetingKey": "9"}}))
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(body["value"], 42);
    let body = json_with_status(
        eval(
            "fe.plan",
            json!({"context": {"targetingKey": "9", "plan": "pro"}}),
        )
        .await
        .unwrap(),
        200,
    )
    .await;
    assert_eq!(body["value"], true);

    let body = json_with_status(eval("nope", json!({"context": {}})).await.unwrap(), 404).await;
    assert_eq!(body["errorCode"], "FLAG_NOT_FOUND");
    assert_eq!(body["key"], "nope");
    let body = json_with_status(eval("fe.on", json!({"nocontext": 1})).await.unwrap(), 400).await;
    assert_eq!(body["errorCode"], "INVALID_CONTEXT");
    let r = app
        .request(Method::POST, "/ofrep/v1/evaluate/flags/fe.on")
        .header("X-API-Key", FRONTEND_TOKEN)
        .header("content-type", "application/json")
        .body("{broken")
        .send()
        .await
        .unwrap();
    assert_eq!(json_with_status(r, 400).await["errorCode"], "PARSE_ERROR");
    let r = app
        .request(Method::POST, "/ofrep/v1/evaluate/flags/fe.on")
        .json(&json!({"context": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Bulk: every flag (including disabled ones, as DISABLED), ETag and 304.
    let bulk = |etag: Option<String>| {
        let mut r = app
            .request(Method::POST, "/ofrep/v1/evaluate/flags")
            .header("X-API-Key", CLIENT_TOKEN)
            .json(&json!({"context": {"targetingKey": "123"}}));
        if let Some(etag) = etag {
            r = r.header("If-None-Match", etag);
        }
        r.send()
    };
    let r = bulk(None).await.unwrap();
    let etag = r
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let body = json_with_status(r, 200).await;
    let flags = body["flags"].as_array().unwrap();
    assert_eq!(flags.len(), 6);
    let off = flags.iter().find(|f| f["key"] == "fe.off").unwrap();
    assert_eq!(off["reason"], "DISABLED");
    assert_eq!(bulk(Some(etag.clone())).await.unwrap().status(), 304);
    app.post(
        "/api/admin/projects/default/features/fe.off/environments/development/on",
        &json!({}),
    )
    .await;
    let r = bulk(Some(etag)).await.unwrap();
    assert_eq!(r.status(), 200);
}

async fn browsers_may_call_the_frontend_api_but_get_no_cors_on_admin(app: TestApp) {
    let r = app
        .request(Method::OPTIONS, "/api/frontend")
        .header("Origin", "https://shop.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers().get("access-control-allow-origin").unwrap(), "*");
    assert_eq!(
        r.headers().get("access-control-allow-headers").unwrap(),
        "authorization"
    );
    let r = app
        .request(Method::GET, "/api/frontend")
        .header("Origin", "https://shop.example")
        .header("Authorization", FRONTEND_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("access-control-allow-origin").unwrap(), "*");
    assert_eq!(
        r.headers().get("access-control-expose-headers").unwrap(),
        "ETag"
    );
    let r = app
        .admin(Method::GET, "/api/admin/projects")
        .header("Origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

crate::both_backends!(
    the_frontend_api_returns_enabled_flags_for_the_context,
    a_project_scoped_frontend_token_sees_only_its_project,
    ofrep_evaluates_single_and_bulk_with_its_error_codes,
    browsers_may_call_the_frontend_api_but_get_no_cors_on_admin,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_configured_origins_get_cors_headers() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, |mut s| {
        s.cors_origins = vec!["https://good.example".into()];
        s
    })
    .await
    .unwrap();
    let preflight = |origin: &'static str| {
        app.request(Method::OPTIONS, "/ofrep/v1/evaluate/flags")
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .send()
    };
    let r = preflight("https://good.example").await.unwrap();
    assert_eq!(
        r.headers().get("access-control-allow-origin").unwrap(),
        "https://good.example"
    );
    let r = preflight("https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}
