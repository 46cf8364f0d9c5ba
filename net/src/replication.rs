//! One core's replication listener: accepts connections from peer nodes (`--rpc-listen`,
//! `SO_REUSEPORT` like the HTTP listener), reads write frames, stores each on this node's
//! cores and answers with a reply frame carrying the same id.
//!
//! Owns the server side of the protocol: frames on one connection are handled concurrently
//! (a slow WAL sync does not hold up the next frame) and replies go out in completion order.
//! A corrupt frame ends the connection (the framing can no longer be trusted); the sender's
//! pending calls then fail and it reconnects. Never forwards: a frame is a replica.
//!
//! **Memory**: a frame's length is reserved in the memory budget (see `budget`) before its
//! body is allocated, and the reservation grows with what handling it needs and is held until
//! it is answered. A frame over the budget is read in small pieces and dropped, then answered
//! `Unavailable` with its id, like a frame refused later: reading it costs the bandwidth the
//! peer already spent and nothing more, the connection (with the other frames in flight on it)
//! carries on, and the peer's quorum decides. Ending the connection instead would fail every
//! call pending on it and mark the peer down for its reconnection backoff. A peer that stalls
//! mid-frame for `--http.body-read-timeout` loses the connection.

use std::net::SocketAddr;
use std::rc::Rc;

use futures::channel::mpsc;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::StreamExt;
use glommio::net::TcpStream;
use hyper::StatusCode;
use sluice_shards::{ingest_batch, is_valid_tenant};

use sluice_shards::ApplyOutcome;

use crate::budget::need::{self, Route, Shape};
use crate::budget::Permit;
use crate::listener::{accept_until, Listener};
use crate::reject::Verdict;
use crate::rpc::frame::{
    check_body, decode_forward, parse_header, request_kind, write_id, FrameError, Kind, Reply,
    Status, WriteBatch, WriteHead, HEADER_LEN,
};
use crate::state::CoreState;

/// Bytes of a request body that carry its kind and id.
const ID_BYTES: usize = 9;

/// Serves replication on this core until shutdown.
pub async fn serve(st: Rc<CoreState>, listen: SocketAddr) {
    let listener = match Listener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%listen, core = st.ctx.core(), "cannot listen for replication: {e}");
            std::process::exit(2);
        }
    };
    if st.ctx.core() == 0 {
        tracing::info!(%listen, "serving replication RPC");
    }
    accept_until(listener, st.ctx.global.wait_for_shutdown(), |stream| {
        let st = st.clone();
        glommio::spawn_local(async move { connection(st, stream).await }).detach();
    })
    .await;
}

