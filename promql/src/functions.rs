//! PromQL functions: range-vector functions (`rate`, `*_over_time`, ...) and
//! instant-vector/scalar functions, with Prometheus' rules for which keep `__name__` and
//! how edge cases (too few samples, NaN, counter resets) come out.

use promql_parser::parser::{Call, Expr};
use sluice_core::{MatchOp, METRIC_NAME};

use crate::error::{exec, Error};
use crate::eval::{check_unique, unparen, Evaluator, Matrix, Val};
use crate::plan::selector_matchers;
use crate::types::{Labels, Sample};

pub(crate) fn call(ev: &mut Evaluator, c: &Call, ts: i64) -> Result<Val, Error> {
    let name = c.func.name;
    let args: Vec<&Expr> = c.args.args.iter().map(|a| unparen(a)).collect();
    let arg = |i: usize| -> Result<&Expr, Error> {
        args.get(i)
            .copied()
            .ok_or_else(|| Error::BadData(format!("missing argument {i} of {name}()")))
    };
    // Prometheus refuses a function result with a label set twice (e.g. after dropping
    // `__name__`), in instant queries too.
    let vector = |v: Vec<Sample>| {
        check_unique(&v)?;
        Ok(Val::Vector(v))
    };
    match name {
        "time" => Ok(Val::Scalar(ts as f64 / 1000.0)),
        "pi" => Ok(Val::Scalar(std::f64::consts::PI)),
        "vector" => {
            let v = ev.eval_scalar(arg(0)?, ts)?;
            vector(vec![Sample {
                labels: Labels::empty(),
                v,
            }])
        }
        "scalar" => {
            let v = ev.eval_vector(arg(0)?, ts)?;
            Ok(Val::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN }))
        }
        "timestamp" => {
            if let Expr::VectorSelector(vs) = arg(0)? {
                let out = ev
                    .select_instant(vs, ts)?
                    .into_iter()
                    .map(|(s, t)| Sample {
                        labels: ev.drop_name(&s.labels),
                        v: t as f64 / 1000.0,
                    })
                    .collect();
                return vector(out);
            }
            let v = ev.eval_vector(arg(0)?, ts)?;
            vector(map_drop_name(ev, v, |_| ts as f64 / 1000.0))
        }
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn" | "acos"
        | "acosh" | "asin" | "asinh" | "atan" | "atanh" | "cos" | "cosh" | "sin" | "sinh"
        | "tan" | "tanh" | "deg" | "rad" => {
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "sqrt" => f64::sqrt,
                "ln" => f64::ln,
                "log2" => f64::log2,
                "log10" => f64::log10,
                "sgn" => |v: f64| {
                    if v < 0.0 {
                        -1.0
                    } else if v > 0.0 {
                        1.0
                    } else {
                        v
                    }
                },
                "acos" => f64::acos,
                "acosh" => f64::acosh,
                "asin" => f64::asin,
                "asinh" => f64::asinh,
                "atan" => f64::atan,
                "atanh" => f64::atanh,
                "cos" => f64::cos,
                "cosh" => f64::cosh,
                "sin" => f64::sin,
                "sinh" => f64::sinh,
                "tan" => f64::tan,
                "tanh" => f64::tanh,
                "deg" => |v: f64| v * 180.0 / std::f64::consts::PI,
                _ => |v: f64| v * std::f64::consts::PI / 180.0,
            };
            let v = ev.eval_vector(arg(0)?, ts)?;
            vector(map_drop_name(ev, v, f))
        }
        "round" => {
            let v = ev.eval_vector(arg(0)?, ts)?;
            let to = match args.get(1) {
                Some(e) => ev.eval_scalar(e, ts)?,
                None => 1.0,
            };
            let inv = 1.0 / to;
            vector(map_drop_name(ev, v, |x| (x * inv + 0.5).floor() / inv))
        }
        "clamp" => {
            let v = ev.eval_vector(arg(0)?, ts)?;
            let lo = ev.eval_scalar(arg(1)?, ts)?;
            let hi = ev.eval_scalar(arg(2)?, ts)?;
            if hi < lo {
                return vector(Vec::new());
            }
            vector(map_drop_name(ev, v, |x| go_max(lo, go_min(hi, x))))
        }
        "clamp_min" => {
            let v = ev.eval_vector(arg(0)?, ts)?;
            let lo = ev.eval_scalar(arg(1)?, ts)?;
            vector(map_drop_name(ev, v, |x| go_max(lo, x)))
        }
        "clamp_max" => {
            let v = ev.eval_vector(arg(0)?, ts)?;
            let hi = ev.eval_scalar(arg(1)?, ts)?;
            vector(map_drop_name(ev, v, |x| go_min(hi, x)))
        }
        "sort" | "sort_desc" => {
            let mut v = ev.eval_vector(arg(0)?, ts)?;
            // NaN sorts last either way.
            let desc = name == "sort_desc";
            v.sort_by(|a, b| match (a.v.is_nan(), b.v.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ if desc => b.v.total_cmp(&a.v),
                _ => a.v.total_cmp(&b.v),
            });
            vector(v)
        }
        "absent" => {
            let v = ev.eval_vector(arg(0)?, ts)?;
            if !v.is_empty() {
                return vector(Vec::new());
            }
            vector(vec![Sample {
                labels: absent_labels(arg(0)?)?,
                v: 1.0,
            }])
        }
        "label_replace" => label_replace(ev, &args, ts),
        "label_join" => label_join(ev, &args, ts),
        "histogram_quantile" => {
            let q = ev.eval_scalar(arg(0)?, ts)?;
            let v = ev.eval_vector(arg(1)?, ts)?;
            vector(histogram_quantile(q, v))
        }
        "minute" | "hour" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month"
        | "month" | "year" => {
            let v = match args.first() {
                Some(e) => ev.eval_vector(e, ts)?,
                None => vec![Sample {
                    labels: Labels::empty(),
                    v: ts as f64 / 1000.0,
                }],
            };
            vector(map_drop_name(ev, v, |x| date_part(name, x)))
        }
        _ => range_function(ev, name, &args, ts),
    }
}

