//! The remote-write 1.0 schema walk: `prometheus.WriteRequest` (already snappy-decompressed)
//! into a [`WriteRequestRef`], with or without the known-series shortcut
//! ([`WriteRequestRef::decode_known`]), and a decoded series' labels and key read back
//! ([`WriteRequestRef::label_bytes`], [`WriteRequestRef::put_key`]).
//!
//! Owns the 1.0 schema: which fields each message has, what is kept, skipped or refused.
//! Label names and values are not copied: they are `(offset, len)` ranges into the caller's
//! buffer. Must not touch snappy, HTTP or storage, nor read bytes itself: the wire reader is
//! [`super::wire`]'s, the label rules [`super::validate`]'s.
//!
//! The decoder is hand-written rather than generated because a generated one (prost) would
//! allocate a `String` per label and a `Vec` per series, which dominates the ingest hot path.
//! It only understands the fields Sluice needs; everything else is skipped by wire type, as the
//! protobuf spec requires, so newer senders keep working.
//!
//! Schema subset (prometheus/prompb `remote.proto` / `types.proto`):
//!
//! ```text
//! WriteRequest { repeated TimeSeries timeseries = 1; reserved 2; repeated MetricMetadata metadata = 3; }
//! TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2;
//!                repeated Exemplar exemplars = 3; repeated Histogram histograms = 4; }
//! Label        { string name = 1; string value = 2; }
//! Sample       { double value = 1; int64 timestamp = 2; }
//! ```

use std::ops::Range;

use super::known::KnownSeries;
use super::request::{
    check_buffer_len, push, unlimited, Grow, LabelFields, LabelRef, Sample, SeriesRef,
};
use super::validate::check_series;
use super::wire::{
    KnownField, Reader, KEY_1_I64, KEY_1_LEN, KEY_1_LEN_BYTE, KEY_2_LEN, KEY_2_LEN_BYTE,
    KEY_2_VARINT, KEY_3_LEN, KEY_4_LEN, WT_I64, WT_LEN, WT_VARINT,
};
use super::{DecodeError, WriteRequestRef};
use crate::hash::put_series_key;
use crate::labels::LabelError;

/// The fewest bytes the label fields of a valid series take: one field holding
/// `__name__` and a one-byte value (`0a 0d 0a 08 "__name__" 12 01 x`).
const MIN_LABEL_FIELD_BYTES: usize = 15;

/// How many series ahead of its lookup [`WriteRequestRef::resolve_labels`] fetches a
/// fingerprint's slot.
const RESOLVE_AHEAD: usize = 16;

// The fields of each 1.0 message, as the schema above lists them: a known field that arrives
// with another wire type is refused ([`Reader::skip_other`]), any other field skipped.
const WRITE_REQUEST_FIELDS: &[KnownField] = &[(1, "timeseries", WT_LEN), (3, "metadata", WT_LEN)];
const TIME_SERIES_FIELDS: &[KnownField] = &[
    (1, "labels", WT_LEN),
    (2, "samples", WT_LEN),
    (3, "exemplars", WT_LEN),
    (4, "histograms", WT_LEN),
];
const LABEL_FIELDS: &[KnownField] = &[(1, "name", WT_LEN), (2, "value", WT_LEN)];
const SAMPLE_FIELDS: &[KnownField] = &[(1, "value", WT_I64), (2, "timestamp", WT_VARINT)];

impl WriteRequestRef {
    /// Decodes and validates `buf`, replacing the previous contents.
    ///
    /// On `Ok`, every series has a valid label set (UTF-8, [`crate::labels::validate_label_set`]) and
    /// no native histograms. On `Err` the vectors are left empty, so a caller that ignores the
    /// error cannot ingest half a request. Capacity is kept either way: that is what makes the
    /// steady state allocation-free.
    pub fn decode(&mut self, buf: &[u8]) -> Result<(), DecodeError> {
        self.decode_within(buf, &mut unlimited)
    }

