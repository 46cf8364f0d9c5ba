//! The evaluator: walks promql-parser's AST at each step of a query over pre-fetched
//! series. Owns selectors (lookback, stale markers, `offset`, `@`), subqueries, literals,
//! unary minus, the step loop, the sample limit and the deadline. Functions, aggregations
//! and binary operators live in their own modules.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use promql_parser::parser::value::ValueType;
use promql_parser::parser::{self, Expr, MatrixSelector, SubqueryExpr, VectorSelector};
use sluice_core::{is_stale, METRIC_NAME};

use crate::error::{exec, Error};
use crate::plan::{self, at_ms, key_of, ms, offset_ms, Fetched, SelectorRequest, TimeCtx};
use crate::types::{compare_labels, Labels, QueryValue, RangeSeries, Sample};
use crate::{aggregate, binary, depth, functions};

/// Engine settings; the defaults are Prometheus'.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (`--query.lookback-delta`).
    pub lookback_ms: i64,
    /// Most samples a query may hold at once (`--query.max-samples`).
    pub max_samples: usize,
    /// Longest a query may evaluate (`--query.timeout`).
    pub timeout: Duration,
    /// Step of a subquery written without one (Prometheus: the global evaluation interval).
    pub default_subquery_step_ms: i64,
    /// When the query started, if before evaluation (the caller queued it and read its data
    /// first): the timeout counts from here. `None`: from the start of evaluation.
    pub started: Option<Instant>,
    /// Set when nobody waits for the answer any more: evaluation stops at its next deadline
    /// check.
    pub cancelled: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_ms: 5 * 60 * 1000,
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            default_subquery_step_ms: 60_000,
            started: None,
            cancelled: None,
        }
    }
}

/// A parsed query with its time parameters.
pub struct Query {
    // Boxed so that selector nodes keep their addresses (the keys of fetched data) even
    // when the query value moves.
    expr: Box<Expr>,
    start: i64,
    end: i64,
    step: i64,
    opts: EngineOptions,
}

/// Teaches the parser the Prometheus 2.x functions it no longer knows (`holt_winters`,
/// renamed in Prometheus 3), once per process.
fn register_functions() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only if a name collides with a built-in, i.e. the parser knows it already.
        let _ = parser::register_extra_functions(vec![parser::Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        )]);
    });
}

/// Go's ceil-to-multiple as Prometheus computes a subquery's first step.
fn align_up(t: i64, step: i64) -> i64 {
    let mut a = step * (t / step);
    if a < t {
        a = a.saturating_add(step);
    }
    a
}

impl Query {
    /// An instant query at `t` (ms).
    pub fn instant(text: &str, t: i64, opts: EngineOptions) -> Result<Query, Error> {
        Self::new(text, t, t, 0, opts)
    }

