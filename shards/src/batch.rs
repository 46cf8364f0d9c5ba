//! Series batches as an owning core sees them: either borrowed from a decoded request on the
//! same core, or copied into one owned buffer to travel to another core.
//!
//! Owns the compact cross-core batch layout (little-endian, no per-series allocation: one
//! byte buffer and one index per destination core per request). Must not validate: batches
//! only ever hold series the decoder already accepted.

use sluice_core::{Sample, WriteRequestRef};

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
    /// Labels of series `i` as (name, value) bytes, ascending by name. Bytes, not `str`: the
    /// decoder validated UTF-8 once and the hot path must not pay for it again.
    fn labels(&self, i: usize) -> impl ExactSizeIterator<Item = LabelBytes<'_>> + Clone;
    /// Samples of series `i`, in request order.
    fn samples(&self, i: usize) -> impl Iterator<Item = Sample>;
}

/// The series of a decoded request that this core owns: borrowed, nothing copied.
pub struct LocalBatch<'a> {
    pub req: &'a WriteRequestRef,
    pub buf: &'a [u8],
    /// Indexes into `req.series`.
    pub series: &'a [u32],
    /// Hash per entry of `series`.
    pub hashes: &'a [u64],
}

impl SeriesBatch for LocalBatch<'_> {
    fn len(&self) -> usize {
        self.series.len()
    }

    fn hash(&self, i: usize) -> u64 {
        self.hashes[i]
    }

    fn labels(&self, i: usize) -> impl ExactSizeIterator<Item = LabelBytes<'_>> + Clone {
        let s = &self.req.series[self.series[i] as usize];
        let buf = self.buf;
        self.req.labels[s.labels.start as usize..s.labels.end as usize]
            .iter()
            .map(move |l| (l.name_bytes(buf), l.value_bytes(buf)))
    }

    fn samples(&self, i: usize) -> impl Iterator<Item = Sample> {
        let s = &self.req.series[self.series[i] as usize];
        self.req.series_samples(s).iter().copied()
    }
}

/// Where one series sits in an [`OwnedBatch`]'s bytes.
#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u64,
    labels_at: u32,
    n_labels: u32,
    samples_at: u32,
    n_samples: u32,
}

/// Series copied out of a request to travel to their owning core: labels as
/// `(u32 len, bytes)` pairs, samples as `(i64 t, u64 value bits)`, all little-endian.
#[derive(Debug, Default)]
pub struct OwnedBatch {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    samples: usize,
}

impl OwnedBatch {
    /// Copies one series into the batch.
    pub fn push<'a>(
        &mut self,
        hash: u64,
        labels: impl ExactSizeIterator<Item = LabelBytes<'a>>,
        samples: &[Sample],
    ) {
        let labels_at = self.bytes.len() as u32;
        let n_labels = labels.len() as u32;
        for (n, v) in labels {
            self.bytes
                .extend_from_slice(&(n.len() as u32).to_le_bytes());
            self.bytes.extend_from_slice(n);
            self.bytes
                .extend_from_slice(&(v.len() as u32).to_le_bytes());
            self.bytes.extend_from_slice(v);
        }
        let samples_at = self.bytes.len() as u32;
        for s in samples {
            self.bytes.extend_from_slice(&s.timestamp.to_le_bytes());
            self.bytes
                .extend_from_slice(&s.value.to_bits().to_le_bytes());
        }
        self.samples += samples.len();
        self.entries.push(Entry {
            hash,
            labels_at,
            n_labels,
            samples_at,
            n_samples: samples.len() as u32,
        });
    }

    /// Number of samples in the batch.
    pub fn num_samples(&self) -> usize {
        self.samples
    }
}

/// Iterates the labels of one [`OwnedBatch`] entry.
#[derive(Clone)]
pub struct OwnedLabels<'a> {
    bytes: &'a [u8],
    pos: usize,
    left: u32,
}

impl<'a> OwnedLabels<'a> {
    fn take(&mut self) -> &'a [u8] {
        let len = read_u32(self.bytes, self.pos) as usize;
        let s = self
            .bytes
            .get(self.pos + 4..self.pos + 4 + len)
            .unwrap_or(&[]);
        self.pos += 4 + len;
        s
    }
}

impl<'a> Iterator for OwnedLabels<'a> {
    type Item = LabelBytes<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let n = self.take();
        let v = self.take();
        Some((n, v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for OwnedLabels<'_> {}

fn read_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

impl SeriesBatch for OwnedBatch {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn hash(&self, i: usize) -> u64 {
        self.entries[i].hash
    }

    fn labels(&self, i: usize) -> impl ExactSizeIterator<Item = LabelBytes<'_>> + Clone {
        let e = self.entries[i];
        OwnedLabels {
            bytes: &self.bytes,
            pos: e.labels_at as usize,
            left: e.n_labels,
        }
    }

    fn samples(&self, i: usize) -> impl Iterator<Item = Sample> {
        let e = self.entries[i];
        let bytes = &self.bytes;
        (0..e.n_samples as usize).map(move |k| {
            let at = e.samples_at as usize + k * 16;
            Sample {
                timestamp: read_u64(bytes, at) as i64,
                value: f64::from_bits(read_u64(bytes, at + 8)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_batch_round_trips() {
        let mut b = OwnedBatch::default();
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let b8 = |s: &'static str| s.as_bytes();
        b.push(
            42,
            [(b8("__name__"), b8("up")), (b8("job"), b8("node"))].into_iter(),
            &[
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
        b.push(7, [(b8("__name__"), b8("x"))].into_iter(), &[]);
        assert_eq!(b.len(), 2);
        assert_eq!(b.hash(0), 42);
        assert_eq!(
            b.labels(0).collect::<Vec<_>>(),
            vec![(b8("__name__"), b8("up")), (b8("job"), b8("node"))]
        );
        assert_eq!(b.labels(0).len(), 2);
        let s: Vec<_> = b
            .samples(0)
            .map(|s| (s.timestamp, s.value.to_bits()))
            .collect();
        assert_eq!(s, vec![(-1, 1.5f64.to_bits()), (2, stale.to_bits())]);
        assert_eq!(
            b.labels(1).collect::<Vec<_>>(),
            vec![(b8("__name__"), b8("x"))]
        );
        assert_eq!(b.samples(1).count(), 0);
        assert_eq!(b.num_samples(), 2);
    }
}
