//! The read side of the flag store for SDKs: an in-memory snapshot per environment,
//! and pre-serialised, ETagged response bodies per (environment, scope, query), so
//! that polling never touches the database.
//!
//! Freshness: the store's revision (max audit id) is re-read after every local admin
//! write and polled periodically (for changes made by other replicas); when it moves,
//! every snapshot and body is dropped and rebuilt on the next request.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::domain::delta::{ClientFeaturesDelta, DeltaEvent};
use crate::domain::eval::Engine;
use crate::domain::model::{ClientFeature, ClientFeatures, Segment};
use crate::store::{Store, StoreResult, Tag};

/// One environment's features as SDKs see them (disabled strategies dropped).
pub struct EnvSnapshot {
    pub revision: i64,
    pub environment: String,
    pub features: Vec<ClientFeature>,
    pub segments: Vec<Segment>,
    /// Tags by feature name, for the `tag` filter (tags are not sent to SDKs).
    pub tags: HashMap<String, Vec<Tag>>,
    /// The compiled flags, for server-side evaluation (frontend API, OFREP).
    pub engine: Engine,
    /// Each feature's project, for scoping server-side evaluations.
    pub projects: HashMap<String, String>,
}

/// A cached response body with its strong ETag.
pub struct CachedBody {
    pub body: Bytes,
    pub etag: String,
}

/// A state a delta client may hold, remembered by its ETag.
pub struct DeltaState {
    features: Vec<ClientFeature>,
    segments: Vec<Segment>,
}

/// The answer to a delta poll.
pub enum DeltaAnswer {
    /// The client is up to date.
    NotModified(String),
    /// Events to apply, and the new ETag.
    Events(ClientFeaturesDelta, String),
}

/// What an SDK asked for: it fully determines the body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FeaturesQuery {
    pub environment: String,
    /// `None` = every project.
    pub projects: Option<BTreeSet<String>>,
    pub name_prefix: Option<String>,
    /// Features having any of these tags; `None` = no tag filter.
    pub tags: Option<BTreeSet<Tag>>,
    pub inline_segments: bool,
}

/// Snapshots and bodies, invalidated together when the revision moves.
pub struct SnapshotCache {
    store: Arc<dyn Store>,
    revision: AtomicI64,
    envs: Mutex<HashMap<String, Arc<EnvSnapshot>>>,
    bodies: moka::sync::Cache<FeaturesQuery, Arc<CachedBody>>,
    /// Recently served delta states by ETag, so a poll can get just the changes.
    delta_states: moka::sync::Cache<String, Arc<DeltaState>>,
    /// Serialises rebuilds so a burst of polls after a change builds once.
    build_lock: tokio::sync::Mutex<()>,
}