    /// A range query over `[start, end]` every `step` ms.
    pub fn range(
        text: &str,
        start: i64,
        end: i64,
        step: i64,
        opts: EngineOptions,
    ) -> Result<Query, Error> {
        if step <= 0 {
            return Err(Error::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end < start {
            return Err(Error::BadData(
                "end timestamp must not be before start time".into(),
            ));
        }
        Self::new(text, start, end, step, opts)
    }

    fn new(
        text: &str,
        start: i64,
        end: i64,
        step: i64,
        opts: EngineOptions,
    ) -> Result<Query, Error> {
        register_functions();
        // Bounded before the parser recurses over it, and again once parsed (see `depth`).
        depth::check_text(text)?;
        let expr = parser::parse(text).map_err(|e| Error::BadData(e.to_string()))?;
        depth::check_tree(&expr)?;
        if step > 0 {
            let ty = expr.value_type();
            if ty != ValueType::Vector && ty != ValueType::Scalar {
                return Err(Error::BadData(format!(
                    "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                    type_name(ty)
                )));
            }
        }
        Ok(Query {
            expr: Box::new(expr),
            start,
            end,
            step,
            opts,
        })
    }

    fn time_ctx(&self) -> TimeCtx {
        TimeCtx {
            start: self.start,
            end: self.end,
        }
    }

    /// The reads evaluation needs; fetch each and hand them to [`Query::exec`].
    pub fn requests(&self) -> Result<Vec<SelectorRequest>, Error> {
        let mut out = Vec::new();
        plan::collect(
            &self.expr,
            &self.time_ctx(),
            self.opts.lookback_ms,
            &mut out,
        )?;
        Ok(out)
    }

    /// Evaluates over the fetched series.
    pub fn exec(&self, data: &Fetched) -> Result<QueryValue, Error> {
        let mut ev = Evaluator {
            data,
            q: self.time_ctx(),
            lookback: self.opts.lookback_ms,
            sub_step: self.opts.default_subquery_step_ms.max(1),
            deadline: self.opts.started.unwrap_or_else(Instant::now) + self.opts.timeout,
            max_samples: self.opts.max_samples,
            loaded: 0,
            retained: 0,
            sub_cache: HashMap::new(),
            unnamed: HashMap::new(),
            grid: (self.step > 0).then_some((self.start, self.end, self.step)),
            grid_cache: HashMap::new(),
            cancelled: self.opts.cancelled.clone(),
        };
        if self.step == 0 {
            let t = self.start;
            return Ok(match ev.eval(&self.expr, t)? {
                Val::Scalar(v) => QueryValue::Scalar { t, v },
                Val::Str(v) => QueryValue::String { t, v },
                Val::Vector(samples) => QueryValue::Vector { t, samples },
                Val::Matrix(m) => {
                    let mut series = m.series;
                    series.sort_by(|a, b| compare_labels(&a.labels, &b.labels));
                    QueryValue::Matrix(series)
                }
            });
        }
        let mut out: Vec<RangeSeries> = Vec::new();
        let mut index: HashMap<u64, usize> = HashMap::new();
        // The same series usually arrives as the same shared label set at every step; its
        // address finds it without hashing the labels. Safe because `out` keeps every such
        // label set alive, so an address cannot be reused by another.
        let mut by_addr: HashMap<usize, usize> = HashMap::new();
        let mut ts = self.start;
        while ts <= self.end {
            ev.loaded = 0;
            let samples = match ev.eval(&self.expr, ts)? {
                Val::Scalar(v) => vec![Sample {
                    labels: Labels::empty(),
                    v,
                }],
                Val::Vector(v) => v,
                _ => return exec("range query must evaluate to a scalar or instant vector"),
            };
            for s in samples {
                let i = match by_addr.get(&s.labels.addr()) {
                    Some(&i) => i,
                    None => {
                        let i = *index.entry(s.labels.key()).or_insert_with(|| {
                            out.push(RangeSeries {
                                labels: s.labels.clone(),
                                points: Vec::new(),
                            });
                            out.len() - 1
                        });
                        if Labels::same(&out[i].labels, &s.labels) {
                            by_addr.insert(s.labels.addr(), i);
                        }
                        i
                    }
                };
                let pts = &mut out[i].points;
                if pts.last().is_some_and(|(t, _)| *t == ts) {
                    return exec("vector cannot contain metrics with the same labelset");
                }
                pts.push((ts, s.v));
                ev.retained += 1;
            }
            ev.check_samples()?;
            ts = match ts.checked_add(self.step) {
                Some(t) => t,
                None => break,
            };
        }
        out.sort_by(|a, b| compare_labels(&a.labels, &b.labels));
        Ok(QueryValue::Matrix(out))
    }
}

fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Vector => "instant vector",
        ValueType::Scalar => "scalar",
        ValueType::Matrix => "range vector",
        ValueType::String => "string",
    }
}

/// A range vector at one step, with the window it covers (needed for extrapolation).
pub(crate) struct Matrix {
    pub series: Vec<RangeSeries>,
    pub range: i64,
    /// The window's end: the step time after `@` and `offset`.
    pub end: i64,
    /// The step being evaluated (`predict_linear` extrapolates from it).
    pub step_ts: i64,
}

/// The value of an expression at one step.
pub(crate) enum Val {
    Scalar(f64),
    Str(String),
    Vector(Vec<Sample>),
    Matrix(Matrix),
}

pub(crate) struct Evaluator<'a> {
    data: &'a Fetched,
    pub q: TimeCtx,
    lookback: i64,
    sub_step: i64,
    deadline: Instant,
    max_samples: usize,
    /// Samples loaded for the current step.
    loaded: usize,
    /// Samples kept across steps (results, cached subquery steps).
    retained: usize,
    sub_cache: HashMap<(usize, i64), Rc<Vec<Sample>>>,
    /// Label sets without `__name__`, by the address of the original (kept alive here, so
    /// an address cannot be reused for another set): the same series loses its name at
    /// every step.
    unnamed: HashMap<usize, (Labels, Labels)>,
    /// A range query's steps `(start, end, step)`.
    grid: Option<(i64, i64, i64)>,
    /// Results of selectors and range functions over selectors for every step of the
    /// grid, computed series by series (one pass over each series' samples instead of a
    /// binary search per step). Keyed by node address and kind.
    grid_cache: HashMap<(usize, u8), Rc<Vec<Vec<Sample>>>>,
    cancelled: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

