//! One core's network state, shared by its HTTP connections and its replication server: the
//! shard context, the settings, the request buffer pool, the outgoing replication
//! connections and the count of requests being answered.
//!
//! Owns nothing but these handles. Must not be shared with another core (`Rc`, `Cell`).

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use sluice_shards::Ctx;

use crate::write::BufferPool;
use crate::NetConfig;

/// Per-core server state shared by this core's connections.
pub struct CoreState {
    pub ctx: Ctx,
    pub cfg: Arc<NetConfig>,
    pub pool: RefCell<BufferPool>,
    /// Outgoing replication connections of this core.
    pub peers: crate::rpc::client::Peers,
    pub(crate) in_flight: Cell<usize>,
}

impl CoreState {
    /// Counts requests being answered (HTTP or replication), for the drain on shutdown.
    pub(crate) fn in_flight_add(&self, d: isize) {
        self.in_flight
            .set(self.in_flight.get().saturating_add_signed(d));
    }
}
