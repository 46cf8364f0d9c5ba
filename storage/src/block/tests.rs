//! Block writer tests: layout and round trips through the block reader (`reader.rs`), input
//! refusal, and the real check — Prometheus' own `promtool` (Debian package `prometheus`,
//! 2.42) reading a block we wrote and returning exactly the samples we put in.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use ulid::Ulid;

use super::reader::BlockReader;
use super::*;
use crate::xor::{XorChunk, XorIter};

const SAMPLES_PER_CHUNK: usize = 120;

/// A series' labels and its raw samples.
pub(super) type TestSeries = (Vec<(String, String)>, Vec<(i64, f64)>);

pub(super) fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

pub(super) fn ext_labels() -> BTreeMap<String, String> {
    [("receive_replica", "r0"), ("tenant_id", "default-tenant")]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Cuts samples into XOR chunks of at most 120 samples.
pub(super) fn to_chunks(samples: &[(i64, f64)]) -> Vec<BlockChunk> {
    samples
        .chunks(SAMPLES_PER_CHUNK)
        .map(|part| {
            let mut c = XorChunk::new();
            for &(t, v) in part {
                c.append(t, v);
            }
            BlockChunk {
                min_time: part[0].0,
                max_time: part[part.len() - 1].0,
                data: c.bytes().to_vec(),
            }
        })
        .collect()
}

/// Deterministic test data: `n` series with 1..=~400 samples each (so single-sample series,
/// partial and several full chunks), jittered 15 s timestamps, assorted values including
/// ±Inf, NaN and -0, label values that need quoting, and label sets that are prefixes of
/// others. Returns the series in a scrambled order (write_block must sort).
pub(super) fn test_series(n: usize) -> Vec<TestSeries> {
    let base = 1_700_000_000_000i64;
    let mut out = Vec::new();
    for i in 0..n {
        let mut l: Vec<(String, String)> = vec![
            ("__name__".into(), format!("sluice_test_metric_{}", i % 5)),
            ("instance".into(), format!("host-{i}:9100")),
            ("job".into(), if i % 2 == 0 { "node" } else { "api" }.into()),
        ];
        if i % 3 == 0 {
            l.push(("zone".into(), format!("z{}", i % 4)));
        }
        if i % 50 == 7 {
            l.insert(1, ("desc".into(), format!("say \"hi\" \\ é {i}")));
        }
        let count = 1 + (i * 131) % 400;
        let mut t = base + (i as i64 * 7) % 1000;
        let mut samples = Vec::with_capacity(count);
        for k in 0..count {
            let kf = k as f64;
            let v = match i % 6 {
                0 => kf * 3.0,
                1 => (kf * 0.1).sin() * 100.0,
                2 => 1e300 * (kf + 1.0),
                3 => -(kf * 1e-9),
                4 => [f64::INFINITY, f64::NEG_INFINITY, f64::NAN, -0.0, 0.1, 42.0][k % 6],
                _ => (i * 1000 + k) as f64,
            };
            samples.push((t, v));
            // Mostly regular, sometimes jittered and sometimes a big gap, to use every
            // delta-of-delta width.
            t += 15_000
                + match k % 17 {
                    3 => (k as i64 * 37) % 1000 - 500,
                    11 => 600_000,
                    _ => 0,
                };
        }
        out.push((l, samples));
    }
    // A label set that is a strict prefix of another one sorts first.
    out.push((
        labels(&[("__name__", "prefix_metric")]),
        vec![(base, 1.0), (base + 1000, 2.0)],
    ));
    out.push((
        labels(&[("__name__", "prefix_metric"), ("a", "1")]),
        vec![(base, 3.0)],
    ));
    // Scramble deterministically.
    let len = out.len();
    for i in 0..len {
        out.swap(i, (i * 7919 + 13) % len);
    }
    out
}

pub(super) fn to_block_series(data: &[TestSeries]) -> Vec<BlockSeries> {
    data.iter()
        .map(|(l, s)| BlockSeries {
            labels: l.clone(),
            chunks: to_chunks(s),
        })
        .collect()
}

pub(super) fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub(super) fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

/// Opens an `index` file on its own: a block directory around it with a minimal
/// `meta.json` and no chunk segments. The directory lives as long as the `TempDir`.
pub(super) fn open_index(index: &[u8]) -> (tempfile::TempDir, BlockReader) {
    let tmp = tempfile::tempdir().unwrap();
    let meta = concat!(
        r#"{"ulid":"01ARZ3NDEKTSV4RRFFQ69G5FAV","minTime":0,"maxTime":1,"#,
        r#""compaction":{"level":1},"version":1}"#
    );
    std::fs::write(tmp.path().join("meta.json"), meta).unwrap();
    std::fs::write(tmp.path().join("index"), index).unwrap();
    std::fs::create_dir(tmp.path().join("chunks")).unwrap();
    let r = BlockReader::open(tmp.path()).unwrap();
    (tmp, r)
}

/// Series `series_ref` of `r`: its labels, owned to compare with test data, and chunk metas.
pub(super) fn read_series(
    r: &BlockReader,
    series_ref: u32,
) -> (Vec<(String, String)>, Vec<ChunkMeta>) {
    let (mut labels, mut chunks) = (Vec::new(), Vec::new());
    r.series(series_ref, &mut labels, &mut chunks).unwrap();
    let labels = labels
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    (labels, chunks)
}

/// Checks the index layout Prometheus' writer produces, beyond what open verifies (magic,
/// TOC, symbols and the postings offset table, CRCs included), and returns the series refs
/// in file order: series entries back to back, 16-byte aligned, zero padding only; every
/// postings list 4-byte aligned inside the postings section, readable (CRC, length,
/// ascending refs); every deprecated label index 4-byte aligned and readable.
pub(super) fn assert_index_layout(r: &BlockReader) -> Vec<u32> {
    let refs = r.series_refs().unwrap();
    let toc = *r.toc();
    for (name, value, offset) in r.postings_offsets() {
        assert_eq!(offset % 4, 0, "postings of {name}={value} aligned");
        assert!(
            toc.postings <= offset && offset < toc.label_indices_table,
            "postings of {name}={value} at {offset}, outside the postings section"
        );
        r.postings(name, value).unwrap();
    }
    for l in r.label_indices().unwrap() {
        assert_eq!(l.offset % 4, 0, "label index of {} aligned", l.name);
    }
    refs
}

#[test]
fn block_layout_meta_and_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let data = test_series(40);
    let opts = BlockOptions::new(ext_labels());
    let b = write_block(tmp.path(), to_block_series(&data), &opts)
        .unwrap()
        .unwrap();
    let ulid = b.meta.ulid.to_string();
    assert_eq!(dir_entries(tmp.path()), std::slice::from_ref(&ulid));
    assert_eq!(b.path, tmp.path().join(&ulid));
    assert_eq!(
        dir_entries(&b.path),
        ["chunks", "index", "meta.json", "tombstones"]
    );
    assert_eq!(dir_entries(&b.path.join("chunks")), ["000001"]);
    assert_eq!(
        std::fs::read(b.path.join("tombstones")).unwrap(),
        [0x01, 0x30, 0xBA, 0x30, 0x01, 0, 0, 0, 0]
    );

    // meta.json as written equals what was returned, with exact stats and files.
    let meta =
        meta::BlockMeta::from_json(&std::fs::read(b.path.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta, b.meta);
    let total: usize = data.iter().map(|(_, s)| s.len()).sum();
    let chunks: usize = data
        .iter()
        .map(|(_, s)| s.len().div_ceil(SAMPLES_PER_CHUNK))
        .sum();
    assert_eq!(meta.stats.num_samples, total as u64);
    assert_eq!(meta.stats.num_series, data.len() as u64);
    assert_eq!(meta.stats.num_chunks, chunks as u64);
    let min = data.iter().map(|(_, s)| s[0].0).min().unwrap();
    let max = data.iter().map(|(_, s)| s.last().unwrap().0).max().unwrap();
    assert_eq!((meta.min_time, meta.max_time), (min, max + 1));
    assert_eq!(meta.compaction.level, 1);
    assert_eq!(meta.compaction.sources, [meta.ulid]);
    assert_eq!(meta.version, 1);
    let th = meta.thanos.as_ref().unwrap();
    assert_eq!(th.labels, ext_labels());
    assert_eq!(th.source, "receive");
    assert_eq!(th.downsample.resolution, 0);
    let files: Vec<(&str, i64)> = th
        .files
        .iter()
        .map(|f| (f.rel_path.as_str(), f.size_bytes))
        .collect();
    let size = |p: &str| std::fs::metadata(b.path.join(p)).unwrap().len() as i64;
    assert_eq!(
        files,
        [
            ("chunks/000001", size("chunks/000001")),
            ("index", size("index")),
            ("meta.json", 0)
        ]
    );

    // Index and chunks read back to exactly the input.
    let r = BlockReader::open(&b.path).unwrap();
    let series: Vec<_> = assert_index_layout(&r)
        .into_iter()
        .map(|s| read_series(&r, s))
        .collect();
    let want: BTreeMap<_, _> = data.iter().cloned().collect();
    assert_eq!(series.len(), want.len());
    let mut last_ref = 0;
    for ((labels, chunks), (wl, ws)) in series.iter().zip(&want) {
        assert_eq!(labels, wl, "series sorted by label set");
        let mut got = Vec::new();
        for c in chunks {
            assert!(c.chunk_ref > last_ref, "chunk refs grow in series order");
            last_ref = c.chunk_ref;
            // The reader hands out XOR chunks (encoding 1) only, CRC checked.
            let bytes = r.chunk(c.chunk_ref).unwrap();
            let part: Vec<(i64, f64)> = XorIter::new(bytes).collect();
            assert_eq!(
                (c.min_time, c.max_time),
                (part[0].0, part.last().unwrap().0)
            );
            got.extend(part);
        }
        assert_eq!(got.len(), ws.len());
        for (g, w) in got.iter().zip(ws) {
            assert!(g.0 == w.0 && same_value(g.1, w.1), "{g:?} vs {w:?}");
        }
    }
    assert_eq!(series[0].0, labels(&[("__name__", "prefix_metric")]));
    assert_eq!(
        series[1].0,
        labels(&[("__name__", "prefix_metric"), ("a", "1")])
    );
}

#[test]
fn block_segments_split_at_the_size_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = test_series(30);
    let mut opts = BlockOptions::new(ext_labels());
    opts.segment_size = 4096;
    let b = write_block(tmp.path(), to_block_series(&data), &opts)
        .unwrap()
        .unwrap();
    let names = dir_entries(&b.path.join("chunks"));
    assert!(names.len() > 3, "{names:?}");
    for (i, n) in names.iter().enumerate() {
        assert_eq!(*n, format!("{:06}", i + 1));
    }
    let segs: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(b.path.join("chunks").join(n)).unwrap())
        .collect();
    let r = BlockReader::open(&b.path).unwrap();
    let mut seen_files = std::collections::BTreeSet::new();
    for s in assert_index_layout(&r) {
        for c in read_series(&r, s).1 {
            seen_files.insert(c.chunk_ref >> 32);
            let bytes = r.chunk(c.chunk_ref).unwrap();
            assert_eq!(XorIter::new(bytes).next().unwrap().0, c.min_time);
        }
    }
    assert_eq!(seen_files.len(), names.len());
    let th = b.meta.thanos.unwrap();
    let paths: Vec<&str> = th.files.iter().map(|f| f.rel_path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    assert_eq!(paths.len(), names.len() + 2);
    for (f, seg) in th.files.iter().zip(&segs) {
        assert_eq!(f.size_bytes as usize, seg.len());
        assert!(
            seg.len() <= 4096 || seg.len() < 4096 + 600,
            "one oversized chunk at most"
        );
    }
}

