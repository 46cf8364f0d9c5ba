//! Prometheus TSDB blocks: turns series with finished XOR chunks into a block directory that
//! Prometheus, `promtool` and Thanos read as their own.
//!
//! Owns the on-disk block format and the crash-safe way a block appears:
//! ```text
//! <dir>/<ULID>.tmp-for-creation/   built here, then fsynced and renamed to <dir>/<ULID>/
//!   chunks/000001 …                chunks.rs  (segment header, chunk records, refs)
//!   index                          index.rs   (format v2 as Prometheus 2.42 writes it)
//!   tombstones                     tombstones.rs (always empty)
//!   meta.json                      meta.rs    (Prometheus + Thanos sections; written as
//!                                              meta.json.tmp, fsynced, renamed)
//! ```
//! The encoders only append bytes to caller-owned buffers; `files.rs` is the one place that
//! does (std) file I/O, so moving chunk writes onto glommio DMA files later replaces that
//! layer only. This module must not know about the head, the WAL, cutting policy, object
//! storage or queries: a caller hands it finished chunks and labels and gets a sealed block.
//!
//! Crash safety: nothing is visible under `<dir>/<ULID>` until every file and directory was
//! fsynced and the temporary directory renamed (then the parent directory is fsynced). A
//! crash leaves at most a `*.tmp-for-creation` directory, which Prometheus ignores and which
//! the next `write_block` for the same ULID removes.
//!
//! Input rules (violations are errors, never a bad file): label names strictly ascending and
//! non-empty, values non-empty, no two series with the same label set, chunks of a series in
//! time order without overlap, every chunk a non-empty XOR chunk whose range lies inside the
//! block range. Series may come in any order: they are sorted by label set here, and their
//! chunks written in that order, so chunk refs grow with series order as in Prometheus.
//! Series without chunks are skipped; with no samples at all no block is written. Thanos
//! external labels must not be empty (Thanos groups and compacts blocks by them).
//!
//! Format subtleties found while matching Prometheus 2.42 (details in the submodules):
//! - the index's symbol table starts with the empty string, and it still carries the
//!   deprecated label indices and label offset table (`index.rs`);
//! - chunk refs use a 0-based file index although files are numbered from `000001`
//!   (`chunks.rs`);
//! - `meta.json` lists `meta.json` itself without a size and does not list `tombstones`
//!   (`meta.rs`); the empty tombstones file is 9 bytes (`tombstones.rs`);
//! - `promtool tsdb list|analyze` accept a directory holding only blocks, but `promtool tsdb
//!   dump` (its read-only querier replays the WAL) also wants a `wal/` directory next to
//!   them, as every Prometheus data directory has.
//!
//! With at most 120 samples per series in one range, `tests.rs` checks that our `index` and
//! `chunks/000001` are byte-identical to what `promtool tsdb create-blocks-from` writes for
//! the same samples. The index is built in memory (a few hundred bytes per series), which
//! is fine for a head block; a streaming variant can come with the DMA writer.

pub mod chunks;
pub mod dma;
mod files;
pub mod index;
pub mod meta;
pub mod reader;
pub mod tombstones;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ulid::Ulid;

use crate::xor::ENCODING_XOR;
use chunks::{ChunkError, DEFAULT_SEGMENT_SIZE};
use files::{create_dir, io_err, sync_dir, write_file_synced, SegmentFiles};
use index::{encode_index, validate_series, ChunkMeta, IndexError, IndexSeries};
use meta::{
    BlockCompaction, BlockMeta, BlockStats, ThanosDownsample, ThanosFile, ThanosMeta,
    META_VERSION_1, THANOS_VERSION_1,
};

/// Suffix of the directory a block is built in before it is renamed into place (the name
/// Prometheus' compactor uses, which its block loader skips).
pub const TMP_SUFFIX: &str = ".tmp-for-creation";

