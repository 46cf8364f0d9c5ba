//! Zero-copy decoder of remote-write 2.0 `io.prometheus.write.v2.Request` (already
//! snappy-decompressed) into the same [`WriteRequestRef`] the 1.0 decoder fills.
//!
//! Owns the 2.0 wire schema and the symbol table: label references are resolved to byte ranges
//! of the symbol strings inside the caller's buffer, so everything after decoding (hashing,
//! placement, ingest, replication) is the same for both protocols. Validation is the 1.0
//! decoder's (UTF-8, label rules, sorted names). Must not touch snappy, HTTP or storage; the
//! wire reader, sample decoder and validation are borrowed from the parent module, not copied.
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

use super::{
    check_buffer_len, decode_sample, push, render_lossy, validate_labels, DecodeError, Grow,
    KnownField, LabelRef, Reader, SeriesRef, WriteRequestRef, KEY_1_LEN, KEY_2_LEN, KEY_3_LEN,
    KEY_4_LEN, WT_LEN, WT_VARINT,
};

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
                let first = super::bytes_at(buf, start, len);
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
        if histograms > 0 {
            return Err(DecodeError::NativeHistogram {
                index,
                series: render_lossy(buf, labels),
            });
        }
        if let Err(source) = validate_labels(buf, labels, false) {
            return Err(DecodeError::InvalidSeries {
                index,
                series: render_lossy(buf, labels),
                source,
            });
        }
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
mod tests {
    use super::*;
    use crate::labels::LabelError;
    use proptest::prelude::*;
    use prost::Message as _;

    // Reference schema, encoded by prost: an independent encoder to check the decoder against.

    #[derive(Clone, PartialEq, prost::Message)]
    struct PRequest {
        #[prost(string, repeated, tag = "4")]
        symbols: Vec<String>,
        #[prost(message, repeated, tag = "5")]
        timeseries: Vec<PTimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct PTimeSeries {
        #[prost(uint32, repeated, tag = "1")]
        labels_refs: Vec<u32>,
        #[prost(message, repeated, tag = "2")]
        samples: Vec<PSample>,
        #[prost(message, repeated, tag = "3")]
        histograms: Vec<PHistogram>,
        #[prost(message, repeated, tag = "4")]
        exemplars: Vec<PExemplar>,
        #[prost(message, optional, tag = "5")]
        metadata: Option<PMetadata>,
        #[prost(int64, tag = "6")]
        created_timestamp: i64,
    }

