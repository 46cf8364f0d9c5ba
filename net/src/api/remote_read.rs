//! Remote read, `POST /api/v1/read`: Prometheus' `ReadRequest` (snappy protobuf) answered
//! with raw samples (`SAMPLES`) or with XOR chunks in length-prefixed, CRC-checked frames
//! (`STREAMED_XOR_CHUNKS`), as a Prometheus server or Thanos sidecar answers it.
//!
//! Owns the read protocol's messages and framing. Reads through `select_all` like every
//! other query.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use prost::Message;
use sluice_shards::{select_all, MatchOp, Matcher, Selection, SeriesData};
use sluice_storage::xor::XorChunk;

use crate::response::{text, Body};
use crate::server::CoreState;

/// Largest compressed request accepted.
const MAX_REQUEST_BYTES: usize = 32 << 20;

/// Samples per XOR chunk in streamed responses (Prometheus cuts head chunks at 120).
const SAMPLES_PER_CHUNK: usize = 120;

/// `prometheus.ReadRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct ReadRequest {
    #[prost(message, repeated, tag = "1")]
    queries: Vec<QueryMsg>,
    #[prost(enumeration = "ResponseType", repeated, tag = "2")]
    accepted_response_types: Vec<i32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
enum ResponseType {
    Samples = 0,
    StreamedXorChunks = 1,
}

/// `prometheus.Query`.
#[derive(Clone, PartialEq, prost::Message)]
struct QueryMsg {
    #[prost(int64, tag = "1")]
    start_timestamp_ms: i64,
    #[prost(int64, tag = "2")]
    end_timestamp_ms: i64,
    #[prost(message, repeated, tag = "3")]
    matchers: Vec<LabelMatcher>,
}

/// `prometheus.LabelMatcher`: type 0 `=`, 1 `!=`, 2 `=~`, 3 `!~`.
#[derive(Clone, PartialEq, prost::Message)]
struct LabelMatcher {
    #[prost(int32, tag = "1")]
    r#type: i32,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(string, tag = "3")]
    value: String,
}

/// `prometheus.ReadResponse`.
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
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Label {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Sample {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

/// `prometheus.ChunkedReadResponse`: one frame of a streamed answer.
#[derive(Clone, PartialEq, prost::Message)]
struct ChunkedReadResponse {
    #[prost(message, repeated, tag = "1")]
    chunked_series: Vec<ChunkedSeries>,
    #[prost(int64, tag = "2")]
    query_index: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ChunkedSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    chunks: Vec<Chunk>,
}

/// `prometheus.Chunk`; encoding 1 is XOR.
#[derive(Clone, PartialEq, prost::Message)]
struct Chunk {
    #[prost(int64, tag = "1")]
    min_time_ms: i64,
    #[prost(int64, tag = "2")]
    max_time_ms: i64,
    #[prost(int32, tag = "3")]
    r#type: i32,
    #[prost(bytes = "vec", tag = "4")]
    data: Vec<u8>,
}

/// Answers one remote-read request.
pub(super) async fn handle(st: &CoreState, req: Request<Incoming>) -> Response<Body> {
    match answer(st, req).await {
        Ok(r) => r,
        Err((status, msg)) => text(status, msg),
    }
}

type Failure = (StatusCode, String);

fn bad(msg: impl Into<String>) -> Failure {
    (StatusCode::BAD_REQUEST, msg.into())
}

async fn answer(st: &CoreState, req: Request<Incoming>) -> Result<Response<Body>, Failure> {
    let body = http_body_util::Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
        .map_err(|e| bad(format!("reading remote-read request: {e}")))?
        .to_bytes();
    let len = snap::raw::decompress_len(&body)
        .map_err(|e| bad(format!("remote-read request is not snappy: {e}")))?;
    if len > MAX_REQUEST_BYTES {
        return Err(bad(format!(
            "remote-read request decompresses to {len} bytes"
        )));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&body)
        .map_err(|e| bad(format!("remote-read request is not snappy: {e}")))?;
    let rr = ReadRequest::decode(raw.as_slice())
        .map_err(|e| bad(format!("remote-read request is not a ReadRequest: {e}")))?;
    let streamed = rr
        .accepted_response_types
        .iter()
        .find_map(|t| match ResponseType::try_from(*t) {
            Ok(ResponseType::StreamedXorChunks) => Some(true),
            Ok(ResponseType::Samples) => Some(false),
            Err(_) => None,
        })
        .unwrap_or(false);
    let mut results = Vec::with_capacity(rr.queries.len());
    for q in &rr.queries {
        let mut set = Vec::with_capacity(q.matchers.len());
        for m in &q.matchers {
            let op = match m.r#type {
                0 => MatchOp::Equal,
                1 => MatchOp::NotEqual,
                2 => MatchOp::Regex,
                3 => MatchOp::NotRegex,
                t => return Err(bad(format!("unknown matcher type {t}"))),
            };
            set.push(Matcher::new(&m.name, op, &m.value).map_err(|e| bad(e.to_string()))?);
        }
        let sel = Selection {
            matcher_sets: vec![set],
            mint: q.start_timestamp_ms,
            maxt: q.end_timestamp_ms,
        };
        let mut found = select_all(&st.ctx, sel, true)
            .await
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        found.retain(|s| !s.samples.is_empty());
        results.push(found);
    }
    if streamed {
        return Ok(streamed_response(&results));
    }
    let resp = ReadResponse {
        results: results
            .into_iter()
            .map(|series| QueryResult {
                timeseries: series
                    .into_iter()
                    .map(|s| TimeSeries {
                        labels: labels_of(&s),
                        samples: s
                            .samples
                            .iter()
                            .map(|(t, v)| Sample {
                                value: *v,
                                timestamp: *t,
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    };
    let compressed = snap::raw::Encoder::new()
        .compress_vec(&resp.encode_to_vec())
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "snappy")
        .body(Full::new(Bytes::from(compressed)))
        .expect("static response parts are valid"))
}

fn labels_of(s: &SeriesData) -> Vec<Label> {
    s.labels
        .iter()
        .map(|(n, v)| Label {
            name: n.clone(),
            value: v.clone(),
        })
        .collect()
}

/// One frame per series: uvarint length, CRC32C (big endian) of the message, the message.
fn streamed_response(results: &[Vec<SeriesData>]) -> Response<Body> {
    let mut out = Vec::new();
    for (qi, series) in results.iter().enumerate() {
        for s in series {
            let chunks = s
                .samples
                .chunks(SAMPLES_PER_CHUNK)
                .map(|part| {
                    let mut c = XorChunk::new();
                    for (t, v) in part {
                        c.append(*t, *v);
                    }
                    Chunk {
                        min_time_ms: part.first().map_or(0, |p| p.0),
                        max_time_ms: part.last().map_or(0, |p| p.0),
                        r#type: 1,
                        data: c.bytes().to_vec(),
                    }
                })
                .collect();
            let msg = ChunkedReadResponse {
                chunked_series: vec![ChunkedSeries {
                    labels: labels_of(s),
                    chunks,
                }],
                query_index: qi as i64,
            }
            .encode_to_vec();
            prost::encoding::encode_varint(msg.len() as u64, &mut out);
            out.extend_from_slice(&crc32c::crc32c(&msg).to_be_bytes());
            out.extend_from_slice(&msg);
        }
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(
            "content-type",
            "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse",
        )
        .body(Full::new(Bytes::from(out)))
        .expect("static response parts are valid")
}
