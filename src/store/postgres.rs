//! PostgreSQL backend: for several stateless replicas sharing one database.

use sqlx::postgres::PgPoolOptions;
use sqlx::{Pool, Postgres};

use super::sql::*;
use super::tail::{id_bits, ExposedUsers, Forget, Indexed, StoredIds};
use super::*;
use super::{CohortRow, FuseChange, FuseRecord, FuseSnapshot};
use crate::domain::admin::FeatureEnvironment;
use crate::domain::fuse::outcomes::UserOutcomes;
use crate::domain::model::{ClientFeature, Segment};

/// A store on a PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool<Postgres>,
    url: String,
    /// The session holding the scheduler's advisory lock while this replica leads.
    leader: std::sync::Arc<tokio::sync::Mutex<Option<sqlx::PgConnection>>>,
    /// Which users have exposure rows, as far as this replica has read `exposure_log`.
    exposed: std::sync::Arc<std::sync::Mutex<ExposedView>>,
    /// Ids this replica stored lately (see [`PgStore::copy_events`]).
    recent_ids: std::sync::Arc<std::sync::Mutex<RecentIds>>,
}

/// A Bloom filter chain of the ids this replica stored since it was last cleared.
/// "No" is not certain (other replicas, earlier processes, a clear), which is why
/// a COPY that hits a stored id starts its group over.
#[derive(Default)]
struct RecentIds {
    ids: StoredIds,
    count: usize,
}

/// Ids [`RecentIds`] holds before it is cleared: filters of 1, 2, 4 and 8 Mi ids,
/// 30 MB, about two and a half minutes at 100k events/s. Redeliveries come sooner.
const RECENT_IDS: usize = 15 << 20;

/// This replica's filters of exposed users per fused feature (see
/// [`ExposedUsers`]) and the last `exposure_log` row they include. Read and changed
/// only under the outcome advisory lock, which every exposure-writing group holds:
/// the filters then answer "no" only for users without a committed exposure row.
#[derive(Default)]
struct ExposedView {
    users: ExposedUsers,
    /// `None` until the first fill: no filter is trusted yet.
    seen: Option<i64>,
}

/// An `exposure_log` row: its number and the (environment, feature, user) of each
/// exposure row one statement inserted, as three parallel arrays. The log keeps the
/// newest 1024 rows (migration 0014): a replica that has not read it for longer
/// refills its filters from `exposures` (one scan per fused feature) instead.
type LogRow = (i64, Vec<String>, Vec<String>, Vec<String>);

/// Advisory lock key of the scheduler leader ("FUSE" in ASCII).
const LEADER_LOCK: i64 = 0x4655_5345;

