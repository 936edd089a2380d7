//! SQLite's deferred event indexes. Ingest must answer two questions per event: was
//! its id stored before (dedup), and, when an exposure arrives after the user's
//! activity, which events does that user have (late-exposure recompute). Answered by
//! b-tree indexes updated per event, each commit dirtied about one 4 KB page per event
//! per index, because keys (random ids, users) land all over indexes much larger than
//! a commit: that, not CPU, capped SQLite ingest near 40k events/s.
//!
//! So on SQLite the `events` table has no secondary index. Events are appended in
//! arrival order (`seq`), and the newest ones, the *tail* (`seq > upto`), are held
//! here in memory: their ids and, per user, what outcomes need. When the tail grows
//! past `FUSEBOX_SQLITE_EVENT_TAIL` events, it is frozen and moved, sorted, into the
//! `event_ids` and `event_keys` tables; sorted inserts touch each index page once per
//! slice instead of once per event. `event_keys` is keyed by run (one per generation)
//! first, so moving keys only appends; a lookup probes the runs whose event times
//! reach its window, which for late exposures is the newest run or two.
//!
//! The index tables live in their own file beside the database (`<db>-index`),
//! written by a mover thread while the ingest writer keeps storing events: SQLite
//! allows one writer per file, and moving cost the single writer about a third of
//! its time. The index is derived data: it is rebuilt from `events` when missing.
//! When the slice that completes a generation commits, `event_index.upto` advances and
//! the moved events leave memory: the frozen generation is dropped whole (on the
//! mover's thread), while events that arrived during the move are already in the
//! next one. After a crash the tail is read back from `events`
//! (`seq > upto`); slices moved before the crash are re-inserted idempotently.
//!
//! Queries combine both halves: SQL over the index tables bounded by `upto`, plus a
//! fold of the tail ([`EventOverlay`]). PostgreSQL keeps ordinary indexes (several
//! writers and replicas share its tables, so no process may hold part of the index).

use std::collections::{HashMap as StdHashMap, HashSet as StdHashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use crate::domain::fuse::outcomes::{OutcomeEvent, OutcomeNames};

use super::sql::OutcomeRow;
use super::NewEvent;

/// The tail hashes every event's id, user and names; SipHash showed in profiles.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = StdHashSet<K, foldhash::fast::RandomState>;

/// Default tail size (events) at which a generation is frozen and moved into the index
/// tables. Larger generations make the move cheaper per event (more entries per index
/// page touched) and cost about 80 bytes of memory per event.
pub(super) const DEFAULT_MOVE_AT: usize = 400_000;

/// Events (ids, and users' events) per slice of a move: slices bound the memory a
/// move's rows take while they are written.
pub(super) const MOVE_STEP: usize = 65_536;

/// The event kinds, by the index an event stores.
const KINDS: [&str; 4] = ["exposure", "activity", "error", "feedback"];

/// Not-yet-indexed events as SQL sees them: queries over the index tables read only
/// events at or below [`EventOverlay::indexed_upto`] and fold the rest in from here.
pub(super) trait EventOverlay: Sync {
    /// The highest event `seq` the index tables answer for.
    fn indexed_upto(&self) -> i64;
    /// Folds the overlay's events of `environment` (timestamps at or before `as_of`)
    /// into rows computed from the index tables.
    fn fold(
        &self,
        environment: &str,
        feature: &str,
        as_of: i64,
        names: &OutcomeNames,
        rows: &mut [OutcomeRow],
    );
}

/// What an erasure or retention purge removes, so the tail forgets it too.
#[derive(Debug, Clone)]
pub(super) enum Forget {
    User(String),
    Before(i64),
}

/// PostgreSQL's indexes cover every event: nothing to fold, and a write transaction
/// holds no in-process index (PostgreSQL's index session).
pub(super) struct Indexed;

impl Indexed {
    /// The transaction committed: nothing to apply.
    pub(super) fn committed(self) {}
}

impl EventOverlay for Indexed {
    fn indexed_upto(&self) -> i64 {
        i64::MAX
    }
    fn fold(&self, _: &str, _: &str, _: i64, _: &OutcomeNames, _: &mut [OutcomeRow]) {}
}

/// What outcomes need of one tail event, plus what dedup and the move need.
#[derive(Debug, Clone, Copy)]
struct TailEvent {
    seq: i64,
    id: u128,
    ts: i64,
    score: Option<f64>,
    kind: u8,
    /// Interned feature and name; 0 for none.
    feature: u32,
    name: u32,
}

/// Feature and event names of the tail, stored once each.
#[derive(Debug, Clone, Default)]
struct Interner {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl Interner {
    fn intern(&mut self, s: Option<&str>) -> u32 {
        let Some(s) = s else { return 0 };
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        self.names.push(s.to_string());
        let i = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.index.insert(s.to_string(), i);
        i
    }

    fn get(&self, i: u32) -> Option<&str> {
        (i > 0)
            .then(|| self.names.get(i as usize - 1).map(String::as_str))
            .flatten()
    }
}

/// The move of one frozen generation into the index tables, sorted the way the tables
/// are keyed. Built and run by the mover (see `sqlite.rs`), off the ingest writer.
#[derive(Debug, Clone)]
pub(super) struct Move {
    /// The generation's highest seq: the run, and `upto` once moved.
    hi: i64,
    /// The span of event times in the generation, recorded with its run.
    min_ts: i64,
    max_ts: i64,
    /// The `upto` before this move: runs above it are leftovers, cleared first.
    upto: i64,
    ids: Vec<u128>,
    id_pos: usize,
    /// (environment, user, slot), sorted; each user's entries go in one slice.
    users: Vec<(String, String, u32)>,
    user_pos: usize,
}

/// One slice of a move; a move writes all its slices in one transaction.
#[derive(Debug, Default)]
pub(super) struct Slice {
    pub ids: Vec<u128>,
    /// One row per user, in key order.
    pub keys: Vec<UserKeys>,
    /// The run the keys belong to: the generation's highest seq.
    pub run: i64,
    /// On a move's first slice: entries of runs above this `upto` belong to no
    /// completed move (another process's on the same file, say), and are deleted first.
    pub clear_above: Option<i64>,
    /// Set when this slice completes the generation: the new `upto`, which is also
    /// the run, with the run's span of event times.
    pub completes: Option<(i64, i64, i64)>,
}

impl Move {
    /// The next slice: at least `step` ids and entries of whole users (fewer at the
    /// end); the last one `completes` the move. `generation` is the one planned from.
    pub(super) fn next_slice(&mut self, generation: &Generation, step: usize) -> Slice {
        let first = (self.id_pos, self.user_pos) == (0, 0);
        let mut slice = Slice {
            run: self.hi,
            clear_above: first.then_some(self.upto),
            ..Slice::default()
        };
        let end = (self.id_pos + step).min(self.ids.len());
        slice.ids.extend_from_slice(&self.ids[self.id_pos..end]);
        self.id_pos = end;
        let mut entries = 0;
        let mut keys: Vec<(i64, i64)> = Vec::new();
        while entries < step && self.user_pos < self.users.len() {
            let (environment, user, slot) = &self.users[self.user_pos];
            self.user_pos += 1;
            keys.clear();
            keys.extend(generation.events_of(*slot).map(|e| (e.ts, e.seq)));
            keys.sort_unstable();
            let (Some(&(min_ts, _)), Some(&(max_ts, _))) = (keys.first(), keys.last()) else {
                continue;
            };
            let mut json = String::with_capacity(2 + 12 * keys.len());
            json.push('[');
            for (i, (_, seq)) in keys.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                let _ = write!(json, "{seq}");
            }
            json.push(']');
            entries += keys.len();
            slice.keys.push(UserKeys {
                environment: environment.clone(),
                user_id: user.clone(),
                min_ts,
                max_ts,
                events: json,
            });
        }
        if self.id_pos == self.ids.len() && self.user_pos == self.users.len() {
            slice.completes = Some((self.hi, self.min_ts, self.max_ts));
        }
        slice
    }
}

/// One user's events of a generation, as a row of `event_keys`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct UserKeys {
    pub environment: String,
    pub user_id: String,
    pub min_ts: i64,
    pub max_ts: i64,
    /// The events' seqs in time order, as a JSON array.
    pub events: String,
}

