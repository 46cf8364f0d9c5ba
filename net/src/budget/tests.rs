use super::need::{self, Route, Shape};
use super::*;

use sluice_core::{KnownSeries, V2Decoder, WriteRequestRef};
use sluice_shards::batch::{OwnedBatch, SeriesBatch};
use sluice_shards::SeriesKeys;

use crate::rpc::frame::WriteEncoder;

#[test]
fn sizes() {
    assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
    assert_eq!(parse_bytes("2GB"), Ok(2 << 30));
    assert_eq!(parse_bytes("1000"), Ok(1000));
    assert!(parse_bytes("x").is_err());
    assert!(parse_bytes("5 parsecs").is_err());
}

#[test]
fn reservations_are_refused_over_the_limits_and_returned_on_drop() {
    let b = Arc::new(MemoryBudget {
        limit: 1000,
        inflight_limit: 600,
        ..MemoryBudget::default()
    });
    b.rss.store(400, Ordering::Relaxed);
    // Alone, a request larger than the in-flight limit is admitted, and grows as it needs.
    let mut alone = b.try_reserve(700).unwrap();
    assert!(alone.grow_to(900).is_ok());
    drop(alone);
    let mut p = b.try_reserve(300).unwrap();
    assert!(b.try_reserve(301).is_err());
    assert!(p.grow_to(600).is_ok());
    assert!(b.try_reserve(1).is_err());
    assert_eq!(b.reserved(), 600);
    // A worst case replaced by the real figure frees room for others at once.
    assert!(p.resize(250).is_ok());
    assert_eq!((p.bytes(), b.reserved()), (250, 250));
    let q = b.try_reserve(350).unwrap();
    assert!(
        p.resize(251).is_err(),
        "growing again is admitted like any growth"
    );
    assert_eq!(p.bytes(), 250);
    drop(q);
    drop(p);
    assert_eq!(b.reserved(), 0);
    assert_eq!(b.refused.load(Ordering::Relaxed), 3);
    b.rss.store(1000, Ordering::Relaxed);
    assert!(b.try_reserve(1).unwrap_err().contains("resident"));
    let off = Arc::new(MemoryBudget::default());
    assert!(off.try_reserve(u64::MAX / 2).is_ok());
}

// ---------------------------------------------------------------------------------------------
// What decoding and routing really allocate, against what is reserved for them.
// ---------------------------------------------------------------------------------------------

/// Counts this thread's live heap bytes and their peak, so other tests running in parallel
/// do not disturb the figures.
mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn add(d: isize) {
        let _ = LIVE.try_with(|l| {
            let v = l.get() + d;
            l.set(v);
            let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
        });
    }

    struct Counting;

    // SAFETY: forwards to the system allocator unchanged; only counts bytes.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            add(layout.size() as isize);
            System.alloc(layout)
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            add(layout.size() as isize);
            System.alloc_zeroed(layout)
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            add(-(layout.size() as isize));
            System.dealloc(ptr, layout)
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            add(new_size as isize - layout.size() as isize);
            System.realloc(ptr, layout, new_size)
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Starts a measurement: the peak restarts from what is live now.
    pub fn start() -> isize {
        let live = LIVE.with(|l| l.get());
        PEAK.with(|p| p.set(live));
        live
    }

    /// Bytes allocated above `base` at the peak since [`start`].
    pub fn peak_above(base: isize) -> u64 {
        PEAK.with(|p| p.get() - base).max(0) as u64
    }

    /// Bytes live above `base` now.
    pub fn live_above(base: isize) -> u64 {
        LIVE.with(|l| l.get() - base).max(0) as u64
    }
}

