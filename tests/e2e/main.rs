//! End-to-end tests: the real `sluice` binary, real HTTP, real files, real signals.
//!
//! One test binary (one link) with a shared harness; each test starts its own server(s) on
//! free loopback ports with their own data directories.

mod harness;

mod backpressure;
mod blocks;
mod cluster;
mod concurrency;
mod crash;
mod malformed;
mod memory;
mod promql;
mod read_limits;
mod remote_read;
mod rw2;
mod shipping;
mod write_read;
