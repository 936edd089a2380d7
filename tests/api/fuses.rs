//! Fuses end to end: arming, analysis from ingested events, automatic throttle and
//! rollback with lock and audit, webhooks, SRM hold, manual control. Time is driven by
//! the scheduler's clock parameter; the fuse's timeline is moved into the past so the
//! ingested events (which may not be in the future) fall inside it.

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{json_with_status, TestApp, CLIENT_TOKEN};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

pub(crate) fn fuse_path(feature: &str) -> String {
    format!("/api/admin/projects/default/features/{feature}/environments/development/fuse")
}

fn bucket(feature: &str, user: &str) -> u32 {
    fusebox::domain::eval::normalized_hash(feature, user, 100, 0)
}

/// Moves the fuse's timeline into the past (see `fusebox::demo::rewind_fuse`).
pub(crate) async fn rewind(app: &TestApp, feature: &str, t0: i64, pct: f64) {
    fusebox::demo::rewind_fuse(app.state.store.as_ref(), feature, "development", t0, pct)
        .await
        .unwrap();
}

pub(crate) async fn send_events(app: &TestApp, events: Vec<Value>) {
    for chunk in events.chunks(5000) {
        let r = app
            .request(Method::POST, "/api/events")
            .header("Authorization", CLIENT_TOKEN)
            .json(&chunk)
            .send()
            .await
            .unwrap();
        let body = json_with_status(r, 202).await;
        assert!(body["rejected"].as_array().unwrap().is_empty(), "{body}");
    }
}

/// `n` users arriving evenly over [t0, t0 + 2 days), split 50/50 by the flag's bucket;
/// each is active on day 0, and on day 1 with probability `d1_control` or
/// `d1_treatment` (deterministic by index). `keep_treatment(i)` drops some treatment
/// users' exposures (to fake a sample-ratio mismatch).
pub(crate) fn cohort(
    feature: &str,
    n: usize,
    t0: i64,
    d1_control: f64,
    d1_treatment: f64,
    keep_treatment: impl Fn(usize) -> bool,
) -> Vec<Value> {
    let mut events = Vec::new();
    for i in 0..n {
        let user = format!("user-{i}");
        let treated = bucket(feature, &user) <= 50;
        if treated && !keep_treatment(i) {
            continue;
        }
        let t = t0 + (i as i64 * 2 * DAY) / n as i64;
        events.push(json!({"type": "exposure", "user_id": user, "feature": feature, "enabled": treated, "timestamp": t}));
        events.push(json!({"type": "activity", "user_id": user, "name": "session_start", "timestamp": t + HOUR}));
        let p = if treated { d1_treatment } else { d1_control };
        // A low-discrepancy draw keeps the rates exact without a RNG.
        if ((i as f64 * 0.618_033_988_7) % 1.0) < p {
            events.push(json!({"type": "activity", "user_id": user, "name": "session_start", "timestamp": t + 30 * HOUR}));
        }
    }
    events
}

/// A one-shot HTTP server that records request bodies (a webhook receiver).
async fn webhook_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            let _ = tx.send(body.to_string());
                            break;
                        }
                    }
                }
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    (url, rx)
}

async fn arming_a_fuse_creates_the_managed_strategy_and_validates_config(app: TestApp) {
    app.create_feature("armed").await;
    let r = app.put(&fuse_path("armed"), &json!({})).await;
    let fuse = json_with_status(r, 201).await;
    assert_eq!(fuse["status"], "ramping");
    assert_eq!(fuse["exposurePct"], 5.0);
    assert_eq!(
        fuse["config"]["ramp_steps_pct"],
        json!([5.0, 10.0, 25.0, 50.0, 100.0])
    );
    let strategies = json_with_status(
        app.get("/api/admin/projects/default/features/armed/environments/development/strategies")
            .await,
        200,
    )
    .await;
    assert_eq!(strategies[0]["name"], "flexibleRollout");
    assert_eq!(strategies[0]["parameters"]["rollout"], "5");
    assert_eq!(strategies[0]["id"], fuse["strategyId"]);

    let bad = [
        (json!({"alpha_rollback": 0.9}), "alpha_rollback"),
        (json!({"ramp_steps_pct": [50, 10]}), "ramp_steps_pct"),
        (json!({"webhook_urls": ["not a url"]}), "webhook_urls"),
        (json!({"alpha_rolback": 0.1}), "alpha_rolback"),
        (json!({"min_users_per_arm": "many"}), "min_users_per_arm"),
    ];
    for (body, field) in bad {
        let err = json_with_status(app.put(&fuse_path("armed"), &body).await, 400).await;
        assert_eq!(err["details"][0]["path"], field, "{body}: {err}");
    }
    let r = app
        .put(&fuse_path("armed"), &json!({"min_users_per_arm": 300}))
        .await;
    let fuse = json_with_status(r, 200).await;
    assert_eq!(fuse["config"]["min_users_per_arm"], 300);
    assert_eq!(
        fuse["exposurePct"], 5.0,
        "reconfiguring keeps the rollout where it is"
    );
    let audit = json_with_status(app.get("/api/admin/events?feature=armed").await, 200).await;
    let kinds: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"fuse-armed") && kinds.contains(&"fuse-configured"),
        "{kinds:?}"
    );
    assert_eq!(app.get(&fuse_path("missing")).await.status(), 404);
}

