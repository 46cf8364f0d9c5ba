//! Reads a sealed Prometheus TSDB block (`meta.json`, `index` format v2, `chunks/000001…`)
//! for the query path: label names and values, postings, series and XOR chunk bytes.
//!
//! Owns the read side of the block format and nothing else: it never writes, renames or
//! deletes block files (that is `mod.rs` and whoever manages retention), knows nothing about
//! query semantics (matchers, time filtering and sample decoding belong to the caller) and
//! does not decode XOR data (`crate::xor::XorIter` does).
//!
//! Cost model: [`BlockReader::open`] maps `index` and every segment, verifies the TOC, the
//! symbol table and the postings offset table (all CRCs), and keeps per block only the symbols
//! (one string arena plus 4 bytes each) and 16 bytes per postings-table entry. Everything
//! else is decoded on demand straight from the maps: a postings lookup is two binary searches
//! plus one list, a series is one entry, a chunk is a borrowed slice. Every list, entry and
//! chunk read is CRC-checked when it is read.
//!
//! Robustness: every offset, length and count comes from the files and is bounds-checked;
//! corrupt bytes give a [`BlockReadError`] naming the file, the structure and the byte
//! offset, never a panic or an out-of-bounds read.
//!
//! Format notes that matter for reading (see `index.rs`, `chunks.rs`, and Prometheus' format
//! pages <https://github.com/prometheus/prometheus/blob/main/tsdb/docs/format/index.md> and
//! <https://github.com/prometheus/prometheus/blob/main/tsdb/docs/format/chunks.md>):
//! - TOC entries point where the previous section ended, before alignment padding, so the
//!   first series sits at the TOC's series offset rounded up to 16.
//! - The deprecated label indices and label offset table are not read at open nor by
//!   queries: the postings offset table holds the same information (Prometheus 2.42 only
//!   parses their TOC entries, and 3.x no longer writes them). [`BlockReader::label_indices`]
//!   decodes them on request, with the other layout methods (TOC, symbols, postings
//!   offsets, series walk) that let tests check what the writer produced through this one
//!   reader.
//! - Chunk time deltas and ref deltas are decoded with wrapping arithmetic, as Go's decoder
//!   does: the writer produces wrapped values for ranges spanning most of `i64`.
//! - Chunks of other encodings (native histograms are 2 and 3 since Prometheus 2.40) are
//!   reported as [`BlockReadError::UnsupportedEncoding`] rather than as corruption.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::chunks::{split_chunk_ref, CHUNKS_FORMAT_V1, MAGIC_CHUNKS, SEGMENT_HEADER_LEN};
use super::index::{
    ChunkMeta, Toc, HEADER_LEN, INDEX_FORMAT_V2, MAGIC_INDEX, SERIES_ALIGN, TOC_LEN,
};
use super::meta::{BlockMeta, META_VERSION_1};
use crate::encoding::{unzigzag, uvarint, VarintError};
use crate::xor::ENCODING_XOR;

/// Everything that can go wrong reading a block. Each variant names the file; corruption
/// also names the structure and the byte offset where decoding failed.
#[derive(Debug, thiserror::Error)]
pub enum BlockReadError {
    /// An I/O call failed (open, stat, list, map).
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// `meta.json` is not valid JSON for a block meta.
    #[error("{}: invalid block meta: {source}", path.display())]
    Meta {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A file is unusable as a whole: too short, wrong magic or version, a gap in the
    /// segment numbering, an unsupported `meta.json` version.
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    /// Bytes inside a file do not decode: a CRC mismatch, a truncated or overflowing field,
    /// an out-of-range reference, a broken ordering the lookups rely on.
    #[error("{}: {what} at byte {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        /// The structure being decoded, e.g. "symbol table" or "series entry".
        what: &'static str,
        offset: u64,
        reason: Cow<'static, str>,
    },
    /// A series ref that cannot name a series entry of this block.
    #[error("{}: series ref {series_ref}: {reason}", path.display())]
    BadSeriesRef {
        path: PathBuf,
        series_ref: u32,
        reason: String,
    },
    /// A chunk ref that cannot name a chunk of this block.
    #[error("{}: chunk ref {chunk_ref:#x}: {reason}", path.display())]
    BadChunkRef {
        path: PathBuf,
        chunk_ref: u64,
        reason: String,
    },
    /// An intact chunk whose encoding is not XOR (e.g. a native histogram chunk).
    #[error("{}: chunk ref {chunk_ref:#x}: encoding {encoding} is not XOR (1)", path.display())]
    UnsupportedEncoding {
        path: PathBuf,
        chunk_ref: u64,
        encoding: u8,
    },
}

/// An open, immutable block. Cheap to share (`Send + Sync`, no interior mutability): put it
/// in an `Arc` and query it from any thread.
pub struct BlockReader {
    dir: PathBuf,
    meta: BlockMeta,
    index: Mmap,
    /// The section offsets, as stored.
    toc: Toc,
    /// Where the TOC starts: no section may reach into it.
    toc_start: usize,
    /// `[first possible series entry, end of the series section)`, bytes.
    series: Range<u64>,
    symbols: Symbols,
    /// Label names with postings (without the all-postings name ""), ascending.
    names: Vec<LabelName>,
    /// Values and postings offsets of all names, grouped by name, values ascending.
    entries: Vec<PostingsEntry>,
    /// Offset of the all-series postings list, key ("", "").
    all_postings: u64,
    /// Chunk segments in file order: a chunk ref's upper half indexes this.
    segments: Vec<Segment>,
}

