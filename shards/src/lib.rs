//! Sluice shards: the thread-per-core runtime.
//!
//! Owns what each core owns — its tenants' heads and WALs — and the lock-free channels
//! through which cores hand each other work. Must not parse HTTP: `sluice-net` calls in with
//! decoded requests.

mod active;
pub mod allocator;
mod blocks;
mod head;
mod ingest;
mod matcher;
mod mesh;
mod metrics;
mod outcome;
pub mod panics;
mod read;
mod runtime;
mod shard;
mod tenant;
mod watchdog;

pub use blocks::cut::CutConfig;
pub use blocks::shipping::Shippers;
pub use blocks::LocalBlocks;
pub use head::{Head, DEFAULT_BLOCK_RANGE_MS};
pub use ingest::batch;
pub use ingest::{ingest, ingest_batch, IngestScratch, SeriesKeys};
pub use matcher::{MatchOp, Matcher};
pub use mesh::Unreachable;
pub use mesh::{Ctx, Global, ReadFailed};
pub use metrics::MetricsSnapshot;
pub use outcome::{ApplyFailure, ApplyOutcome, Rejected, Rejection};
pub use read::{
    label_names_all, label_values_all, select_all, QueryError, ReadLimits, Selection, SeriesData,
};
pub use runtime::{run, RuntimeConfig};
pub use shard::{Shard, ShardConfig};
pub use tenant::{is_valid_tenant, Tenant};
