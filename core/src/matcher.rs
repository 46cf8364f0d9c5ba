//! Label matchers with Prometheus 2.x semantics (`=`, `!=`, `=~`, `!~`; regexes fully anchored).
//!
//! Owns matching a single label value, for every reader alike: PromQL selectors
//! (`sluice-promql`), the series and label APIs and remote read (`sluice-net`), and series
//! selection in heads and blocks (`sluice-shards`) build and hand on this one [`Matcher`], so
//! a selector means the same wherever it is evaluated. Must not know about series storage, nor
//! about any syntax a matcher is written in (PromQL text, remote read's protobuf): parsing is
//! the caller's.

/// How a [`Matcher`] compares a label value with its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`: the value equals.
    Equal,
    /// `!=`: the value differs.
    NotEqual,
    /// `=~`: the whole value matches the regex.
    Regex,
    /// `!~`: the whole value does not match the regex.
    NotRegex,
}

/// One label matcher. Cheap to clone (the compiled regex is reference counted).
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label name matched.
    pub name: String,
    /// How the value is compared.
    pub op: MatchOp,
    /// The value, or the regex as written (unanchored).
    pub value: String,
    /// The anchored regex, compiled once; `Some` exactly for the regex operators.
    re: Option<regex::Regex>,
}

/// A regex that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("invalid regular expression {pattern:?}: {source}")]
pub struct MatcherError {
    pattern: String,
    source: regex::Error,
}

impl Matcher {
    /// Builds a matcher; regexes are anchored at both ends as in Prometheus 2.x, whose `.`
    /// does not match a newline (the PromQL engine and the differential tests follow 2.42).
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, MatcherError> {
        let re = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                regex::Regex::new(&format!("^(?:{value})$")).map_err(|source| MatcherError {
                    pattern: value.to_string(),
                    source,
                })?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            re,
        })
    }

    /// Whether a label value (`""` for an absent label) satisfies this matcher.
    #[inline]
    pub fn matches(&self, v: &str) -> bool {
        match (self.op, &self.re) {
            (MatchOp::Equal, _) => v == self.value,
            (MatchOp::NotEqual, _) => v != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(v),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(v),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(op: MatchOp, value: &str) -> Matcher {
        Matcher::new("l", op, value).unwrap()
    }

    #[test]
    fn equality_compares_whole_values() {
        assert!(m(MatchOp::Equal, "a").matches("a"));
        assert!(!m(MatchOp::Equal, "a").matches("ab"));
        assert!(m(MatchOp::NotEqual, "a").matches("ab"));
        assert!(!m(MatchOp::NotEqual, "a").matches("a"));
        // An absent label is "": `l=""` selects series without it.
        assert!(m(MatchOp::Equal, "").matches(""));
    }

    #[test]
    fn regexes_are_anchored_and_dot_stops_at_newlines() {
        assert!(m(MatchOp::Regex, "a|b").matches("b"));
        assert!(
            !m(MatchOp::Regex, "a|b").matches("ab"),
            "anchored at both ends"
        );
        assert!(!m(MatchOp::Regex, "b").matches("abc"));
        assert!(m(MatchOp::Regex, "a|").matches(""));
        assert!(!m(MatchOp::Regex, ".*").matches("a\nb"), "Prometheus 2.x");
        assert!(m(MatchOp::NotRegex, ".+").matches(""));
        assert!(!m(MatchOp::NotRegex, "a.*").matches("abc"));
    }

    #[test]
    fn a_bad_regex_is_refused_with_the_pattern_quoted() {
        let err = Matcher::new("l", MatchOp::Regex, "a(").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid regular expression \"a(\": "),
            "{err}"
        );
        // Equality never compiles its value.
        assert!(Matcher::new("l", MatchOp::Equal, "a(").is_ok());
    }
}
