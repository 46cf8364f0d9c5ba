//! The cluster: several real `sluice` processes on loopback forming a hashring, replicating
//! over the binary RPC with a write quorum.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{dump, free_port, request, simple_series, Server};

/// Nodes of one ring file, each with its own data dir and a fixed RPC port.
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Server>,
    args: Vec<Vec<String>>,
    pub(crate) endpoints: Vec<String>,
    ring: PathBuf,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes; `ring` builds the hashrings JSON from the endpoints.
    pub(crate) fn start(
        n: usize,
        rf: usize,
        extra: &[&str],
        ring: impl Fn(&[String]) -> Value,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let endpoints: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let ring_path = dir.path().join("hashrings.json");
        std::fs::write(&ring_path, ring(&endpoints).to_string()).expect("ring file");
        let args: Vec<Vec<String>> = endpoints
            .iter()
            .map(|ep| {
                let mut a: Vec<String> = [
                    "--pin-cores",
                    "false",
                    "--rpc-listen",
                    ep,
                    "--node-name",
                    ep,
                    "--receive.hashrings-file",
                    ring_path.to_str().expect("utf-8 path"),
                    "--receive.replication-factor",
                    &rf.to_string(),
                    "--receive.forward-timeout",
                    "2s",
                    "--receive.hashrings-file-refresh-interval",
                    "300ms",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                a.extend(extra.iter().map(|s| s.to_string()));
                a
            })
            .collect();
        let nodes = args
            .iter()
            .map(|a| {
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                Server::start(1, &a)
            })
            .collect();
        Cluster {
            nodes,
            args,
            endpoints,
            ring: ring_path,
            dir,
        }
    }

    fn restart(&mut self, i: usize) {
        let a: Vec<&str> = self.args[i].iter().map(String::as_str).collect();
        self.nodes[i].spawn(1, &a);
    }

    /// Rewrites the ring file and waits until every running node logged a ring with
    /// `endpoints` endpoints in total.
    fn reload_ring(&self, ring: Value, endpoints: usize) {
        std::fs::write(self.dir.path().join("ring.tmp"), ring.to_string()).expect("ring");
        std::fs::rename(self.dir.path().join("ring.tmp"), &self.ring).expect("ring");
        let want = format!("hashring loaded rings=1 endpoints={endpoints} ");
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &self.nodes {
            signal(n, "HUP");
            while !n.log_text().contains(&want) {
                assert!(
                    Instant::now() < deadline,
                    "ring not reloaded:\n{}",
                    n.log_text()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn default_ring(endpoints: &[String]) -> Value {
    json!([{ "hashring": "default", "endpoints": endpoints }])
}

fn signal(s: &Server, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(s.pid().to_string())
        .status()
        .expect("kill");
    assert!(st.success());
}

/// Sum of `sluice_head_series` over a node's cores.
fn head_series(s: &Server) -> u64 {
    s.metric_sum("sluice_head_series")
}

/// Series of a node matching `selector` (any time), as label maps.
fn series_of(s: &Server, selector: &str) -> Vec<Value> {
    let (code, v) = s.get_json(
        "/api/v1/series",
        &[("match[]", selector), ("start", "0"), ("end", "4000000000")],
    );
    assert_eq!(code, 200, "{v}");
    v["data"].as_array().expect("data").clone()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

#[test]
fn three_replicas_every_node_answers_with_every_series() {
    let c = Cluster::start(3, 3, &["--label", r#"receive_replica="r""#], default_ring);
    let t = now_ms() - 60_000;
    let series = simple_series("replicated", 300);
    // Writes through each node in turn: each request's series land on all three.
    for (i, n) in c.nodes.iter().enumerate() {
        let part = &series[i * 100..(i + 1) * 100];
        let (code, body) = n.write(&request(part, t, |k| (i * 100 + k) as f64));
        assert_eq!(code, 204, "{body}");
    }
    for n in &c.nodes {
        let got = dump(n, "replicated", t + 1000, "1m");
        assert_eq!(got.len(), 300, "node {} holds {} series", n.port, got.len());
        for (labels, points) in &got {
            let idx: usize = labels
                .iter()
                .find(|(k, _)| k == "idx")
                .map(|(_, v)| v.parse().expect("idx"))
                .expect("idx label");
            assert_eq!(points, &vec![(t, idx as f64)]);
        }
        assert_eq!(head_series(n), 300);
        // The replica's external label is on every series it answers with.
        let found = series_of(n, r#"{__name__="replicated", receive_replica="r"}"#);
        assert_eq!(found.len(), 300);
        assert!(found.iter().all(|s| s["receive_replica"] == "r"));
    }
    // Bytes on the RPC: every node sent what it received to the two others.
    let m = c.nodes[0].metrics();
    assert!(
        m.contains("sluice_rpc_sent_samples_total{core=\"0\"} 200"),
        "{m}"
    );
}

#[test]
fn quorum_holds_with_one_node_down_and_fails_with_two() {
    let mut c = Cluster::start(3, 3, &[], default_ring);
    let series = simple_series("quorum", 50);
    let t0 = now_ms() - 600_000;
    let mut acked = Vec::new();
    let mut t = t0;
    let send =
        |c: &Cluster, t: i64| c.nodes[0].write(&request(&series, t, |i| (t + i as i64) as f64));
    for _ in 0..3 {
        t += 1000;
        let (code, body) = send(&c, t);
        assert_eq!(code, 204, "{body}");
        acked.push(t);
    }
    c.nodes[2].kill9();
    for _ in 0..3 {
        t += 1000;
        let (code, body) = send(&c, t);
        assert_eq!(code, 204, "one replica down must not fail writes: {body}");
        acked.push(t);
    }
    c.nodes[1].kill9();
    t += 1000;
    let t_failed = t;
    let (code, body) = send(&c, t_failed);
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains(&c.endpoints[1]) && body.contains(&c.endpoints[2]),
        "503 must name the failing peers: {body}"
    );
    assert!(body.contains("quorum"), "{body}");

    c.restart(1);
    c.restart(2);
    // The sender retries the failed request until it succeeds (the peers reconnect with
    // backoff); a retry stores nothing twice.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = send(&c, t_failed);
        if code == 204 {
            break;
        }
        assert_eq!(code, 503, "{body}");
        assert!(Instant::now() < deadline, "writes never recovered: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    acked.push(t_failed);
    for _ in 0..3 {
        t += 1000;
        let (code, body) = send(&c, t);
        assert_eq!(code, 204, "{body}");
        acked.push(t);
    }

    // Every acknowledged sample is on the node that stayed up, once, and on a quorum.
    let dumps: Vec<_> = c
        .nodes
        .iter()
        .map(|n| dump(n, "quorum", t + 1000, "1h"))
        .collect();
    assert_eq!(dumps[0].len(), 50);
    for (labels, points) in &dumps[0] {
        let ts: Vec<i64> = points.iter().map(|p| p.0).collect();
        assert_eq!(ts, acked, "node 0, {labels:?}");
        for &at in &acked {
            let holders = dumps
                .iter()
                .filter(|d| {
                    d.get(labels)
                        .is_some_and(|p| p.iter().any(|(x, _)| *x == at))
                })
                .count();
            assert!(
                holders >= 2,
                "sample at {at} of {labels:?} on {holders} nodes"
            );
        }
    }
}

#[test]
fn a_stopped_peer_costs_at_most_the_timeout() {
    let mut c = Cluster::start(3, 3, &[], default_ring);
    let series = simple_series("stopped", 20);
    let mut t = now_ms() - 600_000;
    signal(&c.nodes[2], "STOP");
    for _ in 0..3 {
        t += 1000;
        let started = Instant::now();
        let (code, body) = c.nodes[0].write(&request(&series, t, |_| 1.0));
        assert_eq!(code, 204, "{body}");
        // Quorum (node 0 and node 1) answers; the stopped peer is not waited for. The bound
        // is generous (a shared CI machine): a hang would take the client's 60 s timeout.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
    // With node 1 gone too, the write fails once the stopped peer's timeout (2 s) expires.
    c.nodes[1].kill9();
    t += 1000;
    let started = Instant::now();
    let (code, body) = c.nodes[0].write(&request(&series, t, |_| 1.0));
    let took = started.elapsed();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no reply within"), "{body}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    signal(&c.nodes[2], "CONT");
    c.restart(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = c.nodes[0].write(&request(&series, t, |_| 1.0));
        if code == 204 {
            break;
        }
        assert!(Instant::now() < deadline, "writes never recovered: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Writes 100k series through node 0 in requests of 5000, at `t`.
fn write_100k(c: &Cluster, t: i64) {
    let series = simple_series("placed", 100_000);
    for part in series.chunks(5000) {
        let (code, body) = c.nodes[0].write(&request(part, t, |_| 1.0));
        assert_eq!(code, 204, "{body}");
    }
}

fn placement(algorithm: &str) -> (Vec<u64>, f64) {
    // Five nodes run; the first ring names four of them (the fifth only forwards).
    let c = Cluster::start(5, 1, &["--receive.hashrings-algorithm", algorithm], |eps| {
        default_ring(&eps[..4])
    });
    let t = now_ms() - 600_000;
    write_100k(&c, t);
    let split: Vec<u64> = c.nodes.iter().map(head_series).collect();
    assert_eq!(split.iter().sum::<u64>(), 100_000, "{split:?}");
    assert_eq!(split[4], 0);
    // Add the fifth node and write the same series again: a series that moved now exists
    // on two nodes, so the head total grows by the number of moved series.
    c.reload_ring(default_ring(&c.endpoints), 5);
    write_100k(&c, t + 15_000);
    let total: u64 = c.nodes.iter().map(head_series).sum();
    let moved = (total - 100_000) as f64 / 100_000.0;
    (split, moved)
}

#[test]
fn hashmod_and_ketama_split_evenly_and_ketama_moves_a_fifth() {
    for algorithm in ["hashmod", "ketama"] {
        let (split, moved) = placement(algorithm);
        println!(
            "{algorithm}: 100000 series on 4 nodes: {:?}; adding a 5th node moved {:.1}% of the series",
            &split[..4],
            moved * 100.0
        );
        for n in &split[..4] {
            assert!(
                (22_500..=27_500).contains(n),
                "{algorithm}: {split:?} is not within ±10% of 25000"
            );
        }
        if algorithm == "ketama" {
            assert!(moved <= 0.25, "ketama moved {moved}");
            assert!(
                moved >= 0.15,
                "ketama moved only {moved}: did the ring change?"
            );
        } else {
            // hashmod re-deals almost everything (a series stays only if h mod 4 = h mod 5).
            assert!(moved > 0.6, "hashmod moved {moved}");
        }
    }
}

#[test]
fn tenants_on_their_own_rings_stay_apart_and_limits_answer_429() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = dir.path().join("limits.yml");
    std::fs::write(
        &limits,
        "write:\n  tenants:\n    team-a:\n      head_series_limit: 40\n",
    )
    .expect("limits");
    let limits_arg = limits.to_str().expect("path").to_string();
    let c = Cluster::start(
        3,
        1,
        &["--receive.limits-config-file", &limits_arg],
        |eps| {
            json!([
                { "hashring": "a", "tenants": ["team-a"], "endpoints": [eps[0], eps[1]] },
                { "hashring": "b", "tenants": ["team-b-*"], "tenant_matcher_type": "glob",
                  "endpoints": [{ "address": eps[2] }] },
                { "hashring": "rest", "endpoints": eps },
            ])
        },
    );
    let t = now_ms() - 60_000;
    // team-a written through node 2, which is not in its ring: it forwards everything.
    let (code, body) =
        c.nodes[2].write_tenant(&request(&simple_series("apart", 100), t, |_| 1.0), "team-a");
    assert_eq!(code, 204, "{body}");
    let (code, body) = c.nodes[0].write_tenant(
        &request(&simple_series("apart", 30), t, |_| 2.0),
        "team-b-x",
    );
    assert_eq!(code, 204, "{body}");

    let count = |i: usize, tenant: &str| {
        series_of(&c.nodes[i], &format!("{{tenant_id=\"{tenant}\"}}")).len()
    };
    assert_eq!(count(2, "team-a"), 0);
    let (a0, a1) = (count(0, "team-a"), count(1, "team-a"));
    assert_eq!(a0 + a1, 100);
    assert!(a0 > 0 && a1 > 0, "{a0} {a1}");
    assert_eq!(count(2, "team-b-x"), 30);
    assert_eq!(count(0, "team-b-x") + count(1, "team-b-x"), 0);

    // team-a now has ~50 active series on each of its nodes, over its limit of 40.
    let (code, body) = c.nodes[0].write_tenant(
        &request(&simple_series("more", 10), t + 1000, |_| 1.0),
        "team-a",
    );
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("limit"), "{body}");
    // Other tenants are not limited.
    let (code, body) = c.nodes[0].write_tenant(
        &request(&simple_series("more", 10), t + 1000, |_| 1.0),
        "team-b-y",
    );
    assert_eq!(code, 204, "{body}");

    // A broken ring file is refused on reload and the previous ring stays.
    std::fs::write(&c.ring, "[{\"hashring\": ").expect("ring");
    for n in &c.nodes {
        signal(n, "HUP");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c.nodes[0]
        .log_text()
        .contains("previous ring stays in force")
    {
        assert!(Instant::now() < deadline, "{}", c.nodes[0].log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, body) = c.nodes[1].write_tenant(
        &request(&simple_series("apart", 30), t + 2000, |_| 3.0),
        "team-b-x",
    );
    assert_eq!(code, 204, "{body}");
    assert_eq!(count(2, "team-b-x"), 30);
}

#[test]
fn check_config_names_what_is_wrong_without_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.json");
    let bad = dir.path().join("bad.json");
    let limits = dir.path().join("limits.yml");
    std::fs::write(
        &good,
        r#"[{"hashring":"r","endpoints":["a:1","b:1","c:1"]}]"#,
    )
    .expect("write");
    std::fs::write(&bad, r#"[{"hashring":"r","endpoints":["a:1","a:1"]}]"#).expect("write");
    std::fs::write(&limits, "write:\n  default:\n    head_series: 5\n").expect("write");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["check", "config"])
            .args(args)
            .output()
            .expect("run sluice check config");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let g = good.to_str().expect("path");
    let (code, out) = run(&[
        "--receive.hashrings-file",
        g,
        "--receive.replication-factor",
        "3",
        "--node-name",
        "b:1",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("OK") && out.contains("\"b:1\" found"), "{out}");
    let (code, out) = run(&[
        "--receive.hashrings-file",
        bad.to_str().expect("path"),
        "--receive.limits-config-file",
        limits.to_str().expect("path"),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("ERROR") && out.contains("a:1"), "{out}");
    assert!(
        out.contains("head_series"),
        "unknown limits key must be named: {out}"
    );
    let (code, _) = run(&[]);
    assert_eq!(code, Some(2));
}
