//! The admin API: projects, environments, features, strategies, variants,
//! dependencies, segments, audit, and precise errors for bad input.

use serde_json::{json, Value};

use crate::helpers::{json_with_status, TestApp};

const F: &str = "/api/admin/projects/default/features";

async fn projects_and_environments_start_with_defaults_and_can_be_added(app: TestApp) {
    let body = json_with_status(app.get("/api/admin/projects").await, 200).await;
    assert_eq!(body["projects"][0]["id"], "default");
    let body = json_with_status(app.get("/api/admin/environments").await, 200).await;
    let names: Vec<&str> = body["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["development", "production"]);

    let r = app
        .post(
            "/api/admin/projects",
            &json!({"id": "web", "name": "Web", "description": "site"}),
        )
        .await;
    assert_eq!(json_with_status(r, 201).await["id"], "web");
    let r = app
        .post(
            "/api/admin/projects",
            &json!({"id": "web", "name": "Again"}),
        )
        .await;
    assert_eq!(json_with_status(r, 409).await["code"], "conflict");
    let r = app
        .post(
            "/api/admin/environments",
            &json!({"name": "staging", "type": "test"}),
        )
        .await;
    assert_eq!(json_with_status(r, 201).await["name"], "staging");
    let r = app
        .post(
            "/api/admin/environments",
            &json!({"name": "bad name", "type": "test"}),
        )
        .await;
    let body = json_with_status(r, 400).await;
    assert_eq!(body["details"][0]["path"], "name");
}

async fn a_feature_is_created_read_updated_toggled_and_archived(app: TestApp) {
    let created = app.create_feature("new.checkout").await;
    assert_eq!(created["type"], "release");
    assert_eq!(created["environments"][0]["enabled"], false);

    let r = app
        .put(
            &format!("{F}/new.checkout"),
            &json!({"description": "Checkout v2", "type": "experiment"}),
        )
        .await;
    let body = json_with_status(r, 200).await;
    assert_eq!(body["description"], "Checkout v2");
    assert_eq!(body["type"], "experiment");

    let r = app
        .post(
            &format!("{F}/new.checkout/environments/production/on"),
            &json!({}),
        )
        .await;
    let body = json_with_status(r, 200).await;
    let prod = body["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "production")
        .unwrap()
        .clone();
    assert_eq!(prod["enabled"], true);

    let list = json_with_status(app.get(F).await, 200).await;
    assert_eq!(list["features"].as_array().unwrap().len(), 1);

    assert_eq!(app.delete(&format!("{F}/new.checkout")).await.status(), 202);
    assert_eq!(app.get(&format!("{F}/new.checkout")).await.status(), 404);
    let list = json_with_status(app.get(F).await, 200).await;
    assert!(list["features"].as_array().unwrap().is_empty());
    // The archived name stays taken.
    let r = app.post(F, &json!({"name": "new.checkout"})).await;
    assert_eq!(r.status(), 409);
}

async fn bad_feature_input_gets_a_precise_4xx(app: TestApp) {
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"name": "has space"}),
            400,
            "validation_error",
            "name",
        ),
        (json!({"name": ""}), 400, "validation_error", "name"),
        (
            json!({"name": "ok", "type": "nonsense"}),
            400,
            "validation_error",
            "type",
        ),
        (json!({"name": 5}), 400, "invalid_json", "name"),
        (
            json!({"name": "ok", "colour": "red"}),
            400,
            "invalid_json",
            "colour",
        ),
        (json!({}), 400, "invalid_json", "$"),
    ];
    for (body, status, code, path) in cases {
        let r = app.post(F, &body).await;
        let got = json_with_status(r, status).await;
        assert_eq!(got["code"], code, "{body}");
        assert_eq!(got["details"][0]["path"], path, "{body}: {got}");
    }
    let r = app
        .admin(reqwest::Method::POST, F)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(json_with_status(r, 400).await["code"], "invalid_json");
    let r = app
        .post("/api/admin/projects/nope/features", &json!({"name": "x"}))
        .await;
    assert_eq!(json_with_status(r, 404).await["code"], "not_found");
    let r = app.get(&format!("{F}/missing")).await;
    assert_eq!(r.status(), 404);
    let r = app
        .post(&format!("{F}/missing/environments/nowhere/on"), &json!({}))
        .await;
    assert_eq!(r.status(), 404);
}

