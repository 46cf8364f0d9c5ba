//! The head's persistence side: closing what a block takes, handing out its chunks in label
//! order, and letting go of persisted ranges (collecting series left without samples).
//!
//! Owns what leaves the head after a block cut. Must not write blocks (the cut does).
use super::append::close_open;
use super::chunk_arena::Chain;
use super::chunk_arena::ChunkRef;
use super::{ClosedChunk, Head, Series};

impl Head {
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
    pub(super) fn chunks_of(&self, id: u32) -> Chain<'_> {
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
}
