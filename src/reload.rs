//! Loading and reloading the files a running receiver follows: the hashrings file and the
//! limits file.
//!
//! Owns reading, change detection (content, polled) and the swap: a new version is parsed
//! and validated completely before it replaces the old one, so a bad edit leaves the
//! previous ring or limits in force (with an error in the log) and in-flight writes keep the
//! version they started with. SIGHUP forces a check at once. Must not interpret the files
//! (`sluice_core::hashring`, `sluice_core::limits`).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use sluice_core::hashring::{Algorithm, Hashrings};
use sluice_core::limits::Limits;
use sluice_shards::Global;

/// The hashrings file and how to validate it.
pub struct RingSource {
    pub path: PathBuf,
    pub algorithm: Algorithm,
    pub replication_factor: usize,
    pub node_name: Option<String>,
}

impl RingSource {
    /// Reads and validates the file.
    pub fn load(&self) -> anyhow::Result<(Vec<u8>, Hashrings)> {
        let bytes = std::fs::read(&self.path)
            .with_context(|| format!("reading hashrings file {}", self.path.display()))?;
        let rings = parse_rings(&bytes, self.algorithm, self.replication_factor)
            .with_context(|| format!("hashrings file {}", self.path.display()))?;
        Ok((bytes, rings))
    }

    /// Logs which rings hold this node.
    pub fn describe(&self, rings: &Hashrings) {
        let mine: Vec<&str> = rings
            .rings()
            .iter()
            .filter(|r| {
                self.node_name
                    .as_deref()
                    .is_some_and(|n| r.endpoint_index(n).is_some())
            })
            .map(|r| r.name())
            .collect();
        let endpoints: usize = rings.rings().iter().map(|r| r.endpoints().len()).sum();
        tracing::info!(
            rings = rings.rings().len(),
            endpoints,
            node = self.node_name.as_deref().unwrap_or("-"),
            rings_with_this_node = ?mine,
            "hashring loaded"
        );
        if mine.is_empty() {
            tracing::warn!(
                node = self.node_name.as_deref().unwrap_or("-"),
                "this node (--node-name) is in no ring: it only forwards writes"
            );
        }
    }
}

/// Parses rings and checks that each can hold `rf` replicas.
pub fn parse_rings(json: &[u8], algorithm: Algorithm, rf: usize) -> anyhow::Result<Hashrings> {
    let rings = Hashrings::parse(json, algorithm)?;
    rings.check_replication_factor(rf)?;
    Ok(rings)
}

/// Reads and parses a limits file.
pub fn load_limits(path: &PathBuf) -> anyhow::Result<(Vec<u8>, Limits)> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading limits file {}", path.display()))?;
    let text = std::str::from_utf8(&bytes)
        .with_context(|| format!("limits file {} is not UTF-8", path.display()))?;
    let limits = Limits::parse(text).with_context(|| format!("limits file {}", path.display()))?;
    Ok((bytes, limits))
}

/// What the reloader follows, with the content currently in force.
pub struct Followed {
    pub ring: Option<(RingSource, Vec<u8>, Arc<ArcSwap<Hashrings>>)>,
    pub limits: Option<(PathBuf, Vec<u8>, Arc<ArcSwap<Limits>>)>,
}

/// Checks the files every `every` and whenever `wake` receives (SIGHUP), until shutdown.
pub fn spawn(
    mut f: Followed,
    every: Duration,
    wake: Receiver<()>,
    global: Arc<Global>,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("sluice-reload".into())
        .spawn(move || loop {
            match wake.recv_timeout(every) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if global.shutdown.load(Ordering::Acquire) {
                return;
            }
            if let Some((src, current, swap)) = &mut f.ring {
                match src.load() {
                    Ok((bytes, _)) if bytes == *current => {}
                    Ok((bytes, rings)) => {
                        src.describe(&rings);
                        swap.store(Arc::new(rings));
                        *current = bytes;
                    }
                    Err(e) => tracing::error!(
                        "hashrings file not reloaded, the previous ring stays in force: {e:#}"
                    ),
                }
            }
            if let Some((path, current, swap)) = &mut f.limits {
                match load_limits(path) {
                    Ok((bytes, _)) if bytes == *current => {}
                    Ok((bytes, limits)) => {
                        tracing::info!(path = %path.display(), "limits reloaded");
                        swap.store(Arc::new(limits));
                        *current = bytes;
                    }
                    Err(e) => tracing::error!(
                        "limits file not reloaded, the previous limits stay in force: {e:#}"
                    ),
                }
            }
        })
        .context("starting the reload thread")?;
    Ok(())
}
