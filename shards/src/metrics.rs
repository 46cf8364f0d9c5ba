//! Per-core counters and latency histograms, and their cross-core snapshot.
//!
//! Owns the numbers a core records about itself. Each core writes only its own (plain `Cell`s,
//! no atomics or locks); `/metrics` gathers a [`MetricsSnapshot`] from every core through the
//! mesh and adds them up. Must not format anything: `sluice-net` renders the text format.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use sluice_storage::wal::writer::latency_histogram;

use crate::outcome::ApplyOutcome;

/// A core's live counters.
pub struct ShardMetrics {
    samples_appended: Cell<u64>,
    samples_repeated: Cell<u64>,
    samples_rejected: Cell<u64>,
    series_created: Cell<u64>,
    /// (handler, HTTP status) → count.
    requests: RefCell<BTreeMap<(&'static str, u16), u64>>,
    /// (reason) → count of rejected requests.
    rejections: RefCell<BTreeMap<&'static str, u64>>,
    /// Request latency, µs, remote write only.
    request_latency: RefCell<Histogram<u64>>,
    series_received: Cell<u64>,
    samples_received: Cell<u64>,
    /// Jobs sent to other cores and not answered yet (maintained by the mesh).
    pub(crate) cross_core_in_flight: Cell<u64>,
    /// WAL checkpoints written after block cuts.
    pub(crate) wal_checkpoints: Cell<u64>,
    rpc: Cell<RpcCounters>,
}

/// Replication traffic of one core (both directions), in frame bytes and samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcCounters {
    pub sent_bytes: u64,
    pub sent_samples: u64,
    pub received_bytes: u64,
    pub received_samples: u64,
    /// Calls to peers that got no durable answer (down, timeout, error).
    pub failed_calls: u64,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ShardMetrics {
    pub fn new() -> Self {
        ShardMetrics {
            samples_appended: Cell::new(0),
            samples_repeated: Cell::new(0),
            samples_rejected: Cell::new(0),
            series_created: Cell::new(0),
            requests: RefCell::new(BTreeMap::new()),
            rejections: RefCell::new(BTreeMap::new()),
            request_latency: RefCell::new(latency_histogram()),
            series_received: Cell::new(0),
            samples_received: Cell::new(0),
            cross_core_in_flight: Cell::new(0),
            wal_checkpoints: Cell::new(0),
            rpc: Cell::new(RpcCounters::default()),
        }
    }

    /// Counts replication frames sent to peers.
    pub fn count_rpc_sent(&self, bytes: u64, samples: u64) {
        let mut r = self.rpc.get();
        r.sent_bytes += bytes;
        r.sent_samples += samples;
        self.rpc.set(r);
    }

    /// Counts a replication frame received from a peer.
    pub fn count_rpc_received(&self, bytes: u64, samples: u64) {
        let mut r = self.rpc.get();
        r.received_bytes += bytes;
        r.received_samples += samples;
        self.rpc.set(r);
    }

    /// Counts calls to peers that got no durable answer.
    pub fn count_rpc_failed(&self, n: u64) {
        let mut r = self.rpc.get();
        r.failed_calls += n;
        self.rpc.set(r);
    }

    pub(crate) fn count_outcome(&self, o: &ApplyOutcome) {
        add(&self.samples_appended, o.appended);
        add(&self.samples_repeated, o.repeats);
        add(&self.samples_rejected, o.rejected);
        add(&self.series_created, o.new_series);
    }

    /// Counts one HTTP request by handler and status code, with its latency in µs when given.
    pub fn count_request(&self, handler: &'static str, code: u16, latency_us: Option<u64>) {
        *self
            .requests
            .borrow_mut()
            .entry((handler, code))
            .or_default() += 1;
        if let Some(us) = latency_us {
            let _ = self.request_latency.borrow_mut().record(us.max(1));
        }
    }

    /// Counts a rejected remote-write request by reason (`bad_snappy`, `bad_protobuf`, ...).
    pub fn count_rejection(&self, reason: &'static str) {
        *self.rejections.borrow_mut().entry(reason).or_default() += 1;
    }

    /// Counts what a decoded request carried (before routing).
    pub fn count_received(&self, series: u64, samples: u64) {
        add(&self.series_received, series);
        add(&self.samples_received, samples);
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            samples_appended: self.samples_appended.get(),
            samples_repeated: self.samples_repeated.get(),
            samples_rejected: self.samples_rejected.get(),
            series_created: self.series_created.get(),
            series_received: self.series_received.get(),
            samples_received: self.samples_received.get(),
            requests: self
                .requests
                .borrow()
                .iter()
                .map(|((h, c), n)| ((h.to_string(), *c), *n))
                .collect(),
            rejections: self
                .rejections
                .borrow()
                .iter()
                .map(|(r, n)| (r.to_string(), *n))
                .collect(),
            request_latency: self.request_latency.borrow().clone(),
            cross_core_in_flight: self.cross_core_in_flight.get(),
            wal_checkpoints: self.wal_checkpoints.get(),
            rpc: self.rpc.get(),
            ..MetricsSnapshot::default()
        }
    }
}

fn add(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

/// One core's numbers at a point in time (sendable across cores).
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    pub core: usize,
    pub samples_appended: u64,
    pub samples_repeated: u64,
    pub samples_rejected: u64,
    pub series_created: u64,
    pub series_received: u64,
    pub samples_received: u64,
    pub requests: BTreeMap<(String, u16), u64>,
    pub rejections: BTreeMap<String, u64>,
    pub request_latency: Histogram<u64>,
    pub wal_fsync_latency: Histogram<u64>,
    pub wal_bytes_written: u64,
    pub wal_fsyncs: u64,
    /// WAL records replay skipped as unreadable or malformed.
    pub wal_replay_corrupt_records: u64,
    /// Damaged WAL regions replay found (stretches skipped, torn tails cut).
    pub wal_corruptions: u64,
    /// Replayed samples dropped because no series record before them named their id.
    pub wal_replay_unknown_series_samples: u64,
    pub head_series: u64,
    pub head_samples: u64,
    /// Bytes of closed head chunks in memory, and written out to spill files.
    pub head_chunk_bytes_memory: u64,
    pub head_chunk_bytes_spilled: u64,
    /// Reads of spilled head chunks that failed their checksum.
    pub head_chunk_corrupt_reads: u64,
    /// Jobs this core sent to other cores that have not been answered yet.
    pub cross_core_in_flight: u64,
    pub wal_checkpoints: u64,
    pub rpc: RpcCounters,
}

impl Default for MetricsSnapshot {
    fn default() -> Self {
        MetricsSnapshot {
            core: 0,
            samples_appended: 0,
            samples_repeated: 0,
            samples_rejected: 0,
            series_created: 0,
            series_received: 0,
            samples_received: 0,
            requests: BTreeMap::new(),
            rejections: BTreeMap::new(),
            request_latency: latency_histogram(),
            wal_fsync_latency: latency_histogram(),
            wal_bytes_written: 0,
            wal_fsyncs: 0,
            wal_replay_corrupt_records: 0,
            wal_corruptions: 0,
            wal_replay_unknown_series_samples: 0,
            head_series: 0,
            head_samples: 0,
            head_chunk_bytes_memory: 0,
            head_chunk_bytes_spilled: 0,
            head_chunk_corrupt_reads: 0,
            cross_core_in_flight: 0,
            wal_checkpoints: 0,
            rpc: RpcCounters::default(),
        }
    }
}
