//! The write path shared by the HTTP endpoint (`receive`) and the replication server
//! (`rpc::server`): request buffers and their pool, decoding within the memory budget,
//! storing a replica, and the rejection type with the one mapping of append outcomes to what
//! a sender sees.
//!
//! Must not parse HTTP headers (`receive` does) or RPC frames (`rpc` does).

mod buffers;
mod decode;
mod reject;
mod replica;

pub use buffers::{BufferPool, WriteBuffers};
pub(crate) use decode::{decode, negotiate, reserve_routing, Proto};
pub(crate) use reject::{over_budget, too_large};
pub use reject::{Reject, Verdict};
pub use replica::store_replica;
