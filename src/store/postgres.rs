//! PostgreSQL backend: for several stateless replicas sharing one database.

use sqlx::postgres::PgPoolOptions;
use sqlx::{Pool, Postgres};

use super::sql::*;
use super::*;
use super::{CohortRow, FuseChange, FuseRecord, FuseSnapshot};
use crate::domain::admin::FeatureEnvironment;
use crate::domain::model::{ClientFeature, Segment};

/// A store on a PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool<Postgres>,
    url: String,
    /// The session holding the scheduler's advisory lock while this replica leads.
    leader: std::sync::Arc<tokio::sync::Mutex<Option<sqlx::PgConnection>>>,
}

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
        })
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

impl_store!(PgStore, Postgres, Backend::Postgres);
