//! The PromQL engine against a real Prometheus 2.42: the same remote-write payload goes to
//! Sluice and to Prometheus (started with its remote-write receiver), then several hundred
//! instant and range queries over counters with resets, gauges, gaps, stale markers and
//! classic histograms are asked of both and compared value by value (relative tolerance
//! 1e-9, NaN equal to NaN). Every difference is a bug in our engine.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::Value;
use sluice_bench::prompb::{Label, Sample, TimeSeries, WriteRequest};
use sluice_core::STALE_NAN_BITS;

use crate::harness::{Prometheus, Server};

/// Start of the data, aligned to a minute (so subquery steps line up with it).
pub(crate) const T0: i64 = 1_700_000_040_000;
pub(crate) const MIN: i64 = 60_000;
/// The data spans 50 minutes (under the half-block appendable window of both servers).
pub(crate) const SPAN: i64 = 50 * MIN;

pub(crate) type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut v: Labels = pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

/// A small deterministic generator (64-bit LCG), so both servers get the same data.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// Every series with its samples (in time order).
pub(crate) fn dataset() -> Vec<(Labels, Vec<(i64, f64)>)> {
    let mut rng = Lcg(42);
    let mut out = Vec::new();
    let stale = f64::from_bits(STALE_NAN_BITS);
    // Counters, 15 s scrapes with per-series jitter; resets, gaps, a late start, a stale end.
    let mut k = 0;
    for job in ["api", "web"] {
        for inst in ["i-0", "i-1", "i-2"] {
            for method in ["GET", "POST"] {
                let l = labels(&[
                    ("__name__", "http_requests_total"),
                    ("job", job),
                    ("instance", inst),
                    ("method", method),
                ]);
                let mut s = Vec::new();
                let mut v = (rng.next() % 500) as f64;
                let mut t = T0 + k * 211;
                while t < T0 + SPAN {
                    let m = (t - T0) / MIN;
                    let gap = k % 5 == 2 && (25..33).contains(&m);
                    let late = k == 11 && m < 15;
                    if k == 7 && m >= 40 {
                        s.push((t, stale));
                        break;
                    }
                    if k % 4 == 1
                        && m == 20 + k
                        && s.last().is_some_and(|p: &(i64, f64)| p.1 > 50.0)
                    {
                        v = (rng.next() % 7) as f64;
                    }
                    if !gap && !late {
                        s.push((t, v));
                    }
                    v += (rng.next() % 1000) as f64 / 8.0;
                    t += 15_000;
                }
                out.push((l, s));
                k += 1;
            }
        }
    }
    // Gauges every 30 s; i-3 goes stale at 30 m and comes back at 37 m.
    for g in 0..6i64 {
        let inst = format!("i-{g}");
        let l = labels(&[
            ("__name__", "node_temperature_celsius"),
            ("job", "node"),
            ("instance", &inst),
        ]);
        let mut s = Vec::new();
        let mut t = T0 + g * 97;
        let mut stale_sent = false;
        while t < T0 + SPAN {
            let m = (t - T0) / MIN;
            if g == 3 && (30..37).contains(&m) {
                if !stale_sent {
                    s.push((t, stale));
                    stale_sent = true;
                }
            } else {
                let x = (t - T0) as f64 / 600_000.0 + g as f64;
                let mut v = 20.0 + 10.0 * x.sin() + (rng.next() % 100) as f64 / 16.0
                    - if g == 4 { 30.0 } else { 0.0 };
                // i-5 reports NaN for two minutes and +Inf once: ordinary values, not stale.
                if g == 5 && (10..12).contains(&m) {
                    v = f64::NAN;
                }
                if g == 5 && m == 44 && s.last().is_some_and(|p: &(i64, f64)| p.1.is_finite()) {
                    v = f64::INFINITY;
                }
                s.push((t, v));
            }
            t += 30_000;
        }
        out.push((l, s));
    }
    // Classic histograms: cumulative buckets, _sum and _count; web/i-1 resets at 30 m.
    let bounds = ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"];
    for job in ["api", "web"] {
        for inst in ["i-0", "i-1"] {
            let mut counts = [0f64; 7];
            let mut sum = 0.0;
            let mut series: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 9];
            let mut t = T0 + 500;
            while t < T0 + SPAN {
                let m = (t - T0) / MIN;
                if job == "web"
                    && inst == "i-1"
                    && m == 30
                    && counts[6] > 0.0
                    && series[0].last().is_some_and(|p| p.0 < T0 + 30 * MIN)
                {
                    counts = [0.0; 7];
                    sum = 0.0;
                }
                for _ in 0..(rng.next() % 20) {
                    let b = (rng.next() % 7) as usize;
                    let obs = [0.03, 0.07, 0.2, 0.4, 0.8, 2.0, 4.0][b];
                    sum += obs;
                    for c in counts.iter_mut().skip(b) {
                        *c += 1.0;
                    }
                }
                for (i, c) in counts.iter().enumerate() {
                    series[i].push((t, *c));
                }
                series[7].push((t, sum));
                series[8].push((t, counts[6]));
                t += 15_000;
            }
            for (i, s) in series.into_iter().enumerate() {
                let l = match i {
                    0..=6 => labels(&[
                        ("__name__", "rpc_duration_seconds_bucket"),
                        ("job", job),
                        ("instance", inst),
                        ("le", bounds[i]),
                    ]),
                    7 => labels(&[
                        ("__name__", "rpc_duration_seconds_sum"),
                        ("job", job),
                        ("instance", inst),
                    ]),
                    _ => labels(&[
                        ("__name__", "rpc_duration_seconds_count"),
                        ("job", job),
                        ("instance", inst),
                    ]),
                };
                out.push((l, s));
            }
        }
    }
    // up, with web/i-2 down between 20 m and 30 m; build_info for group_left joins.
    for job in ["api", "web"] {
        for inst in ["i-0", "i-1", "i-2"] {
            let l = labels(&[("__name__", "up"), ("job", job), ("instance", inst)]);
            let s = (0..SPAN / 15_000)
                .map(|i| {
                    let t = T0 + i * 15_000 + 300;
                    let m = (t - T0) / MIN;
                    (
                        t,
                        if job == "web" && inst == "i-2" && (20..30).contains(&m) {
                            0.0
                        } else {
                            1.0
                        },
                    )
                })
                .collect();
            out.push((l, s));
        }
    }
    for (job, version) in [("api", "1.2.3"), ("web", "2.0.0-rc<1>&b")] {
        let l = labels(&[
            ("__name__", "build_info"),
            ("job", job),
            ("version", version),
        ]);
        let s = (0..SPAN / 15_000)
            .map(|i| (T0 + i * 15_000 + 700, 1.0))
            .collect();
        out.push((l, s));
    }
    out
}

