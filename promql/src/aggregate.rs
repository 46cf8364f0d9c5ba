//! Aggregation operators (`sum`, `avg`, `topk`, `count_values`, ...) with `by`/`without`,
//! computed as Prometheus computes them (incremental mean and variance, NaN handling in
//! `min`/`max`/`topk`).

use std::collections::HashMap;

use promql_parser::parser::{AggregateExpr, LabelModifier};
use sluice_core::METRIC_NAME;

use crate::error::{exec, Error};
use crate::eval::{Evaluator, Val};
use crate::functions::quantile;
use crate::types::{hash_of, Labels, Sample};

struct Group {
    labels: Labels,
    value: f64,
    mean: f64,
    count: u64,
    values: Vec<f64>,
    // For topk/bottomk: the kept samples.
    kept: Vec<Sample>,
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`.
pub(crate) fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

pub(crate) fn eval(ev: &mut Evaluator, a: &AggregateExpr, ts: i64) -> Result<Val, Error> {
    let op_s = a.op.to_string();
    let op = op_s.as_str();
    let mut param = None;
    let mut label_param = None;
    if let Some(p) = &a.param {
        match ev.eval(p, ts)? {
            Val::Scalar(v) => param = Some(v),
            Val::Str(s) => label_param = Some(s),
            _ => return exec(format!("invalid parameter for {op}")),
        }
    }
    let input = ev.eval_vector(&a.expr, ts)?;
    let (by, names): (bool, Vec<String>) = match &a.modifier {
        None => (true, Vec::new()),
        Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
        Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
    };
    let mut k = 0usize;
    if op == "topk" || op == "bottomk" {
        let f = param.unwrap_or(f64::NAN);
        if !(-9.223_372_036_854_775e18..=9.223_372_036_854_775e18).contains(&f) {
            return exec(format!("Scalar value {} overflows int64", format_float(f)));
        }
        let kk = f as i64;
        if kk < 1 {
            return Ok(Val::Vector(Vec::new()));
        }
        k = usize::try_from(kk).unwrap_or(usize::MAX);
    }
    let mut names = names;
    let mut value_label = String::new();
    if op == "count_values" {
        value_label = label_param.unwrap_or_default();
        if !valid_label_name(&value_label) {
            return exec(format!("invalid label name {value_label:?}"));
        }
        if by {
            names.push(value_label.clone());
        }
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<u64, usize> = HashMap::new();
    for s in input {
        let metric = if op == "count_values" {
            s.labels.with(&value_label, &format_float(s.v))
        } else {
            s.labels.clone()
        };
        // Hash the grouping labels in place; the group's label set is only built for a new
        // group.
        let key = if by {
            hash_of(metric.iter().filter(|(n, _)| names.contains(n)))
        } else {
            hash_of(
                metric
                    .iter()
                    .filter(|(n, _)| n != METRIC_NAME && !names.contains(n)),
            )
        };
        let gi = match index.get(&key) {
            Some(&i) => i,
            None => {
                let glabels = if by {
                    metric.keep(&names)
                } else {
                    let mut d = names.clone();
                    d.push(METRIC_NAME.to_string());
                    metric.drop(&d)
                };
                index.insert(key, groups.len());
                groups.push(Group {
                    labels: glabels,
                    // Welford's variance starts from zero; every other operator from the
                    // first value.
                    value: if op == "stddev" || op == "stdvar" {
                        0.0
                    } else {
                        s.v
                    },
                    mean: s.v,
                    count: 1,
                    values: vec![s.v],
                    kept: vec![Sample {
                        labels: s.labels.clone(),
                        v: s.v,
                    }],
                });
                continue;
            }
        };
        let g = &mut groups[gi];
        match op {
            "sum" => g.value += s.v,
            "avg" => {
                g.count += 1;
                let skip = g.mean.is_infinite()
                    && ((s.v.is_infinite() && (g.mean > 0.0) == (s.v > 0.0))
                        || (!s.v.is_infinite() && !s.v.is_nan()));
                if !skip {
                    let c = g.count as f64;
                    g.mean += s.v / c - g.mean / c;
                }
            }
            "count" | "count_values" | "group" => g.count += 1,
            "max" => {
                if g.value < s.v || g.value.is_nan() {
                    g.value = s.v;
                }
            }
            "min" => {
                if g.value > s.v || g.value.is_nan() {
                    g.value = s.v;
                }
            }
            "stddev" | "stdvar" => {
                g.count += 1;
                let delta = s.v - g.mean;
                g.mean += delta / g.count as f64;
                g.value += delta * (s.v - g.mean);
            }
            "quantile" => g.values.push(s.v),
            "topk" | "bottomk" => {
                g.kept.push(Sample {
                    labels: s.labels.clone(),
                    v: s.v,
                });
                trim_k(&mut g.kept, k, op == "topk");
            }
            _ => return exec(format!("unsupported aggregation {op}")),
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for mut g in groups {
        let v = match op {
            "sum" | "max" | "min" => g.value,
            "avg" => g.mean,
            "count" | "count_values" => g.count as f64,
            "group" => 1.0,
            "stdvar" => {
                if g.count == 1 {
                    0.0
                } else {
                    g.value / g.count as f64
                }
            }
            "stddev" => {
                if g.count == 1 {
                    0.0
                } else {
                    (g.value / g.count as f64).sqrt()
                }
            }
            "quantile" => quantile(param.unwrap_or(f64::NAN), &mut g.values),
            "topk" | "bottomk" => {
                trim_k(&mut g.kept, k, op == "topk");
                out.extend(g.kept);
                continue;
            }
            _ => return exec(format!("unsupported aggregation {op}")),
        };
        out.push(Sample {
            labels: g.labels,
            v,
        });
    }
    Ok(Val::Vector(out))
}

/// Keeps the `k` largest (`top`) or smallest samples, best first; NaN counts as the worst.
fn trim_k(v: &mut Vec<Sample>, k: usize, top: bool) {
    v.sort_by(|a, b| {
        use std::cmp::Ordering;
        match (a.v.is_nan(), b.v.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            _ if top => b.v.total_cmp(&a.v),
            _ => a.v.total_cmp(&b.v),
        }
    });
    v.truncate(k);
}

fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}
