//! Settings: serde defaults < optional TOML file (`--config` / `FUSEBOX_CONFIG`) <
//! environment variables < command-line flags.
//!
//! clap resolves "flag, else environment" for each setting; the file fills in whatever
//! neither gave; the defaults below fill the rest. Tests build `Settings` directly.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

/// The `fusebox` command line.
#[derive(Debug, Parser)]
#[command(
    name = "fusebox",
    version,
    about = "Feature flags where every rollout has a fuse"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: SettingsArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands; none means `serve`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the server (the default).
    Serve,
    /// Print the OpenAPI document to stdout.
    Openapi,
    /// Load-test event ingestion (starts a server unless --url is given).
    Loadgen(crate::loadgen::LoadgenArgs),
    /// Start a server on a temporary database seeded with released, rolled-back and
    /// ramping rollouts.
    Demo(crate::demo::DemoArgs),
    /// Time one scheduler evaluation over generated users and events.
    BenchFuse(crate::bench_fuse::BenchFuseArgs),
    /// Monte-Carlo simulation of fuses (A/A false alarms, detection of a D1 drop).
    Simulate(crate::simulate::SimulateArgs),
}

/// Every setting, as a flag with its environment variable. All optional so that the
/// config file can fill what is missing.
#[derive(Debug, Args, Default, Clone)]
pub struct SettingsArgs {
    /// TOML config file with the same keys as below (snake_case, e.g. `addr = "0.0.0.0:4242"`).
    #[arg(long, env = "FUSEBOX_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:4242].
    #[arg(long, env = "FUSEBOX_ADDR", global = true)]
    pub addr: Option<String>,
    /// Database: `sqlite://PATH` (file created on first start) or `postgres://...`
    /// [default: sqlite://data/fusebox.db].
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Comma-separated admin tokens (`*:*.secret`) created at start if absent.
    #[arg(long, env = "FUSEBOX_INIT_ADMIN_TOKENS", global = true)]
    pub init_admin_tokens: Option<String>,
    /// Comma-separated client tokens (`project:environment.secret`, `*` for all projects).
    #[arg(long, env = "FUSEBOX_INIT_CLIENT_TOKENS", global = true)]
    pub init_client_tokens: Option<String>,
    /// Comma-separated frontend tokens (`project:environment.secret`).
    #[arg(long, env = "FUSEBOX_INIT_FRONTEND_TOKENS", global = true)]
    pub init_frontend_tokens: Option<String>,
    /// Log format: `pretty` or `json` [default: pretty]. Filter with RUST_LOG.
    #[arg(long, env = "FUSEBOX_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
    /// Largest accepted request body in bytes [default: 10485760].
    #[arg(long, env = "FUSEBOX_MAX_BODY_BYTES", global = true)]
    pub max_body_bytes: Option<usize>,
    /// Database connection pool size [default: 10 for PostgreSQL, 4 for SQLite].
    #[arg(long, env = "FUSEBOX_DB_POOL_SIZE", global = true)]
    pub db_pool_size: Option<u32>,
    /// HTTP worker threads [default: one per CPU core].
    #[arg(long, env = "FUSEBOX_WORKERS", global = true)]
    pub workers: Option<usize>,
    /// Most events one `POST /api/events` batch may hold [default: 10000].
    #[arg(long, env = "FUSEBOX_MAX_BATCH_EVENTS", global = true)]
    pub max_batch_events: Option<usize>,
    /// Raw events older than this many days are rejected on arrival and purged
    /// [default: 90].
    #[arg(long, env = "FUSEBOX_EVENT_RETENTION_DAYS", global = true)]
    pub event_retention_days: Option<i64>,
    /// Comma-separated property-key terms redacted as personal data [default: email,
    /// password, token, secret, phone, ssn, credit_card, card_number, api_key].
    #[arg(long, env = "FUSEBOX_PII_KEYS", global = true)]
    pub pii_keys: Option<String>,
    /// Events that may wait for the writer before new batches get 503 [default: 100000].
    #[arg(long, env = "FUSEBOX_INGEST_QUEUE_EVENTS", global = true)]
    pub ingest_queue_events: Option<usize>,
    /// SQLite: newest events indexed in memory (about 80 bytes each) before they are
    /// moved into the on-disk indexes; more is faster ingest [default: 400000].
    #[arg(long, env = "FUSEBOX_SQLITE_EVENT_TAIL", global = true)]
    pub sqlite_event_tail: Option<usize>,
    /// Seconds between scheduler passes over the fuses [default: 60].
    #[arg(long, env = "FUSEBOX_SCHEDULER_INTERVAL", global = true)]
    pub scheduler_interval: Option<u64>,
    /// Comma-separated origins allowed to call `/api/frontend` and `/ofrep` from a
    /// browser (CORS); `*` for any [default: *].
    #[arg(long, env = "FUSEBOX_CORS_ORIGINS", global = true)]
    pub cors_origins: Option<String>,
    /// Key that signs web UI sessions; when unset a random one is generated once and
    /// kept in the database, so sessions survive restarts and work on every replica.
    #[arg(
        long,
        env = "FUSEBOX_JWT_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// Email of the first web UI admin, created at start when no user exists.
    #[arg(long, env = "FUSEBOX_ADMIN_EMAIL", global = true)]
    pub admin_email: Option<String>,
    /// Password of that first admin (with FUSEBOX_ADMIN_EMAIL).
    #[arg(
        long,
        env = "FUSEBOX_ADMIN_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub admin_password: Option<String>,
    /// Hours a web UI session lasts [default: 12].
    #[arg(long, env = "FUSEBOX_SESSION_HOURS", global = true)]
    pub session_hours: Option<i64>,
}

