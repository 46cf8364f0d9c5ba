//! What the flood measured: counters shared by every thread, latency histograms, and the
//! per-second progress line and final report (text and JSON) made from them.
//!
//! Owns the meaning of every reported figure, so the text and the JSON cannot drift apart:
//! - *samples* count only samples of requests answered 2xx (what the receiver accepted);
//! - *requests* are logical requests with a final outcome; *attempts* are HTTP exchanges,
//!   retries included; *wire bytes* are the compressed bodies of every answered attempt;
//! - *latency* is per attempt that got an HTTP answer, from the first byte sent to the
//!   answer read, in microseconds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds up to a minute; slower answers are clamped, and a
/// request timeout ends an attempt long before that anyway.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Counters every sender and producer thread adds to; read by the progress loop.
pub struct Counters {
    pub samples_ok: AtomicU64,
    pub requests_ok: AtomicU64,
    pub attempts: AtomicU64,
    pub wire_bytes: AtomicU64,
    pub raw_bytes: AtomicU64,
    /// Attempts answered 429/5xx or failed in transport, each followed by a retry.
    pub retries: AtomicU64,
    /// Requests given up because the answer was a non-retryable 4xx.
    pub dropped: AtomicU64,
    /// Requests given up because the run ended while they were still being retried.
    pub abandoned: AtomicU64,
    /// Connect/read/write failures (no HTTP status).
    pub transport_errors: AtomicU64,
    /// Answers by status code, 2xx included.
    pub status: [AtomicU64; 600],
    /// Time senders waited for a body to be built: non-zero means the client's encoding, not
    /// the receiver, limited the rate.
    pub starved_ns: AtomicU64,
    /// CPU time of the producer threads (building and compressing bodies).
    pub encode_cpu_ns: AtomicU64,
    pub samples_encoded: AtomicU64,
    /// CPU time of the sender threads (HTTP).
    pub send_cpu_ns: AtomicU64,
    /// Newest sample timestamp acknowledged, so a later run can start after it.
    pub max_ts_ok: AtomicU64,
    /// First answer body (or transport error) seen per status, to show *why* it failed.
    pub first_error: Mutex<BTreeMap<String, String>>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            samples_ok: AtomicU64::new(0),
            requests_ok: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            wire_bytes: AtomicU64::new(0),
            raw_bytes: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            transport_errors: AtomicU64::new(0),
            status: std::array::from_fn(|_| AtomicU64::new(0)),
            starved_ns: AtomicU64::new(0),
            encode_cpu_ns: AtomicU64::new(0),
            samples_encoded: AtomicU64::new(0),
            send_cpu_ns: AtomicU64::new(0),
            max_ts_ok: AtomicU64::new(0),
            first_error: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Counters {
    /// Records the first error message of a kind; later ones of the same kind are dropped so
    /// a flood of errors costs no more than a map lookup.
    pub fn note_error(&self, kind: String, message: impl FnOnce() -> String) {
        let mut map = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(kind).or_insert_with(|| {
            let m = message();
            let m = m.trim();
            // Cut on a character boundary: answers may be any UTF-8.
            let end = m.char_indices().nth(300).map_or(m.len(), |(i, _)| i);
            m[..end].to_string()
        });
    }

    /// Answers that were not 2xx, by status.
    pub fn error_statuses(&self) -> BTreeMap<u16, u64> {
        self.statuses()
            .into_iter()
            .filter(|(code, _)| !(200..300).contains(code))
            .collect()
    }

    /// Every answer, by status.
    pub fn statuses(&self) -> BTreeMap<u16, u64> {
        self.status
            .iter()
            .enumerate()
            .filter_map(|(code, n)| {
                let n = n.load(Relaxed);
                (n > 0).then_some((code as u16, n))
            })
            .collect()
    }

    fn errors(&self) -> u64 {
        self.error_statuses().values().sum::<u64>() + self.transport_errors.load(Relaxed)
    }
}

/// A point-in-time copy of the counters the progress line shows.
#[derive(Clone, Copy, Default)]
pub struct Snapshot {
    samples: u64,
    requests: u64,
    wire: u64,
    errors: u64,
}

impl Snapshot {
    pub fn take(c: &Counters) -> Self {
        Snapshot {
            samples: c.samples_ok.load(Relaxed),
            requests: c.requests_ok.load(Relaxed),
            wire: c.wire_bytes.load(Relaxed),
            errors: c.errors(),
        }
    }
}

/// One progress line: rates over the interval since `prev`, p99 of the interval's attempts.
pub fn progress_line(
    at: Duration,
    prev: Snapshot,
    now: Snapshot,
    interval: Duration,
    hist: &Histogram<u64>,
) -> String {
    let secs = interval.as_secs_f64().max(1e-9);
    let rate = |a: u64, b: u64| (b - a) as f64 / secs;
    format!(
        "[{:>5.1}s] {:>10.0} samples/s {:>7.0} req/s {:>7.1} MB/s  p99 {:>8}  errors {} (total {})",
        at.as_secs_f64(),
        rate(prev.samples, now.samples),
        rate(prev.requests, now.requests),
        rate(prev.wire, now.wire) / 1e6,
        if hist.is_empty() {
            "-".to_string()
        } else {
            fmt_us(hist.value_at_quantile(0.99))
        },
        now.errors - prev.errors,
        now.errors,
    )
}

/// A latency in microseconds as `812µs`, `3.41ms` or `1.203s`.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.3}s", us as f64 / 1e6)
    }
}

