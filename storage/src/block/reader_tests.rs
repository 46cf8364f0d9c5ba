//! BlockReader tests: round trips through `write_block` (several segment files), a block
//! written by Prometheus' own `promtool`, refusal of bad refs and broken files with the right
//! error, and proptests that corrupt real files or feed arbitrary bytes to every decoder —
//! errors are expected there, panics are the failure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;

use super::super::tests::{
    dir_entries, ext_labels, labels, promtool_block, same_value, test_series, to_block_series,
    to_chunks, TestSeries,
};
use super::super::{write_block, BlockOptions, BlockSeries};
use super::*;
use crate::encoding::{put_be32, put_uvarint, put_uvarint_str};
use crate::xor::XorIter;

/// Checks that `r` holds exactly `data` (given in any order): label names and values, every
/// postings list, every series' labels and chunk metas, and every chunk's bytes and samples
/// (chunks as `to_chunks` cuts them). Returns the chunk refs seen.
fn assert_block_holds(r: &BlockReader, data: &[TestSeries]) -> Vec<u64> {
    let want: BTreeMap<_, _> = data.iter().map(|(l, s)| (l, s)).collect();
    assert_eq!(want.len(), data.len(), "test data has duplicate series");

    let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (n, v) in want.keys().flat_map(|l| l.iter()) {
        values.entry(n).or_default().insert(v);
    }
    assert_eq!(r.label_names(), values.keys().copied().collect::<Vec<_>>());
    for (n, vs) in &values {
        assert_eq!(
            r.label_values(n),
            vs.iter().copied().collect::<Vec<_>>(),
            "{n}"
        );
    }

    // Series refs ascend in label-set order, so the all-postings list pairs with `want`.
    let all = r.all_postings().unwrap();
    assert_eq!(all.len(), want.len());
    assert_eq!(r.postings("", "").unwrap(), all);
    let mut by_label: BTreeMap<(&str, &str), Vec<u32>> = BTreeMap::new();
    let (mut lbls, mut metas) = (Vec::new(), Vec::new());
    let mut refs = Vec::new();
    for (&sref, (wl, ws)) in all.iter().zip(&want) {
        r.series(sref, &mut lbls, &mut metas).unwrap();
        let got: Vec<(String, String)> = lbls
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(&got, *wl);
        for (n, v) in wl.iter() {
            by_label.entry((n, v)).or_default().push(sref);
        }
        let want_chunks = to_chunks(ws);
        assert_eq!(metas.len(), want_chunks.len(), "{wl:?}");
        let mut samples = Vec::new();
        for (m, w) in metas.iter().zip(&want_chunks) {
            assert_eq!((m.min_time, m.max_time), (w.min_time, w.max_time), "{wl:?}");
            let bytes = r.chunk(m.chunk_ref).unwrap();
            assert_eq!(bytes, &w.data[..], "{wl:?} chunk {:#x}", m.chunk_ref);
            let mut it = XorIter::new(bytes);
            samples.extend(it.by_ref());
            assert_eq!(it.error(), None);
            refs.push(m.chunk_ref);
        }
        assert_eq!(samples.len(), ws.len(), "{wl:?}");
        for (g, w) in samples.iter().zip(ws.iter()) {
            assert!(g.0 == w.0 && same_value(g.1, w.1), "{wl:?}: {g:?} vs {w:?}");
        }
    }
    for ((n, v), list) in &by_label {
        assert_eq!(&r.postings(n, v).unwrap(), list, "{n}={v}");
    }

    assert!(r.postings("__name__", "no_such_metric").unwrap().is_empty());
    assert!(r.postings("no_such_label", "x").unwrap().is_empty());
    assert!(r.postings("", "x").unwrap().is_empty());
    assert!(r.label_values("no_such_label").is_empty());
    assert!(r.label_values("").is_empty());
    refs
}

fn write_test_block(dir: &Path, data: &[TestSeries], segment_size: u64) -> PathBuf {
    let mut opts = BlockOptions::new(ext_labels());
    opts.segment_size = segment_size;
    write_block(dir, to_block_series(data), &opts)
        .unwrap()
        .unwrap()
        .path
}

#[test]
fn reader_round_trips_write_block_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let data = test_series(60);
    let path = write_test_block(tmp.path(), &data, 4096);
    let segments = dir_entries(&path.join("chunks"));
    assert!(segments.len() > 3, "{segments:?}");

    let r = BlockReader::open(&path).unwrap();
    assert_eq!(r.dir(), path);
    let meta = BlockMeta::from_json(&std::fs::read(path.join("meta.json")).unwrap()).unwrap();
    assert_eq!(r.meta(), &meta);
    let refs = assert_block_holds(&r, &data);
    let files: BTreeSet<u64> = refs.iter().map(|c| c >> 32).collect();
    assert_eq!(files.len(), segments.len(), "every segment file is read");
    assert_eq!(refs.len() as u64, r.meta().stats.num_chunks);
}

