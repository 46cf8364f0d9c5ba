//! The pre-fetch step: which selectors a query reads and over which time ranges, so the
//! caller can fetch series (asynchronously, from wherever) before evaluation, which is then
//! pure and synchronous. Owns turning a parsed selector into [`Matcher`]s as the engine hands
//! them to storage (the matcher itself is `sluice-core`'s, shared with every other reader).

use std::collections::HashMap;

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};
use sluice_core::{MatchOp, Matcher, METRIC_NAME};

use crate::error::Error;
use crate::types::Series;

/// Identifies one selector node of a parsed query (stable while the query lives).
pub type SelectorKey = usize;

pub(crate) fn key_of(vs: &VectorSelector) -> SelectorKey {
    std::ptr::from_ref(vs) as usize
}

/// The matchers of a selector, the metric name included as a `__name__` matcher.
pub fn selector_matchers(vs: &VectorSelector) -> Result<Vec<Matcher>, Error> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(Error::BadData(
            "`or` inside a selector is not supported".into(),
        ));
    }
    let mut out = Vec::with_capacity(vs.matchers.matchers.len() + 1);
    if let Some(name) = &vs.name {
        out.push(Matcher::new(METRIC_NAME, MatchOp::Equal, name)?);
    }
    for m in &vs.matchers.matchers {
        let op = match m.op {
            PMatchOp::Equal => MatchOp::Equal,
            PMatchOp::NotEqual => MatchOp::NotEqual,
            PMatchOp::Re(_) => MatchOp::Regex,
            PMatchOp::NotRe(_) => MatchOp::NotRegex,
        };
        // `up{__name__="up"}` repeats the name matcher; once is enough.
        if m.name == METRIC_NAME
            && op == MatchOp::Equal
            && vs.name.as_deref() == Some(m.value.as_str())
        {
            continue;
        }
        out.push(Matcher::new(&m.name, op, &m.value)?);
    }
    Ok(out)
}

/// One read the caller must do before evaluation: series matching `matchers` with their
/// samples in `[mint, maxt]` (ms, inclusive).
#[derive(Debug, Clone)]
pub struct SelectorRequest {
    pub key: SelectorKey,
    pub matchers: Vec<Matcher>,
    pub mint: i64,
    pub maxt: i64,
}

/// What the caller fetched, by selector.
#[derive(Debug, Default)]
pub struct Fetched {
    pub(crate) by_key: HashMap<SelectorKey, Vec<Series>>,
}

impl Fetched {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the series read for one request (samples in time order).
    pub fn insert(&mut self, key: SelectorKey, series: Vec<Series>) {
        self.by_key.insert(key, series);
    }

    pub(crate) fn get(&self, key: SelectorKey) -> &[Series] {
        self.by_key.get(&key).map_or(&[], |v| v.as_slice())
    }
}

pub(crate) fn ms(d: &std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => ms(d),
        Some(Offset::Neg(d)) => -ms(d),
    }
}

/// Evaluation times a node is evaluated at: `[lo, hi]`.
#[derive(Clone, Copy)]
struct Span {
    lo: i64,
    hi: i64,
}

pub(crate) struct TimeCtx {
    pub start: i64,
    pub end: i64,
}

/// The fixed time of an `@` modifier.
pub(crate) fn at_ms(at: &Option<AtModifier>, q: &TimeCtx) -> Option<i64> {
    match at {
        None => None,
        Some(AtModifier::Start) => Some(q.start),
        Some(AtModifier::End) => Some(q.end),
        Some(AtModifier::At(t)) => Some(match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => ms(&d),
            Err(e) => -ms(&e.duration()),
        }),
    }
}

/// Collects every selector with the time range it needs.
pub(crate) fn collect(
    e: &Expr,
    q: &TimeCtx,
    lookback: i64,
    out: &mut Vec<SelectorRequest>,
) -> Result<(), Error> {
    walk(
        e,
        Span {
            lo: q.start,
            hi: q.end,
        },
        q,
        lookback,
        out,
    )
}

fn shifted(at: &Option<AtModifier>, off: &Option<Offset>, s: Span, q: &TimeCtx) -> Span {
    let off = offset_ms(off);
    match at_ms(at, q) {
        Some(t) => Span {
            lo: t.saturating_sub(off),
            hi: t.saturating_sub(off),
        },
        None => Span {
            lo: s.lo.saturating_sub(off),
            hi: s.hi.saturating_sub(off),
        },
    }
}

fn walk(
    e: &Expr,
    s: Span,
    q: &TimeCtx,
    lookback: i64,
    out: &mut Vec<SelectorRequest>,
) -> Result<(), Error> {
    match e {
        Expr::VectorSelector(vs) => {
            let r = shifted(&vs.at, &vs.offset, s, q);
            out.push(SelectorRequest {
                key: key_of(vs),
                matchers: selector_matchers(vs)?,
                mint: r.lo.saturating_sub(lookback),
                maxt: r.hi,
            });
        }
        Expr::MatrixSelector(m) => {
            let r = shifted(&m.vs.at, &m.vs.offset, s, q);
            out.push(SelectorRequest {
                key: key_of(&m.vs),
                matchers: selector_matchers(&m.vs)?,
                mint: r.lo.saturating_sub(ms(&m.range)),
                maxt: r.hi,
            });
        }
        Expr::Subquery(sq) => {
            let r = shifted(&sq.at, &sq.offset, s, q);
            walk(
                &sq.expr,
                Span {
                    lo: r.lo.saturating_sub(ms(&sq.range)),
                    hi: r.hi,
                },
                q,
                lookback,
                out,
            )?;
        }
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                walk(p, s, q, lookback, out)?;
            }
            walk(&a.expr, s, q, lookback, out)?;
        }
        Expr::Unary(u) => walk(&u.expr, s, q, lookback, out)?,
        Expr::Binary(b) => {
            walk(&b.lhs, s, q, lookback, out)?;
            walk(&b.rhs, s, q, lookback, out)?;
        }
        Expr::Paren(p) => walk(&p.expr, s, q, lookback, out)?,
        Expr::Call(c) => {
            for a in &c.args.args {
                walk(a, s, q, lookback, out)?;
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
        Expr::Extension(_) => return Err(Error::BadData("unsupported expression".into())),
    }
    Ok(())
}
