//! Binary operators: arithmetic, comparisons (filtering or `bool`), set operators, and
//! vector matching (`on`/`ignoring`, `group_left`/`group_right`) with Prometheus' result
//! labels and its errors for ambiguous matches.

use std::collections::{HashMap, HashSet};

use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};
use sluice_core::METRIC_NAME;

use crate::error::{exec, Error};
use crate::eval::{check_unique, Evaluator, Val};
use crate::types::{Labels, Sample};

fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

/// Operators whose result no longer measures the same thing, so `__name__` goes.
/// (Prometheus 2.x keeps the name for `atan2`.)
fn drops_name(op: &str) -> bool {
    matches!(op, "+" | "-" | "*" | "/" | "^" | "%")
}

/// `(value, keep)`: arithmetic always keeps; a comparison keeps the left value when true.
fn apply(op: &str, l: f64, r: f64) -> Result<(f64, bool), Error> {
    Ok(match op {
        "+" => (l + r, true),
        "-" => (l - r, true),
        "*" => (l * r, true),
        "/" => (l / r, true),
        "^" => (l.powf(r), true),
        "%" => (l % r, true),
        "atan2" => (l.atan2(r), true),
        "==" => (l, l == r),
        "!=" => (l, l != r),
        ">" => (l, l > r),
        "<" => (l, l < r),
        ">=" => (l, l >= r),
        "<=" => (l, l <= r),
        _ => return exec(format!("operator {op} not allowed here")),
    })
}

pub(crate) fn eval(ev: &mut Evaluator, b: &BinaryExpr, ts: i64) -> Result<Val, Error> {
    let op_s = b.op.to_string();
    let op = op_s.as_str();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&b.lhs, ts)?;
    let rhs = ev.eval(&b.rhs, ts)?;
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => {
            let (v, keep) = apply(op, l, r)?;
            Ok(Val::Scalar(if is_comparison(op) {
                if keep {
                    1.0
                } else {
                    0.0
                }
            } else {
                v
            }))
        }
        (Val::Vector(l), Val::Scalar(r)) => {
            checked(vector_scalar(ev, op, l, r, false, return_bool)?)
        }
        (Val::Scalar(l), Val::Vector(r)) => {
            checked(vector_scalar(ev, op, r, l, true, return_bool)?)
        }
        (Val::Vector(l), Val::Vector(r)) => {
            let (on, names) = match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
                Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
                None => (false, Vec::new()),
            };
            let card = b
                .modifier
                .as_ref()
                .map_or(VectorMatchCardinality::OneToOne, |m| m.card.clone());
            match op {
                "and" | "or" | "unless" => Ok(Val::Vector(set_op(op, l, r, on, &names))),
                _ => checked(vector_vector(ev, op, l, r, on, &names, &card, return_bool)?),
            }
        }
        _ => exec(format!(
            "operator {op} needs scalar or instant vector operands"
        )),
    }
}

/// Prometheus refuses an operator's result with a label set twice (e.g. after dropping
/// `__name__`).
fn checked(v: Vec<Sample>) -> Result<Val, Error> {
    check_unique(&v)?;
    Ok(Val::Vector(v))
}

fn vector_scalar(
    ev: &mut Evaluator,
    op: &str,
    v: Vec<Sample>,
    s: f64,
    swap: bool,
    return_bool: bool,
) -> Result<Vec<Sample>, Error> {
    let mut out = Vec::with_capacity(v.len());
    for smp in v {
        let (l, r) = if swap { (s, smp.v) } else { (smp.v, s) };
        let (mut value, mut keep) = apply(op, l, r)?;
        // A comparison keeps the vector's value even when the vector is on the right.
        if is_comparison(op) && swap {
            value = r;
        }
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if keep {
            let labels = if drops_name(op) || return_bool {
                ev.drop_name(&smp.labels)
            } else {
                smp.labels
            };
            out.push(Sample { labels, v: value });
        }
    }
    Ok(out)
}

