//! Unit tests: queries over small in-memory series against hand-computed values.

use crate::*;

fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> Series {
    Series {
        labels: Labels::new(
            labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        ),
        samples: samples.to_vec(),
    }
}

/// Answers the query's requests from `db` as storage would.
pub(crate) fn fetch(q: &Query, db: &[Series]) -> Fetched {
    fetch_requests(q.requests().unwrap(), db)
}

/// Answers `requests` from `db` as storage would.
pub(crate) fn fetch_requests(requests: Vec<SelectorRequest>, db: &[Series]) -> Fetched {
    let mut f = Fetched::new();
    for r in requests {
        let found = db
            .iter()
            .filter(|s| r.matchers.iter().all(|m| m.matches(s.labels.get(&m.name))))
            .map(|s| Series {
                labels: s.labels.clone(),
                samples: s
                    .samples
                    .iter()
                    .copied()
                    .filter(|(t, _)| *t >= r.mint && *t <= r.maxt)
                    .collect(),
            })
            .filter(|s| !s.samples.is_empty())
            .collect();
        f.insert(r.key, found);
    }
    f
}

fn instant(db: &[Series], q: &str, t: i64) -> QueryValue {
    let q = Query::instant(q, t, EngineOptions::default()).unwrap();
    q.exec(&fetch(&q, db)).unwrap()
}

/// `(labels as "a=1,b=2", value)` pairs of an instant vector, sorted.
fn vec_of(db: &[Series], q: &str, t: i64) -> Vec<(String, f64)> {
    match instant(db, q, t) {
        QueryValue::Vector { samples, .. } => {
            let mut v: Vec<(String, f64)> = samples
                .into_iter()
                .map(|s| {
                    let l: Vec<String> = s.labels.iter().map(|(n, v)| format!("{n}={v}")).collect();
                    (l.join(","), s.v)
                })
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        }
        other => panic!("{q}: not a vector: {other:?}"),
    }
}

