//! `/metrics`: every core's snapshot, rendered in the Prometheus text exposition format.
//!
//! Owns metric names, help texts and label layout. Latency histograms are exported as
//! summaries (quantiles from hdrhistogram, in seconds). Must not keep state of its own.

use std::collections::BTreeMap;
use std::fmt::Write;

use std::sync::atomic::Ordering;

use hdrhistogram::Histogram;
use sluice_objstore::ShipperStats;
use sluice_shards::Global;
use sluice_shards::MetricsSnapshot;

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn per_core(
    out: &mut String,
    snaps: &[MetricsSnapshot],
    name: &str,
    kind: &str,
    help: &str,
    f: impl Fn(&MetricsSnapshot) -> u64,
) {
    header(out, name, kind, help);
    for s in snaps {
        let _ = writeln!(out, "{name}{{core=\"{}\"}} {}", s.core, f(s));
    }
}

fn summary(out: &mut String, name: &str, labels: &str, h: &Histogram<u64>) {
    let sep = if labels.is_empty() { "" } else { "," };
    for q in [0.5, 0.9, 0.99, 0.999] {
        let v = if h.is_empty() {
            f64::NAN
        } else {
            h.value_at_quantile(q) as f64 / 1e6
        };
        let _ = writeln!(out, "{name}{{{labels}{sep}quantile=\"{q}\"}} {v}");
    }
    let sum: f64 = h
        .iter_recorded()
        .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
        .sum::<f64>()
        / 1e6
        + 0.0;
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {sum}");
    let _ = writeln!(out, "{name}_count{braces} {}", h.len());
}

