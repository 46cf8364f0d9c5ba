//! Remote write 2.0 against the real binary: content negotiation, the `-Written` response
//! headers on every status, symbol-table errors, native histograms rejected whole, exemplars
//! and metadata accepted, 1.0 unchanged; and a real Prometheus agent remote-writing its own
//! metrics (Debian's Prometheus 2.42 speaks 1.0 only: no registry here offers a 3.x).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_bench::prompb::v2::{
    encode_snappy, Exemplar, Histogram, Metadata, Request, Sample, SymbolTable, TimeSeries,
    CONTENT_TYPE,
};

use crate::harness::{dump, free_port, request, simple_series, sorted, Dump, Server};

const T0: i64 = 1_700_000_000_000;

/// Status, the three `-Written` headers (`None` when absent) and the body.
struct Answer {
    code: u16,
    written: [Option<u64>; 3],
    body: String,
}

impl Answer {
    fn assert(&self, code: u16, samples: u64, histograms: u64, exemplars: u64) {
        assert_eq!(self.code, code, "{}", self.body);
        assert_eq!(
            self.written,
            [Some(samples), Some(histograms), Some(exemplars)],
            "X-Prometheus-Remote-Write-{{Samples,Histograms,Exemplars}}-Written ({}: {})",
            self.code,
            self.body
        );
    }
}

fn post(s: &Server, body: &[u8], headers: &[(&str, &str)]) -> Answer {
    let mut req = crate::harness::client()
        .post(&s.url("/api/v1/receive"))
        .timeout(Duration::from_secs(60));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match req.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let header = |kind: &str| {
        resp.header(&format!("X-Prometheus-Remote-Write-{kind}-Written"))
            .map(|v| v.parse::<u64>().expect("a 64-bit integer"))
    };
    let written = [header("Samples"), header("Histograms"), header("Exemplars")];
    let code = resp.status();
    let mut body = String::new();
    let _ = resp.into_reader().take(1 << 20).read_to_string(&mut body);
    Answer {
        code,
        written,
        body,
    }
}

/// A 2.0 request as Prometheus sends it.
fn write_v2(s: &Server, req: &Request) -> Answer {
    post(
        s,
        &encode_snappy(req),
        &[
            ("Content-Encoding", "snappy"),
            ("Content-Type", CONTENT_TYPE),
            ("X-Prometheus-Remote-Write-Version", "2.0.0"),
        ],
    )
}

/// One 2.0 series: sorted labels and samples.
fn series(
    syms: &mut SymbolTable,
    labels: &[(String, String)],
    samples: &[(i64, f64)],
) -> TimeSeries {
    let l = sorted(labels);
    TimeSeries {
        labels_refs: syms.refs(l.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
        samples: samples
            .iter()
            .map(|&(timestamp, value)| Sample { value, timestamp })
            .collect(),
        ..Default::default()
    }
}

/// One request of `series` with samples `(t, value(i))` for every t in `times`.
fn request_v2(
    labels: &[Vec<(String, String)>],
    times: &[i64],
    value: impl Fn(usize, i64) -> f64,
) -> (Request, Dump) {
    let mut syms = SymbolTable::default();
    let mut want = Dump::new();
    let timeseries = labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let samples: Vec<(i64, f64)> = times.iter().map(|&t| (t, value(i, t))).collect();
            want.insert(sorted(l), samples.clone());
            series(&mut syms, l, &samples)
        })
        .collect();
    (
        Request {
            symbols: syms.into_symbols(),
            timeseries,
        },
        want,
    )
}