/// One finished chunk of a series: its XOR data (the bytes `XorChunk::bytes` returns) and
/// the timestamps of its first and last sample. `D` lets callers pass owned or borrowed
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockChunk<D = Vec<u8>> {
    pub min_time: i64,
    pub max_time: i64,
    pub data: D,
}

/// One series going into a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSeries<D = Vec<u8>> {
    /// Label pairs sorted by name (names strictly ascending), e.g. `__name__` first.
    pub labels: Vec<(String, String)>,
    /// Chunks in time order.
    pub chunks: Vec<BlockChunk<D>>,
}

/// How to write a block.
#[derive(Debug, Clone)]
pub struct BlockOptions {
    /// Thanos external labels (tenant, replica, …); must not be empty.
    pub external_labels: BTreeMap<String, String>,
    /// Thanos downsampling resolution in ms: 0 for raw data.
    pub resolution: i64,
    /// Thanos `source`, `"receive"` for blocks cut from our head.
    pub source: String,
    /// Segment file size limit.
    pub segment_size: u64,
    /// The block's ULID; a new one (current time + randomness) when `None`.
    pub ulid: Option<Ulid>,
    /// Half-open `[min, max)` range the block claims, e.g. the aligned block range being cut.
    /// When `None`: first sample to last sample + 1. Every chunk must lie inside it.
    pub time_range: Option<(i64, i64)>,
}

impl BlockOptions {
    /// Raw-resolution `receive` blocks with the given external labels.
    pub fn new(external_labels: BTreeMap<String, String>) -> Self {
        BlockOptions {
            external_labels,
            resolution: 0,
            source: "receive".to_string(),
            segment_size: DEFAULT_SEGMENT_SIZE,
            ulid: None,
            time_range: None,
        }
    }
}

