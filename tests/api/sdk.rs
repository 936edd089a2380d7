//! Conformance through the official Unleash Node SDK: `unleash-client` (pinned in
//! `tests/sdk/package.json`, used unmodified) polls a live Fusebox and evaluates
//! every case of the Unleash client-specification suite. The SDK evaluates flags
//! locally, so a wrong result here means Fusebox served something different from
//! what was imported: a lost field, a re-spelt operator, a dropped segment, and so on.
//! Each run must also get its register and metrics posts accepted and a 304 for the
//! If-None-Match poll, and the SDK must raise no `error` event.
//!
//! Needs `node` on PATH and `npm ci` in `tests/sdk`. Without them the test prints
//! `SKIP (...)` and passes, except under `CI=true`, where that is a failure.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::helpers::{json_with_status, spawn_app, Backend, TestApp};

const SPEC_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/unleash/client-spec");
const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk");
const SDK_VERSION: &str = "6.12.1";

/// 227 `tests` + 52 `variantTests` in the 22 files. Asserted so that a missing file,
/// an empty index or a script that skips cases cannot pass by testing nothing.
const TOTAL_CASES: usize = 279;

/// The script gives up by itself after 10 s without synchronising; this bound only
/// catches a hung process.
const NODE_TIMEOUT: Duration = Duration::from_secs(60);

/// `(file, case description, reason)` for cases where the Node SDK itself disagrees
/// with the specification; these may fail, any other failure fails the test.
///
/// Empty on purpose: through Fusebox, `unleash-client@6.12.1` passes all 279 cases.
/// The CATALOG's "275 of 279" for the stand-in server is not four failures: the
/// stand-in run skipped the 4 cases of files 19 (1) and 20 (3), whose state is a
/// list of delta events rather than a features document. Here those events are
/// folded into a document first (see `features_document`), and the 4 cases pass.
/// The UTF-16 hashing quirk of the Node SDK (CLIENT-API.md §6) does not show up
/// either: no case hashes a non-ASCII stickiness id (file 18 has non-ASCII flag
/// names, evaluated with the `default` strategy).
const KNOWN_SDK_DISCREPANCIES: &[(&str, &str, &str)] = &[];

