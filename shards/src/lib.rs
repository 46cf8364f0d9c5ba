//! Sluice shards: the thread-per-core runtime.
//!
//! Owns what each core owns — its tenants' heads and WALs — and the lock-free channels
//! through which cores hand each other work. Must not parse HTTP: `sluice-net` calls in with
//! decoded requests.

pub mod active;
pub mod allocator;
pub mod blocks;
pub mod head;
pub mod ingest;
pub mod matcher;
pub mod mesh;
pub mod metrics;
pub mod outcome;
pub mod panics;
pub mod read;
pub mod runtime;
pub mod shard;
pub mod tenant;
pub mod watchdog;

pub use blocks::cut::CutConfig;
pub use blocks::shipping::Shippers;
pub use blocks::LocalBlocks;
pub use ingest::{ingest, ingest_batch, IngestScratch, SeriesKeys};
pub use matcher::{MatchOp, Matcher};
pub use mesh::Unreachable;
pub use mesh::{Ctx, Global, ReadFailed};
pub use outcome::{ApplyFailure, ApplyOutcome, Rejected, Rejection};
pub use read::{
    label_names_all, label_values_all, select_all, QueryError, ReadLimits, Selection, SeriesData,
};
pub use runtime::{run, RuntimeConfig};
pub use shard::{Shard, ShardConfig};
pub use tenant::{is_valid_tenant, Tenant};