impl PgStore {
    /// Connects to `url` and migrates the database.
    pub async fn connect(url: &str, pool_size: u32) -> anyhow::Result<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .connect(url)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(PgStore {
            pool,
            url: url.to_string(),
            leader: Default::default(),
            exposed: Default::default(),
            recent_ids: Default::default(),
        })
    }

    /// Write transactions share the pool: PostgreSQL runs them concurrently.
    fn write_pool(&self) -> &Pool<Postgres> {
        &self.pool
    }

    /// PostgreSQL indexes every event as it is stored (several writers and replicas
    /// share the tables), so a write transaction holds no in-process index.
    async fn lock_index(&self) -> Indexed {
        Indexed
    }

    /// As [`PgStore::lock_index`]: erasures need no more on PostgreSQL.
    async fn lock_index_to_forget(&self) -> Indexed {
        Indexed
    }

    async fn overlay_snapshot(&self, _environment: &str) -> Indexed {
        Indexed
    }

    async fn forget_events_impl(
        _: &mut sqlx::PgConnection,
        _: &mut Indexed,
        _: Forget,
    ) -> StoreResult<()> {
        Ok(())
    }

    /// Runs an [`outcome_sql`](super::sql::outcome_sql) statement.
    async fn outcome_rows_impl(
        conn: &mut sqlx::PgConnection,
        sql: &str,
        params: &[SqlParam<'_>],
    ) -> StoreResult<Vec<OutcomeRow>> {
        let mut q = sqlx::query_as::<_, OutcomeSqlRow>(sqlx::AssertSqlSafe(sql.to_string()));
        for param in params {
            q = match *param {
                SqlParam::Text(text) => q.bind(text),
                SqlParam::Int(int) => q.bind(int),
            };
        }
        Ok(q.fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(OutcomeRow::from_sql)
            .collect())
    }

    /// The exposure rows, with outcome aggregates, of some users of one feature.
    async fn read_outcome_rows_impl(
        conn: &mut sqlx::PgConnection,
        environment: &str,
        feature: &str,
        users: &[&str],
    ) -> StoreResult<Vec<OutcomeRow>> {
        let sql = exposures_of_users_sql(
            "user_id, enabled, t0, last_seen, exposure_count, crossovers, first_activation, first_error, \
             case when adopted then cast(1 as bigint) else cast(0 as bigint) end, feedback_sum, feedback_count, active_days",
            Backend::Postgres,
        );
        let rows = sqlx::query_as::<_, OutcomeSqlRow>(sqlx::AssertSqlSafe(sql))
            .bind(environment)
            .bind(feature)
            .bind(to_json(&users)?)
            .fetch_all(&mut *conn)
            .await?;
        Ok(rows.into_iter().map(OutcomeRow::from_sql).collect())
    }

    /// Holds a session-level advisory lock on a dedicated connection: when this
    /// process dies its session ends, the lock is released, and another replica's
    /// next attempt takes over.
    async fn try_lead_impl(&self) -> StoreResult<bool> {
        use sqlx::Connection;
        let mut leader = self.leader.lock().await;
        if let Some(conn) = leader.as_mut() {
            if sqlx::query("select 1").execute(&mut *conn).await.is_ok() {
                return Ok(true);
            }
            *leader = None;
        }
        let mut conn = sqlx::PgConnection::connect(&self.url).await?;
        let (locked,): (bool,) = sqlx::query_as("select pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut conn)
            .await?;
        if locked {
            *leader = Some(conn);
        }
        Ok(locked)
    }
}

impl PgStore {
    /// Stores one ingest group in one transaction: the events, the exposure rows they
    /// fold into, the outcome aggregates of fused features, the watermarks, the
    /// quarantine and the hourly counts. Several writers (and replicas) run this
    /// concurrently; outcome upkeep is serialised by an advisory lock.
    async fn ingest_impl(
        &self,
        events: &[NewEvent],
        quarantine: &[NewQuarantine],
    ) -> StoreResult<Vec<bool>> {
        let mut index = self.lock_index().await;
        let mut tx = self.begin_write().await?;
        let fresh = match self.copy_events(&mut tx, events).await? {
            Some(fresh) => fresh,
            None => {
                // An id was stored that the lookup did not cover (another replica's,
                // or one committed since): start over with the statement that skips
                // stored ids row by row.
                tx.rollback().await?;
                tx = self.begin_write().await?;
                Self::insert_events_impl(&mut tx, events, &mut index).await?
            }
        };
        let StoredGroup {
            stored,
            exposures,
            environments,
        } = StoredGroup::of(events, &fresh);
        let mut fused = Vec::new();
        let mut fused_by_environment = Vec::new();
        for environment in environments {
            let features = Self::fused_outcomes(&mut tx, environment).await?;
            let names: Vec<String> = features.iter().map(|(f, _)| f.clone()).collect();
            fused_by_environment.push((environment, names));
            for (feature, names) in features {
                fused.push((environment.to_string(), feature, names));
            }
        }
        // Every group that writes exposure rows holds the lock, so `exposure_log`
        // numbers them in commit order (see migrations 0012 and 0014).
        if !fused.is_empty() || !exposures.is_empty() {
            Self::lock_outcomes(&mut tx).await?;
        }
        if !fused.is_empty() {
            self.catch_up_exposed(&mut tx, &fused_by_environment)
                .await?;
        }
        let mut upkeep = Vec::new();
        for (environment, feature, names) in fused {
            let exposed = exposed_users(&exposures, &environment, &feature);
            // A user the filter has never seen has no row: no t0 to read. Each row's
            // t0 is read before this group's exposures are folded in.
            let users: Vec<&str> = {
                let view = self.exposed_view();
                let filter = view.users.filter(&environment, &feature);
                exposed
                    .iter()
                    .map(|(user, _)| *user)
                    .filter(|user| filter.as_ref().is_none_or(|f| f.may_have(user)))
                    .collect()
            };
            // One read for all of them: the users go as one JSON array parameter.
            let mut old_t0 = std::collections::HashMap::new();
            if !users.is_empty() {
                let q = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(
                    exposures_of_users_sql("user_id, t0", Backend::Postgres),
                ))
                .bind(&environment)
                .bind(&feature)
                .bind(to_json(&users)?);
                old_t0.extend(q.fetch_all(&mut *tx).await?);
            }
            let rebuild = users_to_rebuild(&exposed, &old_t0);
            upkeep.push(FusedUpkeep {
                environment,
                feature,
                names,
                rebuild,
            });
        }
        if !exposures.is_empty() {
            // The new rows go to `exposure_log` by trigger (migration 0014).
            Self::upsert_exposures_impl(&mut tx, &exposures).await?;
            // Added before commit: a rollback leaves only users the filter need
            // not have (an extra probe, never a missed row).
            let mut view = self.exposed_view();
            for x in &exposures {
                view.users.add(&x.environment, &x.feature, &x.user_id);
            }
        }
        if !upkeep.is_empty() {
            let by_user = outcome_events_by_user(&stored);
            for fused in &upkeep {
                self.maintain(&mut tx, fused, &by_user).await?;
            }
        }
        for (environment, at) in ingest_watermarks(&stored) {
            sqlx::query(WATERMARK_UPSERT)
                .bind(environment)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in quarantine.chunks(EVENT_CHUNK) {
            let sql = multi_row_sql(
                &format!("insert into quarantine ({QUARANTINE_COLUMNS}) values "),
                6,
                chunk.len(),
                "",
                Backend::Postgres,
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                q = q
                    .bind(r.received_at)
                    .bind(&r.environment)
                    .bind(&r.token_name)
                    .bind(&r.reason)
                    .bind(&r.message)
                    .bind(&r.raw);
            }
            q.execute(&mut *tx).await?;
        }
        for c in ingest_hourly(events, &fresh, quarantine) {
            sqlx::query(HOURLY_UPSERT)
                .bind(c.hour)
                .bind(c.environment)
                .bind(c.accepted)
                .bind(c.duplicates)
                .bind(c.quarantined)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        index.committed();
        Ok(fresh)
    }

    fn recent_ids(&self) -> std::sync::MutexGuard<'_, RecentIds> {
        // A panic while holding it leaves ids the filter need not have.
        self.recent_ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn exposed_view(&self) -> std::sync::MutexGuard<'_, ExposedView> {
        // A panic while holding it leaves filters with extra users at worst.
        self.exposed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings this replica's exposed-user filters up to date under the outcome
    /// lock: applies the `exposure_log` rows written since the last one seen (or,
    /// when some were pruned, starts over), drops filters of features no longer
    /// fused, and fills a missing filter from the feature's exposure rows.
    async fn catch_up_exposed(
        &self,
        conn: &mut sqlx::PgConnection,
        fused_by_environment: &[(&str, Vec<String>)],
    ) -> StoreResult<()> {
        let seen = self.exposed_view().seen;
        let mut start_over = true;
        if let Some(seen) = seen {
            let rows: Vec<LogRow> = sqlx::query_as(
                "select seq, environments, features, users from exposure_log where seq > $1 order by seq",
            )
            .bind(seen)
            .fetch_all(&mut *conn)
            .await?;
            // Numbers are gap-free, so a gap means pruned rows this replica missed.
            if rows.first().is_none_or(|(seq, ..)| *seq == seen + 1) {
                start_over = false;
                let mut view = self.exposed_view();
                for (seq, environments, features, users) in &rows {
                    for ((environment, feature), user) in
                        environments.iter().zip(features).zip(users)
                    {
                        view.users.add(environment, feature, user);
                    }
                    view.seen = Some(*seq);
                }
            }
        }
        if start_over {
            let (last,): (i64,) = sqlx::query_as("select coalesce(max(seq), 0) from exposure_log")
                .fetch_one(&mut *conn)
                .await?;
            *self.exposed_view() = ExposedView {
                users: ExposedUsers::default(),
                seen: Some(last),
            };
        }
        for (environment, features) in fused_by_environment {
            let fused: Vec<&str> = features.iter().map(String::as_str).collect();
            self.exposed_view().users.keep_only(environment, &fused);
            for feature in features {
                if self
                    .exposed_view()
                    .users
                    .filter(environment, feature)
                    .is_some()
                {
                    continue;
                }
                let users: Vec<(String,)> = sqlx::query_as(
                    "select user_id from exposures where environment = $1 and feature = $2",
                )
                .bind(*environment)
                .bind(feature)
                .fetch_all(&mut *conn)
                .await?;
                let users = users.iter().map(|(user,)| user.as_str());
                self.exposed_view().users.fill(environment, feature, users);
            }
        }
        Ok(())
    }

    /// Features of `environment` whose outcome aggregates are built, with the names
    /// they were built for.
    async fn fused_outcomes(
        conn: &mut sqlx::PgConnection,
        environment: &str,
    ) -> StoreResult<Vec<(String, crate::domain::fuse::outcomes::OutcomeNames)>> {
        let rows: Vec<(String, String)> = sqlx::query_as(FUSED_OUTCOMES)
            .bind(environment)
            .fetch_all(&mut *conn)
            .await?;
        rows.into_iter()
            .map(|(feature, names)| Ok((feature, from_json(&names)?)))
            .collect()
    }

    /// Keeps one fused feature's outcome aggregates current with an ingest group:
    /// rebuilds the rows [`FusedUpkeep::rebuild`] names from their stored events,
    /// and folds the group's events into every other exposed user's row.
    async fn maintain(
        &self,
        conn: &mut sqlx::PgConnection,
        upkeep: &FusedUpkeep<'_>,
        by_user: &OutcomeEventsByUser<'_>,
    ) -> StoreResult<()> {
        let (environment, feature) = (upkeep.environment.as_str(), upkeep.feature.as_str());
        if !upkeep.rebuild.is_empty() {
            let rows = Self::compute_outcomes(
                conn,
                environment,
                feature,
                i64::MAX,
                &upkeep.names,
                &upkeep.rebuild,
                &Indexed,
            )
            .await?;
            Self::write_outcomes(conn, environment, feature, &rows).await?;
        }
        let mut users = users_to_fold(by_user, environment, &upkeep.rebuild);
        // Users never exposed to the feature have no row to fold into: no probe.
        if let Some(filter) = self.exposed_view().users.filter(environment, feature) {
            users.retain(|user| filter.may_have(user));
        }
        if users.is_empty() {
            return Ok(());
        }
        // One read and one write for all of them (the users go as one JSON array).
        let rows = Self::read_outcome_rows_impl(conn, environment, feature, &users).await?;
        let changed = fold_group_events(rows, by_user, upkeep);
        Self::write_outcomes(conn, environment, feature, &changed).await
    }
}

impl PgStore {
    /// Stores a group's events with binary COPY, reporting for each whether it was
    /// new. COPY fills heap pages several rows per WAL record and skips the
    /// executor's per-row work, but it cannot skip a stored id. So the ids this
    /// replica may have stored ([`RecentIds`]: redeliveries, mostly) are looked up
    /// first in one index scan, and those found (and later copies within the group)
    /// are left out. Any other stored id makes the COPY fail: `None`, and the
    /// transaction must start over with the row-by-row insert. That is rare: an id
    /// stored by another replica, or before the filter was cleared, or committed by
    /// another transaction since the lookup. `None` too when an id does not parse,
    /// so that the row-by-row insert reports it.
    async fn copy_events(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[NewEvent],
    ) -> StoreResult<Option<Vec<bool>>> {
        if events.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let maybe: Vec<&str> = {
            let recent = self.recent_ids();
            events
                .iter()
                .filter(|e| id_bits(&e.id).is_none_or(|id| recent.ids.may_contain(id)))
                .map(|e| e.id.as_str())
                .collect()
        };
        let stored: Vec<(String,)> = if maybe.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as("select cast(id as text) from events where id = any(cast($1 as uuid[]))")
                .bind(&maybe)
                .fetch_all(&mut *conn)
                .await?
        };
        let mut seen: std::collections::HashSet<&str> =
            stored.iter().map(|(id,)| id.as_str()).collect();
        let fresh: Vec<bool> = events.iter().map(|e| seen.insert(&e.id)).collect();
        let rows: Vec<&NewEvent> = events
            .iter()
            .zip(&fresh)
            .filter(|(_, new)| **new)
            .map(|(e, _)| e)
            .collect();
        if rows.is_empty() {
            return Ok(Some(fresh));
        }
        let Some(data) = copy_binary(&rows) else {
            return Ok(None);
        };
        let mut copy = conn
            .copy_in_raw(
                "copy events (id, environment, kind, user_id, feature, name, enabled, variant, score, \
                 session_id, properties, ts, received_at) from stdin (format binary)",
            )
            .await?;
        copy.send(data).await?;
        match copy.finish().await {
            Ok(_) => {
                // Before commit: if it rolls back, these ids only cost a lookup.
                let mut recent = self.recent_ids();
                if recent.count + rows.len() > RECENT_IDS {
                    *recent = RecentIds::default();
                }
                for id in rows.iter().filter_map(|e| id_bits(&e.id)) {
                    recent.ids.insert(id);
                }
                recent.count += rows.len();
                Ok(Some(fresh))
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Inserts a group's events, reporting for each whether it was new (`false`: its
    /// id was already stored). One statement over column arrays (`unnest`) instead of
    /// multi-row VALUES: the server parses and plans 13 parameters, not 13 per event.
    async fn insert_events_impl(
        conn: &mut sqlx::PgConnection,
        events: &[NewEvent],
        _: &mut Indexed,
    ) -> StoreResult<Vec<bool>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let column = |f: fn(&NewEvent) -> Option<&str>| events.iter().map(f).collect::<Vec<_>>();
        let returned: Vec<(String,)> = sqlx::query_as(
            "insert into events (id, environment, kind, user_id, feature, name, enabled, variant, score, \
             session_id, properties, ts, received_at) \
             select * from unnest(cast($1 as uuid[]), cast($2 as text[]), cast($3 as text[]), cast($4 as text[]), \
             cast($5 as text[]), cast($6 as text[]), cast($7 as boolean[]), cast($8 as text[]), \
             cast($9 as double precision[]), cast($10 as text[]), cast($11 as text[]), cast($12 as bigint[]), \
             cast($13 as bigint[])) \
             on conflict (id) do nothing returning cast(id as text)",
        )
        .bind(column(|e| Some(e.id.as_str())))
        .bind(column(|e| Some(e.environment.as_str())))
        .bind(column(|e| Some(e.kind)))
        .bind(column(|e| Some(e.user_id.as_str())))
        .bind(column(|e| e.feature.as_deref()))
        .bind(column(|e| e.name.as_deref()))
        .bind(events.iter().map(|e| e.enabled).collect::<Vec<_>>())
        .bind(column(|e| e.variant.as_deref()))
        .bind(events.iter().map(|e| e.score).collect::<Vec<_>>())
        .bind(column(|e| e.session_id.as_deref()))
        .bind(column(|e| e.properties.as_deref()))
        .bind(events.iter().map(|e| e.ts).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.received_at).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        let mut new: std::collections::HashSet<String> =
            returned.into_iter().map(|(id,)| id).collect();
        // An id twice in one call is stored once: its first copy is the new one.
        Ok(events.iter().map(|e| new.remove(&e.id)).collect())
    }
}

impl PgStore {
    /// Merges a group's folded exposures into the stored rows: one statement over
    /// column arrays, as for events.
    async fn upsert_exposures_impl(
        conn: &mut sqlx::PgConnection,
        exposures: &[Exposure],
    ) -> StoreResult<()> {
        let text = |f: fn(&Exposure) -> &str| exposures.iter().map(f).collect::<Vec<_>>();
        let int = |f: fn(&Exposure) -> i64| exposures.iter().map(f).collect::<Vec<_>>();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "insert into exposures ({EXPOSURE_UPSERT_COLUMNS}) \
             select * from unnest(cast($1 as text[]), cast($2 as text[]), cast($3 as text[]), \
             cast($4 as boolean[]), cast($5 as text[]), cast($6 as bigint[]), cast($7 as bigint[]), \
             cast($8 as bigint[]), cast($9 as bigint[])){EXPOSURE_UPSERT_CONFLICT}"
        )))
        .bind(text(|x| &x.environment))
        .bind(text(|x| &x.feature))
        .bind(text(|x| &x.user_id))
        .bind(exposures.iter().map(|x| x.enabled).collect::<Vec<_>>())
        .bind(exposures.iter().map(|x| x.variant.as_deref()).collect::<Vec<_>>())
        .bind(int(|x| x.t0))
        .bind(int(|x| x.last_seen))
        .bind(int(|x| x.exposure_count))
        .bind(int(|x| x.crossovers))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Writes outcome aggregates onto existing exposure rows: one statement over
    /// column arrays.
    async fn write_outcomes_impl(
        conn: &mut sqlx::PgConnection,
        environment: &str,
        feature: &str,
        rows: &[OutcomeRow],
    ) -> StoreResult<()> {
        let int = |f: fn(&OutcomeRow) -> i64| rows.iter().map(f).collect::<Vec<_>>();
        let opt = |f: fn(&OutcomeRow) -> Option<i64>| rows.iter().map(f).collect::<Vec<_>>();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "insert into exposures ({OUTCOME_WRITE_COLUMNS}) \
             select $1, $2, * from unnest(cast($3 as text[]), cast($4 as boolean[]), cast($5 as bigint[]), \
             cast($6 as bigint[]), cast($7 as bigint[]), cast($8 as bigint[]), cast($9 as bigint[]), \
             cast($10 as bigint[]), cast($11 as bigint[]), cast($12 as boolean[]), \
             cast($13 as double precision[]), cast($14 as bigint[])){OUTCOME_WRITE_CONFLICT}"
        )))
        .bind(environment)
        .bind(feature)
        .bind(rows.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.enabled).collect::<Vec<_>>())
        .bind(int(|r| r.t0))
        .bind(int(|r| r.last_seen))
        .bind(int(|r| r.exposure_count))
        .bind(int(|r| r.crossovers))
        .bind(int(|r| r.outcomes.active_days as i64))
        .bind(opt(|r| r.outcomes.first_activation))
        .bind(opt(|r| r.outcomes.first_error))
        .bind(rows.iter().map(|r| r.outcomes.adopted).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.outcomes.feedback_sum).collect::<Vec<_>>())
        .bind(int(|r| r.outcomes.feedback_count))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// A fused feature's per-user aggregates as binary COPY: decoding a million rows
    /// through the row protocol costs more than the scheduler's whole time budget,
    /// COPY's flat tuples a fraction of it. COPY takes no bind parameters, so the two
    /// names (already validated as URL-safe identifiers) are quoted as literals.
    async fn read_outcomes_impl(
        &self,
        environment: &str,
        feature: &str,
    ) -> StoreResult<Vec<CohortRow>> {
        use futures_util::StreamExt;
        let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let sql = format!(
            "copy (select {OUTCOME_COLUMNS} from exposures where environment = {} and feature = {}) \
             to stdout (format binary)",
            literal(environment),
            literal(feature)
        );
        let mut conn = self.pool.acquire().await?;
        let mut stream = conn.copy_out_raw(&sql).await?;
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk?);
        }
        parse_copy_binary(&data)
            .map_err(|e| StoreError::Other(anyhow::anyhow!("reading outcome aggregates: {e}")))
    }
}