/// A block that was written and renamed into place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenBlock {
    /// `<dir>/<ULID>`.
    pub path: PathBuf,
    /// What `meta.json` holds.
    pub meta: BlockMeta,
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid series for the block index: {0}")]
    Index(#[from] IndexError),
    #[error("chunk segments: {0}")]
    Chunks(#[from] ChunkError),
    #[error("series {series}: chunk {chunk}: {reason}")]
    InvalidChunk {
        series: String,
        chunk: usize,
        reason: &'static str,
    },
    #[error("series {series}: chunk [{min_time}, {max_time}] lies outside the block range [{block_min}, {block_max})")]
    OutOfRange {
        series: String,
        min_time: i64,
        max_time: i64,
        block_min: i64,
        block_max: i64,
    },
    #[error("invalid block time range [{0}, {1})")]
    BadTimeRange(i64, i64),
    #[error("a block written in parts needs its ULID and time range fixed before the parts begin")]
    PartsNeedUlidAndRange,
    #[error("Thanos blocks need at least one external label")]
    NoExternalLabels,
    #[error("block directory {} already exists", .0.display())]
    AlreadyExists(PathBuf),
    #[error("encode meta.json: {0}")]
    Meta(#[from] serde_json::Error),
}

/// Formats a label set for messages, close to Prometheus' `{a="b", c="d"}` (values use
/// Rust string escaping).
pub fn format_labels(labels: &[(String, String)]) -> String {
    let mut s = String::from("{");
    for (i, (n, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(n);
        s.push('=');
        s.push_str(&format!("{v:?}"));
    }
    s.push('}');
    s
}

/// Sample count from an XOR chunk's 2-byte header.
fn xor_num_samples(data: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(data.get(..2)?.try_into().ok()?))
}

/// Writes `series` as a block under `dir` (created if missing) and returns it, or `None`
/// when there is no sample to write. Validates everything before touching the disk; on an
/// I/O error the temporary directory is removed (best effort).
pub fn write_block<D: AsRef<[u8]>>(
    dir: &Path,
    series: impl IntoIterator<Item = BlockSeries<D>>,
    opts: &BlockOptions,
) -> Result<Option<WrittenBlock>, BlockError> {
    if opts.external_labels.is_empty() {
        return Err(BlockError::NoExternalLabels);
    }
    if let Some((min, max)) = opts.time_range {
        if min >= max {
            return Err(BlockError::BadTimeRange(min, max));
        }
    }

    let mut series: Vec<BlockSeries<D>> = series
        .into_iter()
        .filter(|s| !s.chunks.is_empty())
        .collect();
    series.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));

    // Validate and count before anything is written.
    let mut stats = BlockStats::default();
    let (mut min_t, mut max_t) = (i64::MAX, i64::MIN);
    let mut scratch: Vec<ChunkMeta> = Vec::new();
    for (i, s) in series.iter().enumerate() {
        if i > 0 && series[i - 1].labels == s.labels {
            return Err(IndexError::DuplicateSeries {
                series: format_labels(&s.labels),
            }
            .into());
        }
        scratch.clear();
        for (j, c) in s.chunks.iter().enumerate() {
            let invalid = |reason| BlockError::InvalidChunk {
                series: format_labels(&s.labels),
                chunk: j,
                reason,
            };
            let n = xor_num_samples(c.data.as_ref())
                .ok_or_else(|| invalid("XOR data shorter than its 2-byte header"))?;
            if n == 0 {
                return Err(invalid("chunk holds no samples"));
            }
            if n == 1 && c.min_time != c.max_time {
                return Err(invalid("one-sample chunk with min time != max time"));
            }
            if let Some((bmin, bmax)) = opts.time_range {
                if c.min_time < bmin || c.max_time >= bmax {
                    return Err(BlockError::OutOfRange {
                        series: format_labels(&s.labels),
                        min_time: c.min_time,
                        max_time: c.max_time,
                        block_min: bmin,
                        block_max: bmax,
                    });
                }
            }
            stats.num_samples += u64::from(n);
            min_t = min_t.min(c.min_time);
            max_t = max_t.max(c.max_time);
            // Refs are not known yet; increasing placeholders let the index check the rest.
            scratch.push(ChunkMeta {
                min_time: c.min_time,
                max_time: c.max_time,
                chunk_ref: j as u64,
            });
        }
        validate_series(&IndexSeries {
            labels: &s.labels,
            chunks: &scratch,
        })?;
        stats.num_chunks += s.chunks.len() as u64;
    }
    stats.num_series = series.len() as u64;
    if stats.num_samples == 0 {
        return Ok(None);
    }
    let (block_min, block_max) = match opts.time_range {
        Some(r) => r,
        None => (
            min_t,
            max_t
                .checked_add(1)
                .ok_or(BlockError::BadTimeRange(min_t, max_t))?,
        ),
    };

    // Not `unwrap_or_default()` as clippy suggests: `Ulid::default()` is the nil ULID.
    let ulid = match opts.ulid {
        Some(u) => u,
        None => Ulid::new(),
    };
    let tmp_dir = begin_block(dir, ulid)?;
    let meta = new_meta(ulid, (block_min, block_max), stats, opts);
    let result = write_chunks(&tmp_dir, &series, opts).and_then(|(metas, segment_files)| {
        let index_series = series
            .iter()
            .zip(&metas)
            .map(|(s, m)| IndexSeries {
                labels: &s.labels,
                chunks: m,
            })
            .collect();
        finish_contents(&tmp_dir, index_series, &segment_files, meta)
    });
    rename_into_place(dir, &tmp_dir, ulid, result).map(Some)
}

/// Creates the temporary directory of block `ulid` under `dir` with an empty `chunks/`
/// (removing one a crash left behind) and returns its path.
pub fn begin_block(dir: &Path, ulid: Ulid) -> Result<PathBuf, BlockError> {
    let final_dir = dir.join(ulid.to_string());
    if final_dir.exists() {
        return Err(BlockError::AlreadyExists(final_dir));
    }
    std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let tmp_dir = dir.join(format!("{ulid}{TMP_SUFFIX}"));
    if tmp_dir.exists() {
        // Left over by a crash while writing this same block.
        std::fs::remove_dir_all(&tmp_dir).map_err(io_err("remove stale", &tmp_dir))?;
    }
    create_dir(&tmp_dir)?;
    create_dir(&tmp_dir.join("chunks"))?;
    Ok(tmp_dir)
}

