//! `sluice`: the receiver binary — command line, logging, signals, and wiring the cores to
//! the HTTP server. Everything else lives in the workspace crates.

// The flags' doc comments are their `--help` text, where `<data-dir>` is the notation users
// read; rustdoc would take it for HTML.
#![allow(rustdoc::invalid_html_tags)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use sluice_objstore::{ObjstoreConfig, ShipperOptions};
use sluice_shards::{CutConfig, Global, LocalBlocks, RuntimeConfig, ShardConfig, Shippers};
use sluice_storage::block::chunks::DEFAULT_SEGMENT_SIZE;
use sluice_storage::wal::FsyncPolicy;

mod check;
mod reload;

/// Thread-per-core Prometheus remote-write receiver.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = None)]
struct Cli {
    /// Number of cores (one pinned executor each). Default: every CPU this process may use.
    #[arg(long, env = "SLUICE_CORES")]
    cores: Option<usize>,

    /// Address for the HTTP API (remote write, queries, metrics). Every core listens on it
    /// with SO_REUSEPORT.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "0.0.0.0:19291")]
    listen: SocketAddr,

    /// Directory for WALs (<data-dir>/<tenant>/wal/core-K/) and blocks
    /// (<data-dir>/<tenant>/blocks/<ULID>/).
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,

    /// When an acknowledged write is on stable storage: `always` (ack after fdatasync, group
    /// commit), `interval=<duration>` (ack after the write, fdatasync every duration, e.g.
    /// interval=1s) or `never` (leave it to the kernel). In every mode an acknowledged write
    /// survives a crash of the process (kill -9); the policy decides about power loss.
    #[arg(long, env = "SLUICE_WAL_FSYNC", default_value = "always")]
    wal_fsync: FsyncPolicy,

    /// Largest accepted remote-write request body (compressed), in bytes; larger gets 413.
    #[arg(long, env = "SLUICE_MAX_REQUEST_BYTES", default_value_t = 32 << 20)]
    max_request_bytes: usize,

