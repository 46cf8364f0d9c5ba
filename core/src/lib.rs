//! Sluice core: what every other crate shares about series, as data and pure functions.
//!
//! A write arrives as a remote-write body: core decodes it into series whose labels follow
//! Prometheus' rules, hashes each series into an identity that is stable across machines and
//! restarts, and says which core of this node and which nodes of the hashring own it. A read
//! arrives as label matchers: core says which label values they select. `sluice-storage`,
//! `sluice-shards`, `sluice-net` and `sluice-promql` build on these types; nothing here
//! depends on them.
//!
//! Owns the formats and rules those steps read (remote write 1.0 and 2.0, the Thanos
//! hashrings and limits files, label rules, the series key and hash, Prometheus' duration
//! syntax and stale marker). Must not depend on a runtime, a file or a socket: everything
//! here is a pure function over bytes, so the callers decide where and when it runs.
//!
//! The main types, in the order data flows through them:
//!
//! - [`WriteRequestRef`]: a decoded remote-write request, ranges into the caller's buffer
//!   (1.0 by [`WriteRequestRef::decode`], 2.0 by [`V2Decoder`]); [`DecodeError`] says why a
//!   body was refused, and [`KnownSeries`] lets a core skip parsing the labels of series it
//!   has seen.
//! - [`labels`]: the label rules ([`LabelError`]) and [`METRIC_NAME`].
//! - [`Identity`] and [`series_hash`]: a series' portable hash over its key
//!   ([`put_series_key`]); [`core_for_hash`] picks the core that owns it.
//! - [`Hashrings`] and [`Hashring`]: the Thanos hashrings file and the endpoints that
//!   receive a series.
//! - [`limits::Limits`]: the per-tenant write limits file.
//! - [`Matcher`] and [`MatchOp`]: a label matcher with Prometheus semantics, the one every
//!   read path (PromQL, the series API, remote read, heads and blocks) uses.
//! - [`parse_duration`] and [`parse_duration_or_seconds`]: Prometheus' duration syntax, for
//!   flags and for API parameters.
//! - [`STALE_NAN_BITS`] and [`is_stale`]: Prometheus' stale marker.

pub mod duration;
pub mod hash;
pub mod hashring;
pub mod labels;
pub mod limits;
pub mod matcher;
pub mod prefetch;
pub mod remote_write;
pub mod stale;

pub use duration::{
    format_duration, parse_duration, parse_duration_or_seconds, DurationError, DurationParamError,
};
pub use hash::{
    check_hash, core_for_hash, key_labels, put_hashed_series_key, put_series_key, series_hash,
    Identity, KeyLabels, TenantHasher,
};
pub use hashring::{
    Algorithm, Endpoint, Hashring, HashringError, Hashrings, RingId, TenantMatcher,
    UnknownAlgorithm, SECTIONS_PER_NODE,
};
pub use labels::{LabelError, METRIC_NAME};
pub use matcher::{MatchOp, Matcher, MatcherError};
pub use remote_write::known::{Fingerprint, KnownSeries};
pub use remote_write::v2::{V2Counts, V2Decoder};
pub use remote_write::{
    DecodeError, Grow, KeyBytes, LabelBytesIter, LabelRef, Sample, SeriesRef, WriteRequestRef,
};
pub use stale::{is_stale, STALE_NAN_BITS};