/// Appends a varint.
fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited field.
fn field(out: &mut Vec<u8>, number: u64, body: &[u8]) {
    varint(out, number << 3 | 2);
    varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// A 1.0 `Label`.
fn label(name: &str, value: &str) -> Vec<u8> {
    let mut l = Vec::new();
    field(&mut l, 1, name.as_bytes());
    field(&mut l, 2, value.as_bytes());
    l
}

/// A `Sample` with these fields (both absent: the smallest sample, 0 at 0).
fn sample(t: i64, v: f64) -> Vec<u8> {
    let mut s = Vec::new();
    if v != 0.0 {
        s.push(0x09);
        s.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    if t != 0 {
        s.push(0x10);
        varint(&mut s, t as u64);
    }
    s
}

/// A 1.0 `TimeSeries` with these labels and samples.
fn series_v1(labels: &[(&str, &str)], samples: &[Vec<u8>]) -> Vec<u8> {
    let mut ts = Vec::new();
    for (n, v) in labels {
        field(&mut ts, 1, &label(n, v));
    }
    for s in samples {
        field(&mut ts, 2, s);
    }
    ts
}

/// A 1.0 request of these series.
fn request_v1(series: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for s in series {
        field(&mut out, 1, &s);
    }
    out
}

/// A 2.0 request: the symbol table, then series of `(label refs, samples)`.
fn request_v2(
    symbols: &[&str],
    series: impl IntoIterator<Item = (Vec<u64>, Vec<Vec<u8>>)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    for s in symbols {
        field(&mut out, 4, s.as_bytes());
    }
    for (refs, samples) in series {
        let mut ts = Vec::new();
        let mut packed = Vec::new();
        for r in refs {
            varint(&mut packed, r);
        }
        field(&mut ts, 1, &packed);
        for s in samples {
            field(&mut ts, 2, &s);
        }
        field(&mut out, 5, &ts);
    }
    out
}

/// Entries that make every vector just pass a doubling: the worst case of its slack.
const PAST_DOUBLING: usize = (1 << 15) + 1;

/// Labels of a node_exporter-like series `i`, sorted.
fn prometheus_labels(i: usize) -> Vec<(String, String)> {
    vec![
        (
            "__name__".into(),
            format!("node_cpu_seconds_total_{}", i % 50),
        ),
        ("cluster".into(), "eu-west-1-prod".into()),
        ("cpu".into(), (i % 64).to_string()),
        ("env".into(), "production".into()),
        (
            "instance".into(),
            format!("10.0.{}.{}:9100", i / 256 % 256, i % 256),
        ),
        ("job".into(), "node-exporter".into()),
        ("mode".into(), "idle".into()),
        ("namespace".into(), "monitoring".into()),
        (
            "pod".into(),
            format!("node-exporter-{:05x}", i * 7919 % 100_000),
        ),
        ("region".into(), "eu-west-1".into()),
    ]
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Decoder {
    V1,
    /// 1.0 with the core's known series, first with an empty table, then a taught one.
    V1Known,
    V2,
}

struct Case {
    name: &'static str,
    decoder: Decoder,
    payload: Vec<u8>,
    /// Whether the payload is valid.
    valid: bool,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let tiny = || sample(0, 0.0);
    // 1.0: the smallest samples in one series.
    let many_samples = request_v1([series_v1(
        &[("__name__", "a")],
        &vec![tiny(); PAST_DOUBLING],
    )]);
    for decoder in [Decoder::V1, Decoder::V1Known] {
        cases.push(Case {
            name: "1.0 one series, 2-byte samples",
            decoder,
            payload: many_samples.clone(),
            valid: true,
        });
    }
    // 1.0: one-sample series with the smallest valid labels.
    let one_sample =
        request_v1((0..PAST_DOUBLING).map(|_| series_v1(&[("__name__", "a")], &[tiny()])));
    for decoder in [Decoder::V1, Decoder::V1Known] {
        cases.push(Case {
            name: "1.0 one-sample series, minimal labels",
            decoder,
            payload: one_sample.clone(),
            valid: true,
        });
    }
    // 1.0: empty labels (refused once the series ends).
    let mut empty_labels = series_v1(&[("__name__", "a")], &[]);
    for _ in 0..PAST_DOUBLING {
        field(&mut empty_labels, 1, &[]);
    }
    cases.push(Case {
        name: "1.0 2-byte empty labels (invalid)",
        decoder: Decoder::V1,
        payload: request_v1([empty_labels]),
        valid: false,
    });
    // 1.0: empty series, what the known-series scan would keep 80 bytes for each.
    cases.push(Case {
        name: "1.0 2-byte empty series (invalid)",
        decoder: Decoder::V1Known,
        payload: request_v1((0..PAST_DOUBLING).map(|_| Vec::new())),
        valid: false,
    });
    // 2.0: one-sample series (8 bytes each), one label pair from the symbol table.
    cases.push(Case {
        name: "2.0 one-sample series, shared symbols",
        decoder: Decoder::V2,
        payload: request_v2(
            &["", "__name__", "a"],
            (0..PAST_DOUBLING).map(|_| (vec![1, 2], vec![tiny()])),
        ),
        valid: true,
    });
    // 2.0: one series of 1-byte label references (refused: duplicate names).
    cases.push(Case {
        name: "2.0 1-byte label refs (invalid)",
        decoder: Decoder::V2,
        payload: request_v2(
            &["", "__name__", "a"],
            [([1, 2].repeat(PAST_DOUBLING), vec![])],
        ),
        valid: false,
    });
    // 2.0: the smallest samples in one series.
    cases.push(Case {
        name: "2.0 one series, 2-byte samples",
        decoder: Decoder::V2,
        payload: request_v2(
            &["", "__name__", "a"],
            [(vec![1, 2], vec![tiny(); PAST_DOUBLING])],
        ),
        valid: true,
    });
    // 2.0: every series refers to one long value: keys far larger than the payload.
    let long = "x".repeat(1000);
    cases.push(Case {
        name: "2.0 shared 1000-byte label value",
        decoder: Decoder::V2,
        payload: request_v2(
            &["", "__name__", &long],
            (0..4096).map(|_| (vec![1, 2], vec![tiny()])),
        ),
        valid: true,
    });
    // What Prometheus sends: ~10 labels and one sample per series.
    let t0 = 1_700_000_000_000i64;
    let prom: Vec<_> = (0..2000).map(prometheus_labels).collect();
    let prom_v1 = request_v1(prom.iter().enumerate().map(|(i, l)| {
        let l: Vec<(&str, &str)> = l.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        series_v1(&l, &[sample(t0, i as f64 * 0.5)])
    }));
    for decoder in [Decoder::V1, Decoder::V1Known] {
        cases.push(Case {
            name: "1.0 Prometheus-like (10 labels, 1 sample)",
            decoder,
            payload: prom_v1.clone(),
            valid: true,
        });
    }
    let mut symbols: Vec<String> = vec![String::new()];
    let mut refs_of = |s: &str| match symbols.iter().position(|x| x == s) {
        Some(i) => i as u64,
        None => {
            symbols.push(s.to_string());
            symbols.len() as u64 - 1
        }
    };
    let prom_series: Vec<_> = prom
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let refs = l
                .iter()
                .flat_map(|(n, v)| [refs_of(n), refs_of(v)])
                .collect();
            (refs, vec![sample(t0, i as f64 * 0.5)])
        })
        .collect();
    let symbols: Vec<&str> = symbols.iter().map(String::as_str).collect();
    cases.push(Case {
        name: "2.0 Prometheus-like (10 labels, 1 sample)",
        decoder: Decoder::V2,
        payload: request_v2(&symbols, prom_series),
        valid: true,
    });
    cases
}

/// Decodes `c` as a core would (the known-series case with a table taught by a first
/// decode), into fresh buffers: returns the peak of what decoding allocated, what it asked to
/// grow by (what the budget reserves), whether it succeeded, and the decoded request.
fn decode_case(c: &Case) -> (u64, u64, bool, WriteRequestRef) {
    let mut req = WriteRequestRef::default();
    let mut v2 = V2Decoder::default();
    let mut known = KnownSeries::new();
    let seed = known.tenant_seed(b"t");
    if c.decoder == Decoder::V1Known && c.valid {
        // Teach the table, then measure a fresh request against it: the steady state.
        let mut first = WriteRequestRef::default();
        first.decode_known(&c.payload, &known, seed).unwrap();
        let mut keys = SeriesKeys::default();
        keys.compute("t", &first, &c.payload, Some(&mut known));
    }
    let mut asked = 0u64;
    let mut grow = |n: usize| {
        asked += n as u64;
        Ok(())
    };
    let base = alloc_count::start();
    let ok = match c.decoder {
        Decoder::V1 => req.decode_within(&c.payload, &mut grow).is_ok(),
        Decoder::V1Known => req
            .decode_known_within(&c.payload, &known, seed, &mut grow)
            .is_ok(),
        Decoder::V2 => v2.decode_within(&c.payload, &mut req, &mut grow).is_ok(),
    };
    let peak = alloc_count::peak_above(base);
    // Every vector's growth was asked for: what stays allocated is what was reserved.
    assert_eq!(
        alloc_count::live_above(base),
        asked,
        "{} ({:?})",
        c.name,
        c.decoder
    );
    (peak, asked, ok, req)
}

/// Routes a decoded request as a cluster member of `cores` cores would in the worst case:
/// keys and hashes, every series copied to another core, and every series in the frames of
/// `replicas` peers. Returns the peak of what that allocated.
fn route_case(payload: &[u8], req: &WriteRequestRef, replicas: usize) -> u64 {
    let base = alloc_count::start();
    let mut keys = SeriesKeys::default();
    keys.compute("t", req, payload, None);
    let batch = keys.batch(req, payload);
    let mut key = Vec::new();
    let mut local = Vec::new();
    let mut replica_lists: Vec<u16> = Vec::new();
    let mut other_core = OwnedBatch::default();
    let mut frames: Vec<(Vec<u8>, WriteEncoder)> = (0..replicas)
        .map(|r| {
            let mut buf = Vec::new();
            let enc = WriteEncoder::begin(&mut buf, r as u64, "t");
            (buf, enc)
        })
        .collect();
    for i in 0..batch.len() {
        local.push(i as u32);
        for (r, (buf, enc)) in frames.iter_mut().enumerate() {
            replica_lists.push(r as u16);
            enc.push(
                buf,
                batch.key(i, &mut key),
                req.series_samples(&req.series[i]),
            );
        }
        other_core.push(batch.hash(i), batch.key(i, &mut key), batch.samples(i));
    }
    for (mut buf, enc) in frames {
        enc.finish(&mut buf);
    }
    alloc_count::peak_above(base)
}

/// The figures in the module documentation: every crafted worst case and two ordinary
/// requests, decoded and routed with a counting allocator. Decoding asks for exactly what it
/// allocates and stays within [`need::decoding`], the worst case, which it reaches (the bound is
/// not loose); an ordinary request is far below it. Routing stays within what
/// [`need::routing`] and `SeriesKeys::bytes_for` reserve for it.
#[test]
fn worst_case_payloads_stay_within_the_reservation() {
    let replicas = 3;
    let mut worst = 0f64;
    println!("| payload | P bytes | decode peak / P | routing peak / P (R={replicas}, 2 cores) |");
    for c in cases() {
        let p = c.payload.len();
        let (decode_peak, asked, ok, req) = decode_case(&c);
        assert_eq!(ok, c.valid, "{}", c.name);
        let decode_bound = need::decoding(p) - p as u64;
        assert!(
            decode_peak <= decode_bound && asked <= decode_bound,
            "{} ({:?}): decoding {p} bytes allocated {decode_peak} (asked {asked}), over the \
             {decode_bound} of the worst case",
            c.name,
            c.decoder
        );
        let ratio = decode_peak as f64 / p as f64;
        worst = worst.max(ratio);
        let mut routing = String::from("-");
        if ok {
            let peak = route_case(&c.payload, &req, replicas);
            let shape = Shape {
                series: req.series.len(),
                samples: req.samples.len(),
                keys: req.key_bytes(),
            };
            // A cluster node computes keys for every series (no known series), into fresh
            // buffers: the worst.
            let bound = SeriesKeys::bytes_for(shape.series, shape.keys.parsed) as u64
                + need::routing(
                    &shape,
                    &Route {
                        cores: 2,
                        replicas,
                        forward_body: 0,
                    },
                );
            assert!(
                peak <= bound,
                "{} ({:?}): routing allocated {peak}, over the {bound} reserved",
                c.name,
                c.decoder
            );
            routing = format!("{:.2}", peak as f64 / p as f64);
        }
        println!(
            "| {} ({:?}) | {p} | {ratio:.2} | {routing} |",
            c.name, c.decoder
        );
        if c.name.contains("Prometheus-like") {
            // Far below the worst case: 2.0 packs a label into 2-3 bytes of references, so
            // its ordinary requests expand most.
            assert!(
                ratio < need::DECODE_PER_PAYLOAD_BYTE as f64 / 3.0,
                "{}: an ordinary request decodes to {ratio:.2}x",
                c.name
            );
        }
    }
    // The bound is what the worst case really takes, not a guess far above it.
    assert!(
        worst > need::DECODE_PER_PAYLOAD_BYTE as f64 * 0.9,
        "worst case {worst:.2}x: the 16x bound no longer describes the decoder"
    );
}
