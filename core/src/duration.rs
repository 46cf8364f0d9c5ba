//! Prometheus duration syntax (`15s`, `1h30m`, `2h`, `100ms`, `1d`, `1w`, `1y`).
//!
//! Owns parsing and printing of durations exactly as Prometheus' `model.ParseDuration` does, so
//! flags and query parameters read the way operators already write them. Must not accept Go's
//! `time.ParseDuration` extras (`1.5h`, `µs`): Prometheus does not.

use std::time::Duration;

/// A duration string that is not in Prometheus' syntax.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a valid duration string: {0:?} (expected e.g. 15s, 2m, 1h30m, 100ms)")]
pub struct DurationError(pub String);

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
    let err = || DurationError(s.to_string());
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err());
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
            return Err(err());
        }
        let n: u64 = s[start..pos].parse().map_err(|_| err())?;
        let rest = &s[pos..];
        // "ms" must be tried before "m".
        let found = UNITS
            .iter()
            .enumerate()
            .skip(next_unit)
            .filter(|(_, (u, _))| rest.starts_with(u))
            .max_by_key(|(_, (u, _))| u.len())
            .ok_or_else(err)?;
        let (idx, (unit, ms)) = found;
        next_unit = idx + 1;
        pos += unit.len();
        total_ms = n
            .checked_mul(*ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(err)?;
    }
    Ok(Duration::from_millis(total_ms))
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
    fn formats_round_trip() {
        for s in ["15s", "1h30m", "2h", "100ms", "1w2d", "0s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
