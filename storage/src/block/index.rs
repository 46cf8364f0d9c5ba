//! The block `index` file, format v2, laid out byte for byte as Prometheus 2.x
//! (`tsdb/index/index.go` as of v2.42, the version our validator `promtool` runs) writes it.
//!
//! Owns the index layout only. It does **no I/O** and knows nothing about chunk *contents*:
//! [`encode_index`] takes label sets plus chunk metadata (time range and reference) and
//! appends the whole file to a caller-owned buffer. It must not touch chunk segments,
//! `meta.json` or directories (see `mod.rs`).
//!
//! File layout, in order (all integers big-endian unless varints; CRCs are CRC32C):
//! 1. header: magic `0xBAAAD700`, version byte `2` (the diagram of Prometheus' format page,
//!    <https://github.com/prometheus/prometheus/blob/main/tsdb/docs/format/index.md>, says 1);
//! 2. symbols at offset 5: `len(4)` `#symbols(4)` `{uvarint len, bytes}*` CRC; `len` and
//!    the CRC both cover the count and the entries;
//! 3. series: each entry starts 16-byte aligned (zero padding before it), ref = offset / 16;
//!    `uvarint len` then the body (labels as symbol refs, chunk metas delta-encoded) then the
//!    CRC of the body;
//! 4. label indices: one per label name (names ascending), each 4-byte aligned:
//!    `len(4)` `#names(4)=1` `#entries(4)` `{value symbol ref (4)}*` CRC;
//! 5. postings: 4-byte aligned lists `len(4)=4+4n` `n(4)` `{series ref (4)}*` CRC; first
//!    the all-series key `("", "")`, then by name, then value, ascending;
//! 6. label offset table: `len(4)` `#entries(4)` `{uvarint 1, name, uvarint64 offset}*` CRC;
//! 7. postings offset table: `len(4)` `#entries(4)` `{uvarint 2, name, value, uvarint64
//!    offset}*` CRC;
//! 8. TOC: six BE64 section offsets + CRC of those 48 bytes (the last 52 bytes).
//!
//! Subtleties, all copied from what Prometheus 2.42 actually writes:
//! - The symbol table contains the empty string (it sorts first, so it is symbol 0): the
//!   head's symbols come from its postings map, which holds the all-series key `("", "")`.
//! - TOC offsets of "series", "label indices" and "postings" point at where the previous
//!   section *ended*, i.e. before the alignment padding of their first entry, while the
//!   postings offset table stores the padded (real) offsets of each list.
//! - Label indices are deprecated: the 2.42 reader only parses their TOC entries, and
//!   Prometheus 3.7 stopped writing them (pointing both TOC entries at the postings). We
//!   write them, as 2.42 does, so the file matches what that version produces. Postings
//!   lists, label indices and the two offset tables all have lengths that are multiples of
//!   4, so between label indices, postings and the tables no padding actually occurs.
//! - Series sort by label set compared pairwise (name, then value, bytewise) with a prefix
//!   sorting first — exactly `Ord` on `[(String, String)]`.
//! - Chunk metas: first `varint mint, uvarint maxt−mint, uvarint ref`; later ones
//!   `uvarint mintᵢ−maxtᵢ₋₁, uvarint maxtᵢ−mintᵢ, varint refᵢ−refᵢ₋₁`; so chunks of a
//!   series must not overlap (mintᵢ > maxtᵢ₋₁), which we check instead of writing a wrapped
//!   delta.
//! - Series refs are 32-bit offsets / 16, which caps the series section at 64 GiB.

use std::collections::{HashMap, HashSet};

use super::format_labels;
use crate::encoding::{
    pad_to, patch_be32, put_be32, put_be64, put_uvarint, put_uvarint_str, put_varint,
};

/// Magic number at the start of the index file.
pub const MAGIC_INDEX: u32 = 0xBAAA_D700;
/// The index format version we write.
pub const INDEX_FORMAT_V2: u8 = 2;
/// Bytes of the trailing table of contents.
pub const TOC_LEN: usize = 6 * 8 + 4;
pub(crate) const HEADER_LEN: usize = 5;
pub(crate) const SERIES_ALIGN: usize = 16;
const POSTINGS_ALIGN: usize = 4;

