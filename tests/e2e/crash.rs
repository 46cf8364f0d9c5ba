//! Durability with real processes: kill -9 mid-stream, torn WAL tails, restarts with another
//! core count, SIGTERM.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{dump, request, simple_series, sorted, wal_segments, Server};

const T0: i64 = 1_700_000_000_000;
const STEP: i64 = 15_000;

/// Writes request `i` (every series at `T0 + i*STEP`, value `i`) for i in `range`.
fn write_rounds(s: &Server, series: &[Vec<(String, String)>], range: std::ops::Range<i64>) {
    for i in range {
        let (code, body) = s.write(&request(series, T0 + i * STEP, |_| i as f64));
        assert_eq!(code, 204, "round {i}: {body}");
    }
}

/// Every series has exactly the rounds in `rounds`, in order, with value = round.
fn assert_rounds(
    s: &Server,
    name: &str,
    series: &[Vec<(String, String)>],
    rounds: std::ops::Range<i64>,
) {
    let at = T0 + rounds.end * STEP;
    let got = dump(s, name, at, "1d");
    assert_eq!(got.len(), series.len(), "series count");
    let want: Vec<(i64, f64)> = rounds.map(|i| (T0 + i * STEP, i as f64)).collect();
    for l in series {
        assert_eq!(got[&sorted(l)], want, "series {l:?}");
    }
}

#[test]
fn kill_9_during_writes_loses_no_acknowledged_sample() {
    let mut s = Server::start(2, &["--wal-fsync", "always"]);
    let series = simple_series("crash_metric", 200);
    let acked = Arc::new(AtomicI64::new(-1));
    let url = s.url("/api/v1/receive");
    let writer = {
        let acked = acked.clone();
        let series = series.clone();
        std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .build();
            for i in 0..100_000i64 {
                let body =
                    sluice_bench::encode_snappy(&request(&series, T0 + i * STEP, |_| i as f64));
                let r = crate::harness::snappy_post(&agent, &url).send_bytes(&body);
                match r {
                    Ok(resp) if resp.status() == 204 => acked.store(i, Ordering::SeqCst),
                    _ => return i,
                }
            }
            100_000
        })
    };
    while acked.load(Ordering::SeqCst) < 150 {
        std::thread::sleep(Duration::from_millis(5));
    }
    s.kill9();
    let stopped_at = writer.join().unwrap();
    let last_acked = acked.load(Ordering::SeqCst);
    assert!(stopped_at > last_acked);
    s.spawn(2, &["--wal-fsync", "always"]);
    let got = dump(&s, "crash_metric", T0 + (stopped_at + 1) * STEP, "1d");
    assert_eq!(got.len(), series.len());
    for l in &series {
        let points = &got[&sorted(l)];
        // Every acknowledged round, once, in order; the unacknowledged in-flight round may or
        // may not have made it.
        assert!(
            points.len() as i64 == last_acked + 1 || points.len() as i64 == last_acked + 2,
            "{} points, last acked round {last_acked}",
            points.len()
        );
        for (i, (t, v)) in points.iter().enumerate() {
            assert_eq!((*t, *v), (T0 + i as i64 * STEP, i as f64), "series {l:?}");
        }
    }
    // The restarted server takes the next rounds and keeps them across another restart.
    write_rounds(&s, &series, stopped_at + 1..stopped_at + 3);
    s.kill9();
    s.spawn(2, &[]);
    let got = dump(&s, "crash_metric", T0 + (stopped_at + 3) * STEP, "1d");
    for l in &series {
        let points = &got[&sorted(l)];
        assert_eq!(points.last().unwrap().0, T0 + (stopped_at + 2) * STEP);
    }
}

#[test]
fn a_torn_wal_tail_is_repaired_on_restart() {
    let mut s = Server::start(1, &[]);
    let series = simple_series("torn_metric", 20);
    write_rounds(&s, &series, 0..30);
    s.kill9();
    // Tear the last record: cut the segment a few bytes before the end of its data (DMA
    // writes pad the last page with zeros, so the data ends before the file does).
    let seg = wal_segments(&s.data_dir)
        .into_iter()
        .rfind(|p| std::fs::metadata(p).unwrap().len() > 0)
        .expect("a WAL segment");
    let data = std::fs::read(&seg).unwrap();
    let end = data.iter().rposition(|b| *b != 0).unwrap() + 1;
    std::fs::write(&seg, &data[..end - 5]).unwrap();
    s.spawn(1, &[]);
    assert!(s.log_text().contains("torn write"), "{}", s.log_text());
    // The torn round (the last one) is gone; everything before it is intact.
    assert_rounds(&s, "torn_metric", &series, 0..29);
    // The repaired log takes new writes, and they survive another crash.
    write_rounds(&s, &series, 29..35);
    s.kill9();
    s.spawn(1, &[]);
    assert_rounds(&s, "torn_metric", &series, 0..35);
    assert!(s.metrics().contains("sluice_head_series{core=\"0\"} 20"));
}