#[test]
fn reader_reads_a_block_written_by_promtool() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, data) = promtool_block(tmp.path());
    let r = BlockReader::open(&path).unwrap();
    assert!(r.meta().thanos.is_none(), "a plain Prometheus block");
    assert_block_holds(&r, &data);
    assert_eq!(r.label_names(), ["__name__", "instance", "zone"]);
}

#[test]
fn reader_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<BlockReader>();

    let tmp = tempfile::tempdir().unwrap();
    let data = test_series(20);
    let r = Arc::new(BlockReader::open(&write_test_block(tmp.path(), &data, 4096)).unwrap());
    std::thread::scope(|s| {
        for _ in 0..2 {
            let r = Arc::clone(&r);
            let data = &data;
            s.spawn(move || assert_block_holds(&r, data));
        }
    });
}

/// Go decodes chunk-meta deltas with wrapping int64 arithmetic, and our writer wraps too:
/// a gap wider than `i64::MAX` between two chunks must come back exactly.
#[test]
fn reader_decodes_wrapped_time_deltas() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (-5_000_000_000_000_000_000i64, 5_000_000_000_000_000_000i64);
    let data: Vec<TestSeries> = vec![(labels(&[("__name__", "wide")]), vec![(a, 1.0)])];
    let mut series = to_block_series(&data);
    series[0].chunks.extend(to_chunks(&[(b, 2.0)]));
    let path = write_block(tmp.path(), series, &BlockOptions::new(ext_labels()))
        .unwrap()
        .unwrap()
        .path;
    let r = BlockReader::open(&path).unwrap();
    let refs = r.all_postings().unwrap();
    let (mut l, mut c) = (Vec::new(), Vec::new());
    r.series(refs[0], &mut l, &mut c).unwrap();
    let times: Vec<(i64, i64)> = c.iter().map(|m| (m.min_time, m.max_time)).collect();
    assert_eq!(times, [(a, a), (b, b)]);
}

#[test]
fn reader_refuses_bad_refs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = test_series(10);
    let path = write_test_block(tmp.path(), &data, 4096);
    let r = BlockReader::open(&path).unwrap();
    let refs = r.all_postings().unwrap();
    let (mut l, mut c) = (vec![("stale", "stale")], Vec::new());

    for bad in [0, u32::MAX] {
        let err = r.series(bad, &mut l, &mut c).unwrap_err();
        assert!(matches!(err, BlockReadError::BadSeriesRef { .. }), "{err}");
        assert!(l.is_empty() && c.is_empty(), "outputs cleared on error");
    }
    // Inside the series section but not at an entry: padding or the middle of an entry.
    let err = r.series(refs[0] + 1, &mut l, &mut c).unwrap_err();
    assert!(matches!(err, BlockReadError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("index: series entry at byte"),
        "{err}"
    );

    r.series(refs[0], &mut l, &mut c).unwrap();
    let first = c[0].chunk_ref;
    let segments = dir_entries(&path.join("chunks")).len() as u64;
    for bad in [segments << 32 | 8, 0, 7] {
        let err = r.chunk(bad).unwrap_err();
        assert!(matches!(err, BlockReadError::BadChunkRef { .. }), "{err}");
    }
    for bad in [first + 1, first | 0xFFFF_FF00] {
        let err = r.chunk(bad).unwrap_err();
        assert!(
            matches!(err, BlockReadError::Corrupt { .. }),
            "{bad:#x}: {err}"
        );
        assert!(err.to_string().contains("000001: chunk at byte"), "{err}");
    }
}

