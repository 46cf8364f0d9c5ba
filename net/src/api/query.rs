//! PromQL over HTTP: `/api/v1/query`, `/api/v1/query_range` and `/api/v1/status/buildinfo`.
//!
//! Owns the query parameters (`time`, `start`, `end`, `step`, `timeout`), fetching what a
//! query reads from every core (heads and blocks, through `select_all`), running the pure
//! evaluation off the reactor, and Prometheus' JSON for each result type.

use std::time::Duration;

use sluice_promql::{EngineOptions, Fetched, Labels, Query, QueryValue, Series};
use sluice_shards::{select_all, MatchOp, Matcher, Selection};

use super::{now_ms, push_labels, time_param, ApiError, BadData, Params};
use crate::response::{format_value, push_quoted, push_timestamp, quote};

/// Prometheus' `--query.timeout` default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Prometheus' `--query.max-samples` default.
const MAX_SAMPLES: usize = 50_000_000;

/// Most points per series a range query may ask for (Prometheus' limit).
const MAX_POINTS: i64 = 11_000;

impl From<sluice_promql::Error> for ApiError {
    fn from(e: sluice_promql::Error) -> Self {
        match e {
            sluice_promql::Error::BadData(m) => ApiError::BadData(m),
            sluice_promql::Error::Timeout(_) => ApiError::Timeout(e.to_string()),
            other => ApiError::Execution(other.to_string()),
        }
    }
}

/// Prometheus' duration parameter: float seconds or a duration such as `1h30m`.
fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        let ms = f * 1000.0;
        if !ms.is_finite() || ms.abs() >= 9.2e15 {
            return Err(format!(
                "cannot parse {s:?} to a valid duration. It overflows int64"
            ));
        }
        return Ok(ms.round() as i64);
    }
    parse_prom_duration(s).ok_or_else(|| format!("cannot parse {s:?} to a valid duration"))
}

/// `[0-9]+(y|w|d|h|m|s|ms)` repeated, largest unit first.
fn parse_prom_duration(s: &str) -> Option<i64> {
    let units: [(&str, i64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("ms", 1),
        ("m", 60_000),
        ("s", 1000),
    ];
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total: i64 = 0;
    let mut last_unit = i64::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (u, mult) = units.iter().find(|(u, _)| rest.starts_with(u))?;
        if *mult >= last_unit {
            return None;
        }
        last_unit = *mult;
        rest = &rest[u.len()..];
        total = total.checked_add(n.checked_mul(*mult)?)?;
    }
    Some(total)
}

fn options(p: &Params) -> Result<EngineOptions, ApiError> {
    let mut timeout = DEFAULT_TIMEOUT;
    if let Some(t) = p.get("timeout").filter(|t| !t.is_empty()) {
        let ms = parse_duration(t)
            .map_err(|e| BadData(format!("invalid parameter \"timeout\": {e}")))?;
        timeout = timeout.min(Duration::from_millis(ms.max(0) as u64));
    }
    Ok(EngineOptions {
        timeout,
        max_samples: MAX_SAMPLES,
        ..EngineOptions::default()
    })
}

fn query_text(p: &Params) -> &str {
    p.get("query").unwrap_or("")
}

fn bad_query(e: sluice_promql::Error) -> ApiError {
    match e {
        sluice_promql::Error::BadData(m) => {
            ApiError::BadData(format!("invalid parameter \"query\": {m}"))
        }
        other => other.into(),
    }
}

pub(super) async fn instant(st: &crate::server::CoreState, p: &Params) -> Result<String, ApiError> {
    let t = time_param(p, "time", now_ms())
        .map_err(|e| BadData(format!("invalid parameter \"time\": {}", e.0)))?;
    let q = Query::instant(query_text(p), t, options(p)?).map_err(bad_query)?;
    let v = run(st, q).await?;
    Ok(result_json(&v))
}

pub(super) async fn range(st: &crate::server::CoreState, p: &Params) -> Result<String, ApiError> {
    let start = time_param_required(p, "start")?;
    let end = time_param_required(p, "end")?;
    if end < start {
        return Err(BadData(
            "invalid parameter \"end\": end timestamp must not be before start time".into(),
        )
        .into());
    }
    let step = parse_duration(p.get("step").unwrap_or(""))
        .map_err(|e| BadData(format!("invalid parameter \"step\": {e}")))?;
    if step <= 0 {
        return Err(BadData(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
        )
        .into());
    }
    if (i128::from(end) - i128::from(start)) / i128::from(step) > i128::from(MAX_POINTS) {
        return Err(BadData(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
        )
        .into());
    }
    let q = Query::range(query_text(p), start, end, step, options(p)?).map_err(bad_query)?;
    let v = run(st, q).await?;
    Ok(result_json(&v))
}

fn time_param_required(p: &Params, k: &str) -> Result<i64, ApiError> {
    let v = p.get(k).unwrap_or("");
    time_param(p, k, i64::MIN)
        .and_then(|t| {
            if t == i64::MIN {
                Err(BadData(format!("cannot parse {v:?} to a valid timestamp")))
            } else {
                Ok(t)
            }
        })
        .map_err(|e| BadData(format!("invalid parameter \"{k}\": {}", e.0)).into())
}

