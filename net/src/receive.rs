//! `POST /api/v1/receive` (and `/api/v1/write`): remote write 1.0 and 2.0.
//!
//! Owns the request checks a sender sees (content negotiation, encoding, size, tenant, snappy,
//! protobuf, labels), the `X-Prometheus-Remote-Write-*-Written` response headers and the
//! status-code contract: 204 stored; 400 malformed (nothing of it stored, so a retry
//! never double-writes); 409 some samples out of order or conflicting (the valid ones are
//! stored, as Thanos Receive does — a sender does not retry 4xx, so dropping the good samples
//! with the bad would lose data); 413 too large; 415 wrong encoding; 500 storage failure (the
//! sender retries; repeats are idempotent). Buffers come from a per-core pool, so a request
//! allocates nothing per sample. Must not touch the head or WAL itself.
//!
//! The protocol comes from `Content-Type` alone (the `X-Prometheus-Remote-Write-Version`
//! header is informational and not checked, as the 2.0 spec has receivers use the content
//! type): `application/x-protobuf` without `proto=` or with `proto=prometheus.WriteRequest` is
//! 1.0, `proto=io.prometheus.write.v2.Request` is 2.0, anything else 415. Both decode into the
//! same `WriteRequestRef`, so everything after decoding is shared.

use std::cell::RefCell;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use sluice_core::{KnownSeries, V2Decoder, WriteRequestRef};
use sluice_shards::{ingest, is_valid_tenant, IngestScratch};

use crate::response::{empty, text, Body};
use crate::server::CoreState;

/// Buffers one remote-write request needs; pooled per core.
#[derive(Default)]
pub struct WriteBuffers {
    body: Vec<u8>,
    decompressed: Vec<u8>,
    req: WriteRequestRef,
    v2: V2Decoder,
    scratch: IngestScratch,
    cluster: crate::cluster::ClusterScratch,
}

/// Buffers larger than this are not kept in the pool after a request (one huge request must
/// not pin its memory forever).
const MAX_POOLED_CAPACITY: usize = 16 << 20;

/// Largest too-large body still read to its end before the 413 goes out.
const DRAIN_BEFORE_REJECT: usize = 1 << 20;

