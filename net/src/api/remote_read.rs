//! Remote read, `POST /api/v1/read`: Prometheus' `ReadRequest` (snappy protobuf) answered
//! with raw samples (`SAMPLES`) or with XOR chunks in length-prefixed, CRC-checked frames
//! (`STREAMED_XOR_CHUNKS`), as a Prometheus server or Thanos sidecar answers it, within
//! Prometheus' limits: `--storage.remote.read-concurrent-limit` reads at once (more wait for a
//! slot), `--storage.remote.read-sample-limit` samples per request (400 `exceeded sample limit
//! (N)`, applied while reading), frames of at most `--storage.remote.read-max-bytes-in-frame`
//! bytes, produced as the client takes them.
//!
//! Owns the read protocol's messages and framing. Reads through `select_all` like every
//! other query. A query whose matchers all match the empty string would select every series
//! of every tenant: refused (400) with the words PromQL uses for such a selector. Differs
//! from Prometheus in one way: the sample limit also bounds streamed answers, because the
//! samples are read before the first frame goes out (Prometheus streams from its storage
//! lazily and applies no sample limit there).

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use prost::Message;
use sluice_core::{MatchOp, Matcher};
use sluice_shards::{select_all, QueryError, ReadLimits, Selection, SeriesData};
use sluice_storage::xor::XorChunk;

use super::Reader;
use crate::body::Stalled;
use crate::response::{text, Body, Pieces};

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

/// Answers one remote-read request; `Err` when its body stalled (the connection is dropped).
pub(super) async fn handle(
    st: &Reader<'_>,
    req: Request<Incoming>,
    tenant: Option<String>,
) -> Result<Response<Body>, Stalled> {
    Ok(match answer(st, req, tenant).await {
        Ok(r) => r,
        Err(Failed::Stalled(s)) => return Err(s),
        Err(Failed::Answer((status, msg))) => {
            let mut resp = text(status, msg);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                resp.headers_mut().insert(
                    hyper::header::RETRY_AFTER,
                    hyper::header::HeaderValue::from_static("1"),
                );
            }
            resp
        }
    })
}

type Failure = (StatusCode, String);

/// A failed remote read: an answer, or a stalled body (no answer).
enum Failed {
    Answer(Failure),
    Stalled(Stalled),
}

impl From<Failure> for Failed {
    fn from(f: Failure) -> Self {
        Failed::Answer(f)
    }
}

fn bad(msg: impl Into<String>) -> Failure {
    (StatusCode::BAD_REQUEST, msg.into())
}

/// The request's queries as selections (checked before anything is read).
fn selections(rr: &ReadRequest, tenant: &Option<String>) -> Result<Vec<Selection>, Failure> {
    let mut out = Vec::with_capacity(rr.queries.len());
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
        if set.iter().all(|m| m.matches("")) {
            return Err(bad(
                "vector selector must contain at least one non-empty matcher",
            ));
        }
        out.push(Selection {
            matcher_sets: vec![set],
            mint: q.start_timestamp_ms,
            maxt: q.end_timestamp_ms,
            tenant: tenant.clone(),
        });
    }
    Ok(out)
}

/// Decodes and checks a request body: the request, its queries as selections, and whether
/// the client takes streamed chunks.
fn parse(
    body: &[u8],
    tenant: &Option<String>,
) -> Result<(ReadRequest, Vec<Selection>, bool), Failure> {
    let len = snap::raw::decompress_len(body)
        .map_err(|e| bad(format!("remote-read request is not snappy: {e}")))?;
    if len > MAX_REQUEST_BYTES {
        return Err(bad(format!(
            "remote-read request decompresses to {len} bytes"
        )));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
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
    let sels = selections(&rr, tenant)?;
    Ok((rr, sels, streamed))
}

async fn answer(
    st: &Reader<'_>,
    req: Request<Incoming>,
    tenant: Option<String>,
) -> Result<Response<Body>, Failed> {
    let read = &st.cfg.read;
    let deadline = std::time::Instant::now() + read.query_timeout;
    // The body first: a client that trickles its request must not hold a slot meanwhile.
    let body = match super::read_body(st, req.into_body(), MAX_REQUEST_BYTES).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(bad(format!("reading remote-read request: {e}")).into()),
        Err(super::ParamsError::Stalled(s)) => return Err(Failed::Stalled(s)),
        Err(super::ParamsError::BadData(b)) => return Err(bad(b.0).into()),
    };
    // As Prometheus: a read over the limit waits for a slot (here: until the query timeout).
    let slot = read.remote_read_gate.enter(deadline).await.map_err(|_| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "remote read: no slot free within {:?} (--storage.remote.read-concurrent-limit)",
                read.query_timeout
            ),
        )
    })?;
    let (rr, sels, streamed) = parse(&body, &tenant)?;
    let marked = rr.queries.iter().any(|q| {
        q.matchers
            .iter()
            .any(|m| read.debug_panic_at(&m.value, crate::DebugPanic::Select))
    });
    // One limit for the whole request, as Prometheus counts it.
    let mut limits = ReadLimits::new(read.remote_read_sample_limit, deadline);
    limits.debug_panic = marked;
    let mut results = Vec::with_capacity(sels.len());
    for sel in sels {
        let found = select_all(st.ctx, sel, true, &limits)
            .await
            .map_err(|e| match e {
                QueryError::TooManySamples { limit } => {
                    bad(format!("exceeded sample limit ({limit})"))
                }
                QueryError::Timeout => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "remote read timed out (--query.timeout)".to_string(),
                ),
                other => {
                    tracing::error!("remote read failed: {other}");
                    (StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
                }
            })?;
        results.push(found);
    }
    if streamed {
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header(
                "content-type",
                "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse",
            )
            .body(Body::pieces(Frames::new(
                results,
                read.remote_read_max_bytes_in_frame,
                slot,
            )))
            .expect("static response parts are valid"));
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
        .body(Body::pieces(Whole {
            bytes: compressed,
            at: 0,
            _slot: slot,
        }))
        .expect("static response parts are valid"))
}

