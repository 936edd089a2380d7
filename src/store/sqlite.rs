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

impl_store!(SqliteStore, Sqlite, Backend::Sqlite);
