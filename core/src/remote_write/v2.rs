//! Zero-copy decoder of remote-write 2.0 `io.prometheus.write.v2.Request` (already
//! snappy-decompressed) into the same [`WriteRequestRef`] the 1.0 decoder fills.
//!
//! Owns the 2.0 wire schema and the symbol table: label references are resolved to byte ranges
//! of the symbol strings inside the caller's buffer, so everything after decoding (hashing,
//! placement, ingest, replication) is the same for both protocols. Validation is shared with
//! the 1.0 decoder (UTF-8, label rules, sorted names). Must not touch snappy, HTTP or storage; the
//! wire reader, sample decoder and validation are borrowed from the sibling modules, not copied.
//!
//! What is kept and what is not:
//! - float samples: decoded and returned;
//! - native histograms (`TimeSeries.histograms`): the request is rejected
//!   ([`DecodeError::NativeHistogram`]), as for 1.0 — nothing of it is stored;
//! - exemplars and metadata: accepted and counted, not parsed and not stored;
//! - `created_timestamp` (rc.3, `TimeSeries` field 6) and `start_timestamp` (rc.4, a new field
//!   of `Sample`): accepted and ignored.
//!
//! Schema subset (prometheus `prompb/io/prometheus/write/v2/types.proto`):
//!
//! ```text
//! Request    { reserved 1 to 3; repeated string symbols = 4; repeated TimeSeries timeseries = 5; }
//! TimeSeries { repeated uint32 labels_refs = 1; repeated Sample samples = 2;
//!              repeated Histogram histograms = 3; repeated Exemplar exemplars = 4;
//!              Metadata metadata = 5; int64 created_timestamp = 6; }
//! Sample     { double value = 1; int64 timestamp = 2; }
//! ```
//!
//! Fields may arrive in any order (protobuf allows `timeseries` before `symbols`), so the
//! request is read twice: once for the symbol table, once for the series. The first pass only
//! skips over length prefixes.

use super::request::{bytes_at, check_buffer_len, push};
use super::v1::decode_sample;
use super::validate::check_series;
use super::wire::{
    KnownField, Reader, KEY_1_LEN, KEY_2_LEN, KEY_3_LEN, KEY_4_LEN, WT_LEN, WT_VARINT,
};
use super::{DecodeError, Grow, LabelRef, SeriesRef, WriteRequestRef};

const KEY_1_VARINT: u64 = (1 << 3) | WT_VARINT as u64;
const KEY_5_LEN: u64 = (5 << 3) | WT_LEN as u64;
const KEY_6_VARINT: u64 = (6 << 3) | WT_VARINT as u64;

const REQUEST_FIELDS: &[KnownField] = &[(4, "symbols", WT_LEN), (5, "timeseries", WT_LEN)];
const TIME_SERIES_FIELDS: &[KnownField] = &[
    // Packed (length-delimited) or not (varint): both are matched before this list is used.
    (1, "labels_refs", WT_LEN),
    (2, "samples", WT_LEN),
    (3, "histograms", WT_LEN),
    (4, "exemplars", WT_LEN),
    (5, "metadata", WT_LEN),
    (6, "created_timestamp", WT_VARINT),
];

/// What a 2.0 request carried, over all its series: the basis of the
/// `X-Prometheus-Remote-Write-*-Written` response headers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct V2Counts {
    /// Float samples (all returned in [`WriteRequestRef::samples`]).
    pub samples: u64,
    /// Native histogram samples. Non-zero only inside a rejected request's error path, since a
    /// request with histograms fails to decode; kept for the metrics and messages.
    pub histograms: u64,
    /// Exemplars (accepted, not stored).
    pub exemplars: u64,
}

/// The 2.0 decoder's reusable scratch: the symbol table of the current request. Keep one per
/// core next to the [`WriteRequestRef`]; after the first few requests decoding allocates
/// nothing.
///
/// Label references are resolved as they arrive, never collected: a list of them would cost 8
/// bytes per 1-byte reference, the largest expansion of any field, for one series that may span
/// the whole request.
#[derive(Debug, Default)]
pub struct V2Decoder {
    /// `(offset, len)` of every symbol in the decoded buffer, in wire order.
    symbols: Vec<(u32, u32)>,
}

/// The label references of the series being decoded, resolved pair by pair.
struct RefPairs {
    /// References seen so far (to name a bad one by its position).
    count: usize,
    /// The name of the pair being read, once its reference came.
    name: Option<(u32, u32)>,
    /// The first reference past the symbol table, reported only once the count is known to be
    /// even (an odd count is the more basic mistake, and was reported first when references
    /// were collected).
    bad: Option<DecodeError>,
}

