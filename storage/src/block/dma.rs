//! Chunk segment files written with direct I/O on a glommio executor (O_DIRECT, io_uring):
//! what each core uses to write its part of a block without going through the page cache
//! or blocking its executor.
//!
//! Owns only moving encoded bytes into files: the layout and the refs are `chunks.rs`'s
//! ([`SegmentEncoder`]). Must run on a glommio executor; must not know about series, the
//! index or how the block is sealed.

use std::path::{Path, PathBuf};

use futures::AsyncWriteExt;
use glommio::io::{DmaStreamWriter, DmaStreamWriterBuilder, OpenOptions};

use super::chunks::{segment_file_name, SegmentEncoder, SEGMENT_HEADER_LEN};
use super::files::{file_name, glommio_err, io_err, sync_dir};
use super::BlockError;

/// Bytes encoded before they are handed to the stream writer. The writer itself keeps
/// `WRITE_BEHIND` aligned buffers of `BUFFER_BYTES` in flight: small enough for the locked
/// memory a glommio executor may use, large enough that the disk sees big sequential writes.
const STAGE_BYTES: usize = 1 << 20;
const BUFFER_BYTES: usize = 1 << 20;
const WRITE_BEHIND: usize = 4;

/// Writes a sequence of chunk segment files into a `chunks/` directory.
pub struct DmaSegmentWriter {
    dir: PathBuf,
    enc: SegmentEncoder,
    stage: Vec<u8>,
    current: Option<(DmaStreamWriter, PathBuf)>,
    /// (file name, size) of every finished segment, in order.
    finished: Vec<(String, u64)>,
    max_segment_size: u64,
    /// Bytes still expected (from [`with_size_hint`](Self::with_size_hint)), for
    /// pre-allocating each segment.
    remaining: u64,
}

impl DmaSegmentWriter {
    /// A writer whose first segment is file index `first_file` (`000001` is index 0).
    pub fn new(dir: &Path, first_file: u32, max_segment_size: u64) -> Result<Self, BlockError> {
        Ok(DmaSegmentWriter {
            dir: dir.to_path_buf(),
            enc: SegmentEncoder::new(max_segment_size)?.starting_at(first_file),
            stage: Vec::with_capacity(STAGE_BYTES + (64 << 10)),
            current: None,
            finished: Vec::new(),
            max_segment_size,
            remaining: 0,
        })
    }

    /// Tells the writer how many bytes of chunks (headers included) it will get, so every
    /// segment file can be allocated before it is written.
    pub fn with_size_hint(mut self, bytes: u64) -> Self {
        self.remaining = bytes;
        self
    }

    /// Appends one chunk (starting the next segment file when needed); returns its ref.
    pub async fn append(&mut self, encoding: u8, data: &[u8]) -> Result<u64, BlockError> {
        if self.enc.needs_new_segment(data.len()) {
            self.finish_segment().await?;
            let index = self.enc.start_segment(&mut self.stage)?;
            let path = self.dir.join(segment_file_name(index));
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .dma_open(&path)
                .await
                .map_err(glommio_err("create", &path))?;
            // Allocate the segment's blocks up front: on ext4, O_DIRECT writes past the end of
            // the file are punted by io_uring to its worker threads and served one at a time,
            // writes inside the allocated size are not. `finish_segment` trims the file to
            // what was written.
            if self.remaining > 0 {
                let size = (self.remaining + SEGMENT_HEADER_LEN).min(self.max_segment_size);
                file.pre_allocate(size, false)
                    .await
                    .map_err(glommio_err("pre-allocate", &path))?;
            }
            let writer = DmaStreamWriterBuilder::new(file)
                .with_buffer_size(BUFFER_BYTES)
                .with_write_behind(WRITE_BEHIND)
                .build();
            self.current = Some((writer, path));
        }
        let r = self.enc.append_chunk(&mut self.stage, encoding, data)?;
        self.remaining = self
            .remaining
            .saturating_sub(SegmentEncoder::encoded_len(data.len()));
        if self.stage.len() >= STAGE_BYTES {
            self.flush().await?;
        }
        Ok(r)
    }

    async fn flush(&mut self) -> Result<(), BlockError> {
        if let Some((w, path)) = &mut self.current {
            w.write_all(&self.stage)
                .await
                .map_err(io_err("write", path))?;
        }
        self.stage.clear();
        Ok(())
    }

    async fn finish_segment(&mut self) -> Result<(), BlockError> {
        self.flush().await?;
        if let Some((mut w, path)) = self.current.take() {
            // Closing syncs the data and then truncates the padded last page away; the
            // truncation changes the size, so the file is synced once more.
            w.close().await.map_err(io_err("close", &path))?;
            // Closing synced the data and cut a padded last page, but a pre-allocated file
            // may be longer still: set the exact size and sync that too.
            let len = self.enc.segment_len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| {
                    f.set_len(len)?;
                    f.sync_all()
                })
                .map_err(io_err("trim and fsync", &path))?;
            self.finished
                .push((file_name(&path), self.enc.segment_len()));
        }
        Ok(())
    }

    /// Flushes and syncs the last segment and the directory; returns (name, size) of every
    /// segment file this writer wrote.
    pub async fn finish(mut self) -> Result<Vec<(String, u64)>, BlockError> {
        self.finish_segment().await?;
        sync_dir(&self.dir)?;
        Ok(self.finished)
    }
}