async fn a_harmful_feature_is_throttled_then_rolled_back_locked_and_unlocked(app: TestApp) {
    let (hook, mut received) = webhook_receiver().await;
    app.create_feature("harmful").await;
    app.post(
        "/api/admin/projects/default/features/harmful/environments/development/on",
        &json!({}),
    )
    .await;
    let config = json!({"ramp_steps_pct": [10, 50, 100], "retention_days": [1], "min_users_per_arm": 100,
        "webhook_urls": [hook]});
    json_with_status(app.put(&fuse_path("harmful"), &config).await, 201).await;
    let t0 = chrono::Utc::now().timestamp_millis() - 10 * DAY;
    rewind(&app, "harmful", t0, 50.0).await;
    send_events(&app, cohort("harmful", 4000, t0, 0.40, 0.32, |_| true)).await;

    // Hourly looks from day 2 to day 6.
    let mut decisions = Vec::new();
    for hour in 48..=144 {
        let at = t0 + hour * HOUR;
        let r = app
            .post(
                &format!("{}/evaluate?at={at}", fuse_path("harmful")),
                &json!({}),
            )
            .await;
        let e = json_with_status(r, 200).await;
        let kind = e["decision"]["kind"].as_str().unwrap().to_string();
        if !matches!(kind.as_str(), "wait" | "continue") {
            decisions.push((hour, kind.clone(), e["exposureAfter"].as_f64().unwrap()));
        }
        if kind == "rollback" {
            assert_eq!(e["status"], "rolled_back");
            assert_eq!(e["decision"]["rule"], "retention_or_activation_harm", "{e}");
            break;
        }
    }
    let kinds: Vec<&str> = decisions.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"throttle"), "decisions: {decisions:?}");
    assert_eq!(kinds.last(), Some(&"rollback"), "decisions: {decisions:?}");
    assert_eq!(decisions[0].2, 25.0, "a throttle halves exposure");

    let fuse = json_with_status(app.get(&fuse_path("harmful")).await, 200).await;
    assert_eq!(fuse["status"], "rolled_back");
    assert_eq!(fuse["locked"], true);
    assert_eq!(fuse["exposurePct"], 0.0);
    // SDKs see the rollback on their next poll.
    let r = app
        .request(Method::GET, "/api/client/features")
        .header("Authorization", CLIENT_TOKEN)
        .send()
        .await
        .unwrap();
    let body = json_with_status(r, 200).await;
    let f = body["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "harmful")
        .unwrap()
        .clone();
    assert_eq!(f["strategies"][0]["parameters"]["rollout"], "0");
    // Locked: further looks change nothing.
    let later = t0 + 200 * HOUR;
    let e = json_with_status(
        app.post(
            &format!("{}/evaluate?at={later}", fuse_path("harmful")),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(e["applied"], false);
    assert_eq!(e["exposureAfter"], 0.0);

    let audit = json_with_status(app.get("/api/admin/events?feature=harmful").await, 200).await;
    let rollback = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "fuse-rollback")
        .unwrap()
        .clone();
    assert_eq!(rollback["createdBy"], "fuse");
    assert_eq!(rollback["preData"]["exposure"], 25.0);
    assert_eq!(rollback["data"]["exposure"], 0.0);
    assert_eq!(rollback["data"]["rule"], "retention_or_activation_harm");
    assert!(rollback["data"]["analysis"]["metrics"]
        .as_array()
        .is_some_and(|m| !m.is_empty()));
    assert!(audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "fuse-throttle"));
    let history = json_with_status(
        app.get(&format!("{}/history", fuse_path("harmful"))).await,
        200,
    )
    .await;
    assert!(history["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["kind"] == "rollback"));

    // The webhook got Slack-compatible text and structured fields.
    let mut texts = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !texts
        .iter()
        .any(|t: &Value| t["fuse"]["decision"] == "rollback")
    {
        let body = tokio::time::timeout_at(deadline, received.recv())
            .await
            .expect("webhook in time")
            .unwrap();
        texts.push(serde_json::from_str(&body).unwrap());
    }
    let rb = texts
        .iter()
        .find(|t| t["fuse"]["decision"] == "rollback")
        .unwrap();
    assert!(rb["text"].as_str().unwrap().contains("harmful"));
    assert_eq!(rb["fuse"]["exposureAfter"], 0.0);

    // A person unlocks it: back to the first step, audited with who.
    let fuse = json_with_status(
        app.post(&format!("{}/unlock", fuse_path("harmful")), &json!({}))
            .await,
        200,
    )
    .await;
    assert_eq!(fuse["locked"], false);
    assert_eq!(fuse["status"], "ramping");
    assert_eq!(fuse["exposurePct"], 10.0);
    let audit = json_with_status(
        app.get("/api/admin/events?feature=harmful&limit=1").await,
        200,
    )
    .await;
    assert_eq!(audit["events"][0]["type"], "fuse-unlock");
    assert_eq!(audit["events"][0]["createdBy"], "token:init-admin-1");
    assert_eq!(
        app.post(&format!("{}/unlock", fuse_path("harmful")), &json!({}))
            .await
            .status(),
        409
    );
}

async fn a_sample_ratio_mismatch_holds_the_fuse(app: TestApp) {
    app.create_feature("skewed").await;
    json_with_status(
        app.put(
            &fuse_path("skewed"),
            &json!({"ramp_steps_pct": [50, 100], "retention_days": [1], "min_users_per_arm": 100}),
        )
        .await,
        201,
    )
    .await;
    let t0 = chrono::Utc::now().timestamp_millis() - 10 * DAY;
    rewind(&app, "skewed", t0, 50.0).await;
    // Two thirds of the treatment users' exposures never arrive.
    send_events(&app, cohort("skewed", 3000, t0, 0.4, 0.4, |i| i % 3 == 0)).await;
    let at = t0 + 3 * DAY;
    let e = json_with_status(
        app.post(
            &format!("{}/evaluate?at={at}", fuse_path("skewed")),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(e["decision"]["kind"], "hold", "{}", e["decision"]);
    assert_eq!(e["decision"]["rule"], "srm_detected");
    assert_eq!(e["status"], "srm_hold");
    assert!(e["decision"]["srm"]["p_value"].as_f64().unwrap() < 0.001);
    assert_eq!(e["exposureAfter"], 50.0);
}

async fn pause_and_resume_are_audited_and_freeze_decisions(app: TestApp) {
    app.create_feature("paused").await;
    json_with_status(app.put(&fuse_path("paused"), &json!({})).await, 201).await;
    let fuse = json_with_status(
        app.post(&format!("{}/pause", fuse_path("paused")), &json!({}))
            .await,
        200,
    )
    .await;
    assert_eq!(fuse["status"], "paused");
    let far = chrono::Utc::now().timestamp_millis() + 30 * DAY;
    let e = json_with_status(
        app.post(
            &format!("{}/evaluate?at={far}", fuse_path("paused")),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(e["applied"], false);
    let fuse = json_with_status(
        app.post(&format!("{}/resume", fuse_path("paused")), &json!({}))
            .await,
        200,
    )
    .await;
    assert_eq!(fuse["status"], "ramping");
    let audit = json_with_status(
        app.get("/api/admin/events?feature=paused&limit=2").await,
        200,
    )
    .await;
    let kinds: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["fuse-resume", "fuse-pause"]);
    // The analysis endpoint is a dry run.
    let e = json_with_status(
        app.get(&format!("{}/analysis", fuse_path("paused"))).await,
        200,
    )
    .await;
    assert_eq!(e["applied"], false);
    assert!(e["metrics"].as_array().is_some());
}

async fn a_good_feature_is_promoted_step_by_step_to_full_exposure(app: TestApp) {
    app.create_feature("good").await;
    app.post(
        "/api/admin/projects/default/features/good/environments/development/on",
        &json!({}),
    )
    .await;
    let config =
        json!({"ramp_steps_pct": [10, 50, 100], "retention_days": [1], "min_users_per_arm": 100});
    json_with_status(app.put(&fuse_path("good"), &config).await, 201).await;
    let t0 = chrono::Utc::now().timestamp_millis() - 14 * DAY;
    rewind(&app, "good", t0, 10.0).await;

    // Users arrive every 3 hours with the split in force; the fuse looks after each slice.
    let per_slice = 125; // 1000 users a day
    let mut exposure = 10.0;
    let mut steps = vec![10.0];
    let mut user = 0usize;
    for slice in 0..(12 * 8) {
        let start = t0 + slice * 3 * HOUR;
        let mut events = Vec::new();
        for k in 0..per_slice {
            user += 1;
            let id = format!("g-{user}");
            let t = start + (k as i64 * 3 * HOUR) / per_slice as i64;
            let treated = f64::from(bucket("good", &id)) <= exposure;
            events.push(json!({"type": "exposure", "user_id": id, "feature": "good", "enabled": treated, "timestamp": t}));
            // Treatment users use the feature (adoption); both arms return on day 1 alike.
            let mut first = json!({"type": "activity", "user_id": id, "name": "session_start", "timestamp": t + HOUR});
            if treated {
                first["feature"] = json!("good");
            }
            events.push(first);
            if ((user as f64 * 0.618_033_988_7) % 1.0) < 0.3 {
                events.push(json!({"type": "activity", "user_id": id, "name": "session_start", "timestamp": t + 30 * HOUR}));
            }
        }
        send_events(&app, events).await;
        let at = start + 3 * HOUR;
        let e = json_with_status(
            app.post(
                &format!("{}/evaluate?at={at}", fuse_path("good")),
                &json!({}),
            )
            .await,
            200,
        )
        .await;
        assert_ne!(e["decision"]["kind"], "rollback", "{}", e["decision"]);
        assert_ne!(e["decision"]["kind"], "throttle", "{}", e["decision"]);
        let after = e["exposureAfter"].as_f64().unwrap();
        if (after - exposure).abs() > 1e-9 {
            assert_eq!(e["decision"]["kind"], "promote", "{}", e["decision"]);
            steps.push(after);
            exposure = after;
        }
        if exposure >= 100.0 {
            assert_eq!(e["status"], "released");
            break;
        }
    }
    assert_eq!(
        steps,
        vec![10.0, 50.0, 100.0],
        "the fuse should promote step by step"
    );
    let audit = json_with_status(app.get("/api/admin/events?feature=good").await, 200).await;
    let promotions = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "fuse-promote")
        .count();
    assert_eq!(promotions, 2);
}

async fn a_backtest_replays_the_rules_over_stored_events_without_applying(app: TestApp) {
    app.create_feature("replayed").await;
    let config =
        json!({"ramp_steps_pct": [10, 50, 100], "retention_days": [1], "min_users_per_arm": 100});
    json_with_status(app.put(&fuse_path("replayed"), &config).await, 201).await;
    let t0 = chrono::Utc::now().timestamp_millis() - 10 * DAY;
    rewind(&app, "replayed", t0, 50.0).await;
    send_events(&app, cohort("replayed", 4000, t0, 0.40, 0.32, |_| true)).await;

    let body = json!({"from": t0 + 48 * HOUR, "to": t0 + 144 * HOUR, "step": "1h"});
    let r = json_with_status(
        app.post(&format!("{}/backtest", fuse_path("replayed")), &body)
            .await,
        200,
    )
    .await;
    assert_eq!(r["rollbacks"], 1, "{}", r["looks"]);
    assert!(r["throttles"].as_u64().unwrap() >= 1);
    assert_eq!(r["finalExposure"], 0.0);
    let looks = r["looks"].as_array().unwrap();
    assert_eq!(
        looks[0]["exposureBefore"], 50.0,
        "armed at the step matching the exposure in force"
    );
    assert_eq!(looks[0]["actualExposure"], 50.0);
    // Nothing was applied.
    let fuse = json_with_status(app.get(&fuse_path("replayed")).await, 200).await;
    assert_eq!(fuse["exposurePct"], 50.0);
    assert_eq!(fuse["locked"], false);
    // A laxer configuration gives another timeline from the same data.
    let lax = json!({"from": t0 + 48 * HOUR, "to": t0 + 144 * HOUR, "step": "6h",
        "config": {"ramp_steps_pct": [10, 50, 100], "retention_days": [1], "min_users_per_arm": 100, "min_retention_delta": -0.2}});
    let r = json_with_status(
        app.post(&format!("{}/backtest", fuse_path("replayed")), &lax)
            .await,
        200,
    )
    .await;
    assert_eq!(r["rollbacks"], 0, "{}", r["looks"]);
    let bad = json_with_status(
        app.post(
            &format!("{}/backtest", fuse_path("replayed")),
            &json!({"step": "5s"}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(bad["details"][0]["path"], "step");
}

/// A fused feature's live aggregates in `development`, sorted by user, after
/// asserting they equal a from-scratch scan of the stored events (feedback means to
/// 1e-12: the two sum in different orders).
async fn live_rows_equal_a_scan(
    store: &dyn fusebox::store::Store,
    feature: &str,
    names: &fusebox::domain::fuse::outcomes::OutcomeNames,
    label: &str,
) -> Vec<fusebox::store::CohortRow> {
    let mut live = store
        .live_cohort_rows("development", feature, names)
        .await
        .unwrap();
    let mut scan = store
        .cohort_rows("development", feature, i64::MAX, names)
        .await
        .unwrap();
    live.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    scan.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    assert_eq!(live.len(), scan.len(), "{label}");
    for (l, s) in live.iter().zip(&scan) {
        let close = match (l.feedback, s.feedback) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-12,
            (a, b) => a == b,
        };
        assert!(close, "{label}: feedback {l:?} vs {s:?}");
        let mut l = l.clone();
        l.feedback = s.feedback;
        assert_eq!(&l, s, "{label}");
    }
    live
}

/// Ingest keeps per-user outcome aggregates for fused features so a live look need
/// not scan events; they must equal a from-scratch scan whatever order events arrive
/// in: activity before its exposure, an earlier exposure arriving late, duplicates,
/// events before t0, feedback for other features, and a change of the fuse's names.
async fn live_aggregates_equal_a_scan_of_the_stored_events(app: TestApp) {
    use fusebox::domain::fuse::outcomes::OutcomeNames;
    app.create_feature("agg").await;
    app.create_feature("agg-other").await;
    let config = json!({"activation_events": ["signup"], "adoption_events": ["used_agg"]});
    json_with_status(app.put(&fuse_path("agg"), &config).await, 201).await;
    let names = OutcomeNames {
        activation: vec!["signup".into()],
        adoption: vec!["used_agg".into()],
    };
    let store = app.state.store.clone();

    let now = chrono::Utc::now().timestamp_millis();
    let base = now - 20 * DAY;
    let mut seed = 7u64;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let mut events = Vec::new();
    for u in 0..250u64 {
        let user = format!("u{u}");
        let t0 = base + next(5 * DAY as u64) as i64;
        events.push(json!({"type": "exposure", "user_id": user, "feature": "agg", "enabled": u % 2 == 0, "timestamp": t0}));
        if u % 7 == 0 {
            // A second, later exposure with the other assignment: a crossover.
            events.push(json!({"type": "exposure", "user_id": user, "feature": "agg", "enabled": u % 2 == 1, "timestamp": t0 + HOUR}));
        }
        for _ in 0..next(14) {
            let ts = t0 - DAY + next(12 * DAY as u64) as i64;
            let event = match next(6) {
                0 => {
                    json!({"type": "activity", "user_id": user, "name": "signup", "timestamp": ts})
                }
                1 => {
                    json!({"type": "activity", "user_id": user, "name": "used_agg", "timestamp": ts})
                }
                2 => {
                    json!({"type": "activity", "user_id": user, "feature": if next(2) == 0 { "agg" } else { "agg-other" }, "name": "click", "timestamp": ts})
                }
                3 => json!({"type": "error", "user_id": user, "name": "crash", "timestamp": ts}),
                4 => {
                    json!({"type": "feedback", "user_id": user, "feature": if next(3) == 0 { "agg-other" } else { "agg" }, "score": next(11) as f64 / 10.0, "timestamp": ts})
                }
                _ => {
                    json!({"type": "activity", "user_id": user, "name": "session_start", "timestamp": ts})
                }
            };
            events.push(event);
        }
    }
    // Arrival order unrelated to time.
    for i in (1..events.len()).rev() {
        events.swap(i, next(i as u64 + 1) as usize);
    }
    let ids: Vec<Value> = events
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            e["id"] = json!(uuid::Uuid::from_u128(0xa66 << 64 | i as u128).to_string());
            e
        })
        .collect();

    let compare = |label: &'static str, names: OutcomeNames| {
        let store = store.clone();
        async move {
            live_rows_equal_a_scan(store.as_ref(), "agg", &names, label)
                .await
                .len()
        }
    };

    // An oracle independent of the store: each user's cohort and outcomes folded
    // straight from the events sent.
    let oracle = |names: &OutcomeNames| {
        use fusebox::domain::fuse::outcomes::{OutcomeEvent, UserOutcomes};
        let mut exposed: std::collections::HashMap<&str, (i64, bool)> = Default::default();
        for e in ids.iter().filter(|e| e["type"] == "exposure") {
            let (user, ts) = (
                e["user_id"].as_str().unwrap(),
                e["timestamp"].as_i64().unwrap(),
            );
            let first = exposed
                .entry(user)
                .or_insert((ts, e["enabled"].as_bool().unwrap()));
            if ts < first.0 {
                *first = (ts, e["enabled"].as_bool().unwrap());
            }
        }
        let mut expected: std::collections::BTreeMap<String, (bool, i64, UserOutcomes)> = exposed
            .iter()
            .map(|(user, (t0, enabled))| {
                (user.to_string(), (*enabled, *t0, UserOutcomes::default()))
            })
            .collect();
        for e in &ids {
            let Some((_, t0, outcomes)) = expected.get_mut(e["user_id"].as_str().unwrap()) else {
                continue;
            };
            outcomes.apply(
                "agg",
                *t0,
                names,
                &OutcomeEvent {
                    kind: e["type"].as_str().unwrap(),
                    feature: e["feature"].as_str(),
                    name: e["name"].as_str(),
                    score: e["score"].as_f64(),
                    ts: e["timestamp"].as_i64().unwrap(),
                },
            );
        }
        expected
    };
    let matches_oracle = |label: &'static str,
                          rows: Vec<fusebox::store::CohortRow>,
                          names: &OutcomeNames| {
        let expected = oracle(names);
        assert_eq!(rows.len(), expected.len(), "{label}");
        for row in rows {
            let (enabled, t0, o) = &expected[&row.user_id];
            assert_eq!((row.enabled, row.t0), (*enabled, *t0), "{label}: {row:?}");
            assert_eq!(
                (
                    row.active_days,
                    row.first_activation,
                    row.first_error,
                    row.adopted
                ),
                (o.active_days, o.first_activation, o.first_error, o.adopted),
                "{label}: {row:?} vs {o:?}"
            );
            match (row.feedback, o.feedback()) {
                (Some(a), Some(b)) => assert!((a - b).abs() < 1e-12, "{label}: {row:?} vs {o:?}"),
                (a, b) => assert_eq!(a, b, "{label}: {row:?}"),
            }
        }
    };

    let (first, rest) = ids.split_at(ids.len() / 3);
    send_events(&app, first.to_vec()).await;
    // The first live look builds the aggregates from what is stored so far ...
    compare("built", names.clone()).await;
    // ... and ingest keeps them current from then on, redeliveries included.
    for chunk in rest.chunks(300) {
        send_events(&app, chunk.to_vec()).await;
    }
    send_events(&app, ids[..400].to_vec()).await;
    let users = compare("maintained", names.clone()).await;
    assert_eq!(users, 250);
    let rows = store
        .cohort_rows("development", "agg", i64::MAX, &names)
        .await
        .unwrap();
    matches_oracle("maintained", rows, &names);
    // A store opened afresh on the same database (a restart) reads the same: on
    // SQLite it reads the events its in-memory index had back from the table.
    let reopened: std::sync::Arc<dyn fusebox::store::Store> = match app.backend {
        crate::helpers::Backend::Sqlite => std::sync::Arc::new(
            fusebox::store::SqliteStore::connect(&app.database_url, 2, 3)
                .await
                .unwrap(),
        ),
        crate::helpers::Backend::Postgres => std::sync::Arc::new(
            fusebox::store::PgStore::connect(&app.database_url, 2)
                .await
                .unwrap(),
        ),
    };
    let rows = reopened
        .cohort_rows("development", "agg", i64::MAX, &names)
        .await
        .unwrap();
    matches_oracle("reopened", rows, &names);
    let live = reopened
        .live_cohort_rows("development", "agg", &names)
        .await
        .unwrap();
    matches_oracle("reopened, live", live, &names);

    // New names: the next live look rebuilds for them.
    let config = json!({"activation_events": ["used_agg"], "adoption_events": []});
    json_with_status(app.put(&fuse_path("agg"), &config).await, 200).await;
    let renamed = OutcomeNames {
        activation: vec!["used_agg".into()],
        adoption: vec![],
    };
    compare("renamed", renamed.clone()).await;
    let live = store
        .live_cohort_rows("development", "agg", &renamed)
        .await
        .unwrap();
    matches_oracle("renamed", live, &renamed);
    // Ingest then folds into the rebuilt rows, not into copies it kept from before
    // (on SQLite the writer keeps the rows it folds into).
    let more: Vec<Value> = (0..250u128)
        .step_by(3)
        .map(|u| {
            json!({"id": uuid::Uuid::from_u128(0xb77 << 64 | u).to_string(), "type": "activity",
                   "user_id": format!("u{u}"), "name": "used_agg", "timestamp": now - HOUR})
        })
        .collect();
    send_events(&app, more).await;
    compare("renamed, then maintained", renamed.clone()).await;
    // A live evaluation goes through the same rows.
    json_with_status(
        app.post(&format!("{}/evaluate", fuse_path("agg")), &json!({}))
            .await,
        200,
    )
    .await;
}

crate::both_backends!(
    a_backtest_replays_the_rules_over_stored_events_without_applying,
    a_good_feature_is_promoted_step_by_step_to_full_exposure,
    arming_a_fuse_creates_the_managed_strategy_and_validates_config,
    a_harmful_feature_is_throttled_then_rolled_back_locked_and_unlocked,
    a_sample_ratio_mismatch_holds_the_fuse,
    live_aggregates_equal_a_scan_of_the_stored_events,
    pause_and_resume_are_audited_and_freeze_decisions,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_loop_evaluates_fuses_by_itself() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, |mut s| {
        s.scheduler_interval_secs = 1;
        s
    })
    .await
    .unwrap();
    app.create_feature("looped").await;
    json_with_status(app.put(&fuse_path("looped"), &json!({})).await, 201).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let fuse = json_with_status(app.get(&fuse_path("looped")).await, 200).await;
        if !fuse["lastEvaluatedAt"].is_null() {
            assert_eq!(
                fuse["lastDecision"]["kind"], "wait",
                "{}",
                fuse["lastDecision"]
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scheduler never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_postgres_replica_leads_and_another_takes_over_when_it_dies() {
    let Some((url, _db)) = crate::helpers::fresh_database(crate::helpers::Backend::Postgres).await
    else {
        return;
    };
    let a = fusebox::store::PgStore::connect(&url, 2).await.unwrap();
    let b = fusebox::store::PgStore::connect(&url, 2).await.unwrap();
    use fusebox::store::Store;
    assert!(a.try_lead().await.unwrap());
    assert!(a.try_lead().await.unwrap(), "the leader keeps leading");
    assert!(
        !b.try_lead().await.unwrap(),
        "a second replica must not lead"
    );
    drop(a); // the leader's session ends, as when its process dies
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !b.try_lead().await.unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no replica took over"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// PostgreSQL replicas keep in-memory filters of which users have exposure rows, and
/// learn of rows another replica wrote through `exposure_log`. A replica whose filter
/// was filled before another replica stored a user's first exposure must still fold
/// that user's later events into the aggregates, also after the log rows it had not
/// read were pruned, and also when the row was written by SQL that logs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_replica_folds_events_of_users_another_replica_exposed() {
    use fusebox::domain::fuse::outcomes::OutcomeNames;
    use fusebox::store::{NewEvent, Store};
    let Some(app) = crate::helpers::spawn_app(crate::helpers::Backend::Postgres).await else {
        return;
    };
    app.create_feature("shared").await;
    let config = json!({"activation_events": ["signup"]});
    json_with_status(app.put(&fuse_path("shared"), &config).await, 201).await;
    let names = OutcomeNames {
        activation: vec!["signup".into()],
        adoption: vec![],
    };
    let a = app.state.store.clone();
    let b = fusebox::store::PgStore::connect(&app.database_url, 2)
        .await
        .unwrap();
    // The first look builds the aggregates: from now on ingest keeps them.
    a.live_cohort_rows("development", "shared", &names)
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let mut n = 0u128;
    let mut event = |user: &str, signup: bool, ts: i64| {
        n += 1;
        let id = uuid::Uuid::from_u128(0xb0b << 64 | n).to_string();
        NewEvent {
            kind: if signup { "activity" } else { "exposure" },
            feature: (!signup).then(|| "shared".into()),
            name: signup.then(|| "signup".into()),
            enabled: (!signup).then_some(true),
            ts,
            ..crate::helpers::store_activity(&id, "development", user, "signup")
        }
    };
    let check = |label: &'static str, activated: &'static [&'static str]| {
        let a = a.clone();
        let names = names.clone();
        async move {
            let live = live_rows_equal_a_scan(a.as_ref(), "shared", &names, label).await;
            for user in activated {
                let row = live.iter().find(|r| r.user_id == *user).unwrap();
                assert!(row.first_activation.is_some(), "{label}: {row:?}");
            }
        }
    };

    // Replica A fills its filter while only its own user is exposed.
    a.ingest(&[event("a-user", false, now - 3 * HOUR)], &[])
        .await
        .unwrap();
    a.ingest(&[event("a-user", true, now - 150 * 60_000)], &[])
        .await
        .unwrap();
    // Replica B stores two users' first exposures.
    for user in ["b-user-1", "b-user-2"] {
        b.ingest(&[event(user, false, now - 2 * HOUR)], &[])
            .await
            .unwrap();
    }
    a.ingest(&[event("b-user-1", true, now - HOUR)], &[])
        .await
        .unwrap();
    check("caught up", &["a-user", "b-user-1"]).await;

    // B stores two more; the older of the two log rows is pruned before A reads it.
    for user in ["b-user-3", "b-user-4"] {
        b.ingest(&[event(user, false, now - 2 * HOUR)], &[])
            .await
            .unwrap();
    }
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&app.database_url)
        .await
        .unwrap();
    let (last,): (i64,) = sqlx::query_as("select max(seq) from exposure_log")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::query("delete from exposure_log where seq < $1")
        .bind(last)
        .execute(&mut conn)
        .await
        .unwrap();
    a.ingest(&[event("b-user-3", true, now - HOUR)], &[])
        .await
        .unwrap();
    check("after pruning", &["a-user", "b-user-1", "b-user-3"]).await;

    // A writer that does not log exposures itself (a replica still on a binary from
    // before exposure_log, during a rolling upgrade) stores a first exposure with
    // plain SQL: the database logs it, so A folds the user's later events.
    sqlx::query(
        "insert into exposures (environment, feature, user_id, enabled, variant, t0, last_seen, \
         exposure_count, crossovers) values ('development', 'shared', 'old-binary-user', true, null, $1, $1, 1, 0)",
    )
    .bind(now - 2 * HOUR)
    .execute(&mut conn)
    .await
    .unwrap();
    a.ingest(&[event("old-binary-user", true, now - HOUR)], &[])
        .await
        .unwrap();
    check("a row written without logging it", &["old-binary-user"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_scheduler_pass_starts_after_shutdown() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    app.create_feature("stopping").await;
    json_with_status(app.put(&fuse_path("stopping"), &json!({})).await, 201).await;
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(app.state.scheduler.tick(now).await, 1);
    app.state.scheduler.shutdown().await;
    assert_eq!(app.state.scheduler.tick(now + HOUR).await, 0);
    let fuse = json_with_status(app.get(&fuse_path("stopping")).await, 200).await;
    assert_eq!(
        fuse["lastEvaluatedAt"], now,
        "the pass after shutdown must not run"
    );
}