/// The data as remote-write requests of 5-minute slices (every series in time order
/// across requests), with `extra` labels added to every series.
pub(crate) fn requests(data: &[(Labels, Vec<(i64, f64)>)], extra: &[(&str, &str)]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut from = T0;
    while from < T0 + SPAN {
        let to = from + 5 * MIN;
        let mut req = WriteRequest::default();
        for (l, s) in data {
            let samples: Vec<Sample> = s
                .iter()
                .filter(|(t, _)| *t >= from && *t < to)
                .map(|(t, v)| Sample {
                    value: *v,
                    timestamp: *t,
                })
                .collect();
            if samples.is_empty() {
                continue;
            }
            let mut all = l.clone();
            all.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
            all.sort();
            req.timeseries.push(TimeSeries {
                labels: all
                    .into_iter()
                    .map(|(name, value)| Label { name, value })
                    .collect(),
                samples,
                ..Default::default()
            });
        }
        out.push(sluice_bench::encode_snappy(&req));
        from = to;
    }
    out
}

fn post_write(url: &str, body: &[u8]) {
    let r = crate::harness::snappy_post(&crate::harness::client(), url)
        .set("X-Prometheus-Remote-Write-Version", "0.1.0")
        .send_bytes(body);
    match r {
        Ok(resp) => assert!(resp.status() / 100 == 2, "{url}: {}", resp.status()),
        Err(ureq::Error::Status(code, resp)) => {
            panic!("{url}: {code} {}", resp.into_string().unwrap_or_default())
        }
        Err(e) => panic!("{url}: {e}"),
    }
}

/// GET `path` with `params`; the status code and JSON body.
pub(crate) fn get(base: &str, path: &str, params: &[(&str, String)]) -> (u16, Value) {
    let (code, v, _) = get_raw(base, path, params);
    (code, v)
}

/// Like [`get`], with the body as sent.
fn get_raw(base: &str, path: &str, params: &[(&str, String)]) -> (u16, Value, String) {
    let mut req = crate::harness::client().get(&format!("{base}{path}"));
    for (k, v) in params {
        req = req.query(k, v);
    }
    // Not `into_string`: it stops at 10 MB, and a matrix of 10k series is larger.
    let text = |r: ureq::Response| {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut r.into_reader(), &mut s);
        s
    };
    let (code, body) = match req.call() {
        Ok(r) => (r.status(), text(r)),
        Err(ureq::Error::Status(c, r)) => (c, text(r)),
        Err(e) => panic!("{base}{path}: {e}"),
    };
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (code, v, body)
}

pub(crate) fn secs(ms: i64) -> String {
    format!("{}", ms as f64 / 1000.0)
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn num(v: &Value) -> f64 {
    let s = v.as_str().unwrap_or("?");
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => s.parse().unwrap_or(f64::NAN),
    }
}

