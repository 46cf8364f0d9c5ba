//! Criterion benchmark of the pure remote-write decode path: snappy block decompression and
//! `sluice_core::WriteRequestRef::decode` (protobuf parse + label validation), apart and
//! together, on realistic payloads from `sluice_bench::gen`. No HTTP, no storage.
//!
//! Two shapes: 2000 series × 1 sample (Prometheus' default `max_samples_per_send`, the common
//! case of a receiver keeping up) and 500 series × 10 samples (a sender catching up after a
//! backlog, where samples outweigh labels). Each stage is reported twice, once as
//! decompressed bytes/s and once as series/s, because capacity planning asks for both.
//! `protobuf-known` is the steady state of a receiver: every series' label bytes are in the
//! core's `KnownSeries`, so labels are fingerprinted, not parsed or validated.
//!
//! Run: `cargo bench -p sluice-bench --bench decode` (about 35 s; add `-- --quick` for less).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_bench::{encode_snappy, SeriesSet};
use sluice_core::{Identity, KnownSeries, WriteRequestRef};

/// Any fixed seed: the numbers must be comparable run to run.
const SEED: u64 = 0x5EED_0001;
const TS_MS: i64 = 1_760_000_000_000;
const STEP_MS: i64 = 15_000;

struct Payload {
    name: &'static str,
    series: usize,
    /// The request body as it arrives: snappy block format.
    body: Vec<u8>,
    /// The decompressed protobuf, for benchmarking the decoder alone.
    raw: Vec<u8>,
}

fn payloads() -> Vec<Payload> {
    let set = SeriesSet::new(2000, SEED);
    [("2000x1", 2000, 1), ("500x10", 500, 10)]
        .into_iter()
        .map(|(name, series, samples)| {
            let body = encode_snappy(&set.write_request(0..series, TS_MS, samples, STEP_MS));
            let raw = snap::raw::Decoder::new()
                .decompress_vec(&body)
                .expect("generated body decompresses");
            eprintln!(
                "payload {name}: {series} series x {samples} samples, {} B protobuf, {} B snappy \
                 ({:.1}x), {:.0} B/series",
                raw.len(),
                body.len(),
                raw.len() as f64 / body.len() as f64,
                raw.len() as f64 / series as f64,
            );
            Payload {
                name,
                series,
                body,
                raw,
            }
        })
        .collect()
}

fn decode(c: &mut Criterion) {
    for p in payloads() {
        // Reused across iterations like a receiver core reuses them across requests, so the
        // steady state (no allocation) is what gets measured.
        let mut snappy = snap::raw::Decoder::new();
        let mut buf = vec![0u8; snap::raw::decompress_len(&p.body).expect("valid snappy header")];
        let mut req = WriteRequestRef::default();
        req.decode(&p.raw).expect("generated payload is valid");
        assert_eq!(req.series.len(), p.series);
        let mut known = KnownSeries::new();
        let seed = known.tenant_seed(b"default-tenant");
        req.decode_known(&p.raw, &known, seed).expect("valid");
        for i in 0..p.series {
            known.insert(
                req.fingerprint(i).expect("one label run"),
                Identity::default(),
            );
        }

        for (unit, throughput) in [
            ("bytes", Throughput::Bytes(p.raw.len() as u64)),
            ("series", Throughput::Elements(p.series as u64)),
        ] {
            let mut g = c.benchmark_group(format!("decode/{}/{unit}", p.name));
            g.throughput(throughput)
                .sample_size(30)
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(2));

            g.bench_function("snappy", |b| {
                b.iter(|| snappy.decompress(black_box(&p.body), &mut buf).unwrap())
            });
            g.bench_function("protobuf", |b| {
                b.iter(|| req.decode(black_box(&p.raw)).unwrap())
            });
            g.bench_function("protobuf-known", |b| {
                b.iter(|| req.decode_known(black_box(&p.raw), &known, seed).unwrap())
            });
            g.bench_function("snappy+protobuf", |b| {
                b.iter(|| {
                    let n = snappy.decompress(black_box(&p.body), &mut buf).unwrap();
                    req.decode(&buf[..n]).unwrap();
                })
            });
            g.finish();
        }
    }
}

criterion_group!(benches, decode);
criterion_main!(benches);