    /// `Sample` with rc.4's `start_timestamp` (field 3), which the decoder must skip.
    #[derive(Clone, PartialEq, prost::Message)]
    struct PSample {
        #[prost(double, tag = "1")]
        value: f64,
        #[prost(int64, tag = "2")]
        timestamp: i64,
        #[prost(int64, tag = "3")]
        start_timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct PHistogram {
        #[prost(uint64, tag = "1")]
        count_int: u64,
        #[prost(double, tag = "3")]
        sum: f64,
        #[prost(sint32, tag = "4")]
        schema: i32,
        #[prost(int64, tag = "15")]
        timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct PExemplar {
        #[prost(uint32, repeated, tag = "1")]
        labels_refs: Vec<u32>,
        #[prost(double, tag = "2")]
        value: f64,
        #[prost(int64, tag = "3")]
        timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct PMetadata {
        #[prost(int32, tag = "1")]
        kind: i32,
        #[prost(uint32, tag = "3")]
        help_ref: u32,
        #[prost(uint32, tag = "4")]
        unit_ref: u32,
    }

    type Labels<'a> = &'a [(&'a str, &'a str)];

    /// Interns strings into a symbol table that starts with "", as senders must.
    #[derive(Default)]
    struct Symbols(Vec<String>);

    impl Symbols {
        fn new() -> Self {
            Symbols(vec![String::new()])
        }
        fn r(&mut self, s: &str) -> u32 {
            match self.0.iter().position(|x| x == s) {
                Some(i) => i as u32,
                None => {
                    self.0.push(s.to_string());
                    (self.0.len() - 1) as u32
                }
            }
        }
        fn refs(&mut self, labels: Labels<'_>) -> Vec<u32> {
            labels
                .iter()
                .flat_map(|(n, v)| [self.r(n), self.r(v)])
                .collect()
        }
    }

    fn series(syms: &mut Symbols, labels: Labels<'_>, samples: &[(i64, f64)]) -> PTimeSeries {
        PTimeSeries {
            labels_refs: syms.refs(labels),
            samples: samples
                .iter()
                .map(|&(timestamp, value)| PSample {
                    value,
                    timestamp,
                    start_timestamp: 0,
                })
                .collect(),
            ..Default::default()
        }
    }

    use crate::remote_write::tests::{check_invariants, plain, Plain};

    fn plain_prost(r: &PRequest) -> Plain {
        r.timeseries
            .iter()
            .map(|t| {
                (
                    t.labels_refs
                        .chunks(2)
                        .map(|p| {
                            (
                                r.symbols[p[0] as usize].clone(),
                                r.symbols[p[1] as usize].clone(),
                            )
                        })
                        .collect(),
                    t.samples
                        .iter()
                        .map(|s| (s.timestamp, s.value.to_bits()))
                        .collect(),
                )
            })
            .collect()
    }

    fn decode(buf: &[u8]) -> Result<(Plain, V2Counts), DecodeError> {
        let mut d = WriteRequestRef::default();
        let mut dec = V2Decoder::default();
        let counts = dec.decode(buf, &mut d)?;
        check_invariants(&d, buf);
        assert_eq!(counts.samples, d.samples.len() as u64);
        Ok((plain(&d, buf), counts))
    }

    fn err(buf: &[u8]) -> DecodeError {
        match decode(buf) {
            Err(e) => e,
            Ok(p) => panic!("expected an error, decoded {p:?}"),
        }
    }

    fn sample_request() -> PRequest {
        let mut syms = Symbols::new();
        let mut s2 = series(
            &mut syms,
            &[
                ("__name__", "rpc_seconds"),
                ("method", "Get"),
                ("service", "ünï"),
            ],
            &[
                (-5, f64::from_bits(0x7ff0_0000_0000_0002)),
                (1_700_000_000_000, 0.25),
                (i64::MIN, -2.0),
            ],
        );
        let trace = syms.refs(&[("trace_id", "0123456789abcdef")]);
        s2.exemplars = vec![
            PExemplar {
                labels_refs: trace,
                value: 0.3,
                timestamp: 1_700_000_000_001,
            };
            2
        ];
        s2.metadata = Some(PMetadata {
            kind: 1,
            help_ref: syms.r("Time spent in RPCs."),
            unit_ref: syms.r("seconds"),
        });
        s2.created_timestamp = 1_600_000_000_000;
        s2.samples[1].start_timestamp = 1_600_000_000_000;
        let timeseries = vec![
            series(
                &mut syms,
                &[("__name__", "up"), ("job", "node")],
                &[(1_700_000_000_000, 1.0)],
            ),
            s2,
            series(&mut syms, &[("__name__", "empty")], &[]),
            series(
                &mut syms,
                &[("__name__", "big"), ("v", &"x".repeat(300))],
                &[(1, 2.0), (2, 3.0)],
            ),
            // Same labels again (the spec allows it, e.g. for other metadata).
            series(
                &mut syms,
                &[("__name__", "up"), ("job", "node")],
                &[(1_700_000_015_000, 1.0)],
            ),
        ];
        PRequest {
            symbols: syms.0,
            timeseries,
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

    fn len_field(out: &mut Vec<u8>, field: u64, body: &[u8]) {
        varint(out, (field << 3) | u64::from(WT_LEN));
        varint(out, body.len() as u64);
        out.extend_from_slice(body);
    }

    fn symbols_msg(symbols: &[&str]) -> Vec<u8> {
        PRequest {
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            timeseries: vec![],
        }
        .encode_to_vec()
    }

    /// A request with `symbols` and one series holding `refs` and one sample.
    fn with_refs(symbols: &[&str], refs: &[u32]) -> Vec<u8> {
        let mut buf = symbols_msg(symbols);
        buf.extend(
            PRequest {
                symbols: vec![],
                timeseries: vec![PTimeSeries {
                    labels_refs: refs.to_vec(),
                    samples: vec![PSample {
                        value: 1.0,
                        timestamp: 5,
                        start_timestamp: 0,
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec(),
        );
        buf
    }

    fn labels_of(p: Labels<'_>) -> Vec<(String, String)> {
        p.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn decodes_what_prost_encodes() {
        let req = sample_request();
        let buf = req.encode_to_vec();
        let (got, counts) = decode(&buf).unwrap();
        assert_eq!(got, plain_prost(&req));
        assert_eq!(
            counts,
            V2Counts {
                samples: 7,
                histograms: 0,
                exemplars: 2
            }
        );
        assert_eq!(
            got[1].1[0].1, 0x7ff0_0000_0000_0002,
            "stale NaN kept bit-exact"
        );
        assert_eq!(got[1].1[2].0, i64::MIN);
        assert_eq!(got[2].1, vec![], "a series without samples is kept");
    }

    #[test]
    fn empty_request_and_empty_symbol_table_are_ok() {
        assert_eq!(decode(&[]).unwrap(), (vec![], V2Counts::default()));
        assert_eq!(decode(&symbols_msg(&[""])).unwrap().0, vec![]);
    }

    #[test]
    fn label_ranges_point_at_the_symbols_in_the_buffer() {
        let buf = with_refs(&["", "__name__", "up"], &[1, 2]);
        let mut d = WriteRequestRef::default();
        V2Decoder::default().decode(&buf, &mut d).unwrap();
        let l = d.labels[0];
        // Symbol bytes: tag, len, "" ; tag, len, "__name__" ; tag, len, "up".
        assert_eq!((l.name_start, l.name_len), (4, 8));
        assert_eq!((l.value_start, l.value_len), (14, 2));
        assert_eq!(l.name(&buf), "__name__");
        assert_eq!(l.value(&buf), "up");
    }

    #[test]
    fn symbols_after_the_series_are_found() {
        // Repeated fields of concatenated messages merge: series first, symbols last.
        let mut syms = Symbols::new();
        let ts = series(&mut syms, &[("__name__", "late"), ("a", "b")], &[(1, 2.0)]);
        let mut buf = PRequest {
            symbols: vec![],
            timeseries: vec![ts],
        }
        .encode_to_vec();
        buf.extend(
            PRequest {
                symbols: syms.0,
                timeseries: vec![],
            }
            .encode_to_vec(),
        );
        let (got, _) = decode(&buf).unwrap();
        assert_eq!(
            got,
            vec![(
                labels_of(&[("__name__", "late"), ("a", "b")]),
                vec![(1, 2f64.to_bits())]
            )]
        );
    }

    #[test]
    fn unpacked_label_refs_are_accepted() {
        let mut ts = Vec::new();
        for r in [1u64, 2] {
            varint(&mut ts, 1 << 3); // field 1, varint
            varint(&mut ts, r);
        }
        len_field(&mut ts, 2, &PSample::default().encode_to_vec());
        let mut buf = symbols_msg(&["", "__name__", "m"]);
        len_field(&mut buf, 5, &ts);
        let (got, _) = decode(&buf).unwrap();
        assert_eq!(got[0].0, labels_of(&[("__name__", "m")]));
    }

    #[test]
    fn label_ref_errors_name_the_series_and_the_ref() {
        let odd = err(&with_refs(&["", "__name__", "m"], &[1, 2, 1]));
        assert_eq!(
            odd.to_string(),
            "invalid symbol reference: series #0: labels_refs has 3 entries; it must hold \
             name/value pairs (an even count)"
        );
        let out = err(&with_refs(&["", "__name__", "m"], &[1, 3]));
        assert_eq!(
            out.to_string(),
            "invalid symbol reference: series #0: labels_refs[1] = 3 is out of range: the \
             symbol table has 3 entries"
        );
        // No symbol table at all.
        let none = err(&with_refs(&[], &[1, 2]));
        assert!(
            none.to_string()
                .contains("labels_refs[0] = 1 is out of range: the symbol table has 0 entries"),
            "{none}"
        );
        // A ref beyond u32 (only hand-encoded bytes can carry one) is reported as sent.
        let mut ts = Vec::new();
        let mut packed = Vec::new();
        varint(&mut packed, 1);
        varint(&mut packed, u64::MAX);
        len_field(&mut ts, 1, &packed);
        let mut buf = symbols_msg(&["", "__name__"]);
        len_field(&mut buf, 5, &ts);
        assert!(err(&buf)
            .to_string()
            .contains(&format!("labels_refs[1] = {} is out of range", u64::MAX)));
        // The second series is the one reported.
        let mut buf = with_refs(&["", "__name__", "m"], &[1, 2]);
        buf.extend(with_refs(&[], &[1, 9]));
        assert!(err(&buf)
            .to_string()
            .contains("series #1: labels_refs[1] = 9"));
    }

    #[test]
    fn symbol_table_must_start_with_the_empty_string() {
        let e = err(&with_refs(&["__name__", "m"], &[0, 1]));
        assert_eq!(
            e,
            DecodeError::SymbolRef(
                "symbols[0] must be the empty string, got \"__name__\"".to_string()
            )
        );
    }

    #[test]
    fn a_remote_write_1_body_is_rejected_not_read_as_empty() {
        // prometheus.WriteRequest: timeseries = 1 { labels = 1 { name = 1, value = 2 } }.
        let mut label = Vec::new();
        len_field(&mut label, 1, b"__name__");
        len_field(&mut label, 2, b"up");
        let mut ts = Vec::new();
        len_field(&mut ts, 1, &label);
        let mut buf = Vec::new();
        len_field(&mut buf, 1, &ts);
        match err(&buf) {
            DecodeError::Protobuf(m) => assert!(
                m.contains("field 1 at byte offset 0 is reserved")
                    && m.contains("remote write 1.0 body"),
                "{m}"
            ),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn native_histograms_reject_the_request_naming_the_series() {
        let mut req = sample_request();
        req.timeseries[3].histograms = vec![PHistogram {
            count_int: 3,
            sum: 1.5,
            schema: 2,
            timestamp: 7,
        }];
        let e = err(&req.encode_to_vec());
        assert_eq!(
            e.to_string(),
            format!(
                "series #3 big{{v=\"{}\"}}: native histograms are not supported yet",
                "x".repeat(300)
            )
        );
    }

    #[test]
    fn label_rules_are_the_same_as_for_remote_write_1() {
        let cases: &[(&[&str], &[u32], LabelError)] = &[
            (
                &["", "__name__", "m", "0bad", "v"],
                &[1, 2, 3, 4],
                LabelError::InvalidLabelName {
                    name: "0bad".into(),
                },
            ),
            (
                &["", "__name__", "m", "b", "a", "v"],
                &[1, 2, 3, 5, 4, 5],
                LabelError::UnsortedLabels {
                    prev: "b".into(),
                    name: "a".into(),
                },
            ),
            (
                &["", "__name__", "m", "job"],
                &[1, 2, 3, 0],
                LabelError::EmptyLabelValue { name: "job".into() },
            ),
        ];
        for (symbols, refs, want) in cases {
            match err(&with_refs(symbols, refs)) {
                DecodeError::InvalidSeries { index, source, .. } => {
                    assert_eq!((index, &source), (0, want), "{symbols:?} {refs:?}")
                }
                e => panic!("{symbols:?} {refs:?}: {e:?}"),
            }
        }
        // A symbol that is not UTF-8 (only hand-encoded bytes carry one).
        let mut buf = Vec::new();
        len_field(&mut buf, 4, b"");
        len_field(&mut buf, 4, b"__name__");
        len_field(&mut buf, 4, b"\xff\xfe");
        buf.extend(with_refs(&[], &[1, 2]));
        match err(&buf) {
            DecodeError::InvalidSeries { source, .. } => {
                assert_eq!(source, LabelError::NotUtf8 { field: "value" })
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn known_fields_with_the_wrong_wire_type_are_errors() {
        // TimeSeries.samples (2) as a varint.
        let mut ts = Vec::new();
        varint(&mut ts, 2 << 3);
        varint(&mut ts, 1);
        let mut buf = symbols_msg(&[""]);
        len_field(&mut buf, 5, &ts);
        match err(&buf) {
            DecodeError::Protobuf(m) => {
                assert!(m.contains("TimeSeries.samples (field 2)"), "{m}")
            }
            e => panic!("{e:?}"),
        }
        // Request.symbols (4) as a varint.
        let mut buf = Vec::new();
        varint(&mut buf, 4 << 3);
        varint(&mut buf, 1);
        match err(&buf) {
            DecodeError::Protobuf(m) => assert!(m.contains("Request.symbols (field 4)"), "{m}"),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn an_error_leaves_the_output_empty_and_the_decoder_reusable() {
        let mut d = WriteRequestRef::default();
        let mut dec = V2Decoder::default();
        let good = sample_request().encode_to_vec();
        dec.decode(&good, &mut d).unwrap();
        assert_eq!(d.series.len(), 5);
        let bad = with_refs(&["", "__name__", "m"], &[1, 7]);
        assert!(dec.decode(&bad, &mut d).is_err());
        assert!(d.series.is_empty() && d.labels.is_empty() && d.samples.is_empty());
        dec.decode(&good, &mut d).unwrap();
        assert_eq!(plain(&d, &good), plain_prost(&sample_request()));
    }

    #[test]
    fn truncations_and_bit_flips_never_panic() {
        let buf = sample_request().encode_to_vec();
        let mut d = WriteRequestRef::default();
        let mut dec = V2Decoder::default();
        for cut in 0..buf.len() {
            if dec.decode(&buf[..cut], &mut d).is_ok() {
                check_invariants(&d, &buf[..cut]);
            }
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let mut b = buf.clone();
            for _ in 0..(1 + x % 4) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let pos = (x as usize) % b.len();
                b[pos] ^= 1 << (x >> 61);
            }
            if dec.decode(&b, &mut d).is_ok() {
                check_invariants(&d, &b);
            }
        }
    }

    fn arb_label_set() -> impl Strategy<Value = Vec<(String, String)>> {
        (
            "[a-z_:][a-z0-9_:]{0,12}",
            prop::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,8}", "\\PC{1,8}", 0..5),
        )
            .prop_map(|(name, rest)| {
                let mut v = vec![("__name__".to_string(), name)];
                v.extend(rest.into_iter().filter(|(k, _)| k.as_str() > "__name__"));
                v
            })
    }

    fn arb_request() -> impl Strategy<Value = PRequest> {
        prop::collection::vec(
            (
                arb_label_set(),
                prop::collection::vec((any::<i64>(), any::<f64>()), 0..4),
            ),
            0..6,
        )
        .prop_map(|series_list| {
            let mut syms = Symbols::new();
            let timeseries = series_list
                .iter()
                .map(|(l, s)| {
                    let pairs: Vec<(&str, &str)> =
                        l.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                    series(&mut syms, &pairs, s)
                })
                .collect();
            PRequest {
                symbols: syms.0,
                timeseries,
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn roundtrips_random_valid_requests(req in arb_request()) {
            let buf = req.encode_to_vec();
            // Compared with what prost reads back: proto3 does not encode -0.0 (it equals the
            // default), so the request itself may differ from its encoding there.
            let back = PRequest::decode(buf.as_slice()).unwrap();
            prop_assert_eq!(decode(&buf).unwrap().0, plain_prost(&back));
        }

        #[test]
        fn random_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&buf);
        }
    }
}