/// Values equal as numbers must also be written alike (Go's `FormatFloat(v, 'f', -1)`).
fn formatting_differs(o: &Value, t: &Value, field: &str) -> Option<String> {
    let texts = |r: &Value| -> BTreeMap<(String, String), String> {
        let mut m = BTreeMap::new();
        for s in r.as_array().into_iter().flatten() {
            let pts: Vec<Value> = if field == "value" {
                vec![s[field].clone()]
            } else {
                s[field].as_array().cloned().unwrap_or_default()
            };
            for p in pts {
                m.insert(
                    (metric_key(&s["metric"]), p[0].to_string()),
                    p[1].as_str().unwrap_or("").to_string(),
                );
            }
        }
        m
    };
    let (om, tm) = (texts(o), texts(t));
    for (k, tv) in &tm {
        if let Some(ov) = om.get(k) {
            let (a, b) = (
                num(&Value::String(ov.clone())),
                num(&Value::String(tv.clone())),
            );
            if a.to_bits() == b.to_bits() && ov != tv {
                return Some(format!("{k:?}: we wrote {ov:?}, Prometheus {tv:?}"));
            }
        }
    }
    None
}

/// An error message with every `{...}` emptied.
fn without_label_sets(v: &Value) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in v.as_str().unwrap_or("").chars() {
        match c {
            '{' => {
                depth += 1;
                out.push(c);
            }
            '}' => {
                depth -= 1;
                out.push(c);
            }
            _ if depth > 0 => {}
            _ => out.push(c),
        }
    }
    out
}

fn metric_key(m: &Value) -> String {
    let mut v: Vec<String> = m
        .as_object()
        .map(|o| o.iter().map(|(k, v)| format!("{k}={v}")).collect())
        .unwrap_or_default();
    v.sort();
    format!("{{{}}}", v.join(","))
}