/// One of the deprecated label indices ([`BlockReader::label_indices`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelIndex<'a> {
    /// The label name.
    pub name: &'a str,
    /// Where the label index starts in the `index` file.
    pub offset: u64,
    /// The name's values, in stored order (ascending).
    pub values: Vec<&'a str>,
}

/// The symbol table, copied out of the map once at open (validated UTF-8) so a symbol
/// ref → `&str` needs neither a re-validation nor `unsafe`.
#[derive(Debug, Default)]
struct Symbols {
    /// All symbols back to back.
    text: String,
    /// End of symbol `i` in `text`; it starts where symbol `i - 1` ends.
    ends: Vec<u32>,
}

/// One label name of the postings offset table.
#[derive(Debug)]
struct LabelName {
    /// Symbol ref of the name.
    name: u32,
    /// This name's slice of `BlockReader::entries`.
    values: Range<usize>,
}

#[derive(Debug, Clone, Copy)]
struct PostingsEntry {
    /// Symbol ref of the value.
    value: u32,
    /// Offset of the postings list in the index.
    offset: u64,
}

struct Segment {
    path: PathBuf,
    map: Mmap,
}

impl std::fmt::Debug for BlockReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockReader")
            .field("dir", &self.dir)
            .field("ulid", &self.meta.ulid)
            .field("index_bytes", &self.index.len())
            .field("symbols", &self.symbols.len())
            .field("postings", &self.entries.len())
            .field("segments", &self.segments.len())
            .finish()
    }
}

impl BlockReader {
    /// Opens the block in `dir`: reads `meta.json`, maps and checks `index` (magic, version,
    /// TOC, symbol table, postings offset table) and every `chunks/NNNNNN` (header, and
    /// numbering from `000001` without gaps, since chunk refs address files by position).
    pub fn open(dir: &Path) -> Result<BlockReader, BlockReadError> {
        let meta_path = dir.join("meta.json");
        let meta_bytes = std::fs::read(&meta_path).map_err(io_err("read", &meta_path))?;
        let meta = BlockMeta::from_json(&meta_bytes).map_err(|source| BlockReadError::Meta {
            path: meta_path.clone(),
            source,
        })?;
        if meta.version != META_VERSION_1 {
            return Err(BlockReadError::Invalid {
                path: meta_path,
                reason: format!("meta.json version {} (want {META_VERSION_1})", meta.version),
            });
        }

        let index_path = dir.join("index");
        let index = map_file(&index_path, (HEADER_LEN + TOC_LEN) as u64)?;
        let parsed = parse_index(&index).map_err(|b| b.into_error(&index_path))?;

        let segments = open_segments(&dir.join("chunks"))?;
        Ok(BlockReader {
            dir: dir.to_path_buf(),
            meta,
            index,
            toc: parsed.toc,
            toc_start: parsed.toc_start,
            series: parsed.series,
            symbols: parsed.symbols,
            names: parsed.names,
            entries: parsed.entries,
            all_postings: parsed.all_postings,
            segments,
        })
    }

    /// The block directory this reader was opened on.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed `meta.json`.
    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    /// Label names present (sorted, without the "" of the all-postings key).
    pub fn label_names(&self) -> Vec<&str> {
        self.names
            .iter()
            .filter_map(|n| self.symbols.get(n.name))
            .collect()
    }

    /// Values of `name`, sorted ascending (empty if the name is absent).
    pub fn label_values(&self, name: &str) -> Vec<&str> {
        self.values_of(name)
            .iter()
            .filter_map(|e| self.symbols.get(e.value))
            .collect()
    }

    /// Series refs (as stored in postings lists: series offset / 16), ascending, of the series
    /// with label `name`=`value`; empty if there are none. `("", "")` is the all-series list.
    /// Verifies the list's CRC.
    pub fn postings(&self, name: &str, value: &str) -> Result<Vec<u32>, BlockReadError> {
        if name.is_empty() {
            return if value.is_empty() {
                self.all_postings()
            } else {
                Ok(Vec::new())
            };
        }
        let values = self.values_of(name);
        let found = values.binary_search_by(|e| self.symbols.get_or_empty(e.value).cmp(value));
        match found.ok().and_then(|i| values.get(i)) {
            Some(e) => self.read_postings(e.offset),
            None => Ok(Vec::new()),
        }
    }

    /// All series refs of the block, ascending (the `("", "")` postings list).
    pub fn all_postings(&self) -> Result<Vec<u32>, BlockReadError> {
        self.read_postings(self.all_postings)
    }

