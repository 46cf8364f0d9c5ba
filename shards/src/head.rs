//! The in-memory head block of one (core, tenant): series, XOR chunks and postings.
//!
//! Owns series identity (portable hash → id, ids dense and equal to the WAL's), the
//! append rules (in-order, idempotent repeats, 409-worthy conflicts), chunk cutting, the
//! symbol table and the inverted index used by queries. Must not do I/O (beyond its chunk
//! arena spilling closed chunks to the file it is given) or know about other cores: the
//! shard logs what the head accepted.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use sluice_storage::xor::{XorChunk, XorIter};

use sluice_core::{check_hash, key_labels, Identity, Matcher};

use crate::chunk_arena::{Chain, ChunkArena, ChunkRef};
use crate::label_store::{LabelStore, Labels};
use crate::series_index::{prefetch, SeriesIndex};
use crate::symbols::Symbols;

/// Samples per head chunk before it is cut (Prometheus' target), on average: see
/// [`chunk_target`].
pub const SAMPLES_PER_CHUNK: u16 = 120;

/// How many samples a series' chunks take before they are cut: 104 to 135, fixed per series
/// by its hash, instead of 120 for all.
///
/// Senders scrape in step (every series of a target, every target of a job, at one
/// interval), so with one count for all, every series of the head cut its chunk in the same
/// round of requests: one round in 120 closed a chunk per series it carried (~0.6 µs each,
/// over a millisecond per 2000-sample request), and those requests were the slow 1%. With
/// 32 counts, a round cuts the chunks of at most 4 of them (a round number has at most four
/// divisors between 104 and 135), usually one or two: an eighth of the series at worst.
#[inline]
fn chunk_target(hash: u64) -> u16 {
    SAMPLES_PER_CHUNK - 16 + (hash >> 59) as u16
}

/// Prometheus' default block range (2h), in ms.
pub const DEFAULT_BLOCK_RANGE_MS: i64 = 2 * 3600 * 1000;

/// The keys are already xxhash64 outputs: hashing them again would only cost time.
#[derive(Default)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | *b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type HashIndex<V> = HashMap<u64, V, BuildHasherDefault<IdentityHasher>>;

pub use crate::chunk_arena::Chunk as ClosedChunk;

/// One series of the head.
///
/// A series is found by two 64-bit hashes of its key: the portable `hash` (which places it
/// on a node and core) and `check`, seeded with a secret random value per process
/// ([`check_hash`]), and confirmed by its labels ([`Head::find_exact`]): two distinct label
/// sets get the same 128 bits with probability ~n²/2¹²⁹, but a collision must not write one
/// series' samples into another, and neither may an identity a caller got wrong (a
/// fingerprint collision in the decoder's table of known series).
pub struct Series {
    /// Where the series' labels are in the head's [`LabelStore`]; `NONE` only in a
    /// placeholder.
    labels: Labels,
    hash: u64,
    check: u64,
    /// The newest closed chunk, in the head's [`ChunkArena`]; each links to the one before.
    closed: ChunkRef,
    open: XorChunk,
}

impl Series {
    /// Last sample, if any.
    fn last(&self, chunks: &ChunkArena) -> Option<(i64, f64)> {
        self.open.last().or_else(|| {
            // Only a series whose open chunk a cut has just closed gets here.
            (!self.closed.is_none())
                .then(|| chunks.get(self.closed))
                .flatten()
                .and_then(|c| XorIter::new(c.data).last())
        })
    }

    fn max_t(&self, chunks: &ChunkArena) -> Option<i64> {
        self.last(chunks).map(|(t, _)| t)
    }

    /// The oldest sample's timestamp, if any.
    fn min_t(&self, chunks: &ChunkArena) -> Option<i64> {
        match chunks.oldest(self.closed) {
            Some(c) => Some(c.min_t),
            None => self.open.first_time(),
        }
    }

    /// What a garbage-collected series (or an id lost from the WAL) leaves in its slot.
    fn placeholder() -> Self {
        Series {
            labels: Labels::NONE,
            hash: 0,
            check: 0,
            closed: ChunkRef::NONE,
            open: XorChunk::with_capacity(0),
        }
    }
}

/// Why a sample was not appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Older than the series' newest sample and not an exact repeat of a stored one.
    OutOfOrder { last_t: i64 },
    /// Same timestamp as a stored sample, different value.
    DuplicateTimestamp,
    /// Older than the head accepts: before its persisted range, or more than half a block
    /// range behind its newest sample (Prometheus' appendable window).
    OutOfBounds { min_t: i64 },
    /// Newer than the receiver's clock allows (`--tsdb.too-far-in-future.time-window`).
    TooFarInFuture { max_t: i64 },
}

/// What happened to one appended sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored (and must be logged).
    New,
    /// An exact repeat of a stored sample (a retried request): nothing to do.
    Repeat,
}

/// The head block of one tenant on one core.
#[derive(Default)]
pub struct Head {
    symbols: Symbols,
    series: Vec<Series>,
    label_sets: LabelStore,
    chunks: ChunkArena,
    by_hash: SeriesIndex,
    /// Series whose hash collides with another's (64-bit collisions: practically never).
    collisions: HashIndex<Vec<u32>>,
    postings: HashMap<(u32, u32), Vec<u32>, ahash::RandomState>,
    /// Values seen per label name, for regex matchers and the label-values API.
    values: HashMap<u32, Vec<u32>, ahash::RandomState>,
    samples: u64,
    min_t: i64,
    max_t: i64,
    /// Chunks never span two aligned ranges of this length, so that a block can take whole
    /// chunks (as Prometheus cuts head chunks at the block boundary).
    block_range_ms: i64,
    /// Samples before this are in a block (or being written to one): never appended again.
    min_valid_t: i64,
    /// Live series (not garbage-collected placeholders).
    live: usize,
}

