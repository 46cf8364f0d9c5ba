//! PromQL evaluation with Prometheus' semantics, independent of storage.
//!
//! The query API (`/api/v1/query`, `/api/v1/query_range`) hands this crate a query's text
//! and times; it answers which series to read, and then, given them, the query's value. A
//! query is parsed (promql-parser), asked which selectors it reads over which time ranges
//! ([`Query::requests`]), handed the series the caller fetched ([`Fetched`]), and evaluated
//! synchronously ([`Query::exec`]). Keeping reads out of evaluation keeps the engine pure and
//! testable and lets the caller fetch from every core concurrently.
//!
//! Owns PromQL's semantics: lookback and staleness, functions, aggregations, binary operators
//! and vector matching, its limits ([`EngineOptions`]: samples held, timeout), and the
//! `bad_data`/`execution`/`timeout` errors clients see. Must not read storage or spawn threads:
//! the caller fetches, and picks the thread evaluation runs on (see [`depth`]).
//!
//! The main types, in the order a query uses them:
//!
//! - [`Query`]: a parsed instant ([`Query::instant`]) or range ([`Query::range`]) query,
//!   limited by [`EngineOptions`].
//! - [`SelectorRequest`]: one read the caller must do first, with its
//!   [`sluice_core::Matcher`]s and time range; [`Fetched`] carries the [`Series`] read back.
//! - [`QueryValue`]: the answer (scalar, string, vector of [`Sample`]s or matrix of
//!   [`RangeSeries`]), each series identified by its [`Labels`].
//! - [`Error`]: why a query failed, in the classes Prometheus' API distinguishes.
//! - [`depth`]: how deeply a query may nest, and the stack evaluating it needs.

mod aggregate;
mod binary;
pub mod depth;
mod error;
mod eval;
mod functions;
mod plan;
mod types;

pub use error::Error;
pub use eval::{EngineOptions, Query};
pub use plan::{selector_matchers, Fetched, SelectorKey, SelectorRequest};
pub use types::{compare_labels, Labels, QueryValue, RangeSeries, Sample, Series};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz_tests;
