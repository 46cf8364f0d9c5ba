//! Storing a replica: a whole remote-write 1.0 body a peer forwarded, this node's share only
//! (no forwarding, no quorum). Used by the replication server.
//!
//! Owns nothing but the order of its steps (pool, reserve, decode, route, ingest). Must not
//! answer the peer: it returns the outcome, or a [`Reject`].

use std::cell::RefCell;

use sluice_shards::{ingest, ApplyOutcome, Ctx};

use super::buffers::{BufferPool, WriteBuffers};
use super::decode::{decode, reserve_routing, Proto};
use crate::budget::need::Route;
use crate::budget::Permit;
use crate::reject::{over_budget, Reject};

/// Stores a whole remote-write 1.0 body that a peer forwarded as a replica (no forwarding, no
/// quorum: this node's share only; peers forward only 1.0 bodies, see `cluster::Request`).
/// `permit` holds the frame; it grows as decoding and routing need; buffers come from `pool`
/// and payloads are at most `max_decompressed` bytes. `Err` says why it was refused.
pub async fn store_replica(
    ctx: &Ctx,
    pool: &RefCell<BufferPool>,
    max_decompressed: usize,
    tenant: &str,
    snappy_body: &[u8],
    permit: &mut Permit,
) -> Result<ApplyOutcome, Reject> {
    let (mut bufs, pooled) = pool.borrow_mut().take();
    if let Err(msg) = permit.grow_to(permit.bytes() + pooled as u64) {
        pool.borrow_mut().give(bufs);
        return Err(over_budget(msg));
    }
    let known = Some(&ctx.shard.known);
    let WriteBuffers { dec, scratch, .. } = &mut bufs;
    let route = Route {
        cores: ctx.cores(),
        ..Route::default()
    };
    let decoded = decode(
        snappy_body,
        dec,
        Proto::V1,
        max_decompressed,
        known,
        tenant,
        permit,
    )
    .and_then(|n| reserve_routing(permit, &dec.req, &scratch.keys, &route).map(|()| n));
    let result = match decoded {
        Err(r) => Err(r),
        Ok(n) => Ok(ingest(ctx, tenant, &dec.req, &dec.decompressed[..n], scratch).await),
    };
    pool.borrow_mut().give(bufs);
    result
}
