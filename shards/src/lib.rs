//! Sluice shards: the thread-per-core runtime.
//!
//! Owns what each core owns — its tenants' heads and WALs — and the lock-free channels
//! through which cores hand each other work. Must not parse HTTP: `sluice-net` calls in with
//! decoded requests.

pub mod active;
pub mod allocator;
pub mod batch;
pub mod blockquery;
pub mod blocks;
pub mod chunk_arena;
pub mod cut;
pub mod head;
pub mod ingest;
pub mod label_store;
pub mod mesh;
pub mod metrics;
pub mod panics;
pub mod query;
pub mod runtime;
pub mod series_index;
pub mod shard;
pub mod shipping;
pub mod symbols;
pub mod watchdog;

pub use blocks::LocalBlocks;
pub use cut::CutConfig;
pub use ingest::{ingest, ingest_batch, IngestScratch, SeriesKeys};
pub use mesh::Unreachable;
pub use query::{
    label_names_all, label_values_all, select_all, QueryError, ReadLimits, Selection, SeriesData,
};
pub use runtime::{run, Ctx, Global, ReadFailed, RuntimeConfig};
pub use shard::{is_valid_tenant, ApplyOutcome, Shard, ShardConfig};
pub use shipping::Shippers;