#[test]
fn restart_with_another_core_count_keeps_all_data() {
    let mut s = Server::start(2, &[]);
    let series = simple_series("recore_metric", 300);
    write_rounds(&s, &series, 0..10);
    assert!(s.sigterm().success());
    s.spawn(1, &[]);
    assert_rounds(&s, "recore_metric", &series, 0..10);
    write_rounds(&s, &series, 10..15);
    assert!(s.sigterm().success());
    s.spawn(3, &[]);
    assert_rounds(&s, "recore_metric", &series, 0..15);
    write_rounds(&s, &series, 15..20);
    s.kill9();
    s.spawn(2, &[]);
    assert_rounds(&s, "recore_metric", &series, 0..20);
    let cores_file = s.data_dir.join("default-tenant/wal/CORES");
    assert_eq!(std::fs::read_to_string(cores_file).unwrap().trim(), "2");
}

#[test]
fn sigterm_drains_and_syncs_with_fsync_never() {
    let mut s = Server::start(2, &["--wal-fsync", "never"]);
    let series = simple_series("term_metric", 100);
    write_rounds(&s, &series, 0..20);
    let status = s.sigterm();
    assert!(status.success(), "exit status {status}");
    assert!(s.log_text().contains("WAL synced"), "{}", s.log_text());
    s.spawn(2, &["--wal-fsync", "interval=100ms"]);
    assert_rounds(&s, "term_metric", &series, 0..20);
}

