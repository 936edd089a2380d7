//! Several `fusebox` processes on one PostgreSQL database: a flag change made through
//! one is served by another within a second, exactly one leads the scheduler, and when
//! the leader is killed another takes over within two scheduler intervals.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{fresh_database, Backend, ADMIN_TOKEN, CLIENT_TOKEN};

struct Replica {
    child: Child,
    base: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(database_url: &str) -> Replica {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_fusebox"))
        .env("FUSEBOX_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", database_url)
        .env("FUSEBOX_INIT_ADMIN_TOKENS", ADMIN_TOKEN)
        .env("FUSEBOX_INIT_CLIENT_TOKENS", CLIENT_TOKEN)
        .env("FUSEBOX_SCHEDULER_INTERVAL", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fusebox");
    Replica {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check().await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: not within {timeout:?}");
}

async fn leader(client: &reqwest::Client, replica: &Replica) -> Option<bool> {
    let r = client
        .get(format!("{}/health", replica.base))
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    v["scheduler_leader"].as_bool()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_flag_changes_within_a_second_and_one_leads_the_scheduler() {
    let Some((url, _db)) = fresh_database(Backend::Postgres).await else {
        return;
    };
    let client = reqwest::Client::new();
    // Start one first so migrations run once, then the second.
    let a = start(&url);
    wait_until("replica a ready", Duration::from_secs(30), async || {
        client
            .get(format!("{}/ready", a.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let b = start(&url);
    wait_until("replica b ready", Duration::from_secs(30), async || {
        client
            .get(format!("{}/ready", b.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;

    // A change through A is served by B within a second.
    let features_b = format!("{}/api/client/features", b.base);
    let seen_by_b = async |name: &str| -> bool {
        let Ok(r) = client
            .get(&features_b)
            .header("Authorization", CLIENT_TOKEN)
            .send()
            .await
        else {
            return false;
        };
        let body: Value = r.json().await.unwrap_or(Value::Null);
        body["features"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["name"] == name))
    };
    assert!(!seen_by_b("replicated").await);
    let r = client
        .post(format!("{}/api/admin/projects/default/features", a.base))
        .header("Authorization", ADMIN_TOKEN)
        .json(&json!({"name": "replicated"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let change = wait_until("B serves A's change", Duration::from_secs(5), async || {
        seen_by_b("replicated").await
    })
    .await;
    assert!(
        change <= Duration::from_secs(1),
        "B served the change after {change:?}"
    );

    // Exactly one leads.
    wait_until("one leader", Duration::from_secs(5), async || {
        matches!(
            (leader(&client, &a).await, leader(&client, &b).await),
            (Some(true), Some(false)) | (Some(false), Some(true))
        )
    })
    .await;
    for _ in 0..5 {
        let (la, lb) = (
            leader(&client, &a).await.unwrap(),
            leader(&client, &b).await.unwrap(),
        );
        assert!(la != lb, "exactly one replica must lead (a: {la}, b: {lb})");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (leader_replica, other) = if leader(&client, &a).await == Some(true) {
        (a, b)
    } else {
        (b, a)
    };
    drop(leader_replica); // SIGKILL
    let took = wait_until(
        "the other replica takes over",
        Duration::from_secs(10),
        async || leader(&client, &other).await == Some(true),
    )
    .await;
    assert!(
        took <= Duration::from_secs(2) + Duration::from_millis(500),
        "takeover took {took:?} (interval 1 s)"
    );
    eprintln!("replica change visible after {change:?}; scheduler takeover after {took:?}");
}
