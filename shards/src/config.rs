//! The settings every core shares, read-only once the cores start.
//!
//! Owns nothing but the settings. Must not be changed while running: reloadable settings
//! (hashrings, limits) live elsewhere and are swapped whole.

use std::path::PathBuf;
use std::sync::Arc;

use sluice_storage::wal::FsyncPolicy;

/// Settings every core shares (read-only).
#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub data_dir: PathBuf,
    pub cores: usize,
    pub fsync: FsyncPolicy,
    /// Label that carries the tenant in query results (`tenant_id`).
    pub tenant_label: String,
    /// Block range in ms: head chunks are cut at its multiples.
    pub block_range_ms: i64,
    /// Samples newer than the wall clock plus this (ms) are refused; `None`: no limit.
    pub too_far_in_future_ms: Option<i64>,
    /// Labels added to every series in query results (`--label`), sorted by name.
    pub external_labels: Vec<(String, String)>,
    /// Active series per tenant over all cores (shared by the cores' configs).
    pub active_series: Arc<crate::active::ActiveSeries>,
}
