//! What appending a batch did, typed: how many samples were stored, repeated or refused, the
//! first few refusals with their reason and series, and why a batch cannot be acknowledged at
//! all. Merged across cores for one request; `net` turns it into a status code in one place.
//!
//! Owns the outcome types and their texts (what a sender reads in a 409 or 500). Must not
//! decide status codes: that is the caller's protocol.

use sluice_core::labels::render_series;
use sluice_core::Identity;

pub use crate::head::Rejected;

/// How many rejected samples an outcome describes by name (the rest are only counted).
const MAX_REPORTED_REJECTIONS: usize = 5;

/// What appending a batch did. Merged across cores for one request.
#[derive(Debug, Default, Clone)]
pub struct ApplyOutcome {
    pub appended: u64,
    pub repeats: u64,
    pub rejected: u64,
    pub new_series: u64,
    /// The first few rejected samples, naming their series.
    pub rejections: Vec<Rejection>,
    /// Why nothing of the batch may be acknowledged, if so.
    pub failure: Option<ApplyFailure>,
    /// Identities the batch gave for series whose labels are not theirs (a fingerprint
    /// collision in the receiving core's table of known series): those series were not
    /// stored.
    pub misidentified: Vec<Identity>,
}

/// One refused sample: why, when, and its series (rendered as `{name="value", …}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(*.reason, *.t, .series))]
pub struct Rejection {
    pub reason: Rejected,
    pub t: i64,
    pub series: String,
}

impl Rejection {
    /// A refusal of the sample at `t` of the series with these labels.
    pub fn new<'a>(
        reason: Rejected,
        t: i64,
        labels: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Self {
        let owned: Vec<(String, String)> = labels
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        Rejection {
            reason,
            t,
            series: render_series(owned.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
        }
    }
}

fn describe(r: Rejected, t: i64, series: &str) -> String {
    match r {
        Rejected::OutOfOrder { last_t } => format!(
            "out of order sample for series {series}: timestamp {t} is older than the newest stored {last_t}"
        ),
        Rejected::DuplicateTimestamp => format!(
            "duplicate sample for timestamp {t} with a different value for series {series}"
        ),
        Rejected::TooFarInFuture { max_t } => format!(
            "sample too far in the future for series {series}: timestamp {t} is after {max_t} (now + --tsdb.too-far-in-future.time-window)"
        ),
        Rejected::OutOfBounds { min_t } => format!(
            "out of bounds sample for series {series}: timestamp {t} is older than {min_t}, the oldest this receiver still accepts (older data is persisted, or more than half a block range behind the newest sample)"
        ),
    }
}

/// Why a batch cannot be acknowledged (the sender retries it whole; repeats are idempotent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyFailure {
    /// The WAL (or the tenant's directory) could not take the records.
    #[error("{0}")]
    Storage(String),
    /// The owning core did not answer.
    #[error("core {0} is not reachable")]
    Unreachable(usize),
    /// Series recognised by a label fingerprint another label set shares were not stored.
    #[error(
        "{series} series were recognised by a label fingerprint another series shares and were not stored; a retry stores them"
    )]
    Misidentified { series: usize },
}

impl ApplyOutcome {
    /// Adds another core's outcome to this one.
    pub fn merge(&mut self, o: ApplyOutcome) {
        self.appended += o.appended;
        self.repeats += o.repeats;
        self.rejected += o.rejected;
        self.new_series += o.new_series;
        for r in o.rejections {
            if self.rejections.len() < MAX_REPORTED_REJECTIONS {
                self.rejections.push(r);
            }
        }
        if self.failure.is_none() {
            self.failure = o.failure;
        }
        self.misidentified.extend(o.misidentified);
    }

    /// Counts a refused sample; whether it should also be described (the first few are).
    pub(crate) fn count_rejection(&mut self) -> bool {
        self.rejected += 1;
        self.rejections.len() < MAX_REPORTED_REJECTIONS
    }

    /// An outcome that acknowledges nothing.
    pub fn failed(f: ApplyFailure) -> Self {
        ApplyOutcome {
            failure: Some(f),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_name_their_series_and_merge_keeps_the_first_few() {
        let labels = [(&b"__name__"[..], &b"up"[..]), (&b"job"[..], &b"a"[..])];
        let r = Rejection::new(Rejected::OutOfOrder { last_t: 20 }, 10, labels.into_iter());
        assert_eq!(
            r.to_string(),
            "out of order sample for series up{job=\"a\"}: timestamp 10 is older than the newest stored 20"
        );
        let mut a = ApplyOutcome::default();
        for _ in 0..4 {
            if a.count_rejection() {
                let r = Rejection::new(Rejected::DuplicateTimestamp, 1, labels.into_iter());
                a.rejections.push(r);
            }
        }
        let mut b = a.clone();
        b.failure = Some(ApplyFailure::Unreachable(1));
        a.merge(b);
        assert_eq!(
            (a.rejected, a.rejections.len()),
            (8, MAX_REPORTED_REJECTIONS)
        );
        assert_eq!(a.failure, Some(ApplyFailure::Unreachable(1)));
    }
}
