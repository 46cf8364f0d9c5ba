//! The head's index side: finding a series by its identity and confirming it by its labels,
//! creating series (live and during replay), and the prefetch hints the ingest path issues a
//! few series ahead.
//!
//! Owns series identity and the posting lists a new series joins. Must not append samples or
//! read them.
use sluice_core::{check_hash, key_labels, Identity};
use sluice_storage::xor::XorChunk;

use super::chunk_arena::ChunkRef;
use super::series_index::prefetch;
use super::{Head, Series};

impl Head {
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
}

/// `a == b` for the short strings label names and values are: word compares inline instead
/// of a call to `memcmp` per string (twenty of them per series looked up, on every append).
#[inline(always)]
pub(super) fn short_eq(a: &[u8], b: &[u8]) -> bool {
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