fn set_op(op: &str, l: Vec<Sample>, r: Vec<Sample>, on: bool, names: &[String]) -> Vec<Sample> {
    match op {
        "and" => {
            let right: HashSet<u64> = r.iter().map(|s| s.labels.match_key(on, names)).collect();
            l.into_iter()
                .filter(|s| right.contains(&s.labels.match_key(on, names)))
                .collect()
        }
        "unless" => {
            let right: HashSet<u64> = r.iter().map(|s| s.labels.match_key(on, names)).collect();
            l.into_iter()
                .filter(|s| !right.contains(&s.labels.match_key(on, names)))
                .collect()
        }
        _ => {
            let left: HashSet<u64> = l.iter().map(|s| s.labels.match_key(on, names)).collect();
            let mut out = l;
            out.extend(
                r.into_iter()
                    .filter(|s| !left.contains(&s.labels.match_key(on, names))),
            );
            out
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn vector_vector(
    ev: &mut Evaluator,
    op: &str,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    on: bool,
    names: &[String],
    card: &VectorMatchCardinality,
    return_bool: bool,
) -> Result<Vec<Sample>, Error> {
    let one_to_many = matches!(card, VectorMatchCardinality::OneToMany(_));
    let include: Vec<String> = card.labels().map(|l| l.labels.clone()).unwrap_or_default();
    // The "one" side is hashed; for group_right the sides swap.
    let (many, one) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
    let mut one_sigs: HashMap<u64, &Sample> = HashMap::with_capacity(one.len());
    for s in &one {
        let sig = s.labels.match_key(on, names);
        if let Some(dup) = one_sigs.get(&sig) {
            let side = if one_to_many { "left" } else { "right" };
            let matched = if on {
                s.labels.keep(names)
            } else {
                let mut d = names.to_vec();
                d.push(METRIC_NAME.to_string());
                s.labels.drop(&d)
            };
            return exec(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                matched.display(),
                s.labels.display(),
                dup.labels.display()
            ));
        }
        one_sigs.insert(sig, s);
    }
    let mut matched: HashMap<u64, Option<HashSet<u64>>> = HashMap::new();
    let mut out = Vec::new();
    for ms in &many {
        let sig = ms.labels.match_key(on, names);
        let Some(os) = one_sigs.get(&sig) else {
            continue;
        };
        let (vl, vr) = if one_to_many {
            (os.v, ms.v)
        } else {
            (ms.v, os.v)
        };
        let (mut value, keep) = apply(op, vl, vr)?;
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        let mut metric = result_labels(ev, &ms.labels, &os.labels, op, on, names, card, &include);
        if return_bool {
            metric = ev.drop_name(&metric);
        }
        let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
        match matched.get_mut(&sig) {
            Some(seen) => {
                if one_to_one {
                    return exec(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                    );
                }
                let set = seen.get_or_insert_with(HashSet::new);
                if !set.insert(metric.key()) {
                    return exec(
                        "multiple matches for matching labels grouping labels must ensure unique matches",
                    );
                }
            }
            None => {
                let entry = if one_to_one {
                    None
                } else {
                    let mut h = HashSet::new();
                    h.insert(metric.key());
                    Some(h)
                };
                matched.insert(sig, entry);
            }
        }
        out.push(Sample {
            labels: metric,
            v: value,
        });
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn result_labels(
    ev: &mut Evaluator,
    many: &Labels,
    one: &Labels,
    op: &str,
    on: bool,
    names: &[String],
    card: &VectorMatchCardinality,
    include: &[String],
) -> Labels {
    let mut l = if drops_name(op) {
        ev.drop_name(many)
    } else {
        many.clone()
    };
    if matches!(card, VectorMatchCardinality::OneToOne) {
        l = if on { l.keep(names) } else { l.drop(names) };
    }
    for n in include {
        l = l.with(n, one.get(n));
    }
    l
}