    /// [`decode`](Self::decode), asking `grow` before any vector grows (see [`Grow`]).
    pub fn decode_within(&mut self, buf: &[u8], grow: &mut Grow<'_>) -> Result<(), DecodeError> {
        self.clear();
        let res = self.decode_request(buf, None, grow);
        if res.is_err() {
            self.clear();
        }
        res
    }

    /// [`decode`](Self::decode), except that a series whose label fields `known` remembers
    /// (fingerprinted with `tenant_seed`, see [`KnownSeries::tenant_seed`]) keeps its labels
    /// unparsed: [`LabelFields::known`] holds its identity and its label range is empty. Such
    /// bytes were validated when they were first seen, and validity depends on nothing else.
    /// [`put_key`](Self::put_key) builds any series' key.
    pub fn decode_known(
        &mut self,
        buf: &[u8],
        known: &KnownSeries,
        tenant_seed: u64,
    ) -> Result<(), DecodeError> {
        self.decode_known_within(buf, known, tenant_seed, &mut unlimited)
    }

    /// [`decode_known`](Self::decode_known), asking `grow` before any vector grows (see
    /// [`Grow`]).
    pub fn decode_known_within(
        &mut self,
        buf: &[u8],
        known: &KnownSeries,
        tenant_seed: u64,
        grow: &mut Grow<'_>,
    ) -> Result<(), DecodeError> {
        self.clear();
        let res = self.decode_request(buf, Some((known, tenant_seed)), grow);
        if res.is_err() {
            self.clear();
        }
        res
    }

    /// Appends the key of series `i` (see [`crate::put_series_key`]) to `out`: from its
    /// parsed labels, or, for a known series, from its label fields in `buf` (the buffer of
    /// the last decode; another buffer yields a wrong key, never a panic).
    pub fn put_key(&self, buf: &[u8], i: usize, out: &mut Vec<u8>) {
        put_series_key(out, self.label_bytes(buf, i));
    }

    /// The labels of series `i` as (name, value) bytes borrowed from `buf`, in the order of
    /// its key: its parsed labels, or, for a known series, read straight from its label
    /// fields (nothing is copied). `buf` must be the buffer of the last decode; another one
    /// yields wrong labels, never a panic.
    pub fn label_bytes<'a>(&'a self, buf: &'a [u8], i: usize) -> LabelBytesIter<'a> {
        if let Some(LabelFields {
            span: (start, end),
            known: Some(_),
            ..
        }) = self.label_fields.get(i)
        {
            return LabelBytesIter {
                buf,
                from: LabelSource::Fields(Reader {
                    buf: buf.get(..*end as usize).unwrap_or(&[]),
                    pos: (*start as usize).min(*end as usize),
                }),
            };
        }
        let labels = self
            .series
            .get(i)
            .and_then(|s| {
                self.labels
                    .get(s.labels.start as usize..s.labels.end as usize)
            })
            .unwrap_or(&[]);
        LabelBytesIter {
            buf,
            from: LabelSource::Parsed(labels.iter()),
        }
    }

    fn decode_request(
        &mut self,
        buf: &[u8],
        known: Option<(&KnownSeries, u64)>,
        grow: &mut Grow<'_>,
    ) -> Result<(), DecodeError> {
        check_buffer_len(buf.len())?;
        let mut r = Reader { buf, pos: 0 };
        let mut index = 0usize;
        while let Some((at, key)) = r.next_key("WriteRequest")? {
            match key {
                KEY_1_LEN => {
                    let ts = r.message("WriteRequest.timeseries")?;
                    match known {
                        Some((known, seed)) => {
                            if !self.scan_series(ts, seed, grow)? {
                                return self.refuse_scanned(buf, known, index, grow);
                            }
                        }
                        None => {
                            let samples = self.samples.len() as u32;
                            let labels = self.decode_series(ts, index, true, grow)?;
                            let series = SeriesRef {
                                labels,
                                samples: samples..self.samples.len() as u32,
                            };
                            push(&mut self.series, series, grow)?;
                        }
                    }
                    index += 1;
                }
                // Metadata is accepted and ignored: Sluice stores no metadata, and skipping it
                // unparsed keeps a sender's odd metadata from failing its samples.
                KEY_3_LEN => r.skip_len_delim("WriteRequest.metadata")?,
                _ => r.skip_other(key, at, "WriteRequest", WRITE_REQUEST_FIELDS)?,
            }
        }
        if let Some((known, _)) = known {
            self.resolve_labels(buf, known, grow)?;
        }
        Ok(())
    }