impl Head {
    /// A head for the default 2h block range.
    pub fn new() -> Self {
        Self::with_block_range(DEFAULT_BLOCK_RANGE_MS)
    }

    /// A head whose chunks are cut at multiples of `block_range_ms` (must be > 0).
    pub fn with_block_range(block_range_ms: i64) -> Self {
        Head {
            min_t: i64::MAX,
            max_t: i64::MIN,
            block_range_ms: block_range_ms.max(1),
            min_valid_t: i64::MIN,
            ..Default::default()
        }
    }

    /// From now on, full pages of closed chunks are written to `file` and read back
    /// through a map of it (see [`ChunkArena::spill_to`]).
    pub fn spill_chunks_to(&mut self, file: std::fs::File) {
        self.chunks.spill_to(file);
    }

    /// Bytes of closed chunks in the heap, and in the spill file.
    pub fn chunk_bytes(&self) -> (usize, usize) {
        (self.chunks.resident(), self.chunks.spilled())
    }

    /// Reads of spilled chunks that failed their check (see [`ChunkArena::corrupt`]).
    pub fn corrupt_chunk_reads(&self) -> u64 {
        self.chunks.corrupt()
    }

    /// Number of live series.
    pub fn num_series(&self) -> usize {
        self.live
    }

    /// One past the highest series id (ids of collected series stay taken).
    pub fn id_limit(&self) -> u32 {
        self.series.len() as u32
    }

