//! OTLP trace export: a `fusebox` process with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at
//! a fake collector exports its request spans over OTLP/HTTP (protobuf) — and, with the
//! batch delay set far beyond the test, does so because SIGTERM flushes the exporter.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use crate::helpers::{fresh_database, Backend, ADMIN_TOKEN};

/// One request the collector received: `METHOD path`, content type, body.
type Received = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

async fn collect(
    req: HttpRequest,
    body: web::Bytes,
    received: web::Data<Received>,
) -> HttpResponse {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    received.lock().unwrap().push((
        format!("{} {}", req.method(), req.path()),
        content_type,
        body.to_vec(),
    ));
    // An empty ExportTraceServiceResponse is an empty protobuf message.
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .finish()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_are_exported_over_otlp_http_and_flushed_on_sigterm() {
    let received: Received = Arc::default();
    let data = web::Data::new(received.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let collector_port = listener.local_addr().unwrap().port();
    let collector = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(collect))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let collector_handle = collector.handle();
    tokio::spawn(collector);

    let (url, _db) = fresh_database(Backend::Sqlite).await.unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_fusebox"))
        .env("FUSEBOX_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", &url)
        .env("FUSEBOX_INIT_ADMIN_TOKENS", ADMIN_TOKEN)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{collector_port}"),
        )
        // Far beyond the test: only the flush at shutdown can deliver the spans.
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        // The log filter as shipped: request spans stay out of the log, not the traces.
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fusebox");

    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/ready")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "fusebox did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for path in [
        "/api/admin/projects",
        "/api/admin/projects/default/features",
    ] {
        let r = client
            .get(format!("{base}{path}"))
            .header("Authorization", ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    assert!(
        received.lock().unwrap().is_empty(),
        "spans were exported before the batch delay or shutdown"
    );

    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = server.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = server.kill();
            panic!("fusebox did not stop after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status after SIGTERM: {exit:?}");
    collector_handle.stop(true).await;

    let received = received.lock().unwrap();
    let traces: Vec<_> = received
        .iter()
        .filter(|(what, _, body)| what == "POST /v1/traces" && !body.is_empty())
        .collect();
    assert!(
        !traces.is_empty(),
        "no non-empty POST /v1/traces; the collector got {:?}",
        received
            .iter()
            .map(|(w, c, b)| format!("{w} {c} {} bytes", b.len()))
            .collect::<Vec<_>>()
    );
    assert!(traces
        .iter()
        .all(|(_, content_type, _)| content_type == "application/x-protobuf"));
    let all: Vec<u8> = traces.iter().flat_map(|(_, _, b)| b.clone()).collect();
    // Protobuf stores strings as raw UTF-8: the default service name and the route
    // pattern of a request span (from tracing_actix_web) are in the payload.
    assert!(contains(&all, b"fusebox"), "no service name in the spans");
    assert!(
        contains(&all, b"/api/admin/projects/{project}/features"),
        "no request span for the features route"
    );
}
