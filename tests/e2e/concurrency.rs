//! Concurrent keep-alive clients: no errors, no lost or duplicated samples.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{dump, request, simple_series, sorted, Server};

const T0: i64 = 1_700_000_000_000;

#[test]
fn two_keep_alive_clients_ten_thousand_requests() {
    let s = Server::start(2, &["--wal-fsync", "always"]);
    two_clients_store_everything(&s, "conc_metric", 5_000);
}

/// The watchdog wakes a core that sleeps through its timers with SIGUSR2. Whatever system
/// call the signal interrupts (io_uring waits, socket and file I/O) must carry on: a storm of
/// them during writes loses, duplicates and fails nothing.
#[test]
fn cores_interrupted_by_the_watchdog_signal_lose_nothing() {
    let s = Server::start(2, &["--wal-fsync", "always"]);
    let pid = s.pid() as i32;
    let cores: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.starts_with("sluice-core"))
        })
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect();
    // Each executor and its helper thread for blocking calls (same name): both get signals.
    assert!(cores.len() >= 2, "core threads of {pid}: {cores:?}");
    let stop = Arc::new(AtomicBool::new(false));
    let storm = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for &tid in &cores {
                    // SAFETY: tgkill with plain integers; a thread that is gone is an error.
                    let rc = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR2) };
                    assert_eq!(rc, 0, "tgkill {pid} {tid}");
                    sent += 1;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            sent
        })
    };
    two_clients_store_everything(&s, "sig_metric", 1_000);
    stop.store(true, Ordering::Relaxed);
    let sent = storm.join().expect("signal thread");
    assert!(sent > 1_000, "only {sent} signals sent");
    assert!(s.metrics().contains("sluice_watchdog_wakeups_total"));
}

/// Two keep-alive clients each write `per_client` requests (5 series each) and every sample
/// must then read back exactly once.
fn two_clients_store_everything(s: &Server, metric: &str, per_client: i64) {
    let all = simple_series(metric, 10);
    let url = s.url("/api/v1/receive");
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let mine: Vec<_> = all[c * 5..c * 5 + 5].to_vec();
            let url = url.clone();
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(30))
                    .max_idle_connections_per_host(1)
                    .build();
                for i in 0..per_client {
                    let body = sluice_bench::encode_snappy(&request(&mine, T0 + i * 1000, |j| {
                        (i * 10 + j as i64) as f64
                    }));
                    let resp = crate::harness::snappy_post(&agent, &url)
                        .send_bytes(&body)
                        .unwrap_or_else(|e| panic!("client {c} request {i}: {e}"));
                    assert_eq!(resp.status(), 204, "client {c} request {i}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    let got = dump(s, metric, T0 + per_client * 1000, "1d");
    assert_eq!(got.len(), 10);
    for (k, l) in all.iter().enumerate() {
        let j = (k % 5) as i64;
        let want: Vec<(i64, f64)> = (0..per_client)
            .map(|i| (T0 + i * 1000, (i * 10 + j) as f64))
            .collect();
        assert_eq!(got[&sorted(l)], want, "series {k}");
    }
    let total = s.metric_sum("sluice_samples_appended_total");
    assert_eq!(total, 2 * per_client as u64 * 5);
}
