//! Label matchers with Prometheus semantics (`=`, `!=`, `=~`, `!~`; regexes fully anchored).
//!
//! Owns matching a single label value. Must not know about series storage.

/// Matcher operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// One label matcher. Cheap to clone (the compiled regex is reference counted).
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
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