    /// Decodes series `series_ref`: fills `labels` (names ascending, borrowed from the symbol
    /// table) and `chunks` (in time order). Both are cleared first, and cleared again on
    /// error. Verifies the series entry's CRC.
    pub fn series<'a>(
        &'a self,
        series_ref: u32,
        labels: &mut Vec<(&'a str, &'a str)>,
        chunks: &mut Vec<ChunkMeta>,
    ) -> Result<(), BlockReadError> {
        labels.clear();
        chunks.clear();
        let r = self.read_series(series_ref, labels, chunks);
        if r.is_err() {
            labels.clear();
            chunks.clear();
        }
        r
    }

    /// The XOR data (2-byte sample count header + bitstream, what `XorIter::new` takes) of
    /// chunk `chunk_ref`, borrowed from the segment map. Verifies the chunk's CRC (over the
    /// encoding byte and the data) and that its encoding is XOR.
    pub fn chunk(&self, chunk_ref: u64) -> Result<&[u8], BlockReadError> {
        let (file, offset) = split_chunk_ref(chunk_ref);
        let Some(seg) = self.segments.get(file as usize) else {
            return Err(BlockReadError::BadChunkRef {
                path: self.dir.join("chunks"),
                chunk_ref,
                reason: format!(
                    "segment file index {file}, but the block has {} segment files",
                    self.segments.len()
                ),
            });
        };
        if u64::from(offset) < SEGMENT_HEADER_LEN {
            return Err(BlockReadError::BadChunkRef {
                path: seg.path.clone(),
                chunk_ref,
                reason: format!("offset {offset} lies inside the segment header"),
            });
        }
        let (encoding, data) =
            read_chunk_record(&seg.map, offset as usize).map_err(|b| b.into_error(&seg.path))?;
        if encoding != ENCODING_XOR {
            return Err(BlockReadError::UnsupportedEncoding {
                path: seg.path.clone(),
                chunk_ref,
                encoding,
            });
        }
        Ok(data)
    }

    // --- layout: what a writer produced, for checking it; queries use the methods above ---

    /// The TOC: where each section of `index` starts.
    pub fn toc(&self) -> &Toc {
        &self.toc
    }

    /// The symbol table in stored order (ascending).
    pub fn symbols(&self) -> Vec<&str> {
        // The count is a u32, so every index fits.
        (0..self.symbols.len())
            .filter_map(|i| self.symbols.get(i as u32))
            .collect()
    }

    /// The postings offset table as stored: each (name, value) key with the offset of its
    /// postings list in `index`, the all-series key `("", "")` first, then ascending (open
    /// refuses a table out of order).
    pub fn postings_offsets(&self) -> Vec<(&str, &str, u64)> {
        let mut out = Vec::with_capacity(self.entries.len() + 1);
        out.push(("", "", self.all_postings));
        for n in &self.names {
            let name = self.symbols.get_or_empty(n.name);
            for e in self.entries.get(n.values.clone()).unwrap_or_default() {
                out.push((name, self.symbols.get_or_empty(e.value), e.offset));
            }
        }
        out
    }

    /// The refs of all series entries in file order, found by walking the series section:
    /// each entry starts 16-byte aligned with only zero bytes before it, and its length and
    /// CRC frame it (its body is decoded by [`BlockReader::series`]). Queries find series
    /// through postings; this shows whether the section holds exactly what they name.
    pub fn series_refs(&self) -> Result<Vec<u32>, BlockReadError> {
        // `series.end` is at most the TOC offset, a position in the map.
        let region = self
            .index
            .get(..self.series.end as usize)
            .unwrap_or_default();
        let start = usize::try_from(self.toc.series).unwrap_or(usize::MAX);
        walk_series(region, start).map_err(|b| b.into_error(&self.dir.join("index")))
    }

    /// The deprecated label indices, in the order of the label offset table: one per label
    /// name, with its values. Queries never need them (the postings offset table holds the
    /// same), so open does not read them; this decodes them, CRCs included, as Prometheus
    /// 2.x and `index.rs` lay them out (Prometheus 3.7 and later no longer write them).
    pub fn label_indices(&self) -> Result<Vec<LabelIndex<'_>>, BlockReadError> {
        let region = self.index.get(..self.toc_start).unwrap_or_default();
        let at = usize::try_from(self.toc.label_indices_table).unwrap_or(usize::MAX);
        decode_label_indices(&self.symbols, region, at)
            .map_err(|b| b.into_error(&self.dir.join("index")))
    }

    /// The postings-table entries of label `name` (empty if absent).
    fn values_of(&self, name: &str) -> &[PostingsEntry] {
        let found = self
            .names
            .binary_search_by(|n| self.symbols.get_or_empty(n.name).cmp(name));
        found
            .ok()
            .and_then(|i| self.names.get(i))
            .and_then(|n| self.entries.get(n.values.clone()))
            .unwrap_or_default()
    }

    fn read_postings(&self, offset: u64) -> Result<Vec<u32>, BlockReadError> {
        // An offset beyond usize is beyond the map too: let the bounds check report it.
        let at = usize::try_from(offset).unwrap_or(usize::MAX);
        let region = self.index.get(..self.toc_start).unwrap_or_default();
        decode_postings(region, at).map_err(|b| b.into_error(&self.dir.join("index")))
    }

    fn read_series<'a>(
        &'a self,
        series_ref: u32,
        labels: &mut Vec<(&'a str, &'a str)>,
        chunks: &mut Vec<ChunkMeta>,
    ) -> Result<(), BlockReadError> {
        let offset = u64::from(series_ref) * SERIES_ALIGN as u64;
        if !self.series.contains(&offset) {
            return Err(BlockReadError::BadSeriesRef {
                path: self.dir.join("index"),
                series_ref,
                reason: format!(
                    "offset {offset} lies outside the series section [{}, {})",
                    self.series.start, self.series.end
                ),
            });
        }
        // Both fit: `series.end` is at most the TOC offset, a position in the map.
        let region = self
            .index
            .get(..self.series.end as usize)
            .unwrap_or_default();
        decode_series_entry(&self.symbols, region, offset as usize, labels, chunks)
            .map_err(|b| b.into_error(&self.dir.join("index")))
    }
}