async fn connection(st: Rc<CoreState>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (mut rd, mut wr) = stream.split();
    let (tx, mut rx) = mpsc::unbounded::<Vec<u8>>();
    let writer = glommio::spawn_local(async move {
        let mut out = Vec::new();
        while let Some(first) = rx.next().await {
            out.clear();
            out.extend_from_slice(&first);
            while let Ok(more) = rx.try_recv() {
                out.extend_from_slice(&more);
            }
            if wr.write_all(&out).await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
    });
    let max = st.cfg.max_rpc_frame_bytes;
    let stall = st.cfg.body_read_timeout;
    let mut header = [0u8; HEADER_LEN];
    let why = loop {
        // Between frames a connection may idle as long as it likes.
        if let Err(e) = rd.read_exact(&mut header).await {
            break format!("read: {e}");
        }
        let (len, crc) = match parse_header(&header, max) {
            Ok(h) => h,
            Err(e) => break e.to_string(),
        };
        let permit = match st.cfg.budget.try_reserve(len as u64) {
            Ok(p) => p,
            Err(msg) => match refuse_frame(&mut rd, len, crc, stall, msg).await {
                Ok(reply) => {
                    let mut out = Vec::with_capacity(64);
                    reply.encode(&mut out);
                    let _ = tx.unbounded_send(out);
                    continue;
                }
                Err(why) => break why,
            },
        };
        let mut body = vec![0u8; len];
        if let Err(e) = crate::body::read_exact(&mut rd, &mut body, stall).await {
            break e.to_string();
        }
        if let Err(e) = check_body(&body, crc) {
            break e.to_string();
        }
        let st = st.clone();
        let tx = tx.clone();
        glommio::spawn_local(async move {
            st.in_flight_add(1);
            let mut permit = permit;
            let reply = handle_request(&st, &body, &mut permit).await;
            // The frame and everything built from it go before the reservation does.
            drop(body);
            drop(permit);
            st.in_flight_add(-1);
            let mut out = Vec::with_capacity(64);
            reply.encode(&mut out);
            let _ = tx.unbounded_send(out);
        })
        .detach();
    };
    tracing::debug!(%peer, "replication connection ended: {why}");
    drop(tx);
    // The writer ends once the handlers still running have sent their replies.
    writer.await;
}

/// Reads and drops a frame of `len` bytes the budget refused, and makes the `Unavailable`
/// reply for it; `Err` (the connection must end) when it cannot be read or is corrupt.
async fn refuse_frame<R: futures::io::AsyncRead + Unpin>(
    rd: &mut R,
    len: usize,
    crc: u32,
    stall: Option<std::time::Duration>,
    msg: String,
) -> Result<Reply, String> {
    let mut head = [0u8; ID_BYTES];
    let got = crate::body::discard(rd, len, stall, &mut head)
        .await
        .map_err(|e| e.to_string())?;
    if got != crc {
        return Err(FrameError::Checksum.to_string());
    }
    Ok(Reply {
        id: write_id(&head[..len.min(ID_BYTES)]).unwrap_or(0),
        status: Status::Unavailable,
        stored: 0,
        rejected: 0,
        message: msg,
    })
}

/// Stores one request frame's series on this node; `permit` holds the frame.
async fn handle_request(st: &CoreState, body: &[u8], permit: &mut Permit) -> Reply {
    // A replica spends memory like a request does (decoded series, copies to other cores):
    // it counts against the same budget, and over it the sender's quorum decides.
    match request_kind(body) {
        Ok(Kind::Forward) => handle_forward(st, body, permit).await,
        _ => handle_write(st, body, permit).await,
    }
}

/// The reply to a frame the memory budget refused.
fn over_budget(id: u64, msg: String) -> Reply {
    Reply {
        id,
        status: Status::Unavailable,
        stored: 0,
        rejected: 0,
        message: msg,
    }
}

/// Stores a forwarded remote-write request (every series of it) on this node.
async fn handle_forward(st: &CoreState, body: &[u8], permit: &mut Permit) -> Reply {
    let (head, request) = match decode_forward(body, is_valid_tenant) {
        Ok(x) => x,
        Err(e) => return bad_frame(body, &e),
    };
    if let Err(refused) = admit(st, &head) {
        return refused;
    }
    match crate::write::store_replica(
        &st.ctx,
        &st.pool,
        st.cfg.max_decompressed_bytes,
        head.tenant,
        request,
        permit,
    )
    .await
    {
        Err(r) if r.status == StatusCode::TOO_MANY_REQUESTS => over_budget(head.id, r.message),
        Err(r) => Reply {
            id: head.id,
            status: Status::BadRequest,
            stored: 0,
            rejected: 0,
            message: r.message,
        },
        Ok(out) => {
            st.ctx.shard.metrics.count_rpc_received(
                (body.len() + HEADER_LEN) as u64,
                out.appended + out.repeats + out.rejected,
            );
            outcome_reply(head.id, out)
        }
    }
}

/// Whether this node takes a replica now: not while shutting down, not for a tenant at its
/// head-series limit.
fn admit(st: &CoreState, head: &WriteHead<'_>) -> Result<(), Reply> {
    let refuse = |status, message| Reply {
        id: head.id,
        status,
        stored: 0,
        rejected: 0,
        message,
    };
    if st.ctx.global.shutting_down() {
        return Err(refuse(Status::Unavailable, "shutting down".into()));
    }
    crate::limits::check_head_series(st, head.tenant).map_err(|m| refuse(Status::Limited, m))
}

fn bad_frame(body: &[u8], e: &FrameError) -> Reply {
    Reply {
        id: write_id(body).unwrap_or(0),
        status: Status::BadRequest,
        stored: 0,
        rejected: 0,
        message: e.to_string(),
    }
}

/// The reply that reports an append's outcome.
fn outcome_reply(id: u64, out: ApplyOutcome) -> Reply {
    let stored = out.appended + out.repeats;
    let verdict = Verdict::of(&out);
    let (status, message) = match &verdict {
        Verdict::NotDurable(f) => (Status::Unavailable, f.to_string()),
        Verdict::SomeRefused { .. } => (Status::Conflict, verdict.first_refusal()),
        Verdict::Stored => (Status::Ok, String::new()),
    };
    Reply {
        id,
        status,
        stored,
        rejected: out.rejected,
        message,
    }
}

/// Stores one write frame's series on this node.
async fn handle_write(st: &CoreState, body: &[u8], permit: &mut Permit) -> Reply {
    let held = permit.bytes();
    if let Err(msg) = permit.grow_to(held + need::write_frame_index(body.len())) {
        return over_budget(write_id(body).unwrap_or(0), msg);
    }
    let mut batch = WriteBatch::default();
    let head = match batch.decode(body, is_valid_tenant) {
        Ok(h) => h,
        Err(e) => return bad_frame(body, &e),
    };
    // The index as it is, then the copies to other cores (keys and hashes came in the frame).
    let shape = Shape {
        series: batch.len(),
        samples: batch.num_samples(),
        keys: sluice_core::KeyBytes {
            parsed: batch.key_bytes(),
            known: 0,
        },
    };
    let route = Route {
        cores: st.ctx.cores(),
        ..Route::default()
    };
    let real = held + batch.capacity_bytes() as u64 + need::routing(&shape, &route);
    if let Err(msg) = permit.resize(real) {
        return over_budget(head.id, msg);
    }
    let samples = batch.num_samples() as u64;
    st.ctx
        .shard
        .metrics
        .count_rpc_received((body.len() + HEADER_LEN) as u64, samples);
    if let Err(refused) = admit(st, &head) {
        return refused;
    }
    let view = batch.view(body);
    let out = ingest_batch(
        &st.ctx,
        head.tenant,
        &view,
        None,
        &mut Vec::new(),
        &mut Vec::new(),
    )
    .await;
    outcome_reply(head.id, out)
}
