//! Answers of the read API written piece by piece ([`Pieces`]): a query result (vector or
//! matrix) or a series list can be tens of megabytes of JSON, so it is produced as the client
//! takes it instead of in one buffer, and a core produces one piece at a time between its
//! other work. Byte for byte what Prometheus writes.
//!
//! Owns the JSON of query results and series lists. Must not decide status codes: an answer
//! is only ever a success (errors are known before the first byte).

use sluice_promql::QueryValue;
use sluice_shards::SeriesData;

use super::gate::Slot;
use super::push_labels;
use crate::response::{format_value, push_quoted, push_timestamp, quote, Pieces};

const ENVELOPE: &str = r#"{"status":"success","data":"#;

/// A sample's value as Prometheus writes points: Go's `FormatFloat(v, 'f', -1)`, switching to
/// `'e'` (`1.5e-07`, `1e+21`) below 1e-6 and from 1e21 in magnitude.
pub(super) fn point_value(v: f64) -> String {
    let a = v.abs();
    if v.is_finite() && a != 0.0 && !(1e-6..1e21).contains(&a) {
        // Rust writes `1.5e-7`; Go writes at least two exponent digits with a sign.
        let s = format!("{v:e}");
        if let Some((mant, exp)) = s.split_once('e') {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            return format!("{mant}e{sign}{digits:0>2}");
        }
        return s;
    }
    format_value(v)
}

/// A scalar's or string's time: Go's JSON encoding of the seconds as a float64.
fn push_float_seconds(out: &mut String, t_ms: i64) {
    use std::fmt::Write;
    let _ = write!(out, "{}", t_ms as f64 / 1000.0);
}

fn push_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    push_timestamp(out, t);
    // Formatted in place: number text never needs JSON escaping.
    out.push_str(",\"");
    let a = v.abs();
    if v.is_finite() && (a == 0.0 || (1e-6..1e21).contains(&a)) {
        use std::fmt::Write;
        let _ = write!(out, "{v}");
    } else {
        out.push_str(&point_value(v));
    }
    out.push_str("\"]");
}

/// Moves what a JSON writer produced into a piece.
fn emit(out: &mut Vec<u8>, s: &mut String) {
    out.extend_from_slice(s.as_bytes());
    s.clear();
}

/// A query's result, with the query slot it holds until the client has it all (so the
/// memory of answers being sent stays bounded by `--query.max-concurrent`).
pub(super) struct QueryAnswer {
    value: QueryValue,
    /// Next series, and next point within it.
    at: (usize, usize),
    started: bool,
    _slot: Option<std::sync::Arc<Slot>>,
    /// Test hook (`--debug.panic-in=answer`).
    debug_panic: bool,
    text: String,
}

impl QueryAnswer {
    pub(super) fn new(
        value: QueryValue,
        slot: Option<std::sync::Arc<Slot>>,
        debug_panic: bool,
    ) -> Self {
        QueryAnswer {
            value,
            at: (0, 0),
            started: false,
            _slot: slot,
            debug_panic,
            text: String::new(),
        }
    }

