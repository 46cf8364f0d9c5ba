//! Series batches as an owning core sees them: either borrowed from a decoded request on the
//! same core, or copied into one owned buffer to travel to another core.
//!
//! A series travels as its key (`(name 0xff value 0xff)*`, see `sluice_core::put_series_key`)
//! plus its hash and samples: the owning core finds it in its head with one hash lookup and
//! one `memcmp`. Owns the compact cross-core layout (little-endian, one byte buffer and one
//! index per destination core per request, nothing per series). Must not validate: batches
//! only ever hold series the decoder already accepted.

use sluice_core::{check_hash, key_labels, Sample, WriteRequestRef};

/// A label as (name, value) bytes.
pub type LabelBytes<'a> = (&'a [u8], &'a [u8]);

/// Series handed to an owning core for appending. Implementations are read twice (ids first,
/// then samples), so they must be cheap to re-iterate.
pub trait SeriesBatch {
    /// Number of series.
    fn len(&self) -> usize;
    /// Whether there are no series.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The portable hash of series `i`.
    fn hash(&self, i: usize) -> u64;
    /// The check hash of series `i` ([`sluice_core::Identity`]).
    fn check(&self, i: usize) -> u64 {
        check_hash(self.key(i, &mut Vec::new()))
    }
    /// The key of series `i`: borrowed from the batch, or built into `scratch` when the
    /// batch holds none (a series the decoder recognised by its bytes has no key until one
    /// is needed: on most appends it is not). `sluice_core::key_labels` splits it.
    fn key<'s>(&'s self, i: usize, scratch: &'s mut Vec<u8>) -> &'s [u8];
    /// Samples of series `i`, in request order.
    fn samples(&self, i: usize) -> impl Iterator<Item = Sample>;
    /// The labels of series `i` in key order, to compare with a stored series: borrowed
    /// from where the batch holds them (a known series' request bytes) without building a
    /// key where it has none.
    fn labels<'s>(
        &'s self,
        i: usize,
        scratch: &'s mut Vec<u8>,
    ) -> impl Iterator<Item = LabelBytes<'s>> + Clone + 's {
        key_labels(self.key(i, scratch))
    }
}

/// Labels from a request or from a key.
#[derive(Clone)]
pub enum EitherLabels<'a> {
    Request(sluice_core::LabelBytesIter<'a>),
    Key(sluice_core::KeyLabels<'a>),
}

impl<'a> Iterator for EitherLabels<'a> {
    type Item = LabelBytes<'a>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            EitherLabels::Request(it) => it.next(),
            EitherLabels::Key(it) => it.next(),
        }
    }
}

/// The key range of a series whose key was not built.
pub const NO_KEY: (u32, u32) = (u32::MAX, u32::MAX);

/// Series of a decoded request: samples borrowed from it, keys and hashes from the routing
/// pass (one entry per request series).
pub struct RequestBatch<'a> {
    pub req: &'a WriteRequestRef,
    /// The decoded payload `req` points into.
    pub buf: &'a [u8],
    /// Portable and check hash of every request series.
    pub hashes: &'a [u64],
    pub checks: &'a [u64],
    /// Key bytes of the request series, and each one's range in them ([`NO_KEY`] for a
    /// known series: its key is built from the payload when needed).
    pub keys: &'a [u8],
    pub key_ranges: &'a [(u32, u32)],
}

impl SeriesBatch for RequestBatch<'_> {
    fn len(&self) -> usize {
        self.hashes.len()
    }

    fn hash(&self, i: usize) -> u64 {
        self.hashes[i]
    }

    fn check(&self, i: usize) -> u64 {
        self.checks[i]
    }

    fn key<'s>(&'s self, i: usize, scratch: &'s mut Vec<u8>) -> &'s [u8] {
        let (start, end) = self.key_ranges[i];
        if (start, end) == NO_KEY {
            scratch.clear();
            self.req.put_key(self.buf, i, scratch);
            return scratch;
        }
        &self.keys[start as usize..end as usize]
    }

    fn samples(&self, i: usize) -> impl Iterator<Item = Sample> {
        self.req.series_samples(&self.req.series[i]).iter().copied()
    }

    fn labels<'s>(
        &'s self,
        i: usize,
        _: &'s mut Vec<u8>,
    ) -> impl Iterator<Item = LabelBytes<'s>> + Clone + 's {
        let (start, end) = self.key_ranges[i];
        if (start, end) == NO_KEY {
            return EitherLabels::Request(self.req.label_bytes(self.buf, i));
        }
        EitherLabels::Key(key_labels(&self.keys[start as usize..end as usize]))
    }
}