fn map_drop_name(ev: &mut Evaluator, v: Vec<Sample>, f: impl Fn(f64) -> f64) -> Vec<Sample> {
    v.into_iter()
        .map(|s| Sample {
            labels: ev.drop_name(&s.labels),
            v: f(s.v),
        })
        .collect()
}

/// Go's `math.Max`: +Inf wins, then NaN, and +0 over -0.
pub(crate) fn go_max(x: f64, y: f64) -> f64 {
    if x == f64::INFINITY || y == f64::INFINITY {
        f64::INFINITY
    } else if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x == 0.0 && y == 0.0 {
        if x.is_sign_negative() {
            y
        } else {
            x
        }
    } else if x > y {
        x
    } else {
        y
    }
}

/// Go's `math.Min`: -Inf wins, then NaN, and -0 over +0.
pub(crate) fn go_min(x: f64, y: f64) -> f64 {
    if x == f64::NEG_INFINITY || y == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x == 0.0 && y == 0.0 {
        if x.is_sign_negative() {
            x
        } else {
            y
        }
    } else if x < y {
        x
    } else {
        y
    }
}

/// Labels of `absent()`'s answer: the selector's equality matchers (a label matched more
/// than once, or also by another matcher type, is left out, as in Prometheus).
fn absent_labels(e: &Expr) -> Result<Labels, Error> {
    let vs = match e {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(m) => &m.vs,
        _ => return Ok(Labels::empty()),
    };
    let mut out: Vec<(String, String)> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for m in selector_matchers(vs)? {
        if m.name == METRIC_NAME {
            continue;
        }
        if m.op == MatchOp::Equal && !seen.contains(&m.name) {
            out.retain(|(n, _)| *n != m.name);
            out.push((m.name.clone(), m.value.clone()));
            seen.push(m.name);
        } else {
            out.retain(|(n, _)| *n != m.name);
        }
    }
    Ok(Labels::new(out))
}

fn string_arg(ev: &mut Evaluator, e: Option<&&Expr>, ts: i64) -> Result<String, Error> {
    match e {
        Some(e) => match ev.eval(e, ts)? {
            Val::Str(s) => Ok(s),
            _ => exec("expected a string argument"),
        },
        None => Err(Error::BadData("missing string argument".into())),
    }
}

fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn label_replace(ev: &mut Evaluator, args: &[&Expr], ts: i64) -> Result<Val, Error> {
    let v = match args.first() {
        Some(e) => ev.eval_vector(e, ts)?,
        None => return Err(Error::BadData("missing argument of label_replace()".into())),
    };
    let dst = string_arg(ev, args.get(1), ts)?;
    let repl = string_arg(ev, args.get(2), ts)?;
    let src = string_arg(ev, args.get(3), ts)?;
    let re_s = string_arg(ev, args.get(4), ts)?;
    // Anchored as Prometheus 2.x anchors it (without `s`: `.` stops at a newline).
    let re = regex::Regex::new(&format!("^(?:{re_s})$")).map_err(|_| {
        Error::Execution(format!(
            "invalid regular expression in label_replace(): {re_s}"
        ))
    })?;
    if !valid_label_name(&dst) {
        return exec(format!(
            "invalid destination label name in label_replace(): {dst}"
        ));
    }
    let mut out = Vec::with_capacity(v.len());
    for s in v {
        let srcv = s.labels.get(&src);
        let labels = match re.captures(srcv) {
            Some(caps) => {
                let mut res = String::new();
                caps.expand(&repl, &mut res);
                s.labels.with(&dst, &res)
            }
            None => s.labels.clone(),
        };
        out.push(Sample { labels, v: s.v });
    }
    check_unique(&out)?;
    Ok(Val::Vector(out))
}

fn label_join(ev: &mut Evaluator, args: &[&Expr], ts: i64) -> Result<Val, Error> {
    let v = match args.first() {
        Some(e) => ev.eval_vector(e, ts)?,
        None => return Err(Error::BadData("missing argument of label_join()".into())),
    };
    let dst = string_arg(ev, args.get(1), ts)?;
    let sep = string_arg(ev, args.get(2), ts)?;
    let mut srcs = Vec::new();
    for i in 3..args.len() {
        srcs.push(string_arg(ev, args.get(i), ts)?);
    }
    if !valid_label_name(&dst) {
        return exec(format!(
            "invalid destination label name in label_join(): {dst}"
        ));
    }
    let out = v
        .into_iter()
        .map(|s| {
            let joined: Vec<&str> = srcs.iter().map(|n| s.labels.get(n)).collect();
            let joined = joined.join(&sep);
            Sample {
                labels: s.labels.with(&dst, &joined),
                v: s.v,
            }
        })
        .collect::<Vec<_>>();
    check_unique(&out)?;
    Ok(Val::Vector(out))
}

/// Prometheus' quantile of a set of values: linear interpolation between closest ranks.
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // NaN sorts first, as in Prometheus' value heap.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

