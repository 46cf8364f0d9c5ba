//! The remote-write 1.0 decoder's tests, checked against prost as an independent encoder, and
//! the helpers the 2.0 decoder's tests share (both fill the same [`WriteRequestRef`]).

use proptest::prelude::*;
use prost::Message as _;

use super::known::KnownSeries;
use super::request::check_buffer_len;
use super::wire::{Reader, VarintError, WT_I32, WT_I64, WT_LEN, WT_VARINT};
use super::*;
use crate::hash::Identity;
use crate::labels::{self, LabelError};
use crate::STALE_NAN_BITS;

// ---------------------------------------------------------------------------------------------
// Reference schema, encoded by prost: an independent encoder to check the decoder against.
// ---------------------------------------------------------------------------------------------

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

pub(crate) fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u64, wt: u8) {
    varint(out, (field << 3) | u64::from(wt));
}

pub(crate) fn len_field(out: &mut Vec<u8>, field: u64, body: &[u8]) {
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

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

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
                    (-1_000_000_000_000, f64::from_bits(STALE_NAN_BITS)),
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
    assert_eq!(got[2].1[3], (-1_000_000_000_000, STALE_NAN_BITS));
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
    sample.extend_from_slice(&STALE_NAN_BITS.to_le_bytes());
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
            vec![(-7, STALE_NAN_BITS), (0, 0f64.to_bits())]
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

// ---------------------------------------------------------------------------------------------
// Validation and rejection
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Robustness
// ---------------------------------------------------------------------------------------------

fn sample_request() -> PWriteRequest {
    let mut s2 = ts(
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

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Throughput (run: cargo test -p sluice-core --release -- --ignored --nocapture throughput)
// ---------------------------------------------------------------------------------------------

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