/// A `SAMPLES` answer (one snappy block, built whole), sent in pieces while it holds its
/// slot: the memory of answers being sent stays bounded by the concurrency limit.
struct Whole {
    bytes: Vec<u8>,
    at: usize,
    _slot: super::gate::Slot,
}

impl Pieces for Whole {
    fn fill(&mut self, out: &mut Vec<u8>, target: usize) -> bool {
        let end = (self.at + target).min(self.bytes.len());
        out.extend_from_slice(&self.bytes[self.at..end]);
        self.at = end;
        end == self.bytes.len()
    }
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

/// The frames of a streamed answer, produced as the client takes them: per series, its
/// samples as XOR chunks, as many chunks per frame as fit in the frame size limit (a series
/// whose chunks do not fit in one frame continues in the next, as Prometheus splits them).
/// Each frame is a uvarint length, the CRC32C (big endian) of the message, the message. A
/// piece ends between frames, so one long series goes out over several pieces too.
struct Frames {
    results: Vec<Vec<SeriesData>>,
    /// Next query, next series within it, and that series' next sample.
    at: (usize, usize, usize),
    max_frame: usize,
    _slot: super::gate::Slot,
}

impl Frames {
    fn new(results: Vec<Vec<SeriesData>>, max_frame: usize, slot: super::gate::Slot) -> Self {
        Frames {
            results,
            at: (0, 0, 0),
            max_frame,
            _slot: slot,
        }
    }
}

/// Appends one frame holding `chunks` of a series.
fn put_frame(out: &mut Vec<u8>, labels: Vec<Label>, chunks: Vec<Chunk>, query_index: usize) {
    let msg = ChunkedReadResponse {
        chunked_series: vec![ChunkedSeries { labels, chunks }],
        query_index: query_index as i64,
    }
    .encode_to_vec();
    prost::encoding::encode_varint(msg.len() as u64, out);
    out.extend_from_slice(&crc32c::crc32c(&msg).to_be_bytes());
    out.extend_from_slice(&msg);
}

/// One XOR chunk of `part` (at most [`SAMPLES_PER_CHUNK`] samples).
fn chunk_of(part: &[(i64, f64)]) -> Chunk {
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
}

impl Pieces for Frames {
    fn fill(&mut self, out: &mut Vec<u8>, target: usize) -> bool {
        let (mut qi, mut si, mut at) = self.at;
        let start = out.len();
        while qi < self.results.len() && out.len() - start < target {
            let Some(s) = self.results[qi].get_mut(si) else {
                qi += 1;
                si = 0;
                continue;
            };
            let labels = labels_of(s);
            let label_bytes: usize = labels.iter().map(|l| l.encoded_len() + 2).sum();
            // One frame of this series, from sample `at`.
            let mut chunks = Vec::new();
            let mut bytes = label_bytes;
            while at < s.samples.len() {
                let end = (at + SAMPLES_PER_CHUNK).min(s.samples.len());
                let c = chunk_of(&s.samples[at..end]);
                let size = c.encoded_len() + 4;
                if !chunks.is_empty() && bytes + size > self.max_frame {
                    break;
                }
                bytes += size;
                chunks.push(c);
                at = end;
            }
            if !chunks.is_empty() {
                put_frame(out, labels, chunks, qi);
            }
            if at >= s.samples.len() {
                // Sent: its samples need not stay in memory.
                *s = SeriesData {
                    labels: Vec::new(),
                    samples: Vec::new(),
                };
                si += 1;
                at = 0;
            }
        }
        self.at = (qi, si, at);
        qi >= self.results.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(rr: &ReadRequest) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&rr.encode_to_vec())
            .expect("snappy")
    }

