//! The in-memory head block of one (core, tenant): series, XOR chunks and postings.
//!
//! Owns series identity (portable hash → id, ids dense and equal to the WAL's), the
//! append rules (in-order, idempotent repeats, 409-worthy conflicts), chunk cutting, the
//! symbol table and the inverted index used by queries. Must not do I/O (beyond its chunk
//! arena spilling closed chunks to the file it is given) or know about other cores: the
//! tenant logs what the head accepted.
//!
//! As Prometheus keeps `head_append.go` and `head_read.go` apart from `head.go`, the head is
//! one type in five files: this one (its data and sizes), [`index`](self::index) (finding and
//! creating series), [`append`](self::append) (the append rules), [`read`](self::read)
//! (labels, samples, selection) and [`cut`](self::cut) (what leaves after a block cut); the
//! structures it is built of sit beside them: [`chunk_arena`], [`series_index`],
//! [`label_store`], [`symbols`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use sluice_storage::xor::{XorChunk, XorIter};

mod append;
pub mod chunk_arena;
mod cut;
mod index;
pub mod label_store;
mod read;
pub mod series_index;
pub mod symbols;
#[cfg(test)]
mod tests;

use chunk_arena::{ChunkArena, ChunkRef};
use label_store::{LabelStore, Labels};
use series_index::SeriesIndex;
use symbols::Symbols;

/// Samples per head chunk before it is cut (Prometheus' target), on average: see
/// [`chunk_target`].
pub const SAMPLES_PER_CHUNK: u16 = 120;

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

pub use chunk_arena::Chunk as ClosedChunk;

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
    /// through a map of it (see `ChunkArena::spill_to`).
    pub fn spill_chunks_to(&mut self, file: std::fs::File) {
        self.chunks.spill_to(file);
    }

    /// Bytes of closed chunks in the heap, and in the spill file.
    pub fn chunk_bytes(&self) -> (usize, usize) {
        (self.chunks.resident(), self.chunks.spilled())
    }

    /// Reads of spilled chunks that failed their check (see `ChunkArena::corrupt`).
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
}