    /// Oldest and newest sample in the head, if it holds any.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        (self.min_t <= self.max_t).then_some((self.min_t, self.max_t))
    }

    /// Samples before `t` are persisted: refuse them from now on (never lowers the bound).
    pub fn set_min_valid(&mut self, t: i64) {
        self.min_valid_t = self.min_valid_t.max(t);
    }

    /// The oldest timestamp an append may have (Prometheus' `appendableMinValidTime`).
    pub fn appendable_min_t(&self) -> i64 {
        let window = if self.max_t == i64::MIN {
            i64::MIN
        } else {
            self.max_t.saturating_sub(self.block_range_ms / 2)
        };
        self.min_valid_t.max(window)
    }

    /// Number of samples appended since start (including replayed ones).
    pub fn num_samples(&self) -> u64 {
        self.samples
    }

    /// The id of the series with this key and hash, if it exists.
    pub fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        self.find_exact(hash, check_hash(key), key_labels(key))
    }

    /// The id of the series with this portable and check hash ([`sluice_core::Identity`]) and
    /// exactly these labels (in key order), if it exists. The 128 bits find the series; its
    /// labels confirm it, so that two label sets sharing an identity (or a caller handed a
    /// wrong identity) never share a series. Nearly always the first candidate is the series
    /// and the confirmation compares its labels once.
    #[inline]
    pub fn find_exact<'a>(
        &self,
        hash: u64,
        check: u64,
        labels: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    ) -> Option<u32> {
        let id = self.by_hash.get(hash)?;
        let is = |id: u32| {
            let s = &self.series[id as usize];
            s.check == check && self.labels_match(id, labels.clone())
        };
        if is(id) {
            return Some(id);
        }
        self.collisions
            .get(&hash)?
            .iter()
            .copied()
            .find(|id| is(*id))
    }

    /// The series this identity most likely names, its labels not yet confirmed: the one
    /// the index holds for `hash`, if its check matches. The caller confirms it with
    /// [`labels_match`](Self::labels_match) and falls back to
    /// [`find_exact`](Self::find_exact).
    #[inline]
    pub fn candidate(&self, hash: u64, check: u64) -> Option<u32> {
        let id = self.by_hash.get(hash)?;
        (self.series[id as usize].check == check).then_some(id)
    }

    /// Hints the CPU to fetch what [`find`](Self::find) reads first for `hash`: its index
    /// slot. Called a few series ahead of the lookups.
    #[inline]
    pub fn prefetch_slot(&self, hash: u64) {
        self.by_hash.prefetch(hash);
    }

    /// Hints the CPU to fetch what `find` reads second for `hash`: the series (its slot was
    /// prefetched earlier, so reading it here is cheap).
    #[inline]
    pub fn prefetch_series(&self, hash: u64) {
        if let Some(id) = self.by_hash.get(hash) {
            prefetch(&self.series[id as usize]);
        }
    }

    /// Hints the CPU to fetch what an append to series `id` reads first: the series, both
    /// cache lines it may straddle. Called a few series ahead of the appends.
    #[inline]
    pub fn prefetch_append(&self, id: u32) {
        if let Some(s) = self.series.get(id as usize) {
            sluice_core::prefetch::prefetch_ends(s);
        }
    }

    /// Hints the CPU to fetch what an append to series `id` writes: its open chunk's next
    /// byte (the series was prefetched earlier, so reading where that is is cheap).
    #[inline]
    pub fn prefetch_chunk_write(&self, id: u32) {
        if let Some(s) = self.series.get(id as usize) {
            prefetch(s.open.write_position());
        }
    }

    /// Whether series `id` has exactly the labels of `key`.
    pub fn key_matches(&self, id: u32, key: &[u8]) -> bool {
        self.labels_match(id, key_labels(key))
    }

    /// Whether series `id` has exactly these labels (in key order).
    #[inline]
    pub fn labels_match<'a>(
        &self,
        id: u32,
        mut labels: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) -> bool {
        let (names, values) = self.label_sets.get(self.series[id as usize].labels);
        for (n, v) in names.iter().zip(values) {
            match labels.next() {
                Some((name, value))
                    if short_eq(self.symbols.bytes(*v), value)
                        && short_eq(self.symbols.bytes(*n), name) => {}
                _ => return false,
            }
        }
        labels.next().is_none()
    }

    /// Creates a series with the next id (which the caller logs).
    pub fn create(&mut self, hash: u64, key: &[u8]) -> u32 {
        self.create_checked(
            Identity {
                hash,
                check: check_hash(key),
            },
            key,
        )
    }

    /// [`create`](Self::create) for a caller that already has the series' identity (the
    /// ingest path looked it up by it): the check hash is not computed again.
    pub fn create_checked(&mut self, id: Identity, key: &[u8]) -> u32 {
        let n = self.series.len() as u32;
        self.insert(n, id, key);
        n
    }

    /// Creates a series with a given id during WAL replay. Ids are dense: a gap (a series record
    /// lost to corruption) is filled with empty placeholder series so ids stay aligned with the
    /// log, and a later record may bind a placeholder (a log from before ids were never reused:
    /// the replay dropped the samples logged for its lost first owner). An id that is live is
    /// left alone. The caller bounds `id` (the WAL reader's id ceiling).
    pub fn create_with_id(&mut self, id: u32, hash: u64, key: &[u8]) -> bool {
        if self
            .series
            .get(id as usize)
            .is_some_and(|s| !s.labels.is_none())
        {
            return false;
        }
        self.reserve_ids(id);
        self.insert(
            id,
            Identity {
                hash,
                check: check_hash(key),
            },
            key,
        );
        true
    }

    /// Makes the next new series get an id of at least `next` (ids a replayed log still names
    /// must not be handed out again): fills the ids up to it with placeholders.
    pub fn reserve_ids(&mut self, next: u32) {
        if let Some(more) = (next as usize).checked_sub(self.series.len()) {
            self.series.reserve(more);
            self.series.resize_with(next as usize, Series::placeholder);
        }
    }

    /// Adds series `id`: the next id, or (replay) a placeholder's.
    fn insert(&mut self, id: u32, Identity { hash, check }: Identity, key: &[u8]) {
        let Head {
            symbols,
            postings,
            values,
            label_sets,
            ..
        } = self;
        // Each pair is interned and posted as the store takes it.
        let labels = label_sets.push(key_labels(key).map(|(n, v)| {
            let (n, v) = (symbols.intern_bytes(n), symbols.intern_bytes(v));
            let list = postings.entry((n, v)).or_default();
            if list.is_empty() {
                values.entry(n).or_default().push(v);
            }
            // Postings stay sorted: only a placeholder bound during replay lands before the end.
            match list.last() {
                Some(last) if *last > id => {
                    let at = list.partition_point(|x| *x < id);
                    list.insert(at, id);
                }
                _ => list.push(id),
            }
            (n, v)
        }));
        if self.by_hash.get(hash).is_none() {
            self.by_hash.insert(hash, id);
        } else {
            self.collisions.entry(hash).or_default().push(id);
        }
        let series = Series {
            labels,
            hash,
            check,
            closed: ChunkRef::NONE,
            open: XorChunk::new(),
        };
        match self.series.get_mut(id as usize) {
            Some(slot) => *slot = series,
            None => self.series.push(series),
        }
        self.live += 1;
    }

    /// Appends a sample to series `id` (which must exist).
    pub fn append(&mut self, id: u32, t: i64, v: f64) -> Result<Appended, Rejected> {
        let min_t = self.appendable_min_t();
        if t < min_t {
            return Err(Rejected::OutOfBounds { min_t });
        }
        self.append_unbounded(id, t, v)
    }

    /// [`append`](Self::append) without the appendable window, for WAL replay: the log holds
    /// samples in the order they were accepted, each inside the window of its time. Samples
    /// before the persisted range are still refused.
    pub fn replay_append(&mut self, id: u32, t: i64, v: f64) -> Result<Appended, Rejected> {
        if t < self.min_valid_t {
            return Err(Rejected::OutOfBounds {
                min_t: self.min_valid_t,
            });
        }
        self.append_unbounded(id, t, v)
    }

    fn append_unbounded(&mut self, id: u32, t: i64, v: f64) -> Result<Appended, Rejected> {
        let s = &mut self.series[id as usize];
        if let Some((last_t, last_v)) = s.last(&self.chunks) {
            if t <= last_t {
                return if t == last_t {
                    if last_v.to_bits() == v.to_bits() {
                        Ok(Appended::Repeat)
                    } else {
                        Err(Rejected::DuplicateTimestamp)
                    }
                } else {
                    match stored_value(s, &self.chunks, t) {
                        Some(bits) if bits == v.to_bits() => Ok(Appended::Repeat),
                        Some(_) => Err(Rejected::DuplicateTimestamp),
                        None => Err(Rejected::OutOfOrder { last_t }),
                    }
                };
            }
        }
        let range = self.block_range_ms;
        // A chunk's samples all lie in one range, so its last sample's range is its first's
        // (the last is a field; the first would be decoded from the chunk, per sample).
        let crosses_block = s
            .open
            .last()
            .is_some_and(|(last, _)| last.div_euclid(range) != t.div_euclid(range));
        if s.open.num_samples() >= chunk_target(s.hash) || crosses_block {
            close_open(s, &mut self.chunks, range);
        }
        s.open.append(t, v);
        self.samples += 1;
        self.min_t = self.min_t.min(t);
        self.max_t = self.max_t.max(t);
        Ok(Appended::New)
    }

    /// Prepares persisting everything before `before` (a block boundary): closes the open
    /// chunks that lie wholly before it, refuses samples before it from now on, and returns
    /// the series with chunks to persist, in label order (the block's series order).
    pub fn prepare_cut(&mut self, before: i64) -> Vec<u32> {
        self.set_min_valid(before);
        let mut ids = Vec::new();
        for (id, s) in self.series.iter_mut().enumerate() {
            if s.labels.is_none() {
                continue;
            }
            // Chunks never cross a block boundary, so an open chunk that starts before it
            // also ends before it.
            if s.open.first_time().is_some_and(|f| f < before) {
                close_open(s, &mut self.chunks, self.block_range_ms);
            }
            if self
                .chunks
                .oldest(s.closed)
                .is_some_and(|c| c.max_t < before)
            {
                ids.push(id as u32);
            }
        }
        ids.sort_unstable_by(|a, b| self.labels(*a).cmp(self.labels(*b)));
        ids
    }

    /// The closed chunks of series `id` that end before `before`, oldest first.
    pub fn chunks_before(
        &self,
        id: u32,
        before: i64,
    ) -> impl Iterator<Item = ClosedChunk<'_>> + Clone + '_ {
        self.chunks_of(id).take_while(move |c| c.max_t < before)
    }

    /// All closed chunks of series `id`, oldest first.
    fn chunks_of(&self, id: u32) -> Chain<'_> {
        self.chunks.chain(self.series[id as usize].closed)
    }

    /// Drops everything before `before` (a block now holds it) and garbage-collects series
    /// left without samples; their ids are never reused (the WAL may still name them).
    /// Returns how many series were collected.
    ///
    /// Chunks are dropped by whole block ranges, so `before` should be a range boundary
    /// (the cutter's always is; replay's `min_valid` precedes every replayed chunk): with one
    /// inside a range, the chunks of that range that end before it stay readable until the
    /// next truncate, though appends before it are refused at once.
    pub fn truncate(&mut self, before: i64) -> usize {
        self.set_min_valid(before);
        // A chain wholly before `before` is dropped here; older chunks of the others drop
        // out of their chains as their ranges are released.
        for s in &mut self.series {
            // (A chain whose newest chunk does not read back is unreadable, so dropped too.)
            if !s.closed.is_none() && self.chunks.get(s.closed).is_none_or(|c| c.max_t < before) {
                s.closed = ChunkRef::NONE;
            }
        }
        self.chunks
            .release_ranges_below(before.div_euclid(self.block_range_ms));
        let mut dead: Vec<u32> = Vec::new();
        let (mut min_t, mut max_t) = (i64::MAX, i64::MIN);
        for (id, s) in self.series.iter().enumerate() {
            if s.labels.is_none() {
                continue;
            }
            match (s.min_t(&self.chunks), s.max_t(&self.chunks)) {
                (Some(first), Some(last)) => {
                    min_t = min_t.min(first);
                    max_t = max_t.max(last);
                }
                _ => dead.push(id as u32),
            }
        }
        self.min_t = min_t;
        self.max_t = max_t;
        if !dead.is_empty() {
            self.collect(&dead);
        }
        dead.len()
    }

    /// Removes series (sorted ids) from every index and frees their memory.
    fn collect(&mut self, dead: &[u32]) {
        for id in dead {
            let s = std::mem::replace(&mut self.series[*id as usize], Series::placeholder());
            self.label_sets.release(s.labels);
            if self.by_hash.get(s.hash) == Some(*id) {
                self.by_hash.remove(s.hash);
                // A colliding series takes over the primary slot.
                if let Some(others) = self.collisions.remove(&s.hash) {
                    let mut others = others.into_iter();
                    if let Some(first) = others.next() {
                        self.by_hash.insert(s.hash, first);
                        let rest: Vec<u32> = others.collect();
                        if !rest.is_empty() {
                            self.collisions.insert(s.hash, rest);
                        }
                    }
                }
            } else if let Some(others) = self.collisions.get_mut(&s.hash) {
                others.retain(|o| o != id);
                if others.is_empty() {
                    self.collisions.remove(&s.hash);
                }
            }
        }
        self.live -= dead.len();
        if self.label_sets.wants_compaction() {
            self.label_sets
                .compact(self.series.iter_mut().map(|s| &mut s.labels));
        }
        let is_dead = |id: &u32| dead.binary_search(id).is_ok();
        self.postings.retain(|_, ids| {
            ids.retain(|id| !is_dead(id));
            !ids.is_empty()
        });
        let postings = &self.postings;
        self.values.retain(|n, vs| {
            vs.retain(|v| postings.contains_key(&(*n, *v)));
            !vs.is_empty()
        });
    }

    /// Labels of series `id`, ascending by name (none for a collected series).
    pub fn labels(&self, id: u32) -> impl Iterator<Item = (&str, &str)> + Clone + '_ {
        let (names, values) = self.label_sets.get(self.series[id as usize].labels);
        names
            .iter()
            .zip(values)
            .map(|(n, v)| (self.symbols.get(*n), self.symbols.get(*v)))
    }

    /// Whether series `id` is live (not collected, not a placeholder for a lost id).
    pub fn is_live(&self, id: u32) -> bool {
        !self.series[id as usize].labels.is_none()
    }

    /// The portable hash of series `id`.
    pub fn hash(&self, id: u32) -> u64 {
        self.series[id as usize].hash
    }

    /// Whether series `id` has a sample in `[mint, maxt]`.
    pub fn overlaps(&self, id: u32, mint: i64, maxt: i64) -> bool {
        let s = &self.series[id as usize];
        match (s.min_t(&self.chunks), s.max_t(&self.chunks)) {
            (Some(min), Some(max)) => min <= maxt && max >= mint,
            _ => false,
        }
    }

    /// Calls `f` for every sample of series `id` in `[mint, maxt]`, in time order.
    pub fn samples(&self, id: u32, mint: i64, maxt: i64, mut f: impl FnMut(i64, f64)) {
        let s = &self.series[id as usize];
        for c in self.chunks_of(id) {
            if c.max_t < mint || c.min_t > maxt {
                continue;
            }
            for (t, v) in XorIter::new(c.data) {
                if t >= mint && t <= maxt {
                    f(t, v);
                }
            }
        }
        for (t, v) in s.open.iter() {
            if t >= mint && t <= maxt {
                f(t, v);
            }
        }
    }

    /// Ids of the series matching every matcher (Prometheus semantics: a matcher that
    /// matches "" also matches series without the label), ascending.
    pub fn select(&self, matchers: &[Matcher]) -> Vec<u32> {
        // Narrow with the matchers that need the label to be present, then check all.
        let mut candidates: Option<Vec<u32>> = None;
        for m in matchers.iter().filter(|m| !m.matches("")) {
            let Some(name) = self.symbols.lookup(&m.name) else {
                return Vec::new();
            };
            let mut ids: Vec<u32> = Vec::new();
            let values = self.values.get(&name).map(Vec::as_slice).unwrap_or(&[]);
            let matching: Vec<u32> = values
                .iter()
                .copied()
                .filter(|v| m.matches(self.symbols.get(*v)))
                .collect();
            if matching.len() == 1 {
                ids.extend_from_slice(&self.postings[&(name, matching[0])]);
            } else {
                for v in matching {
                    ids.extend_from_slice(&self.postings[&(name, v)]);
                }
                ids.sort_unstable();
                ids.dedup();
            }
            candidates = Some(match candidates {
                None => ids,
                Some(prev) => intersect(&prev, &ids),
            });
            if candidates.as_ref().is_some_and(Vec::is_empty) {
                return Vec::new();
            }
        }
        let candidates = candidates.unwrap_or_else(|| (0..self.series.len() as u32).collect());
        // A name the head has never seen is absent from every series.
        let names: Vec<Option<u32>> = matchers
            .iter()
            .map(|m| self.symbols.lookup(&m.name))
            .collect();
        candidates
            .into_iter()
            .filter(|id| {
                let labels = self.series[*id as usize].labels;
                !labels.is_none()
                    && matchers.iter().zip(&names).all(|(m, name)| {
                        let value = name
                            .and_then(|n| self.label_sets.value_of(labels, n))
                            .map_or("", |v| self.symbols.get(v));
                        m.matches(value)
                    })
            })
            .collect()
    }
}

