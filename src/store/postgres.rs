//! PostgreSQL backend: for several stateless replicas sharing one database.

use sqlx::postgres::PgPoolOptions;
use sqlx::{Pool, Postgres};

use super::sql::*;
use super::*;
use crate::domain::admin::FeatureEnvironment;
use crate::domain::model::{ClientFeature, Segment};

/// A store on a PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool<Postgres>,
}

impl PgStore {
    /// Connects to `url` and migrates the database.
    pub async fn connect(url: &str, pool_size: u32) -> anyhow::Result<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .connect(url)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
    }
}

impl_store!(PgStore, Postgres, Backend::Postgres);
