//! A core's memory of the label bytes it has accepted: a fingerprint of a series' raw label
//! fields, exactly as they arrive in a request, maps to the series' [`Identity`].
//!
//! A sender sends each series again every scrape, with byte-identical label fields, so
//! nearly every series of a request is one this core has seen. Recognising its bytes spares
//! parsing each label, validating the set, building its key and hashing that key twice:
//! about a third of a core's ingest time.
//!
//! Owns the table and the fingerprint. Must not validate labels or hash keys: the decoder
//! looks entries up (and does not validate again what it finds), and the ingest path inserts
//! them only for series the decoder validated and whose key it hashed.
//!
//! The fingerprint is 128 bits of xxh3, seeded with a secret per table mixed with the tenant.
//! Two different label encodings share one with probability ~n²/2¹²⁹ (the argument of the
//! head's 128-bit identity), and a sender cannot aim for it without the seed. Two encodings
//! of one label set (fields in another order) simply get two entries with the same identity.

use xxhash_rust::xxh3::{xxh3_128_with_seed, xxh3_64_with_seed};

use crate::hash::Identity;

/// 128 bits identifying a series' label bytes (never all zero: that marks a free slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u64; 2]);

#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
struct Slot {
    fp: [u64; 2],
    id: Identity,
}

/// The identity of a poisoned fingerprint. A real series with this identity is only ever
/// decoded in full, which is slower, never wrong.
const POISONED: Identity = Identity {
    hash: u64::MAX,
    check: u64::MAX,
};

/// Slots of a new table (32 KiB).
const MIN_SLOTS: usize = 1024;

/// The most slots a table grows to (128 MiB): at that size it starts again empty rather
/// than grow, so a core whose series churn without end keeps bounded memory.
const MAX_SLOTS: usize = 1 << 22;

/// Fingerprint → identity, open addressing with linear probing over one flat array (so that
/// the decoder can prefetch a slot while it reads the next series), at most 4/5 full.
pub struct KnownSeries {
    slots: Vec<Slot>,
    len: usize,
    seed: u64,
    /// Fingerprints never to trust again; they outlive [`clear`](Self::clear) (a collision
    /// does not go away with a head cut).
    poisoned: Vec<Fingerprint>,
}

impl Default for KnownSeries {
    fn default() -> Self {
        Self::new()
    }
}

impl KnownSeries {
    /// An empty table with a fresh secret seed.
    pub fn new() -> Self {
        use std::hash::BuildHasher;
        KnownSeries {
            slots: Vec::new(),
            len: 0,
            seed: std::collections::hash_map::RandomState::new().hash_one(0xfeed_u64),
            poisoned: Vec::new(),
        }
    }

    /// Number of label encodings remembered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The seed of `tenant`'s fingerprints: the same label bytes of two tenants are two
    /// series (the tenant is part of the portable hash).
    pub fn tenant_seed(&self, tenant: &[u8]) -> u64 {
        xxh3_64_with_seed(tenant, self.seed)
    }

    /// The fingerprint of a series' label fields, with `tenant_seed` from
    /// [`tenant_seed`](Self::tenant_seed).
    #[inline]
    pub fn fingerprint(tenant_seed: u64, label_fields: &[u8]) -> Fingerprint {
        let h = xxh3_128_with_seed(label_fields, tenant_seed);
        let fp = [h as u64, (h >> 64) as u64];
        Fingerprint(if fp == [0, 0] { [1, 0] } else { fp })
    }

    #[inline]
    fn home(&self, fp: Fingerprint) -> usize {
        fp.0[0] as usize & (self.slots.len() - 1)
    }

    /// Asks the CPU to fetch `fp`'s slot into cache (a hint; never faults).
    #[inline]
    pub fn prefetch(&self, fp: Fingerprint) {
        if !self.slots.is_empty() {
            crate::prefetch::prefetch(&self.slots[self.home(fp)]);
        }
    }

