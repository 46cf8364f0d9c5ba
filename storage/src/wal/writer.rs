//! The group-committing WAL writer of one (core, tenant).
//!
//! Records are encoded synchronously into an in-memory tail; `commit` writes the tail with one
//! DMA write (O_DIRECT, io_uring) — every request that appended since the last write was issued
//! is covered by the next one, so the cost of a write is shared by all of them. Writes are
//! pipelined: a commit whose records are not yet in a write issues its own at once, up to
//! `MAX_WRITES_IN_FLIGHT`, instead of waiting for the write in flight to end first. A slow
//! write then delays the commits behind it by its own time, not by its time plus theirs.
//! Writes never overlap: the last, partial page of a write still in flight is left alone (the
//! next records start on the following page; the reader skips the zeros between), and a
//! position counts as written only once every write before it has completed. Under
//! `FsyncPolicy::Always` the segments are opened `O_DSYNC`: a write is durable when it
//! completes, as if an `fdatasync` had followed it. That is one io_uring operation instead of
//! two in sequence; between them the executor had to come round to reap the write and submit
//! the sync, which it only does once the task running (another request's decoding) yields.
//! The other policies sync with `fdatasync` ([`Wal::sync`]). The last partial page stays in
//! memory and is rewritten (padded with zeros) by the next flush. Single-threaded by design (one per core, `Rc`, no locks); must
//! not be shared across executors. Test builds report every write and sync to the power-loss
//! journal (`powercut.rs`); other builds have no such hook.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use futures::channel::oneshot;
use glommio::io::DmaFile;

use super::record::{begin_record, end_record, RecordType};
use super::zeroing::ZeroAhead;
use super::{segment_name, FsyncPolicy, WalError, SEGMENT_SIZE};

/// Alignment of DMA writes (logical block size of every disk we support).
const ALIGN: usize = super::record::PAGE;

/// Writes issued and not yet completed, at most. Enough to keep a commit from queueing behind
/// a slow write; more would only split the records into smaller writes.
const MAX_WRITES_IN_FLIGHT: usize = 4;

/// Bytes waiting to be written to one segment.
struct Tail {
    segment: u32,
    /// File offset (aligned) where `bytes` start.
    base: u64,
    /// Data from `base`: first the partial page already written (or being written), then new
    /// records.
    bytes: Vec<u8>,
    /// Bytes at the start of `bytes` that an issued write covers (the partial page).
    issued: usize,
}

impl Tail {
    fn end(&self) -> u64 {
        self.base + self.bytes.len() as u64
    }

    /// A DMA buffer of `file` holding `bytes[..len]`, zero-padded to whole pages.
    fn page_buffer(&self, file: &DmaFile, len: usize) -> glommio::io::DmaBuffer {
        let mut buf = file.alloc_dma_buffer(len.div_ceil(ALIGN) * ALIGN);
        let dst = buf.as_bytes_mut();
        dst[..len].copy_from_slice(&self.bytes[..len]);
        dst[len..].fill(0);
        buf
    }

    /// Once a write of `bytes[..len]` is issued: keep only its partial last page, which the
    /// next write rewrites (or steps over, while this one is in flight).
    fn keep_partial_page(&mut self, len: usize) {
        let full = len / ALIGN * ALIGN;
        self.bytes.drain(..full);
        self.base += full as u64;
        self.issued = len - full;
    }
}

struct State {
    tails: VecDeque<Tail>,
    /// The open segment, and its zero-filling when it was created empty.
    file: Option<(u32, Rc<DmaFile>, Option<Rc<ZeroAhead>>)>,
    /// Logical sequence number: total record bytes appended since open.
    appended: u64,
    /// Position up to which records are in an issued write.
    issued: u64,
    /// Writes issued, oldest first: the position each makes written, and whether it has
    /// completed. Completed ones leave only from the front, so that `written` never skips a
    /// write still in flight.
    writes: VecDeque<(u64, bool)>,
    /// A segment is being opened or finished: nothing else may be written meanwhile.
    exclusive: bool,
    /// Most writes ever in flight at once.
    peak_writes: usize,
    /// Woken whenever a write completes or an exclusive step ends.
    waiters: Vec<oneshot::Sender<()>>,
    failed: Option<String>,
}

impl State {
    /// Whether the newest write has not completed yet (its last page must not be rewritten).
    fn newest_in_flight(&self) -> bool {
        self.writes.back().is_some_and(|w| !w.1)
    }
}

/// An `fdatasync` in flight.
struct SyncInFlight {
    /// Everything before this position was written when the sync was issued.
    covers: u64,
    waiters: Vec<oneshot::Sender<()>>,
}

