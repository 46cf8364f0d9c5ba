//! Zero-copy decoder of remote-write 1.0 `prometheus.WriteRequest` (already snappy-decompressed).
//!
//! Owns the protobuf wire parsing and per-series validation. Label names/values are not copied:
//! they are `(offset, len)` ranges into the caller's buffer. All vectors live in a
//! [`WriteRequestRef`] that a core reuses request after request, so steady-state decoding
//! allocates nothing. Must not touch snappy, HTTP or storage.
//!
//! The decoder is hand-written rather than generated because a generated one (prost) would
//! allocate a `String` per label and a `Vec` per series, which dominates the ingest hot path.
//! It only understands the fields Sluice needs; everything else is skipped by wire type, as the
//! protobuf spec requires, so newer senders keep working.
//!
//! Remote write 2.0 lives in the child module [`v2`]: it reuses this module's wire reader,
//! sample decoder and validation, and fills the same [`WriteRequestRef`].
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

use std::fmt::Write as _;
use std::ops::Range;

use crate::hash::{put_series_key, Identity};
use crate::labels::{self, LabelError};

pub mod known;
pub mod v2;

use known::{Fingerprint, KnownSeries};

/// A label as byte ranges into the decoded buffer. Both ranges are valid UTF-8 once
/// [`WriteRequestRef::decode`] returned `Ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelRef {
    /// Byte offset of the name in the decoded buffer.
    pub name_start: u32,
    /// Length of the name in bytes.
    pub name_len: u32,
    /// Byte offset of the value in the decoded buffer.
    pub value_start: u32,
    /// Length of the value in bytes.
    pub value_len: u32,
}

/// One sample of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch; may be negative.
    pub timestamp: i64,
    /// The value, bit-exact as sent (the stale-marker NaN `0x7ff0000000000002` survives).
    pub value: f64,
}

/// One time series: index ranges into [`WriteRequestRef::labels`] and
/// [`WriteRequestRef::samples`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRef {
    /// Indices into [`WriteRequestRef::labels`], in wire order.
    pub labels: Range<u32>,
    /// Indices into [`WriteRequestRef::samples`], in wire order; empty when the series carried
    /// no samples.
    pub samples: Range<u32>,
}

/// Where a series' label fields sit in the decoded buffer, and what a [`KnownSeries`] made of
/// them. Only [`WriteRequestRef::decode_known`] fills these.
#[derive(Debug, Clone, Copy)]
pub struct LabelFields {
    /// The `TimeSeries` message (start, end), to parse its labels when they are not known.
    message: (u32, u32),
    /// The label fields' bytes (start, end) when they are one contiguous run.
    span: (u32, u32),
    /// The fingerprint of those bytes; `None` when they are not one run, or the series
    /// carries histograms (such a series is always parsed).
    pub fingerprint: Option<Fingerprint>,
    /// The series' identity, when its fingerprint was known: its labels were then neither
    /// parsed nor validated again, and its [`SeriesRef::labels`] is empty.
    pub known: Option<Identity>,
}

/// The bytes of a decoded request's series keys ([`WriteRequestRef::key_bytes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyBytes {
    /// Keys of the series whose labels were parsed: exact.
    pub parsed: usize,
    /// Keys of the known series: at most this.
    pub known: usize,
}

/// Why a request could not be decoded. Each message names what was wrong and where.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum DecodeError {
    /// The bytes are not a well-formed `WriteRequest` (truncation, bad varint, wrong wire type,
    /// groups, oversized buffer). The message names the field and the byte offset.
    #[error("malformed protobuf: {0}")]
    Protobuf(String),
    /// A series is well-formed protobuf but its label set breaks the rules of
    /// [`crate::labels`]. `index` counts series in wire order from 0.
    #[error("invalid series #{index} {series}: {source}")]
    InvalidSeries {
        /// Position of the series in the request, from 0.
        index: usize,
        /// The series rendered PromQL-style (lossily if it was not UTF-8).
        series: String,
        /// The broken rule.
        source: crate::labels::LabelError,
    },
    /// A series carries native histograms, which Sluice cannot store yet; the request is
    /// rejected rather than silently dropping data.
    #[error("series #{index} {series}: native histograms are not supported yet")]
    NativeHistogram {
        /// Position of the series in the request, from 0.
        index: usize,
        /// The series rendered PromQL-style (lossily if it was not UTF-8).
        series: String,
    },
    /// The memory for the decoded request was not granted (see [`Grow`]); the reason says
    /// why.
    #[error("{0}")]
    Memory(String),
    /// A remote write 2.0 request whose symbol table or label references are unusable: the
    /// table does not start with "", a series has an odd number of label references, or a
    /// reference points past the table. The message names the series and the reference.
    #[error("invalid symbol reference: {0}")]
    SymbolRef(String),
}

/// A decoded `WriteRequest`, borrowing nothing itself: ranges point into the buffer given to
/// [`decode`](Self::decode).
#[derive(Debug, Default)]
pub struct WriteRequestRef {
    /// The series, in wire order.
    pub series: Vec<SeriesRef>,
    /// All labels of all series, flat, per series in wire order.
    pub labels: Vec<LabelRef>,
    /// All samples of all series, flat, per series in wire order.
    pub samples: Vec<Sample>,
    /// Per series, where its label fields are and whether they were known (only after
    /// [`decode_known`](Self::decode_known); empty otherwise).
    pub label_fields: Vec<LabelFields>,
}

impl WriteRequestRef {
    /// Decodes and validates `buf`, replacing the previous contents.
    ///
    /// On `Ok`, every series has a valid label set (UTF-8, [`labels::validate_label_set`]) and
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

    /// The identity of series `i` if [`decode_known`](Self::decode_known) recognised it.
    #[inline]
    pub fn known(&self, i: usize) -> Option<Identity> {
        self.label_fields.get(i).and_then(|f| f.known)
    }

    /// The fingerprint of series `i`'s label fields, if it has one.
    #[inline]
    pub fn fingerprint(&self, i: usize) -> Option<Fingerprint> {
        self.label_fields.get(i).and_then(|f| f.fingerprint)
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

    /// The labels of `series` as strings borrowed from `buf`.
    ///
    /// `series` and `buf` must be the ones of the last successful [`decode`](Self::decode);
    /// anything else yields empty or wrong strings, never a panic.
    pub fn series_labels<'a>(
        &'a self,
        buf: &'a [u8],
        series: &SeriesRef,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.labels
            .get(series.labels.start as usize..series.labels.end as usize)
            .unwrap_or(&[])
            .iter()
            .map(move |l| (l.name(buf), l.value(buf)))
    }

    /// The samples of `series` (empty if `series` is not from the last decode).
    pub fn series_samples(&self, series: &SeriesRef) -> &[Sample] {
        self.samples
            .get(series.samples.start as usize..series.samples.end as usize)
            .unwrap_or(&[])
    }

    /// Bytes this request's vectors hold (their capacity): what a pool that keeps it keeps.
    pub fn capacity_bytes(&self) -> usize {
        use std::mem::size_of;
        self.series.capacity() * size_of::<SeriesRef>()
            + self.labels.capacity() * size_of::<LabelRef>()
            + self.samples.capacity() * size_of::<Sample>()
            + self.label_fields.capacity() * size_of::<LabelFields>()
    }

    /// The bytes of the series' keys (see [`put_key`](Self::put_key)), for reserving memory
    /// before keys are built: exact for the series whose labels were parsed; for a known series
    /// (whose key is built only when needed) the length of its label fields, which is more (a
    /// label field holds the key's name and value plus at least 6 bytes of tags and lengths
    /// where the key has 2 separators). A pass over the parsed labels and the known series,
    /// reading lengths only.
    pub fn key_bytes(&self) -> KeyBytes {
        let parsed = self
            .labels
            .iter()
            .map(|l| l.name_len as usize + l.value_len as usize + 2)
            .sum();
        let known = self
            .label_fields
            .iter()
            .filter(|f| f.known.is_some())
            .map(|f| (f.span.1 - f.span.0) as usize)
            .sum();
        KeyBytes { parsed, known }
    }

    fn clear(&mut self) {
        self.series.clear();
        self.labels.clear();
        self.samples.clear();
        self.label_fields.clear();
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
        if has_histogram {
            return Err(DecodeError::NativeHistogram {
                index,
                series: render_lossy(buf, labels),
            });
        }
        if let Err(source) = validate_labels(buf, labels, ascii) {
            return Err(DecodeError::InvalidSeries {
                index,
                series: render_lossy(buf, labels),
                source,
            });
        }
        // Cannot truncate: every label and sample takes at least 2 bytes of a buffer that
        // check_buffer_len capped at u32::MAX bytes.
        Ok(label_start as u32..self.labels.len() as u32)
    }
}