/// Rewrites the encoding byte of the chunk at `offset` in a segment and fixes its CRC.
fn set_chunk_encoding(seg: &mut [u8], offset: usize, encoding: u8) {
    // A one-byte length varint: the test chunks are shorter than 128 bytes.
    let len = seg[offset] as usize;
    assert!(len < 128);
    let enc_at = offset + 1;
    seg[enc_at] = encoding;
    let crc = crc32c::crc32c(&seg[enc_at..enc_at + 1 + len]);
    seg[enc_at + 1 + len..enc_at + 5 + len].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn reader_reports_broken_files_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<TestSeries> = (0..4)
        .map(|i| {
            let l = labels(&[("__name__", "m"), ("i", &i.to_string())]);
            (l, vec![(1000, 1.0), (2000, 2.0)])
        })
        .collect();
    let path = write_test_block(tmp.path(), &data, 40);
    assert_eq!(dir_entries(&path.join("chunks")).len(), 4);
    let err_of = |p: &Path| BlockReader::open(p).unwrap_err();

    // A non-XOR chunk that is intact otherwise.
    let seg1 = path.join("chunks/000001");
    let good = std::fs::read(&seg1).unwrap();
    let mut seg = good.clone();
    set_chunk_encoding(&mut seg, 8, 2);
    std::fs::write(&seg1, &seg).unwrap();
    let r = BlockReader::open(&path).unwrap();
    let err = r.chunk(8).unwrap_err();
    assert!(
        matches!(err, BlockReadError::UnsupportedEncoding { encoding: 2, .. }),
        "{err}"
    );
    drop(r);

    // Segment header, numbering gap, foreign files ignored.
    let mut seg = good.clone();
    seg[4] = 2;
    std::fs::write(&seg1, &seg).unwrap();
    let err = err_of(&path);
    assert!(err.to_string().contains("000001: segment header"), "{err}");
    std::fs::write(&seg1, &good).unwrap();
    std::fs::write(path.join("chunks/notes.txt"), b"x").unwrap();
    BlockReader::open(&path).unwrap();
    std::fs::rename(path.join("chunks/000003"), path.join("chunks/000009")).unwrap();
    let err = err_of(&path);
    assert!(matches!(err, BlockReadError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("expected 000003"), "{err}");
    std::fs::rename(path.join("chunks/000009"), path.join("chunks/000003")).unwrap();

    // Index: magic, version, TOC CRC, a too-short file.
    let index = path.join("index");
    let good = std::fs::read(&index).unwrap();
    for (at, want) in [
        (0, "index header at byte 0: magic"),
        (4, "index header at byte 4: format version"),
        (good.len() - 10, "TOC at byte"),
    ] {
        let mut b = good.clone();
        b[at] ^= 0x40;
        std::fs::write(&index, &b).unwrap();
        let err = err_of(&path);
        assert!(err.to_string().contains(want), "{err} should say {want}");
    }
    std::fs::write(&index, &good[..20]).unwrap();
    assert!(matches!(err_of(&path), BlockReadError::Invalid { .. }));
    std::fs::write(&index, &good).unwrap();

    // meta.json.
    let meta = path.join("meta.json");
    std::fs::write(&meta, b"{").unwrap();
    assert!(matches!(err_of(&path), BlockReadError::Meta { .. }));
    std::fs::remove_file(&meta).unwrap();
    assert!(matches!(err_of(&path), BlockReadError::Io { .. }));
}

// --- corruption: never panic -------------------------------------------------------------

/// The files of a small valid block (3 segments), built once.
struct Template {
    meta: Vec<u8>,
    index: Vec<u8>,
    segments: Vec<Vec<u8>>,
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let path = write_test_block(tmp.path(), &test_series(8), 1024);
        let names = dir_entries(&path.join("chunks"));
        assert!(names.len() >= 3, "{names:?}");
        Template {
            meta: std::fs::read(path.join("meta.json")).unwrap(),
            index: std::fs::read(path.join("index")).unwrap(),
            segments: names
                .iter()
                .map(|n| std::fs::read(path.join("chunks").join(n)).unwrap())
                .collect(),
        }
    })
}

/// Calls every read on whatever `open` accepts, following refs as the query path would and
/// also probing every 16-byte series slot and every chunk offset.
fn read_everything(dir: &Path) {
    let Ok(r) = BlockReader::open(dir) else {
        return;
    };
    let _ = r.meta();
    let _ = (r.toc(), r.symbols(), r.postings_offsets());
    let _ = r.series_refs();
    let _ = r.label_indices();
    for n in r.label_names() {
        for v in r.label_values(n) {
            let _ = r.postings(n, v);
        }
    }
    let index_len = std::fs::metadata(dir.join("index")).map_or(0, |m| m.len());
    let slots = (index_len / 16) as u32;
    let refs = r.all_postings().unwrap_or_default();
    let (mut l, mut c) = (Vec::new(), Vec::new());
    for sref in refs.into_iter().chain(0..slots + 2) {
        if r.series(sref, &mut l, &mut c).is_ok() {
            for m in &c {
                if let Ok(b) = r.chunk(m.chunk_ref) {
                    XorIter::new(b).for_each(drop);
                }
            }
        }
    }
    let segments = dir_entries(&dir.join("chunks"));
    for (file, name) in segments.iter().enumerate() {
        let len = std::fs::metadata(dir.join("chunks").join(name)).map_or(0, |m| m.len());
        for off in 0..len + 2 {
            if let Ok(b) = r.chunk((file as u64) << 32 | off) {
                XorIter::new(b).for_each(drop);
            }
        }
    }
    let _ = r.chunk((segments.len() as u64) << 32 | 8);
}

/// What a proptest case does to one file: XOR some bytes, then maybe cut the file short.
#[derive(Debug, Clone)]
struct Damage {
    /// 0 = index, n > 0 = chunk segment `(n - 1) % segments`.
    file: usize,
    flips: Vec<(prop::sample::Index, u8)>,
    truncate: Option<prop::sample::Index>,
}