/// One line of `run-spec.mjs` output.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecRun {
    file: String,
    passed: usize,
    failed: usize,
    failures: Vec<CaseFailure>,
    /// `error` events: after a successful fetch these mean the SDK rejected part of
    /// the payload (e.g. its `validateFeature`), or a metrics flush failed.
    sdk_errors: Vec<String>,
    sdk_warnings: Vec<String>,
    /// `POST /api/client/register` answered 2xx.
    registered: bool,
    /// `POST /api/client/metrics` answered 2xx.
    metrics_sent: bool,
    /// The second poll, sent with `If-None-Match`: "304", "200" or "none".
    revalidation: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaseFailure {
    description: String,
    toggle_name: String,
    expected: Value,
    got: Value,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_node_sdk_passes_the_client_spec_suite() {
    let started = Instant::now();
    let node = match prerequisites() {
        Ok(node) => node,
        Err(reason) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("the Node SDK conformance test cannot run in CI: {reason}")
        }
        Err(reason) => {
            eprintln!("SKIP ({reason})");
            return;
        }
    };
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };

    let index: Vec<String> = serde_json::from_str(&read(&Path::new(SPEC_DIR).join("index.json")))
        .expect("index.json is a list of file names");

    // Strictly one file at a time: import, then run the SDK, then the next file.
    // Environments keep strategies and variants apart, but segments are global
    // objects keyed by id (as in Unleash), and files 15, 19 and 20 all define a
    // segment 1; a later import would change what an earlier file's flags reference.
    let url = format!("{}/api/", app.address);
    let mut runs = Vec::new();
    let mut harness_errors = Vec::new();
    for file in &index {
        let path = Path::new(SPEC_DIR).join(file);
        let spec: Value =
            serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let cases = count(&spec["tests"]) + count(&spec["variantTests"]);
        let environment = format!("spec{}", file.split('-').next().unwrap_or(file));
        let token = prepare_environment(&app, &environment, &spec["state"]).await;
        let (node, url) = (node.clone(), url.clone());
        match tokio::task::spawn_blocking(move || run_spec(&node, &url, &token, &path))
            .await
            .expect("the runner thread panicked")
        {
            Ok(run) => runs.push((cases, run)),
            Err(e) => harness_errors.push(format!("{file}: {e}")),
        }
    }
    assert!(
        harness_errors.is_empty(),
        "the SDK harness failed:\n{}",
        harness_errors.join("\n")
    );

    let mut report = format!(
        "{:<44} {:>5} {:>5} {:>5} {:>7}  second poll\n",
        "file", "cases", "pass", "fail", "allowed"
    );
    let (mut total, mut passed) = (0, 0);
    let mut unexpected = Vec::new();
    let mut matched_allowances = Vec::new();
    let mut wire_problems = Vec::new();
    for (cases, run) in &runs {
        let file = &run.file;
        let mut allowed = 0;
        for f in &run.failures {
            match KNOWN_SDK_DISCREPANCIES
                .iter()
                .find(|(af, ad, _)| *af == file.as_str() && *ad == f.description)
            {
                Some(entry) => {
                    eprintln!("{file}: allowed failure: {} ({})", f.description, entry.2);
                    allowed += 1;
                    matched_allowances.push(entry);
                }
                None => unexpected.push(format!(
                    "{file}: {} [{}]: expected {}, got {}",
                    f.description, f.toggle_name, f.expected, f.got
                )),
            }
        }
        if run.passed + run.failed != *cases {
            wire_problems.push(format!(
                "{file}: the script evaluated {} cases, the file has {cases}",
                run.passed + run.failed
            ));
        }
        for e in &run.sdk_errors {
            wire_problems.push(format!("{file}: SDK error: {e}"));
        }
        if !run.registered {
            wire_problems.push(format!(
                "{file}: POST /api/client/register was not accepted"
            ));
        }
        if !run.metrics_sent {
            wire_problems.push(format!("{file}: POST /api/client/metrics was not accepted"));
        }
        // The SDK replays the ETag as If-None-Match; an unchanged state must be a 304.
        if run.revalidation != "304" {
            wire_problems.push(format!(
                "{file}: the If-None-Match poll got {} instead of 304",
                run.revalidation
            ));
        }
        for w in &run.sdk_warnings {
            eprintln!("{file}: SDK warning: {w}");
        }
        report.push_str(&format!(
            "{file:<44} {cases:>5} {:>5} {:>5} {allowed:>7}  {}\n",
            run.passed, run.failed, run.revalidation
        ));
        total += cases;
        passed += run.passed;
    }
    eprint!("{report}");
    eprintln!(
        "Node SDK unleash-client@{SDK_VERSION}: {passed} of {total} cases pass \
         ({} allow-listed failures), {:.1} s",
        matched_allowances.len(),
        started.elapsed().as_secs_f64()
    );

    assert_eq!(
        total, TOTAL_CASES,
        "the suite should have {TOTAL_CASES} cases"
    );
    assert!(
        unexpected.is_empty(),
        "{} case(s) failed through the Node SDK and are not allow-listed:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    let stale: Vec<_> = KNOWN_SDK_DISCREPANCIES
        .iter()
        .filter(|entry| !matched_allowances.contains(entry))
        .map(|(file, description, _)| format!("{file}: {description}"))
        .collect();
    assert!(
        stale.is_empty(),
        "allow-listed cases now pass; remove them from KNOWN_SDK_DISCREPANCIES:\n{}",
        stale.join("\n")
    );
    assert!(
        wire_problems.is_empty(),
        "the SDK had trouble with the wire protocol:\n{}",
        wire_problems.join("\n")
    );
}

