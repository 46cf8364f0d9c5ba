//! Sluice storage: the byte formats and files a core persists.
//!
//! Owns the Prometheus XOR chunk encoding and the per-core write-ahead log. Must not know
//! about HTTP, routing or other cores: a caller hands it bytes and series ids.

pub mod block;
pub mod objstore;
pub mod wal;
pub mod xor;