impl V2Decoder {
    /// Bytes this decoder holds (its vectors' capacity), for bounding what a pool keeps.
    pub fn capacity_bytes(&self) -> usize {
        self.symbols.capacity() * std::mem::size_of::<(u32, u32)>()
    }

    /// Decodes and validates the 2.0 request in `buf` into `out`, replacing its contents.
    ///
    /// The guarantees are those of [`WriteRequestRef::decode`]: on `Ok` every series has a
    /// valid label set whose ranges point into `buf` (at the symbols), and no histograms; on
    /// `Err`, `out` is left empty.
    pub fn decode(
        &mut self,
        buf: &[u8],
        out: &mut WriteRequestRef,
    ) -> Result<V2Counts, DecodeError> {
        self.decode_within(buf, out, &mut |_| Ok(()))
    }

    /// [`decode`](Self::decode), asking `grow` before any vector (the symbol table's or
    /// `out`'s) grows.
    pub fn decode_within(
        &mut self,
        buf: &[u8],
        out: &mut WriteRequestRef,
        grow: &mut Grow<'_>,
    ) -> Result<V2Counts, DecodeError> {
        out.clear();
        self.symbols.clear();
        let res = self.decode_request(buf, out, grow);
        if res.is_err() {
            out.clear();
        }
        res
    }

    fn decode_request(
        &mut self,
        buf: &[u8],
        out: &mut WriteRequestRef,
        grow: &mut Grow<'_>,
    ) -> Result<V2Counts, DecodeError> {
        check_buffer_len(buf.len())?;
        // Pass 1: the symbol table; everything else is only stepped over (and checked).
        let mut r = Reader { buf, pos: 0 };
        while let Some((at, key)) = r.next_key("Request")? {
            match key {
                KEY_4_LEN => {
                    let (s, e) = r.len_delim("Request.symbols")?;
                    // Offsets fit u32: check_buffer_len capped the buffer.
                    push(&mut self.symbols, (s as u32, (e - s) as u32), grow)?;
                }
                KEY_5_LEN => r.skip_len_delim("Request.timeseries")?,
                _ => {
                    reject_reserved(key, at)?;
                    r.skip_other(key, at, "Request", REQUEST_FIELDS)?;
                }
            }
        }
        if let Some(&(start, len)) = self.symbols.first() {
            if len != 0 {
                let first = bytes_at(buf, start, len);
                return Err(DecodeError::SymbolRef(format!(
                    "symbols[0] must be the empty string, got {:?}",
                    String::from_utf8_lossy(first)
                )));
            }
        }

        // Pass 2: the series. Pass 1 checked every top-level field, so only series fail here.
        let mut counts = V2Counts::default();
        let mut r = Reader { buf, pos: 0 };
        let mut index = 0usize;
        while let Some((at, key)) = r.next_key("Request")? {
            match key {
                KEY_5_LEN => {
                    let ts = r.message("Request.timeseries")?;
                    self.decode_series(buf, ts, index, out, &mut counts, grow)?;
                    index += 1;
                }
                KEY_4_LEN => r.skip_len_delim("Request.symbols")?,
                _ => r.skip_other(key, at, "Request", REQUEST_FIELDS)?,
            }
        }
        Ok(counts)
    }