/// `node` and the installed SDK, or why the test cannot run.
fn prerequisites() -> Result<PathBuf, String> {
    let node = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("node"))
                .find(|candidate| candidate.is_file())
        })
        .ok_or("`node` is not on PATH")?;
    let package = Path::new(SDK_DIR).join("node_modules/unleash-client/package.json");
    let installed = std::fs::read_to_string(&package).map_err(|_| {
        format!(
            "{} is missing; run `npm ci` in tests/sdk",
            package.display()
        )
    })?;
    let version: Value = serde_json::from_str(&installed).map_err(|e| e.to_string())?;
    // The lock file pins it; a different version means a stale node_modules.
    if version["version"] != SDK_VERSION {
        return Err(format!(
            "tests/sdk/node_modules has unleash-client@{}, expected {SDK_VERSION}; run `npm ci` in tests/sdk",
            version["version"]
        ));
    }
    if !Path::new(SPEC_DIR).join("index.json").is_file() {
        return Err(format!("the client specification is not at {SPEC_DIR}"));
    }
    Ok(node)
}

/// Creates `environment`, imports the file's state into it and returns a client
/// token scoped to it.
async fn prepare_environment(app: &TestApp, environment: &str, state: &Value) -> String {
    let r = app
        .post(
            "/api/admin/environments",
            &json!({ "name": environment, "type": "test" }),
        )
        .await;
    json_with_status(r, 201).await;
    app.import(environment, &features_document(state)).await;
    let r = app
        .post(
            "/api/admin/api-tokens",
            &json!({
                "tokenName": format!("sdk-{environment}"),
                "type": "client",
                "environment": environment,
                "projects": ["*"],
            }),
        )
        .await;
    let token = json_with_status(r, 201).await;
    token["secret"]
        .as_str()
        .expect("the token response has a secret")
        .to_string()
}

/// The spec state as a client-features document. Files 19 and 20 hold delta events
/// instead; those are applied in order, as an SDK in delta mode would:
/// `hydration` replaces everything, `feature-updated`/`segment-updated` upsert,
/// `feature-removed`/`segment-removed` delete. The SDK then polls the ordinary
/// features endpoint, so the same cases check what the events describe.
fn features_document(state: &Value) -> Value {
    let Some(events) = state["events"].as_array() else {
        return state.clone();
    };
    let mut features: Vec<Value> = Vec::new();
    let mut segments: Vec<Value> = Vec::new();
    fn upsert(list: &mut Vec<Value>, key: &str, item: &Value) {
        match list.iter_mut().find(|x| x[key] == item[key]) {
            Some(slot) => *slot = item.clone(),
            None => list.push(item.clone()),
        }
    }
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    for event in events {
        match event["type"].as_str() {
            Some("hydration") => {
                features = list(&event["features"]);
                segments = list(&event["segments"]);
            }
            Some("feature-updated") => upsert(&mut features, "name", &event["feature"]),
            Some("feature-removed") => features.retain(|f| f["name"] != event["featureName"]),
            Some("segment-updated") => upsert(&mut segments, "id", &event["segment"]),
            Some("segment-removed") => segments.retain(|s| s["id"] != event["segmentId"]),
            other => panic!("unknown delta event type {other:?} in {event}"),
        }
    }
    json!({ "version": 1, "features": features, "segments": segments })
}

/// Runs `tests/sdk/run-spec.mjs` for one file and parses its JSON line. Blocking:
/// call it from `spawn_blocking`.
fn run_spec(node: &Path, url: &str, token: &str, spec: &Path) -> Result<SpecRun, String> {
    let mut child = Command::new(node)
        .arg(Path::new(SDK_DIR).join("run-spec.mjs"))
        .args(["--url", url, "--token", token, "--spec"])
        .arg(spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting node: {e}"))?;
    // Drained on their own threads so that a chatty child cannot block on a full pipe
    // while this thread waits for it.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    // std has no wait-with-timeout (and this crate's tokio lacks `process`): poll.
    let deadline = Instant::now() + NODE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("node did not finish within {NODE_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("node exited with {status}: {}", stderr.trim()));
    }
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| format!("bad output ({e}): {stdout}{stderr}"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn count(cases: &Value) -> usize {
    cases.as_array().map_or(0, Vec::len)
}
