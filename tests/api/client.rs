//! The Unleash client API: features with scope, filters, segments and ETag; register
//! and metrics.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{json_with_status, TestApp, CLIENT_TOKEN, FRONTEND_TOKEN};

const F: &str = "/api/admin/projects/default/features";

async fn client_get(
    app: &TestApp,
    token: &str,
    path: &str,
    spec: Option<&str>,
) -> reqwest::Response {
    let mut r = app
        .request(Method::GET, path)
        .header("Authorization", token);
    if let Some(spec) = spec {
        r = r.header("Unleash-Client-Spec", spec);
    }
    r.send().await.unwrap()
}

async fn names(r: reqwest::Response) -> Vec<String> {
    let body = json_with_status(r, 200).await;
    body["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

async fn features_are_served_in_unleash_format_with_etag_and_304(app: TestApp) {
    app.create_feature("b.flag").await;
    app.create_feature("a.flag").await;
    app.post(&format!("{F}/a.flag/environments/development/strategies"),
        &json!({"name": "flexibleRollout", "parameters": {"rollout": "50", "stickiness": "default", "groupId": "a.flag"}})).await;
    app.post(
        &format!("{F}/a.flag/environments/development/on"),
        &json!({}),
    )
    .await;

    let r = client_get(&app, CLIENT_TOKEN, "/api/client/features", Some("5.2.0")).await;
    let etag = r
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong etag: {etag}"
    );
    let body = json_with_status(r, 200).await;
    assert_eq!(body["version"], 2);
    assert_eq!(body["features"][0]["name"], "a.flag");
    assert_eq!(body["features"][0]["enabled"], true);
    assert_eq!(
        body["features"][0]["strategies"][0]["parameters"]["rollout"],
        "50"
    );
    assert!(body["features"][0]["strategies"][0].get("id").is_none());
    assert_eq!(body["features"][1]["enabled"], false);
    assert_eq!(body["query"]["environment"], "development");
    assert_eq!(body["meta"]["etag"], etag.as_str());

    let r = app
        .request(Method::GET, "/api/client/features")
        .header("Authorization", CLIENT_TOKEN)
        .header("Unleash-Client-Spec", "5.2.0")
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert!(r.text().await.unwrap().is_empty());

    // Any visible change gives a new ETag, and the change is served at once.
    app.post(
        &format!("{F}/b.flag/environments/development/on"),
        &json!({}),
    )
    .await;
    let r = app
        .request(Method::GET, "/api/client/features")
        .header("Authorization", CLIENT_TOKEN)
        .header("Unleash-Client-Spec", "5.2.0")
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(r.headers().get("etag").unwrap().to_str().unwrap(), etag);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["features"][1]["enabled"], true);

    // A change in another environment does not change this one's ETag... but the
    // body is the same, so the same ETag comes back.
    let before = client_get(&app, CLIENT_TOKEN, "/api/client/features", Some("5.2.0")).await;
    let before_etag = before
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    app.post(
        &format!("{F}/b.flag/environments/production/on"),
        &json!({}),
    )
    .await;
    let after = client_get(&app, CLIENT_TOKEN, "/api/client/features", Some("5.2.0")).await;
    assert_eq!(
        after.headers().get("etag").unwrap().to_str().unwrap(),
        before_etag
    );
}