/// The TOML file's shape: the same keys as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    addr: Option<String>,
    database_url: Option<String>,
    init_admin_tokens: Option<String>,
    init_client_tokens: Option<String>,
    init_frontend_tokens: Option<String>,
    log_format: Option<String>,
    max_body_bytes: Option<usize>,
    db_pool_size: Option<u32>,
    workers: Option<usize>,
    cors_origins: Option<String>,
    max_batch_events: Option<usize>,
    event_retention_days: Option<i64>,
    pii_keys: Option<String>,
    ingest_queue_events: Option<usize>,
    sqlite_event_tail: Option<usize>,
    scheduler_interval: Option<u64>,
    jwt_secret: Option<String>,
    admin_email: Option<String>,
    admin_password: Option<String>,
    session_hours: Option<i64>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A configured secret: `Debug` never shows it, so settings can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Resolved settings the application is built from.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `host:port`; port 0 picks a free port (tests).
    pub addr: String,
    pub database_url: String,
    pub init_admin_tokens: Vec<String>,
    pub init_client_tokens: Vec<String>,
    pub init_frontend_tokens: Vec<String>,
    pub log_format: LogFormat,
    pub max_body_bytes: usize,
    pub db_pool_size: Option<u32>,
    /// Print a generated admin token when no admin token exists (the CLI sets this).
    pub bootstrap_admin_token: bool,
    /// HTTP worker threads [default: one per core].
    pub workers: Option<usize>,
    /// Origins allowed for browser calls to the frontend API and OFREP (`*` = any).
    pub cors_origins: Vec<String>,
    /// Most events per ingest batch.
    pub max_batch_events: usize,
    /// Retention of raw events, in days.
    pub event_retention_days: i64,
    /// Property-key terms treated as personal data; `None` = the default list.
    pub pii_keys: Option<Vec<String>>,
    /// Bound of the ingest queue, in events.
    pub ingest_queue_events: usize,
    /// SQLite: events held in the in-memory index before a move to disk starts.
    pub sqlite_event_tail: usize,
    /// Seconds between scheduler passes; 0 disables the loop (tests drive it).
    pub scheduler_interval_secs: u64,
    /// Signs UI sessions; `None`: generated once and stored in the database.
    pub jwt_secret: Option<Secret>,
    /// The first UI admin (both or neither).
    pub admin_email: Option<String>,
    pub admin_password: Option<Secret>,
    /// How long a UI session lasts.
    pub session_hours: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:4242".into(),
            database_url: "sqlite://data/fusebox.db".into(),
            init_admin_tokens: Vec::new(),
            init_client_tokens: Vec::new(),
            init_frontend_tokens: Vec::new(),
            log_format: LogFormat::Pretty,
            max_body_bytes: 10 * 1024 * 1024,
            db_pool_size: None,
            bootstrap_admin_token: false,
            workers: None,
            cors_origins: vec!["*".into()],
            max_batch_events: 10_000,
            event_retention_days: 90,
            pii_keys: None,
            ingest_queue_events: 100_000,
            sqlite_event_tail: crate::store::DEFAULT_SQLITE_EVENT_TAIL,
            scheduler_interval_secs: 60,
            jwt_secret: None,
            admin_email: None,
            admin_password: None,
            session_hours: 12,
        }
    }
}

