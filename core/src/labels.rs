//! Label rules: what a valid label name, metric name and label set are.
//!
//! Owns the validation rules and their error messages. Must not allocate on the success path:
//! it runs once per series on the ingest hot path.

use std::fmt::Write as _;

/// The label that carries the metric name.
pub const METRIC_NAME: &str = "__name__";

/// Why a label set was rejected. Every variant names the offending label so the sender can
/// find it.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum LabelError {
    #[error("series has no labels")]
    NoLabels,
    #[error("missing metric name (label __name__)")]
    MissingMetricName,
    #[error("empty label name")]
    EmptyLabelName,
    #[error("label {name:?} has an empty value")]
    EmptyLabelValue { name: String },
    #[error("invalid label name {name:?} (must match [a-zA-Z_][a-zA-Z0-9_]*)")]
    InvalidLabelName { name: String },
    #[error("invalid metric name {name:?} (must match [a-zA-Z_:][a-zA-Z0-9_:]*)")]
    InvalidMetricName { name: String },
    #[error("duplicate label name {name:?}")]
    DuplicateLabelName { name: String },
    #[error("labels are not sorted by name: {name:?} comes after {prev:?}")]
    UnsortedLabels { name: String, prev: String },
    #[error("label {field} is not valid UTF-8")]
    NotUtf8 { field: &'static str },
}

/// Character classes of label and metric names, one table lookup per byte (this check runs
/// for every label of every series on the ingest path).
const NAME_START: u8 = 1;
const NAME_CONT: u8 = 2;
const METRIC_START: u8 = 4;
const METRIC_CONT: u8 = 8;

const CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let alpha = c.is_ascii_alphabetic();
        let digit = c.is_ascii_digit();
        let mut f = 0;
        if alpha || c == b'_' {
            f |= NAME_START | NAME_CONT | METRIC_START | METRIC_CONT;
        }
        if digit {
            f |= NAME_CONT | METRIC_CONT;
        }
        if c == b':' {
            f |= METRIC_START | METRIC_CONT;
        }
        t[b] = f;
        b += 1;
    }
    t
};

#[inline]
fn matches_classes(s: &[u8], start: u8, cont: u8) -> bool {
    match s.split_first() {
        Some((first, rest)) => {
            CLASSES[*first as usize] & start != 0
                && rest.iter().fold(cont, |acc, b| acc & CLASSES[*b as usize]) != 0
        }
        None => false,
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, Prometheus' classic label-name rule.
#[inline]
pub fn is_valid_label_name(name: &[u8]) -> bool {
    matches_classes(name, NAME_START, NAME_CONT)
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`, Prometheus' classic metric-name rule.
#[inline]
pub fn is_valid_metric_name(name: &[u8]) -> bool {
    matches_classes(name, METRIC_START, METRIC_CONT)
}

/// Checks a label set in wire order: non-empty names and values, valid names, a valid
/// `__name__`, names strictly ascending (which also rules out duplicates).
///
/// Takes strings or bytes already known to be UTF-8 (the decoder checked, or saw only ASCII);
/// errors quote them.
pub fn validate_label_set<N, V, I>(labels: I) -> Result<(), LabelError>
where
    I: IntoIterator<Item = (N, V)>,
    N: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut prev: Option<N> = None;
    let mut has_name = false;
    let mut any = false;
    for (name, value) in labels {
        any = true;
        let (n, v) = (name.as_ref(), value.as_ref());
        if n.is_empty() {
            return Err(LabelError::EmptyLabelName);
        }
        if v.is_empty() {
            return Err(LabelError::EmptyLabelValue { name: text(n) });
        }
        if n == METRIC_NAME.as_bytes() {
            has_name = true;
            if !is_valid_metric_name(v) {
                return Err(LabelError::InvalidMetricName { name: text(v) });
            }
        } else if !is_valid_label_name(n) {
            return Err(LabelError::InvalidLabelName { name: text(n) });
        }
        if let Some(p) = &prev {
            let p = p.as_ref();
            match cmp_names(n, p) {
                std::cmp::Ordering::Equal => {
                    return Err(LabelError::DuplicateLabelName { name: text(n) })
                }
                std::cmp::Ordering::Less => {
                    return Err(LabelError::UnsortedLabels {
                        name: text(n),
                        prev: text(p),
                    })
                }
                std::cmp::Ordering::Greater => {}
            }
        }
        prev = Some(name);
    }
    if !any {
        return Err(LabelError::NoLabels);
    }
    if !has_name {
        return Err(LabelError::MissingMetricName);
    }
    Ok(())
}

/// Byte order of two label names. Neighbouring names nearly always differ in their first
/// byte, and deciding that inline is cheaper than a `memcmp` call per label (4% of ingest).
#[inline]
fn cmp_names(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// Renders a label set the way PromQL prints it: `name{a="b", c="d"}`. Used in error messages
/// only, so it may allocate.
pub fn render_series<'a, I>(labels: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut name = "";
    let mut rest = String::new();
    for (n, v) in labels {
        if n == METRIC_NAME {
            name = v;
            continue;
        }
        if !rest.is_empty() {
            rest.push_str(", ");
        }
        let _ = write!(rest, "{n}={v:?}");
    }
    format!("{name}{{{rest}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(l: &[(&str, &str)]) -> Result<(), LabelError> {
        validate_label_set(l.iter().copied())
    }

    #[test]
    fn accepts_a_normal_series() {
        assert_eq!(
            check(&[("__name__", "up"), ("instance", "a:9100"), ("job", "node")]),
            Ok(())
        );
        assert_eq!(check(&[("__name__", "ns:rule:rate5m")]), Ok(()));
    }

    #[test]
    fn rejects_each_rule() {
        assert_eq!(check(&[]), Err(LabelError::NoLabels));
        assert_eq!(check(&[("job", "x")]), Err(LabelError::MissingMetricName));
        assert_eq!(
            check(&[("", "x"), ("__name__", "up")]),
            Err(LabelError::EmptyLabelName)
        );
        assert!(matches!(
            check(&[("__name__", "up"), ("job", "")]),
            Err(LabelError::EmptyLabelValue { .. })
        ));
        assert!(matches!(
            check(&[("__name__", "up"), ("1job", "x")]),
            Err(LabelError::InvalidLabelName { .. })
        ));
        assert!(matches!(
            check(&[("__name__", "up-time")]),
            Err(LabelError::InvalidMetricName { .. })
        ));
        assert!(matches!(
            check(&[("__name__", "up"), ("a", "1"), ("a", "2")]),
            Err(LabelError::DuplicateLabelName { .. })
        ));
        assert!(matches!(
            check(&[("__name__", "up"), ("b", "1"), ("a", "2")]),
            Err(LabelError::UnsortedLabels { .. })
        ));
    }

    #[test]
    fn name_character_classes() {
        for ok in ["a", "_", "A_b9", "__name__"] {
            assert!(is_valid_label_name(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "9a", "a-b", "a:b", "é", "a b"] {
            assert!(!is_valid_label_name(bad.as_bytes()), "{bad}");
        }
        for ok in ["up", ":a", "ns:rule:rate5m", "_x9"] {
            assert!(is_valid_metric_name(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "9a", "a-b", "a.b"] {
            assert!(!is_valid_metric_name(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn renders_like_promql() {
        let s = render_series([("__name__", "up"), ("job", "node")]);
        assert_eq!(s, r#"up{job="node"}"#);
    }
}
