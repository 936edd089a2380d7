//! The store's SQL, written once and instantiated per backend by `impl_store!`.
//!
//! Queries use `$n` placeholders and lowercase portable SQL (`returning`, `on conflict`),
//! which both SQLite (>= 3.35) and PostgreSQL accept, so the two backends cannot drift.
//! JSON columns are text holding `domain::model` types verbatim.

use serde::{de::DeserializeOwned, Serialize};

use super::{Exposure, NewEvent, NewQuarantine, StoreError, StoreResult, StoredEvent};

pub(super) fn to_json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Other(e.into()))
}

pub(super) fn from_json<T: DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Other(e.into()))
}

pub(super) fn opt_from_json<T: DeserializeOwned>(text: Option<String>) -> StoreResult<Option<T>> {
    text.map(|t| from_json(&t)).transpose()
}

pub(super) fn value<T: Serialize>(v: &T) -> Option<serde_json::Value> {
    serde_json::to_value(v).ok()
}

/// Maps unique violations to `Conflict`, everything else to `Database`.
pub(super) fn on_unique(what: impl FnOnce() -> String) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what()),
        _ => StoreError::Database(e),
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct EnvironmentRow {
    pub name: String,
    #[sqlx(rename = "type")]
    pub environment_type: String,
    pub enabled: bool,
    pub sort_order: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct ProjectRow {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct FeatureRow {
    pub name: String,
    pub project: String,
    pub description: Option<String>,
    #[sqlx(rename = "type")]
    pub feature_type: String,
    pub impression_data: bool,
    pub stale: bool,
    pub created_at: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct FeatureEnvRow {
    pub feature: String,
    pub environment: String,
    pub enabled: bool,
    pub variants: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(super) struct StrategyRow {
    pub id: String,
    pub feature: String,
    pub name: String,
    pub title: Option<String>,
    pub disabled: Option<bool>,
    pub sort_order: i64,
    pub parameters: String,
    pub constraints: String,
    pub segments: Option<String>,
    pub variants: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(super) struct DependencyRow {
    pub child: String,
    pub parent: String,
    pub enabled: Option<bool>,
    pub variants: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(super) struct SegmentRow {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub project: Option<String>,
    pub constraints: String,
    pub created_at: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct TokenRow {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub environment: String,
    pub projects: String,
    pub secret_hash: String,
    pub created_at: i64,
    pub role: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    pub id: i64,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: i64,
}

impl UserRow {
    pub fn into_domain(self) -> StoreResult<super::UserRecord> {
        let role = crate::domain::users::Role::parse(&self.role)
            .ok_or_else(|| StoreError::Other(anyhow::anyhow!("unknown user role {}", self.role)))?;
        Ok(super::UserRecord {
            user: crate::domain::users::User {
                id: self.id,
                email: self.email,
                role,
                created_at: self.created_at,
            },
            password_hash: self.password_hash,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AuditRow {
    pub id: i64,
    pub kind: String,
    pub created_by: String,
    pub created_at: i64,
    pub project: Option<String>,
    pub feature: Option<String>,
    pub environment: Option<String>,
    pub pre_data: Option<String>,
    pub data: Option<String>,
}

impl EnvironmentRow {
    pub fn into_domain(self) -> crate::domain::admin::Environment {
        crate::domain::admin::Environment {
            name: self.name,
            environment_type: self.environment_type,
            enabled: self.enabled,
            sort_order: self.sort_order,
        }
    }
}

impl ProjectRow {
    pub fn into_domain(self) -> crate::domain::admin::Project {
        crate::domain::admin::Project {
            id: self.id,
            name: self.name,
            description: self.description,
            created_at: self.created_at,
        }
    }
}

impl FeatureRow {
    pub fn into_domain(self) -> crate::domain::admin::FeatureMeta {
        crate::domain::admin::FeatureMeta {
            name: self.name,
            project: self.project,
            description: self.description,
            feature_type: self.feature_type,
            impression_data: self.impression_data,
            stale: self.stale,
            created_at: self.created_at,
        }
    }
}

impl StrategyRow {
    pub fn into_domain(self) -> StoreResult<crate::domain::model::Strategy> {
        Ok(crate::domain::model::Strategy {
            id: Some(self.id),
            name: self.name,
            title: self.title,
            disabled: self.disabled,
            sort_order: Some(self.sort_order),
            parameters: from_json(&self.parameters)?,
            constraints: from_json(&self.constraints)?,
            segments: opt_from_json(self.segments)?,
            variants: opt_from_json(self.variants)?,
        })
    }
}

impl DependencyRow {
    pub fn into_domain(self) -> StoreResult<crate::domain::model::Dependency> {
        Ok(crate::domain::model::Dependency {
            feature: self.parent,
            enabled: self.enabled,
            variants: opt_from_json(self.variants)?,
        })
    }
}

impl SegmentRow {
    pub fn into_domain(self) -> StoreResult<crate::domain::admin::AdminSegment> {
        Ok(crate::domain::admin::AdminSegment {
            id: self.id,
            name: self.name,
            description: self.description,
            project: self.project,
            constraints: from_json(&self.constraints)?,
            created_at: self.created_at,
        })
    }
}

impl TokenRow {
    pub fn into_domain(self) -> StoreResult<crate::domain::admin::StoredToken> {
        let kind = crate::domain::tokens::TokenKind::parse(&self.kind).ok_or_else(|| {
            StoreError::Other(anyhow::anyhow!("unknown token kind {}", self.kind))
        })?;
        let projects: Vec<String> = from_json(&self.projects)?;
        // Admin tokens from before roles existed are admins.
        let role = match kind {
            crate::domain::tokens::TokenKind::Admin => Some(
                self.role
                    .as_deref()
                    .map_or(
                        Some(crate::domain::users::Role::Admin),
                        crate::domain::users::Role::parse,
                    )
                    .ok_or_else(|| {
                        StoreError::Other(anyhow::anyhow!("unknown token role {:?}", self.role))
                    })?,
            ),
            _ => None,
        };
        let scope = crate::domain::tokens::TokenScope {
            kind,
            projects: projects.clone(),
            environment: self.environment.clone(),
            role,
        };
        Ok(crate::domain::admin::StoredToken {
            id: self.id,
            token_name: self.name,
            kind,
            environment: self.environment,
            projects,
            prefix: scope.prefix(),
            role,
            created_at: self.created_at,
            secret_hash: self.secret_hash,
        })
    }
}

impl AuditRow {
    pub fn into_domain(self) -> StoreResult<crate::domain::admin::AuditEvent> {
        Ok(crate::domain::admin::AuditEvent {
            id: self.id,
            kind: self.kind,
            created_by: self.created_by,
            created_at: self.created_at,
            project: self.project,
            feature: self.feature,
            environment: self.environment,
            pre_data: opt_from_json(self.pre_data)?,
            data: opt_from_json(self.data)?,
        })
    }
}

/// Rows per multi-row statement (and users per lookup): 14 columns x 500 stays far
/// below SQLite's 32766 and PostgreSQL's 65535 bind parameters while amortising
/// statement overhead.
pub(super) const EVENT_CHUNK: usize = 500;

/// `prefix ($1, ..., $k), ($k+1, ...) suffix` for `rows` rows of `columns` values.
/// SQLite gets anonymous `?` placeholders: it resolves `$n` names by a linear scan per
/// parameter, which made a 6,500-parameter insert quadratic (79% of ingest CPU).
pub(super) fn multi_row_sql(
    prefix: &str,
    columns: usize,
    rows: usize,
    suffix: &str,
    backend: super::Backend,
) -> String {
    use std::fmt::Write;
    let mut sql = String::with_capacity(prefix.len() + suffix.len() + rows * columns * 6);
    sql.push_str(prefix);
    let mut n = 1;
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            match backend {
                super::Backend::Sqlite => sql.push('?'),
                super::Backend::Postgres => {
                    let _ = write!(sql, "${n}");
                }
            }
            n += 1;
        }
        sql.push(')');
    }
    sql.push_str(suffix);
    sql
}

/// Columns of an exposure upsert, in bind order (one [`Exposure`] per row).
pub(super) const EXPOSURE_UPSERT_COLUMNS: &str =
    "environment, feature, user_id, enabled, variant, t0, last_seen, exposure_count, crossovers";

/// How a group's folded exposure merges into a stored one: the earliest exposure keeps
/// the cohort and t0; a differing assignment counts as a crossover.
pub(super) const EXPOSURE_UPSERT_CONFLICT: &str = " on conflict (environment, feature, user_id) do update set \
     crossovers = exposures.crossovers + excluded.crossovers + \
       (case when exposures.enabled = excluded.enabled and \
         coalesce(exposures.variant, '') = coalesce(excluded.variant, '') then 0 else 1 end), \
     exposure_count = exposures.exposure_count + excluded.exposure_count, \
     enabled = case when excluded.t0 < exposures.t0 then excluded.enabled else exposures.enabled end, \
     variant = case when excluded.t0 < exposures.t0 then excluded.variant else exposures.variant end, \
     t0 = case when excluded.t0 < exposures.t0 then excluded.t0 else exposures.t0 end, \
     last_seen = case when excluded.last_seen > exposures.last_seen then excluded.last_seen else exposures.last_seen end";

/// Columns of an outcome write-back, in bind order (environment, feature, then one
/// [`OutcomeRow`] per row). The row always exists; the insert form is only the
/// fastest way to update many rows by key in one statement.
pub(super) const OUTCOME_WRITE_COLUMNS: &str = "environment, feature, user_id, enabled, t0, last_seen, \
     exposure_count, crossovers, active_days, first_activation, first_error, adopted, feedback_sum, feedback_count";

/// The outcome columns an outcome write-back replaces.
pub(super) const OUTCOME_WRITE_CONFLICT: &str = " on conflict (environment, feature, user_id) do update set \
     active_days = excluded.active_days, first_activation = excluded.first_activation, \
     first_error = excluded.first_error, adopted = excluded.adopted, feedback_sum = excluded.feedback_sum, \
     feedback_count = excluded.feedback_count";

/// Per-user outcomes of one feature's exposed users, computed from the stored events
/// with timestamps at or before `$3`: the from-scratch twin of
/// [`crate::domain::fuse::outcomes::UserOutcomes::apply`], used by backtests and to
/// (re)build the aggregates ingest keeps current. Parameters: `$1` environment, `$2`
/// feature, `$3` as-of, then the activation names, the adoption names, when
/// `by_users`, a JSON array of the user ids to restrict to and, on SQLite, the highest
/// event seq the index tables answer for (the rest is folded in from the tail, see
/// `tail.rs`). Names are bound; only their count shapes the SQL.
pub(super) fn outcome_sql(
    activation: usize,
    adoption: usize,
    by_users: bool,
    backend: super::Backend,
) -> String {
    let list = |start: usize, n: usize, column: &str| -> String {
        if n == 0 {
            return "1 = 0".into();
        }
        let marks: Vec<String> = (start..start + n).map(|i| format!("${i}")).collect();
        format!("{column} in ({})", marks.join(", "))
    };
    let activation_in = list(4, activation, "e.name");
    let adoption_in = list(4 + activation, adoption, "e.name");
    let users = 4 + activation + adoption;
    // With a user list (one JSON array parameter), PostgreSQL is made to look each user
    // up by primary key and each user's events by index (LATERAL): with missing or
    // stale statistics its planner otherwise scans the whole feature or event table.
    // LIMIT/OFFSET keep it from flattening the subqueries back into a hash join.
    let plain = (
        "exposures x".to_string(),
        "events e on e.environment = x.environment and e.user_id = x.user_id and e.ts >= x.t0 and e.ts <= $3".to_string(),
    );
    let upto = users + usize::from(by_users);
    let sqlite = (
        "exposures x".to_string(),
        // The runs that can hold events in [t0, as-of], then the user's row in each and
        // the events it lists. Chained left joins, not `left join (k join e)`: SQLite
        // materialises the latter, scanning the whole key table per query.
        format!(
            "event_runs r on r.run <= ${upto} and r.max_ts >= x.t0 and r.min_ts <= $3 \
             left join event_keys k on k.run = r.run and k.environment = x.environment \
             and k.user_id = x.user_id and k.max_ts >= x.t0 and k.min_ts <= $3 \
             left join json_each(k.events) j \
             left join events e on e.seq = j.value and e.ts >= x.t0 and e.ts <= $3"
        ),
    );
    let ((exposures, events), user_filter) = match (by_users, backend) {
        (false, super::Backend::Sqlite) => (sqlite, String::new()),
        (false, super::Backend::Postgres) => (plain, String::new()),
        (true, super::Backend::Sqlite) => (sqlite, format!(" and x.user_id in (select value from json_each(${users}))")),
        (true, super::Backend::Postgres) => (
            (
                format!(
                    "jsonb_array_elements_text(cast(${users} as jsonb)) as u(uid) cross join lateral \
                     (select * from exposures where environment = $1 and feature = $2 and user_id = u.uid limit 1) x"
                ),
                "lateral (select kind, name, feature, score, ts from events where environment = x.environment \
                 and user_id = x.user_id and ts >= x.t0 and ts <= $3 offset 0) e on true"
                    .to_string(),
            ),
            String::new(),
        ),
    };
    // One row per user: the activity-day bitmask is a sum of distinct powers of two
    // (= their OR), so no per-day rows cross the driver. Days 0..62 keep the sum
    // inside a signed 64-bit integer.
    format!(
        "select x.user_id, x.enabled, x.t0, x.last_seen, x.exposure_count, x.crossovers, \
         min(case when e.kind = 'activity' and {activation_in} then e.ts end) as first_activation, \
         min(case when e.kind = 'error' then e.ts end) as first_error, \
         max(case when e.kind = 'activity' and (e.feature = x.feature or {adoption_in}) \
             then cast(1 as bigint) else cast(0 as bigint) end) as adopted, \
         sum(case when e.kind = 'feedback' and e.feature = x.feature then e.score end) as feedback_sum, \
         count(case when e.kind = 'feedback' and e.feature = x.feature then e.score end) as feedback_count, \
         cast(sum(distinct case when e.kind = 'activity' and e.ts < x.t0 + {tracked_ms} \
             then cast(1 as bigint) << cast((e.ts - x.t0) / 86400000 as integer) end) as bigint) as active_days \
         from {exposures} left join {events} \
         where x.environment = $1 and x.feature = $2 and x.t0 <= $3{user_filter} \
         group by x.user_id, x.enabled, x.t0, x.last_seen, x.exposure_count, x.crossovers",
        tracked_ms = crate::domain::fuse::outcomes::TRACKED_DAYS * 86_400_000,
    )
}

/// `select {columns}` of one feature's exposure rows for a list of users: `$1`
/// environment, `$2` feature, `$3` a JSON array of user ids. PostgreSQL gets a
/// primary-key lookup per user whatever its statistics say (see [`outcome_sql`]).
pub(super) fn exposures_of_users_sql(columns: &str, backend: super::Backend) -> String {
    match backend {
        super::Backend::Sqlite => format!(
            "select {columns} from exposures where environment = $1 and feature = $2 \
             and user_id in (select value from json_each($3))"
        ),
        super::Backend::Postgres => format!(
            "select {columns} from jsonb_array_elements_text(cast($3 as jsonb)) as u(uid) cross join lateral \
             (select * from exposures where environment = $1 and feature = $2 and user_id = u.uid limit 1) x"
        ),
    }
}

/// A bind parameter of a statement that each backend runs its own way (sqlx, or
/// SQLite's C API, see `SqliteStore::outcome_rows_impl`).
#[derive(Debug, Clone, Copy)]
pub(super) enum SqlParam<'a> {
    Text(&'a str),
    Int(i64),
}

/// A row of [`outcome_sql`].
pub(super) type OutcomeSqlRow = (
    String,
    bool,
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<f64>,
    i64,
    Option<i64>,
);

/// An exposure row with its outcome aggregates, as read and written back.
#[derive(Debug, Clone)]
pub(super) struct OutcomeRow {
    pub user_id: String,
    pub enabled: bool,
    pub t0: i64,
    pub last_seen: i64,
    pub exposure_count: i64,
    pub crossovers: i64,
    pub outcomes: crate::domain::fuse::outcomes::UserOutcomes,
}

impl OutcomeRow {
    pub(super) fn from_sql(row: OutcomeSqlRow) -> OutcomeRow {
        let (
            user_id,
            enabled,
            t0,
            last_seen,
            exposure_count,
            crossovers,
            first_activation,
            first_error,
            adopted,
            feedback_sum,
            feedback_count,
            days,
        ) = row;
        OutcomeRow {
            user_id,
            enabled,
            t0,
            last_seen,
            exposure_count,
            crossovers,
            outcomes: crate::domain::fuse::outcomes::UserOutcomes {
                active_days: days.unwrap_or(0) as u64,
                first_activation,
                first_error,
                adopted: adopted.unwrap_or(0) > 0,
                feedback_sum: feedback_sum.unwrap_or(0.0),
                feedback_count,
            },
        }
    }

    pub(super) fn into_cohort(self) -> super::CohortRow {
        super::CohortRow::new(
            self.user_id,
            self.enabled,
            self.t0,
            self.crossovers,
            &self.outcomes,
        )
    }
}

/// The live aggregate columns each backend's bulk reader decodes, in this order.
pub(super) const OUTCOME_COLUMNS: &str =
    "user_id, enabled, t0, crossovers, active_days, first_activation, \
     first_error, adopted, feedback_sum, feedback_count";

/// Key of the PostgreSQL transaction lock that serialises outcome maintenance across
/// replicas (ingest, rebuilds, erasure): ASCII "fusebox1".
pub(super) const OUTCOME_LOCK: i64 = 0x6675_7365_626f_7831;

/// Folds new exposure events into one row per (environment, feature, user): the
/// earliest event fixes the assignment and t0; later ones with another assignment
/// count as crossovers. One row per key, because a multi-row upsert may not touch a
/// row twice.
pub(super) fn fold_exposures<'a>(events: impl Iterator<Item = &'a NewEvent>) -> Vec<Exposure> {
    let mut by_key: std::collections::HashMap<(&str, &str, &str), Vec<&NewEvent>> =
        Default::default();
    for e in events {
        let Some(feature) = e.feature.as_deref() else {
            continue;
        };
        by_key
            .entry((e.environment.as_str(), feature, e.user_id.as_str()))
            .or_default()
            .push(e);
    }
    let mut out: Vec<Exposure> = by_key
        .into_iter()
        .filter_map(|((environment, feature, user_id), mut group)| {
            group.sort_by_key(|e| (e.ts, e.id.as_str()));
            let first = group.first()?;
            let enabled = first.enabled.unwrap_or(false);
            let crossovers = group
                .iter()
                .filter(|e| e.enabled.unwrap_or(false) != enabled || e.variant != first.variant)
                .count() as i64;
            Some(Exposure {
                environment: environment.to_string(),
                feature: feature.to_string(),
                user_id: user_id.to_string(),
                enabled,
                variant: first.variant.clone(),
                t0: first.ts,
                last_seen: group.iter().map(|e| e.ts).max().unwrap_or(first.ts),
                exposure_count: group.len() as i64,
                crossovers,
            })
        })
        .collect();
    // A stable order keeps concurrent writers from deadlocking on row locks.
    out.sort_by(|a, b| {
        (&a.environment, &a.feature, &a.user_id).cmp(&(&b.environment, &b.feature, &b.user_id))
    });
    out
}

/// Upsert of an environment's ingest watermark (`$1` environment, `$2` time): it
/// only moves forward.
pub(super) const WATERMARK_UPSERT: &str =
    "insert into ingest_watermarks (environment, last_received_at) values ($1, $2) \
     on conflict (environment) do update set last_received_at = \
     case when excluded.last_received_at > ingest_watermarks.last_received_at \
     then excluded.last_received_at else ingest_watermarks.last_received_at end";

/// Upsert of one hour's ingest counts (`$1` hour, `$2` environment, `$3` accepted,
/// `$4` duplicates, `$5` quarantined): added to what the hour already has.
pub(super) const HOURLY_UPSERT: &str =
    "insert into ingest_hourly (hour, environment, accepted, duplicates, quarantined) \
     values ($1, $2, $3, $4, $5) on conflict (hour, environment) do update set \
     accepted = ingest_hourly.accepted + excluded.accepted, \
     duplicates = ingest_hourly.duplicates + excluded.duplicates, \
     quarantined = ingest_hourly.quarantined + excluded.quarantined";

/// Features of `$1` (an environment) whose outcome aggregates are built, with the
/// names (JSON) they were built for.
pub(super) const FUSED_OUTCOMES: &str = "select feature, outcome_names from fuses \
     where environment = $1 and outcome_names is not null order by feature";

/// Columns of a quarantine insert, in bind order (one [`NewQuarantine`] per row).
pub(super) const QUARANTINE_COLUMNS: &str =
    "received_at, environment, token_name, reason, message, raw";

/// What an ingest group newly stored: its events (`fresh` says which were new), their
/// exposures folded per (environment, feature, user), and their environments.
pub(super) struct StoredGroup<'a> {
    pub stored: Vec<&'a NewEvent>,
    pub exposures: Vec<Exposure>,
    pub environments: std::collections::BTreeSet<&'a str>,
}

impl<'a> StoredGroup<'a> {
    pub(super) fn of(events: &'a [NewEvent], fresh: &[bool]) -> StoredGroup<'a> {
        let stored: Vec<&NewEvent> = events
            .iter()
            .zip(fresh)
            .filter(|(_, new)| **new)
            .map(|(e, _)| e)
            .collect();
        let exposures = fold_exposures(stored.iter().copied().filter(|e| e.kind == "exposure"));
        let environments = stored.iter().map(|e| e.environment.as_str()).collect();
        StoredGroup {
            stored,
            exposures,
            environments,
        }
    }
}

/// Per environment, the latest receive time among a group's newly stored events.
pub(super) fn ingest_watermarks<'a>(stored: &[&'a NewEvent]) -> Vec<(&'a str, i64)> {
    let mut latest: std::collections::BTreeMap<&str, i64> = Default::default();
    for e in stored {
        let t = latest
            .entry(e.environment.as_str())
            .or_insert(e.received_at);
        *t = (*t).max(e.received_at);
    }
    latest.into_iter().collect()
}

/// One hour's ingest counts of one environment, for the UI.
pub(super) struct HourlyCount<'a> {
    pub hour: i64,
    pub environment: &'a str,
    pub accepted: i64,
    pub duplicates: i64,
    pub quarantined: i64,
}

/// A group's counts per (hour, environment): accepted and duplicate events (`fresh`
/// says which were new) and quarantined records.
pub(super) fn ingest_hourly<'a>(
    events: &'a [NewEvent],
    fresh: &[bool],
    quarantine: &'a [NewQuarantine],
) -> Vec<HourlyCount<'a>> {
    let hour = |t: i64| t - t.rem_euclid(3_600_000);
    let mut counts: std::collections::BTreeMap<(i64, &str), (i64, i64, i64)> = Default::default();
    for (e, new) in events.iter().zip(fresh) {
        let c = counts
            .entry((hour(e.received_at), e.environment.as_str()))
            .or_default();
        if *new {
            c.0 += 1
        } else {
            c.1 += 1
        }
    }
    for r in quarantine {
        let environment = r.environment.as_deref().unwrap_or("");
        counts
            .entry((hour(r.received_at), environment))
            .or_default()
            .2 += 1;
    }
    counts
        .into_iter()
        .map(
            |((hour, environment), (accepted, duplicates, quarantined))| HourlyCount {
                hour,
                environment,
                accepted,
                duplicates,
                quarantined,
            },
        )
        .collect()
}

/// Outcome upkeep of one fused feature for one ingest group (see `maintain` in the
/// backends): which users' aggregates are rebuilt from their stored events, and the
/// group's outcome events by user, folded into everyone else's.
pub(super) struct FusedUpkeep<'a> {
    pub environment: String,
    pub feature: String,
    pub names: crate::domain::fuse::outcomes::OutcomeNames,
    /// The group's exposed users whose exposure row is new, or whose t0 moved
    /// earlier: events may have arrived before the exposure did. Sorted.
    pub rebuild: Vec<&'a str>,
}

/// The users a group exposed to one feature, with the t0 the group gives them.
pub(super) fn exposed_users<'a>(
    exposures: &'a [Exposure],
    environment: &str,
    feature: &str,
) -> Vec<(&'a str, i64)> {
    exposures
        .iter()
        .filter(|x| x.environment == environment && x.feature == feature)
        .map(|x| (x.user_id.as_str(), x.t0))
        .collect()
}

/// Of a group's exposed users, those to rebuild: no stored row yet (`old_t0` has
/// none), or the group moves their t0 earlier. Sorted.
pub(super) fn users_to_rebuild<'a>(
    exposed: &[(&'a str, i64)],
    old_t0: &std::collections::HashMap<String, i64>,
) -> Vec<&'a str> {
    let mut rebuild: Vec<&str> = exposed
        .iter()
        .filter(|(user, t0)| old_t0.get(*user).is_none_or(|old| t0 < old))
        .map(|(user, _)| *user)
        .collect();
    rebuild.sort_unstable();
    rebuild
}

/// A group's events that can change outcomes (all but exposures), by (environment, user).
pub(super) type OutcomeEventsByUser<'a> =
    std::collections::HashMap<(&'a str, &'a str), Vec<&'a NewEvent>, foldhash::fast::RandomState>;

pub(super) fn outcome_events_by_user<'a>(events: &[&'a NewEvent]) -> OutcomeEventsByUser<'a> {
    let mut by_user = OutcomeEventsByUser::default();
    for e in events.iter().filter(|e| e.kind != "exposure") {
        by_user
            .entry((e.environment.as_str(), e.user_id.as_str()))
            .or_default()
            .push(e);
    }
    by_user
}

