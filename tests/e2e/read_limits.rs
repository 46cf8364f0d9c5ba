//! Reads cannot take the node down: queries of death, panics in reads, read limits,
//! remote-read limits and concurrency, tenant-scoped reads — each against the real binary
//! while it keeps ingesting.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use serde_json::Value;

use crate::harness::{client, dump, request, simple_series, snappy_post, sorted, Server};
use crate::remote_read::{ChunkedReadResponse, LabelMatcher, QueryMsg, ReadRequest};

const T0: i64 = 1_700_000_000_000;
const STEP: i64 = 15_000;

/// `prometheus.ReadResponse` (the `SAMPLES` answer).
#[derive(Clone, PartialEq, prost::Message)]
struct ReadResponse {
    #[prost(message, repeated, tag = "1")]
    results: Vec<QueryResult>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct QueryResult {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<crate::remote_read::Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<RrSample>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RrSample {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

/// Writes `rounds` rounds of `series` (value = round) and returns them.
fn load(s: &Server, name: &str, n: usize, rounds: i64) -> Vec<Vec<(String, String)>> {
    let series = simple_series(name, n);
    for i in 0..rounds {
        let (code, body) = s.write(&request(&series, T0 + i * STEP, |_| i as f64));
        assert_eq!(code, 204, "{body}");
    }
    series
}

/// Every series of `name` has exactly rounds `0..rounds` (value = round).
fn assert_intact(s: &Server, name: &str, series: &[Vec<(String, String)>], rounds: i64) {
    let got = dump(s, name, T0 + rounds * STEP, "1d");
    assert_eq!(got.len(), series.len());
    let want: Vec<(i64, f64)> = (0..rounds).map(|i| (T0 + i * STEP, i as f64)).collect();
    for l in series {
        assert_eq!(got[&sorted(l)], want, "{l:?}");
    }
}

/// A writer that keeps writing one new round a few ms apart until stopped, counting answers
/// that were not 204.
struct Writer {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(s: &Server, name: &str) -> Writer {
        let (stop, failures, written) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let url = s.url("/api/v1/receive");
        let series = simple_series(name, 20);
        let handle = {
            let (stop, failures, written) = (stop.clone(), failures.clone(), written.clone());
            std::thread::spawn(move || {
                let agent = client();
                let mut i = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    let body =
                        sluice_bench::encode_snappy(&request(&series, T0 + i * STEP, |_| 1.0));
                    match snappy_post(&agent, &url).send_bytes(&body) {
                        Ok(r) if r.status() == 204 => {
                            written.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Writer {
            stop,
            failures,
            written,
            handle: Some(handle),
        }
    }

    /// Stops; asserts that every write was answered 204 and returns how many there were.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("writer thread");
        }
        assert_eq!(self.failures.load(Ordering::Relaxed), 0, "writes failed");
        self.written.load(Ordering::Relaxed)
    }
}

/// POSTs a form to the read API; returns status and body (transport errors included, as
/// status 0).
fn post_form(s: &Server, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let read = |r: ureq::Response| {
        let mut body = String::new();
        let _ = r.into_reader().take(1 << 20).read_to_string(&mut body);
        body
    };
    match agent.post(&s.url(path)).send_form(form) {
        Ok(r) => (r.status(), read(r)),
        Err(ureq::Error::Status(code, r)) => (code, read(r)),
        Err(e) => (0, e.to_string()),
    }
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn queries_of_death_answer_4xx_and_the_node_keeps_ingesting() {
    let s = Server::start(2, &[]);
    let series = load(&s, "intact", 50, 10);
    let writer = Writer::start(&s, "during");
    let deadly = [
        format!("{}1{}", "(".repeat(30_000), ")".repeat(30_000)),
        format!("{}up{}", "sum(".repeat(20_000), ")".repeat(20_000)),
        format!("{}1", "-".repeat(300_000)),
        format!("1{}", "+1".repeat(100_000)),
    ];
    for q in &deadly {
        for (path, extra) in [
            ("/api/v1/query", vec![]),
            (
                "/api/v1/query_range",
                vec![
                    ("start", "1700000000"),
                    ("end", "1700000600"),
                    ("step", "60"),
                ],
            ),
        ] {
            let mut form = vec![("query", q.as_str())];
            form.extend(extra);
            let (code, body) = post_form(&s, path, &form);
            assert_eq!(code, 400, "{path} {}…: {body}", &q[..10]);
            let v = json(&body);
            assert_eq!(v["errorType"], "bad_data", "{v}");
            let msg = v["error"].as_str().unwrap_or_default();
            assert!(msg.contains("maximum depth of 1000"), "{msg}");
        }
        let (code, body) = post_form(&s, "/api/v1/series", &[("match[]", q.as_str())]);
        assert_eq!(code, 400, "series {}…: {body}", &q[..10]);
    }
    // A query at the limit is fine.
    let at_limit = format!("{}intact{}", "(".repeat(999), ")".repeat(999));
    let (code, body) = post_form(&s, "/api/v1/query", &[("query", &at_limit)]);
    assert_eq!(code, 200, "{body}");
    let (code, _) = s.post("/-/healthy", b"", &[]);
    assert_eq!(code, 200);
    assert!(writer.finish() > 0);
    // After them: still writing, and everything from before comes back exactly.
    let (code, body) = s.write(&request(&series, T0 + 10 * STEP, |_| 10.0));
    assert_eq!(code, 204, "{body}");
    assert_intact(&s, "intact", &series, 11);
}

#[test]
fn a_panic_in_a_read_answers_500_and_the_node_keeps_ingesting() {
    let s = Server::start(2, &["--debug.panics"]);
    let series = load(&s, "kept", 30, 5);
    let writer = Writer::start(&s, "during");
    for site in ["eval", "select"] {
        let q = format!("kept{{job!=\"sluice_debug_panic_{site}\"}}");
        let (code, body) = post_form(&s, "/api/v1/query", &[("query", &q)]);
        assert_eq!(code, 500, "{site}: {body}");
        let v = json(&body);
        assert_eq!(v["errorType"], "internal", "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap_or_default()
                .contains("test hook"),
            "{v}"
        );
    }
    // A panic while the answer is being written cuts the connection: the status went out.
    let q = "kept{job!=\"sluice_debug_panic_answer\"}";
    let (code, body) = post_form(&s, "/api/v1/query", &[("query", q)]);
    assert!(code == 0 || body.is_empty() || serde_json::from_str::<Value>(&body).is_err());
    // Remote read panics too: on every core while reading.
    let rr = ReadRequest {
        queries: vec![QueryMsg {
            start_timestamp_ms: T0,
            end_timestamp_ms: T0 + 10 * STEP,
            matchers: vec![
                matcher(0, "__name__", "kept"),
                matcher(1, "job", "sluice_debug_panic_select"),
            ],
        }],
        accepted_response_types: vec![0],
    };
    let (code, _) = remote_read(&s, &rr, &[]);
    assert_eq!(code, 500);
    // eval 1, select 2 (each core), answer 1, remote read 2 (each core).
    assert_eq!(
        s.metric_sum("sluice_http_panics_total"),
        6,
        "{}",
        s.metrics()
    );
    assert!(writer.finish() > 0);
    assert_intact(&s, "kept", &series, 5);
    assert!(s.log_text().contains("the process goes on"));
}

fn matcher(ty: i32, name: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        r#type: ty,
        name: name.into(),
        value: value.into(),
    }
}

/// POSTs a remote-read request; returns the status and the raw body.
fn remote_read(s: &Server, rr: &ReadRequest, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let body = snap::raw::Encoder::new()
        .compress_vec(&rr.encode_to_vec())
        .expect("snappy");
    let mut req = snappy_post(&client(), &s.url("/api/v1/read"));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match req.send_bytes(&body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("remote read: {e}"),
    };
    let code = resp.status();
    let mut out = Vec::new();
    resp.into_reader().read_to_end(&mut out).expect("body");
    (code, out)
}

/// The series (labels without the tenant label → sample count) of a `SAMPLES` answer.
fn samples_answer(body: &[u8]) -> Vec<(Vec<(String, String)>, usize)> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .expect("snappy answer");
    let resp = ReadResponse::decode(raw.as_slice()).expect("ReadResponse");
    resp.results
        .into_iter()
        .flat_map(|r| r.timeseries)
        .map(|ts| {
            let labels = ts
                .labels
                .into_iter()
                .map(|l| (l.name, l.value))
                .collect::<Vec<_>>();
            (labels, ts.samples.len())
        })
        .collect()
}

#[test]
fn remote_read_limits_are_prometheus_limits() {
    let s = Server::start(
        2,
        &[
            "--storage.remote.read-sample-limit",
            "100",
            "--query.max-samples",
            "100",
        ],
    );
    load(&s, "rr", 10, 12); // 120 samples
    let query = |matchers: Vec<LabelMatcher>, end: i64| ReadRequest {
        queries: vec![QueryMsg {
            start_timestamp_ms: T0,
            end_timestamp_ms: end,
            matchers,
        }],
        accepted_response_types: vec![0],
    };
    // 90 samples: under the limit.
    let (code, body) = remote_read(
        &s,
        &query(vec![matcher(0, "__name__", "rr")], T0 + 8 * STEP),
        &[],
    );
    assert_eq!(code, 200);
    let got = samples_answer(&body);
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|(_, n)| *n == 9));
    // 120 samples: over it, in Prometheus' words, in both answer types.
    for types in [vec![0], vec![1]] {
        let mut rr = query(vec![matcher(0, "__name__", "rr")], T0 + 20 * STEP);
        rr.accepted_response_types = types;
        let (code, body) = remote_read(&s, &rr, &[]);
        assert_eq!(code, 400);
        assert_eq!(
            String::from_utf8_lossy(&body),
            "exceeded sample limit (100)\n"
        );
    }
    // No matcher that needs a value: refused, not every series of every tenant.
    for matchers in [
        vec![],
        vec![matcher(2, "__name__", ".*")],
        vec![matcher(0, "job", ""), matcher(3, "idx", ".+")],
    ] {
        let (code, body) = remote_read(&s, &query(matchers, T0 + 20 * STEP), &[]);
        assert_eq!(code, 400);
        assert!(
            String::from_utf8_lossy(&body).contains("at least one non-empty matcher"),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    // PromQL's limit applies while reading, with Prometheus' error.
    let (code, body) = post_form(
        &s,
        "/api/v1/query",
        &[("query", "rr[1d]"), ("time", "1700000300")],
    );
    assert_eq!(code, 422, "{body}");
    let v = json(&body);
    assert_eq!(v["errorType"], "execution");
    assert_eq!(
        v["error"],
        "query processing would load too many samples into memory in query execution"
    );
    let (code, _) = post_form(
        &s,
        "/api/v1/query",
        &[("query", "rr[1m]"), ("time", "1700000100")],
    );
    assert_eq!(code, 200);
}

/// Label value long enough that a few dozen series make an answer larger than what loopback
/// sockets buffer.
fn bulky(i: usize) -> String {
    // Not compressible: what is in flight is what is on the wire.
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ i as u64;
    (0..150_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

#[test]
fn remote_reads_over_the_concurrency_limit_wait_for_a_slot() {
    let s = Server::start(2, &[]);
    let series: Vec<Vec<(String, String)>> = (0..120)
        .map(|i| {
            vec![
                ("__name__".to_string(), "bulky".to_string()),
                ("blob".to_string(), bulky(i)),
            ]
        })
        .collect();
    for chunk in series.chunks(10) {
        let (code, body) = s.write(&request(chunk, T0, |_| 1.0));
        assert_eq!(code, 204, "{body}");
    }
    let rr = ReadRequest {
        queries: vec![QueryMsg {
            start_timestamp_ms: T0 - 1,
            end_timestamp_ms: T0 + 1,
            matchers: vec![matcher(0, "__name__", "bulky")],
        }],
        accepted_response_types: vec![1],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&rr.encode_to_vec())
        .expect("snappy");
    // Ten clients take the answer's headers and stop reading: ~18 MB each stays in flight,
    // so each holds its slot (Prometheus' default limit is 10).
    let held: Vec<ureq::Response> = (0..10)
        .map(|_| {
            snappy_post(&client(), &s.url("/api/v1/read"))
                .send_bytes(&body)
                .expect("remote read")
        })
        .collect();
    assert!(held.iter().all(|r| r.status() == 200));
    assert_eq!(s.metric_sum("sluice_remote_reads_running"), 10);
    // The eleventh waits for a slot: no answer within a second…
    let waiting = {
        let (url, body) = (s.url("/api/v1/read"), body.clone());
        std::thread::spawn(move || {
            let r = snappy_post(&client(), &url)
                .send_bytes(&body)
                .expect("remote read");
            let mut bytes = Vec::new();
            let status = r.status();
            r.into_reader().read_to_end(&mut bytes).expect("body");
            (status, bytes.len())
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !waiting.is_finished(),
        "the eleventh read was not held back"
    );
    // …and gets the whole answer once a slot is free.
    let mut held = held.into_iter();
    let mut first = Vec::new();
    held.next()
        .expect("ten")
        .into_reader()
        .read_to_end(&mut first)
        .expect("body");
    let (status, len) = waiting.join().expect("eleventh");
    assert_eq!(status, 200);
    assert_eq!(len, first.len());
    let mut rest = first.as_slice();
    let mut series_seen = 0;
    while !rest.is_empty() {
        let n = prost::encoding::decode_varint(&mut rest).expect("frame length") as usize;
        let frame = ChunkedReadResponse::decode(&rest[4..4 + n]).expect("frame");
        assert!(n <= 1_048_576 + 200_000, "frame of {n} bytes");
        series_seen += frame.chunked_series.len();
        rest = &rest[4 + n..];
    }
    assert_eq!(series_seen, 120);
    drop(held);
    // Writes went on meanwhile and the slots come back.
    let (code, _) = s.write(&request(&simple_series("after", 3), T0, |_| 1.0));
    assert_eq!(code, 204);
    let deadline = std::time::Instant::now() + Duration::from_secs(70);
    while s.metric_sum("sluice_remote_reads_running") != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "slots never came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn with_enforced_tenancy_a_tenant_reads_only_its_own_series() {
    let s = Server::start(2, &["--query.enforce-tenancy"]);
    let a = simple_series("metric_a", 5);
    // Tenant b's series include one that claims tenant a in its own labels.
    let mut b = simple_series("metric_b", 5);
    b.push(vec![
        ("__name__".into(), "metric_b".into()),
        ("tenant_id".into(), "a".into()),
    ]);
    for i in 0..3 {
        let (code, body) = s.write_tenant(&request(&a, T0 + i * STEP, |_| 1.0), "a");
        assert_eq!(code, 204, "{body}");
        let (code, body) = s.write_tenant(&request(&b, T0 + i * STEP, |_| 2.0), "b");
        assert_eq!(code, 204, "{body}");
    }
    let agent = client();
    let get = |path: &str, params: &[(&str, &str)], tenant: Option<&str>| -> Value {
        let mut req = agent.get(&s.url(path));
        for (k, v) in params {
            req = req.query(k, v);
        }
        if let Some(t) = tenant {
            req = req.set("THANOS-TENANT", t);
        }
        let r = req.call().unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut body = String::new();
        r.into_reader().read_to_string(&mut body).expect("body");
        json(&body)
    };
    let tenants_of = |v: &Value| -> Vec<String> {
        let mut t: Vec<String> = v["data"]["result"]
            .as_array()
            .expect("result")
            .iter()
            .map(|r| r["metric"]["tenant_id"].as_str().unwrap_or("").to_string())
            .collect();
        t.dedup();
        t
    };
    let at = "1700000030";
    for (tenant, name, other) in [("a", "metric_a", "metric_b"), ("b", "metric_b", "metric_a")] {
        let v = get(
            "/api/v1/query",
            &[("query", "{__name__=~\"metric_.*\"}"), ("time", at)],
            Some(tenant),
        );
        let n = v["data"]["result"].as_array().expect("result").len();
        let want = if tenant == "a" { 5 } else { 6 };
        assert_eq!(n, want, "{tenant}: {v}");
        for r in v["data"]["result"].as_array().expect("result") {
            assert_eq!(r["metric"]["__name__"], name, "{tenant}: {r}");
        }
        let v = get(
            "/api/v1/query_range",
            &[
                ("query", &format!("count({other})")),
                ("start", "1700000000"),
                ("end", at),
                ("step", "15"),
            ],
            Some(tenant),
        );
        assert_eq!(v["data"]["result"], serde_json::json!([]), "{tenant}: {v}");
        let v = get(
            "/api/v1/series",
            &[("match[]", "{__name__=~\"metric_.+\"}")],
            Some(tenant),
        );
        let names: Vec<&str> = v["data"]
            .as_array()
            .expect("series")
            .iter()
            .map(|l| l["__name__"].as_str().unwrap_or(""))
            .collect();
        assert!(names.iter().all(|n| *n == name), "{tenant}: {v}");
        let v = get("/api/v1/label/__name__/values", &[], Some(tenant));
        assert_eq!(v["data"], serde_json::json!([name]), "{tenant}: {v}");
        let v = get("/api/v1/label/tenant_id/values", &[], Some(tenant));
        if tenant == "a" {
            assert_eq!(v["data"], serde_json::json!(["a"]), "{v}");
        }
        let rr = ReadRequest {
            queries: vec![QueryMsg {
                start_timestamp_ms: T0,
                end_timestamp_ms: T0 + 10 * STEP,
                matchers: vec![matcher(2, "__name__", "metric_.+")],
            }],
            accepted_response_types: vec![0],
        };
        let (code, body) = remote_read(&s, &rr, &[("THANOS-TENANT", tenant)]);
        assert_eq!(code, 200);
        for (labels, _) in samples_answer(&body) {
            assert!(
                labels.contains(&("__name__".into(), name.into())),
                "{labels:?}"
            );
        }
    }
    // Without the header: the default tenant's series, which are none here.
    let v = get(
        "/api/v1/query",
        &[("query", "{__name__=~\"metric_.*\"}"), ("time", at)],
        None,
    );
    assert_eq!(tenants_of(&v), Vec::<String>::new(), "{v}");
}

/// A large range answer is produced piece by piece (chunked), and is the same JSON.
#[test]
fn large_range_answers_are_streamed() {
    let s = Server::start(1, &[]);
    let series = load(&s, "wide", 400, 40);
    let r = client()
        .get(&s.url("/api/v1/query_range"))
        .query("query", "wide")
        .query("start", "1700000000")
        .query("end", "1700000600")
        .query("step", "15")
        .call()
        .expect("query_range");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let mut body = String::new();
    r.into_reader().read_to_string(&mut body).expect("body");
    assert!(body.len() > 4 * 65_536, "{} bytes", body.len());
    let v = json(&body);
    let result = v["data"]["result"].as_array().expect("matrix");
    assert_eq!(result.len(), series.len());
    // 41 steps: the last sample (at 585 s) is within the lookback of the step at 600 s.
    for r in result {
        assert_eq!(r["values"].as_array().expect("values").len(), 41);
    }
}