/// End of a user's chain of entries.
const NONE: u32 = u32::MAX;

/// A tail event in its generation, linked to the same user's next one.
#[derive(Debug, Clone, Copy)]
struct Entry {
    event: TailEvent,
    slot: u32,
    next: u32,
}

/// A user's chain of entries in a generation (`NONE` when it has none).
#[derive(Debug, Clone, Copy)]
struct Slot {
    first: u32,
    last: u32,
}

/// Tail events in arrival order. Each user's events are chained through one
/// generation-wide vector rather than held in a vector per user: pushing then
/// allocates nothing but the vector's own growth, where per-user vectors were
/// reallocated about once per event. The current generation takes pushes; a frozen
/// one is only read while it is moved, then dropped whole (no per-event removal).
#[derive(Debug, Clone, Default)]
pub(super) struct Generation {
    entries: Vec<Entry>,
    /// Ids of the entries; empty in a reader's snapshot.
    ids: HashSet<u128>,
    /// environment → user → slot; a handful of environments, searched linearly.
    users: Vec<(String, HashMap<String, u32>)>,
    slots: Vec<Slot>,
    /// Once frozen: the highest seq it was frozen with, the `upto` its move sets even
    /// if erasures have emptied it since.
    hi: i64,
}

impl Generation {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn push(&mut self, environment: &str, user_id: &str, event: TailEvent, track_id: bool) {
        let e = match self.users.iter().position(|(env, _)| env == environment) {
            Some(e) => e,
            None => {
                self.users
                    .push((environment.to_string(), HashMap::default()));
                self.users.len() - 1
            }
        };
        let users = &mut self.users[e].1;
        let slot = match users.get(user_id) {
            Some(&slot) => slot,
            None => {
                let slot = u32::try_from(self.slots.len()).unwrap_or(NONE);
                self.slots.push(Slot {
                    first: NONE,
                    last: NONE,
                });
                users.insert(user_id.to_string(), slot);
                slot
            }
        };
        let at = u32::try_from(self.entries.len()).unwrap_or(NONE);
        self.entries.push(Entry {
            event,
            slot,
            next: NONE,
        });
        let s = &mut self.slots[slot as usize];
        match s.last {
            NONE => s.first = at,
            last => self.entries[last as usize].next = at,
        }
        s.last = at;
        if track_id {
            self.ids.insert(event.id);
        }
    }