    /// The identity remembered for `fp` (none for a poisoned one).
    #[inline]
    pub fn get(&self, fp: Fingerprint) -> Option<Identity> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(fp);
        loop {
            let s = &self.slots[i];
            if s.fp == fp.0 {
                return (s.id != POISONED).then_some(s.id);
            }
            if s.fp == [0, 0] {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Remembers that the label bytes of `fp` are the series `id` (unless `fp` is poisoned).
    pub fn insert(&mut self, fp: Fingerprint, id: Identity) {
        self.put(fp, id, false);
    }

    /// Never trusts `fp` again: two label sets share it (the owning core found the labels it
    /// stood for were not the request's). Their series are decoded in full from then on.
    pub fn poison(&mut self, fp: Fingerprint) {
        if !self.poisoned.contains(&fp) {
            self.poisoned.push(fp);
        }
        self.put(fp, POISONED, true);
    }

    /// Puts the poisoned fingerprints back into an emptied table.
    fn repoison(&mut self) {
        for fp in std::mem::take(&mut self.poisoned) {
            self.poison(fp);
        }
    }

    fn put(&mut self, fp: Fingerprint, id: Identity, overwrite_poison: bool) {
        if (self.len + 1) * 5 > self.slots.len() * 4 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(fp);
        loop {
            let s = &mut self.slots[i];
            if s.fp == fp.0 {
                if s.id != POISONED || overwrite_poison {
                    s.id = id;
                }
                return;
            }
            if s.fp == [0, 0] {
                *s = Slot { fp: fp.0, id };
                self.len += 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Forgets everything and frees the table (a head cut: series that stopped coming should
    /// not hold memory here; the live ones come back within a scrape).
    pub fn clear(&mut self) {
        self.slots = Vec::new();
        self.len = 0;
        self.repoison();
    }

    fn grow(&mut self) {
        if self.slots.len() >= MAX_SLOTS {
            self.slots.fill(Slot::default());
            self.len = 0;
            self.repoison();
            return;
        }
        let size = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); size]);
        self.len = 0;
        for s in old {
            if s.fp != [0, 0] {
                self.put(Fingerprint(s.fp), s.id, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> Identity {
        Identity { hash: n, check: !n }
    }

    #[test]
    fn remembers_what_it_was_told_across_growth() {
        let mut k = KnownSeries::new();
        let seed = k.tenant_seed(b"t");
        let fps: Vec<Fingerprint> = (0..10_000u32)
            .map(|i| KnownSeries::fingerprint(seed, &i.to_le_bytes()))
            .collect();
        for (i, fp) in fps.iter().enumerate() {
            assert_eq!(k.get(*fp), None);
            k.insert(*fp, id(i as u64));
        }
        assert_eq!(k.len(), 10_000);
        for (i, fp) in fps.iter().enumerate() {
            assert_eq!(k.get(*fp), Some(id(i as u64)));
        }
        k.insert(fps[7], id(70));
        assert_eq!((k.get(fps[7]), k.len()), (Some(id(70)), 10_000));
        k.clear();
        assert_eq!((k.get(fps[7]), k.len(), k.slots.capacity()), (None, 0, 0));
    }

    #[test]
    fn a_poisoned_fingerprint_is_never_trusted_again() {
        let mut k = KnownSeries::new();
        let seed = k.tenant_seed(b"t");
        let fps: Vec<Fingerprint> = (0..3000u32)
            .map(|i| KnownSeries::fingerprint(seed, &i.to_le_bytes()))
            .collect();
        k.insert(fps[0], id(1));
        k.poison(fps[0]);
        k.poison(fps[1]);
        assert_eq!((k.get(fps[0]), k.get(fps[1])), (None, None));
        // Re-learning the same bytes does not bring them back, even across growth.
        k.insert(fps[0], id(2));
        for (i, fp) in fps.iter().enumerate().skip(2) {
            k.insert(*fp, id(i as u64));
        }
        assert_eq!((k.get(fps[0]), k.get(fps[1])), (None, None));
        assert_eq!(k.get(fps[2]), Some(id(2)));
        // A head cut empties the table, not the poison.
        k.clear();
        k.insert(fps[0], id(3));
        assert_eq!((k.get(fps[0]), k.get(fps[1])), (None, None));
    }

    #[test]
    fn tenants_get_different_fingerprints() {
        let k = KnownSeries::new();
        let bytes = b"\x0a\x08\x0a\x02up\x12\x02ok";
        assert_ne!(
            KnownSeries::fingerprint(k.tenant_seed(b"a"), bytes),
            KnownSeries::fingerprint(k.tenant_seed(b"b"), bytes)
        );
        assert_eq!(
            KnownSeries::fingerprint(k.tenant_seed(b"a"), bytes),
            KnownSeries::fingerprint(k.tenant_seed(b"a"), bytes)
        );
    }
}
