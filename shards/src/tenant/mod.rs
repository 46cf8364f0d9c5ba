//! A tenant on one core: its head and its WAL, and what is done to both together — opening
//! (replay, in [`replay`]), appending a batch (in [`append`]), and the on-disk rules of a
//! tenant's directory (valid names, the CORES file), as Prometheus keeps `head_wal.go` and
//! `head_append.go` apart from `head.go`.
//!
//! Owns a tenant's head and WAL as one. Must not know about other cores or requests: the
//! shard hands it batches it owns.

mod append;
mod replay;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sluice_core::TenantHasher;
use sluice_storage::wal::{self, Wal, WalError};

use crate::config::ShardConfig;
use crate::head::Head;
use replay::HeadReplay;

/// A tenant's data on this core.
pub struct Tenant {
    pub name: String,
    pub head: RefCell<Head>,
    pub wal: Wal,
    /// Series this core persists in the block being cut (between plan and write).
    pub cut_plan: RefCell<Option<Vec<u32>>>,
    /// The tenant's active series over all cores; this core adds its own.
    pub active: Arc<std::sync::atomic::AtomicU64>,
    /// The tenant's series hash, to check an identity against its key.
    pub(crate) hasher: TenantHasher,
}

impl Tenant {
    /// Opens `name` on core `core`: records the core count (CORES), replays the core's WAL
    /// into a fresh head (`min_valid`: the end of the tenant's newest persisted block) and
    /// opens the WAL for appending. Returns what replay found damaged.
    pub fn open(
        cfg: &ShardConfig,
        core: usize,
        name: &str,
        min_valid: i64,
    ) -> Result<(Tenant, ReplayDamage), WalError> {
        let tenant_dir = cfg.data_dir.join(name);
        let dir = wal::core_dir(&tenant_dir, core);
        ensure_cores_file(&tenant_dir, cfg.cores, core)?;
        let mut head = Head::with_block_range(cfg.block_range_ms);
        head.set_min_valid(min_valid);
        // Full chunks leave the heap for an unnamed file next to the tenant's WAL (Prometheus'
        // `chunks_head`, minus the name: the WAL is what a restart replays). Without one the
        // head keeps them in memory, which only costs memory.
        match tempfile::tempfile_in(&tenant_dir) {
            Ok(file) => head.spill_chunks_to(file),
            Err(e) => tracing::warn!(
                tenant = name,
                error = %e,
                "cannot create the head chunk spill file; closed chunks stay in memory"
            ),
        }
        let mut replay = HeadReplay {
            hasher: TenantHasher::new(name.as_bytes()),
            head,
            min_valid,
            key: Vec::new(),
            pending: Vec::new(),
            unbound: 0,
        };
        let stats = wal::replay_dir(&dir, &mut replay, true)?;
        replay.flush();
        if replay.unbound > 0 {
            tracing::error!(
                tenant = name,
                core,
                samples = replay.unbound,
                "WAL replay handed on samples of series it never bound (a reader bug); dropped"
            );
        }
        // Ids the log still names (a sample whose series record was lost, a series collected
        // before a checkpoint) stay taken: a new series given one of them would inherit its
        // samples at the next replay.
        replay.head.reserve_ids(stats.next_series_id);
        // Series the log names but that hold no sample any more (collected by a cut before the
        // restart) must not come back: a later series with the same labels is the live one.
        let min_valid = replay.min_valid;
        replay.head.truncate(min_valid);
        if stats.records > 0 || stats.truncated_bytes > 0 {
            tracing::info!(
                tenant = name,
                core,
                segments = stats.segments,
                series = replay.head.num_series(),
                samples = stats.samples,
                corrupt_records = stats.corrupt_records,
                damaged_regions = stats.damaged_regions,
                unknown_series_samples = stats.unknown_series_samples,
                truncated_bytes = stats.truncated_bytes,
                "replayed WAL"
            );
        }
        let damage = ReplayDamage {
            corrupt_records: stats.corrupt_records,
            regions: stats.damaged_regions,
            unknown_series_samples: stats.unknown_series_samples,
        };
        let next_segment = stats.last_segment.or(stats.checkpoint).map_or(0, |s| s + 1);
        let wal = Wal::open(&dir, next_segment, cfg.fsync)?;
        wal.seed_segment_max_t(&stats.segment_max_t);
        let active = cfg.active_series.counter(name);
        active.fetch_add(replay.head.num_series() as u64, Ordering::Relaxed);
        let t = Tenant {
            name: name.to_string(),
            head: RefCell::new(replay.head),
            wal,
            cut_plan: RefCell::new(None),
            active,
            hasher: TenantHasher::new(name.as_bytes()),
        };
        Ok((t, damage))
    }
}

/// What WAL replay found damaged or dropped on one core (see [`wal::ReplayStats`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayDamage {
    /// Records skipped as unreadable or malformed.
    pub corrupt_records: u64,
    /// Damaged regions: stretches skipped, torn tails cut.
    pub regions: u64,
    /// Samples dropped because no series record before them named their id.
    pub unknown_series_samples: u64,
}

/// Tenants that have a WAL under the data dir.
pub fn existing_tenants(data_dir: &std::path::Path) -> Result<Vec<String>, WalError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(data_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(WalError::Io {
                op: "listing data directory",
                path: data_dir.to_path_buf(),
                source: e,
            })
        }
    };
    for e in entries.flatten() {
        let path = e.path();
        // A crash in the middle of a re-layout (`wal::prepare_layout`) can leave only
        // `wal.old` and `wal.migrating`: listing the tenant lets the next start finish or
        // undo the swap instead of starting it a fresh, empty log.
        let has_log = ["wal", "wal.old", "wal.migrating"]
            .iter()
            .any(|d| path.join(d).is_dir());
        if has_log {
            if let Some(name) = e.file_name().to_str() {
                if is_valid_tenant(name) {
                    out.push(name.to_string());
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Directory names under the data dir that are not tenants.
pub const RESERVED_TENANT_NAMES: [&str; 2] = ["bucket", "LOCK"];

/// Tenant names become directory names: only a conservative character set is allowed, and
/// not the names of the data dir's own entries (the embedded bucket, the lock file).
pub fn is_valid_tenant(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && !RESERVED_TENANT_NAMES.contains(&name)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A tenant first seen while running: record the layout its cores write.
fn ensure_cores_file(
    tenant_dir: &std::path::Path,
    cores: usize,
    me: usize,
) -> Result<(), WalError> {
    let wal_dir = tenant_dir.join("wal");
    let path = wal_dir.join(wal::CORES_FILE);
    if path.exists() {
        return Ok(());
    }
    let io = |op, p: &std::path::Path, e| WalError::Io {
        op,
        path: p.to_path_buf(),
        source: e,
    };
    std::fs::create_dir_all(&wal_dir).map_err(|e| io("creating WAL directory", &wal_dir, e))?;
    // Every core may get here at once; each writes its own temp file with the same content.
    let tmp = wal_dir.join(format!("CORES.tmp.{me}"));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating", &tmp, e))?;
        f.write_all(format!("{cores}\n").as_bytes())
            .map_err(|e| io("writing", &tmp, e))?;
        // Synced before the rename makes it the CORES file: after a power cut the file is
        // whole or absent, never empty.
        f.sync_all().map_err(|e| io("syncing", &tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| io("renaming", &tmp, e))?;
    wal::writer::sync_dir(&wal_dir)?;
    if let Some(parent) = tenant_dir.parent() {
        let _ = wal::writer::sync_dir(parent);
    }
    Ok(())
}
