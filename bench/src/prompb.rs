//! Prometheus remote-write 1.0 messages (`prometheus/prompb` `remote.proto` / `types.proto`) as
//! prost structs, and their encoding into request bodies.
//!
//! Owns the *sending* side of the wire format for tests, benchmarks and the load generator.
//! Sluice itself decodes with the hand-written zero-copy decoder in `sluice_core`; encoding here
//! with prost, an independent implementation, means a shared misreading of the schema cannot
//! hide a bug. Hand-written with `#[derive(prost::Message)]` so no `protoc`/`prost-build` is
//! needed to build. Native histograms (`TimeSeries.histograms = 4`) are left out of the 1.0
//! messages: Sluice rejects them, and nothing here needs to send them. The 2.0 messages
//! (`io.prometheus.write.v2`) are in [`v2`].

use prost::Message as _;

/// `prometheus.WriteRequest`. Field 2 is reserved upstream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series, each with its samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Metric metadata; Prometheus sends it in requests of its own.
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`, without native histograms.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Sorted by name, `__name__` included, as Prometheus sends them.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// In timestamp order.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Exemplars attached to the samples.
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Label {
    /// Label name, `[a-zA-Z_][a-zA-Z0-9_]*` (or `__name__`).
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value, any non-empty UTF-8.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.Exemplar`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    /// Exemplar labels, typically `trace_id`.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// The observed value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    /// A [`MetricType`] value; an `int32` enum on the wire.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// The metric family, e.g. `node_cpu_seconds_total`.
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// The `# HELP` text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// The unit, often empty.
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// `prometheus.MetricMetadata.MetricType`, the values of `MetricMetadata.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum MetricType {
    /// Type not known.
    Unknown = 0,
    /// Monotonic counter.
    Counter = 1,
    /// Gauge.
    Gauge = 2,
    /// Classic histogram.
    Histogram = 3,
    /// Classic gauge histogram.
    GaugeHistogram = 4,
    /// Summary.
    Summary = 5,
    /// Info metric.
    Info = 6,
    /// State set.
    Stateset = 7,
}

/// The protobuf encoding of `req`, uncompressed: what the decoder sees after snappy.
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    req.encode_to_vec()
}

/// A request body as Prometheus sends it: protobuf compressed with snappy's *block* format
/// (`Content-Encoding: snappy`), not the framed/stream format.
pub fn encode_snappy(req: &WriteRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&encode(req))
        // Only fails for inputs over ~4 GiB, far beyond any request this crate builds.
        .expect("snappy compression of a remote-write request")
}

/// Remote write 2.0 messages (`io.prometheus.write.v2`, prometheus
/// `prompb/io/prometheus/write/v2/types.proto`), for tests that send 2.0 requests. Native
/// histograms are a subset (enough to put real histogram bytes on the wire: Sluice rejects
/// them); everything else is complete.
pub mod v2 {
    use prost::Message as _;

    /// `io.prometheus.write.v2.Request`. Fields 1 to 3 are reserved upstream.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        /// The symbol table; must start with "". Label names and values, help texts and units
        /// are indexes into it.
        #[prost(string, repeated, tag = "4")]
        pub symbols: Vec<String>,
        /// The series.
        #[prost(message, repeated, tag = "5")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// `io.prometheus.write.v2.TimeSeries`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Name/value pairs of indexes into `Request.symbols`, sorted by name.
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        /// Float samples, oldest first.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        /// Native histogram samples (a series carries samples or histograms, not both).
        #[prost(message, repeated, tag = "3")]
        pub histograms: Vec<Histogram>,
        /// Exemplars of the samples.
        #[prost(message, repeated, tag = "4")]
        pub exemplars: Vec<Exemplar>,
        /// Type, help and unit of the series.
        #[prost(message, optional, tag = "5")]
        pub metadata: Option<Metadata>,
        /// When the counter started, ms; 0 = not set (spec rc.3).
        #[prost(int64, tag = "6")]
        pub created_timestamp: i64,
    }

    /// `io.prometheus.write.v2.Sample`.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Sample {
        /// The value.
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Milliseconds since the Unix epoch.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    /// `io.prometheus.write.v2.Exemplar`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Exemplar {
        /// Name/value pairs of indexes into `Request.symbols`, e.g. `trace_id`.
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        /// The observed value.
        #[prost(double, tag = "2")]
        pub value: f64,
        /// Milliseconds since the Unix epoch.
        #[prost(int64, tag = "3")]
        pub timestamp: i64,
    }

    /// `io.prometheus.write.v2.Metadata`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metadata {
        /// A `MetricType` value (same numbers as [`super::MetricType`]).
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        /// Index of the help text in `Request.symbols` (0: none).
        #[prost(uint32, tag = "3")]
        pub help_ref: u32,
        /// Index of the unit in `Request.symbols` (0: none).
        #[prost(uint32, tag = "4")]
        pub unit_ref: u32,
    }

    /// A subset of `io.prometheus.write.v2.Histogram`: an integer histogram with no buckets.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        /// Count of observations (`count_int` of the `count` oneof).
        #[prost(uint64, tag = "1")]
        pub count_int: u64,
        /// Sum of observations.
        #[prost(double, tag = "3")]
        pub sum: f64,
        /// Bucket schema.
        #[prost(sint32, tag = "4")]
        pub schema: i32,
        /// Milliseconds since the Unix epoch.
        #[prost(int64, tag = "15")]
        pub timestamp: i64,
    }

    /// Builds a symbol table that starts with "" and holds every string once.
    #[derive(Debug, Clone)]
    pub struct SymbolTable {
        symbols: Vec<String>,
        index: std::collections::HashMap<String, u32>,
    }

    impl Default for SymbolTable {
        fn default() -> Self {
            SymbolTable {
                symbols: vec![String::new()],
                index: [(String::new(), 0)].into_iter().collect(),
            }
        }
    }

    impl SymbolTable {
        /// The index of `s`, added if new.
        pub fn symbolize(&mut self, s: &str) -> u32 {
            if let Some(&i) = self.index.get(s) {
                return i;
            }
            let i = self.symbols.len() as u32;
            self.symbols.push(s.to_string());
            self.index.insert(s.to_string(), i);
            i
        }

        /// `labels_refs` for name/value pairs (give them sorted by name).
        pub fn refs<'a>(
            &mut self,
            labels: impl IntoIterator<Item = (&'a str, &'a str)>,
        ) -> Vec<u32> {
            labels
                .into_iter()
                .flat_map(|(n, v)| [self.symbolize(n), self.symbolize(v)])
                .collect()
        }

        /// The table, for `Request.symbols`.
        pub fn into_symbols(self) -> Vec<String> {
            self.symbols
        }
    }

    /// A request body as a 2.0 sender sends it: snappy block format.
    pub fn encode_snappy(req: &Request) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            // Only fails for inputs over ~4 GiB, far beyond any request this crate builds.
            .expect("snappy compression of a remote-write 2.0 request")
    }

    /// `Content-Type` of a 2.0 request.
    pub const CONTENT_TYPE: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snappy_body_is_block_format_and_round_trips() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1_700_000_000_000,
                }],
                exemplars: vec![],
            }],
            metadata: vec![],
        };
        let body = encode_snappy(&req);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert_eq!(raw, encode(&req));
        assert_eq!(WriteRequest::decode(raw.as_slice()).unwrap(), req);
    }
}