#[test]
fn rw2_write_is_stored_and_reads_back_identically() {
    let s = Server::start(2, &[]);
    let labels = simple_series("rw2_stored", 50);
    let times: Vec<i64> = (0..4).map(|k| T0 + k * 15_000).collect();
    let (mut req, want) = request_v2(&labels, &times, |i, t| i as f64 * 1.5 + (t - T0) as f64);
    // Exemplars, metadata and created timestamps ride along: accepted, not stored.
    let mut syms = SymbolTable::default();
    for s in req.symbols.iter().skip(1) {
        syms.symbolize(s);
    }
    let trace = syms.refs([("trace_id", "4bf92f3577b34da6")]);
    let help = syms.symbolize("Requests served.");
    for ts in req.timeseries.iter_mut().take(10) {
        ts.exemplars.push(Exemplar {
            labels_refs: trace.clone(),
            value: 0.25,
            timestamp: T0,
        });
        ts.metadata = Some(Metadata {
            r#type: 1,
            help_ref: help,
            unit_ref: 0,
        });
        ts.created_timestamp = T0 - 60_000;
    }
    req.symbols = syms.into_symbols();

    write_v2(&s, &req).assert(204, 200, 0, 0);
    let got = dump(&s, "rw2_stored", T0 + 60_000, "5m");
    assert_eq!(got, want);
    // Sending it again stores nothing new but every sample is there: 2xx, full count.
    write_v2(&s, &req).assert(204, 200, 0, 0);
    assert_eq!(dump(&s, "rw2_stored", T0 + 60_000, "5m"), want);
}

