//! PromQL over HTTP: `/api/v1/query`, `/api/v1/query_range` and `/api/v1/status/buildinfo`.
//!
//! Owns the query parameters (`time`, `start`, `end`, `step`, `timeout`) and their errors;
//! running the query is [`super::engine`]'s, writing its answer [`super::answer`]'s.

use std::time::Duration;

use super::answer::QueryAnswer;
use super::engine::{self, Kind};
use super::{now_ms, time_param, Answer, ApiError, BadData, Params};
use crate::response::{quote, Body};
use crate::DebugPanic;

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

/// The query's timeout: `--query.timeout`, or less when the request asks for less.
fn timeout(st: &crate::state::CoreState, p: &Params) -> Result<Duration, ApiError> {
    let mut timeout = st.cfg.read.query_timeout;
    if let Some(t) = p.get("timeout").filter(|t| !t.is_empty()) {
        let ms = parse_duration(t)
            .map_err(|e| BadData(format!("invalid parameter \"timeout\": {e}")))?;
        timeout = timeout.min(Duration::from_millis(ms.max(0) as u64));
    }
    Ok(timeout)
}

fn query_text(p: &Params) -> &str {
    p.get("query").unwrap_or("")
}

pub(super) fn bad_query(e: sluice_promql::Error) -> ApiError {
    match e {
        sluice_promql::Error::BadData(m) => {
            ApiError::BadData(format!("invalid parameter \"query\": {m}"))
        }
        other => other.into(),
    }
}

pub(super) async fn instant(
    st: &crate::state::CoreState,
    p: &Params,
    tenant: Option<String>,
) -> Result<Answer, ApiError> {
    let t = time_param(p, "time", now_ms())
        .map_err(|e| BadData(format!("invalid parameter \"time\": {}", e.0)))?;
    answer(st, p, Kind::Instant { t }, tenant).await
}

pub(super) async fn range(
    st: &crate::state::CoreState,
    p: &Params,
    tenant: Option<String>,
) -> Result<Answer, ApiError> {
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
    answer(st, p, Kind::Range { start, end, step }, tenant).await
}

/// Runs the query and streams its answer.
async fn answer(
    st: &crate::state::CoreState,
    p: &Params,
    kind: Kind,
    tenant: Option<String>,
) -> Result<Answer, ApiError> {
    let text = query_text(p);
    let answered = engine::run(st, text, kind, timeout(st, p)?, tenant).await?;
    let debug_panic = st.cfg.read.debug_panic_at(text, DebugPanic::Answer);
    Ok(Answer::Streamed(Body::pieces(QueryAnswer::new(
        answered.value,
        Some(answered.slot),
        debug_panic,
    ))))
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
