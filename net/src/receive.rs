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

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use sluice_shards::{ingest, is_valid_tenant};

use crate::body::{self, BodyError};
use crate::budget::need::Route;
use crate::reject::{over_budget, too_large, Reject, Verdict};
use crate::response::{empty, text, Body};
use crate::state::CoreState;
use crate::write::{decode, negotiate, reserve_routing, Proto, WriteBuffers};

/// Largest too-large body still read to its end before the 413 goes out.
const DRAIN_BEFORE_REJECT: usize = 1 << 20;

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
        Err(Fail::Reject(Reject {
            status,
            reason,
            message: msg,
        })) => {
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
        return Err(Reject::new(
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
            return Err(Reject::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content_encoding",
                format!("unsupported Content-Encoding {enc:?}: remote write requires snappy"),
            ))
        }
        None => {
            return Err(Reject::new(
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
                Reject::new(
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
                return Err(Reject::new(
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
    let limited = |(status, reason, msg): (StatusCode, &'static str, String)| {
        Reject::new(status, reason, msg)
    };
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
            Err(Reject::new(status, reason, msg).into())
        };
    }
    if let Err(msg) = crate::limits::check_head_series(st, &tenant) {
        return Err(Reject::new(StatusCode::TOO_MANY_REQUESTS, "limit", msg).into());
    }
    let out = ingest(&st.ctx, &tenant, req, payload, scratch).await;
    let verdict = Verdict::of(&out);
    if !matches!(verdict, Verdict::NotDurable(_)) {
        // Repeats (the same sample sent again) are stored: they are already there.
        written.samples = out.appended + out.repeats;
    }
    if let Some(reject) = verdict.reject(req.samples.len()) {
        return Err(reject.into());
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
        BodyError::Read(msg) => Reject::new(
            StatusCode::BAD_REQUEST,
            "read",
            format!("reading request body: {msg}"),
        )
        .into(),
    }
}