/// Where one chunk of a series lives and which (inclusive) time range it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    /// Timestamp (ms) of the first sample.
    pub min_time: i64,
    /// Timestamp (ms) of the last sample (inclusive, unlike a block's maxTime).
    pub max_time: i64,
    /// Block chunk reference, see `chunks::chunk_ref`.
    pub chunk_ref: u64,
}

/// One series as the index sees it, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub struct IndexSeries<'a> {
    /// Label pairs, names strictly ascending, names and values non-empty.
    pub labels: &'a [(String, String)],
    /// Chunks in time order, not overlapping, refs strictly increasing.
    pub chunks: &'a [ChunkMeta],
}

/// Section offsets as stored in the TOC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Toc {
    pub symbols: u64,
    pub series: u64,
    pub label_indices: u64,
    pub label_indices_table: u64,
    pub postings: u64,
    pub postings_table: u64,
}

/// What [`encode_index`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSummary {
    pub num_series: usize,
    pub num_symbols: usize,
    pub num_postings: usize,
    pub toc: Toc,
}

/// Input the index refuses: writing it would produce a file Prometheus rejects or
/// misreads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("series with an empty label set")]
    EmptyLabelSet,
    #[error("series {series}: empty label name")]
    EmptyLabelName { series: String },
    #[error("series {series}: label {name:?} has an empty value (empty labels must be dropped)")]
    EmptyLabelValue { series: String, name: String },
    #[error("series {series}: label names are not strictly ascending")]
    UnsortedLabels { series: String },
    #[error("series {series} occurs more than once")]
    DuplicateSeries { series: String },
    #[error("series {series}: chunk min time {min_time} is after its max time {max_time}")]
    ChunkTimeRange {
        series: String,
        min_time: i64,
        max_time: i64,
    },
    #[error("series {series}: chunk starting at {min_time} overlaps the previous chunk ending at {prev_max_time}")]
    OverlappingChunks {
        series: String,
        prev_max_time: i64,
        min_time: i64,
    },
    #[error("series {series}: chunk ref {chunk_ref} does not increase (previous {prev_ref})")]
    UnsortedChunkRefs {
        series: String,
        prev_ref: u64,
        chunk_ref: u64,
    },
    #[error("index {what} too large ({size} bytes or entries)")]
    TooLarge { what: &'static str, size: u64 },
}

/// Checks one series the way the index needs it; called before anything is written.
pub fn validate_series(s: &IndexSeries<'_>) -> Result<(), IndexError> {
    if s.labels.is_empty() {
        return Err(IndexError::EmptyLabelSet);
    }
    let series = || format_labels(s.labels);
    for (i, (name, value)) in s.labels.iter().enumerate() {
        if name.is_empty() {
            return Err(IndexError::EmptyLabelName { series: series() });
        }
        if value.is_empty() {
            return Err(IndexError::EmptyLabelValue {
                series: series(),
                name: name.clone(),
            });
        }
        if i > 0 && s.labels[i - 1].0 >= *name {
            return Err(IndexError::UnsortedLabels { series: series() });
        }
    }
    for (i, c) in s.chunks.iter().enumerate() {
        if c.min_time > c.max_time {
            return Err(IndexError::ChunkTimeRange {
                series: series(),
                min_time: c.min_time,
                max_time: c.max_time,
            });
        }
        if i > 0 {
            let prev = s.chunks[i - 1];
            if c.min_time <= prev.max_time {
                return Err(IndexError::OverlappingChunks {
                    series: series(),
                    prev_max_time: prev.max_time,
                    min_time: c.min_time,
                });
            }
            if c.chunk_ref <= prev.chunk_ref {
                return Err(IndexError::UnsortedChunkRefs {
                    series: series(),
                    prev_ref: prev.chunk_ref,
                    chunk_ref: c.chunk_ref,
                });
            }
        }
    }
    Ok(())
}

