//! Evaluation cost for a realistic flag: flexibleRollout 50% with three constraints
//! (IN on appName, NUM_GT and SEMVER_GTE on properties) and one segment (IN), plus
//! `get_variant` over three variants. Target: at most 200 ns per evaluation.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use fusebox::domain::eval::{Context, Engine};
use fusebox::domain::model::ClientFeatures;
use serde_json::json;

fn engine() -> Engine {
    let doc = json!({
        "version": 2,
        "segments": [{"id": 1, "name": "beta", "constraints": [
            {"contextName": "environment", "operator": "IN", "values": ["production", "staging"]}
        ]}],
        "features": [
            {"name": "other.flag.1", "enabled": true, "strategies": [{"name": "default"}]},
            {"name": "new.checkout", "enabled": true, "strategies": [{
                "name": "flexibleRollout",
                "parameters": {"rollout": "50", "stickiness": "default", "groupId": "new.checkout"},
                "constraints": [
                    {"contextName": "appName", "operator": "IN", "values": ["web", "ios", "android"]},
                    {"contextName": "cartItems", "operator": "NUM_GT", "value": "2"},
                    {"contextName": "appVersion", "operator": "SEMVER_GTE", "value": "2.3.0"}
                ],
                "segments": [1],
                "variants": [
                    {"name": "blue", "weight": 334, "stickiness": "default",
                     "payload": {"type": "json", "value": "{\"color\":\"blue\"}"}},
                    {"name": "green", "weight": 333, "stickiness": "default",
                     "payload": {"type": "string", "value": "green"}},
                    {"name": "red", "weight": 333, "stickiness": "default"}
                ]
            }]},
            {"name": "other.flag.2", "enabled": false, "strategies": [{"name": "default"}]}
        ]
    });
    match serde_json::from_value::<ClientFeatures>(doc) {
        Ok(features) => Engine::new(&features),
        Err(e) => panic!("benchmark fixture: {e}"),
    }
}

/// A user who passes every constraint; `user_id` decides the rollout bucket.
fn context(user_id: &str) -> Context {
    Context {
        app_name: Some("web".into()),
        environment: Some("production".into()),
        ..Context::for_user(user_id)
    }
    .with_property("cartItems", "5")
    .with_property("appVersion", "2.4.1")
}

fn bench(c: &mut Criterion) {
    let engine = engine();
    // Find one user inside and one outside the 50% bucket, to show both paths.
    let inside = (0..)
        .map(|i| context(&format!("user-{i}")))
        .find(|ctx| engine.is_enabled("new.checkout", ctx))
        .unwrap_or_default();
    let outside = (0..)
        .map(|i| context(&format!("user-{i}")))
        .find(|ctx| !engine.is_enabled("new.checkout", ctx))
        .unwrap_or_default();

    c.bench_function("is_enabled (in rollout)", |b| {
        b.iter(|| engine.is_enabled(black_box("new.checkout"), black_box(&inside)))
    });
    c.bench_function("is_enabled (outside rollout)", |b| {
        b.iter(|| engine.is_enabled(black_box("new.checkout"), black_box(&outside)))
    });
    c.bench_function("get_variant (3 variants)", |b| {
        b.iter(|| engine.get_variant(black_box("new.checkout"), black_box(&inside)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
