//! Prometheus duration syntax (`15s`, `1h30m`, `2h`, `100ms`, `1d`, `1w`, `1y`).
//!
//! Owns parsing and printing of durations exactly as Prometheus' `model.ParseDuration` does, so
//! flags and query parameters read the way operators already write them, and the HTTP API's
//! duration parameters (`step`, `timeout`), which also take float seconds
//! ([`parse_duration_or_seconds`]). Must not accept Go's `time.ParseDuration` extras (`1.5h`,
//! `µs`): Prometheus does not.

use std::time::Duration;

/// A duration string that is not in Prometheus' syntax.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a valid duration string: {0:?} (expected e.g. 15s, 2m, 1h30m, 100ms)")]
pub struct DurationError(pub String);

/// An API duration parameter that is neither float seconds nor a duration, worded as
/// Prometheus' API words it (the offending text quoted).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationParamError {
    /// Neither a number nor a duration, or a duration longer than `i64` milliseconds.
    #[error("cannot parse {0:?} to a valid duration")]
    Invalid(String),
    /// A number of seconds that is not finite or whose milliseconds do not fit an `i64`.
    #[error("cannot parse {0:?} to a valid duration. It overflows int64")]
    Overflow(String),
}

/// Units in the order Prometheus requires them, with their length in milliseconds.
const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

/// Parses a Prometheus duration. `"0"` is accepted as zero, as Prometheus does.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    duration_ms(s)
        .map(Duration::from_millis)
        .ok_or_else(|| DurationError(s.to_string()))
}

/// Parses a duration parameter of Prometheus' HTTP API (`step`, `timeout`): float seconds
/// (`15`, `0.5`, rounded to the millisecond) or a duration (`1h30m`); milliseconds, negative
/// for negative seconds. What the caller allows (e.g. a positive `step`) is its own check.
pub fn parse_duration_or_seconds(s: &str) -> Result<i64, DurationParamError> {
    if let Ok(f) = s.parse::<f64>() {
        let ms = f * 1000.0;
        // Prometheus' bound: its durations are int64 nanoseconds, about ±9.2e15 ms.
        if !ms.is_finite() || ms.abs() >= 9.2e15 {
            return Err(DurationParamError::Overflow(s.to_string()));
        }
        return Ok(ms.round() as i64);
    }
    duration_ms(s)
        .and_then(|ms| i64::try_from(ms).ok())
        .ok_or_else(|| DurationParamError::Invalid(s.to_string()))
}

/// The milliseconds of a duration in Prometheus' syntax (not `"0"`, which only
/// [`parse_duration`] accepts); `None` if `s` is not one or overflows `u64`.
fn duration_ms(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let bytes = s.as_bytes();
    let mut pos = 0;
    let mut next_unit = 0; // units must appear in decreasing order, each at most once
    let mut total_ms: u64 = 0;
    while pos < bytes.len() {
        let start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == start {
            return None;
        }
        let n: u64 = s[start..pos].parse().ok()?;
        let rest = &s[pos..];
        // "ms" must be tried before "m".
        let found = UNITS
            .iter()
            .enumerate()
            .skip(next_unit)
            .filter(|(_, (u, _))| rest.starts_with(u))
            .max_by_key(|(_, (u, _))| u.len())?;
        let (idx, (unit, ms)) = found;
        next_unit = idx + 1;
        pos += unit.len();
        total_ms = n.checked_mul(*ms).and_then(|v| total_ms.checked_add(v))?;
    }
    Some(total_ms)
}

/// Prints a duration the way Prometheus does (`1h30m`, `15s`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, len) in UNITS {
        if ms >= len {
            out.push_str(&(ms / len).to_string());
            out.push_str(unit);
            ms %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m500ms"), Ok(Duration::from_millis(60_500)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_what_prometheus_rejects() {
        for bad in [
            "", "15", "1.5h", "m", "30m1h", "1h1h", "5 s", "-1s", "1µs", "1sms",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn api_parameters_parse_like_prometheus() {
        assert_eq!(parse_duration_or_seconds("15"), Ok(15_000));
        assert_eq!(parse_duration_or_seconds("0.5"), Ok(500));
        assert_eq!(parse_duration_or_seconds("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_or_seconds("1m5s100ms"), Ok(65_100));
        assert!(parse_duration_or_seconds("5m1h").is_err());
        assert!(parse_duration_or_seconds("x").is_err());
        assert!(parse_duration_or_seconds("").is_err());
    }

    #[test]
    fn api_parameter_errors_quote_the_text_as_prometheus_does() {
        let msg = |s: &str| parse_duration_or_seconds(s).unwrap_err().to_string();
        assert_eq!(msg("x"), r#"cannot parse "x" to a valid duration"#);
        assert_eq!(
            msg("1e16"),
            r#"cannot parse "1e16" to a valid duration. It overflows int64"#
        );
        assert_eq!(
            msg("inf"),
            r#"cannot parse "inf" to a valid duration. It overflows int64"#
        );
        // Milliseconds must fit an i64, in either syntax.
        assert_eq!(parse_duration_or_seconds("-1.5"), Ok(-1500));
        assert_eq!(
            parse_duration_or_seconds("9223372036854775807ms"),
            Ok(i64::MAX)
        );
        assert_eq!(
            msg("9223372036854775808ms"),
            r#"cannot parse "9223372036854775808ms" to a valid duration"#
        );
        assert!(
            parse_duration("9223372036854775808ms").is_ok(),
            "a flag may be longer"
        );
    }

    #[test]
    fn formats_round_trip() {
        for s in ["15s", "1h30m", "2h", "100ms", "1w2d", "0s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
