//! Persistence: one `Store` trait, implemented once in SQL (`sql.rs`, a macro
//! instantiated per backend) for SQLite (`sqlite.rs`, the embedded default) and
//! PostgreSQL (`postgres.rs`, for several replicas).
//!
//! Every mutation writes its audit entry in the same transaction, and the audit log's
//! highest id is the data *revision*: caches compare it to know when to rebuild.

mod postgres;
mod sql;
mod sqlite;
mod tail;

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::admin::{
    AdminSegment, AuditEvent, Environment, Feature, FeatureMeta, Project, StoredToken,
};
use crate::domain::fuse::outcomes::OutcomeNames;
use crate::domain::model::{ClientFeatures, Constraint, Dependency, Strategy, Variant};
use crate::domain::tokens::TokenScope;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Store failures, free of HTTP.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Input that is well-formed but refers to something impossible (e.g. a
    /// dependency on an unknown feature); `path` names the field.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Who made a change, as written to the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    pub fn system() -> Actor {
        Actor("system".into())
    }
}

/// A new environment.
#[derive(Debug, Clone)]
pub struct NewEnvironment {
    pub name: String,
    pub environment_type: String,
    pub sort_order: i64,
}

/// A new project.
#[derive(Debug, Clone)]
pub struct NewProject {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
}

/// Fields of a feature that can be set on create and update.
#[derive(Debug, Clone)]
pub struct FeatureFields {
    pub name: String,
    pub description: Option<String>,
    pub feature_type: String,
    pub impression_data: bool,
    pub stale: bool,
}

/// A segment's settable fields.
#[derive(Debug, Clone)]
pub struct SegmentFields {
    pub name: String,
    pub description: Option<String>,
    pub project: Option<String>,
    pub constraints: Vec<Constraint>,
}

/// Filters for the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub feature: Option<String>,
    pub project: Option<String>,
    /// Only entries at or after this time (ms).
    pub since: Option<i64>,
    /// Only entries before this time (ms).
    pub until: Option<i64>,
    /// Only entries made by this actor (`user:ann@x.io`, `token:ci`, `fuse`).
    pub actor: Option<String>,
    /// Only entries of this kind (`feature-updated`, `fuse-rollback`...).
    pub kind: Option<String>,
    pub limit: i64,
}

/// A person with their password hash, for logging in.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub user: crate::domain::users::User,
    pub password_hash: String,
}

/// Ingestion counts of one hour in one environment.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct IngestHour {
    /// Start of the hour (ms).
    pub hour: i64,
    pub environment: String,
    pub accepted: i64,
    pub duplicates: i64,
    pub quarantined: i64,
}

/// What an import changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub features: usize,
    pub segments: usize,
}

/// A feature tag, `type:value` (e.g. `team:checkout`).
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct Tag {
    #[serde(rename = "type")]
    pub tag_type: String,
    pub value: String,
}

/// An SDK instance's registration.
#[derive(Debug, Clone)]
pub struct ClientRegistration {
    pub app_name: String,
    pub instance_id: String,
    pub sdk_version: Option<String>,
    pub strategies: Vec<String>,
    pub started_at: Option<i64>,
    pub interval_ms: Option<i64>,
}

/// One feature's counts in one SDK metrics bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureCounts {
    pub feature: String,
    pub yes: i64,
    pub no: i64,
    pub variants: Vec<(String, i64)>,
}

/// A feature's SDK evaluation counts in one hour.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HourlyMetrics {
    /// Start of the hour, ms since the epoch.
    pub hour_start: i64,
    pub yes: i64,
    pub no: i64,
    pub variants: std::collections::BTreeMap<String, i64>,
}

/// A validated event ready to store (see `domain::events`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// A hyphenated UUID, as validation normalises given and derived ids.
    pub id: String,
    pub environment: String,
    pub kind: &'static str,
    pub user_id: String,
    pub feature: Option<String>,
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub variant: Option<String>,
    pub score: Option<f64>,
    pub session_id: Option<String>,
    /// Redacted properties as JSON text.
    pub properties: Option<String>,
    pub ts: i64,
    pub received_at: i64,
}

/// A rejected event or body, kept with its raw text and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewQuarantine {
    pub received_at: i64,
    pub environment: Option<String>,
    pub token_name: Option<String>,
    pub reason: String,
    pub message: String,
    pub raw: String,
}

/// A quarantined record as listed by the admin API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineItem {
    pub id: i64,
    pub received_at: i64,
    pub environment: Option<String>,
    pub token_name: Option<String>,
    /// The rejection code, e.g. `missing_field`.
    pub reason: String,
    pub message: String,
    /// The raw JSON (or body text) as received, truncated for whole bodies.
    pub raw: String,
}

