//! Blocks: the head is cut into real Prometheus TSDB blocks that `promtool` and a real
//! Prometheus read as their own, the WAL is checkpointed behind them, data stays queryable
//! across the cut and restarts, and a crash in the middle of a block write loses nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{dump, request, sealed_blocks, simple_series, Dump, Prometheus, Server};

/// A multiple of the 2h block range, so the first block is exactly `[T0, T0 + 2h)`.
const T0: i64 = 236_112 * HOUR2;
const HOUR2: i64 = 2 * 3600 * 1000;
const STEP: i64 = 60_000;
const SERIES: usize = 40;

fn value(i: usize, t: i64) -> f64 {
    // Irregular values, so the XOR encoding has more than one case to get right.
    (i as f64) * 1000.0 + ((t - T0) / STEP) as f64 * 0.25 + if t % 7 == 0 { 0.125 } else { 0.0 }
}

/// Sends every series at every step in `[from, to)`.
fn send(s: &Server, series: &[Vec<(String, String)>], from: i64, to: i64) {
    let mut t = from;
    while t < to {
        let (code, body) = s.write(&request(series, t, |i| value(i, t)));
        assert_eq!(code, 204, "at {t}: {body}");
        t += STEP;
    }
}

/// What was sent in `[from, to)`, keyed like [`dump`].
fn expected(series: &[Vec<(String, String)>], from: i64, to: i64) -> Dump {
    series
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut l = l.clone();
            l.sort();
            let pts = (from..to)
                .step_by(STEP as usize)
                .map(|t| (t, value(i, t)))
                .collect();
            (l, pts)
        })
        .collect()
}

fn wait_for_blocks(s: &Server, n: usize) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let b = sealed_blocks(&s.data_dir, "default-tenant");
        if b.len() >= n {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "{n} block(s) not cut in time; log:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn meta(block: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(block.join("meta.json")).expect("meta.json"))
        .expect("meta.json is JSON")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn promtool() -> &'static str {
    assert!(
        Command::new("promtool").arg("--version").output().is_ok(),
        "promtool is missing: install it with `apt-get install -y prometheus` (scripts/test.sh does)"
    );
    "promtool"
}

/// `promtool tsdb dump` of a directory holding copies of `blocks` (and the empty `wal/` its
/// read-only querier wants), parsed into [`Dump`].
fn promtool_dump(blocks: &[&Path]) -> Dump {
    let tmp = tempfile::tempdir().unwrap();
    for b in blocks {
        copy_dir(b, &tmp.path().join(b.file_name().unwrap()));
    }
    std::fs::create_dir_all(tmp.path().join("wal")).unwrap();
    let out = Command::new(promtool())
        .args(["tsdb", "dump"])
        .arg(tmp.path())
        .output()
        .expect("running promtool tsdb dump");
    assert!(
        out.status.success(),
        "promtool tsdb dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Dump = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        // {__name__="x", idx="000001", job="test"} 1.5 1700006400000
        let (labels, rest) = line.rsplit_once('}').expect("labels");
        let labels: Vec<(String, String)> = labels
            .trim_start_matches('{')
            .split(", ")
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("label");
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        let mut it = rest.split_whitespace();
        let v: f64 = it.next().unwrap().parse().unwrap();
        let t: i64 = it.next().unwrap().parse().unwrap();
        got.entry(labels).or_default().push((t, v));
    }
    got
}

