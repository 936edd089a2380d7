//! Logging: pretty for people, JSON for log pipelines; filtered by RUST_LOG.

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Per-request spans (`tracing_actix_web`) are off by default: at info level they cost
/// a third of the client API's throughput. `RUST_LOG=info,tracing_actix_web=info` turns
/// them on.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,actix_server=warn,tracing_actix_web=warn";

/// Installs the global subscriber once; later calls are no-ops (tests call it per app).
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
