//! Storing a replica: a whole remote-write 1.0 body a peer forwarded, this node's share only
//! (no forwarding, no quorum). Used by the replication server.
//!
//! Owns nothing but the order of its steps (pool, reserve, decode, route, ingest). Must not
//! answer the peer: it returns the outcome, or a [`Reject`].

use sluice_shards::{ingest, ApplyOutcome};

use super::buffers::WriteBuffers;
use super::decode::{decode, reserve_routing, Proto};
use super::reject::{over_budget, Reject};
use crate::budget::need::Route;
use crate::budget::Permit;
use crate::state::CoreState;

/// Stores a whole remote-write 1.0 body that a peer forwarded as a replica (no forwarding, no
/// quorum: this node's share only; peers forward only 1.0 bodies, see `cluster::Request`).
/// `permit` holds the frame; it grows as decoding and routing need. `Err` says why it was
/// refused.
pub async fn store_replica(
    st: &CoreState,
    tenant: &str,
    snappy_body: &[u8],
    permit: &mut Permit,
) -> Result<ApplyOutcome, Reject> {
    let (mut bufs, pooled) = st.pool.borrow_mut().take();
    if let Err(msg) = permit.grow_to(permit.bytes() + pooled as u64) {
        st.pool.borrow_mut().give(bufs);
        return Err(over_budget(msg));
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
        Err(r) => Err(r),
        Ok(n) => Ok(ingest(&st.ctx, tenant, &dec.req, &dec.decompressed[..n], scratch).await),
    };
    st.pool.borrow_mut().give(bufs);
    result
}
