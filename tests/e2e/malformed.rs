//! Bad input gets its status and a message naming the problem; nothing of a rejected request
//! is stored; the server keeps serving and earlier data stays intact.

use sluice_bench::prompb::{Label, Sample, TimeSeries, WriteRequest};

use crate::harness::{dump, request, simple_series, sorted, Server};

const T0: i64 = 1_700_000_000_000;

fn series_with(labels: &[(&str, &str)]) -> WriteRequest {
    WriteRequest {
        timeseries: vec![TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: vec![Sample {
                value: 1.0,
                timestamp: T0,
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn snappy(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(raw).unwrap()
}

#[test]
fn each_malformed_input_gets_its_status_and_reason() {
    let s = Server::start(2, &["--max-request-bytes", "4096"]);
    let good = simple_series("kept_metric", 10);
    assert_eq!(s.write(&request(&good, T0, |i| i as f64)).0, 204);

    // Non-UTF-8 label value: encode "XX" and patch the bytes in the protobuf.
    let mut non_utf8 = sluice_bench::encode(&series_with(&[("__name__", "m"), ("job", "XX")]));
    let at = non_utf8.windows(2).position(|w| w == b"XX").unwrap();
    non_utf8[at] = 0xff;
    non_utf8[at + 1] = 0xfe;

    // A request whose last series is bad: nothing of it may be stored.
    let mut partly_bad = request(&simple_series("never_stored", 5), T0, |_| 1.0);
    partly_bad
        .timeseries
        .extend(series_with(&[("__name__", "never_stored"), ("0bad", "x")]).timeseries);

    let big = request(&simple_series("too_big_metric", 2000), T0, |i| i as f64);

    // (case, body, extra headers, expected status, expected words in the message)
    type Case<'a> = (&'a str, Vec<u8>, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "bad snappy",
            b"definitely not snappy".to_vec(),
            vec![],
            400,
            "snappy",
        ),
        (
            "bad protobuf",
            snappy(&[0x0a, 0xff, 0xff, 0xff, 0x0f]),
            vec![],
            400,
            "protobuf",
        ),
        (
            "missing __name__",
            sluice_bench::encode_snappy(&series_with(&[("job", "x")])),
            vec![],
            400,
            "missing metric name",
        ),
        (
            "invalid label name",
            sluice_bench::encode_snappy(&series_with(&[("__name__", "m"), ("bad-name", "x")])),
            vec![],
            400,
            "invalid label name \"bad-name\"",
        ),
        (
            "empty label name",
            sluice_bench::encode_snappy(&series_with(&[("", "x"), ("__name__", "m")])),
            vec![],
            400,
            "empty label name",
        ),
        (
            "duplicate label",
            sluice_bench::encode_snappy(&series_with(&[("__name__", "m"), ("a", "1"), ("a", "2")])),
            vec![],
            400,
            "duplicate label name \"a\"",
        ),
        (
            "unsorted labels",
            sluice_bench::encode_snappy(&series_with(&[("__name__", "m"), ("b", "1"), ("a", "2")])),
            vec![],
            400,
            "not sorted",
        ),
        ("non-UTF-8", snappy(&non_utf8), vec![], 400, "UTF-8"),
        (
            "one bad series among good ones",
            sluice_bench::encode_snappy(&partly_bad),
            vec![],
            400,
            "invalid label name \"0bad\"",
        ),
        (
            "too large",
            sluice_bench::encode_snappy(&big),
            vec![],
            413,
            "exceeds",
        ),
        (
            "gzip encoding",
            sluice_bench::encode_snappy(&series_with(&[("__name__", "m")])),
            vec![("Content-Encoding", "gzip")],
            415,
            "Content-Encoding",
        ),
        (
            "unknown proto",
            sluice_bench::encode_snappy(&series_with(&[("__name__", "m")])),
            vec![(
                "Content-Type",
                "application/x-protobuf;proto=io.prometheus.write.v3.Request",
            )],
            415,
            "Content-Type",
        ),
    ];
    for (name, body, extra, status, needle) in &cases {
        let (code, msg) = if extra.iter().any(|(k, _)| *k == "Content-Encoding") {
            let mut h = extra.clone();
            h.push(("Content-Type", "application/x-protobuf"));
            s.post("/api/v1/receive", body, &h)
        } else {
            s.write_bytes(body, extra)
        };
        assert_eq!(code, *status, "{name}: {msg}");
        assert!(
            msg.contains(needle),
            "{name}: message {msg:?} should contain {needle:?}"
        );
        assert!(
            !msg.trim().contains('\n'),
            "{name}: one-line message expected: {msg:?}"
        );
    }
    // Missing Content-Encoding entirely.
    let (code, msg) = s.post(
        "/api/v1/receive",
        &sluice_bench::encode_snappy(&series_with(&[("__name__", "m")])),
        &[("Content-Type", "application/x-protobuf")],
    );
    assert_eq!(code, 415, "{msg}");

    // Still serving; earlier data intact; nothing of the rejected requests stored.
    let got = dump(&s, r#"{__name__=~".+"}"#, T0, "1m");
    assert_eq!(got.len(), 10, "only the good series: {:?}", got.keys());
    for (i, l) in good.iter().enumerate() {
        assert_eq!(got[&sorted(l)], vec![(T0, i as f64)]);
    }
    let m = s.metrics();
    for line in [
        "sluice_remote_write_rejected_requests_total{reason=\"bad_snappy\"} 1",
        "sluice_remote_write_rejected_requests_total{reason=\"bad_protobuf\"} 1",
        "sluice_remote_write_rejected_requests_total{reason=\"too_large\"} 1",
        "sluice_http_requests_total{handler=\"receive\",code=\"415\"} 3",
    ] {
        assert!(m.contains(line), "metrics lack {line}:\n{m}");
    }
}

#[test]
fn random_garbage_never_breaks_the_server() {
    let s = Server::start(1, &[]);
    let good = simple_series("survivor", 3);
    assert_eq!(s.write(&request(&good, T0, |_| 7.0)).0, 204);
    let valid = sluice_bench::encode(&request(&simple_series("fuzzed", 20), T0, |i| i as f64));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..300 {
        let mut body = valid.clone();
        for _ in 0..(1 + next() % 8) {
            let pos = (next() as usize) % body.len();
            body[pos] = next() as u8;
        }
        if round % 3 == 0 {
            body.truncate((next() as usize) % body.len());
        }
        let (code, msg) = s.write_bytes(&snappy(&body), &[]);
        assert!(
            matches!(code, 204 | 400 | 409),
            "round {round}: unexpected {code}: {msg}"
        );
    }
    let got = dump(&s, "survivor", T0, "1m");
    assert_eq!(got.len(), 3);
    assert!(got.values().all(|p| p == &vec![(T0, 7.0)]));
}

/// A client that stops half-way through its headers is disconnected after
/// `--http.header-read-timeout`, while other clients are served throughout; one that sends
/// its headers in time on the same kind of connection is answered.
#[test]
fn a_client_stalled_in_its_headers_is_disconnected() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    let s = Server::start(1, &["--http.header-read-timeout", "1s"]);
    let connect = || {
        let c = std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    };
    let mut stalled = connect();
    stalled
        .write_all(b"POST /api/v1/receive HTTP/1.1\r\nHost: sluice\r\nContent-Type: app")
        .unwrap();
    let started = Instant::now();
    let series = simple_series("loris_metric", 1);
    assert_eq!(s.write(&request(&series, T0, |_| 1.0)).0, 204);
    let mut rest = Vec::new();
    // EOF (or a reset) once the deadline passes; a read timeout here would mean never.
    let _ = stalled.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(8),
        "disconnected after {waited:?}"
    );
    let mut prompt = connect();
    prompt
        .write_all(b"GET /-/healthy HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    prompt.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(dump(&s, "loris_metric", T0, "1h").len(), 1);
}