impl Symbols {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Symbol `i`, if it exists.
    fn get(&self, i: u32) -> Option<&str> {
        let i = i as usize;
        let end = *self.ends.get(i)? as usize;
        let start = match i.checked_sub(1) {
            Some(p) => *self.ends.get(p)? as usize,
            None => 0,
        };
        self.text.get(start..end)
    }

    /// Symbol `r`, read by a decoder of `what` at file offset `at`.
    fn resolve(&self, r: u64, what: &'static str, at: usize) -> Result<&str, Bad> {
        u32::try_from(r)
            .ok()
            .and_then(|r| self.get(r))
            .ok_or_else(|| Bad {
                what,
                at,
                reason: format!("symbol ref {r} out of range ({} symbols)", self.len()).into(),
            })
    }

    /// For refs that were resolved at open and therefore exist; "" keeps comparisons total.
    fn get_or_empty(&self, i: u32) -> &str {
        self.get(i).unwrap_or_default()
    }

    /// Ref of symbol `s` (symbols are strictly ascending, checked at open).
    fn find(&self, s: &str) -> Option<u32> {
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            // `mid < len ≤ u32::MAX + 1` (the count is a u32), so the cast is exact.
            match self.get(mid as u32)?.cmp(s) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Some(mid as u32),
            }
        }
        None
    }
}

// --- decoding ---------------------------------------------------------------------------

/// A decoding failure, before the file path is attached.
#[derive(Debug)]
pub(super) struct Bad {
    what: &'static str,
    at: usize,
    reason: Cow<'static, str>,
}

impl Bad {
    fn into_error(self, path: &Path) -> BlockReadError {
        BlockReadError::Corrupt {
            path: path.to_path_buf(),
            what: self.what,
            offset: self.at as u64,
            reason: self.reason,
        }
    }
}

/// A bounds-checked cursor over a region of a file. `pos` is always a file offset (a
/// section body starts at `base`, a whole-file prefix at 0), so errors report positions in
/// the file.
struct Dec<'a> {
    b: &'a [u8],
    /// File offset of `b[0]`.
    base: usize,
    pos: usize,
    what: &'static str,
}

impl<'a> Dec<'a> {
    fn new(b: &'a [u8], pos: usize, what: &'static str) -> Self {
        Dec {
            b,
            base: 0,
            pos,
            what,
        }
    }

    /// A cursor over `b`, which starts at file offset `base`.
    fn at_base(b: &'a [u8], base: usize, what: &'static str) -> Self {
        Dec {
            b,
            base,
            pos: base,
            what,
        }
    }

    fn bad(&self, reason: impl Into<Cow<'static, str>>) -> Bad {
        Bad {
            what: self.what,
            at: self.pos,
            reason: reason.into(),
        }
    }

    fn remaining(&self) -> usize {
        self.rest().len()
    }

    fn done(&self) -> bool {
        self.remaining() == 0
    }

    /// The bytes from `pos` to the end of the region.
    fn rest(&self) -> &'a [u8] {
        let b = self.b;
        self.pos
            .checked_sub(self.base)
            .and_then(|s| b.get(s..))
            .unwrap_or_default()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        match self.rest().get(..n) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(self.bad(format!(
                "truncated: {n} bytes needed, {} left",
                self.remaining()
            ))),
        }
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], Bad> {
        let s = self.take(N)?;
        // `take` returned exactly N bytes.
        s.try_into().map_err(|_| self.bad("short read"))
    }

    fn u8(&mut self) -> Result<u8, Bad> {
        let [b] = self.take_array()?;
        Ok(b)
    }

    fn be32(&mut self) -> Result<u32, Bad> {
        Ok(u32::from_be_bytes(self.take_array()?))
    }

    fn be64(&mut self) -> Result<u64, Bad> {
        Ok(u64::from_be_bytes(self.take_array()?))
    }

    /// Go's `binary.Uvarint`, including its rejection of a 10th byte above 1.
    fn uvarint(&mut self) -> Result<u64, Bad> {
        match uvarint(self.rest()) {
            Ok((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            Err(VarintError::Truncated) => Err(self.bad("truncated varint")),
            Err(VarintError::Overflow) => Err(self.bad("varint overflows 64 bits")),
        }
    }

    /// Go's `binary.Varint` (zigzag).
    fn varint(&mut self) -> Result<i64, Bad> {
        self.uvarint().map(unzigzag)
    }

    /// A uvarint used as a byte length or count.
    fn len(&mut self) -> Result<usize, Bad> {
        let at = self.pos;
        let v = self.uvarint()?;
        usize::try_from(v).map_err(|_| Bad {
            what: self.what,
            at,
            reason: format!("length {v} does not fit in memory").into(),
        })
    }

    /// A uvarint-length-prefixed UTF-8 string.
    fn str(&mut self) -> Result<&'a str, Bad> {
        let n = self.len()?;
        let at = self.pos;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes).map_err(|e| Bad {
            what: self.what,
            at,
            reason: format!("string is not UTF-8: {e}").into(),
        })
    }

    /// A `len(4) body CRC(body)` section starting at `pos`; returns the body and its file
    /// offset, CRC verified.
    fn section(&mut self) -> Result<(&'a [u8], usize), Bad> {
        let len = self.be32()? as usize;
        let body_at = self.pos;
        let body = self.take(len)?;
        let stored = self.be32()?;
        check_crc(stored, body, self.what, body_at)?;
        Ok((body, body_at))
    }
}

