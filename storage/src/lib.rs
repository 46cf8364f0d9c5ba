//! Sluice storage: the byte formats and files a core persists.
//!
//! Owns the Prometheus XOR chunk encoding, the per-core write-ahead log, the TSDB block
//! writer and the object-storage shipper. Must not know about HTTP, routing or other cores: a
//! caller hands it bytes and series ids.

pub mod block;
pub(crate) mod encoding;
pub mod objstore;
pub mod wal;
pub mod xor;
