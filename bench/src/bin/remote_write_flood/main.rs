//! `remote_write_flood`: a Prometheus remote-write 1.0 load generator that can saturate a
//! receiver from one core.
//!
//! This file owns the command line and the threads: per connection, one *producer* thread that
//! builds and compresses request bodies ahead of time into a bounded queue, and one *sender*
//! thread that owns one keep-alive HTTP connection and sends the queued bodies one after the
//! other, honouring the sender contract (retry 429/5xx with backoff 30 ms → 5 s, never retry
//! other 4xx). The main thread prints a progress line each second and the final report.
//! What is sent is decided in [`plan`], how bodies are built in [`encode`], what is counted and
//! printed in [`stats`].
//!
//! Why a producer thread per connection rather than encoding on the sender: while a request is
//! in flight the sender is idle, so encoding the next body then overlaps the receiver's work,
//! and the queue absorbs jitter. The report states the encode cost per sample and how long the
//! senders waited for bodies, so a run whose client was the bottleneck says so.

mod encode;
mod plan;
mod stats;

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::Parser;
use hdrhistogram::Histogram;
use sluice_bench::SeriesSet;

use encode::{LabelTable, RequestBuilder};
use plan::{backoff, churn_offset, partition, scrape_ts, Slice, SCRAPE_INTERVAL_MS};
use stats::{Counters, RunInfo, Snapshot};

const USER_AGENT: &str = concat!("sluice-remote-write-flood/", env!("CARGO_PKG_VERSION"));

/// Prometheus remote-write 1.0 load generator.
///
/// Sends realistic Kubernetes-cluster series (node_exporter, cAdvisor, kube-state-metrics
/// label sets) as snappy-compressed protobuf over keep-alive connections, with timestamps
/// advancing 15 s per round so every series arrives in order, and reports throughput, errors
/// and latency percentiles.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Remote-write endpoint.
    #[arg(long, default_value = "http://127.0.0.1:19291/api/v1/receive")]
    target: String,
    /// Active series.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    series: u64,
    /// Samples per series in each request (consecutive scrapes, 15 s apart).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    samples_per_series: u64,
    /// Samples per request (Prometheus' max_samples_per_send); rounded down to a multiple of
    /// --samples-per-series.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Keep-alive connections, each sending its own disjoint share of the series.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=1024))]
    connections: u64,
    /// How long to send, Prometheus syntax (10s, 1m, 1h30m). Default 10s unless --requests.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many requests (with a final outcome) in total.
    #[arg(long)]
    requests: Option<u64>,
    /// THANOS-TENANT header.
    #[arg(long)]
    tenant: Option<String>,
    /// New series per second: the active set slides over never-seen series at this rate.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Print the final report as JSON on stdout (the text report then goes to stderr).
    #[arg(long)]
    json: bool,
    /// Seed of the generated cluster (labels and values).
    #[arg(long, default_value_t = 0x5EED_0001)]
    seed: u64,
    /// Timestamp of the first round, ms since the epoch. Default: now, rounded down to 15 s.
    /// A receiver keeps series in order, so a second run against the same data must start
    /// after the previous run's last timestamp (printed in the report).
    #[arg(long)]
    start_ms: Option<i64>,
    /// Bodies built ahead per connection.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096))]
    queue_depth: u64,
    /// Per-attempt HTTP timeout (Prometheus' remote_timeout).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// No progress lines.
    #[arg(long, short)]
    quiet: bool,
    /// Target samples/s over all connections (0: as fast as the receiver answers). Paced
    /// open-loop per connection, the connections staggered so that requests are evenly
    /// spaced, so latency at a fixed load can be measured.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    sluice_core::parse_duration(s).map_err(|e| e.to_string())
}

/// One ready-to-send request.
struct Payload {
    /// The compressed body is `body[..len]`; the rest is spare room kept for reuse.
    body: Vec<u8>,
    len: usize,
    samples: usize,
    raw_len: usize,
    /// Newest sample timestamp in the request.
    max_ts: i64,
}

/// What every thread of the run shares.
struct Shared {
    args: Args,
    set: SeriesSet,
    labels: LabelTable,
    series_per_request: usize,
    start_ms: i64,
    /// Set by the main thread when sending starts; churn is measured from it.
    started: OnceLock<Instant>,
    deadline: OnceLock<Option<Instant>>,
    /// Requests claimed so far, against --requests.
    tickets: std::sync::atomic::AtomicU64,
    /// Producers whose queue is full: sending starts once all are.
    prefilled: AtomicUsize,
    senders_done: AtomicUsize,
    counters: Counters,
    /// Latencies since the last progress line.
    interval: Mutex<Histogram<u64>>,
}

