//! PromQL evaluation with Prometheus' semantics, independent of storage.
//!
//! A query is parsed (promql-parser), asked which selectors it reads over which time ranges
//! ([`Query::requests`]), handed the series the caller fetched ([`Fetched`]), and evaluated
//! synchronously ([`Query::exec`]). Keeping reads out of evaluation keeps the engine pure and
//! testable and lets the caller fetch from every core concurrently.

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
