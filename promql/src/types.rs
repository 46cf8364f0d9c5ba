//! Values the engine works with: label sets, samples, series, and the result of a query.
//! Owns label-set helpers (dropping `__name__`, keeping or removing names, grouping keys)
//! and Prometheus' ordering of label sets.

use std::cmp::Ordering;
use std::sync::Arc;

use sluice_core::METRIC_NAME;

/// An immutable label set, sorted by name, cheap to clone (shared between steps).
#[derive(Debug, Clone, Eq, Default)]
pub struct Labels(Arc<[(String, String)]>);

impl PartialEq for Labels {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

// Consistent with `eq`: equal contents hash alike, whatever the pointer.
impl std::hash::Hash for Labels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Labels {
    /// Builds a label set; sorts by name and drops empty values, which Prometheus treats
    /// as absent labels.
    pub fn new(mut pairs: Vec<(String, String)>) -> Self {
        pairs.retain(|(_, v)| !v.is_empty());
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        Labels(pairs.into())
    }

    /// The empty label set.
    pub fn empty() -> Self {
        Labels(Arc::from(Vec::new()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &(String, String)> {
        self.0.iter()
    }

    pub fn as_slice(&self) -> &[(String, String)] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `name`, `""` when absent (Prometheus' convention).
    pub fn get(&self, name: &str) -> &str {
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .map_or("", |i| self.0[i].1.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .is_ok()
    }

    /// Address of the shared label storage: identifies this value while it is alive.
    pub(crate) fn addr(&self) -> usize {
        Arc::as_ptr(&self.0) as *const () as usize
    }

    /// Whether both share one storage (not just equal contents).
    pub(crate) fn same(a: &Labels, b: &Labels) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }

    /// The same labels without the metric name.
    pub fn without_name(&self) -> Labels {
        if !self.has(METRIC_NAME) {
            return self.clone();
        }
        Labels(
            self.0
                .iter()
                .filter(|(n, _)| n != METRIC_NAME)
                .cloned()
                .collect::<Vec<_>>()
                .into(),
        )
    }

    /// Only the labels named in `names`.
    pub fn keep(&self, names: &[String]) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|(n, _)| names.iter().any(|k| k == n))
                .cloned()
                .collect::<Vec<_>>()
                .into(),
        )
    }

    /// All labels except those named in `names`.
    pub fn drop(&self, names: &[String]) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|(n, _)| !names.iter().any(|k| k == n))
                .cloned()
                .collect::<Vec<_>>()
                .into(),
        )
    }

    /// A copy with `name` set to `value` (removed when `value` is empty).
    pub fn with(&self, name: &str, value: &str) -> Labels {
        let mut v: Vec<(String, String)> =
            self.0.iter().filter(|(n, _)| n != name).cloned().collect();
        if !value.is_empty() {
            v.push((name.to_string(), value.to_string()));
            v.sort_by(|a, b| a.0.cmp(&b.0));
        }
        Labels(v.into())
    }

    /// A 64-bit hash identifying the label set, to group and match. Like Prometheus'
    /// signatures, a collision between two different sets is accepted as vanishingly rare.
    pub fn key(&self) -> u64 {
        hash_of(self.0.iter())
    }

    /// Hash over the labels named in `names` (`on`) or all but those and `__name__`
    /// (`ignoring`), as Prometheus' signatures for vector matching.
    pub fn match_key(&self, on: bool, names: &[String]) -> u64 {
        if on {
            hash_of(self.0.iter().filter(|(n, _)| names.iter().any(|k| k == n)))
        } else {
            hash_of(
                self.0
                    .iter()
                    .filter(|(n, _)| n != METRIC_NAME && !names.iter().any(|k| k == n)),
            )
        }
    }

    /// Prometheus' text form: `{a="1", b="2"}` (metric name included as a label).
    pub fn display(&self) -> String {
        let mut s = String::from("{");
        for (i, (n, v)) in self.0.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            s.push_str(n);
            s.push('=');
            s.push_str(&format!("{v:?}"));
        }
        s.push('}');
        s
    }
}

/// Fixed seeds: keys are compared within one query only, but a fixed seed keeps runs
/// reproducible.
pub(crate) fn hasher() -> ahash::AHasher {
    use std::hash::BuildHasher;
    ahash::RandomState::with_seeds(0x5eed, 0x51_1ce, 0x9e37_79b9, 0x7f4a_7c15).build_hasher()
}

pub(crate) fn hash_of<'a>(it: impl Iterator<Item = &'a (String, String)>) -> u64 {
    use std::hash::Hasher;
    let mut h = hasher();
    for (n, v) in it {
        // Lengths first, so ("ab","c") and ("a","bc") hash apart.
        h.write_usize(n.len());
        h.write(n.as_bytes());
        h.write_usize(v.len());
        h.write(v.as_bytes());
    }
    h.finish()
}

/// Orders label sets as Prometheus' `labels.Compare`: pairwise by name then value, then
/// by length.
pub fn compare_labels(a: &Labels, b: &Labels) -> Ordering {
    for (x, y) in a.0.iter().zip(b.0.iter()) {
        match x.0.cmp(&y.0).then_with(|| x.1.cmp(&y.1)) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    a.0.len().cmp(&b.0.len())
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub v: f64,
}

/// Raw stored series as the caller fetched it: labels and samples in time order (ms).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

/// A series of a range vector or of a range query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: Labels,
    pub points: Vec<(i64, f64)>,
}

/// What a query evaluates to, in the shapes of Prometheus' API.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    Scalar {
        t: i64,
        v: f64,
    },
    String {
        t: i64,
        v: String,
    },
    /// An instant vector at time `t`, in evaluation order.
    Vector {
        t: i64,
        samples: Vec<Sample>,
    },
    /// A range vector (instant query) or a range query's result, sorted by labels.
    Matrix(Vec<RangeSeries>),
}
