//! `POST /api/v1/receive` (and `/api/v1/write`): remote write 1.0 and 2.0.
//!
//! Owns the request checks a sender sees (content negotiation, encoding, size, tenant, snappy,
//! protobuf, labels), the `X-Prometheus-Remote-Write-*-Written` response headers and the
//! status-code contract: 204 stored; 400 malformed (nothing of it stored, so a retry
//! never double-writes); 409 some samples out of order or conflicting (the valid ones are
//! stored, as Thanos Receive does — a sender does not retry 4xx, so dropping the good samples
//! with the bad would lose data); 413 too large; 415 wrong encoding; 500 storage failure (the
//! sender retries; repeats are idempotent). Buffers come from a per-core pool, so a request
//! allocates nothing per sample; the pool keeps a bounded number of them, each of bounded
//! size. Memory is reserved in the budget before it is allocated, stage by stage (body,
//! decoding, routing: `budget::need`), and a body that stalls ends its connection. Must not
//! touch the head or WAL itself.
//!
//! The protocol comes from `Content-Type` alone (the `X-Prometheus-Remote-Write-Version`
//! header is informational and not checked, as the 2.0 spec has receivers use the content
//! type): `application/x-protobuf` without `proto=` or with `proto=prometheus.WriteRequest` is
//! 1.0, `proto=io.prometheus.write.v2.Request` is 2.0, anything else 415. Both decode into the
//! same `WriteRequestRef`, so everything after decoding is shared.

use std::cell::RefCell;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use sluice_core::{DecodeError, KnownSeries, V2Decoder, WriteRequestRef};
use sluice_shards::{ingest, is_valid_tenant, IngestScratch, SeriesKeys};

use crate::body::{self, BodyError};
use crate::budget::need::{self, Route, Shape};
use crate::budget::Permit;
use crate::response::{empty, text, Body};
use crate::server::CoreState;

/// Buffers one remote-write request needs; pooled per core.
#[derive(Default)]
pub struct WriteBuffers {
    body: Vec<u8>,
    dec: Decoded,
    scratch: IngestScratch,
    cluster: crate::cluster::ClusterScratch,
}

/// A decompressed payload and what it decodes to.
#[derive(Default)]
struct Decoded {
    decompressed: Vec<u8>,
    req: WriteRequestRef,
    v2: V2Decoder,
}

impl WriteBuffers {
    /// Bytes these buffers hold, every vector's capacity: what the pool keeps if it keeps them.
    fn capacity_bytes(&self) -> usize {
        self.body.capacity()
            + self.dec.decompressed.capacity()
            + self.dec.req.capacity_bytes()
            + self.dec.v2.capacity_bytes()
            + self.scratch.capacity_bytes()
            + self.cluster.capacity_bytes()
    }
}

/// Buffers holding more than this are freed after their request rather than pooled: one huge
/// request must not pin its memory forever. A request of Prometheus' default size (2,000
/// samples, a 0.5 MiB payload) needs 1–2 MiB.
const MAX_POOLED_BYTES: usize = 16 << 20;

/// Buffers a core keeps for its next requests, at most: as many as it serves at once in a
/// busy steady state.
const MAX_POOLED: usize = 8;

/// Bytes a core's pool keeps between requests, at most, and at most a quarter of the
/// in-flight budget shared by the cores: idle pooled buffers are the only request memory the
/// budget does not charge (a request is charged the pooled capacity it takes), so this bounds
/// how far RSS can exceed the budget.
const MAX_IDLE_BYTES: usize = 32 << 20;

/// A core's request buffers kept between requests.
pub struct BufferPool {
    sets: Vec<WriteBuffers>,
    /// Capacity of the sets kept.
    idle_bytes: usize,
    max_idle_bytes: usize,
}

