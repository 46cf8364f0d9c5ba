//! PromQL over HTTP: `/api/v1/query`, `/api/v1/query_range` and `/api/v1/status/buildinfo`.
//!
//! Owns the query parameters (`time`, `start`, `end`, `step`, `timeout`) and their errors;
//! running the query is [`super::engine`]'s, writing its answer [`super::answer`]'s.

use std::time::Duration;

use sluice_core::parse_duration_or_seconds;

use super::answer::QueryAnswer;
use super::engine::{self, Kind};
use super::{now_ms, time_param, Answer, ApiError, BadData, Params, Reader};
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

/// The query's timeout: `--query.timeout`, or less when the request asks for less.
fn timeout(st: &Reader<'_>, p: &Params) -> Result<Duration, ApiError> {
    let mut timeout = st.cfg.read.query_timeout;
    if let Some(t) = p.get("timeout").filter(|t| !t.is_empty()) {
        let ms = parse_duration_or_seconds(t)
            .map_err(|e| BadData(format!("invalid parameter \"timeout\": {e}")))?;
        timeout = timeout.min(Duration::from_millis(ms.max(0) as u64));
    }
    Ok(timeout)
}

fn query_text(p: &Params) -> &str {
    p.get("query").unwrap_or("")
}

pub(super) async fn instant(
    st: &Reader<'_>,
    p: &Params,
    tenant: Option<String>,
) -> Result<Answer, ApiError> {
    let t = time_param(p, "time", now_ms())
        .map_err(|e| BadData(format!("invalid parameter \"time\": {}", e.0)))?;
    answer(st, p, Kind::Instant { t }, tenant).await
}

pub(super) async fn range(
    st: &Reader<'_>,
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
    let step = parse_duration_or_seconds(p.get("step").unwrap_or(""))
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
    st: &Reader<'_>,
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
