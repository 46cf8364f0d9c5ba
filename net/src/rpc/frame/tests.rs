use super::*;
use sluice_core::put_series_key;

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
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
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