impl BufferPool {
    /// A pool for one of `cores` cores under an in-flight budget of `inflight_limit` bytes
    /// (0: none).
    pub fn new(inflight_limit: u64, cores: usize) -> BufferPool {
        let share = match inflight_limit {
            0 => MAX_IDLE_BYTES,
            l => (l / 4 / cores.max(1) as u64).min(MAX_IDLE_BYTES as u64) as usize,
        };
        BufferPool {
            sets: Vec::new(),
            idle_bytes: 0,
            max_idle_bytes: share,
        }
    }

    /// A set of buffers and its capacity (to be charged to whoever takes it).
    fn take(&mut self) -> (WriteBuffers, usize) {
        match self.sets.pop() {
            Some(set) => {
                let bytes = set.capacity_bytes();
                self.idle_bytes -= bytes;
                (set, bytes)
            }
            None => (WriteBuffers::default(), 0),
        }
    }

    /// Keeps `set`, or frees it when it holds more than [`MAX_POOLED_BYTES`] or the pool is
    /// full (by count or bytes).
    fn give(&mut self, set: WriteBuffers) {
        let bytes = set.capacity_bytes();
        if self.sets.len() < MAX_POOLED
            && bytes <= MAX_POOLED_BYTES
            && self.idle_bytes + bytes <= self.max_idle_bytes
        {
            self.idle_bytes += bytes;
            self.sets.push(set);
        }
    }
}

/// Largest too-large body still read to its end before the 413 goes out.
const DRAIN_BEFORE_REJECT: usize = 1 << 20;

/// A rejected request: status, metric reason, message.
struct Reject(StatusCode, &'static str, String);

/// How a request ends without storing anything.
enum Fail {
    /// Answered with this status.
    Reject(Reject),
    /// Its body stalled: the connection is dropped without an answer.
    Stalled(body::Stalled),
}

impl From<Reject> for Fail {
    fn from(r: Reject) -> Fail {
        Fail::Reject(r)
    }
}

/// The remote-write protocol of a request, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    /// `prometheus.WriteRequest`.
    V1,
    /// `io.prometheus.write.v2.Request`.
    V2,
}

/// What a request stored, for the `X-Prometheus-Remote-Write-*-Written` headers: exact on
/// 2xx and 409, 0 whenever nothing was stored (4xx) or storing failed (5xx: the sender retries
/// the whole request). Exemplars are accepted but never stored, so always 0.
#[derive(Debug, Default, Clone, Copy)]
struct Written {
    samples: u64,
    histograms: u64,
    exemplars: u64,
}

const SAMPLES_WRITTEN: &str = "x-prometheus-remote-write-samples-written";
const HISTOGRAMS_WRITTEN: &str = "x-prometheus-remote-write-histograms-written";
const EXEMPLARS_WRITTEN: &str = "x-prometheus-remote-write-exemplars-written";

/// Answers a remote-write request; `Err` when its body stalled, and the connection must end
/// without an answer (see [`body_failure`]).
pub async fn handle(
    st: &CoreState,
    req: Request<Incoming>,
) -> Result<Response<Body>, body::Stalled> {
    let (mut bufs, pooled) = st.pool.borrow_mut().take();
    let mut written = Written::default();
    let result = receive(st, req, &mut bufs, pooled, &mut written).await;
    st.pool.borrow_mut().give(bufs);
    let mut resp = match result {
        Ok(resp) => resp,
        Err(Fail::Stalled(stalled)) => {
            st.ctx.shard.metrics.count_rejection("body_read_timeout");
            tracing::debug!("remote write dropped: {stalled}");
            return Err(stalled);
        }
        Err(Fail::Reject(Reject(status, reason, msg))) => {
            st.ctx.shard.metrics.count_rejection(reason);
            if status.is_server_error() {
                tracing::error!(%status, "remote write failed: {msg}");
            } else {
                tracing::debug!(%status, "remote write rejected: {msg}");
            }
            let mut resp = text(status, msg);
            // Both mean "not now": tell the sender when to come back.
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            {
                resp.headers_mut().insert(
                    hyper::header::RETRY_AFTER,
                    hyper::header::HeaderValue::from_static("1"),
                );
            }
            resp
        }
    };
    // On every answer, whatever the protocol: 2.0 senders rely on them, 1.0 senders ignore them.
    let h = resp.headers_mut();
    h.insert(SAMPLES_WRITTEN, written.samples.into());
    h.insert(HISTOGRAMS_WRITTEN, written.histograms.into());
    h.insert(EXEMPLARS_WRITTEN, written.exemplars.into());
    Ok(resp)
}