/// Encodes a complete index file for `series` (any order; they are sorted here) into `out`,
/// which is cleared first because every offset and alignment is relative to the file start.
/// Validates all input before writing; on error `out` holds nothing useful.
pub fn encode_index(
    mut series: Vec<IndexSeries<'_>>,
    out: &mut Vec<u8>,
) -> Result<IndexSummary, IndexError> {
    for s in &series {
        validate_series(s)?;
    }
    // Stable sort: parts written by several cores arrive as sorted runs, which it merges.
    series.sort_by(|a, b| a.labels.cmp(b.labels));
    if let Some(w) = series.windows(2).find(|w| w[0].labels == w[1].labels) {
        return Err(IndexError::DuplicateSeries {
            series: format_labels(w[0].labels),
        });
    }

    // Every name and value once, plus "" (see module docs), ascending bytewise. Deduplicated
    // by hash first: millions of label strings, but few distinct ones.
    let mut symbol_set: HashSet<&str, ahash::RandomState> = HashSet::default();
    symbol_set.insert("");
    for s in &series {
        for (n, v) in s.labels {
            symbol_set.insert(n);
            symbol_set.insert(v);
        }
    }
    let mut symbols: Vec<&str> = symbol_set.into_iter().collect();
    symbols.sort_unstable();
    if symbols.len() > u32::MAX as usize {
        return Err(IndexError::TooLarge {
            what: "symbol count",
            size: symbols.len() as u64,
        });
    }
    let symbol_ref: HashMap<&str, u32, ahash::RandomState> = symbols
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, i as u32))
        .collect();
    // Each series' labels as (name, value) symbol refs, resolved once for the series
    // entries and the postings. Symbol order is string order, so sorting by refs sorts by
    // strings.
    let mut label_refs: Vec<(u32, u32)> = Vec::new();
    let mut label_starts: Vec<usize> = Vec::with_capacity(series.len() + 1);
    for s in &series {
        label_starts.push(label_refs.len());
        for (n, v) in s.labels {
            label_refs.push((symbol_ref[n.as_str()], symbol_ref[v.as_str()]));
        }
    }
    label_starts.push(label_refs.len());
    let labels_of = |i: usize| &label_refs[label_starts[i]..label_starts[i + 1]];

    out.clear();
    let mut toc = Toc::default();
    put_be32(out, MAGIC_INDEX);
    out.push(INDEX_FORMAT_V2);
    debug_assert_eq!(out.len(), HEADER_LEN);

    // Symbols.
    toc.symbols = out.len() as u64;
    let start = begin_section(out);
    put_be32(out, symbols.len() as u32);
    for s in &symbols {
        put_uvarint_str(out, s);
    }
    end_section(out, start, "symbol table")?;

    // Series, remembering each one's ref for the postings.
    toc.series = out.len() as u64;
    let mut refs: Vec<u32> = Vec::with_capacity(series.len());
    let mut body = Vec::with_capacity(256);
    for (i, s) in series.iter().enumerate() {
        pad_to(out, SERIES_ALIGN);
        let r = out.len() / SERIES_ALIGN;
        if r > u32::MAX as usize {
            return Err(IndexError::TooLarge {
                what: "series section",
                size: out.len() as u64,
            });
        }
        refs.push(r as u32);
        body.clear();
        encode_series_body(&mut body, labels_of(i), s.chunks);
        put_uvarint(out, body.len() as u64);
        out.extend_from_slice(&body);
        put_be32(out, crc32c::crc32c(&body));
    }

    // Postings per label pair; series are visited in ref order, so every list is ascending.
    let mut by_pair: HashMap<(u32, u32), Vec<u32>, ahash::RandomState> = HashMap::default();
    for (i, &r) in refs.iter().enumerate() {
        for pair in labels_of(i) {
            by_pair.entry(*pair).or_default().push(r);
        }
    }
    let mut postings: Vec<((u32, u32), Vec<u32>)> = by_pair.into_iter().collect();
    postings.sort_unstable_by_key(|(pair, _)| *pair);

    // Label indices: values of each name as symbol refs (ascending symbol = ascending value).
    toc.label_indices = out.len() as u64;
    let mut label_index_offsets: Vec<(&str, u64)> = Vec::new();
    for same_name in postings.chunk_by(|a, b| a.0 .0 == b.0 .0) {
        let name = symbols[same_name[0].0 .0 as usize];
        pad_to(out, POSTINGS_ALIGN);
        label_index_offsets.push((name, out.len() as u64));
        let start = begin_section(out);
        put_be32(out, 1);
        put_be32(out, same_name.len() as u32);
        for ((_, v), _) in same_name {
            put_be32(out, *v);
        }
        end_section(out, start, "label index")?;
    }

    // Postings lists, the all-series list first.
    toc.postings = out.len() as u64;
    let mut postings_offsets: Vec<(&str, &str, u64)> = Vec::with_capacity(postings.len() + 1);
    write_postings(out, "", "", &refs, &mut postings_offsets)?;
    for ((n, v), list) in &postings {
        let (name, value) = (symbols[*n as usize], symbols[*v as usize]);
        write_postings(out, name, value, list, &mut postings_offsets)?;
    }

    // Label offset table.
    toc.label_indices_table = out.len() as u64;
    let start = begin_section(out);
    put_be32(out, label_index_offsets.len() as u32);
    for (name, off) in &label_index_offsets {
        put_uvarint(out, 1);
        put_uvarint_str(out, name);
        put_uvarint(out, *off);
    }
    end_section(out, start, "label offset table")?;

    // Postings offset table.
    toc.postings_table = out.len() as u64;
    let start = begin_section(out);
    put_be32(out, postings_offsets.len() as u32);
    for (name, value, off) in &postings_offsets {
        put_uvarint(out, 2);
        put_uvarint_str(out, name);
        put_uvarint_str(out, value);
        put_uvarint(out, *off);
    }
    end_section(out, start, "postings offset table")?;

    // TOC.
    let toc_start = out.len();
    for off in [
        toc.symbols,
        toc.series,
        toc.label_indices,
        toc.label_indices_table,
        toc.postings,
        toc.postings_table,
    ] {
        put_be64(out, off);
    }
    let crc = crc32c::crc32c(&out[toc_start..]);
    put_be32(out, crc);

    Ok(IndexSummary {
        num_series: series.len(),
        num_symbols: symbols.len(),
        num_postings: postings_offsets.len(),
        toc,
    })
}