/// `a == b` for the short strings label names and values are: word compares inline instead
/// of a call to `memcmp` per string (twenty of them per series looked up, on every append).
#[inline(always)]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => {
            let half = |s: &[u8], at: usize| {
                u32::from_le_bytes(s[at..at + 4].try_into().unwrap_or([0; 4]))
            };
            half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4)
        }
        8..=32 => {
            let mut at = 0;
            while at + 8 < n {
                if word(a, at) != word(b, at) {
                    return false;
                }
                at += 8;
            }
            word(a, n - 8) == word(b, n - 8)
        }
        _ => a == b,
    }
}

/// Moves a series' open chunk (if it has samples) to the end of its closed chunks.
fn close_open(s: &mut Series, chunks: &mut ChunkArena, block_range_ms: i64) {
    let full = std::mem::take(&mut s.open);
    if let (Some(min_t), Some((max_t, _))) = (full.first_time(), full.last()) {
        let range = min_t.div_euclid(block_range_ms);
        s.closed = chunks.push(range, min_t, max_t, full.bytes(), s.closed);
    }
}

/// The value bits stored at exactly `t` in a series, if any (the rare retry path).
fn stored_value(s: &Series, chunks: &ChunkArena, t: i64) -> Option<u64> {
    let in_chunk = |iter: XorIter<'_>| {
        iter.take_while(|(ct, _)| *ct <= t)
            .find(|(ct, _)| *ct == t)
            .map(|(_, v)| v.to_bits())
    };
    for c in chunks.chain(s.closed) {
        if c.min_t <= t && t <= c.max_t {
            return in_chunk(XorIter::new(c.data));
        }
    }
    in_chunk(s.open.iter())
}

fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::{series_hash, MatchOp, STALE_NAN_BITS};

    fn key(l: &[(&str, &str)]) -> Vec<u8> {
        let mut k = Vec::new();
        sluice_core::put_series_key(&mut k, l.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        k
    }

    /// Creates `n` series `up{i="0"}`, `up{i="1"}`, … and returns their ids.
    fn up_series(h: &mut Head, n: u32) -> Vec<u32> {
        (0..n)
            .map(|i| {
                let v = i.to_string();
                let l = [("__name__", "up"), ("i", v.as_str())];
                h.create(series_hash("t", l), &key(&l))
            })
            .collect()
    }

    fn head_with(series: &[&[(&str, &str)]]) -> Head {
        let mut h = Head::new();
        for l in series {
            let id = h.create(series_hash("t", l.iter().copied()), &key(l));
            h.append(id, 1000, 1.0).unwrap();
        }
        h
    }

    #[test]
    fn finds_series_by_labels() {
        let l = [("__name__", "up"), ("job", "a")];
        let h = head_with(&[&l]);
        let hash = series_hash("t", l);
        assert_eq!(h.find(hash, &key(&l)), Some(0));
        let other = [("__name__", "up"), ("job", "b")];
        assert_eq!(h.find(hash, &key(&other)), None);
    }

    #[test]
    fn append_rules() {
        let mut h = head_with(&[&[("__name__", "up")]]);
        assert_eq!(h.append(0, 2000, 2.0), Ok(Appended::New));
        assert_eq!(h.append(0, 2000, 2.0), Ok(Appended::Repeat));
        assert_eq!(h.append(0, 1000, 1.0), Ok(Appended::Repeat));
        assert_eq!(h.append(0, 2000, 3.0), Err(Rejected::DuplicateTimestamp));
        assert_eq!(h.append(0, 1000, 5.0), Err(Rejected::DuplicateTimestamp));
        assert_eq!(
            h.append(0, 1500, 1.0),
            Err(Rejected::OutOfOrder { last_t: 2000 })
        );
        let stale = f64::from_bits(STALE_NAN_BITS);
        assert_eq!(h.append(0, 3000, stale), Ok(Appended::New));
        assert_eq!(h.append(0, 3000, stale), Ok(Appended::Repeat));
    }

    #[test]
    fn chunks_are_cut_and_read_back() {
        let mut h = head_with(&[&[("__name__", "up")]]);
        for i in 2..=500i64 {
            h.append(0, i * 1000, i as f64).unwrap();
        }
        let mut got = Vec::new();
        h.samples(0, i64::MIN, i64::MAX, |t, v| got.push((t, v)));
        assert_eq!(got.len(), 500);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, (t, v))| *t == (i as i64 + 1) * 1000 && *v == (i + 1) as f64));
        let per_chunk = chunk_target(h.hash(0)) as usize;
        assert!((104..=135).contains(&per_chunk));
        assert_eq!(h.chunks_of(0).count(), (500 - 1) / per_chunk);
        assert!(h
            .chunks_of(0)
            .all(|c| u16::from_be_bytes([c.data[0], c.data[1]]) as usize == per_chunk));
        // Retry of a sample deep in a closed chunk is recognised.
        assert_eq!(h.append(0, 7000, 7.0), Ok(Appended::Repeat));
        let mut window = Vec::new();
        h.samples(0, 10_000, 12_000, |t, _| window.push(t));
        assert_eq!(window, vec![10_000, 11_000, 12_000]);
    }

    #[test]
    fn a_spilling_head_reads_its_chunks_back_across_a_cut() {
        let hour = 3_600_000;
        let mut h = Head::with_block_range(hour);
        h.spill_chunks_to(tempfile::tempfile().unwrap());
        let ids = up_series(&mut h, 500);
        let value = |id: u32, t: i64| f64::from(id) * 1e6 + (t / 15_000) as f64;
        // Two and a half hours of a 15s scrape, cutting the first hour after 90 minutes.
        for round in 0..600i64 {
            let t = round * 15_000;
            for id in &ids {
                h.append(*id, t, value(*id, t)).unwrap();
            }
            if t == 90 * 60_000 {
                assert_eq!(h.prepare_cut(hour).len(), ids.len());
                for id in &ids {
                    let n: u16 = h
                        .chunks_before(*id, hour)
                        .map(|c| u16::from_be_bytes([c.data[0], c.data[1]]))
                        .sum();
                    assert_eq!(n, 240, "the first hour of series {id}");
                }
                assert_eq!(h.truncate(hour), 0);
            }
        }
        assert!(h.chunks.spilled() > 0, "full pages left the heap");
        assert!(
            h.chunks.resident() <= 3 * (64 << 10),
            "{} bytes of chunks in the heap",
            h.chunks.resident()
        );
        for id in &ids {
            let mut got = Vec::new();
            h.samples(*id, i64::MIN, i64::MAX, |t, v| got.push((t, v)));
            let want: Vec<(i64, f64)> = (240..600)
                .map(|r| (r * 15_000, value(*id, r * 15_000)))
                .collect();
            assert_eq!(got, want, "series {id}");
        }
        assert_eq!(h.time_range(), Some((hour, 599 * 15_000)));
    }

    #[test]
    fn chunks_never_span_a_block_boundary() {
        let mut h = Head::with_block_range(10_000);
        let l = [("__name__", "up")];
        let id = h.create(series_hash("t", l), &key(&l));
        for t in [1_000, 9_000, 10_000, 15_000, 19_999, 25_000, 33_000] {
            h.append(id, t, 1.0).unwrap();
        }
        let ranges: Vec<(i64, i64)> = h.chunks_of(id).map(|c| (c.min_t, c.max_t)).collect();
        assert_eq!(
            ranges,
            vec![(1_000, 9_000), (10_000, 19_999), (25_000, 25_000)]
        );
        assert_eq!(h.series[id as usize].open.first_time(), Some(33_000));
        let mut all = Vec::new();
        h.samples(id, i64::MIN, i64::MAX, |t, _| all.push(t));
        assert_eq!(
            all,
            vec![1_000, 9_000, 10_000, 15_000, 19_999, 25_000, 33_000]
        );
    }

    #[test]
    fn select_follows_prometheus_matcher_semantics() {
        let h = head_with(&[
            &[("__name__", "up"), ("job", "a")],
            &[("__name__", "up"), ("job", "b"), ("zone", "x")],
            &[("__name__", "down"), ("job", "a")],
        ]);
        let m = |n: &str, op, v: &str| Matcher::new(n, op, v).unwrap();
        assert_eq!(h.select(&[m("__name__", MatchOp::Equal, "up")]), vec![0, 1]);
        assert_eq!(
            h.select(&[
                m("__name__", MatchOp::Equal, "up"),
                m("job", MatchOp::NotEqual, "a")
            ]),
            vec![1]
        );
        assert_eq!(h.select(&[m("job", MatchOp::Regex, "a|b")]), vec![0, 1, 2]);
        assert_eq!(h.select(&[m("job", MatchOp::Regex, "a|")]), vec![0, 2]);
        // zone="" matches series without the label.
        assert_eq!(h.select(&[m("zone", MatchOp::Equal, "")]), vec![0, 2]);
        assert_eq!(h.select(&[m("zone", MatchOp::NotRegex, ".+")]), vec![0, 2]);
        assert_eq!(
            h.select(&[m("__name__", MatchOp::Equal, "nope")]),
            Vec::<u32>::new()
        );
        // Regex is anchored.
        assert_eq!(
            h.select(&[m("__name__", MatchOp::Regex, "u")]),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn appends_outside_the_window_or_before_persisted_data_are_out_of_bounds() {
        let mut h = Head::with_block_range(10_000);
        let a = [("__name__", "a")];
        let b = [("__name__", "b")];
        let ia = h.create(series_hash("t", a), &key(&a));
        let ib = h.create(series_hash("t", b), &key(&b));
        h.append(ia, 100_000, 1.0).unwrap();
        // Half a block range behind the newest sample is the oldest accepted.
        assert_eq!(h.append(ib, 95_000, 1.0), Ok(Appended::New));
        // Bounds come before order, as in Prometheus.
        assert_eq!(
            h.append(ib, 94_999, 1.0),
            Err(Rejected::OutOfBounds { min_t: 95_000 })
        );
        let c = [("__name__", "c")];
        let ic = h.create(series_hash("t", c), &key(&c));
        assert_eq!(
            h.append(ic, 94_999, 1.0),
            Err(Rejected::OutOfBounds { min_t: 95_000 })
        );
        // Replay follows the log, not the window; persisted data stays refused.
        assert_eq!(h.replay_append(ic, 94_999, 1.0), Ok(Appended::New));
        h.set_min_valid(99_000);
        let d = [("__name__", "d")];
        let id = h.create(series_hash("t", d), &key(&d));
        assert_eq!(
            h.replay_append(id, 98_999, 1.0),
            Err(Rejected::OutOfBounds { min_t: 99_000 })
        );
    }

    #[test]
    fn a_cut_hands_out_whole_chunks_in_label_order_then_frees_them() {
        let mut h = Head::with_block_range(10_000);
        let old = [("__name__", "z_old")];
        let both = [("__name__", "a_both"), ("job", "x")];
        let shorter = [("__name__", "a_both")];
        let io = h.create(series_hash("t", old), &key(&old));
        let ib = h.create(series_hash("t", both), &key(&both));
        let is = h.create(series_hash("t", shorter), &key(&shorter));
        for t in [1_000, 2_000, 9_999] {
            h.append(io, t, 1.0).unwrap();
            h.append(ib, t, 2.0).unwrap();
        }
        for t in [10_000, 14_000] {
            h.append(ib, t, 3.0).unwrap();
            h.append(is, t, 4.0).unwrap();
        }
        assert_eq!(h.time_range(), Some((1_000, 14_000)));
        // Label order: {__name__="a_both"} < {__name__="a_both", job="x"} < {z_old}.
        let ids = h.prepare_cut(10_000);
        assert_eq!(ids, vec![ib, io]);
        for id in [ib, io] {
            let chunks: Vec<_> = h.chunks_before(id, 10_000).collect();
            assert_eq!(chunks.len(), 1);
            assert_eq!((chunks[0].min_t, chunks[0].max_t), (1_000, 9_999));
        }
        // The cut boundary is now the oldest accepted time.
        assert_eq!(
            h.append(is, 9_000, 1.0),
            Err(Rejected::OutOfBounds { min_t: 10_000 })
        );
        let pages_before = h.chunks.resident();
        assert_eq!(
            h.truncate(10_000),
            1,
            "the series with only old samples is collected"
        );
        assert!(
            h.chunks.resident() < pages_before,
            "the persisted range's chunk pages are freed"
        );
        assert_eq!(h.num_series(), 2);
        assert_eq!(h.time_range(), Some((10_000, 14_000)));
        assert_eq!(h.find(series_hash("t", old), &key(&old)), None);
        let m = |n: &str, op, v: &str| Matcher::new(n, op, v).unwrap();
        assert_eq!(
            h.select(&[m("__name__", MatchOp::Regex, ".+")]),
            vec![ib, is]
        );
        let mut left = Vec::new();
        h.samples(ib, i64::MIN, i64::MAX, |t, _| left.push(t));
        assert_eq!(left, vec![10_000, 14_000]);
        // The same labels again make a new series with a new id.
        let again = h.create(series_hash("t", old), &key(&old));
        assert_eq!(again, 3);
        assert_eq!(h.find(series_hash("t", old), &key(&old)), Some(3));
    }

    #[test]
    fn short_eq_is_slice_equality() {
        let words: Vec<Vec<u8>> = (0..40)
            .flat_map(|n| {
                let base: Vec<u8> = (0..n as u8).map(|i| b'a' + i % 26).collect();
                let mut variants = vec![base.clone()];
                for at in 0..n {
                    let mut v = base.clone();
                    v[at] ^= 1;
                    variants.push(v);
                }
                variants
            })
            .collect();
        for a in &words {
            for b in &words {
                assert_eq!(short_eq(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    /// Two label sets with one 128-bit identity are two series, each found by its labels.
    #[test]
    fn one_identity_two_label_sets_two_series() {
        let mut h = Head::new();
        let same = Identity { hash: 7, check: 9 };
        let (x, y, z) = (
            key(&[("__name__", "x")]),
            key(&[("__name__", "y")]),
            key(&[("__name__", "z")]),
        );
        let ix = h.create_checked(same, &x);
        let iy = h.create_checked(same, &y);
        assert_ne!(ix, iy);
        assert_eq!(h.find_exact(7, 9, key_labels(&x)), Some(ix));
        assert_eq!(h.find_exact(7, 9, key_labels(&y)), Some(iy));
        assert_eq!(h.find_exact(7, 9, key_labels(&z)), None);
        assert_eq!(h.find_exact(7, 8, key_labels(&x)), None);
    }

    /// Replay binds ids as the log names them: gaps become placeholders, a placeholder may be
    /// bound later (postings stay sorted), a live id is left alone, and reserved ids are never
    /// handed out.
    #[test]
    fn replay_binds_placeholders_and_reserved_ids_stay_taken() {
        let mut h = Head::new();
        let l = |i: u32| {
            let v = i.to_string();
            let l = [("__name__", "up"), ("i", v.as_str())];
            (series_hash("t", l), key(&l))
        };
        let (h2, k2) = l(2);
        assert!(h.create_with_id(2, h2, &k2));
        assert_eq!((h.id_limit(), h.num_series()), (3, 1));
        assert!(!h.is_live(0) && !h.is_live(1));
        let (h0, k0) = l(0);
        assert!(h.create_with_id(0, h0, &k0));
        let (h9, k9) = l(9);
        assert!(!h.create_with_id(2, h9, &k9), "a live id keeps its series");
        assert!(h.key_matches(2, &k2));
        h.reserve_ids(10);
        assert_eq!(h.id_limit(), 10);
        let (h5, k5) = l(5);
        assert_eq!(h.create(h5, &k5), 10);
        let m = |n: &str, op, v: &str| Matcher::new(n, op, v).unwrap();
        assert_eq!(
            h.select(&[m("__name__", MatchOp::Equal, "up")]),
            vec![0, 2, 10]
        );
        assert_eq!(
            h.select(&[
                m("__name__", MatchOp::Equal, "up"),
                m("i", MatchOp::Regex, "0|5")
            ]),
            vec![0, 10]
        );
        assert_eq!(h.find(h0, &k0), Some(0));
        // Reserving below the limit changes nothing.
        h.reserve_ids(4);
        assert_eq!(h.id_limit(), 11);
    }

    #[test]
    fn a_series_stays_small() {
        // Paid by every active series (100k series: 100 bytes here are 10% of the RSS
        // target): labels 8, hashes 16, newest closed chunk 8, open chunk 56.
        assert!(std::mem::size_of::<Series>() <= 88);
    }

    #[test]
    fn churned_series_do_not_keep_their_labels() {
        let mut h = Head::with_block_range(10_000);
        // Generation after generation of series, each living one block range: old ones are
        // collected at every cut, and their labels must not pile up.
        for gen in 0..20u32 {
            let t = i64::from(gen) * 10_000;
            for i in gen * 100..gen * 100 + 100 {
                let pod = i.to_string();
                let l = [("__name__", "churn"), ("pod", pod.as_str())];
                let id = h.create(series_hash("t", l), &key(&l));
                h.append(id, t + 1, 1.0).unwrap();
            }
            h.prepare_cut(t);
            h.truncate(t);
            assert!(
                h.label_sets.stored_values() <= 4 * 200,
                "labels of collected series are dropped"
            );
            assert!(
                h.chunks.resident() <= 4 * 4096,
                "chunk pages of persisted ranges are freed"
            );
        }
        assert_eq!(h.num_series(), 100);
        for id in 1900..2000u32 {
            let pod = id.to_string();
            assert!(
                h.key_matches(id, &key(&[("__name__", "churn"), ("pod", pod.as_str())])),
                "series {id} keeps its own labels"
            );
        }
        assert!(!h.is_live(0));
    }

    #[test]
    fn series_scraped_in_step_cut_their_chunks_in_different_rounds() {
        let mut h = Head::new();
        let ids = up_series(&mut h, 1000);
        let mut most = 0;
        for round in 0..480i64 {
            let before: Vec<usize> = ids.iter().map(|id| h.chunks_of(*id).count()).collect();
            for id in &ids {
                h.append(*id, 1_000 + round * 15_000, 1.0).unwrap();
            }
            let cut = ids
                .iter()
                .zip(&before)
                .filter(|(id, n)| h.chunks_of(**id).count() > **n)
                .count();
            most = most.max(cut);
        }
        // All 1000 in one round with a single count; an eighth at most with 32.
        assert!(
            most <= 1000 / 8 + 30,
            "{most} series cut a chunk in one round"
        );
    }
}