impl SnapshotCache {
    pub async fn new(store: Arc<dyn Store>) -> StoreResult<Arc<SnapshotCache>> {
        let revision = store.revision().await?;
        Ok(Arc::new(SnapshotCache {
            store,
            revision: AtomicI64::new(revision),
            envs: Mutex::new(HashMap::new()),
            bodies: moka::sync::Cache::builder().max_capacity(10_000).build(),
            delta_states: moka::sync::Cache::builder()
                .max_capacity(1_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            build_lock: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Re-reads the revision; drops everything cached if it moved.
    pub async fn refresh(&self) -> StoreResult<bool> {
        let current = self.store.revision().await?;
        let previous = self.revision.swap(current, Ordering::AcqRel);
        if previous != current {
            if let Ok(mut envs) = self.envs.lock() {
                envs.clear();
            }
            self.bodies.invalidate_all();
            return Ok(true);
        }
        Ok(false)
    }

    /// Polls the revision forever (changes from other replicas).
    pub async fn run_poller(self: Arc<Self>, every: Duration) {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "polling the flag revision failed");
            }
        }
    }

    /// The environment's snapshot, built from the store on a miss.
    pub async fn env(&self, environment: &str) -> StoreResult<Arc<EnvSnapshot>> {
        if let Some(s) = self.cached_env(environment) {
            return Ok(s);
        }
        let _guard = self.build_lock.lock().await;
        if let Some(s) = self.cached_env(environment) {
            return Ok(s);
        }
        let revision = self.revision();
        let ClientFeatures {
            features, segments, ..
        } = self.store.client_features(environment).await?;
        let mut tags: HashMap<String, Vec<Tag>> = HashMap::new();
        for (feature, tag) in self.store.all_tags().await? {
            tags.entry(feature).or_default().push(tag);
        }
        let features: Vec<ClientFeature> = features
            .into_iter()
            .map(|mut f| {
                f.strategies.retain(|s| s.disabled != Some(true));
                for s in &mut f.strategies {
                    s.disabled = None;
                }
                f
            })
            .collect();
        let segments = segments.unwrap_or_default();
        let document = ClientFeatures {
            version: 2,
            features,
            segments: Some(segments),
        };
        let engine = Engine::new(&document);
        let ClientFeatures {
            features, segments, ..
        } = document;
        let projects = features
            .iter()
            .map(|f| (f.name.clone(), f.project.clone().unwrap_or_default()))
            .collect();
        let snapshot = Arc::new(EnvSnapshot {
            revision,
            environment: environment.to_string(),
            features,
            segments: segments.unwrap_or_default(),
            tags,
            engine,
            projects,
        });
        // Only keep it if no change happened while building.
        if self.revision() == revision {
            if let Ok(mut envs) = self.envs.lock() {
                envs.insert(environment.to_string(), snapshot.clone());
            }
        }
        Ok(snapshot)
    }

    fn cached_env(&self, environment: &str) -> Option<Arc<EnvSnapshot>> {
        let envs = self.envs.lock().ok()?;
        envs.get(environment)
            .filter(|s| s.revision == self.revision())
            .cloned()
    }

    /// The serialised `/api/client/features` body for a query.
    pub async fn client_features(&self, query: &FeaturesQuery) -> StoreResult<Arc<CachedBody>> {
        if let Some(body) = self.bodies.get(query) {
            if let Some(m) = crate::metrics::metrics() {
                m.client_cache.with_label_values(&["hit"]).inc();
            }
            return Ok(body);
        }
        if let Some(m) = crate::metrics::metrics() {
            m.client_cache.with_label_values(&["miss"]).inc();
        }
        let snapshot = self.env(&query.environment).await?;
        let body = Arc::new(render_client_features(&snapshot, query)?);
        if snapshot.revision == self.revision() {
            self.bodies.insert(query.clone(), body.clone());
        }
        Ok(body)
    }

    /// `/api/client/delta`: nothing (304) when the client's ETag is current, the
    /// changes since its ETag when that state is still remembered, else a full
    /// hydration. Segments are always by reference (delta SDKs support them).
    pub async fn client_delta(
        &self,
        query: &FeaturesQuery,
        client_etag: Option<&str>,
    ) -> StoreResult<DeltaAnswer> {
        let snapshot = self.env(&query.environment).await?;
        let selection = select(&snapshot, query)?;
        if client_etag == Some(selection.etag.as_str()) {
            return Ok(DeltaAnswer::NotModified(selection.etag));
        }
        let event_id = u64::try_from(snapshot.revision).unwrap_or(0);
        let state = Arc::new(DeltaState {
            features: selection.features,
            segments: selection.segments.unwrap_or_default(),
        });
        let previous = client_etag.and_then(|etag| self.delta_states.get(etag));
        let events = match previous {
            Some(old) => diff(&old, &state, event_id),
            None => vec![DeltaEvent::Hydration {
                event_id,
                features: state.features.clone(),
                segments: state.segments.clone(),
            }],
        };
        self.delta_states.insert(selection.etag.clone(), state);
        Ok(DeltaAnswer::Events(
            ClientFeaturesDelta { events },
            selection.etag,
        ))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClientFeaturesBody<'a> {
    version: u32,
    features: Vec<ClientFeature>,
    #[serde(skip_serializing_if = "Option::is_none")]
    segments: Option<Vec<&'a Segment>>,
    query: QueryEcho<'a>,
    meta: Meta,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueryEcho<'a> {
    environment: &'a str,
    inline_segment_constraints: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    project: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_prefix: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<Vec<[&'a str; 2]>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    revision_id: i64,
    etag: String,
    query_hash: String,
}

/// What one query selects from a snapshot.
struct Selection {
    features: Vec<ClientFeature>,
    /// `None` when segments are inlined into constraints.
    segments: Option<Vec<Segment>>,
    etag: String,
    query_hash: String,
}

/// Filters the snapshot Unleash-style: top-level segments for SDKs that support
/// them (client spec >= 4.2.0), inlined constraints otherwise.
fn select(snapshot: &EnvSnapshot, query: &FeaturesQuery) -> StoreResult<Selection> {
    let mut features: Vec<ClientFeature> = snapshot
        .features
        .iter()
        .filter(|f| match &query.projects {
            None => true,
            Some(set) => f.project.as_ref().is_some_and(|p| set.contains(p)),
        })
        .filter(|f| {
            query
                .name_prefix
                .as_ref()
                .is_none_or(|prefix| f.name.starts_with(prefix.as_str()))
        })
        .filter(|f| match &query.tags {
            None => true,
            Some(wanted) => snapshot
                .tags
                .get(&f.name)
                .is_some_and(|have| have.iter().any(|t| wanted.contains(t))),
        })
        .cloned()
        .collect();
    let segments_by_id: HashMap<i64, &Segment> =
        snapshot.segments.iter().map(|s| (s.id, s)).collect();
    let mut used = BTreeSet::new();
    for f in &mut features {
        for s in &mut f.strategies {
            let ids = s.segments.clone().unwrap_or_default();
            if query.inline_segments {
                for id in &ids {
                    if let Some(seg) = segments_by_id.get(id) {
                        s.constraints.extend(seg.constraints.iter().cloned());
                    }
                }
                s.segments = None;
            } else {
                used.extend(ids);
            }
        }
    }
    let segments = (!query.inline_segments).then(|| {
        used.iter()
            .filter_map(|id| segments_by_id.get(id).map(|s| (*s).clone()))
            .collect::<Vec<_>>()
    });

    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    query.hash(&mut hasher);
    let query_hash = format!("{:08x}", hasher.finish() as u32);
    // The ETag hashes the content (not just the revision), so it changes exactly
    // when what this client sees changes.
    let content = serde_json::to_vec(&(&features, &segments))
        .map_err(|e| crate::store::StoreError::Other(e.into()))?;
    let mut content_hasher = std::collections::hash_map::DefaultHasher::new();
    content.hash(&mut content_hasher);
    let etag = format!("\"{query_hash}:{:016x}:v1\"", content_hasher.finish());
    Ok(Selection {
        features,
        segments,
        etag,
        query_hash,
    })
}

fn render_client_features(
    snapshot: &EnvSnapshot,
    query: &FeaturesQuery,
) -> StoreResult<CachedBody> {
    let Selection {
        features,
        segments,
        etag,
        query_hash,
    } = select(snapshot, query)?;
    let projects: Option<Vec<&str>> = query
        .projects
        .as_ref()
        .map(|set| set.iter().map(String::as_str).collect());
    let body = ClientFeaturesBody {
        version: 2,
        features,
        segments: segments.as_ref().map(|s| s.iter().collect()),
        query: QueryEcho {
            environment: &snapshot.environment,
            inline_segment_constraints: query.inline_segments,
            project: projects,
            name_prefix: query.name_prefix.as_deref(),
            tag: query.tags.as_ref().map(|tags| {
                tags.iter()
                    .map(|t| [t.tag_type.as_str(), t.value.as_str()])
                    .collect()
            }),
        },
        meta: Meta {
            revision_id: snapshot.revision,
            etag: etag.clone(),
            query_hash,
        },
    };
    let body = serde_json::to_vec(&body).map_err(|e| crate::store::StoreError::Other(e.into()))?;
    Ok(CachedBody {
        body: Bytes::from(body),
        etag,
    })
}

/// The events that take a client from `old` to `new` (features, then segments).
fn diff(old: &DeltaState, new: &DeltaState, event_id: u64) -> Vec<DeltaEvent> {
    let mut events = Vec::new();
    let old_features: HashMap<&str, &ClientFeature> =
        old.features.iter().map(|f| (f.name.as_str(), f)).collect();
    let new_names: BTreeSet<&str> = new.features.iter().map(|f| f.name.as_str()).collect();
    for f in &new.features {
        if old_features.get(f.name.as_str()) != Some(&f) {
            events.push(DeltaEvent::FeatureUpdated {
                event_id,
                feature: f.clone(),
            });
        }
    }
    for f in &old.features {
        if !new_names.contains(f.name.as_str()) {
            events.push(DeltaEvent::FeatureRemoved {
                event_id,
                feature_name: f.name.clone(),
                project: f.project.clone().unwrap_or_default(),
            });
        }
    }
    let old_segments: HashMap<i64, &Segment> = old.segments.iter().map(|s| (s.id, s)).collect();
    let new_ids: BTreeSet<i64> = new.segments.iter().map(|s| s.id).collect();
    for seg in &new.segments {
        if old_segments.get(&seg.id) != Some(&seg) {
            events.push(DeltaEvent::SegmentUpdated {
                event_id,
                segment: seg.clone(),
            });
        }
    }
    for seg in &old.segments {
        if !new_ids.contains(&seg.id) {
            events.push(DeltaEvent::SegmentRemoved {
                event_id,
                segment_id: seg.id,
            });
        }
    }
    events
}