/// Events as PostgreSQL binary COPY data, in the column order of
/// [`PgStore::copy_events`]; `None` if an id is not a UUID.
fn copy_binary(events: &[&NewEvent]) -> Option<Vec<u8>> {
    fn field(out: &mut Vec<u8>, value: Option<&[u8]>) {
        match value {
            Some(bytes) => {
                // Values here are far below 2 GiB (bodies are capped well below).
                out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                out.extend_from_slice(bytes);
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    let text = |out: &mut Vec<u8>, value: Option<&str>| field(out, value.map(str::as_bytes));
    let mut out = Vec::with_capacity(32 + events.len() * 192);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for e in events {
        out.extend_from_slice(&13i16.to_be_bytes());
        field(&mut out, Some(&id_bits(&e.id)?.to_be_bytes()));
        text(&mut out, Some(&e.environment));
        text(&mut out, Some(e.kind));
        text(&mut out, Some(&e.user_id));
        text(&mut out, e.feature.as_deref());
        text(&mut out, e.name.as_deref());
        field(
            &mut out,
            e.enabled.map(|b| [u8::from(b)]).as_ref().map(|b| &b[..]),
        );
        text(&mut out, e.variant.as_deref());
        field(
            &mut out,
            e.score.map(|x| x.to_be_bytes()).as_ref().map(|b| &b[..]),
        );
        text(&mut out, e.session_id.as_deref());
        text(&mut out, e.properties.as_deref());
        field(&mut out, Some(&e.ts.to_be_bytes()));
        field(&mut out, Some(&e.received_at.to_be_bytes()));
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    Some(out)
}

/// Parses PostgreSQL's binary COPY of [`OUTCOME_COLUMNS`].
fn parse_copy_binary(data: &[u8]) -> Result<Vec<CohortRow>, String> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
            if self.0.len() < n {
                return Err("truncated COPY data".into());
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        fn i16(&mut self) -> Result<i16, String> {
            Ok(i16::from_be_bytes(
                self.take(2)?.try_into().map_err(|_| "short")?,
            ))
        }
        fn i32(&mut self) -> Result<i32, String> {
            Ok(i32::from_be_bytes(
                self.take(4)?.try_into().map_err(|_| "short")?,
            ))
        }
        /// One field: `None` for SQL NULL.
        fn field(&mut self) -> Result<Option<&'a [u8]>, String> {
            let len = self.i32()?;
            if len < 0 {
                return Ok(None);
            }
            self.take(len as usize).map(Some)
        }
        fn int8(&mut self) -> Result<Option<i64>, String> {
            self.field()?
                .map(|b| {
                    b.try_into()
                        .map(i64::from_be_bytes)
                        .map_err(|_| "bad int8".to_string())
                })
                .transpose()
        }
    }
    let mut r = Reader(data);
    if r.take(11)? != b"PGCOPY\n\xff\r\n\0" {
        return Err("not a binary COPY stream".into());
    }
    let _flags = r.i32()?;
    let extension = r.i32()?;
    r.take(usize::try_from(extension).map_err(|_| "bad header")?)?;
    let mut rows = Vec::new();
    loop {
        let fields = r.i16()?;
        if fields == -1 {
            break;
        }
        if fields != 10 {
            return Err(format!("expected 10 fields, got {fields}"));
        }
        let user_id = r.field()?.ok_or("null user_id")?;
        let user_id = std::str::from_utf8(user_id)
            .map_err(|e| e.to_string())?
            .to_string();
        let enabled = r.field()?.ok_or("null enabled")? == [1];
        let t0 = r.int8()?.ok_or("null t0")?;
        let crossovers = r.int8()?.ok_or("null crossovers")?;
        let outcomes = UserOutcomes {
            active_days: r.int8()?.ok_or("null active_days")? as u64,
            first_activation: r.int8()?,
            first_error: r.int8()?,
            adopted: r.field()?.ok_or("null adopted")? == [1],
            feedback_sum: r
                .field()?
                .map(|b| {
                    b.try_into()
                        .map(f64::from_be_bytes)
                        .map_err(|_| "bad float8".to_string())
                })
                .transpose()?
                .unwrap_or(0.0),
            feedback_count: r.int8()?.ok_or("null feedback_count")?,
        };
        rows.push(CohortRow::new(user_id, enabled, t0, crossovers, &outcomes));
    }
    Ok(rows)
}

impl_store!(PgStore, Postgres, Backend::Postgres);