async fn a_body_over_the_limit_gets_413(app: TestApp) {
    let big = "x".repeat(11 * 1024 * 1024);
    let r = app
        .admin(reqwest::Method::POST, F)
        .header("content-type", "application/json")
        .body(format!("{{\"name\":\"a\",\"description\":\"{big}\"}}"))
        .send()
        .await
        .unwrap();
    let body = json_with_status(r, 413).await;
    assert_eq!(body["code"], "payload_too_large");
    assert!(body["message"].as_str().unwrap().contains("10485760"));
}

async fn strategies_are_added_listed_updated_and_removed_in_order(app: TestApp) {
    app.create_feature("f").await;
    let base = format!("{F}/f/environments/development/strategies");
    let r = app
        .post(&base, &json!({"name": "flexibleRollout", "parameters": {"rollout": 25, "stickiness": "default"},
            "constraints": [{"contextName": "appName", "operator": "IN", "values": ["web"]}]}))
        .await;
    let first = json_with_status(r, 200).await;
    assert_eq!(first["parameters"]["rollout"], "25");
    let id = first["id"].as_str().unwrap().to_string();
    let r = app
        .post(
            &base,
            &json!({"name": "userWithId", "parameters": {"userIds": "1,2"}}),
        )
        .await;
    json_with_status(r, 200).await;
    let list = json_with_status(app.get(&base).await, 200).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["flexibleRollout", "userWithId"]);

    let r = app
        .put(
            &format!("{base}/{id}"),
            &json!({"name": "flexibleRollout", "parameters": {"rollout": "75"}}),
        )
        .await;
    assert_eq!(
        json_with_status(r, 200).await["parameters"]["rollout"],
        "75"
    );
    let r = app
        .put(
            &format!("{base}/{id}"),
            &json!({"name": "flexibleRollout", "parameters": {"rollout": "175"}}),
        )
        .await;
    let err = json_with_status(r, 400).await;
    assert_eq!(err["details"][0]["path"], "parameters.rollout");
    let r = app
        .post(&base, &json!({"name": "default", "constraints": [{"contextName": "x", "operator": "NUM_GT"}]}))
        .await;
    assert_eq!(
        json_with_status(r, 400).await["details"][0]["path"],
        "constraints[0].value"
    );
    let r = app
        .post(&base, &json!({"name": "default", "segments": [999]}))
        .await;
    assert_eq!(
        json_with_status(r, 400).await["details"][0]["path"],
        "segments[0]"
    );

    assert_eq!(app.delete(&format!("{base}/{id}")).await.status(), 200);
    assert_eq!(app.delete(&format!("{base}/{id}")).await.status(), 404);
    let list = json_with_status(app.get(&base).await, 200).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

