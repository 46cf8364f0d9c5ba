//! The crate's error type: why a write is not acknowledged, as a sender sees it, and the one
//! mapping of an append's typed outcome ([`ApplyOutcome`]) to it.
//!
//! Owns the status codes of the write contract (README, "Status codes") and the reason
//! labels of `sluice_remote_write_rejected_requests_total`. Must not format protocol frames:
//! the replication server turns a [`Verdict`] into its own reply.

use hyper::StatusCode;
use sluice_shards::{ApplyFailure, ApplyOutcome, Rejection};

/// A write refused (or failed) with this status, metric reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: StatusCode,
    /// The `reason` label it is counted under.
    pub reason: &'static str,
    pub message: String,
}

impl Reject {
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Reject {
            status,
            reason,
            message: message.into(),
        }
    }
}

/// What an append's outcome means for its sender.
#[derive(Debug)]
pub enum Verdict<'a> {
    /// Every sample is stored (some may have been stored before: repeats).
    Stored,
    /// Some samples were refused (out of order, out of bounds, …); the others are stored.
    SomeRefused {
        count: u64,
        first: Option<&'a Rejection>,
    },
    /// Nothing may be acknowledged: the sender retries the whole request.
    NotDurable(&'a ApplyFailure),
}

impl<'a> Verdict<'a> {
    /// The verdict on `out`.
    pub fn of(out: &'a ApplyOutcome) -> Self {
        if let Some(f) = &out.failure {
            return Verdict::NotDurable(f);
        }
        if out.rejected > 0 {
            return Verdict::SomeRefused {
                count: out.rejected,
                first: out.rejections.first(),
            };
        }
        Verdict::Stored
    }

    /// The first refusal's text, for messages.
    pub fn first_refusal(&self) -> String {
        match self {
            Verdict::SomeRefused { first: Some(r), .. } => r.to_string(),
            _ => String::new(),
        }
    }

    /// What an HTTP sender gets for a request of `samples` samples (`None`: 204).
    pub fn reject(&self, samples: usize) -> Option<Reject> {
        match self {
            Verdict::Stored => None,
            Verdict::SomeRefused { count, .. } => Some(Reject::new(
                StatusCode::CONFLICT,
                "out_of_order",
                format!(
                    "{count} of {samples} samples rejected ({}); the other samples of this request were stored",
                    self.first_refusal()
                ),
            )),
            // Part may be in the WAL, but nothing is acknowledged: the sender retries it all.
            Verdict::NotDurable(f) => Some(Reject::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                format!("write not persisted, retry: {f}"),
            )),
        }
    }
}

pub(crate) fn over_budget(msg: String) -> Reject {
    Reject::new(StatusCode::TOO_MANY_REQUESTS, "memory_budget", msg)
}

pub(crate) fn too_large(len: usize, limit: usize) -> Reject {
    Reject::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("request body of {len} bytes exceeds --max-request-bytes={limit}"),
    )
}

pub(crate) fn bad_snappy(e: &snap::Error) -> Reject {
    Reject::new(
        StatusCode::BAD_REQUEST,
        "bad_snappy",
        format!("body is not valid snappy (block format): {e}"),
    )
}
