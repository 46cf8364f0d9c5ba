//! `POST /api/v1/receive` (and `/api/v1/write`): remote write 1.0.
//!
//! Owns the request checks a sender sees (encoding, size, tenant, snappy, protobuf, labels)
//! and the status-code contract: 204 stored; 400 malformed (nothing of it stored, so a retry
//! never double-writes); 409 some samples out of order or conflicting (the valid ones are
//! stored, as Thanos Receive does — a sender does not retry 4xx, so dropping the good samples
//! with the bad would lose data); 413 too large; 415 wrong encoding; 500 storage failure (the
//! sender retries; repeats are idempotent). Buffers come from a per-core pool, so a request
//! allocates nothing per sample. Must not touch the head or WAL itself.

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use sluice_core::WriteRequestRef;
use sluice_shards::{ingest, is_valid_tenant, IngestScratch};

use crate::response::{empty, text, Body};
use crate::server::CoreState;

/// Buffers one remote-write request needs; pooled per core.
#[derive(Default)]
pub struct WriteBuffers {
    body: Vec<u8>,
    decompressed: Vec<u8>,
    req: WriteRequestRef,
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

pub async fn handle(st: &CoreState, req: Request<Incoming>) -> Response<Body> {
    let mut bufs = st.pool.borrow_mut().pop().unwrap_or_default();
    let resp = match receive(st, req, &mut bufs).await {
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
    recycle(st, bufs);
    resp
}

async fn receive(
    st: &CoreState,
    req: Request<Incoming>,
    bufs: &mut WriteBuffers,
) -> Result<Response<Body>, Reject> {
    let cfg = &st.cfg;
    if req.method() != hyper::Method::POST {
        return Err(Reject(
            StatusCode::METHOD_NOT_ALLOWED,
            "method",
            format!(
                "method {} not allowed: remote write needs POST",
                req.method()
            ),
        ));
    }
    let headers = req.headers();
    match headers
        .get("content-encoding")
        .map(|v| v.to_str().unwrap_or("?"))
    {
        Some(enc) if enc.eq_ignore_ascii_case("snappy") => {}
        Some(enc) => {
            return Err(Reject(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content_encoding",
                format!("unsupported Content-Encoding {enc:?}: remote write 1.0 requires snappy"),
            ))
        }
        None => {
            return Err(Reject(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content_encoding",
                "missing Content-Encoding: remote write 1.0 requires snappy".to_string(),
            ))
        }
    }
    if let Some(ct) = headers.get("content-type") {
        let ct = ct.to_str().unwrap_or("?");
        if !is_remote_write_v1(ct) {
            return Err(Reject(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content_type",
                format!(
                    "unsupported Content-Type {ct:?}: expected application/x-protobuf (remote write 1.0)"
                ),
            ));
        }
    }
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
    let content_length = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(len) = content_length {
        if len > cfg.max_request_bytes {
            // Read (and drop) a modest body before answering: a client still sending when
            // the connection closes sees a reset instead of the 413.
            if len <= DRAIN_BEFORE_REJECT {
                let _ = read_body(req.into_body(), &mut bufs.body, DRAIN_BEFORE_REJECT).await;
            }
            return Err(too_large(len, cfg.max_request_bytes));
        }
    }
    let mut permit = match cfg.budget.try_reserve(content_length.unwrap_or(0) as u64) {
        Ok(p) => p,
        Err(msg) => {
            if content_length.is_some_and(|l| l <= DRAIN_BEFORE_REJECT) {
                let _ = drain_body(req.into_body()).await;
            }
            return Err(over_budget(msg));
        }
    };
    read_body(req.into_body(), &mut bufs.body, cfg.max_request_bytes).await?;
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

    let n = decode(bufs, cfg.max_decompressed_bytes)?;
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
            },
            &mut bufs.scratch,
            &mut bufs.cluster,
        )
        .await;
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
        return Err(Reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            format!("write not persisted, retry: {f}"),
        ));
    }
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

/// Decompresses and decodes `bufs.body` into `bufs.req`; returns the payload length.
fn decode(bufs: &mut WriteBuffers, max_decompressed: usize) -> Result<usize, Reject> {
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
    bufs.req.decode(&bufs.decompressed[..n]).map_err(|e| {
        let reason = match e {
            sluice_core::DecodeError::Protobuf(_) => "bad_protobuf",
            sluice_core::DecodeError::InvalidSeries { .. } => "invalid_labels",
            _ => "unsupported",
        };
        Reject(StatusCode::BAD_REQUEST, reason, e.to_string())
    })?;
    Ok(n)
}

/// Stores a whole remote-write body that a peer forwarded as a replica (no forwarding, no
/// quorum: this node's share only). `Err` carries the status class and message.
pub(crate) async fn store_replica(
    st: &CoreState,
    tenant: &str,
    snappy_body: &[u8],
) -> Result<sluice_shards::shard::ApplyOutcome, (StatusCode, String)> {
    let mut bufs = st.pool.borrow_mut().pop().unwrap_or_default();
    bufs.body.clear();
    bufs.body.extend_from_slice(snappy_body);
    let result = match decode(&mut bufs, st.cfg.max_decompressed_bytes) {
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

/// `application/x-protobuf`, optionally with `proto=prometheus.WriteRequest`.
fn is_remote_write_v1(ct: &str) -> bool {
    let mut parts = ct.split(';').map(str::trim);
    let media = parts.next().unwrap_or("");
    if !media.eq_ignore_ascii_case("application/x-protobuf") {
        return false;
    }
    parts.all(|p| match p.split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("proto") => {
            v.trim() == "prometheus.WriteRequest"
        }
        _ => true,
    })
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
        assert!(is_remote_write_v1("application/x-protobuf"));
        assert!(is_remote_write_v1(
            "application/x-protobuf; proto=prometheus.WriteRequest"
        ));
        assert!(!is_remote_write_v1(
            "application/x-protobuf;proto=io.prometheus.write.v2.Request"
        ));
        assert!(!is_remote_write_v1("application/json"));
    }
}
