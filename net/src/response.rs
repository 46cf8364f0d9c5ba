//! Building HTTP responses: plain-text errors for writers, Prometheus' JSON envelope for
//! readers, and bodies produced piece by piece for large answers. Owns the exact byte formats
//! clients parse and the response body type; must not decide status codes.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::Frame;
use hyper::{Response, StatusCode};

/// Bytes a streamed body produces per piece: large enough that a piece costs far more than
/// the task switch after it, small enough that a core is never held for long.
pub const PIECE_BYTES: usize = 64 * 1024;

/// Produces a large answer a piece at a time, as the client takes it: the answer's bytes
/// never exist in memory all at once, and producing them never holds the core for long.
pub trait Pieces {
    /// Appends about `target` bytes (more if one item is larger) to `out`; returns whether
    /// the answer is complete after them.
    fn fill(&mut self, out: &mut Vec<u8>, target: usize) -> bool;
}

/// A response body: whole, or produced piece by piece ([`Pieces`]).
pub enum Body {
    Full(Option<Bytes>),
    Pieces {
        source: Box<dyn Pieces>,
        /// Whether the last poll yielded to the core's other tasks (every other poll does).
        yielded: bool,
        done: bool,
    },
}

impl Body {
    /// A body of these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        Body::Full(Some(bytes.into()))
    }

    /// A body produced by `source`.
    pub fn pieces(source: impl Pieces + 'static) -> Body {
        Body::Pieces {
            source: Box::new(source),
            yielded: false,
            done: false,
        }
    }
}

/// A piece could not be produced (its producer panicked): the connection is cut, so the
/// client sees a truncated answer rather than a wrong one.
#[derive(Debug, thiserror::Error)]
#[error("producing the response failed: {0}")]
pub struct BodyError(String);

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Pieces {
                source,
                yielded,
                done,
            } => {
                if *done {
                    return Poll::Ready(None);
                }
                // hyper asks for the next piece as soon as the last is written: give the
                // core's other tasks (ingestion) a turn between pieces.
                if !*yielded {
                    *yielded = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                *yielded = false;
                let mut out = Vec::with_capacity(PIECE_BYTES + PIECE_BYTES / 4);
                match sluice_shards::panics::catch(|| source.fill(&mut out, PIECE_BYTES)) {
                    Ok(finished) => {
                        *done = finished;
                        if out.is_empty() && finished {
                            return Poll::Ready(None);
                        }
                        Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
                    }
                    Err(p) => {
                        *done = true;
                        tracing::error!("panic while writing a response: {}", p.0);
                        Poll::Ready(Some(Err(BodyError(p.0))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::Pieces { done, .. } => *done,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Full(Some(b)) => hyper::body::SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => hyper::body::SizeHint::with_exact(0),
            Body::Pieces { .. } => hyper::body::SizeHint::default(),
        }
    }
}

/// A response with a plain-text body (one line, newline-terminated).
pub fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut msg = msg.into();
    if !msg.ends_with('\n') {
        msg.push('\n');
    }
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::full(msg))
        .expect("static response parts are valid")
}

/// An empty response.
pub fn empty(status: StatusCode) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::Full(None))
        .expect("static response parts are valid")
}

/// `{"status":"success","data":<data>}` where `data` is already JSON.
pub fn json_success(data: &str) -> Response<Body> {
    let mut body = String::with_capacity(data.len() + 32);
    body.push_str(r#"{"status":"success","data":"#);
    body.push_str(data);
    body.push('}');
    json(StatusCode::OK, body)
}

/// Prometheus' API error envelope.
pub fn json_error(status: StatusCode, error_type: &str, msg: &str) -> Response<Body> {
    let body = format!(
        r#"{{"status":"error","errorType":{},"error":{}}}"#,
        quote(error_type),
        quote(msg)
    );
    json(status, body)
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::full(body))
        .expect("static response parts are valid")
}

/// A JSON string literal, escaped as Go's encoder escapes it (`<`, `>`, `&`, U+2028 and
/// U+2029 as `\u` escapes), so answers match Prometheus' byte for byte.
pub fn quote(s: &str) -> String {
    let q = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string());
    if !q.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return q;
    }
    q.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// Appends a JSON string literal.
pub fn push_quoted(out: &mut String, s: &str) {
    out.push_str(&quote(s));
}

/// A sample's timestamp (ms) as Prometheus writes points in JSON: whole seconds, then `.`
/// and exactly three digits when there are milliseconds (`1.500`, `12`).
pub fn push_timestamp(out: &mut String, t_ms: i64) {
    use std::fmt::Write;
    if t_ms < 0 {
        out.push('-');
    }
    let abs = t_ms.unsigned_abs();
    let (secs, ms) = (abs / 1000, abs % 1000);
    if ms == 0 {
        let _ = write!(out, "{secs}");
    } else {
        let _ = write!(out, "{secs}.{ms:03}");
    }
}

/// A sample value as Prometheus prints it: Go's `FormatFloat(v, 'f', -1, 64)`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_values_print_like_prometheus() {
        let mut s = String::new();
        push_timestamp(&mut s, 1_435_781_451_781);
        assert_eq!(s, "1435781451.781");
        s.clear();
        push_timestamp(&mut s, 1_435_781_451_000);
        assert_eq!(s, "1435781451");
        s.clear();
        push_timestamp(&mut s, 1_500);
        assert_eq!(s, "1.500");
        s.clear();
        push_timestamp(&mut s, -1_050);
        assert_eq!(s, "-1.050");
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(quote("0 < a & b > 1"), r#""0 \u003c a \u0026 b \u003e 1""#);
    }
}
