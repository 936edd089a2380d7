//! Event ingestion: validation with quarantine, duplicates, gzip, limits,
//! backpressure, PII redaction, cohorts, replay, export and erasure.

use std::io::Write;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    json_with_status, spawn_app_with, store_activity, Backend, TestApp, CLIENT_TOKEN,
    FRONTEND_TOKEN,
};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn send(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.request(Method::POST, "/api/events")
        .header("Authorization", token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Posts a body as is (for bodies `send`'s JSON encoding could not produce).
async fn send_text(app: &TestApp, body: impl Into<reqwest::Body>) -> reqwest::Response {
    app.request(Method::POST, "/api/events")
        .header("Authorization", CLIENT_TOKEN)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn with_feature(app: &TestApp, name: &str) {
    app.create_feature(name).await;
}

fn exposure(user: &str, feature: &str, enabled: bool, ts: i64) -> Value {
    json!({"type": "exposure", "user_id": user, "feature": feature, "enabled": enabled, "timestamp": ts})
}

async fn a_batch_is_accepted_except_its_invalid_events_which_are_quarantined(app: TestApp) {
    with_feature(&app, "checkout").await;
    let t = now_ms();
    let batch = json!([
        exposure("u1", "checkout", true, t),
        {"type": "activity", "user_id": "u1", "name": "session_start", "timestamp": chrono::Utc::now().to_rfc3339()},
        {"type": "activity", "user_id": "u1", "timestamp": t},
        {"type": "exposure", "user_id": "u2", "feature": "checkout", "enabled": "yes", "timestamp": t},
        {"type": "click", "user_id": "u3", "timestamp": t},
        {"type": "activity", "user_id": "u4", "name": "x", "timestamp": t + 3_600_000},
        {"type": "activity", "user_id": "u5", "name": "x", "timestamp": t - 200 * 86_400_000_i64},
        {"type": "feedback", "user_id": "u6", "feature": "checkout", "score": 1.5, "timestamp": t},
        exposure("u7", "no-such-flag", true, t),
        {"type": "error", "user_id": "u8", "name": "timeout", "timestamp": t, "environment": "production"},
        {"type": "error", "user_id": "u9", "name": "timeout", "timestamp": t, "colour": "red"},
        "not an object",
        {"type": "feedback", "user_id": "u10", "feature": "checkout", "score": 0.8, "timestamp": t}
    ]);
    let body = json_with_status(send(&app, CLIENT_TOKEN, &batch).await, 202).await;
    assert_eq!(body["accepted"], 3, "{body}");
    assert_eq!(body["duplicates"], 0);
    let codes: Vec<(u64, &str)> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        codes,
        vec![
            (2, "missing_field"),
            (3, "invalid_field"),
            (4, "unknown_type"),
            (5, "timestamp_in_future"),
            (6, "timestamp_too_old"),
            (7, "score_out_of_range"),
            (8, "unknown_feature"),
            (9, "environment_not_allowed"),
            (10, "unknown_field"),
            (11, "invalid_event"),
        ]
    );
    for r in body["rejected"].as_array().unwrap() {
        assert!(!r["message"].as_str().unwrap().is_empty());
    }
    let q = json_with_status(app.get("/api/admin/events/quarantine").await, 200).await;
    assert_eq!(q["items"].as_array().unwrap().len(), 10);
    let q = json_with_status(
        app.get("/api/admin/events/quarantine?reason=score_out_of_range")
            .await,
        200,
    )
    .await;
    let items = q["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let raw: Value = serde_json::from_str(items[0]["raw"].as_str().unwrap()).unwrap();
    assert_eq!(raw["score"], 1.5);
    assert_eq!(items[0]["environment"], "development");
}

async fn redelivered_events_are_counted_as_duplicates(app: TestApp) {
    with_feature(&app, "f").await;
    let t = now_ms();
    let batch = json!({"events": [
        {"id": "8f0e6a62-1d5b-4c8e-9a3e-0c8b7e1f2a11", "type": "activity", "user_id": "u1", "name": "a", "timestamp": t},
        {"type": "activity", "user_id": "u1", "name": "b", "timestamp": t},
        {"type": "activity", "user_id": "u1", "name": "b", "timestamp": t}
    ]});
    let first = json_with_status(send(&app, CLIENT_TOKEN, &batch).await, 202).await;
    assert_eq!(
        (first["accepted"].as_u64(), first["duplicates"].as_u64()),
        (Some(2), Some(1))
    );
    let again = json_with_status(send(&app, FRONTEND_TOKEN, &batch).await, 202).await;
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(3))
    );
    // Same content, keys in another order: the derived id is the same.
    let reordered = json!([{"timestamp": t, "name": "b", "user_id": "u1", "type": "activity"}]);
    let r = json_with_status(send(&app, CLIENT_TOKEN, &reordered).await, 202).await;
    assert_eq!(r["duplicates"], 1);
    let export = json_with_status(app.get("/api/admin/users/u1/events").await, 200).await;
    assert_eq!(export["events"].as_array().unwrap().len(), 2);
}

async fn gzip_bodies_are_accepted_and_garbage_is_quarantined_whole(app: TestApp) {
    let t = now_ms();
    let body = serde_json::to_vec(
        &json!([{"type": "activity", "user_id": "z", "name": "a", "timestamp": t}]),
    )
    .unwrap();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&body).unwrap();
    let gz = encoder.finish().unwrap();
    let r = app
        .request(Method::POST, "/api/events")
        .header("Authorization", CLIENT_TOKEN)
        .header("Content-Type", "application/json")
        .header("Content-Encoding", "gzip")
        .body(gz)
        .send()
        .await
        .unwrap();
    assert_eq!(json_with_status(r, 202).await["accepted"], 1);

    let r = send_text(&app, "this is not json").await;
    assert_eq!(json_with_status(r, 400).await["code"], "invalid_json");
    let q = json_with_status(
        app.get("/api/admin/events/quarantine?reason=invalid_body")
            .await,
        200,
    )
    .await;
    assert_eq!(q["items"][0]["raw"], "this is not json");
    let r = send(&app, CLIENT_TOKEN, &json!({"nope": 1})).await;
    assert_eq!(r.status(), 400);
    let r = app
        .request(Method::POST, "/api/events")
        .header("Authorization", crate::helpers::ADMIN_TOKEN)
        .json(&json!([]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// Bodies the fast path splits but that are not valid JSON throughout (a number out of
/// range, a lone surrogate escape) are refused whole, as a full parse refuses them; an
/// event sent as a JSON array is refused as not an object, however its values line up.
async fn bodies_invalid_deep_inside_are_refused_whole_and_events_must_be_objects(app: TestApp) {
    let t = now_ms();
    let ok = format!(
        r#"{{"id":"0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a01","type":"error","user_id":"deep","name":"x","timestamp":{t}}}"#
    );
    for bad in [
        r#"{"type":"feedback","user_id":"deep","feature":"f","score":1e400,"timestamp":1}"#,
        r#"{"type":"activity","user_id":"\ud800","name":"x","timestamp":1}"#,
    ] {
        let body = format!("[{ok},{bad}]");
        let r = send_text(&app, body.clone()).await;
        assert_eq!(
            json_with_status(r, 400).await["code"],
            "invalid_json",
            "{body}"
        );
        let q = json_with_status(
            app.get("/api/admin/events/quarantine?reason=invalid_body")
                .await,
            200,
        )
        .await;
        assert_eq!(q["items"][0]["raw"], body.as_str());
    }
    let export = json_with_status(app.get("/api/admin/users/deep/events").await, 200).await;
    assert_eq!(export["events"].as_array().unwrap().len(), 0, "{export}");

    let array = format!(r#"[["0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a02","error","deep",{t}]]"#);
    let r = send_text(&app, array).await;
    let body = json_with_status(r, 202).await;
    assert_eq!(body["accepted"], 0, "{body}");
    assert_eq!(body["rejected"][0]["code"], "invalid_event", "{body}");
}

async fn properties_that_look_personal_are_redacted(app: TestApp) {
    let t = now_ms();
    let batch = json!([{"type": "activity", "user_id": "p1", "name": "signup", "timestamp": t, "properties": {
        "Email": "a@b.example", "plan": "pro", "nested": {"user_password": "hunter2", "count": 3},
        "note": "write to me at someone@example.com", "card": "4111 1111 1111 1111", "order": "1234567890123"
    }}]);
    json_with_status(send(&app, CLIENT_TOKEN, &batch).await, 202).await;
    let export = json_with_status(app.get("/api/admin/users/p1/events").await, 200).await;
    let props = &export["events"][0]["properties"];
    assert_eq!(props["Email"], "[REDACTED]");
    assert_eq!(props["plan"], "pro");
    assert_eq!(props["nested"]["user_password"], "[REDACTED]");
    assert_eq!(props["nested"]["count"], 3);
    assert_eq!(props["note"], "[REDACTED]");
    assert_eq!(props["card"], "[REDACTED]");
    assert_eq!(
        props["order"], "1234567890123",
        "a number that fails Luhn is not a card"
    );
}

async fn the_first_exposure_fixes_the_cohort_and_later_changes_are_crossovers(app: TestApp) {
    with_feature(&app, "cohort").await;
    let t = now_ms() - 60_000;
    // Delivered out of order: the earlier exposure (enabled) arrives second.
    json_with_status(
        send(
            &app,
            CLIENT_TOKEN,
            &json!([exposure("c1", "cohort", false, t + 1000)]),
        )
        .await,
        202,
    )
    .await;
    json_with_status(
        send(
            &app,
            CLIENT_TOKEN,
            &json!([exposure("c1", "cohort", true, t)]),
        )
        .await,
        202,
    )
    .await;
    json_with_status(
        send(
            &app,
            CLIENT_TOKEN,
            &json!([
                exposure("c1", "cohort", true, t + 2000),
                exposure("c2", "cohort", true, t)
            ]),
        )
        .await,
        202,
    )
    .await;
    let export = json_with_status(app.get("/api/admin/users/c1/events").await, 200).await;
    let x = &export["exposures"][0];
    assert_eq!(x["enabled"], true);
    assert_eq!(x["t0"], t);
    assert_eq!(x["exposureCount"], 3);
    assert_eq!(x["crossovers"], 1);
    assert_eq!(x["lastSeen"], t + 2000);
}

async fn quarantined_events_can_be_replayed_or_discarded(app: TestApp) {
    let t = now_ms();
    let r = send(
        &app,
        CLIENT_TOKEN,
        &json!([
            exposure("r1", "later", true, t),
            exposure("r2", "later", true, t)
        ]),
    )
    .await;
    assert_eq!(
        json_with_status(r, 202).await["rejected"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let q = json_with_status(
        app.get("/api/admin/events/quarantine?reason=unknown_feature")
            .await,
        200,
    )
    .await;
    let ids: Vec<i64> = q["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    let r = app
        .post(
            &format!("/api/admin/events/quarantine/{}/replay", ids[0]),
            &json!({}),
        )
        .await;
    assert_eq!(json_with_status(r, 422).await["code"], "unprocessable");
    with_feature(&app, "later").await;
    let r = app
        .post(
            &format!("/api/admin/events/quarantine/{}/replay", ids[0]),
            &json!({}),
        )
        .await;
    assert_eq!(json_with_status(r, 200).await["outcome"], "accepted");
    assert_eq!(
        app.delete(&format!("/api/admin/events/quarantine/{}", ids[1]))
            .await
            .status(),
        204
    );
    assert_eq!(
        app.delete(&format!("/api/admin/events/quarantine/{}", ids[1]))
            .await
            .status(),
        404
    );
    let q = json_with_status(app.get("/api/admin/events/quarantine").await, 200).await;
    assert!(q["items"].as_array().unwrap().is_empty());
    assert_eq!(
        app.post("/api/admin/events/quarantine/999/replay", &json!({}))
            .await
            .status(),
        404
    );
}

async fn a_user_can_be_exported_and_erased_and_old_events_purged(app: TestApp) {
    with_feature(&app, "gdpr").await;
    let t = now_ms();
    let batch = json!([
        exposure("erase-me", "gdpr", true, t),
        {"type": "activity", "user_id": "erase-me", "name": "a", "timestamp": t},
        {"type": "activity", "user_id": "keep-me", "name": "a", "timestamp": t}
    ]);
    json_with_status(send(&app, CLIENT_TOKEN, &batch).await, 202).await;
    let export = json_with_status(app.get("/api/admin/users/erase-me/events").await, 200).await;
    assert_eq!(export["events"].as_array().unwrap().len(), 2);
    assert_eq!(export["exposures"].as_array().unwrap().len(), 1);
    let erased = json_with_status(app.delete("/api/admin/users/erase-me").await, 200).await;
    assert_eq!(
        (erased["events"].as_u64(), erased["exposures"].as_u64()),
        (Some(2), Some(1))
    );
    let export = json_with_status(app.get("/api/admin/users/erase-me/events").await, 200).await;
    assert!(export["events"].as_array().unwrap().is_empty());
    let audit = json_with_status(app.get("/api/admin/events?limit=1").await, 200).await;
    assert_eq!(audit["events"][0]["type"], "user-erased");
    assert!(
        !audit.to_string().contains("erase-me"),
        "the audit log must not keep the erased id"
    );

    assert_eq!(app.state.store.count_events().await.unwrap(), 1);
    let purged = app.state.store.purge_events_before(t + 1).await.unwrap();
    assert_eq!(purged, 1);
    assert_eq!(app.state.store.count_events().await.unwrap(), 0);
}

/// The store's bulk insert (C API on SQLite, column arrays on PostgreSQL) reports each
/// event as new or already stored, an id repeated within one call included, and
/// stores every column as given.
async fn the_store_reports_which_events_were_new(app: TestApp) {
    let event = |id: &str, user: &str| fusebox::store::NewEvent {
        kind: "feedback",
        feature: Some("f".into()),
        name: None,
        score: Some(0.25),
        session_id: Some("s".into()),
        properties: Some(r#"{"plan":"pro"}"#.into()),
        ts: 1_700_000_000_123,
        received_at: 1_700_000_000_456,
        ..store_activity(id, "development", user, "")
    };
    let a = "00000000-0000-4000-8000-00000000000a";
    let b = "00000000-0000-4000-8000-00000000000b";
    let c = "00000000-0000-4000-8000-00000000000c";
    let store = &app.state.store;
    let first = store
        .ingest(&[event(a, "u1"), event(a, "u2"), event(b, "u1")], &[])
        .await
        .unwrap();
    assert_eq!(first, [true, false, true]);
    let second = store
        .ingest(&[event(b, "u1"), event(c, "u1")], &[])
        .await
        .unwrap();
    assert_eq!(second, [false, true]);
    assert_eq!(store.count_events().await.unwrap(), 3);
    let export = json_with_status(app.get("/api/admin/users/u1/events").await, 200).await;
    let events = export["events"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{export}");
    let stored = events.iter().find(|e| e["id"] == c).unwrap();
    assert_eq!(stored["score"], 0.25, "{stored}");
    assert_eq!(stored["feature"], "f", "{stored}");
    assert_eq!(stored["sessionId"], "s", "{stored}");
    assert_eq!(stored["receivedAt"], 1_700_000_000_456_i64, "{stored}");
    assert_eq!(stored["properties"]["plan"], "pro", "{stored}");
    assert_eq!(stored["timestamp"], 1_700_000_000_123_i64, "{stored}");
    // u2's copy of `a` was the duplicate: nothing of u2 was stored.
    let u2 = json_with_status(app.get("/api/admin/users/u2/events").await, 200).await;
    assert_eq!(u2["events"].as_array().unwrap().len(), 0, "{u2}");

    // A group larger than one multi-row insert, with repeats across its row blocks:
    // every stored row carries its own event's fields.
    let id = |i: usize| format!("00000000-0000-4000-8000-{:012x}", 0x100 + i);
    let mut group: Vec<_> = (0..100)
        .map(|i| fusebox::store::NewEvent {
            ts: 1_700_000_000_000 + i as i64,
            name: Some(format!("n{i}")),
            ..event(&id(i), &format!("v{}", i % 3))
        })
        .collect();
    group[40].id = id(5);
    group[70].id = id(33);
    group[99].id = a.to_string();
    let fresh = store.ingest(&group, &[]).await.unwrap();
    let repeats = [40, 70, 99];
    for (i, stored) in fresh.iter().enumerate() {
        assert_eq!(*stored, !repeats.contains(&i), "event {i}");
    }
    assert_eq!(store.count_events().await.unwrap(), 3 + 97);
    let mut exported = 0;
    for user in ["v0", "v1", "v2"] {
        let export = json_with_status(
            app.get(&format!("/api/admin/users/{user}/events")).await,
            200,
        )
        .await;
        for e in export["events"].as_array().unwrap() {
            let i = (e["timestamp"].as_i64().unwrap() - 1_700_000_000_000) as usize;
            assert!(!repeats.contains(&i), "{e}");
            assert_eq!(
                (e["id"].as_str(), e["name"].as_str()),
                (Some(id(i).as_str()), Some(format!("n{i}").as_str())),
                "{e}"
            );
            assert_eq!(format!("v{}", i % 3), user, "{e}");
            exported += 1;
        }
    }
    assert_eq!(exported, 97);
}

/// A group whose transaction fails after its events were inserted stores nothing:
/// the error reaches the caller, the events are not counted or exported, and
/// redelivering them later stores them (SQLite's in-memory tail forgot them too).
/// The writer connection is usable afterwards. A trigger makes the hourly-count
/// upsert, one of the last statements of the group, fail for one environment.
async fn a_failed_ingest_group_stores_nothing(app: TestApp) {
    use sqlx::{Connection, Executor};
    let setup: &[&str] = match app.backend {
        Backend::Sqlite => &["create trigger fail_boom before insert on ingest_hourly \
             when new.environment = 'boom' begin select raise(abort, 'boom'); end"],
        Backend::Postgres => &[
            "create function fail_boom() returns trigger language plpgsql as \
             $$ begin if new.environment = 'boom' then raise exception 'boom'; end if; return new; end $$",
            "create trigger fail_boom before insert on ingest_hourly for each row execute function fail_boom()",
        ],
    };
    match app.backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&app.database_url)
                .await
                .unwrap();
            for sql in setup {
                conn.execute(*sql).await.unwrap();
            }
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&app.database_url)
                .await
                .unwrap();
            for sql in setup {
                conn.execute(*sql).await.unwrap();
            }
        }
    }
    let event = |id: &str, environment: &str| {
        store_activity(id, environment, "rolled-back", "session_start")
    };
    let a = "00000000-0000-4000-8000-0000000000a1";
    let b = "00000000-0000-4000-8000-0000000000b1";
    let store = &app.state.store;
    let failed = store
        .ingest(&[event(a, "development"), event(b, "boom")], &[])
        .await;
    assert!(
        failed.is_err(),
        "the trigger must fail the group: {failed:?}"
    );
    assert_eq!(store.count_events().await.unwrap(), 0);
    let export = json_with_status(app.get("/api/admin/users/rolled-back/events").await, 200).await;
    assert_eq!(export["events"].as_array().unwrap().len(), 0, "{export}");
    // Redelivered without the failing environment: `a` is new, not a duplicate.
    let again = store.ingest(&[event(a, "development")], &[]).await.unwrap();
    assert_eq!(again, [true]);
    assert_eq!(store.count_events().await.unwrap(), 1);
    // The writer connection left no transaction open: an admin write goes through.
    app.create_feature("after-rollback").await;
}

crate::both_backends!(
    a_failed_ingest_group_stores_nothing,
    bodies_invalid_deep_inside_are_refused_whole_and_events_must_be_objects,
    the_store_reports_which_events_were_new,
    a_batch_is_accepted_except_its_invalid_events_which_are_quarantined,
    redelivered_events_are_counted_as_duplicates,
    gzip_bodies_are_accepted_and_garbage_is_quarantined_whole,
    properties_that_look_personal_are_redacted,
    the_first_exposure_fixes_the_cohort_and_later_changes_are_crossovers,
    quarantined_events_can_be_replayed_or_discarded,
    a_user_can_be_exported_and_erased_and_old_events_purged,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_batches_get_413_with_the_limit_on_sqlite() {
    oversized_bodies_and_batches_get_413_with_the_limit(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_batches_get_413_with_the_limit_on_postgres() {
    oversized_bodies_and_batches_get_413_with_the_limit(Backend::Postgres).await;
}

async fn oversized_bodies_and_batches_get_413_with_the_limit(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |mut s| {
        s.max_batch_events = 3;
        s.max_body_bytes = 2048;
        s
    })
    .await
    else {
        return;
    };
    let t = now_ms();
    let four: Vec<Value> = (0..4).map(|i| json!({"type": "activity", "user_id": format!("u{i}"), "name": "a", "timestamp": t})).collect();
    let body = json_with_status(send(&app, CLIENT_TOKEN, &Value::Array(four)).await, 413).await;
    assert!(
        body["message"].as_str().unwrap().contains("at most 3"),
        "{body}"
    );
    let big =
        json!([{"type": "activity", "user_id": "u", "name": "x".repeat(4000), "timestamp": t}]);
    let body = json_with_status(send(&app, CLIENT_TOKEN, &big).await, 413).await;
    assert!(body["message"].as_str().unwrap().contains("2048"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ingest_queue_answers_503_with_retry_after_on_sqlite() {
    a_full_ingest_queue_answers_503_with_retry_after(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ingest_queue_answers_503_with_retry_after_on_postgres() {
    a_full_ingest_queue_answers_503_with_retry_after(Backend::Postgres).await;
}

async fn a_full_ingest_queue_answers_503_with_retry_after(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |mut s| {
        s.ingest_queue_events = 10;
        s
    })
    .await
    else {
        return;
    };
    let t = now_ms();
    let batch = json!([{"type": "activity", "user_id": "q", "name": "a", "timestamp": t}]);
    // Hold the whole queue, as a burst of slow writes would.
    let held = app.state.ingest.try_reserve(10).expect("queue capacity");
    let r = send(&app, CLIENT_TOKEN, &batch).await;
    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    assert_eq!(
        json_with_status(r, 503).await["code"],
        "service_unavailable"
    );
    drop(held);
    assert_eq!(
        json_with_status(send(&app, CLIENT_TOKEN, &batch).await, 202).await["accepted"],
        1
    );
}

/// PostgreSQL stores a group with COPY after leaving out the ids it found stored.
/// An id that another transaction commits between that check and the COPY makes
/// the COPY fail; the group then starts over and must count that id as a duplicate
/// and store the rest once. Here the other transaction holds the id uncommitted
/// while the group checks, so the COPY waits on it and fails when it commits.
/// The same goes for ids a replica never looks up because it never stored them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_stored_concurrently_with_a_postgres_copy_is_a_duplicate() {
    use sqlx::{Connection, Executor};
    let Some(app) = crate::helpers::spawn_app(Backend::Postgres).await else {
        return;
    };
    let event = |id: &str| store_activity(id, "development", "racer", "click");
    let raced = "00000000-0000-4000-8000-0000000000aa";
    let other = "00000000-0000-4000-8000-0000000000bb";
    let mut conn = sqlx::PgConnection::connect(&app.database_url)
        .await
        .unwrap();
    conn.execute("begin").await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!(
        "insert into events (id, environment, kind, user_id, ts, received_at) \
         values ('{raced}', 'development', 'activity', 'racer', 1, 1)"
    )))
    .await
    .unwrap();
    let store = app.state.store.clone();
    let group = [event(other), event(raced)];
    let ingest = tokio::spawn(async move { store.ingest(&group, &[]).await });
    // Long enough for the group to pass its check and wait in the COPY.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !ingest.is_finished(),
        "the COPY should wait for the other transaction"
    );
    conn.execute("commit").await.unwrap();
    let fresh = ingest.await.unwrap().unwrap();
    assert_eq!(fresh, [true, false]);
    assert_eq!(app.state.store.count_events().await.unwrap(), 2);

    // Another replica has never stored these ids, so it does not look them up
    // first: its COPY fails on them and its group starts over.
    let replica = fusebox::store::PgStore::connect(&app.database_url, 2)
        .await
        .unwrap();
    let third = "00000000-0000-4000-8000-0000000000cc";
    let fresh =
        fusebox::store::Store::ingest(&replica, &[event(raced), event(third), event(other)], &[])
            .await
            .unwrap();
    assert_eq!(fresh, [false, true, false]);
    assert_eq!(app.state.store.count_events().await.unwrap(), 3);
}
