//! The portable series hash and the choice of owning core.
//!
//! Owns the canonical byte encoding that identifies a series across machines, builds and
//! restarts (xxhash64, as Thanos' `HashWithPrefix`) and the map from hash to core. Must stay
//! stable forever: WAL replay, the hashring and other implementations depend on it. Never use
//! it for in-process maps (ahash is faster there).

use std::sync::OnceLock;

use xxhash_rust::xxh3::xxh3_64_with_seed;
use xxhash_rust::xxh64::Xxh64;

/// Separator byte between the parts of a series identity (as Prometheus' `labels.Hash`).
pub const SEP: u8 = 0xff;

/// Hash of a whole series: tenant plus labels in ascending name order. Convenience for cold
/// paths (replay, re-layout, tests); the ingest path builds keys with [`put_series_key`] into a
/// reused buffer and hashes them with a [`TenantHasher`].
pub fn series_hash<'a, I>(tenant: &str, labels: I) -> u64
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut key = Vec::new();
    put_series_key(
        &mut key,
        labels
            .into_iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes())),
    );
    TenantHasher::new(tenant.as_bytes()).hash_key(&key)
}

/// Appends a series key — the label part of the canonical encoding,
/// `(name 0xff value 0xff)*` — to `out`. The key identifies a series within a tenant: a head
/// compares it with one `memcmp`, and 0xff can never occur inside a label (it is not valid
/// UTF-8), so the key also splits back into labels unambiguously ([`key_labels`]).
#[inline]
pub fn put_series_key<'a, I>(out: &mut Vec<u8>, labels: I)
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    for (n, v) in labels {
        out.extend_from_slice(n);
        out.push(SEP);
        out.extend_from_slice(v);
        out.push(SEP);
    }
}

/// Appends `tenant 0xff` and then the key of `labels` to `out`, and returns the series hash
/// and where the key starts. The ingest path's way to build a key: hashing the contiguous
/// bytes at once is cheaper than streaming them into a hasher (as [`TenantHasher`] does),
/// and the tenant prefix in a scratch buffer costs nothing.
#[inline]
pub fn put_hashed_series_key<'a, I>(out: &mut Vec<u8>, tenant: &[u8], labels: I) -> (u64, usize)
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let start = out.len();
    out.extend_from_slice(tenant);
    out.push(SEP);
    let key_start = out.len();
    put_series_key(out, labels);
    (xxhash_rust::xxh64::xxh64(&out[start..], 0), key_start)
}

/// What identifies a series within a process: its portable hash (which also places it on a
/// node and a core) and its check hash ([`check_hash`]). Two distinct label sets of a tenant
/// share both with probability ~n²/2¹²⁹, so a head compares these 128 bits, not labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Identity {
    pub hash: u64,
    pub check: u64,
}

/// The second hash of a series key: xxh3 with a secret seed drawn once per process, so a
/// sender cannot aim for a collision with the portable hash, whose function is public. One
/// seed for the whole process (not one per core), so that any core can compute it for a
/// series another core owns. Never persisted: a restart recomputes it from the labels.
#[inline]
pub fn check_hash(key: &[u8]) -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
    });
    xxh3_64_with_seed(key, seed)
}

/// A hasher already fed with `tenant 0xff`: clone it per series and feed the key.
#[derive(Clone)]
pub struct TenantHasher(Xxh64);

impl TenantHasher {
    pub fn new(tenant: &[u8]) -> Self {
        let mut h = Xxh64::new(0);
        h.update(tenant);
        h.update(&[SEP]);
        TenantHasher(h)
    }

    /// The series hash of a key built by [`put_series_key`].
    #[inline]
    pub fn hash_key(&self, key: &[u8]) -> u64 {
        let mut h = self.0.clone();
        h.update(key);
        h.digest()
    }
}

/// The labels of a series key, as (name, value) bytes.
#[derive(Clone)]
pub struct KeyLabels<'a> {
    rest: &'a [u8],
}

/// Splits a series key back into its labels.
#[inline]
pub fn key_labels(key: &[u8]) -> KeyLabels<'_> {
    KeyLabels { rest: key }
}