/// Labels then chunk metas of one series entry (without the length prefix and CRC).
fn encode_series_body(body: &mut Vec<u8>, labels: &[(u32, u32)], chunks: &[ChunkMeta]) {
    put_uvarint(body, labels.len() as u64);
    for (n, v) in labels {
        put_uvarint(body, u64::from(*n));
        put_uvarint(body, u64::from(*v));
    }
    put_uvarint(body, chunks.len() as u64);
    if let Some((first, rest)) = chunks.split_first() {
        put_varint(body, first.min_time);
        // Validated: max ≥ min, later chunks start after the previous end and refs increase,
        // so the unsigned deltas below cannot wrap. Wrapping ops keep the bits Go writes even
        // for ranges that span most of i64.
        put_uvarint(body, first.max_time.wrapping_sub(first.min_time) as u64);
        put_uvarint(body, first.chunk_ref);
        let (mut prev_max, mut prev_ref) = (first.max_time, first.chunk_ref);
        for c in rest {
            put_uvarint(body, c.min_time.wrapping_sub(prev_max) as u64);
            put_uvarint(body, c.max_time.wrapping_sub(c.min_time) as u64);
            put_varint(body, c.chunk_ref.wrapping_sub(prev_ref) as i64);
            prev_max = c.max_time;
            prev_ref = c.chunk_ref;
        }
    }
}

fn write_postings<'a>(
    out: &mut Vec<u8>,
    name: &'a str,
    value: &'a str,
    list: &[u32],
    offsets: &mut Vec<(&'a str, &'a str, u64)>,
) -> Result<(), IndexError> {
    pad_to(out, POSTINGS_ALIGN);
    offsets.push((name, value, out.len() as u64));
    let start = begin_section(out);
    put_be32(out, list.len() as u32);
    out.reserve(list.len() * 4 + 4);
    for r in list {
        put_be32(out, *r);
    }
    end_section(out, start, "postings list")
}

/// Reserves the 4-byte length of a `len | body | CRC(body)` section; returns its position.
fn begin_section(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    put_be32(out, 0);
    at
}