fn points(v: &Value) -> Vec<(i64, f64)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        (p[0].as_f64().unwrap_or(0.0) * 1000.0).round() as i64,
                        num(&p[1]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Compares two successful answers; `None` when equal, else what differs.
pub(crate) fn diff(ours: &Value, theirs: &Value, ordered: bool) -> Option<String> {
    let (ot, tt) = (&ours["resultType"], &theirs["resultType"]);
    if ot != tt {
        return Some(format!("result type {ot} vs {tt}"));
    }
    let (o, t) = (&ours["result"], &theirs["result"]);
    match tt.as_str() {
        Some("scalar") | Some("string") => {
            if o[0] != t[0] {
                return Some(format!("time {} vs {}", o[0], t[0]));
            }
            let same_v = if tt == "scalar" {
                same(num(&o[1]), num(&t[1]))
            } else {
                o[1] == t[1]
            };
            (!same_v).then(|| format!("value {} vs {}", o[1], t[1]))
        }
        Some("vector") | Some("matrix") => {
            let field = if tt == "vector" { "value" } else { "values" };
            let collect = |r: &Value| -> BTreeMap<String, Vec<(i64, f64)>> {
                r.as_array()
                    .map(|a| {
                        a.iter()
                            .map(|s| {
                                let p = if field == "value" {
                                    points(&Value::Array(vec![s[field].clone()]))
                                } else {
                                    points(&s[field])
                                };
                                (metric_key(&s["metric"]), p)
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (om, tm) = (collect(o), collect(t));
            let on = o.as_array().map_or(0, |a| a.len());
            if on != om.len() {
                return Some(format!("we returned a label set twice: {o}"));
            }
            let ok: Vec<&String> = om.keys().collect();
            let tk: Vec<&String> = tm.keys().collect();
            if ok != tk {
                let only_ours: Vec<_> = ok.iter().filter(|k| !tm.contains_key(**k)).collect();
                let only_theirs: Vec<_> = tk.iter().filter(|k| !om.contains_key(**k)).collect();
                return Some(format!(
                    "series differ: only ours {only_ours:?}, only Prometheus' {only_theirs:?}"
                ));
            }
            for (k, tp) in &tm {
                let op = &om[k];
                if op.len() != tp.len()
                    || op
                        .iter()
                        .zip(tp)
                        .any(|(a, b)| a.0 != b.0 || !same(a.1, b.1))
                {
                    let first = op
                        .iter()
                        .zip(tp)
                        .find(|(a, b)| a.0 != b.0 || !same(a.1, b.1));
                    return Some(format!(
                        "{k}: {} points vs {}; first difference (ours, theirs): {first:?}",
                        op.len(),
                        tp.len()
                    ));
                }
            }
            if let Some(d) = formatting_differs(o, t, field) {
                return Some(d);
            }
            if ordered {
                let vals = |r: &Value| -> Vec<f64> {
                    r.as_array()
                        .map(|a| a.iter().map(|s| num(&s["value"][1])).collect())
                        .unwrap_or_default()
                };
                let (ov, tv) = (vals(o), vals(t));
                if ov.iter().zip(&tv).any(|(a, b)| !same(*a, *b)) {
                    return Some(format!("order differs: {ov:?} vs {tv:?}"));
                }
            }
            None
        }
        other => Some(format!("unexpected result type {other:?}")),
    }
}

/// The queries: every function, aggregation and operator, over every kind of series.
fn queries() -> Vec<String> {
    let at = (T0 + 20 * MIN) / 1000;
    let mut q: Vec<String> = [
        // Selectors and matchers.
        "http_requests_total",
        r#"http_requests_total{job="api"}"#,
        r#"http_requests_total{job!="api"}"#,
        r#"http_requests_total{method=~"G.*"}"#,
        r#"http_requests_total{method!~"G.*",instance=~"i-[01]"}"#,
        r#"{__name__=~"http_.*",job="web"}"#,
        r#"{__name__=~"up|build_info"}"#,
        "http_requests_total offset 5m",
        "node_temperature_celsius offset -2m",
        r#"node_temperature_celsius{instance="i-3"}"#,
        r#"http_requests_total{instance="i-1",job="web",method="POST"}"#,
        "up",
        "rpc_duration_seconds_bucket",
        // Literals.
        "42",
        "-3.5",
        "1 + 2 * 3",
        "2 ^ 3 ^ 2",
        "7 % 3",
        "1 / 0",
        "-1 / 0",
        "0 / 0",
        "NaN",
        "Inf",
        "2 > bool 1",
        "time()",
        "time() - 60",
        "pi()",
        // Counter functions.
        "rate(http_requests_total[1m])",
        "rate(http_requests_total[5m])",
        "rate(http_requests_total[90s])",
        "irate(http_requests_total[1m])",
        "irate(http_requests_total[5m])",
        "increase(http_requests_total[5m])",
        "increase(http_requests_total[10m])",
        "delta(node_temperature_celsius[5m])",
        "delta(http_requests_total[2m])",
        "idelta(node_temperature_celsius[3m])",
        "deriv(node_temperature_celsius[10m])",
        "deriv(http_requests_total[5m])",
        "predict_linear(node_temperature_celsius[10m], 600)",
        "predict_linear(http_requests_total[5m], 3600)",
        "resets(http_requests_total[15m])",
        "changes(up[20m])",
        "changes(node_temperature_celsius[5m])",
        "rate(http_requests_total[5m] offset 2m)",
        "rate(http_requests_total[5m] offset -1m)",
        // Over time.
        "avg_over_time(node_temperature_celsius[5m])",
        "min_over_time(node_temperature_celsius[5m])",
        "max_over_time(node_temperature_celsius[10m])",
        "sum_over_time(node_temperature_celsius[5m])",
        "count_over_time(node_temperature_celsius[10m])",
        "count_over_time(http_requests_total[10m])",
        "quantile_over_time(0.3, node_temperature_celsius[10m])",
        "quantile_over_time(0.95, http_requests_total[5m])",
        "quantile_over_time(1.5, node_temperature_celsius[5m])",
        "stddev_over_time(node_temperature_celsius[10m])",
        "stdvar_over_time(node_temperature_celsius[10m])",
        "last_over_time(node_temperature_celsius[10m])",
        "last_over_time(http_requests_total[3m])",
        "present_over_time(node_temperature_celsius[2m])",
        r#"absent_over_time(node_temperature_celsius{instance="i-3"}[2m])"#,
        r#"absent_over_time(nonexistent{job="x",instance=~"y"}[5m])"#,
        "absent_over_time(up[5m])",
        // Histograms.
        "histogram_quantile(0.9, rate(rpc_duration_seconds_bucket[5m]))",
        "histogram_quantile(0.5, sum by (le) (rate(rpc_duration_seconds_bucket[5m])))",
        "histogram_quantile(0.99, sum by (job, le) (increase(rpc_duration_seconds_bucket[10m])))",
        "histogram_quantile(0, rate(rpc_duration_seconds_bucket[5m]))",
        "histogram_quantile(1, rate(rpc_duration_seconds_bucket[5m]))",
        "histogram_quantile(0.25, rpc_duration_seconds_bucket)",
        "histogram_quantile(1.5, rpc_duration_seconds_bucket)",
        "histogram_quantile(-1, rpc_duration_seconds_bucket)",
        r#"histogram_quantile(0.5, rpc_duration_seconds_bucket{le!="+Inf"})"#,
        "rate(rpc_duration_seconds_sum[5m]) / rate(rpc_duration_seconds_count[5m])",
        // Label functions.
        r#"label_replace(up, "host", "$1", "instance", "i-(.*)")"#,
        r#"label_replace(up, "x", "$2", "job", "(.*)")"#,
        r#"label_replace(up, "job", "", "job", "api")"#,
        r#"label_replace(up, "y", "z-$1-${1}x", "instance", "(i)-.*")"#,
        r#"label_replace(up, "y", "nomatch", "instance", "zzz")"#,
        r#"label_join(up, "ji", "/", "job", "instance")"#,
        r#"label_join(up, "ji", "", "missing")"#,
        // Math.
        "abs(delta(node_temperature_celsius[5m]))",
        "ceil(node_temperature_celsius)",
        "floor(node_temperature_celsius)",
        "round(node_temperature_celsius)",
        "round(node_temperature_celsius, 0.5)",
        "round(node_temperature_celsius, 3)",
        "clamp(node_temperature_celsius, 15, 25)",
        "clamp(node_temperature_celsius, 25, 15)",
        "clamp_min(node_temperature_celsius, 20)",
        "clamp_max(node_temperature_celsius, 20)",
        "exp(node_temperature_celsius / 10)",
        "ln(node_temperature_celsius)",
        "log2(node_temperature_celsius)",
        "log10(node_temperature_celsius)",
        "sqrt(node_temperature_celsius)",
        "sgn(delta(node_temperature_celsius[5m]))",
        "timestamp(node_temperature_celsius)",
        "timestamp(rate(http_requests_total[5m]))",
        "vector(time())",
        "vector(1) + vector(2)",
        r#"scalar(up{job="api",instance="i-0"})"#,
        "scalar(up)",
        "sort(node_temperature_celsius)",
        "sort_desc(rate(http_requests_total[5m]))",
        r#"absent(nonexistent{job="x"})"#,
        "absent(up)",
        r#"absent(node_temperature_celsius{instance="i-3"})"#,
        "hour()",
        "minute(timestamp(up))",
        "day_of_week()",
        "month(vector(1700000000))",
        "year()",
        "days_in_month()",
        // Aggregations.
        "sum(rate(http_requests_total[5m]))",
        "sum by (job) (rate(http_requests_total[5m]))",
        "sum without (instance, method) (http_requests_total)",
        "avg by (instance) (node_temperature_celsius)",
        "min by (job) (http_requests_total)",
        "max without (method) (http_requests_total)",
        "count(up)",
        "count by (job) (up == 1)",
        "stddev(node_temperature_celsius)",
        "stdvar by (job) (rate(http_requests_total[5m]))",
        "group by (job) (http_requests_total)",
        "topk(3, node_temperature_celsius)",
        "bottomk(2, rate(http_requests_total[5m]))",
        "topk by (job) (1, http_requests_total)",
        "quantile(0.75, node_temperature_celsius)",
        "quantile by (job) (0.1, http_requests_total)",
        r#"count_values("value", up)"#,
        r#"count_values by (job) ("v", up)"#,
        r#"count_values without (instance) ("v", up)"#,
        r#"sum by (__name__) ({__name__=~"http.*|up"})"#,
        "sum(nonexistent)",
        "avg(http_requests_total)",
        // Binary operators.
        "rate(http_requests_total[5m]) * 60",
        "2 * up",
        "up - -1",
        "-up",
        "-(node_temperature_celsius)",
        "node_temperature_celsius atan2 10",
        "node_temperature_celsius > 22",
        "node_temperature_celsius > bool 22",
        "22 < node_temperature_celsius",
        "22 >= bool node_temperature_celsius",
        "up == bool 1",
        "up != 0",
        "node_temperature_celsius >= node_temperature_celsius offset 1m",
        "node_temperature_celsius - node_temperature_celsius offset 5m",
        "node_temperature_celsius / on(instance) group_left node_temperature_celsius offset 5m",
        "up * on(job) group_left(version) build_info",
        "build_info * on(job) group_right(version) up",
        "http_requests_total / ignoring(method) group_left sum without(method) (http_requests_total)",
        r#"rate(http_requests_total{method="GET"}[5m]) / ignoring(method) rate(http_requests_total{method="POST"}[5m])"#,
        "sum by (job) (rate(http_requests_total[5m])) / on(job) group_left sum by (job, instance) (rate(http_requests_total[5m]))",
        "sum by (job, instance) (rate(http_requests_total[5m])) / on(job) group_left sum by (job) (rate(http_requests_total[5m]))",
        "up > on(job, instance) bool sum by (job, instance) (http_requests_total)",
        "up and on(job) build_info",
        "up unless up == 0",
        "up == 0 or vector(0)",
        r#"http_requests_total{job="api"} or http_requests_total{method="GET"}"#,
        r#"http_requests_total and ignoring(method) http_requests_total{method="GET"}"#,
        r#"http_requests_total unless on(instance) up{instance="i-0"}"#,
        "http_requests_total * up",
        "http_requests_total * on(job) up",
        "up * on(job) group_left http_requests_total",
        "http_requests_total + on(job, instance) group_left up",
        // Subqueries.
        "max_over_time(rate(http_requests_total[1m])[10m:1m])",
        "avg_over_time(node_temperature_celsius[5m:30s])",
        "rate(http_requests_total[5m:])",
        "min_over_time(sum(node_temperature_celsius)[15m:2m] offset 1m)",
        "deriv(sum(http_requests_total)[10m:])",
        "max_over_time(max_over_time(node_temperature_celsius[2m:30s])[6m:1m])",
        "count_over_time(up[7m:45s])",
        "node_temperature_celsius[5m:1m]",
        "http_requests_total[2m]",
        "node_temperature_celsius[1m] offset 3m",
        r#""hello""#,
        // Edge cases.
        "sum by (le) (rpc_duration_seconds_bucket)",
        "rate(up[5m])",
        "increase(rpc_duration_seconds_count[1m])",
        "avg_over_time(http_requests_total[30s])",
        "max_over_time(rate(http_requests_total[1m])[10m:1m] offset 5m)",
        "sum by (job) (rate(http_requests_total[5m])) > 1",
        "irate(http_requests_total[30s])",
        "predict_linear(node_temperature_celsius[5m] offset 3m, 120)",
        "deriv(node_temperature_celsius[5m:30s])",
        "stddev_over_time(rate(http_requests_total[1m])[5m:15s])",
        "absent(nonexistent)",
        r#"http_requests_total{job=~"a.*|w.*"}"#,
        r#"{job="node"}"#,
        r#"{instance=~"i-[3]",__name__=~".+"}"#,
        "up offset 1h",
        r#"label_replace(rate(http_requests_total[5m]), "method", "", "method", ".*")"#,
        "sum by (job) (up) + on(job) group_left count by (job) (up)",
        "-rate(http_requests_total[5m])",
        "rate(http_requests_total[5m]) > bool 1 == 1",
        "ceil(rate(http_requests_total[5m]))",
        "count by (method) (http_requests_total)",
        "1 - up",
        "up / 0",
        "-up / 0",
        "0 * -1",
        "up * -0",
        "rate(http_requests_total[5m]) and on() vector(1)",
        "vector(1) or on() up",
        "absent_over_time(up[1m] offset 2h)",
        "changes(http_requests_total[10m])",
        "resets(node_temperature_celsius[10m])",
        "histogram_quantile(0.5, rate(rpc_duration_seconds_bucket[1m]))",
        "rate(up)",
        "sum(",
        "nonexistent_function(up)",
        "topk(0, up)",
        "topk(2, http_requests_total)",
        "bottomk by (instance) (1, node_temperature_celsius)",
        "quantile(2, up)",
        "avg without (instance) (node_temperature_celsius)",
        "node_temperature_celsius % 7",
        "node_temperature_celsius ^ 0.5",
        "up{job=\"web\"} == on(instance) up{job=\"api\"}",
        "sum(rate(http_requests_total[5m])) / sum(rate(http_requests_total[5m] offset 10m))",
        "last_over_time(node_temperature_celsius[1m:15s])",
        r#"count_values("v", node_temperature_celsius)"#,
        r#"count_values("v", round(node_temperature_celsius, 0.125))"#,
        "node_temperature_celsius * 1e-9",
        "node_temperature_celsius * 1e25",
        "vector(1.5e-7)",
        "vector(123456789.123456789)",
        "absent_over_time(nonexistent[5m:1m])",
        "sum by (nonexistent) (up)",
        "up * on(job) group_left(nonexistent) build_info",
        "min_over_time(node_temperature_celsius[3m])",
        "max(node_temperature_celsius)",
        "min(node_temperature_celsius)",
        "sort(-node_temperature_celsius)",
        "topk(2, node_temperature_celsius)",
        "bottomk(2, node_temperature_celsius)",
        "node_temperature_celsius != node_temperature_celsius",
        "node_temperature_celsius == bool node_temperature_celsius",
        "quantile(0.5, node_temperature_celsius)",
        "stddev_over_time(node_temperature_celsius[3m])",
        "changes(node_temperature_celsius[3m])",
        "deriv(node_temperature_celsius[3m])",
        "rate(node_temperature_celsius[3m])",
        "holt_winters(node_temperature_celsius[10m], 0.5, 0.5)",
        "holt_winters(http_requests_total[5m], 0.1, 0.9)",
        "holt_winters(http_requests_total[5m], 1, 0.9)",
        // @ modifier.
        "rate(http_requests_total[5m] @ end())",
        "node_temperature_celsius @ start()",
        "sum(http_requests_total @ end()) - sum(http_requests_total)",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    q.push(format!("http_requests_total @ {at}"));
    q.push(format!("rate(http_requests_total[5m] @ {at})"));
    q.push(format!("sum_over_time(up[10m:1m] @ {at})"));
    q.push(format!("node_temperature_celsius @ {at} offset 2m"));
    q.push(format!("timestamp(up @ {at})"));
    q.push(format!("node_temperature_celsius @ {at}.123"));
    q.push(format!(
        "rate(http_requests_total[1m30s] @ {at}.5 offset 1m30s)"
    ));
    q.push("rate(http_requests_total[1h])".to_string());
    q.push("avg_over_time(node_temperature_celsius[90s] offset 45s)".to_string());
    q.push(format!("sum_over_time(up[10m:1m] @ {at} offset 1m)"));
    q.push(format!(
        "max_over_time(node_temperature_celsius[10m:1m] @ {at})"
    ));
    q
}

#[test]
fn promql_answers_equal_prometheus() {
    let data = dataset();
    let sluice = Server::start(2, &[]);
    let prom = Prometheus::start("");
    for body in requests(&data, &[]) {
        let (code, text) = sluice.write_bytes(&body, &[]);
        assert_eq!(code, 204, "{text}");
    }
    for body in requests(&data, &[("tenant_id", "default-tenant")]) {
        post_write(&prom.url("/api/v1/write"), &body);
    }
    let ours = sluice.url("");
    let theirs = prom.url("");
    // Times inside a counter gap, the gauge NaN window (i-5 at 10-12 m), a stale gap
    // (i-3 at 30-37 m), after a stale end (40 m), and the end of the data.
    let instants = [
        T0 + 11 * MIN + 1_000,
        T0 + 12 * MIN + 3_000,
        T0 + 31 * MIN,
        T0 + 41 * MIN + 30_500,
        T0 + SPAN,
    ];
    let ranges = [
        (T0 + 5 * MIN, T0 + SPAN, 60_000),
        (T0 + 20 * MIN, T0 + 40 * MIN, 37_000),
    ];
    let mut failures = Vec::new();
    let mut passed = 0;
    // How many answers were errors on both sides, and how many carried data, so an empty
    // server cannot pass by answering nothing like another empty one.
    let (mut both_failed, mut with_data) = (0, 0);
    for q in queries() {
        let ordered = q.starts_with("sort");
        let mut cases: Vec<(&str, Vec<(&str, String)>)> = instants
            .iter()
            .map(|t| {
                (
                    "/api/v1/query",
                    vec![("query", q.clone()), ("time", secs(*t))],
                )
            })
            .collect();
        for (s, e, step) in ranges {
            cases.push((
                "/api/v1/query_range",
                vec![
                    ("query", q.clone()),
                    ("start", secs(s)),
                    ("end", secs(e)),
                    ("step", format!("{}", step as f64 / 1000.0)),
                ],
            ));
        }
        for (path, params) in cases {
            let (tc, tv, traw) = get_raw(&theirs, path, &params);
            let (oc, ov, oraw) = get_raw(&ours, path, &params);
            // The same JSON values written differently (`1.5` vs `1.500`) is a difference too.
            if ov == tv && oraw != traw {
                failures.push(format!(
                    "{path} {params:?}: same values, other bytes:\n ours   {oraw}\n theirs {traw}"
                ));
                continue;
            }
            let what = format!("{path} {params:?}");
            if tv["status"] == "error" {
                if ov["status"] != "error" || ov["errorType"] != tv["errorType"] || oc != tc {
                    failures.push(format!(
                        "{what}: Prometheus failed ({tc} {}) but we answered {oc} {ov}",
                        tv["error"]
                    ));
                } else if tv["errorType"] == "execution"
                    && (if path == "/api/v1/query" {
                        ov["error"] != tv["error"]
                    } else {
                        // A range query's intermediate results come out of a Go map in
                        // Prometheus, so which series an error names varies between runs.
                        without_label_sets(&ov["error"]) != without_label_sets(&tv["error"])
                    })
                {
                    // Evaluation errors (many-to-many matching, duplicate label sets) must
                    // read the same; parse errors come from another parser and may not.
                    failures.push(format!(
                        "{what}: error {} vs Prometheus' {}",
                        ov["error"], tv["error"]
                    ));
                } else {
                    passed += 1;
                    both_failed += 1;
                }
                continue;
            }
            if ov["status"] != "success" {
                failures.push(format!("{what}: we failed ({oc}) {ov}"));
                continue;
            }
            if tv["data"]["result"]
                .as_array()
                .is_none_or(|a| !a.is_empty())
            {
                with_data += 1;
            }
            match diff(&ov["data"], &tv["data"], ordered && path == "/api/v1/query") {
                None => passed += 1,
                Some(d) => failures.push(format!("{what}: {d}")),
            }
        }
    }
    eprintln!(
        "{passed} query answers equal Prometheus' ({with_data} with data, {both_failed} errors on both sides), {} differ",
        failures.len()
    );
    for f in &failures {
        eprintln!("DIFF {f}");
    }
    assert!(failures.is_empty(), "{} answers differ", failures.len());
    assert!(passed >= 150, "only {passed} answers compared");
    assert!(with_data >= 150, "only {with_data} answers carried data");
}

/// The HTTP contract around the engine: POST forms, parameter errors, error classes and
/// status codes, timeouts, buildinfo.
#[test]
fn query_api_speaks_prometheus_http() {
    let s = Server::start(1, &[]);
    for body in requests(&dataset(), &[]) {
        let (code, text) = s.write_bytes(&body, &[]);
        assert_eq!(code, 204, "{text}");
    }
    let base = s.url("");
    let range = [
        (
            "query",
            "sum by (job) (rate(http_requests_total[5m]))".to_string(),
        ),
        ("start", secs(T0 + 10 * MIN)),
        ("end", secs(T0 + 20 * MIN)),
        ("step", "1m".to_string()),
    ];
    let (code, by_get) = get(&base, "/api/v1/query_range", &range);
    assert_eq!(code, 200, "{by_get}");
    assert_eq!(by_get["data"]["result"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        by_get["data"]["result"][0]["values"]
            .as_array()
            .map(Vec::len),
        Some(11)
    );
    let form: Vec<String> = range
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.replace(' ', "+").replace('[', "%5B").replace(']', "%5D")
            )
        })
        .collect();
    let resp = crate::harness::client()
        .post(&s.url("/api/v1/query_range"))
        .set("Content-Type", "application/x-www-form-urlencoded")
        .send_string(&form.join("&"))
        .expect("POST query_range");
    let by_post: Value = serde_json::from_reader(resp.into_reader()).expect("JSON");
    assert_eq!(by_post, by_get);

    // (path, parameters, status, errorType)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, u16, &'a str);
    let cases: [Case; 6] = [
        (
            "/api/v1/query",
            vec![("query", "sum(".into())],
            400,
            "bad_data",
        ),
        (
            "/api/v1/query",
            vec![("query", "up".into()), ("time", "yesterday".into())],
            400,
            "bad_data",
        ),
        (
            "/api/v1/query_range",
            vec![
                ("query", "up".into()),
                ("end", "1".into()),
                ("step", "1".into()),
            ],
            400,
            "bad_data",
        ),
        (
            "/api/v1/query_range",
            vec![
                ("query", "up".into()),
                ("start", "10".into()),
                ("end", "1".into()),
                ("step", "1".into()),
            ],
            400,
            "bad_data",
        ),
        (
            "/api/v1/query",
            vec![
                ("query", "http_requests_total * on(job) up".into()),
                ("time", secs(T0 + 20 * MIN)),
            ],
            422,
            "execution",
        ),
        (
            "/api/v1/query",
            vec![
                ("query", "up".into()),
                ("time", secs(T0 + 20 * MIN)),
                ("timeout", "0s".into()),
            ],
            503,
            "timeout",
        ),
    ];
    for (path, params, code, kind) in cases {
        let (c, v) = get(&base, path, &params);
        assert_eq!(
            (c, v["status"].as_str(), v["errorType"].as_str()),
            (code, Some("error"), Some(kind)),
            "{path} {params:?}: {v}"
        );
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let (c, v) = get(
        &base,
        "/api/v1/query_range",
        &[
            ("query", "up".into()),
            ("start", "0".into()),
            ("end", "1000000".into()),
            ("step", "1".into()),
        ],
    );
    assert_eq!(c, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("11,000 points"),
        "{v}"
    );
    let (c, v) = get(&base, "/api/v1/status/buildinfo", &[]);
    assert_eq!(c, 200);
    assert_eq!(v["status"], "success");
    assert!(v["data"]["version"].is_string(), "{v}");
}

/// Range-query latency next to Prometheus on the same data: 10k series over 1 h at 15 s
/// scrapes, queried over the hour at 15 s steps. Run by hand (it loads 2.4 M samples into
/// each server): `cargo test --release --test e2e range_query_latency -- --ignored --nocapture`.
#[test]
#[ignore]
fn range_query_latency_next_to_prometheus() {
    const SERIES: usize = 10_000;
    const HOUR: i64 = 60 * MIN;
    let sluice = Server::start(2, &[]);
    let prom = Prometheus::start("");
    let mut rng = Lcg(7);
    let mut values = vec![0f64; SERIES];
    let mut t = T0;
    // One request per scrape round keeps both servers' appendable windows happy.
    while t <= T0 + HOUR {
        for extra in [false, true] {
            let mut req = WriteRequest::default();
            for (i, v) in values.iter_mut().enumerate() {
                if !extra {
                    *v += (rng.next() % 100) as f64;
                }
                let mut l = vec![
                    ("__name__".to_string(), "bench_requests_total".to_string()),
                    ("instance".to_string(), format!("host-{:03}", i / 100)),
                    ("job".to_string(), format!("job-{}", i % 10)),
                    ("path".to_string(), format!("/api/v{}", i % 100)),
                ];
                if extra {
                    l.push(("tenant_id".to_string(), "default-tenant".to_string()));
                }
                l.sort();
                req.timeseries.push(TimeSeries {
                    labels: l
                        .into_iter()
                        .map(|(name, value)| Label { name, value })
                        .collect(),
                    samples: vec![Sample {
                        value: *v,
                        timestamp: t + i as i64 % 1000,
                    }],
                    ..Default::default()
                });
            }
            let body = sluice_bench::encode_snappy(&req);
            if extra {
                post_write(&prom.url("/api/v1/write"), &body);
            } else {
                let (code, text) = sluice.write_bytes(&body, &[]);
                assert_eq!(code, 204, "{text}");
            }
        }
        t += 15_000;
    }
    let queries = [
        "sum(rate(bench_requests_total[5m]))",
        "sum by (job) (rate(bench_requests_total[5m]))",
        "rate(bench_requests_total[5m])",
        "topk(5, rate(bench_requests_total[5m]))",
        "histogram_quantile(0.9, sum by (le) (rate(bench_requests_total[5m])))",
    ];
    for q in queries {
        let params = [
            ("query", q.to_string()),
            ("start", secs(T0)),
            ("end", secs(T0 + HOUR)),
            ("step", "15".to_string()),
        ];
        let mut best = [f64::MAX; 2];
        for _ in 0..3 {
            for (i, base) in [sluice.url(""), prom.url("")].iter().enumerate() {
                let started = Instant::now();
                let (code, v) = get(base, "/api/v1/query_range", &params);
                assert_eq!(code, 200, "{v}");
                best[i] = best[i].min(started.elapsed().as_secs_f64());
            }
        }
        eprintln!(
            "{q}: sluice {:.3} s, prometheus {:.3} s (best of 3, 10k series, 1 h, 15 s step)",
            best[0], best[1]
        );
    }
}