/// Fetches every selector's series, then evaluates on a blocking thread so a heavy query
/// does not stall this core's ingestion.
async fn run(st: &crate::server::CoreState, q: Query) -> Result<QueryValue, ApiError> {
    let reqs = q.requests()?;
    let mut fetches = Vec::with_capacity(reqs.len());
    for r in &reqs {
        let mut set = Vec::with_capacity(r.matchers.len());
        for m in &r.matchers {
            let op = match m.op {
                sluice_promql::MatchOp::Equal => MatchOp::Equal,
                sluice_promql::MatchOp::NotEqual => MatchOp::NotEqual,
                sluice_promql::MatchOp::Regex => MatchOp::Regex,
                sluice_promql::MatchOp::NotRegex => MatchOp::NotRegex,
            };
            set.push(Matcher::new(&m.name, op, &m.value).map_err(|e| BadData(e.to_string()))?);
        }
        let sel = Selection {
            matcher_sets: vec![set],
            mint: r.mint,
            maxt: r.maxt,
        };
        let key = r.key;
        fetches.push(async move { select_all(&st.ctx, sel, true).await.map(|s| (key, s)) });
    }
    let results = futures::future::try_join_all(fetches).await?;
    let mut fetched = Fetched::new();
    for (key, series) in results {
        fetched.insert(
            key,
            series
                .into_iter()
                .map(|s| Series {
                    labels: Labels::new(s.labels),
                    samples: s.samples,
                })
                .collect(),
        );
    }
    let v = glommio::executor()
        .spawn_blocking(move || q.exec(&fetched))
        .await?;
    Ok(v)
}

/// A sample's value as Prometheus writes points: Go's `FormatFloat(v, 'f', -1)`, switching to
/// `'e'` (`1.5e-07`, `1e+21`) below 1e-6 and from 1e21 in magnitude.
fn point_value(v: f64) -> String {
    let a = v.abs();
    if v.is_finite() && a != 0.0 && !(1e-6..1e21).contains(&a) {
        // Rust writes `1.5e-7`; Go writes at least two exponent digits with a sign.
        let s = format!("{v:e}");
        if let Some((mant, exp)) = s.split_once('e') {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            return format!("{mant}e{sign}{digits:0>2}");
        }
        return s;
    }
    format_value(v)
}

/// A scalar's or string's time: Go's JSON encoding of the seconds as a float64.
fn push_float_seconds(out: &mut String, t_ms: i64) {
    use std::fmt::Write;
    let _ = write!(out, "{}", t_ms as f64 / 1000.0);
}

fn push_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    push_timestamp(out, t);
    // Formatted in place: number text never needs JSON escaping.
    out.push_str(",\"");
    let a = v.abs();
    if v.is_finite() && (a == 0.0 || (1e-6..1e21).contains(&a)) {
        use std::fmt::Write;
        let _ = write!(out, "{v}");
    } else {
        out.push_str(&point_value(v));
    }
    out.push_str("\"]");
}

/// `data` of a query answer in Prometheus' JSON.
fn result_json(v: &QueryValue) -> String {
    let mut out = String::new();
    match v {
        QueryValue::Scalar { t, v } => {
            // Scalars go through Go's JSON encoder in Prometheus: float seconds, 'f' value.
            out.push_str(r#"{"resultType":"scalar","result":["#);
            push_float_seconds(&mut out, *t);
            out.push(',');
            out.push_str(&quote(&format_value(*v)));
            out.push_str("]}");
        }
        QueryValue::String { t, v } => {
            out.push_str(r#"{"resultType":"string","result":["#);
            push_float_seconds(&mut out, *t);
            out.push(',');
            push_quoted(&mut out, v);
            out.push_str("]}");
        }
        QueryValue::Vector { t, samples } => {
            out.push_str(r#"{"resultType":"vector","result":["#);
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                push_labels(&mut out, s.labels.as_slice());
                out.push_str(r#","value":"#);
                push_point(&mut out, *t, s.v);
                out.push('}');
            }
            out.push_str("]}");
        }
        QueryValue::Matrix(series) => {
            // A large range answer is tens of MB: size the buffer once instead of growing
            // (and copying) it a dozen times.
            let points: usize = series.iter().map(|s| s.points.len()).sum();
            out.reserve(points * 32 + series.len() * 128);
            out.push_str(r#"{"resultType":"matrix","result":["#);
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                push_labels(&mut out, s.labels.as_slice());
                out.push_str(r#","values":["#);
                for (j, (t, v)) in s.points.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    push_point(&mut out, *t, *v);
                }
                out.push_str("]}");
            }
            out.push_str("]}");
        }
    }
    out
}

/// `/api/v1/status/buildinfo`: the fields Prometheus reports, for clients that probe them.
pub(super) fn buildinfo() -> String {
    format!(
        r#"{{"version":{},"revision":"","branch":"","buildUser":"","buildDate":"","goVersion":""}}"#,
        quote(env!("CARGO_PKG_VERSION"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_written_like_prometheus() {
        let mut s = String::new();
        push_point(&mut s, 1_500, 1234567.5);
        assert_eq!(s, r#"[1.500,"1234567.5"]"#);
        s.clear();
        push_point(&mut s, -1_050, 1.5e-7);
        assert_eq!(s, r#"[-1.050,"1.5e-07"]"#);
        s.clear();
        push_point(&mut s, 2_000, 3.163289085967226e26);
        assert_eq!(s, r#"[2,"3.163289085967226e+26"]"#);
        assert_eq!(point_value(1e21), "1e+21");
        assert_eq!(point_value(-0.000001), "-0.000001");
        assert_eq!(point_value(0.0), "0");
        assert_eq!(point_value(f64::NEG_INFINITY), "-Inf");
        let mut s = String::new();
        push_float_seconds(&mut s, 1_050);
        assert_eq!(s, "1.05");
    }

    #[test]
    fn durations_parse_like_prometheus() {
        assert_eq!(parse_duration("15"), Ok(15_000));
        assert_eq!(parse_duration("0.5"), Ok(500));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("1m5s100ms"), Ok(65_100));
        assert!(parse_duration("5m1h").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("").is_err());
    }
}