/// Everything the final report needs besides the counters.
pub struct RunInfo {
    pub target: String,
    pub tenant: Option<String>,
    pub series: usize,
    pub series_per_request: usize,
    pub samples_per_series: usize,
    pub connections: usize,
    pub churn_per_s: f64,
    pub seed: u64,
    pub start_ms: i64,
    pub elapsed: Duration,
}

/// The final report as JSON, for scripts (`bench/compare`).
pub fn report_json(info: &RunInfo, c: &Counters, hist: &Histogram<u64>) -> serde_json::Value {
    let secs = info.elapsed.as_secs_f64().max(1e-9);
    let samples = c.samples_ok.load(Relaxed);
    let encoded = c.samples_encoded.load(Relaxed);
    let encode_ns = c.encode_cpu_ns.load(Relaxed);
    let q = |q: f64| (!hist.is_empty()).then(|| hist.value_at_quantile(q) as f64 / 1e3);
    let map = |m: BTreeMap<u16, u64>| {
        m.into_iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
            .collect::<serde_json::Map<_, _>>()
    };
    let max_ts = c.max_ts_ok.load(Relaxed);
    serde_json::json!({
        "target": info.target,
        "tenant": info.tenant,
        "series": info.series,
        "samples_per_series": info.samples_per_series,
        "samples_per_request": info.series_per_request * info.samples_per_series,
        "connections": info.connections,
        "churn_per_s": info.churn_per_s,
        "seed": info.seed,
        "start_ms": info.start_ms,
        "last_ts_ms": (max_ts > 0).then_some(max_ts as i64),
        "elapsed_s": secs,
        "samples": samples,
        "samples_per_s": samples as f64 / secs,
        "requests": c.requests_ok.load(Relaxed),
        "requests_per_s": c.requests_ok.load(Relaxed) as f64 / secs,
        "attempts": c.attempts.load(Relaxed),
        "wire_bytes": c.wire_bytes.load(Relaxed),
        "wire_bytes_per_s": c.wire_bytes.load(Relaxed) as f64 / secs,
        "uncompressed_bytes": c.raw_bytes.load(Relaxed),
        "status": map(c.statuses()),
        "errors": map(c.error_statuses()),
        "transport_errors": c.transport_errors.load(Relaxed),
        "retries": c.retries.load(Relaxed),
        "dropped": c.dropped.load(Relaxed),
        "abandoned": c.abandoned.load(Relaxed),
        "first_error": &*c.first_error.lock().unwrap_or_else(|e| e.into_inner()),
        "latency_ms": {
            "count": hist.len(),
            "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999),
            "max": (!hist.is_empty()).then(|| hist.max() as f64 / 1e3),
            "mean": (!hist.is_empty()).then(|| hist.mean() / 1e3),
        },
        "client": {
            "encode_cpu_s": encode_ns as f64 / 1e9,
            "send_cpu_s": c.send_cpu_ns.load(Relaxed) as f64 / 1e9,
            "encode_ns_per_sample": (encoded > 0).then(|| encode_ns as f64 / encoded as f64),
            "starved_s": c.starved_ns.load(Relaxed) as f64 / 1e9,
        },
    })
}