/// The WAL writer. Cheap to clone (`Rc`).
#[derive(Clone)]
pub struct Wal {
    inner: Rc<Inner>,
}

struct Inner {
    dir: PathBuf,
    policy: FsyncPolicy,
    state: RefCell<State>,
    /// Logical position up to which everything is written to the segment files.
    written: Cell<u64>,
    /// Logical position up to which everything is durable (written `O_DSYNC`, or
    /// `fdatasync`ed).
    synced: Cell<u64>,
    /// `fdatasync`s in flight ([`Wal::sync`]; under `Always` writes need none): what each
    /// covers and who waits for it. Several may run at once (a caller whose records were
    /// written after a sync was issued does not wait for that sync to end before issuing its
    /// own; the kernel merges concurrent cache flushes).
    syncs_in_flight: RefCell<Vec<SyncInFlight>>,
    bytes_written: Cell<u64>,
    syncs: Cell<u64>,
    /// `fdatasync` latency in microseconds.
    sync_latency: RefCell<hdrhistogram::Histogram<u64>>,
    /// Newest sample timestamp per segment, to know which segments a block made obsolete.
    segment_max_t: RefCell<BTreeMap<u32, i64>>,
    /// Test builds: the power-loss journal that sees every write and sync (`powercut.rs`).
    #[cfg(test)]
    journal: RefCell<Option<Rc<super::powercut::Journal>>>,
}

/// Counters a core exports as metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct WalStats {
    pub bytes_written: u64,
    pub syncs: u64,
    pub appended: u64,
}