pub(crate) fn unparen(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

/// Errors if two samples have the same labels.
pub(crate) fn check_unique(v: &[Sample]) -> Result<(), Error> {
    if v.len() < 2 {
        return Ok(());
    }
    let mut seen = std::collections::HashSet::with_capacity(v.len());
    for s in v {
        if !seen.insert(s.labels.key()) {
            return exec("vector cannot contain metrics with the same labelset");
        }
    }
    Ok(())
}

impl Evaluator<'_> {
    fn check_samples(&self) -> Result<(), Error> {
        if self.loaded + self.retained > self.max_samples {
            return Err(Error::TooManySamples("query execution"));
        }
        Ok(())
    }

    fn check_deadline(&self) -> Result<(), Error> {
        let cancelled = self
            .cancelled
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed));
        if cancelled || Instant::now() > self.deadline {
            return Err(Error::Timeout("expression evaluation"));
        }
        Ok(())
    }

    fn count(&mut self, n: usize) -> Result<(), Error> {
        self.loaded += n;
        self.check_samples()
    }

    /// `labels` without `__name__`, computed once per distinct label set.
    pub fn drop_name(&mut self, labels: &Labels) -> Labels {
        if !labels.has(METRIC_NAME) {
            return labels.clone();
        }
        let (_, unnamed) = self
            .unnamed
            .entry(labels.addr())
            .or_insert_with(|| (labels.clone(), labels.without_name()));
        unnamed.clone()
    }

    pub fn eval(&mut self, e: &Expr, ts: i64) -> Result<Val, Error> {
        match e {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, ts),
            Expr::Unary(u) => match self.eval(&u.expr, ts)? {
                Val::Scalar(v) => Ok(Val::Scalar(-v)),
                Val::Vector(v) => {
                    let out: Vec<Sample> = v
                        .into_iter()
                        .map(|s| Sample {
                            labels: self.drop_name(&s.labels),
                            v: -s.v,
                        })
                        .collect();
                    check_unique(&out)?;
                    Ok(Val::Vector(out))
                }
                _ => exec("unary minus is only allowed on scalars and instant vectors"),
            },
            Expr::VectorSelector(vs) if self.grid_index(ts).is_some() => {
                let i = self.grid_index(ts).unwrap_or(0);
                let grid = self.grid_instant(vs)?;
                Ok(Val::Vector(grid.get(i).cloned().unwrap_or_default()))
            }
            Expr::VectorSelector(vs) => Ok(Val::Vector(
                self.select_instant(vs, ts)?
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect(),
            )),
            Expr::MatrixSelector(m) => Ok(Val::Matrix(self.select_range(m, ts)?)),
            Expr::Subquery(sq) => Ok(Val::Matrix(self.subquery(sq, ts)?)),
            Expr::Call(c) => functions::call(self, c, ts),
            Expr::Aggregate(a) => aggregate::eval(self, a, ts),
            Expr::Binary(b) => binary::eval(self, b, ts),
            Expr::Extension(_) => Err(Error::BadData("unsupported expression".into())),
        }
    }

    pub fn eval_scalar(&mut self, e: &Expr, ts: i64) -> Result<f64, Error> {
        match self.eval(e, ts)? {
            Val::Scalar(v) => Ok(v),
            _ => exec("expected a scalar"),
        }
    }

    pub fn eval_vector(&mut self, e: &Expr, ts: i64) -> Result<Vec<Sample>, Error> {
        match self.eval(e, ts)? {
            Val::Vector(v) => Ok(v),
            _ => exec("expected an instant vector"),
        }
    }

    pub fn eval_matrix(&mut self, e: &Expr, ts: i64) -> Result<Matrix, Error> {
        match self.eval(e, ts)? {
            Val::Matrix(m) => Ok(m),
            _ => exec("expected a range vector"),
        }
    }

    /// The step number of `ts` in a range query's grid, if it is one of its steps.
    pub fn grid_index(&self, ts: i64) -> Option<usize> {
        let (start, end, step) = self.grid?;
        if ts < start || ts > end || (ts - start) % step != 0 {
            return None;
        }
        usize::try_from((ts - start) / step).ok()
    }

    fn grid_steps(&self) -> (i64, i64, usize) {
        let (start, end, step) = self.grid.unwrap_or((0, 0, 1));
        (
            start,
            step,
            usize::try_from((end - start) / step + 1).unwrap_or(0),
        )
    }

    /// An instant selector at every step of the grid.
    fn grid_instant(&mut self, vs: &VectorSelector) -> Result<Rc<Vec<Vec<Sample>>>, Error> {
        let key = (key_of(vs), 0);
        if let Some(g) = self.grid_cache.get(&key) {
            return Ok(g.clone());
        }
        self.check_deadline()?;
        let (start, step, n) = self.grid_steps();
        let at = at_ms(&vs.at, &self.q);
        let off = offset_ms(&vs.offset);
        let mut out: Vec<Vec<Sample>> = vec![Vec::new(); n];
        let mut total = 0;
        for s in self.data.get(key_of(vs)) {
            let mut next = 0;
            for (i, step_out) in out.iter_mut().enumerate() {
                let r = at.unwrap_or(start + i as i64 * step).saturating_sub(off);
                while next < s.samples.len() && s.samples[next].0 <= r {
                    next += 1;
                }
                if next == 0 {
                    continue;
                }
                let (t, v) = s.samples[next - 1];
                if t < r.saturating_sub(self.lookback) || is_stale(v) {
                    continue;
                }
                step_out.push(Sample {
                    labels: s.labels.clone(),
                    v,
                });
                total += 1;
            }
        }
        self.retained += total;
        self.check_samples()?;
        let g = Rc::new(out);
        self.grid_cache.insert(key, g.clone());
        Ok(g)
    }

    /// A range-vector function over a range selector at every step of the grid, series by
    /// series with a sliding window.
    pub fn grid_range_fn(
        &mut self,
        m: &MatrixSelector,
        keep_name: bool,
        p: f64,
        f: crate::functions::RangeFn,
    ) -> Result<Rc<Vec<Vec<Sample>>>, Error> {
        let key = (key_of(&m.vs), 1);
        if let Some(g) = self.grid_cache.get(&key) {
            return Ok(g.clone());
        }
        self.check_deadline()?;
        let (start, step, n) = self.grid_steps();
        let at = at_ms(&m.vs.at, &self.q);
        let off = offset_ms(&m.vs.offset);
        let range = ms(&m.range);
        let mut out: Vec<Vec<Sample>> = vec![Vec::new(); n];
        let mut total = 0;
        let mut seen = std::collections::HashSet::new();
        let mut maybe_dup = false;
        let mut buf: Vec<(i64, f64)> = Vec::new();
        for s in self.data.get(key_of(&m.vs)) {
            let labels = if keep_name {
                s.labels.clone()
            } else {
                s.labels.without_name()
            };
            maybe_dup |= !seen.insert(labels.key());
            let has_stale = s.samples.iter().any(|(_, v)| is_stale(*v));
            let (mut lo, mut hi) = (0, 0);
            let len = s.samples.len();
            for (i, step_out) in out.iter_mut().enumerate() {
                let ts = start + i as i64 * step;
                let end = at.unwrap_or(ts).saturating_sub(off);
                let from = end.saturating_sub(range);
                while lo < len && s.samples[lo].0 < from {
                    lo += 1;
                }
                hi = hi.max(lo);
                while hi < len && s.samples[hi].0 <= end {
                    hi += 1;
                }
                let pts: &[(i64, f64)] = if has_stale {
                    buf.clear();
                    buf.extend(s.samples[lo..hi].iter().filter(|(_, v)| !is_stale(*v)));
                    &buf
                } else {
                    &s.samples[lo..hi]
                };
                if pts.is_empty() {
                    continue;
                }
                let win = Matrix {
                    series: Vec::new(),
                    range,
                    end,
                    step_ts: ts,
                };
                if let Some(v) = f(pts, &win, p) {
                    step_out.push(Sample {
                        labels: labels.clone(),
                        v,
                    });
                    total += 1;
                }
            }
        }
        if maybe_dup {
            for v in &out {
                check_unique(v)?;
            }
        }
        self.retained += total;
        self.check_samples()?;
        let g = Rc::new(out);
        self.grid_cache.insert(key, g.clone());
        Ok(g)
    }

    /// The samples an instant selector sees at `ts`, each with its own timestamp: the
    /// latest sample in `[t - lookback, t]` unless it is a stale marker.
    pub fn select_instant(
        &mut self,
        vs: &VectorSelector,
        ts: i64,
    ) -> Result<Vec<(Sample, i64)>, Error> {
        self.check_deadline()?;
        let r = at_ms(&vs.at, &self.q)
            .unwrap_or(ts)
            .saturating_sub(offset_ms(&vs.offset));
        let mut out = Vec::new();
        for s in self.data.get(key_of(vs)) {
            let i = s.samples.partition_point(|(t, _)| *t <= r);
            if i == 0 {
                continue;
            }
            let (t, v) = s.samples[i - 1];
            if t < r.saturating_sub(self.lookback) || is_stale(v) {
                continue;
            }
            out.push((
                Sample {
                    labels: s.labels.clone(),
                    v,
                },
                t,
            ));
        }
        self.count(out.len())?;
        Ok(out)
    }

    /// A range selector at `ts`: samples in `[t - range, t]`, stale markers left out,
    /// series without samples dropped.
    fn select_range(&mut self, m: &MatrixSelector, ts: i64) -> Result<Matrix, Error> {
        self.check_deadline()?;
        let end = at_ms(&m.vs.at, &self.q)
            .unwrap_or(ts)
            .saturating_sub(offset_ms(&m.vs.offset));
        let range = ms(&m.range);
        let start = end.saturating_sub(range);
        let mut series = Vec::new();
        let mut n = 0;
        for s in self.data.get(key_of(&m.vs)) {
            let lo = s.samples.partition_point(|(t, _)| *t < start);
            let hi = s.samples.partition_point(|(t, _)| *t <= end);
            let points: Vec<(i64, f64)> = s.samples[lo..hi]
                .iter()
                .filter(|(_, v)| !is_stale(*v))
                .copied()
                .collect();
            if points.is_empty() {
                continue;
            }
            n += points.len();
            series.push(RangeSeries {
                labels: s.labels.clone(),
                points,
            });
        }
        self.count(n)?;
        Ok(Matrix {
            series,
            range,
            end,
            step_ts: ts,
        })
    }

    /// A subquery at `ts`: the inner expression at every multiple of the step in
    /// `[t - range, t]`.
    fn subquery(&mut self, sq: &SubqueryExpr, ts: i64) -> Result<Matrix, Error> {
        let end = at_ms(&sq.at, &self.q)
            .unwrap_or(ts)
            .saturating_sub(offset_ms(&sq.offset));
        let range = ms(&sq.range);
        let step = sq.step.as_ref().map_or(self.sub_step, ms).max(1);
        let mut series: Vec<RangeSeries> = Vec::new();
        let mut index: HashMap<u64, usize> = HashMap::new();
        let mut t = align_up(end.saturating_sub(range), step);
        let node = std::ptr::from_ref(sq) as usize;
        while t <= end {
            // A long subquery over a cheap expression has no selector to check the clock.
            self.check_deadline()?;
            let inner = match self.sub_cache.get(&(node, t)) {
                Some(v) => v.clone(),
                None => {
                    let saved = self.loaded;
                    let v = match self.eval(&sq.expr, t)? {
                        Val::Vector(v) => v,
                        Val::Scalar(v) => vec![Sample {
                            labels: Labels::empty(),
                            v,
                        }],
                        _ => return exec("subquery is only allowed on instant vector"),
                    };
                    self.loaded = saved;
                    self.retained += v.len();
                    self.check_samples()?;
                    let v = Rc::new(v);
                    self.sub_cache.insert((node, t), v.clone());
                    v
                }
            };
            for s in inner.iter() {
                let i = *index.entry(s.labels.key()).or_insert_with(|| {
                    series.push(RangeSeries {
                        labels: s.labels.clone(),
                        points: Vec::new(),
                    });
                    series.len() - 1
                });
                series[i].points.push((t, s.v));
            }
            t = match t.checked_add(step) {
                Some(t) => t,
                None => break,
            };
        }
        self.check_samples()?;
        Ok(Matrix {
            series,
            range,
            end,
            step_ts: ts,
        })
    }
}