#[test]
fn block_not_written_without_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = BlockOptions::new(ext_labels());
    let none: Vec<BlockSeries> = Vec::new();
    assert!(write_block(tmp.path(), none, &opts).unwrap().is_none());
    let empty = vec![BlockSeries::<Vec<u8>> {
        labels: labels(&[("__name__", "x")]),
        chunks: vec![],
    }];
    assert!(write_block(tmp.path(), empty, &opts).unwrap().is_none());
    assert!(dir_entries(tmp.path()).is_empty());
}

#[test]
fn block_refuses_invalid_input_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = BlockOptions::new(ext_labels());
    let ok = |l: &[(&str, &str)]| BlockSeries {
        labels: labels(l),
        chunks: to_chunks(&[(1000, 1.0), (2000, 2.0)]),
    };
    let check = |series: Vec<BlockSeries>, opts: &BlockOptions, want: &str| {
        let err = write_block(tmp.path(), series, opts).unwrap_err();
        assert!(err.to_string().contains(want), "{err} should say {want}");
        assert!(dir_entries(tmp.path()).is_empty());
    };
    check(
        vec![ok(&[("b", "1"), ("a", "1")])],
        &opts,
        "not strictly ascending",
    );
    check(
        vec![ok(&[("a", "1")]), ok(&[("a", "1")])],
        &opts,
        "more than once",
    );
    check(vec![ok(&[("a", "")])], &opts, "empty value");
    let mut overlapping = ok(&[("a", "1")]);
    overlapping.chunks.extend(to_chunks(&[(2000, 3.0)]));
    check(vec![overlapping], &opts, "overlaps");
    let mut empty_chunk = ok(&[("a", "1")]);
    empty_chunk.chunks[0].data = vec![0, 0];
    check(vec![empty_chunk], &opts, "no samples");
    let mut bad_range = opts.clone();
    bad_range.time_range = Some((0, 2000));
    check(
        vec![ok(&[("a", "1")])],
        &bad_range,
        "outside the block range",
    );
    let no_ext = BlockOptions::new(BTreeMap::new());
    check(vec![ok(&[("a", "1")])], &no_ext, "external label");
}