fn damage() -> impl Strategy<Value = Damage> {
    (
        // Half the damage goes to the index, the rest spread over the segments.
        prop_oneof![Just(0usize), 1..16usize],
        prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 0..4),
        prop::option::weighted(0.3, any::<prop::sample::Index>()),
    )
        .prop_map(|(file, flips, truncate)| Damage {
            file,
            flips,
            truncate,
        })
}

fn apply(bytes: &mut Vec<u8>, d: &Damage) {
    if bytes.is_empty() {
        return;
    }
    for (at, x) in &d.flips {
        let i = at.index(bytes.len());
        bytes[i] ^= x;
    }
    if let Some(at) = &d.truncate {
        bytes.truncate(at.index(bytes.len()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn reader_never_panics_on_corrupt_files(damages in prop::collection::vec(damage(), 1..3)) {
        let t = template();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir(dir.join("chunks")).unwrap();
        let mut index = t.index.clone();
        let mut segments = t.segments.clone();
        for d in &damages {
            match d.file.checked_sub(1) {
                None => apply(&mut index, d),
                Some(i) => apply(&mut segments[i % t.segments.len()], d),
            }
        }
        std::fs::write(dir.join("meta.json"), &t.meta).unwrap();
        std::fs::write(dir.join("index"), &index).unwrap();
        for (i, s) in segments.iter().enumerate() {
            std::fs::write(dir.join("chunks").join(format!("{:06}", i + 1)), s).unwrap();
        }
        read_everything(dir);
    }
}

/// Bytes made of varints, mostly small ones: gets past the count and ref checks of the
/// series and table decoders far more often than uniform bytes do.
fn varint_soup() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![4 => 0u64..8, 1 => any::<u64>()], 0..48).prop_map(|vs| {
        let mut out = Vec::new();
        for v in vs {
            put_uvarint(&mut out, v);
        }
        out
    })
}

fn small_symbols() -> Symbols {
    let mut body = Vec::new();
    let syms = ["", "__name__", "a", "b", "up"];
    put_be32(&mut body, syms.len() as u32);
    for s in syms {
        put_uvarint_str(&mut body, s);
    }
    decode_symbols(&body, 0).unwrap()
}

/// Runs every section decoder on `b`, behind and in front of the CRC checks.
fn decode_all(b: &[u8], at: usize) {
    let syms = small_symbols();
    let (mut l, mut c) = (Vec::new(), Vec::new());
    let _ = decode_series_body(&syms, b, 0, &mut l, &mut c);
    let _ = decode_series_entry(&syms, b, at, &mut l, &mut c);
    let _ = decode_symbols(b, 0);
    let _ = parse_symbols(b, at);
    let _ = decode_postings_table(b, 0, &syms);
    let _ = parse_postings_table(b, at, &syms);
    let _ = decode_postings_body(b, 0);
    let _ = decode_postings(b, at);
    let _ = walk_series(b, at);
    let _ = decode_label_indices(&syms, b, at);
    let _ = decode_label_index(&syms, b, at);
    let _ = read_chunk_record(b, at);
    let _ = check_segment_header(b);
    let _ = parse_index(b);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(
        b in prop::collection::vec(any::<u8>(), 0..160),
        at in 0..200usize,
    ) {
        decode_all(&b, at);
    }

    #[test]
    fn decoders_never_panic_on_varint_soup(b in varint_soup(), at in 0..8usize) {
        decode_all(&b, at);
    }
}

#[test]
fn small_symbols_resolve_both_ways() {
    let s = small_symbols();
    assert_eq!(s.len(), 5);
    for (i, want) in ["", "__name__", "a", "b", "up"].iter().enumerate() {
        assert_eq!(s.get(i as u32), Some(*want));
        assert_eq!(s.find(want), Some(i as u32));
    }
    assert_eq!(s.get(5), None);
    assert_eq!(s.find("c"), None);
    assert_eq!(s.find("zzz"), None);
}

#[test]
fn series_blocks_with_one_series_and_no_padding_read_back() {
    // Smallest useful block: one series, one chunk, its entry right at the series offset.
    let tmp = tempfile::tempdir().unwrap();
    let series = vec![BlockSeries {
        labels: labels(&[("a", "b")]),
        chunks: to_chunks(&[(5, 1.5)]),
    }];
    let path = write_block(tmp.path(), series, &BlockOptions::new(ext_labels()))
        .unwrap()
        .unwrap()
        .path;
    let r = BlockReader::open(&path).unwrap();
    assert_eq!(r.label_names(), ["a"]);
    assert_eq!(r.postings("a", "b").unwrap(), r.all_postings().unwrap());
    let data = vec![(labels(&[("a", "b")]), vec![(5, 1.5)])];
    assert_block_holds(&r, &data);
}