async fn only_client_tokens_may_poll_and_scope_limits_what_they_see(app: TestApp) {
    let r = app
        .request(Method::GET, "/api/client/features")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client_get(&app, FRONTEND_TOKEN, "/api/client/features", None).await;
    assert_eq!(r.status(), 403);
    let r = client_get(
        &app,
        crate::helpers::ADMIN_TOKEN,
        "/api/client/features",
        None,
    )
    .await;
    assert_eq!(r.status(), 403);

    app.post("/api/admin/projects", &json!({"id": "web", "name": "Web"}))
        .await;
    app.create_feature("default.one").await;
    let r = app
        .post(
            "/api/admin/projects/web/features",
            &json!({"name": "web.one"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let created = json_with_status(
        app.post("/api/admin/api-tokens", &json!({"tokenName": "web-prod", "type": "client", "environment": "production", "projects": ["web"]})).await,
        201,
    )
    .await;
    let scoped = created["secret"].as_str().unwrap().to_string();

    assert_eq!(
        names(client_get(&app, &scoped, "/api/client/features", None).await).await,
        vec!["web.one"]
    );
    let body = json_with_status(
        client_get(&app, &scoped, "/api/client/features", None).await,
        200,
    )
    .await;
    assert_eq!(body["query"]["environment"], "production");
    assert!(
        names(client_get(&app, &scoped, "/api/client/features?project=default", None).await)
            .await
            .is_empty()
    );
    assert_eq!(
        names(
            client_get(
                &app,
                CLIENT_TOKEN,
                "/api/client/features?project=default",
                None
            )
            .await
        )
        .await,
        vec!["default.one"]
    );
    assert_eq!(
        names(
            client_get(
                &app,
                CLIENT_TOKEN,
                "/api/client/features?namePrefix=web.",
                None
            )
            .await
        )
        .await,
        vec!["web.one"]
    );
    // Archived features disappear.
    app.delete("/api/admin/projects/web/features/web.one").await;
    assert!(
        names(client_get(&app, &scoped, "/api/client/features", None).await)
            .await
            .is_empty()
    );
}

async fn segments_are_referenced_for_new_sdks_and_inlined_for_old_ones(app: TestApp) {
    let seg = json_with_status(
        app.post(
            "/api/admin/segments",
            &json!({"name": "beta", "constraints": [
            {"contextName": "userId", "operator": "IN", "values": ["1"]}]}),
        )
        .await,
        201,
    )
    .await;
    let id = seg["id"].as_i64().unwrap();
    app.create_feature("seg.flag").await;
    app.post(&format!("{F}/seg.flag/environments/development/strategies"), &json!({"name": "default",
        "constraints": [{"contextName": "appName", "operator": "IN", "values": ["web"]}], "segments": [id]})).await;
    app.post(
        &format!("{F}/seg.flag/environments/development/strategies"),
        &json!({"name": "userWithId",
        "parameters": {"userIds": "9"}, "disabled": true}),
    )
    .await;

    let new = json_with_status(
        client_get(&app, CLIENT_TOKEN, "/api/client/features", Some("4.2.0")).await,
        200,
    )
    .await;
    assert_eq!(new["segments"][0]["id"], id);
    assert_eq!(new["features"][0]["strategies"][0]["segments"][0], id);
    assert_eq!(
        new["features"][0]["strategies"][0]["constraints"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(new["query"]["inlineSegmentConstraints"], false);
    // The disabled strategy is not sent.
    assert_eq!(
        new["features"][0]["strategies"].as_array().unwrap().len(),
        1
    );

    let old = json_with_status(
        client_get(&app, CLIENT_TOKEN, "/api/client/features", Some("4.1.9")).await,
        200,
    )
    .await;
    assert!(old.get("segments").is_none());
    let strategy = &old["features"][0]["strategies"][0];
    assert!(strategy.get("segments").is_none());
    let constraints = strategy["constraints"].as_array().unwrap();
    assert_eq!(constraints.len(), 2);
    assert_eq!(constraints[1]["contextName"], "userId");
    assert_eq!(old["query"]["inlineSegmentConstraints"], true);
}

async fn sdk_registration_and_metrics_are_accepted_and_counted_hourly(app: TestApp) {
    app.create_feature("counted").await;
    let r = app
        .request(Method::POST, "/api/client/register")
        .header("Authorization", CLIENT_TOKEN)
        .json(&json!({"appName": "checkout", "instanceId": "i-1", "sdkVersion": "unleash-node-sdk:6.12.1",
            "strategies": ["default"], "started": "2026-11-22T08:03:00.068Z", "interval": 15000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let now = chrono::Utc::now().to_rfc3339();
    for _ in 0..2 {
        let r = app
            .request(Method::POST, "/api/client/metrics")
            .header("Authorization", CLIENT_TOKEN)
            .json(&json!({"appName": "checkout", "instanceId": "i-1", "bucket": {"start": now, "stop": now,
                "toggles": {"counted": {"yes": 3, "no": 1, "variants": {"blue": 2}}}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let body = json_with_status(
        app.get(&format!(
            "{F}/counted/metrics?environment=development&hours=2"
        ))
        .await,
        200,
    )
    .await;
    let bucket = &body["buckets"][0];
    assert_eq!(bucket["yes"], 6);
    assert_eq!(bucket["no"], 2);
    assert_eq!(bucket["variants"]["blue"], 4);
    let body = json_with_status(
        app.get(&format!("{F}/counted/metrics?environment=production"))
            .await,
        200,
    )
    .await;
    assert!(body["buckets"].as_array().unwrap().is_empty());

    let bad = [
        json!({"appName": "x"}),
        json!({"appName": "x", "bucket": {"start": "yesterday", "stop": now, "toggles": {}}}),
        json!({"appName": "x", "bucket": {"start": now, "stop": now, "toggles": {"f": {"yes": -1}}}}),
    ];
    for body in bad {
        let r = app
            .request(Method::POST, "/api/client/metrics")
            .header("Authorization", CLIENT_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }
}

async fn tag_filters_select_features_with_any_listed_tag(app: TestApp) {
    for name in ["t.one", "t.two", "t.three"] {
        app.create_feature(name).await;
    }
    let tag = |feature: &str, t: &str, v: &str| {
        let path = format!("/api/admin/features/{feature}/tags");
        let body = json!({"type": t, "value": v});
        async move { (path, body) }
    };
    for (f, t, v) in [
        ("t.one", "team", "checkout"),
        ("t.two", "team", "search"),
        ("t.three", "kind", "ops"),
    ] {
        let (path, body) = tag(f, t, v).await;
        assert_eq!(app.post(&path, &body).await.status(), 201);
    }
    let (path, body) = tag("t.one", "team", "checkout").await;
    assert_eq!(app.post(&path, &body).await.status(), 200);
    let tags = json_with_status(app.get("/api/admin/features/t.one/tags").await, 200).await;
    assert_eq!(tags["tags"][0]["value"], "checkout");

    let got = names(
        client_get(
            &app,
            CLIENT_TOKEN,
            "/api/client/features?tag=team:checkout",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(got, vec!["t.one"]);
    let got = names(
        client_get(
            &app,
            CLIENT_TOKEN,
            "/api/client/features?tag=team:checkout&tag=kind:ops",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(got, vec!["t.one", "t.three"]);
    let r = client_get(&app, CLIENT_TOKEN, "/api/client/features?tag=nocolon", None).await;
    assert_eq!(r.status(), 400);

    assert_eq!(
        app.delete("/api/admin/features/t.one/tags/team/checkout")
            .await
            .status(),
        204
    );
    assert_eq!(
        app.delete("/api/admin/features/t.one/tags/team/checkout")
            .await
            .status(),
        404
    );
    let got = names(
        client_get(
            &app,
            CLIENT_TOKEN,
            "/api/client/features?tag=team:checkout",
            None,
        )
        .await,
    )
    .await;
    assert!(got.is_empty());
    assert_eq!(
        app.post(
            "/api/admin/features/ghost/tags",
            &json!({"type": "a", "value": "b"})
        )
        .await
        .status(),
        404
    );
}

async fn the_delta_api_hydrates_then_sends_only_changes(app: TestApp) {
    app.create_feature("d.one").await;
    app.create_feature("d.two").await;
    let poll = |etag: Option<String>| {
        let mut r = app
            .request(Method::GET, "/api/client/delta")
            .header("Authorization", CLIENT_TOKEN);
        if let Some(etag) = etag {
            r = r.header("If-None-Match", etag);
        }
        r.send()
    };
    let r = poll(None).await.unwrap();
    let etag = r
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let body = json_with_status(r, 200).await;
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "hydration");
    assert_eq!(events[0]["features"].as_array().unwrap().len(), 2);
    assert_eq!(poll(Some(etag.clone())).await.unwrap().status(), 304);

    app.post(
        &format!("{F}/d.one/environments/development/on"),
        &json!({}),
    )
    .await;
    app.delete(&format!("{F}/d.two")).await;
    let r = poll(Some(etag.clone())).await.unwrap();
    let next = r
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let body = json_with_status(r, 200).await;
    let kinds: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["feature-updated", "feature-removed"]);
    assert_eq!(body["events"][0]["feature"]["enabled"], true);
    assert_eq!(body["events"][1]["featureName"], "d.two");
    assert_ne!(next, etag);
    // An ETag the server no longer knows gets a full hydration.
    let body = json_with_status(poll(Some("\"unknown\"".into())).await.unwrap(), 200).await;
    assert_eq!(body["events"][0]["type"], "hydration");
    assert_eq!(body["events"][0]["features"].as_array().unwrap().len(), 1);
}

crate::both_backends!(
    the_delta_api_hydrates_then_sends_only_changes,
    tag_filters_select_features_with_any_listed_tag,
    features_are_served_in_unleash_format_with_etag_and_304,
    only_client_tokens_may_poll_and_scope_limits_what_they_see,
    segments_are_referenced_for_new_sdks_and_inlined_for_old_ones,
    sdk_registration_and_metrics_are_accepted_and_counted_hourly,
);