impl LabelRef {
    /// The name, borrowed from the decoded buffer.
    #[inline]
    pub fn name<'a>(&self, buf: &'a [u8]) -> &'a str {
        str_at(buf, self.name_start, self.name_len)
    }

    /// The value, borrowed from the decoded buffer.
    #[inline]
    pub fn value<'a>(&self, buf: &'a [u8]) -> &'a str {
        str_at(buf, self.value_start, self.value_len)
    }

    /// The name's bytes. The ingest path works on bytes: `decode` already validated UTF-8
    /// once, and re-validating on every hash and comparison cost a quarter of ingest time.
    #[inline]
    pub fn name_bytes<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        bytes_at(buf, self.name_start, self.name_len)
    }

    /// The value's bytes (see [`name_bytes`](Self::name_bytes)).
    #[inline]
    pub fn value_bytes<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        bytes_at(buf, self.value_start, self.value_len)
    }
}

#[inline]
fn str_at(buf: &[u8], start: u32, len: u32) -> &str {
    // decode() validated UTF-8; a mismatched buffer yields "" (or other text) rather than a panic.
    std::str::from_utf8(bytes_at(buf, start, len)).unwrap_or("")
}

/// The bytes of a range, or nothing if it does not fit `buf` (only possible when the caller
/// mixes up buffers; the decoder itself only produces in-bounds ranges).
#[inline]
fn bytes_at(buf: &[u8], start: u32, len: u32) -> &[u8] {
    let start = start as usize;
    start
        .checked_add(len as usize)
        .and_then(|end| buf.get(start..end))
        .unwrap_or(&[])
}

/// Asked before a decoder's vector grows, with the bytes it is about to allocate; an `Err`
/// (its reason) stops decoding with [`DecodeError::Memory`]. A caller reserves memory for a
/// request this way exactly as decoding allocates it: once per doubling of a vector, never per
/// entry, and nothing for capacity a reused request already has.
pub type Grow<'a> = dyn FnMut(usize) -> Result<(), String> + 'a;

/// A [`Grow`] that allows everything.
fn unlimited(_: usize) -> Result<(), String> {
    Ok(())
}

/// Pushes `x` onto `v`, asking `grow` first when `v` is full. The test is the one `Vec::push`
/// makes, so on the usual path the compiler merges the two: nothing per entry.
#[inline(always)]
pub(crate) fn push<T>(v: &mut Vec<T>, x: T, grow: &mut Grow<'_>) -> Result<(), DecodeError> {
    if v.len() == v.capacity() {
        grow_for_push(v, grow)?;
    }
    v.push(x);
    Ok(())
}

/// Doubles a full `v` (from 4 entries, as `Vec::push` would) once `grow` allowed the bytes.
#[cold]
#[inline(never)]
fn grow_for_push<T>(v: &mut Vec<T>, grow: &mut Grow<'_>) -> Result<(), DecodeError> {
    let cap = (2 * v.capacity()).max(4);
    grow((cap - v.capacity()) * std::mem::size_of::<T>()).map_err(DecodeError::Memory)?;
    v.reserve_exact(cap - v.len());
    Ok(())
}

