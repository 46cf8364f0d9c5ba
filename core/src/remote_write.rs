//! Zero-copy decoders of Prometheus remote write (already snappy-decompressed): 1.0
//! `prometheus.WriteRequest` and 2.0 `io.prometheus.write.v2.Request`, both into one
//! [`WriteRequestRef`].
//!
//! Owns the remote-write protobuf formats and per-series validation, in the order the bytes
//! flow:
//!
//! - `wire` (private): the protobuf wire reader — a cursor over one message, varints,
//!   length-delimited fields, the rules for unknown fields;
//! - `v1` (private) and [`v2`]: the schema walks, each filling the same model;
//! - [`known`]: the known-series cache that lets 1.0 skip parsing labels it has seen;
//! - `validate` (private): the label rules applied to a decoded series, and its rendering in
//!   errors;
//! - `request` (private, re-exported here): the model — [`WriteRequestRef`], [`SeriesRef`],
//!   [`LabelRef`], [`Sample`] — and the [`Grow`] hook that reserves its memory.
//!
//! Label names/values are not copied: they are `(offset, len)` ranges into the caller's buffer.
//! All vectors live in a [`WriteRequestRef`] that a core reuses request after request, so
//! steady-state decoding allocates nothing. Must not touch snappy, HTTP or storage.

pub mod known;
mod request;
mod v1;
pub mod v2;
mod validate;
mod wire;

#[cfg(test)]
mod tests;

pub use request::{Grow, KeyBytes, LabelFields, LabelRef, Sample, SeriesRef, WriteRequestRef};
pub use v1::LabelBytesIter;

/// Why a request could not be decoded. Each message names what was wrong and where.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum DecodeError {
    /// The bytes are not a well-formed `WriteRequest` (truncation, bad varint, wrong wire type,
    /// groups, oversized buffer). The message names the field and the byte offset.
    #[error("malformed protobuf: {0}")]
    Protobuf(String),
    /// A series is well-formed protobuf but its label set breaks the rules of
    /// [`crate::labels`]. `index` counts series in wire order from 0.
    #[error("invalid series #{index} {series}: {source}")]
    InvalidSeries {
        /// Position of the series in the request, from 0.
        index: usize,
        /// The series rendered PromQL-style (lossily if it was not UTF-8).
        series: String,
        /// The broken rule.
        source: crate::labels::LabelError,
    },
    /// A series carries native histograms, which Sluice cannot store yet; the request is
    /// rejected rather than silently dropping data.
    #[error("series #{index} {series}: native histograms are not supported yet")]
    NativeHistogram {
        /// Position of the series in the request, from 0.
        index: usize,
        /// The series rendered PromQL-style (lossily if it was not UTF-8).
        series: String,
    },
    /// The memory for the decoded request was not granted (see [`Grow`]); the reason says
    /// why.
    #[error("{0}")]
    Memory(String),
    /// A remote write 2.0 request whose symbol table or label references are unusable: the
    /// table does not start with "", a series has an odd number of label references, or a
    /// reference points past the table. The message names the series and the reference.
    #[error("invalid symbol reference: {0}")]
    SymbolRef(String),
}