impl Shared {
    fn past_deadline(&self, now: Instant) -> bool {
        matches!(self.deadline.get(), Some(Some(d)) if now >= *d)
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.duration.is_none() && args.requests.is_none() {
        args.duration = Some(Duration::from_secs(10));
    }
    if !(args.churn >= 0.0 && args.churn.is_finite()) {
        bail!("--churn must be a non-negative number");
    }
    let series = args.series as usize;
    let connections = (args.connections as usize).min(series);
    if connections < args.connections as usize {
        eprintln!("only {series} series: using {connections} connections");
    }
    let sps = args.samples_per_series as usize;
    let series_per_request = (args.batch as usize / sps).max(1);

    // Churn reserve: enough never-seen series for the whole run, after which windows wrap
    // around (a returning series still only gets newer timestamps). Without a duration, ten
    // minutes' worth.
    let horizon_s = args.duration.map_or(600.0, |d| d.as_secs_f64().ceil());
    let extra = (args.churn * horizon_s).ceil() as usize;
    let slices = partition(series, extra, connections);

    let t = Instant::now();
    let set = SeriesSet::new(series + extra, args.seed);
    let labels = LabelTable::new(&set);
    let start_ms = args.start_ms.unwrap_or_else(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        now - now % SCRAPE_INTERVAL_MS
    });
    if !args.quiet {
        eprintln!(
            "prepared {} series ({} active + {extra} churn reserve; encoded labels {:.1} MB) in {:.2}s; \
             {} samples/request ({series_per_request} series x {sps}), {connections} connections",
            set.len(),
            series,
            labels.heap_bytes() as f64 / 1e6,
            t.elapsed().as_secs_f64(),
            series_per_request * sps,
        );
    }

    let shared = Arc::new(Shared {
        set,
        labels,
        series_per_request,
        start_ms,
        started: OnceLock::new(),
        deadline: OnceLock::new(),
        tickets: Default::default(),
        prefilled: AtomicUsize::new(0),
        senders_done: AtomicUsize::new(0),
        counters: Counters::default(),
        interval: Mutex::new(stats::new_histogram()),
        args,
    });

    let go = Arc::new(Barrier::new(connections + 1));
    let mut producers = Vec::new();
    let mut senders = Vec::new();
    for (c, slice) in slices.into_iter().enumerate() {
        let depth = shared.args.queue_depth as usize;
        let (tx, rx) = mpsc::sync_channel::<Payload>(depth);
        // Spent bodies go back to the producer so steady state allocates nothing.
        let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<u8>>();
        let sh = shared.clone();
        producers.push(
            thread::Builder::new()
                .name(format!("produce-{c}"))
                .spawn(move || produce(&sh, slice, tx, recycle_rx))?,
        );
        let sh = shared.clone();
        let go = go.clone();
        senders.push(
            thread::Builder::new()
                .name(format!("send-{c}"))
                .spawn(move || send(&sh, c, rx, recycle_tx, &go))?,
        );
    }

