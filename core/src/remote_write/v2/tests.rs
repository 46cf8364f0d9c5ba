//! The remote-write 2.0 decoder's tests, checked against prost as an independent encoder.

use proptest::prelude::*;
use prost::Message as _;

use super::*;
use crate::labels::LabelError;
// Shared with the 1.0 tests: the plain form of a decoded request, its invariants, and hand
// encoding for bytes prost would never produce (`varint`, `len_field`).
use crate::remote_write::tests::{check_invariants, len_field, plain, varint, Plain};
use crate::STALE_NAN_BITS;

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
            (-5, f64::from_bits(STALE_NAN_BITS)),
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
    assert_eq!(got[1].1[0].1, STALE_NAN_BITS, "stale NaN kept bit-exact");
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
        DecodeError::SymbolRef("symbols[0] must be the empty string, got \"__name__\"".to_string())
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