#[test]
fn ready_is_503_while_the_wal_replays_and_healthy_stays_200() {
    let series = simple_series("replayed", 2000);
    let mut s = Server::start(1, &[]);
    write_rounds(&s, &series, 0..100);
    assert!(s.sigterm().success());
    s.spawn_unready(1, &[]);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let (mut starting, mut healthy_while_starting) = (0, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        match agent.get(&s.url("/-/ready")).call() {
            Ok(r) if r.status() == 200 => break,
            Err(ureq::Error::Status(503, r)) => {
                assert_eq!(r.header("retry-after"), Some("1"));
                let body = r.into_string().unwrap();
                // From the interim listener, or (for a moment) from a core while it closes.
                assert!(
                    body.contains("replaying the WAL") || body.contains("not ready"),
                    "{body}"
                );
                starting += 1;
                if let Ok(h) = agent.get(&s.url("/-/healthy")).call() {
                    assert_eq!(h.status(), 200);
                    healthy_while_starting += 1;
                }
                // A write during replay is refused with a status the sender retries.
                let probe = simple_series("probe", 1);
                let (code, _) = s.write(&request(&probe, T0 + 1000 * STEP, |_| 1.0));
                assert!(code == 503 || code == 204, "{code}");
            }
            // Before the process has bound its socket.
            Err(ureq::Error::Transport(_)) => {}
            other => panic!("unexpected answer while starting: {other:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        starting > 0,
        "never saw 503 during replay; log:\n{}",
        s.log_text()
    );
    assert!(healthy_while_starting > 0);
    s.wait_ready();
    assert_rounds(&s, "replayed", &series, 0..100);
}

#[test]
fn a_second_sluice_on_a_port_in_use_refuses_to_start() {
    // Every core's listener sets SO_REUSEPORT, which the kernel also grants another process
    // of the same user: the second one must see the port as taken, not share it.
    let mut s = Server::start(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--cores", "1", "--listen", &format!("127.0.0.1:{}", s.port)])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning sluice");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().expect("waiting") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!(
                "a second sluice started on port {} and kept running",
                s.port
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("Address already in use"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", s.port)), "{err}");
    // The first one is untouched.
    let series = simple_series("still_mine", 2);
    write_rounds(&s, &series, 0..3);
    assert_rounds(&s, "still_mine", &series, 0..3);
    // A restart on the same port is no second sluice, even with the port's closed
    // connections still in TIME_WAIT.
    assert!(s.sigterm().success());
    s.respawn_on_same_port(1, &[]);
    assert_rounds(&s, "still_mine", &series, 0..3);
}

/// The frames of a WAL segment as (record type, start, end), parsed as docs/format/wal.md specifies
/// them, stepping over the zeros that end a page when the next write started on a fresh one.
fn wal_frames(data: &[u8]) -> Vec<(u8, usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 9 <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap());
        let ty = data[pos + 8];
        if ty == 0 {
            if data[pos..].iter().all(|b| *b == 0) {
                break;
            }
            pos = (pos + 1).next_multiple_of(4096);
            continue;
        }
        let end = pos + 9 + len;
        assert_eq!(crc32c::crc32c(&data[pos + 8..end]), crc, "frame at {pos}");
        out.push((ty, pos, end));
        pos = end;
    }
    out
}

/// The user's report: series created over several requests on one core, SIGTERM, the page
/// holding the last series record of `core-0/00000000` zeroed, restart, new series, clean
/// restart. The lost record's ids were handed out again, and the second restart attached the
/// samples logged for the lost series to the new ones. Now every sample stays in its own
/// series, the damage is counted, and nothing written after the damage is lost.
#[test]
fn a_lost_series_record_never_lends_its_samples_to_a_later_series() {
    let series = simple_series("lost_record", 250);
    // Values name their series: idx * 1e6 + round.
    let req = |idxs: &[usize], round: i64| {
        let labels: Vec<_> = idxs.iter().map(|i| series[*i].clone()).collect();
        request(&labels, T0 + round * STEP, |k| {
            idxs[k] as f64 * 1e6 + round as f64
        })
    };
    let write = |s: &Server, idxs: &[usize], rounds: std::ops::Range<i64>| {
        for round in rounds {
            let (code, body) = s.write(&req(idxs, round));
            assert_eq!(code, 204, "round {round}: {body}");
        }
    };
    let mut s = Server::start(1, &[]);
    // Rounds 0..10 create 20 series each (and sample every series so far); rounds 10..40
    // only sample, so the last series record sits in the middle of the segment.
    for round in 0..40 {
        let idxs: Vec<usize> = (0..(20 * (round as usize + 1)).min(200)).collect();
        write(&s, &idxs, round..round + 1);
    }
    assert!(s.sigterm().success());
    let seg = s.data_dir.join("default-tenant/wal/core-0/00000000");
    let mut data = std::fs::read(&seg).unwrap();
    let frames = wal_frames(&data);
    let series_records: Vec<usize> = (0..frames.len()).filter(|i| frames[*i].0 == 1).collect();
    assert_eq!(
        series_records.len(),
        10,
        "one series record per creating round"
    );
    let last = *series_records.last().unwrap();
    assert!(
        frames.len() - last > 30,
        "the record of series 180..199 is followed by the sampling rounds"
    );
    let page = frames[last].1 / 4096 * 4096;
    data[page..page + 4096].fill(0);
    std::fs::write(&seg, &data).unwrap();

    s.spawn(1, &[]);
    // 50 new series write on with the surviving old ones; series 180..199 stay away, so no
    // request brings their labels back.
    let after: Vec<usize> = (0..180).chain(200..250).collect();
    write(&s, &after, 40..50);
    assert!(s.sigterm().success());
    s.spawn(1, &[]);
    let got = dump(&s, "lost_record", T0 + 50 * STEP, "1d");
    for (labels, points) in &got {
        let idx: usize = labels
            .iter()
            .find(|(n, _)| n == "idx")
            .and_then(|(_, v)| v.parse().ok())
            .expect("idx label");
        for (t, v) in points {
            let (owner, round) = ((v / 1e6).floor() as usize, (v % 1e6) as i64);
            assert_eq!(
                owner, idx,
                "series {idx} holds the sample of series {owner} at round {round}"
            );
            assert_eq!(*t, T0 + round * STEP, "series {idx}");
        }
    }
    // Everything written after the damage is there, whole.
    for idx in &after {
        let points = &got[&sorted(&series[*idx])];
        let since: Vec<(i64, f64)> = points
            .iter()
            .copied()
            .filter(|(t, _)| *t >= T0 + 40 * STEP)
            .collect();
        let want: Vec<(i64, f64)> = (40..50)
            .map(|r| (T0 + r * STEP, *idx as f64 * 1e6 + r as f64))
            .collect();
        assert_eq!(since, want, "series {idx}");
    }
    // The damage is counted (segment 0 still holds it at every replay).
    assert!(s.metric_sum("sluice_wal_corruptions_total") >= 1);
    assert!(s.metric_sum("sluice_wal_replay_corrupt_records_total") >= 1);
    assert!(s.metric_sum("sluice_wal_replay_unknown_series_samples_total") >= 20);
    // And the log goes on after the last restart.
    write(&s, &after, 50..53);
    let got = dump(&s, "lost_record", T0 + 53 * STEP, "1d");
    for idx in &after {
        let points = &got[&sorted(&series[*idx])];
        assert_eq!(
            points[points.len() - 3..],
            (50..53)
                .map(|r| (T0 + r * STEP, *idx as f64 * 1e6 + r as f64))
                .collect::<Vec<_>>(),
            "series {idx}"
        );
    }
}