fn check_crc(stored: u32, body: &[u8], what: &'static str, body_at: usize) -> Result<(), Bad> {
    let computed = crc32c::crc32c(body);
    if stored == computed {
        Ok(())
    } else {
        Err(Bad {
            what,
            at: body_at,
            reason: format!(
                "CRC32C mismatch over {} bytes: stored {stored:#010x}, computed {computed:#010x}",
                body.len()
            )
            .into(),
        })
    }
}

/// What [`parse_index`] extracts at open.
#[derive(Debug)]
struct ParsedIndex {
    toc: Toc,
    toc_start: usize,
    series: Range<u64>,
    symbols: Symbols,
    names: Vec<LabelName>,
    entries: Vec<PostingsEntry>,
    all_postings: u64,
}

/// Checks header and TOC and parses the symbol table and postings offset table.
fn parse_index(b: &[u8]) -> Result<ParsedIndex, Bad> {
    let mut d = Dec::new(b, 0, "index header");
    if b.len() < HEADER_LEN + TOC_LEN {
        return Err(d.bad(format!(
            "file of {} bytes is shorter than header + TOC ({})",
            b.len(),
            HEADER_LEN + TOC_LEN
        )));
    }
    let magic = d.be32()?;
    if magic != MAGIC_INDEX {
        return Err(Bad {
            what: "index header",
            at: 0,
            reason: format!("magic {magic:#010x}, want {MAGIC_INDEX:#010x}").into(),
        });
    }
    let version = d.u8()?;
    if version != INDEX_FORMAT_V2 {
        return Err(Bad {
            what: "index header",
            at: 4,
            reason: format!("format version {version}, want {INDEX_FORMAT_V2}").into(),
        });
    }

    let toc_start = b.len() - TOC_LEN;
    let mut d = Dec::new(b, toc_start, "TOC");
    let toc_bytes = d.take(TOC_LEN - 4)?;
    let stored = d.be32()?;
    check_crc(stored, toc_bytes, "TOC", toc_start)?;
    let mut d = Dec::new(b, toc_start, "TOC");
    let toc = Toc {
        symbols: d.be64()?,
        series: d.be64()?,
        label_indices: d.be64()?,
        label_indices_table: d.be64()?,
        postings: d.be64()?,
        postings_table: d.be64()?,
    };
    let offsets = [
        ("symbols", toc.symbols),
        ("series", toc.series),
        ("label indices", toc.label_indices),
        ("label offset table", toc.label_indices_table),
        ("postings", toc.postings),
        ("postings offset table", toc.postings_table),
    ];
    for (name, off) in offsets {
        if off < HEADER_LEN as u64 || off > toc_start as u64 {
            return Err(Bad {
                what: "TOC",
                at: toc_start,
                reason: format!(
                    "{name} offset {off} lies outside the sections [{HEADER_LEN}, {toc_start}]"
                )
                .into(),
            });
        }
    }
    // Sections never reach into the TOC.
    let body = b.get(..toc_start).unwrap_or_default();

    // The series section ends where the next section starts, whichever that is (2.42 has
    // label indices next; 3.x points the label-index entries at the postings). Without
    // series that is the series offset itself: the section is empty.
    let series_end = offsets
        .iter()
        .filter(|&&(name, o)| name != "series" && o >= toc.series)
        .map(|&(_, o)| o)
        .min()
        .unwrap_or(toc_start as u64);
    let series = toc.series.div_ceil(SERIES_ALIGN as u64) * SERIES_ALIGN as u64..series_end;

    let symbols = parse_symbols(body, toc.symbols as usize)?;
    let table = parse_postings_table(body, toc.postings_table as usize, &symbols)?;
    Ok(ParsedIndex {
        toc,
        toc_start,
        series,
        symbols,
        names: table.names,
        entries: table.entries,
        all_postings: table.all_postings,
    })
}

/// The symbol table at `at`: `len(4) #symbols(4) {uvarint len, bytes}* CRC`, strictly
/// ascending (lookups binary-search it).
fn parse_symbols(b: &[u8], at: usize) -> Result<Symbols, Bad> {
    let (body, body_at) = Dec::new(b, at, "symbol table").section()?;
    decode_symbols(body, body_at)
}

fn decode_symbols(body: &[u8], body_at: usize) -> Result<Symbols, Bad> {
    let mut d = Dec::at_base(body, body_at, "symbol table");
    let count = d.be32()?;
    // Each symbol takes at least its length byte, so the body bounds any honest count and
    // a corrupt count cannot make us reserve much.
    let mut syms = Symbols {
        text: String::with_capacity(body.len()),
        ends: Vec::with_capacity((count as usize).min(body.len())),
    };
    let mut prev: Option<&str> = None;
    for i in 0..count {
        let at = d.pos;
        let s = d.str()?;
        if prev.is_some_and(|p| p >= s) {
            return Err(Bad {
                what: "symbol table",
                at,
                reason: format!("symbol {i} {s:?} is not after {:?}", prev.unwrap_or("")).into(),
            });
        }
        prev = Some(s);
        syms.text.push_str(s);
        // The text is at most the body, whose length is a u32.
        let end = u32::try_from(syms.text.len()).map_err(|_| d.bad("symbols exceed 4 GiB"))?;
        syms.ends.push(end);
    }
    if !d.done() {
        return Err(d.bad(format!(
            "{} bytes after the {count} symbols the table declares",
            d.remaining()
        )));
    }
    Ok(syms)
}

