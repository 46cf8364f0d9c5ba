//! Why a query failed, in the classes Prometheus' API distinguishes (`bad_data`,
//! `execution`, `timeout`). Owns the error messages clients see.

/// A query that could not be answered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The query or its parameters are malformed (Prometheus: `bad_data`, HTTP 400).
    #[error("{0}")]
    BadData(String),
    /// Evaluation failed on this data, e.g. many-to-many matching (`execution`, HTTP 422).
    #[error("{0}")]
    Execution(String),
    /// The sample limit was hit (`execution`, HTTP 422), worded as Prometheus words it.
    #[error("query processing would load too many samples into memory in {0}")]
    TooManySamples(&'static str),
    /// The deadline passed (`timeout`, HTTP 503).
    #[error("query timed out in {0}")]
    Timeout(&'static str),
}

/// A selector's regex that does not compile is the client's mistake; the message quotes it.
impl From<sluice_core::MatcherError> for Error {
    fn from(e: sluice_core::MatcherError) -> Self {
        Error::BadData(e.to_string())
    }
}

impl Error {
    /// Prometheus' `errorType` for this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::BadData(_) => "bad_data",
            Error::Execution(_) | Error::TooManySamples(_) => "execution",
            Error::Timeout(_) => "timeout",
        }
    }
}

pub(crate) fn exec<T>(msg: impl Into<String>) -> Result<T, Error> {
    Err(Error::Execution(msg.into()))
}