/// Removes every `*.tmp-for-creation` directory under `dir` (blocks a crash interrupted;
/// their data is still in the WAL). Returns how many were removed.
pub fn remove_unfinished(dir: &Path) -> Result<usize, BlockError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut n = 0;
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().ends_with(TMP_SUFFIX) {
            let p = e.path();
            std::fs::remove_dir_all(&p).map_err(io_err("remove unfinished block", &p))?;
            n += 1;
        }
    }
    Ok(n)
}

/// One series of a block written in parts: its labels and the chunks a part writer
/// ([`dma::DmaSegmentWriter`]) already wrote, with their refs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSeries {
    /// Label pairs sorted by name (names strictly ascending).
    pub labels: Vec<(String, String)>,
    /// Chunks in time order with refs into the block's segment files.
    pub chunks: Vec<ChunkMeta>,
    /// Samples in those chunks (for `meta.json` stats).
    pub num_samples: u64,
}

/// Seals a block whose chunk segments the parts already wrote into `tmp_dir` (from
/// [`begin_block`]): writes the index over every part's series (any order; duplicates are
/// an error), the tombstones and `meta.json`, fsyncs, and renames the block into place.
/// `opts.ulid` and `opts.time_range` are required: they were fixed when the parts began.
/// On error the temporary directory is removed.
pub fn seal_block(
    dir: &Path,
    tmp_dir: &Path,
    series: Vec<PartSeries>,
    segment_files: &[(String, u64)],
    opts: &BlockOptions,
) -> Result<WrittenBlock, BlockError> {
    let (Some(ulid), Some((block_min, block_max))) = (opts.ulid, opts.time_range) else {
        return Err(BlockError::PartsNeedUlidAndRange);
    };
    let result = (|| {
        if opts.external_labels.is_empty() {
            return Err(BlockError::NoExternalLabels);
        }
        if block_min >= block_max {
            return Err(BlockError::BadTimeRange(block_min, block_max));
        }
        let mut stats = BlockStats::default();
        for s in &series {
            for c in &s.chunks {
                if c.min_time < block_min || c.max_time >= block_max {
                    return Err(BlockError::OutOfRange {
                        series: format_labels(&s.labels),
                        min_time: c.min_time,
                        max_time: c.max_time,
                        block_min,
                        block_max,
                    });
                }
            }
            stats.num_chunks += s.chunks.len() as u64;
            stats.num_samples += s.num_samples;
        }
        stats.num_series = series.iter().filter(|s| !s.chunks.is_empty()).count() as u64;
        let meta = new_meta(ulid, (block_min, block_max), stats, opts);
        let index_series = series
            .iter()
            .filter(|s| !s.chunks.is_empty())
            .map(|s| IndexSeries {
                labels: &s.labels,
                chunks: &s.chunks,
            })
            .collect();
        finish_contents(tmp_dir, index_series, segment_files, meta)
    })();
    rename_into_place(dir, tmp_dir, ulid, result)
}

/// `meta.json` of a new level-1 block; the Thanos file list is filled in when sealing.
fn new_meta(
    ulid: Ulid,
    (min, max): (i64, i64),
    stats: BlockStats,
    opts: &BlockOptions,
) -> BlockMeta {
    BlockMeta {
        ulid,
        min_time: min,
        max_time: max,
        stats,
        compaction: BlockCompaction {
            level: 1,
            sources: vec![ulid],
        },
        version: META_VERSION_1,
        thanos: Some(ThanosMeta {
            version: THANOS_VERSION_1,
            labels: opts.external_labels.clone(),
            downsample: ThanosDownsample {
                resolution: opts.resolution,
            },
            source: opts.source.clone(),
            files: Vec::new(),
        }),
    }
}

