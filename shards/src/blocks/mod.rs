//! The node's persisted local blocks, per tenant (`<data-dir>/<tenant>/blocks/<ULID>/`):
//! shipping them to object storage ([`shipping`]) and (here) the list of them opened for
//! queries. Cutting them from the heads is `crate::cut`'s: it coordinates the cores, which
//! this module must not know about.
//!
//! Owns the list of readable blocks: loaded at start (after removing blocks a crash left
//! unfinished), added to when a cut seals one, and reconciled with the directory so blocks
//! that shipper retention deleted drop out. Not on the ingest path (queries and cuts only),
//! which is why a lock is fine here. Must not write or delete blocks.

pub mod shipping;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sluice_storage::block::meta::BlockMeta;
use sluice_storage::block::reader::BlockReader;
use sluice_storage::block::{remove_unfinished, TMP_SUFFIX};

/// Where a tenant's blocks live.
pub fn blocks_dir(data_dir: &Path, tenant: &str) -> PathBuf {
    data_dir.join(tenant).join("blocks")
}

/// Every tenant's readable local blocks, oldest first.
#[derive(Default)]
pub struct LocalBlocks {
    data_dir: PathBuf,
    by_tenant: RwLock<BTreeMap<String, Vec<Arc<BlockReader>>>>,
}

impl LocalBlocks {
    /// Opens the blocks of every tenant under `data_dir`, removing unfinished ones first. A
    /// block that cannot be read is skipped with an error in the log (it stays on disk for
    /// inspection; the shipper will not ship it without a readable `meta.json` either).
    pub fn open(data_dir: &Path) -> Self {
        let blocks = LocalBlocks {
            data_dir: data_dir.to_path_buf(),
            by_tenant: RwLock::new(BTreeMap::new()),
        };
        for tenant in tenant_dirs(data_dir) {
            let dir = blocks_dir(data_dir, &tenant);
            match remove_unfinished(&dir) {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    tenant,
                    removed = n,
                    "removed blocks a crash left unfinished (their data is still in the WAL)"
                ),
                Err(e) => tracing::error!(tenant, "removing unfinished blocks: {e}"),
            }
        }
        blocks.refresh();
        blocks
    }

    /// Blocks of `tenant`, oldest first.
    pub fn for_tenant(&self, tenant: &str) -> Vec<Arc<BlockReader>> {
        self.read().get(tenant).cloned().unwrap_or_default()
    }

    /// Tenants that have blocks.
    pub fn tenants(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// End (exclusive) of each tenant's newest sealed block on disk, readable or not: the
    /// head refuses older samples, and replay must not resurrect them into a second block.
    pub fn max_times(&self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for tenant in tenant_dirs(&self.data_dir) {
            let newest = sealed_blocks(&blocks_dir(&self.data_dir, &tenant))
                .iter()
                .filter_map(|dir| {
                    let bytes = std::fs::read(dir.join("meta.json")).ok()?;
                    Some(BlockMeta::from_json(&bytes).ok()?.max_time)
                })
                .max();
            if let Some(t) = newest {
                out.insert(tenant, t);
            }
        }
        out
    }

    /// Adds a block that was just sealed.
    pub fn add(&self, tenant: &str, block: BlockReader) {
        let mut w = self.write();
        let list = w.entry(tenant.to_string()).or_default();
        list.push(Arc::new(block));
        list.sort_by_key(|b| (b.meta().min_time, b.meta().ulid));
    }

    /// Brings the lists in line with the directories: drops blocks that were deleted and
    /// opens blocks that appeared.
    pub fn refresh(&self) {
        let mut found: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for tenant in tenant_dirs(&self.data_dir) {
            found.insert(
                tenant.clone(),
                sealed_blocks(&blocks_dir(&self.data_dir, &tenant)),
            );
        }
        let current = self.read().clone();
        let mut next: BTreeMap<String, Vec<Arc<BlockReader>>> = BTreeMap::new();
        for (tenant, dirs) in found {
            let have = current.get(&tenant);
            let mut list = Vec::new();
            for dir in dirs {
                if let Some(b) = have.and_then(|h| h.iter().find(|b| b.dir() == dir)) {
                    list.push(b.clone());
                    continue;
                }
                match BlockReader::open(&dir) {
                    Ok(b) => list.push(Arc::new(b)),
                    Err(e) => tracing::error!(block = %dir.display(), "cannot read block: {e}"),
                }
            }
            if !list.is_empty() {
                list.sort_by_key(|b| (b.meta().min_time, b.meta().ulid));
                next.insert(tenant, list);
            }
        }
        *self.write() = next;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Vec<Arc<BlockReader>>>> {
        // The map stays consistent even if a holder panicked: every update is one assignment.
        self.by_tenant.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Vec<Arc<BlockReader>>>> {
        self.by_tenant.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Tenant directories under the data dir (any directory with a valid tenant name).
fn tenant_dirs(data_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| crate::tenant::is_valid_tenant(n))
        .collect();
    out.sort();
    out
}

/// Sealed block directories in `dir`: named by a ULID, holding `meta.json`.
fn sealed_blocks(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            !name.ends_with(TMP_SUFFIX)
                && ulid::Ulid::from_string(&name).is_ok()
                && e.path().join("meta.json").is_file()
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}