/// Checks a remote-write request's method and headers: its protocol and tenant.
fn check_headers(
    cfg: &crate::NetConfig,
    parts: &hyper::http::request::Parts,
) -> Result<(Proto, String), Reject> {
    if parts.method != hyper::Method::POST {
        return Err(Reject(
            StatusCode::METHOD_NOT_ALLOWED,
            "method",
            format!(
                "method {} not allowed: remote write needs POST",
                parts.method
            ),
        ));
    }
    let headers = &parts.headers;
    match headers
        .get("content-encoding")
        .map(|v| v.to_str().unwrap_or("?"))
    {
        Some(enc) if enc.eq_ignore_ascii_case("snappy") => {}
        Some(enc) => {
            return Err(Reject(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content_encoding",
                format!("unsupported Content-Encoding {enc:?}: remote write requires snappy"),
            ))
        }
        None => {
            return Err(Reject(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content_encoding",
                "missing Content-Encoding: remote write requires snappy".to_string(),
            ))
        }
    }
    // No Content-Type at all: 1.0, as before 2.0 existed.
    let proto = match headers.get("content-type") {
        None => Proto::V1,
        Some(ct) => {
            let ct = ct.to_str().unwrap_or("?");
            negotiate(ct).ok_or_else(|| {
                Reject(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "content_type",
                    format!(
                        "unsupported Content-Type {ct:?}: supported are application/x-protobuf \
                         and application/x-protobuf;proto=prometheus.WriteRequest (remote write \
                         1.0), application/x-protobuf;proto=io.prometheus.write.v2.Request \
                         (remote write 2.0)"
                    ),
                )
            })?
        }
    };
    let tenant = match headers.get(cfg.tenant_header.as_str()) {
        None => cfg.default_tenant.clone(),
        Some(v) => match v.to_str() {
            Ok(t) if is_valid_tenant(t) => t.to_string(),
            _ => {
                return Err(Reject(
                    StatusCode::BAD_REQUEST,
                    "tenant",
                    format!(
                        "invalid tenant in header {}: {:?} (allowed: 1-128 of [A-Za-z0-9_.-], not bucket or LOCK)",
                        cfg.tenant_header,
                        String::from_utf8_lossy(v.as_bytes())
                    ),
                ))
            }
        },
    };
    Ok((proto, tenant))
}

/// Reads a small body to its end, without keeping it, before an early answer: a client still
/// sending when the connection closes sees a reset instead of the answer.
async fn drain_small(cfg: &crate::NetConfig, body: Incoming, content_length: Option<usize>) {
    if content_length.is_some_and(|l| l <= DRAIN_BEFORE_REJECT) {
        let _ = body::drain(body, DRAIN_BEFORE_REJECT, cfg.body_read_timeout).await;
    }
}

