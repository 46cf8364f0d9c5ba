//! The decoded request both decoders fill: series, labels and samples as flat vectors of
//! ranges into the caller's buffer ([`WriteRequestRef`]), and the accessors that read them back.
//!
//! Owns the model's layout (ranges are `u32`, hence [`check_buffer_len`]), reading labels and
//! samples back without panicking on a mismatched buffer, and growing the vectors only as the
//! caller's [`Grow`] allows. Must not parse: filling the model is the schema walks' ([`super::v1`],
//! [`super::v2`]), checking label sets [`super::validate`]'s.

use std::ops::Range;

use super::known::Fingerprint;
use super::DecodeError;
use crate::hash::Identity;

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
    /// The value, bit-exact as sent (the stale marker, [`crate::STALE_NAN_BITS`], survives).
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

/// Where a series' label fields sit in the decoded buffer, and what a [`KnownSeries`](super::known::KnownSeries) made of
/// them. Only [`WriteRequestRef::decode_known`] fills these.
#[derive(Debug, Clone, Copy)]
pub struct LabelFields {
    /// The `TimeSeries` message (start, end), to parse its labels when they are not known.
    pub(super) message: (u32, u32),
    /// The label fields' bytes (start, end) when they are one contiguous run.
    pub(super) span: (u32, u32),
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

    /// Empties every vector, keeping their capacity.
    pub(super) fn clear(&mut self) {
        self.series.clear();
        self.labels.clear();
        self.samples.clear();
        self.label_fields.clear();
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
pub(super) fn bytes_at(buf: &[u8], start: u32, len: u32) -> &[u8] {
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
pub(super) fn unlimited(_: usize) -> Result<(), String> {
    Ok(())
}

/// Pushes `x` onto `v`, asking `grow` first when `v` is full. The test is the one `Vec::push`
/// makes, so on the usual path the compiler merges the two: nothing per entry.
#[inline(always)]
pub(super) fn push<T>(v: &mut Vec<T>, x: T, grow: &mut Grow<'_>) -> Result<(), DecodeError> {
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
pub(super) fn check_buffer_len(len: usize) -> Result<(), DecodeError> {
    if len > u32::MAX as usize {
        return Err(DecodeError::Protobuf(format!(
            "request of {len} bytes is larger than the {} bytes a request may have",
            u32::MAX
        )));
    }
    Ok(())
}