/// Users of `environment` with outcome events in the group, except those rebuilt:
/// their stored aggregates get the group's events folded in. Sorted.
pub(super) fn users_to_fold<'a>(
    by_user: &OutcomeEventsByUser<'a>,
    environment: &str,
    rebuild: &[&str],
) -> Vec<&'a str> {
    let mut users: Vec<&str> = by_user
        .keys()
        .filter(|(env, user)| *env == environment && rebuild.binary_search(user).is_err())
        .map(|(_, user)| *user)
        .collect();
    users.sort_unstable();
    users
}

/// Folds the group's outcome events into stored rows; returns the rows that changed.
pub(super) fn fold_group_events(
    rows: Vec<OutcomeRow>,
    by_user: &OutcomeEventsByUser<'_>,
    upkeep: &FusedUpkeep<'_>,
) -> Vec<OutcomeRow> {
    use crate::domain::fuse::outcomes::OutcomeEvent;
    let mut changed = Vec::new();
    for mut row in rows {
        let before = row.outcomes;
        let events = by_user.get(&(upkeep.environment.as_str(), row.user_id.as_str()));
        for e in events.into_iter().flatten() {
            row.outcomes.apply(
                &upkeep.feature,
                row.t0,
                &upkeep.names,
                &OutcomeEvent {
                    kind: e.kind,
                    feature: e.feature.as_deref(),
                    name: e.name.as_deref(),
                    score: e.score,
                    ts: e.ts,
                },
            );
        }
        if row.outcomes != before {
            changed.push(row);
        }
    }
    changed
}