/// Some of another batch's series, by index: the share of a batch one core owns, without
/// copying it.
pub struct Subset<'a, B> {
    pub batch: &'a B,
    pub indexes: &'a [u32],
}

impl<B: SeriesBatch> SeriesBatch for Subset<'_, B> {
    fn len(&self) -> usize {
        self.indexes.len()
    }

    fn hash(&self, i: usize) -> u64 {
        self.batch.hash(self.indexes[i] as usize)
    }

    fn check(&self, i: usize) -> u64 {
        self.batch.check(self.indexes[i] as usize)
    }

    fn key<'s>(&'s self, i: usize, scratch: &'s mut Vec<u8>) -> &'s [u8] {
        self.batch.key(self.indexes[i] as usize, scratch)
    }

    fn samples(&self, i: usize) -> impl Iterator<Item = Sample> {
        self.batch.samples(self.indexes[i] as usize)
    }

    fn labels<'s>(
        &'s self,
        i: usize,
        scratch: &'s mut Vec<u8>,
    ) -> impl Iterator<Item = LabelBytes<'s>> + Clone + 's {
        self.batch.labels(self.indexes[i] as usize, scratch)
    }
}

/// Where one series sits in a batch's bytes.
#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u64,
    key_at: u32,
    key_len: u32,
    samples_at: u32,
    n_samples: u32,
}

/// Where each series of a batch sits in a byte buffer: its key bytes, and its samples as
/// 16-byte `(i64 t, u64 value bits)` little-endian records ([`put_samples`]). The buffer is
/// kept elsewhere: [`OwnedBatch`] owns its bytes, the replication RPC's write frames are read
/// in place. Offsets are `u32`: a batch is one request's share, far below 4 GiB.
#[derive(Debug, Default)]
pub struct SeriesSpans {
    entries: Vec<Entry>,
    samples: usize,
}

impl SeriesSpans {
    /// Forgets every series.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.samples = 0;
    }

    /// Makes room for `n` more series (exactly: the caller reserved memory for them).
    pub fn reserve(&mut self, n: usize) {
        self.entries.reserve_exact(n);
    }

    /// Bytes the index holds (its capacity).
    pub fn capacity_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    /// Bytes of index per series.
    pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

    /// Records a series whose key is `bytes[key_at..key_at + key_len]` and whose
    /// `n_samples` samples start at `bytes[samples_at]`.
    pub fn push(
        &mut self,
        hash: u64,
        key_at: usize,
        key_len: usize,
        samples_at: usize,
        n_samples: usize,
    ) {
        self.entries.push(Entry {
            hash,
            key_at: key_at as u32,
            key_len: key_len as u32,
            samples_at: samples_at as u32,
            n_samples: n_samples as u32,
        });
        self.samples += n_samples;
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no series.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of samples.
    pub fn num_samples(&self) -> usize {
        self.samples
    }

    /// Bytes of the series' keys.
    pub fn key_bytes(&self) -> usize {
        self.entries.iter().map(|e| e.key_len as usize).sum()
    }

    /// The hash of series `i`.
    pub fn hash(&self, i: usize) -> u64 {
        self.entries[i].hash
    }

    /// The key of series `i` in `bytes`.
    pub fn key<'a>(&self, bytes: &'a [u8], i: usize) -> &'a [u8] {
        let e = self.entries[i];
        &bytes[e.key_at as usize..(e.key_at + e.key_len) as usize]
    }

    /// The samples of series `i` in `bytes`.
    pub fn samples<'a>(&self, bytes: &'a [u8], i: usize) -> impl Iterator<Item = Sample> + 'a {
        let e = self.entries[i];
        let at = e.samples_at as usize;
        bytes[at..at + e.n_samples as usize * 16]
            .chunks_exact(16)
            .map(|c| {
                let (t, v) = c.split_at(8);
                Sample {
                    timestamp: i64::from_le_bytes(t.try_into().unwrap_or_default()),
                    value: f64::from_bits(u64::from_le_bytes(v.try_into().unwrap_or_default())),
                }
            })
    }
}

