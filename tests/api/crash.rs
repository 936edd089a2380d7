//! Durability: a server killed with SIGKILL mid-load has stored every event it
//! acknowledged with 202, and redelivery after restart stores nothing twice.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{fresh_database, Backend, ADMIN_TOKEN, CLIENT_TOKEN};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(database_url: &str, port: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_fusebox"))
        .env("FUSEBOX_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", database_url)
        .env("FUSEBOX_INIT_ADMIN_TOKENS", ADMIN_TOKEN)
        .env("FUSEBOX_INIT_CLIENT_TOKENS", CLIENT_TOKEN)
        // On SQLite, moves of events into the on-disk index run throughout the load,
        // so the kill interrupts some and the restart reads a tail back.
        .env("FUSEBOX_SQLITE_EVENT_TAIL", "1000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fusebox");
    Server(child)
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/ready")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {base} not ready");
}

fn batch(connection: usize, n: usize, size: usize) -> Value {
    let now = chrono::Utc::now().timestamp_millis();
    let events: Vec<Value> = (0..size)
        .map(|i| {
            json!({"id": format!("{connection:08x}-0000-4000-8000-{:012x}", n * size + i),
                   "type": "activity", "user_id": format!("u{}", i % 50), "name": "tick", "timestamp": now})
        })
        .collect();
    Value::Array(events)
}

async fn acknowledged_events_survive_sigkill(backend: Backend) {
    let Some((url, _db)) = fresh_database(backend).await else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut server = start(&url, port);
    wait_ready(&client, &base).await;

    // Four connections send 200-event batches until the server dies under them.
    let mut tasks = Vec::new();
    for c in 0..4 {
        let client = client.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..10_000 {
                let body = batch(c, n, 200);
                let sent = client
                    .post(format!("{base}/api/events"))
                    .header("Authorization", CLIENT_TOKEN)
                    .json(&body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 202 => {
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        assert_eq!(v["accepted"], 200, "{v}");
                        acked.push(body);
                    }
                    Ok(r) if r.status() == 503 => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Ok(r) => panic!("unexpected {}", r.status()),
                    Err(_) => break, // the server is gone
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.0.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
    let _ = server.0.wait();
    let mut acked: Vec<Value> = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let acked_events: usize = acked.iter().map(|b| b.as_array().unwrap().len()).sum();
    assert!(
        acked_events > 1000,
        "the load ran too briefly: {acked_events} events acked"
    );

    let server = start(&url, port);
    wait_ready(&client, &base).await;
    // Every acknowledged event is there: redelivering them all stores nothing new.
    let mut duplicates = 0u64;
    for body in &acked {
        let r = client
            .post(format!("{base}/api/events"))
            .header("Authorization", CLIENT_TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["accepted"], 0, "an acknowledged event was lost: {v}");
        duplicates += v["duplicates"].as_u64().unwrap();
    }
    assert_eq!(duplicates as usize, acked_events);
    drop(server);
    eprintln!(
        "{backend:?}: {acked_events} acknowledged events all present after SIGKILL and restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_sigkill_on_sqlite() {
    acknowledged_events_survive_sigkill(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_sigkill_on_postgres() {
    acknowledged_events_survive_sigkill(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_acknowledged_events_and_exits_cleanly() {
    let Some((url, _db)) = fresh_database(Backend::Sqlite).await else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut server = start(&url, port);
    wait_ready(&client, &base).await;
    let mut acked = 0usize;
    for n in 0..20 {
        let r = client
            .post(format!("{base}/api/events"))
            .header("Authorization", CLIENT_TOKEN)
            .json(&batch(9, n, 100))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        acked += 100;
    }
    let pid = server.0.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = server.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status after SIGTERM: {exit:?}");
    // Restart and check that everything acknowledged is stored.
    let _server = start(&url, port);
    wait_ready(&client, &base).await;
    let mut duplicates = 0u64;
    for n in 0..20 {
        let v: Value = client
            .post(format!("{base}/api/events"))
            .header("Authorization", CLIENT_TOKEN)
            .json(&batch(9, n, 100))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        duplicates += v["duplicates"].as_u64().unwrap();
    }
    assert_eq!(duplicates as usize, acked);
}
