//! The head's map from a series' portable hash to its id: open addressing with linear
//! probing over one flat array, so that the ingest path can prefetch the slot of a series it
//! will look up a few series later (a general-purpose hash map cannot be prefetched, and
//! with 100k+ series every lookup was a cache miss: 12% of a receiving core).
//!
//! Owns only the slot layout and probing. Must not know what an id refers to; the head
//! resolves hash collisions (two series, one hash) itself.

pub use sluice_core::prefetch::prefetch;

/// A slot: hash (two `u32` halves, to keep the slot at 12 bytes) and id; `EMPTY` id if free.
#[derive(Clone, Copy)]
struct Slot {
    hash_lo: u32,
    hash_hi: u32,
    id: u32,
}

const EMPTY: u32 = u32::MAX;

const FREE: Slot = Slot {
    hash_lo: 0,
    hash_hi: 0,
    id: EMPTY,
};

impl Slot {
    #[inline]
    fn hash(&self) -> u64 {
        (self.hash_hi as u64) << 32 | self.hash_lo as u64
    }
}

/// Map from 64-bit hash to `u32` id (`u32::MAX` is not a valid id). The hashes are
/// xxhash64 outputs, so their bits are used as they are.
#[derive(Default)]
pub struct SeriesIndex {
    slots: Vec<Slot>,
    len: usize,
}

impl SeriesIndex {
    /// Number of entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        // The low bits also pick the node and core; the high bits are independent of them.
        ((hash >> 32) ^ hash.rotate_left(17)) as usize & self.mask()
    }

    /// Asks the CPU to fetch the slot of `hash` into cache (a hint; never faults).
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        if !self.slots.is_empty() {
            prefetch(&self.slots[self.home(hash)]);
        }
    }

    /// The id stored for `hash`.
    #[inline]
    pub fn get(&self, hash: u64) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(hash);
        loop {
            let s = self.slots[i];
            if s.id == EMPTY {
                return None;
            }
            if s.hash() == hash {
                return Some(s.id);
            }
            i = (i + 1) & mask;
        }
    }

    /// Stores `id` for `hash` (which must not be present).
    pub fn insert(&mut self, hash: u64, id: u32) {
        debug_assert!(id != EMPTY && self.get(hash).is_none());
        // Grow at 4/5, as the decoder's table of known series does: a hit then probes ~3
        // slots (36 bytes, one or two cache lines) and a miss, which only a new series pays,
        // ~13. Linear probing degrades quickly beyond.
        if (self.len + 1) * 5 > self.slots.len() * 4 {
            self.grow();
        }
        self.place(hash, id);
        self.len += 1;
    }

    fn place(&mut self, hash: u64, id: u32) {
        let mask = self.mask();
        let mut i = self.home(hash);
        while self.slots[i].id != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = Slot {
            hash_lo: hash as u32,
            hash_hi: (hash >> 32) as u32,
            id,
        };
    }

    fn grow(&mut self) {
        let cap = (self.slots.len() * 2).max(1024);
        let old = std::mem::replace(&mut self.slots, vec![FREE; cap]);
        for s in old.into_iter().filter(|s| s.id != EMPTY) {
            self.place(s.hash(), s.id);
        }
    }

    /// Replaces the id stored for `hash` (which must be present).
    #[cfg(test)]
    pub fn replace(&mut self, hash: u64, id: u32) {
        if let Some(i) = self.position(hash) {
            self.slots[i].id = id;
        }
    }

    /// Removes `hash`, returning its id.
    pub fn remove(&mut self, hash: u64) -> Option<u32> {
        let mut hole = self.position(hash)?;
        let id = self.slots[hole].id;
        self.len -= 1;
        // Backward-shift deletion: move later entries of the probe run into the hole when
        // their home is not between the hole and them, so that no tombstones are needed.
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s.id == EMPTY {
                break;
            }
            let home = self.home(s.hash());
            let between = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !between {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = FREE;
        Some(id)
    }

    fn position(&self, hash: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(hash);
        loop {
            let s = &self.slots[i];
            if s.id == EMPTY {
                return None;
            }
            if s.hash() == hash {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Random inserts and removes, checked against a `HashMap`, with hashes crowded into few
    /// home slots so that probe runs wrap around and deletions shift entries.
    #[test]
    fn behaves_like_a_map() {
        let mut ix = SeriesIndex::default();
        let mut model: HashMap<u64, u32> = HashMap::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for step in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct values in the bits that pick the home slot.
            let hash = x & 0xffff_0000_0000_00ff;
            match x % 3 {
                0 | 1 => {
                    if let std::collections::hash_map::Entry::Vacant(e) = model.entry(hash) {
                        e.insert(step);
                        ix.insert(hash, step);
                    }
                }
                _ => {
                    let victim = model.keys().next().copied();
                    if let Some(h) = victim {
                        assert_eq!(ix.remove(h), model.remove(&h));
                    }
                    assert_eq!(ix.remove(hash), model.remove(&hash));
                }
            }
            assert_eq!(ix.len(), model.len());
            if step % 1000 == 0 {
                for (h, id) in &model {
                    assert_eq!(ix.get(*h), Some(*id));
                }
            }
        }
        for (h, id) in &model {
            assert_eq!(ix.get(*h), Some(*id));
            ix.replace(*h, id + 1);
            assert_eq!(ix.get(*h), Some(id + 1));
        }
        assert_eq!(ix.get(12345), None);
    }
}
