//! Fast request-body building for the flood: protobuf written by hand from pre-encoded label
//! sets, then snappy.
//!
//! Owns turning (series ids, timestamps) into a remote-write 1.0 body. Why not
//! `SeriesSet::write_request` + `encode_snappy`: that clones every label string into prost
//! structs for every request, which costs more than a fast receiver spends decoding it, and the
//! client must not be the bottleneck. A series' labels never change, so their protobuf bytes are
//! encoded once ([`LabelTable`]) and each request only copies them and appends its samples.
//! The output is byte-for-byte what prost produces for the same `WriteRequest` (a test checks),
//! so the data is exactly the library's, just cheaper to produce.

use sluice_bench::SeriesSet;

/// Protobuf tag bytes (field number << 3 | wire type) of the fields written here.
const TAG_TIMESERIES: u8 = 0x0a; // WriteRequest.timeseries = 1, length-delimited
const TAG_LABEL: u8 = 0x0a; // TimeSeries.labels = 1, length-delimited
const TAG_LABEL_NAME: u8 = 0x0a; // Label.name = 1, length-delimited
const TAG_LABEL_VALUE: u8 = 0x12; // Label.value = 2, length-delimited
const TAG_SAMPLE: u8 = 0x12; // TimeSeries.samples = 2, length-delimited
const TAG_SAMPLE_VALUE: u8 = 0x09; // Sample.value = 1, fixed64
const TAG_SAMPLE_TS: u8 = 0x10; // Sample.timestamp = 2, varint

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes_field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The encoded `TimeSeries.labels` field (every label, tags included) of every series, in one
/// arena: built once at start-up, shared read-only by every producer thread.
pub struct LabelTable {
    bytes: Vec<u8>,
    /// `ends[i]` is where series `i`'s labels end in `bytes` (they start at `ends[i - 1]`).
    ends: Vec<usize>,
}

impl LabelTable {
    /// Encodes the labels of every series of `set`.
    pub fn new(set: &SeriesSet) -> Self {
        let mut bytes = Vec::with_capacity(set.len() * 256);
        let mut ends = Vec::with_capacity(set.len());
        let mut label = Vec::with_capacity(256);
        for i in 0..set.len() {
            for (name, value) in set.labels(i) {
                label.clear();
                // proto3 omits empty strings; prost does too, and the bytes must match its.
                if !name.is_empty() {
                    put_bytes_field(&mut label, TAG_LABEL_NAME, name.as_bytes());
                }
                if !value.is_empty() {
                    put_bytes_field(&mut label, TAG_LABEL_VALUE, value.as_bytes());
                }
                put_bytes_field(&mut bytes, TAG_LABEL, &label);
            }
            ends.push(bytes.len());
        }
        LabelTable { bytes, ends }
    }

    /// Encoded labels of series `i`.
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    /// Bytes held, for the start-up report.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.ends.capacity() * std::mem::size_of::<usize>()
    }
}

/// Accumulates one request's series, then compresses it. Reused across requests so the
/// protobuf buffer is allocated once.
pub struct RequestBuilder {
    raw: Vec<u8>,
    series: usize,
    samples: usize,
    compressor: snap::raw::Encoder,
}