/// Renders all cores' snapshots.
pub fn render(snaps: &[MetricsSnapshot]) -> String {
    let mut out = String::with_capacity(8192);
    let mut requests: BTreeMap<(String, u16), u64> = BTreeMap::new();
    let mut rejections: BTreeMap<String, u64> = BTreeMap::new();
    let mut req_latency = sluice_storage_latency();
    let mut fsync_latency = sluice_storage_latency();
    for s in snaps {
        for (k, v) in &s.requests {
            *requests.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &s.rejections {
            *rejections.entry(k.clone()).or_default() += v;
        }
        let _ = req_latency.add(&s.request_latency);
        let _ = fsync_latency.add(&s.wal_fsync_latency);
    }
    header(
        &mut out,
        "sluice_http_requests_total",
        "counter",
        "HTTP requests by handler and status code.",
    );
    for ((h, c), n) in &requests {
        let _ = writeln!(
            out,
            "sluice_http_requests_total{{handler=\"{h}\",code=\"{c}\"}} {n}"
        );
    }
    header(
        &mut out,
        "sluice_remote_write_rejected_requests_total",
        "counter",
        "Remote-write requests rejected, by reason.",
    );
    for (r, n) in &rejections {
        let _ = writeln!(
            out,
            "sluice_remote_write_rejected_requests_total{{reason=\"{r}\"}} {n}"
        );
    }
    header(
        &mut out,
        "sluice_http_request_duration_seconds",
        "summary",
        "Remote-write request latency.",
    );
    summary(
        &mut out,
        "sluice_http_request_duration_seconds",
        "handler=\"receive\"",
        &req_latency,
    );
    per_core(
        &mut out,
        snaps,
        "sluice_series_received_total",
        "counter",
        "Series in decoded remote-write requests, by the core that read them.",
        |s| s.series_received,
    );
    per_core(
        &mut out,
        snaps,
        "sluice_samples_received_total",
        "counter",
        "Samples in decoded remote-write requests, by the core that read them.",
        |s| s.samples_received,
    );
    per_core(
        &mut out,
        snaps,
        "sluice_samples_appended_total",
        "counter",
        "Samples stored in the head, by owning core.",
        |s| s.samples_appended,
    );
    per_core(
        &mut out,
        snaps,
        "sluice_samples_repeated_total",
        "counter",
        "Samples that repeated a stored sample exactly (retries), by owning core.",
        |s| s.samples_repeated,
    );
    per_core(
        &mut out,
        snaps,
        "sluice_samples_rejected_total",
        "counter",
        "Samples rejected as out of order or conflicting, by owning core.",
        |s| s.samples_rejected,
    );
    per_core(
        &mut out,
        snaps,
        "sluice_head_series_created_total",
        "counter",
        "Series created in the head since start, by core.",
        |s| s.series_created,
    );
    per_core(
        &mut out,
        snaps,
        "sluice_head_series",
        "gauge",
        "Series in the head, by core.",
        |s| s.head_series,
    );
    per_core(
        &mut out,
        snaps,
        "sluice_head_samples",
        "gauge",
        "Samples in the head (since start, including replay), by core.",
        |s| s.head_samples,
    );
    per_core(
        &mut out,
        snaps,
        "sluice_head_chunks_memory_bytes",
        "gauge",
        "Bytes of closed head chunks held in memory (the pages being filled), by core.",
        |s| s.head_chunk_bytes_memory,
    );
    per_core(
        &mut out,
        snaps,
        "sluice_head_chunks_spilled_bytes",
        "gauge",
        "Bytes of closed head chunks written to the cores' spill files and read back through a map, by core.",
        |s| s.head_chunk_bytes_spilled,
    );
    per_core(
        &mut out,
        snaps,
        "sluice_head_chunks_corrupt_reads_total",
        "counter",
        "Reads of spilled head chunks that failed their checksum (a damaged spill file; block cuts stop until a restart rebuilds the head from the WAL), by core.",
        |s| s.head_chunk_corrupt_reads,
    );
    per_core(
        &mut out,
        snaps,
        "sluice_wal_bytes_written_total",
        "counter",
        "Bytes written to WAL segments (page-aligned DMA writes), by core.",
        |s| s.wal_bytes_written,
    );
    per_core(
        &mut out,
        snaps,
        "sluice_wal_fsyncs_total",
        "counter",
        "WAL fdatasync calls, by core (with --wal-fsync always, writes are O_DSYNC and syncs are rare).",
        |s| s.wal_fsyncs,
    );
    per_core(
        &mut out,
        snaps,
        "sluice_wal_replay_corrupt_records_total",
        "counter",
        "WAL records skipped during replay as unreadable or malformed (a damaged stretch counts once), by core.",
        |s| s.wal_replay_corrupt_records,
    );
    per_core(
        &mut out,
        snaps,
        "sluice_wal_corruptions_total",
        "counter",
        "Damaged WAL regions found by replay (each unreadable stretch skipped, each torn tail cut), by core.",
        |s| s.wal_corruptions,
    );
    per_core(
        &mut out,
        snaps,
        "sluice_wal_replay_unknown_series_samples_total",
        "counter",
        "Replayed WAL samples dropped because no series record before them named their series id (it was lost to damage), by core.",
        |s| s.wal_replay_unknown_series_samples,
    );
    per_core(
        &mut out,
        snaps,
        "sluice_wal_checkpoints_total",
        "counter",
        "WAL checkpoints written after block cuts (obsolete segments deleted), by core.",
        |s| s.wal_checkpoints,
    );
    per_core(
        &mut out,
        snaps,
        "sluice_cross_core_in_flight",
        "gauge",
        "Jobs sent to other cores and not answered yet, by sending core.",
        |s| s.cross_core_in_flight,
    );
    for (name, help, f) in [
        (
            "sluice_rpc_sent_bytes_total",
            "Replication RPC frame bytes sent to peer nodes, by core.",
            (|s: &MetricsSnapshot| s.rpc.sent_bytes) as fn(&MetricsSnapshot) -> u64,
        ),
        (
            "sluice_rpc_sent_samples_total",
            "Samples sent to peer nodes over the replication RPC, by core.",
            |s| s.rpc.sent_samples,
        ),
        (
            "sluice_rpc_received_bytes_total",
            "Replication RPC frame bytes received from peer nodes, by core.",
            |s| s.rpc.received_bytes,
        ),
        (
            "sluice_rpc_received_samples_total",
            "Samples received from peer nodes over the replication RPC, by core.",
            |s| s.rpc.received_samples,
        ),
        (
            "sluice_rpc_failed_calls_total",
            "Replication calls to peers without a durable answer (down, timeout, error), by core.",
            |s| s.rpc.failed_calls,
        ),
    ] {
        per_core(&mut out, snaps, name, "counter", help, f);
    }
    header(
        &mut out,
        "sluice_wal_fsync_duration_seconds",
        "summary",
        "WAL fdatasync latency.",
    );
    summary(
        &mut out,
        "sluice_wal_fsync_duration_seconds",
        "",
        &fsync_latency,
    );
    out
}

/// Node-wide block and shipping numbers.
pub fn render_blocks(out: &mut String, g: &Global) {
    let counter = |out: &mut String, name: &str, help: &str, v: u64| {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    };
    counter(
        out,
        "sluice_blocks_written_total",
        "TSDB blocks cut from the head and sealed.",
        g.blocks_written.load(Ordering::Relaxed),
    );
    counter(
        out,
        "sluice_watchdog_wakeups_total",
        "Signals that woke a core whose heartbeat was over a second late (a core parked through its own timers, or a busy one).",
        g.watchdog.wakeups.load(Ordering::Relaxed),
    );
    counter(
        out,
        "sluice_block_cut_failures_total",
        "Block cuts that failed (retried; the data stays in the head and WAL).",
        g.block_cut_failures.load(Ordering::Relaxed),
    );
    header(
        out,
        "sluice_local_blocks",
        "gauge",
        "Readable local blocks, by tenant.",
    );
    for t in g.blocks.tenants() {
        let _ = writeln!(
            out,
            "sluice_local_blocks{{tenant=\"{t}\"}} {}",
            g.blocks.for_tenant(&t).len()
        );
    }
    let stats = g.shippers.stats();
    type Field = fn(&ShipperStats) -> u64;
    let fields: [(&str, &str, &str, Field); 5] = [
        (
            "sluice_shipper_uploaded_blocks_total",
            "counter",
            "Blocks uploaded to object storage (meta.json went up).",
            |s| s.uploaded_blocks,
        ),
        (
            "sluice_shipper_uploaded_bytes_total",
            "counter",
            "Bytes uploaded to object storage.",
            |s| s.uploaded_bytes,
        ),
        (
            "sluice_shipper_failures_total",
            "counter",
            "Failed shipper passes (each followed by a backoff).",
            |s| s.failures,
        ),
        (
            "sluice_shipper_pending_blocks",
            "gauge",
            "Sealed local blocks not yet shipped.",
            |s| s.pending_blocks,
        ),
        (
            "sluice_shipper_deleted_blocks_total",
            "counter",
            "Shipped local blocks deleted by retention.",
            |s| s.deleted_blocks,
        ),
    ];
    for (name, kind, help, f) in fields {
        header(out, name, kind, help);
        for (t, s) in &stats {
            let _ = writeln!(out, "{name}{{tenant=\"{t}\"}} {}", f(s));
        }
    }
}

fn sluice_storage_latency() -> Histogram<u64> {
    sluice_storage::wal::writer::latency_histogram()
}

/// The memory budget's numbers.
pub fn render_budget(out: &mut String, b: &crate::budget::MemoryBudget) {
    for (name, kind, help, v) in [
        (
            "sluice_memory_budget_bytes",
            "gauge",
            "The memory budget (--memory-budget); 0 when off.",
            b.limit(),
        ),
        (
            "sluice_memory_budget_in_flight_bytes",
            "gauge",
            "The budget of requests in flight (--memory-budget.in-flight); 0 when off.",
            b.inflight_limit(),
        ),
        (
            "sluice_memory_reserved_bytes",
            "gauge",
            "Memory reserved by remote-write requests in flight.",
            b.reserved(),
        ),
        (
            "sluice_memory_budget_refused_total",
            "counter",
            "Remote-write requests answered 429 because the memory budget was reached.",
            b.refused.load(Ordering::Relaxed),
        ),
    ] {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
}

/// How reads fared: panics survived, reads waiting for or holding a slot.
pub fn render_reads(out: &mut String, read: &crate::ReadConfig) {
    for (name, kind, help, v) in [
        (
            "sluice_http_panics_total",
            "counter",
            "Panics caught in reads (query, series, labels, remote read, /metrics, writing an answer), once per core a read panicked on: the read answered 500 (or was cut off), the process went on.",
            sluice_shards::panics::caught(),
        ),
        (
            "sluice_queries_running",
            "gauge",
            "PromQL queries holding a --query.max-concurrent slot (running or sending their answer).",
            read.query_gate.active() as u64,
        ),
        (
            "sluice_remote_reads_running",
            "gauge",
            "Remote reads holding a --storage.remote.read-concurrent-limit slot.",
            read.remote_read_gate.active() as u64,
        ),
    ] {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
}