/// The final report as text, from the JSON so both always say the same.
pub fn report_text(j: &serde_json::Value) -> String {
    let f = |k: &str| j[k].as_f64().unwrap_or(0.0);
    let lat = &j["latency_ms"];
    let ms = |k: &str| {
        lat[k]
            .as_f64()
            .map_or("-".to_string(), |v| fmt_us((v * 1e3).round() as u64))
    };
    let client = &j["client"];
    let cf = |k: &str| client[k].as_f64().unwrap_or(0.0);
    let elapsed = f("elapsed_s");
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "remote_write_flood -> {}{}",
        j["target"].as_str().unwrap_or(""),
        j["tenant"]
            .as_str()
            .map_or(String::new(), |t| format!(" (tenant {t})"))
    ));
    line(format!(
        "  load        {} series, {} samples/request ({} per series), {} connections, churn {}/s, {elapsed:.2}s",
        j["series"], j["samples_per_request"], j["samples_per_series"], j["connections"], j["churn_per_s"]
    ));
    line(format!(
        "  samples/s   {:.0}   ({} samples accepted)",
        f("samples_per_s"),
        j["samples"]
    ));
    line(format!(
        "  requests/s  {:.1}   ({} ok, {} attempts)",
        f("requests_per_s"),
        j["requests"],
        j["attempts"]
    ));
    let wire = f("wire_bytes");
    line(format!(
        "  wire        {:.2} MB/s   ({:.1} MB sent, snappy ratio {:.2}x)",
        f("wire_bytes_per_s") / 1e6,
        wire / 1e6,
        f("uncompressed_bytes") / wire.max(1.0)
    ));
    line(format!(
        "  latency     p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {}, {} answers)",
        ms("p50"),
        ms("p90"),
        ms("p99"),
        ms("p999"),
        ms("max"),
        ms("mean"),
        lat["count"]
    ));
    line(format!("  status      {}", j["status"]));
    line(format!(
        "  errors      {} by status, {} transport; {} retries, {} dropped (4xx), {} abandoned at end",
        j["errors"], j["transport_errors"], j["retries"], j["dropped"], j["abandoned"]
    ));
    if let Some(m) = j["first_error"].as_object().filter(|m| !m.is_empty()) {
        for (k, v) in m {
            line(format!("  first {k:<6}{}", v.as_str().unwrap_or("")));
        }
    }
    let per_sample = cf("encode_ns_per_sample");
    line(format!(
        "  client      encode {:.0} ns/sample (one core builds {:.2}M samples/s), encode cpu {:.2}s, send cpu {:.2}s, senders starved {:.2}s",
        per_sample,
        if per_sample > 0.0 { 1e3 / per_sample } else { 0.0 },
        cf("encode_cpu_s"),
        cf("send_cpu_s"),
        cf("starved_s"),
    ));
    line(format!(
        "  data        timestamps from {} to {} (ms); start a later run against the same data after it",
        j["start_ms"], j["last_ts_ms"]
    ));
    out
}
