//! The replication RPC between nodes: a compact binary protocol over TCP.
//!
//! `frame` is the wire format, `client` a core's outgoing connections (one per peer),
//! `server` a core's listener for replicas sent by other nodes.

pub mod client;
pub mod frame;
pub mod server;
