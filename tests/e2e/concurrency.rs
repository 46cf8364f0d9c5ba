//! Concurrent keep-alive clients: no errors, no lost or duplicated samples.

use std::time::Duration;

use crate::harness::{dump, request, simple_series, sorted, Server};

const T0: i64 = 1_700_000_000_000;

#[test]
fn two_keep_alive_clients_ten_thousand_requests() {
    let s = Server::start(2, &["--wal-fsync", "always"]);
    let all = simple_series("conc_metric", 10);
    let per_client = 5_000i64;
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
    let got = dump(&s, "conc_metric", T0 + per_client * 1000, "1d");
    assert_eq!(got.len(), 10);
    for (k, l) in all.iter().enumerate() {
        let j = (k % 5) as i64;
        let want: Vec<(i64, f64)> = (0..per_client)
            .map(|i| (T0 + i * 1000, (i * 10 + j) as f64))
            .collect();
        assert_eq!(got[&sorted(l)], want, "series {k}");
    }
    let m = s.metrics();
    let total: u64 = m
        .lines()
        .filter(|l| l.starts_with("sluice_samples_appended_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 2 * per_client as u64 * 5);
}