fn histogram_quantile(q: f64, v: Vec<Sample>) -> Vec<Sample> {
    // Buckets grouped by the series' labels without `le` and `__name__`, in order of first
    // appearance.
    let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
    let mut index: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let drop = ["le".to_string(), METRIC_NAME.to_string()];
    for s in v {
        let Ok(le) = parse_go_float(s.labels.get("le")) else {
            continue;
        };
        let labels = s.labels.drop(&drop);
        let i = *index.entry(labels.key()).or_insert_with(|| {
            groups.push((labels, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push((le, s.v));
    }
    groups
        .into_iter()
        .map(|(labels, mut b)| Sample {
            labels,
            v: bucket_quantile(q, &mut b),
        })
        .collect()
}

/// Parses a float as Go's `strconv.ParseFloat` does for `le` values (`+Inf`, `Inf`, `NaN`).
pub(crate) fn parse_go_float(s: &str) -> Result<f64, ()> {
    match s.to_ascii_lowercase().as_str() {
        "+inf" | "inf" | "+infinity" | "infinity" => Ok(f64::INFINITY),
        "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
        "nan" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|_| ()),
    }
}

/// The quantile of classic buckets `(upper bound, cumulative count)`.
pub(crate) fn bucket_quantile(q: f64, b: &mut [(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    match b.last() {
        Some((ub, _)) if *ub == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    // Merge buckets with the same bound (e.g. "1" and "1.0").
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for &(ub, c) in b.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    // Counts must not decrease; a decrease (scrape skew) is flattened.
    let mut max = f64::NEG_INFINITY;
    for bk in merged.iter_mut() {
        if bk.1 > max {
            max = bk.1;
        } else if bk.1 < max {
            bk.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let n = merged.len() - 1;
    let idx = merged[..n].partition_point(|bk| bk.1 < rank);
    if idx == n {
        return merged[n - 1].0;
    }
    if idx == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let end = merged[idx].0;
    let mut count = merged[idx].1;
    let mut start = 0.0;
    if idx > 0 {
        start = merged[idx - 1].0;
        count -= merged[idx - 1].1;
        rank -= merged[idx - 1].1;
    }
    start + (end - start) * (rank / count)
}

fn date_part(name: &str, secs: f64) -> f64 {
    if secs.is_nan() || secs.is_infinite() {
        return secs;
    }
    let t = secs as i64;
    let days = t.div_euclid(86_400);
    let sod = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    match name {
        "minute" => ((sod / 60) % 60) as f64,
        "hour" => (sod / 3600) as f64,
        "day_of_month" => d as f64,
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => (days - days_from_civil(y, 1, 1) + 1) as f64,
        "days_in_month" => {
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1)) as f64
        }
        "month" => m as f64,
        _ => y as f64,
    }
}

// Howard Hinnant's civil calendar algorithms (days since 1970-01-01 <-> y/m/d).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Neumaier-compensated addition, as Prometheus sums over time.
fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// A range-vector function over one series' points, its window, and a scalar parameter.
pub(crate) type RangeFn = fn(&[(i64, f64)], &Matrix, f64) -> Option<f64>;

fn range_function(ev: &mut Evaluator, name: &str, args: &[&Expr], ts: i64) -> Result<Val, Error> {
    // Which argument is the range vector, and the scalar parameter if any.
    let (mi, param) = match name {
        "quantile_over_time" => (1, Some(0)),
        "predict_linear" => (0, Some(1)),
        _ => (0, None),
    };
    let Some(me) = args.get(mi) else {
        return Err(Error::BadData(format!(
            "missing range argument of {name}()"
        )));
    };
    let p = match param.and_then(|i| args.get(i)) {
        Some(e) => ev.eval_scalar(e, ts)?,
        None => 0.0,
    };
    if name == "holt_winters" {
        let m = ev.eval_matrix(me, ts)?;
        let sf = ev.eval_scalar(args.get(1).copied().unwrap_or(me), ts)?;
        let tf = ev.eval_scalar(args.get(2).copied().unwrap_or(me), ts)?;
        if sf <= 0.0 || sf >= 1.0 {
            return exec(format!(
                "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
            ));
        }
        if tf <= 0.0 || tf >= 1.0 {
            return exec(format!(
                "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
            ));
        }
        let mut out = Vec::with_capacity(m.series.len());
        for s in &m.series {
            if let Some(v) = holt_winters(&s.points, sf, tf) {
                out.push(Sample {
                    labels: ev.drop_name(&s.labels),
                    v,
                });
            }
        }
        check_unique(&out)?;
        return Ok(Val::Vector(out));
    }
    if name == "absent_over_time" {
        let m = ev.eval_matrix(me, ts)?;
        if !m.series.is_empty() {
            return Ok(Val::Vector(Vec::new()));
        }
        return Ok(Val::Vector(vec![Sample {
            labels: absent_labels(me)?,
            v: 1.0,
        }]));
    }
    let f: RangeFn = match name {
        "rate" => |p, m, _| extrapolated_rate(p, m, true, true),
        "increase" => |p, m, _| extrapolated_rate(p, m, true, false),
        "delta" => |p, m, _| extrapolated_rate(p, m, false, false),
        "irate" => |p, _, _| instant_value(p, true),
        "idelta" => |p, _, _| instant_value(p, false),
        "deriv" => |p, _, _| {
            if p.len() < 2 {
                return None;
            }
            Some(linear_regression(p, p[0].0).0)
        },
        "predict_linear" => |p, m, d| {
            if p.len() < 2 {
                return None;
            }
            let (slope, intercept) = linear_regression(p, m.step_ts);
            Some(slope * d + intercept)
        },
        "resets" => |p, _, _| Some(p.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64),
        "changes" => |p, _, _| {
            Some(
                p.windows(2)
                    .filter(|w| !(w[1].1 == w[0].1 || (w[1].1.is_nan() && w[0].1.is_nan())))
                    .count() as f64,
            )
        },
        "avg_over_time" => |p, _, _| Some(avg_over_time(p)),
        "sum_over_time" => |p, _, _| {
            let (mut s, mut c) = (0.0, 0.0);
            for &(_, v) in p {
                (s, c) = kahan_inc(v, s, c);
            }
            Some(if s.is_infinite() { s } else { s + c })
        },
        "count_over_time" => |p, _, _| Some(p.len() as f64),
        "min_over_time" => |p, _, _| {
            let mut m = p[0].1;
            for &(_, v) in p {
                if v < m || m.is_nan() {
                    m = v;
                }
            }
            Some(m)
        },
        "max_over_time" => |p, _, _| {
            let mut m = p[0].1;
            for &(_, v) in p {
                if v > m || m.is_nan() {
                    m = v;
                }
            }
            Some(m)
        },
        "last_over_time" => |p, _, _| p.last().map(|x| x.1),
        "present_over_time" => |_, _, _| Some(1.0),
        "quantile_over_time" => |p, _, q| {
            let mut vals: Vec<f64> = p.iter().map(|x| x.1).collect();
            Some(quantile(q, &mut vals))
        },
        "stdvar_over_time" => |p, _, _| Some(stdvar(p)),
        "stddev_over_time" => |p, _, _| Some(stdvar(p).sqrt()),
        _ => return Err(Error::BadData(format!("unknown function {name}()"))),
    };
    // In a range query, a function of a plain range selector is computed for all steps at
    // once, series by series (its parameter must then not vary by step).
    if let (Expr::MatrixSelector(sel), Some(i)) = (me, ev.grid_index(ts)) {
        if param.is_none_or(|pi| matches!(args.get(pi), Some(Expr::NumberLiteral(_)))) {
            let grid = ev.grid_range_fn(sel, name == "last_over_time", p, f)?;
            return Ok(Val::Vector(grid.get(i).cloned().unwrap_or_default()));
        }
    }
    let m = ev.eval_matrix(me, ts)?;
    let mut out = Vec::with_capacity(m.series.len());
    for s in &m.series {
        if let Some(v) = f(&s.points, &m, p) {
            let labels = if name == "last_over_time" {
                s.labels.clone()
            } else {
                ev.drop_name(&s.labels)
            };
            out.push(Sample { labels, v });
        }
    }
    check_unique(&out)?;
    Ok(Val::Vector(out))
}

fn avg_over_time(p: &[(i64, f64)]) -> f64 {
    let (mut mean, mut count, mut c) = (0.0f64, 0.0f64, 0.0f64);
    for &(_, v) in p {
        count += 1.0;
        if mean.is_infinite() {
            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        (mean, c) = kahan_inc(v / count - mean / count, mean, c);
    }
    if mean.is_infinite() {
        mean
    } else {
        mean + c
    }
}

fn stdvar(p: &[(i64, f64)]) -> f64 {
    let (mut count, mut mean, mut cm, mut aux, mut ca) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(_, v) in p {
        count += 1.0;
        let delta = v - (mean + cm);
        (mean, cm) = kahan_inc(delta / count, mean, cm);
        (aux, ca) = kahan_inc(delta * (v - (mean + cm)), aux, ca);
    }
    (aux + ca) / count
}

/// Least-squares slope and intercept, with x in seconds relative to `intercept_time`.
fn linear_regression(p: &[(i64, f64)], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init = p[0].1;
    let mut const_y = true;
    for (i, &(t, v)) in p.iter().enumerate() {
        if const_y && i > 0 && v != init {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_time) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// `rate`, `increase` and `delta`: the change over the window, extrapolated towards the
/// window's edges as Prometheus does (at most half an average interval past the first and
/// last sample, and never below zero for counters).
fn extrapolated_rate(p: &[(i64, f64)], m: &Matrix, counter: bool, rate: bool) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let range_start = m.end.saturating_sub(m.range);
    let range_end = m.end;
    let (first_t, first_v) = p[0];
    let (last_t, last_v) = p[p.len() - 1];
    let mut result = last_v - first_v;
    if counter {
        let mut last = 0.0;
        for &(_, v) in p {
            if v < last {
                result += last;
            }
            last = v;
        }
    }
    let mut to_start = (first_t - range_start) as f64 / 1000.0;
    let to_end = (range_end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let avg = sampled / (p.len() - 1) as f64;
    if counter && result > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        avg / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        avg / 2.0
    };
    result *= interval / sampled;
    if rate {
        result /= m.range as f64 / 1000.0;
    }
    Some(result)
}

/// `irate` and `idelta`: from the last two samples.
fn instant_value(p: &[(i64, f64)], rate: bool) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (lt, lv) = p[p.len() - 1];
    let (pt, pv) = p[p.len() - 2];
    let mut result = if rate && lv < pv { lv } else { lv - pv };
    let interval = lt - pt;
    if interval == 0 {
        return None;
    }
    if rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Double exponential smoothing: the smoothed value at the last sample.
fn holt_winters(p: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, p[0].1);
    let mut b = p[1].1 - p[0].1;
    for (i, &(_, v)) in p.iter().enumerate().skip(1) {
        let x = sf * v;
        // The trend starts from the first difference and is smoothed from the second step.
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        (s0, s1) = (s1, x + y);
    }
    Some(s1)
}
