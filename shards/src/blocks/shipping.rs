//! One object-storage shipper per tenant that has blocks, all uploading to the configured
//! bucket (as Thanos Receive runs one shipper per tenant TSDB; the tenant is in every
//! block's external labels, so their blocks never mix).
//!
//! Owns starting shippers (at start for tenants with blocks, on a tenant's first block),
//! waking them after a cut, their counters, and stopping them at exit. Must not upload or
//! delete anything itself: that is `sluice_objstore`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use sluice_objstore::{ObjstoreConfig, Shipper, ShipperHandle, ShipperOptions, ShipperStats};

use crate::blocks::blocks_dir;

/// The shippers of every tenant.
pub struct Shippers {
    data_dir: PathBuf,
    cfg: Option<ObjstoreConfig>,
    opts: ShipperOptions,
    running: Mutex<BTreeMap<String, ShipperHandle>>,
}

impl Shippers {
    /// Shippers for `cfg`; `None` keeps blocks local (nothing is shipped or deleted).
    pub fn new(data_dir: PathBuf, cfg: Option<ObjstoreConfig>, opts: ShipperOptions) -> Self {
        Shippers {
            data_dir,
            cfg,
            opts,
            running: Mutex::new(BTreeMap::new()),
        }
    }

    /// Makes sure `tenant`'s shipper runs and asks it to look for new blocks.
    pub fn notify(&self, tenant: &str) {
        let Some(cfg) = &self.cfg else { return };
        let mut running = self.lock();
        if let Some(h) = running.get(tenant) {
            h.notify();
            return;
        }
        let dir = blocks_dir(&self.data_dir, tenant);
        match Shipper::start(cfg, dir, self.opts.clone()) {
            Ok(h) => {
                tracing::info!(tenant, "started block shipper");
                running.insert(tenant.to_string(), h);
            }
            Err(e) => tracing::error!(tenant, "cannot start block shipper: {e}"),
        }
    }

    /// Counters per tenant.
    pub fn stats(&self) -> Vec<(String, ShipperStats)> {
        self.lock()
            .iter()
            .map(|(t, h)| (t.clone(), h.stats()))
            .collect()
    }

    /// Stops every shipper (the object in flight finishes first).
    pub fn shutdown(&self) {
        let running = std::mem::take(&mut *self.lock());
        for (_, h) in running {
            h.shutdown();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ShipperHandle>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}