/// A stored event, as exported for its user.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    pub id: String,
    pub environment: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub user_id: String,
    pub feature: Option<String>,
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub variant: Option<String>,
    pub score: Option<f64>,
    pub session_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
    pub timestamp: i64,
    pub received_at: i64,
}

/// A user's cohort assignment for one feature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Exposure {
    pub environment: String,
    pub feature: String,
    pub user_id: String,
    pub enabled: bool,
    pub variant: Option<String>,
    /// First exposure time (ms): fixes the cohort.
    pub t0: i64,
    pub last_seen: i64,
    pub exposure_count: i64,
    /// Later exposures whose assignment differed from the first.
    pub crossovers: i64,
}

/// A fuse as stored. JSON columns hold `domain::stats` types (config, state, last
/// decision) so the store does not depend on the statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct FuseRecord {
    pub project: String,
    pub feature: String,
    pub environment: String,
    pub strategy_id: String,
    pub config: serde_json::Value,
    pub state: serde_json::Value,
    pub status: String,
    pub locked: bool,
    pub paused: bool,
    /// Sticky minimum p-value per guardrail.
    pub min_p: serde_json::Value,
    /// `[[t_ms, exposure_pct], ...]`, oldest first.
    pub rollout_history: serde_json::Value,
    pub last_decision: Option<serde_json::Value>,
    pub last_evaluated_at: Option<i64>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a fuse decision changes, applied atomically and only if the fuse is still at
/// `expected_version`.
#[derive(Debug, Clone)]
pub struct FuseChange {
    pub expected_version: i64,
    pub record: FuseRecord,
    /// New `rollout` parameter of the managed strategy, if exposure changes.
    pub rollout: Option<String>,
    /// Audit entry: kind, before, after.
    pub audit: Option<(String, serde_json::Value, serde_json::Value)>,
    pub snapshot: Option<FuseSnapshot>,
}

/// One stored analysis.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FuseSnapshot {
    pub id: i64,
    pub created_at: i64,
    /// The decision kind (wait, continue, promote, throttle, rollback, hold, manual).
    pub kind: String,
    pub rule: String,
    pub exposure_before: f64,
    pub exposure_after: f64,
    #[schema(value_type = Object)]
    pub analysis: serde_json::Value,
}

/// One exposed user's aggregates for a fuse analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortRow {
    pub user_id: String,
    pub enabled: bool,
    pub t0: i64,
    pub crossovers: i64,
    /// Bit k: activity in [t0 + k days, t0 + k+1 days), k < 63.
    pub active_days: u64,
    pub first_activation: Option<i64>,
    pub first_error: Option<i64>,
    pub adopted: bool,
    pub feedback: Option<f64>,
}

impl CohortRow {
    /// An exposure row's assignment plus its outcome aggregates, as every reader builds it.
    pub(crate) fn new(
        user_id: String,
        enabled: bool,
        t0: i64,
        crossovers: i64,
        outcomes: &crate::domain::fuse::outcomes::UserOutcomes,
    ) -> CohortRow {
        CohortRow {
            user_id,
            enabled,
            t0,
            crossovers,
            active_days: outcomes.active_days,
            first_activation: outcomes.first_activation,
            first_error: outcomes.first_error,
            adopted: outcomes.adopted,
            feedback: outcomes.feedback(),
        }
    }
}

