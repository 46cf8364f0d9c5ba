//! One core's state: its tenants (head + WAL each), counters, and the append path.
//!
//! Owns everything a core may touch without asking another core. Lives in an `Rc` on its
//! executor; must never be sent to or shared with another thread — other cores reach it only
//! through jobs on the mesh.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sluice_core::{check_hash, key_labels, put_series_key, Identity, KnownSeries, TenantHasher};
use sluice_storage::wal::{
    self, record, FsyncPolicy, RecordType, ReplayVisitor, SampleRecord, Wal, WalError,
};

use crate::batch::SeriesBatch;
use crate::head::{Appended, Head, Rejected};
use crate::metrics::ShardMetrics;
use crate::outcome::{ApplyFailure, ApplyOutcome, Rejection};

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
    hasher: TenantHasher,
}

/// How many series ahead of a head lookup its cache lines are prefetched.
const PREFETCH_AHEAD: usize = 16;

/// The id slot of a batch series that was not stored (see [`ApplyOutcome::misidentified`]).
const MISIDENTIFIED: u32 = u32::MAX;

/// The id slot of a batch series whose identity the head does not know (yet).
const NO_CANDIDATE: u32 = u32::MAX - 1;

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
    /// The layout must already match the core count ([`wal::prepare_layout`]). `min_valid`
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
        let tenant_dir = self.cfg.data_dir.join(name);
        let dir = wal::core_dir(&tenant_dir, self.id);
        ensure_cores_file(&tenant_dir, self.cfg.cores, self.id)?;
        let min_valid = self.min_valid.get(name).copied().unwrap_or(i64::MIN);
        let mut head = Head::with_block_range(self.cfg.block_range_ms);
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
                core = self.id,
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
                core = self.id,
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
        let mut damage = self.replay_damage.get();
        damage.corrupt_records += stats.corrupt_records;
        damage.regions += stats.damaged_regions;
        damage.unknown_series_samples += stats.unknown_series_samples;
        self.replay_damage.set(damage);
        let next_segment = stats.last_segment.or(stats.checkpoint).map_or(0, |s| s + 1);
        let wal = Wal::open(&dir, next_segment, self.cfg.fsync)?;
        wal.seed_segment_max_t(&stats.segment_max_t);
        let active = self.cfg.active_series.counter(name);
        active.fetch_add(replay.head.num_series() as u64, Ordering::Relaxed);
        let t = Rc::new(Tenant {
            name: name.to_string(),
            head: RefCell::new(replay.head),
            wal,
            cut_plan: RefCell::new(None),
            active,
            hasher: TenantHasher::new(name.as_bytes()),
        });
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
        let mut out = self.apply(&t, batch);
        // Commit everything appended so far: a retried request that only repeats samples
        // still waits for the first attempt's records to be durable.
        if let Err(e) = t.wal.commit(t.wal.appended()).await {
            out.failure = Some(ApplyFailure::Storage(e.to_string()));
        }
        self.metrics.count_outcome(&out);
        out
    }

    /// Synchronous part of [`ingest`](Self::ingest): head first, then the WAL tail.
    fn apply<B: SeriesBatch>(&self, t: &Tenant, batch: &B) -> ApplyOutcome {
        let mut out = ApplyOutcome::default();
        let mut head = t.head.borrow_mut();
        let mut ids = self.ids.borrow_mut();
        ids.clear();
        // Where a key is built for a series the batch holds none of (a known series).
        let mut scratch = self.key_scratch.borrow_mut();
        let scratch = &mut *scratch;
        // Pass 1: resolve series, logging the new ones in one record.
        t.wal.append(RecordType::Series, |buf| {
            let n = batch.len();
            // With 100k+ series every lookup misses the cache twice (index slot, then the
            // series): fetch the slots PREFETCH_AHEAD series ahead and, half-way there, the
            // series, so that the misses overlap instead of following one another.
            for i in 0..n.min(PREFETCH_AHEAD) {
                head.prefetch_slot(batch.hash(i));
            }
            for i in 0..n {
                if i + PREFETCH_AHEAD < n {
                    head.prefetch_slot(batch.hash(i + PREFETCH_AHEAD));
                }
                if i + PREFETCH_AHEAD / 2 < n {
                    head.prefetch_series(batch.hash(i + PREFETCH_AHEAD / 2));
                }
                ids.push(
                    head.candidate(batch.hash(i), batch.check(i))
                        .unwrap_or(NO_CANDIDATE),
                );
            }
            // Confirm each candidate by its labels; a mismatch (or no candidate) takes the
            // slow path: another series of the identity, a new series, or a wrong identity.
            for i in 0..n {
                let candidate = ids[i];
                if candidate != NO_CANDIDATE
                    && head.labels_match(candidate, batch.labels(i, scratch))
                {
                    continue;
                }
                let hash = batch.hash(i);
                let check = batch.check(i);
                // Another series of this identity, or none (the rare path).
                ids[i] = match head.find_exact(hash, check, batch.labels(i, scratch)) {
                    Some(id) => id,
                    None => {
                        let key = batch.key(i, scratch);
                        // The identity must be the key's own before a series is made of it:
                        // an identity from the decoder's table of known series whose
                        // fingerprint collided would name (and route) these labels as
                        // another series.
                        if (hash, check) != (t.hasher.hash_key(key), check_hash(key)) {
                            out.misidentified.push(Identity { hash, check });
                            MISIDENTIFIED
                        } else {
                            let id = head.create_checked(Identity { hash, check }, key);
                            record::put_series(buf, id, key_labels(key));
                            out.new_series += 1;
                            id
                        }
                    }
                };
            }
        });
        // Pass 2: append samples, logging the stored ones in one record.
        let mut newest = i64::MIN;
        // One clock read per batch, not per sample.
        let future_limit = self
            .cfg
            .too_far_in_future_ms
            .map(|w| now_ms().saturating_add(w));
        t.wal.append(RecordType::Samples, |buf| {
            let mut base: Option<i64> = None;
            // The series were read in pass 1, but with 100k+ series they and their open
            // chunks' buffers are out of cache again: fetch the series PREFETCH_AHEAD ahead
            // and, half-way there, the byte its chunk writes next.
            for i in 0..ids.len() {
                if let Some(ahead) = ids.get(i + PREFETCH_AHEAD) {
                    head.prefetch_append(*ahead);
                }
                if let Some(ahead) = ids.get(i + PREFETCH_AHEAD / 2) {
                    head.prefetch_chunk_write(*ahead);
                }
                let id = &ids[i];
                if *id == MISIDENTIFIED {
                    continue;
                }
                for s in batch.samples(i) {
                    let appended = match future_limit {
                        Some(max_t) if s.timestamp > max_t => {
                            Err(Rejected::TooFarInFuture { max_t })
                        }
                        _ => head.append(*id, s.timestamp, s.value),
                    };
                    match appended {
                        Ok(Appended::New) => {
                            let base_t = *base.get_or_insert_with(|| {
                                record::put_samples_base(buf, s.timestamp);
                                s.timestamp
                            });
                            record::put_sample(buf, base_t, *id, s.timestamp, s.value);
                            newest = newest.max(s.timestamp);
                            out.appended += 1;
                        }
                        Ok(Appended::Repeat) => out.repeats += 1,
                        Err(r) => {
                            if out.count_rejection() {
                                let labels = key_labels(batch.key(i, scratch));
                                out.rejections.push(Rejection::new(r, s.timestamp, labels));
                            }
                        }
                    }
                }
            }
        });
        if newest != i64::MIN {
            t.wal.note_max_t(newest);
        }
        if out.new_series > 0 {
            t.active.fetch_add(out.new_series, Ordering::Relaxed);
        }
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

/// Replays a WAL directory into a fresh head. The reader hands on only samples whose series
/// record came before them in the log, so buffering them for [`HeadReplay::flush`] cannot
/// attach any to a series bound later.
struct HeadReplay {
    hasher: TenantHasher,
    head: Head,
    /// Samples before this are in blocks.
    min_valid: i64,
    key: Vec<u8>,
    /// Samples not yet appended, applied in series order (see [`HeadReplay::flush`]).
    pending: Vec<SampleRecord>,
    /// Samples the reader handed on for an id the head has no live series for: never, unless
    /// the reader has a bug.
    unbound: u64,
}

/// Samples buffered during replay before they are applied (24 MiB).
const REPLAY_BATCH: usize = 1 << 20;

impl HeadReplay {
    /// Appends the buffered samples grouped by series. The log interleaves every series
    /// (one request holds thousands), so appending in log order touches a different chunk
    /// on every sample, a cache miss each; grouped, a series' samples share one. The sort
    /// is stable, so each series still gets its samples in log order.
    fn flush(&mut self) {
        self.pending.sort_by_key(|s| s.id);
        for s in self.pending.drain(..) {
            // The reader bound every id it hands on, and a bound series stays live until
            // replay ends; the check only keeps a reader bug from panicking here.
            if s.id < self.head.id_limit() && self.head.is_live(s.id) {
                // Repeats cannot be logged, so a rejection here means a log written by a
                // buggy or foreign writer; the head keeps what it has.
                let _ = self.head.replay_append(s.id, s.t, s.v);
            } else {
                self.unbound += 1;
            }
        }
    }
}

impl ReplayVisitor for HeadReplay {
    fn series(&mut self, id: u32, labels: &[(&str, &str)]) {
        self.key.clear();
        put_series_key(
            &mut self.key,
            labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        );
        let hash = self.hasher.hash_key(&self.key);
        self.head.create_with_id(id, hash, &self.key);
    }

    fn sample(&mut self, s: SampleRecord) {
        if s.t < self.min_valid {
            // Persisted in a block: its series may be gone from the log, and that is fine.
            return;
        }
        self.pending.push(s);
        if self.pending.len() == REPLAY_BATCH {
            self.flush();
        }
    }

    fn min_time(&mut self, t: i64) {
        self.min_valid = self.min_valid.max(t);
        self.head.set_min_valid(t);
    }

    fn persisted_before(&self) -> i64 {
        self.min_valid
    }
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
        if path.join("wal").is_dir() {
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
    std::fs::write(&tmp, format!("{cores}\n")).map_err(|e| io("writing", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io("renaming", &tmp, e))?;
    wal::writer::sync_dir(&wal_dir)?;
    if let Some(parent) = tenant_dir.parent() {
        let _ = wal::writer::sync_dir(parent);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_storage::wal::record::{begin_record, end_record, put_sample, put_samples_base};

    fn config(data_dir: &std::path::Path) -> Arc<ShardConfig> {
        Arc::new(ShardConfig {
            data_dir: data_dir.to_path_buf(),
            cores: 1,
            fsync: FsyncPolicy::Never,
            tenant_label: "tenant_id".to_string(),
            block_range_ms: crate::head::DEFAULT_BLOCK_RANGE_MS,
            too_far_in_future_ms: None,
            external_labels: Vec::new(),
            active_series: Arc::new(crate::active::ActiveSeries::default()),
        })
    }

    fn frame(buf: &mut Vec<u8>, ty: RecordType, fill: impl FnOnce(&mut Vec<u8>)) {
        let s = begin_record(buf, ty);
        fill(buf);
        end_record(buf, s);
    }

    fn samples(buf: &mut Vec<u8>, samples: &[(u32, i64)]) {
        frame(buf, RecordType::Samples, |b| {
            put_samples_base(b, 0);
            for (id, t) in samples {
                put_sample(b, 0, *id, *t, f64::from(*id));
            }
        });
    }

    /// A log whose series records for ids 3 and 7 were lost (3's id was handed out again by a
    /// build from before the id rules): the head keeps only samples logged after their own
    /// series record, counts the rest, and hands out new ids past every id the log names.
    #[test]
    fn replay_drops_orphaned_samples_and_reserves_their_ids() {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = wal::core_dir(&dir.path().join("t"), 0);
        std::fs::create_dir_all(&wal_dir).unwrap();
        let mut seg = Vec::new();
        frame(&mut seg, RecordType::Series, |b| {
            record::put_series(b, 0, [("__name__", "a")]);
            record::put_series(b, 1, [("__name__", "b")]);
        });
        samples(&mut seg, &[(0, 1_000), (1, 1_000), (3, 1_000), (7, 1_000)]);
        frame(&mut seg, RecordType::Series, |b| {
            record::put_series(b, 3, [("__name__", "reused")]);
        });
        samples(&mut seg, &[(3, 2_000), (0, 2_000)]);
        std::fs::write(wal_dir.join(wal::segment_name(0)), &seg).unwrap();
        let shard = Shard::open(0, config(dir.path()), BTreeMap::new()).unwrap();
        let t = shard.tenant("t").unwrap();
        let mut head = t.head.borrow_mut();
        let got = |head: &Head, id| {
            let mut v = Vec::new();
            head.samples(id, i64::MIN, i64::MAX, |t, _| v.push(t));
            v
        };
        assert_eq!(got(&head, 0), [1_000, 2_000]);
        assert_eq!(got(&head, 1), [1_000]);
        assert_eq!(
            got(&head, 3),
            [2_000],
            "only what was logged after its record"
        );
        assert_eq!(head.num_series(), 3);
        assert_eq!(
            shard.replay_damage(),
            ReplayDamage {
                corrupt_records: 0,
                regions: 0,
                unknown_series_samples: 2
            }
        );
        let mut k = Vec::new();
        put_series_key(&mut k, [(&b"__name__"[..], &b"new"[..])]);
        let id = head.create(0, &k);
        assert_eq!(id, 8, "id 7 is named by a sample: it stays taken");
        drop(head);
        let snap = shard.snapshot();
        assert_eq!(snap.wal_replay_unknown_series_samples, 2);
    }

    /// A batch whose series carry given identities (as the decoder's table of known series
    /// hands them out).
    struct Given(Vec<(Identity, Vec<u8>, sluice_core::Sample)>);

    impl SeriesBatch for Given {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn hash(&self, i: usize) -> u64 {
            self.0[i].0.hash
        }
        fn check(&self, i: usize) -> u64 {
            self.0[i].0.check
        }
        fn key<'s>(&'s self, i: usize, _: &'s mut Vec<u8>) -> &'s [u8] {
            &self.0[i].1
        }
        fn samples(&self, i: usize) -> impl Iterator<Item = sluice_core::Sample> {
            std::iter::once(self.0[i].2)
        }
    }

    /// A series handed another series' identity (a fingerprint collision in the decoder)
    /// is neither stored into that series nor created under the wrong identity: the outcome
    /// names it, and the series it was mistaken for keeps only its own samples.
    #[test]
    fn an_identity_that_is_not_the_labels_own_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let shard = Shard::open(0, config(dir.path()), BTreeMap::new()).unwrap();
        let t = shard.tenant("t").unwrap();
        let key = |v: &str| {
            let mut k = Vec::new();
            put_series_key(&mut k, [(&b"__name__"[..], v.as_bytes())]);
            k
        };
        let identity = |k: &[u8]| Identity {
            hash: t.hasher.hash_key(k),
            check: check_hash(k),
        };
        let sample = |ts, v| sluice_core::Sample {
            timestamp: ts,
            value: v,
        };
        let (a, b) = (key("a"), key("b"));
        let out = shard.apply(&t, &Given(vec![(identity(&a), a.clone(), sample(1, 1.0))]));
        assert_eq!((out.new_series, out.appended), (1, 1));
        // `b` arrives with `a`'s identity (both halves), then with `a`'s hash only.
        let wrong_full = identity(&a);
        let wrong_hash = Identity {
            check: check_hash(&b),
            ..identity(&a)
        };
        for wrong in [wrong_full, wrong_hash] {
            let out = shard.apply(&t, &Given(vec![(wrong, b.clone(), sample(2, 2.0))]));
            assert_eq!((out.new_series, out.appended), (0, 0), "{wrong:?}");
            assert_eq!(out.misidentified, vec![wrong]);
        }
        let head = t.head.borrow();
        assert_eq!(head.num_series(), 1);
        let mut got = Vec::new();
        head.samples(0, i64::MIN, i64::MAX, |ts, v| got.push((ts, v)));
        assert_eq!(got, [(1, 1.0)]);
        drop(head);
        // With its own identity, `b` is its own series.
        let out = shard.apply(&t, &Given(vec![(identity(&b), b.clone(), sample(2, 2.0))]));
        assert_eq!((out.new_series, out.appended), (1, 1));
        assert!(out.misidentified.is_empty());
    }
}