struct PostingsTable {
    names: Vec<LabelName>,
    entries: Vec<PostingsEntry>,
    all_postings: u64,
}

/// The postings offset table at `at`: `len(4) #entries(4) {uvarint 2, name, value, uvarint
/// offset}* CRC`, strictly ascending by (name, value), names and values resolved to symbols.
fn parse_postings_table(b: &[u8], at: usize, symbols: &Symbols) -> Result<PostingsTable, Bad> {
    let (body, body_at) = Dec::new(b, at, "postings offset table").section()?;
    decode_postings_table(body, body_at, symbols)
}

fn decode_postings_table(
    body: &[u8],
    body_at: usize,
    symbols: &Symbols,
) -> Result<PostingsTable, Bad> {
    let mut d = Dec::at_base(body, body_at, "postings offset table");
    let count = d.be32()?;
    // An entry is at least 4 bytes (key count, two empty strings, a one-byte offset).
    let mut entries: Vec<PostingsEntry> = Vec::with_capacity((count as usize).min(body.len() / 4));
    let mut names: Vec<LabelName> = Vec::new();
    let mut all_postings = None;
    let mut prev: Option<(&str, &str)> = None;
    for _ in 0..count {
        let at = d.pos;
        let bad = |reason: String| Bad {
            what: "postings offset table",
            at,
            reason: reason.into(),
        };
        let keys = d.uvarint()?;
        if keys != 2 {
            return Err(bad(format!("entry with {keys} keys, want 2")));
        }
        let name = d.str()?;
        let value = d.str()?;
        let offset = d.uvarint()?;
        if let Some((pn, pv)) = prev {
            if (pn, pv) >= (name, value) {
                return Err(bad(format!(
                    "key ({name:?}, {value:?}) is not after ({pn:?}, {pv:?})"
                )));
            }
        }
        if name.is_empty() {
            if !value.is_empty() {
                return Err(bad(format!("empty label name with value {value:?}")));
            }
            all_postings = Some(offset);
        } else {
            let value_ref = symbols
                .find(value)
                .ok_or_else(|| bad(format!("value {value:?} of {name:?} is not a symbol")))?;
            if prev.is_none_or(|(pn, _)| pn != name) {
                let name_ref = symbols
                    .find(name)
                    .ok_or_else(|| bad(format!("label name {name:?} is not a symbol")))?;
                names.push(LabelName {
                    name: name_ref,
                    values: entries.len()..entries.len(),
                });
            }
            entries.push(PostingsEntry {
                value: value_ref,
                offset,
            });
            if let Some(n) = names.last_mut() {
                n.values.end = entries.len();
            }
        }
        prev = Some((name, value));
    }
    if !d.done() {
        return Err(d.bad(format!(
            "{} bytes after the {count} entries the table declares",
            d.remaining()
        )));
    }
    let all_postings = all_postings.ok_or_else(|| Bad {
        what: "postings offset table",
        at: body_at,
        reason: "no all-series postings list (key \"\", \"\")".into(),
    })?;
    Ok(PostingsTable {
        names,
        entries,
        all_postings,
    })
}

/// The postings list at `at`: `len(4)=4+4n n(4) {series ref(4)}* CRC`, refs strictly
/// ascending (callers intersect and merge them).
fn decode_postings(b: &[u8], at: usize) -> Result<Vec<u32>, Bad> {
    let (body, body_at) = Dec::new(b, at, "postings list").section()?;
    decode_postings_body(body, body_at)
}

fn decode_postings_body(body: &[u8], body_at: usize) -> Result<Vec<u32>, Bad> {
    let mut d = Dec::at_base(body, body_at, "postings list");
    let n = d.be32()?;
    let refs = d.take(d.remaining())?;
    if refs.len() as u64 != 4 * u64::from(n) {
        return Err(Bad {
            what: "postings list",
            at: body_at,
            reason: format!("{n} entries declared, {} bytes of entries", refs.len()).into(),
        });
    }
    let mut out = Vec::with_capacity(n as usize);
    for (i, w) in refs.chunks_exact(4).enumerate() {
        let &[a, b, c, e] = w else { continue };
        let r = u32::from_be_bytes([a, b, c, e]);
        if out.last().is_some_and(|&p| p >= r) {
            return Err(Bad {
                what: "postings list",
                at: body_at + 4 + 4 * i,
                reason: format!("series ref {r} is not after {}", out.last().unwrap_or(&0)).into(),
            });
        }
        out.push(r);
    }
    Ok(out)
}

/// The series entry at `at`: `uvarint len, body, CRC(body)`.
fn decode_series_entry<'s>(
    symbols: &'s Symbols,
    region: &[u8],
    at: usize,
    labels: &mut Vec<(&'s str, &'s str)>,
    chunks: &mut Vec<ChunkMeta>,
) -> Result<(), Bad> {
    let (body, body_at, _) = series_frame(region, at)?;
    decode_series_body(symbols, body, body_at, labels, chunks)
}