    fn request(matchers: Vec<LabelMatcher>, types: Vec<i32>) -> ReadRequest {
        ReadRequest {
            queries: vec![QueryMsg {
                start_timestamp_ms: 0,
                end_timestamp_ms: 1000,
                matchers,
            }],
            accepted_response_types: types,
        }
    }

    fn m(ty: i32, name: &str, value: &str) -> LabelMatcher {
        LabelMatcher {
            r#type: ty,
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn requests_are_checked_before_anything_is_read() {
        let ok = request(vec![m(0, "__name__", "up")], vec![1, 0]);
        let (_, sels, streamed) = parse(&body(&ok), &Some("t".into())).unwrap();
        assert!(streamed);
        assert_eq!(sels.len(), 1);
        assert_eq!(sels[0].tenant.as_deref(), Some("t"));
        for (rr, why) in [
            (request(vec![], vec![]), "non-empty matcher"),
            (
                request(vec![m(2, "__name__", ".*")], vec![]),
                "non-empty matcher",
            ),
            (
                request(vec![m(7, "a", "b")], vec![]),
                "unknown matcher type 7",
            ),
            (request(vec![m(2, "a", "(")], vec![]), "regular expression"),
        ] {
            let (status, msg) = parse(&body(&rr), &None).unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(msg.contains(why), "{msg}");
        }
        assert!(parse(b"not snappy at all", &None).is_err());
    }

    /// Frames of a streamed answer hold at most the frame limit (or one chunk when a chunk
    /// alone is larger) and carry every sample.
    #[test]
    fn frames_respect_the_size_limit_and_carry_every_sample() {
        let series: Vec<SeriesData> = (0..5)
            .map(|i| SeriesData {
                labels: vec![("__name__".into(), format!("s{i}"))],
                samples: (0..2000).map(|k| (k * 1000, (k * i) as f64)).collect(),
            })
            .collect();
        let gate = super::super::gate::Gate::new(1);
        let slot = futures_lite::future::block_on(async {
            // The gate's timer needs no executor when a slot is free.
            gate.enter(std::time::Instant::now() + std::time::Duration::from_secs(1))
                .await
        })
        .unwrap();
        let mut frames = Frames::new(vec![series.clone()], 1024, slot);
        let mut out = Vec::new();
        while !frames.fill(&mut out, 4096) {}
        let mut rest = out.as_slice();
        let mut got: std::collections::BTreeMap<String, Vec<(i64, f64)>> = Default::default();
        while !rest.is_empty() {
            let n = prost::encoding::decode_varint(&mut rest).unwrap() as usize;
            let crc = u32::from_be_bytes(rest[..4].try_into().unwrap());
            let msg = &rest[4..4 + n];
            assert_eq!(crc32c::crc32c(msg), crc);
            let f = ChunkedReadResponse::decode(msg).unwrap();
            assert!(
                n <= 1024 || f.chunked_series[0].chunks.len() == 1,
                "{n} bytes"
            );
            for cs in f.chunked_series {
                let e = got.entry(cs.labels[0].value.clone()).or_default();
                for c in cs.chunks {
                    e.extend(sluice_storage::xor::XorIter::new(&c.data));
                }
            }
            rest = &rest[4 + n..];
        }
        for s in &series {
            assert_eq!(got[&s.labels[0].1], s.samples);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Arbitrary bytes, as snappy or not: an error, never a panic.
        #[test]
        fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&bytes, &None);
            let framed = snap::raw::Encoder::new().compress_vec(&bytes).unwrap();
            let _ = parse(&framed, &None);
        }

        /// A valid request with bytes flipped, cut or appended, before or after compression.
        #[test]
        fn mutated_requests_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in proptest::option::of(any::<usize>()),
            compressed in any::<bool>(),
            value in "\\PC{0,40}",
            ty in -2i32..6,
        ) {
            let rr = request(vec![m(ty, "__name__", &value), m(0, "job", "a")], vec![1]);
            let mut raw = rr.encode_to_vec();
            if !compressed {
                for (at, b) in &flips {
                    let i = at % raw.len();
                    raw[i] = *b;
                }
                if let Some(c) = cut {
                    raw.truncate(c % (raw.len() + 1));
                }
            }
            let mut bytes = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
            if compressed {
                for (at, b) in &flips {
                    let i = at % bytes.len();
                    bytes[i] = *b;
                }
                if let Some(c) = cut {
                    bytes.truncate(c % (bytes.len() + 1));
                }
            }
            let _ = parse(&bytes, &Some("t".into()));
        }
    }
}