fn one(db: &[Series], q: &str, t: i64) -> f64 {
    match instant(db, q, t) {
        QueryValue::Scalar { v, .. } => v,
        QueryValue::Vector { samples, .. } => {
            assert_eq!(samples.len(), 1, "{q}: {samples:?}");
            samples[0].v
        }
        other => panic!("{q}: {other:?}"),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || ((a - b) / b).abs() < 1e-12
}

fn assert_one(db: &[Series], q: &str, t: i64, want: f64) {
    let got = one(db, q, t);
    assert!(close(got, want), "{q}: got {got}, want {want}");
}

/// A counter every 15 s from 0 s to 300 s, +10 per sample, reset to 0 at 150 s.
fn counter() -> Vec<Series> {
    let mut s = Vec::new();
    let mut v = 0.0;
    for i in 0..=20 {
        let t = i * 15_000;
        if t == 150_000 {
            v = 0.0;
        }
        s.push((t, v));
        v += 10.0;
    }
    vec![series(&[("__name__", "c"), ("job", "a")], &s)]
}

#[test]
fn rate_increase_delta_extrapolate_like_prometheus() {
    let db = counter();
    // At 300 s over [240 s, 300 s]: samples at 240..300 = 5 samples, values 100..140
    // after the reset at 150 (v at 150 = 0, 165 = 10, ..., 240 = 60, 300 = 100).
    // increase: last - first = 40, sampled 60 s, both edges within 1.1 * 15 s: to_start = 0,
    // to_end = 0 -> 40.
    assert_one(&db, "increase(c[1m])", 300_000, 40.0);
    assert_one(&db, "rate(c[1m])", 300_000, 40.0 / 60.0);
    // Window [200 s, 300 s]: samples 210..300 (7 samples), values 40..100, delta 60 over
    // 90 s; to_start = 10 s < 16.5 -> extrapolate by 10 s; to_zero = 90 * 40/60 = 60 > 10.
    // 60 * (100/90).
    assert_one(&db, "increase(c[100s])", 300_000, 60.0 * 100.0 / 90.0);
    // Across the reset: window [120 s, 180 s]: 120 -> 80, 135 -> 90, 150 -> 0, 165 -> 10,
    // 180 -> 20: 20 - 80 + 90 = 30.
    assert_one(&db, "increase(c[1m])", 180_000, 30.0);
    // delta has no reset handling: 20 - 80.
    assert_one(&db, "delta(c[1m])", 180_000, -60.0);
    assert_one(&db, "resets(c[5m])", 300_000, 1.0);
    assert_one(&db, "changes(c[1m])", 300_000, 4.0);
    // irate across the reset: last value 0 at 150 s over 15 s.
    assert_one(&db, "irate(c[1m])", 150_000, 0.0);
    assert_one(&db, "irate(c[1m])", 165_000, 10.0 / 15.0);
    assert_one(&db, "idelta(c[1m])", 150_000, -90.0);
    // A single sample: no rate.
    assert!(vec_of(&db, "rate(c[10s])", 300_000).is_empty());
}

#[test]
fn counter_extrapolation_stops_at_zero() {
    // A counter that starts at 5 s with value 10, +10 every 10 s; window [0, 60 s].
    let s: Vec<(i64, f64)> = (0..6)
        .map(|i| (5_000 + i * 10_000, 10.0 + 10.0 * i as f64))
        .collect();
    let db = vec![series(&[("__name__", "z")], &s)];
    // first 10 @5 s, last 60 @55 s: result 50, sampled 50 s, avg 10 s; to_start = 5 s, to_zero
    // = 50 * 10/50 = 10 s (not smaller); to_end = 5 s: 50 * 60/50 = 60.
    assert_one(&db, "increase(z[1m])", 60_000, 60.0);
}

#[test]
fn lookback_stale_offset_and_at() {
    let nan = f64::from_bits(sluice_core::STALE_NAN_BITS);
    let db = vec![series(
        &[("__name__", "g")],
        &[(0, 1.0), (60_000, 2.0), (120_000, nan), (600_000, 3.0)],
    )];
    assert_one(&db, "g", 60_000, 2.0);
    assert_one(&db, "g", 100_000, 2.0);
    // The stale marker ends the series at once.
    assert!(vec_of(&db, "g", 130_000).is_empty());
    assert!(vec_of(&db, "g", 300_000).is_empty());
    // Lookback 5 m is inclusive in Prometheus 2.x.
    assert_one(&db, "g", 900_000, 3.0);
    assert!(vec_of(&db, "g", 900_001).is_empty());
    assert_one(&db, "g offset 1m", 120_000, 2.0);
    assert_one(&db, "g @ 60", 900_000, 2.0);
    assert_one(&db, "g @ 660 offset 1m", 0, 3.0);
    assert_one(&db, "timestamp(g)", 100_000, 60.0);
    assert_one(&db, "count_over_time(g[10m])", 600_000, 4.0 - 1.0);
}

#[test]
fn over_time_functions() {
    let db = vec![series(
        &[("__name__", "g"), ("i", "1")],
        &[(10_000, 1.0), (20_000, 4.0), (30_000, 2.0), (40_000, 8.0)],
    )];
    let t = 40_000;
    assert_one(&db, "avg_over_time(g[1m])", t, 3.75);
    assert_one(&db, "sum_over_time(g[1m])", t, 15.0);
    assert_one(&db, "min_over_time(g[1m])", t, 1.0);
    assert_one(&db, "max_over_time(g[1m])", t, 8.0);
    assert_one(&db, "count_over_time(g[1m])", t, 4.0);
    assert_one(&db, "last_over_time(g[1m])", t, 8.0);
    assert_one(&db, "present_over_time(g[1m])", t, 1.0);
    // Sorted 1 2 4 8, rank 0.5 * 3 = 1.5 -> 2 + 0.5 * 2.
    assert_one(&db, "quantile_over_time(0.5, g[1m])", t, 3.0);
    // mean 3.75; squares of deviations: 7.5625 + 0.0625 + 3.0625 + 18.0625 = 28.75 / 4.
    assert_one(&db, "stdvar_over_time(g[1m])", t, 7.1875);
    assert_one(&db, "stddev_over_time(g[1m])", t, 7.1875f64.sqrt());
    // Least squares over x = 0,10,20,30: slope = cov/var.
    // mean x 15, mean y 3.75; cov = (-15*-2.75 + -5*0.25 + 5*-1.75 + 15*4.25)/n*n ...
    let slope = ((-15.0 * -2.75) + (-5.0 * 0.25) + (5.0 * -1.75) + (15.0 * 4.25)) / 500.0;
    assert_one(&db, "deriv(g[1m])", t, slope);
    // predict_linear from t: intercept at t = mean_y + slope * (t - mean_x) = 3.75 + slope*15.
    assert_one(
        &db,
        "predict_linear(g[1m], 60)",
        t,
        3.75 + slope * 15.0 + slope * 60.0,
    );
    assert_eq!(
        vec_of(&db, "last_over_time(g[1m])", t)[0].0,
        "__name__=g,i=1"
    );
    assert_eq!(vec_of(&db, "max_over_time(g[1m])", t)[0].0, "i=1");
    assert_one(&db, "absent_over_time(nope{a=\"b\"}[1m])", t, 1.0);
    assert_eq!(vec_of(&db, "absent(nope{a=\"b\",c=~\"d\"})", t)[0].0, "a=b");
    assert!(vec_of(&db, "absent(g)", t).is_empty());
}

fn hist() -> Vec<Series> {
    let b = |le: &str, v: f64| {
        series(
            &[("__name__", "h_bucket"), ("le", le), ("j", "x")],
            &[(0, v)],
        )
    };
    vec![
        b("0.1", 10.0),
        b("0.5", 30.0),
        b("1", 40.0),
        b("+Inf", 50.0),
    ]
}

#[test]
fn histogram_quantile_interpolates_within_buckets() {
    let db = hist();
    // rank 25 falls in (0.1, 0.5] with 20 in it, 15 into it: 0.1 + 0.4 * 15/20.
    assert_one(
        &db,
        "histogram_quantile(0.5, h_bucket)",
        0,
        0.1 + 0.4 * 0.75,
    );
    // rank 47.5 is in +Inf bucket: the highest finite bound.
    assert_one(&db, "histogram_quantile(0.95, h_bucket)", 0, 1.0);
    assert_one(&db, "histogram_quantile(0.05, h_bucket)", 0, 0.025);
    assert_eq!(
        vec_of(&db, "histogram_quantile(0.5, h_bucket)", 0)[0].0,
        "j=x"
    );
    assert_one(&db, "histogram_quantile(2, h_bucket)", 0, f64::INFINITY);
}

fn gauges() -> Vec<Series> {
    let g = |job: &str, inst: &str, v: f64| {
        series(
            &[("__name__", "m"), ("job", job), ("instance", inst)],
            &[(0, v)],
        )
    };
    vec![
        g("a", "1", 1.0),
        g("a", "2", 2.0),
        g("b", "1", 3.0),
        g("b", "2", 10.0),
    ]
}

#[test]
fn aggregations() {
    let db = gauges();
    assert_eq!(
        vec_of(&db, "sum by (job) (m)", 0),
        vec![("job=a".into(), 3.0), ("job=b".into(), 13.0)]
    );
    assert_eq!(
        vec_of(&db, "sum without (instance) (m)", 0),
        vec![("job=a".into(), 3.0), ("job=b".into(), 13.0)]
    );
    assert_one(&db, "avg(m)", 0, 4.0);
    assert_one(&db, "count(m)", 0, 4.0);
    assert_one(&db, "min(m)", 0, 1.0);
    assert_one(&db, "max(m)", 0, 10.0);
    assert_one(&db, "group(m)", 0, 1.0);
    // values 1 2 3 10, mean 4: (9+4+1+36)/4 = 12.5
    assert_one(&db, "stdvar(m)", 0, 12.5);
    assert_one(&db, "stddev(m)", 0, 12.5f64.sqrt());
    assert_one(&db, "quantile(0.5, m)", 0, 2.5);
    assert_eq!(
        vec_of(&db, "topk(1, m)", 0),
        vec![("__name__=m,instance=2,job=b".into(), 10.0)]
    );
    assert_eq!(
        vec_of(&db, "bottomk by (job) (1, m)", 0),
        vec![
            ("__name__=m,instance=1,job=a".into(), 1.0),
            ("__name__=m,instance=1,job=b".into(), 3.0)
        ]
    );
    assert_eq!(
        vec_of(&db, "count_values(\"val\", m > 2)", 0),
        vec![("val=10".into(), 1.0), ("val=3".into(), 1.0)]
    );
}

#[test]
fn binary_operators_and_matching() {
    let mut db = gauges();
    db.push(series(&[("__name__", "w"), ("job", "a")], &[(0, 100.0)]));
    db.push(series(&[("__name__", "w"), ("job", "b")], &[(0, 200.0)]));
    assert_eq!(
        vec_of(&db, "m * on(job) group_left w", 0),
        vec![
            ("instance=1,job=a".into(), 100.0),
            ("instance=1,job=b".into(), 600.0),
            ("instance=2,job=a".into(), 200.0),
            ("instance=2,job=b".into(), 2000.0),
        ]
    );
    assert_eq!(vec_of(&db, "w / on(job) group_right m", 0).len(), 4);
    assert_eq!(vec_of(&db, "m > 2", 0).len(), 2);
    assert_eq!(vec_of(&db, "m > bool 2", 0).len(), 4);
    assert_eq!(vec_of(&db, "m > bool 2", 0)[0].0, "instance=1,job=a");
    assert_eq!(vec_of(&db, "2 < m", 0)[0].1, 3.0);
    assert_eq!(vec_of(&db, "m and on(job) w{job=\"a\"}", 0).len(), 2);
    assert_eq!(vec_of(&db, "m unless on(job) w{job=\"a\"}", 0).len(), 2);
    assert_eq!(vec_of(&db, "w or m", 0).len(), 6);
    assert_one(&db, "scalar(w{job=\"a\"}) + 1", 0, 101.0);
    assert_one(&db, "-w{job=\"a\"}", 0, -100.0);
    let q = Query::instant("m * on(job) w", 0, EngineOptions::default()).unwrap();
    let err = q.exec(&fetch(&q, &db)).unwrap_err();
    assert!(
        err.to_string()
            .contains("many-to-one matching must be explicit"),
        "{err}"
    );
    let q = Query::instant("w * on(job) group_left m", 0, EngineOptions::default()).unwrap();
    let err = q.exec(&fetch(&q, &db)).unwrap_err();
    assert!(
        err.to_string().contains(
            "found duplicate series for the match group {job=\"a\"} on the right hand-side"
        ),
        "{err}"
    );
}

#[test]
fn functions_on_instant_vectors() {
    let db = vec![series(&[("__name__", "x"), ("a", "v-1")], &[(0, -2.5)])];
    assert_one(&db, "abs(x)", 0, 2.5);
    assert_one(&db, "ceil(x)", 0, -2.0);
    assert_one(&db, "floor(x)", 0, -3.0);
    assert_one(&db, "round(x)", 0, -2.0);
    assert_one(&db, "round(x, 2)", 0, -2.0);
    assert_one(&db, "clamp(x, -1, 1)", 0, -1.0);
    assert_one(&db, "clamp_min(x, 0)", 0, 0.0);
    assert_one(&db, "clamp_max(x, -3)", 0, -3.0);
    assert_one(&db, "exp(abs(x))", 0, 2.5f64.exp());
    assert_one(&db, "sqrt(abs(x))", 0, 2.5f64.sqrt());
    assert_one(&db, "ln(abs(x))", 0, 2.5f64.ln());
    assert_one(&db, "log2(abs(x))", 0, 2.5f64.log2());
    assert_one(&db, "log10(abs(x))", 0, 2.5f64.log10());
    assert_one(&db, "time()", 5_000, 5.0);
    assert_one(&db, "vector(3)", 0, 3.0);
    assert_eq!(
        vec_of(&db, r#"label_replace(x, "b", "$1", "a", "v-(.*)")"#, 0)[0].0,
        "__name__=x,a=v-1,b=1"
    );
    assert_eq!(
        vec_of(&db, r#"label_join(x, "b", "/", "a", "__name__")"#, 0)[0].0,
        "__name__=x,a=v-1,b=v-1/x"
    );
}

#[test]
fn subqueries_and_range_queries() {
    let db = counter();
    // max_over_time of the 1m rate sampled every 30s over the last 2m.
    let q = Query::range("sum(c)", 0, 60_000, 30_000, EngineOptions::default()).unwrap();
    match q.exec(&fetch(&q, &db)).unwrap() {
        QueryValue::Matrix(m) => {
            assert_eq!(m.len(), 1);
            assert_eq!(m[0].points, vec![(0, 0.0), (30_000, 20.0), (60_000, 40.0)]);
        }
        other => panic!("{other:?}"),
    }
    // Points of c[1m:30s] at 120 s: 60, 90, 120 s -> 40, 60, 80.
    assert_one(&db, "sum_over_time(c[1m:30s])", 120_000, 180.0);
    let opts = EngineOptions {
        max_samples: 3,
        ..Default::default()
    };
    let q = Query::instant("c[5m]", 300_000, opts).unwrap();
    assert_eq!(
        q.exec(&fetch(&q, &db)).unwrap_err().to_string(),
        "query processing would load too many samples into memory in query execution"
    );
}

/// Engine time for a range query over 10k series × 1 h at 15 s (storage excluded):
/// `cargo test -p sluice-promql --release -- --ignored --nocapture engine_speed`.
#[test]
#[ignore]
fn engine_speed() {
    let db: Vec<Series> = (0..10_000)
        .map(|i| {
            let samples = (0..260)
                .map(|k| (k * 15_000 + (i % 1000), (k * (i % 7 + 1)) as f64))
                .collect::<Vec<_>>();
            series(
                &[
                    ("__name__", "bench_requests_total"),
                    ("instance", &format!("host-{:03}", i / 100)),
                    ("job", &format!("job-{}", i % 10)),
                    ("path", &format!("/api/v{}", i % 100)),
                ],
                &samples,
            )
        })
        .collect();
    for q in [
        "sum(rate(bench_requests_total[5m]))",
        "sum by (job) (rate(bench_requests_total[5m]))",
        "rate(bench_requests_total[5m])",
    ] {
        let query = Query::range(q, 300_000, 3_900_000, 15_000, EngineOptions::default()).unwrap();
        let data = fetch(&query, &db);
        let started = std::time::Instant::now();
        let v = query.exec(&data).unwrap();
        let n = match v {
            QueryValue::Matrix(m) => m.len(),
            _ => 0,
        };
        eprintln!("{q}: {:?} ({n} series)", started.elapsed());
    }
}

#[test]
fn holt_winters_count_values_and_limits() {
    let db = vec![series(
        &[("__name__", "g")],
        &[(0, 1.0), (10_000, 3.0), (20_000, 4.0)],
    )];
    // s1 = 1, b = 2; i=1: x = 0.5*3, y = 0.5*(1+2) -> s1 = 3; i=2: b = 0.5*(3-1) + 0.5*2 = 2,
    // x = 2, y = 0.5*(3+2) = 2.5 -> 4.5.
    assert_one(&db, "holt_winters(g[1m], 0.5, 0.5)", 20_000, 4.5);
    let q = Query::instant(
        "holt_winters(g[1m], 1, 0.5)",
        20_000,
        EngineOptions::default(),
    )
    .unwrap();
    assert_eq!(
        q.exec(&fetch(&q, &db)).unwrap_err(),
        Error::Execution("invalid smoothing factor. Expected: 0 < sf < 1, got: 1.000000".into())
    );
    assert_eq!(
        vec_of(&db, r#"count_values("v", g * 0.5)"#, 20_000),
        vec![("v=2".into(), 1.0)]
    );
    // A subquery over a huge range with no selector still meets the deadline.
    let opts = EngineOptions {
        timeout: std::time::Duration::from_millis(50),
        ..Default::default()
    };
    let q = Query::instant("count_over_time(vector(1)[100y:1s])", 0, opts).unwrap();
    assert!(matches!(
        q.exec(&fetch(&q, &db)),
        Err(Error::Timeout(_)) | Err(Error::TooManySamples(_))
    ));
    // Extreme offsets and @ times neither overflow nor panic.
    assert!(vec_of(&db, "g offset 290000y", 0).is_empty());
    assert!(vec_of(&db, "g @ -9000000000000 offset -290000y", 0).is_empty());
}

#[test]
fn range_queries_agree_with_instant_queries_at_each_step() {
    let mut db = counter();
    db.extend(gauges());
    let nan = f64::from_bits(sluice_core::STALE_NAN_BITS);
    db.push(series(
        &[("__name__", "c"), ("job", "b")],
        &[(30_000, 5.0), (60_000, nan), (200_000, 9.0)],
    ));
    for q in [
        "c",
        "rate(c[1m])",
        "last_over_time(c[2m])",
        "sum by (job) (c offset 30s)",
        "max_over_time(c[1m] @ 120)",
        "c @ end()",
        "rate(c[90s:15s])",
    ] {
        let range = Query::range(q, 0, 300_000, 20_000, EngineOptions::default()).unwrap();
        let QueryValue::Matrix(m) = range.exec(&fetch(&range, &db)).unwrap() else {
            panic!("{q}: not a matrix");
        };
        for t in (0..=300_000).step_by(20_000) {
            let mut want: Vec<(String, f64)> = match instant(&db, q, t) {
                QueryValue::Vector { samples, .. } => samples
                    .into_iter()
                    .map(|s| (s.labels.display(), s.v))
                    .collect(),
                other => panic!("{other:?}"),
            };
            want.sort_by(|a, b| a.0.cmp(&b.0));
            let mut got: Vec<(String, f64)> = m
                .iter()
                .filter_map(|s| {
                    s.points
                        .iter()
                        .find(|p| p.0 == t)
                        .map(|p| (s.labels.display(), p.1))
                })
                .collect();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            // `@ end()` is the range's end in a range query, the time itself in an instant one.
            if q == "c @ end()" {
                continue;
            }
            assert_eq!(got, want, "{q} at {t}");
        }
    }
}

/// Runs `f` on a thread with the stack the server gives evaluation threads
/// ([`depth::EVAL_STACK_BYTES`]); `SLUICE_TEST_EVAL_STACK` overrides it, to measure how much
/// is really needed.
fn on_eval_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let stack = std::env::var("SLUICE_TEST_EVAL_STACK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(depth::EVAL_STACK_BYTES);
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// Queries of exactly the maximum depth, of every shape that recurses, are parsed, planned
/// and evaluated on an evaluation thread's stack (a stack overflow would abort this test
/// binary); one level more is refused as `bad_data` naming the limit.
#[test]
fn queries_at_the_depth_limit_fit_the_evaluation_stack() {
    let n = depth::MAX_DEPTH;
    let nest = |open: &str, leaf: &str, close: &str, levels: usize| {
        format!("{}{leaf}{}", open.repeat(levels), close.repeat(levels))
    };
    let shapes: Vec<(String, String)> = vec![
        (nest("(", "g", ")", n - 1), nest("(", "g", ")", n)),
        (
            format!("g{}", " + g".repeat(n - 1)),
            format!("g{}", " + g".repeat(n)),
        ),
        (
            format!("{}1", "-".repeat(n - 1)),
            format!("{}1", "-".repeat(n)),
        ),
        (nest("sum(", "g", ")", n - 1), nest("sum(", "g", ")", n)),
        (nest("abs(", "g", ")", n - 1), nest("abs(", "g", ")", n)),
        (
            nest("-(", "1", ")", (n - 1) / 2),
            nest("-(", "1", ")", n / 2 + 1),
        ),
        // Three levels each (call, subquery, parentheses); a range shorter than the step
        // keeps it to one inner evaluation per level.
        (
            nest("max_over_time((", "g", ")[1m:2m])", (n - 1) / 3),
            nest("max_over_time((", "g", ")[1m:2m])", n / 3 + 1),
        ),
    ];
    on_eval_stack(move || {
        let db = vec![series(&[("__name__", "g")], &[(0, 1.0), (10_000, 2.0)])];
        for (ok, deeper) in &shapes {
            let q = Query::range(ok, 0, 20_000, 10_000, EngineOptions::default())
                .unwrap_or_else(|e| panic!("{}…: {e}", &ok[..20]));
            q.exec(&fetch(&q, &db)).unwrap();
            let e = Query::instant(deeper, 0, EngineOptions::default()).err();
            assert!(
                matches!(&e, Some(Error::BadData(m)) if m.contains("maximum depth of 1000")),
                "{}…: {e:?}",
                &deeper[..20]
            );
        }
    });
}

/// The query-of-death forms are refused before they are parsed, on an ordinary thread.
#[test]
fn the_query_of_death_forms_are_refused_cheaply() {
    for q in [
        format!("{}1{}", "(".repeat(30_000), ")".repeat(30_000)),
        format!("{}x{}", "sum(".repeat(20_000), ")".repeat(20_000)),
        format!("{}1", "-".repeat(300_000)),
        format!("1{}", "+1".repeat(100_000)),
    ] {
        let e = Query::instant(&q, 0, EngineOptions::default()).err();
        assert!(
            matches!(&e, Some(Error::BadData(m)) if m.contains("maximum depth")),
            "{e:?}"
        );
    }
}