/// Renames a filled temporary directory into place (and syncs `dir`), or removes it when
/// filling failed.
fn rename_into_place(
    dir: &Path,
    tmp_dir: &Path,
    ulid: Ulid,
    filled: Result<BlockMeta, BlockError>,
) -> Result<WrittenBlock, BlockError> {
    match filled {
        Ok(meta) => {
            let final_dir = dir.join(ulid.to_string());
            std::fs::rename(tmp_dir, &final_dir).map_err(io_err("rename", tmp_dir))?;
            if let Err(e) = sync_dir(dir) {
                // Not known to be durable: take it back rather than let a retry write a
                // second block over the same range.
                let _ = std::fs::remove_dir_all(&final_dir);
                return Err(e);
            }
            Ok(WrittenBlock {
                path: final_dir,
                meta,
            })
        }
        Err(e) => {
            // Best effort: the error that matters is `e`; a leftover is removed next time.
            let _ = std::fs::remove_dir_all(tmp_dir);
            Err(e)
        }
    }
}

/// Writes the chunk segments of `series` (std I/O) into the temporary directory; returns the
/// chunk metas per series and the segment files.
#[allow(clippy::type_complexity)]
fn write_chunks<D: AsRef<[u8]>>(
    tmp_dir: &Path,
    series: &[BlockSeries<D>],
    opts: &BlockOptions,
) -> Result<(Vec<Vec<ChunkMeta>>, Vec<(String, u64)>), BlockError> {
    let mut segments = SegmentFiles::new(&tmp_dir.join("chunks"), opts.segment_size)?;
    let mut metas: Vec<Vec<ChunkMeta>> = Vec::with_capacity(series.len());
    for s in series {
        let mut m = Vec::with_capacity(s.chunks.len());
        for c in &s.chunks {
            m.push(ChunkMeta {
                min_time: c.min_time,
                max_time: c.max_time,
                chunk_ref: segments.append(ENCODING_XOR, c.data.as_ref())?,
            });
        }
        metas.push(m);
    }
    Ok((metas, segments.finish()?))
}

/// Completes a temporary block directory whose chunk segments are written: index,
/// tombstones, meta.json (with the Thanos file list); everything fsynced.
fn finish_contents(
    tmp_dir: &Path,
    index_series: Vec<IndexSeries<'_>>,
    segment_files: &[(String, u64)],
    mut meta: BlockMeta,
) -> Result<BlockMeta, BlockError> {
    let mut index_bytes = Vec::new();
    encode_index(index_series, &mut index_bytes)?;
    let index_path = tmp_dir.join("index");
    write_file_synced(&index_path, &index_bytes)?;
    let index_len = index_bytes.len() as u64;
    drop(index_bytes);

    write_file_synced(&tmp_dir.join("tombstones"), &tombstones::empty_tombstones())?;

    // Sorted by path: "chunks/…" < "index" < "meta.json".
    let mut files: Vec<ThanosFile> = segment_files
        .iter()
        .map(|(name, size)| ThanosFile {
            rel_path: format!("chunks/{name}"),
            size_bytes: *size as i64,
        })
        .collect();
    files.push(ThanosFile {
        rel_path: "index".into(),
        size_bytes: index_len as i64,
    });
    files.push(ThanosFile {
        rel_path: "meta.json".into(),
        size_bytes: 0,
    });
    if let Some(t) = &mut meta.thanos {
        t.files = files;
    }

    let meta_tmp = tmp_dir.join("meta.json.tmp");
    let meta_path = tmp_dir.join("meta.json");
    write_file_synced(&meta_tmp, &meta.to_json()?)?;
    std::fs::rename(&meta_tmp, &meta_path).map_err(io_err("rename", &meta_tmp))?;
    sync_dir(tmp_dir)?;
    Ok(meta)
}
