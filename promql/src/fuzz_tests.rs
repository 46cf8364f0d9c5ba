//! Bounded property tests: no query text, however random, deep or large, panics or overflows
//! the stack; every one is parsed and evaluated (over a small data set, with a short
//! deadline) or refused with an error.

use proptest::prelude::*;

use crate::*;

/// Pieces of PromQL, valid and not, from which random queries are strung together.
const TOKENS: &[&str] = &[
    "up",
    "x",
    "node_cpu_seconds_total",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    ":",
    "=",
    "!=",
    "=~",
    "!~",
    "\"a\"",
    "'b'",
    "`c`",
    "\"\\u00ff\"",
    "\"",
    "job",
    "le",
    "__name__",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "==",
    ">",
    "<=",
    "and",
    "or",
    "unless",
    "atan2",
    "bool",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "by",
    "without",
    "offset",
    "@",
    "start()",
    "end()",
    "sum",
    "avg",
    "count",
    "topk",
    "quantile",
    "count_values",
    "stddev",
    "rate",
    "irate",
    "increase",
    "delta",
    "deriv",
    "predict_linear",
    "histogram_quantile",
    "label_replace",
    "label_join",
    "abs",
    "absent",
    "absent_over_time",
    "clamp",
    "vector",
    "scalar",
    "time",
    "timestamp",
    "sort",
    "holt_winters",
    "quantile_over_time",
    "max_over_time",
    "changes",
    "resets",
    "round",
    "1",
    "0",
    "-1",
    "0.5",
    "1e308",
    "1e-308",
    "NaN",
    "Inf",
    "-Inf",
    "0x1f",
    "5m",
    "1h",
    "0s",
    "1y",
    "30s",
    "9999999999999999999999y",
    "1ms",
    "#",
    "\n",
    " ",
];

fn db() -> Vec<Series> {
    let mk = |labels: &[(&str, &str)], step: i64, f: fn(i64) -> f64| Series {
        labels: Labels::new(
            labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        ),
        samples: (0..40).map(|k| (k * step, f(k))).collect(),
    };
    vec![
        mk(&[("__name__", "up"), ("job", "a")], 15_000, |k| {
            (k % 2) as f64
        }),
        mk(&[("__name__", "up"), ("job", "b")], 15_000, |_| 1.0),
        mk(&[("__name__", "x"), ("le", "0.5")], 10_000, |k| k as f64),
        mk(&[("__name__", "x"), ("le", "+Inf")], 10_000, |k| {
            2.0 * k as f64
        }),
        mk(
            &[("__name__", "node_cpu_seconds_total"), ("job", "a")],
            30_000,
            |k| k as f64 * 1e300,
        ),
    ]
}

/// Parses, plans and evaluates `text`; an error is fine, a panic is not.
fn run(text: &str, range: bool) {
    let opts = EngineOptions {
        timeout: std::time::Duration::from_millis(200),
        max_samples: 100_000,
        ..EngineOptions::default()
    };
    let q = if range {
        Query::range(text, 0, 600_000, 15_000, opts)
    } else {
        Query::instant(text, 300_000, opts)
    };
    let Ok(q) = q else { return };
    let Ok(requests) = q.requests() else { return };
    let data = crate::tests::fetch_requests(requests, &db());
    let _ = q.exec(&data);
}

/// Runs `f` with an evaluation thread's stack, as the server does.
fn on_eval_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(depth::EVAL_STACK_BYTES)
        .spawn(f)
        .expect("thread")
        .join()
        .expect("no panic");
}

/// A nesting of `levels` of one of the recursive forms around a leaf.
fn nested(kind: u8, levels: usize) -> String {
    let (open, close) = match kind % 6 {
        0 => ("(", ")"),
        1 => ("sum(", ")"),
        2 => ("abs(", ")"),
        3 => ("-", ""),
        4 => ("1 + ", ""),
        _ => ("max_over_time((", ")[1m:30s])"),
    };
    format!("{}up{}", open.repeat(levels), close.repeat(levels))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Random token soup.
    #[test]
    fn random_token_queries_never_panic(
        picks in proptest::collection::vec(0..TOKENS.len(), 0..40),
        range in any::<bool>(),
    ) {
        let text: Vec<&str> = picks.iter().map(|i| TOKENS[*i]).collect();
        run(&text.join(" "), range);
        run(&text.concat(), range);
    }

    /// Arbitrary text, bytes included.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}", range in any::<bool>()) {
        run(&text, range);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Deep nesting of every recursive form, around and beyond the limit: refused or
    /// evaluated, on an evaluation thread's stack.
    #[test]
    fn deep_nesting_is_refused_or_evaluated(
        kind in any::<u8>(),
        levels in prop_oneof![0usize..50, 990usize..1010, 5_000usize..40_000],
        range in any::<bool>(),
    ) {
        let text = nested(kind, levels);
        on_eval_stack(move || run(&text, range));
    }

    /// Huge literals: numbers, strings, durations, regexes and label sets.
    #[test]
    fn huge_literals_never_panic(
        digits in 1usize..5_000,
        len in 1usize..200_000,
        labels in 1usize..3_000,
    ) {
        let num = "9".repeat(digits);
        let long = "a".repeat(len);
        let matchers: Vec<String> = (0..labels).map(|i| format!("l{i}=\"v\"")).collect();
        for q in [
            num.clone(),
            format!("up * {num}.{num}e{num}"),
            format!("up offset {num}s"),
            format!("rate(up[{num}y])"),
            format!("up{{job=\"{long}\"}}"),
            format!("up{{job=~\"{long}\"}}"),
            format!("up{{job=~\"({}a{})\"}}", "(".repeat(digits % 400), ")".repeat(digits % 400)),
            format!("up{{{}}}", matchers.join(",")),
            format!("\"{long}\""),
            format!("label_replace(up, \"x\", \"{long}\", \"job\", \"(.*)\")"),
            format!("count_over_time(up[{}s:{}ms])", digits, 1 + digits % 7),
        ] {
            run(&q, false);
        }
    }
}
