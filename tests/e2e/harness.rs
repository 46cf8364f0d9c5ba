//! Starting, stopping and talking to a real `sluice` process.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_bench::prompb::{Label, Sample, TimeSeries, WriteRequest};

/// A running (or stopped) sluice process with its data directory.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    log: PathBuf,
    agent: ureq::Agent,
}

pub fn free_port() -> u16 {
    // The kernel hands a port just released by `bind(0)` out again soon (a few times in a
    // thousand calls), and the tests run in parallel: without this, two servers of one run
    // could be given the same port, and the second fails to start.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The binary the servers run: this build's, or `SLUICE_E2E_BIN` (to measure a release build
/// with these tests, as bench/RESULTS.md does).
pub fn sluice_bin() -> PathBuf {
    std::env::var_os("SLUICE_E2E_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sluice")))
}

impl Server {
    /// Starts a server with a fresh data directory.
    pub fn start(cores: usize, extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let mut s = Server {
            child: None,
            port: 0,
            data_dir,
            log: tmp.path().join("sluice.log"),
            _tmp: Some(tmp),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(60))
                .build(),
        };
        s.spawn(cores, extra);
        s
    }

    /// Starts (again) on the same data directory, on a new port.
    pub fn spawn(&mut self, cores: usize, extra: &[&str]) {
        self.spawn_unready(cores, extra);
        self.wait_ready();
    }

    /// Like [`spawn`](Self::spawn) without waiting for `/-/ready`.
    pub fn spawn_unready(&mut self, cores: usize, extra: &[&str]) {
        self.spawn_unready_on(free_port(), cores, extra);
    }

    /// Starts (again) on the same data directory and the same port as before.
    pub fn respawn_on_same_port(&mut self, cores: usize, extra: &[&str]) {
        self.spawn_unready_on(self.port, cores, extra);
        self.wait_ready();
    }

    fn spawn_unready_on(&mut self, port: u16, cores: usize, extra: &[&str]) {
        assert!(self.child.is_none(), "server already running");
        self.port = port;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(sluice_bin())
            .arg("--cores")
            .arg(cores.to_string())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning sluice");
        self.child = Some(child);
    }

    /// Waits until `/-/ready` answers 200 (panics if the process exits first).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "sluice exited during start-up ({status}); log:\n{}",
                    self.log_text()
                );
            }
            if let Ok(r) = self.agent.get(&self.url("/-/ready")).call() {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "sluice not ready; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A size field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`, ...), in bytes.
    pub fn status_bytes(&self, key: &str) -> u64 {
        let kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("proc status")
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .expect("status field");
        kib * 1024
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for exit.
    pub fn sigterm(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .expect("kill -TERM");
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "sluice did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// POSTs a remote-write body with headers; returns status and body text.
    pub fn post(&self, path: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = self.agent.post(&self.url(path));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        response(req.send_bytes(body))
    }

    /// A proper remote-write 1.0 request.
    pub fn write(&self, req: &WriteRequest) -> (u16, String) {
        self.write_bytes(&sluice_bench::encode_snappy(req), &[])
    }

    /// A remote-write 1.0 request for a tenant.
    pub fn write_tenant(&self, req: &WriteRequest, tenant: &str) -> (u16, String) {
        self.write_bytes(
            &sluice_bench::encode_snappy(req),
            &[("THANOS-TENANT", tenant)],
        )
    }

    /// Snappy body with the standard remote-write headers plus `extra`.
    pub fn write_bytes(&self, body: &[u8], extra: &[(&str, &str)]) -> (u16, String) {
        let mut h = vec![
            ("Content-Encoding", "snappy"),
            ("Content-Type", "application/x-protobuf"),
            ("X-Prometheus-Remote-Write-Version", "0.1.0"),
        ];
        h.extend_from_slice(extra);
        self.post("/api/v1/receive", body, &h)
    }

    /// GET with query parameters; returns status and parsed JSON.
    pub fn get_json(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let mut req = self.agent.get(&self.url(path));
        for (k, v) in params {
            req = req.query(k, v);
        }
        let (code, body) = response(req.call());
        let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
        (code, v)
    }

    /// `/api/v1/query` at a time in ms; asserts success and returns `data`.
    pub fn query(&self, q: &str, time_ms: i64) -> Value {
        let t = format!("{}", time_ms as f64 / 1000.0);
        let (code, v) = self.get_json("/api/v1/query", &[("query", q), ("time", &t)]);
        assert_eq!(code, 200, "query {q} failed: {v}");
        assert_eq!(v["status"], "success");
        v["data"].clone()
    }

    pub fn metrics(&self) -> String {
        let (code, body) = response(self.agent.get(&self.url("/metrics")).call());
        assert_eq!(code, 200);
        body
    }

    /// The sum of metric `name` over all its series (per core, per tenant, ...) in
    /// `/metrics`; 0 if it has none.
    pub fn metric_sum(&self, name: &str) -> u64 {
        self.metrics()
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .map(|l| {
                let v = l.rsplit(' ').next().unwrap_or_default();
                v.parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name}: {v:?} is not a count"))
            })
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failing test shows what the server said: without it a flake in CI is a guess.
        if std::thread::panicking() {
            let status = self.child.as_mut().map(|c| c.try_wait());
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "--- sluice on port {} (exited: {status:?}); last lines of its log:",
                self.port
            );
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        self.kill9();
    }
}

fn response(r: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match r {
        Ok(r) => {
            let code = r.status();
            (code, read_body(r))
        }
        Err(ureq::Error::Status(code, r)) => (code, read_body(r)),
        Err(e) => panic!("request failed: {e}"),
    }
}

fn read_body(r: ureq::Response) -> String {
    let mut s = String::new();
    let _ = r.into_reader().take(64 << 20).read_to_string(&mut s);
    s
}

/// A request of one sample per series: `labels[i]` at `t` with `values[i]`.
pub fn request(
    series: &[Vec<(String, String)>],
    t: i64,
    value: impl Fn(usize) -> f64,
) -> WriteRequest {
    WriteRequest {
        timeseries: series
            .iter()
            .enumerate()
            .map(|(i, l)| TimeSeries {
                labels: l
                    .iter()
                    .map(|(n, v)| Label {
                        name: n.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                samples: vec![Sample {
                    value: value(i),
                    timestamp: t,
                }],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Simple series `name{idx="i", job="test"}` for i in 0..n.
pub fn simple_series(name: &str, n: usize) -> Vec<Vec<(String, String)>> {
    (0..n)
        .map(|i| {
            vec![
                ("__name__".to_string(), name.to_string()),
                ("idx".to_string(), format!("{i:06}")),
                ("job".to_string(), "test".to_string()),
            ]
        })
        .collect()
}

/// Series labels → samples `(t_ms, value)`.
pub type Dump = std::collections::BTreeMap<Vec<(String, String)>, Vec<(i64, f64)>>;

/// All samples of every series matching `selector`, from a range query `selector[range]` at
/// `at_ms`, keyed by the series' labels (tenant label removed) → [(t_ms, value)].
pub fn dump(s: &Server, selector: &str, at_ms: i64, range: &str) -> Dump {
    let data = s.query(&format!("{selector}[{range}]"), at_ms);
    assert_eq!(data["resultType"], "matrix", "{data}");
    let mut out = std::collections::BTreeMap::new();
    for r in data["result"].as_array().expect("result array") {
        let labels: Vec<(String, String)> = r["metric"]
            .as_object()
            .expect("metric")
            .iter()
            .filter(|(k, _)| *k != "tenant_id")
            .map(|(k, v)| (k.clone(), v.as_str().expect("label value").to_string()))
            .collect();
        let points: Vec<(i64, f64)> = r["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|p| {
                let t = (p[0].as_f64().expect("ts") * 1000.0).round() as i64;
                let v: f64 = p[1].as_str().expect("value string").parse().expect("float");
                (t, v)
            })
            .collect();
        assert!(
            out.insert(labels, points).is_none(),
            "series returned twice"
        );
    }
    out
}

/// Sorted label pairs as the API returns them.
pub fn sorted(l: &[(String, String)]) -> Vec<(String, String)> {
    let mut v = l.to_vec();
    v.sort();
    v
}

/// WAL segment files under a data dir, sorted.
pub fn wal_segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![data_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 8 && n.bytes().all(|b| b.is_ascii_digit()))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Sealed block directories of a tenant (`<ULID>/` with `meta.json`, not the temporary
/// ones), oldest first.
pub fn sealed_blocks(data_dir: &Path, tenant: &str) -> Vec<PathBuf> {
    let dir = data_dir.join(tenant).join("blocks");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.join("meta.json").is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(".tmp"))
        })
        .collect();
    out.sort();
    out
}

/// A client without a connection pool: tests run in parallel and free ports get reused, so a
/// pooled keep-alive connection (ureq's global agent) could reach a server that has gone and
/// fail a POST, which ureq does not retry.
pub fn client() -> ureq::Agent {
    ureq::AgentBuilder::new().max_idle_connections(0).build()
}

/// A POST of a snappy-compressed protobuf body (remote write or remote read), headers set;
/// send it with `.send_bytes(body)`.
pub fn snappy_post(agent: &ureq::Agent, url: &str) -> ureq::Request {
    agent
        .post(url)
        .set("Content-Encoding", "snappy")
        .set("Content-Type", "application/x-protobuf")
}

/// A real Prometheus with its remote-write receiver on an empty data directory.
pub struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(extra_config: &str) -> Prometheus {
        Self::start_with(extra_config, |_| {})
    }

    /// Like [`start`](Self::start), with `prepare` filling the data directory first (e.g.
    /// with blocks to serve).
    pub fn start_with(extra_config: &str, prepare: impl FnOnce(&Path)) -> Prometheus {
        assert!(
            Command::new("prometheus").arg("--version").output().is_ok(),
            "prometheus is missing: install it with `apt-get install -y prometheus` (scripts/test.sh does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        prepare(&dir.path().join("data"));
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!("global:\n  scrape_interval: 1h\n  evaluation_interval: 1m\n{extra_config}"),
        )
        .expect("config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--storage.tsdb.retention.time=100y")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus");
        let p = Prometheus {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while crate::harness::client()
            .get(&p.url("/-/ready"))
            .call()
            .is_err()
        {
            assert!(Instant::now() < deadline, "prometheus not ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
