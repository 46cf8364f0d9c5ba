//! The read API Grafana and `curl` use: `/api/v1/series`, `/api/v1/labels`,
//! `/api/v1/label/<name>/values` and `/api/v1/query` for bare selectors, with Prometheus'
//! parameters, JSON shapes and error envelope.
//!
//! Owns parameter parsing and result formatting. Full PromQL is a later step: anything but a
//! bare vector or range selector is refused with `bad_data` rather than answered wrongly.
//! Must not read storage directly (fans out through `sluice-shards`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{self, AtModifier, Expr, Offset, VectorSelector};
use sluice_shards::{
    label_names_all, label_values_all, select_all, MatchOp, Matcher, Selection, SeriesData,
};

use crate::response::{
    format_value, json_error, json_success, push_quoted, push_timestamp, quote, Body,
};
use crate::server::CoreState;

/// Prometheus' default lookback for instant selectors.
const LOOKBACK: Duration = Duration::from_secs(300);

/// Largest form body the read API accepts.
const MAX_FORM_BYTES: usize = 1 << 20;

/// Bit pattern Prometheus uses to mark a series stale.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// A client mistake: `bad_data`, HTTP 400.
struct BadData(String);

/// Request parameters from the query string and, for POST, the form body.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, k: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

async fn params(req: Request<Incoming>) -> Result<Params, BadData> {
    let mut out: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    if req.method() == Method::POST {
        let body = http_body_util::Limited::new(req.into_body(), MAX_FORM_BYTES)
            .collect()
            .await
            .map_err(|e| BadData(format!("reading form body: {e}")))?
            .to_bytes();
        out.extend(form_urlencoded::parse(&body).into_owned());
    }
    Ok(Params(out))
}

/// Routes `/api/v1/...` requests.
pub async fn handle(st: &CoreState, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if req.method() != Method::GET && req.method() != Method::POST {
        return json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_data",
            &format!("method {} not allowed", req.method()),
        );
    }
    let p = match params(req).await {
        Ok(p) => p,
        Err(BadData(e)) => return json_error(StatusCode::BAD_REQUEST, "bad_data", &e),
    };
    let result = match path.as_str() {
        "/api/v1/series" => series(st, &p).await,
        "/api/v1/labels" => labels(st, &p).await,
        "/api/v1/query" => query(st, &p).await,
        _ => match path
            .strip_prefix("/api/v1/label/")
            .and_then(|r| r.strip_suffix("/values"))
        {
            Some(name) => label_values(st, name, &p).await,
            None => {
                return json_error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!("unknown API endpoint {path}"),
                )
            }
        },
    };
    match result {
        Ok(data) => json_success(&data),
        Err(ApiError::BadData(e)) => json_error(StatusCode::BAD_REQUEST, "bad_data", &e),
        Err(ApiError::Internal(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e),
    }
}

enum ApiError {
    BadData(String),
    Internal(String),
}

impl From<BadData> for ApiError {
    fn from(b: BadData) -> Self {
        ApiError::BadData(b.0)
    }
}

impl From<sluice_shards::QueryError> for ApiError {
    fn from(e: sluice_shards::QueryError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// Parses Prometheus' time parameter: Unix seconds (fractions allowed) or RFC 3339.
fn parse_time(s: &str) -> Result<i64, BadData> {
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() && f.abs() < 9.2e15 {
            return Ok((f * 1000.0).round() as i64);
        }
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_millis())
        .map_err(|_| BadData(format!("cannot parse {s:?} to a valid timestamp")))
}

fn time_param(p: &Params, k: &str, default: i64) -> Result<i64, BadData> {
    match p.get(k) {
        Some(v) if !v.is_empty() => parse_time(v),
        _ => Ok(default),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Converts a parsed selector's matchers into ours.
fn matchers_of(vs: &VectorSelector) -> Result<Vec<Matcher>, BadData> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(BadData("`or` inside a selector is not supported".into()));
    }
    let mut out = Vec::with_capacity(vs.matchers.matchers.len() + 1);
    for m in &vs.matchers.matchers {
        let op = match m.op {
            PMatchOp::Equal => MatchOp::Equal,
            PMatchOp::NotEqual => MatchOp::NotEqual,
            PMatchOp::Re(_) => MatchOp::Regex,
            PMatchOp::NotRe(_) => MatchOp::NotRegex,
        };
        out.push(Matcher::new(&m.name, op, &m.value).map_err(|e| BadData(e.to_string()))?);
    }
    if let Some(name) = &vs.name {
        if !out
            .iter()
            .any(|m| m.name == "__name__" && m.op == MatchOp::Equal)
        {
            out.push(
                Matcher::new("__name__", MatchOp::Equal, name)
                    .map_err(|e| BadData(e.to_string()))?,
            );
        }
    }
    Ok(out)
}

/// Matcher sets from `match[]` parameters (each a series selector).
fn match_params(p: &Params) -> Result<Vec<Vec<Matcher>>, BadData> {
    p.all("match[]")
        .map(|s| match parser::parse(s) {
            Ok(Expr::VectorSelector(vs)) => matchers_of(&vs),
            Ok(_) => Err(BadData(format!("match[] {s:?} is not a series selector"))),
            Err(e) => Err(BadData(format!("invalid match[] {s:?}: {e}"))),
        })
        .collect()
}

fn range_params(p: &Params) -> Result<(i64, i64), BadData> {
    let start = time_param(p, "start", i64::MIN)?;
    let end = time_param(p, "end", i64::MAX)?;
    if end < start {
        return Err(BadData(
            "end timestamp must not be before start time".into(),
        ));
    }
    Ok((start, end))
}

async fn series(st: &CoreState, p: &Params) -> Result<String, ApiError> {
    let sel = selection(p)?;
    if sel.matcher_sets.is_empty() {
        return Err(BadData("no match[] parameter provided".into()).into());
    }
    let found = select_all(&st.ctx, sel, false).await?;
    let mut out = String::from("[");
    for (i, s) in found.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_labels(&mut out, &s.labels);
    }
    out.push(']');
    Ok(out)
}

