//! Import/export in the client-features format: every client-spec state round-trips.

use serde_json::{json, Map, Value};

use crate::helpers::{json_with_status, TestApp};

/// The client-spec suite shipped beside the repository.
pub fn spec_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/unleash/client-spec")
}

/// Every spec file as (name, JSON), in index order.
pub fn spec_files() -> Vec<(String, Value)> {
    let index: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(spec_dir().join("index.json")).unwrap())
            .unwrap();
    index
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(spec_dir().join(&name)).unwrap();
            (name, serde_json::from_str(&text).unwrap())
        })
        .collect()
}

/// Fills in the defaults that "absent" means, so absent and default compare equal:
/// feature `project` default, `type` release, `stale`/`impressionData` false,
/// `variants`/`dependencies`/`segments` null → [], constraint flags false; strategy
/// parameters absent → {}. Segment names that the input lacks are not compared.
fn normalize(state: &Value, keep_segment_names: bool) -> Value {
    let mut features: Vec<Value> = state["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let mut f = f.as_object().unwrap().clone();
            f.entry("project").or_insert(json!("default"));
            f.entry("type").or_insert(json!("release"));
            f.entry("stale").or_insert(json!(false));
            f.entry("impressionData").or_insert(json!(false));
            f.entry("description").or_insert(Value::Null);
            for key in ["variants", "dependencies", "strategies"] {
                if f.get(key).is_none_or(Value::is_null) {
                    f.insert(key.into(), json!([]));
                }
            }
            let strategies: Vec<Value> = f["strategies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let mut s = s.as_object().unwrap().clone();
                    s.entry("parameters").or_insert(json!({}));
                    s.entry("constraints").or_insert(json!([]));
                    for key in ["segments", "variants"] {
                        if s.get(key).is_none_or(Value::is_null) {
                            s.insert(key.into(), json!([]));
                        }
                    }
                    let constraints = normalize_constraints(&s["constraints"]);
                    s.insert("constraints".into(), constraints);
                    Value::Object(s)
                })
                .collect();
            f.insert("strategies".into(), Value::Array(strategies));
            Value::Object(f)
        })
        .collect();
    features.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let segments: Vec<Value> = state["segments"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            let mut s: Map<String, Value> = s.as_object().unwrap().clone();
            if !keep_segment_names {
                s.remove("name");
            }
            let constraints = normalize_constraints(&s["constraints"]);
            s.insert("constraints".into(), constraints);
            Value::Object(s)
        })
        .collect();
    json!({ "features": features, "segments": segments })
}

fn normalize_constraints(constraints: &Value) -> Value {
    Value::Array(
        constraints
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                let mut c = c.as_object().unwrap().clone();
                c.entry("caseInsensitive").or_insert(json!(false));
                c.entry("inverted").or_insert(json!(false));
                Value::Object(c)
            })
            .collect(),
    )
}

async fn every_client_spec_state_imports_and_exports_unchanged(app: TestApp) {
    let mut checked = 0;
    for (name, spec) in spec_files() {
        // The delta-event files (19, 20) hold events: their state is what they fold to.
        let folded;
        let state = if spec["state"].get("features").is_some() {
            &spec["state"]
        } else {
            let delta: fusebox::domain::delta::ClientFeaturesDelta =
                serde_json::from_value(spec["state"].clone()).unwrap();
            folded =
                serde_json::to_value(fusebox::domain::delta::apply_events(delta.events)).unwrap();
            &folded
        };
        // A fresh environment per file keeps files from seeing each other's features.
        let env = format!("spec{checked}");
        let r = app
            .post(
                "/api/admin/environments",
                &json!({"name": env, "type": "test"}),
            )
            .await;
        assert_eq!(r.status(), 201);
        app.import(&env, state).await;
        let exported = json_with_status(
            app.get(&format!("/api/admin/state/export?environment={env}"))
                .await,
            200,
        )
        .await;
        let names: Vec<&str> = state["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        // Other files' features exist in this environment too (off); keep this file's.
        let exported_features: Vec<Value> = exported["features"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| names.contains(&f["name"].as_str().unwrap()))
            .cloned()
            .collect();
        let input_segment_ids: Vec<i64> = state["segments"]
            .as_array()
            .map(|s| s.iter().map(|s| s["id"].as_i64().unwrap()).collect())
            .unwrap_or_default();
        let exported_segments: Vec<Value> = exported["segments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| input_segment_ids.contains(&s["id"].as_i64().unwrap()))
            .cloned()
            .collect();
        let keep_names = state["segments"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s.get("name").is_some()));
        let got = normalize(
            &json!({"features": exported_features, "segments": exported_segments}),
            keep_names,
        );
        let want = normalize(state, keep_names);
        for (g, w) in got["features"]
            .as_array()
            .unwrap()
            .iter()
            .zip(want["features"].as_array().unwrap())
        {
            assert_eq!(g, w, "{name}: feature {} did not round-trip", w["name"]);
        }
        assert_eq!(got, want, "{name} did not round-trip");
        // Importing the export again changes nothing.
        app.import(&env, &exported).await;
        let again = json_with_status(
            app.get(&format!("/api/admin/state/export?environment={env}"))
                .await,
            200,
        )
        .await;
        assert_eq!(again, exported, "{name}: re-import changed the export");
        checked += 1;
    }
    assert_eq!(checked, 22, "expected all 22 spec files");
}

async fn import_rejects_bad_documents_precisely(app: TestApp) {
    let r = app
        .post(
            "/api/admin/state/import?environment=development",
            &json!({"version": 1, "features": [{"name": "x"}]}),
        )
        .await;
    let body = json_with_status(r, 400).await;
    assert_eq!(body["details"][0]["path"], "features[0]");
    let r = app
        .post(
            "/api/admin/state/import?environment=nowhere",
            &json!({"version": 1, "features": []}),
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = app
        .post(
            "/api/admin/state/import",
            &json!({"version": 1, "features": []}),
        )
        .await;
    assert_eq!(json_with_status(r, 400).await["code"], "invalid_query");
    let dup = json!({"version": 1, "features": [
        {"name": "a", "enabled": true}, {"name": "a", "enabled": false}]});
    let r = app
        .post("/api/admin/state/import?environment=development", &dup)
        .await;
    assert_eq!(
        json_with_status(r, 400).await["details"][0]["path"],
        "features[1].name"
    );
}

crate::both_backends!(
    every_client_spec_state_imports_and_exports_unchanged,
    import_rejects_bad_documents_precisely,
);