impl Default for RequestBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        RequestBuilder {
            raw: Vec::with_capacity(1 << 20),
            series: 0,
            samples: 0,
            compressor: snap::raw::Encoder::new(),
        }
    }

    /// Series added since the last [`finish`](Self::finish).
    pub fn series(&self) -> usize {
        self.series
    }

    /// Appends series `id` with `samples` samples at `ts(0), ts(1), ...`, valued by
    /// `set.value` as `SeriesSet::write_request` would.
    pub fn push_series(
        &mut self,
        set: &SeriesSet,
        labels: &LabelTable,
        id: usize,
        samples: usize,
        ts: impl Fn(u64) -> i64,
    ) {
        let label_bytes = labels.get(id);
        // Each sample message: [value: tag + 8 bytes] [timestamp: tag + varint], zero fields
        // omitted as proto3 (and prost) does.
        let sample_len = |v: f64, t: i64| {
            (if v != 0.0 { 9 } else { 0 }) + (if t != 0 { 1 + varint_len(t as u64) } else { 0 })
        };
        let mut body_len = label_bytes.len();
        for k in 0..samples as u64 {
            let t = ts(k);
            let n = sample_len(set.value(id, t), t);
            body_len += 1 + varint_len(n as u64) + n;
        }
        let raw = &mut self.raw;
        raw.push(TAG_TIMESERIES);
        put_varint(raw, body_len as u64);
        raw.extend_from_slice(label_bytes);
        for k in 0..samples as u64 {
            let t = ts(k);
            let v = set.value(id, t);
            raw.push(TAG_SAMPLE);
            put_varint(raw, sample_len(v, t) as u64);
            if v != 0.0 {
                raw.push(TAG_SAMPLE_VALUE);
                raw.extend_from_slice(&v.to_le_bytes());
            }
            if t != 0 {
                raw.push(TAG_SAMPLE_TS);
                // int64 is a plain varint of the two's complement, as in protobuf.
                put_varint(raw, t as u64);
            }
        }
        self.series += 1;
        self.samples += samples;
    }

    /// Compresses what was pushed into `body` and starts a new request. `body` keeps its
    /// length (at least snappy's worst case for this input) so a recycled buffer is never
    /// zeroed again; the compressed bytes are `body[..len]`. Returns (samples, uncompressed
    /// bytes, `len`).
    pub fn finish(&mut self, body: &mut Vec<u8>) -> (usize, usize, usize) {
        let need = snap::raw::max_compress_len(self.raw.len());
        if body.len() < need {
            body.resize(need, 0);
        }
        let len = self
            .compressor
            .compress(&self.raw, body)
            // Only fails for inputs over ~4 GiB, far beyond any request built here.
            .expect("snappy compression of a remote-write request");
        let out = (self.samples, self.raw.len(), len);
        self.raw.clear();
        self.series = 0;
        self.samples = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_bench::{encode, encode_snappy};

    #[test]
    fn bytes_match_the_library_encoding() {
        let set = SeriesSet::new(3_000, 7);
        let labels = LabelTable::new(&set);
        let (ts0, step) = (1_760_000_000_000, 15_000);
        for (range, samples) in [(0..2_000, 1), (2_000..3_000, 3), (5..6, 0)] {
            let mut b = RequestBuilder::new();
            for id in range.clone() {
                b.push_series(&set, &labels, id, samples, |k| ts0 + k as i64 * step);
            }
            assert_eq!(b.series(), range.len());
            let want_raw = encode(&set.write_request(range.clone(), ts0, samples, step));
            assert_eq!(b.raw, want_raw, "protobuf differs for {range:?}");
            // A recycled buffer, longer than needed and dirty.
            let mut body = vec![0xAA; 1 << 20];
            let (n, raw_len, len) = b.finish(&mut body);
            assert_eq!((n, raw_len), (range.len() * samples, want_raw.len()));
            assert_eq!(
                body[..len],
                encode_snappy(&set.write_request(range, ts0, samples, step))
            );
            assert_eq!(b.series(), 0);
        }
    }

    #[test]
    fn zero_values_and_timestamps_are_omitted_like_prost() {
        // Const series include zeros (e.g. restart counters); find one to exercise the branch.
        let set = SeriesSet::new(3_000, 7);
        let labels = LabelTable::new(&set);
        let id = (0..set.len())
            .find(|&i| set.value(i, 0) == 0.0)
            .expect("some series is 0 at t=0");
        let mut b = RequestBuilder::new();
        b.push_series(&set, &labels, id, 2, |k| k as i64 * 15_000);
        assert_eq!(b.raw, encode(&set.write_request(id..id + 1, 0, 2, 15_000)));
    }
}