    /// A client that has not sent a request's headers within this is disconnected, so that
    /// slow or stalled clients cannot hold connections open forever (`0s`: no limit).
    #[arg(
        long = "http.header-read-timeout",
        env = "SLUICE_HTTP_HEADER_READ_TIMEOUT",
        default_value = "30s",
        value_parser = parse_duration
    )]
    header_read_timeout: std::time::Duration,

    /// A request body (or a replication frame) that stalls, no bytes at all, for longer than
    /// this is dropped with its connection and its memory released (`0s`: no limit).
    #[arg(long = "http.body-read-timeout", env = "SLUICE_HTTP_BODY_READ_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    body_read_timeout: std::time::Duration,

    /// Largest accepted remote-write payload after snappy decompression, in bytes; larger
    /// gets 413.
    #[arg(long, env = "SLUICE_MAX_DECOMPRESSED_BYTES", default_value_t = 128 << 20)]
    max_decompressed_bytes: usize,

    /// HTTP header that names the tenant of a write (as Thanos Receive).
    #[arg(long, env = "SLUICE_TENANT_HEADER", default_value = "THANOS-TENANT")]
    tenant_header: String,

    /// Tenant of writes that carry no tenant header.
    #[arg(long, env = "SLUICE_DEFAULT_TENANT", default_value = "default-tenant")]
    default_tenant: String,

    /// Label that identifies the tenant in query results (and later in block external labels).
    #[arg(long, env = "SLUICE_TENANT_LABEL_NAME", default_value = "tenant_id")]
    tenant_label_name: String,

    /// Length of a TSDB block (aligned ranges; Prometheus syntax). Head chunks never cross a
    /// block boundary.
    #[arg(long = "tsdb.block-duration", env = "SLUICE_TSDB_BLOCK_DURATION", default_value = "2h", value_parser = parse_positive_duration)]
    block_duration: std::time::Duration,

    /// How long local blocks are kept after they were shipped to object storage (by their
    /// newest sample; Prometheus syntax). Unshipped blocks are never deleted.
    #[arg(long = "tsdb.retention", env = "SLUICE_TSDB_RETENTION", default_value = "15d", value_parser = parse_positive_duration)]
    retention: std::time::Duration,

    /// External label of every block this receiver writes, `name="value"` (repeatable; e.g.
    /// --label 'replica="a"'). The tenant label is added per tenant.
    #[arg(long = "label", env = "SLUICE_LABELS", value_delimiter = ',', value_parser = parse_external_label)]
    labels: Vec<(String, String)>,

    /// Test hook: wait this long after writing a block's chunks, before sealing it.
    #[arg(long = "debug.block-write-pause", hide = true, value_parser = parse_positive_duration)]
    block_write_pause: Option<std::time::Duration>,

    /// Refuse samples newer than now + this window (409), so one sample from a broken clock
    /// cannot push the head (and the block cuts) into the future. 0 disables the check, as in
    /// Thanos Receive.
    #[arg(long = "tsdb.too-far-in-future.time-window", env = "SLUICE_TSDB_TOO_FAR_IN_FUTURE", default_value = "0s", value_parser = sluice_core::parse_duration)]
    too_far_in_future: std::time::Duration,

    /// How often the hashrings and limits files are checked for changes.
    #[arg(long = "receive.hashrings-file-refresh-interval", env = "SLUICE_RECEIVE_HASHRINGS_FILE_REFRESH_INTERVAL", default_value = "5s", value_parser = parse_positive_duration)]
    hashrings_refresh: std::time::Duration,

    /// Address of the replication RPC listener (the address peers reach is what the
    /// hashrings file lists for this node). Only opened with --receive.hashrings-file.
    #[arg(
        long = "rpc-listen",
        env = "SLUICE_RPC_LISTEN",
        default_value = "0.0.0.0:10901"
    )]
    rpc_listen: SocketAddr,

    /// How long a replica may take to answer a forwarded write before it counts as failed.
    #[arg(long = "receive.forward-timeout", alias = "receive-forward-timeout", env = "SLUICE_RECEIVE_FORWARD_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    forward_timeout: std::time::Duration,

    /// Memory budget: while resident memory is at it, remote writes are answered 429
    /// (Retry-After) instead of running out of memory. `auto`: 90% of the machine's (or the
    /// cgroup's) memory; `0`: off; or a size (`8GiB`).
    #[arg(
        long = "memory-budget",
        env = "SLUICE_MEMORY_BUDGET",
        default_value = "auto"
    )]
    memory_budget: String,

    /// Memory that remote-write requests in flight may hold together (bodies, payloads,
    /// decoded series); more waits outside with 429. `auto`: a quarter of the machine's (or
    /// the cgroup's) memory; `0`: off; or a size.
    #[arg(
        long = "memory-budget.in-flight",
        env = "SLUICE_MEMORY_BUDGET_IN_FLIGHT",
        default_value = "auto"
    )]
    inflight_budget: String,

    /// Longest a query may run, waiting for a slot included (Prometheus syntax).
    #[arg(long = "query.timeout", env = "SLUICE_QUERY_TIMEOUT", default_value = "2m", value_parser = parse_positive_duration)]
    query_timeout: std::time::Duration,

    /// Most samples a query may load into memory at once; over it the query fails (422), as
    /// Prometheus'.
    #[arg(
        long = "query.max-samples",
        env = "SLUICE_QUERY_MAX_SAMPLES",
        default_value_t = 50_000_000
    )]
    query_max_samples: u64,

    /// How far back an instant selector looks for a sample (Prometheus syntax).
    #[arg(long = "query.lookback-delta", env = "SLUICE_QUERY_LOOKBACK_DELTA", default_value = "5m", value_parser = parse_positive_duration)]
    query_lookback_delta: std::time::Duration,

    /// Queries evaluated at once; more wait in line for a slot (until their timeout).
    #[arg(
        long = "query.max-concurrent",
        env = "SLUICE_QUERY_MAX_CONCURRENT",
        default_value_t = 20
    )]
    query_max_concurrent: usize,

    /// Scope every read (PromQL, series and labels APIs, remote read) to the tenant of the
    /// tenant header (the default tenant when the header is absent), as Thanos Query does.
    #[arg(long = "query.enforce-tenancy", env = "SLUICE_QUERY_ENFORCE_TENANCY", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    query_enforce_tenancy: bool,

    /// Most samples one remote read may return (0: no limit); over it the read gets 400.
    #[arg(
        long = "storage.remote.read-sample-limit",
        env = "SLUICE_STORAGE_REMOTE_READ_SAMPLE_LIMIT",
        default_value_t = 50_000_000
    )]
    remote_read_sample_limit: u64,

    /// Remote reads answered at once; more wait for a slot.
    #[arg(
        long = "storage.remote.read-concurrent-limit",
        env = "SLUICE_STORAGE_REMOTE_READ_CONCURRENT_LIMIT",
        default_value_t = 10
    )]
    remote_read_concurrent_limit: usize,

    /// Largest frame of a streamed remote-read answer, in bytes (a series larger than this
    /// goes out over several frames).
    #[arg(
        long = "storage.remote.read-max-bytes-in-frame",
        env = "SLUICE_STORAGE_REMOTE_READ_MAX_BYTES_IN_FRAME",
        default_value_t = 1_048_576
    )]
    remote_read_max_bytes_in_frame: usize,

    /// Test hook: a read whose query contains `sluice_debug_panic_<eval|select|answer>`
    /// panics there.
    #[arg(long = "debug.panics", hide = true)]
    debug_panics: bool,

    #[command(flatten)]
    files: check::ConfigFiles,

    #[command(subcommand)]
    command: Option<Command>,

    /// Pin each core's executor to its own CPU. Turn off when sharing CPUs with other busy
    /// processes.
    #[arg(long, env = "SLUICE_PIN_CORES", default_value_t = true, action = clap::ArgAction::Set)]
    pin_cores: bool,

    /// Log filter (tracing EnvFilter syntax, e.g. `info`, `sluice_net=debug`).
    #[arg(long, env = "SLUICE_LOG", default_value = "info")]
    log: String,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Checks files without starting the receiver.
    #[command(subcommand)]
    Check(CheckCommand),
}