async fn variants_get_unleash_weights_and_dependencies_are_one_level(app: TestApp) {
    app.create_feature("parent").await;
    app.create_feature("child").await;
    app.create_feature("grandchild").await;
    let r = app
        .put(&format!("{F}/child/environments/development/variants"), &json!([
            {"name": "a", "weight": 0, "weightType": "variable"},
            {"name": "b", "weight": 200, "weightType": "fix", "payload": {"type": "json", "value": "{\"x\":1}"}},
            {"name": "c", "weight": 0}
        ]))
        .await;
    let body = json_with_status(r, 200).await;
    let weights: Vec<u64> = body["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, vec![400, 200, 400]);
    let r = app
        .put(
            &format!("{F}/child/environments/development/variants"),
            &json!([
                {"name": "a", "weight": 0, "payload": {"type": "json", "value": "{broken"}}
            ]),
        )
        .await;
    assert_eq!(
        json_with_status(r, 400).await["details"][0]["path"],
        "[0].payload.value"
    );

    let r = app
        .put(
            &format!("{F}/child/dependencies"),
            &json!([{"feature": "parent", "variants": ["blue"]}]),
        )
        .await;
    assert_eq!(
        json_with_status(r, 200).await["dependencies"][0]["feature"],
        "parent"
    );
    let r = app
        .put(
            &format!("{F}/grandchild/dependencies"),
            &json!([{"feature": "child"}]),
        )
        .await;
    assert_eq!(
        json_with_status(r, 400).await["details"][0]["path"],
        "[0].feature"
    );
    let r = app
        .put(
            &format!("{F}/parent/dependencies"),
            &json!([{"feature": "grandchild"}]),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = app
        .put(
            &format!("{F}/child/dependencies"),
            &json!([{"feature": "ghost"}]),
        )
        .await;
    assert_eq!(r.status(), 400);
    // A parent with a live child cannot be archived.
    assert_eq!(app.delete(&format!("{F}/parent")).await.status(), 409);
    let feature = json_with_status(app.get(&format!("{F}/child")).await, 200).await;
    assert_eq!(feature["dependencies"][0]["variants"][0], "blue");
}

async fn segments_are_managed_and_protected_while_in_use(app: TestApp) {
    let r = app
        .post(
            "/api/admin/segments",
            &json!({"name": "beta", "constraints": [
            {"contextName": "userId", "operator": "IN", "values": ["1", "2"]}]}),
        )
        .await;
    let seg = json_with_status(r, 201).await;
    let id = seg["id"].as_i64().unwrap();
    let r = app
        .post("/api/admin/segments", &json!({"name": "beta"}))
        .await;
    assert_eq!(r.status(), 409);
    let r = app
        .put(
            &format!("/api/admin/segments/{id}"),
            &json!({"name": "beta-users", "constraints": []}),
        )
        .await;
    assert_eq!(json_with_status(r, 200).await["name"], "beta-users");
    app.create_feature("f").await;
    let r = app
        .post(
            &format!("{F}/f/environments/development/strategies"),
            &json!({"name": "default", "segments": [id]}),
        )
        .await;
    json_with_status(r, 200).await;
    assert_eq!(
        app.delete(&format!("/api/admin/segments/{id}"))
            .await
            .status(),
        409
    );
    let list = json_with_status(app.get("/api/admin/segments").await, 200).await;
    assert_eq!(list["segments"].as_array().unwrap().len(), 1);
    assert_eq!(app.delete("/api/admin/segments/9999").await.status(), 404);
    let r = app.get("/api/admin/segments/abc").await;
    assert!(r.status() == 404 || r.status() == 405, "{}", r.status());
}

async fn every_change_is_in_the_audit_log_with_before_and_after(app: TestApp) {
    app.create_feature("audited").await;
    app.put(&format!("{F}/audited"), &json!({"description": "new"}))
        .await;
    app.post(
        &format!("{F}/audited/environments/development/on"),
        &json!({}),
    )
    .await;
    app.create_feature("other").await;
    let body = json_with_status(app.get("/api/admin/events?feature=audited").await, 200).await;
    let events = body["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        vec![
            "feature-environment-enabled",
            "feature-updated",
            "feature-created"
        ]
    );
    assert_eq!(events[1]["preData"]["description"], Value::Null);
    assert_eq!(events[1]["data"]["description"], "new");
    assert_eq!(events[0]["createdBy"], "token:init-admin-1");
    let body = json_with_status(app.get("/api/admin/events?limit=1").await, 200).await;
    assert_eq!(body["events"][0]["feature"], "other");
    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    let body = json_with_status(
        app.get(&format!(
            "/api/admin/events?since={}",
            future.timestamp_millis()
        ))
        .await,
        200,
    )
    .await;
    assert!(body["events"].as_array().unwrap().is_empty());
    assert_eq!(app.get("/api/admin/events?limit=0").await.status(), 400);
    assert_eq!(
        app.get("/api/admin/events?since=yesterday").await.status(),
        400
    );
    assert_eq!(app.get("/api/admin/events?limit=abc").await.status(), 400);
}

crate::both_backends!(
    projects_and_environments_start_with_defaults_and_can_be_added,
    a_feature_is_created_read_updated_toggled_and_archived,
    bad_feature_input_gets_a_precise_4xx,
    a_body_over_the_limit_gets_413,
    strategies_are_added_listed_updated_and_removed_in_order,
    variants_get_unleash_weights_and_dependencies_are_one_level,
    segments_are_managed_and_protected_while_in_use,
    every_change_is_in_the_audit_log_with_before_and_after,
);
