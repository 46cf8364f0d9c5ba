//! The WAL directory layout of a tenant, and its re-routing when `--cores` changes.
//!
//! `wal/CORES` records how many cores wrote `wal/core-K/`. When a node restarts with another
//! core count, every series must be replayed by its new owner, so the log is rewritten once,
//! before any core starts: each series record goes to the core that now owns the series (with
//! a new dense id there) and each sample follows its series. The rewrite is built in
//! `wal.migrating/` and swapped in with renames, so a crash at any point leaves either the old
//! or the new layout whole. The reader's id rules decide what is routed: a sample follows its
//! series only if that series' record came before it in the old log, so a sample whose series
//! record was lost is dropped rather than sent to whichever series reused its id. The new log
//! hands out dense ids from 0 on each core and names no other id, so it needs no next-id
//! record. Runs on plain threads with std I/O, before the shard executors exist; must not be
//! called while a core is writing.
//!
//! Which core owns a series is the caller's routing, passed in as a [`SeriesOwner`]: this
//! module moves records where it is told and must not know how series are hashed or placed.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::reader::{replay_dir, ReplayVisitor};
use super::record::{
    begin_record, end_record, put_min_time, put_sample, put_samples_base, put_series, RecordType,
    SampleRecord,
};
use super::writer::sync_dir;
use super::{core_dir, segment_name, WalError, SEGMENT_SIZE};

/// File in `wal/` holding the core count that wrote it.
pub const CORES_FILE: &str = "CORES";

/// What [`prepare_layout`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutOutcome {
    /// The log was already written by this many cores (or is new).
    Unchanged,
    /// The log was rewritten from `from` cores to the requested count.
    Rerouted {
        from: usize,
        series: u64,
        samples: u64,
    },
}

/// The caller's routing: the core (`0..cores`) that owns the series with these labels (names
/// ascending, as a series record holds them).
pub type SeriesOwner<'a> = &'a dyn Fn(&[(&str, &str)]) -> usize;

/// Makes `tenant_dir/wal` a layout for `cores` cores, finishing or undoing an interrupted
/// rewrite first. If the log was written by another core count, every series goes to
/// `owner(labels)`; `tenant` only names the tenant in the log lines.
///
/// # Panics
/// If `owner` names a core outside `0..cores` (a bug in the caller's routing).
pub fn prepare_layout(
    tenant_dir: &Path,
    tenant: &str,
    cores: usize,
    owner: SeriesOwner<'_>,
) -> Result<LayoutOutcome, WalError> {
    let wal = tenant_dir.join("wal");
    let new = tenant_dir.join("wal.migrating");
    let old = tenant_dir.join("wal.old");
    if new.exists() {
        remove_dir(&new)?;
    }
    if old.exists() {
        if wal.exists() {
            remove_dir(&old)?;
        } else {
            rename(&old, &wal)?;
        }
    }
    if !wal.exists() {
        std::fs::create_dir_all(&wal)
            .map_err(|e| WalError::io("creating WAL directory", &wal, e))?;
        write_cores(&wal, cores)?;
        sync_dir(tenant_dir)?;
        return Ok(LayoutOutcome::Unchanged);
    }
    let previous = match read_cores(&wal)? {
        Some(n) => n,
        None => match existing_core_dirs(&wal)?.last() {
            Some(k) => k + 1,
            None => cores,
        },
    };
    if previous == cores {
        write_cores(&wal, cores)?;
        return Ok(LayoutOutcome::Unchanged);
    }
    tracing::info!(
        tenant,
        from = previous,
        to = cores,
        "core count changed: re-routing the WAL to the new owners"
    );
    let mut router = Router::new(&new, cores, owner)?;
    for k in existing_core_dirs(&wal)? {
        router.begin_source();
        let stats = replay_dir(&core_dir(tenant_dir, k), &mut router, true)?;
        router.check()?;
        if stats.damaged_regions + stats.corrupt_records + stats.unknown_series_samples > 0 {
            tracing::warn!(
                tenant,
                core = k,
                damaged_regions = stats.damaged_regions,
                corrupt_records = stats.corrupt_records,
                unknown_series_samples = stats.unknown_series_samples,
                "re-routing a damaged WAL: what replay could not read or attribute is left behind"
            );
        }
    }
    let (series, samples) = router.finish()?;
    write_cores(&new, cores)?;
    sync_dir(&new)?;
    rename(&wal, &old)?;
    rename(&new, &wal)?;
    sync_dir(tenant_dir)?;
    remove_dir(&old)?;
    Ok(LayoutOutcome::Rerouted {
        from: previous,
        series,
        samples,
    })
}