/// Ranges are `u32` to halve the size of [`LabelRef`]; a bigger buffer cannot be described.
fn check_buffer_len(len: usize) -> Result<(), DecodeError> {
    if len > u32::MAX as usize {
        return Err(DecodeError::Protobuf(format!(
            "request of {len} bytes is larger than the {} bytes a request may have",
            u32::MAX
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Wire format
// ---------------------------------------------------------------------------------------------

const WT_VARINT: u8 = 0;
const WT_I64: u8 = 1;
const WT_LEN: u8 = 2;
const WT_START_GROUP: u8 = 3;
const WT_END_GROUP: u8 = 4;
const WT_I32: u8 = 5;

/// Field keys (`field << 3 | wire type`) of the fields we decode. Matching the whole key in one
/// comparison is cheaper than splitting it, and a key with the right field number but another
/// wire type falls through to [`Reader::skip_other`], which reports it.
const KEY_1_I64: u64 = (1 << 3) | WT_I64 as u64;
const KEY_1_LEN: u64 = (1 << 3) | WT_LEN as u64;
const KEY_2_VARINT: u64 = (2 << 3) | WT_VARINT as u64;
const KEY_2_LEN: u64 = (2 << 3) | WT_LEN as u64;
const KEY_3_LEN: u64 = (3 << 3) | WT_LEN as u64;
const KEY_4_LEN: u64 = (4 << 3) | WT_LEN as u64;

/// The fewest bytes the label fields of a valid series take: one field holding
/// `__name__` and a one-byte value (`0a 0d 0a 08 "__name__" 12 01 x`).
const MIN_LABEL_FIELD_BYTES: usize = 15;

/// How many series ahead of its lookup [`WriteRequestRef::resolve_labels`] fetches a
/// fingerprint's slot.
const RESOLVE_AHEAD: usize = 16;

/// A field a message knows: number, name for errors, expected wire type. A known field that
/// arrives with another wire type is an error, not an unknown field to skip: it means the
/// sender's schema disagrees with ours and its data would be misread.
type KnownField = (u64, &'static str, u8);

const WRITE_REQUEST_FIELDS: &[KnownField] = &[(1, "timeseries", WT_LEN), (3, "metadata", WT_LEN)];
const TIME_SERIES_FIELDS: &[KnownField] = &[
    (1, "labels", WT_LEN),
    (2, "samples", WT_LEN),
    (3, "exemplars", WT_LEN),
    (4, "histograms", WT_LEN),
];
const LABEL_FIELDS: &[KnownField] = &[(1, "name", WT_LEN), (2, "value", WT_LEN)];
const SAMPLE_FIELDS: &[KnownField] = &[(1, "value", WT_I64), (2, "timestamp", WT_VARINT)];

/// A varint failure, without context: the hot path returns this small value and the caller
/// names the field only when building the (cold) error.
#[derive(Debug, Clone, Copy)]
enum VarintError {
    /// The buffer (or the enclosing message) ended inside the varint that starts here.
    Truncated(usize),
    /// The varint starting here does not fit in 64 bits.
    Overflow(usize),
}

impl VarintError {
    #[cold]
    #[inline(never)]
    fn into_error(self, part: &str, what: &str) -> DecodeError {
        DecodeError::Protobuf(match self {
            VarintError::Truncated(at) => {
                format!("truncated varint ({part} {what}) at byte offset {at}")
            }
            VarintError::Overflow(at) => {
                format!("varint ({part} {what}) at byte offset {at} overflows 64 bits")
            }
        })
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

/// Field 1 and field 2 of wire type 2 (length-delimited), as single bytes.
const KEY_1_LEN_BYTE: u8 = 0x0a;
const KEY_2_LEN_BYTE: u8 = 0x12;

/// A cursor over one message. `buf` ends exactly where the message ends (nested messages get a
/// prefix of the request), so offsets are absolute and "past the end" is a single length check.
///
/// Invariant: `pos <= buf.len()`.
#[derive(Clone)]
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[inline(always)]
    fn has_more(&self) -> bool {
        self.pos < self.buf.len()
    }

    #[inline(always)]
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads a varint. Tags and most lengths are a single byte, so that case is inlined and the
    /// rest is out of line.
    #[inline(always)]
    fn varint(&mut self) -> Result<u64, VarintError> {
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        self.varint_multi()
    }

    /// Multi-byte varint. With 10 bytes in reach (the common case) it reads a fixed-size array,
    /// which needs one bounds check and unrolls; near the end it falls back to a checked loop.
    #[inline(never)]
    fn varint_multi(&mut self) -> Result<u64, VarintError> {
        let start = self.pos;
        let rest = self.buf.get(start..).unwrap_or(&[]);
        if let Some(chunk) = rest.first_chunk::<10>() {
            let mut v = 0u64;
            for (i, &b) in chunk.iter().enumerate() {
                v |= u64::from(b & 0x7f) << (7 * i);
                if b < 0x80 {
                    // The 10th byte holds bit 63 only; anything more does not fit a u64.
                    if i == 9 && b > 1 {
                        return Err(VarintError::Overflow(start));
                    }
                    self.pos = start + i + 1;
                    return Ok(v);
                }
            }
            return Err(VarintError::Overflow(start));
        }
        // Fewer than 10 bytes left, so at most 9 are read and the shift stays below 63.
        let mut v = 0u64;
        for (i, &b) in rest.iter().enumerate() {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.pos = start + i + 1;
                return Ok(v);
            }
        }
        Err(VarintError::Truncated(start))
    }

    /// Reads a length prefix and returns the byte range it covers, checked to lie inside this
    /// message.
    #[inline(always)]
    fn len_delim(&mut self, what: &'static str) -> Result<(usize, usize), DecodeError> {
        let at = self.pos;
        let len = self.varint().map_err(|e| e.into_error("length of", what))?;
        let remaining = self.remaining();
        if len > remaining as u64 {
            return Err(truncated_len(what, at, len, remaining));
        }
        let start = self.pos;
        // len <= remaining, so this stays within buf.
        self.pos = start + len as usize;
        Ok((start, self.pos))
    }

    /// The next field of `message`: where it starts and its key; `None` at the end.
    #[inline(always)]
    fn next_key(&mut self, message: &'static str) -> Result<Option<(usize, u64)>, DecodeError> {
        if !self.has_more() {
            return Ok(None);
        }
        let at = self.pos;
        let key = self
            .varint()
            .map_err(|e| e.into_error("field tag in", message))?;
        Ok(Some((at, key)))
    }

    #[inline(always)]
    fn skip_len_delim(&mut self, what: &'static str) -> Result<(), DecodeError> {
        self.len_delim(what).map(|_| ())
    }

    /// A reader over the embedded message that starts here.
    #[inline(always)]
    fn message(&mut self, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        let (start, end) = self.len_delim(what)?;
        let buf = self.buf.get(..end).unwrap_or(&[]);
        Ok(Reader {
            buf,
            pos: start.min(buf.len()),
        })
    }

    #[inline(always)]
    fn fixed64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let at = self.pos;
        match self.buf.get(at..).and_then(|rest| rest.first_chunk::<8>()) {
            Some(bytes) => {
                self.pos = at + 8;
                Ok(u64::from_le_bytes(*bytes))
            }
            None => Err(truncated_fixed(what, at, 8, self.remaining())),
        }
    }

    fn skip_fixed(&mut self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        let at = self.pos;
        if self.remaining() < n {
            return Err(truncated_fixed(what, at, n, self.remaining()));
        }
        self.pos = at + n;
        Ok(())
    }

    /// Handles a key the caller did not match: rejects malformed keys and known fields with the
    /// wrong wire type, and skips unknown fields by their wire type.
    #[inline(never)]
    fn skip_other(
        &mut self,
        key: u64,
        at: usize,
        msg: &'static str,
        known: &[KnownField],
    ) -> Result<(), DecodeError> {
        let field = key >> 3;
        let wt = (key & 7) as u8;
        if key > u64::from(u32::MAX) || field == 0 {
            return Err(DecodeError::Protobuf(format!(
                "invalid field number {field} in {msg} at byte offset {at}"
            )));
        }
        if let Some(&(_, name, expected)) = known.iter().find(|k| k.0 == field) {
            return Err(DecodeError::Protobuf(format!(
                "{msg}.{name} (field {field}) at byte offset {at} has wire type {wt} ({}), \
                 expected {expected} ({})",
                wire_type_name(wt),
                wire_type_name(expected)
            )));
        }
        match wt {
            WT_VARINT => self
                .varint()
                .map(|_| ())
                .map_err(|e| e.into_error("value of unknown field in", msg)),
            WT_I64 => self.skip_fixed(8, "unknown fixed64 field"),
            WT_LEN => self.skip_len_delim("unknown length-delimited field"),
            WT_I32 => self.skip_fixed(4, "unknown fixed32 field"),
            WT_START_GROUP | WT_END_GROUP => Err(DecodeError::Protobuf(format!(
                "field {field} in {msg} at byte offset {at} uses the deprecated group wire type \
                 {wt}, which is not supported"
            ))),
            _ => Err(DecodeError::Protobuf(format!(
                "field {field} in {msg} at byte offset {at} has invalid wire type {wt}"
            ))),
        }
    }
}

fn wire_type_name(wt: u8) -> &'static str {
    match wt {
        WT_VARINT => "varint",
        WT_I64 => "fixed64",
        WT_LEN => "length-delimited",
        WT_START_GROUP => "start group",
        WT_END_GROUP => "end group",
        WT_I32 => "fixed32",
        _ => "invalid",
    }
}

#[cold]
#[inline(never)]
fn truncated_len(what: &str, at: usize, len: u64, remaining: usize) -> DecodeError {
    DecodeError::Protobuf(format!(
        "truncated {what}: length {len} at byte offset {at} exceeds the {remaining} bytes left \
         in its enclosing message"
    ))
}

#[cold]
#[inline(never)]
fn truncated_fixed(what: &str, at: usize, need: usize, remaining: usize) -> DecodeError {
    DecodeError::Protobuf(format!(
        "truncated {what} at byte offset {at}: needs {need} bytes but only {remaining} left"
    ))
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
fn decode_sample(r: &mut Reader<'_>) -> Result<Sample, DecodeError> {
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

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Yields a series' labels as strings, checking UTF-8 lazily so each byte is checked once and
/// fed straight to [`labels::validate_label_set`]. On the first invalid field it records which
/// and ends, so the caller can report `NotUtf8` ahead of whatever the truncated set looks like.
struct Utf8Labels<'a> {
    buf: &'a [u8],
    rest: std::slice::Iter<'a, LabelRef>,
    bad: Option<&'static str>,
}

impl<'a> Iterator for Utf8Labels<'a> {
    type Item = (&'a str, &'a str);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.bad.is_some() {
            return None;
        }
        let l = self.rest.next()?;
        match utf8_pair(self.buf, l) {
            Ok(pair) => Some(pair),
            Err(field) => {
                self.bad = Some(field);
                None
            }
        }
    }
}

/// A label's name and value as strings, or which of them ("name"/"value") is not UTF-8.
#[inline]
fn utf8_pair<'a>(buf: &'a [u8], l: &LabelRef) -> Result<(&'a str, &'a str), &'static str> {
    let name = utf8(bytes_at(buf, l.name_start, l.name_len)).map_err(|_| "name")?;
    let value = utf8(bytes_at(buf, l.value_start, l.value_len)).map_err(|_| "value")?;
    Ok((name, value))
}

/// `str::from_utf8` with a branch-free ASCII pre-check. Labels are short and nearly always
/// ASCII; for them std's validator spends most of its time in per-call set-up (it was 13% of
/// a receiving core in the flamegraph), while an OR over the bytes vectorises.
#[inline]
fn utf8(b: &[u8]) -> Result<&str, std::str::Utf8Error> {
    if b.iter().fold(0u8, |acc, x| acc | x) < 0x80 {
        // SAFETY: every byte is below 0x80, i.e. ASCII, and ASCII is valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(b) })
    } else {
        std::str::from_utf8(b)
    }
}

/// UTF-8 first (in wire order), then the label rules. A label-rule error found before a later
/// non-UTF-8 field is superseded by `NotUtf8`, so the reported error does not depend on where
/// the lazy check happened to stop.
///
/// `ascii`: every byte of the labels is known to be ASCII, so UTF-8 needs no check.
fn validate_labels(buf: &[u8], labels: &[LabelRef], ascii: bool) -> Result<(), LabelError> {
    if ascii {
        return labels::validate_label_set(
            labels
                .iter()
                .map(|l| (l.name_bytes(buf), l.value_bytes(buf))),
        );
    }
    let mut it = Utf8Labels {
        buf,
        rest: labels.iter(),
        bad: None,
    };
    let res = labels::validate_label_set(&mut it);
    if let Some(field) = it.bad {
        return Err(LabelError::NotUtf8 { field });
    }
    if res.is_err() {
        for l in it.rest {
            if let Err(field) = utf8_pair(buf, l) {
                return Err(LabelError::NotUtf8 { field });
            }
        }
    }
    res
}

/// Labels of a series an error message shows, at most; the count of the others follows.
const RENDERED_LABELS: usize = 32;

/// Bytes of a label name or value an error message shows, at most.
const RENDERED_LABEL_BYTES: usize = 1024;

/// Renders a series for an error message; lossy so that non-UTF-8 series can still be shown.
/// Bounded (see [`RENDERED_LABELS`]): a series of a million labels is refused with a message,
/// not with a copy of itself.
#[cold]
#[inline(never)]
fn render_lossy(buf: &[u8], labels: &[LabelRef]) -> String {
    let shown = |b: &[u8]| {
        let cut = &b[..b.len().min(RENDERED_LABEL_BYTES)];
        let mut s = String::from_utf8_lossy(cut).into_owned();
        if cut.len() < b.len() {
            s.push('…');
        }
        s
    };
    let pairs: Vec<(String, String)> = labels
        .iter()
        .take(RENDERED_LABELS)
        .map(|l| (shown(l.name_bytes(buf)), shown(l.value_bytes(buf))))
        .collect();
    let mut s = labels::render_series(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    if labels.len() > RENDERED_LABELS {
        let _ = write!(s, " (and {} more labels)", labels.len() - RENDERED_LABELS);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message as _;

    // -----------------------------------------------------------------------------------------
    // Reference schema, encoded by prost: an independent encoder to check the decoder against.
    // -----------------------------------------------------------------------------------------

    #[derive(Clone, PartialEq, prost::Message)]
    struct PWriteRequest {
        #[prost(message, repeated, tag = "1")]
        timeseries: Vec<PTimeSeries>,
        #[prost(message, repeated, tag = "3")]
        metadata: Vec<PMetricMetadata>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct PTimeSeries {
        #[prost(message, repeated, tag = "1")]
        labels: Vec<PLabel>,
        #[prost(message, repeated, tag = "2")]
        samples: Vec<PSample>,
        #[prost(message, repeated, tag = "3")]
        exemplars: Vec<PExemplar>,
        #[prost(message, repeated, tag = "4")]
        histograms: Vec<PHistogram>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct PLabel {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(string, tag = "2")]
        value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct PSample {
        #[prost(double, tag = "1")]
        value: f64,
        #[prost(int64, tag = "2")]
        timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct PExemplar {
        #[prost(message, repeated, tag = "1")]
        labels: Vec<PLabel>,
        #[prost(double, tag = "2")]
        value: f64,
        #[prost(int64, tag = "3")]
        timestamp: i64,
    }

    /// A subset of prompb.Histogram: enough to put real histogram bytes on the wire.
    #[derive(Clone, PartialEq, prost::Message)]
    struct PHistogram {
        #[prost(uint64, tag = "1")]
        count_int: u64,
        #[prost(double, tag = "3")]
        sum: f64,
        #[prost(sint32, tag = "4")]
        schema: i32,
        #[prost(double, tag = "5")]
        zero_threshold: f64,
        #[prost(int64, tag = "15")]
        timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct PMetricMetadata {
        #[prost(int32, tag = "1")]
        kind: i32,
        #[prost(string, tag = "2")]
        metric_family_name: String,
        #[prost(string, tag = "4")]
        help: String,
        #[prost(string, tag = "5")]
        unit: String,
    }

    const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

    fn ts(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> PTimeSeries {
        PTimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| PLabel {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(timestamp, value)| PSample { value, timestamp })
                .collect(),
            ..Default::default()
        }
    }

    /// Series as plain data, samples as (timestamp, value bits) so NaNs compare bit-exactly.
    pub(crate) type Plain = Vec<(Vec<(String, String)>, Vec<(i64, u64)>)>;

    /// A decoded request as plain data (shared with the 2.0 decoder's tests).
    pub(crate) fn plain(d: &WriteRequestRef, buf: &[u8]) -> Plain {
        d.series
            .iter()
            .map(|s| {
                (
                    d.series_labels(buf, s)
                        .map(|(n, v)| (n.to_string(), v.to_string()))
                        .collect(),
                    d.series_samples(s)
                        .iter()
                        .map(|x| (x.timestamp, x.value.to_bits()))
                        .collect(),
                )
            })
            .collect()
    }

    fn plain_prost(w: &PWriteRequest) -> Plain {
        w.timeseries
            .iter()
            .map(|t| {
                (
                    t.labels
                        .iter()
                        .map(|l| (l.name.clone(), l.value.clone()))
                        .collect(),
                    t.samples
                        .iter()
                        .map(|s| (s.timestamp, s.value.to_bits()))
                        .collect(),
                )
            })
            .collect()
    }

    /// What every `Ok` must guarantee: contiguous ranges covering the flat vectors, in-bounds
    /// UTF-8 labels, and label sets that pass the rules. Shared with the 2.0 decoder's tests:
    /// both fill the same `WriteRequestRef`.
    pub(crate) fn check_invariants(d: &WriteRequestRef, buf: &[u8]) {
        let (mut l, mut s) = (0u32, 0u32);
        for series in &d.series {
            assert_eq!(series.labels.start, l);
            assert_eq!(series.samples.start, s);
            assert!(series.labels.end >= l && series.samples.end >= s);
            l = series.labels.end;
            s = series.samples.end;
            let strs: Vec<(&str, &str)> = d.labels[series.labels.start as usize..l as usize]
                .iter()
                .map(|x| {
                    let n = &buf[x.name_start as usize..(x.name_start + x.name_len) as usize];
                    let v = &buf[x.value_start as usize..(x.value_start + x.value_len) as usize];
                    (
                        std::str::from_utf8(n).unwrap(),
                        std::str::from_utf8(v).unwrap(),
                    )
                })
                .collect();
            assert_eq!(labels::validate_label_set(strs.iter().copied()), Ok(()));
        }
        assert_eq!(l as usize, d.labels.len());
        assert_eq!(s as usize, d.samples.len());
    }

    fn decode(buf: &[u8]) -> Result<Plain, DecodeError> {
        let mut d = WriteRequestRef::default();
        let res = d.decode(buf);
        check_known_agrees(buf, &d, res.is_ok());
        res?;
        check_invariants(&d, buf);
        Ok(plain(&d, buf))
    }

    /// `decode_known` over the same bytes, with an empty table and then with one that learnt
    /// every fingerprint of the first pass, must accept exactly what `decode` accepts and give
    /// every series the same samples and the same key; the second pass must recognise every
    /// fingerprinted series and return the identity learnt for it. Every test that decodes
    /// (the random and mutated requests included) runs this.
    fn check_known_agrees(buf: &[u8], plain: &WriteRequestRef, plain_ok: bool) {
        let mut known = KnownSeries::new();
        let seed = known.tenant_seed(b"t");
        let mut d = WriteRequestRef::default();
        for warm in [false, true] {
            let res = d.decode_known(buf, &known, seed);
            assert_eq!(
                res.is_ok(),
                plain_ok,
                "decode_known (warm: {warm}): {res:?}"
            );
            if res.is_err() {
                assert!(d.series.is_empty() && d.label_fields.is_empty());
                return;
            }
            assert_eq!(d.series.len(), plain.series.len());
            for i in 0..d.series.len() {
                let bits = |r: &WriteRequestRef| {
                    r.series_samples(&r.series[i])
                        .iter()
                        .map(|s| (s.timestamp, s.value.to_bits()))
                        .collect::<Vec<_>>()
                };
                assert_eq!(bits(&d), bits(plain));
                let (mut key, mut expected) = (Vec::new(), Vec::new());
                d.put_key(buf, i, &mut key);
                plain.put_key(buf, i, &mut expected);
                assert_eq!(key, expected, "series {i} (warm: {warm})");
                let id = Identity {
                    hash: xxhash_rust::xxh64::xxh64(&key, 0),
                    check: 7,
                };
                match (warm, d.fingerprint(i)) {
                    (false, fp) => {
                        assert_eq!(d.known(i), None);
                        if let Some(fp) = fp {
                            known.insert(fp, id);
                        }
                    }
                    (true, fp) => assert_eq!(d.known(i), fp.map(|_| id)),
                }
            }
        }
    }

    #[test]
    fn known_series_skip_parsing_but_not_unusual_ones() {
        let mut split = series_msg(&[(b"__name__", b"up")]);
        split.extend(series_msg(&[]));
        len_field(&mut split, 2, &[]); // a sample between two label fields
        split.extend(series_msg(&[(b"job", b"a")]));
        let mut histogram = series_msg(&[(b"__name__", b"h")]);
        len_field(&mut histogram, 4, &[]);
        let plain_one = series_msg(&[(b"__name__", b"up"), (b"job", b"b")]);
        let buf = request(&[plain_one.clone(), split, plain_one]);
        let mut known = KnownSeries::new();
        let seed = known.tenant_seed(b"t");
        let mut d = WriteRequestRef::default();
        d.decode_known(&buf, &known, seed).unwrap();
        assert!(d.fingerprint(0).is_some() && d.fingerprint(1).is_none());
        assert_eq!(
            d.fingerprint(0),
            d.fingerprint(2),
            "same bytes, same fingerprint"
        );
        let id = Identity { hash: 1, check: 2 };
        known.insert(d.fingerprint(0).unwrap(), id);
        d.decode_known(&buf, &known, seed).unwrap();
        assert_eq!(
            (d.known(0), d.known(1), d.known(2)),
            (Some(id), None, Some(id))
        );
        assert!(d.series[0].labels.is_empty() && d.series[2].labels.is_empty());
        assert_eq!(d.series[1].labels.len(), 2);
        // Another tenant's fingerprints differ: nothing is known to it.
        d.decode_known(&buf, &known, known.tenant_seed(b"u"))
            .unwrap();
        assert_eq!(d.known(0), None);
        // A series with histograms is never fingerprinted, so it still fails.
        let buf = request(&[histogram]);
        let err = d.decode_known(&buf, &known, seed).unwrap_err();
        assert!(matches!(err, DecodeError::NativeHistogram { .. }), "{err}");
    }

    #[test]
    fn the_known_series_scan_ends_at_a_series_too_short_to_be_valid() {
        // Scanned on, 100k empty series (2 bytes each) would take 8 MB of series entries.
        let valid = series_msg(&[(b"__name__", b"up")]);
        let mut series = vec![valid.clone(), series_msg(&[(b"job", b"x")])];
        series.extend(std::iter::repeat_n(Vec::new(), 100_000));
        let buf = request(&series);
        let known = KnownSeries::new();
        let seed = known.tenant_seed(b"t");
        let mut d = WriteRequestRef::default();
        let err = d.decode_known(&buf, &known, seed).unwrap_err();
        // The first invalid series is named, as `decode` names it.
        assert_eq!(Err(err), WriteRequestRef::default().decode(&buf));
        assert!(
            d.label_fields.capacity() < 16,
            "{}",
            d.label_fields.capacity()
        );
        // The shortest valid label fields still pass.
        let buf = request(&[series_msg(&[(b"__name__", b"u")]), valid]);
        d.decode_known(&buf, &known, seed).unwrap();
        assert_eq!(d.series.len(), 2);
    }

    #[test]
    fn growth_is_asked_for_before_it_happens_and_can_be_refused() {
        let buf = sample_request().encode_to_vec();
        let mut granted = 0;
        let mut d = WriteRequestRef::default();
        d.decode_within(&buf, &mut |n| {
            granted += n;
            Ok(())
        })
        .unwrap();
        assert_eq!(
            granted,
            d.capacity_bytes(),
            "every byte allocated was asked for"
        );
        // A reused request asks only for what it lacks.
        let mut again = 0;
        d.decode_within(&buf, &mut |n| {
            again += n;
            Ok(())
        })
        .unwrap();
        assert_eq!(again, 0);

        let mut known = KnownSeries::new();
        let seed = known.tenant_seed(b"t");
        let mut fresh = WriteRequestRef::default();
        let mut granted = 0;
        fresh
            .decode_known_within(&buf, &known, seed, &mut |n| {
                granted += n;
                Ok(())
            })
            .unwrap();
        assert_eq!(granted, fresh.capacity_bytes());
        known.insert(fresh.fingerprint(0).unwrap(), Identity::default());

        // Refused after 100 bytes: the decode stops, nothing of the request is left.
        let mut fresh = WriteRequestRef::default();
        let mut left = 100usize;
        let err = fresh
            .decode_known_within(&buf, &known, seed, &mut |n| {
                left = left.checked_sub(n).ok_or("over the budget")?;
                Ok(())
            })
            .unwrap_err();
        assert_eq!(err, DecodeError::Memory("over the budget".into()));
        assert!(fresh.series.is_empty() && fresh.samples.is_empty());
        assert!(fresh.capacity_bytes() <= 100);
    }

    #[test]
    fn refusals_quote_a_bounded_rendering_of_the_series() {
        let long = vec![b'v'; 5000];
        let mut labels: Vec<(Vec<u8>, Vec<u8>)> = vec![(b"__name__".to_vec(), b"up".to_vec())];
        labels.extend((0..100).map(|i| (format!("l{i:03}").into_bytes(), long.clone())));
        labels.push((b"l000".to_vec(), b"dup".to_vec()));
        let pairs: Vec<(&[u8], &[u8])> = labels.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        let msg = decode(&request(&[series_msg(&pairs)]))
            .unwrap_err()
            .to_string();
        assert!(msg.len() < 40_000, "{} bytes", msg.len());
        assert!(msg.contains("(and 70 more labels)"), "{msg}");
        assert!(msg.contains(&format!("{}…", "v".repeat(1024))));
    }

    fn protobuf_err(buf: &[u8]) -> String {
        match decode(buf) {
            Err(DecodeError::Protobuf(m)) => m,
            other => panic!("expected a protobuf error for {buf:02x?}, got {other:?}"),
        }
    }

    // Hand encoding, for bytes prost would never produce.

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn key(out: &mut Vec<u8>, field: u64, wt: u8) {
        varint(out, (field << 3) | u64::from(wt));
    }

    fn len_field(out: &mut Vec<u8>, field: u64, body: &[u8]) {
        key(out, field, WT_LEN);
        varint(out, body.len() as u64);
        out.extend_from_slice(body);
    }

    /// One unknown field of every skippable wire type, with multi-byte values.
    fn unknown_fields(out: &mut Vec<u8>) {
        key(out, 100, WT_VARINT);
        varint(out, u64::MAX);
        key(out, 101, WT_I64);
        out.extend_from_slice(&[0xff; 8]);
        len_field(out, 102, &[0x0a, 0x05, 0xff, 0xff]);
        key(out, 103, WT_I32);
        out.extend_from_slice(&[0xff; 4]);
        key(out, 536_870_911, WT_VARINT); // the largest field number
        varint(out, 1);
    }

    fn label_msg(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        len_field(&mut m, 1, name);
        len_field(&mut m, 2, value);
        m
    }

    fn series_msg(labels: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut m = Vec::new();
        for (n, v) in labels {
            len_field(&mut m, 1, &label_msg(n, v));
        }
        m
    }

    fn request(series: &[Vec<u8>]) -> Vec<u8> {
        let mut r = Vec::new();
        for s in series {
            len_field(&mut r, 1, s);
        }
        r
    }

    fn labels_of(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // Decoding
    // -----------------------------------------------------------------------------------------

    #[test]
    fn decodes_what_prost_encodes() {
        let many: Vec<(i64, f64)> = (0..1000)
            .map(|i| (1_700_000_000_000 + i, i as f64))
            .collect();
        let req = PWriteRequest {
            timeseries: vec![
                ts(
                    &[("__name__", "up"), ("instance", "a:9100"), ("job", "node")],
                    &[(1_700_000_000_000, 1.0), (1_700_000_015_000, 0.0)],
                ),
                ts(
                    &[("__name__", "http_requests_total"), ("code", "200")],
                    &many,
                ),
                ts(
                    &[("__name__", "edge"), ("unicode", "ünï ☃ \u{10ffff}")],
                    &[
                        (-1, -1.5),
                        (i64::MIN, f64::INFINITY),
                        (i64::MAX, f64::NEG_INFINITY),
                        (-1_000_000_000_000, f64::from_bits(STALE_NAN)),
                        (0, f64::NAN),
                        (5, f64::MIN_POSITIVE),
                    ],
                ),
            ],
            metadata: vec![],
        };
        let buf = req.encode_to_vec();
        let got = decode(&buf).unwrap();
        assert_eq!(got, plain_prost(&req));
        assert_eq!(got[2].1[3], (-1_000_000_000_000, STALE_NAN));
        assert_eq!(got[1].1.len(), 1000);
    }

    #[test]
    fn empty_request_is_ok() {
        assert_eq!(decode(&[]).unwrap(), Plain::new());
    }

    #[test]
    fn label_ranges_point_into_the_buffer() {
        let buf = PWriteRequest {
            timeseries: vec![ts(&[("__name__", "up")], &[(1, 1.0)])],
            metadata: vec![],
        }
        .encode_to_vec();
        let mut d = WriteRequestRef::default();
        d.decode(&buf).unwrap();
        let l = d.labels[0];
        assert_eq!(
            &buf[l.name_start as usize..][..l.name_len as usize],
            b"__name__"
        );
        assert_eq!(
            &buf[l.value_start as usize..][..l.value_len as usize],
            b"up"
        );
    }

    #[test]
    fn series_without_samples_is_kept() {
        let req = PWriteRequest {
            timeseries: vec![
                ts(&[("__name__", "a")], &[]),
                ts(&[("__name__", "b")], &[(1, 2.0)]),
            ],
            metadata: vec![],
        };
        let buf = req.encode_to_vec();
        let mut d = WriteRequestRef::default();
        d.decode(&buf).unwrap();
        assert_eq!(d.series[0].samples, 0..0);
        assert_eq!(d.series[1].samples, 0..1);
        assert_eq!(plain(&d, &buf), plain_prost(&req));
    }

    #[test]
    fn metadata_and_exemplars_are_skipped() {
        let mut series = ts(&[("__name__", "up"), ("job", "x")], &[(10, 1.0)]);
        series.exemplars = vec![
            PExemplar {
                labels: vec![PLabel {
                    name: "trace_id".into(),
                    value: "abc".into(),
                }],
                value: 3.0,
                timestamp: 9,
            },
            PExemplar::default(),
        ];
        let req = PWriteRequest {
            timeseries: vec![series],
            metadata: vec![
                PMetricMetadata {
                    kind: 1,
                    metric_family_name: "up".into(),
                    help: "Whether the target is up.".into(),
                    unit: "".into(),
                },
                PMetricMetadata::default(),
            ],
        };
        let buf = req.encode_to_vec();
        assert_eq!(
            decode(&buf).unwrap(),
            vec![(
                labels_of(&[("__name__", "up"), ("job", "x")]),
                vec![(10, 1f64.to_bits())]
            )]
        );

        // Metadata alone, and metadata before the series, are fine too.
        let only_meta = PWriteRequest {
            timeseries: vec![],
            metadata: req.metadata.clone(),
        }
        .encode_to_vec();
        assert_eq!(decode(&only_meta).unwrap(), Plain::new());
        let mut reordered = only_meta.clone();
        reordered.extend_from_slice(&buf);
        assert_eq!(decode(&reordered).unwrap().len(), 1);
    }

    #[test]
    fn unknown_fields_of_every_wire_type_are_skipped() {
        let mut label = Vec::new();
        unknown_fields(&mut label);
        len_field(&mut label, 1, b"__name__");
        unknown_fields(&mut label);
        len_field(&mut label, 2, b"up");
        unknown_fields(&mut label);

        let mut sample = Vec::new();
        unknown_fields(&mut sample);
        key(&mut sample, 1, WT_I64);
        sample.extend_from_slice(&2.5f64.to_le_bytes());
        unknown_fields(&mut sample);
        key(&mut sample, 2, WT_VARINT);
        varint(&mut sample, 42);
        unknown_fields(&mut sample);

        let mut series = Vec::new();
        unknown_fields(&mut series);
        len_field(&mut series, 1, &label);
        unknown_fields(&mut series);
        len_field(&mut series, 2, &sample);
        unknown_fields(&mut series);

        let mut req = Vec::new();
        unknown_fields(&mut req);
        len_field(&mut req, 2, b"reserved field, skipped as unknown");
        len_field(&mut req, 1, &series);
        unknown_fields(&mut req);

        assert_eq!(
            decode(&req).unwrap(),
            vec![(
                labels_of(&[("__name__", "up")]),
                vec![(42, 2.5f64.to_bits())]
            )]
        );
    }

    #[test]
    fn fields_in_any_order_and_last_scalar_wins() {
        // Label: value before name, name repeated.
        let mut label = Vec::new();
        len_field(&mut label, 2, b"first");
        len_field(&mut label, 1, b"zzz");
        len_field(&mut label, 2, b"up");
        len_field(&mut label, 1, b"__name__");
        // Sample: timestamp before value, both repeated.
        let mut sample = Vec::new();
        key(&mut sample, 2, WT_VARINT);
        varint(&mut sample, 1);
        key(&mut sample, 1, WT_I64);
        sample.extend_from_slice(&1.0f64.to_le_bytes());
        key(&mut sample, 2, WT_VARINT);
        varint(&mut sample, (-7i64) as u64);
        key(&mut sample, 1, WT_I64);
        sample.extend_from_slice(&STALE_NAN.to_le_bytes());
        // Series: samples before and after labels.
        let mut series = Vec::new();
        len_field(&mut series, 2, &sample);
        len_field(&mut series, 1, &label);
        len_field(&mut series, 2, &[]);
        len_field(&mut series, 1, &label_msg(b"job", b"x"));
        assert_eq!(
            decode(&request(&[series])).unwrap(),
            vec![(
                labels_of(&[("__name__", "up"), ("job", "x")]),
                // The empty sample is all defaults.
                vec![(-7, STALE_NAN), (0, 0f64.to_bits())]
            )]
        );
    }

    #[test]
    fn non_minimal_varints_are_accepted() {
        // Key 0x0a as two bytes, length 2 as three bytes.
        let mut label = vec![0x8a, 0x00, 0x88, 0x80, 0x00];
        label.extend_from_slice(b"__name__");
        label.extend_from_slice(&[0x12, 0x82, 0x00]);
        label.extend_from_slice(b"up");
        // Timestamp 1 as a 10-byte varint.
        let mut sample = vec![
            0x10, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
        ];
        sample.push(0x09);
        sample.extend_from_slice(&1.0f64.to_le_bytes());
        let mut series = Vec::new();
        len_field(&mut series, 1, &label);
        len_field(&mut series, 2, &sample);
        assert_eq!(
            decode(&request(&[series])).unwrap(),
            vec![(labels_of(&[("__name__", "up")]), vec![(1, 1f64.to_bits())])]
        );
    }

    #[test]
    fn varint_limits() {
        let max = |last: u8| {
            let mut b = vec![0xff; 9];
            b.push(last);
            b
        };
        let read = |b: &[u8]| Reader { buf: b, pos: 0 }.varint();
        assert_eq!(read(&max(0x01)).unwrap(), u64::MAX);
        assert!(matches!(read(&max(0x02)), Err(VarintError::Overflow(0))));
        assert!(matches!(read(&max(0x81)), Err(VarintError::Overflow(0))));
        assert!(matches!(read(&[0xff; 20]), Err(VarintError::Overflow(0))));
        assert!(matches!(read(&[0xff; 9]), Err(VarintError::Truncated(0))));
        assert!(matches!(read(&[0x80]), Err(VarintError::Truncated(0))));
        assert!(matches!(read(&[]), Err(VarintError::Truncated(0))));
        for v in [0, 1, 127, 128, 300, 1 << 35, u64::MAX >> 1, u64::MAX] {
            let mut b = Vec::new();
            varint(&mut b, v);
            // Both the near-the-end path and the 10-bytes-in-reach path.
            assert_eq!(read(&b).unwrap(), v);
            b.extend_from_slice(&[0xff; 10]);
            assert_eq!(read(&b).unwrap(), v);
        }

        // In context: an overlong timestamp is an error naming the field and offset.
        let mut sample = vec![0x10];
        sample.extend_from_slice(&max(0x02));
        let mut series = Vec::new();
        len_field(&mut series, 2, &sample);
        let msg = protobuf_err(&request(&[series]));
        assert_eq!(
            msg,
            "varint (value of Sample.timestamp) at byte offset 5 overflows 64 bits"
        );
    }

    #[test]
    fn truncation_messages_name_what_and_where() {
        assert_eq!(
            protobuf_err(&[0x0a, 0x05, 0x0a]),
            "truncated WriteRequest.timeseries: length 5 at byte offset 1 exceeds the 1 bytes \
             left in its enclosing message"
        );
        assert_eq!(
            protobuf_err(&[0x0a]),
            "truncated varint (length of WriteRequest.timeseries) at byte offset 1"
        );
        assert_eq!(
            protobuf_err(&[0x8a]),
            "truncated varint (field tag in WriteRequest) at byte offset 0"
        );
        // A label longer than its series, though the request has the bytes.
        let mut req = vec![0x0a, 0x02, 0x0a, 0x05];
        req.extend_from_slice(&[0; 10]);
        assert_eq!(
            protobuf_err(&req),
            "truncated TimeSeries.labels: length 5 at byte offset 3 exceeds the 0 bytes left in \
             its enclosing message"
        );
        // A value cut short by its sample.
        let mut series = Vec::new();
        len_field(&mut series, 2, &[0x09, 1, 2, 3]);
        assert_eq!(
            protobuf_err(&request(&[series])),
            "truncated Sample.value at byte offset 5: needs 8 bytes but only 3 left"
        );
        let mut series = Vec::new();
        len_field(&mut series, 2, &[0x7d, 1, 2]); // unknown fixed32 field 15
        assert!(protobuf_err(&request(&[series])).starts_with("truncated unknown fixed32 field"));
    }

    #[test]
    fn wrong_wire_type_for_known_fields_is_an_error() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                vec![0x08, 0x01],
                "WriteRequest.timeseries (field 1) at byte offset 0 has wire type 0",
            ),
            (
                vec![0x1d, 0, 0, 0, 0],
                "WriteRequest.metadata (field 3) at byte offset 0 has wire type 5",
            ),
            (
                request(&[vec![0x09, 0, 0, 0, 0, 0, 0, 0, 0]]),
                "TimeSeries.labels (field 1)",
            ),
            (request(&[vec![0x10, 0x01]]), "TimeSeries.samples (field 2)"),
            (
                request(&[vec![0x18, 0x01]]),
                "TimeSeries.exemplars (field 3)",
            ),
            (
                request(&[vec![0x20, 0x01]]),
                "TimeSeries.histograms (field 4)",
            ),
            (
                request(&[vec![0x0a, 0x02, 0x08, 0x01]]),
                "Label.name (field 1)",
            ),
            (
                request(&[vec![0x0a, 0x02, 0x10, 0x01]]),
                "Label.value (field 2)",
            ),
            (
                request(&[vec![0x12, 0x02, 0x08, 0x01]]),
                "Sample.value (field 1)",
            ),
            (
                request(&[vec![0x12, 0x02, 0x12, 0x00]]),
                "Sample.timestamp (field 2)",
            ),
        ];
        for (buf, want) in cases {
            let msg = protobuf_err(&buf);
            assert!(msg.starts_with(want), "{msg:?} should start with {want:?}");
            assert!(msg.contains("expected"), "{msg}");
        }
    }

    #[test]
    fn groups_bad_wire_types_and_bad_field_numbers_are_errors() {
        // Start group, end group, wire types 6 and 7, at top level and nested.
        for wt in [3u8, 4, 6, 7] {
            let mut b = Vec::new();
            key(&mut b, 9, wt);
            b.push(0);
            let msg = protobuf_err(&b);
            assert!(
                msg.contains("field 9 in WriteRequest at byte offset 0"),
                "{msg}"
            );
            assert!(
                msg.contains(if wt < 5 { "group" } else { "invalid wire type" }),
                "{msg}"
            );
            let msg = protobuf_err(&request(&[b.clone()]));
            assert!(msg.contains("in TimeSeries at byte offset 2"), "{msg}");
            let msg = protobuf_err(&request(&[{
                let mut s = Vec::new();
                len_field(&mut s, 1, &b);
                s
            }]));
            assert!(msg.contains("in Label"), "{msg}");
        }
        // Field number 0.
        assert_eq!(
            protobuf_err(&[0x02, 0x00]),
            "invalid field number 0 in WriteRequest at byte offset 0"
        );
        // Key beyond u32 (field number beyond 2^29 - 1).
        let mut b = Vec::new();
        key(&mut b, 1 << 29, WT_VARINT);
        b.push(0);
        assert!(protobuf_err(&b).starts_with("invalid field number 536870912 in WriteRequest"));
    }

    #[test]
    fn oversized_buffer_is_rejected() {
        assert_eq!(check_buffer_len(u32::MAX as usize), Ok(()));
        let err = check_buffer_len(u32::MAX as usize + 1).unwrap_err();
        assert!(matches!(err, DecodeError::Protobuf(m) if m.contains("4294967296 bytes")));
    }

    // -----------------------------------------------------------------------------------------
    // Validation and rejection
    // -----------------------------------------------------------------------------------------

    fn invalid(series: &[(&[u8], &[u8])]) -> (usize, String, LabelError) {
        let good = series_msg(&[(b"__name__", b"ok")]);
        let buf = request(&[good.clone(), good, series_msg(series)]);
        match decode(&buf) {
            Err(DecodeError::InvalidSeries {
                index,
                series,
                source,
            }) => (index, series, source),
            other => panic!("expected InvalidSeries, got {other:?}"),
        }
    }

    #[test]
    fn each_validation_rule_rejects_with_index_and_series() {
        let s = |n: &str| n.to_string();
        // (labels in wire order, rendered series, expected error)
        type Case<'a> = (Vec<(&'a [u8], &'a [u8])>, &'a str, LabelError);
        let cases: Vec<Case> = vec![
            (vec![], "{}", LabelError::NoLabels),
            (
                vec![(b"job", b"x")],
                r#"{job="x"}"#,
                LabelError::MissingMetricName,
            ),
            (
                vec![(b"", b"x"), (b"__name__", b"up")],
                r#"up{="x"}"#,
                LabelError::EmptyLabelName,
            ),
            (
                vec![(b"__name__", b"up"), (b"job", b"")],
                r#"up{job=""}"#,
                LabelError::EmptyLabelValue { name: s("job") },
            ),
            (
                vec![(b"__name__", b"up"), (b"1job", b"x")],
                r#"up{1job="x"}"#,
                LabelError::InvalidLabelName { name: s("1job") },
            ),
            (
                vec![(b"__name__", b"up-time")],
                "up-time{}",
                LabelError::InvalidMetricName { name: s("up-time") },
            ),
            (
                vec![(b"__name__", b"up"), (b"a", b"1"), (b"a", b"2")],
                r#"up{a="1", a="2"}"#,
                LabelError::DuplicateLabelName { name: s("a") },
            ),
            (
                vec![(b"__name__", b"up"), (b"b", b"1"), (b"a", b"2")],
                r#"up{b="1", a="2"}"#,
                LabelError::UnsortedLabels {
                    name: s("a"),
                    prev: s("b"),
                },
            ),
            (
                vec![(b"__name__", b"up"), (b"j\xffb", b"x")],
                "up{j\u{fffd}b=\"x\"}",
                LabelError::NotUtf8 { field: "name" },
            ),
            (
                vec![(b"__name__", b"up"), (b"job", b"\xc3")],
                "up{job=\"\u{fffd}\"}",
                LabelError::NotUtf8 { field: "value" },
            ),
            // UTF-8 is checked before the other rules, even for a later label.
            (
                vec![
                    (b"__name__", b"up"),
                    (b"b", b"1"),
                    (b"a", b"2"),
                    (b"c", b"\xff"),
                ],
                "up{b=\"1\", a=\"2\", c=\"\u{fffd}\"}",
                LabelError::NotUtf8 { field: "value" },
            ),
            (
                vec![(b"zz", b"\xff"), (b"__name__", b"up")],
                "up{zz=\"\u{fffd}\"}",
                LabelError::NotUtf8 { field: "value" },
            ),
        ];
        for (labels, rendered, want) in cases {
            let (index, series, source) = invalid(&labels);
            assert_eq!(index, 2);
            assert_eq!(series, rendered);
            assert_eq!(source, want);
        }
    }

    #[test]
    fn absent_label_value_is_empty_and_rejected() {
        let mut label = Vec::new();
        len_field(&mut label, 1, b"job");
        let mut series = series_msg(&[(b"__name__", b"up")]);
        len_field(&mut series, 1, &label);
        let err = decode(&request(&[series])).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid series #0 up{job=""}: label "job" has an empty value"#
        );
    }

    #[test]
    fn native_histograms_are_rejected() {
        let mut with_hist = ts(&[("__name__", "h"), ("le", "x")], &[]);
        with_hist.histograms = vec![PHistogram {
            count_int: 3,
            sum: 1.5,
            schema: -2,
            zero_threshold: 1e-128,
            timestamp: 7,
        }];
        let req = PWriteRequest {
            timeseries: vec![ts(&[("__name__", "up")], &[(1, 1.0)]), with_hist],
            metadata: vec![],
        };
        let err = decode(&req.encode_to_vec()).unwrap_err();
        assert_eq!(
            err,
            DecodeError::NativeHistogram {
                index: 1,
                series: r#"h{le="x"}"#.into()
            }
        );
        assert_eq!(
            err.to_string(),
            r#"series #1 h{le="x"}: native histograms are not supported yet"#
        );

        // An empty histogram before the labels still counts, and the labels are still named.
        let mut series = Vec::new();
        len_field(&mut series, 4, &[]);
        series.extend_from_slice(&series_msg(&[(b"__name__", b"late")]));
        assert_eq!(
            decode(&request(&[series])),
            Err(DecodeError::NativeHistogram {
                index: 0,
                series: "late{}".into()
            })
        );
    }

    // -----------------------------------------------------------------------------------------
    // Robustness
    // -----------------------------------------------------------------------------------------

    fn sample_request() -> PWriteRequest {
        let mut s2 = ts(
            &[
                ("__name__", "rpc_seconds"),
                ("method", "Get"),
                ("service", "ünï"),
            ],
            &[
                (-5, f64::from_bits(STALE_NAN)),
                (1_700_000_000_000, 0.25),
                (i64::MIN, -2.0),
            ],
        );
        s2.exemplars = vec![PExemplar {
            labels: vec![PLabel {
                name: "trace_id".into(),
                value: "0123456789abcdef".into(),
            }],
            value: 0.3,
            timestamp: 1_700_000_000_001,
        }];
        PWriteRequest {
            timeseries: vec![
                ts(
                    &[("__name__", "up"), ("job", "node")],
                    &[(1_700_000_000_000, 1.0)],
                ),
                s2,
                ts(&[("__name__", "empty")], &[]),
                ts(
                    &[("__name__", "big"), ("v", &"x".repeat(300))],
                    &[(1, 2.0), (2, 3.0)],
                ),
            ],
            metadata: vec![PMetricMetadata {
                kind: 2,
                metric_family_name: "up".into(),
                help: "help".into(),
                unit: "".into(),
            }],
        }
    }

    #[test]
    fn truncation_at_every_offset_errors_or_stops_at_a_boundary() {
        let req = sample_request();
        // Encode top-level fields one by one to know where they end.
        let mut buf = Vec::new();
        let mut boundaries = vec![(0usize, 0usize)]; // (offset, series complete before it)
        for (i, t) in req.timeseries.iter().enumerate() {
            buf.extend(
                PWriteRequest {
                    timeseries: vec![t.clone()],
                    metadata: vec![],
                }
                .encode_to_vec(),
            );
            boundaries.push((buf.len(), i + 1));
        }
        buf.extend(
            PWriteRequest {
                timeseries: vec![],
                metadata: req.metadata.clone(),
            }
            .encode_to_vec(),
        );
        boundaries.push((buf.len(), req.timeseries.len()));
        assert_eq!(decode(&buf).unwrap(), plain_prost(&req));

        for cut in 0..buf.len() {
            let prefix = &buf[..cut];
            match boundaries.iter().find(|b| b.0 == cut) {
                Some(&(_, n)) => assert_eq!(decode(prefix).unwrap().len(), n, "cut at {cut}"),
                None => {
                    let msg = protobuf_err(prefix);
                    assert!(
                        msg.starts_with("truncated ") && msg.contains(" at byte offset "),
                        "cut at {cut}: {msg}"
                    );
                }
            }
        }
    }

    #[test]
    fn second_decode_replaces_the_first_without_reallocating() {
        let big = sample_request().encode_to_vec();
        let small = PWriteRequest {
            timeseries: vec![ts(&[("__name__", "only")], &[(3, 4.0)])],
            metadata: vec![],
        }
        .encode_to_vec();
        let mut d = WriteRequestRef::default();
        d.decode(&big).unwrap();
        assert_eq!(d.series.len(), 4);
        let ptrs = (d.series.as_ptr(), d.labels.as_ptr(), d.samples.as_ptr());

        d.decode(&small).unwrap();
        assert_eq!(
            plain(&d, &small),
            vec![(
                labels_of(&[("__name__", "only")]),
                vec![(3, 4f64.to_bits())]
            )]
        );
        assert_eq!(d.labels.len(), 1);
        assert_eq!(d.samples.len(), 1);
        assert_eq!(
            ptrs,
            (d.series.as_ptr(), d.labels.as_ptr(), d.samples.as_ptr())
        );

        // A failed decode leaves nothing behind, not half a request or the previous one.
        let mut bad = big.clone();
        bad.extend(request(&[series_msg(&[(b"job", b"x")])]));
        assert!(d.decode(&bad).is_err());
        assert!(d.series.is_empty() && d.labels.is_empty() && d.samples.is_empty());
        d.decode(&big).unwrap();
        assert_eq!(plain(&d, &big), plain_prost(&sample_request()));
    }

    #[test]
    fn steady_state_decode_does_not_allocate() {
        let buf = sample_request().encode_to_vec();
        let mut d = WriteRequestRef::default();
        d.decode(&buf).unwrap();
        let before = alloc_count::get();
        for _ in 0..10 {
            d.decode(&buf).unwrap();
        }
        assert_eq!(alloc_count::get(), before);

        let mut known = KnownSeries::new();
        let seed = known.tenant_seed(b"t");
        d.decode_known(&buf, &known, seed).unwrap();
        for i in 0..d.series.len() {
            known.insert(d.fingerprint(i).unwrap(), Identity::default());
        }
        d.decode_known(&buf, &known, seed).unwrap();
        let before = alloc_count::get();
        for _ in 0..10 {
            d.decode_known(&buf, &known, seed).unwrap();
        }
        assert_eq!(alloc_count::get(), before);
        assert!(d.known(3).is_some());
    }

    #[test]
    fn accessors_do_not_panic_on_a_foreign_buffer() {
        let buf = sample_request().encode_to_vec();
        let mut d = WriteRequestRef::default();
        d.decode(&buf).unwrap();
        let s = d.series[3].clone();
        assert!(d
            .series_labels(&buf[..10], &s)
            .all(|(n, v)| n.is_empty() && v.is_empty()));
        let alien = SeriesRef {
            labels: 5..1000,
            samples: 7..9000,
        };
        assert_eq!(d.series_labels(&buf, &alien).count(), 0);
        assert!(d.series_samples(&alien).is_empty());
        let l = LabelRef {
            name_start: u32::MAX,
            name_len: u32::MAX,
            value_start: 0,
            value_len: u32::MAX,
        };
        assert_eq!((l.name(&buf), l.value(&buf)), ("", ""));
    }

    /// Counts this thread's allocations, so the no-allocation test is not disturbed by tests
    /// running in parallel.
    mod alloc_count {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static COUNT: Cell<u64> = const { Cell::new(0) };
        }

        struct Counting;

        // SAFETY: forwards to the system allocator unchanged; only counts calls.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                let _ = COUNT.try_with(|c| c.set(c.get() + 1));
                System.alloc(layout)
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                System.dealloc(ptr, layout)
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                let _ = COUNT.try_with(|c| c.set(c.get() + 1));
                System.realloc(ptr, layout, new_size)
            }
        }

        #[global_allocator]
        static GLOBAL: Counting = Counting;

        pub fn get() -> u64 {
            COUNT.with(|c| c.get())
        }
    }

    // -----------------------------------------------------------------------------------------
    // Property tests
    // -----------------------------------------------------------------------------------------

    fn arb_series() -> impl Strategy<Value = PTimeSeries> {
        (
            "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}",
            prop::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,8}", "\\PC{1,8}", 0..5),
            prop::collection::vec((any::<i64>(), any::<u64>()), 0..6),
        )
            .prop_map(|(name, mut labels, samples)| {
                labels.insert("__name__".to_string(), name);
                PTimeSeries {
                    labels: labels
                        .into_iter()
                        .map(|(name, value)| PLabel { name, value })
                        .collect(),
                    samples: samples
                        .into_iter()
                        .map(|(timestamp, bits)| PSample {
                            // prost omits -0.0 like 0.0 (it equals the default), so it comes
                            // back as +0.0; keep the round trip exact by never sending it.
                            value: if f64::from_bits(bits) == 0.0 {
                                0.0
                            } else {
                                f64::from_bits(bits)
                            },
                            timestamp,
                        })
                        .collect(),
                    ..Default::default()
                }
            })
    }

    fn arb_request() -> impl Strategy<Value = PWriteRequest> {
        (
            prop::collection::vec(arb_series(), 0..6),
            prop::collection::vec(("\\PC{0,8}", any::<i32>()), 0..2),
        )
            .prop_map(|(timeseries, meta)| PWriteRequest {
                timeseries,
                metadata: meta
                    .into_iter()
                    .map(|(metric_family_name, kind)| PMetricMetadata {
                        kind,
                        metric_family_name,
                        ..Default::default()
                    })
                    .collect(),
            })
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Set(prop::sample::Index, u8),
        Insert(prop::sample::Index, u8),
        Remove(prop::sample::Index),
        Truncate(prop::sample::Index),
    }

    fn arb_mutation() -> impl Strategy<Value = Mutation> {
        let byte = prop_oneof![
            any::<u8>(),
            Just(0x80),
            Just(0xff),
            Just(0x00),
            0x08u8..0x28
        ];
        prop_oneof![
            4 => (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Mutation::Set(i, b)),
            2 => (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
            2 => any::<prop::sample::Index>().prop_map(Mutation::Remove),
            1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        ]
    }

    fn mutate(buf: &mut Vec<u8>, m: &Mutation) {
        if buf.is_empty() {
            return;
        }
        match m {
            Mutation::Set(i, b) => {
                let i = i.index(buf.len());
                buf[i] = *b;
            }
            Mutation::Insert(i, b) => buf.insert(i.index(buf.len() + 1), *b),
            Mutation::Remove(i) => {
                buf.remove(i.index(buf.len()));
            }
            Mutation::Truncate(i) => buf.truncate(i.index(buf.len())),
        }
    }

    /// Compares with prost on the same bytes. Where prost accepts, we must agree exactly or
    /// have a reason to reject that prost does not check (label rules, histograms, groups,
    /// which prost skips in unknown fields). Where prost rejects, we may still accept: we skip
    /// exemplars and metadata without parsing them.
    fn check_against_prost(buf: &[u8]) {
        let ours = decode(buf);
        let Ok(theirs) = PWriteRequest::decode(buf) else {
            return;
        };
        match ours {
            Ok(p) => assert_eq!(p, plain_prost(&theirs)),
            Err(DecodeError::InvalidSeries { index, source, .. }) => {
                let t = &theirs.timeseries[index];
                assert!(t.histograms.is_empty());
                let got = labels::validate_label_set(
                    t.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
                );
                assert_eq!(got, Err(source));
            }
            Err(DecodeError::NativeHistogram { index, .. }) => {
                assert!(!theirs.timeseries[index].histograms.is_empty());
            }
            Err(DecodeError::Protobuf(m)) => assert!(m.contains("group"), "prost accepted: {m}"),
            Err(e @ DecodeError::SymbolRef(_)) => panic!("remote write 1.0 has no symbols: {e}"),
            Err(e @ DecodeError::Memory(_)) => panic!("decoding without a limit: {e}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn roundtrips_random_valid_requests(req in arb_request()) {
            let buf = req.encode_to_vec();
            prop_assert_eq!(decode(&buf).unwrap(), plain_prost(&req));
        }

        #[test]
        fn random_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..512)) {
            check_against_prost(&buf);
        }

        #[test]
        fn mutated_requests_never_panic(
            req in arb_request(),
            muts in prop::collection::vec(arb_mutation(), 1..6),
        ) {
            let mut buf = req.encode_to_vec();
            for m in &muts {
                mutate(&mut buf, m);
            }
            check_against_prost(&buf);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Throughput (run: cargo test -p sluice-core --release -- --ignored --nocapture throughput)
    // -----------------------------------------------------------------------------------------

    #[test]
    #[ignore = "benchmark; meaningful only with --release"]
    fn throughput() {
        // Shaped like a node_exporter scrape: ~10 labels per series, one sample each.
        let timeseries = (0..20_000)
            .map(|i| {
                ts(
                    &[
                        ("__name__", &format!("node_cpu_seconds_total_{}", i % 50)),
                        ("cluster", "eu-west-1-prod"),
                        ("cpu", &(i % 64).to_string()),
                        ("env", "production"),
                        (
                            "instance",
                            &format!("10.0.{}.{}:9100", i / 256 % 256, i % 256),
                        ),
                        ("job", "node-exporter"),
                        ("mode", "idle"),
                        ("namespace", "monitoring"),
                        ("pod", &format!("node-exporter-{:05x}", i * 7919 % 100_000)),
                        ("region", "eu-west-1"),
                    ],
                    &[(1_700_000_000_000 + i as i64, i as f64 * 0.5)],
                )
            })
            .collect();
        let buf = PWriteRequest {
            timeseries,
            metadata: vec![],
        }
        .encode_to_vec();
        let mut d = WriteRequestRef::default();
        d.decode(&buf).unwrap();
        // Best of several batches: the machine is shared, so the mean mostly measures noise.
        let rounds = 40;
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let start = std::time::Instant::now();
            for _ in 0..rounds {
                d.decode(std::hint::black_box(&buf)).unwrap();
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "{} bytes, {} series: {:.0} MB/s, {:.1} M series/s",
            buf.len(),
            d.series.len(),
            (buf.len() * rounds) as f64 / best / 1e6,
            (d.series.len() * rounds) as f64 / best / 1e6
        );
    }
}
