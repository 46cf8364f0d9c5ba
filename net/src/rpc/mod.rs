//! The replication RPC between nodes: a compact binary protocol over TCP
//! (`docs/format/rpc.md`).
//!
//! `frame` is the wire format, `client` a core's outgoing connections (one per peer). The
//! listener that takes replicas is `crate::replication`: it stores what it receives, and this
//! module must not know how.

pub mod client;
pub mod frame;
