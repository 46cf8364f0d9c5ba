//! Criterion benchmarks of the ingest steps after decoding, each alone, on realistic series:
//! series hash + core routing, head append into existing series (lookup + XOR append), XOR
//! chunk encoding, and WAL samples-record encoding. Together with `decode` they bound what one
//! core can ingest; `bench/RESULTS.md` compares their sum with the end-to-end flood figure.
//!
//! Run: `cargo bench -p sluice-bench --bench ingest`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_bench::SeriesSet;
use sluice_core::{core_for_hash, put_series_key, TenantHasher};
use sluice_shards::Head;
use sluice_storage::wal::record;
use sluice_storage::xor::XorChunk;

const SEED: u64 = 0x5EED_0001;
const SERIES: usize = 2000;
const T0: i64 = 1_760_000_000_000;
const STEP: i64 = 15_000;

fn label_bytes(l: &[(String, String)]) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
    l.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
}

fn ingest(c: &mut Criterion) {
    let set = SeriesSet::new(SERIES, SEED);
    let mut g = c.benchmark_group("ingest");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(SERIES as u64));

    let hasher = TenantHasher::new(b"default-tenant");
    g.bench_function("key+hash+route/2000 series", |b| {
        let mut keys = Vec::new();
        b.iter(|| {
            keys.clear();
            let mut acc = 0usize;
            for i in 0..SERIES {
                let start = keys.len();
                put_series_key(&mut keys, label_bytes(set.labels(i)));
                acc += core_for_hash(hasher.hash_key(&keys[start..]), 4);
            }
            black_box(acc)
        })
    });

    g.bench_function("head append/2000 existing series", |b| {
        let keys: Vec<Vec<u8>> = (0..SERIES)
            .map(|i| {
                let mut k = Vec::new();
                put_series_key(&mut k, label_bytes(set.labels(i)));
                k
            })
            .collect();
        let hashes: Vec<u64> = keys.iter().map(|k| hasher.hash_key(k)).collect();
        let mut head = Head::new();
        for (i, h) in hashes.iter().enumerate() {
            let id = head.create(*h, &keys[i]);
            head.append(id, T0, 0.0).expect("first sample");
        }
        let mut round = 1i64;
        b.iter(|| {
            let t = T0 + round * STEP;
            for (i, h) in hashes.iter().enumerate() {
                let id = head.find(*h, &keys[i]).expect("series exists");
                let _ = black_box(head.append(id, t, set.value(i, t)));
            }
            round += 1;
        })
    });

    g.throughput(Throughput::Elements(120));
    g.bench_function("xor encode/120 samples", |b| {
        let values: Vec<f64> = (0..120).map(|k| set.value(0, T0 + k * STEP)).collect();
        b.iter(|| {
            let mut c = XorChunk::new();
            for (k, v) in values.iter().enumerate() {
                c.append(T0 + k as i64 * STEP, *v);
            }
            black_box(c.bytes().len())
        })
    });

    g.throughput(Throughput::Elements(SERIES as u64));
    g.bench_function("wal samples record/2000 samples", |b| {
        let mut buf = Vec::with_capacity(64 * 1024);
        b.iter(|| {
            buf.clear();
            let s = record::begin_record(&mut buf, record::RecordType::Samples);
            record::put_samples_base(&mut buf, T0);
            for i in 0..SERIES {
                record::put_sample(&mut buf, T0, i as u32, T0, i as f64);
            }
            black_box(record::end_record(&mut buf, s))
        })
    });
    g.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
