//! Zero-fills a WAL segment a few MiB ahead of its writer, in the background.
//!
//! A DMA write that extends a file changes its size and allocates blocks, so the `fdatasync`
//! that acknowledges a request must also commit the filesystem journal, and io_uring hands
//! such writes to a worker thread on the ingest core. Writing over blocks that already hold
//! zeros changes no metadata: the write completes inline and the sync is a plain cache flush
//! of the disk. Measured with two connections on one core: +26 % samples/s and −22 % CPU per
//! sample (bench/RESULTS.md). The zeros themselves are written and synced off the request
//! path, a step at a time, once per segment.
//!
//! Each step first allocates its range (`fallocate`, which also sets the file size), so that
//! the zero writes are not extending writes either. An extending write holds the inode lock
//! exclusively while it runs in io_uring's worker; a WAL write that finds the lock taken is
//! punted to the same worker queue, behind the zero writes still queued for the file — up to
//! a step's worth of them. Measured at half the peak rate: p99 7.7 ms instead of 9.7 ms
//! (bench/RESULTS.md).
//!
//! Owns only the zero-filled frontier of one open segment. Must never write over data: it
//! zeroes only past everything the writer has written or is writing (writes are pipelined:
//! each is recorded when issued, not when it completes), and the writer waits for a zeroing
//! in flight before writing past the zeroed frontier. Failures are not fatal (the writer
//! then simply extends the file as before), so they are logged and zeroing stops.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures::channel::oneshot;
use glommio::io::DmaFile;

/// Bytes zeroed per background step: half of what the segment already holds, within these
/// bounds, so that a quiet WAL (a small tenant: every (core, tenant) has one) carries little
/// more than its data on disk, and a busy one is zeroed in few, large steps.
const MIN_CHUNK: u64 = 256 << 10;
const MAX_CHUNK: u64 = 8 << 20;
/// Size of each zero write.
const WRITE: usize = 256 << 10;

/// The zero-filled frontier of one segment file.
pub(crate) struct ZeroAhead {
    file: Rc<DmaFile>,
    /// End of the zeroing: never past it.
    limit: u64,
    /// `[0, zeroed)` holds data or synced zeros.
    zeroed: Cell<u64>,
    /// End of everything the writer has issued (written or in flight).
    written: Cell<u64>,
    busy: Cell<bool>,
    stopped: Cell<bool>,
    /// The filesystem cannot `fallocate`: zero by extending writes.
    no_fallocate: Cell<bool>,
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// Test builds: the power-loss journal and the segment's path (`powercut.rs`).
    #[cfg(test)]
    journal: RefCell<Option<(Rc<super::powercut::Journal>, std::path::PathBuf)>>,
}

impl ZeroAhead {
    /// Zeroing state of a freshly created `file`, to be zeroed up to `limit` bytes.
    pub(crate) fn new(file: Rc<DmaFile>, limit: u64) -> Rc<Self> {
        Rc::new(ZeroAhead {
            file,
            limit,
            zeroed: Cell::new(0),
            written: Cell::new(0),
            busy: Cell::new(false),
            stopped: Cell::new(false),
            no_fallocate: Cell::new(false),
            waiters: RefCell::new(Vec::new()),
            #[cfg(test)]
            journal: RefCell::new(None),
        })
    }

    /// Reports the zero writes and their syncs to `journal` (see `Wal::set_journal`).
    #[cfg(test)]
    pub(crate) fn set_journal(
        &self,
        journal: Rc<super::powercut::Journal>,
        path: std::path::PathBuf,
    ) {
        *self.journal.borrow_mut() = Some((journal, path));
    }

    /// Waits until writing `[.., end)` cannot race a zeroing in flight, then records the
    /// write as issued (no later zeroing starts before `end`). Call right before issuing it.
    pub(crate) async fn before_write(&self, end: u64) {
        while self.busy.get() && end > self.zeroed.get() {
            let (tx, rx) = oneshot::channel();
            self.waiters.borrow_mut().push(tx);
            let _ = rx.await;
        }
        self.written.set(self.written.get().max(end));
    }

    /// Starts zeroing the next chunk, after a data write ending at `end` completed, if the
    /// writer is getting close to the frontier.
    pub(crate) fn after_write(self: &Rc<Self>, end: u64) {
        let start = self.zeroed.get().max(self.written.get());
        if self.busy.get() || self.stopped.get() || start >= self.limit {
            return;
        }
        let chunk = (self.written.get() / 2 / 4096 * 4096).clamp(MIN_CHUNK, MAX_CHUNK);
        // Start again when the writer is within half a step of the frontier.
        if self.zeroed.get() >= end + chunk / 2 {
            return;
        }
        let stop = (start + chunk).min(self.limit);
        self.busy.set(true);
        let me = self.clone();
        glommio::spawn_local(async move {
            match me.zero(start, stop).await {
                Ok(()) => me.zeroed.set(stop),
                Err(e) => {
                    tracing::warn!("zero-filling a WAL segment ahead failed, writes will extend it instead: {e}");
                    me.stopped.set(true);
                }
            }
            me.busy.set(false);
            for w in me.waiters.take() {
                let _ = w.send(());
            }
        })
        .detach();
    }

    async fn zero(&self, start: u64, stop: u64) -> std::io::Result<()> {
        if !self.no_fallocate.get() {
            if let Err(e) = self.file.pre_allocate(stop, false).await {
                let e = std::io::Error::from(e);
                if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                    return Err(e);
                }
                self.no_fallocate.set(true);
            }
        }
        let mut at = start;
        while at < stop {
            let len = WRITE.min((stop - at) as usize);
            let mut buf = self.file.alloc_dma_buffer(len);
            buf.as_bytes_mut().fill(0);
            #[cfg(test)]
            let journaled = self.journal.borrow().clone().map(|(j, path)| {
                let id = j.write_zeros_issued(&path, at, len);
                (id, j)
            });
            let n = self.file.write_at(buf, at).await?;
            #[cfg(test)]
            if let Some((id, j)) = journaled {
                j.write_completed(id).await;
            }
            if n < len {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    "short DMA write",
                ));
            }
            at += len as u64;
        }
        #[cfg(test)]
        let journaled = self
            .journal
            .borrow()
            .clone()
            .map(|(j, path)| (j.sync_issued(&path), j));
        self.file.fdatasync().await?;
        #[cfg(test)]
        if let Some((id, j)) = journaled {
            j.sync_completed(id).await;
        }
        Ok(())
    }
}