    /// Ends a [`decode_known`](Self::decode_known) at series `index`, whose label fields are
    /// too short to hold a valid label set: the error is the one the labels of the series
    /// scanned so far give (the first invalid one, as [`decode`](Self::decode) reports it).
    /// Scanning on would only spend memory on a request that is refused anyway: an empty
    /// series costs 2 bytes on the wire and 80 in the scan.
    #[cold]
    fn refuse_scanned(
        &mut self,
        buf: &[u8],
        known: &KnownSeries,
        index: usize,
        grow: &mut Grow<'_>,
    ) -> Result<(), DecodeError> {
        self.resolve_labels(buf, known, grow)?;
        // Not reached: series `index` cannot pass validation. Refuse it anyway rather than
        // return half a request.
        Err(DecodeError::InvalidSeries {
            index,
            series: "{}".to_string(),
            source: LabelError::MissingMetricName,
        })
    }

    /// First pass of [`decode_known`](Self::decode_known) over one `TimeSeries`: decodes its
    /// samples, skips its labels but fingerprints their bytes, which
    /// [`resolve_labels`](Self::resolve_labels) looks up once every series is scanned.
    /// (Prefetching the slot here was too early: by the lookup, the rest of a large request
    /// had evicted it again.) `false`: the series' label fields are too short to be valid.
    fn scan_series(
        &mut self,
        mut r: Reader<'_>,
        seed: u64,
        grow: &mut Grow<'_>,
    ) -> Result<bool, DecodeError> {
        let message = (r.pos as u32, r.buf.len() as u32);
        let sample_start = self.samples.len();
        let mut run = (0usize, 0usize);
        let mut runs = 0u32;
        let mut label_bytes = 0usize;
        let mut has_histogram = false;
        while let Some((at, key)) = r.next_key("TimeSeries")? {
            match key {
                KEY_1_LEN => {
                    r.skip_len_delim("TimeSeries.labels")?;
                    label_bytes += r.pos - at;
                    if runs == 0 || at != run.1 {
                        runs += 1;
                        run.0 = at;
                    }
                    run.1 = r.pos;
                }
                KEY_2_LEN => {
                    let mut m = r.message("TimeSeries.samples")?;
                    push(&mut self.samples, decode_sample(&mut m)?, grow)?;
                }
                KEY_3_LEN => r.skip_len_delim("TimeSeries.exemplars")?,
                KEY_4_LEN => {
                    r.skip_len_delim("TimeSeries.histograms")?;
                    has_histogram = true;
                }
                _ => r.skip_other(key, at, "TimeSeries", TIME_SERIES_FIELDS)?,
            }
        }
        let fingerprint = (runs == 1 && !has_histogram)
            .then(|| KnownSeries::fingerprint(seed, &r.buf[run.0..run.1]));
        let series = SeriesRef {
            labels: 0..0,
            samples: sample_start as u32..self.samples.len() as u32,
        };
        push(&mut self.series, series, grow)?;
        let fields = LabelFields {
            message,
            span: (run.0 as u32, run.1 as u32),
            fingerprint,
            known: None,
        };
        push(&mut self.label_fields, fields, grow)?;
        Ok(label_bytes >= MIN_LABEL_FIELD_BYTES)
    }