impl<'a> Iterator for KeyLabels<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let n_end = self.rest.iter().position(|b| *b == SEP)?;
        let name = &self.rest[..n_end];
        let after = &self.rest[n_end + 1..];
        let v_end = after.iter().position(|b| *b == SEP).unwrap_or(after.len());
        let value = &after[..v_end];
        self.rest = after.get(v_end + 1..).unwrap_or(&[]);
        Some((name, value))
    }
}

/// The core (of `cores`) that owns a series of this hash.
///
/// The node ring uses `hash mod nodes`, so the hashes that reach one node share a residue;
/// taking `hash mod cores` again would pile them onto a few cores. The hash is therefore
/// remixed (splitmix64 finalizer) and placed with jump consistent hashing (Lamping & Veach),
/// which also moves only ~1/n of the series when the core count changes.
#[inline]
pub fn core_for_hash(hash: u64, cores: usize) -> usize {
    debug_assert!(cores > 0);
    let mut key = hash ^ 0x9E37_79B9_7F4A_7C15;
    key = (key ^ (key >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    key = (key ^ (key >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    key ^= key >> 31;
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < cores as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b.wrapping_add(1) as f64) * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED_HASH: u64 = 6_922_102_804_602_007_019;
    const PINNED_CORE: usize = 2;

    #[test]
    fn hash_is_the_documented_encoding() {
        let mut bytes = b"t\xff".to_vec();
        bytes.extend_from_slice(b"__name__\xffup\xffjob\xffnode\xff");
        let expected = xxhash_rust::xxh64::xxh64(&bytes, 0);
        assert_eq!(
            series_hash("t", [("__name__", "up"), ("job", "node")]),
            expected
        );
    }

    #[test]
    fn hashed_keys_hash_like_the_streaming_hasher() {
        let labels = [("__name__", "up"), ("instance", "10.0.0.1:9100")];
        let mut out = b"junk".to_vec();
        let (hash, at) = put_hashed_series_key(
            &mut out,
            b"tenant-a",
            labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        );
        assert_eq!(
            &out[at..],
            b"__name__\xffup\xffinstance\xff10.0.0.1:9100\xff"
        );
        assert_eq!(hash, series_hash("tenant-a", labels));
        assert_eq!(hash, TenantHasher::new(b"tenant-a").hash_key(&out[at..]));
    }

    #[test]
    fn keys_hash_like_labels_and_split_back() {
        let labels = [
            ("__name__", "up"),
            ("instance", "10.0.0.1:9100"),
            ("job", ""),
        ];
        let bytes = labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        let mut key = Vec::new();
        put_series_key(&mut key, bytes.clone());
        assert_eq!(
            TenantHasher::new(b"t").hash_key(&key),
            series_hash("t", labels)
        );
        assert_eq!(
            key_labels(&key).collect::<Vec<_>>(),
            bytes.collect::<Vec<_>>()
        );
        assert_eq!(key_labels(b"").count(), 0);
    }

    #[test]
    fn hash_is_stable_across_builds() {
        // Pinned values: if these change, every WAL layout and ring placement changes too.
        let h = series_hash("default-tenant", [("__name__", "up"), ("job", "node")]);
        assert_eq!(h, PINNED_HASH);
        assert_eq!(core_for_hash(h, 7), PINNED_CORE);
    }

    #[test]
    fn cores_are_balanced_even_for_one_node_residue() {
        let cores = 4;
        let mut counts = [0usize; 4];
        // Only hashes that are 0 mod 4, as a node of a 4-node hashmod ring would see.
        for i in 0..40_000u64 {
            let h = xxhash_rust::xxh64::xxh64(&i.to_le_bytes(), 0) & !3;
            counts[core_for_hash(h, cores)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "unbalanced: {counts:?}");
        }
    }

    #[test]
    fn jump_hash_moves_few_keys() {
        let moved = (0..10_000u64)
            .filter(|i| core_for_hash(*i, 4) != core_for_hash(*i, 5))
            .count();
        assert!(moved < 2_600, "moved {moved}");
    }
}