/// Answers `req` with `bufs`, which hold `pooled` bytes already (charged to the request
/// with what it adds).
async fn receive(
    st: &CoreState,
    req: Request<Incoming>,
    bufs: &mut WriteBuffers,
    pooled: usize,
    written: &mut Written,
) -> Result<Response<Body>, Fail> {
    let cfg = &st.cfg;
    let (parts, body) = req.into_parts();
    let content_length = parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let (proto, tenant) = match check_headers(cfg, &parts) {
        Ok(x) => x,
        Err(rej) => {
            drain_small(cfg, body, content_length).await;
            return Err(rej.into());
        }
    };
    if let Some(len) = content_length {
        if len > cfg.max_request_bytes {
            drain_small(cfg, body, content_length).await;
            return Err(too_large(len, cfg.max_request_bytes).into());
        }
    }
    // The buffers as they came from the pool, and the body's room beyond what they have.
    let body_room = content_length.map_or(0, |l| l.saturating_sub(bufs.body.capacity()));
    let mut permit = match cfg.budget.try_reserve((pooled + body_room) as u64) {
        Ok(p) => p,
        Err(msg) => {
            drain_small(cfg, body, content_length).await;
            return Err(over_budget(msg).into());
        }
    };
    let limits = body::Limits {
        max: cfg.max_request_bytes,
        stall: cfg.body_read_timeout,
    };
    bufs.body.clear();
    bufs.body.reserve_exact(content_length.unwrap_or(0));
    body::read(body, &mut bufs.body, limits, content_length, |more| {
        permit.grow_to(permit.bytes() + more as u64)
    })
    .await
    .map_err(body_failure)?;
    let limited = |(status, reason, msg)| Reject(status, reason, msg);
    crate::limits::check_request(st, &tenant, bufs.body.len(), 0, 0).map_err(limited)?;

    // A single node recognises the label bytes its core has seen before; a cluster member
    // needs every series' key for its peers anyway.
    let known = cfg.cluster.is_none().then_some(&st.ctx.shard.known);
    let WriteBuffers {
        body,
        dec,
        scratch,
        cluster: cluster_scratch,
    } = bufs;
    let n = decode(
        body,
        dec,
        proto,
        cfg.max_decompressed_bytes,
        known,
        &tenant,
        &mut permit,
    )?;
    let req = &dec.req;
    let payload = &dec.decompressed[..n];
    st.ctx
        .shard
        .metrics
        .count_received(req.series.len() as u64, req.samples.len() as u64);

    crate::limits::check_request(st, &tenant, body.len(), req.series.len(), req.samples.len())
        .map_err(limited)?;

    let route = Route {
        cores: st.ctx.cores(),
        replicas: cfg.cluster.as_ref().map_or(0, |c| c.replication_factor),
        // Only a 1.0 body goes to a peer as it came.
        forward_body: if cfg.cluster.is_some() && proto == Proto::V1 {
            body.len()
        } else {
            0
        },
    };
    reserve_routing(&mut permit, req, &scratch.keys, &route)?;

    if let Some(cluster) = &cfg.cluster {
        let (status, reason, msg) = crate::cluster::write(
            st,
            cluster,
            crate::cluster::Request {
                tenant: &tenant,
                snappy: body,
                req,
                payload,
                v1_body: proto == Proto::V1,
            },
            scratch,
            cluster_scratch,
        )
        .await;
        // A 409 in the cluster tells how many samples a replica refused, not which; what the
        // quorum stored is not known exactly, so only a full success reports a count.
        if status.is_success() {
            written.samples = req.samples.len() as u64;
        }
        return if status.is_success() {
            Ok(empty(status))
        } else {
            Err(Reject(status, reason, msg).into())
        };
    }
    if let Err(msg) = crate::limits::check_head_series(st, &tenant) {
        return Err(Reject(StatusCode::TOO_MANY_REQUESTS, "limit", msg).into());
    }
    let out = ingest(&st.ctx, &tenant, req, payload, scratch).await;
    if let Some(f) = out.failure {
        // Part may be in the WAL, but nothing is acknowledged: the sender retries it all.
        return Err(Reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            format!("write not persisted, retry: {f}"),
        )
        .into());
    }
    // Repeats (the same sample sent again) are stored: they are already there.
    written.samples = out.appended + out.repeats;
    if out.rejected > 0 {
        let first = out.rejections.first().cloned().unwrap_or_default();
        return Err(Reject(
            StatusCode::CONFLICT,
            "out_of_order",
            format!(
                "{} of {} samples rejected ({first}); the other samples of this request were stored",
                out.rejected,
                req.samples.len()
            ),
        )
        .into());
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// What a body that could not be read becomes. A stalled body ends the connection without an
/// answer rather than with a 408: the sender is not reading while it is stuck sending, and
/// Prometheus' remote-write client retries a broken connection but treats a 408, like any
/// 4xx but 429, as final and drops the samples.
fn body_failure(e: BodyError) -> Fail {
    match e {
        BodyError::Stalled(d) => Fail::Stalled(body::Stalled(d)),
        BodyError::TooLarge { len, max } => too_large(len, max).into(),
        BodyError::OverBudget(msg) => over_budget(msg).into(),
        BodyError::Read(msg) => Reject(
            StatusCode::BAD_REQUEST,
            "read",
            format!("reading request body: {msg}"),
        )
        .into(),
    }
}

/// Grows `permit` by what routing the decoded `req` allocates, before it does: the keys and
/// hashes `keys` lacks room for, then [`need::routing`].
fn reserve_routing(
    permit: &mut Permit,
    req: &WriteRequestRef,
    keys: &SeriesKeys,
    route: &Route,
) -> Result<(), Reject> {
    let shape = Shape {
        series: req.series.len(),
        samples: req.samples.len(),
        keys: req.key_bytes(),
    };
    let more =
        keys.bytes_to_grow(shape.series, shape.keys.parsed) as u64 + need::routing(&shape, route);
    permit.grow_to(permit.bytes() + more).map_err(over_budget)
}

/// Decompresses and decodes `body` (of protocol `proto`) into `dec`, recognising the series
/// of `tenant` that `known` remembers (remote write 1.0 only); returns the payload length.
///
/// `permit` holds what `dec` already has; it grows by the payload's room before it is
/// decompressed, and by each decoded vector's growth before it grows: decoding is charged
/// exactly what it allocates, never a worst case (which is 16 times the payload, see
/// `budget`).
fn decode(
    body: &[u8],
    dec: &mut Decoded,
    proto: Proto,
    max_decompressed: usize,
    known: Option<&RefCell<KnownSeries>>,
    tenant: &str,
    permit: &mut Permit,
) -> Result<usize, Reject> {
    let held = permit.bytes();
    let len = snap::raw::decompress_len(body).map_err(|e| bad_snappy(&e))?;
    if len > max_decompressed {
        return Err(Reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "decompressed request of {len} bytes exceeds the limit of {max_decompressed} bytes"
            ),
        ));
    }
    let room = len.saturating_sub(dec.decompressed.capacity());
    permit.grow_to(held + room as u64).map_err(over_budget)?;
    // Grow only: a buffer that already has the length is not re-zeroed per request. Exactly:
    // `resize` alone could double the buffer.
    if dec.decompressed.len() < len {
        dec.decompressed.reserve_exact(len - dec.decompressed.len());
        dec.decompressed.resize(len, 0);
    }
    let n = snap::raw::Decoder::new()
        .decompress(body, &mut dec.decompressed[..len])
        .map_err(|e| bad_snappy(&e))?;
    let Decoded {
        decompressed,
        req,
        v2,
    } = dec;
    let payload = &decompressed[..n];
    // Each vector's growth is reserved just before it happens (once per doubling).
    let mut grow = |bytes: usize| permit.grow_to(permit.bytes() + bytes as u64);
    let res = match proto {
        Proto::V1 => match known {
            Some(known) => {
                let known = known.borrow();
                let seed = known.tenant_seed(tenant.as_bytes());
                req.decode_known_within(payload, &known, seed, &mut grow)
            }
            None => req.decode_within(payload, &mut grow),
        },
        // Exemplars and histograms are counted by the decoder, but nothing uses the counts:
        // exemplars are not stored, and histograms fail the request.
        Proto::V2 => v2.decode_within(payload, req, &mut grow).map(|_| ()),
    };
    res.map_err(|e| {
        let reason = match e {
            DecodeError::Memory(msg) => return over_budget(msg),
            DecodeError::Protobuf(_) => "bad_protobuf",
            DecodeError::InvalidSeries { .. } => "invalid_labels",
            DecodeError::SymbolRef(_) => "bad_symbol_ref",
            _ => "unsupported",
        };
        Reject(StatusCode::BAD_REQUEST, reason, e.to_string())
    })?;
    Ok(n)
}

