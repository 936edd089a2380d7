//! Server bugs that `scripts/schemathesis.sh` found, kept fixed: no input a client can
//! send gets a 500 or a dropped connection.

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{json_with_status, TestApp};

const F: &str = "/api/admin/projects/default/features";

/// Adding a strategy without `sortOrder` after one with `sortOrder: i64::MAX` overflowed
/// `max + 1` (a panic, so a dropped connection, in debug builds; a wrap in release).
async fn a_strategy_can_follow_one_with_the_largest_sort_order(app: TestApp) {
    app.create_feature("f").await;
    let base = format!("{F}/f/environments/development/strategies");
    let r = app
        .post(&base, &json!({"name": "default", "sortOrder": i64::MAX}))
        .await;
    json_with_status(r, 200).await;
    let r = app
        .post(
            &base,
            &json!({"name": "userWithId", "parameters": {"userIds": "1"}}),
        )
        .await;
    let second = json_with_status(r, 200).await;
    assert_eq!(second["sortOrder"], i64::MAX);
}

/// On SQLite, a write transaction began deferred: one that read first (does the feature
/// exist?) and wrote second got "database is locked" at once, without the busy wait,
/// whenever another connection wrote in between. Concurrent admin writes got 500s.
async fn concurrent_admin_writes_all_succeed(app: TestApp) {
    let names: Vec<String> = (0..4).map(|i| format!("c{i}")).collect();
    for name in &names {
        app.create_feature(name).await;
    }
    let mut requests = Vec::new();
    for round in 0..10 {
        for name in &names {
            let env = format!("{F}/{name}/environments/development");
            requests.push(
                app.admin(reqwest::Method::POST, &format!("{env}/strategies"))
                    .json(&json!({"name": "flexibleRollout",
                                  "parameters": {"rollout": round * 10, "stickiness": "default"}}))
                    .send(),
            );
            requests.push(
                app.admin(reqwest::Method::PUT, &format!("{env}/variants"))
                    .json(&json!([{"name": format!("v{round}"), "weight": 1000, "weightType": "variable",
                                   "stickiness": "default"}]))
                    .send(),
            );
            requests.push(
                app.admin(
                    reqwest::Method::POST,
                    &format!("/api/admin/features/{name}/tags"),
                )
                .json(&json!({"type": "simple", "value": format!("t{round}")}))
                .send(),
            );
        }
    }
    let responses = join_all(requests).await;
    let mut failures = Vec::new();
    for r in responses {
        let r = r.expect("request");
        let status = r.status().as_u16();
        if !(200..300).contains(&status) {
            failures.push(format!("{status}: {}", r.text().await.unwrap_or_default()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} writes failed: {failures:?}",
        failures.len()
    );
    for name in &names {
        let list: Value = json_with_status(
            app.get(&format!("{F}/{name}/environments/development/strategies"))
                .await,
            200,
        )
        .await;
        assert_eq!(list.as_array().map(Vec::len), Some(10), "{name}");
    }
}

/// Integer path and query parameters out of range get the documented 400, not a 404
/// or 500.
async fn out_of_range_integer_parameters_get_a_documented_400(app: TestApp) {
    app.create_feature("f").await;
    app.put(&format!("{F}/f/environments/development/fuse"), &json!({}))
        .await;
    let too_big = "9223372036854775808";
    for (method, path) in [
        (
            reqwest::Method::DELETE,
            format!("/api/admin/api-tokens/{too_big}"),
        ),
        (
            reqwest::Method::DELETE,
            format!("/api/admin/segments/{too_big}"),
        ),
        (
            reqwest::Method::DELETE,
            format!("/api/admin/events/quarantine/{too_big}"),
        ),
        (
            reqwest::Method::POST,
            format!("/api/admin/events/quarantine/{too_big}/replay"),
        ),
        (
            reqwest::Method::GET,
            format!("{F}/f/environments/development/fuse/analysis?at={too_big}"),
        ),
        (
            reqwest::Method::POST,
            format!("{F}/f/environments/development/fuse/evaluate?at={too_big}"),
        ),
    ] {
        let r = app.admin(method.clone(), &path).send().await.unwrap();
        let body = json_with_status(r, 400).await;
        assert!(
            ["invalid_path", "invalid_query"].contains(&body["code"].as_str().unwrap_or_default()),
            "{method} {path}: {body}"
        );
    }
}

crate::both_backends!(
    a_strategy_can_follow_one_with_the_largest_sort_order,
    concurrent_admin_writes_all_succeed,
    out_of_range_integer_parameters_get_a_documented_400,
);
