//! The head's append side: Prometheus' append rules (in order, idempotent repeats, conflicts
//! and out-of-bounds samples refused) and cutting chunks (at a per-series sample count, never
//! across a block boundary).
//!
//! Owns the append rules. Must not look series up or read samples for queries.
use sluice_storage::xor::XorIter;

use super::chunk_arena::ChunkArena;
use super::{Appended, Head, Rejected, Series, SAMPLES_PER_CHUNK};

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
pub(super) fn chunk_target(hash: u64) -> u16 {
    SAMPLES_PER_CHUNK - 16 + (hash >> 59) as u16
}

impl Head {
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
}

/// Moves a series' open chunk (if it has samples) to the end of its closed chunks.
pub(super) fn close_open(s: &mut Series, chunks: &mut ChunkArena, block_range_ms: i64) {
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