    /// Decodes one `TimeSeries` (the reader spans exactly its bytes; `buf` is the whole
    /// request), resolves its labels, validates it and appends it to `out`.
    fn decode_series(
        &mut self,
        buf: &[u8],
        mut r: Reader<'_>,
        index: usize,
        out: &mut WriteRequestRef,
        counts: &mut V2Counts,
        grow: &mut Grow<'_>,
    ) -> Result<(), DecodeError> {
        let label_start = out.labels.len();
        let sample_start = out.samples.len();
        let mut histograms = 0u64;
        let mut exemplars = 0u64;
        let mut refs = RefPairs {
            count: 0,
            name: None,
            bad: None,
        };
        while let Some((at, key)) = r.next_key("TimeSeries")? {
            match key {
                // Packed, as proto3 senders write repeated scalars.
                KEY_1_LEN => {
                    let mut m = r.message("TimeSeries.labels_refs")?;
                    while m.has_more() {
                        let v = m
                            .varint()
                            .map_err(|e| e.into_error("element of", "TimeSeries.labels_refs"))?;
                        self.push_ref(&mut refs, v, index, out, grow)?;
                    }
                }
                // Unpacked: parsers must accept both encodings of a repeated scalar.
                KEY_1_VARINT => {
                    let v = r
                        .varint()
                        .map_err(|e| e.into_error("value of", "TimeSeries.labels_refs"))?;
                    self.push_ref(&mut refs, v, index, out, grow)?;
                }
                KEY_2_LEN => {
                    let mut m = r.message("TimeSeries.samples")?;
                    push(&mut out.samples, decode_sample(&mut m)?, grow)?;
                }
                // Remembered, not returned at once: the labels for the message may come later.
                KEY_3_LEN => {
                    r.skip_len_delim("TimeSeries.histograms")?;
                    histograms += 1;
                }
                KEY_4_LEN => {
                    r.skip_len_delim("TimeSeries.exemplars")?;
                    exemplars += 1;
                }
                KEY_5_LEN => r.skip_len_delim("TimeSeries.metadata")?,
                KEY_6_VARINT => {
                    r.varint()
                        .map_err(|e| e.into_error("value of", "TimeSeries.created_timestamp"))?;
                }
                _ => r.skip_other(key, at, "TimeSeries", TIME_SERIES_FIELDS)?,
            }
        }

        if !refs.count.is_multiple_of(2) {
            return Err(DecodeError::SymbolRef(format!(
                "series #{index}: labels_refs has {} entries; it must hold name/value pairs \
                 (an even count)",
                refs.count
            )));
        }
        if let Some(e) = refs.bad {
            return Err(e);
        }

        // Symbols may lie anywhere in the request, also after this series: use the whole
        // request, not the nested reader's prefix of it.
        let labels = &out.labels[label_start..];
        check_series(buf, labels, index, histograms > 0, false)?;
        counts.samples += (out.samples.len() - sample_start) as u64;
        counts.histograms += histograms;
        counts.exemplars += exemplars;
        // Cannot truncate: check_buffer_len capped the buffer at u32::MAX bytes and every
        // label and sample takes at least one byte of it.
        let series = SeriesRef {
            labels: label_start as u32..out.labels.len() as u32,
            samples: sample_start as u32..out.samples.len() as u32,
        };
        push(&mut out.series, series, grow)
    }

    /// Takes the next label reference `r` of series `index`: a value completes a label, which
    /// goes to `out` (after a bad reference nothing more does: the series is refused anyway).
    #[inline]
    fn push_ref(
        &self,
        refs: &mut RefPairs,
        r: u64,
        index: usize,
        out: &mut WriteRequestRef,
        grow: &mut Grow<'_>,
    ) -> Result<(), DecodeError> {
        let pos = refs.count;
        refs.count += 1;
        if refs.bad.is_some() {
            return Ok(());
        }
        let sym = match self.symbol(r, index, pos) {
            Ok(sym) => sym,
            Err(e) => {
                refs.bad = Some(e);
                return Ok(());
            }
        };
        match refs.name.take() {
            None => refs.name = Some(sym),
            Some(name) => {
                let label = LabelRef {
                    name_start: name.0,
                    name_len: name.1,
                    value_start: sym.0,
                    value_len: sym.1,
                };
                push(&mut out.labels, label, grow)?;
            }
        }
        Ok(())
    }

    /// The symbol `r` refers to, or an error naming the series and the position of the ref.
    #[inline]
    fn symbol(&self, r: u64, index: usize, pos: usize) -> Result<(u32, u32), DecodeError> {
        usize::try_from(r)
            .ok()
            .and_then(|i| self.symbols.get(i))
            .copied()
            .ok_or_else(|| {
                DecodeError::SymbolRef(format!(
                    "series #{index}: labels_refs[{pos}] = {r} is out of range: the symbol \
                     table has {} entries",
                    self.symbols.len()
                ))
            })
    }
}

/// Fields 1 to 3 are reserved in `Request` so that a 1.0 body (timeseries = 1, metadata = 3)
/// sent with the 2.0 Content-Type is not silently read as an empty request.
fn reject_reserved(key: u64, at: usize) -> Result<(), DecodeError> {
    let field = key >> 3;
    if (1..=3).contains(&field) {
        return Err(DecodeError::Protobuf(format!(
            "field {field} at byte offset {at} is reserved in io.prometheus.write.v2.Request \
             (is this a remote write 1.0 body sent with the 2.0 Content-Type?)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
