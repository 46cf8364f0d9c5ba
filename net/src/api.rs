//! The read API Grafana and `curl` use: `/api/v1/series`, `/api/v1/labels`,
//! `/api/v1/label/<name>/values`, `/api/v1/query`, `/api/v1/query_range` and
//! `/api/v1/status/buildinfo`, with Prometheus' parameters, JSON shapes and error envelope.
//!
//! Owns parameter parsing, routing, the tenant scope of reads (`--query.enforce-tenancy`)
//! and the deadline of the series and label APIs; PromQL requests are answered in `query`
//! (limits and threads in `engine`), remote read in `remote_read`. Must not read storage
//! directly (fans out through `sluice-shards`).

mod answer;
mod engine;
mod gate;
mod query;
mod remote_read;

pub use gate::Gate;

use std::time::{SystemTime, UNIX_EPOCH};

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use promql_parser::parser::{self, Expr};
use sluice_core::Matcher;
use sluice_shards::{label_names_all, label_values_all, select_all, ReadLimits, Selection};

use crate::body::{BodyError, Stalled};
use crate::response::{json_error, json_success, push_quoted, Body};

/// Deepest a `match[]` selector may nest: a series selector does not nest at all, so
/// anything deeper is refused before the parser recurses over it.
const MAX_SELECTOR_DEPTH: usize = 8;

/// Largest form body the read API accepts.
const MAX_FORM_BYTES: usize = 1 << 20;

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

/// Why the parameters could not be read.
enum ParamsError {
    BadData(BadData),
    /// The form body stalled: the connection is dropped without an answer.
    Stalled(Stalled),
}

async fn params(st: &Reader<'_>, req: Request<Incoming>) -> Result<Params, ParamsError> {
    let mut out: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    if req.method() == Method::POST {
        let body = read_body(st, req.into_body(), MAX_FORM_BYTES)
            .await?
            .map_err(|e| ParamsError::BadData(BadData(format!("reading form body: {e}"))))?;
        out.extend(form_urlencoded::parse(&body).into_owned());
    }
    Ok(Params(out))
}

/// Reads a read request's body (a form, a remote-read request) up to `max` bytes, dropped
/// if it stalls longer than `--http.body-read-timeout`. Small and short-lived: not charged
/// to the write path's memory budget.
async fn read_body(
    st: &Reader<'_>,
    body: Incoming,
    max: usize,
) -> Result<Result<Vec<u8>, BodyError>, ParamsError> {
    let mut out = Vec::new();
    let limits = crate::body::Limits {
        max,
        stall: st.cfg.body_read_timeout,
    };
    match crate::body::read(body, &mut out, limits, None, |_| Ok(())).await {
        Ok(()) => Ok(Ok(out)),
        Err(BodyError::Stalled(d)) => Err(ParamsError::Stalled(Stalled(d))),
        Err(e) => Ok(Err(e)),
    }
}

/// Routes `/api/v1/...` requests; `Err` when the request's body stalled (the connection is
/// dropped).
pub async fn handle(st: &Reader<'_>, req: Request<Incoming>) -> Result<Response<Body>, Stalled> {
    let path = req.uri().path().to_string();
    if req.method() != Method::GET && req.method() != Method::POST {
        return Ok(json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_data",
            &format!("method {} not allowed", req.method()),
        ));
    }
    let tenant = match read_tenant(st, req.headers()) {
        Ok(t) => t,
        Err(BadData(e)) => return Ok(json_error(StatusCode::BAD_REQUEST, "bad_data", &e)),
    };
    // Remote read's body is a snappy protobuf, not a form.
    if path == "/api/v1/read" && req.method() == Method::POST {
        return remote_read::handle(st, req, tenant).await;
    }
    let p = match params(st, req).await {
        Ok(p) => p,
        Err(ParamsError::BadData(BadData(e))) => {
            return Ok(json_error(StatusCode::BAD_REQUEST, "bad_data", &e))
        }
        Err(ParamsError::Stalled(s)) => return Err(s),
    };
    let result = match path.as_str() {
        "/api/v1/series" => series(st, &p, tenant).await,
        "/api/v1/labels" => labels(st, &p, tenant).await.map(Answer::Json),
        "/api/v1/query" => query::instant(st, &p, tenant).await,
        "/api/v1/query_range" => query::range(st, &p, tenant).await,
        "/api/v1/status/buildinfo" => Ok(Answer::Json(query::buildinfo())),
        _ => match path
            .strip_prefix("/api/v1/label/")
            .and_then(|r| r.strip_suffix("/values"))
        {
            Some(name) => label_values(st, name, &p, tenant).await.map(Answer::Json),
            None => {
                return Ok(json_error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!("unknown API endpoint {path}"),
                ))
            }
        },
    };
    Ok(match result {
        Ok(Answer::Json(data)) => json_success(&data),
        Ok(Answer::Streamed(body)) => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(body)
            .expect("static response parts are valid"),
        Err(e) => e.response(),
    })
}

/// What a read uses of its core: the shard context (to read every core) and the settings
/// (limits, tenancy) — not the core's write buffers or replication connections.
pub struct Reader<'a> {
    pub ctx: &'a sluice_shards::Ctx,
    pub cfg: &'a crate::NetConfig,
}