    // Start the clock only once every queue is full, so the first requests do not wait for
    // encoding and the measured window is the receiver's.
    while shared.prefilled.load(Relaxed) < connections {
        if producers.iter().any(|p| p.is_finished()) {
            bail!("a producer thread stopped before sending started");
        }
        thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    let _ = shared.started.set(started);
    let _ = shared
        .deadline
        .set(shared.args.duration.map(|d| started + d));
    go.wait();

    let mut prev = Snapshot::take(&shared.counters);
    let mut last_tick = started;
    while shared.senders_done.load(Relaxed) < connections {
        thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        if now.duration_since(last_tick) >= Duration::from_secs(1) {
            let snap = Snapshot::take(&shared.counters);
            let hist = {
                let mut h = shared.interval.lock().unwrap_or_else(|e| e.into_inner());
                std::mem::replace(&mut *h, stats::new_histogram())
            };
            if !shared.args.quiet {
                eprintln!(
                    "{}",
                    stats::progress_line(now - started, prev, snap, now - last_tick, &hist)
                );
            }
            prev = snap;
            last_tick = now;
        }
    }
    let mut total = stats::new_histogram();
    for s in senders {
        let h = s
            .join()
            .map_err(|_| anyhow::anyhow!("a sender thread panicked"))??;
        total.add(h).context("merging latency histograms")?;
    }
    let elapsed = started.elapsed();
    for p in producers {
        p.join()
            .map_err(|_| anyhow::anyhow!("a producer thread panicked"))?;
    }

    let a = &shared.args;
    let info = RunInfo {
        target: a.target.clone(),
        tenant: a.tenant.clone(),
        series,
        series_per_request,
        samples_per_series: sps,
        connections,
        churn_per_s: a.churn,
        seed: a.seed,
        start_ms,
        elapsed,
    };
    let json = stats::report_json(&info, &shared.counters, &total);
    let text = stats::report_text(&json);
    if a.json {
        eprint!("{text}");
        println!("{json}");
    } else {
        print!("{text}");
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// On-CPU time of the calling thread, from the scheduler's own accounting (nanoseconds), so
/// the report can say what the client itself cost. 0 where /proc does not offer it.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Builds this connection's requests forever, round after round, until the sender hangs up.
fn produce(sh: &Shared, slice: Slice, tx: SyncSender<Payload>, recycle: Receiver<Vec<u8>>) {
    let sps = sh.args.samples_per_series as usize;
    let total_active = sh.args.series as usize;
    let depth = sh.args.queue_depth as usize;
    let mut builder = RequestBuilder::new();
    let mut queued = 0usize;
    let mut max_ts = i64::MIN;
    let mut encoded = 0u64;
    'run: for round in 0u64.. {
        // Churn is applied between rounds: within a round the window is fixed, so no series
        // is sent twice in one round nor skipped.
        let elapsed_ms = sh
            .started
            .get()
            .map_or(0, |s| s.elapsed().as_millis() as u64);
        let offset = churn_offset(elapsed_ms, sh.args.churn, slice.active, total_active);
        let first_scrape = round * sps as u64;
        for slot in 0..slice.active {
            let id = slice.id(offset, slot);
            builder.push_series(&sh.set, &sh.labels, id, sps, |k| {
                scrape_ts(sh.start_ms, first_scrape + k)
            });
            max_ts = max_ts.max(scrape_ts(sh.start_ms, first_scrape + sps as u64 - 1));
            // A request may span two rounds (the batch need not divide the slice): every
            // request then has exactly --batch samples, as Prometheus' full batches do, and a
            // series' two samples in it are still in time order.
            if builder.series() == sh.series_per_request {
                let mut body = recycle.try_recv().unwrap_or_default();
                let (samples, raw_len, len) = builder.finish(&mut body);
                encoded += samples as u64;
                let p = Payload {
                    body,
                    len,
                    samples,
                    raw_len,
                    max_ts,
                };
                if tx.send(p).is_err() {
                    break 'run;
                }
                queued += 1;
                if queued == depth {
                    sh.prefilled.fetch_add(1, Relaxed);
                }
            }
        }
    }
    let c = &sh.counters;
    c.samples_encoded.fetch_add(encoded, Relaxed);
    c.encode_cpu_ns.fetch_add(thread_cpu_ns(), Relaxed);
}

/// Sends this connection's queued requests one at a time until the run ends; returns the
/// latency histogram of its attempts.
fn send(
    sh: &Shared,
    connection: usize,
    rx: Receiver<Payload>,
    recycle: mpsc::Sender<Vec<u8>>,
    go: &Barrier,
) -> anyhow::Result<Histogram<u64>> {
    // One agent per thread holding at most one idle connection: exactly one keep-alive
    // connection per sender, as a Prometheus remote-write shard has.
    let agent = ureq::AgentBuilder::new()
        .timeout(sh.args.timeout)
        .max_idle_connections(1)
        .max_idle_connections_per_host(1)
        .redirects(0)
        .user_agent(USER_AGENT)
        .build();
    let c = &sh.counters;
    let mut hist = stats::new_histogram();
    // Time between this connection's requests under --rate.
    let pace = (sh.args.rate > 0.0).then(|| {
        let per_request = (sh.series_per_request as u64 * sh.args.samples_per_series) as f64;
        Duration::from_secs_f64(per_request * sh.args.connections as f64 / sh.args.rate)
    });
    go.wait();
    // Under --rate the connections start staggered by a share of the pace, so requests reach
    // the receiver evenly spaced at the aggregate rate. Started together, they would arrive
    // in bursts of `connections` every pace, and every burst queues on the receiver: that
    // measures the burst, not the rate.
    let mut next_send = Instant::now()
        + pace.map_or(Duration::ZERO, |p| {
            p.mul_f64(connection as f64 / sh.args.connections as f64)
        });
    let result = (|| -> anyhow::Result<()> {
        loop {
            if let Some(pace) = pace {
                let now = Instant::now();
                if next_send > now {
                    thread::sleep(next_send - now);
                }
                // Behind schedule: send at once, but do not bank a burst to catch up.
                next_send = next_send.max(now) + pace;
            }
            if sh.past_deadline(Instant::now()) {
                return Ok(());
            }
            if let Some(max) = sh.args.requests {
                if sh.tickets.fetch_add(1, Relaxed) >= max {
                    return Ok(());
                }
            }
            let p = match rx.try_recv() {
                Ok(p) => p,
                Err(TryRecvError::Disconnected) => return Ok(()),
                Err(TryRecvError::Empty) => {
                    let wait = Instant::now();
                    let Ok(p) = rx.recv() else { return Ok(()) };
                    c.starved_ns
                        .fetch_add(wait.elapsed().as_nanos() as u64, Relaxed);
                    p
                }
            };
            send_one(sh, &agent, &p, &mut hist)?;
            let _ = recycle.send(p.body);
        }
    })();
    c.send_cpu_ns.fetch_add(thread_cpu_ns(), Relaxed);
    sh.senders_done.fetch_add(1, Relaxed);
    result.map(|()| hist)
}

/// One request to its final outcome: accepted, dropped (non-retryable 4xx) or abandoned (the
/// run ended while retrying).
fn send_one(
    sh: &Shared,
    agent: &ureq::Agent,
    p: &Payload,
    hist: &mut Histogram<u64>,
) -> anyhow::Result<()> {
    let c = &sh.counters;
    for attempt in 0u32.. {
        if attempt > 0 {
            // Sleep the backoff, but never past the end of the run.
            let delay = backoff(attempt - 1);
            let wake = Instant::now() + delay;
            let wake = match sh.deadline.get() {
                Some(Some(d)) => wake.min(*d),
                _ => wake,
            };
            thread::sleep(wake.saturating_duration_since(Instant::now()));
            if sh.past_deadline(Instant::now()) {
                c.abandoned.fetch_add(1, Relaxed);
                return Ok(());
            }
            c.retries.fetch_add(1, Relaxed);
        }
        let mut req = agent
            .post(&sh.args.target)
            .set("Content-Encoding", "snappy")
            .set("Content-Type", "application/x-protobuf")
            .set("X-Prometheus-Remote-Write-Version", "0.1.0");
        if let Some(t) = &sh.args.tenant {
            req = req.set("THANOS-TENANT", t);
        }
        let t0 = Instant::now();
        let res = req.send_bytes(&p.body[..p.len]);
        c.attempts.fetch_add(1, Relaxed);
        let status = match res {
            Ok(resp) => {
                let code = resp.status();
                // Read to the end so ureq returns the connection to its pool (keep-alive).
                std::io::copy(&mut resp.into_reader(), &mut std::io::sink())
                    .context("reading an answer")
                    .ok();
                Some(code)
            }
            Err(ureq::Error::Status(code, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                c.note_error(code.to_string(), || body);
                Some(code)
            }
            Err(ureq::Error::Transport(e)) => {
                c.transport_errors.fetch_add(1, Relaxed);
                c.note_error("transport".into(), || e.to_string());
                None
            }
        };
        let Some(code) = status else { continue };
        // Only attempts that were answered surely crossed the wire in full.
        c.wire_bytes.fetch_add(p.len as u64, Relaxed);
        c.raw_bytes.fetch_add(p.raw_len as u64, Relaxed);
        let us = (t0.elapsed().as_micros() as u64).clamp(1, 60_000_000);
        hist.record(us)?;
        sh.interval
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(us)?;
        if let Some(n) = c.status.get(code as usize) {
            n.fetch_add(1, Relaxed);
        }
        match code {
            200..=299 => {
                c.requests_ok.fetch_add(1, Relaxed);
                c.samples_ok.fetch_add(p.samples as u64, Relaxed);
                c.max_ts_ok.fetch_max(p.max_ts.max(0) as u64, Relaxed);
                return Ok(());
            }
            // The sender contract: 429 and 5xx are the receiver's trouble, retry them.
            429 | 500..=599 => continue,
            // Any other answer (4xx, or a redirect not followed) will not change on a retry.
            _ => {
                c.dropped.fetch_add(1, Relaxed);
                return Ok(());
            }
        }
    }
    unreachable!("the attempt loop only ends by returning")
}