    /// A user's events in seq order.
    fn events_of(&self, slot: u32) -> impl Iterator<Item = &TailEvent> + '_ {
        let mut at = self.slots.get(slot as usize).map_or(NONE, |s| s.first);
        std::iter::from_fn(move || {
            let entry = self.entries.get(at as usize)?;
            at = entry.next;
            Some(&entry.event)
        })
    }

    fn slot_of(&self, environment: &str, user_id: &str) -> Option<u32> {
        let (_, users) = self.users.iter().find(|(env, _)| env == environment)?;
        users.get(user_id).copied()
    }

    /// Keeps the entries `keep` accepts (environment, user, event), relinking the
    /// chains. Only failed transactions, erasures and purges come here.
    fn retain(&mut self, mut keep: impl FnMut(&str, &str, &TailEvent) -> bool) {
        let mut owner: Vec<(usize, &str)> = vec![(0, ""); self.slots.len()];
        for (e, (_, users)) in self.users.iter().enumerate() {
            for (user, &slot) in users {
                owner[slot as usize] = (e, user.as_str());
            }
        }
        let old = std::mem::take(&mut self.entries);
        for slot in &mut self.slots {
            *slot = Slot {
                first: NONE,
                last: NONE,
            };
        }
        for entry in old {
            let (e, user) = owner[entry.slot as usize];
            if !keep(&self.users[e].0, user, &entry.event) {
                self.ids.remove(&entry.event.id);
                continue;
            }
            let at = u32::try_from(self.entries.len()).unwrap_or(NONE);
            self.entries.push(Entry {
                next: NONE,
                ..entry
            });
            let s = &mut self.slots[entry.slot as usize];
            match s.last {
                NONE => s.first = at,
                last => self.entries[last as usize].next = at,
            }
            s.last = at;
        }
        drop(owner);
        let slots = &self.slots;
        for (_, users) in &mut self.users {
            users.retain(|_, slot| slots[*slot as usize].first != NONE);
        }
        self.users.retain(|(_, users)| !users.is_empty());
    }

    /// The sorted move of this generation, frozen over index tables at `upto`.
    pub(super) fn plan_move(&self, upto: i64) -> Move {
        let mut ids: Vec<u128> = self.entries.iter().map(|e| e.event.id).collect();
        ids.sort_unstable();
        let (min_ts, max_ts) = match self.entries.first() {
            Some(first) => self
                .entries
                .iter()
                .fold((first.event.ts, first.event.ts), |(lo, hi), e| {
                    (lo.min(e.event.ts), hi.max(e.event.ts))
                }),
            // Erasures emptied it: the run has no keys, and no window probes [0, 0].
            None => (0, 0),
        };
        let mut users: Vec<(String, String, u32)> = self
            .users
            .iter()
            .flat_map(|(env, users)| {
                users
                    .iter()
                    .map(move |(user, &slot)| (env.clone(), user.clone(), slot))
            })
            .collect();
        users.sort_unstable();
        Move {
            hi: self.hi,
            min_ts,
            max_ts,
            upto,
            ids,
            id_pos: 0,
            users,
            user_pos: 0,
        }
    }

    /// A copy of one environment's entries (without ids), for a reader.
    fn only(&self, environment: &str) -> Generation {
        let mut copy = Generation::default();
        if let Some((_, users)) = self.users.iter().find(|(env, _)| env == environment) {
            for (user, &slot) in users {
                for event in self.events_of(slot) {
                    copy.push(environment, user, *event, false);
                }
            }
        }
        copy
    }

    #[cfg(test)]
    fn users_count(&self) -> usize {
        self.users.iter().map(|(_, users)| users.len()).sum()
    }
}

/// The in-memory tail of the events table (see the module documentation): a
/// current generation taking new events and, while a move is under way, the frozen
/// one being moved.
#[derive(Debug, Clone, Default)]
pub(super) struct EventTail {
    /// Tail size at which the current generation is frozen.
    move_at: usize,
    upto: i64,
    max_seq: i64,
    current: Generation,
    /// The generation being moved, shared with the mover, which only reads it.
    frozen: Option<Arc<Generation>>,
    /// Changes whenever the frozen generation does (frozen anew, or events forgotten),
    /// so the mover knows its plan is stale and restarts the move.
    epoch: u64,
    strings: Interner,
    /// Which ids the tail or the `event_ids` table may hold, so that most new ids
    /// cost one filter lookup: no tail lookup, no index probe.
    stored: StoredIds,
    /// Which users fused features' exposure rows may hold (outcome upkeep).
    pub(super) exposed: ExposedUsers,
    /// Fused features' exposure rows as stored (outcome upkeep).
    pub(super) rows: OutcomeRows,
}

/// A Bloom filter over the ids in the tail and in `event_ids`: a chain of filters,
/// each twice the capacity of the one before, so it grows without rebuilding. "No"
/// is certain, so an id it has never seen is new; "maybe" (stored ids, erased ones,
/// and about 0.1% of others) costs a tail lookup and an index probe. Deleted ids and
/// those of rolled-back transactions stay in it: they only cost a probe.
#[derive(Debug, Clone, Default)]
pub(super) struct StoredIds {
    filters: Vec<Bloom>,
    /// Ids the first filter holds; 0 means [`BLOOM_FIRST_CAPACITY`].
    first_capacity: usize,
}

/// A split-block Bloom filter: each id sets one bit in each of the eight words of one
/// cache-line block, so a lookup costs one cache miss rather than one per hash (the
/// ingest writer looks up every event's id, and a chain of plain filters was about a
/// tenth of its time). At 16 bits per id a full filter errs on about 0.15% of ids
/// (the test below measures a chain of two).
#[derive(Debug, Clone)]
struct Bloom {
    blocks: Vec<Block>,
    /// Block count minus one (a power of two).
    mask: u64,
    count: usize,
    capacity: usize,
}

#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct Block([u64; 8]);

/// Ids the first filter holds.
const BLOOM_FIRST_CAPACITY: usize = 1 << 20;

fn bloom_hashes(id: u128) -> (u64, u64) {
    // splitmix64 finalizer: ids may be time-ordered (v7), so their bits are mixed first.
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let h1 = mix(id as u64 ^ mix((id >> 64) as u64));
    (h1, mix(h1))
}

impl Bloom {
    fn new(capacity: usize) -> Bloom {
        let blocks = (capacity * 16 / 512).next_power_of_two().max(1);
        Bloom {
            blocks: vec![Block::default(); blocks],
            mask: blocks as u64 - 1,
            count: 0,
            capacity,
        }
    }