/// Parameters of an [`outcome_sql`] statement, in `$N` order: environment, feature,
/// `as_of`, the activation and adoption names, the users (a JSON array, when the
/// statement filters by user) and, on SQLite, the highest indexed event `seq`.
pub(super) fn outcome_params<'a>(
    environment: &'a str,
    feature: &'a str,
    as_of: i64,
    names: &'a crate::domain::fuse::outcomes::OutcomeNames,
    users_json: Option<&'a str>,
    indexed_upto: Option<i64>,
) -> Vec<SqlParam<'a>> {
    let mut params = vec![
        SqlParam::Text(environment),
        SqlParam::Text(feature),
        SqlParam::Int(as_of),
    ];
    params.extend(
        names
            .activation
            .iter()
            .chain(&names.adoption)
            .map(|n| SqlParam::Text(n)),
    );
    params.extend(users_json.map(SqlParam::Text));
    params.extend(indexed_upto.map(SqlParam::Int));
    params
}

#[derive(sqlx::FromRow)]
pub(super) struct EventRow {
    pub id: String,
    pub environment: String,
    pub kind: String,
    pub user_id: String,
    pub feature: Option<String>,
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub variant: Option<String>,
    pub score: Option<f64>,
    pub session_id: Option<String>,
    pub properties: Option<String>,
    pub ts: i64,
    pub received_at: i64,
}