/// A rejected request: status, metric reason, message.
struct Reject(StatusCode, &'static str, String);

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

pub async fn handle(st: &CoreState, req: Request<Incoming>) -> Response<Body> {
    let mut bufs = st.pool.borrow_mut().pop().unwrap_or_default();
    let mut written = Written::default();
    let mut resp = match receive(st, req, &mut bufs, &mut written).await {
        Ok(resp) => resp,
        Err(Reject(status, reason, msg)) => {
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
    recycle(st, bufs);
    resp
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
async fn drain_small(body: Incoming, content_length: Option<usize>) {
    if content_length.is_some_and(|l| l <= DRAIN_BEFORE_REJECT) {
        let _ = drain_body(body).await;
    }
}

async fn receive(
    st: &CoreState,
    req: Request<Incoming>,
    bufs: &mut WriteBuffers,
    written: &mut Written,
) -> Result<Response<Body>, Reject> {
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
            drain_small(body, content_length).await;
            return Err(rej);
        }
    };
    if let Some(len) = content_length {
        if len > cfg.max_request_bytes {
            drain_small(body, content_length).await;
            return Err(too_large(len, cfg.max_request_bytes));
        }
    }
    let mut permit = match cfg.budget.try_reserve(content_length.unwrap_or(0) as u64) {
        Ok(p) => p,
        Err(msg) => {
            drain_small(body, content_length).await;
            return Err(over_budget(msg));
        }
    };
    read_body(body, &mut bufs.body, cfg.max_request_bytes).await?;
    permit
        .grow_to(bufs.body.len() as u64)
        .map_err(over_budget)?;
    // The payload, the decoded series and their copies to other cores: about three times
    // the decompressed size.
    let expanded = snap::raw::decompress_len(&bufs.body).unwrap_or(0) as u64;
    permit
        .grow_to(bufs.body.len() as u64 + 3 * expanded.min(cfg.max_decompressed_bytes as u64))
        .map_err(over_budget)?;
    let limited = |(status, reason, msg)| Reject(status, reason, msg);
    crate::limits::check_request(st, &tenant, bufs.body.len(), 0, 0).map_err(limited)?;

    // A single node recognises the label bytes its core has seen before; a cluster member
    // needs every series' key for its peers anyway.
    let known = cfg.cluster.is_none().then_some(&st.ctx.shard.known);
    let n = decode(bufs, proto, cfg.max_decompressed_bytes, known, &tenant)?;
    let payload = &bufs.decompressed[..n];
    st.ctx
        .shard
        .metrics
        .count_received(bufs.req.series.len() as u64, bufs.req.samples.len() as u64);

    crate::limits::check_request(
        st,
        &tenant,
        bufs.body.len(),
        bufs.req.series.len(),
        bufs.req.samples.len(),
    )
    .map_err(limited)?;

    if let Some(cluster) = &cfg.cluster {
        let (status, reason, msg) = crate::cluster::write(
            st,
            cluster,
            crate::cluster::Request {
                tenant: &tenant,
                snappy: &bufs.body,
                req: &bufs.req,
                payload,
                v1_body: proto == Proto::V1,
            },
            &mut bufs.scratch,
            &mut bufs.cluster,
        )
        .await;
        // A 409 in the cluster tells how many samples a replica refused, not which; what the
        // quorum stored is not known exactly, so only a full success reports a count.
        if status.is_success() {
            written.samples = bufs.req.samples.len() as u64;
        }
        return if status.is_success() {
            Ok(empty(status))
        } else {
            Err(Reject(status, reason, msg))
        };
    }
    if let Err(msg) = crate::limits::check_head_series(st, &tenant) {
        return Err(Reject(StatusCode::TOO_MANY_REQUESTS, "limit", msg));
    }
    let out = ingest(&st.ctx, &tenant, &bufs.req, payload, &mut bufs.scratch).await;
    if let Some(f) = out.failure {
        // Part may be in the WAL, but nothing is acknowledged: the sender retries it all.
        return Err(Reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            format!("write not persisted, retry: {f}"),
        ));
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
                bufs.req.samples.len()
            ),
        ));
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// Decompresses and decodes `bufs.body` (of protocol `proto`) into `bufs.req`, recognising
/// the series of `tenant` that `known` remembers (remote write 1.0 only); returns the
/// payload length.
fn decode(
    bufs: &mut WriteBuffers,
    proto: Proto,
    max_decompressed: usize,
    known: Option<&RefCell<KnownSeries>>,
    tenant: &str,
) -> Result<usize, Reject> {
    let len = snap::raw::decompress_len(&bufs.body).map_err(|e| bad_snappy(&e))?;
    if len > max_decompressed {
        return Err(Reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "decompressed request of {len} bytes exceeds the limit of {max_decompressed} bytes"
            ),
        ));
    }
    // Grow only: a buffer that already has the length is not re-zeroed per request.
    if bufs.decompressed.len() < len {
        bufs.decompressed.resize(len, 0);
    }
    let n = snap::raw::Decoder::new()
        .decompress(&bufs.body, &mut bufs.decompressed[..len])
        .map_err(|e| bad_snappy(&e))?;
    let payload = &bufs.decompressed[..n];
    let res = match proto {
        Proto::V1 => match known {
            Some(known) => {
                let known = known.borrow();
                let seed = known.tenant_seed(tenant.as_bytes());
                bufs.req.decode_known(payload, &known, seed)
            }
            None => bufs.req.decode(payload),
        },
        // Exemplars and histograms are counted by the decoder, but nothing uses the counts:
        // exemplars are not stored, and histograms fail the request.
        Proto::V2 => bufs.v2.decode(payload, &mut bufs.req).map(|_| ()),
    };
    res.map_err(|e| {
        let reason = match e {
            sluice_core::DecodeError::Protobuf(_) => "bad_protobuf",
            sluice_core::DecodeError::InvalidSeries { .. } => "invalid_labels",
            sluice_core::DecodeError::SymbolRef(_) => "bad_symbol_ref",
            _ => "unsupported",
        };
        Reject(StatusCode::BAD_REQUEST, reason, e.to_string())
    })?;
    Ok(n)
}

/// Stores a whole remote-write 1.0 body that a peer forwarded as a replica (no forwarding, no
/// quorum: this node's share only; peers forward only 1.0 bodies, see `cluster::Request`).
/// `Err` carries the status class and message.
pub(crate) async fn store_replica(
    st: &CoreState,
    tenant: &str,
    snappy_body: &[u8],
) -> Result<sluice_shards::shard::ApplyOutcome, (StatusCode, String)> {
    let mut bufs = st.pool.borrow_mut().pop().unwrap_or_default();
    bufs.body.clear();
    bufs.body.extend_from_slice(snappy_body);
    let known = Some(&st.ctx.shard.known);
    let result = match decode(
        &mut bufs,
        Proto::V1,
        st.cfg.max_decompressed_bytes,
        known,
        tenant,
    ) {
        Err(Reject(status, _, msg)) => Err((status, msg)),
        Ok(n) => {
            let WriteBuffers {
                decompressed,
                req,
                scratch,
                ..
            } = &mut bufs;
            Ok(ingest(&st.ctx, tenant, req, &decompressed[..n], scratch).await)
        }
    };
    recycle(st, bufs);
    result
}

fn recycle(st: &CoreState, bufs: WriteBuffers) {
    if bufs.body.capacity() <= MAX_POOLED_CAPACITY
        && bufs.decompressed.capacity() <= MAX_POOLED_CAPACITY
    {
        st.pool.borrow_mut().push(bufs);
    }
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

async fn read_body(mut body: Incoming, out: &mut Vec<u8>, limit: usize) -> Result<(), Reject> {
    out.clear();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Reject(
                StatusCode::BAD_REQUEST,
                "read",
                format!("reading request body: {e}"),
            )
        })?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > limit {
                return Err(too_large(out.len() + data.len(), limit));
            }
            out.extend_from_slice(data);
        }
    }
    Ok(())
}

/// Reads a body to its end without keeping it.
async fn drain_body(mut body: Incoming) -> Result<(), hyper::Error> {
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(())
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
