//! Building HTTP responses: plain-text errors for writers, Prometheus' JSON envelope for
//! readers. Owns the exact byte formats clients parse; must not decide status codes.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

pub type Body = Full<Bytes>;

/// A response with a plain-text body (one line, newline-terminated).
pub fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut msg = msg.into();
    if !msg.ends_with('\n') {
        msg.push('\n');
    }
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(msg)))
        .expect("static response parts are valid")
}

/// An empty response.
pub fn empty(status: StatusCode) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::new()))
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
        .body(Full::new(Bytes::from(body)))
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