    /// Writes into `self.text` up to about `target` bytes; returns whether it is all out.
    fn write(&mut self, target: usize) -> bool {
        let out = &mut self.text;
        if !self.started {
            self.started = true;
            out.push_str(ENVELOPE);
            match &self.value {
                QueryValue::Scalar { t, v } => {
                    // Scalars go through Go's JSON encoder in Prometheus: float seconds, 'f'
                    // value.
                    out.push_str(r#"{"resultType":"scalar","result":["#);
                    push_float_seconds(out, *t);
                    out.push(',');
                    out.push_str(&quote(&format_value(*v)));
                    out.push_str("]}}");
                    return true;
                }
                QueryValue::String { t, v } => {
                    out.push_str(r#"{"resultType":"string","result":["#);
                    push_float_seconds(out, *t);
                    out.push(',');
                    push_quoted(out, v);
                    out.push_str("]}}");
                    return true;
                }
                QueryValue::Vector { .. } => out.push_str(r#"{"resultType":"vector","result":["#),
                QueryValue::Matrix(_) => out.push_str(r#"{"resultType":"matrix","result":["#),
            }
        }
        let (mut i, mut j) = self.at;
        match &self.value {
            QueryValue::Vector { t, samples } => {
                while i < samples.len() && out.len() < target {
                    let s = &samples[i];
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(r#"{"metric":"#);
                    push_labels(out, s.labels.as_slice());
                    out.push_str(r#","value":"#);
                    push_point(out, *t, s.v);
                    out.push('}');
                    i += 1;
                }
                self.at = (i, 0);
                if i < samples.len() {
                    return false;
                }
            }
            QueryValue::Matrix(series) => {
                while i < series.len() && out.len() < target {
                    let s = &series[i];
                    if j == 0 {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(r#"{"metric":"#);
                        push_labels(out, s.labels.as_slice());
                        out.push_str(r#","values":["#);
                    }
                    // At least one point after the header: `j == 0` means "header not
                    // written yet".
                    while j < s.points.len() && (j == 0 || out.len() < target) {
                        if j > 0 {
                            out.push(',');
                        }
                        let (t, v) = s.points[j];
                        push_point(out, t, v);
                        j += 1;
                    }
                    if j < s.points.len() {
                        // A series larger than a piece goes out over several.
                        break;
                    }
                    out.push_str("]}");
                    i += 1;
                    j = 0;
                }
                self.at = (i, j);
                if i < series.len() {
                    return false;
                }
            }
            QueryValue::Scalar { .. } | QueryValue::String { .. } => return true,
        }
        out.push_str("]}}");
        true
    }
}

impl Pieces for QueryAnswer {
    fn fill(&mut self, out: &mut Vec<u8>, target: usize) -> bool {
        if self.debug_panic {
            panic!("test hook: panic while writing an answer (--debug.panic-in=answer)");
        }
        let done = self.write(target);
        emit(out, &mut self.text);
        done
    }
}

/// The answer of `/api/v1/series`: the label sets of the series found.
pub(super) struct SeriesList {
    series: Vec<SeriesData>,
    next: usize,
    started: bool,
    text: String,
}

impl SeriesList {
    pub(super) fn new(series: Vec<SeriesData>) -> Self {
        SeriesList {
            series,
            next: 0,
            started: false,
            text: String::new(),
        }
    }
}

impl Pieces for SeriesList {
    fn fill(&mut self, out: &mut Vec<u8>, target: usize) -> bool {
        let text = &mut self.text;
        if !self.started {
            self.started = true;
            text.push_str(ENVELOPE);
            text.push('[');
        }
        while self.next < self.series.len() && text.len() < target {
            if self.next > 0 {
                text.push(',');
            }
            push_labels(text, &self.series[self.next].labels);
            self.next += 1;
        }
        let done = self.next == self.series.len();
        if done {
            text.push_str("]}");
        }
        emit(out, text);
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_promql::{Labels, RangeSeries, Sample};

    #[test]
    fn points_are_written_like_prometheus() {
        let mut s = String::new();
        push_point(&mut s, 1_500, 1234567.5);
        assert_eq!(s, r#"[1.500,"1234567.5"]"#);
        s.clear();
        push_point(&mut s, -1_050, 1.5e-7);
        assert_eq!(s, r#"[-1.050,"1.5e-07"]"#);
        s.clear();
        push_point(&mut s, 2_000, 3.163289085967226e26);
        assert_eq!(s, r#"[2,"3.163289085967226e+26"]"#);
        assert_eq!(point_value(1e21), "1e+21");
        assert_eq!(point_value(-0.000001), "-0.000001");
        assert_eq!(point_value(0.0), "0");
        assert_eq!(point_value(f64::NEG_INFINITY), "-Inf");
        let mut s = String::new();
        push_float_seconds(&mut s, 1_050);
        assert_eq!(s, "1.05");
    }

    fn all(mut p: impl Pieces, target: usize) -> (String, usize) {
        let (mut out, mut pieces) = (Vec::new(), 0);
        loop {
            let done = p.fill(&mut out, target);
            pieces += 1;
            if done {
                return (String::from_utf8(out).unwrap(), pieces);
            }
        }
    }

    fn labels(i: usize) -> Labels {
        Labels::new(vec![("i".to_string(), i.to_string())])
    }

    /// The pieces of an answer, however small, join into the JSON of the whole answer.
    #[test]
    fn answers_in_pieces_are_the_whole_json() {
        let matrix = QueryValue::Matrix(
            (0..3)
                .map(|i| RangeSeries {
                    labels: labels(i),
                    points: (0..4)
                        .map(|k| (k * 1000, (i * 10 + k as usize) as f64))
                        .collect(),
                })
                .collect(),
        );
        let vector = QueryValue::Vector {
            t: 5000,
            samples: (0..3)
                .map(|i| Sample {
                    labels: labels(i),
                    v: i as f64,
                })
                .collect(),
        };
        let whole_matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"i":"0"},"values":[[0,"0"],[1,"1"],[2,"2"],[3,"3"]]},{"metric":{"i":"1"},"values":[[0,"10"],[1,"11"],[2,"12"],[3,"13"]]},{"metric":{"i":"2"},"values":[[0,"20"],[1,"21"],[2,"22"],[3,"23"]]}]}}"#;
        let whole_vector = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"i":"0"},"value":[5,"0"]},{"metric":{"i":"1"},"value":[5,"1"]},{"metric":{"i":"2"},"value":[5,"2"]}]}}"#;
        for target in [1, 7, 40, 1 << 20] {
            let (json, pieces) = all(QueryAnswer::new(matrix.clone(), None, false), target);
            assert_eq!(json, whole_matrix, "target {target}");
            assert!(
                target > 1000 || pieces > 3,
                "{pieces} pieces for target {target}"
            );
            let (json, _) = all(QueryAnswer::new(vector.clone(), None, false), target);
            assert_eq!(json, whole_vector, "target {target}");
        }
        let empty = QueryValue::Matrix(Vec::new());
        assert_eq!(
            all(QueryAnswer::new(empty, None, false), 10).0,
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#
        );
        let scalar = QueryValue::Scalar { t: 1050, v: 2.5 };
        assert_eq!(
            all(QueryAnswer::new(scalar, None, false), 1).0,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1.05,"2.5"]}}"#
        );
        let list: Vec<SeriesData> = (0..3)
            .map(|i| SeriesData {
                labels: vec![("a".into(), i.to_string())],
                samples: Vec::new(),
            })
            .collect();
        for target in [1, 1 << 20] {
            assert_eq!(
                all(SeriesList::new(list.clone()), target).0,
                r#"{"status":"success","data":[{"a":"0"},{"a":"1"},{"a":"2"}]}"#
            );
        }
        assert_eq!(
            all(SeriesList::new(Vec::new()), 1).0,
            r#"{"status":"success","data":[]}"#
        );
    }
}
