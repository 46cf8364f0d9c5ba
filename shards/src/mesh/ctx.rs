//! What every core's work is handed: [`Ctx`] (its shard, its end of the mesh, the global
//! state) and [`Global`] (flags and shared read-only state all cores see), with the calls
//! that run work on other cores.
//!
//! Owns the cross-core call helpers (`on_core`, `on_all`, `read_all`) and the global flags.
//! Must not start executors (that is `runtime`) or know what a job does.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::LocalBoxFuture;

use super::{Job, Mesh, Reply, Unreachable};
use crate::blocks::shipping::Shippers;
use crate::blocks::LocalBlocks;
use crate::panics::{CatchPanic, Panicked};
use crate::shard::Shard;
use crate::watchdog::Watchdog;

/// State all cores can read: readiness and shutdown flags, the persisted blocks, shippers.
pub struct Global {
    pub cores: usize,
    /// Local blocks, for queries and cuts.
    pub blocks: LocalBlocks,
    /// Object-storage shippers, one per tenant with blocks.
    pub shippers: Shippers,
    pub blocks_written: AtomicU64,
    pub block_cut_failures: AtomicU64,
    /// Cores that finished replay, joined the mesh and listen (their server counts itself).
    pub ready_cores: AtomicUsize,
    /// An interim start-up listener is still open on the serving address: not ready yet, or
    /// a client told "ready" could still land on it.
    pub interim_listener: AtomicBool,
    /// Set by the signal handler: stop accepting, drain, sync, exit.
    pub shutdown: AtomicBool,
    /// Cores whose server has drained.
    pub(crate) drained: AtomicUsize,
    /// Wakes a core that sleeps through its own timers.
    pub watchdog: Arc<Watchdog>,
}

impl Global {
    /// `blocks` should be opened before the cores start: replay needs to know what is
    /// persisted already.
    pub fn new(cores: usize, blocks: LocalBlocks, shippers: Shippers) -> Self {
        Global {
            cores,
            blocks,
            shippers,
            blocks_written: AtomicU64::new(0),
            block_cut_failures: AtomicU64::new(0),
            ready_cores: AtomicUsize::new(0),
            interim_listener: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            drained: AtomicUsize::new(0),
            watchdog: Arc::new(Watchdog::new(cores)),
        }
    }

    /// Whether every core is serving (and nothing else answers on its address).
    pub fn is_ready(&self) -> bool {
        self.cores_serving() && !self.interim_listener.load(Ordering::Acquire)
    }

    /// Whether every core has reported that it serves.
    pub fn cores_serving(&self) -> bool {
        self.ready_cores.load(Ordering::Acquire) == self.cores
    }

    /// Whether shutdown was requested.
    pub fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Waits (on the calling core's timers) until shutdown is requested.
    pub async fn wait_for_shutdown(&self) {
        while !self.shutting_down() {
            glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// What a core's server gets: its shard, the mesh and the global flags.
#[derive(Clone)]
pub struct Ctx {
    pub shard: Rc<Shard>,
    pub mesh: Rc<Mesh>,
    pub global: Arc<Global>,
}

impl Ctx {
    /// This core's index.
    pub fn core(&self) -> usize {
        self.shard.id
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.global.cores
    }

    /// Runs `f` on core `core` (directly when it is this one) and returns its result.
    pub async fn on_core<R, F>(&self, core: usize, f: F) -> Result<R, Unreachable>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> LocalBoxFuture<'static, R> + Send + 'static,
    {
        if core == self.core() {
            return Ok(f(self.shard.clone()).await);
        }
        let job: Job = Box::new(move |s| {
            Box::pin(async move {
                let r: Reply = Box::new(f(s).await);
                r
            })
        });
        let reply = self.mesh.call(core, job).await?;
        // A job's reply type is fixed by the closure above; a mismatch is a bug here.
        Ok(*reply
            .downcast::<R>()
            .expect("cross-core reply has the type its job returns"))
    }

    /// Runs `f` on every core concurrently; results in core order.
    pub async fn on_all<R, F>(&self, f: F) -> Vec<Result<R, Unreachable>>
    where
        R: Send + 'static,
        F: Fn(Rc<Shard>) -> LocalBoxFuture<'static, R> + Send + Clone + 'static,
    {
        let calls = (0..self.cores()).map(|k| self.on_core(k, f.clone()));
        futures::future::join_all(calls).await
    }

    /// Runs the read `f` on every core concurrently, each part in a read zone
    /// ([`crate::panics`]): a panic fails that part, not the process. Results in core order.
    pub async fn read_all<R, F>(&self, f: F) -> Vec<Result<R, ReadFailed>>
    where
        R: Send + 'static,
        F: Fn(Rc<Shard>) -> LocalBoxFuture<'static, R> + Send + Clone + 'static,
    {
        let parts = self
            .on_all(move |shard: Rc<Shard>| {
                let part = f(shard);
                Box::pin(CatchPanic::new(part)) as LocalBoxFuture<'static, _>
            })
            .await;
        parts
            .into_iter()
            .map(|r| match r {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(p)) => Err(ReadFailed::Panicked(p)),
                Err(u) => Err(ReadFailed::Unreachable(u)),
            })
            .collect()
    }
}

/// Why one core's part of a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadFailed {
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    #[error(transparent)]
    Panicked(#[from] Panicked),
}
