//! Logging: pretty for people, JSON for log pipelines; filtered by RUST_LOG. With
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are also exported over OTLP/HTTP
//! (protobuf) in batches, request spans included.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::Directive;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// Per-request spans (`tracing_actix_web`) are off by default: at info level they cost
/// a third of the client API's throughput. `RUST_LOG=info,tracing_actix_web=info` turns
/// them on.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,actix_server=warn,tracing_actix_web=warn";

/// Added to the log filter for the OTLP exporter only: whoever configures a trace
/// collector wants the request spans, whatever the log shows.
pub const OTLP_EXTRA_DIRECTIVE: &str = "tracing_actix_web=info";

/// The service name when `OTEL_SERVICE_NAME` is not set.
pub const DEFAULT_SERVICE_NAME: &str = "fusebox";

/// Holds the OTLP pipeline, if one was installed; `shutdown` exports what is buffered.
#[derive(Debug, Default)]
#[must_use = "call shutdown() at exit so buffered spans are exported"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered and stops the exporter. Blocks for up to five
    /// seconds (a collector that does not answer must not hold the exit hostage).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("exporting the last spans over OTLP failed: {e}");
            }
        }
    }
}

fn log_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// The OTLP endpoint from the environment; empty counts as unset (as the spec says).
fn otlp_endpoint() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
}

/// `OTEL_SERVICE_NAME`, else `fusebox`.
fn service_name() -> String {
    std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string())
}

/// A batch exporter to the configured endpoint (the exporter reads the
/// `OTEL_EXPORTER_OTLP_*` variables itself: endpoint, headers, timeout).
fn otlp_provider() -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name())
                .build(),
        )
        .build())
}

/// Installs the global subscriber once; later calls are no-ops (tests call it per app).
/// Fails only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set but unusable.
pub fn init(format: LogFormat) -> anyhow::Result<Telemetry> {
    let log: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .with_filter(log_filter())
            .boxed(),
        LogFormat::Pretty => fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(log_filter())
            .boxed(),
    };
    let provider = match otlp_endpoint() {
        Some(_) => Some(otlp_provider()?),
        None => None,
    };
    let directive: Directive = OTLP_EXTRA_DIRECTIVE.parse()?;
    let otlp = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("fusebox"))
            .with_filter(log_filter().add_directive(directive))
    });
    let installed = tracing_subscriber::registry()
        .with(log)
        .with(otlp)
        .try_init()
        .is_ok();
    let telemetry = Telemetry {
        // A second init (tests) keeps the first subscriber: drop this exporter.
        provider: provider.filter(|_| installed),
    };
    if telemetry.exporting() {
        tracing::info!(service = %service_name(), "exporting traces over OTLP/HTTP");
    }
    Ok(telemetry)
}
