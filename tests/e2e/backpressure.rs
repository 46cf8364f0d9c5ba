//! Back-pressure: a flood far beyond what one core can take meets the memory budget, gets
//! 429 with Retry-After, and everything acknowledged is stored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_bench::prompb::{Label, Sample, TimeSeries, WriteRequest};

use crate::harness::Server;

/// `series` series of thread `th`, `per` samples each, the `k`-th request of the thread.
fn request(th: usize, k: usize, series: usize, per: usize, t0: i64) -> WriteRequest {
    WriteRequest {
        timeseries: (0..series)
            .map(|i| TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "flooded".into(),
                    },
                    Label {
                        name: "idx".into(),
                        value: format!("{i:04}"),
                    },
                    Label {
                        name: "thread".into(),
                        value: format!("{th:02}"),
                    },
                ],
                samples: (0..per)
                    .map(|j| Sample {
                        value: j as f64,
                        timestamp: t0 + ((k * per + j) as i64) * 1000,
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn a_flood_over_the_memory_budget_gets_429_and_every_acked_sample_is_stored() {
    let mut s = Server::start(1, &["--pin-cores", "false"]);
    let base_bytes = s.status_bytes("VmRSS:");
    s.sigterm();
    // A few requests (about 3 MiB each) may be in flight; resident memory must stay under
    // the start plus 64 MiB.
    let budget = base_bytes + (64 << 20);
    let budget_arg = budget.to_string();
    s.spawn(
        1,
        &[
            "--pin-cores",
            "false",
            "--memory-budget",
            &budget_arg,
            "--memory-budget.in-flight",
            "12MiB",
        ],
    );

    let acked = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let url = s.url("/api/v1/receive");
    let t0 = 1_700_000_000_000i64;
    let stop = Instant::now() + Duration::from_secs(4);
    let threads: Vec<_> = (0..32)
        .map(|th| {
            let (acked, refused, url) = (acked.clone(), refused.clone(), url.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(60))
                    .build();
                let mut k = 0;
                while Instant::now() < stop {
                    let body = sluice_bench::encode_snappy(&request(th, k, 200, 250, t0));
                    let r = crate::harness::snappy_post(&agent, &url).send_bytes(&body);
                    match r {
                        Ok(resp) => {
                            assert_eq!(resp.status(), 204);
                            acked.fetch_add(200 * 250, Ordering::Relaxed);
                            k += 1;
                        }
                        Err(ureq::Error::Status(429, resp)) => {
                            assert_eq!(resp.header("Retry-After"), Some("1"));
                            let text = resp.into_string().unwrap_or_default();
                            assert!(text.contains("memory budget"), "{text}");
                            refused.fetch_add(1, Ordering::Relaxed);
                            // The same request again, later: nothing of it was stored.
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => panic!("request failed: {e}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
    let acked = acked.load(Ordering::Relaxed);
    let refused = refused.load(Ordering::Relaxed);
    let peak = s.status_bytes("VmHWM:");
    println!(
        "budget {} MiB (start RSS {} MiB): {acked} samples acknowledged, {refused} requests refused, peak RSS {} MiB",
        budget >> 20,
        base_bytes >> 20,
        peak >> 20
    );
    assert!(acked > 0, "nothing got through");
    assert!(refused > 0, "32 writers never met the budget");
    assert!(peak <= budget, "peak RSS {peak} over the budget {budget}");
    let stored = s.metric_sum("sluice_samples_appended_total");
    let m = s.metrics();
    assert_eq!(
        stored, acked,
        "every acknowledged sample is stored, nothing else"
    );
    assert!(m.contains("sluice_memory_budget_refused_total"), "{m}");
}