#[cfg(test)]
mod tests {
    use super::super::index::ChunkMeta;
    use super::super::reader::BlockReader;
    use super::super::tests::{ext_labels, test_series, to_block_series};
    use super::super::{begin_block, seal_block, BlockOptions, PartSeries};
    use super::*;
    use crate::xor::ENCODING_XOR;

    /// Two parts (as two cores would) write their series with direct I/O, file numbers
    /// agreed up front; the sealed block reads back exactly.
    #[test]
    fn a_block_written_in_parts_reads_back_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("blocks");
        let data = to_block_series(&test_series(60));
        let (min, max) = data
            .iter()
            .flat_map(|s| s.chunks.iter())
            .fold((i64::MAX, i64::MIN), |(a, b), c| {
                (a.min(c.min_time), b.max(c.max_time))
            });
        let segment_size = 4096; // several segments per part
        let parts: Vec<Vec<_>> = vec![
            data.iter().step_by(2).cloned().collect(),
            data.iter().skip(1).step_by(2).cloned().collect(),
        ];
        let counts: Vec<u32> = parts
            .iter()
            .map(|p| {
                let lens = p.iter().flat_map(|s| s.chunks.iter().map(|c| c.data.len()));
                SegmentEncoder::segments_needed(segment_size, lens).unwrap()
            })
            .collect();
        assert!(counts.iter().all(|c| *c > 1), "{counts:?}");
        let ulid = ulid::Ulid::new();
        let tmp_dir = begin_block(&dir, ulid).unwrap();
        let chunks_dir = tmp_dir.join("chunks");
        let (series, files) = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let mut series = Vec::new();
                let mut files = Vec::new();
                let mut first = 0;
                for (part, count) in parts.into_iter().zip(counts) {
                    let hint: u64 = part
                        .iter()
                        .flat_map(|s| s.chunks.iter())
                        .map(|c| SegmentEncoder::encoded_len(c.data.len()))
                        .sum();
                    let mut w = DmaSegmentWriter::new(&chunks_dir, first, segment_size)
                        .unwrap()
                        .with_size_hint(hint);
                    for s in part {
                        let mut chunks = Vec::new();
                        let mut n = 0;
                        for c in &s.chunks {
                            n += u64::from(u16::from_be_bytes([c.data[0], c.data[1]]));
                            chunks.push(ChunkMeta {
                                min_time: c.min_time,
                                max_time: c.max_time,
                                chunk_ref: w.append(ENCODING_XOR, &c.data).await.unwrap(),
                            });
                        }
                        series.push(PartSeries {
                            labels: s.labels.clone(),
                            chunks,
                            num_samples: n,
                        });
                    }
                    let written = w.finish().await.unwrap();
                    assert_eq!(written.len() as u32, count, "plan and write agree");
                    files.extend(written);
                    first += count;
                }
                (series, files)
            })
            .unwrap()
            .join()
            .unwrap();
        for (name, size) in &files {
            let on_disk = std::fs::metadata(tmp_dir.join("chunks").join(name))
                .unwrap()
                .len();
            assert_eq!(
                on_disk, *size,
                "{name}: padding or pre-allocation was not cut off"
            );
        }
        let mut opts = BlockOptions::new(ext_labels());
        opts.ulid = Some(ulid);
        opts.time_range = Some((min, max + 1));
        let written = seal_block(&dir, &tmp_dir, series, &files, &opts).unwrap();
        assert!(!tmp_dir.exists());
        let total: u64 = data
            .iter()
            .flat_map(|s| s.chunks.iter())
            .map(|c| u64::from(u16::from_be_bytes([c.data[0], c.data[1]])))
            .sum();
        assert_eq!(written.meta.stats.num_samples, total);
        assert_eq!(written.meta.stats.num_series, data.len() as u64);

        let r = BlockReader::open(&written.path).unwrap();
        let refs = r.all_postings().unwrap();
        assert_eq!(refs.len(), data.len());
        let mut labels = Vec::new();
        let mut metas = Vec::new();
        let mut sorted = data.clone();
        sorted.sort_by(|a, b| a.labels.cmp(&b.labels));
        for (r_ref, want) in refs.iter().zip(&sorted) {
            r.series(*r_ref, &mut labels, &mut metas).unwrap();
            let got: Vec<(String, String)> = labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, want.labels);
            assert_eq!(metas.len(), want.chunks.len());
            for (m, c) in metas.iter().zip(&want.chunks) {
                assert_eq!((m.min_time, m.max_time), (c.min_time, c.max_time));
                assert_eq!(r.chunk(m.chunk_ref).unwrap(), &c.data[..]);
            }
        }
    }
}