/// `match[]`, `start` and `end` as a selection.
fn selection(p: &Params) -> Result<Selection, BadData> {
    let (mint, maxt) = range_params(p)?;
    Ok(Selection {
        matcher_sets: match_params(p)?,
        mint,
        maxt,
    })
}

async fn labels(st: &CoreState, p: &Params) -> Result<String, ApiError> {
    let names = label_names_all(&st.ctx, selection(p)?).await?;
    Ok(string_array(&names))
}

async fn label_values(st: &CoreState, name: &str, p: &Params) -> Result<String, ApiError> {
    if !sluice_core::labels::is_valid_label_name(name.as_bytes()) {
        return Err(BadData(format!("invalid label name: {name:?}")).into());
    }
    let values = label_values_all(&st.ctx, name.to_string(), selection(p)?).await?;
    Ok(string_array(&values))
}

fn string_array(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_quoted(&mut out, s);
    }
    out.push(']');
    out
}

fn push_labels(out: &mut String, labels: &[(String, String)]) {
    out.push('{');
    for (i, (n, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_quoted(out, n);
        out.push(':');
        push_quoted(out, v);
    }
    out.push('}');
}

/// The evaluation time of a selector: `@` if given, minus `offset`.
fn eval_time(vs: &VectorSelector, query_time: i64) -> Result<i64, BadData> {
    let base = match &vs.at {
        None => query_time,
        Some(AtModifier::At(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        },
        // A single instant query has start = end = the query time.
        Some(AtModifier::Start) | Some(AtModifier::End) => query_time,
    };
    Ok(match &vs.offset {
        None => base,
        Some(Offset::Pos(d)) => base - d.as_millis() as i64,
        Some(Offset::Neg(d)) => base + d.as_millis() as i64,
    })
}

async fn query(st: &CoreState, p: &Params) -> Result<String, ApiError> {
    let q = p
        .get("query")
        .ok_or_else(|| BadData("missing query parameter \"query\"".into()))?;
    let t = time_param(p, "time", now_ms())?;
    let expr =
        parser::parse(q).map_err(|e| BadData(format!("invalid parameter \"query\": {e}")))?;
    match expr {
        Expr::VectorSelector(vs) => {
            let at = eval_time(&vs, t)?;
            let sel = Selection {
                matcher_sets: vec![matchers_of(&vs)?],
                mint: at - LOOKBACK.as_millis() as i64,
                maxt: at,
            };
            let found = select_all(&st.ctx, sel, true).await?;
            Ok(vector_json(&found, t))
        }
        Expr::MatrixSelector(ms) => {
            let at = eval_time(&ms.vs, t)?;
            let sel = Selection {
                matcher_sets: vec![matchers_of(&ms.vs)?],
                mint: at - ms.range.as_millis() as i64,
                maxt: at,
            };
            let found = select_all(&st.ctx, sel, true).await?;
            Ok(matrix_json(&found))
        }
        _ => Err(BadData(format!(
            "unsupported query {q:?}: this version answers bare vector selectors \
             (up{{job=\"x\"}}) and range selectors (up[5m]); functions, operators and \
             aggregations are not implemented yet"
        ))
        .into()),
    }
}

fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}

/// Starts one result entry: `{"metric":{...},"<field>":` (with a separating comma).
fn open_series(out: &mut String, first: &mut bool, labels: &[(String, String)], field: &str) {
    if !*first {
        out.push(',');
    }
    *first = false;
    out.push_str(r#"{"metric":"#);
    push_labels(out, labels);
    out.push_str(",\"");
    out.push_str(field);
    out.push_str("\":");
}

fn vector_json(found: &[SeriesData], t: i64) -> String {
    let mut out = String::from(r#"{"resultType":"vector","result":["#);
    let mut first = true;
    for s in found {
        let Some(&(_, v)) = s.samples.last() else {
            continue;
        };
        if is_stale(v) {
            continue;
        }
        open_series(&mut out, &mut first, &s.labels, "value");
        out.push('[');
        push_timestamp(&mut out, t);
        out.push(',');
        out.push_str(&quote(&format_value(v)));
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}

fn matrix_json(found: &[SeriesData]) -> String {
    let mut out = String::from(r#"{"resultType":"matrix","result":["#);
    let mut first = true;
    for s in found {
        if s.samples.iter().all(|(_, v)| is_stale(*v)) {
            continue;
        }
        open_series(&mut out, &mut first, &s.labels, "values");
        out.push('[');
        let mut first_point = true;
        for (ts, v) in s.samples.iter().filter(|(_, v)| !is_stale(*v)) {
            if !first_point {
                out.push(',');
            }
            first_point = false;
            out.push('[');
            push_timestamp(&mut out, *ts);
            out.push(',');
            out.push_str(&quote(&format_value(*v)));
            out.push(']');
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}