    /// Second pass of [`decode_known`](Self::decode_known): every series whose fingerprint
    /// `known` remembers takes its identity from there; every other one has its labels
    /// parsed and validated.
    fn resolve_labels(
        &mut self,
        buf: &[u8],
        known: &KnownSeries,
        grow: &mut Grow<'_>,
    ) -> Result<(), DecodeError> {
        for i in 0..self.series.len() {
            // Fetch the slot a few series ahead, so that the table's cache misses overlap.
            if let Some(fp) = self
                .label_fields
                .get(i + RESOLVE_AHEAD)
                .and_then(|f| f.fingerprint)
            {
                known.prefetch(fp);
            }
            let fields = &mut self.label_fields[i];
            if let Some(id) = fields.fingerprint.and_then(|fp| known.get(fp)) {
                fields.known = Some(id);
                continue;
            }
            let (start, end) = fields.message;
            let r = Reader {
                buf: &buf[..end as usize],
                pos: start as usize,
            };
            self.series[i].labels = self.decode_series(r, i, false, grow)?;
        }
        Ok(())
    }

    /// Decodes one `TimeSeries` (the reader spans exactly its bytes): its labels, validated,
    /// and, if `with_samples`, its samples; returns the range of its labels. Fields may come
    /// in any order, so validation waits until the series is complete.
    fn decode_series(
        &mut self,
        mut r: Reader<'_>,
        index: usize,
        with_samples: bool,
        grow: &mut Grow<'_>,
    ) -> Result<Range<u32>, DecodeError> {
        let label_start = self.labels.len();
        let mut has_histogram = false;
        // Whether every byte of the label fields is ASCII, checked once per contiguous run
        // of them (normally one run per series) instead of once per name and value.
        let mut ascii = true;
        let mut run = (0usize, 0usize);
        while let Some((at, key)) = r.next_key("TimeSeries")? {
            match key {
                KEY_1_LEN => {
                    let mut m = r.message("TimeSeries.labels")?;
                    push(&mut self.labels, decode_label(&mut m)?, grow)?;
                    if at != run.1 {
                        ascii &= r.buf[run.0..run.1].is_ascii();
                        run.0 = at;
                    }
                    run.1 = r.pos;
                }
                KEY_2_LEN if with_samples => {
                    let mut m = r.message("TimeSeries.samples")?;
                    push(&mut self.samples, decode_sample(&mut m)?, grow)?;
                }
                KEY_2_LEN => r.skip_len_delim("TimeSeries.samples")?,
                // Exemplars are not stored; skipping them unparsed is cheapest.
                KEY_3_LEN => r.skip_len_delim("TimeSeries.exemplars")?,
                // Remembered, not returned at once: the labels needed for the error message
                // may come after the histogram.
                KEY_4_LEN => {
                    r.skip_len_delim("TimeSeries.histograms")?;
                    has_histogram = true;
                }
                _ => r.skip_other(key, at, "TimeSeries", TIME_SERIES_FIELDS)?,
            }
        }

        // The nested reader's buffer is a prefix of the request, so offsets stay absolute.
        let buf = r.buf;
        ascii &= buf[run.0..run.1].is_ascii();
        let labels = &self.labels[label_start..];
        check_series(buf, labels, index, has_histogram, ascii)?;
        // Cannot truncate: every label and sample takes at least 2 bytes of a buffer that
        // check_buffer_len capped at u32::MAX bytes.
        Ok(label_start as u32..self.labels.len() as u32)
    }
}

/// The labels of one decoded series as (name, value) bytes ([`WriteRequestRef::label_bytes`]).
#[derive(Clone)]
pub struct LabelBytesIter<'a> {
    buf: &'a [u8],
    from: LabelSource<'a>,
}

