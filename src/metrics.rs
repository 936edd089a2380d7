//! Prometheus metrics, served at `GET /metrics` in the text format.
//!
//! One process-wide registry: the hot paths (HTTP middleware, SDK cache, ingest,
//! scheduler) update lock-free counters; gauges that are cheap to read (the writer's
//! queue depth) are sampled at scrape time.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric the server exports.
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub events: IntCounterVec,
    pub ingest_queue: IntGauge,
    pub client_cache: IntCounterVec,
    pub scheduler_pass: prometheus::Histogram,
    pub fuse_decisions: IntCounterVec,
    pub webhook_failures: IntCounter,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new_custom(Some("fusebox".into()), None)?;
    let http_requests = IntCounterVec::new(
        Opts::new(
            "http_requests_total",
            "HTTP requests by method, route pattern and status",
        ),
        &["method", "route", "status"],
    )?;
    let http_duration = HistogramVec::new(
        HistogramOpts::new(
            "http_request_duration_seconds",
            "HTTP request latency by route pattern",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]),
        &["method", "route"],
    )?;
    let events = IntCounterVec::new(
        Opts::new(
            "events_total",
            "Ingested events by outcome (accepted, duplicate, rejected)",
        ),
        &["outcome"],
    )?;
    let ingest_queue = IntGauge::new(
        "ingest_queue_events",
        "Events waiting for or being written by the writer",
    )?;
    let client_cache = IntCounterVec::new(
        Opts::new(
            "client_features_cache_total",
            "SDK feature-body cache lookups by result (hit, miss)",
        ),
        &["result"],
    )?;
    let scheduler_pass = prometheus::Histogram::with_opts(
        HistogramOpts::new(
            "scheduler_pass_seconds",
            "Duration of one scheduler pass over every active fuse",
        )
        .buckets(vec![
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ]),
    )?;
    let fuse_decisions = IntCounterVec::new(
        Opts::new("fuse_decisions_total", "Applied fuse decisions by kind"),
        &["kind"],
    )?;
    let webhook_failures = IntCounter::new(
        "webhook_failures_total",
        "Webhook deliveries that failed after every retry",
    )?;
    registry.register(Box::new(http_requests.clone()))?;
    registry.register(Box::new(http_duration.clone()))?;
    registry.register(Box::new(events.clone()))?;
    registry.register(Box::new(ingest_queue.clone()))?;
    registry.register(Box::new(client_cache.clone()))?;
    registry.register(Box::new(scheduler_pass.clone()))?;
    registry.register(Box::new(fuse_decisions.clone()))?;
    registry.register(Box::new(webhook_failures.clone()))?;
    Ok(Metrics {
        registry,
        http_requests,
        http_duration,
        events,
        ingest_queue,
        client_cache,
        scheduler_pass,
        fuse_decisions,
        webhook_failures,
    })
}

static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| match build() {
    Ok(m) => Some(m),
    Err(e) => {
        tracing::error!(error = %e, "metrics registry could not be built; /metrics will be empty");
        None
    }
});

/// The process-wide metrics (None only if the registry failed to build).
pub fn metrics() -> Option<&'static Metrics> {
    METRICS.as_ref()
}

/// The text exposition of every metric.
pub fn render() -> String {
    let Some(m) = metrics() else {
        return String::new();
    };
    let mut buf = Vec::new();
    if TextEncoder::new()
        .encode(&m.registry.gather(), &mut buf)
        .is_err()
    {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}
