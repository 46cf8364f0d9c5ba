//! How deeply a query may nest, checked on its text before the parser sees it and again on
//! the parsed tree.
//!
//! Everything that walks a query recurses once per level: the parser's type checks, the
//! planner, the evaluator and dropping the tree. A query such as 30,000 nested parentheses or
//! a 100,000-term `1+1+…` would run any of them out of stack, and stack overflow aborts the
//! whole process. So a query deeper than [`MAX_DEPTH`] is refused (`bad_data`) before it is
//! parsed, and evaluation runs on threads whose stack fits [`MAX_DEPTH`] levels (the caller's
//! job; [`EVAL_STACK_BYTES`] is measured for it by this crate's tests).
//!
//! Owns the text scan and the tree measure. Must not parse: the scan only counts brackets and
//! operator characters, so it stays cheap and cannot recurse whatever the input.

use promql_parser::parser::Expr;

use crate::error::Error;

/// Deepest query accepted: levels of operators, function calls, aggregations, parentheses
/// and subqueries on any path from the top of the query to a leaf. Hand-written and
/// generated dashboard queries stay far below it.
pub const MAX_DEPTH: usize = 1000;

/// Stack a thread needs to parse, plan and evaluate a query of [`MAX_DEPTH`] levels, with a
/// margin: the tests run such queries on a thread of this size in unoptimised builds, where
/// frames are largest; there 16 MiB was enough and 8 MiB was not, so this is four times
/// what was measured. Only the pages a query touches become resident.
pub const EVAL_STACK_BYTES: usize = 64 << 20;

fn too_deep(what: &str) -> Error {
    Error::BadData(format!(
        "query is nested too deeply: its {what} exceeds the maximum depth of {MAX_DEPTH} levels (operators, function calls, aggregations, parentheses and subqueries)"
    ))
}

/// One bracket group being scanned: operators at its own level, and the deepest group
/// nested in it.
#[derive(Default)]
struct Group {
    ops: usize,
    deepest_child: usize,
    /// Depth of the group that closed last at this level, if nothing but blanks followed it
    /// (a `[...]` right after it is a subquery or range of that expression, one level
    /// below it, not beside it).
    just_closed: Option<usize>,
    /// Whether this group opened right after a closed group, with that group's depth.
    wraps: Option<usize>,
    /// Whether it is a `{…}` group (matchers).
    braces: bool,
}

