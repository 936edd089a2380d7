//! In-memory index of API tokens by secret hash, so authenticating a poll never
//! touches the database. Reloaded on every local token change; a miss reloads at most
//! once a second, so a token created on another replica works within a second while
//! a flood of bad tokens cannot hammer the database.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::domain::admin::StoredToken;
use crate::domain::tokens::hash_secret;
use crate::store::{Store, StoreResult};

/// Tokens by hash, with the time of the last reload.
pub struct TokenRegistry {
    store: Arc<dyn Store>,
    inner: RwLock<(HashMap<String, Arc<StoredToken>>, Instant)>,
    /// Set when a miss wants a reload; the reload runs off the request path.
    reload_wanted: tokio::sync::Notify,
}

const MISS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

impl TokenRegistry {
    pub async fn load(store: Arc<dyn Store>) -> StoreResult<Arc<TokenRegistry>> {
        let registry = Arc::new(TokenRegistry {
            store,
            inner: RwLock::new((HashMap::new(), Instant::now())),
            reload_wanted: tokio::sync::Notify::new(),
        });
        registry.reload().await?;
        Ok(registry)
    }

    /// Re-reads every token from the store.
    pub async fn reload(&self) -> StoreResult<()> {
        let tokens = self.store.list_tokens().await?;
        let map = tokens
            .into_iter()
            .map(|t| (t.secret_hash.clone(), Arc::new(t)))
            .collect();
        if let Ok(mut guard) = self.inner.write() {
            *guard = (map, Instant::now());
        }
        Ok(())
    }

    /// The token whose secret is `raw`, if any. A miss asks the background task to
    /// reload (rate-limited), so the next request sees tokens made elsewhere.
    pub fn lookup(&self, raw: &str) -> Option<Arc<StoredToken>> {
        let hash = hash_secret(raw);
        let guard = self.inner.read().ok()?;
        let found = guard.0.get(&hash).cloned();
        if found.is_none() && guard.1.elapsed() > MISS_RELOAD_INTERVAL {
            self.reload_wanted.notify_one();
        }
        found
    }

    /// Serves reload requests from misses until the process ends.
    pub async fn run_reloader(self: Arc<Self>) {
        loop {
            self.reload_wanted.notified().await;
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "reloading API tokens failed");
            }
            tokio::time::sleep(MISS_RELOAD_INTERVAL).await;
        }
    }
}
