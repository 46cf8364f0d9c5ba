//! Sluice's load-generation and benchmark support library.
//!
//! Owns producing realistic remote-write 1.0 payloads: [`prompb`] holds the wire messages and
//! their encoding (protobuf, optionally snappy as Prometheus sends it), [`gen`] decides what a
//! payload contains (label sets and values, reproducible from a seed). Integration tests,
//! the criterion benchmarks and the `remote_write_flood` load generator share it so they all
//! exercise the same data. Must not depend on Sluice internals beyond `sluice_core`'s public
//! decoder (used in tests only), so it can also drive a receiver over the network.

pub mod gen;
pub mod prompb;

pub use gen::SeriesSet;
pub use prompb::{encode, encode_snappy, WriteRequest};