#[derive(Debug, clap::Subcommand)]
enum CheckCommand {
    /// Validates the hashrings, limits and objstore files given (the same flags as the
    /// receiver takes) and prints what is wrong; exit status 1 if anything is.
    Config {
        #[command(flatten)]
        files: check::ConfigFiles,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    sluice_core::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_positive_duration(s: &str) -> Result<std::time::Duration, String> {
    match sluice_core::parse_duration(s) {
        Ok(d) if d.as_millis() > 0 => Ok(d),
        Ok(_) => Err("duration must be > 0".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// `name="value"` (Thanos' `--label` syntax; unquoted values are accepted too).
fn parse_external_label(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("label {s:?} must look like name=\"value\""))?;
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if !sluice_core::labels::is_valid_label_name(name.as_bytes()) {
        return Err(format!("{name:?} is not a valid label name"));
    }
    if value.is_empty() {
        return Err(format!("label {name:?} needs a non-empty value"));
    }
    Ok((name.to_string(), value.to_string()))
}

fn main() -> anyhow::Result<()> {
    sluice_shards::allocator::return_large_blocks_to_the_kernel();
    let cli = Cli::parse();
    if let Some(Command::Check(CheckCommand::Config { files })) = &cli.command {
        std::process::exit(check::run(files));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .with_context(|| format!("invalid --log filter {:?}", cli.log))?,
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    abort_on_panic();

    let cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let cores = match cli.cores {
        Some(0) => bail!("--cores must be at least 1"),
        Some(n) => n,
        None => cpus.len().max(1),
    };
    // A request's WAL records are about as large as its decompressed payload; the WAL reader
    // refuses records over 1 GiB as corrupt.
    if cli.max_decompressed_bytes > 512 << 20 {
        bail!("--max-decompressed-bytes may be at most 512 MiB (536870912)");
    }
    if cli.query_max_concurrent == 0 || cli.remote_read_concurrent_limit == 0 {
        bail!(
            "--query.max-concurrent and --storage.remote.read-concurrent-limit must be at least 1"
        );
    }
    if cli.remote_read_max_bytes_in_frame < 1024 {
        bail!("--storage.remote.read-max-bytes-in-frame must be at least 1024");
    }
    if !sluice_shards::is_valid_tenant(&cli.default_tenant) {
        bail!(
            "--default-tenant {:?} is not a valid tenant name (1-128 of [A-Za-z0-9_.-])",
            cli.default_tenant
        );
    }
    if !sluice_core::labels::is_valid_label_name(cli.tenant_label_name.as_bytes()) {
        bail!(
            "--tenant-label-name {:?} is not a valid label name",
            cli.tenant_label_name
        );
    }
    std::fs::create_dir_all(&cli.data_dir)
        .with_context(|| format!("creating data dir {}", cli.data_dir.display()))?;
    // Two processes appending to the same WAL would corrupt it.
    let lock_path = cli.data_dir.join("LOCK");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "data dir {} is in use by another sluice process",
            cli.data_dir.display()
        );
    }

    let objstore = match (&cli.files.objstore_config_file, &cli.files.objstore_config) {
        (Some(path), _) => ObjstoreConfig::from_file(path)
            .with_context(|| format!("--objstore.config-file {}", path.display()))?,
        (None, Some(yaml)) => ObjstoreConfig::from_yaml(yaml).context("--objstore.config")?,
        (None, None) => ObjstoreConfig::filesystem(cli.data_dir.join("bucket")),
    };
    let external_labels: BTreeMap<String, String> = cli.labels.iter().cloned().collect();
    if external_labels.contains_key(&cli.tenant_label_name) {
        bail!(
            "--label {} clashes with the tenant label (--tenant-label-name)",
            cli.tenant_label_name
        );
    }

    if cli.files.replication_factor == 0 {
        bail!("--receive.replication-factor must be at least 1");
    }
    let ring = match &cli.files.hashrings_file {
        Some(path) => {
            let src = reload::RingSource {
                path: path.clone(),
                algorithm: cli.files.hashrings_algorithm,
                replication_factor: cli.files.replication_factor,
                node_name: cli.files.node_name.clone(),
            };
            let (bytes, rings) = src.load()?;
            src.describe(&rings);
            let swap = Arc::new(arc_swap::ArcSwap::from_pointee(rings));
            Some((src, bytes, swap))
        }
        None if cli.files.replication_factor > 1 => {
            bail!("--receive.replication-factor > 1 needs --receive.hashrings-file")
        }
        None => None,
    };
    let limits = match &cli.files.limits_file {
        Some(path) => {
            let (bytes, limits) = reload::load_limits(path)?;
            Some((
                path.clone(),
                bytes,
                Arc::new(arc_swap::ArcSwap::from_pointee(limits)),
            ))
        }
        None => None,
    };
    let limits_swap = limits
        .as_ref()
        .map(|(_, _, s)| s.clone())
        .unwrap_or_default();
    let cluster = ring.as_ref().map(|(_, _, swap)| {
        Arc::new(sluice_net::ClusterConfig {
            node_name: cli.files.node_name.clone(),
            replication_factor: cli.files.replication_factor,
            forward_timeout: cli.forward_timeout,
            hashrings: swap.clone(),
        })
    });

    let size = |flag: &str, v: &str, auto_share: fn(u64) -> u64| match v {
        "auto" => Ok(available_memory().map_or(0, auto_share)),
        s => sluice_net::budget::parse_bytes(s).map_err(|e| anyhow::anyhow!("--{flag}: {e}")),
    };
    let budget_bytes = size("memory-budget", &cli.memory_budget, |m| m / 10 * 9)?;
    let inflight_bytes = size("memory-budget.in-flight", &cli.inflight_budget, |m| m / 4)?;
    let budget = sluice_net::budget::MemoryBudget::start(budget_bytes, inflight_bytes)
        .context("starting the RSS sampler")?;

    let blocks = LocalBlocks::open(&cli.data_dir);
    let shippers = Shippers::new(
        cli.data_dir.clone(),
        Some(objstore),
        ShipperOptions {
            retention: Some(cli.retention),
            ..ShipperOptions::default()
        },
    );
    let global = Arc::new(Global::new(cores, blocks, shippers));
    for tenant in global.blocks.tenants() {
        global.shippers.notify(&tenant);
    }
    let (reload_tx, reload_rx) = std::sync::mpsc::channel();
    spawn_signal_handler(global.clone(), reload_tx)?;

    let net = Arc::new(sluice_net::NetConfig {
        listen: cli.listen,
        max_request_bytes: cli.max_request_bytes,
        header_read_timeout: (!cli.header_read_timeout.is_zero())
            .then_some(cli.header_read_timeout),
        body_read_timeout: (!cli.body_read_timeout.is_zero()).then_some(cli.body_read_timeout),
        max_decompressed_bytes: cli.max_decompressed_bytes,
        tenant_header: cli.tenant_header.to_ascii_lowercase(),
        default_tenant: cli.default_tenant.clone(),
        limits: limits_swap,
        rpc_listen: cluster.is_some().then_some(cli.rpc_listen),
        cluster: cluster.clone(),
        // A frame carries what one request carried, re-encoded: allow twice the payload.
        max_rpc_frame_bytes: 2 * cli.max_decompressed_bytes + (1 << 20),
        budget,
        read: sluice_net::ReadConfig {
            query_timeout: cli.query_timeout,
            max_samples: cli.query_max_samples,
            lookback_delta_ms: cli.query_lookback_delta.as_millis() as i64,
            query_gate: sluice_net::api::Gate::new(cli.query_max_concurrent),
            remote_read_sample_limit: cli.remote_read_sample_limit,
            remote_read_gate: sluice_net::api::Gate::new(cli.remote_read_concurrent_limit),
            remote_read_max_bytes_in_frame: cli.remote_read_max_bytes_in_frame,
            enforce_tenancy: cli.query_enforce_tenancy,
            debug_panics: cli.debug_panics,
        },
    });
    reload::spawn(
        reload::Followed { ring, limits },
        cli.hashrings_refresh,
        reload_rx,
        global.clone(),
    )?;
    let cfg = RuntimeConfig {
        shard: ShardConfig {
            data_dir: cli.data_dir.clone(),
            cores,
            fsync: cli.wal_fsync,
            tenant_label: cli.tenant_label_name.clone(),
            block_range_ms: cli.block_duration.as_millis() as i64,
            too_far_in_future_ms: (!cli.too_far_in_future.is_zero())
                .then_some(cli.too_far_in_future.as_millis() as i64),
            active_series: Default::default(),
            external_labels: external_labels
                .iter()
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect(),
        },
        cpus: if cli.pin_cores { cpus } else { Vec::new() },
        io_memory: 1 << 20,
        channel_depth: 1024,
        cut: CutConfig {
            block_range_ms: cli.block_duration.as_millis() as i64,
            check_interval: std::time::Duration::from_secs(1),
            external_labels,
            segment_size: DEFAULT_SEGMENT_SIZE,
            pause_before_seal: cli.block_write_pause,
        },
    };
    tracing::info!(
        cores,
        data_dir = %cli.data_dir.display(),
        wal_fsync = ?cli.wal_fsync,
        memory_budget = budget_bytes,
        in_flight_budget = inflight_bytes,
        "starting sluice"
    );
    for addr in std::iter::once(cli.listen).chain(net.rpc_listen) {
        sluice_net::check_address_free(addr)
            .with_context(|| format!("cannot listen on {addr} (is another sluice running?)"))?;
    }
    // Answer 503 (not "connection refused") while the cores replay their WALs.
    let startup = sluice_net::answer_until_ready(cli.listen, global.clone())
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let result = sluice_shards::run(cfg, global.clone(), move |ctx| {
        let net = net.clone();
        async move { sluice_net::serve(ctx, net).await }
    });
    global.shippers.shutdown();
    // Also ends the interim listener if the cores failed before they were ready.
    global.shutdown.store(true, Ordering::Release);
    let _ = startup.join();
    result.context("running cores")?;
    drop(lock);
    tracing::info!("stopped");
    Ok(())
}

/// A panic in a read (a query, the series and labels APIs, remote read, `/metrics`) fails
/// that request with 500 and the process goes on: reads leave a core's state as it was, and
/// the read's zone turns the unwind into an error (`sluice_shards::panics`). Any other panic
/// ends the process. A panic on the write path may leave a core's head and WAL tail
/// disagreeing, and such a core must not acknowledge another write; a panicking task would
/// also end its core's thread alone (glommio does not catch it), leaving its listener closed
/// and its hashring partition unserved. Aborting lets the supervisor restart the receiver, and
/// the WAL replay keeps every acknowledged sample.
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        if sluice_shards::panics::in_read_zone() {
            tracing::error!(
                thread,
                "panic in a read: {info}; that request fails, the process goes on"
            );
            return;
        }
        tracing::error!(
            thread,
            "panic: {info}; aborting (a restart replays the WAL)"
        );
        std::process::abort();
    }));
}

/// Memory this process may use: the machine's, or its cgroup's limit when lower.
fn available_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
                .map(|kib| kib * 1024)
        })?;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |c| c.min(total)))
}

/// SIGTERM/SIGINT: drain and stop; a second one exits at once. SIGHUP: re-read the
/// hashrings and limits files now.
fn spawn_signal_handler(
    global: Arc<Global>,
    reload: std::sync::mpsc::Sender<()>,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    tracing::info!("SIGHUP: reloading the hashrings and limits files");
                    let _ = reload.send(());
                    continue;
                }
                if global.shutdown.swap(true, Ordering::AcqRel) {
                    tracing::warn!(signal = sig, "second signal: exiting without draining");
                    std::process::exit(130);
                }
                tracing::info!(
                    signal = sig,
                    "shutting down: draining requests, syncing WAL"
                );
            }
        })
        .context("starting signal thread")?;
    Ok(())
}
