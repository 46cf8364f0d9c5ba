//! The shipper: uploads every sealed block in the blocks directory to the bucket once, and
//! deletes shipped blocks past retention.
//!
//! Owns its OS thread and the current-thread tokio runtime on it (the S3 client needs
//! tokio; the shard cores run glommio and must never block on the network), the
//! `thanos.shipper.json` state file, the per-block upload order, and deletion of expired
//! shipped blocks. Reads blocks (never modifies them); does not know how they are written.
//!
//! A pass (on start, on [`ShipperHandle::notify`], every `rescan_interval`):
//! 1. read the state file (what was shipped) and scan the directory for sealed blocks:
//!    directories named by a ULID holding `meta.json` (so `*.tmp-for-creation` and
//!    `*.tmp-for-deletion` are never picked up), oldest `minTime` first;
//! 2. for each block not in the state: if `<ulid>/meta.json` is already in the bucket (we
//!    crashed after uploading it but before recording it) just record it, else upload
//!    every file but `meta.json` (sorted: `chunks/…`, `index`, `tombstones`), then
//!    `meta.json` — a block without `meta.json` in the bucket is an unfinished upload that
//!    Thanos ignores — then record it (state file rewritten atomically after each block);
//! 3. delete blocks that are recorded and whose `maxTime` is older than the newest block's
//!    `maxTime` − retention (Prometheus' time retention).
//!
//! So a restart neither skips a block (it is not recorded until `meta.json` is up) nor
//! re-uploads one (recorded, or found by the `meta.json` check). Any error ends the pass
//! (blocks go up oldest first, as Thanos requires without out-of-order uploads) and the
//! next pass starts after an exponential backoff; only shutdown interrupts a backoff.
//! Shutdown lets the object being uploaded finish and then stops; a block left without
//! `meta.json` is uploaded again whole on the next start.
//!
//! Differences from Thanos' shipper: we also upload `tombstones` (Thanos' `block.Upload`
//! sends only `chunks/`, `index` and `meta.json`; Prometheus reads a missing tombstones file
//! as empty, so either is fine), and we upload `meta.json` as the block writer wrote it
//! (Thanos' shipper rewrites the Thanos section first; ours already has it).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_storage::block::meta::BlockMeta;
use tokio::sync::Notify;
use ulid::Ulid;

use crate::bucket::{sync_dir, walk, Bucket};
use crate::config::ObjstoreConfig;
use crate::{io_err, ObjstoreError};

/// The state file in the blocks directory (Thanos' name and format).
pub const STATE_FILE: &str = "thanos.shipper.json";
const STATE_VERSION: u32 = 1;
const META_FILE: &str = "meta.json";
/// Prometheus' suffix for a block being deleted: renamed first so a crash mid-delete never
/// leaves something that looks like a (damaged) block.
const DELETION_SUFFIX: &str = ".tmp-for-deletion";

/// How the shipper behaves.
#[derive(Clone, Debug)]
pub struct ShipperOptions {
    /// Delete local blocks that are shipped and whose `maxTime` is older than the newest local
    /// block's `maxTime` − this.
    /// `None`: keep every block.
    pub retention: Option<Duration>,
    /// A pass runs at least this often, in case a [`ShipperHandle::notify`] was missed.
    pub rescan_interval: Duration,
    /// First wait after a failed pass; doubled after each further failure...
    pub backoff_initial: Duration,
    /// ...up to this.
    pub backoff_max: Duration,
}