impl Wal {
    /// Opens a writer in `dir` that starts a fresh segment `first_segment` (replay has already
    /// repaired older ones; a new segment per start keeps repair and append apart).
    pub fn open(dir: &Path, first_segment: u32, policy: FsyncPolicy) -> Result<Wal, WalError> {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)
                .map_err(|e| WalError::io("creating WAL directory", dir, e))?;
            // The new directory's entry must survive a power cut with the segments in it.
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut tails = VecDeque::new();
        tails.push_back(Tail {
            segment: first_segment,
            base: 0,
            bytes: Vec::with_capacity(64 * 1024),
            issued: 0,
        });
        Ok(Wal {
            inner: Rc::new(Inner {
                dir: dir.to_path_buf(),
                policy,
                state: RefCell::new(State {
                    tails,
                    file: None,
                    appended: 0,
                    issued: 0,
                    writes: VecDeque::new(),
                    exclusive: false,
                    peak_writes: 0,
                    waiters: Vec::new(),
                    failed: None,
                }),
                written: Cell::new(0),
                synced: Cell::new(0),
                syncs_in_flight: RefCell::new(Vec::new()),
                bytes_written: Cell::new(0),
                syncs: Cell::new(0),
                sync_latency: RefCell::new(latency_histogram()),
                segment_max_t: RefCell::new(BTreeMap::new()),
                #[cfg(test)]
                journal: RefCell::new(None),
            }),
        })
    }

    /// Reports every write and sync of this writer (and of its zeroing) to `journal`, which
    /// delays their completions. Call before the first write.
    #[cfg(test)]
    pub(crate) fn set_journal(&self, journal: Rc<super::powercut::Journal>) {
        *self.inner.journal.borrow_mut() = Some(journal);
    }

    #[cfg(test)]
    fn journal(&self) -> Option<Rc<super::powercut::Journal>> {
        self.inner.journal.borrow().clone()
    }

    /// The directory this writer appends to.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Appends one record whose payload `fill` writes; returns the position to `commit` to.
    /// An empty payload writes nothing.
    pub fn append(&self, ty: RecordType, fill: impl FnOnce(&mut Vec<u8>)) -> u64 {
        let mut st = self.inner.state.borrow_mut();
        let tail = st.tails.back_mut().expect("WAL always has a tail");
        let start = begin_record(&mut tail.bytes, ty);
        fill(&mut tail.bytes);
        if tail.bytes.len() - start == super::record::HEADER_LEN {
            tail.bytes.truncate(start);
            return st.appended;
        }
        let len = end_record(&mut tail.bytes, start);
        if tail.end() > SEGMENT_SIZE && start > 0 {
            // Records never cross segments: move this one to the start of the next segment.
            let record = tail.bytes.split_off(start);
            let next = Tail {
                segment: tail.segment + 1,
                base: 0,
                bytes: record,
                issued: 0,
            };
            st.tails.push_back(next);
        }
        st.appended += len as u64;
        st.appended
    }

    /// Records that the records just appended hold samples up to `t`.
    pub fn note_max_t(&self, t: i64) {
        let segment = {
            let st = self.inner.state.borrow();
            st.tails.back().expect("WAL always has a tail").segment
        };
        let mut m = self.inner.segment_max_t.borrow_mut();
        let e = m.entry(segment).or_insert(t);
        *e = (*e).max(t);
    }

    /// Seeds what replay learned about the segments written before this start.
    pub fn seed_segment_max_t(&self, seen: &[(u32, i64)]) {
        self.inner
            .segment_max_t
            .borrow_mut()
            .extend(seen.iter().copied());
    }

    /// The highest `n` such that every segment up to `n` is finished (not being written)
    /// and holds no sample at or after `t`: a checkpoint `n` may replace them once a block
    /// holds everything before `t`.
    pub fn obsolete_before(&self, t: i64) -> Result<Option<u32>, WalError> {
        let writing = {
            let st = self.inner.state.borrow();
            st.tails.front().expect("WAL always has a tail").segment
        };
        let max_t = self.inner.segment_max_t.borrow();
        let mut last = None;
        for index in super::list_segments(&self.inner.dir)? {
            if index >= writing || max_t.get(&index).is_some_and(|m| *m >= t) {
                break;
            }
            last = Some(index);
        }
        Ok(last)
    }

    /// Makes the next record start a new segment (unless the current one is still empty), so
    /// that what was logged so far can become obsolete as a whole.
    pub fn roll(&self) {
        let mut st = self.inner.state.borrow_mut();
        let tail = st.tails.back().expect("WAL always has a tail");
        if tail.base == 0 && tail.bytes.is_empty() {
            return;
        }
        let next = Tail {
            segment: tail.segment + 1,
            base: 0,
            bytes: Vec::with_capacity(64 * 1024),
            issued: 0,
        };
        st.tails.push_back(next);
    }

    /// Forgets segments a checkpoint replaced.
    pub(crate) fn forget_up_to(&self, n: u32) {
        self.inner.segment_max_t.borrow_mut().retain(|s, _| *s > n);
    }

    /// The position of everything appended so far.
    pub fn appended(&self) -> u64 {
        self.inner.state.borrow().appended
    }

    /// Waits until everything up to `lsn` is written (and synced, under `Always`).
    pub async fn commit(&self, lsn: u64) -> Result<(), WalError> {
        let sync = self.inner.policy == FsyncPolicy::Always;
        loop {
            self.check_failed()?;
            let done = if sync {
                self.inner.synced.get()
            } else {
                self.inner.written.get()
            };
            if done >= lsn {
                return Ok(());
            }
            self.advance(lsn, sync).await?;
        }
    }

    /// Writes everything appended so far and `fdatasync`s it, whatever the policy (interval
    /// timer, shutdown). Records appended while it runs are left to the next call: chasing
    /// them kept a sync under steady load from ever returning, so the interval timer behind
    /// it synced back to back instead of once per interval.
    pub async fn sync(&self) -> Result<(), WalError> {
        let lsn = self.appended();
        loop {
            self.check_failed()?;
            if self.inner.synced.get() >= lsn {
                return Ok(());
            }
            self.advance(lsn, true).await?;
        }
    }

    /// One step towards `lsn` being written (and synced, if `sync`): issue a write of the
    /// tail, or wait for a write in flight, or wait for a sync in flight that covers `lsn`, or
    /// issue one.
    async fn advance(&self, lsn: u64, sync: bool) -> Result<(), WalError> {
        if self.inner.written.get() < lsn {
            let issue = {
                let st = self.inner.state.borrow();
                st.issued < lsn && !st.exclusive && st.writes.len() < MAX_WRITES_IN_FLIGHT
            };
            if issue {
                self.flush().await?;
            } else if let Some(rx) = self.next_completion() {
                let _ = rx.await;
            }
            return Ok(());
        }
        if !sync {
            return Ok(());
        }
        let covering = {
            let mut syncs = self.inner.syncs_in_flight.borrow_mut();
            syncs.iter_mut().find(|s| s.covers >= lsn).map(|s| {
                let (tx, rx) = oneshot::channel();
                s.waiters.push(tx);
                rx
            })
        };
        match covering {
            Some(rx) => {
                let _ = rx.await;
                Ok(())
            }
            None => self.sync_written().await,
        }
    }

    /// Issues an `fdatasync` of the open segment covering everything written so far (older
    /// segments were synced when they were finished).
    async fn sync_written(&self) -> Result<(), WalError> {
        let covers = self.inner.written.get();
        let Some((segment, file)) = ({
            let st = self.inner.state.borrow();
            st.file.as_ref().map(|(s, f, _)| (*s, f.clone()))
        }) else {
            // Nothing was ever written.
            self.inner.synced.set(self.inner.synced.get().max(covers));
            return Ok(());
        };
        self.inner.syncs_in_flight.borrow_mut().push(SyncInFlight {
            covers,
            waiters: Vec::new(),
        });
        let result = self.sync_file(&file, segment).await;
        let waiters = {
            let mut syncs = self.inner.syncs_in_flight.borrow_mut();
            let at = syncs.iter().position(|s| s.covers == covers);
            at.map(|i| syncs.swap_remove(i).waiters).unwrap_or_default()
        };
        match &result {
            Ok(()) => self.inner.synced.set(self.inner.synced.get().max(covers)),
            // A failed sync may have dropped written pages (the kernel forgets the error
            // after reporting it once): refuse further writes.
            Err(e) => self.inner.state.borrow_mut().failed = Some(e.to_string()),
        }
        for w in waiters {
            let _ = w.send(());
        }
        result
    }

    fn check_failed(&self) -> Result<(), WalError> {
        match &self.inner.state.borrow().failed {
            Some(reason) => Err(WalError::Failed {
                dir: self.inner.dir.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// A receiver that fires when the next write completes (or the exclusive step in progress
    /// ends), if anything is in flight.
    fn next_completion(&self) -> Option<oneshot::Receiver<()>> {
        let mut st = self.inner.state.borrow_mut();
        if st.exclusive || !st.writes.is_empty() {
            let (tx, rx) = oneshot::channel();
            st.waiters.push(tx);
            Some(rx)
        } else {
            None
        }
    }

    fn wake_all(&self) {
        let waiters = std::mem::take(&mut self.inner.state.borrow_mut().waiters);
        for w in waiters {
            let _ = w.send(());
        }
    }

    /// Records a failure that leaves the files in an unknown state: refuse further writes
    /// rather than acknowledge data we cannot vouch for.
    fn fail(&self, e: &WalError) {
        let mut st = self.inner.state.borrow_mut();
        if st.failed.is_none() {
            st.failed = Some(e.to_string());
        }
    }

    /// Whether writes are opened `O_DSYNC` (durable on completion).
    fn dsync(&self) -> bool {
        self.inner.policy == FsyncPolicy::Always
    }

    /// `fdatasync` latencies (µs) since open.
    pub fn sync_latency(&self) -> hdrhistogram::Histogram<u64> {
        self.inner.sync_latency.borrow().clone()
    }

    /// Counters for metrics.
    pub fn stats(&self) -> WalStats {
        WalStats {
            bytes_written: self.inner.bytes_written.get(),
            syncs: self.inner.syncs.get(),
            appended: self.appended(),
        }
    }

    /// Writes what is appended and not yet in a write: pipelined with the writes in flight
    /// while the open segment stays the same, alone when a segment must be opened or finished.
    async fn flush(&self) -> Result<(), WalError> {
        let alone = {
            let st = self.inner.state.borrow();
            let front = st.tails.front().expect("WAL always has a tail").segment;
            st.tails.len() > 1 || st.file.as_ref().is_none_or(|f| f.0 != front)
        };
        if !alone {
            return self.write_pipelined().await;
        }
        self.inner.state.borrow_mut().exclusive = true;
        // Let the writes in flight end: finishing a segment syncs it, and its records must
        // all be in the file by then.
        let result = loop {
            if let Err(e) = self.check_failed() {
                break Err(e);
            }
            if self.inner.state.borrow().writes.is_empty() {
                break self.flush_alone().await;
            }
            let (tx, rx) = oneshot::channel();
            self.inner.state.borrow_mut().waiters.push(tx);
            let _ = rx.await;
        };
        self.inner.state.borrow_mut().exclusive = false;
        if let Err(e) = &result {
            self.fail(e);
        }
        self.wake_all();
        result
    }

    /// Issues one write of the open segment's new records, next to the writes in flight, and
    /// waits for it.
    async fn write_pipelined(&self) -> Result<(), WalError> {
        let (file, zero) = {
            let st = self.inner.state.borrow();
            let (_, f, z) = st.file.as_ref().expect("flush checked the open segment");
            (f.clone(), z.clone())
        };
        let (buf, base, end, target, segment) = {
            let mut guard = self.inner.state.borrow_mut();
            let st = &mut *guard;
            let pad = st.newest_in_flight();
            let target = st.appended;
            let t = st.tails.front_mut().expect("WAL always has a tail");
            if pad && t.issued > 0 {
                // The partial page belongs to a write still in flight: leave it (its rest is
                // zeros on disk) and start on the next page.
                t.bytes.drain(..t.issued);
                t.base += ALIGN as u64;
                t.issued = 0;
            }
            let len = t.bytes.len();
            if len == 0 {
                return Ok(());
            }
            let buf = t.page_buffer(&file, len);
            let base = t.base;
            // The buffer holds the records now.
            t.keep_partial_page(len);
            let segment = t.segment;
            st.issued = target;
            st.writes.push_back((target, false));
            st.peak_writes = st.peak_writes.max(st.writes.len());
            let end = base + buf.len() as u64;
            (buf, base, end, target, segment)
        };
        let result = self
            .write_at(&file, zero.as_ref(), buf, base, end, segment)
            .await;
        if result.is_ok() {
            // A failed write stays in flight for good: nothing after it counts as written.
            let mut st = self.inner.state.borrow_mut();
            if let Some(w) = st.writes.iter_mut().find(|w| w.0 == target) {
                w.1 = true;
            }
            while st.writes.front().is_some_and(|w| w.1) {
                let (done, _) = st.writes.pop_front().expect("checked");
                self.mark_written(done);
            }
        }
        if let Err(e) = &result {
            self.fail(e);
        }
        self.wake_all();
        result
    }

    /// One DMA write of `buf` at `base` (ending at `end`), kept clear of the zeroing ahead.
    async fn write_at(
        &self,
        file: &DmaFile,
        zero: Option<&Rc<ZeroAhead>>,
        buf: glommio::io::DmaBuffer,
        base: u64,
        end: u64,
        segment: u32,
    ) -> Result<(), WalError> {
        let len = buf.len();
        let path = || self.inner.dir.join(segment_name(segment));
        if let Some(z) = zero {
            z.before_write(end).await;
        }
        #[cfg(test)]
        let journaled = self.journal().map(|j| {
            (
                j.write_issued(&path(), base, buf.as_bytes(), self.dsync()),
                j,
            )
        });
        let n = file
            .write_at(buf, base)
            .await
            .map_err(|e| WalError::io("writing WAL segment", path(), e.into()))?;
        #[cfg(test)]
        if let Some((id, j)) = journaled {
            j.write_completed(id).await;
        }
        if let Some(z) = zero {
            z.after_write(end);
        }
        if n < len {
            return Err(WalError::io(
                "writing WAL segment",
                path(),
                std::io::Error::new(std::io::ErrorKind::WriteZero, "short DMA write"),
            ));
        }
        self.inner
            .bytes_written
            .set(self.inner.bytes_written.get() + len as u64);
        Ok(())
    }

    /// Writes every tail with nothing else in flight, finishing (syncing) each segment but
    /// the last and opening the next.
    async fn flush_alone(&self) -> Result<(), WalError> {
        let target = self.appended();
        loop {
            // Snapshot the front tail; appends may grow it while the write is in flight.
            let (segment, base, len, last) = {
                let st = self.inner.state.borrow();
                let t = st.tails.front().expect("WAL always has a tail");
                (t.segment, t.base, t.bytes.len(), st.tails.len() == 1)
            };
            let (file, zero) = self.file_for(segment).await?;
            if len > 0 {
                let buf = {
                    let st = self.inner.state.borrow();
                    let t = st.tails.front().expect("WAL always has a tail");
                    t.page_buffer(&file, len)
                };
                let end = base + buf.len() as u64;
                self.write_at(&file, zero.as_ref(), buf, base, end, segment)
                    .await?;
            }
            if !last {
                // Finish the old segment for good before moving on.
                self.sync_file(&file, segment).await?;
                let mut st = self.inner.state.borrow_mut();
                st.tails.pop_front();
                st.file = None;
                continue;
            }
            let mut st = self.inner.state.borrow_mut();
            st.tails
                .front_mut()
                .expect("WAL always has a tail")
                .keep_partial_page(len);
            st.issued = st.issued.max(target);
            break;
        }
        self.mark_written(target);
        Ok(())
    }

    /// Everything before `lsn` is in the segment files (and durable, under `Always`).
    fn mark_written(&self, lsn: u64) {
        self.inner.written.set(self.inner.written.get().max(lsn));
        if self.dsync() {
            self.inner.synced.set(self.inner.synced.get().max(lsn));
        }
    }

    async fn sync_file(&self, file: &DmaFile, segment: u32) -> Result<(), WalError> {
        let path = self.inner.dir.join(segment_name(segment));
        let started = std::time::Instant::now();
        #[cfg(test)]
        let journaled = self.journal().map(|j| (j.sync_issued(&path), j));
        file.fdatasync()
            .await
            .map_err(|e| WalError::io("syncing WAL segment", &path, e.into()))?;
        #[cfg(test)]
        if let Some((id, j)) = journaled {
            j.sync_completed(id).await;
        }
        let _ = self
            .inner
            .sync_latency
            .borrow_mut()
            .record(started.elapsed().as_micros() as u64);
        self.inner.syncs.set(self.inner.syncs.get() + 1);
        Ok(())
    }

    /// The open file of `segment` and its zero-filling, creating the file (and syncing the
    /// directory) on first use.
    async fn file_for(
        &self,
        segment: u32,
    ) -> Result<(Rc<DmaFile>, Option<Rc<ZeroAhead>>), WalError> {
        if let Some((s, f, z)) = &self.inner.state.borrow().file {
            if *s == segment {
                return Ok((f.clone(), z.clone()));
            }
        }
        let path = self.inner.dir.join(segment_name(segment));
        let path = &path;
        let open = |flags| async move {
            glommio::io::OpenOptions::new()
                .create(true)
                .write(true)
                .read(true)
                .custom_flags(flags)
                .dma_open(path)
                .await
                .map(Rc::new)
                .map_err(|e| WalError::io("creating WAL segment", path, e.into()))
        };
        let file = open(if self.dsync() { libc::O_DSYNC } else { 0 }).await?;
        sync_dir(&self.inner.dir)?;
        #[cfg(test)]
        if let Some(j) = self.journal() {
            j.created(path);
        }
        // Only a new, empty file is zero-filled: zeros must never land on data.
        let empty = file.file_size().await.is_ok_and(|n| n == 0);
        let zero = if !empty {
            None
        } else if self.dsync() {
            // The zeros need no sync each (one `fdatasync` ends every step): a handle of
            // their own, without O_DSYNC.
            Some(ZeroAhead::new(open(0).await?, SEGMENT_SIZE))
        } else {
            Some(ZeroAhead::new(file.clone(), SEGMENT_SIZE))
        };
        #[cfg(test)]
        if let (Some(z), Some(j)) = (&zero, self.journal()) {
            z.set_journal(j, path.clone());
        }
        self.inner.state.borrow_mut().file = Some((segment, file.clone(), zero.clone()));
        Ok((file, zero))
    }
}

/// A histogram of microseconds from 1 µs to 1 h, 3 significant digits.
pub fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

/// Makes a new directory entry durable (a created segment must not vanish after a crash).
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io("syncing directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::super::reader::{replay_dir, ReplayVisitor};
    use super::super::record::{put_sample, put_samples_base, put_series, SampleRecord};
    use super::*;

    #[derive(Default)]
    struct Count {
        series: usize,
        samples: Vec<(u32, i64, f64)>,
    }
    impl ReplayVisitor for Count {
        fn series(&mut self, _: u32, _: &[(&str, &str)]) {
            self.series += 1;
        }
        fn sample(&mut self, s: SampleRecord) {
            self.samples.push((s.id, s.t, s.v));
        }
    }

    fn run<G, F>(f: G)
    where
        G: FnOnce() -> F + Send + 'static,
        F: std::future::Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn concurrent_commits_share_syncs_and_replay_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let wal = Wal::open(&path, 0, FsyncPolicy::Always).unwrap();
            wal.append(RecordType::Series, |b| {
                put_series(b, 0, [("__name__", "up")])
            });
            let mut tasks = Vec::new();
            for i in 0..200i64 {
                let w = wal.clone();
                tasks.push(glommio::spawn_local(async move {
                    let lsn = w.append(RecordType::Samples, |b| {
                        put_samples_base(b, i);
                        put_sample(b, i, 0, i, i as f64);
                    });
                    w.commit(lsn).await.unwrap();
                }));
            }
            for t in tasks {
                t.await;
            }
            // 200 separate flushes would write at least a page each.
            let st = wal.stats();
            assert!(
                st.bytes_written < 200 * ALIGN as u64,
                "group commit should share writes, wrote {} bytes",
                st.bytes_written
            );
        });
        let mut c = Count::default();
        let stats = replay_dir(dir.path(), &mut c, true).unwrap();
        assert_eq!(c.series, 1);
        assert_eq!(c.samples.len(), 200);
        assert_eq!(stats.truncated_bytes, 0);
        assert_eq!(stats.corrupt_records, 0);
    }

    /// A WAL in `path` whose segment 0 is open and holds series 0 (`up`), committed.
    async fn open_with_series(path: &Path, policy: FsyncPolicy) -> Wal {
        let wal = Wal::open(path, 0, policy).unwrap();
        let lsn = wal.append(RecordType::Series, |b| {
            put_series(b, 0, [("__name__", "up")])
        });
        wal.commit(lsn).await.unwrap();
        wal
    }

    /// A commit whose records are not in the write in flight issues its own at once; it
    /// leaves the partial page of the write in flight alone and starts on the next page.
    #[test]
    fn a_commit_writes_next_to_a_write_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let wal = open_with_series(&path, FsyncPolicy::Always).await;
            let sample = |i: i64| {
                wal.append(RecordType::Samples, |b| {
                    put_samples_base(b, i);
                    put_sample(b, i, 0, i, i as f64);
                })
            };
            let mut first = Box::pin(wal.commit(sample(1)));
            assert!(
                futures::poll!(&mut first).is_pending(),
                "its write is in flight"
            );
            let mut second = Box::pin(wal.commit(sample(2)));
            assert!(futures::poll!(&mut second).is_pending());
            assert_eq!(wal.inner.state.borrow().writes.len(), 2);
            let third = wal.commit(sample(3));
            let (a, b, c) = futures::join!(first, second, third);
            for r in [a, b, c] {
                r.unwrap();
            }
            assert_eq!(wal.inner.state.borrow().peak_writes, 3);
        });
        let mut c = Count::default();
        let stats = replay_dir(dir.path(), &mut c, true).unwrap();
        assert_eq!(c.series, 1);
        let ts: Vec<i64> = c.samples.iter().map(|s| s.1).collect();
        assert_eq!(ts, [1, 2, 3]);
        assert_eq!((stats.truncated_bytes, stats.corrupt_records), (0, 0));
        // The second and third writes started on fresh pages.
        let data = std::fs::read(dir.path().join(segment_name(0))).unwrap();
        for page in [1, 2] {
            assert_ne!(data[page * ALIGN..page * ALIGN + 4], [0; 4], "page {page}");
        }
    }

    /// The open flags of the WAL's current segment file, from `/proc/self/fdinfo`.
    fn segment_flags(wal: &Wal) -> i32 {
        use std::os::fd::AsRawFd;
        let fd = {
            let st = wal.inner.state.borrow();
            st.file.as_ref().expect("a segment is open").1.as_raw_fd()
        };
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .expect("flags line");
        i32::from_str_radix(flags.trim(), 8).unwrap()
    }

    #[test]
    fn only_the_always_policy_writes_o_dsync() {
        // Under `Always` an acknowledged write is durable because the segment is O_DSYNC
        // (no fdatasync follows it); the other policies must not pay for that.
        for (policy, want) in [
            (FsyncPolicy::Always, true),
            (FsyncPolicy::Never, false),
            (
                FsyncPolicy::Interval(std::time::Duration::from_secs(1)),
                false,
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().to_path_buf();
            run(move || async move {
                let wal = Wal::open(&path, 0, policy).unwrap();
                let lsn = wal.append(RecordType::Series, |b| {
                    put_series(b, 0, [("__name__", "up")])
                });
                wal.commit(lsn).await.unwrap();
                let flags = segment_flags(&wal);
                assert_eq!(flags & libc::O_DSYNC == libc::O_DSYNC, want, "{policy:?}");
                assert_ne!(flags & libc::O_DIRECT, 0);
            });
        }
    }

    #[test]
    fn partial_pages_are_rewritten_not_duplicated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let wal = Wal::open(&path, 3, FsyncPolicy::Never).unwrap();
            wal.append(RecordType::Series, |b| {
                put_series(b, 0, [("__name__", "up")])
            });
            // Many small commits: each rewrites the same partial page.
            for i in 0..2_000i64 {
                let lsn = wal.append(RecordType::Samples, |b| {
                    put_samples_base(b, 0);
                    put_sample(b, 0, 0, i, 1.0);
                });
                wal.commit(lsn).await.unwrap();
            }
            wal.sync().await.unwrap();
        });
        let mut c = Count::default();
        let stats = replay_dir(dir.path(), &mut c, true).unwrap();
        assert_eq!(stats.last_segment, Some(3));
        let ts: Vec<i64> = c.samples.iter().map(|s| s.1).collect();
        assert_eq!(ts, (0..2_000).collect::<Vec<_>>());
    }

    /// Logs series 0 and then `records` sample records of `per_record` samples each, sample
    /// `i` at time `i` with value `i`, committing each record.
    async fn write_numbered(wal: &Wal, records: i64, per_record: i64) {
        wal.append(RecordType::Series, |b| {
            put_series(b, 0, [("__name__", "up")])
        });
        for r in 0..records {
            let lsn = wal.append(RecordType::Samples, |b| {
                put_samples_base(b, r * per_record);
                for k in r * per_record..(r + 1) * per_record {
                    // Values that do not encode to zeros.
                    put_sample(b, r * per_record, 0, k, k as f64);
                }
            });
            wal.commit(lsn).await.unwrap();
        }
    }

    /// Segment 0's bytes, and where its records end (the rest is zeros).
    fn segment_and_end(dir: &Path) -> (Vec<u8>, usize) {
        let data = std::fs::read(dir.join(segment_name(0))).unwrap();
        let end = data.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        (data, end)
    }

    /// Checks that `dir` replays exactly the samples [`write_numbered`] logged.
    fn assert_replays_numbered(dir: &Path, samples: i64) {
        let mut c = Count::default();
        let stats = replay_dir(dir, &mut c, true).unwrap();
        assert_eq!((stats.truncated_bytes, stats.corrupt_records), (0, 0));
        assert_eq!(c.samples.len() as i64, samples);
        assert!(c
            .samples
            .iter()
            .enumerate()
            .all(|(i, s)| s.1 == i as i64 && s.2 == i as f64));
    }

    /// Writes run into and past the zero-filled frontier many times (about 24 MiB of records
    /// in unsynced commits of ~600 KiB, faster than the background zeroing): every record
    /// replays, and the segment is zero-filled ahead of its last record.
    #[test]
    fn zero_filling_ahead_never_overwrites_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let wal = Wal::open(&path, 0, FsyncPolicy::Never).unwrap();
            write_numbered(&wal, 40, 50_000).await;
            wal.sync().await.unwrap();
        });
        let (data, written) = segment_and_end(dir.path());
        assert!(written > 20 << 20, "{written} bytes of records");
        assert!(
            data.len() > written + (1 << 20),
            "the file ({} bytes) is zero-filled past its records ({written} bytes)",
            data.len()
        );
        assert_replays_numbered(dir.path(), 40 * 50_000);
    }

    /// Pipelined writes (four committers, ~600 KiB records) run past the zero-filled frontier
    /// many times: zeroing never lands on a write in flight, and every record replays.
    #[test]
    fn pipelined_writes_and_zero_filling_keep_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let wal = open_with_series(&path, FsyncPolicy::Never).await;
            let writers = (0..4i64).map(|w| {
                let wal = wal.clone();
                async move {
                    for r in 0..10i64 {
                        let first = (w * 10 + r) * 50_000;
                        let lsn = wal.append(RecordType::Samples, |b| {
                            put_samples_base(b, first);
                            for k in first..first + 50_000 {
                                put_sample(b, first, 0, k, k as f64);
                            }
                        });
                        wal.commit(lsn).await.unwrap();
                    }
                }
            });
            futures::future::join_all(writers).await;
            assert!(wal.inner.state.borrow().peak_writes > 1);
            wal.sync().await.unwrap();
        });
        let mut c = Count::default();
        let stats = replay_dir(dir.path(), &mut c, true).unwrap();
        assert_eq!((stats.truncated_bytes, stats.corrupt_records), (0, 0));
        let mut ts: Vec<i64> = c.samples.iter().map(|s| s.1).collect();
        ts.sort_unstable();
        assert_eq!(ts, (0..40 * 50_000).collect::<Vec<_>>());
        assert!(c.samples.iter().all(|s| s.2 == s.1 as f64));
    }

    /// A sync covers what was appended when it was called and returns while other requests
    /// go on appending and committing (the interval timer's sync under steady load).
    #[test]
    fn a_sync_returns_under_steady_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let wal = open_with_series(&path, FsyncPolicy::Never).await;
            let commits = Rc::new(Cell::new(0u32));
            let appender = {
                let (wal, commits) = (wal.clone(), commits.clone());
                glommio::spawn_local(async move {
                    for i in 0..3_000i64 {
                        let lsn = wal.append(RecordType::Samples, |b| {
                            put_samples_base(b, i);
                            put_sample(b, i, 0, i, i as f64);
                        });
                        wal.commit(lsn).await.unwrap();
                        commits.set(commits.get() + 1);
                    }
                })
            };
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
            let upto = wal.appended();
            wal.sync().await.unwrap();
            assert!(
                commits.get() < 3_000,
                "the sync returned only once the appends stopped"
            );
            assert!(wal.inner.synced.get() >= upto);
            appender.await;
        });
    }

    /// A quiet WAL (a small tenant) is zero-filled only a little ahead of its records.
    #[test]
    fn a_small_wal_carries_few_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let wal = Wal::open(&path, 0, FsyncPolicy::Always).unwrap();
            write_numbered(&wal, 100, 100).await;
            // Let a zeroing in flight finish before the files are read.
            glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
        });
        let (data, written) = segment_and_end(dir.path());
        assert!(written > 64 << 10, "{written} bytes of records");
        assert!(
            data.len() <= written + (512 << 10),
            "{} bytes on disk for {written} bytes of records",
            data.len()
        );
        assert_replays_numbered(dir.path(), 100 * 100);
    }
}
