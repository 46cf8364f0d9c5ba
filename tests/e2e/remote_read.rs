//! Remote read: a real Prometheus 2.42 configured with `remote_read` pointing at Sluice
//! answers queries over Sluice's data exactly as Sluice's own API does, and the streamed
//! XOR-chunk form carries exactly the stored samples.

use prost::Message;

use crate::harness::Prometheus;
use crate::harness::Server;
use crate::promql::{dataset, diff, get, requests, secs, MIN, SPAN, T0};

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ReadRequest {
    #[prost(message, repeated, tag = "1")]
    pub(crate) queries: Vec<QueryMsg>,
    #[prost(int32, repeated, tag = "2")]
    pub(crate) accepted_response_types: Vec<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct QueryMsg {
    #[prost(int64, tag = "1")]
    pub(crate) start_timestamp_ms: i64,
    #[prost(int64, tag = "2")]
    pub(crate) end_timestamp_ms: i64,
    #[prost(message, repeated, tag = "3")]
    pub(crate) matchers: Vec<LabelMatcher>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LabelMatcher {
    #[prost(int32, tag = "1")]
    pub(crate) r#type: i32,
    #[prost(string, tag = "2")]
    pub(crate) name: String,
    #[prost(string, tag = "3")]
    pub(crate) value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ChunkedReadResponse {
    #[prost(message, repeated, tag = "1")]
    pub(crate) chunked_series: Vec<ChunkedSeries>,
    #[prost(int64, tag = "2")]
    pub(crate) query_index: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ChunkedSeries {
    #[prost(message, repeated, tag = "1")]
    pub(crate) labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub(crate) chunks: Vec<Chunk>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Label {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(string, tag = "2")]
    pub(crate) value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Chunk {
    #[prost(int64, tag = "1")]
    pub(crate) min_time_ms: i64,
    #[prost(int64, tag = "2")]
    pub(crate) max_time_ms: i64,
    #[prost(int32, tag = "3")]
    pub(crate) r#type: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub(crate) data: Vec<u8>,
}

fn load(s: &Server) {
    for body in requests(&dataset(), &[]) {
        let (code, text) = s.write_bytes(&body, &[]);
        assert_eq!(code, 204, "{text}");
    }
}

#[test]
fn prometheus_remote_read_from_sluice_answers_like_sluice() {
    let sluice = Server::start(2, &[]);
    load(&sluice);
    let prom = Prometheus::start(&format!(
        "remote_read:\n  - url: {}\n    read_recent: true\n",
        sluice.url("/api/v1/read")
    ));
    let queries = [
        "http_requests_total",
        "rate(http_requests_total[5m])",
        "sum by (job) (increase(http_requests_total[10m]))",
        r#"node_temperature_celsius{instance=~"i-[2-4]"}"#,
        "histogram_quantile(0.9, sum by (le) (rate(rpc_duration_seconds_bucket[5m])))",
        "up == 0",
        "max_over_time(node_temperature_celsius[10m])",
    ];
    let mut compared = 0;
    for q in queries {
        for t in [T0 + 20 * MIN, T0 + 33 * MIN, T0 + SPAN] {
            let params = [("query", q.to_string()), ("time", secs(t))];
            let (_, ours) = get(&sluice.url(""), "/api/v1/query", &params);
            let (_, theirs) = get(&prom.url(""), "/api/v1/query", &params);
            assert_eq!(theirs["status"], "success", "{q}: {theirs}");
            assert_eq!(ours["status"], "success", "{q}: {ours}");
            assert!(
                !theirs["data"]["result"]
                    .as_array()
                    .is_some_and(|a| a.is_empty())
                    || q == "up == 0",
                "{q}: Prometheus read nothing"
            );
            if let Some(d) = diff(&ours["data"], &theirs["data"], false) {
                panic!("{q} at {t}: {d}");
            }
            compared += 1;
        }
        let params = [
            ("query", q.to_string()),
            ("start", secs(T0 + 5 * MIN)),
            ("end", secs(T0 + SPAN)),
            ("step", "30".to_string()),
        ];
        let (_, ours) = get(&sluice.url(""), "/api/v1/query_range", &params);
        let (_, theirs) = get(&prom.url(""), "/api/v1/query_range", &params);
        if let Some(d) = diff(&ours["data"], &theirs["data"], false) {
            panic!("{q} range: {d}");
        }
        compared += 1;
    }
    assert_eq!(compared, 28);
}

#[test]
fn streamed_xor_chunks_carry_every_sample() {
    let sluice = Server::start(2, &[]);
    load(&sluice);
    let req = ReadRequest {
        queries: vec![QueryMsg {
            start_timestamp_ms: T0,
            end_timestamp_ms: T0 + SPAN,
            matchers: vec![LabelMatcher {
                r#type: 0,
                name: "__name__".into(),
                value: "http_requests_total".into(),
            }],
        }],
        accepted_response_types: vec![1],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy");
    let resp = crate::harness::snappy_post(&crate::harness::client(), &sluice.url("/api/v1/read"))
        .send_bytes(&body)
        .expect("remote read");
    assert_eq!(
        resp.header("content-type"),
        Some("application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse")
    );
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut bytes).expect("body");
    let mut rest = bytes.as_slice();
    let mut got = std::collections::BTreeMap::new();
    while !rest.is_empty() {
        let len = prost::encoding::decode_varint(&mut rest).expect("frame length") as usize;
        let crc = u32::from_be_bytes(rest[..4].try_into().expect("crc"));
        let msg = &rest[4..4 + len];
        assert_eq!(crc32c::crc32c(msg), crc, "frame checksum");
        rest = &rest[4 + len..];
        let frame = ChunkedReadResponse::decode(msg).expect("frame");
        assert_eq!(frame.query_index, 0);
        for s in frame.chunked_series {
            let labels: Vec<(String, String)> = s
                .labels
                .into_iter()
                .filter(|l| l.name != "tenant_id")
                .map(|l| (l.name, l.value))
                .collect();
            let mut samples = Vec::new();
            for c in s.chunks {
                assert_eq!(c.r#type, 1);
                let it = sluice_storage::xor::XorIter::new(&c.data);
                let pts: Vec<(i64, f64)> = it.collect();
                assert_eq!(pts.first().map(|p| p.0), Some(c.min_time_ms));
                assert_eq!(pts.last().map(|p| p.0), Some(c.max_time_ms));
                samples.extend(pts);
            }
            got.insert(labels, samples);
        }
    }
    let want: std::collections::BTreeMap<_, _> = dataset()
        .into_iter()
        .filter(|(l, _)| {
            l.iter()
                .any(|(n, v)| n == "__name__" && v == "http_requests_total")
        })
        .collect();
    assert_eq!(got.len(), want.len());
    for (l, s) in &want {
        let g = &got[l];
        assert_eq!(g.len(), s.len(), "{l:?}");
        for (a, b) in g.iter().zip(s) {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1.to_bits(), b.1.to_bits());
        }
    }
}
