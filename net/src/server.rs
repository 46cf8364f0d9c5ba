//! One core's HTTP server: its own `SO_REUSEPORT` listener, keep-alive connections served by
//! hyper, routing, and graceful drain on shutdown.
//!
//! Owns connection handling and the per-core request buffer pool. Must not block the core:
//! every handler is async and cross-core work goes through the mesh.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::Preallocated;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use sluice_shards::Ctx;

use crate::body::Stalled;
use crate::io::{run_header_deadlines, HyperIo, HyperTimer};
use crate::listener::{accept_until, Listener};
use crate::response::{text, Body};
pub use crate::state::CoreState;
use crate::write::BufferPool;
use crate::NetConfig;

/// How long shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a write to a client may wait for the client to read.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Size of each connection's receive buffer.
const RX_BUFFER: usize = 64 * 1024;

/// Serves HTTP on this core until shutdown, then drains in-flight requests.
pub async fn serve(ctx: Ctx, cfg: Arc<NetConfig>) {
    let listener = match Listener::bind(cfg.listen) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %cfg.listen, core = ctx.core(), "cannot listen: {e}");
            std::process::exit(2);
        }
    };
    // Counted only now that the listener exists, so "every core serves" means it.
    ctx.global
        .ready_cores
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    if ctx.core() == 0 {
        tracing::info!(listen = %cfg.listen, cores = ctx.cores(), "serving");
    }
    let forward_timeout = cfg
        .cluster
        .as_ref()
        .map_or(Duration::from_secs(5), |c| c.forward_timeout);
    let pool = BufferPool::new(cfg.budget.inflight_limit(), ctx.cores());
    let st = Rc::new(CoreState {
        ctx,
        cfg,
        pool: RefCell::new(pool),
        peers: crate::rpc::client::Peers::new(forward_timeout),
        in_flight: Cell::new(0),
    });
    if st.cfg.header_read_timeout.is_some() {
        glommio::spawn_local(run_header_deadlines()).detach();
    }
    let rpc = st
        .cfg
        .rpc_listen
        .map(|addr| glommio::spawn_local(crate::replication::serve(st.clone(), addr)));
    accept_until(listener, st.ctx.global.wait_for_shutdown(), |stream| {
        let st = st.clone();
        glommio::spawn_local(async move { connection(st, stream).await }).detach();
    })
    .await;
    if let Some(rpc) = rpc {
        rpc.await;
    }
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while st.in_flight.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

async fn connection(st: Rc<CoreState>, stream: glommio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    // A client that stops reading an answer fails the write after this long, which ends the
    // connection and frees what its answer holds (a query slot, the result).
    let _ = stream.set_write_timeout(Some(WRITE_STALL_TIMEOUT));
    let io = HyperIo(stream.buffered_with(Preallocated::new(RX_BUFFER)));
    let header_timeout = st.cfg.header_read_timeout;
    let svc = service_fn(move |req| {
        let st = st.clone();
        async move {
            st.in_flight_add(1);
            // An error ends the connection without an answer (hyper writes none).
            let resp = route(&st, req).await;
            st.in_flight_add(-1);
            resp
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true).header_read_timeout(header_timeout);
    if header_timeout.is_some() {
        builder.timer(HyperTimer);
    }
    if let Err(e) = builder.serve_connection(io, svc).await {
        tracing::debug!("connection ended: {e}");
    }
}

async fn route(st: &CoreState, req: Request<Incoming>) -> Result<Response<Body>, Stalled> {
    let started = Instant::now();
    let path = req.uri().path();
    let (handler, resp) = match path {
        // The write path is not a read zone: a panic there aborts the process (see
        // `sluice_shards::panics`).
        "/api/v1/receive" | "/api/v1/write" => ("receive", crate::receive::handle(st, req).await?),
        _ => read_route(st, req).await?,
    };
    let latency = (handler == "receive").then(|| started.elapsed().as_micros() as u64);
    st.ctx
        .shard
        .metrics
        .count_request(handler, resp.status().as_u16(), latency);
    Ok(resp)
}

/// Every other endpoint only reads: a panic in one answers that request 500 (logged with the
/// request, counted in `sluice_http_panics_total`) and the process goes on.
async fn read_route(
    st: &CoreState,
    req: Request<Incoming>,
) -> Result<(&'static str, Response<Body>), Stalled> {
    let what = format!("{} {}", req.method(), req.uri());
    match sluice_shards::panics::CatchPanic::new(reads(st, req)).await {
        Ok(answer) => answer,
        Err(p) => {
            tracing::error!(request = %what, "panic while answering a read: {}", p.0);
            Ok((
                "panic",
                crate::response::json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    &p.to_string(),
                ),
            ))
        }
    }
}

async fn reads(
    st: &CoreState,
    req: Request<Incoming>,
) -> Result<(&'static str, Response<Body>), Stalled> {
    let path = req.uri().path();
    Ok(match path {
        "/-/healthy" => ("healthy", text(StatusCode::OK, "Sluice is Healthy.")),
        "/-/ready" => (
            "ready",
            if st.ctx.global.is_ready() && !st.ctx.global.shutting_down() {
                text(StatusCode::OK, "Sluice is Ready.")
            } else {
                let mut resp = text(StatusCode::SERVICE_UNAVAILABLE, "Sluice is not ready.");
                resp.headers_mut().insert(
                    hyper::header::RETRY_AFTER,
                    hyper::header::HeaderValue::from_static("1"),
                );
                resp
            },
        ),
        "/metrics" => ("metrics", metrics(st).await),
        p if p.starts_with("/api/v1/") => {
            let reader = crate::api::Reader {
                ctx: &st.ctx,
                cfg: &st.cfg,
            };
            ("api", crate::api::handle(&reader, req).await?)
        }
        _ => (
            "other",
            text(StatusCode::NOT_FOUND, format!("no handler for {path}")),
        ),
    })
}

async fn metrics(st: &CoreState) -> Response<Body> {
    let snaps: Vec<_> = st
        .ctx
        .read_all(|shard| Box::pin(async move { shard.snapshot() }))
        .await
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    let mut body = crate::metrics_text::render(&snaps);
    crate::metrics_text::render_blocks(&mut body, &st.ctx.global);
    crate::metrics_text::render_budget(&mut body, &st.cfg.budget);
    crate::metrics_text::render_reads(&mut body, &st.cfg.read);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(Body::full(body))
        .expect("static response parts are valid")
}
