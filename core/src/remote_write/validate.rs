//! The verdict on a decoded series ([`check_series`]): refused for native histograms, or for
//! label bytes that break the label rules; and the series shown in the error message.
//!
//! Owns the order of the checks (histograms, then UTF-8 in wire order, then [`crate::labels`]'
//! rules) so both decoders report the same error for the same series, and the bound on what an
//! error message quotes. Must not decide the rules themselves ([`crate::labels`] does) nor
//! parse protobuf.

use std::fmt::Write as _;

use super::request::{bytes_at, LabelRef};
use super::DecodeError;
use crate::labels::{self, LabelError};

/// Yields a series' labels as strings, checking UTF-8 lazily so each byte is checked once and
/// fed straight to [`labels::validate_label_set`]. On the first invalid field it records which
/// and ends, so the caller can report `NotUtf8` ahead of whatever the truncated set looks like.
struct Utf8Labels<'a> {
    buf: &'a [u8],
    rest: std::slice::Iter<'a, LabelRef>,
    bad: Option<&'static str>,
}

impl<'a> Iterator for Utf8Labels<'a> {
    type Item = (&'a str, &'a str);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.bad.is_some() {
            return None;
        }
        let l = self.rest.next()?;
        match utf8_pair(self.buf, l) {
            Ok(pair) => Some(pair),
            Err(field) => {
                self.bad = Some(field);
                None
            }
        }
    }
}

/// A label's name and value as strings, or which of them ("name"/"value") is not UTF-8.
#[inline]
fn utf8_pair<'a>(buf: &'a [u8], l: &LabelRef) -> Result<(&'a str, &'a str), &'static str> {
    let name = utf8(bytes_at(buf, l.name_start, l.name_len)).map_err(|_| "name")?;
    let value = utf8(bytes_at(buf, l.value_start, l.value_len)).map_err(|_| "value")?;
    Ok((name, value))
}

/// `str::from_utf8` with a branch-free ASCII pre-check. Labels are short and nearly always
/// ASCII; for them std's validator spends most of its time in per-call set-up (it was 13% of
/// a receiving core in the flamegraph), while an OR over the bytes vectorises.
#[inline]
fn utf8(b: &[u8]) -> Result<&str, std::str::Utf8Error> {
    if b.iter().fold(0u8, |acc, x| acc | x) < 0x80 {
        // SAFETY: every byte is below 0x80, i.e. ASCII, and ASCII is valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(b) })
    } else {
        std::str::from_utf8(b)
    }
}

/// The verdict on series `index` once all its fields are read: refused for native histograms
/// whatever its labels, else for its label set ([`validate_labels`]); either error quotes the
/// series. Both decoders end every series here, so they refuse alike.
///
/// `ascii`: every byte of the labels is known to be ASCII, so UTF-8 needs no check.
// `inline`: the schema walks that call it (v1, v2) may land in other codegen units, and it
// runs once per series on the ingest path.
#[inline]
pub(super) fn check_series(
    buf: &[u8],
    labels: &[LabelRef],
    index: usize,
    has_histogram: bool,
    ascii: bool,
) -> Result<(), DecodeError> {
    if has_histogram {
        return Err(DecodeError::NativeHistogram {
            index,
            series: render_lossy(buf, labels),
        });
    }
    validate_labels(buf, labels, ascii).map_err(|source| DecodeError::InvalidSeries {
        index,
        series: render_lossy(buf, labels),
        source,
    })
}

/// UTF-8 first (in wire order), then the label rules. A label-rule error found before a later
/// non-UTF-8 field is superseded by `NotUtf8`, so the reported error does not depend on where
/// the lazy check happened to stop.
///
/// `ascii`: every byte of the labels is known to be ASCII, so UTF-8 needs no check.
fn validate_labels(buf: &[u8], labels: &[LabelRef], ascii: bool) -> Result<(), LabelError> {
    if ascii {
        return labels::validate_label_set(
            labels
                .iter()
                .map(|l| (l.name_bytes(buf), l.value_bytes(buf))),
        );
    }
    let mut it = Utf8Labels {
        buf,
        rest: labels.iter(),
        bad: None,
    };
    let res = labels::validate_label_set(&mut it);
    if let Some(field) = it.bad {
        return Err(LabelError::NotUtf8 { field });
    }
    if res.is_err() {
        for l in it.rest {
            if let Err(field) = utf8_pair(buf, l) {
                return Err(LabelError::NotUtf8 { field });
            }
        }
    }
    res
}

/// Labels of a series an error message shows, at most; the count of the others follows.
const RENDERED_LABELS: usize = 32;

/// Bytes of a label name or value an error message shows, at most.
const RENDERED_LABEL_BYTES: usize = 1024;

/// Renders a series for an error message; lossy so that non-UTF-8 series can still be shown.
/// Bounded (see [`RENDERED_LABELS`]): a series of a million labels is refused with a message,
/// not with a copy of itself.
#[cold]
#[inline(never)]
fn render_lossy(buf: &[u8], labels: &[LabelRef]) -> String {
    let shown = |b: &[u8]| {
        let cut = &b[..b.len().min(RENDERED_LABEL_BYTES)];
        let mut s = String::from_utf8_lossy(cut).into_owned();
        if cut.len() < b.len() {
            s.push('…');
        }
        s
    };
    let pairs: Vec<(String, String)> = labels
        .iter()
        .take(RENDERED_LABELS)
        .map(|l| (shown(l.name_bytes(buf)), shown(l.value_bytes(buf))))
        .collect();
    let mut s = labels::render_series(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    if labels.len() > RENDERED_LABELS {
        let _ = write!(s, " (and {} more labels)", labels.len() - RENDERED_LABELS);
    }
    s
}