impl EventRow {
    pub fn into_domain(self) -> StoreResult<StoredEvent> {
        Ok(StoredEvent {
            id: self.id,
            environment: self.environment,
            kind: self.kind,
            user_id: self.user_id,
            feature: self.feature,
            name: self.name,
            enabled: self.enabled,
            variant: self.variant,
            score: self.score,
            session_id: self.session_id,
            properties: opt_from_json(self.properties)?,
            timestamp: self.ts,
            received_at: self.received_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct FuseRow {
    pub project: String,
    pub feature: String,
    pub environment: String,
    pub strategy_id: String,
    pub config: String,
    pub state: String,
    pub status: String,
    pub locked: bool,
    pub paused: bool,
    pub min_p: String,
    pub rollout_history: String,
    pub last_decision: Option<String>,
    pub last_evaluated_at: Option<i64>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl FuseRow {
    pub fn into_domain(self) -> StoreResult<super::FuseRecord> {
        Ok(super::FuseRecord {
            project: self.project,
            feature: self.feature,
            environment: self.environment,
            strategy_id: self.strategy_id,
            config: from_json(&self.config)?,
            state: from_json(&self.state)?,
            status: self.status,
            locked: self.locked,
            paused: self.paused,
            min_p: from_json(&self.min_p)?,
            rollout_history: from_json(&self.rollout_history)?,
            last_decision: opt_from_json(self.last_decision)?,
            last_evaluated_at: self.last_evaluated_at,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

pub(super) const STRATEGY_COLUMNS: &str = "id, feature, environment, name, title, disabled, sort_order, parameters, constraints, segments, variants";
pub(super) const FEATURE_COLUMNS: &str =
    "name, project, description, type, impression_data, stale, created_at";

/// Implements `Store` for `$store` (which has a `pool: sqlx::Pool<$db>` field).
macro_rules! impl_store {
    ($store:ty, $db:ty, $backend:expr) => {
        type Conn = <$db as sqlx::Database>::Connection;

        /// One audit entry, in the caller's transaction.
        #[allow(clippy::too_many_arguments)]
        async fn audit(
            conn: &mut Conn,
            kind: &str,
            actor: &Actor,
            project: Option<&str>,
            feature: Option<&str>,
            environment: Option<&str>,
            pre: Option<serde_json::Value>,
            data: Option<serde_json::Value>,
        ) -> StoreResult<()> {
            sqlx::query(
                "insert into audit_events (kind, created_by, created_at, project, feature, environment, pre_data, data) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(kind)
            .bind(&actor.0)
            .bind(now_ms())
            .bind(project)
            .bind(feature)
            .bind(environment)
            .bind(pre.map(|v| v.to_string()))
            .bind(data.map(|v| v.to_string()))
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        /// The user `id`, read inside the caller's transaction.
        async fn user_in(conn: &mut Conn, id: i64) -> StoreResult<crate::domain::users::User> {
            let row: Option<UserRow> = sqlx::query_as(
                "select id, email, password_hash, role, created_at from users where id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            Ok(row
                .ok_or_else(|| StoreError::NotFound(format!("user {id} not found")))?
                .into_domain()?
                .user)
        }

        /// Refuses a change that would leave no admin.
        async fn keep_an_admin(conn: &mut Conn, refusal: &str) -> StoreResult<()> {
            let (admins,): (i64,) = sqlx::query_as("select count(*) from users where role = 'admin'")
                .fetch_one(&mut *conn)
                .await?;
            if admins <= 1 {
                return Err(StoreError::Conflict(refusal.into()));
            }
            Ok(())
        }

        async fn ensure_environment(conn: &mut Conn, environment: &str) -> StoreResult<()> {
            let found: Option<(String,)> = sqlx::query_as("select name from environments where name = $1")
                .bind(environment)
                .fetch_optional(&mut *conn)
                .await?;
            match found {
                Some(_) => Ok(()),
                None => Err(StoreError::NotFound(format!("environment `{environment}` not found"))),
            }
        }

        async fn ensure_project(conn: &mut Conn, project: &str) -> StoreResult<()> {
            let found: Option<(String,)> = sqlx::query_as("select id from projects where id = $1")
                .bind(project)
                .fetch_optional(&mut *conn)
                .await?;
            match found {
                Some(_) => Ok(()),
                None => Err(StoreError::NotFound(format!("project `{project}` not found"))),
            }
        }

        /// A live (not archived) feature of `project`.
        async fn feature_meta(conn: &mut Conn, project: &str, name: &str) -> StoreResult<FeatureMeta> {
            ensure_project(conn, project).await?;
            let row: Option<FeatureRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "select {FEATURE_COLUMNS} from features where name = $1 and project = $2 and archived_at is null"
            )))
            .bind(name)
            .bind(project)
            .fetch_optional(&mut *conn)
            .await?;
            row.map(FeatureRow::into_domain)
                .ok_or_else(|| StoreError::NotFound(format!("feature `{name}` not found in project `{project}`")))
        }

        /// The project of a live feature (by name alone, as Unleash's tag paths have no project).
        async fn live_feature_project(conn: &mut Conn, feature: &str) -> StoreResult<String> {
            let row: Option<(String,)> = sqlx::query_as("select project from features where name = $1 and archived_at is null")
                .bind(feature)
                .fetch_optional(&mut *conn)
                .await?;
            row.map(|(p,)| p).ok_or_else(|| StoreError::NotFound(format!("feature `{feature}` not found")))
        }

        async fn strategies_of(conn: &mut Conn, feature: &str, environment: &str) -> StoreResult<Vec<Strategy>> {
            let rows: Vec<StrategyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "select {STRATEGY_COLUMNS} from feature_strategies where feature = $1 and environment = $2 \
                 order by sort_order, created_at, id"
            )))
            .bind(feature)
            .bind(environment)
            .fetch_all(&mut *conn)
            .await?;
            rows.into_iter().map(StrategyRow::into_domain).collect()
        }

        async fn load_feature(conn: &mut Conn, project: &str, name: &str) -> StoreResult<Feature> {
            let meta = feature_meta(conn, project, name).await?;
            let envs: Vec<EnvironmentRow> =
                sqlx::query_as("select name, type, enabled, sort_order from environments order by sort_order, name")
                    .fetch_all(&mut *conn)
                    .await?;
            let states: Vec<FeatureEnvRow> = sqlx::query_as(
                "select feature, environment, enabled, variants from feature_environments where feature = $1",
            )
            .bind(name)
            .fetch_all(&mut *conn)
            .await?;
            let mut environments = Vec::with_capacity(envs.len());
            for env in envs {
                let state = states.iter().find(|s| s.environment == env.name);
                environments.push(FeatureEnvironment {
                    enabled: state.map(|s| s.enabled).unwrap_or(false),
                    variants: match state {
                        Some(s) => opt_from_json(s.variants.clone())?,
                        None => None,
                    },
                    strategies: strategies_of(conn, name, &env.name).await?,
                    name: env.name,
                });
            }
            let deps: Vec<DependencyRow> = sqlx::query_as(
                "select child, parent, enabled, variants from feature_dependencies where child = $1 order by position, parent",
            )
            .bind(name)
            .fetch_all(&mut *conn)
            .await?;
            Ok(Feature {
                meta,
                environments,
                dependencies: deps.into_iter().map(DependencyRow::into_domain).collect::<StoreResult<_>>()?,
            })
        }

        async fn upsert_feature_environment(
            conn: &mut Conn,
            feature: &str,
            environment: &str,
            enabled: Option<bool>,
            variants: Option<Option<String>>,
        ) -> StoreResult<()> {
            sqlx::query(
                "insert into feature_environments (feature, environment, enabled, variants) values ($1, $2, false, null) \
                 on conflict (feature, environment) do nothing",
            )
            .bind(feature)
            .bind(environment)
            .execute(&mut *conn)
            .await?;
            if let Some(enabled) = enabled {
                sqlx::query("update feature_environments set enabled = $3 where feature = $1 and environment = $2")
                    .bind(feature)
                    .bind(environment)
                    .bind(enabled)
                    .execute(&mut *conn)
                    .await?;
            }
            if let Some(variants) = variants {
                sqlx::query("update feature_environments set variants = $3 where feature = $1 and environment = $2")
                    .bind(feature)
                    .bind(environment)
                    .bind(variants)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        }

        async fn insert_strategy(
            conn: &mut Conn,
            feature: &str,
            environment: &str,
            strategy: &Strategy,
            sort_order: i64,
        ) -> StoreResult<Strategy> {
            let id = uuid::Uuid::new_v4().to_string();
            sqlx::query(
                "insert into feature_strategies (id, feature, environment, name, title, disabled, sort_order, \
                 parameters, constraints, segments, variants, created_at) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(&id)
            .bind(feature)
            .bind(environment)
            .bind(&strategy.name)
            .bind(&strategy.title)
            .bind(strategy.disabled)
            .bind(sort_order)
            .bind(to_json(&strategy.parameters)?)
            .bind(to_json(&strategy.constraints)?)
            .bind(strategy.segments.as_ref().map(to_json).transpose()?)
            .bind(strategy.variants.as_ref().map(to_json).transpose()?)
            .bind(now_ms())
            .execute(&mut *conn)
            .await?;
            Ok(Strategy {
                id: Some(id),
                sort_order: Some(sort_order),
                ..strategy.clone()
            })
        }

        async fn ensure_segments_exist(conn: &mut Conn, strategy: &Strategy) -> StoreResult<()> {
            for (i, id) in strategy.segments.iter().flatten().enumerate() {
                let found: Option<(i64,)> = sqlx::query_as("select id from segments where id = $1")
                    .bind(*id)
                    .fetch_optional(&mut *conn)
                    .await?;
                if found.is_none() {
                    return Err(StoreError::Invalid {
                        path: format!("segments[{i}]"),
                        message: format!("segment {id} does not exist"),
                    });
                }
            }
            Ok(())
        }

        async fn strategy_by_id(conn: &mut Conn, feature: &str, environment: &str, id: &str) -> StoreResult<Strategy> {
            let row: Option<StrategyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "select {STRATEGY_COLUMNS} from feature_strategies where id = $1 and feature = $2 and environment = $3"
            )))
            .bind(id)
            .bind(feature)
            .bind(environment)
            .fetch_optional(&mut *conn)
            .await?;
            row.ok_or_else(|| StoreError::NotFound(format!("strategy `{id}` not found")))?
                .into_domain()
        }

        async fn write_segment(conn: &mut Conn, id: i64, fields: &SegmentFields, insert: bool) -> StoreResult<()> {
            let sql = if insert {
                "insert into segments (id, name, description, project, constraints, created_at) values ($1, $2, $3, $4, $5, $6)"
            } else {
                "update segments set name = $2, description = $3, project = $4, constraints = $5 where id = $1 and $6 = $6"
            };
            let name = fields.name.clone();
            sqlx::query(sql)
                .bind(id)
                .bind(&fields.name)
                .bind(&fields.description)
                .bind(&fields.project)
                .bind(to_json(&fields.constraints)?)
                .bind(now_ms())
                .execute(&mut *conn)
                .await
                .map_err(on_unique(|| format!("a segment named `{name}` already exists")))?;
            Ok(())
        }

        async fn segment_by_id(conn: &mut Conn, id: i64) -> StoreResult<Option<AdminSegment>> {
            let row: Option<SegmentRow> = sqlx::query_as(
                "select id, name, description, project, constraints, created_at from segments where id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            row.map(SegmentRow::into_domain).transpose()
        }

        async fn replace_dependencies(conn: &mut Conn, child: &str, deps: &[Dependency]) -> StoreResult<()> {
            sqlx::query("delete from feature_dependencies where child = $1")
                .bind(child)
                .execute(&mut *conn)
                .await?;
            for (position, dep) in deps.iter().enumerate() {
                sqlx::query(
                    "insert into feature_dependencies (child, parent, enabled, variants, position) values ($1, $2, $3, $4, $5) \
                     on conflict (child, parent) do update set enabled = excluded.enabled, variants = excluded.variants, \
                     position = excluded.position",
                )
                .bind(child)
                .bind(&dep.feature)
                .bind(dep.enabled)
                .bind(dep.variants.as_ref().map(to_json).transpose()?)
                .bind(position as i64)
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }

        impl $store {
            /// Begins a transaction that writes. On SQLite it is `BEGIN IMMEDIATE`: a
            /// deferred transaction that reads first and writes later gets SQLITE_BUSY
            /// at once ("database is locked", the busy timeout does not apply) when
            /// another connection writes meanwhile; IMMEDIATE takes the write lock up
            /// front, so concurrent writers wait their turn instead of failing.
            async fn begin_write(&self) -> Result<sqlx::Transaction<'static, $db>, sqlx::Error> {
                if matches!($backend, Backend::Sqlite) {
                    self.write_pool().begin_with("BEGIN IMMEDIATE").await
                } else {
                    self.write_pool().begin().await
                }
            }

            /// Serialises outcome maintenance. SQLite's write transactions already are
            /// serial; on PostgreSQL, concurrent ingest transactions (several writers,
            /// several replicas) would otherwise each miss the other's uncommitted
            /// events or exposures. Taken after the event inserts, so those still run
            /// in parallel; released at commit.
            async fn lock_outcomes(conn: &mut Conn) -> StoreResult<()> {
                if matches!($backend, Backend::Postgres) {
                    sqlx::query("select pg_advisory_xact_lock($1)").bind(OUTCOME_LOCK).execute(&mut *conn).await?;
                }
                Ok(())
            }

            /// Writes outcome aggregates back onto existing exposure rows.
            async fn write_outcomes(conn: &mut Conn, environment: &str, feature: &str, rows: &[OutcomeRow]) -> StoreResult<()> {
                if rows.is_empty() {
                    return Ok(());
                }
                Self::write_outcomes_impl(conn, environment, feature, rows).await
            }

            /// Computes outcomes from the stored events (at or before `as_of`); all
            /// exposed users when `users` is empty. `overlay` holds the events the
            /// index tables do not answer for yet (SQLite's tail).
            async fn compute_outcomes(
                conn: &mut Conn,
                environment: &str,
                feature: &str,
                as_of: i64,
                names: &crate::domain::fuse::outcomes::OutcomeNames,
                users: &[&str],
                overlay: &dyn super::tail::EventOverlay,
            ) -> StoreResult<Vec<OutcomeRow>> {
                let mut out = Vec::new();
                let chunks: Vec<&[&str]> = if users.is_empty() { vec![&[]] } else { users.chunks(EVENT_CHUNK).collect() };
                for chunk in chunks {
                    let sql = outcome_sql(names.activation.len(), names.adoption.len(), !chunk.is_empty(), $backend);
                    let users_json = if chunk.is_empty() { None } else { Some(to_json(&chunk)?) };
                    let upto = matches!($backend, Backend::Sqlite).then(|| overlay.indexed_upto());
                    let params = outcome_params(environment, feature, as_of, names, users_json.as_deref(), upto);
                    out.extend(Self::outcome_rows_impl(conn, &sql, &params).await?);
                }
                overlay.fold(environment, feature, as_of, names, &mut out);
                Ok(out)
            }

        }

        #[async_trait::async_trait]
        impl Store for $store {
            fn backend(&self) -> Backend {
                $backend
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("select 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn revision(&self) -> StoreResult<i64> {
                let (rev,): (i64,) = sqlx::query_as("select coalesce(max(id), 0) from audit_events")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(rev)
            }

            async fn list_environments(&self) -> StoreResult<Vec<Environment>> {
                let rows: Vec<EnvironmentRow> =
                    sqlx::query_as("select name, type, enabled, sort_order from environments order by sort_order, name")
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(EnvironmentRow::into_domain).collect())
            }

            async fn create_environment(&self, env: &NewEnvironment, actor: &Actor) -> StoreResult<Environment> {
                let mut tx = self.begin_write().await?;
                let name = env.name.clone();
                sqlx::query("insert into environments (name, type, enabled, sort_order, created_at) values ($1, $2, true, $3, $4)")
                    .bind(&env.name)
                    .bind(&env.environment_type)
                    .bind(env.sort_order)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await
                    .map_err(on_unique(|| format!("environment `{name}` already exists")))?;
                let created = Environment {
                    name: env.name.clone(),
                    environment_type: env.environment_type.clone(),
                    enabled: true,
                    sort_order: env.sort_order,
                };
                audit(&mut tx, "environment-created", actor, None, None, Some(&env.name), None, value(&created)).await?;
                tx.commit().await?;
                Ok(created)
            }

            async fn list_projects(&self) -> StoreResult<Vec<Project>> {
                let rows: Vec<ProjectRow> =
                    sqlx::query_as("select id, name, description, created_at from projects order by id")
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(ProjectRow::into_domain).collect())
            }

            async fn create_project(&self, project: &NewProject, actor: &Actor) -> StoreResult<Project> {
                let mut tx = self.begin_write().await?;
                let created = Project {
                    id: project.id.clone(),
                    name: project.name.clone(),
                    description: project.description.clone(),
                    created_at: now_ms(),
                };
                let id = project.id.clone();
                sqlx::query("insert into projects (id, name, description, created_at) values ($1, $2, $3, $4)")
                    .bind(&created.id)
                    .bind(&created.name)
                    .bind(&created.description)
                    .bind(created.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(on_unique(|| format!("project `{id}` already exists")))?;
                audit(&mut tx, "project-created", actor, Some(&created.id), None, None, None, value(&created)).await?;
                tx.commit().await?;
                Ok(created)
            }

            async fn list_features(&self, project: &str) -> StoreResult<Vec<FeatureMeta>> {
                let mut conn = self.pool.acquire().await?;
                ensure_project(&mut conn, project).await?;
                let rows: Vec<FeatureRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "select {FEATURE_COLUMNS} from features where project = $1 and archived_at is null order by name"
                )))
                .bind(project)
                .fetch_all(&mut *conn)
                .await?;
                Ok(rows.into_iter().map(FeatureRow::into_domain).collect())
            }

            async fn get_feature(&self, project: &str, name: &str) -> StoreResult<Feature> {
                let mut conn = self.pool.acquire().await?;
                load_feature(&mut conn, project, name).await
            }

            async fn create_feature(&self, project: &str, fields: &FeatureFields, actor: &Actor) -> StoreResult<Feature> {
                let mut tx = self.begin_write().await?;
                ensure_project(&mut tx, project).await?;
                let name = fields.name.clone();
                sqlx::query(
                    "insert into features (name, project, description, type, impression_data, stale, archived_at, created_at) \
                     values ($1, $2, $3, $4, $5, $6, null, $7)",
                )
                .bind(&fields.name)
                .bind(project)
                .bind(&fields.description)
                .bind(&fields.feature_type)
                .bind(fields.impression_data)
                .bind(fields.stale)
                .bind(now_ms())
                .execute(&mut *tx)
                .await
                .map_err(on_unique(|| format!("a feature named `{name}` already exists (possibly archived)")))?;
                let feature = load_feature(&mut tx, project, &fields.name).await?;
                audit(&mut tx, "feature-created", actor, Some(project), Some(&fields.name), None, None, value(&feature.meta)).await?;
                tx.commit().await?;
                Ok(feature)
            }

            async fn update_feature(&self, project: &str, fields: &FeatureFields, actor: &Actor) -> StoreResult<Feature> {
                let mut tx = self.begin_write().await?;
                let before = feature_meta(&mut tx, project, &fields.name).await?;
                sqlx::query("update features set description = $2, type = $3, impression_data = $4, stale = $5 where name = $1")
                    .bind(&fields.name)
                    .bind(&fields.description)
                    .bind(&fields.feature_type)
                    .bind(fields.impression_data)
                    .bind(fields.stale)
                    .execute(&mut *tx)
                    .await?;
                let feature = load_feature(&mut tx, project, &fields.name).await?;
                audit(&mut tx, "feature-updated", actor, Some(project), Some(&fields.name), None, value(&before), value(&feature.meta)).await?;
                tx.commit().await?;
                Ok(feature)
            }

            async fn archive_feature(&self, project: &str, name: &str, actor: &Actor) -> StoreResult<()> {
                let mut tx = self.begin_write().await?;
                let before = load_feature(&mut tx, project, name).await?;
                let children: Vec<(String,)> = sqlx::query_as(
                    "select d.child from feature_dependencies d join features f on f.name = d.child \
                     where d.parent = $1 and f.archived_at is null",
                )
                .bind(name)
                .fetch_all(&mut *tx)
                .await?;
                if let Some((child,)) = children.first() {
                    return Err(StoreError::Conflict(format!(
                        "feature `{name}` cannot be archived: `{child}` depends on it"
                    )));
                }
                sqlx::query("update features set archived_at = $2 where name = $1")
                    .bind(name)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
                audit(&mut tx, "feature-archived", actor, Some(project), Some(name), None, value(&before), None).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn set_feature_enabled(
                &self,
                project: &str,
                name: &str,
                environment: &str,
                enabled: bool,
                actor: &Actor,
            ) -> StoreResult<Feature> {
                let mut tx = self.begin_write().await?;
                feature_meta(&mut tx, project, name).await?;
                ensure_environment(&mut tx, environment).await?;
                let before: Option<(bool,)> = sqlx::query_as(
                    "select enabled from feature_environments where feature = $1 and environment = $2",
                )
                .bind(name)
                .bind(environment)
                .fetch_optional(&mut *tx)
                .await?;
                let was = before.map(|(e,)| e).unwrap_or(false);
                upsert_feature_environment(&mut tx, name, environment, Some(enabled), None).await?;
                if was != enabled {
                    let kind = if enabled { "feature-environment-enabled" } else { "feature-environment-disabled" };
                    audit(
                        &mut tx, kind, actor, Some(project), Some(name), Some(environment),
                        Some(serde_json::json!({ "enabled": was })),
                        Some(serde_json::json!({ "enabled": enabled })),
                    )
                    .await?;
                }
                let feature = load_feature(&mut tx, project, name).await?;
                tx.commit().await?;
                Ok(feature)
            }

            async fn list_strategies(&self, project: &str, name: &str, environment: &str) -> StoreResult<Vec<Strategy>> {
                let mut conn = self.pool.acquire().await?;
                feature_meta(&mut conn, project, name).await?;
                ensure_environment(&mut conn, environment).await?;
                strategies_of(&mut conn, name, environment).await
            }

            async fn add_strategy(
                &self,
                project: &str,
                name: &str,
                environment: &str,
                strategy: &Strategy,
                actor: &Actor,
            ) -> StoreResult<Strategy> {
                let mut tx = self.begin_write().await?;
                feature_meta(&mut tx, project, name).await?;
                ensure_environment(&mut tx, environment).await?;
                ensure_segments_exist(&mut tx, strategy).await?;
                upsert_feature_environment(&mut tx, name, environment, None, None).await?;
                let sort_order = match strategy.sort_order {
                    Some(s) => s,
                    None => {
                        let (max,): (i64,) = sqlx::query_as(
                            "select coalesce(max(sort_order), -1) from feature_strategies where feature = $1 and environment = $2",
                        )
                        .bind(name)
                        .bind(environment)
                        .fetch_one(&mut *tx)
                        .await?;
                        // A strategy may carry any i64 sort order, i64::MAX included.
                        max.saturating_add(1)
                    }
                };
                let created = insert_strategy(&mut tx, name, environment, strategy, sort_order).await?;
                audit(&mut tx, "feature-strategy-added", actor, Some(project), Some(name), Some(environment), None, value(&created)).await?;
                tx.commit().await?;
                Ok(created)
            }

            async fn update_strategy(
                &self,
                project: &str,
                name: &str,
                environment: &str,
                strategy: &Strategy,
                actor: &Actor,
            ) -> StoreResult<Strategy> {
                let id = strategy.id.clone().unwrap_or_default();
                let mut tx = self.begin_write().await?;
                feature_meta(&mut tx, project, name).await?;
                ensure_environment(&mut tx, environment).await?;
                let before = strategy_by_id(&mut tx, name, environment, &id).await?;
                ensure_segments_exist(&mut tx, strategy).await?;
                let sort_order = strategy.sort_order.or(before.sort_order).unwrap_or(0);
                sqlx::query(
                    "update feature_strategies set name = $2, title = $3, disabled = $4, sort_order = $5, \
                     parameters = $6, constraints = $7, segments = $8, variants = $9 where id = $1",
                )
                .bind(&id)
                .bind(&strategy.name)
                .bind(&strategy.title)
                .bind(strategy.disabled)
                .bind(sort_order)
                .bind(to_json(&strategy.parameters)?)
                .bind(to_json(&strategy.constraints)?)
                .bind(strategy.segments.as_ref().map(to_json).transpose()?)
                .bind(strategy.variants.as_ref().map(to_json).transpose()?)
                .execute(&mut *tx)
                .await?;
                let after = strategy_by_id(&mut tx, name, environment, &id).await?;
                audit(&mut tx, "feature-strategy-updated", actor, Some(project), Some(name), Some(environment), value(&before), value(&after)).await?;
                tx.commit().await?;
                Ok(after)
            }

            async fn delete_strategy(
                &self,
                project: &str,
                name: &str,
                environment: &str,
                strategy_id: &str,
                actor: &Actor,
            ) -> StoreResult<()> {
                let mut tx = self.begin_write().await?;
                feature_meta(&mut tx, project, name).await?;
                ensure_environment(&mut tx, environment).await?;
                let before = strategy_by_id(&mut tx, name, environment, strategy_id).await?;
                sqlx::query("delete from feature_strategies where id = $1")
                    .bind(strategy_id)
                    .execute(&mut *tx)
                    .await?;
                audit(&mut tx, "feature-strategy-removed", actor, Some(project), Some(name), Some(environment), value(&before), None).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn set_variants(
                &self,
                project: &str,
                name: &str,
                environment: &str,
                variants: &[Variant],
                actor: &Actor,
            ) -> StoreResult<Vec<Variant>> {
                let mut tx = self.begin_write().await?;
                feature_meta(&mut tx, project, name).await?;
                ensure_environment(&mut tx, environment).await?;
                let before: Option<(Option<String>,)> = sqlx::query_as(
                    "select variants from feature_environments where feature = $1 and environment = $2",
                )
                .bind(name)
                .bind(environment)
                .fetch_optional(&mut *tx)
                .await?;
                let before: Option<Vec<Variant>> = opt_from_json(before.and_then(|(v,)| v))?;
                upsert_feature_environment(&mut tx, name, environment, None, Some(Some(to_json(&variants)?))).await?;
                audit(&mut tx, "feature-variants-updated", actor, Some(project), Some(name), Some(environment), value(&before), value(&variants)).await?;
                tx.commit().await?;
                Ok(variants.to_vec())
            }

            async fn set_dependencies(
                &self,
                project: &str,
                name: &str,
                dependencies: &[Dependency],
                actor: &Actor,
            ) -> StoreResult<Vec<Dependency>> {
                let mut tx = self.begin_write().await?;
                let before = load_feature(&mut tx, project, name).await?.dependencies;
                if !dependencies.is_empty() {
                    let (children,): (i64,) = sqlx::query_as(
                        "select count(*) from feature_dependencies where parent = $1",
                    )
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await?;
                    if children > 0 {
                        return Err(StoreError::Invalid {
                            path: "$".into(),
                            message: format!("`{name}` is a parent of other features, so it cannot depend on one (one level only)"),
                        });
                    }
                }
                for (i, dep) in dependencies.iter().enumerate() {
                    let path = format!("[{i}].feature");
                    if dep.feature == name {
                        return Err(StoreError::Invalid { path, message: "a feature cannot depend on itself".into() });
                    }
                    let parent: Option<(String,)> = sqlx::query_as(
                        "select name from features where name = $1 and archived_at is null",
                    )
                    .bind(&dep.feature)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if parent.is_none() {
                        return Err(StoreError::Invalid { path, message: format!("feature `{}` does not exist", dep.feature) });
                    }
                    let (grand,): (i64,) = sqlx::query_as("select count(*) from feature_dependencies where child = $1")
                        .bind(&dep.feature)
                        .fetch_one(&mut *tx)
                        .await?;
                    if grand > 0 {
                        return Err(StoreError::Invalid {
                            path,
                            message: format!("`{}` depends on another feature itself (one level only)", dep.feature),
                        });
                    }
                }
                replace_dependencies(&mut tx, name, dependencies).await?;
                audit(&mut tx, "feature-dependencies-updated", actor, Some(project), Some(name), None, value(&before), value(&dependencies)).await?;
                tx.commit().await?;
                Ok(dependencies.to_vec())
            }

            async fn list_segments(&self) -> StoreResult<Vec<AdminSegment>> {
                let rows: Vec<SegmentRow> = sqlx::query_as(
                    "select id, name, description, project, constraints, created_at from segments order by id",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(SegmentRow::into_domain).collect()
            }

            async fn create_segment(&self, fields: &SegmentFields, actor: &Actor) -> StoreResult<AdminSegment> {
                let mut tx = self.begin_write().await?;
                if let Some(project) = &fields.project {
                    ensure_project(&mut tx, project).await?;
                }
                let (next,): (i64,) = sqlx::query_as("select coalesce(max(id), 0) + 1 from segments")
                    .fetch_one(&mut *tx)
                    .await?;
                write_segment(&mut tx, next, fields, true).await?;
                let created = segment_by_id(&mut tx, next)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("segment {next} not found")))?;
                audit(&mut tx, "segment-created", actor, fields.project.as_deref(), None, None, None, value(&created)).await?;
                tx.commit().await?;
                Ok(created)
            }

            async fn update_segment(&self, id: i64, fields: &SegmentFields, actor: &Actor) -> StoreResult<AdminSegment> {
                let mut tx = self.begin_write().await?;
                let before = segment_by_id(&mut tx, id)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("segment {id} not found")))?;
                if let Some(project) = &fields.project {
                    ensure_project(&mut tx, project).await?;
                }
                write_segment(&mut tx, id, fields, false).await?;
                let after = segment_by_id(&mut tx, id)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("segment {id} not found")))?;
                audit(&mut tx, "segment-updated", actor, fields.project.as_deref(), None, None, value(&before), value(&after)).await?;
                tx.commit().await?;
                Ok(after)
            }

            async fn delete_segment(&self, id: i64, actor: &Actor) -> StoreResult<()> {
                let mut tx = self.begin_write().await?;
                let before = segment_by_id(&mut tx, id)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("segment {id} not found")))?;
                let used: Vec<(String, Option<String>)> =
                    sqlx::query_as("select feature, segments from feature_strategies where segments is not null")
                        .fetch_all(&mut *tx)
                        .await?;
                for (feature, segments) in used {
                    let ids: Option<Vec<i64>> = opt_from_json(segments)?;
                    if ids.unwrap_or_default().contains(&id) {
                        return Err(StoreError::Conflict(format!(
                            "segment {id} is used by a strategy of feature `{feature}`"
                        )));
                    }
                }
                sqlx::query("delete from segments where id = $1").bind(id).execute(&mut *tx).await?;
                audit(&mut tx, "segment-deleted", actor, before.project.as_deref(), None, None, value(&before), None).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn list_tokens(&self) -> StoreResult<Vec<StoredToken>> {
                let rows: Vec<TokenRow> = sqlx::query_as(
                    "select id, name, kind, environment, projects, secret_hash, created_at, role from api_tokens order by id",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TokenRow::into_domain).collect()
            }

