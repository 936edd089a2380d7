//! SQLite backend: the zero-dependency default. The file (and its folder) is created
//! on first start; WAL mode lets readers proceed while the single writer commits.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite};

use super::sql::*;
use super::*;
use super::{CohortRow, FuseChange, FuseRecord, FuseSnapshot};
use crate::domain::admin::FeatureEnvironment;
use crate::domain::model::{ClientFeature, Segment};

/// A store on one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: Pool<Sqlite>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` and migrates it.
    pub async fn connect(url: &str, pool_size: u32) -> anyhow::Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode is durable against process crashes (SIGKILL); only
            // an OS crash can lose the last transactions.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // The default 2 MB page cache made event ingestion read b-tree pages through
            // the kernel on every insert; 64 MB per connection plus mmap keeps the hot
            // index pages in memory.
            .pragma("cache_size", "-65536")
            .pragma("mmap_size", "268435456")
            .pragma("temp_store", "memory")
            .busy_timeout(Duration::from_secs(10));
        if let Some(parent) = options.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(pool_size.max(1))
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }
}

impl SqliteStore {
    /// One process owns a SQLite file, so it always leads.
    async fn try_lead_impl(&self) -> StoreResult<bool> {
        Ok(true)
    }
}

impl SqliteStore {
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
        let mut handle = conn.lock_handle().await?;
        let db = handle.as_raw_handle();
        #[allow(unsafe_code)]
        let read = || {
            // SAFETY: the handle is locked away from sqlx's worker for as long as
            // `handle` lives, which outlives this call; `raw::read_outcomes` finalizes
            // its statement on every path.
            unsafe { raw::read_outcomes(db.as_ptr(), environment, feature) }
        };
        // The read blocks for a few hundred milliseconds at a million users: off the
        // async workers where the runtime allows it.
        let rows = match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(read),
            _ => read(),
        };
        rows.map_err(|e| StoreError::Other(anyhow::anyhow!("reading outcome aggregates: {e}")))
    }
}

/// The C API side of [`SqliteStore::read_outcomes_impl`]: the crate's only unsafe code.
#[allow(unsafe_code)]
mod raw {
    use std::ffi::{c_int, CStr};
    use std::ptr;

    use libsqlite3_sys as ffi;

    use super::super::sql::OUTCOME_COLUMNS;
    use super::CohortRow;
    use crate::domain::fuse::outcomes::UserOutcomes;

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
        let stmt = Statement(stmt);
        for (i, value) in [(1, environment), (2, feature)] {
            let rc = ffi::sqlite3_bind_text(
                stmt.0,
                i,
                value.as_ptr().cast(),
                c_int::try_from(value.len()).map_err(|e| e.to_string())?,
                ffi::SQLITE_TRANSIENT(),
            );
            if rc != ffi::SQLITE_OK {
                return Err(error(db));
            }
        }
        let mut rows = Vec::new();
        loop {
            match ffi::sqlite3_step(stmt.0) {
                ffi::SQLITE_ROW => {}
                ffi::SQLITE_DONE => break,
                _ => return Err(error(db)),
            }
            let s = stmt.0;
            let text = ffi::sqlite3_column_text(s, 0);
            let len = usize::try_from(ffi::sqlite3_column_bytes(s, 0)).unwrap_or(0);
            let user_id = if text.is_null() {
                String::new()
            } else {
                String::from_utf8_lossy(std::slice::from_raw_parts(text, len)).into_owned()
            };
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
