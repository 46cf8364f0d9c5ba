//! One core's shard: its tenants (head + WAL each, see [`crate::tenant`]), the core's
//! counters, the decoder's table of known series, and the write entry point that appends a
//! batch and waits until it is durable.
//!
//! Owns everything a core may touch without asking another core. Lives in an `Rc` on its
//! executor; must never be sent to or shared with another thread — other cores reach it only
//! through jobs on the mesh.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use sluice_core::KnownSeries;
use sluice_storage::wal::WalError;

use crate::batch::SeriesBatch;
use crate::config::ShardConfig;
use crate::metrics::ShardMetrics;
use crate::outcome::{ApplyFailure, ApplyOutcome};
use crate::tenant::{existing_tenants, ReplayDamage, Tenant};

/// One core's shard.
pub struct Shard {
    pub id: usize,
    pub cfg: Arc<ShardConfig>,
    tenants: RefCell<BTreeMap<String, Rc<Tenant>>>,
    pub metrics: ShardMetrics,
    /// Series ids of the batch being applied (reused).
    ids: RefCell<Vec<u32>>,
    /// Where the batch being applied builds a series' key (reused).
    key_scratch: RefCell<Vec<u8>>,
    /// The label bytes this core has decoded before, of every tenant (see
    /// [`KnownSeries`]): the decoder and the ingest path of this core share it.
    pub known: RefCell<KnownSeries>,
    /// What WAL replay found, over every tenant opened since start.
    replay_damage: Cell<ReplayDamage>,
    /// Per tenant, the end of its newest persisted block at start: replay drops older samples.
    min_valid: BTreeMap<String, i64>,
}

impl Shard {
    /// Opens core `id`: replays its WAL directory of every tenant found in the data dir.
    /// The layout must already match the core count (`wal::prepare_layout`). `min_valid`
    /// holds, per tenant, the end of its newest persisted block.
    pub fn open(
        id: usize,
        cfg: Arc<ShardConfig>,
        min_valid: BTreeMap<String, i64>,
    ) -> Result<Shard, WalError> {
        let shard = Shard {
            id,
            cfg,
            tenants: RefCell::new(BTreeMap::new()),
            metrics: ShardMetrics::new(),
            ids: RefCell::new(Vec::new()),
            key_scratch: RefCell::new(Vec::new()),
            known: RefCell::new(KnownSeries::new()),
            replay_damage: Cell::new(ReplayDamage::default()),
            min_valid,
        };
        for name in existing_tenants(&shard.cfg.data_dir)? {
            shard.open_tenant(&name)?;
        }
        Ok(shard)
    }

    /// Tenants on this core.
    pub fn tenants(&self) -> Vec<Rc<Tenant>> {
        self.tenants.borrow().values().cloned().collect()
    }

    /// The tenant's state, created (directory, WAL) on first write.
    pub fn tenant(&self, name: &str) -> Result<Rc<Tenant>, WalError> {
        if let Some(t) = self.tenants.borrow().get(name) {
            return Ok(t.clone());
        }
        self.open_tenant(name)
    }

    fn open_tenant(&self, name: &str) -> Result<Rc<Tenant>, WalError> {
        let min_valid = self.min_valid.get(name).copied().unwrap_or(i64::MIN);
        let (t, found) = Tenant::open(&self.cfg, self.id, name, min_valid)?;
        let mut damage = self.replay_damage.get();
        damage.corrupt_records += found.corrupt_records;
        damage.regions += found.regions;
        damage.unknown_series_samples += found.unknown_series_samples;
        self.replay_damage.set(damage);
        let t = Rc::new(t);
        self.tenants
            .borrow_mut()
            .insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// What WAL replay found damaged or dropped, over every tenant opened since start.
    pub fn replay_damage(&self) -> ReplayDamage {
        self.replay_damage.get()
    }

    /// Appends a batch this core owns and waits until it is durable per the fsync policy.
    pub async fn ingest<B: SeriesBatch>(&self, tenant: &str, batch: &B) -> ApplyOutcome {
        let t = match self.tenant(tenant) {
            Ok(t) => t,
            Err(e) => return ApplyOutcome::failed(ApplyFailure::Storage(e.to_string())),
        };
        // One clock read per batch, not per sample.
        let future_limit = self
            .cfg
            .too_far_in_future_ms
            .map(|w| now_ms().saturating_add(w));
        let mut out = t.apply(
            batch,
            &mut self.ids.borrow_mut(),
            &mut self.key_scratch.borrow_mut(),
            future_limit,
        );
        // Commit everything appended so far: a retried request that only repeats samples
        // still waits for the first attempt's records to be durable.
        if let Err(e) = t.wal.commit(t.wal.appended()).await {
            out.failure = Some(ApplyFailure::Storage(e.to_string()));
        }
        self.metrics.count_outcome(&out);
        out
    }

    /// This core's numbers for `/metrics`.
    pub fn snapshot(&self) -> crate::metrics::MetricsSnapshot {
        let mut s = self.metrics.snapshot();
        s.core = self.id;
        let damage = self.replay_damage.get();
        s.wal_replay_corrupt_records = damage.corrupt_records;
        s.wal_corruptions = damage.regions;
        s.wal_replay_unknown_series_samples = damage.unknown_series_samples;
        for t in self.tenants() {
            let st = t.wal.stats();
            s.wal_bytes_written += st.bytes_written;
            s.wal_fsyncs += st.syncs;
            let _ = s.wal_fsync_latency.add(t.wal.sync_latency());
            let head = t.head.borrow();
            s.head_series += head.num_series() as u64;
            s.head_samples += head.num_samples();
            let (memory, spilled) = head.chunk_bytes();
            s.head_chunk_bytes_memory += memory as u64;
            s.head_chunk_bytes_spilled += spilled as u64;
            s.head_chunk_corrupt_reads += head.corrupt_chunk_reads();
        }
        s
    }

    /// Writes and syncs every tenant's WAL (interval timer, shutdown).
    pub async fn sync_all(&self) -> Result<(), WalError> {
        for t in self.tenants() {
            t.wal.sync().await?;
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
