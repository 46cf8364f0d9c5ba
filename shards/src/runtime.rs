//! Starting the cores: one pinned glommio executor per core, each with its shard, its end of
//! the meshes and the caller's server future.
//!
//! Owns executor placement, start-up order (WAL layout → replay → mesh → serve), the
//! interval-fsync timer and the shutdown sequence (drain, wait for every core, sync). Must not
//! know about HTTP: the server is passed in as `serve`.

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use glommio::{LocalExecutorBuilder, Placement};
use sluice_core::{core_for_hash, series_hash};
use sluice_storage::wal::{self, FsyncPolicy, WalError};

use crate::blocks::LocalBlocks;
use crate::cut::{run_cutter, CutConfig};
use crate::mesh::{Job, Mesh, MeshBuilders, Reply, Unreachable};
use crate::panics::{CatchPanic, Panicked};
use crate::shard::{existing_tenants, Shard, ShardConfig};
use crate::shipping::Shippers;
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
    drained: AtomicUsize,
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

/// How to place and size the executors.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub shard: ShardConfig,
    /// CPUs to pin to; core k runs on `cpus[k % len]`. Empty: not pinned.
    pub cpus: Vec<usize>,
    /// io_uring registered-buffer memory per executor (bytes; kept small: `ulimit -l`).
    pub io_memory: usize,
    /// Slots per cross-core channel.
    pub channel_depth: usize,
    /// Block cutting (run by core 0).
    pub cut: CutConfig,
}

/// Start-up or runtime failure of a core.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("core {core}: {msg}")]
    Executor { core: usize, msg: String },
    #[error("cannot start the watchdog: {0}")]
    Watchdog(std::io::Error),
}

/// Runs every core until shutdown. `serve` is each core's server; it must add 1 to
/// `global.ready_cores` once it accepts connections, and return once `global.shutdown` is set
/// and its in-flight requests are answered.
pub fn run<S, Fut>(cfg: RuntimeConfig, global: Arc<Global>, serve: S) -> Result<(), RuntimeError>
where
    S: Fn(Ctx) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let cores = cfg.shard.cores;
    for tenant in existing_tenants(&cfg.shard.data_dir)? {
        // The WAL of another core count is re-routed with the routing ingest uses.
        let owner = |labels: &[(&str, &str)]| {
            core_for_hash(series_hash(&tenant, labels.iter().copied()), cores)
        };
        let dir = cfg.shard.data_dir.join(&tenant);
        let outcome = wal::layout::prepare_layout(&dir, &tenant, cores, &owner)?;
        if outcome != wal::layout::LayoutOutcome::Unchanged {
            tracing::info!(tenant, ?outcome, "WAL re-routed to the new core count");
        }
    }
    global.watchdog.start().map_err(RuntimeError::Watchdog)?;
    let shard_cfg = Arc::new(cfg.shard.clone());
    let builders = MeshBuilders::new(cores, cfg.channel_depth);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(usize, Result<(), RuntimeError>)>();
    let mut handles = Vec::new();
    for k in 0..cores {
        let placement = if cfg.cpus.is_empty() {
            Placement::Unbound
        } else {
            Placement::Fixed(cfg.cpus[k % cfg.cpus.len()])
        };
        let shard_cfg = shard_cfg.clone();
        let builders = builders.clone();
        let global = global.clone();
        let serve = serve.clone();
        let done = done_tx.clone();
        let cut = cfg.cut.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("sluice-core-{k}"))
            .io_memory(cfg.io_memory)
            .spawn(move || async move {
                let r = core_main(k, shard_cfg, builders, global, serve, cut).await;
                let _ = done.send((k, r));
            })
            .map_err(|e| RuntimeError::Executor {
                core: k,
                msg: e.to_string(),
            })?;
        handles.push(handle);
    }
    drop(done_tx);
    // The first failure ends the process: the other cores may be waiting for it in the mesh.
    for _ in 0..cores {
        match done_rx.recv() {
            Ok((_, Ok(()))) => {}
            Ok((_, Err(e))) => return Err(e),
            Err(_) => break,
        }
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

async fn core_main<S, Fut>(
    k: usize,
    cfg: Arc<ShardConfig>,
    builders: MeshBuilders,
    global: Arc<Global>,
    serve: S,
    cut: CutConfig,
) -> Result<(), RuntimeError>
where
    S: Fn(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let shard = Rc::new(Shard::open(k, cfg.clone(), global.blocks.max_times())?);
    glommio::spawn_local(global.watchdog.clone().heartbeat(k)).detach();
    let mesh = Mesh::join(builders, shard.clone()).await;
    if let FsyncPolicy::Interval(every) = cfg.fsync {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(every).await;
                if let Err(e) = shard.sync_all().await {
                    tracing::error!(core = shard.id, "interval WAL sync failed: {e}");
                }
            }
        })
        .detach();
    }
    let ctx = Ctx {
        shard: shard.clone(),
        mesh,
        global: global.clone(),
    };
    if k == 0 {
        glommio::spawn_local(run_cutter(ctx.clone(), cut)).detach();
    }
    serve(ctx).await;
    // Keep answering other cores' jobs until every core has drained its own requests.
    global.drained.fetch_add(1, Ordering::AcqRel);
    while global.drained.load(Ordering::Acquire) < global.cores {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    shard.sync_all().await?;
    tracing::info!(core = k, "WAL synced; core stopped");
    Ok(())
}