    /// The id's block and the bit it sets in each of the block's words.
    fn probe(&self, id: u128) -> (usize, [u64; 8]) {
        let (h1, h2) = bloom_hashes(id);
        let mut bits = [0u64; 8];
        for (i, bit) in bits.iter_mut().enumerate() {
            *bit = 1 << ((h2 >> (6 * i)) & 63);
        }
        ((h1 & self.mask) as usize, bits)
    }

    fn insert(&mut self, id: u128) {
        let (block, bits) = self.probe(id);
        if let Some(block) = self.blocks.get_mut(block) {
            for (word, bit) in block.0.iter_mut().zip(bits) {
                *word |= bit;
            }
        }
        self.count += 1;
    }

    fn contains(&self, id: u128) -> bool {
        let (block, bits) = self.probe(id);
        self.blocks.get(block).is_some_and(|block| {
            // Branch-free over the block, so the lookups of a chain overlap.
            block
                .0
                .iter()
                .zip(bits)
                .fold(true, |all, (word, bit)| all & (word & bit != 0))
        })
    }
}

impl StoredIds {
    /// An empty chain whose first filter holds `capacity` ids (a small set should
    /// not cost the 2 MB of the default first filter).
    pub(super) fn with_first_capacity(capacity: usize) -> StoredIds {
        StoredIds {
            filters: Vec::new(),
            first_capacity: capacity.max(1),
        }
    }

    pub(super) fn insert(&mut self, id: u128) {
        let full = self.filters.last().is_none_or(|f| f.count >= f.capacity);
        if full {
            let first = match self.first_capacity {
                0 => BLOOM_FIRST_CAPACITY,
                n => n,
            };
            let capacity = self.filters.last().map_or(first, |f| f.capacity * 2);
            self.filters.push(Bloom::new(capacity));
        }
        if let Some(last) = self.filters.last_mut() {
            last.insert(id);
        }
    }

    /// `false` only if the id was never inserted.
    pub(super) fn may_contain(&self, id: u128) -> bool {
        self.filters.iter().any(|f| f.contains(id))
    }
}

/// Which users have an exposure row, per fused (environment, feature), as Bloom
/// filters over their ids. Outcome upkeep folds a group's events into the rows of
/// users exposed to each fused feature; without this it probed the exposures table
/// for every active user of the group, and when a feature is shown on one surface of
/// a product most active users never see it (in `fusebox loadgen`, 3 in 4).
///
/// "No" is certain because every exposure row is written by ingest, which adds it
/// here (in the transaction's session, before anything reads the filter); a
/// feature's filter is filled from the table when upkeep first needs it. Rows
/// deleted later (erasure) and rolled-back additions only cost a probe.
#[derive(Debug, Clone, Default)]
pub(super) struct ExposedUsers {
    /// (environment, feature, filter): a handful of fused features, searched linearly.
    features: Vec<(String, String, StoredIds)>,
}

/// Users a feature's first filter holds (32 KB); later filters double.
const EXPOSED_FIRST_CAPACITY: usize = 1 << 14;

fn user_bits(user_id: &str) -> u128 {
    use std::hash::BuildHasher as _;
    u128::from(foldhash::quality::FixedState::with_seed(0x0066_7573_6562_6f78).hash_one(user_id))
}

/// One tracked feature's filter.
pub(super) struct ExposedFilter<'a>(&'a StoredIds);

impl ExposedFilter<'_> {
    /// `false` only if `user_id` has no exposure row for the feature.
    pub(super) fn may_have(&self, user_id: &str) -> bool {
        self.0.may_contain(user_bits(user_id))
    }
}

impl ExposedUsers {
    fn position(&self, environment: &str, feature: &str) -> Option<usize> {
        self.features
            .iter()
            .position(|(env, f, _)| env == environment && f == feature)
    }

    /// The filter of `feature`, if it is tracked (filled, see [`Self::fill`]).
    pub(super) fn filter(&self, environment: &str, feature: &str) -> Option<ExposedFilter<'_>> {
        let i = self.position(environment, feature)?;
        Some(ExposedFilter(&self.features[i].2))
    }

    /// Starts tracking `feature` with every user that has an exposure row now.
    pub(super) fn fill<'a>(
        &mut self,
        environment: &str,
        feature: &str,
        users: impl IntoIterator<Item = &'a str>,
    ) {
        let mut filter = StoredIds::with_first_capacity(EXPOSED_FIRST_CAPACITY);
        for user in users {
            filter.insert(user_bits(user));
        }
        match self.position(environment, feature) {
            Some(i) => self.features[i].2 = filter,
            None => self
                .features
                .push((environment.to_string(), feature.to_string(), filter)),
        }
    }

    /// Records an exposure row written for `user_id` (ignored for untracked features).
    pub(super) fn add(&mut self, environment: &str, feature: &str, user_id: &str) {
        if let Some(i) = self.position(environment, feature) {
            self.features[i].2.insert(user_bits(user_id));
        }
    }

    /// Stops tracking `environment`'s features that are no longer fused.
    pub(super) fn keep_only(&mut self, environment: &str, fused: &[&str]) {
        self.features
            .retain(|(env, feature, _)| env != environment || fused.contains(&feature.as_str()));
    }
}

/// Fused features' exposure rows as last stored, so outcome upkeep folds a group's
/// events into rows it does not read back from SQLite. Reading each folded user's row
/// (an index descent and a table descent) grew to about a tenth of the writer's time
/// as a run's exposed users accumulated.
///
/// An entry equals the stored row while only ingest writes rows. So every other write
/// session (outcome builds, erasure, purge) and every failed transaction clears it
/// (see `IndexSession`), and a group's exposure upserts drop their users' entries.
/// Bounded: once full, rows are still updated in place but no new ones are added.
#[derive(Debug, Clone, Default)]
pub(super) struct OutcomeRows {
    /// (environment, feature, rows by user), a handful of fused features. Rows are
    /// kept without their `user_id`, which is the key.
    features: Vec<(String, String, HashMap<String, OutcomeRow>)>,
    len: usize,
}

