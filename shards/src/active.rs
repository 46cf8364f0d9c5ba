//! Active (head) series per tenant, summed over the node's cores: what the head-series limit
//! is checked against.
//!
//! Owns the shared counters. A core takes its tenant's counter once, when it opens the
//! tenant, and then only adds and subtracts atomically (once per batch that created series
//! and once per cut that collected some), so the write path never takes the lock here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The node's counters, by tenant.
#[derive(Debug, Default)]
pub struct ActiveSeries {
    counts: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl ActiveSeries {
    /// `tenant`'s counter (created at 0).
    pub fn counter(&self, tenant: &str) -> Arc<AtomicU64> {
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(tenant.to_string()).or_default().clone()
    }

    /// `tenant`'s active series on this node.
    pub fn get(&self, tenant: &str) -> u64 {
        let m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        m.get(tenant).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}
