//! Sluice core: the pieces every other crate shares and that touch no I/O.
//!
//! Owns label validation, the portable series hash, core placement, the Thanos hashring
//! (file format and series placement), the zero-copy remote-write decoders (1.0 and 2.0) and the Prometheus
//! duration syntax. Must not depend on a runtime, a file or a socket: everything here is a
//! pure function over bytes.

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