/// Rows kept at most, over all features: about 40 MB.
const OUTCOME_ROWS_MAX: usize = 1 << 18;

impl OutcomeRows {
    fn rows(&self, environment: &str, feature: &str) -> Option<&HashMap<String, OutcomeRow>> {
        self.features
            .iter()
            .find(|(env, f, _)| env == environment && f == feature)
            .map(|(_, _, rows)| rows)
    }

    fn rows_mut(&mut self, environment: &str, feature: &str) -> &mut HashMap<String, OutcomeRow> {
        let i = match self
            .features
            .iter()
            .position(|(env, f, _)| env == environment && f == feature)
        {
            Some(i) => i,
            None => {
                let fresh = (
                    environment.to_string(),
                    feature.to_string(),
                    HashMap::default(),
                );
                self.features.push(fresh);
                self.features.len() - 1
            }
        };
        &mut self.features[i].2
    }

    /// The stored row of `user_id`, if kept.
    pub(super) fn get(
        &self,
        environment: &str,
        feature: &str,
        user_id: &str,
    ) -> Option<OutcomeRow> {
        let row = self.rows(environment, feature)?.get(user_id)?;
        Some(OutcomeRow {
            user_id: user_id.to_string(),
            ..row.clone()
        })
    }

    /// Records a row as now stored.
    pub(super) fn put(&mut self, environment: &str, feature: &str, row: &OutcomeRow) {
        let room = self.len < OUTCOME_ROWS_MAX;
        let rows = self.rows_mut(environment, feature);
        let kept = OutcomeRow {
            user_id: String::new(),
            ..row.clone()
        };
        if let Some(old) = rows.get_mut(&row.user_id) {
            *old = kept;
        } else if room {
            rows.insert(row.user_id.clone(), kept);
            self.len += 1;
        }
    }

    /// Forgets a row the transaction changes in SQL (an exposure upsert).
    pub(super) fn forget(&mut self, environment: &str, feature: &str, user_id: &str) {
        if let Some((_, _, rows)) = self
            .features
            .iter_mut()
            .find(|(env, f, _)| env == environment && f == feature)
        {
            if rows.remove(user_id).is_some() {
                self.len -= 1;
            }
        }
    }

    pub(super) fn clear(&mut self) {
        self.features.clear();
        self.len = 0;
    }

    /// Drops `environment`'s features that are no longer fused.
    pub(super) fn keep_only(&mut self, environment: &str, fused: &[&str]) {
        self.features
            .retain(|(env, feature, _)| env != environment || fused.contains(&feature.as_str()));
        self.len = self.features.iter().map(|(_, _, rows)| rows.len()).sum();
    }
}

/// Parses a stored event id (a hyphenated UUID, as validation normalises them).
pub(super) fn id_bits(id: &str) -> Option<u128> {
    let mut bits: u128 = 0;
    let mut digits = 0;
    for b in id.bytes() {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            b'-' => continue,
            _ => return None,
        };
        bits = (bits << 4) | u128::from(d);
        digits += 1;
    }
    (digits == 32).then_some(bits)
}

impl EventTail {
    /// An empty tail over index tables that answer for events up to `upto`, moved
    /// when it holds `move_at` events.
    pub(super) fn new(upto: i64, move_at: usize) -> EventTail {
        EventTail {
            move_at: move_at.max(1),
            upto,
            max_seq: upto,
            ..EventTail::default()
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.current.len() + self.frozen.as_deref().map_or(0, Generation::len)
    }

    pub(super) fn max_seq(&self) -> i64 {
        self.max_seq
    }

    /// The generations, oldest first.
    fn generations(&self) -> impl Iterator<Item = &Generation> + '_ {
        self.frozen
            .as_deref()
            .into_iter()
            .chain(std::iter::once(&self.current))
    }

    /// Whether an event with this id is in the tail.
    pub(super) fn contains(&self, id: u128) -> bool {
        self.current.ids.contains(&id) || self.frozen.as_ref().is_some_and(|f| f.ids.contains(&id))
    }

    /// Whether the tail or the `event_ids` table may hold this id (`false` is
    /// certain: every id the tail takes joins the filter as it is pushed).
    pub(super) fn may_be_stored(&self, id: u128) -> bool {
        self.stored.may_contain(id)
    }

    /// Records an id found in `event_ids` (read back at startup).
    pub(super) fn stored(&mut self, id: u128) {
        self.stored.insert(id);
    }

    /// Adds a stored event (seqs only grow).
    pub(super) fn push(&mut self, seq: i64, id: u128, e: &NewEvent) {
        let kind = KINDS.iter().position(|k| *k == e.kind).unwrap_or(0) as u8;
        let event = TailEvent {
            seq,
            id,
            ts: e.ts,
            score: e.score,
            kind,
            feature: self.strings.intern(e.feature.as_deref()),
            name: self.strings.intern(e.name.as_deref()),
        };
        self.add(&e.environment, &e.user_id, event);
    }

