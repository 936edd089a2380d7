//! SQLite backend: the zero-dependency default. The file (and its folder) is created
//! on first start; WAL mode lets readers proceed while the single writer commits.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite};

use super::sql::*;
use super::tail::{id_bits, EventOverlay, EventTail, Forget};
use super::*;
use super::{CohortRow, FuseChange, FuseRecord, FuseSnapshot};
use crate::domain::admin::FeatureEnvironment;
use crate::domain::model::{ClientFeature, Segment};

/// A store on one SQLite file, plus the event index file beside it (`tail.rs`).
#[derive(Clone)]
pub struct SqliteStore {
    pool: Pool<Sqlite>,
    /// One connection for write transactions. SQLite serialises writers anyway, and
    /// a connection's page cache is discarded whenever another connection has written:
    /// with writes spread over the pool, nearly every ingest group started cold and
    /// read its b-tree pages back through the kernel.
    writer: Pool<Sqlite>,
    /// The events not yet in the index tables (see `tail.rs`). Its lock is taken
    /// before the writer connection by everything that writes events, so the tail
    /// changes only together with the transactions that store them.
    tail: Arc<tokio::sync::Mutex<EventTail>>,
    index: Arc<IndexFile>,
    _mover: Arc<MoverHandle>,
    _checkpointer: Arc<Checkpointer>,
}

/// The event index file and what the mover shares with the store.
struct IndexFile {
    path: std::path::PathBuf,
    /// The database file, which index connections attach read-only to find the ids
    /// an erasure or purge removes.
    main: std::path::PathBuf,
    /// Held by the mover for each whole move, and by erasures and purges for their whole
    /// write, so the mover never writes entries of events being deleted. Taken before
    /// the tail's lock.
    move_lock: Arc<tokio::sync::Mutex<()>>,
    /// Wakes the mover when a generation is frozen, or to stop.
    wake: tokio::sync::Notify,
    stop: std::sync::atomic::AtomicBool,
}

/// Stops the mover when the last clone of the store is dropped, and waits for it to
/// finish a move under way (about a second) and its WAL restart (which waits for
/// readers, up to the busy timeout), so the files are quiet after.
struct MoverHandle {
    index: Arc<IndexFile>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for MoverHandle {
    fn drop(&mut self) {
        self.index
            .stop
            .store(true, std::sync::atomic::Ordering::Release);
        self.index.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The tail, held for one write transaction. Events the transaction stores are added
/// as it goes (its own queries see them); unless [`IndexSession::committed`] is
/// called, dropping the session takes them out again.
pub(super) struct IndexSession<'a> {
    tail: tokio::sync::MutexGuard<'a, EventTail>,
    index: &'a IndexFile,
    /// The mover's lock, for sessions that delete events.
    moving: Option<tokio::sync::OwnedMutexGuard<()>>,
    mark: i64,
    forget: Vec<Forget>,
    done: bool,
    /// Set by ingest, the only session that keeps `OutcomeRows` current; any other
    /// session may change exposure rows behind it, so committing one clears them.
    ingest: bool,
}

impl IndexSession<'_> {
    /// The transaction committed: keep its events, apply what it erased, and hand a
    /// due generation to the mover.
    pub(super) fn committed(mut self) {
        self.done = true;
        if !self.ingest {
            self.tail.rows.clear();
        }
        for what in std::mem::take(&mut self.forget) {
            self.tail.forget(&what);
        }
        if self.ingest && self.tail.freeze_if_due() {
            self.index.wake.notify_one();
        }
    }
}

impl Drop for IndexSession<'_> {
    fn drop(&mut self) {
        if !self.done {
            // The kept rows may hold this transaction's writes.
            self.tail.rows.clear();
            let mark = self.mark;
            self.tail.truncate_after(mark);
        }
    }
}

impl EventOverlay for IndexSession<'_> {
    fn indexed_upto(&self) -> i64 {
        self.tail.indexed_upto()
    }
    fn fold(
        &self,
        environment: &str,
        feature: &str,
        as_of: i64,
        names: &crate::domain::fuse::outcomes::OutcomeNames,
        rows: &mut [OutcomeRow],
    ) {
        self.tail.fold(environment, feature, as_of, names, rows);
    }
}

/// WAL pages (256 MB) after which the committing connection checkpoints by itself.
/// SQLite's default (1000 pages) made nearly every ingest commit copy its pages into
/// the database file and wait for two fsyncs before the next group could start.
/// Under steady ingest the background checkpointer's passes never quite finish (the
/// writer appends during each), and only this checkpoint, run between two groups,
/// backfills the whole WAL so that the next group restarts it from the beginning. It
/// copies what the background pass has not: the larger the WAL may grow, the less
/// often the writer stops for it. At 16,384 pages it took about 3% of the writer.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 65_536;

