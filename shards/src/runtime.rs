//! Starting the cores: one pinned glommio executor per core, each with its shard, its end of
//! the meshes and the caller's server future.
//!
//! Owns executor placement, start-up order (WAL layout → replay → mesh → serve), the
//! interval-fsync timer and the shutdown sequence (drain, wait for every core, sync). Must not
//! know about HTTP: the server is passed in as `serve`.

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use sluice_core::{core_for_hash, series_hash};
use sluice_storage::wal::{self, FsyncPolicy, WalError};

use crate::config::ShardConfig;
use crate::cut::{run_cutter, CutConfig};
use crate::mesh::{Ctx, Global, Mesh, MeshBuilders};
use crate::shard::Shard;
use crate::tenant::existing_tenants;

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