    /// Adds a stored event read back from the table at startup.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn push_stored(
        &mut self,
        seq: i64,
        id: u128,
        environment: &str,
        user_id: &str,
        kind: &str,
        feature: Option<&str>,
        name: Option<&str>,
        score: Option<f64>,
        ts: i64,
    ) {
        let event = TailEvent {
            seq,
            id,
            ts,
            score,
            kind: KINDS.iter().position(|k| *k == kind).unwrap_or(0) as u8,
            feature: self.strings.intern(feature),
            name: self.strings.intern(name),
        };
        self.add(environment, user_id, event);
    }

    fn add(&mut self, environment: &str, user_id: &str, event: TailEvent) {
        self.stored.insert(event.id);
        self.current.push(environment, user_id, event, true);
        self.max_seq = self.max_seq.max(event.seq);
    }

    /// Drops every event with `seq > mark`: undoes a transaction's pushes. Only the
    /// current generation can hold them: a generation is frozen after a commit.
    pub(super) fn truncate_after(&mut self, mark: i64) {
        if self.max_seq <= mark {
            return;
        }
        self.current.retain(|_, _, e| e.seq <= mark);
        self.max_seq = mark;
    }

    /// Forgets erased or purged events. A move in progress restarts (the epoch
    /// changes), so no slice re-inserts index entries of deleted events.
    pub(super) fn forget(&mut self, what: &Forget) {
        self.epoch += 1;
        let frozen = self.frozen.as_mut().map(Arc::make_mut);
        for generation in frozen.into_iter().chain(std::iter::once(&mut self.current)) {
            match what {
                Forget::User(user_id) => generation.retain(|_, user, _| user != user_id),
                Forget::Before(before) => generation.retain(|_, _, e| e.ts >= *before),
            }
        }
    }

    /// Freezes the current generation for the mover when it is due and no move is
    /// under way; `true` if it did. Call only after a commit, so a frozen generation
    /// holds committed events only. (Its ids joined the stored-id filter as they
    /// were pushed, so they stay known once they leave the tail.)
    pub(super) fn freeze_if_due(&mut self) -> bool {
        if self.frozen.is_some() || self.current.len() < self.move_at {
            return false;
        }
        let mut frozen = std::mem::take(&mut self.current);
        frozen.hi = self.max_seq;
        self.frozen = Some(Arc::new(frozen));
        self.epoch += 1;
        true
    }

    /// What the mover needs: the epoch, the frozen generation and the current `upto`.
    pub(super) fn moving(&self) -> Option<(u64, Arc<Generation>, i64)> {
        let frozen = self.frozen.as_ref()?;
        Some((self.epoch, Arc::clone(frozen), self.upto))
    }

    /// The slice completing the move of the generation frozen at `epoch` committed:
    /// it leaves the tail, and is returned so the caller frees it. `None` (nothing
    /// changes) if the generation changed since, which the mover's lock rules out.
    pub(super) fn complete(&mut self, epoch: u64, upto: i64) -> Option<Arc<Generation>> {
        if epoch != self.epoch {
            return None;
        }
        self.upto = self.upto.max(upto);
        let moved = self.frozen.take();
        if self.strings.names.len() > 4 * 1024 {
            self.reintern();
        }
        moved
    }

    /// Rebuilds the interner from the current events (the frozen generation is
    /// gone), so free-form names that stopped occurring do not accumulate.
    fn reintern(&mut self) {
        let old = std::mem::take(&mut self.strings);
        let mut fresh = Interner::default();
        for entry in &mut self.current.entries {
            entry.event.feature = fresh.intern(old.get(entry.event.feature));
            entry.event.name = fresh.intern(old.get(entry.event.name));
        }
        self.strings = fresh;
    }

    /// A copy holding one environment's events, for a reader that must not hold up
    /// ingest while its query runs.
    pub(super) fn snapshot(&self, environment: &str) -> EventTail {
        EventTail {
            move_at: self.move_at,
            upto: self.upto,
            max_seq: self.max_seq,
            current: self.current.only(environment),
            frozen: self.frozen.as_ref().map(|f| Arc::new(f.only(environment))),
            epoch: self.epoch,
            strings: self.strings.clone(),
            stored: StoredIds::default(),
            exposed: ExposedUsers::default(),
            rows: OutcomeRows::default(),
        }
    }
}

impl EventOverlay for EventTail {
    fn indexed_upto(&self) -> i64 {
        self.upto
    }