/// Stores a whole remote-write 1.0 body that a peer forwarded as a replica (no forwarding, no
/// quorum: this node's share only; peers forward only 1.0 bodies, see `cluster::Request`).
/// `permit` holds the frame; it grows as decoding and routing need. `Err` carries the status
/// class and message.
pub(crate) async fn store_replica(
    st: &CoreState,
    tenant: &str,
    snappy_body: &[u8],
    permit: &mut Permit,
) -> Result<sluice_shards::shard::ApplyOutcome, (StatusCode, String)> {
    let (mut bufs, pooled) = st.pool.borrow_mut().take();
    if let Err(msg) = permit.grow_to(permit.bytes() + pooled as u64) {
        st.pool.borrow_mut().give(bufs);
        return Err((StatusCode::TOO_MANY_REQUESTS, msg));
    }
    let known = Some(&st.ctx.shard.known);
    let WriteBuffers { dec, scratch, .. } = &mut bufs;
    let route = Route {
        cores: st.ctx.cores(),
        ..Route::default()
    };
    let decoded = decode(
        snappy_body,
        dec,
        Proto::V1,
        st.cfg.max_decompressed_bytes,
        known,
        tenant,
        permit,
    )
    .and_then(|n| reserve_routing(permit, &dec.req, &scratch.keys, &route).map(|()| n));
    let result = match decoded {
        Err(Reject(status, _, msg)) => Err((status, msg)),
        Ok(n) => Ok(ingest(&st.ctx, tenant, &dec.req, &dec.decompressed[..n], scratch).await),
    };
    st.pool.borrow_mut().give(bufs);
    result
}

