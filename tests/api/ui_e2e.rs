//! The web UI in real headless Chromium (`tests/ui/e2e.mjs`, playwright-core driving
//! the system `chromium`): log in, create a flag and turn it on, set exposure, edit
//! thresholds and see a validation error, see a rolled-back fuse's badge, charts and
//! audit entry, unlock it, and visit every page at 1280 and 390 px. Screenshots go to
//! `$CARGO_TARGET_TMPDIR/ui-screenshots/` (inside the target directory, never
//! committed).
//!
//! Needs `node`, `npm ci` in `tests/ui` and `chromium` on PATH; without them the test
//! prints `SKIP (...)` and passes, except under `CI=true`, where that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::fuses::{cohort, fuse_path, rewind, send_events};
use crate::helpers::{json_with_status, spawn_app_with, Backend, TestApp, CLIENT_TOKEN};
use crate::ui::{EMAIL, PASSWORD};

const UI_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui");
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn prerequisites() -> Result<(PathBuf, String), String> {
    let node = which("node").ok_or("node is not on PATH")?;
    let chromium = which("chromium").ok_or("chromium is not on PATH (apt-get install chromium)")?;
    if !Path::new(UI_DIR)
        .join("node_modules/playwright-core")
        .is_dir()
    {
        return Err(format!(
            "playwright-core is not installed; run `npm ci --prefix {UI_DIR}`"
        ));
    }
    Ok((node, chromium.display().to_string()))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// A fuse that has rolled back on harmful retention, as in `fuses.rs`.
async fn seed_rolled_back(app: &TestApp) {
    app.create_feature("harmful").await;
    app.post(
        "/api/admin/projects/default/features/harmful/environments/development/on",
        &json!({}),
    )
    .await;
    let config =
        json!({"ramp_steps_pct": [10, 50, 100], "retention_days": [1], "min_users_per_arm": 100});
    json_with_status(app.put(&fuse_path("harmful"), &config).await, 201).await;
    let t0 = chrono::Utc::now().timestamp_millis() - 10 * DAY;
    rewind(app, "harmful", t0, 50.0).await;
    send_events(app, cohort("harmful", 4000, t0, 0.40, 0.32, |_| true)).await;
    for hour in 48..=144 {
        let r = app
            .post(
                &format!("{}/evaluate?at={}", fuse_path("harmful"), t0 + hour * HOUR),
                &json!({}),
            )
            .await;
        if json_with_status(r, 200).await["decision"]["kind"] == "rollback" {
            break;
        }
    }
    let fuse = json_with_status(app.get(&fuse_path("harmful")).await, 200).await;
    assert_eq!(
        fuse["status"], "rolled_back",
        "seeding must end rolled back"
    );
    // One quarantined event for the events page.
    let r = app
        .request(reqwest::Method::POST, "/api/events")
        .header("Authorization", CLIENT_TOKEN)
        .json(
            &json!([{"type": "exposure", "user_id": "u", "feature": "ghost", "enabled": true,
            "timestamp": chrono::Utc::now().timestamp_millis()}]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_manager_uses_the_web_ui_in_chromium() {
    let (node, chromium) = match prerequisites() {
        Ok(p) => p,
        Err(reason) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("the web UI end-to-end test cannot run in CI: {reason}")
        }
        Err(reason) => {
            eprintln!("SKIP ({reason})");
            return;
        }
    };
    let Some(app) = spawn_app_with(Backend::Sqlite, |s| fusebox::config::Settings {
        admin_email: Some(EMAIL.into()),
        admin_password: Some(fusebox::config::Secret(PASSWORD.into())),
        ..s
    })
    .await
    else {
        return;
    };
    seed_rolled_back(&app).await;

    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let _ = std::fs::remove_dir_all(&out);
    let script = Path::new(UI_DIR).join("e2e.mjs");
    let address = app.address.clone();
    let out_arg = out.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(node)
            .arg(script)
            .args([address.as_str(), EMAIL, PASSWORD])
            .arg(&out_arg)
            .env("CHROMIUM_PATH", chromium)
            .output()
    });
    let output = tokio::time::timeout(Duration::from_secs(240), output)
        .await
        .expect("the browser run finishes within 4 minutes")
        .unwrap()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser run failed (screenshots in {}):\n{stdout}\n{stderr}",
        out.display()
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        11,
        "{stdout}"
    );

    // What the browser did is in the store: the unlock, by the person.
    let audit = json_with_status(
        app.get("/api/admin/events?feature=harmful&type=fuse-unlock")
            .await,
        200,
    )
    .await;
    assert_eq!(audit["events"][0]["createdBy"], format!("user:{EMAIL}"));
    let fuse = json_with_status(app.get(&fuse_path("harmful")).await, 200).await;
    assert_eq!(fuse["locked"], false);
    for page in [
        "login",
        "overview",
        "new-flag",
        "flag-armed",
        "flag-rolled-back",
        "confirm-unlock",
        "audit",
        "events",
        "tokens",
        "users",
        "account",
    ] {
        for width in [1280, 390] {
            let shot = out.join(format!("{page}-{width}.png"));
            assert!(shot.is_file(), "screenshot {}", shot.display());
        }
    }
}
