//! The write path shared by the HTTP endpoint (`receive`) and the replication server
//! (`replication`): request buffers and their pool, decoding within the memory budget, and
//! storing a replica. What a sender sees is `crate::reject`'s.
//!
//! Must not parse HTTP headers (`receive` does) or RPC frames (`rpc` does).

mod buffers;
mod decode;
mod replica;

pub use buffers::{BufferPool, ClusterScratch, WriteBuffers};
pub(crate) use decode::{decode, negotiate, reserve_routing, Proto};
pub use replica::store_replica;
