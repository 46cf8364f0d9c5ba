//! Writes come back through the read API exactly, on any core count; the status contract for
//! out-of-order and repeated samples; tenants are kept apart.

use sluice_bench::SeriesSet;

use crate::harness::{dump, request, simple_series, sorted, Server};

const T0: i64 = 1_700_000_000_000;

#[test]
fn two_thousand_series_round_trip_identically_on_one_and_two_cores() {
    let set = SeriesSet::new(2000, 7);
    let req = set.write_request(0..2000, T0, 1, 15_000);
    let mut per_cores = Vec::new();
    for cores in [1, 2] {
        let s = Server::start(cores, &[]);
        let (code, body) = s.write(&req);
        assert_eq!(code, 204, "{body}");
        let got = dump(&s, r#"{__name__=~".+"}"#, T0, "1m");
        assert_eq!(got.len(), 2000);
        for i in 0..2000 {
            let points = &got[&sorted(set.labels(i))];
            assert_eq!(points.len(), 1, "series {i}");
            assert_eq!(points[0].0, T0);
            assert_eq!(
                points[0].1.to_bits(),
                set.value(i, T0).to_bits(),
                "series {i}"
            );
        }
        // The instant form answers at the query time with the latest value.
        let first = &set.labels(0);
        let selector = format!(
            "{}{{{}}}",
            first[0].1,
            first[1..]
                .iter()
                .map(|(n, v)| format!("{n}={v:?}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let v = s.query(&selector, T0 + 60_000);
        assert_eq!(v["resultType"], "vector");
        assert_eq!(v["result"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(
            v["result"][0]["value"][0].as_f64().unwrap(),
            (T0 + 60_000) as f64 / 1000.0
        );
        assert_eq!(
            v["result"][0]["value"][1]
                .as_str()
                .unwrap()
                .parse::<f64>()
                .unwrap(),
            set.value(0, T0)
        );
        assert_eq!(v["result"][0]["metric"]["tenant_id"], "default-tenant");
        // Past the 5m lookback the series is gone from instant queries.
        let v = s.query(&selector, T0 + 301_000);
        assert_eq!(v["result"].as_array().unwrap().len(), 0);
        per_cores.push(got);
    }
    assert_eq!(
        per_cores[0], per_cores[1],
        "1 and 2 cores answer differently"
    );
}

#[test]
fn series_labels_and_label_values_apis() {
    let s = Server::start(2, &[]);
    let series = simple_series("api_test", 50);
    assert_eq!(s.write(&request(&series, T0, |i| i as f64)).0, 204);
    let (code, v) = s.get_json(
        "/api/v1/series",
        &[
            ("match[]", r#"api_test{idx=~"00000[0-4]"}"#),
            ("start", "0"),
        ],
    );
    assert_eq!(code, 200, "{v}");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 5);
    assert_eq!(data[0]["idx"], "000000");
    assert_eq!(data[0]["__name__"], "api_test");
    let (_, v) = s.get_json("/api/v1/labels", &[]);
    assert_eq!(
        v["data"],
        serde_json::json!(["__name__", "idx", "job", "tenant_id"])
    );
    let (_, v) = s.get_json("/api/v1/label/job/values", &[]);
    assert_eq!(v["data"], serde_json::json!(["test"]));
    let (_, v) = s.get_json(
        "/api/v1/label/idx/values",
        &[("match[]", r#"{idx=~"00004.*"}"#)],
    );
    assert_eq!(v["data"].as_array().unwrap().len(), 10);
    // Time range excludes everything: no series.
    let end = format!("{}", (T0 - 1000) / 1000);
    let (_, v) = s.get_json("/api/v1/series", &[("match[]", "api_test"), ("end", &end)]);
    assert_eq!(v["data"].as_array().unwrap().len(), 0);
    // Errors use Prometheus' envelope.
    let (code, v) = s.get_json("/api/v1/series", &[]);
    assert_eq!(code, 400);
    assert_eq!(v["status"], "error");
    assert_eq!(v["errorType"], "bad_data");
    // Full PromQL is answered now (tests/e2e/promql.rs compares it with Prometheus).
    let (code, v) = s.get_json("/api/v1/query", &[("query", "count(api_test)")]);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["resultType"], "vector", "{v}");
    let (code, v) = s.get_json("/api/v1/query", &[("query", "api_test{")]);
    assert_eq!(code, 400, "{v}");
}

#[test]
fn out_of_order_gets_409_naming_the_series_and_keeps_the_valid_samples() {
    let s = Server::start(2, &[]);
    let x = simple_series("ooo_x", 1);
    let y = simple_series("ooo_y", 1);
    let first = request(&x, T0 + 2000, |_| 1.0);
    assert_eq!(s.write(&first).0, 204);
    // A retry of an acknowledged request is accepted and stores nothing twice.
    assert_eq!(s.write(&first).0, 204);
    // One old sample for x, one new series y in the same request.
    let mut mixed = request(&x, T0 + 1000, |_| 9.0);
    mixed
        .timeseries
        .extend(request(&y, T0 + 2000, |_| 2.0).timeseries);
    let (code, body) = s.write(&mixed);
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("out of order") && body.contains("ooo_x"),
        "{body}"
    );
    // Same timestamp, other value.
    let (code, body) = s.write(&request(&x, T0 + 2000, |_| 5.0));
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("duplicate sample"), "{body}");
    let got = dump(&s, r#"{__name__=~"ooo_.*"}"#, T0 + 2000, "1h");
    assert_eq!(got[&sorted(&x[0])], vec![(T0 + 2000, 1.0)]);
    assert_eq!(got[&sorted(&y[0])], vec![(T0 + 2000, 2.0)]);
    // Multi-sample retry: every sample repeats a stored one, so 2xx.
    let mut two = request(&y, T0 + 3000, |_| 3.0);
    two.timeseries[0].samples.insert(
        0,
        sluice_bench::prompb::Sample {
            value: 2.5,
            timestamp: T0 + 2500,
        },
    );
    assert_eq!(s.write(&two).0, 204);
    assert_eq!(s.write(&two).0, 204);
    let got = dump(&s, "ooo_y", T0 + 3000, "1h");
    assert_eq!(
        got[&sorted(&y[0])],
        vec![(T0 + 2000, 2.0), (T0 + 2500, 2.5), (T0 + 3000, 3.0)]
    );
}

#[test]
fn tenants_are_kept_apart() {
    let s = Server::start(2, &[]);
    let series = simple_series("tenant_metric", 3);
    assert_eq!(
        s.write_tenant(&request(&series, T0, |_| 1.0), "team-a").0,
        204
    );
    assert_eq!(
        s.write_tenant(&request(&series, T0, |_| 2.0), "team-b").0,
        204
    );
    let a = s.query(r#"tenant_metric{tenant_id="team-a"}"#, T0);
    let b = s.query(r#"tenant_metric{tenant_id="team-b"}"#, T0);
    assert_eq!(a["result"].as_array().unwrap().len(), 3);
    assert_eq!(b["result"].as_array().unwrap().len(), 3);
    assert!(a["result"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["value"][1] == "1"));
    assert!(b["result"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["value"][1] == "2"));
    let all = s.query("tenant_metric", T0);
    assert_eq!(all["result"].as_array().unwrap().len(), 6);
    for t in ["team-a", "team-b"] {
        let wal = s.data_dir.join(t).join("wal");
        let cores = std::fs::read_dir(&wal)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("core-"))
            .count();
        assert!(cores >= 1, "no per-core WAL under {}", wal.display());
    }
    let (code, body) = s.write_tenant(&request(&series, T0, |_| 1.0), "../escape");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("invalid tenant"), "{body}");
}