    fn fold(
        &self,
        environment: &str,
        feature: &str,
        as_of: i64,
        names: &OutcomeNames,
        rows: &mut [OutcomeRow],
    ) {
        for row in rows {
            // Oldest generation first: a user's events apply in seq order.
            for generation in self.generations() {
                let Some(slot) = generation.slot_of(environment, &row.user_id) else {
                    continue;
                };
                for e in generation.events_of(slot).filter(|e| e.ts <= as_of) {
                    row.outcomes.apply(
                        feature,
                        row.t0,
                        names,
                        &OutcomeEvent {
                            kind: KINDS[usize::from(e.kind)],
                            feature: self.strings.get(e.feature),
                            name: self.strings.get(e.name),
                            score: e.score,
                            ts: e.ts,
                        },
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(user: &str, kind: &'static str, ts: i64) -> NewEvent {
        NewEvent {
            id: String::new(),
            environment: "production".into(),
            kind,
            user_id: user.into(),
            feature: None,
            name: Some("checkout".into()),
            enabled: None,
            variant: None,
            score: None,
            session_id: None,
            properties: None,
            ts,
            received_at: ts,
        }
    }

    /// An exposure row of `user` with no outcomes yet.
    fn exposed_row(user: &str, t0: i64) -> OutcomeRow {
        OutcomeRow {
            user_id: user.into(),
            enabled: true,
            t0,
            last_seen: t0,
            exposure_count: 1,
            crossovers: 0,
            outcomes: Default::default(),
        }
    }

    fn checkout_names() -> OutcomeNames {
        OutcomeNames {
            activation: vec!["checkout".into()],
            adoption: vec![],
        }
    }

    #[test]
    fn ids_parse_from_hyphenated_uuids_in_key_order() {
        let a = id_bits("00000000-0000-4000-8000-00000000000a").unwrap();
        let b = id_bits("00000000-0000-4000-8000-0000000000b0").unwrap();
        assert!(a < b);
        assert_eq!(id_bits("not-a-uuid"), None);
        assert_eq!(id_bits("00000000-0000-4000-8000-00000000000"), None);
    }

    #[test]
    fn truncating_undoes_pushes_and_forgetting_removes_ids() {
        let mut tail = EventTail::new(10, 100);
        tail.push(11, 1, &event("a", "activity", 100));
        tail.push(12, 2, &event("b", "activity", 200));
        tail.push(13, 3, &event("a", "error", 300));
        assert_eq!(tail.len(), 3);
        // Dedup asks the filter first: it must know every id in the tail.
        assert!((1..=3).all(|id| tail.may_be_stored(id)));
        tail.truncate_after(11);
        assert_eq!((tail.len(), tail.max_seq()), (1, 11));
        assert!(tail.contains(1) && !tail.contains(2) && !tail.contains(3));
        tail.push(12, 4, &event("b", "activity", 50));
        tail.forget(&Forget::Before(100));
        assert!(tail.contains(1) && !tail.contains(4));
        tail.forget(&Forget::User("a".into()));
        assert_eq!(tail.len(), 0);
        assert_eq!(tail.current.users_count(), 0);
    }

    /// Plans the move of the frozen generation and takes all its slices.
    fn move_all(tail: &EventTail) -> (u64, Vec<Slice>) {
        let (epoch, generation, upto) = tail.moving().expect("a frozen generation");
        let mut plan = generation.plan_move(upto);
        let mut slices = vec![plan.next_slice(&generation, MOVE_STEP)];
        while slices.last().is_some_and(|s| s.completes.is_none()) {
            slices.push(plan.next_slice(&generation, MOVE_STEP));
        }
        (epoch, slices)
    }

    #[test]
    fn a_generation_moves_in_sorted_slices_and_then_leaves_memory() {
        let n = MOVE_STEP + 10;
        let mut tail = EventTail::new(0, n);
        for seq in 1..=n as i64 {
            let user = format!("user-{}", seq % 1000);
            // Ids in descending order, so sorting is visible.
            tail.push(seq, u128::MAX - seq as u128, &event(&user, "activity", seq));
        }
        assert!(tail.freeze_if_due());
        let (epoch, slices) = move_all(&tail);
        assert_eq!(slices.len(), 2);
        assert_eq!(slices[0].clear_above, Some(0));
        assert_eq!(slices[1].clear_above, None);
        assert!(slices.iter().all(|s| s.run == n as i64));
        let completes = slices.last().and_then(|s| s.completes);
        assert_eq!(completes, Some((n as i64, 1, n as i64)));
        let ids: Vec<u128> = slices.iter().flat_map(|s| s.ids.clone()).collect();
        let keys: Vec<UserKeys> = slices.iter().flat_map(|s| s.keys.clone()).collect();
        assert_eq!((ids.len(), keys.len()), (n, 1000));
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        // Each user's row lists their events in time order, with their span.
        let user_7 = keys.iter().find(|k| k.user_id == "user-7").unwrap();
        let seqs: Vec<i64> = serde_json::from_str(&user_7.events).unwrap();
        assert_eq!(seqs.len(), n / 1000 + 1);
        assert!(seqs.iter().all(|s| s % 1000 == 7) && seqs.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(user_7.min_ts, 7);
        let total: usize = keys
            .iter()
            .map(|k| serde_json::from_str::<Vec<i64>>(&k.events).unwrap().len())
            .sum();
        assert_eq!(total, n);
        // Events pushed during the move stay; the moved ones leave, and their ids
        // are in the stored-id filter.
        tail.push(n as i64 + 1, 7, &event("late", "activity", 1));
        assert!(!tail.freeze_if_due(), "one move at a time");
        assert!(tail.complete(epoch, n as i64).is_some());
        assert_eq!((tail.len(), tail.indexed_upto()), (1, n as i64));
        assert!(tail.contains(7) && !tail.contains(u128::MAX - 1));
        assert!(tail.may_be_stored(u128::MAX - 1));
        assert!(tail.moving().is_none());
    }

    #[test]
    fn a_failed_transaction_after_a_freeze_leaves_the_frozen_generation_whole() {
        let mut tail = EventTail::new(0, 3);
        for seq in 1..=2 {
            tail.push(seq, seq as u128, &event("u", "activity", seq));
        }
        assert!(!tail.freeze_if_due(), "two events are not due");
        tail.push(3, 3, &event("u", "activity", 3));
        assert!(tail.freeze_if_due());
        // The next transaction pushes two events and fails.
        tail.push(4, 4, &event("u", "activity", 4));
        tail.push(5, 5, &event("v", "activity", 5));
        tail.truncate_after(3);
        assert_eq!((tail.len(), tail.max_seq()), (3, 3));
        assert!(tail.contains(3) && !tail.contains(4) && !tail.contains(5));
        let (_, slices) = move_all(&tail);
        assert_eq!(slices[0].ids, vec![1, 2, 3]);
        assert_eq!(slices[0].keys[0].events, "[1,2,3]");
    }

    #[test]
    fn forgetting_during_a_move_restarts_it_without_the_forgotten_events() {
        let mut tail = EventTail::new(0, 3);
        tail.push(1, 1, &event("a", "activity", 10));
        tail.push(2, 2, &event("b", "activity", 20));
        tail.push(3, 3, &event("a", "activity", 30));
        assert!(tail.freeze_if_due());
        let (stale, _) = move_all(&tail);
        // Events arriving during the move go to the next generation.
        tail.push(4, 4, &event("a", "activity", 40));
        tail.forget(&Forget::User("a".into()));
        assert!(!tail.contains(1) && !tail.contains(4) && tail.contains(2));
        assert!(
            tail.complete(stale, 3).is_none(),
            "a move planned before the erasure does not complete"
        );
        let (epoch, restarted) = move_all(&tail);
        assert_eq!(
            restarted[0].clear_above,
            Some(0),
            "a restarted move clears its run"
        );
        assert_eq!(restarted[0].ids, vec![2]);
        assert_eq!(restarted[0].run, 3);
        assert_eq!(restarted[0].completes, Some((3, 20, 20)));
        assert!(tail.complete(epoch, 3).is_some());
        assert_eq!((tail.len(), tail.indexed_upto()), (0, 3));
        // A generation erased whole still moves `upto` to where it was frozen.
        for seq in 5..=7 {
            tail.push(seq, seq as u128, &event("c", "activity", seq));
        }
        assert!(tail.freeze_if_due());
        tail.forget(&Forget::User("c".into()));
        let (_, empty) = move_all(&tail);
        assert!(empty[0].ids.is_empty() && empty[0].keys.is_empty());
        assert_eq!(empty[0].completes, Some((7, 0, 0)));
    }

    #[test]
    fn folding_and_snapshots_see_a_user_s_events_in_both_generations() {
        let mut tail = EventTail::new(0, 2);
        tail.push(1, 1, &event("a", "activity", 3_000));
        tail.push(2, 2, &event("a", "error", 4_000));
        assert!(tail.freeze_if_due());
        tail.push(3, 3, &event("a", "error", 6_000));
        let names = checkout_names();
        let mut rows = vec![exposed_row("a", 2_000)];
        tail.fold("production", "f", i64::MAX, &names, &mut rows);
        assert_eq!(rows[0].outcomes.first_activation, Some(3_000));
        assert_eq!(rows[0].outcomes.first_error, Some(4_000));
        let mut copied = rows.clone();
        copied[0].outcomes = Default::default();
        tail.snapshot("production")
            .fold("production", "f", i64::MAX, &names, &mut copied);
        assert_eq!(copied[0].outcomes, rows[0].outcomes);
    }

    #[test]
    fn kept_outcome_rows_are_bounded_and_forgotten_on_change() {
        let mut kept = OutcomeRows::default();
        kept.put("dev", "f", &exposed_row("a", 1));
        kept.put("dev", "g", &exposed_row("a", 2));
        assert_eq!(
            kept.get("dev", "f", "a").map(|r| (r.user_id, r.t0)),
            Some(("a".into(), 1))
        );
        kept.put("dev", "f", &exposed_row("a", 3));
        assert_eq!(kept.get("dev", "f", "a").map(|r| r.t0), Some(3));
        kept.forget("dev", "f", "a");
        assert!(kept.get("dev", "f", "a").is_none());
        assert_eq!(kept.get("dev", "g", "a").map(|r| r.t0), Some(2));
        kept.keep_only("dev", &["f"]);
        assert!(kept.get("dev", "g", "a").is_none());
        assert_eq!(kept.len, 0);
        for i in 0..OUTCOME_ROWS_MAX + 10 {
            kept.put("dev", "f", &exposed_row(&format!("u{i}"), 0));
        }
        assert_eq!(kept.len, OUTCOME_ROWS_MAX, "full: no new rows");
        // A kept row is still updated in place when full.
        kept.put("dev", "f", &exposed_row("u0", 9));
        assert_eq!(kept.get("dev", "f", "u0").map(|r| r.t0), Some(9));
        kept.clear();
        assert!(kept.get("dev", "f", "u0").is_none() && kept.len == 0);
    }

    #[test]
    fn the_stored_id_filter_never_misses_and_rarely_errs() {
        let mut stored = StoredIds::default();
        let n = 3 * BLOOM_FIRST_CAPACITY as u128;
        for i in 0..n {
            stored.insert(i * 0x9e37_79b9_7f4a_7c15);
        }
        assert_eq!(stored.filters.len(), 2, "the chain grew");
        assert!((0..n).all(|i| stored.may_contain(i * 0x9e37_79b9_7f4a_7c15)));
        let false_positives = (0..100_000u128)
            .filter(|i| stored.may_contain((i << 64) | 0xdead))
            .count();
        assert!(
            false_positives < 300,
            "{false_positives} false positives in 100000"
        );
    }

    #[test]
    fn exposed_user_filters_never_miss_and_track_only_fused_features() {
        let mut exposed = ExposedUsers::default();
        assert!(exposed.filter("dev", "f").is_none());
        let users: Vec<String> = (0..100_000).map(|i| format!("user-{i}")).collect();
        exposed.fill("dev", "f", users[..50_000].iter().map(String::as_str));
        for user in &users[50_000..] {
            exposed.add("dev", "f", user);
        }
        // Untracked features are not recorded.
        exposed.add("dev", "g", "user-1");
        assert!(exposed.filter("dev", "g").is_none());
        let filter = exposed.filter("dev", "f").unwrap();
        assert!(
            users.iter().all(|u| filter.may_have(u)),
            "a filter missed a user"
        );
        let strangers = (0..100_000)
            .filter(|i| filter.may_have(&format!("stranger-{i}")))
            .count();
        assert!(strangers < 300, "{strangers} false positives in 100k");
        exposed.fill("prod", "f", ["user-1"]);
        exposed.keep_only("dev", &[]);
        assert!(exposed.filter("dev", "f").is_none());
        assert!(exposed.filter("prod", "f").is_some());
    }

    #[test]
    fn folding_applies_only_events_from_t0_to_as_of() {
        let mut tail = EventTail::new(0, 100);
        tail.push(1, 1, &event("a", "activity", 1_000));
        tail.push(2, 2, &event("a", "error", 5_000));
        tail.push(3, 3, &event("a", "activity", 9_000));
        let names = checkout_names();
        let mut rows = vec![exposed_row("a", 2_000)];
        tail.fold("production", "f", 8_000, &names, &mut rows);
        assert_eq!(rows[0].outcomes.first_error, Some(5_000));
        assert_eq!(rows[0].outcomes.first_activation, None);
        tail.snapshot("production")
            .fold("production", "f", i64::MAX, &names, &mut rows);
        assert_eq!(rows[0].outcomes.first_activation, Some(9_000));
    }
}