            async fn create_token(
                &self,
                name: &str,
                scope: &TokenScope,
                secret_hash: &str,
                actor: &Actor,
            ) -> StoreResult<Option<StoredToken>> {
                let mut tx = self.begin_write().await?;
                let exists: Option<(i64,)> = sqlx::query_as("select id from api_tokens where secret_hash = $1")
                    .bind(secret_hash)
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_some() {
                    return Ok(None);
                }
                let row: TokenRow = sqlx::query_as(
                    "insert into api_tokens (name, kind, environment, projects, secret_hash, created_at, role) \
                     values ($1, $2, $3, $4, $5, $6, $7) \
                     returning id, name, kind, environment, projects, secret_hash, created_at, role",
                )
                .bind(name)
                .bind(scope.kind.as_str())
                .bind(&scope.environment)
                .bind(to_json(&scope.projects)?)
                .bind(secret_hash)
                .bind(now_ms())
                .bind(scope.role.map(|r| r.as_str()))
                .fetch_one(&mut *tx)
                .await?;
                let token = row.into_domain()?;
                audit(&mut tx, "api-token-created", actor, None, None, None, None, value(&token)).await?;
                tx.commit().await?;
                Ok(Some(token))
            }

            async fn delete_token(&self, id: i64, actor: &Actor) -> StoreResult<()> {
                let mut tx = self.begin_write().await?;
                let row: Option<TokenRow> = sqlx::query_as(
                    "select id, name, kind, environment, projects, secret_hash, created_at, role from api_tokens where id = $1",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                let token = row
                    .ok_or_else(|| StoreError::NotFound(format!("api token {id} not found")))?
                    .into_domain()?;
                sqlx::query("delete from api_tokens where id = $1").bind(id).execute(&mut *tx).await?;
                audit(&mut tx, "api-token-deleted", actor, None, None, None, value(&token), None).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn import_state(
                &self,
                environment: &str,
                state: &ClientFeatures,
                actor: &Actor,
            ) -> StoreResult<ImportSummary> {
                let mut tx = self.begin_write().await?;
                ensure_environment(&mut tx, environment).await?;
                let segments = state.segments.as_deref().unwrap_or_default();
                for segment in segments {
                    let fields = SegmentFields {
                        name: segment.name.clone().unwrap_or_else(|| format!("segment-{}", segment.id)),
                        description: None,
                        project: None,
                        constraints: segment.constraints.clone(),
                    };
                    let exists = segment_by_id(&mut tx, segment.id).await?.is_some();
                    write_segment(&mut tx, segment.id, &fields, !exists).await?;
                }
                for feature in &state.features {
                    let project = feature.project.as_deref().unwrap_or("default");
                    sqlx::query("insert into projects (id, name, description, created_at) values ($1, $1, null, $2) on conflict (id) do nothing")
                        .bind(project)
                        .bind(now_ms())
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "insert into features (name, project, description, type, impression_data, stale, archived_at, created_at) \
                         values ($1, $2, $3, $4, $5, $6, null, $7) \
                         on conflict (name) do update set project = excluded.project, description = excluded.description, \
                         type = excluded.type, impression_data = excluded.impression_data, stale = excluded.stale, archived_at = null",
                    )
                    .bind(&feature.name)
                    .bind(project)
                    .bind(&feature.description)
                    .bind(feature.feature_type.as_deref().unwrap_or("release"))
                    .bind(feature.impression_data.unwrap_or(false))
                    .bind(feature.stale.unwrap_or(false))
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
                    let variants = feature.variants.as_ref().map(to_json).transpose()?;
                    upsert_feature_environment(&mut tx, &feature.name, environment, Some(feature.enabled), Some(variants)).await?;
                    sqlx::query("delete from feature_strategies where feature = $1 and environment = $2")
                        .bind(&feature.name)
                        .bind(environment)
                        .execute(&mut *tx)
                        .await?;
                    for (i, strategy) in feature.strategies.iter().enumerate() {
                        let order = strategy.sort_order.unwrap_or(i as i64);
                        insert_strategy(&mut tx, &feature.name, environment, strategy, order).await?;
                    }
                    replace_dependencies(&mut tx, &feature.name, feature.dependencies.as_deref().unwrap_or_default()).await?;
                }
                let summary = ImportSummary { features: state.features.len(), segments: segments.len() };
                let names: Vec<&str> = state.features.iter().map(|f| f.name.as_str()).collect();
                audit(
                    &mut tx, "state-imported", actor, None, None, Some(environment), None,
                    Some(serde_json::json!({ "features": names, "segments": summary.segments })),
                )
                .await?;
                tx.commit().await?;
                Ok(summary)
            }

            async fn client_features(&self, environment: &str) -> StoreResult<ClientFeatures> {
                let mut conn = self.pool.acquire().await?;
                ensure_environment(&mut conn, environment).await?;
                let features: Vec<FeatureRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "select {FEATURE_COLUMNS} from features where archived_at is null order by name"
                )))
                .fetch_all(&mut *conn)
                .await?;
                let states: Vec<FeatureEnvRow> = sqlx::query_as(
                    "select feature, environment, enabled, variants from feature_environments where environment = $1",
                )
                .bind(environment)
                .fetch_all(&mut *conn)
                .await?;
                let strategies: Vec<StrategyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "select {STRATEGY_COLUMNS} from feature_strategies where environment = $1 \
                     order by feature, sort_order, created_at, id"
                )))
                .bind(environment)
                .fetch_all(&mut *conn)
                .await?;
                let deps: Vec<DependencyRow> = sqlx::query_as(
                    "select child, parent, enabled, variants from feature_dependencies order by child, position, parent",
                )
                .fetch_all(&mut *conn)
                .await?;
                let segments: Vec<SegmentRow> = sqlx::query_as(
                    "select id, name, description, project, constraints, created_at from segments order by id",
                )
                .fetch_all(&mut *conn)
                .await?;

                let mut states: std::collections::HashMap<String, FeatureEnvRow> =
                    states.into_iter().map(|s| (s.feature.clone(), s)).collect();
                let mut by_feature: std::collections::HashMap<String, Vec<Strategy>> = Default::default();
                for row in strategies {
                    let feature = row.feature.clone();
                    let mut strategy = row.into_domain()?;
                    strategy.id = None;
                    strategy.sort_order = None;
                    by_feature.entry(feature).or_default().push(strategy);
                }
                let mut deps_by_child: std::collections::HashMap<String, Vec<Dependency>> = Default::default();
                for row in deps {
                    let child = row.child.clone();
                    deps_by_child.entry(child).or_default().push(row.into_domain()?);
                }
                let mut out = Vec::with_capacity(features.len());
                for row in features {
                    let state = states.remove(&row.name);
                    out.push(ClientFeature {
                        strategies: by_feature.remove(&row.name).unwrap_or_default(),
                        dependencies: deps_by_child.remove(&row.name),
                        enabled: state.as_ref().map(|s| s.enabled).unwrap_or(false),
                        variants: match state {
                            Some(s) => opt_from_json(s.variants)?,
                            None => None,
                        },
                        feature_type: Some(row.feature_type),
                        description: row.description,
                        project: Some(row.project),
                        stale: Some(row.stale),
                        impression_data: Some(row.impression_data),
                        name: row.name,
                    });
                }
                let segments = segments
                    .into_iter()
                    .map(|s| {
                        Ok(Segment { id: s.id, name: Some(s.name), constraints: from_json(&s.constraints)? })
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                Ok(ClientFeatures { version: 2, features: out, segments: Some(segments) })
            }

            async fn list_tags(&self, feature: &str) -> StoreResult<Vec<Tag>> {
                let mut conn = self.pool.acquire().await?;
                live_feature_project(&mut conn, feature).await?;
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "select tag_type, value from feature_tags where feature = $1 order by tag_type, value",
                )
                .bind(feature)
                .fetch_all(&mut *conn)
                .await?;
                Ok(rows.into_iter().map(|(tag_type, value)| Tag { tag_type, value }).collect())
            }

            async fn add_tag(&self, feature: &str, tag: &Tag, actor: &Actor) -> StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                let project = live_feature_project(&mut tx, feature).await?;
                let inserted = sqlx::query(
                    "insert into feature_tags (feature, tag_type, value, created_at) values ($1, $2, $3, $4) \
                     on conflict (feature, tag_type, value) do nothing",
                )
                .bind(feature)
                .bind(&tag.tag_type)
                .bind(&tag.value)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if inserted {
                    audit(&mut tx, "feature-tagged", actor, Some(&project), Some(feature), None, None, value(tag)).await?;
                }
                tx.commit().await?;
                Ok(inserted)
            }

            async fn remove_tag(&self, feature: &str, tag: &Tag, actor: &Actor) -> StoreResult<()> {
                let mut tx = self.begin_write().await?;
                let project = live_feature_project(&mut tx, feature).await?;
                let deleted = sqlx::query("delete from feature_tags where feature = $1 and tag_type = $2 and value = $3")
                    .bind(feature)
                    .bind(&tag.tag_type)
                    .bind(&tag.value)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if deleted == 0 {
                    return Err(StoreError::NotFound(format!(
                        "feature `{feature}` has no tag {}:{}",
                        tag.tag_type, tag.value
                    )));
                }
                audit(&mut tx, "feature-untagged", actor, Some(&project), Some(feature), None, value(tag), None).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn all_tags(&self) -> StoreResult<Vec<(String, Tag)>> {
                let rows: Vec<(String, String, String)> = sqlx::query_as(
                    "select t.feature, t.tag_type, t.value from feature_tags t \
                     join features f on f.name = t.feature where f.archived_at is null",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(f, tag_type, value)| (f, Tag { tag_type, value })).collect())
            }

            async fn ingest(&self, events: &[NewEvent], quarantine: &[NewQuarantine]) -> StoreResult<Vec<bool>> {
                self.ingest_impl(events, quarantine).await
            }

            async fn list_quarantine(&self, reason: Option<&str>, limit: i64) -> StoreResult<Vec<QuarantineItem>> {
                let rows: Vec<QuarantineItem> = sqlx::query_as(
                    "select id, received_at, environment, token_name, reason, message, raw from quarantine \
                     where ($1 or reason = $2) order by id desc limit $3",
                )
                .bind(reason.is_none())
                .bind(reason.unwrap_or(""))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows)
            }

            async fn get_quarantine(&self, id: i64) -> StoreResult<QuarantineItem> {
                let row: Option<QuarantineItem> = sqlx::query_as(
                    "select id, received_at, environment, token_name, reason, message, raw from quarantine where id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                row.ok_or_else(|| StoreError::NotFound(format!("quarantine record {id} not found")))
            }

            async fn delete_quarantine(&self, id: i64) -> StoreResult<()> {
                let done = sqlx::query("delete from quarantine where id = $1").bind(id).execute(&self.pool).await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound(format!("quarantine record {id} not found")));
                }
                Ok(())
            }

            async fn user_data(&self, user_id: &str) -> StoreResult<(Vec<StoredEvent>, Vec<Exposure>)> {
                let events: Vec<EventRow> = sqlx::query_as(
                    "select cast(id as text) as id, environment, kind, user_id, feature, name, enabled, variant, score, \
                     session_id, properties, ts, received_at from events where user_id = $1 order by ts, id",
                )
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
                let exposures: Vec<Exposure> = sqlx::query_as(
                    "select environment, feature, user_id, enabled, variant, t0, last_seen, exposure_count, crossovers \
                     from exposures where user_id = $1 order by environment, feature",
                )
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
                Ok((
                    events.into_iter().map(EventRow::into_domain).collect::<StoreResult<_>>()?,
                    exposures,
                ))
            }

            async fn erase_user(&self, user_id: &str, actor: &Actor) -> StoreResult<(u64, u64)> {
                let mut index = self.lock_index_to_forget().await;
                let mut tx = self.begin_write().await?;
                Self::lock_outcomes(&mut tx).await?;
                Self::forget_events_impl(&mut tx, &mut index, super::tail::Forget::User(user_id.to_string())).await?;
                let events = sqlx::query("delete from events where user_id = $1").bind(user_id).execute(&mut *tx).await?.rows_affected();
                let exposures = sqlx::query("delete from exposures where user_id = $1").bind(user_id).execute(&mut *tx).await?.rows_affected();
                // The audit log must not keep the personal data it records erasing.
                let hashed = crate::domain::tokens::hash_secret(user_id);
                audit(
                    &mut tx, "user-erased", actor, None, None, None, None,
                    Some(serde_json::json!({ "userIdSha256": hashed, "events": events, "exposures": exposures })),
                )
                .await?;
                tx.commit().await?;
                index.committed();
                Ok((events, exposures))
            }

            async fn purge_events_before(&self, before: i64) -> StoreResult<u64> {
                let mut index = self.lock_index_to_forget().await;
                let mut tx = self.begin_write().await?;
                Self::forget_events_impl(&mut tx, &mut index, super::tail::Forget::Before(before)).await?;
                let events = sqlx::query("delete from events where ts < $1").bind(before).execute(&mut *tx).await?.rows_affected();
                let quarantined = sqlx::query("delete from quarantine where received_at < $1").bind(before).execute(&mut *tx).await?.rows_affected();
                tx.commit().await?;
                index.committed();
                Ok(events + quarantined)
            }

            async fn count_events(&self) -> StoreResult<i64> {
                let (n,): (i64,) = sqlx::query_as("select count(*) from events").fetch_one(&self.pool).await?;
                Ok(n)
            }

            async fn get_fuse(&self, feature: &str, environment: &str) -> StoreResult<Option<FuseRecord>> {
                let row: Option<FuseRow> = sqlx::query_as(
                    "select f.project, x.feature, x.environment, x.strategy_id, x.config, x.state, x.status, x.locked, \
                     x.paused, x.min_p, x.rollout_history, x.last_decision, x.last_evaluated_at, x.version, \
                     x.created_at, x.updated_at from fuses x join features f on f.name = x.feature \
                     where x.feature = $1 and x.environment = $2 and f.archived_at is null",
                )
                .bind(feature)
                .bind(environment)
                .fetch_optional(&self.pool)
                .await?;
                row.map(FuseRow::into_domain).transpose()
            }

            async fn active_fuses(&self) -> StoreResult<Vec<(String, String)>> {
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "select x.feature, x.environment from fuses x join features f on f.name = x.feature \
                     where not x.paused and not x.locked and f.archived_at is null order by x.feature, x.environment",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows)
            }

            async fn put_fuse(
                &self,
                r: &FuseRecord,
                audit_entry: Option<(&str, serde_json::Value, serde_json::Value)>,
                actor: &Actor,
            ) -> StoreResult<FuseRecord> {
                let mut tx = self.begin_write().await?;
                let now = now_ms();
                sqlx::query(
                    "insert into fuses (feature, environment, strategy_id, config, state, status, locked, paused, min_p, \
                     rollout_history, last_decision, last_evaluated_at, version, created_at, updated_at) \
                     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $13) \
                     on conflict (feature, environment) do update set strategy_id = excluded.strategy_id, \
                     config = excluded.config, state = excluded.state, status = excluded.status, locked = excluded.locked, \
                     paused = excluded.paused, min_p = excluded.min_p, rollout_history = excluded.rollout_history, \
                     last_decision = excluded.last_decision, last_evaluated_at = excluded.last_evaluated_at, \
                     version = fuses.version + 1, updated_at = excluded.updated_at",
                )
                .bind(&r.feature)
                .bind(&r.environment)
                .bind(&r.strategy_id)
                .bind(r.config.to_string())
                .bind(r.state.to_string())
                .bind(&r.status)
                .bind(r.locked)
                .bind(r.paused)
                .bind(r.min_p.to_string())
                .bind(r.rollout_history.to_string())
                .bind(r.last_decision.as_ref().map(|v| v.to_string()))
                .bind(r.last_evaluated_at)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if let Some((kind, pre, post)) = audit_entry {
                    audit(&mut tx, kind, actor, Some(&r.project), Some(&r.feature), Some(&r.environment), Some(pre), Some(post)).await?;
                }
                tx.commit().await?;
                self.get_fuse(&r.feature, &r.environment)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("fuse for `{}` not found", r.feature)))
            }

            async fn apply_fuse_change(&self, change: &FuseChange, actor: &Actor) -> StoreResult<bool> {
                let r = &change.record;
                let mut tx = self.begin_write().await?;
                let now = now_ms();
                let updated = sqlx::query(
                    "update fuses set state = $3, status = $4, locked = $5, paused = $6, min_p = $7, rollout_history = $8, \
                     last_decision = $9, last_evaluated_at = $10, version = version + 1, updated_at = $11 \
                     where feature = $1 and environment = $2 and version = $12",
                )
                .bind(&r.feature)
                .bind(&r.environment)
                .bind(r.state.to_string())
                .bind(&r.status)
                .bind(r.locked)
                .bind(r.paused)
                .bind(r.min_p.to_string())
                .bind(r.rollout_history.to_string())
                .bind(r.last_decision.as_ref().map(|v| v.to_string()))
                .bind(r.last_evaluated_at)
                .bind(now)
                .bind(change.expected_version)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    return Ok(false);
                }
                if let Some(rollout) = &change.rollout {
                    let row: Option<(String,)> = sqlx::query_as(
                        "select parameters from feature_strategies where id = $1 and feature = $2 and environment = $3",
                    )
                    .bind(&r.strategy_id)
                    .bind(&r.feature)
                    .bind(&r.environment)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some((params,)) = row else {
                        return Err(StoreError::NotFound(format!("managed strategy `{}` not found", r.strategy_id)));
                    };
                    let mut params: std::collections::BTreeMap<String, String> = from_json(&params)?;
                    params.insert("rollout".into(), rollout.clone());
                    sqlx::query("update feature_strategies set parameters = $2 where id = $1")
                        .bind(&r.strategy_id)
                        .bind(to_json(&params)?)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some((kind, pre, post)) = &change.audit {
                    audit(&mut tx, kind, actor, Some(&r.project), Some(&r.feature), Some(&r.environment), Some(pre.clone()), Some(post.clone())).await?;
                }
                if let Some(s) = &change.snapshot {
                    sqlx::query(
                        "insert into fuse_snapshots (feature, environment, created_at, kind, rule, exposure_before, exposure_after, analysis) \
                         values ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(&r.feature)
                    .bind(&r.environment)
                    .bind(s.created_at)
                    .bind(&s.kind)
                    .bind(&s.rule)
                    .bind(s.exposure_before)
                    .bind(s.exposure_after)
                    .bind(s.analysis.to_string())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn fuse_history(&self, feature: &str, environment: &str, limit: i64) -> StoreResult<Vec<FuseSnapshot>> {
                let rows: Vec<(i64, i64, String, String, f64, f64, String)> = sqlx::query_as(
                    "select id, created_at, kind, rule, exposure_before, exposure_after, analysis from fuse_snapshots \
                     where feature = $1 and environment = $2 order by id desc limit $3",
                )
                .bind(feature)
                .bind(environment)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                let mut out = rows
                    .into_iter()
                    .map(|(id, created_at, kind, rule, exposure_before, exposure_after, analysis)| {
                        Ok(FuseSnapshot { id, created_at, kind, rule, exposure_before, exposure_after, analysis: from_json(&analysis)? })
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                out.reverse();
                Ok(out)
            }

            async fn cohort_rows(
                &self,
                environment: &str,
                feature: &str,
                as_of: i64,
                names: &crate::domain::fuse::outcomes::OutcomeNames,
            ) -> StoreResult<Vec<CohortRow>> {
                let overlay = self.overlay_snapshot(environment).await;
                let mut conn = self.pool.acquire().await?;
                let rows = Self::compute_outcomes(&mut conn, environment, feature, as_of, names, &[], &overlay).await?;
                Ok(rows.into_iter().map(OutcomeRow::into_cohort).collect())
            }

            async fn live_cohort_rows(
                &self,
                environment: &str,
                feature: &str,
                names: &crate::domain::fuse::outcomes::OutcomeNames,
            ) -> StoreResult<Vec<CohortRow>> {
                let built: Option<(Option<String>,)> = sqlx::query_as(
                    "select outcome_names from fuses where feature = $1 and environment = $2",
                )
                .bind(feature)
                .bind(environment)
                .fetch_optional(&self.pool)
                .await?;
                let Some((built,)) = built else {
                    return Err(StoreError::NotFound(format!("fuse for `{feature}` in `{environment}` not found")));
                };
                let current = built.as_deref().map(from_json::<crate::domain::fuse::outcomes::OutcomeNames>).transpose()?;
                if current.as_ref() != Some(names) {
                    // First look since the fuse was armed, or its event names changed:
                    // build from the stored events, holding off ingest meanwhile so no
                    // event is missed or counted twice.
                    let index = self.lock_index().await;
                    let mut tx = self.begin_write().await?;
                    if matches!($backend, Backend::Postgres) {
                        sqlx::query("lock table events in share mode").execute(&mut *tx).await?;
                    }
                    Self::lock_outcomes(&mut tx).await?;
                    let rows = Self::compute_outcomes(&mut tx, environment, feature, i64::MAX, names, &[], &index).await?;
                    Self::write_outcomes(&mut tx, environment, feature, &rows).await?;
                    sqlx::query("update fuses set outcome_names = $3 where feature = $1 and environment = $2")
                        .bind(feature)
                        .bind(environment)
                        .bind(to_json(names)?)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    index.committed();
                }
                self.read_outcomes_impl(environment, feature).await
            }

            async fn data_as_of(&self, environment: &str) -> StoreResult<Option<i64>> {
                let row: Option<(i64,)> = sqlx::query_as("select last_received_at from ingest_watermarks where environment = $1")
                    .bind(environment)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|(t,)| t))
            }

            async fn record_webhook_failure(
                &self,
                project: &str,
                feature: &str,
                environment: &str,
                failure: serde_json::Value,
                actor: &Actor,
            ) -> StoreResult<()> {
                let mut conn = self.pool.acquire().await?;
                audit(&mut conn, "fuse-webhook-failed", actor, Some(project), Some(feature), Some(environment), None, Some(failure)).await
            }

            async fn try_lead(&self) -> StoreResult<bool> {
                self.try_lead_impl().await
            }

            async fn register_client(&self, environment: &str, r: &ClientRegistration) -> StoreResult<()> {
                sqlx::query(
                    "insert into client_applications (app_name, instance_id, environment, sdk_version, strategies, \
                     started_at, interval_ms, last_seen) values ($1, $2, $3, $4, $5, $6, $7, $8) \
                     on conflict (app_name, instance_id, environment) do update set sdk_version = excluded.sdk_version, \
                     strategies = excluded.strategies, started_at = excluded.started_at, \
                     interval_ms = excluded.interval_ms, last_seen = excluded.last_seen",
                )
                .bind(&r.app_name)
                .bind(&r.instance_id)
                .bind(environment)
                .bind(&r.sdk_version)
                .bind(to_json(&r.strategies)?)
                .bind(r.started_at)
                .bind(r.interval_ms)
                .bind(now_ms())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn record_client_metrics(&self, environment: &str, at: i64, counts: &[FeatureCounts]) -> StoreResult<()> {
                const HOUR: i64 = 3_600_000;
                let hour = at.div_euclid(HOUR) * HOUR;
                let mut tx = self.begin_write().await?;
                for c in counts {
                    sqlx::query(
                        "insert into client_metrics_hourly (feature, environment, hour_start, yes, no) values ($1, $2, $3, $4, $5) \
                         on conflict (feature, environment, hour_start) do update set \
                         yes = client_metrics_hourly.yes + excluded.yes, no = client_metrics_hourly.no + excluded.no",
                    )
                    .bind(&c.feature)
                    .bind(environment)
                    .bind(hour)
                    .bind(c.yes)
                    .bind(c.no)
                    .execute(&mut *tx)
                    .await?;
                    for (variant, count) in &c.variants {
                        sqlx::query(
                            "insert into client_metrics_variants_hourly (feature, environment, hour_start, variant, count) \
                             values ($1, $2, $3, $4, $5) on conflict (feature, environment, hour_start, variant) \
                             do update set count = client_metrics_variants_hourly.count + excluded.count",
                        )
                        .bind(&c.feature)
                        .bind(environment)
                        .bind(hour)
                        .bind(variant)
                        .bind(*count)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn feature_metrics(&self, feature: &str, environment: &str, since: i64) -> StoreResult<Vec<HourlyMetrics>> {
                let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
                    "select hour_start, yes, no from client_metrics_hourly \
                     where feature = $1 and environment = $2 and hour_start >= $3 order by hour_start",
                )
                .bind(feature)
                .bind(environment)
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
                let variants: Vec<(i64, String, i64)> = sqlx::query_as(
                    "select hour_start, variant, count from client_metrics_variants_hourly \
                     where feature = $1 and environment = $2 and hour_start >= $3 order by hour_start, variant",
                )
                .bind(feature)
                .bind(environment)
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
                let mut out: Vec<HourlyMetrics> = rows
                    .into_iter()
                    .map(|(hour_start, yes, no)| HourlyMetrics { hour_start, yes, no, variants: Default::default() })
                    .collect();
                for (hour, variant, count) in variants {
                    if let Some(m) = out.iter_mut().find(|m| m.hour_start == hour) {
                        m.variants.insert(variant, count);
                    }
                }
                Ok(out)
            }

            async fn ingest_hourly(&self, since: i64) -> StoreResult<Vec<super::IngestHour>> {
                let rows: Vec<super::IngestHour> = sqlx::query_as(
                    "select hour, environment, accepted, duplicates, quarantined from ingest_hourly \
                     where hour >= $1 order by hour, environment",
                )
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows)
            }

            async fn count_users(&self) -> StoreResult<i64> {
                let (n,): (i64,) = sqlx::query_as("select count(*) from users").fetch_one(&self.pool).await?;
                Ok(n)
            }

            async fn list_users(&self) -> StoreResult<Vec<crate::domain::users::User>> {
                let rows: Vec<UserRow> = sqlx::query_as(
                    "select id, email, password_hash, role, created_at from users order by email",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(|r| r.into_domain().map(|u| u.user)).collect()
            }

            async fn find_user(&self, email: &str) -> StoreResult<Option<super::UserRecord>> {
                let row: Option<UserRow> = sqlx::query_as(
                    "select id, email, password_hash, role, created_at from users where email = $1",
                )
                .bind(email)
                .fetch_optional(&self.pool)
                .await?;
                row.map(UserRow::into_domain).transpose()
            }

            async fn get_user(&self, id: i64) -> StoreResult<Option<super::UserRecord>> {
                let row: Option<UserRow> = sqlx::query_as(
                    "select id, email, password_hash, role, created_at from users where id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(UserRow::into_domain).transpose()
            }

            async fn create_user(
                &self,
                email: &str,
                password_hash: &str,
                role: crate::domain::users::Role,
                only_if_none: bool,
                actor: &Actor,
            ) -> StoreResult<crate::domain::users::User> {
                let mut tx = self.begin_write().await?;
                if only_if_none {
                    // The one-time setup: a concurrent second setup finds a user and fails.
                    let (n,): (i64,) = sqlx::query_as("select count(*) from users").fetch_one(&mut *tx).await?;
                    if n > 0 {
                        return Err(StoreError::Conflict("setup is already done; log in instead".into()));
                    }
                }
                let now = now_ms();
                let row: UserRow = sqlx::query_as(
                    "insert into users (email, password_hash, role, created_at, updated_at) values ($1, $2, $3, $4, $4) \
                     returning id, email, password_hash, role, created_at",
                )
                .bind(email)
                .bind(password_hash)
                .bind(role.as_str())
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(on_unique(|| format!("a user with email `{email}` already exists")))?;
                let user = row.into_domain()?.user;
                audit(&mut tx, "user-created", actor, None, None, None, None, value(&user)).await?;
                tx.commit().await?;
                Ok(user)
            }

            async fn set_user_role(
                &self,
                id: i64,
                role: crate::domain::users::Role,
                actor: &Actor,
            ) -> StoreResult<crate::domain::users::User> {
                let mut tx = self.begin_write().await?;
                let before = user_in(&mut tx, id).await?;
                if before.role == crate::domain::users::Role::Admin && role != crate::domain::users::Role::Admin {
                    keep_an_admin(&mut tx, "the last admin cannot lose the admin role").await?;
                }
                sqlx::query("update users set role = $1, updated_at = $2 where id = $3")
                    .bind(role.as_str())
                    .bind(now_ms())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                let mut after = before.clone();
                after.role = role;
                audit(&mut tx, "user-updated", actor, None, None, None, value(&before), value(&after)).await?;
                tx.commit().await?;
                Ok(after)
            }

            async fn set_user_password(&self, id: i64, password_hash: &str, actor: &Actor) -> StoreResult<()> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query("update users set password_hash = $1, updated_at = $2 where id = $3")
                    .bind(password_hash)
                    .bind(now_ms())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound(format!("user {id} not found")));
                }
                audit(&mut tx, "user-password-changed", actor, None, None, None, None, Some(serde_json::json!({ "id": id }))).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn delete_user(&self, id: i64, actor: &Actor) -> StoreResult<()> {
                let mut tx = self.begin_write().await?;
                let user = user_in(&mut tx, id).await?;
                if user.role == crate::domain::users::Role::Admin {
                    keep_an_admin(&mut tx, "the last admin cannot be deleted").await?;
                }
                sqlx::query("delete from users where id = $1").bind(id).execute(&mut *tx).await?;
                audit(&mut tx, "user-deleted", actor, None, None, None, value(&user), None).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn server_secret(&self, name: &str, candidate: &str) -> StoreResult<String> {
                sqlx::query(
                    "insert into server_secrets (name, value, created_at) values ($1, $2, $3) \
                     on conflict (name) do nothing",
                )
                .bind(name)
                .bind(candidate)
                .bind(now_ms())
                .execute(&self.pool)
                .await?;
                let (value,): (String,) = sqlx::query_as("select value from server_secrets where name = $1")
                    .bind(name)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(value)
            }

            async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
                let rows: Vec<AuditRow> = sqlx::query_as(
                    "select id, kind, created_by, created_at, project, feature, environment, pre_data, data \
                     from audit_events \
                     where ($1 or feature = $2) and ($3 or project = $4) and created_at >= $5 \
                     and created_at < $6 and ($7 or created_by = $8) and ($9 or kind = $10) \
                     order by id desc limit $11",
                )
                .bind(query.feature.is_none())
                .bind(query.feature.as_deref().unwrap_or(""))
                .bind(query.project.is_none())
                .bind(query.project.as_deref().unwrap_or(""))
                .bind(query.since.unwrap_or(0))
                .bind(query.until.unwrap_or(i64::MAX))
                .bind(query.actor.is_none())
                .bind(query.actor.as_deref().unwrap_or(""))
                .bind(query.kind.is_none())
                .bind(query.kind.as_deref().unwrap_or(""))
                .bind(query.limit)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(AuditRow::into_domain).collect()
            }
        }
    };
}

pub(super) use impl_store;