#[derive(Clone)]
enum LabelSource<'a> {
    /// A known series' label fields, as they arrived.
    Fields(Reader<'a>),
    Parsed(std::slice::Iter<'a, LabelRef>),
}

impl<'a> Iterator for LabelBytesIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let buf = self.buf;
        match &mut self.from {
            LabelSource::Parsed(it) => it.next().map(|l| (l.name_bytes(buf), l.value_bytes(buf))),
            // The bytes were a valid run of label fields when first seen, and they are the
            // same bytes: nothing here can fail, but a mismatched buffer must not panic.
            LabelSource::Fields(r) => {
                if !r.has_more() {
                    return None;
                }
                // What every sender writes: `0a L (0a N name 12 V value)` with one-byte
                // lengths. Read without the general decoder (this runs for every series of
                // every request); anything else takes the general path below.
                let rest = &r.buf[r.pos..];
                if let [KEY_1_LEN_BYTE, l, KEY_1_LEN_BYTE, n, tail @ ..] = rest {
                    let (l, n) = (*l as usize, *n as usize);
                    if l < 0x80 && n < 0x80 && l >= n + 4 {
                        if let Some([KEY_2_LEN_BYTE, v, ..]) = tail.get(n..) {
                            let v = *v as usize;
                            if v < 0x80 && l == n + v + 4 && rest.len() >= l + 2 {
                                let name = &tail[..n];
                                let value = &tail[n + 2..n + 2 + v];
                                r.pos += l + 2;
                                return Some((name, value));
                            }
                        }
                    }
                }
                let Ok(KEY_1_LEN) = r.varint() else {
                    r.pos = r.buf.len();
                    return None;
                };
                match r.message("").and_then(|mut m| decode_label(&mut m)) {
                    Ok(label) => Some((label.name_bytes(buf), label.value_bytes(buf))),
                    Err(_) => {
                        r.pos = r.buf.len();
                        None
                    }
                }
            }
        }
    }
}

/// Decodes a `Label`. An absent field is the proto3 default "" (validation rejects it later,
/// with a better message than a decoding error could give). A repeated field: last wins.
#[inline(always)]
fn decode_label(r: &mut Reader<'_>) -> Result<LabelRef, DecodeError> {
    // Offsets fit u32: check_buffer_len capped the buffer.
    let here = r.pos as u32;
    let mut label = LabelRef {
        name_start: here,
        name_len: 0,
        value_start: here,
        value_len: 0,
    };
    while let Some((at, key)) = r.next_key("Label")? {
        match key {
            KEY_1_LEN => {
                let (s, e) = r.len_delim("Label.name")?;
                label.name_start = s as u32;
                label.name_len = (e - s) as u32;
            }
            KEY_2_LEN => {
                let (s, e) = r.len_delim("Label.value")?;
                label.value_start = s as u32;
                label.value_len = (e - s) as u32;
            }
            _ => r.skip_other(key, at, "Label", LABEL_FIELDS)?,
        }
    }
    Ok(label)
}

/// Decodes a `Sample`. Absent fields are the proto3 defaults (0.0, 0); a repeated field: last
/// wins. The timestamp is a plain (not zigzag) int64, so negatives are 10-byte two's
/// complement varints and the `as i64` reinterpretation is the decoding.
#[inline(always)]
pub(super) fn decode_sample(r: &mut Reader<'_>) -> Result<Sample, DecodeError> {
    let mut bits = 0u64;
    let mut ts = 0u64;
    while let Some((at, key)) = r.next_key("Sample")? {
        match key {
            KEY_1_I64 => bits = r.fixed64("Sample.value")?,
            KEY_2_VARINT => {
                ts = r
                    .varint()
                    .map_err(|e| e.into_error("value of", "Sample.timestamp"))?
            }
            _ => r.skip_other(key, at, "Sample", SAMPLE_FIELDS)?,
        }
    }
    // from_bits keeps NaN payloads, so Prometheus' stale marker is preserved exactly.
    Ok(Sample {
        timestamp: ts as i64,
        value: f64::from_bits(bits),
    })
}
