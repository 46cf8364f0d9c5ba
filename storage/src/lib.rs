//! Sluice storage: the byte formats and files a core persists.
//!
//! Owns the Prometheus XOR chunk encoding, the per-core write-ahead log and the TSDB block
//! writer and reader. Must not know about HTTP, routing, other cores or object storage
//! (shipping blocks is `sluice-objstore`, which reads what this crate seals): a caller hands
//! it bytes and series ids.

pub mod block;
pub(crate) mod encoding;
pub mod wal;
pub mod xor;