/// Patches the length reserved at `len_at` and appends the CRC of the body.
fn end_section(out: &mut Vec<u8>, len_at: usize, what: &'static str) -> Result<(), IndexError> {
    let body_len = out.len() - len_at - 4;
    let len = u32::try_from(body_len).map_err(|_| IndexError::TooLarge {
        what,
        size: body_len as u64,
    })?;
    patch_be32(out, len_at, len);
    let crc = crc32c::crc32c(&out[len_at + 4..]);
    put_be32(out, crc);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_index_layout, open_index, read_series};
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn golden_one_series_one_chunk() {
        let labels = l(&[("a", "b")]);
        let chunks = [ChunkMeta {
            min_time: 1,
            max_time: 3,
            chunk_ref: 8,
        }];
        let mut out = Vec::new();
        let sum = encode_index(
            vec![IndexSeries {
                labels: &labels,
                chunks: &chunks,
            }],
            &mut out,
        )
        .unwrap();

        let crc = |b: &[u8]| crc32c::crc32c(b).to_be_bytes();
        let mut want = vec![0xBA, 0xAA, 0xD7, 0x00, 0x02];
        // Symbols at 5: "", "a", "b".
        let sym_body = [0, 0, 0, 3, 0, 1, b'a', 1, b'b'];
        want.extend_from_slice(&(sym_body.len() as u32).to_be_bytes());
        want.extend_from_slice(&sym_body);
        want.extend_from_slice(&crc(&sym_body));
        assert_eq!(want.len(), 22);
        // Series: padded to 32 (ref 2); 1 label (1, 2); 1 chunk: varint 1, 2, 8.
        want.resize(32, 0);
        let ser_body = [1, 1, 2, 1, 2, 2, 8];
        want.push(ser_body.len() as u8);
        want.extend_from_slice(&ser_body);
        want.extend_from_slice(&crc(&ser_body));
        assert_eq!(want.len(), 44);
        // Label index for "a" at 44 (already 4-aligned): 1 name, 1 entry, symbol 2.
        let li_body = [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
        want.extend_from_slice(&12u32.to_be_bytes());
        want.extend_from_slice(&li_body);
        want.extend_from_slice(&crc(&li_body));
        assert_eq!(want.len(), 64);
        // Postings ("","") at 64 and ("a","b") at 80: one series, ref 2.
        let p_body = [0, 0, 0, 1, 0, 0, 0, 2];
        for _ in 0..2 {
            want.extend_from_slice(&8u32.to_be_bytes());
            want.extend_from_slice(&p_body);
            want.extend_from_slice(&crc(&p_body));
        }
        assert_eq!(want.len(), 96);
        // Label offset table at 96.
        let lot_body = [0, 0, 0, 1, 1, 1, b'a', 44];
        want.extend_from_slice(&(lot_body.len() as u32).to_be_bytes());
        want.extend_from_slice(&lot_body);
        want.extend_from_slice(&crc(&lot_body));
        assert_eq!(want.len(), 112);
        // Postings offset table at 112.
        let pot_body = [0, 0, 0, 2, 2, 0, 0, 64, 2, 1, b'a', 1, b'b', 80];
        want.extend_from_slice(&(pot_body.len() as u32).to_be_bytes());
        want.extend_from_slice(&pot_body);
        want.extend_from_slice(&crc(&pot_body));
        // TOC.
        let toc_start = want.len();
        for off in [5u64, 22, 44, 96, 64, 112] {
            want.extend_from_slice(&off.to_be_bytes());
        }
        let c = crc(&want[toc_start..]);
        want.extend_from_slice(&c);

        assert_eq!(out, want);
        assert_eq!(
            sum.toc,
            Toc {
                symbols: 5,
                series: 22,
                label_indices: 44,
                label_indices_table: 96,
                postings: 64,
                postings_table: 112,
            }
        );
        assert_eq!(sum.num_symbols, 3);
        assert_eq!(sum.num_postings, 2);
    }

    #[test]
    fn round_trip_sorted_series_and_postings() {
        let sets = [
            l(&[("__name__", "up"), ("job", "b")]),
            l(&[("__name__", "up")]),
            l(&[("__name__", "a_metric"), ("instance", "x"), ("job", "a")]),
            l(&[("__name__", "up"), ("job", "a")]),
            l(&[("__name__", "up"), ("instance", "ü"), ("job", "a")]),
        ];
        let chunk_lists: Vec<Vec<ChunkMeta>> = (0..sets.len() as u64)
            .map(|i| {
                (0..3)
                    .map(|j| ChunkMeta {
                        min_time: -5_000 + j * 1000,
                        max_time: -5_000 + j * 1000 + 999,
                        chunk_ref: (i << 32) | (8 + j as u64 * 100),
                    })
                    .collect()
            })
            .collect();
        let input: Vec<IndexSeries> = sets
            .iter()
            .zip(&chunk_lists)
            .map(|(labels, chunks)| IndexSeries { labels, chunks })
            .collect();
        let mut out = Vec::new();
        let sum = encode_index(input, &mut out).unwrap();
        assert_eq!(sum.num_series, 5);

        let (_dir, r) = open_index(&out);
        let all = assert_index_layout(&r);
        assert_eq!(r.toc(), &sum.toc);
        assert_eq!(
            r.symbols(),
            ["", "__name__", "a", "a_metric", "b", "instance", "job", "up", "x", "ü"]
        );
        let series: Vec<_> = all.iter().map(|&s| read_series(&r, s)).collect();
        let mut want_order: Vec<_> = sets.iter().collect();
        want_order.sort();
        let got: Vec<_> = series.iter().map(|(labels, _)| labels).collect();
        assert_eq!(got, want_order);
        for (labels, chunks) in &series {
            let i = sets.iter().position(|x| x == labels).unwrap();
            assert_eq!(chunks, &chunk_lists[i]);
        }
        assert_eq!(r.postings("", "").unwrap(), all);
        // Postings keys come out sorted by name then value, each list ascending (the reader
        // refuses a list that is not).
        let keys: Vec<_> = r
            .postings_offsets()
            .into_iter()
            .map(|(n, v, _)| (n, v))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        let up: Vec<u32> = all
            .iter()
            .zip(&series)
            .filter(|(_, (labels, _))| labels[0].1 == "up")
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(r.postings("__name__", "up").unwrap(), up);
        let label_indices = r.label_indices().unwrap();
        let job = label_indices.iter().find(|l| l.name == "job").unwrap();
        assert_eq!(job.values, ["a", "b"]);
        assert_eq!(label_indices.len(), 3);
    }

    #[test]
    fn refuses_invalid_input() {
        let c = |min, max, r| ChunkMeta {
            min_time: min,
            max_time: max,
            chunk_ref: r,
        };
        let good = l(&[("a", "1")]);
        type Case = (Vec<(String, String)>, Vec<ChunkMeta>, &'static str);
        let cases: Vec<Case> = vec![
            (vec![], vec![], "empty label set"),
            (
                l(&[("b", "1"), ("a", "1")]),
                vec![],
                "not strictly ascending",
            ),
            (
                l(&[("a", "1"), ("a", "2")]),
                vec![],
                "not strictly ascending",
            ),
            (l(&[("", "1")]), vec![], "empty label name"),
            (l(&[("a", "")]), vec![], "empty value"),
            (good.clone(), vec![c(5, 4, 8)], "is after its max time"),
            (
                good.clone(),
                vec![c(1, 5, 8), c(5, 9, 20)],
                "overlaps the previous chunk",
            ),
            (
                good.clone(),
                vec![c(1, 5, 20), c(6, 9, 8)],
                "does not increase",
            ),
        ];
        for (labels, chunks, msg) in &cases {
            let err =
                encode_index(vec![IndexSeries { labels, chunks }], &mut Vec::new()).unwrap_err();
            assert!(err.to_string().contains(msg), "{err} vs {msg}");
        }
        let err = encode_index(
            vec![
                IndexSeries {
                    labels: &good,
                    chunks: &[],
                },
                IndexSeries {
                    labels: &good,
                    chunks: &[],
                },
            ],
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(err, IndexError::DuplicateSeries { .. }));
    }

    #[test]
    fn empty_index_is_well_formed() {
        let mut out = Vec::new();
        encode_index(Vec::new(), &mut out).unwrap();
        let (_dir, r) = open_index(&out);
        assert!(assert_index_layout(&r).is_empty());
        assert_eq!(r.symbols(), [""]);
        assert_eq!(r.postings("", "").unwrap(), Vec::<u32>::new());
    }
}