#[test]
fn block_time_range_override_and_stale_tmp_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let ulid = Ulid::new();
    let stale = tmp.path().join(format!("{ulid}{TMP_SUFFIX}"));
    std::fs::create_dir_all(stale.join("chunks")).unwrap();
    std::fs::write(stale.join("chunks/000001"), b"garbage").unwrap();
    let mut opts = BlockOptions::new(ext_labels());
    opts.ulid = Some(ulid);
    opts.time_range = Some((0, 7_200_000));
    let series = vec![BlockSeries {
        labels: labels(&[("__name__", "x")]),
        chunks: to_chunks(&[(1000, 1.0), (7_199_999, 2.0)]),
    }];
    let b = write_block(tmp.path(), series.clone(), &opts)
        .unwrap()
        .unwrap();
    assert_eq!((b.meta.min_time, b.meta.max_time), (0, 7_200_000));
    assert_eq!(dir_entries(tmp.path()), [ulid.to_string()]);
    // Writing the same ULID again is refused rather than overwriting a sealed block.
    let err = write_block(tmp.path(), series, &opts).unwrap_err();
    assert!(matches!(err, BlockError::AlreadyExists(_)), "{err}");
}

// --- promtool ---------------------------------------------------------------------------

/// Runs promtool; fails loudly if it is missing (this check must never be skipped).
pub(super) fn promtool(args: &[&str]) -> (String, String) {
    let bin = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_string());
    let out = Command::new(&bin).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `{bin}` ({e}): the block format check needs Prometheus' promtool \
             (Debian package `prometheus`: apt-get install -y prometheus), or PROMTOOL=path"
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "promtool {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// Prometheus' `labels.String()`: `{a="b", c="d"}` with Go `strconv.Quote`d values (our
/// test values only need `"` and `\` escaped; é is printable and stays as is).
fn prom_labels_string(l: &[(String, String)]) -> String {
    let parts: Vec<String> = l
        .iter()
        .map(|(n, v)| format!("{n}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Parses a `promtool tsdb dump` line: `{labels} value timestamp`, value printed with Go's
/// `%g` (shortest round-trip form, `+Inf`, `NaN`).
fn parse_dump_line(line: &str) -> (String, f64, i64) {
    let (rest, ts) = line.rsplit_once(' ').expect("timestamp");
    let (lbls, val) = rest.rsplit_once(' ').expect("value");
    let v: f64 = val
        .parse()
        .unwrap_or_else(|e| panic!("value {val:?} in {line:?}: {e}"));
    (lbls.to_string(), v, ts.parse().expect("integer timestamp"))
}

/// Nothing promtool prints on stderr may look like a complaint.
fn assert_no_complaints(what: &str, stderr: &str) {
    let lower = stderr.to_lowercase();
    for bad in [
        "level=warn",
        "level=error",
        "err=",
        "error",
        "warn",
        "corrupt",
        "invalid",
    ] {
        assert!(
            !lower.contains(bad),
            "promtool {what} complained ({bad}):\n{stderr}"
        );
    }
}

#[test]
fn block_promtool_reads_exactly_what_was_written() {
    let tmp = tempfile::tempdir().unwrap();
    let data = test_series(300);
    let total: usize = data.iter().map(|(_, s)| s.len()).sum();
    assert!(
        total > 50_000,
        "a few hundred series x a few hundred samples"
    );
    let b = write_block(
        tmp.path(),
        to_block_series(&data),
        &BlockOptions::new(ext_labels()),
    )
    .unwrap()
    .unwrap();
    let dir = tmp.path().to_str().unwrap();
    let ulid = b.meta.ulid.to_string();

    let (list, err) = promtool(&["tsdb", "list", dir]);
    assert_no_complaints("tsdb list", &err);
    eprintln!("promtool tsdb list:\n{list}stderr: {err:?}");
    let row = list
        .lines()
        .find(|l| l.starts_with(&ulid))
        .unwrap_or_else(|| panic!("block {ulid} not listed:\n{list}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], b.meta.min_time.to_string(), "{row}");
    assert_eq!(cols[2], b.meta.max_time.to_string(), "{row}");
    assert_eq!(cols[4], total.to_string(), "samples: {row}");
    assert_eq!(
        cols[5],
        b.meta.stats.num_chunks.to_string(),
        "chunks: {row}"
    );
    assert_eq!(cols[6], data.len().to_string(), "series: {row}");

    let (analyze, err) = promtool(&["tsdb", "analyze", "--extended", dir, &ulid]);
    assert_no_complaints("tsdb analyze", &err);
    eprintln!("promtool tsdb analyze --extended:\n{analyze}stderr: {err:?}");
    assert!(analyze.contains(&format!("Block ID: {ulid}")), "{analyze}");
    assert!(
        analyze.contains(&format!("Series: {}", data.len())),
        "{analyze}"
    );

    // promtool 2.42's `dump` opens the directory as a whole Prometheus data dir and fails
    // with "read WAL: find last checkpoint: open <dir>/wal: no such file or directory"
    // without one; a real data dir always has it, so give it an empty one.
    std::fs::create_dir(tmp.path().join("wal")).unwrap();
    let (dump, err) = promtool(&[
        "tsdb",
        "dump",
        &format!("--min-time={}", b.meta.min_time),
        &format!("--max-time={}", b.meta.max_time),
        dir,
    ]);
    assert_no_complaints("tsdb dump", &err);
    eprintln!(
        "promtool tsdb dump: {} lines, stderr: {err:?}",
        dump.lines().count()
    );
    let mut got: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    let mut lines = 0;
    for line in dump.lines().filter(|l| !l.is_empty()) {
        let (l, v, t) = parse_dump_line(line);
        got.entry(l).or_default().push((t, v));
        lines += 1;
    }
    assert_eq!(lines, total, "every sample dumped once");
    let want: BTreeMap<String, &Vec<(i64, f64)>> = data
        .iter()
        .map(|(l, s)| (prom_labels_string(l), s))
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, w) in &want {
        let g = &got[k];
        assert_eq!(g.len(), w.len(), "{k}");
        for (a, b) in g.iter().zip(w.iter()) {
            assert!(
                a.0 == b.0 && same_value(a.1, b.1),
                "{k}: got {a:?}, want {b:?}"
            );
        }
    }
}

/// Builds a block with `promtool tsdb create-blocks-from openmetrics` under `dir`: 3 gauges x
/// 7 series (some with a `zone` label) of 10..=110 samples inside one aligned 2h range.
/// Returns the block's path and the samples it holds.
pub(super) fn promtool_block(dir: &Path) -> (std::path::PathBuf, Vec<TestSeries>) {
    // Aligned to a 2h boundary so the backfill writes a single block.
    let t0 = 1_700_006_400_000i64;
    assert_eq!(t0 % 7_200_000, 0);
    let mut data: Vec<TestSeries> = Vec::new();
    let mut om = String::new();
    for m in 0..3 {
        let name = format!("om_metric_{m}");
        om.push_str(&format!("# TYPE {name} gauge\n"));
        for s in 0..7 {
            let mut l = vec![
                ("__name__".to_string(), name.clone()),
                ("instance".to_string(), format!("i{s}")),
            ];
            if s % 2 == 0 {
                l.push(("zone".to_string(), format!("z{}", s % 3)));
            }
            let n = 10 + (m * 7 + s) * 5; // 10..=110 samples.
            let samples: Vec<(i64, f64)> = (0..n)
                .map(|k| {
                    let t = t0 + 1234 + k as i64 * 15_000 + (k as i64 % 3) * 7;
                    let v = match s % 3 {
                        0 => k as f64,
                        1 => (k as f64 * 0.37).cos() * 1e6,
                        _ => 1.0 / (k as f64 + 3.0),
                    };
                    (t, v)
                })
                .collect();
            let lbls: Vec<String> = l[1..].iter().map(|(n, v)| format!("{n}=\"{v}\"")).collect();
            for (t, v) in &samples {
                om.push_str(&format!(
                    "{name}{{{}}} {v:?} {}.{:03}\n",
                    lbls.join(","),
                    t / 1000,
                    t % 1000
                ));
            }
            data.push((l, samples));
        }
    }
    om.push_str("# EOF\n");
    let om_path = dir.join("input.om");
    std::fs::write(&om_path, &om).unwrap();
    let prom_dir = dir.join("prom");
    promtool(&[
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        "--quiet",
        om_path.to_str().unwrap(),
        prom_dir.to_str().unwrap(),
    ]);
    let prom_blocks: Vec<String> = dir_entries(&prom_dir)
        .into_iter()
        .filter(|n| n.len() == 26)
        .collect();
    assert_eq!(prom_blocks.len(), 1, "{prom_blocks:?}");
    (prom_dir.join(&prom_blocks[0]), data)
}

/// Byte-for-byte comparison with Prometheus' own writer: `promtool tsdb create-blocks-from
/// openmetrics` builds a block through the same head → compactor path Prometheus uses. With
/// at most 120 samples per series inside one 2h range the head cuts no chunk early, so the
/// chunk segment and the index must be identical to ours for the same samples (only
/// meta.json differs: ULID, and no Thanos section).
#[test]
fn block_index_and_chunks_are_byte_identical_to_prometheus() {
    let tmp = tempfile::tempdir().unwrap();
    let (prom_block, data) = promtool_block(tmp.path());

    let ours = write_block(
        &tmp.path().join("ours"),
        to_block_series(&data),
        &BlockOptions::new(ext_labels()),
    )
    .unwrap()
    .unwrap();
    for file in ["chunks/000001", "index", "tombstones"] {
        let a = std::fs::read(prom_block.join(file)).unwrap();
        let b = std::fs::read(ours.path.join(file)).unwrap();
        if a != b {
            let at = a.iter().zip(&b).position(|(x, y)| x != y);
            panic!(
                "{file} differs from Prometheus' ({} vs {} bytes, first difference at {at:?})",
                a.len(),
                b.len()
            );
        }
    }
    assert_eq!(dir_entries(&prom_block.join("chunks")), ["000001"]);
    let prom_meta =
        meta::BlockMeta::from_json(&std::fs::read(prom_block.join("meta.json")).unwrap()).unwrap();
    assert_eq!(prom_meta.stats, ours.meta.stats);
    assert_eq!(prom_meta.compaction.level, 1);
}