/// Bytes of one sample in a batch (`t` and the value's bits).
pub const SAMPLE_BYTES: usize = 16;

/// Appends samples as the 16-byte records [`SeriesSpans`] reads; returns how many.
pub fn put_samples(out: &mut Vec<u8>, samples: impl IntoIterator<Item = Sample>) -> usize {
    let samples = samples.into_iter();
    out.reserve(samples.size_hint().0 * 16);
    let mut n = 0;
    for s in samples {
        out.extend_from_slice(&s.timestamp.to_le_bytes());
        out.extend_from_slice(&s.value.to_bits().to_le_bytes());
        n += 1;
    }
    n
}

/// Series copied out of a request to travel to their owning core: key bytes, then samples.
#[derive(Debug, Default)]
pub struct OwnedBatch {
    bytes: Vec<u8>,
    spans: SeriesSpans,
}

impl OwnedBatch {
    /// Copies one series into the batch.
    pub fn push(&mut self, hash: u64, key: &[u8], samples: impl IntoIterator<Item = Sample>) {
        let key_at = self.bytes.len();
        self.bytes.extend_from_slice(key);
        let samples_at = self.bytes.len();
        let n = put_samples(&mut self.bytes, samples);
        self.spans.push(hash, key_at, key.len(), samples_at, n);
    }

    /// Number of samples in the batch.
    pub fn num_samples(&self) -> usize {
        self.spans.num_samples()
    }

    /// Bytes the batch holds (its vectors' capacity).
    pub fn capacity_bytes(&self) -> usize {
        self.bytes.capacity() + self.spans.capacity_bytes()
    }

    /// The most a batch of `series` series with `key_bytes` of keys and `samples` samples
    /// takes, grown one series at a time (as `ingest_batch` fills it): its vectors grow by
    /// doubling, so up to twice their contents, and start at a few entries.
    pub fn bytes_for(series: usize, key_bytes: usize, samples: usize) -> usize {
        2 * (key_bytes + SAMPLE_BYTES * samples + std::mem::size_of::<Entry>() * series)
            + 8 * std::mem::size_of::<Entry>()
    }
}

impl SeriesBatch for OwnedBatch {
    fn len(&self) -> usize {
        self.spans.len()
    }

    fn hash(&self, i: usize) -> u64 {
        self.spans.hash(i)
    }

    fn key<'s>(&'s self, i: usize, _: &'s mut Vec<u8>) -> &'s [u8] {
        self.spans.key(&self.bytes, i)
    }

    fn samples(&self, i: usize) -> impl Iterator<Item = Sample> {
        self.spans.samples(&self.bytes, i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::{key_labels, put_series_key, STALE_NAN_BITS};

    fn key(l: &[(&str, &str)]) -> Vec<u8> {
        let mut k = Vec::new();
        put_series_key(&mut k, l.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        k
    }

    #[test]
    fn owned_batch_round_trips() {
        let mut b = OwnedBatch::default();
        let stale = f64::from_bits(STALE_NAN_BITS);
        let k0 = key(&[("__name__", "up"), ("job", "node")]);
        b.push(
            42,
            &k0,
            [
                Sample {
                    timestamp: -1,
                    value: 1.5,
                },
                Sample {
                    timestamp: 2,
                    value: stale,
                },
            ],
        );
        b.push(7, &key(&[("__name__", "x")]), []);
        assert_eq!(b.len(), 2);
        assert_eq!(b.hash(0), 42);
        assert_eq!(b.key(0, &mut Vec::new()), &k0[..]);
        assert_eq!(b.check(0), check_hash(&k0));
        let b8 = |s: &'static str| s.as_bytes();
        assert_eq!(
            key_labels(b.key(0, &mut Vec::new())).collect::<Vec<_>>(),
            vec![(b8("__name__"), b8("up")), (b8("job"), b8("node"))]
        );
        let s: Vec<_> = b
            .samples(0)
            .map(|s| (s.timestamp, s.value.to_bits()))
            .collect();
        assert_eq!(s, vec![(-1, 1.5f64.to_bits()), (2, stale.to_bits())]);
        assert_eq!(
            key_labels(b.key(1, &mut Vec::new())).collect::<Vec<_>>(),
            vec![(b8("__name__"), b8("x"))]
        );
        assert_eq!(b.samples(1).count(), 0);
        assert_eq!(b.num_samples(), 2);
    }
}