/// An upper bound of the parsed tree's depth, from the text: every operator character or
/// keyword counts a level at its bracket level, every bracket group a level. Ignores string
/// literals and comments. Linear in the text, no recursion.
pub fn text_depth(text: &str) -> usize {
    let b = text.as_bytes();
    let mut stack: Vec<Group> = vec![Group::default()];
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let top = stack.len() - 1;
        // Blanks and comments between a group and a `[` that follows it keep them together.
        if !c.is_ascii_whitespace() && !matches!(c, b')' | b']' | b'}' | b'[' | b'#') {
            stack[top].just_closed = None;
        }
        // Inside `{…}` are matchers: their operators never nest.
        let in_matchers = stack[top].braces;
        match c {
            b'"' | b'\'' | b'`' => {
                // A string literal: up to the matching quote (backslash escapes except in
                // raw strings); an unterminated one runs to the end.
                i += 1;
                while i < b.len() && b[i] != c {
                    if c != b'`' && b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                let wraps = if c == b'[' {
                    stack[top].just_closed.take()
                } else {
                    stack[top].just_closed = None;
                    None
                };
                stack.push(Group {
                    wraps,
                    braces: c == b'{',
                    ..Group::default()
                });
            }
            b')' | b']' | b'}' if stack.len() > 1 => {
                let g = stack.pop().expect("more than one group");
                let depth = g.ops + g.deepest_child + 1 + g.wraps.unwrap_or(0);
                let parent = stack.last_mut().expect("the outermost group stays");
                parent.deepest_child = parent.deepest_child.max(depth);
                parent.just_closed = Some(depth);
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'=' | b'!' | b'<' | b'>' | b'@'
                if !in_matchers =>
            {
                stack[top].ops += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i + 1 < b.len() && (b[i + 1].is_ascii_alphanumeric() || b[i + 1] == b'_') {
                    i += 1;
                }
                let word = &text[start..=i];
                if !in_matchers
                    && ["and", "or", "unless", "atan2", "offset"]
                        .iter()
                        .any(|k| word.eq_ignore_ascii_case(k))
                {
                    stack[top].ops += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    // Unclosed groups (the parser refuses the query, but only after reading it).
    while stack.len() > 1 {
        let g = stack.pop().expect("more than one group");
        let depth = g.ops + g.deepest_child + 1 + g.wraps.unwrap_or(0);
        let parent = stack.last_mut().expect("the outermost group stays");
        parent.deepest_child = parent.deepest_child.max(depth);
    }
    let root = &stack[0];
    root.ops + root.deepest_child + 1
}

/// Refuses a query text whose nesting could exceed [`MAX_DEPTH`].
pub fn check_text(text: &str) -> Result<(), Error> {
    if text_depth(text) > MAX_DEPTH {
        return Err(too_deep("text"));
    }
    Ok(())
}

/// The depth of a parsed tree (a leaf is 1), measured without recursion.
pub fn tree_depth(e: &Expr) -> usize {
    let mut deepest = 0;
    let mut todo: Vec<(&Expr, usize)> = vec![(e, 1)];
    while let Some((e, d)) = todo.pop() {
        deepest = deepest.max(d);
        let d = d + 1;
        match e {
            Expr::Aggregate(a) => {
                todo.push((&a.expr, d));
                if let Some(p) = &a.param {
                    todo.push((p, d));
                }
            }
            Expr::Unary(u) => todo.push((&u.expr, d)),
            Expr::Binary(b) => {
                todo.push((&b.lhs, d));
                todo.push((&b.rhs, d));
            }
            Expr::Paren(p) => todo.push((&p.expr, d)),
            Expr::Subquery(s) => todo.push((&s.expr, d)),
            Expr::Call(c) => todo.extend(c.args.args.iter().map(|a| (a.as_ref(), d))),
            Expr::MatrixSelector(_) => deepest = deepest.max(d),
            Expr::Extension(x) => todo.extend(x.expr.children().iter().map(|c| (c, d))),
            Expr::VectorSelector(_) | Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
        }
    }
    deepest
}

/// Refuses a parsed query deeper than [`MAX_DEPTH`].
pub fn check_tree(e: &Expr) -> Result<(), Error> {
    if tree_depth(e) > MAX_DEPTH {
        return Err(too_deep("expression tree"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed_depth(q: &str) -> usize {
        tree_depth(&promql_parser::parser::parse(q).unwrap())
    }

    #[test]
    fn the_text_bound_is_never_below_the_tree_depth() {
        for q in [
            "up",
            "-1",
            "1 + 2 * 3",
            "sum by (job) (rate(http_requests_total{code=~\"5..\"}[5m]))",
            "(a)[5m:1m]",
            "rate(x[5m])[10m:1m]",
            "max_over_time((max_over_time((a)[5m:1m]))[10m:1m])",
            "((((a))))",
            "a or b or c unless d and e",
            "topk(3, a) / on (job) group_left b offset 5m",
            "histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m] @ 100)))",
            "a atan2 b > bool 1",
            "- - - - 1",
            "1e+5 - 2",
            "x{a=\"(((\", b='))]'} # ((((",
            "(a) # c\n[5m:1m]",
            "max_over_time(rate(x[5m]) # a comment\n[10m:1m])",
            "kube_pod_info{cluster=\"c\",namespace=\"n\",pod=\"p\",container!=\"\",container!=\"POD\",image!=\"\"}",
        ] {
            let (text, tree) = (text_depth(q), parsed_depth(q));
            assert!(text >= tree, "{q}: text {text} < tree {tree}");
            assert!(text <= tree + 8, "{q}: text {text} far above tree {tree}");
            if q.starts_with("kube") {
                assert!(text <= 2, "a selector's matchers do not nest: {text}");
            }
        }
    }

    #[test]
    fn deep_texts_are_refused_before_parsing() {
        let parens = format!("{}1{}", "(".repeat(30_000), ")".repeat(30_000));
        let sums = format!("{}x{}", "sum(".repeat(20_000), ")".repeat(20_000));
        let minus = format!("{}1", "-".repeat(300_000));
        let ones = format!("1{}", "+1".repeat(100_000));
        let unclosed = "(".repeat(5_000);
        for q in [&parens, &sums, &minus, &ones, &unclosed] {
            let e = check_text(q).unwrap_err();
            assert!(e.to_string().contains("maximum depth of 1000"), "{e}");
        }
        let at_limit = format!(
            "{}1{}",
            "(".repeat(MAX_DEPTH - 1),
            ")".repeat(MAX_DEPTH - 1)
        );
        assert!(check_text(&at_limit).is_ok());
        // Parsing recurses: on a thread with an evaluation thread's stack.
        let depth = std::thread::Builder::new()
            .stack_size(EVAL_STACK_BYTES)
            .spawn(move || parsed_depth(&at_limit))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(depth, MAX_DEPTH);
    }
}