#[test]
fn head_is_cut_into_blocks_that_promtool_and_prometheus_read_exactly() {
    let series = simple_series("cut_test", SERIES);
    let mut s = Server::start(2, &["--label", r#"replica="r1""#]);
    // 3.5 h of data: the head spans more than 1.5 × 2 h, so [T0, T0 + 2h) is persisted.
    send(&s, &series, T0, T0 + 7 * HOUR2 / 4);
    let cut = wait_for_blocks(&s, 1);
    assert_eq!(cut.len(), 1);
    let block = &cut[0];

    let m = meta(block);
    assert_eq!(m["minTime"], T0);
    assert_eq!(m["maxTime"], T0 + HOUR2);
    assert_eq!(m["version"], 1);
    assert_eq!(m["compaction"]["level"], 1);
    assert_eq!(m["stats"]["numSeries"], SERIES);
    assert_eq!(m["stats"]["numSamples"], SERIES * 120);
    assert_eq!(m["thanos"]["labels"]["tenant_id"], "default-tenant");
    assert_eq!(m["thanos"]["labels"]["replica"], "r1");
    assert_eq!(m["thanos"]["source"], "receive");
    assert_eq!(m["thanos"]["downsample"]["resolution"], 0);
    // Two cores: each wrote its own chunk segment.
    let segments: Vec<_> = std::fs::read_dir(block.join("chunks")).unwrap().collect();
    assert_eq!(segments.len(), 2, "one chunk segment per core");
    for f in m["thanos"]["files"].as_array().unwrap() {
        let rel = f["rel_path"].as_str().unwrap();
        if let Some(size) = f["size_bytes"].as_u64() {
            assert_eq!(
                std::fs::metadata(block.join(rel)).unwrap().len(),
                size,
                "{rel}"
            );
        }
    }

    // promtool analyzes the block and dumps exactly what was sent before the boundary.
    let out = Command::new(promtool())
        .args(["tsdb", "analyze"])
        .arg(block.parent().unwrap())
        .arg(block.file_name().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool tsdb analyze: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let analysis = String::from_utf8_lossy(&out.stdout);
    assert!(
        analysis.contains(&format!("Series: {SERIES}")),
        "{analysis}"
    );
    let want_block = expected(&series, T0, T0 + HOUR2);
    assert_eq!(promtool_dump(&[block]), want_block);

    // The read API still answers the whole range: block + head.
    // Every series carries the node's external label (`--label`), as Thanos Receive shows it.
    let all = |s: &Server, end: i64| -> Dump {
        dump(s, r#"{__name__="cut_test", replica="r1"}"#, end, "6h")
            .into_iter()
            .map(|(mut labels, points)| {
                let at = labels
                    .iter()
                    .position(|l| *l == ("replica".to_string(), "r1".to_string()))
                    .expect("external label in query results");
                labels.remove(at);
                (labels, points)
            })
            .collect()
    };
    let want_all = expected(&series, T0, T0 + 7 * HOUR2 / 4);
    assert_eq!(all(&s, T0 + 7 * HOUR2 / 4), want_all);

    // Samples before the persisted range are refused as out of bounds.
    let (code, body) = s.write(&request(&series[..1], T0 + HOUR2 / 2, |_| 1.0));
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("out of bounds"), "{body}");

    // A real Prometheus serves a copy of the block through its own HTTP API.
    let prom = Prometheus::start_with("", |data| {
        copy_dir(block, &data.join(block.file_name().unwrap()))
    });
    let got = prom.dump("cut_test", T0 + HOUR2 - 1);
    assert_eq!(got, want_block);
    drop(prom);

    // Two more cuts' worth of data: the WAL segments behind the second block are replaced
    // by a checkpoint.
    send(&s, &series, T0 + 7 * HOUR2 / 4, T0 + 11 * HOUR2 / 4);
    let cut = wait_for_blocks(&s, 2);
    assert_eq!(meta(&cut[1])["minTime"], T0 + HOUR2);
    assert_eq!(meta(&cut[1])["maxTime"], T0 + 2 * HOUR2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoints(&s.data_dir).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no WAL checkpoints: {:?}",
            wal_files(&s.data_dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for c in checkpoints(&s.data_dir) {
        let n: u32 = c.extension().unwrap().to_str().unwrap().parse().unwrap();
        let dir = c.parent().unwrap();
        for seg in wal_files(dir) {
            let name = seg.file_name().unwrap().to_str().unwrap().to_string();
            if let Ok(i) = name.parse::<u32>() {
                assert!(
                    i > n,
                    "segment {name} is covered by checkpoint {n} but still there"
                );
            }
        }
    }
    assert!(
        s.metrics().contains("sluice_blocks_written_total 2"),
        "{}",
        s.metrics()
    );
    let want_all = expected(&series, T0, T0 + 11 * HOUR2 / 4);
    assert_eq!(all(&s, T0 + 11 * HOUR2 / 4), want_all);

    // A restart replays checkpoint + remaining segments; nothing is lost or duplicated.
    assert!(s.sigterm().success());
    s.spawn(1, &["--label", r#"replica="r1""#]);
    assert_eq!(all(&s, T0 + 11 * HOUR2 / 4), want_all);
    assert_eq!(
        sealed_blocks(&s.data_dir, "default-tenant").len(),
        2,
        "no block cut twice"
    );
}

#[test]
fn closed_chunks_leave_memory_for_the_spill_file_and_are_cut_from_it() {
    // Enough series that one core's closed chunks of a range fill many spill pages (64 KiB).
    let series = simple_series("spill_test", 1500);
    let s = Server::start(1, &[]);
    // 2h48m: every series closed its chunk of the first range at the boundary.
    send(&s, &series, T0, T0 + 7 * HOUR2 / 5);
    let spilled = s.metric_sum("sluice_head_chunks_spilled_bytes");
    let memory = s.metric_sum("sluice_head_chunks_memory_bytes");
    assert!(
        spilled > 4 * 65_536,
        "{spilled} bytes of closed chunks spilled"
    );
    assert!(
        memory <= 2 * 65_536,
        "{memory} bytes of closed chunks kept in memory"
    );
    let all = |s: &Server| dump(s, r#"{__name__="spill_test"}"#, T0 + 7 * HOUR2 / 4, "6h");
    assert_eq!(all(&s), expected(&series, T0, T0 + 7 * HOUR2 / 5));

    // The cut writes the block from the spilled chunks, then frees them.
    send(&s, &series, T0 + 7 * HOUR2 / 5, T0 + 7 * HOUR2 / 4);
    let cut = wait_for_blocks(&s, 1);
    assert_eq!(meta(&cut[0])["stats"]["numSamples"], 1500 * 120);
    assert_eq!(promtool_dump(&[&cut[0]]), expected(&series, T0, T0 + HOUR2));
    assert_eq!(all(&s), expected(&series, T0, T0 + 7 * HOUR2 / 4));
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.metric_sum("sluice_head_chunks_spilled_bytes") >= spilled {
        assert!(
            Instant::now() < deadline,
            "the persisted range's spilled chunks are not freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wal_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn checkpoints(data_dir: &Path) -> Vec<PathBuf> {
    wal_files(&data_dir.join("default-tenant").join("wal"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .strip_prefix("checkpoint.")
                .is_some_and(|n| n.len() == 8)
        })
        .collect()
}

#[test]
fn kill_during_block_write_leaves_no_partial_block_and_loses_nothing() {
    let series = simple_series("crash_cut", SERIES);
    let mut s = Server::start(2, &["--debug.block-write-pause", "60s"]);
    send(&s, &series, T0, T0 + 7 * HOUR2 / 4);
    // Wait until the chunks are written and the block waits to be sealed.
    let tmp_dir = s.data_dir.join("default-tenant").join("blocks");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if s.log_text().contains("pausing before sealing the block") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no block write started; log:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let partial: Vec<_> = std::fs::read_dir(&tmp_dir).unwrap().flatten().collect();
    assert!(
        partial.iter().any(|e| e
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp-for-creation")),
        "the block being written lives in a temporary directory"
    );
    s.kill9();
    assert!(
        sealed_blocks(&s.data_dir, "default-tenant").is_empty(),
        "partial block visible"
    );

    s.spawn(2, &[]);
    let want = expected(&series, T0, T0 + 7 * HOUR2 / 4);
    // Everything acknowledged is queryable (replayed from the WAL)...
    assert_eq!(
        dump(&s, r#"{__name__="crash_cut"}"#, T0 + 7 * HOUR2 / 4, "4h"),
        want
    );
    // ...and the block is written again, whole.
    let cut = wait_for_blocks(&s, 1);
    assert_eq!(cut.len(), 1);
    assert_eq!(meta(&cut[0])["stats"]["numSamples"], SERIES * 120);
    let leftovers: Vec<_> = std::fs::read_dir(&tmp_dir)
        .unwrap()
        .flatten()
        // Block directories only: the shipper writes its own state file through a `.tmp`.
        .filter(|e| e.path().is_dir() && e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(promtool_dump(&[&cut[0]]), expected(&series, T0, T0 + HOUR2));
    assert_eq!(
        dump(&s, r#"{__name__="crash_cut"}"#, T0 + 7 * HOUR2 / 4, "4h"),
        want
    );
}

/// A real Prometheus serving a data directory that holds copies of our blocks.
/// Prometheus' answers, for comparing with ours.
trait PromDump {
    fn dump(&self, name: &str, at_ms: i64) -> Dump;
}

impl PromDump for Prometheus {
    /// `name[2h]` at `at_ms` through Prometheus' query API.
    fn dump(&self, name: &str, at_ms: i64) -> Dump {
        let resp = crate::harness::client()
            .get(&self.url("/api/v1/query"))
            .query("query", &format!("{name}[2h]"))
            .query("time", &format!("{:.3}", at_ms as f64 / 1000.0))
            .call()
            .expect("prometheus query");
        let v: Value = serde_json::from_reader(resp.into_reader()).unwrap();
        assert_eq!(v["status"], "success", "{v}");
        let mut out = BTreeMap::new();
        for r in v["data"]["result"].as_array().unwrap() {
            let labels: Vec<(String, String)> = r["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let pts = r["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        (p[0].as_f64().unwrap() * 1000.0).round() as i64,
                        p[1].as_str().unwrap().parse::<f64>().unwrap(),
                    )
                })
                .collect();
            out.insert(labels, pts);
        }
        out
    }
}

#[test]
fn a_series_that_stops_and_returns_is_cut_again_after_restarts() {
    let steady = simple_series("steady", 10);
    let flaky = simple_series("flaky", 3);
    let mut s = Server::start(2, &[]);
    // The flaky series stop after an hour; the first cut persists and collects them.
    // Flaky first: `value` depends on the position in the request.
    let both = [flaky.clone(), steady.clone()].concat();
    send(&s, &both, T0, T0 + HOUR2 / 2);
    send(&s, &steady, T0 + HOUR2 / 2, T0 + 7 * HOUR2 / 4);
    wait_for_blocks(&s, 1);
    // They come back (new series ids) inside the next block's range, and the process
    // restarts twice (the second time with another core count).
    let (back, resumed) = (T0 + 5 * HOUR2 / 4, T0 + 3 * HOUR2 / 2);
    send(&s, &flaky, back, resumed);
    assert!(s.sigterm().success());
    s.spawn(2, &[]);
    assert!(s.sigterm().success());
    s.spawn(1, &[]);
    // After the restarts the same series go on: one series per label set, so the next
    // block (which holds samples from both sides of the restarts) can be sealed.
    let gap_end = T0 + 7 * HOUR2 / 4;
    send(&s, &both, gap_end, T0 + 11 * HOUR2 / 4);
    let cut = wait_for_blocks(&s, 2);
    assert!(
        !s.log_text().contains("block cut failed"),
        "{}",
        s.log_text()
    );
    let join = |parts: &[(i64, i64)]| {
        let mut d: Dump = BTreeMap::new();
        for (from, to) in parts {
            for (k, v) in expected(&flaky, *from, *to) {
                d.entry(k).or_default().extend(v);
            }
        }
        d
    };
    let got: Dump = promtool_dump(&[&cut[1]])
        .into_iter()
        .filter(|(l, _)| l.iter().any(|(_, v)| v == "flaky"))
        .collect();
    assert_eq!(got, join(&[(back, resumed), (gap_end, T0 + 2 * HOUR2)]));
    assert_eq!(
        dump(&s, r#"{__name__="flaky"}"#, T0 + 11 * HOUR2 / 4, "6h"),
        join(&[
            (T0, T0 + HOUR2 / 2),
            (back, resumed),
            (gap_end, T0 + 11 * HOUR2 / 4)
        ])
    );
}

#[test]
fn extreme_timestamps_neither_crash_nor_stall_the_cutter() {
    let s = Server::start(2, &["--tsdb.too-far-in-future.time-window", "1h"]);
    let series = simple_series("edge", 2);
    let far = i64::MAX - 1;
    let (code, body) = s.write(&request(&series, far, |_| 1.0));
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("too far in the future"), "{body}");
    // Without the window, a tenant can still write at the ends of time; the cutter copes.
    let (code, body) = s.write_tenant(&request(&series, i64::MIN + 1, |_| 1.0), "edges");
    assert_eq!(code, 204, "{body}");
    let wild = simple_series("wild", 1);
    let (code, body) = s.write_tenant(&request(&wild, 0, |_| 2.0), "edges");
    assert!(code == 204 || code == 409, "{code} {body}");
    // Meanwhile the default tenant is cut as usual.
    let steady = simple_series("steady_edge", 5);
    send(&s, &steady, T0, T0 + 7 * HOUR2 / 4);
    wait_for_blocks(&s, 1);
    assert!(s.metrics().contains("sluice_blocks_written_total"));
    assert!(!s.log_text().contains("panicked"), "{}", s.log_text());
}
