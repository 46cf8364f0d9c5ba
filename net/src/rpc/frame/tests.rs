use super::*;
use sluice_core::{put_series_key, STALE_NAN_BITS};

fn key(l: &[(&str, &str)]) -> Vec<u8> {
    let mut k = Vec::new();
    put_series_key(&mut k, l.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
    k
}

fn split(frame: &[u8]) -> (&[u8], &[u8]) {
    let h: &[u8; HEADER_LEN] = frame[..HEADER_LEN].try_into().unwrap();
    let (len, crc) = parse_header(h, 1 << 20).unwrap();
    let body = &frame[HEADER_LEN..HEADER_LEN + len];
    check_body(body, crc).unwrap();
    (body, &frame[HEADER_LEN + len..])
}

fn s(t: i64, v: f64) -> Sample {
    Sample {
        timestamp: t,
        value: v,
    }
}

#[test]
fn write_frames_round_trip_and_pipeline() {
    let stale = f64::from_bits(STALE_NAN_BITS);
    let k0 = key(&[("__name__", "up"), ("job", "node")]);
    let k1 = key(&[("__name__", "x")]);
    let mut buf = Vec::new();
    let mut e = WriteEncoder::begin(&mut buf, 7, "team-a");
    e.push(&mut buf, &k0, &[s(-5, 1.5), s(10, stale)]);
    e.push(&mut buf, &k1, &[]);
    assert_eq!(e.len(), 2);
    e.finish(&mut buf);
    let mut e = WriteEncoder::begin(&mut buf, 8, "b");
    e.push(&mut buf, &k1, &[s(1, 2.0)]);
    e.finish(&mut buf);

    let (body, rest) = split(&buf);
    assert_eq!(write_id(body), Some(7));
    let mut b = WriteBatch::default();
    let head = b.decode(body, |_| true).unwrap();
    assert_eq!(
        head,
        WriteHead {
            id: 7,
            tenant: "team-a"
        }
    );
    let v = b.view(body);
    assert_eq!(v.len(), 2);
    assert_eq!(v.key(0, &mut Vec::new()), &k0[..]);
    assert_eq!(v.hash(0), TenantHasher::new(b"team-a").hash_key(&k0));
    let got: Vec<_> = v
        .samples(0)
        .map(|s| (s.timestamp, s.value.to_bits()))
        .collect();
    assert_eq!(got, vec![(-5, 1.5f64.to_bits()), (10, stale.to_bits())]);
    assert_eq!(v.samples(1).count(), 0);
    assert_eq!(b.num_samples(), 2);

    let (body2, rest) = split(rest);
    assert!(rest.is_empty());
    let head = b.decode(body2, |_| true).unwrap();
    assert_eq!(head.tenant, "b");
    assert_eq!(b.view(body2).samples(0).next().unwrap().value, 2.0);
}

#[test]
fn replies_round_trip() {
    let r = Reply {
        id: 99,
        status: Status::Conflict,
        stored: 10,
        rejected: 2,
        message: "out of order".into(),
    };
    let mut buf = Vec::new();
    r.encode(&mut buf);
    let (body, _) = split(&buf);
    assert_eq!(Reply::decode(body).unwrap(), r);
}

#[test]
fn corrupt_frames_are_errors_not_panics() {
    let mut buf = Vec::new();
    let mut e = WriteEncoder::begin(&mut buf, 1, "t");
    e.push(&mut buf, &key(&[("__name__", "up")]), &[s(1, 1.0)]);
    e.finish(&mut buf);
    let h: &[u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().unwrap();
    assert_eq!(
        parse_header(h, 10),
        Err(FrameError::TooLarge {
            len: buf.len() - HEADER_LEN,
            max: 10
        })
    );
    let (_, crc) = parse_header(h, 1 << 20).unwrap();
    let mut body = buf[HEADER_LEN..].to_vec();
    body[12] ^= 1;
    assert_eq!(check_body(&body, crc), Err(FrameError::Checksum));

    // Every truncation and every single-byte change decodes to an error or a valid batch.
    let body = &buf[HEADER_LEN..];
    let mut b = WriteBatch::default();
    for n in 0..body.len() {
        assert!(b.decode(&body[..n], |_| true).is_err(), "truncated at {n}");
    }
    for i in 0..body.len() {
        for x in [1u8, 0x80, 0xff] {
            let mut m = body.to_vec();
            m[i] ^= x;
            let _ = b.decode(&m, |_| true);
            let _ = Reply::decode(&m);
        }
    }
    assert_eq!(
        b.decode(body, |t| t != "t").unwrap_err(),
        FrameError::Tenant
    );
}

#[test]
fn invalid_keys_are_refused() {
    for bad in [
        key(&[("job", "x"), ("__name__", "up")]),
        key(&[("__name__", "up"), ("0bad", "x")]),
        key(&[("__name__", "up"), ("a", "")]),
        b"__name__\xffup".to_vec(),
        b"__name__\xffu\xc3\xff".to_vec(),
    ] {
        let mut buf = Vec::new();
        let mut e = WriteEncoder::begin(&mut buf, 1, "t");
        e.push(&mut buf, &bad, &[]);
        e.finish(&mut buf);
        let mut b = WriteBatch::default();
        assert!(
            matches!(
                b.decode(&buf[HEADER_LEN..], |_| true),
                Err(FrameError::Key(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn forward_frames_round_trip() {
    let mut buf = Vec::new();
    encode_forward(&mut buf, 5, "team-a", b"snappy bytes");
    let (body, rest) = split(&buf);
    assert!(rest.is_empty());
    assert_eq!(request_kind(body), Ok(Kind::Forward));
    assert_eq!(write_id(body), Some(5));
    let (head, req) = decode_forward(body, |_| true).unwrap();
    assert_eq!(
        head,
        WriteHead {
            id: 5,
            tenant: "team-a"
        }
    );
    assert_eq!(req, b"snappy bytes");
    assert_eq!(
        decode_forward(body, |_| false).unwrap_err(),
        FrameError::Tenant
    );
    for n in 0..body.len().min(14) {
        let _ = decode_forward(&body[..n], |_| true);
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests: frames from the network never panic the decoder (nor make it reserve more
// than the memory budget reserved for the frame), and valid frames round-trip.
// ---------------------------------------------------------------------------------------------

use proptest::prelude::*;

/// A valid label set as key pairs: names ascending, `__name__` first (the others start with
/// a lower-case letter, which sorts after `_`).
fn arb_labels() -> impl Strategy<Value = Vec<(String, String)>> {
    (
        "[a-zA-Z_:][a-zA-Z0-9_:]{0,10}",
        prop::collection::btree_map("[a-z][a-zA-Z0-9_]{0,8}", "\\PC{1,6}", 0..4),
    )
        .prop_map(|(name, rest)| {
            let mut l = vec![("__name__".to_string(), name)];
            l.extend(rest);
            l
        })
}

type Series = (Vec<(String, String)>, Vec<(i64, u64)>);

fn arb_series() -> impl Strategy<Value = Vec<Series>> {
    prop::collection::vec(
        (
            arb_labels(),
            prop::collection::vec((any::<i64>(), any::<u64>()), 0..5),
        ),
        0..6,
    )
}

fn arb_tenant() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,20}"
}

/// A sealed write frame (header included) of these series.
fn write_frame(id: u64, tenant: &str, series: &[Series]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut e = WriteEncoder::begin(&mut buf, id, tenant);
    for (labels, samples) in series {
        let k = key(&labels
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect::<Vec<_>>());
        let samples: Vec<Sample> = samples
            .iter()
            .map(|&(t, bits)| s(t, f64::from_bits(bits)))
            .collect();
        e.push(&mut buf, &k, &samples);
    }
    e.finish(&mut buf);
    buf
}

#[derive(Debug, Clone)]
enum Mutation {
    /// XOR a byte.
    Flip(prop::sample::Index, u8),
    /// Cut the frame short.
    Truncate(prop::sample::Index),
    /// Overwrite a little-endian u32 (a length or count field, wherever it lands).
    Length(prop::sample::Index, u32),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    let len = prop_oneof![
        Just(0u32),
        Just(1),
        Just(u32::MAX),
        Just(u32::MAX / 16),
        0u32..64,
        any::<u32>()
    ];
    prop_oneof![
        4 => (any::<prop::sample::Index>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        3 => (any::<prop::sample::Index>(), len).prop_map(|(i, v)| Mutation::Length(i, v)),
    ]
}

fn mutate(frame: &mut Vec<u8>, m: &Mutation) {
    if frame.is_empty() {
        return;
    }
    match m {
        Mutation::Flip(i, x) => {
            let i = i.index(frame.len());
            frame[i] ^= x;
        }
        Mutation::Truncate(i) => frame.truncate(i.index(frame.len())),
        Mutation::Length(i, v) => {
            let i = i.index(frame.len());
            let end = (i + 4).min(frame.len());
            frame[i..end].copy_from_slice(&v.to_le_bytes()[..end - i]);
        }
    }
}

/// Everything a server does with a frame's bytes before storing them: header, CRC, kind, id,
/// and the decoder of each kind. Must return (an error or a batch), never panic; a decoded
/// write must be self-consistent, and its index within what the budget reserved for it.
fn parse_like_a_server(frame: &[u8]) {
    let Some(h) = frame.first_chunk::<HEADER_LEN>() else {
        return;
    };
    let parsed = parse_header(h, 1 << 20);
    let body = &frame[HEADER_LEN..];
    if let Ok((len, crc)) = parsed {
        // A body shorter than its header says is a truncated frame: the server waits for
        // the rest, so only a complete one is checked.
        if let Some(b) = body.get(..len) {
            let _ = check_body(b, crc);
        }
    }
    let _ = request_kind(body);
    let _ = write_id(body);
    let _ = decode_forward(body, |_| true);
    let _ = Reply::decode(body);
    let mut b = WriteBatch::default();
    if let Ok(head) = b.decode(body, |_| true) {
        let _ = head.tenant.len();
        let v = b.view(body);
        let mut n = 0;
        for i in 0..v.len() {
            assert!(validate_key(v.key(i, &mut Vec::new())).is_ok());
            n += v.samples(i).count();
        }
        assert_eq!(n, b.num_samples());
    }
    assert!(
        b.capacity_bytes() as u64 <= crate::budget::need::write_frame_index(body.len()),
        "index of {} bytes for a body of {}",
        b.capacity_bytes(),
        body.len()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn write_frames_round_trip(id in any::<u64>(), tenant in arb_tenant(), series in arb_series()) {
        let frame = write_frame(id, &tenant, &series);
        let (body, rest) = split(&frame);
        prop_assert!(rest.is_empty());
        prop_assert_eq!(request_kind(body), Ok(Kind::Write));
        prop_assert_eq!(write_id(body), Some(id));
        let mut b = WriteBatch::default();
        let head = b.decode(body, |_| true).unwrap();
        prop_assert_eq!(head, WriteHead { id, tenant: &tenant });
        let v = b.view(body);
        prop_assert_eq!(v.len(), series.len());
        let mut scratch = Vec::new();
        for (i, (labels, samples)) in series.iter().enumerate() {
            let got: Vec<(&[u8], &[u8])> = sluice_core::key_labels(v.key(i, &mut scratch)).collect();
            let want: Vec<(&[u8], &[u8])> =
                labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
            prop_assert_eq!(got, want);
            let got: Vec<(i64, u64)> =
                v.samples(i).map(|s| (s.timestamp, s.value.to_bits())).collect();
            prop_assert_eq!(&got, samples);
        }
    }

    #[test]
    fn forward_and_reply_frames_round_trip(
        id in any::<u64>(),
        tenant in arb_tenant(),
        request in prop::collection::vec(any::<u8>(), 0..64),
        status in 0u8..5,
        stored in any::<u64>(),
        rejected in any::<u64>(),
        message in "\\PC{0,40}",
    ) {
        let mut buf = Vec::new();
        encode_forward(&mut buf, id, &tenant, &request);
        let (body, _) = split(&buf);
        let (head, got) = decode_forward(body, |_| true).unwrap();
        prop_assert_eq!(head, WriteHead { id, tenant: &tenant });
        prop_assert_eq!(got, &request[..]);

        let r = Reply {
            id,
            status: Status::from_u8(status).unwrap(),
            stored,
            rejected,
            message,
        };
        let mut buf = Vec::new();
        r.encode(&mut buf);
        let (body, _) = split(&buf);
        prop_assert_eq!(Reply::decode(body).unwrap(), r);
    }

    #[test]
    fn random_bytes_never_panic(frame in prop::collection::vec(any::<u8>(), 0..256)) {
        parse_like_a_server(&frame);
        // The same bytes behind a well-formed header of each kind reach further.
        for kind in [1u8, 2, 3] {
            let mut f = vec![0; HEADER_LEN];
            f.push(kind);
            f.extend_from_slice(&frame);
            parse_like_a_server(&f);
        }
    }

    #[test]
    fn mutated_frames_never_panic(
        id in any::<u64>(),
        tenant in arb_tenant(),
        series in arb_series(),
        muts in prop::collection::vec(arb_mutation(), 1..4),
    ) {
        let mut frame = write_frame(id, &tenant, &series);
        for m in &muts {
            mutate(&mut frame, m);
        }
        parse_like_a_server(&frame);
        let mut reply = Vec::new();
        Reply { id, status: Status::Conflict, stored: 1, rejected: 2, message: tenant }
            .encode(&mut reply);
        for m in &muts {
            mutate(&mut reply, m);
        }
        parse_like_a_server(&reply);
    }
}