#[test]
fn rw2_written_headers_are_exact_on_400_and_409() {
    let s = Server::start(2, &[]);
    // 409: one series gets an out-of-order sample, the other two are stored.
    let (first, _) = request_v2(&simple_series("rw2_ooo", 1), &[T0 + 2000], |_, _| 1.0);
    write_v2(&s, &first).assert(204, 1, 0, 0);
    let mut syms = SymbolTable::default();
    let x = &simple_series("rw2_ooo", 1)[0];
    let y = simple_series("rw2_fresh", 2);
    let mixed = Request {
        timeseries: vec![
            series(&mut syms, x, &[(T0 + 1000, 9.0)]),
            series(&mut syms, &y[0], &[(T0, 2.0), (T0 + 1000, 3.0)]),
            series(&mut syms, &y[1], &[(T0, 4.0)]),
        ],
        symbols: syms.into_symbols(),
    };
    let a = write_v2(&s, &mixed);
    a.assert(409, 3, 0, 0);
    assert!(
        a.body.contains("rw2_ooo") && a.body.contains("out of order"),
        "{}",
        a.body
    );
    let got = dump(&s, r#"{__name__=~"rw2_ooo|rw2_fresh"}"#, T0 + 2000, "1h");
    assert_eq!(got[&sorted(x)], vec![(T0 + 2000, 1.0)]);
    assert_eq!(got[&sorted(&y[0])], vec![(T0, 2.0), (T0 + 1000, 3.0)]);
    assert_eq!(got[&sorted(&y[1])], vec![(T0, 4.0)]);

    // 400: a label reference past the symbol table; the good series before it is not stored.
    let (mut bad, _) = request_v2(&simple_series("rw2_badref", 2), &[T0], |_, _| 1.0);
    bad.timeseries[1].labels_refs[3] = 999;
    let a = write_v2(&s, &bad);
    a.assert(400, 0, 0, 0);
    assert!(
        a.body.contains("series #1") && a.body.contains("= 999 is out of range"),
        "{}",
        a.body
    );
    // 400: an odd number of refs, and a table that does not start with "".
    let (mut odd, _) = request_v2(&simple_series("rw2_odd", 1), &[T0], |_, _| 1.0);
    odd.timeseries[0].labels_refs.pop();
    let a = write_v2(&s, &odd);
    a.assert(400, 0, 0, 0);
    assert!(a.body.contains("even count"), "{}", a.body);
    let (mut nonempty, _) = request_v2(&simple_series("rw2_sym0", 1), &[T0], |_, _| 1.0);
    nonempty.symbols[0] = "oops".into();
    let a = write_v2(&s, &nonempty);
    a.assert(400, 0, 0, 0);
    assert!(
        a.body.contains("symbols[0] must be the empty string"),
        "{}",
        a.body
    );
    // 400: invalid labels, with the same rules and message as 1.0.
    let mut syms = SymbolTable::default();
    let invalid = Request {
        timeseries: vec![series(
            &mut syms,
            &[
                ("__name__".into(), "rw2_bad".into()),
                ("0bad".into(), "v".into()),
            ],
            &[(T0, 1.0)],
        )],
        symbols: syms.into_symbols(),
    };
    let a = write_v2(&s, &invalid);
    a.assert(400, 0, 0, 0);
    assert!(a.body.contains("invalid label name \"0bad\""), "{}", a.body);
    // 400: not snappy.
    let a = post(
        &s,
        b"not snappy at all",
        &[
            ("Content-Encoding", "snappy"),
            ("Content-Type", CONTENT_TYPE),
        ],
    );
    a.assert(400, 0, 0, 0);

    let got = dump(
        &s,
        r#"{__name__=~"rw2_(badref|odd|sym0|bad)"}"#,
        T0 + 2000,
        "1h",
    );
    assert!(got.is_empty(), "nothing of a 400 is stored: {got:?}");
}

#[test]
fn rw2_unsupported_content_type_or_encoding_gets_415() {
    let s = Server::start(1, &[]);
    let (req, _) = request_v2(&simple_series("rw2_415", 1), &[T0], |_, _| 1.0);
    let body = encode_snappy(&req);
    for (ct, enc) in [
        (
            "application/x-protobuf;proto=io.prometheus.write.v3.Request",
            Some("snappy"),
        ),
        (
            "application/x-protobuf;proto=prometheus.WriteRequestV2",
            Some("snappy"),
        ),
        ("application/json", Some("snappy")),
        ("text/plain", Some("snappy")),
        (CONTENT_TYPE, Some("gzip")),
        (CONTENT_TYPE, Some("zstd")),
        (CONTENT_TYPE, None),
    ] {
        let mut h = vec![("Content-Type", ct)];
        if let Some(e) = enc {
            h.push(("Content-Encoding", e));
        }
        let a = post(&s, &body, &h);
        a.assert(415, 0, 0, 0);
        if enc == Some("snappy") {
            assert!(
                a.body.contains("proto=io.prometheus.write.v2.Request")
                    && a.body.contains("proto=prometheus.WriteRequest"),
                "{ct}: the message names the supported types: {}",
                a.body
            );
        } else {
            assert!(a.body.contains("snappy"), "{ct} {enc:?}: {}", a.body);
        }
    }
    let got = dump(&s, "rw2_415", T0, "1h");
    assert!(got.is_empty(), "{got:?}");
    // The parameter may be quoted and the names are case-insensitive.
    let a = post(
        &s,
        &body,
        &[
            ("Content-Encoding", "snappy"),
            (
                "Content-Type",
                "Application/X-Protobuf; Proto=\"io.prometheus.write.v2.Request\"",
            ),
        ],
    );
    a.assert(204, 1, 0, 0);
}

#[test]
fn rw2_native_histograms_are_rejected_and_nothing_is_stored() {
    let s = Server::start(2, &[]);
    let (mut req, _) = request_v2(&simple_series("rw2_hist_floats", 5), &[T0], |i, _| i as f64);
    let mut syms = SymbolTable::default();
    for s in req.symbols.iter().skip(1) {
        syms.symbolize(s);
    }
    let refs = syms.refs([("__name__", "rw2_hist"), ("job", "api")]);
    req.timeseries.push(TimeSeries {
        labels_refs: refs,
        histograms: vec![Histogram {
            count_int: 12,
            sum: 3.5,
            schema: 3,
            timestamp: T0,
        }],
        ..Default::default()
    });
    req.symbols = syms.into_symbols();
    let a = write_v2(&s, &req);
    a.assert(400, 0, 0, 0);
    assert!(
        a.body.contains("series #5 rw2_hist{job=\"api\"}")
            && a.body.contains("native histograms are not supported"),
        "{}",
        a.body
    );
    let got = dump(&s, r#"{__name__=~"rw2_hist.*"}"#, T0, "1h");
    assert!(
        got.is_empty(),
        "the float series of the request are not stored either: {got:?}"
    );
}

#[test]
fn rw1_is_unchanged_and_gets_the_headers_too() {
    let s = Server::start(1, &[]);
    let labels = simple_series("rw1_still", 3);
    let body = sluice_bench::encode_snappy(&request(&labels, T0, |i| i as f64));
    for ct in [
        None,
        Some("application/x-protobuf"),
        Some("application/x-protobuf;proto=prometheus.WriteRequest"),
    ] {
        let mut h = vec![
            ("Content-Encoding", "snappy"),
            ("X-Prometheus-Remote-Write-Version", "0.1.0"),
        ];
        if let Some(ct) = ct {
            h.push(("Content-Type", ct));
        }
        post(&s, &body, &h).assert(204, 3, 0, 0);
    }
    let got = dump(&s, "rw1_still", T0, "1m");
    let want: Dump = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (sorted(l), vec![(T0, i as f64)]))
        .collect();
    assert_eq!(got, want);
    // A 1.0 body labelled as 2.0 is refused, not read as an empty request.
    let a = post(
        &s,
        &body,
        &[
            ("Content-Encoding", "snappy"),
            ("Content-Type", CONTENT_TYPE),
        ],
    );
    a.assert(400, 0, 0, 0);
    assert!(
        a.body
            .contains("reserved in io.prometheus.write.v2.Request"),
        "{}",
        a.body
    );
}

/// A real Prometheus in agent mode scraping itself every second and remote-writing (1.0) to
/// Sluice; what it sent is read back through Sluice's query API.
#[test]
fn prometheus_agent_remote_writes_its_own_metrics_to_sluice() {
    assert!(
        Command::new("prometheus").arg("--version").output().is_ok(),
        "prometheus is missing: install it with `apt-get install -y prometheus` (scripts/test.sh does)"
    );
    let s = Server::start(2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("agent.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n\
             scrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n\
             remote_write:\n  - url: {}\n    queue_config:\n      batch_send_deadline: 1s\n      min_backoff: 100ms\n      max_backoff: 1s\n",
            s.url("/api/v1/receive")
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let mut child = Command::new("prometheus")
        .arg("--enable-feature=agent")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.agent.path={}",
            dir.path().join("agent").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting prometheus");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut child);

    let deadline = Instant::now() + Duration::from_secs(90);
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let (build, up) = loop {
        let build = s.query("prometheus_build_info", now_ms());
        let up = s.query(r#"up{job="self"}"#, now_ms());
        let has = |v: &serde_json::Value| v["result"].as_array().is_some_and(|r| !r.is_empty());
        if has(&build) && has(&up) {
            break (build, up);
        }
        assert!(
            Instant::now() < deadline,
            "no samples from the Prometheus agent after 90 s; its log:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let m = &build["result"][0]["metric"];
    assert_eq!(m["job"], "self", "{build}");
    assert_eq!(m["instance"], format!("127.0.0.1:{port}"), "{build}");
    assert!(
        m["version"].as_str().is_some_and(|v| v.starts_with("2.")),
        "{build}"
    );
    assert_eq!(build["result"][0]["value"][1], "1", "{build}");
    assert_eq!(up["result"][0]["value"][1], "1", "{up}");
    // Samples keep arriving: a range query holds several scrapes of `up`, one second apart.
    std::thread::sleep(Duration::from_secs(3));
    let got = dump(&s, r#"up{job="self"}"#, now_ms(), "1m");
    let points = got.values().next().expect("one series");
    assert!(points.len() >= 3, "{got:?}");
    assert!(points.iter().all(|&(_, v)| v == 1.0), "{got:?}");
}

/// A 2.0 body must never reach a peer as it came: peers read a forwarded body as 1.0. With
/// R = ring size (where 1.0 bodies are forwarded whole) every node still gets every series.
#[test]
fn rw2_in_a_cluster_reaches_every_replica() {
    let cluster = crate::cluster::Cluster::start(
        3,
        3,
        &[],
        |endpoints| serde_json::json!([{ "hashring": "default", "endpoints": endpoints }]),
    );
    let nodes = &cluster.nodes;
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 60_000;
    let (req, want) = request_v2(&simple_series("rw2_cluster", 40), &[t, t + 1000], |i, _| {
        i as f64
    });
    write_v2(&nodes[0], &req).assert(204, 80, 0, 0);
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(dump(n, "rw2_cluster", t + 1000, "5m"), want, "node {i}");
    }
}
