//! The official Unleash client-specification suite, every case of every file.
//!
//! Reads `shared/unleash/client-spec/index.json` and each file it lists, builds the
//! state (applying delta events for files 19 and 20), then checks all `tests`
//! (isEnabled) and `variantTests` (getVariant, compared as JSON including payload).
//! The case count is asserted so a missing or unreadable file cannot pass silently.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::{Context, Engine};
use crate::domain::delta::{apply_events, DeltaEvent};
use crate::domain::model::ClientFeatures;

const SPEC_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/unleash/client-spec");
const EXPECTED_CASES: usize = 279;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecFile {
    state: Value,
    #[serde(default)]
    tests: Vec<EnabledCase>,
    #[serde(default)]
    variant_tests: Vec<VariantCase>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnabledCase {
    description: String,
    context: Context,
    toggle_name: String,
    expected_result: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VariantCase {
    description: String,
    context: Context,
    toggle_name: String,
    expected_result: Value,
}

#[derive(Deserialize)]
struct DeltaState {
    events: Vec<DeltaEvent>,
}

fn load_state(state: Value) -> Result<ClientFeatures, String> {
    if state.get("events").is_some() {
        let delta: DeltaState = serde_json::from_value(state).map_err(|e| e.to_string())?;
        Ok(apply_events(delta.events))
    } else {
        serde_json::from_value(state).map_err(|e| e.to_string())
    }
}

/// Runs one file; returns (cases run, one message per failed case).
fn run_file(dir: &Path, file: &str) -> (usize, Vec<String>) {
    let spec: SpecFile = match std::fs::read_to_string(dir.join(file))
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => return (0, vec![format!("{file}: cannot load: {e}")]),
    };
    let engine = match load_state(spec.state) {
        Ok(state) => Engine::new(&state),
        Err(e) => return (0, vec![format!("{file}: bad state: {e}")]),
    };
    let mut failures = Vec::new();
    for case in &spec.tests {
        let actual = engine.is_enabled(&case.toggle_name, &case.context);
        if actual != case.expected_result {
            failures.push(format!(
                "{file}: {} (toggle {:?}): expected {}, got {actual}",
                case.description, case.toggle_name, case.expected_result
            ));
        }
    }
    for case in &spec.variant_tests {
        let result = engine.get_variant(&case.toggle_name, &case.context);
        let mut actual = serde_json::to_value(&result).unwrap_or(Value::Null);
        // The spec only knows the snake-case key; the camel-case copy must agree.
        let camel = actual
            .as_object_mut()
            .and_then(|o| o.remove("featureEnabled"));
        if actual != case.expected_result || camel != Some(Value::Bool(result.feature_enabled)) {
            failures.push(format!(
                "{file}: {} (toggle {:?}): expected {}, got {actual} with featureEnabled {camel:?}",
                case.description, case.toggle_name, case.expected_result
            ));
        }
    }
    (spec.tests.len() + spec.variant_tests.len(), failures)
}

#[test]
fn every_client_specification_case_passes_and_none_is_skipped() {
    let dir = Path::new(SPEC_DIR);
    let index = std::fs::read_to_string(dir.join("index.json"))
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str::<Vec<String>>(&text).map_err(|e| e.to_string()));
    let files = match index {
        Ok(files) => files,
        Err(e) => panic!("cannot read {SPEC_DIR}/index.json: {e}"),
    };
    assert_eq!(files.len(), 22, "index.json should list 22 files");

    let mut total = 0;
    let mut failures = Vec::new();
    for file in &files {
        let (cases, mut failed) = run_file(dir, file);
        total += cases;
        failures.append(&mut failed);
    }
    let passed = total.saturating_sub(failures.len());
    println!("client specification: {passed} of {total} cases passed");
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        total, EXPECTED_CASES,
        "expected {EXPECTED_CASES} cases in total"
    );
}