fn existing_core_dirs(wal: &Path) -> Result<Vec<usize>, WalError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(wal).map_err(|e| WalError::io("listing WAL", wal, e))?;
    for e in entries {
        let e = e.map_err(|e| WalError::io("listing WAL", wal, e))?;
        if let Some(k) = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("core-"))
            .and_then(|k| k.parse::<usize>().ok())
        {
            out.push(k);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn read_cores(wal: &Path) -> Result<Option<usize>, WalError> {
    let path = wal.join(CORES_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().parse().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(WalError::io("reading", &path, e)),
    }
}

fn write_cores(wal: &Path, cores: usize) -> Result<(), WalError> {
    let path = wal.join(CORES_FILE);
    let tmp = wal.join("CORES.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{cores}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| WalError::io("writing", &path, e))?;
    sync_dir(wal)
}

fn rename(from: &Path, to: &Path) -> Result<(), WalError> {
    std::fs::rename(from, to).map_err(|e| WalError::io("renaming WAL directory", from, e))
}

fn remove_dir(p: &Path) -> Result<(), WalError> {
    std::fs::remove_dir_all(p).map_err(|e| WalError::io("removing WAL directory", p, e))
}

/// Appends framed records to numbered segment files with std I/O.
struct SegmentSink {
    dir: PathBuf,
    segment: u32,
    file: Option<std::io::BufWriter<std::fs::File>>,
    size: u64,
}

impl SegmentSink {
    fn write(&mut self, frame: &[u8]) -> Result<(), WalError> {
        if self.size > 0 && self.size + frame.len() as u64 > SEGMENT_SIZE {
            self.close()?;
            self.segment += 1;
            self.size = 0;
        }
        let path = self.dir.join(segment_name(self.segment));
        if self.file.is_none() {
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| WalError::io("creating WAL directory", &self.dir, e))?;
            let f = std::fs::File::create(&path)
                .map_err(|e| WalError::io("creating WAL segment", &path, e))?;
            self.file = Some(std::io::BufWriter::with_capacity(1 << 20, f));
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(frame)
                .map_err(|e| WalError::io("writing WAL segment", &path, e))?;
        }
        self.size += frame.len() as u64;
        Ok(())
    }

    fn close(&mut self) -> Result<(), WalError> {
        if let Some(f) = self.file.take() {
            let path = self.dir.join(segment_name(self.segment));
            let f = f
                .into_inner()
                .map_err(|e| WalError::io("flushing WAL segment", &path, e.into_error()))?;
            f.sync_all()
                .map_err(|e| WalError::io("syncing WAL segment", &path, e))?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// Replay visitor that re-writes records for their new owners.
struct Router<'o> {
    owner: SeriesOwner<'o>,
    cores: usize,
    sinks: Vec<SegmentSink>,
    next_id: Vec<u32>,
    /// Old id (in the source directory being replayed) → (new core, new id).
    ids: HashMap<u32, (usize, u32)>,
    /// Pending samples record per new core: (buffer, base_t).
    pending: Vec<(Vec<u8>, Option<i64>)>,
    frame: Vec<u8>,
    error: Option<WalError>,
    series: u64,
    samples: u64,
    /// Newest min time of the source being replayed: its older samples are persisted.
    min_time: i64,
}

impl<'o> Router<'o> {
    fn new(root: &Path, cores: usize, owner: SeriesOwner<'o>) -> Result<Self, WalError> {
        std::fs::create_dir_all(root).map_err(|e| WalError::io("creating", root, e))?;
        Ok(Router {
            owner,
            cores,
            sinks: (0..cores)
                .map(|k| SegmentSink {
                    dir: root.join(format!("core-{k}")),
                    segment: 0,
                    file: None,
                    size: 0,
                })
                .collect(),
            next_id: vec![0; cores],
            ids: HashMap::new(),
            pending: (0..cores).map(|_| (Vec::new(), None)).collect(),
            frame: Vec::new(),
            error: None,
            series: 0,
            samples: 0,
            min_time: i64::MIN,
        })
    }

    /// Ids are per source directory: forget the previous one's.
    fn begin_source(&mut self) {
        self.flush_all();
        self.ids.clear();
        self.min_time = i64::MIN;
    }

    fn check(&mut self) -> Result<(), WalError> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn emit(&mut self, core: usize, ty: RecordType, payload: &[u8]) {
        self.frame.clear();
        let s = begin_record(&mut self.frame, ty);
        self.frame.extend_from_slice(payload);
        end_record(&mut self.frame, s);
        if let Err(e) = self.sinks[core].write(&self.frame) {
            self.error.get_or_insert(e);
        }
    }

    fn flush_core(&mut self, core: usize) {
        let (buf, base) = std::mem::take(&mut self.pending[core]);
        if base.is_some() {
            self.emit(core, RecordType::Samples, &buf);
        }
        let mut buf = buf;
        buf.clear();
        self.pending[core] = (buf, None);
    }

    fn flush_all(&mut self) {
        for k in 0..self.cores {
            self.flush_core(k);
        }
    }

    fn finish(mut self) -> Result<(u64, u64), WalError> {
        self.flush_all();
        self.check()?;
        for s in &mut self.sinks {
            s.close()?;
        }
        Ok((self.series, self.samples))
    }
}

impl ReplayVisitor for Router<'_> {
    fn series(&mut self, id: u32, labels: &[(&str, &str)]) {
        if self.ids.contains_key(&id) {
            // The reader binds an id once; a second call would be a reader bug, and routing
            // the first binding is the safe answer.
            return;
        }
        let core = (self.owner)(labels);
        assert!(
            core < self.cores,
            "routing placed a series on core {core} of {}",
            self.cores
        );
        let new_id = self.next_id[core];
        self.next_id[core] += 1;
        self.ids.insert(id, (core, new_id));
        // Samples already buffered for this core must stay before the series they may follow.
        let mut payload = Vec::new();
        put_series(&mut payload, new_id, labels.iter().copied());
        self.emit(core, RecordType::Series, &payload);
        self.series += 1;
    }

    fn persisted_before(&self) -> i64 {
        self.min_time
    }

    fn min_time(&mut self, t: i64) {
        self.min_time = self.min_time.max(t);
        // Every new core's log starts with what the old checkpoints knew is persisted; the
        // first source's checkpoint is replayed first, so this precedes its samples.
        self.flush_all();
        let mut payload = Vec::new();
        put_min_time(&mut payload, t);
        for core in 0..self.cores {
            self.emit(core, RecordType::MinTime, &payload);
        }
    }

    fn sample(&mut self, s: SampleRecord) {
        let Some(&(core, id)) = self.ids.get(&s.id) else {
            // The reader hands on only samples of bound ids: unreachable, and dropping is
            // the safe answer.
            return;
        };
        let (buf, base) = &mut self.pending[core];
        let base_t = *base.get_or_insert_with(|| {
            put_samples_base(buf, s.t);
            s.t
        });
        put_sample(buf, base_t, id, s.t, s.v);
        self.samples += 1;
        if buf.len() > 1 << 20 {
            self.flush_core(core);
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice_core::{core_for_hash, series_hash};

    use super::super::reader::{replay_dir, ReplayVisitor};
    use super::*;

    /// Sluice's routing, as the shard runtime passes it: the series hash, placed on a core.
    fn owner(tenant: &str, cores: usize) -> impl Fn(&[(&str, &str)]) -> usize + '_ {
        move |labels| core_for_hash(series_hash(tenant, labels.iter().copied()), cores)
    }

    #[derive(Default)]
    struct Collect {
        names: HashMap<u32, String>,
        samples: Vec<(String, i64)>,
    }
    impl ReplayVisitor for Collect {
        fn series(&mut self, id: u32, labels: &[(&str, &str)]) {
            self.names.insert(id, labels[0].1.to_string());
        }
        fn sample(&mut self, s: SampleRecord) {
            self.samples.push((self.names[&s.id].clone(), s.t));
        }
    }

    /// Writes a WAL for `cores` cores the way the writer would: each series in its owner.
    fn write_wal(tenant_dir: &Path, tenant: &str, cores: usize, n: usize) {
        let mut sinks: Vec<Vec<u8>> = vec![Vec::new(); cores];
        let mut ids = vec![0u32; cores];
        for i in 0..n {
            let name = format!("m{i}");
            let labels = [("__name__", name.as_str())];
            let core = core_for_hash(series_hash(tenant, labels), cores);
            let id = ids[core];
            ids[core] += 1;
            let buf = &mut sinks[core];
            let s = begin_record(buf, RecordType::Series);
            put_series(buf, id, labels);
            end_record(buf, s);
            for t in 0..3 {
                let s = begin_record(buf, RecordType::Samples);
                put_samples_base(buf, t);
                put_sample(buf, t, id, t, 1.0);
                end_record(buf, s);
            }
        }
        for (k, buf) in sinks.iter().enumerate() {
            let dir = core_dir(tenant_dir, k);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("00000000"), buf).unwrap();
        }
        std::fs::write(
            tenant_dir.join("wal").join(CORES_FILE),
            format!("{cores}\n"),
        )
        .unwrap();
    }

    fn replay_all(tenant_dir: &Path, cores: usize) -> Vec<Vec<(String, i64)>> {
        (0..cores)
            .map(|k| {
                let mut c = Collect::default();
                replay_dir(&core_dir(tenant_dir, k), &mut c, false).unwrap();
                c.samples
            })
            .collect()
    }

    #[test]
    fn rerouting_keeps_every_sample_with_its_new_owner() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("tenant-a");
        write_wal(&t, "tenant-a", 3, 500);
        let out = prepare_layout(&t, "tenant-a", 2, &owner("tenant-a", 2)).unwrap();
        assert_eq!(
            out,
            LayoutOutcome::Rerouted {
                from: 3,
                series: 500,
                samples: 1500
            }
        );
        let per_core = replay_all(&t, 2);
        let mut total = 0;
        for (k, samples) in per_core.iter().enumerate() {
            for (name, _) in samples {
                let core = core_for_hash(series_hash("tenant-a", [("__name__", name.as_str())]), 2);
                assert_eq!(core, k, "{name} replayed by the wrong core");
            }
            total += samples.len();
        }
        assert_eq!(total, 1500);
        assert!(!t.join("wal").join("core-2").exists());
        assert_eq!(
            prepare_layout(&t, "tenant-a", 2, &owner("tenant-a", 2)).unwrap(),
            LayoutOutcome::Unchanged
        );
    }

    /// A log written before ids were never reused: series `m180`'s record was lost, its
    /// samples followed, and after a restart id 180 went to `m_new`. Re-routing must not send
    /// `m180`'s samples to `m_new` (the Router already judged ids as it read them; the reader
    /// now does it for every replayer, and this keeps the Router on that rule).
    #[test]
    fn rerouting_never_gives_a_lost_series_samples_to_a_reused_id() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("x");
        let core = core_dir(&t, 0);
        std::fs::create_dir_all(&core).unwrap();
        let frame = |buf: &mut Vec<u8>, ty, fill: &dyn Fn(&mut Vec<u8>)| {
            let s = begin_record(buf, ty);
            fill(buf);
            end_record(buf, s);
        };
        let mut seg0 = Vec::new();
        frame(&mut seg0, RecordType::Series, &|b| {
            put_series(b, 0, [("__name__", "m0")])
        });
        // Series 180's record is lost; these samples name it.
        frame(&mut seg0, RecordType::Samples, &|b| {
            put_samples_base(b, 1);
            put_sample(b, 1, 0, 1, 1.0);
            put_sample(b, 1, 180, 1, 180.0);
        });
        std::fs::write(core.join("00000000"), &seg0).unwrap();
        let mut seg1 = Vec::new();
        frame(&mut seg1, RecordType::Series, &|b| {
            put_series(b, 180, [("__name__", "m_new")])
        });
        frame(&mut seg1, RecordType::Samples, &|b| {
            put_samples_base(b, 2);
            put_sample(b, 2, 180, 2, -1.0);
        });
        std::fs::write(core.join("00000001"), &seg1).unwrap();
        std::fs::write(t.join("wal").join(CORES_FILE), "1\n").unwrap();
        let out = prepare_layout(&t, "x", 2, &owner("x", 2)).unwrap();
        assert_eq!(
            out,
            LayoutOutcome::Rerouted {
                from: 1,
                series: 2,
                samples: 2
            }
        );
        let mut all: Vec<(String, i64)> = replay_all(&t, 2).into_iter().flatten().collect();
        all.sort();
        assert_eq!(all, [("m0".to_string(), 1), ("m_new".to_string(), 2)]);
    }

    /// An id bound twice to different labels (a foreign or buggy log): the Router used to
    /// route the second series' samples to the first one's new id. They are dropped instead.
    #[test]
    fn rerouting_drops_the_samples_of_an_ambiguous_id() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("x");
        let core = core_dir(&t, 0);
        std::fs::create_dir_all(&core).unwrap();
        let mut seg = Vec::new();
        for (name, ts) in [("m_first", 1), ("m_second", 2)] {
            let s = begin_record(&mut seg, RecordType::Series);
            put_series(&mut seg, 5, [("__name__", name)]);
            end_record(&mut seg, s);
            let s = begin_record(&mut seg, RecordType::Samples);
            put_samples_base(&mut seg, ts);
            put_sample(&mut seg, ts, 5, ts, 1.0);
            end_record(&mut seg, s);
        }
        std::fs::write(core.join("00000000"), &seg).unwrap();
        std::fs::write(t.join("wal").join(CORES_FILE), "1\n").unwrap();
        prepare_layout(&t, "x", 2, &owner("x", 2)).unwrap();
        let all: Vec<(String, i64)> = replay_all(&t, 2).into_iter().flatten().collect();
        assert_eq!(all, [("m_first".to_string(), 1)]);
    }

    #[test]
    fn an_interrupted_rewrite_is_redone() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("x");
        write_wal(&t, "x", 2, 50);
        // A crash mid-rewrite leaves a partial wal.migrating/ behind.
        std::fs::create_dir_all(t.join("wal.migrating/core-0")).unwrap();
        std::fs::write(t.join("wal.migrating/core-0/00000000"), b"partial").unwrap();
        prepare_layout(&t, "x", 1, &owner("x", 1)).unwrap();
        let total: usize = replay_all(&t, 1).iter().map(|s| s.len()).sum();
        assert_eq!(total, 150);
        assert!(!t.join("wal.migrating").exists());
    }
}