impl Settings {
    /// Layers the config file (if any) under the flags/environment values.
    pub fn load(args: &SettingsArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading config file {}: {e}", path.display()))?;
                toml::from_str::<FileSettings>(&text)
                    .map_err(|e| anyhow::anyhow!("parsing config file {}: {e}", path.display()))?
            }
            None => FileSettings::default(),
        };
        let defaults = Settings::default();
        let log_format = match args.log_format.clone().or(file.log_format).as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => anyhow::bail!("log format must be `pretty` or `json`, not `{other}`"),
        };
        Ok(Settings {
            addr: args.addr.clone().or(file.addr).unwrap_or(defaults.addr),
            database_url: args
                .database_url
                .clone()
                .or(file.database_url)
                .unwrap_or(defaults.database_url),
            init_admin_tokens: split_list(
                args.init_admin_tokens.clone().or(file.init_admin_tokens),
            ),
            init_client_tokens: split_list(
                args.init_client_tokens.clone().or(file.init_client_tokens),
            ),
            init_frontend_tokens: split_list(
                args.init_frontend_tokens
                    .clone()
                    .or(file.init_frontend_tokens),
            ),
            log_format,
            max_body_bytes: args
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(defaults.max_body_bytes),
            db_pool_size: args.db_pool_size.or(file.db_pool_size),
            bootstrap_admin_token: true,
            workers: args.workers.or(file.workers),
            cors_origins: match args.cors_origins.clone().or(file.cors_origins) {
                Some(list) => split_list(Some(list)),
                None => defaults.cors_origins,
            },
            max_batch_events: args
                .max_batch_events
                .or(file.max_batch_events)
                .unwrap_or(defaults.max_batch_events),
            event_retention_days: args
                .event_retention_days
                .or(file.event_retention_days)
                .unwrap_or(defaults.event_retention_days),
            pii_keys: args
                .pii_keys
                .clone()
                .or(file.pii_keys)
                .map(|list| split_list(Some(list))),
            ingest_queue_events: args
                .ingest_queue_events
                .or(file.ingest_queue_events)
                .unwrap_or(defaults.ingest_queue_events),
            sqlite_event_tail: args
                .sqlite_event_tail
                .or(file.sqlite_event_tail)
                .unwrap_or(defaults.sqlite_event_tail)
                .max(1),
            scheduler_interval_secs: args
                .scheduler_interval
                .or(file.scheduler_interval)
                .unwrap_or(defaults.scheduler_interval_secs),
            jwt_secret: args.jwt_secret.clone().or(file.jwt_secret).map(Secret),
            admin_email: args.admin_email.clone().or(file.admin_email),
            admin_password: args
                .admin_password
                .clone()
                .or(file.admin_password)
                .map(Secret),
            session_hours: args
                .session_hours
                .or(file.session_hours)
                .unwrap_or(defaults.session_hours),
        })
    }
}

fn split_list(raw: Option<String>) -> Vec<String> {
    raw.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_environment_override_the_config_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fusebox.toml");
        std::fs::write(
            &path,
            "addr = \"0.0.0.0:9000\"\ndatabase_url = \"sqlite://x.db\"\nlog_format = \"json\"\n",
        )
        .unwrap();
        let args = SettingsArgs {
            config: Some(path),
            addr: Some("127.0.0.1:1".into()),
            init_client_tokens: Some("a:development.x, *:production.y".into()),
            ..Default::default()
        };
        let settings = Settings::load(&args).unwrap();
        assert_eq!(settings.addr, "127.0.0.1:1");
        assert_eq!(settings.database_url, "sqlite://x.db");
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(settings.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(
            settings.init_client_tokens,
            vec!["a:development.x", "*:production.y"]
        );
    }

    #[test]
    fn an_unknown_key_in_the_config_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fusebox.toml");
        std::fs::write(&path, "adress = \"x\"\n").unwrap();
        let args = SettingsArgs {
            config: Some(path),
            ..Default::default()
        };
        let err = Settings::load(&args).unwrap_err().to_string();
        assert!(err.contains("adress"), "{err}");
    }
}
