//! The event writer: one task that group-commits concurrent batches.
//!
//! Handlers validate a batch and `submit` it; the writer takes whatever has queued
//! up (up to `MAX_GROUP_EVENTS`) and stores it in one transaction, then answers each
//! submitter with which of its events were new. A 202 is only sent after that commit,
//! so an acknowledged event is durable. Memory is bounded by a semaphore counted in
//! events: when it is exhausted, `submit` fails fast with `Busy` (the API answers 503
//! with Retry-After) instead of queueing more. `shutdown` drains what was accepted.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::store::{NewEvent, NewQuarantine, Store};

/// Most events one transaction takes: large enough to amortise the commit, small
/// enough to keep latency and lock time bounded.
const MAX_GROUP_EVENTS: usize = 20_000;

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the ingest queue is full")]
    Busy,
    #[error("the server is shutting down")]
    Closed,
    #[error("storing events failed: {0}")]
    Store(String),
}

/// For each submitted event, in order: `true` if newly stored, `false` if its id
/// was already stored (a duplicate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stored: Vec<bool>,
}

struct Job {
    events: Vec<NewEvent>,
    quarantine: Vec<NewQuarantine>,
    _permits: OwnedSemaphorePermit,
    reply: oneshot::Sender<Result<Outcome, SubmitError>>,
}

enum Message {
    Job(Job),
    Shutdown(oneshot::Sender<()>),
}

/// Handle to the writer task.
pub struct Ingest {
    tx: mpsc::UnboundedSender<Message>,
    permits: Arc<Semaphore>,
    capacity: usize,
    writers: usize,
    closed: AtomicBool,
}

impl Ingest {
    /// Starts the writers; `queue_events` bounds the events waiting to be written.
    /// SQLite has one writer (it serialises writes anyway); PostgreSQL commits groups
    /// in parallel, which keeps its round trips from capping throughput.
    pub fn start(store: Arc<dyn Store>, queue_events: usize) -> Arc<Ingest> {
        let (tx, rx) = mpsc::unbounded_channel();
        let capacity = queue_events.max(1);
        let writers = match store.backend() {
            crate::store::Backend::Sqlite => 1,
            crate::store::Backend::Postgres => 3,
        };
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..writers {
            tokio::spawn(run_writer(store.clone(), rx.clone()));
        }
        Arc::new(Ingest {
            tx,
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            writers,
            closed: AtomicBool::new(false),
        })
    }

    /// Events (and quarantine records) currently queued or being written.
    pub fn queued(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    /// Takes queue capacity without submitting anything (to shed load deliberately,
    /// e.g. during maintenance); released when the permit is dropped.
    pub fn try_reserve(&self, events: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(events).ok()?;
        self.permits.clone().try_acquire_many_owned(n).ok()
    }

    /// Queues a batch and waits until it is committed.
    pub async fn submit(
        &self,
        events: Vec<NewEvent>,
        quarantine: Vec<NewQuarantine>,
    ) -> Result<Outcome, SubmitError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SubmitError::Closed);
        }
        let weight = (events.len() + quarantine.len()).max(1);
        let weight = u32::try_from(weight.min(self.capacity)).map_err(|_| SubmitError::Busy)?;
        let permits = self
            .permits
            .clone()
            .try_acquire_many_owned(weight)
            .map_err(|_| SubmitError::Busy)?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Message::Job(Job {
                events,
                quarantine,
                _permits: permits,
                reply,
            }))
            .map_err(|_| SubmitError::Closed)?;
        answer.await.map_err(|_| SubmitError::Closed)?
    }

    /// Refuses new batches and waits until everything accepted so far is written.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        // Every writer must see a Shutdown; each stops at its own, after the jobs
        // queued before it. Waiting for all permits proves nothing is left in flight.
        let mut waits = Vec::new();
        for _ in 0..self.writers {
            let (done, wait) = oneshot::channel();
            if self.tx.send(Message::Shutdown(done)).is_ok() {
                waits.push(wait);
            }
        }
        for wait in waits {
            let _ = wait.await;
        }
        let all = u32::try_from(self.capacity).unwrap_or(u32::MAX);
        let _ = self.permits.acquire_many(all).await;
    }
}

type Receiver = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Message>>>;

async fn run_writer(store: Arc<dyn Store>, rx: Receiver) {
    loop {
        // Take a group while holding the queue, then write it without holding it, so
        // other writers can gather the next group meanwhile.
        let (group, shutdown) = {
            let mut rx = rx.lock().await;
            let Some(message) = rx.recv().await else {
                return;
            };
            let first = match message {
                Message::Job(job) => job,
                Message::Shutdown(done) => {
                    let _ = done.send(());
                    return;
                }
            };
            let mut group = vec![first];
            let mut size = group[0].events.len();
            let mut shutdown = None;
            while size < MAX_GROUP_EVENTS {
                match rx.try_recv() {
                    Ok(Message::Job(job)) => {
                        size += job.events.len();
                        group.push(job);
                    }
                    Ok(Message::Shutdown(done)) => {
                        shutdown = Some(done);
                        break;
                    }
                    Err(_) => break,
                }
            }
            (group, shutdown)
        };
        write_group(store.as_ref(), group).await;
        if let Some(done) = shutdown {
            let _ = done.send(());
            return;
        }
    }
}

/// Writes a group in one transaction and answers every job in it.
async fn write_group(store: &dyn Store, mut group: Vec<Job>) {
    // An id repeated within the group is stored once: its later copies are duplicates.
    let first_copy: Vec<Vec<bool>> = {
        let size = group.iter().map(|job| job.events.len()).sum();
        let mut seen: HashSet<&str, foldhash::fast::RandomState> =
            HashSet::with_capacity_and_hasher(size, Default::default());
        group
            .iter()
            .map(|job| {
                job.events
                    .iter()
                    .map(|e| seen.insert(e.id.as_str()))
                    .collect()
            })
            .collect()
    };
    let mut events = Vec::new();
    let mut quarantine = Vec::new();
    for (job, flags) in group.iter_mut().zip(&first_copy) {
        let taken = std::mem::take(&mut job.events).into_iter().zip(flags);
        events.extend(taken.filter(|(_, first)| **first).map(|(e, _)| e));
        quarantine.append(&mut job.quarantine);
    }
    let result = store.ingest(&events, &quarantine).await;
    match result {
        Ok(new) => {
            // `new` follows `events`: one flag per first copy, in job order.
            let mut new = new.into_iter();
            for (job, flags) in group.into_iter().zip(first_copy) {
                let stored = flags
                    .into_iter()
                    .map(|first| first && new.next().unwrap_or(false))
                    .collect();
                let _ = job.reply.send(Ok(Outcome { stored }));
            }
        }
        Err(e) => {
            tracing::error!(error.cause_chain = ?e, events = events.len(), "writing an event group failed");
            let message = e.to_string();
            for job in group {
                let _ = job.reply.send(Err(SubmitError::Store(message.clone())));
            }
        }
    }
    // Freeing a large group's strings (several per event) is measurable work on the
    // writer's serial path; a blocking-pool thread does it instead.
    if events.len() >= OFFLOAD_DROP_EVENTS {
        tokio::task::spawn_blocking(move || drop(events));
    }
}

/// Groups at least this large are freed off the writer task.
const OFFLOAD_DROP_EVENTS: usize = 512;