/// The frame of the series entry at `at`, CRC checked: its body, the body's file offset and
/// where the entry ends.
fn series_frame(region: &[u8], at: usize) -> Result<(&[u8], usize, usize), Bad> {
    let mut d = Dec::new(region, at, "series entry");
    let len = d.len()?;
    if len == 0 {
        // Zero is alignment padding: the ref points between entries.
        return Err(d.bad("length 0: not the start of a series entry"));
    }
    let body_at = d.pos;
    let body = d.take(len)?;
    let stored = d.be32()?;
    check_crc(stored, body, "series entry", body_at)?;
    Ok((body, body_at, d.pos))
}

/// The series section from `start` (the TOC's offset, before the first entry's padding) to
/// the end of `region`: `{zero padding to 16, entry}*`. Returns the entries' refs.
fn walk_series(region: &[u8], start: usize) -> Result<Vec<u32>, Bad> {
    let mut refs = Vec::new();
    let mut at = start;
    while at < region.len() {
        let entry = at.next_multiple_of(SERIES_ALIGN);
        let padding = region.get(at..entry.min(region.len())).unwrap_or_default();
        if let Some(i) = padding.iter().position(|&b| b != 0) {
            return Err(Bad {
                what: "series section",
                at: at + i,
                reason: "non-zero byte in the padding before a series entry".into(),
            });
        }
        if entry >= region.len() {
            break;
        }
        let series_ref = u32::try_from(entry / SERIES_ALIGN).map_err(|_| Bad {
            what: "series section",
            at: entry,
            reason: "series entry beyond the 64 GiB that 32-bit refs reach".into(),
        })?;
        let (_, _, end) = series_frame(region, entry)?;
        refs.push(series_ref);
        at = end;
    }
    Ok(refs)
}

/// A series entry body (after the length, CRC already checked) starting at file offset
/// `body_at`: labels as symbol refs, then the delta-encoded chunk metas.
fn decode_series_body<'s>(
    symbols: &'s Symbols,
    body: &[u8],
    body_at: usize,
    labels: &mut Vec<(&'s str, &'s str)>,
    chunks: &mut Vec<ChunkMeta>,
) -> Result<(), Bad> {
    let mut d = Dec::at_base(body, body_at, "series entry");
    let sym = |d: &mut Dec<'_>| -> Result<&'s str, Bad> {
        let at = d.pos;
        symbols.resolve(d.uvarint()?, "series entry", at)
    };
    let n_labels = d.len()?;
    // Two bytes at least per label, three per chunk: caps what a corrupt count reserves.
    labels.reserve(n_labels.min(d.remaining() / 2));
    for _ in 0..n_labels {
        let name = sym(&mut d)?;
        let value = sym(&mut d)?;
        labels.push((name, value));
    }
    let n_chunks = d.len()?;
    chunks.reserve(n_chunks.min(d.remaining() / 3));
    let mut prev: Option<ChunkMeta> = None;
    for _ in 0..n_chunks {
        let at = d.pos;
        // Wrapping as Go does (see the module doc); only an inverted range is refused.
        let c = match prev {
            None => {
                let min_time = d.varint()?;
                let max_time = min_time.wrapping_add(d.uvarint()? as i64);
                let chunk_ref = d.uvarint()?;
                ChunkMeta {
                    min_time,
                    max_time,
                    chunk_ref,
                }
            }
            Some(p) => {
                let min_time = p.max_time.wrapping_add(d.uvarint()? as i64);
                let max_time = min_time.wrapping_add(d.uvarint()? as i64);
                let chunk_ref = p.chunk_ref.wrapping_add(d.varint()? as u64);
                ChunkMeta {
                    min_time,
                    max_time,
                    chunk_ref,
                }
            }
        };
        if c.max_time < c.min_time {
            return Err(Bad {
                what: "series entry",
                at,
                reason: format!(
                    "chunk max time {} is before its min time {}",
                    c.max_time, c.min_time
                )
                .into(),
            });
        }
        chunks.push(c);
        prev = Some(c);
    }
    if !d.done() {
        return Err(d.bad(format!("{} bytes after the chunk metas", d.remaining())));
    }
    Ok(())
}

/// The label offset table at `at`, `len(4) #entries(4) {uvarint 1, name, uvarint offset}*
/// CRC`, and the label index each entry points at.
fn decode_label_indices<'s>(
    symbols: &'s Symbols,
    region: &'s [u8],
    at: usize,
) -> Result<Vec<LabelIndex<'s>>, Bad> {
    let (body, body_at) = Dec::new(region, at, "label offset table").section()?;
    let mut d = Dec::at_base(body, body_at, "label offset table");
    let count = d.be32()?;
    // An entry is at least 3 bytes (key count, name length, offset).
    let mut out = Vec::with_capacity((count as usize).min(body.len() / 3));
    for _ in 0..count {
        let at = d.pos;
        let keys = d.uvarint()?;
        if keys != 1 {
            return Err(Bad {
                what: "label offset table",
                at,
                reason: format!("entry with {keys} keys, want 1").into(),
            });
        }
        let name = d.str()?;
        let offset = d.uvarint()?;
        // An offset beyond usize is beyond the region too: let the bounds check report it.
        let values = decode_label_index(
            symbols,
            region,
            usize::try_from(offset).unwrap_or(usize::MAX),
        )?;
        out.push(LabelIndex {
            name,
            offset,
            values,
        });
    }
    if !d.done() {
        return Err(d.bad(format!(
            "{} bytes after the {count} entries the table declares",
            d.remaining()
        )));
    }
    Ok(out)
}