/// How often the background checkpointer copies committed WAL pages into the file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Copies the WAL into the database file from its own connection, off the writer's
/// path: a PASSIVE checkpoint never blocks the writer or readers, so the ingest
/// writer's commits only append to the WAL. When a pass has copied everything, the
/// next write transaction restarts the WAL from its beginning. Stops when the last
/// clone of the store is dropped.
struct Checkpointer(tokio::task::JoinHandle<()>);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Checkpointer {
    fn start(mut conn: sqlx::SqliteConnection) -> Checkpointer {
        use sqlx::Connection as _;
        Checkpointer(tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = sqlx::query("pragma wal_checkpoint(PASSIVE)")
                    .execute(&mut conn)
                    .await
                {
                    tracing::warn!(error = %e, "background WAL checkpoint failed");
                }
                if conn.ping().await.is_err() {
                    return;
                }
            }
        }))
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` and migrates it, and opens
    /// (building it if missing or stale) the event index file beside it.
    /// `tail_events` sizes the in-memory event index (see `tail.rs`).
    pub async fn connect(
        url: &str,
        pool_size: u32,
        tail_events: usize,
    ) -> anyhow::Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode is durable against process crashes (SIGKILL); only
            // an OS crash can lose the last transactions.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // The default 2 MB page cache made event ingestion read b-tree pages through
            // the kernel on every insert; the writer's 32 MB keeps the hot pages in
            // memory (64 MB while the event index shared this file; with the index
            // moved out, 32 MB left throughput as it was). Readers get 8 MB: their
            // scans (outcome reads, exports) pass over pages once, and at 32 MB each
            // the pool's caches filled over a minute of ingest to about 100 MB of RSS.
            // No mmap: with the event indexes appended in sorted slices it gained
            // nothing measurable (68.8k events/s without, 72k with 256 MB), and the
            // mapped file pages counted 270 MB into the server's RSS.
            .pragma("cache_size", "-8192")
            .pragma("mmap_size", "0")
            .pragma("temp_store", "memory")
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
            .busy_timeout(Duration::from_secs(10));
        let main = options.get_filename().to_path_buf();
        if main.as_os_str().is_empty() || main.as_os_str() == ":memory:" {
            anyhow::bail!("a SQLite store needs a database file, not `{url}`");
        }
        if let Some(parent) = main.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)?;
            }
        }
        use sqlx::ConnectOptions as _;
        use sqlx::Connection as _;
        let mut conn = options.connect().await?;
        sqlx::migrate!("migrations/sqlite").run(&mut conn).await?;
        conn.close().await?;
        let mut path = main.clone().into_os_string();
        path.push("-index");
        let index = Arc::new(IndexFile {
            path: path.into(),
            main,
            move_lock: Arc::default(),
            wake: tokio::sync::Notify::new(),
            stop: std::sync::atomic::AtomicBool::new(false),
        });
        let mover_conn = open_index(&index).await?;
        // Every other connection reads the index tables through a read-only attach:
        // a read-write one would make each `BEGIN IMMEDIATE` lock the index file too,
        // serialising the writer with the mover again.
        let attach = read_only_uri(&index.path);
        let pool_options = SqlitePoolOptions::new().after_connect(move |conn, _| {
            let uri = attach.clone();
            Box::pin(async move {
                sqlx::query("attach database $1 as ix")
                    .bind(uri)
                    .execute(conn)
                    .await?;
                Ok(())
            })
        });
        let pool = pool_options
            .clone()
            .max_connections(pool_size.max(1))
            .connect_with(options.clone())
            .await?;
        let writer = pool_options
            .max_connections(1)
            .connect_with(options.clone().pragma("cache_size", "-32768"))
            .await?;
        let checkpointer = Checkpointer::start(options.connect().await?);
        let tail = Arc::new(tokio::sync::Mutex::new(
            load_tail(&pool, tail_events).await?,
        ));
        let thread = start_mover(mover_conn, Arc::clone(&tail), Arc::clone(&index))?;
        Ok(SqliteStore {
            pool,
            writer,
            tail,
            _mover: Arc::new(MoverHandle {
                index: Arc::clone(&index),
                thread: Some(thread),
            }),
            index,
            _checkpointer: Arc::new(checkpointer),
        })
    }
}

/// A `file:` URI opening `path` read-only (URI filenames are on for sqlx's connections).
fn read_only_uri(path: &std::path::Path) -> String {
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?mode=ro");
    uri
}

/// Builds the index tables from `events`, as one transaction on a connection to the
/// index file with the database attached as `m`. Generations become one run.
const BUILD_INDEX: &str = "
drop table if exists event_ids;
drop table if exists event_keys;
drop table if exists event_runs;
drop table if exists event_index;
create table event_ids (id blob primary key) without rowid;
create table event_keys (
    run integer not null,
    environment text not null,
    user_id text not null,
    min_ts bigint not null,
    max_ts bigint not null,
    events text not null,
    primary key (run, environment, user_id)
) without rowid;
create table event_runs (run integer primary key, min_ts bigint not null, max_ts bigint not null);
create table event_index (upto integer not null);
insert into event_index (upto) select coalesce(max(seq), 0) from m.events;
insert or ignore into event_ids (id) select unhex(replace(id, '-', '')) from m.events;
insert into event_keys (run, environment, user_id, min_ts, max_ts, events)
    select (select upto from event_index), environment, user_id, min(ts), max(ts), json_group_array(seq)
    from (select environment, user_id, ts, seq from m.events order by environment, user_id, ts, seq)
    group by environment, user_id;
insert into event_runs (run, min_ts, max_ts)
    select (select upto from event_index), min(ts), max(ts) from m.events having count(*) > 0;
";

/// A read-write connection to the index file with the database attached as `m`.
async fn index_connection(index: &IndexFile) -> anyhow::Result<sqlx::SqliteConnection> {
    use sqlx::ConnectOptions as _;
    let mut conn = SqliteConnectOptions::new()
        .filename(&index.path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // Derived data: an OS crash that loses its last commits is caught at startup.
        .synchronous(SqliteSynchronous::Normal)
        // Moves append to both index tables (runs and time-ordered ids grow at the
        // end), so a small cache serves; 16 MB cost about 35 MB of RSS for nothing.
        .pragma("cache_size", "-4096")
        // A move's WAL is rewritten from its start after each move (see
        // `restart_index_wal`); this trims the file back after a long reader let it grow.
        .pragma("journal_size_limit", (64 << 20).to_string())
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await?;
    sqlx::query("attach database $1 as m")
        .bind(read_only_uri(&index.main))
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// Opens the index file for the mover, building it from `events` when it is missing
/// (a new database, or one from before the file existed) or answers for events the
/// database no longer has (restored from an older backup, or an OS crash lost the
/// database's last commits): its `upto` is past the highest seq ever used.
async fn open_index(index: &IndexFile) -> anyhow::Result<sqlx::SqliteConnection> {
    let mut conn = index_connection(index).await?;
    let (tables,): (i64,) = sqlx::query_as(
        "select count(*) from main.sqlite_master where type = 'table' and name = 'event_index'",
    )
    .fetch_one(&mut conn)
    .await?;
    let stale = if tables == 0 {
        true
    } else {
        let (upto, used): (i64, i64) = sqlx::query_as(
            "select (select coalesce(max(upto), 0) from main.event_index), \
             coalesce((select seq from m.sqlite_sequence where name = 'events'), 0)",
        )
        .fetch_one(&mut conn)
        .await?;
        upto > used
    };
    if stale {
        tracing::info!(index = %index.path.display(), "building the event index from stored events");
        let mut tx = sqlx::Connection::begin(&mut conn).await?;
        sqlx::raw_sql(BUILD_INDEX).execute(&mut *tx).await?;
        tx.commit().await?;
    }
    sqlx::query("detach database m").execute(&mut conn).await?;
    Ok(conn)
}

/// Starts the mover: a thread of its own (the ingest writer's thread is the serial
/// path, and on two cores the mover needs the other CPU, not a slot among the async
/// workers) that moves each frozen generation into the index file in slices, then
/// drops it from the tail.
fn start_mover(
    conn: sqlx::SqliteConnection,
    tail: Arc<tokio::sync::Mutex<EventTail>>,
    index: Arc<IndexFile>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("fusebox-mover".into())
        .spawn(move || runtime.block_on(run_mover(conn, tail, index)))?;
    Ok(thread)
}

async fn run_mover(
    mut conn: sqlx::SqliteConnection,
    tail: Arc<tokio::sync::Mutex<EventTail>>,
    index: Arc<IndexFile>,
) {
    use std::sync::atomic::Ordering;
    while !index.stop.load(Ordering::Acquire) {
        // Held for the whole move: no erasure changes the generation meanwhile.
        let guard = index.move_lock.lock().await;
        let Some((epoch, generation, upto)) = tail.lock().await.moving() else {
            drop(guard);
            index.wake.notified().await;
            continue;
        };
        let mut plan = generation.plan_move(upto);
        #[allow(unsafe_code)]
        let write = |db| unsafe { raw::move_generation(db, &mut plan, &generation) };
        match with_raw(&mut conn, "moving events into the index", write).await {
            Ok(run) => {
                let moved = tail.lock().await.complete(epoch, run);
                drop(guard);
                // Freed here, on the mover's thread: hundreds of thousands of entries.
                drop((moved, generation));
                restart_index_wal(&mut conn).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "moving events into the index failed; retrying");
                drop(guard);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Checkpoints the index file's WAL and waits (up to the busy timeout) until no
/// reader still uses it, so that the next move writes the WAL from its start. Left to
/// SQLite's automatic passive checkpoints, the WAL never restarted under sustained
/// ingest, because the ingest writer's transactions, which read the index, overlap
/// one another: a 120 s `fusebox loadgen` run left a 1.4 GB index WAL beside a
/// 716 MB index, still growing with every move. New readers are not held up: once
/// the WAL is checkpointed they read the index file itself.
async fn restart_index_wal(conn: &mut sqlx::SqliteConnection) {
    match sqlx::query_as::<_, (i64, i64, i64)>("pragma wal_checkpoint(RESTART)")
        .fetch_one(conn)
        .await
    {
        Ok((0, _, _)) => {}
        Ok(_) => tracing::debug!("index WAL still in use after the busy timeout"),
        Err(e) => tracing::warn!(error = %e, "checkpointing the index WAL failed"),
    }
}

/// Reads the events the index tables do not cover back into memory (after a restart
/// or a crash, at most about two generations).
async fn load_tail(pool: &Pool<Sqlite>, move_at: usize) -> anyhow::Result<EventTail> {
    type Row = (
        i64,
        String,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<f64>,
        i64,
    );
    let (upto,): (i64,) = sqlx::query_as("select upto from event_index")
        .fetch_one(pool)
        .await?;
    let rows: Vec<Row> = sqlx::query_as(
        "select seq, id, environment, user_id, kind, feature, name, score, ts from events where seq > $1 order by seq",
    )
    .bind(upto)
    .fetch_all(pool)
    .await?;
    let mut tail = EventTail::new(upto, move_at);
    for (seq, id, environment, user_id, kind, feature, name, score, ts) in rows {
        let id = id_bits(&id)
            .ok_or_else(|| anyhow::anyhow!("stored event {seq} has id `{id}`, not a UUID"))?;
        tail.push_stored(
            seq,
            id,
            &environment,
            &user_id,
            &kind,
            feature.as_deref(),
            name.as_deref(),
            score,
            ts,
        );
    }
    // The ids already moved to disk, into the filter that spares most probes.
    let mut conn = pool.acquire().await?;
    // SAFETY (each C API call in this file): `with_raw` hands `db` to one call only.
    #[allow(unsafe_code)]
    let scan = |db| unsafe { raw::scan_stored_ids(db, &mut tail) };
    with_raw(&mut conn, "reading stored event ids", scan).await?;
    Ok(tail)
}

impl SqliteStore {
    fn write_pool(&self) -> &Pool<Sqlite> {
        &self.writer
    }

    /// Takes the tail for one write transaction; call before `begin_write`.
    async fn lock_index(&self) -> IndexSession<'_> {
        let tail = self.tail.lock().await;
        let mark = tail.max_seq();
        IndexSession {
            tail,
            index: &self.index,
            moving: None,
            mark,
            forget: Vec::new(),
            done: false,
            ingest: false,
        }
    }

    /// As [`SqliteStore::lock_index`], for a transaction that deletes events: the
    /// mover's lock first (it waits for a move in progress), then the tail's.
    async fn lock_index_to_forget(&self) -> IndexSession<'_> {
        let moving = Arc::clone(&self.index.move_lock).lock_owned().await;
        let mut session = self.lock_index().await;
        session.moving = Some(moving);
        session
    }

    /// A copy of one environment's tail for a query outside the writer.
    async fn overlay_snapshot(&self, environment: &str) -> EventTail {
        self.tail.lock().await.snapshot(environment)
    }

    /// Deletes the index entries of events an erasure or purge is about to delete;
    /// the tail forgets them when the transaction commits. The index file commits
    /// first: if the erasure then fails (or the process dies), the events stay, only
    /// unindexed, and the erasure's retry deletes them; the other order could leave
    /// an erased user's id in the index.
    async fn forget_events_impl(
        _: &mut sqlx::SqliteConnection,
        index: &mut IndexSession<'_>,
        what: Forget,
    ) -> StoreResult<()> {
        if index.moving.is_none() {
            return Err(StoreError::Other(anyhow::anyhow!(
                "deleting events needs the index mover's lock (lock_index_to_forget)"
            )));
        }
        let mut conn = index_connection(index.index)
            .await
            .map_err(StoreError::Other)?;
        let mut tx = sqlx::Connection::begin(&mut conn).await?;
        let ids = "delete from event_ids where id in (select unhex(replace(id, '-', '')) from m.events where ";
        match &what {
            Forget::User(user) => {
                sqlx::query(sqlx::AssertSqlSafe(format!("{ids}user_id = $1)")))
                    .bind(user)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("delete from event_keys where user_id = $1")
                    .bind(user)
                    .execute(&mut *tx)
                    .await?;
            }
            Forget::Before(before) => {
                sqlx::query(sqlx::AssertSqlSafe(format!("{ids}ts < $1)")))
                    .bind(before)
                    .execute(&mut *tx)
                    .await?;
                // A user's row straddling the cutoff keeps seqs of purged events; they
                // join no event, and the row goes when its newest event does.
                sqlx::query("delete from event_keys where max_ts < $1")
                    .bind(before)
                    .execute(&mut *tx)
                    .await?;
                // Runs wholly past retention are gone; lookups stop probing them.
                sqlx::query("delete from event_runs where max_ts < $1")
                    .bind(before)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        index.forget.push(what);
        Ok(())
    }

    /// One process owns a SQLite file, so it always leads.
    async fn try_lead_impl(&self) -> StoreResult<bool> {
        Ok(true)
    }
}

impl SqliteStore {
    /// Stores one ingest group in one write transaction run entirely through the C
    /// API, on the writer connection locked once: `BEGIN IMMEDIATE`, the events, the
    /// exposure rows, outcome upkeep, watermarks, quarantine, hourly counts, `COMMIT`
    /// (then a due generation is frozen for the mover). Through sqlx every statement
    /// was a round trip to its worker thread (about 13 per group), and on two cores
    /// each hand-off waited for a CPU: the writer is the serial path of SQLite ingest.
    async fn ingest_impl(
        &self,
        events: &[NewEvent],
        quarantine: &[NewQuarantine],
    ) -> StoreResult<Vec<bool>> {
        let mut index = self.lock_index().await;
        index.ingest = true;
        let mut conn = self.writer.acquire().await?;
        let session = &mut index;
        #[allow(unsafe_code)]
        let work = |db| unsafe { raw::ingest(db, events, quarantine, session) };
        let fresh = with_raw(&mut conn, "storing events", work).await?;
        index.committed();
        Ok(fresh)
    }

    /// Writes outcome aggregates onto existing exposure rows, one prepared `update`
    /// stepped per row through the C API: through sqlx's multi-row upsert each row
    /// cost several microseconds of argument copying on the writer's serial path.
    async fn write_outcomes_impl(
        conn: &mut sqlx::SqliteConnection,
        environment: &str,
        feature: &str,
        rows: &[OutcomeRow],
    ) -> StoreResult<()> {
        #[allow(unsafe_code)]
        let write = |db| unsafe { raw::write_outcomes(db, environment, feature, rows) };
        with_raw(conn, "writing outcomes", write).await
    }

    /// Runs an [`outcome_sql`](super::sql::outcome_sql) statement through the C API.
    /// Through sqlx each result row is a message from its worker thread to the writer
    /// task; late-exposure rebuilds run this in every ingest group.
    async fn outcome_rows_impl(
        conn: &mut sqlx::SqliteConnection,
        sql: &str,
        params: &[SqlParam<'_>],
    ) -> StoreResult<Vec<OutcomeRow>> {
        #[allow(unsafe_code)]
        let query = |db| unsafe { raw::outcome_rows(db, sql, params) };
        with_raw(conn, "computing outcomes", query).await
    }

    /// A fused feature's per-user aggregates, read with SQLite's C API on a connection
    /// locked out of sqlx's worker thread. sqlx copies every value into its own
    /// allocation and hands rows across threads, about 6 µs per row here: 6 s for the
    /// million users a scheduler pass must read in under 2 s. Stepping the statement
    /// directly takes a small fraction of that.
    async fn read_outcomes_impl(
        &self,
        environment: &str,
        feature: &str,
    ) -> StoreResult<Vec<CohortRow>> {
        let mut conn = self.pool.acquire().await?;
        #[allow(unsafe_code)]
        let read = |db| unsafe { raw::read_outcomes(db, environment, feature) };
        with_raw(&mut conn, "reading outcome aggregates", read).await
    }
}

/// Runs C API work on `conn`'s handle, locked away from sqlx's worker thread for the
/// whole call (so `work` may use `db` as its own; every `raw` function finalizes its
/// statements on every path). It runs off the async workers where the runtime allows
/// it (a multi-threaded runtime); on a current-thread runtime (the server's main
/// thread, where the ingest writer runs) it simply runs. `what` prefixes errors.
async fn with_raw<T>(
    conn: &mut sqlx::SqliteConnection,
    what: &str,
    work: impl FnOnce(*mut libsqlite3_sys::sqlite3) -> Result<T, String>,
) -> StoreResult<T> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    let run = || work(db);
    let result = match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(run),
        _ => run(),
    };
    result.map_err(|e| StoreError::Other(anyhow::anyhow!("{what}: {e}")))
}

/// The C API side of the store's bulk reads and writes (run through [`with_raw`]):
/// the crate's unsafe code, apart from the one-line calls into it.
#[allow(unsafe_code)]
mod raw {
    use std::ffi::{c_int, CStr};
    use std::ptr;

    use libsqlite3_sys as ffi;

    use super::super::sql::*;
    use super::super::tail::{
        id_bits, EventOverlay, EventTail, Generation, Move, OutcomeRows, Slice, MOVE_STEP,
    };
    use super::{CohortRow, IndexSession};
    use crate::domain::fuse::outcomes::{OutcomeNames, UserOutcomes};
    use crate::store::{Backend, Exposure, NewEvent, NewQuarantine};

    /// Finalizes the statement when dropped.
    struct Statement(*mut ffi::sqlite3_stmt);

    impl Drop for Statement {
        fn drop(&mut self) {
            // SAFETY: the pointer came from sqlite3_prepare_v2 and is finalized once.
            unsafe {
                ffi::sqlite3_finalize(self.0);
            }
        }
    }

    unsafe fn error(db: *mut ffi::sqlite3) -> String {
        let message = ffi::sqlite3_errmsg(db);
        if message.is_null() {
            return "unknown SQLite error".into();
        }
        CStr::from_ptr(message).to_string_lossy().into_owned()
    }

    /// Prepares one statement.
    unsafe fn prepare(db: *mut ffi::sqlite3, sql: &str) -> Result<Statement, String> {
        let mut stmt = ptr::null_mut();
        let rc = ffi::sqlite3_prepare_v2(
            db,
            sql.as_ptr().cast(),
            c_int::try_from(sql.len()).map_err(|e| e.to_string())?,
            &mut stmt,
            ptr::null_mut(),
        );
        if rc != ffi::SQLITE_OK {
            return Err(error(db));
        }
        Ok(Statement(stmt))
    }

    /// Binds text (or NULL) that stays alive until the statement is reset.
    unsafe fn bind_text(
        db: *mut ffi::sqlite3,
        stmt: *mut ffi::sqlite3_stmt,
        index: c_int,
        value: Option<&str>,
    ) -> Result<(), String> {
        let rc = match value {
            Some(v) => ffi::sqlite3_bind_text(
                stmt,
                index,
                v.as_ptr().cast(),
                c_int::try_from(v.len()).map_err(|e| e.to_string())?,
                ffi::SQLITE_STATIC(),
            ),
            None => ffi::sqlite3_bind_null(stmt, index),
        };
        if rc != ffi::SQLITE_OK {
            return Err(error(db));
        }
        Ok(())
    }

    /// Binds a 16-byte id that stays alive until the statement is reset.
    unsafe fn bind_id(
        db: *mut ffi::sqlite3,
        stmt: *mut ffi::sqlite3_stmt,
        index: c_int,
        id: &[u8; 16],
    ) -> Result<(), String> {
        if ffi::sqlite3_bind_blob(stmt, index, id.as_ptr().cast(), 16, ffi::SQLITE_STATIC())
            != ffi::SQLITE_OK
        {
            return Err(error(db));
        }
        Ok(())
    }

    /// Steps a statement that returns no rows, then resets it.
    unsafe fn run(db: *mut ffi::sqlite3, stmt: *mut ffi::sqlite3_stmt) -> Result<(), String> {
        let rc = ffi::sqlite3_step(stmt);
        let result = if rc == ffi::SQLITE_DONE {
            Ok(())
        } else {
            Err(error(db))
        };
        ffi::sqlite3_reset(stmt);
        result
    }

    /// A value bound by position (see [`execute`]).
    enum Bind<'a> {
        Text(Option<&'a str>),
        Int(i64),
    }

    /// Binds `values` to parameters 1, 2, ... and steps the statement once.
    unsafe fn execute(
        db: *mut ffi::sqlite3,
        stmt: *mut ffi::sqlite3_stmt,
        values: &[Bind<'_>],
    ) -> Result<(), String> {
        for (i, value) in values.iter().enumerate() {
            let index = c_int::try_from(i + 1).map_err(|e| e.to_string())?;
            match *value {
                Bind::Text(text) => bind_text(db, stmt, index, text)?,
                Bind::Int(int) => {
                    if ffi::sqlite3_bind_int64(stmt, index, int) != ffi::SQLITE_OK {
                        return Err(error(db));
                    }
                }
            }
        }
        run(db, stmt)
    }

    /// Runs one statement without parameters (BEGIN, COMMIT, ROLLBACK).
    unsafe fn exec(db: *mut ffi::sqlite3, sql: &str) -> Result<(), String> {
        let stmt = prepare(db, sql)?;
        run(db, stmt.0)
    }

    /// Stores an ingest group in one transaction (see `SqliteStore::ingest_impl`);
    /// `true` for each event stored. On any failure the transaction is rolled back
    /// (and dropping `index` uncommitted undoes the tail's part).
    ///
    /// # Safety
    /// `db` must be a valid connection that no other thread uses during the call,
    /// outside any transaction.
    pub(super) unsafe fn ingest(
        db: *mut ffi::sqlite3,
        events: &[NewEvent],
        quarantine: &[NewQuarantine],
        index: &mut IndexSession<'_>,
    ) -> Result<Vec<bool>, String> {
        if ffi::sqlite3_get_autocommit(db) == 0 {
            // A transaction left open by a ROLLBACK that failed last time: sqlx does not
            // know of it, so nothing else would ever end it.
            exec(db, "ROLLBACK")?;
        }
        exec(db, "BEGIN IMMEDIATE")?;
        let result = store_group(db, events, quarantine, index)
            .and_then(|fresh| exec(db, "COMMIT").map(|()| fresh));
        if result.is_err() && ffi::sqlite3_get_autocommit(db) == 0 {
            // A failed statement or COMMIT leaves the transaction open.
            let _ = exec(db, "ROLLBACK");
        }
        result
    }

    /// The body of [`ingest`]'s transaction.
    unsafe fn store_group(
        db: *mut ffi::sqlite3,
        events: &[NewEvent],
        quarantine: &[NewQuarantine],
        index: &mut IndexSession<'_>,
    ) -> Result<Vec<bool>, String> {
        let fresh = insert_events(db, events, &mut index.tail)?;
        // Outcome upkeep is planned against each row's t0 before this group's
        // exposures are folded in.
        let StoredGroup {
            stored,
            exposures,
            environments,
        } = StoredGroup::of(events, &fresh);
        let mut upkeep = Vec::new();
        for environment in environments {
            let features = fused_outcomes(db, environment)?;
            {
                let fused: Vec<&str> = features.iter().map(|(f, _)| f.as_str()).collect();
                index.tail.exposed.keep_only(environment, &fused);
                index.tail.rows.keep_only(environment, &fused);
            }
            for (feature, names) in features {
                if index.tail.exposed.filter(environment, &feature).is_none() {
                    let users = exposure_users(db, environment, &feature)?;
                    let users = users.iter().map(String::as_str);
                    index.tail.exposed.fill(environment, &feature, users);
                }
                let exposed = exposed_users(&exposures, environment, &feature);
                // A user the filter has never seen has no row: no t0 to read.
                let filter = index.tail.exposed.filter(environment, &feature);
                let users: Vec<&str> = exposed
                    .iter()
                    .map(|(user, _)| *user)
                    .filter(|user| filter.as_ref().is_none_or(|f| f.may_have(user)))
                    .collect();
                let old_t0 = if users.is_empty() {
                    Default::default()
                } else {
                    kept_outcome_rows(db, &mut index.tail.rows, environment, &feature, &users)?
                        .into_iter()
                        .map(|row| (row.user_id, row.t0))
                        .collect()
                };
                let rebuild = users_to_rebuild(&exposed, &old_t0);
                upkeep.push(FusedUpkeep {
                    environment: environment.to_string(),
                    feature,
                    names,
                    rebuild,
                });
            }
        }
        upsert_exposures(db, &exposures)?;
        for x in &exposures {
            let tail = &mut index.tail;
            tail.exposed.add(&x.environment, &x.feature, &x.user_id);
            // The upsert changed the row in SQL (t0, counts): read it back when needed.
            tail.rows.forget(&x.environment, &x.feature, &x.user_id);
        }
        if !upkeep.is_empty() {
            let by_user = outcome_events_by_user(&stored);
            for fused in &upkeep {
                maintain(db, fused, &by_user, index)?;
            }
        }
        let watermark = prepare(db, WATERMARK_UPSERT)?;
        for (environment, at) in ingest_watermarks(&stored) {
            execute(
                db,
                watermark.0,
                &[Bind::Text(Some(environment)), Bind::Int(at)],
            )?;
        }
        if !quarantine.is_empty() {
            let insert = prepare(
                db,
                &format!(
                    "insert into quarantine ({QUARANTINE_COLUMNS}) values (?1, ?2, ?3, ?4, ?5, ?6)"
                ),
            )?;
            for r in quarantine {
                let values = [
                    Bind::Int(r.received_at),
                    Bind::Text(r.environment.as_deref()),
                    Bind::Text(r.token_name.as_deref()),
                    Bind::Text(Some(&r.reason)),
                    Bind::Text(Some(&r.message)),
                    Bind::Text(Some(&r.raw)),
                ];
                execute(db, insert.0, &values)?;
            }
        }
        let hourly = prepare(db, HOURLY_UPSERT)?;
        for c in ingest_hourly(events, &fresh, quarantine) {
            let values = [
                Bind::Int(c.hour),
                Bind::Text(Some(c.environment)),
                Bind::Int(c.accepted),
                Bind::Int(c.duplicates),
                Bind::Int(c.quarantined),
            ];
            execute(db, hourly.0, &values)?;
        }
        Ok(fresh)
    }

    /// Features of `environment` whose outcome aggregates are built, with their names.
    unsafe fn fused_outcomes(
        db: *mut ffi::sqlite3,
        environment: &str,
    ) -> Result<Vec<(String, OutcomeNames)>, String> {
        let stmt = prepare(db, FUSED_OUTCOMES)?;
        bind_text(db, stmt.0, 1, Some(environment))?;
        let mut out = Vec::new();
        loop {
            match ffi::sqlite3_step(stmt.0) {
                ffi::SQLITE_ROW => {}
                ffi::SQLITE_DONE => return Ok(out),
                _ => return Err(error(db)),
            }
            let feature = text(stmt.0, 0);
            let names = serde_json::from_str(&text(stmt.0, 1))
                .map_err(|e| format!("outcome names of `{feature}`: {e}"))?;
            out.push((feature, names));
        }
    }

    /// The users with an exposure row for one feature.
    unsafe fn exposure_users(
        db: *mut ffi::sqlite3,
        environment: &str,
        feature: &str,
    ) -> Result<Vec<String>, String> {
        let stmt = prepare(
            db,
            "select user_id from exposures where environment = ?1 and feature = ?2",
        )?;
        bind_text(db, stmt.0, 1, Some(environment))?;
        bind_text(db, stmt.0, 2, Some(feature))?;
        let mut users = Vec::new();
        loop {
            match ffi::sqlite3_step(stmt.0) {
                ffi::SQLITE_ROW => users.push(text(stmt.0, 0)),
                ffi::SQLITE_DONE => return Ok(users),
                _ => return Err(error(db)),
            }
        }
    }

    /// A text column as an owned string (empty when NULL).
    unsafe fn text(stmt: *mut ffi::sqlite3_stmt, column: c_int) -> String {
        let text = ffi::sqlite3_column_text(stmt, column);
        if text.is_null() {
            return String::new();
        }
        let len = usize::try_from(ffi::sqlite3_column_bytes(stmt, column)).unwrap_or(0);
        String::from_utf8_lossy(std::slice::from_raw_parts(text, len)).into_owned()
    }

    /// Merges a group's folded exposures into the stored rows, one single-row upsert
    /// stepped per exposure (see [`EXPOSURE_UPSERT_CONFLICT`]).
    unsafe fn upsert_exposures(
        db: *mut ffi::sqlite3,
        exposures: &[Exposure],
    ) -> Result<(), String> {
        if exposures.is_empty() {
            return Ok(());
        }
        let stmt = prepare(
            db,
            &format!(
                "insert into exposures ({EXPOSURE_UPSERT_COLUMNS}) values \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9){EXPOSURE_UPSERT_CONFLICT}"
            ),
        )?;
        for x in exposures {
            let values = [
                Bind::Text(Some(&x.environment)),
                Bind::Text(Some(&x.feature)),
                Bind::Text(Some(&x.user_id)),
                Bind::Int(i64::from(x.enabled)),
                Bind::Text(x.variant.as_deref()),
                Bind::Int(x.t0),
                Bind::Int(x.last_seen),
                Bind::Int(x.exposure_count),
                Bind::Int(x.crossovers),
            ];
            execute(db, stmt.0, &values)?;
        }
        Ok(())
    }

    /// One fused feature's outcome upkeep for a group: the rows to rebuild are
    /// computed from their stored events (index tables plus the tail), the group's
    /// events are folded into everyone else's, and changed rows are written back.
    unsafe fn maintain(
        db: *mut ffi::sqlite3,
        upkeep: &FusedUpkeep<'_>,
        by_user: &OutcomeEventsByUser<'_>,
        overlay: &mut IndexSession<'_>,
    ) -> Result<(), String> {
        let (environment, feature, names) = (
            upkeep.environment.as_str(),
            upkeep.feature.as_str(),
            &upkeep.names,
        );
        if !upkeep.rebuild.is_empty() {
            let sql = outcome_sql(
                names.activation.len(),
                names.adoption.len(),
                true,
                Backend::Sqlite,
            );
            let mut rows = Vec::new();
            for chunk in upkeep.rebuild.chunks(EVENT_CHUNK) {
                let users = serde_json::to_string(chunk).map_err(|e| e.to_string())?;
                let upto = Some(overlay.indexed_upto());
                let params =
                    outcome_params(environment, feature, i64::MAX, names, Some(&users), upto);
                rows.extend(outcome_rows(db, &sql, &params)?);
            }
            overlay.fold(environment, feature, i64::MAX, names, &mut rows);
            write_outcomes(db, environment, feature, &rows)?;
            for row in &rows {
                overlay.tail.rows.put(environment, feature, row);
            }
        }
        let mut users = users_to_fold(by_user, environment, &upkeep.rebuild);
        // Users never exposed to the feature have no row to fold into: no probe.
        if let Some(filter) = overlay.tail.exposed.filter(environment, feature) {
            users.retain(|user| filter.may_have(user));
        }
        if users.is_empty() {
            return Ok(());
        }
        let rows = kept_outcome_rows(db, &mut overlay.tail.rows, environment, feature, &users)?;
        let changed = fold_group_events(rows, by_user, upkeep);
        write_outcomes(db, environment, feature, &changed)?;
        for row in &changed {
            overlay.tail.rows.put(environment, feature, row);
        }
        Ok(())
    }

    /// Some users' exposure rows of one feature: those `kept` has, and the rest read
    /// from the table (and kept).
    unsafe fn kept_outcome_rows(
        db: *mut ffi::sqlite3,
        kept: &mut OutcomeRows,
        environment: &str,
        feature: &str,
        users: &[&str],
    ) -> Result<Vec<OutcomeRow>, String> {
        let mut rows = Vec::with_capacity(users.len());
        let mut missing = Vec::new();
        for user in users {
            match kept.get(environment, feature, user) {
                Some(row) => rows.push(row),
                None => missing.push(*user),
            }
        }
        if !missing.is_empty() {
            let read = read_outcome_rows(db, environment, feature, &missing)?;
            for row in &read {
                kept.put(environment, feature, row);
            }
            rows.extend(read);
        }
        Ok(rows)
    }

    /// Inserts the events whose ids are new and adds them to the tail; `true` for each
    /// event stored. An id is old if the tail has it (which includes earlier events
    /// of this group) or the `event_ids` table does.
    ///
    /// Rows go in [`INSERT_ROWS`] to a statement, with their seqs given. `events` is
    /// an AUTOINCREMENT table, and SQLite reads and rewrites its `sqlite_sequence`
    /// row once per statement, so one row per statement paid that for every event
    /// (through Python's sqlite3 module, 3.97 against 3.24 µs per row without
    /// AUTOINCREMENT). The seqs continue from `sqlite_sequence`, which this
    /// transaction's write lock keeps still.
    ///
    /// # Safety
    /// `db` must be a valid connection that no other thread uses during the call.
    pub(super) unsafe fn insert_events(
        db: *mut ffi::sqlite3,
        events: &[NewEvent],
        tail: &mut EventTail,
    ) -> Result<Vec<bool>, String> {
        let probe = prepare(db, "select 1 from event_ids where id = ?1")?;
        let mut seq = last_seq(db)?;
        let mut fresh = Vec::with_capacity(events.len());
        let mut pending: Vec<(i64, &NewEvent)> = Vec::with_capacity(INSERT_ROWS);
        let mut many = None;
        for e in events {
            let id = id_bits(&e.id).ok_or_else(|| format!("event id `{}` is not a UUID", e.id))?;
            // The filter holds the tail's ids too: a "no" settles most events.
            if tail.may_be_stored(id) {
                if tail.contains(id) {
                    fresh.push(false);
                    continue;
                }
                let bytes = id.to_be_bytes();
                bind_id(db, probe.0, 1, &bytes)?;
                let rc = ffi::sqlite3_step(probe.0);
                ffi::sqlite3_reset(probe.0);
                match rc {
                    ffi::SQLITE_ROW => {
                        fresh.push(false);
                        continue;
                    }
                    ffi::SQLITE_DONE => {}
                    _ => return Err(error(db)),
                }
            }
            seq += 1;
            // Pushed before its row is written, so that a repeat later in the group
            // is found; a failed transaction truncates the tail back anyway.
            tail.push(seq, id, e);
            fresh.push(true);
            pending.push((seq, e));
            if pending.len() == INSERT_ROWS {
                let stmt = match &many {
                    Some(stmt) => stmt,
                    None => many.insert(prepare(db, &insert_sql(INSERT_ROWS))?),
                };
                insert_rows(db, stmt.0, &pending)?;
                pending.clear();
            }
        }
        if !pending.is_empty() {
            let stmt = prepare(db, &insert_sql(pending.len()))?;
            insert_rows(db, stmt.0, &pending)?;
        }
        Ok(fresh)
    }

    /// Rows per `insert into events` statement (see [`insert_events`]).
    const INSERT_ROWS: usize = 32;
    /// Columns bound per row.
    const EVENT_COLUMNS: usize = 14;

    fn insert_sql(rows: usize) -> String {
        let mut sql = String::from(
            "insert into events (seq, id, environment, kind, user_id, feature, name, enabled, \
             variant, score, session_id, properties, ts, received_at) values ",
        );
        let row = format!("({})", vec!["?"; EVENT_COLUMNS].join(","));
        sql.push_str(&vec![row; rows].join(","));
        sql
    }

    /// The highest seq `events` has ever handed out (0 before the first event).
    unsafe fn last_seq(db: *mut ffi::sqlite3) -> Result<i64, String> {
        let stmt = prepare(
            db,
            "select seq from main.sqlite_sequence where name = 'events'",
        )?;
        match ffi::sqlite3_step(stmt.0) {
            ffi::SQLITE_ROW => Ok(ffi::sqlite3_column_int64(stmt.0, 0)),
            ffi::SQLITE_DONE => Ok(0),
            _ => Err(error(db)),
        }
    }

    /// Binds `rows` to a statement from [`insert_sql`] of as many rows, and runs it.
    unsafe fn insert_rows(
        db: *mut ffi::sqlite3,
        s: *mut ffi::sqlite3_stmt,
        rows: &[(i64, &NewEvent)],
    ) -> Result<(), String> {
        for (i, (seq, e)) in rows.iter().enumerate() {
            let at = |column: usize| c_int::try_from(i * EVENT_COLUMNS + column).unwrap_or(0);
            let mut rc = ffi::sqlite3_bind_int64(s, at(1), *seq);
            rc |= match e.enabled {
                Some(b) => ffi::sqlite3_bind_int64(s, at(8), i64::from(b)),
                None => ffi::sqlite3_bind_null(s, at(8)),
            };
            rc |= match e.score {
                Some(x) => ffi::sqlite3_bind_double(s, at(10), x),
                None => ffi::sqlite3_bind_null(s, at(10)),
            };
            rc |= ffi::sqlite3_bind_int64(s, at(13), e.ts);
            rc |= ffi::sqlite3_bind_int64(s, at(14), e.received_at);
            if rc != ffi::SQLITE_OK {
                return Err(error(db));
            }
            bind_text(db, s, at(2), Some(&e.id))?;
            bind_text(db, s, at(3), Some(&e.environment))?;
            bind_text(db, s, at(4), Some(e.kind))?;
            bind_text(db, s, at(5), Some(&e.user_id))?;
            bind_text(db, s, at(6), e.feature.as_deref())?;
            bind_text(db, s, at(7), e.name.as_deref())?;
            bind_text(db, s, at(9), e.variant.as_deref())?;
            bind_text(db, s, at(11), e.session_id.as_deref())?;
            bind_text(db, s, at(12), e.properties.as_deref())?;
        }
        run(db, s)
    }

    /// Moves a frozen generation into the index file in one transaction, slice by
    /// slice, and returns its run (the new `upto`). One transaction, not one per
    /// slice: every commit to the index file discards the index pages the ingest
    /// writer's connection has cached, and its late-exposure lookups read them.
    ///
    /// # Safety
    /// `db` must be a valid connection to the index file that no other thread uses
    /// during the call.
    pub(super) unsafe fn move_generation(
        db: *mut ffi::sqlite3,
        plan: &mut Move,
        generation: &Generation,
    ) -> Result<i64, String> {
        if ffi::sqlite3_get_autocommit(db) == 0 {
            exec(db, "ROLLBACK")?;
        }
        exec(db, "BEGIN IMMEDIATE")?;
        let result = (|| loop {
            let slice = plan.next_slice(generation, MOVE_STEP);
            write_slice(db, &slice)?;
            if let Some((run, _, _)) = slice.completes {
                exec(db, "COMMIT")?;
                return Ok(run);
            }
        })();
        if result.is_err() && ffi::sqlite3_get_autocommit(db) == 0 {
            let _ = exec(db, "ROLLBACK");
        }
        result
    }

    /// Writes one slice of a move into the index tables (re-inserting what a crash
    /// interrupted is harmless) and, when it completes the generation, the new `upto`.
    unsafe fn write_slice(db: *mut ffi::sqlite3, slice: &Slice) -> Result<(), String> {
        if let Some(upto) = slice.clear_above {
            let clear = prepare(db, "delete from event_keys where run > ?1")?;
            if ffi::sqlite3_bind_int64(clear.0, 1, upto) != ffi::SQLITE_OK {
                return Err(error(db));
            }
            run(db, clear.0)?;
        }
        let ids = prepare(db, "insert or ignore into event_ids (id) values (?1)")?;
        for id in &slice.ids {
            let bytes = id.to_be_bytes();
            bind_id(db, ids.0, 1, &bytes)?;
            run(db, ids.0)?;
        }
        let keys = prepare(
            db,
            "insert or ignore into event_keys (run, environment, user_id, min_ts, max_ts, events) \
             values (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let k = keys.0;
        for user in &slice.keys {
            bind_text(db, k, 2, Some(&user.environment))?;
            bind_text(db, k, 3, Some(&user.user_id))?;
            bind_text(db, k, 6, Some(&user.events))?;
            if ffi::sqlite3_bind_int64(k, 1, slice.run) != ffi::SQLITE_OK
                || ffi::sqlite3_bind_int64(k, 4, user.min_ts) != ffi::SQLITE_OK
                || ffi::sqlite3_bind_int64(k, 5, user.max_ts) != ffi::SQLITE_OK
            {
                return Err(error(db));
            }
            run(db, k)?;
        }
        if let Some((upto, min_ts, max_ts)) = slice.completes {
            let register = prepare(
                db,
                "insert or replace into event_runs (run, min_ts, max_ts) values (?1, ?2, ?3)",
            )?;
            let update = prepare(db, "update event_index set upto = max(upto, ?1)")?;
            if ffi::sqlite3_bind_int64(register.0, 1, upto) != ffi::SQLITE_OK
                || ffi::sqlite3_bind_int64(register.0, 2, min_ts) != ffi::SQLITE_OK
                || ffi::sqlite3_bind_int64(register.0, 3, max_ts) != ffi::SQLITE_OK
                || ffi::sqlite3_bind_int64(update.0, 1, upto) != ffi::SQLITE_OK
            {
                return Err(error(db));
            }
            run(db, register.0)?;
            run(db, update.0)?;
        }
        Ok(())
    }

    /// Adds every id in `event_ids` to the tail's stored-id filter.
    ///
    /// # Safety
    /// `db` must be a valid connection that no other thread uses during the call.
    pub(super) unsafe fn scan_stored_ids(
        db: *mut ffi::sqlite3,
        tail: &mut EventTail,
    ) -> Result<(), String> {
        let stmt = prepare(db, "select id from event_ids")?;
        loop {
            match ffi::sqlite3_step(stmt.0) {
                ffi::SQLITE_ROW => {}
                ffi::SQLITE_DONE => return Ok(()),
                _ => return Err(error(db)),
            }
            let blob = ffi::sqlite3_column_blob(stmt.0, 0);
            if !blob.is_null() && ffi::sqlite3_column_bytes(stmt.0, 0) == 16 {
                let mut bytes = [0u8; 16];
                ptr::copy_nonoverlapping(blob.cast::<u8>(), bytes.as_mut_ptr(), 16);
                tail.stored(u128::from_be_bytes(bytes));
            }
        }
    }

    /// Reads some users' exposure rows of one feature, with their outcome aggregates.
    ///
    /// # Safety
    /// `db` must be a valid connection that no other thread uses during the call.
    pub(super) unsafe fn read_outcome_rows(
        db: *mut ffi::sqlite3,
        environment: &str,
        feature: &str,
        users: &[&str],
    ) -> Result<Vec<OutcomeRow>, String> {
        let stmt = prepare(
            db,
            "select enabled, t0, last_seen, exposure_count, crossovers, active_days, first_activation, \
             first_error, adopted, feedback_sum, feedback_count from exposures \
             where environment = ?1 and feature = ?2 and user_id = ?3",
        )?;
        let s = stmt.0;
        bind_text(db, s, 1, Some(environment))?;
        bind_text(db, s, 2, Some(feature))?;
        let mut rows = Vec::with_capacity(users.len());
        for user in users {
            bind_text(db, s, 3, Some(user))?;
            match ffi::sqlite3_step(s) {
                ffi::SQLITE_ROW => rows.push(OutcomeRow {
                    user_id: (*user).to_string(),
                    enabled: int(s, 0).unwrap_or(0) != 0,
                    t0: int(s, 1).unwrap_or(0),
                    last_seen: int(s, 2).unwrap_or(0),
                    exposure_count: int(s, 3).unwrap_or(0),
                    crossovers: int(s, 4).unwrap_or(0),
                    outcomes: UserOutcomes {
                        active_days: int(s, 5).unwrap_or(0) as u64,
                        first_activation: int(s, 6),
                        first_error: int(s, 7),
                        adopted: int(s, 8).unwrap_or(0) != 0,
                        feedback_sum: ffi::sqlite3_column_double(s, 9),
                        feedback_count: int(s, 10).unwrap_or(0),
                    },
                }),
                ffi::SQLITE_DONE => {}
                _ => {
                    let message = error(db);
                    ffi::sqlite3_reset(s);
                    return Err(message);
                }
            }
            ffi::sqlite3_reset(s);
        }
        Ok(rows)
    }

    /// Writes outcome aggregates onto existing exposure rows of one feature.
    ///
    /// # Safety
    /// `db` must be a valid connection that no other thread uses during the call.
    pub(super) unsafe fn write_outcomes(
        db: *mut ffi::sqlite3,
        environment: &str,
        feature: &str,
        rows: &[OutcomeRow],
    ) -> Result<(), String> {
        if rows.is_empty() {
            return Ok(());
        }
        let stmt = prepare(
            db,
            "update exposures set active_days = ?4, first_activation = ?5, first_error = ?6, adopted = ?7, \
             feedback_sum = ?8, feedback_count = ?9 where environment = ?1 and feature = ?2 and user_id = ?3",
        )?;
        let s = stmt.0;
        bind_text(db, s, 1, Some(environment))?;
        bind_text(db, s, 2, Some(feature))?;
        let opt = |index: c_int, value: Option<i64>| match value {
            Some(v) => ffi::sqlite3_bind_int64(s, index, v),
            None => ffi::sqlite3_bind_null(s, index),
        };
        for r in rows {
            bind_text(db, s, 3, Some(&r.user_id))?;
            let o = &r.outcomes;
            if ffi::sqlite3_bind_int64(s, 4, o.active_days as i64) != ffi::SQLITE_OK
                || opt(5, o.first_activation) != ffi::SQLITE_OK
                || opt(6, o.first_error) != ffi::SQLITE_OK
                || ffi::sqlite3_bind_int64(s, 7, i64::from(o.adopted)) != ffi::SQLITE_OK
                || ffi::sqlite3_bind_double(s, 8, o.feedback_sum) != ffi::SQLITE_OK
                || ffi::sqlite3_bind_int64(s, 9, o.feedback_count) != ffi::SQLITE_OK
            {
                return Err(error(db));
            }
            run(db, s)?;
        }
        Ok(())
    }

    /// Runs an [`outcome_sql`](super::super::sql::outcome_sql) statement. Its `$N`
    /// parameters are bound by number, as sqlx does: SQLite numbers named parameters
    /// in order of first appearance, not by the digits in their names.
    ///
    /// # Safety
    /// `db` must be a valid connection that no other thread uses during the call.
    pub(super) unsafe fn outcome_rows(
        db: *mut ffi::sqlite3,
        sql: &str,
        params: &[SqlParam<'_>],
    ) -> Result<Vec<OutcomeRow>, String> {
        let stmt = prepare(db, sql)?;
        let s = stmt.0;
        for index in 1..=ffi::sqlite3_bind_parameter_count(s) {
            let name = ffi::sqlite3_bind_parameter_name(s, index);
            let number = if name.is_null() {
                None
            } else {
                CStr::from_ptr(name)
                    .to_str()
                    .ok()
                    .and_then(|n| n.strip_prefix('$'))
                    .and_then(|n| n.parse::<usize>().ok())
            };
            let param = number
                .and_then(|n| n.checked_sub(1))
                .and_then(|n| params.get(n))
                .ok_or_else(|| format!("no value for parameter {index} of an outcome query"))?;
            let rc = match *param {
                SqlParam::Text(text) => {
                    bind_text(db, s, index, Some(text))?;
                    ffi::SQLITE_OK
                }
                SqlParam::Int(int) => ffi::sqlite3_bind_int64(s, index, int),
            };
            if rc != ffi::SQLITE_OK {
                return Err(error(db));
            }
        }
        let mut rows = Vec::new();
        loop {
            match ffi::sqlite3_step(s) {
                ffi::SQLITE_ROW => {
                    let user_id = text(s, 0);
                    let feedback_sum = (ffi::sqlite3_column_type(s, 9) != ffi::SQLITE_NULL)
                        .then(|| ffi::sqlite3_column_double(s, 9));
                    rows.push(OutcomeRow::from_sql((
                        user_id,
                        int(s, 1).unwrap_or(0) != 0,
                        int(s, 2).unwrap_or(0),
                        int(s, 3).unwrap_or(0),
                        int(s, 4).unwrap_or(0),
                        int(s, 5).unwrap_or(0),
                        int(s, 6),
                        int(s, 7),
                        int(s, 8),
                        feedback_sum,
                        int(s, 10).unwrap_or(0),
                        int(s, 11),
                    )));
                }
                ffi::SQLITE_DONE => return Ok(rows),
                _ => return Err(error(db)),
            }
        }
    }

    unsafe fn int(stmt: *mut ffi::sqlite3_stmt, column: c_int) -> Option<i64> {
        (ffi::sqlite3_column_type(stmt, column) != ffi::SQLITE_NULL)
            .then(|| ffi::sqlite3_column_int64(stmt, column))
    }

    /// Reads [`OUTCOME_COLUMNS`] of one feature's exposure rows.
    ///
    /// # Safety
    /// `db` must be a valid connection that no other thread uses during the call.
    pub(super) unsafe fn read_outcomes(
        db: *mut ffi::sqlite3,
        environment: &str,
        feature: &str,
    ) -> Result<Vec<CohortRow>, String> {
        let sql = format!(
            "select {OUTCOME_COLUMNS} from exposures where environment = ?1 and feature = ?2"
        );
        let stmt = prepare(db, &sql)?;
        bind_text(db, stmt.0, 1, Some(environment))?;
        bind_text(db, stmt.0, 2, Some(feature))?;
        let mut rows = Vec::new();
        loop {
            match ffi::sqlite3_step(stmt.0) {
                ffi::SQLITE_ROW => {}
                ffi::SQLITE_DONE => break,
                _ => return Err(error(db)),
            }
            let s = stmt.0;
            let user_id = text(s, 0);
            let outcomes = UserOutcomes {
                active_days: int(s, 4).unwrap_or(0) as u64,
                first_activation: int(s, 5),
                first_error: int(s, 6),
                adopted: int(s, 7).unwrap_or(0) != 0,
                feedback_sum: ffi::sqlite3_column_double(s, 8),
                feedback_count: int(s, 9).unwrap_or(0),
            };
            rows.push(CohortRow::new(
                user_id,
                int(s, 1).unwrap_or(0) != 0,
                int(s, 2).unwrap_or(0),
                int(s, 3).unwrap_or(0),
                &outcomes,
            ));
        }
        Ok(rows)
    }
}

impl_store!(SqliteStore, Sqlite, Backend::Sqlite);

#[cfg(test)]
mod tests {
    use sqlx::Connection as _;

    use super::SqliteStore;
    use crate::store::{NewEvent, Store as _};

    fn activity(n: u32, user: &str) -> NewEvent {
        NewEvent {
            id: format!("00000000-0000-7000-8000-{n:012x}"),
            environment: "development".into(),
            kind: "activity",
            user_id: user.into(),
            feature: None,
            name: Some("page_view".into()),
            enabled: None,
            variant: None,
            score: None,
            session_id: None,
            properties: None,
            ts: 1_000 + i64::from(n),
            received_at: 2_000,
        }
    }

    /// (upto, ids, user rows) of the index file.
    async fn index_of(store: &SqliteStore) -> (i64, i64, i64) {
        sqlx::query_as(
            "select (select upto from event_index), (select count(*) from event_ids), \
             (select count(*) from event_keys)",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap()
    }

    /// Waits until the mover has moved past `before` (the index's `upto`).
    async fn wait_for_move(store: &SqliteStore, before: i64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while index_of(store).await.0 == before {
            assert!(
                std::time::Instant::now() < deadline,
                "the mover never moved"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The mover moves frozen generations into the index file on its own thread; the
    /// file is derived data, built again from `events` when it is missing or answers
    /// for more events than the database ever stored.
    #[tokio::test]
    async fn the_index_file_is_moved_into_and_rebuilt_when_missing_or_stale() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("f.db").display());
        let events: Vec<NewEvent> = (1..=5)
            .map(|n| activity(n, if n % 2 == 0 { "a" } else { "b" }))
            .collect();
        let store = SqliteStore::connect(&url, 2, 2).await.unwrap();
        assert_eq!(store.ingest(&events, &[]).await.unwrap(), vec![true; 5]);
        wait_for_move(&store, 0).await;
        assert_eq!(index_of(&store).await, (5, 5, 2));
        drop(store);

        let index = dir.path().join("f.db-index");
        for suffix in ["", "-wal", "-shm"] {
            let mut path = index.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
        let store = SqliteStore::connect(&url, 2, 1_000).await.unwrap();
        assert_eq!(index_of(&store).await, (5, 5, 2), "rebuilt when missing");
        assert_eq!(store.ingest(&events, &[]).await.unwrap(), vec![false; 5]);
        drop(store);

        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", index.display()))
            .await
            .unwrap();
        sqlx::query("update event_index set upto = 99")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let store = SqliteStore::connect(&url, 2, 1_000).await.unwrap();
        assert_eq!(index_of(&store).await, (5, 5, 2), "rebuilt when stale");
    }

    /// Each move starts the index WAL over once the readers of the last one are done,
    /// so the WAL holds about one move, however many moves ran while readers
    /// overlapped. A reader that holds a snapshot through a move keeps the WAL from
    /// restarting, and SQLite alone checkpoints only past 1000 pages; without the
    /// mover's restart, the WAL here would hold every move.
    #[tokio::test]
    async fn the_index_wal_starts_over_after_each_move_once_readers_are_done() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("f.db").display());
        let index_url = format!("sqlite://{}", dir.path().join("f.db-index").display());
        let store = SqliteStore::connect(&url, 2, 300).await.unwrap();
        let mut next = 0;
        let mut generation = |store: &SqliteStore| {
            let events: Vec<NewEvent> = (next..next + 400)
                .map(|n| activity(n, &format!("user-{}", n % 97)))
                .collect();
            next += 400;
            let (store, events) = (store.clone(), events);
            async move {
                let before = index_of(&store).await.0;
                store.ingest(&events, &[]).await.unwrap();
                wait_for_move(&store, before).await;
            }
        };
        let mut probe = sqlx::SqliteConnection::connect(&index_url).await.unwrap();
        let wal_frames = async |probe: &mut sqlx::SqliteConnection| loop {
            // Passive: counts the WAL's frames (the second column), restarts nothing.
            // Busy while the mover checkpoints.
            let (busy, frames, _): (i64, i64, i64) =
                sqlx::query_as("pragma wal_checkpoint(PASSIVE)")
                    .fetch_one(&mut *probe)
                    .await
                    .unwrap();
            if busy == 0 {
                return frames;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };

        generation(&store).await;
        let one_move = wal_frames(&mut probe).await;
        let mut reader = sqlx::SqliteConnection::connect(&index_url).await.unwrap();
        sqlx::query("begin").execute(&mut reader).await.unwrap();
        sqlx::query("select count(*) from event_ids")
            .execute(&mut reader)
            .await
            .unwrap();
        generation(&store).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        sqlx::query("commit").execute(&mut reader).await.unwrap();
        for _ in 0..3 {
            generation(&store).await;
            let frames = wal_frames(&mut probe).await;
            assert!(
                frames * 2 < one_move * 3,
                "{frames} WAL frames after a move; {one_move} after the first"
            );
        }
    }

    /// Migrations 0009 and 0011 on a database that already holds events: every event
    /// keeps its columns, gets a seq, and is in the dedup and per-user index tables as
    /// one run, one row per user.
    #[tokio::test]
    async fn the_event_index_migration_indexes_stored_events() {
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite/");
        let read = |name: &str| std::fs::read_to_string(format!("{dir}{name}")).unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(read("0005_events.sql")))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::raw_sql(
            "insert into events values \
             ('00000000-0000-4000-8000-00000000000a', 'development', 'activity', 'u1', null, 'x', null, null, null, null, null, 100, 200), \
             ('00000000-0000-4000-8000-00000000000b', 'development', 'error', 'u2', null, null, null, null, null, 's', '{}', 50, 300), \
             ('00000000-0000-4000-8000-00000000000c', 'development', 'activity', 'u1', null, 'y', null, null, null, null, null, 30, 400)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        for migration in ["0009_event_tail.sql", "0011_packed_event_keys.sql"] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(read(migration)))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let events: Vec<(i64, String, String, Option<String>, i64)> =
            sqlx::query_as("select seq, id, user_id, session_id, ts from events order by seq")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[1].3.as_deref(), Some("s"));
        let ids: Vec<(Vec<u8>,)> = sqlx::query_as("select id from event_ids order by id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(ids.len(), 3);
        let a = super::id_bits("00000000-0000-4000-8000-00000000000a").unwrap();
        assert_eq!(ids[0].0, a.to_be_bytes().to_vec());
        let keys: Vec<(i64, String, i64, i64, i64)> = sqlx::query_as(
            "select run, user_id, min_ts, max_ts, j.value from event_keys, json_each(events) j \
             order by user_id, j.value",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            keys,
            [
                (3, "u1".into(), 30, 100, 1),
                (3, "u1".into(), 30, 100, 3),
                (3, "u2".into(), 50, 50, 2)
            ]
        );
        let runs: Vec<(i64, i64, i64)> =
            sqlx::query_as("select run, min_ts, max_ts from event_runs")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        assert_eq!(runs, [(3, 30, 100)]);
        let (upto,): (i64,) = sqlx::query_as("select upto from event_index")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(upto, 3);
    }
}