/// The persistence interface, one method per use case.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    /// Succeeds while the database answers.
    async fn ping(&self) -> StoreResult<()>;
    /// The data revision: changes whenever anything an SDK could see changes.
    async fn revision(&self) -> StoreResult<i64>;

    async fn list_environments(&self) -> StoreResult<Vec<Environment>>;
    async fn create_environment(
        &self,
        env: &NewEnvironment,
        actor: &Actor,
    ) -> StoreResult<Environment>;

    async fn list_projects(&self) -> StoreResult<Vec<Project>>;
    async fn create_project(&self, project: &NewProject, actor: &Actor) -> StoreResult<Project>;

    async fn list_features(&self, project: &str) -> StoreResult<Vec<FeatureMeta>>;
    async fn get_feature(&self, project: &str, name: &str) -> StoreResult<Feature>;
    async fn create_feature(
        &self,
        project: &str,
        fields: &FeatureFields,
        actor: &Actor,
    ) -> StoreResult<Feature>;
    async fn update_feature(
        &self,
        project: &str,
        fields: &FeatureFields,
        actor: &Actor,
    ) -> StoreResult<Feature>;
    async fn archive_feature(&self, project: &str, name: &str, actor: &Actor) -> StoreResult<()>;
    async fn set_feature_enabled(
        &self,
        project: &str,
        name: &str,
        environment: &str,
        enabled: bool,
        actor: &Actor,
    ) -> StoreResult<Feature>;
    async fn list_strategies(
        &self,
        project: &str,
        name: &str,
        environment: &str,
    ) -> StoreResult<Vec<Strategy>>;
    async fn add_strategy(
        &self,
        project: &str,
        name: &str,
        environment: &str,
        strategy: &Strategy,
        actor: &Actor,
    ) -> StoreResult<Strategy>;
    async fn update_strategy(
        &self,
        project: &str,
        name: &str,
        environment: &str,
        strategy: &Strategy,
        actor: &Actor,
    ) -> StoreResult<Strategy>;
    async fn delete_strategy(
        &self,
        project: &str,
        name: &str,
        environment: &str,
        strategy_id: &str,
        actor: &Actor,
    ) -> StoreResult<()>;
    async fn set_variants(
        &self,
        project: &str,
        name: &str,
        environment: &str,
        variants: &[Variant],
        actor: &Actor,
    ) -> StoreResult<Vec<Variant>>;
    async fn set_dependencies(
        &self,
        project: &str,
        name: &str,
        dependencies: &[Dependency],
        actor: &Actor,
    ) -> StoreResult<Vec<Dependency>>;

    async fn list_segments(&self) -> StoreResult<Vec<AdminSegment>>;
    async fn create_segment(
        &self,
        fields: &SegmentFields,
        actor: &Actor,
    ) -> StoreResult<AdminSegment>;
    async fn update_segment(
        &self,
        id: i64,
        fields: &SegmentFields,
        actor: &Actor,
    ) -> StoreResult<AdminSegment>;
    async fn delete_segment(&self, id: i64, actor: &Actor) -> StoreResult<()>;

    async fn list_tokens(&self) -> StoreResult<Vec<StoredToken>>;
    /// Stores a token by the hash of its secret; `Ok(None)` if that hash exists.
    async fn create_token(
        &self,
        name: &str,
        scope: &TokenScope,
        secret_hash: &str,
        actor: &Actor,
    ) -> StoreResult<Option<StoredToken>>;
    async fn delete_token(&self, id: i64, actor: &Actor) -> StoreResult<()>;

    /// Upserts features (in `environment`) and segments from a client-features document.
    async fn import_state(
        &self,
        environment: &str,
        state: &ClientFeatures,
        actor: &Actor,
    ) -> StoreResult<ImportSummary>;
    /// Every live feature of every project as SDKs see it in `environment`
    /// (disabled strategies included, so export round-trips), and every segment.
    async fn client_features(&self, environment: &str) -> StoreResult<ClientFeatures>;

    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>>;

    /// A live feature's tags, by type then value.
    async fn list_tags(&self, feature: &str) -> StoreResult<Vec<Tag>>;
    /// Adds a tag; `Ok(false)` if the feature already had it.
    async fn add_tag(&self, feature: &str, tag: &Tag, actor: &Actor) -> StoreResult<bool>;
    async fn remove_tag(&self, feature: &str, tag: &Tag, actor: &Actor) -> StoreResult<()>;
    /// Every tag of every live feature (for the SDK snapshot).
    async fn all_tags(&self) -> StoreResult<Vec<(String, Tag)>>;

    /// Stores events (skipping ids already stored) and quarantine records in one
    /// transaction, folding new exposures into the cohort table. Returns, for each
    /// event in order, whether it was new (`false`: its id was already stored, or
    /// appeared earlier in `events`).
    async fn ingest(
        &self,
        events: &[NewEvent],
        quarantine: &[NewQuarantine],
    ) -> StoreResult<Vec<bool>>;
    async fn list_quarantine(
        &self,
        reason: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<QuarantineItem>>;
    async fn get_quarantine(&self, id: i64) -> StoreResult<QuarantineItem>;
    async fn delete_quarantine(&self, id: i64) -> StoreResult<()>;
    /// Everything stored about one user: events (oldest first) and exposures.
    async fn user_data(&self, user_id: &str) -> StoreResult<(Vec<StoredEvent>, Vec<Exposure>)>;
    /// Erases a user's events and exposures; audited with a hash of the id.
    async fn erase_user(&self, user_id: &str, actor: &Actor) -> StoreResult<(u64, u64)>;
    /// Deletes raw events and quarantine records older than `before` (ms).
    async fn purge_events_before(&self, before: i64) -> StoreResult<u64>;
    /// How many events are stored (tests, crash checks, metrics).
    async fn count_events(&self) -> StoreResult<i64>;

    async fn get_fuse(&self, feature: &str, environment: &str) -> StoreResult<Option<FuseRecord>>;
    /// Fuses that are neither paused nor locked (the scheduler's work list).
    async fn active_fuses(&self) -> StoreResult<Vec<(String, String)>>;
    /// Creates or replaces a fuse's record (arming, reconfiguring, manual actions).
    async fn put_fuse(
        &self,
        record: &FuseRecord,
        audit: Option<(&str, serde_json::Value, serde_json::Value)>,
        actor: &Actor,
    ) -> StoreResult<FuseRecord>;
    /// Applies a decision once: `Ok(false)` if another writer changed the fuse first.
    async fn apply_fuse_change(&self, change: &FuseChange, actor: &Actor) -> StoreResult<bool>;
    async fn fuse_history(
        &self,
        feature: &str,
        environment: &str,
        limit: i64,
    ) -> StoreResult<Vec<FuseSnapshot>>;
    /// Per-user aggregates of a feature's exposed users in one environment, computed
    /// from the events with timestamps at or before `as_of` (ms) only (backtests).
    async fn cohort_rows(
        &self,
        environment: &str,
        feature: &str,
        as_of: i64,
        names: &OutcomeNames,
    ) -> StoreResult<Vec<CohortRow>>;
    /// The same aggregates as ingest keeps them for a fused feature: one row per user,
    /// no event scan. Built from the stored events first when they were built for other
    /// event names (or not yet).
    async fn live_cohort_rows(
        &self,
        environment: &str,
        feature: &str,
        names: &OutcomeNames,
    ) -> StoreResult<Vec<CohortRow>>;
    /// When events for the environment were last received (ms).
    async fn data_as_of(&self, environment: &str) -> StoreResult<Option<i64>>;
    /// Writes a failed webhook delivery to the audit log.
    async fn record_webhook_failure(
        &self,
        project: &str,
        feature: &str,
        environment: &str,
        failure: serde_json::Value,
        actor: &Actor,
    ) -> StoreResult<()>;
    /// Whether this process leads the scheduler (PostgreSQL: a session advisory lock;
    /// SQLite: always, one process owns the file).
    async fn try_lead(&self) -> StoreResult<bool>;

    /// Records (upserts) an SDK instance seen in `environment`.
    async fn register_client(
        &self,
        environment: &str,
        registration: &ClientRegistration,
    ) -> StoreResult<()>;
    /// Adds SDK counts to the hour that contains `at` (ms).
    async fn record_client_metrics(
        &self,
        environment: &str,
        at: i64,
        counts: &[FeatureCounts],
    ) -> StoreResult<()>;
    /// Hourly counts of a feature in an environment since `since` (ms), oldest first.
    async fn feature_metrics(
        &self,
        feature: &str,
        environment: &str,
        since: i64,
    ) -> StoreResult<Vec<HourlyMetrics>>;

    /// Ingestion counts per hour and environment since `since` (ms), oldest first.
    async fn ingest_hourly(&self, since: i64) -> StoreResult<Vec<IngestHour>>;

    async fn count_users(&self) -> StoreResult<i64>;
    async fn list_users(&self) -> StoreResult<Vec<crate::domain::users::User>>;
    async fn find_user(&self, email: &str) -> StoreResult<Option<UserRecord>>;
    async fn get_user(&self, id: i64) -> StoreResult<Option<UserRecord>>;
    /// Creates a user; `Conflict` if the email is taken. With `only_if_none`, creates
    /// it only while no user exists (the one-time setup), else `Conflict`.
    async fn create_user(
        &self,
        email: &str,
        password_hash: &str,
        role: crate::domain::users::Role,
        only_if_none: bool,
        actor: &Actor,
    ) -> StoreResult<crate::domain::users::User>;
    async fn set_user_role(
        &self,
        id: i64,
        role: crate::domain::users::Role,
        actor: &Actor,
    ) -> StoreResult<crate::domain::users::User>;
    async fn set_user_password(
        &self,
        id: i64,
        password_hash: &str,
        actor: &Actor,
    ) -> StoreResult<()>;
    async fn delete_user(&self, id: i64, actor: &Actor) -> StoreResult<()>;
    /// The secret stored under `name`, storing `candidate` first if there is none;
    /// every replica gets the same value.
    async fn server_secret(&self, name: &str, candidate: &str) -> StoreResult<String>;
}

/// Events the SQLite store indexes in memory before moving them to disk, by default.
pub const DEFAULT_SQLITE_EVENT_TAIL: usize = tail::DEFAULT_MOVE_AT;

/// Opens the store named by a `DATABASE_URL` and runs its migrations;
/// `sqlite_event_tail` sizes SQLite's in-memory event index (see `tail.rs`).
pub async fn connect(
    url: &str,
    pool_size: Option<u32>,
    sqlite_event_tail: usize,
) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            PgStore::connect(url, pool_size.unwrap_or(10)).await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(
            SqliteStore::connect(url, pool_size.unwrap_or(4), sqlite_event_tail).await?,
        ))
    } else {
        anyhow::bail!("DATABASE_URL must start with sqlite: or postgres://, got `{url}`")
    }
}

/// Milliseconds since the Unix epoch, the time unit of every stored timestamp.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