impl Default for ShipperOptions {
    fn default() -> Self {
        ShipperOptions {
            retention: None,
            rescan_interval: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// Counters for metrics. Totals since the shipper started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShipperStats {
    /// Blocks uploaded (their `meta.json` went up).
    pub uploaded_blocks: u64,
    /// Objects uploaded (including `meta.json`).
    pub uploaded_objects: u64,
    pub uploaded_bytes: u64,
    /// Failed passes (each followed by a backoff).
    pub failures: u64,
    /// Failed passes since the last successful one.
    pub consecutive_failures: u64,
    /// The latest error, kept after later successes.
    pub last_error: Option<String>,
    /// Passes that finished without error.
    pub passes: u64,
    /// Local blocks deleted by retention.
    pub deleted_blocks: u64,
    /// Sealed local blocks not yet shipped, as of the latest pass.
    pub pending_blocks: u64,
}

/// `thanos.shipper.json`: `{"version": 1, "uploaded": ["<ulid>", …]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippedState {
    pub version: u32,
    /// Go writes `null` for an empty list.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub uploaded: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

impl ShippedState {
    /// Reads `<dir>/thanos.shipper.json`; `Ok(None)` if it does not exist.
    pub fn read(dir: &Path) -> Result<Option<BTreeSet<Ulid>>, ObjstoreError> {
        let path = dir.join(STATE_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let bad = |reason: String| ObjstoreError::State {
            path: path.clone(),
            reason,
        };
        let s: ShippedState = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if s.version != STATE_VERSION {
            return Err(bad(format!("unsupported version {}", s.version)));
        }
        s.uploaded
            .iter()
            .map(|u| Ulid::from_string(u).map_err(|e| bad(format!("bad ULID {u:?}: {e}"))))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// Writes `<dir>/thanos.shipper.json` atomically (tmp file, fsync, rename, fsync dir),
    /// tab-indented with a trailing newline like Thanos' Go encoder.
    pub fn write(dir: &Path, uploaded: &BTreeSet<Ulid>) -> Result<(), ObjstoreError> {
        let s = ShippedState {
            version: STATE_VERSION,
            uploaded: uploaded.iter().map(Ulid::to_string).collect(),
        };
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        s.serialize(&mut ser).map_err(|e| ObjstoreError::State {
            path: dir.join(STATE_FILE),
            reason: e.to_string(),
        })?;
        out.push(b'\n');
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        {
            use std::io::Write;
            let mut f = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
            f.write_all(&out).map_err(io_err("write", &tmp))?;
            f.sync_all().map_err(io_err("fsync", &tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
        sync_dir(dir)
    }
}

/// Starts shippers.
pub struct Shipper;

impl Shipper {
    /// Builds the bucket client for `cfg` and starts shipping `blocks_dir` on a new thread.
    /// Errors are configuration or thread-spawn errors; bucket errors come later and are
    /// retried (see [`ShipperHandle::stats`]).
    pub fn start(
        cfg: &ObjstoreConfig,
        blocks_dir: PathBuf,
        opts: ShipperOptions,
    ) -> Result<ShipperHandle, ObjstoreError> {
        Self::start_with_bucket(Bucket::new(cfg)?, blocks_dir, opts)
    }

    /// Like [`Shipper::start`] with a ready bucket (e.g. one with an upload hook).
    pub fn start_with_bucket(
        bucket: Bucket,
        blocks_dir: PathBuf,
        opts: ShipperOptions,
    ) -> Result<ShipperHandle, ObjstoreError> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            stop_notify: Notify::new(),
            wake: Notify::new(),
            stats: Mutex::new(ShipperStats::default()),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ObjstoreError::Thread)?;
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-shipper".into())
            .spawn(move || {
                let mut w = Worker {
                    bucket,
                    dir: blocks_dir,
                    opts,
                    shared: sh,
                };
                rt.block_on(w.run());
            })
            .map_err(ObjstoreError::Thread)?;
        Ok(ShipperHandle {
            shared,
            thread: Some(thread),
        })
    }
}

struct Shared {
    stop: AtomicBool,
    /// Wakes the worker out of any wait (permit kept if it is not waiting yet).
    stop_notify: Notify,
    /// A block was sealed: run a pass now.
    wake: Notify,
    stats: Mutex<ShipperStats>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
    fn stats(&self) -> std::sync::MutexGuard<'_, ShipperStats> {
        // Counters stay usable even if a holder panicked.
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Controls a running shipper. Dropping it shuts the shipper down (waiting for it).
pub struct ShipperHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A cheap, cloneable way to say "a block was sealed" from any thread (e.g. the shard that
/// cut a block).
#[derive(Clone)]
pub struct ShipperNotifier(Arc<Shared>);

impl ShipperNotifier {
    /// Non-blocking; repeated calls before the shipper wakes up collapse into one pass.
    pub fn notify(&self) {
        self.0.wake.notify_one();
    }
}

impl ShipperHandle {
    /// A block was sealed: ship it soon. Non-blocking, callable from any thread.
    pub fn notify(&self) {
        self.shared.wake.notify_one();
    }

    /// A notifier to hand to other threads.
    pub fn notifier(&self) -> ShipperNotifier {
        ShipperNotifier(self.shared.clone())
    }

    /// Current counters.
    pub fn stats(&self) -> ShipperStats {
        self.shared.stats().clone()
    }

    /// Lets the current object upload finish, then stops the thread and waits for it.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.stop_notify.notify_one();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("shipper thread panicked");
            }
        }
    }
}

impl Drop for ShipperHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// A sealed local block.
struct LocalBlock {
    ulid: Ulid,
    dir: PathBuf,
    meta: BlockMeta,
}

struct Worker {
    bucket: Bucket,
    dir: PathBuf,
    opts: ShipperOptions,
    shared: Arc<Shared>,
}

impl Worker {
    async fn run(&mut self) {
        tracing::info!(
            bucket = %self.bucket.describe(),
            dir = %self.dir.display(),
            "shipper started"
        );
        let mut backoff = self.opts.backoff_initial;
        while !self.shared.stopping() {
            match self.pass().await {
                Ok(()) => {
                    backoff = self.opts.backoff_initial;
                    {
                        let mut s = self.shared.stats();
                        s.passes += 1;
                        s.consecutive_failures = 0;
                    }
                    let wake = self.shared.wake.notified();
                    tokio::select! {
                        _ = wake => {}
                        _ = self.shared.stop_notify.notified() => {}
                        _ = tokio::time::sleep(self.opts.rescan_interval) => {}
                    }
                }
                Err(ObjstoreError::Interrupted(_)) if self.shared.stopping() => break,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "shipper pass failed");
                    {
                        let mut s = self.shared.stats();
                        s.failures += 1;
                        s.consecutive_failures += 1;
                        s.last_error = Some(e.to_string());
                    }
                    // Notifies do not cut a backoff short (a permit stays for afterwards).
                    tokio::select! {
                        _ = self.shared.stop_notify.notified() => {}
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.opts.backoff_max);
                }
            }
        }
        tracing::info!("shipper stopped");
    }

    /// One pass: ship what is missing, then apply retention.
    async fn pass(&mut self) -> Result<(), ObjstoreError> {
        let recorded = match ShippedState::read(&self.dir) {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                // As Thanos: the bucket's meta.json check below still prevents re-uploads.
                tracing::warn!(error = %e, "ignoring unreadable shipper state file");
                BTreeSet::new()
            }
        };
        let (blocks, scan_err) = self.scan()?;
        // Keep only blocks that still exist locally (as Thanos does), so deleted blocks
        // leave the state file.
        let mut shipped: BTreeSet<Ulid> = blocks
            .iter()
            .map(|b| b.ulid)
            .filter(|u| recorded.contains(u))
            .collect();
        let mut dirty = shipped != recorded;

        let upload_result = self.ship(&blocks, &mut shipped, &mut dirty).await;
        self.shared.stats().pending_blocks =
            blocks.iter().filter(|b| !shipped.contains(&b.ulid)).count() as u64;
        // Retention runs even when uploading failed: deleting what is already shipped is
        // safe, and a dead bucket must not fill the disk with blocks it already has.
        let retention_result = self.apply_retention(&blocks, &mut shipped, &mut dirty);
        // Also written when missing, so an operator sees the shipper is running.
        if (dirty || !self.dir.join(STATE_FILE).exists()) && self.dir.is_dir() {
            ShippedState::write(&self.dir, &shipped)?;
        }
        upload_result?;
        retention_result?;
        match scan_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn ship(
        &mut self,
        blocks: &[LocalBlock],
        shipped: &mut BTreeSet<Ulid>,
        dirty: &mut bool,
    ) -> Result<(), ObjstoreError> {
        for b in blocks {
            if shipped.contains(&b.ulid) {
                continue;
            }
            if self.shared.stopping() {
                return Err(ObjstoreError::Interrupted(b.ulid));
            }
            let meta_key = format!("{}/{META_FILE}", b.ulid);
            if self.bucket.exists(&meta_key).await? {
                tracing::info!(block = %b.ulid, "block already in the bucket; recording it");
            } else {
                self.upload_block(b).await?;
                self.shared.stats().uploaded_blocks += 1;
                tracing::info!(block = %b.ulid, "block uploaded");
            }
            shipped.insert(b.ulid);
            // Recorded right away, so a crash later in this pass does not redo the block.
            ShippedState::write(&self.dir, shipped)?;
            *dirty = false;
        }
        Ok(())
    }

    async fn upload_block(&self, b: &LocalBlock) -> Result<(), ObjstoreError> {
        let mut files = Vec::new();
        walk(&b.dir, "", &mut files)?;
        files.retain(|f| f != META_FILE && !f.ends_with(".tmp"));
        files.sort();
        files.push(META_FILE.to_string());
        for rel in &files {
            if self.shared.stopping() {
                return Err(ObjstoreError::Interrupted(b.ulid));
            }
            let key = format!("{}/{rel}", b.ulid);
            let n = self.bucket.upload_file(&key, &b.dir.join(rel)).await?;
            let mut s = self.shared.stats();
            s.uploaded_objects += 1;
            s.uploaded_bytes += n;
        }
        Ok(())
    }

    /// Sealed blocks, oldest `minTime` first. Blocks with an unreadable `meta.json` are left
    /// out and reported in the second value (the pass then counts as failed and is retried,
    /// without holding up the other blocks).
    fn scan(&self) -> Result<(Vec<LocalBlock>, Option<ObjstoreError>), ObjstoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), None)),
            Err(e) => return Err(io_err("read directory", &self.dir)(e)),
        };
        let mut blocks = Vec::new();
        let mut err = None;
        for e in entries {
            let e = e.map_err(io_err("read directory", &self.dir))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(DELETION_SUFFIX) && e.path().is_dir() {
                // Left by a crash during a retention delete.
                let _ = fs::remove_dir_all(e.path());
                continue;
            }
            let Ok(ulid) = Ulid::from_string(name) else {
                continue;
            };
            let dir = e.path();
            let meta_path = dir.join(META_FILE);
            if !dir.is_dir() || !meta_path.is_file() {
                continue;
            }
            let meta = fs::read(&meta_path)
                .map_err(|e| e.to_string())
                .and_then(|b| BlockMeta::from_json(&b).map_err(|e| e.to_string()));
            match meta {
                Ok(meta) => blocks.push(LocalBlock { ulid, dir, meta }),
                Err(reason) => {
                    tracing::warn!(block = %dir.display(), %reason, "skipping block");
                    err = Some(ObjstoreError::BlockMeta { path: dir, reason });
                }
            }
        }
        blocks.sort_by_key(|b| (b.meta.min_time, b.ulid));
        Ok((blocks, err))
    }

    fn apply_retention(
        &self,
        blocks: &[LocalBlock],
        shipped: &mut BTreeSet<Ulid>,
        dirty: &mut bool,
    ) -> Result<(), ObjstoreError> {
        let Some(retention) = self.opts.retention else {
            return Ok(());
        };
        // As Prometheus: relative to the newest data, not the wall clock, so backfilled or
        // replayed old data is not deleted the moment it is shipped.
        let Some(newest) = blocks.iter().map(|b| b.meta.max_time).max() else {
            return Ok(());
        };
        let cutoff = newest.saturating_sub(retention.as_millis().min(i64::MAX as u128) as i64);
        for b in blocks {
            if b.meta.max_time >= cutoff || !shipped.contains(&b.ulid) {
                continue;
            }
            let doomed = self.dir.join(format!("{}{DELETION_SUFFIX}", b.ulid));
            fs::rename(&b.dir, &doomed).map_err(io_err("rename for deletion", &b.dir))?;
            sync_dir(&self.dir)?;
            fs::remove_dir_all(&doomed).map_err(io_err("delete", &doomed))?;
            shipped.remove(&b.ulid);
            *dirty = true;
            self.shared.stats().deleted_blocks += 1;
            tracing::info!(block = %b.ulid, max_time = b.meta.max_time, "deleted shipped block past retention");
        }
        Ok(())
    }
}