/// A successful answer: `data` as one string, or the whole envelope produced piece by piece.
enum Answer {
    Json(String),
    Streamed(Body),
}

/// The tenant every read of this request is scoped to: with `--query.enforce-tenancy`, the
/// tenant header's (the default tenant without one), as Thanos Query enforces it.
fn read_tenant(st: &Reader<'_>, headers: &hyper::HeaderMap) -> Result<Option<String>, BadData> {
    if !st.cfg.read.enforce_tenancy {
        return Ok(None);
    }
    match headers.get(st.cfg.tenant_header.as_str()) {
        None => Ok(Some(st.cfg.default_tenant.clone())),
        Some(v) => match v.to_str() {
            Ok(t) if sluice_shards::is_valid_tenant(t) => Ok(Some(t.to_string())),
            _ => Err(BadData(format!(
                "invalid tenant in header {}: {:?}",
                st.cfg.tenant_header,
                String::from_utf8_lossy(v.as_bytes())
            ))),
        },
    }
}

/// Failure classes with Prometheus' `errorType` and status code.
enum ApiError {
    /// 400 `bad_data`.
    BadData(String),
    /// 422 `execution`.
    Execution(String),
    /// 503 `timeout`.
    Timeout(String),
    /// 500 `internal`: storage could not be read.
    Internal(String),
}

impl From<BadData> for ApiError {
    fn from(b: BadData) -> Self {
        ApiError::BadData(b.0)
    }
}

impl ApiError {
    /// Prometheus' error envelope with this error's status and `errorType`.
    fn response(&self) -> Response<Body> {
        match self {
            ApiError::BadData(e) => json_error(StatusCode::BAD_REQUEST, "bad_data", e),
            ApiError::Execution(e) => json_error(StatusCode::UNPROCESSABLE_ENTITY, "execution", e),
            ApiError::Timeout(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, "timeout", e),
            ApiError::Internal(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
        }
    }
}

impl From<sluice_shards::QueryError> for ApiError {
    fn from(e: sluice_shards::QueryError) -> Self {
        use sluice_shards::QueryError as Q;
        match e {
            // Prometheus' words for its own limits.
            Q::TooManySamples { .. } => ApiError::Execution(
                "query processing would load too many samples into memory in query execution"
                    .into(),
            ),
            Q::Timeout => ApiError::Timeout("query timed out in query execution".into()),
            other => ApiError::Internal(other.to_string()),
        }
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

/// Matcher sets from `match[]` parameters (each a series selector).
fn match_params(p: &Params) -> Result<Vec<Vec<Matcher>>, BadData> {
    p.all("match[]")
        .map(|s| {
            // The parser recurses over what it reads: a selector does not nest, so a deep
            // one is refused before it is parsed (on this core's stack).
            if sluice_promql::depth::text_depth(s) > MAX_SELECTOR_DEPTH {
                return Err(BadData(format!(
                    "invalid match[] {s:?}: not a series selector (nested more than {MAX_SELECTOR_DEPTH} levels)"
                )));
            }
            match parser::parse(s) {
                Ok(Expr::VectorSelector(vs)) => {
                    sluice_promql::selector_matchers(&vs).map_err(|e| BadData(e.to_string()))
                }
                Ok(_) => Err(BadData(format!("match[] {s:?} is not a series selector"))),
                Err(e) => Err(BadData(format!("invalid match[] {s:?}: {e}"))),
            }
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

/// The limits of a series or label read: the query timeout; they load no samples.
fn metadata_limits(st: &Reader<'_>) -> ReadLimits {
    ReadLimits::new(0, std::time::Instant::now() + st.cfg.read.query_timeout)
}

async fn series(st: &Reader<'_>, p: &Params, tenant: Option<String>) -> Result<Answer, ApiError> {
    let sel = selection(p, tenant)?;
    if sel.matcher_sets.is_empty() {
        return Err(BadData("no match[] parameter provided".into()).into());
    }
    let found = select_all(st.ctx, sel, false, &metadata_limits(st)).await?;
    Ok(Answer::Streamed(Body::pieces(answer::SeriesList::new(
        found,
    ))))
}

/// `match[]`, `start` and `end` as a selection.
fn selection(p: &Params, tenant: Option<String>) -> Result<Selection, BadData> {
    let (mint, maxt) = range_params(p)?;
    Ok(Selection {
        matcher_sets: match_params(p)?,
        mint,
        maxt,
        tenant,
    })
}

async fn labels(st: &Reader<'_>, p: &Params, tenant: Option<String>) -> Result<String, ApiError> {
    let names = label_names_all(st.ctx, selection(p, tenant)?, &metadata_limits(st)).await?;
    Ok(string_array(&names))
}

async fn label_values(
    st: &Reader<'_>,
    name: &str,
    p: &Params,
    tenant: Option<String>,
) -> Result<String, ApiError> {
    if !sluice_core::labels::is_valid_label_name(name.as_bytes()) {
        return Err(BadData(format!("invalid label name: {name:?}")).into());
    }
    let sel = selection(p, tenant)?;
    let values = label_values_all(st.ctx, name.to_string(), sel, &metadata_limits(st)).await?;
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
