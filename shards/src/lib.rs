//! Sluice shards: the thread-per-core runtime — every core owns a share of the series, their
//! heads and WALs, and works on them alone.
//!
//! The main types, in the order a sample meets them:
//! - [`run`] starts one pinned glommio executor per core ([`RuntimeConfig`]); each gets a
//!   [`Ctx`]: its [`Shard`], its end of the mesh (cross-core calls, `Ctx::on_core`) and the
//!   [`Global`] state every core reads.
//! - [`ingest`] routes a decoded request's series to their owning cores ([`batch`] is how a
//!   share travels) and returns the merged [`ApplyOutcome`] once every part is durable.
//! - A [`Shard`] holds its cores' [`Tenant`]s; a tenant owns a [`Head`] (series, XOR chunks,
//!   postings) and a WAL, and appends a batch to both.
//! - Reads: [`select_all`], [`label_names_all`], [`label_values_all`] over every core's
//!   heads and the [`LocalBlocks`], within [`ReadLimits`]; a panic in a read is caught
//!   ([`panics`]).
//! - Persistence: core 0's cutter turns old head ranges into blocks ([`CutConfig`]) and
//!   [`Shippers`] upload them.
//!
//! Must not parse HTTP or RPC frames: `sluice-net` calls in with decoded requests. See
//! `docs/ARCHITECTURE.md` for the whole path.

mod active;
pub mod allocator;
pub mod batch;
mod blocks;
mod config;
mod cut;
mod head;
mod ingest;
mod mesh;
mod metrics;
mod outcome;
pub mod panics;
mod read;
mod runtime;
mod shard;
mod tenant;
mod watchdog;

pub use blocks::shipping::Shippers;
pub use blocks::LocalBlocks;
pub use config::ShardConfig;
pub use cut::CutConfig;
pub use head::{Head, DEFAULT_BLOCK_RANGE_MS};
pub use ingest::{ingest, ingest_batch, IngestScratch, SeriesKeys};
pub use mesh::Unreachable;
pub use mesh::{Ctx, Global, ReadFailed};
pub use metrics::MetricsSnapshot;
pub use outcome::{ApplyFailure, ApplyOutcome, Rejected, Rejection};
pub use read::{
    label_names_all, label_values_all, select_all, QueryError, ReadLimits, Selection, SeriesData,
};
pub use runtime::{run, RuntimeConfig};
pub use shard::Shard;
pub use tenant::{is_valid_tenant, Tenant};