/// The label index at `at`: `len(4) #names(4)=1 #values(4) {value symbol ref(4)}* CRC`.
fn decode_label_index<'s>(
    symbols: &'s Symbols,
    region: &[u8],
    at: usize,
) -> Result<Vec<&'s str>, Bad> {
    let (body, body_at) = Dec::new(region, at, "label index").section()?;
    let mut d = Dec::at_base(body, body_at, "label index");
    let names = d.be32()?;
    if names != 1 {
        return Err(Bad {
            what: "label index",
            at: body_at,
            reason: format!("{names} names per entry, want 1").into(),
        });
    }
    let count = d.be32()?;
    let mut values = Vec::with_capacity((count as usize).min(d.remaining() / 4));
    for _ in 0..count {
        let at = d.pos;
        values.push(symbols.resolve(u64::from(d.be32()?), "label index", at)?);
    }
    if !d.done() {
        return Err(d.bad(format!(
            "{} bytes after the {count} values the index declares",
            d.remaining()
        )));
    }
    Ok(values)
}

/// One chunk record at `at` in a segment: `uvarint len, encoding, data, CRC(encoding ‖
/// data)`. Returns (encoding, data).
pub(super) fn read_chunk_record(seg: &[u8], at: usize) -> Result<(u8, &[u8]), Bad> {
    let mut d = Dec::new(seg, at, "chunk");
    let len = d.len()?;
    let enc_at = d.pos;
    let encoding = d.u8()?;
    let data = d.take(len)?;
    let stored = d.be32()?;
    let computed = crc32c::crc32c_append(crc32c::crc32c(&[encoding]), data);
    if stored != computed {
        return Err(Bad {
            what: "chunk",
            at: enc_at,
            reason: format!(
                "CRC32C mismatch over {} bytes: stored {stored:#010x}, computed {computed:#010x}",
                len + 1
            )
            .into(),
        });
    }
    Ok((encoding, data))
}

/// Checks the magic and version at the start of a chunk segment.
pub(super) fn check_segment_header(seg: &[u8]) -> Result<(), String> {
    let magic = seg
        .get(..4)
        .and_then(|m| m.try_into().ok())
        .map(u32::from_be_bytes);
    let version = seg.get(4).copied();
    if magic != Some(MAGIC_CHUNKS) || version != Some(CHUNKS_FORMAT_V1) {
        return Err(format!(
            "segment header: magic {:#010x} version {}, want {MAGIC_CHUNKS:#010x} \
             version {CHUNKS_FORMAT_V1}",
            magic.unwrap_or(0),
            version.unwrap_or(0)
        ));
    }
    Ok(())
}

// --- files ------------------------------------------------------------------------------

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BlockReadError {
    let path = path.to_path_buf();
    move |source| BlockReadError::Io { op, path, source }
}

/// Maps `path` read-only after checking it holds at least `min_len` bytes.
fn map_file(path: &Path, min_len: u64) -> Result<Mmap, BlockReadError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    if len < min_len {
        return Err(BlockReadError::Invalid {
            path: path.to_path_buf(),
            reason: format!("{len} bytes, shorter than the minimum of {min_len}"),
        });
    }
    // SAFETY: a mapping is only sound while nobody modifies the file. Block files are
    // sealed: written once into a temporary directory, fsynced and renamed into place, and
    // never opened for writing again (this module has no write path at all). Deleting a
    // block only unlinks the files, which keeps mapped pages valid until we unmap.
    let map = unsafe { Mmap::map(&file) }.map_err(io_err("mmap", path))?;
    Ok(map)
}

/// Lists `chunks/`, keeps all-digit names as Prometheus does (other files are ignored), and
/// maps them in numeric order after checking they run 1, 2, … without a gap: refs address
/// segments by position, so a missing file would silently shift every later ref.
fn open_segments(chunks_dir: &Path) -> Result<Vec<Segment>, BlockReadError> {
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(chunks_dir).map_err(io_err("list", chunks_dir))? {
        let entry = entry.map_err(io_err("list", chunks_dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.is_empty() || !name.bytes().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(n) = name.parse::<u64>() {
            found.push((n, entry.path()));
        }
    }
    found.sort_unstable_by_key(|(n, _)| *n);
    let mut segments = Vec::with_capacity(found.len());
    for (i, (n, path)) in found.into_iter().enumerate() {
        if n != i as u64 + 1 {
            return Err(BlockReadError::Invalid {
                path,
                reason: format!(
                    "segment files must be numbered from 000001 without gaps; expected {:06}",
                    i + 1
                ),
            });
        }
        let map = map_file(&path, SEGMENT_HEADER_LEN)?;
        if let Err(reason) = check_segment_header(&map) {
            return Err(BlockReadError::Invalid { path, reason });
        }
        segments.push(Segment { path, map });
    }
    Ok(segments)
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