/// The protocol of a `Content-Type` (RFC 9110: media type and parameter names are
/// case-insensitive, a value may be quoted; the message name is case-sensitive), or `None`
/// for an unsupported type. Parameters other than `proto` are ignored.
fn negotiate(ct: &str) -> Option<Proto> {
    let mut parts = ct.split(';').map(str::trim);
    let media = parts.next().unwrap_or("");
    if !media.eq_ignore_ascii_case("application/x-protobuf") {
        return None;
    }
    let mut proto = Proto::V1;
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        if !k.trim().eq_ignore_ascii_case("proto") {
            continue;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        proto = match v {
            "prometheus.WriteRequest" => Proto::V1,
            "io.prometheus.write.v2.Request" => Proto::V2,
            _ => return None,
        };
    }
    Some(proto)
}

fn over_budget(msg: String) -> Reject {
    Reject(StatusCode::TOO_MANY_REQUESTS, "memory_budget", msg)
}

fn too_large(len: usize, limit: usize) -> Reject {
    Reject(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("request body of {len} bytes exceeds --max-request-bytes={limit}"),
    )
}

fn bad_snappy(e: &snap::Error) -> Reject {
    Reject(
        StatusCode::BAD_REQUEST,
        "bad_snappy",
        format!("body is not valid snappy (block format): {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let v1 = Some(Proto::V1);
        let v2 = Some(Proto::V2);
        for (ct, want) in [
            ("application/x-protobuf", v1),
            ("Application/X-Protobuf", v1),
            ("application/x-protobuf; proto=prometheus.WriteRequest", v1),
            ("application/x-protobuf;charset=utf-8", v1),
            (
                "application/x-protobuf;proto=io.prometheus.write.v2.Request",
                v2,
            ),
            (
                "application/x-protobuf; PROTO=\"io.prometheus.write.v2.Request\"",
                v2,
            ),
            (
                "application/x-protobuf;proto=io.prometheus.write.v3.Request",
                None,
            ),
            (
                "application/x-protobuf;proto=io.prometheus.write.v2.request",
                None,
            ),
            ("application/x-protobuf;proto=", None),
            ("application/json", None),
            ("", None),
        ] {
            assert_eq!(negotiate(ct), want, "{ct:?}");
        }
    }
}
