//! Chunk segment files of a block (`chunks/000001`, `chunks/000002`, …), byte-exact with
//! Prometheus' `tsdb/chunks` writer.
//!
//! Owns the segment layout and the chunk references; it does **no I/O**: [`SegmentEncoder`]
//! appends bytes to a caller-owned buffer and tells the caller when a new segment file must
//! begin, so the file layer (std files today, glommio DMA files later) only moves bytes. It
//! must not touch chunk *data* (that is `crate::xor`) or the index.
//!
//! Layout (Prometheus' format page,
//! <https://github.com/prometheus/prometheus/blob/main/tsdb/docs/format/chunks.md>):
//! - segment header, 8 bytes: magic `0x85BD40DD` (BE), version `1`, 3 zero bytes;
//! - each chunk: `uvarint len(data)`, encoding byte, data, CRC32C(encoding ‖ data) BE.
//!
//! Subtleties:
//! - Chunk references are `(file index << 32) | byte offset` with a **0-based** file index:
//!   file `000001` is index 0, and the first chunk of a block has ref 8 (right after the
//!   header). Offsets are therefore limited to 32 bits, which caps a segment at 4 GiB.
//! - A new segment starts before a chunk would make the current one exceed the size limit
//!   (512 MiB by default), but never while the current segment holds no chunk: a chunk larger
//!   than the limit gets a segment of its own instead of an endless cut loop. Prometheus
//!   estimates the length varint as 5 bytes when deciding; we use the exact size, which only
//!   ever fits a chunk or two more into a segment and does not change the format.
//! - The CRC covers the encoding byte and the data, not the length varint.

use crate::encoding::{put_be32, put_uvarint, uvarint_len};

/// Magic number at the start of every chunk segment file.
pub const MAGIC_CHUNKS: u32 = 0x85BD_40DD;
/// Segment file format version.
pub const CHUNKS_FORMAT_V1: u8 = 1;
/// Bytes of the segment header (magic, version, 3 bytes padding).
pub const SEGMENT_HEADER_LEN: u64 = 8;
/// Prometheus' default segment size limit.
pub const DEFAULT_SEGMENT_SIZE: u64 = 512 * 1024 * 1024;

/// Packs a block chunk reference.
pub fn chunk_ref(file_index: u32, offset: u32) -> u64 {
    (u64::from(file_index) << 32) | u64::from(offset)
}

/// Splits a block chunk reference into (0-based file index, byte offset).
pub fn split_chunk_ref(r: u64) -> (u32, u32) {
    ((r >> 32) as u32, r as u32)
}

/// File name of the segment with the given 0-based index (`0` → `000001`).
pub fn segment_file_name(file_index: u32) -> String {
    format!("{:06}", u64::from(file_index) + 1)
}

/// Errors of the chunk segment encoder (all are caller bugs or absurd sizes, never I/O).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("segment size limit {0} must be between 9 bytes and 4 GiB (chunk refs hold a 32-bit offset)")]
    BadSegmentSize(u64),
    #[error("chunk of {0} data bytes is too large for a chunk segment")]
    ChunkTooLarge(usize),
    #[error("no chunk segment started: call start_segment first")]
    NoSegment,
    #[error("too many chunk segment files")]
    TooManySegments,
}

/// Encodes chunks into a sequence of segments. Tracks the position inside the current
/// segment so it can hand out references; the bytes go to whatever buffer the caller passes.
#[derive(Debug, Clone)]
pub struct SegmentEncoder {
    max_segment_size: u64,
    /// Number of segments started so far (the current one is `segments - 1`).
    segments: u32,
    /// Bytes in the current segment so far, header included.
    pos: u64,
    /// File index of the first segment: a block written in parts (one per core) numbers each
    /// part's segments after the previous parts'.
    first_file: u32,
}

impl SegmentEncoder {
    /// An encoder that keeps segments at most `max_segment_size` bytes (except a single
    /// chunk larger than that, which gets a segment of its own).
    pub fn new(max_segment_size: u64) -> Result<Self, ChunkError> {
        if max_segment_size <= SEGMENT_HEADER_LEN || max_segment_size > u64::from(u32::MAX) {
            return Err(ChunkError::BadSegmentSize(max_segment_size));
        }
        Ok(SegmentEncoder {
            max_segment_size,
            segments: 0,
            pos: 0,
            first_file: 0,
        })
    }

    /// The same encoder, numbering its segments from file index `first_file`.
    pub fn starting_at(mut self, first_file: u32) -> Self {
        self.first_file = first_file;
        self
    }

    /// How many segment files chunks of these data lengths (in write order) fill: lets the
    /// parts of a block agree on file numbers before any of them writes.
    pub fn segments_needed(
        max_segment_size: u64,
        data_lens: impl IntoIterator<Item = usize>,
    ) -> Result<u32, ChunkError> {
        let mut enc = SegmentEncoder::new(max_segment_size)?;
        for len in data_lens {
            if enc.needs_new_segment(len) {
                enc.segments += 1;
                enc.pos = SEGMENT_HEADER_LEN;
            }
            enc.pos += Self::encoded_len(len);
        }
        Ok(enc.segments)
    }

    /// Bytes one chunk with `data_len` data bytes takes in a segment.
    pub fn encoded_len(data_len: usize) -> u64 {
        uvarint_len(data_len as u64) as u64 + 1 + data_len as u64 + 4
    }

    /// Whether a new segment must be started before appending a chunk of `data_len` bytes:
    /// none started yet, or the current one holds chunks and would grow past the limit.
    pub fn needs_new_segment(&self, data_len: usize) -> bool {
        self.segments == 0
            || (self.pos > SEGMENT_HEADER_LEN
                && self.pos + Self::encoded_len(data_len) > self.max_segment_size)
    }

    /// Starts the next segment: appends its 8-byte header to `out` and returns its 0-based
    /// file index. The caller must route the following bytes to that segment's file.
    pub fn start_segment(&mut self, out: &mut Vec<u8>) -> Result<u32, ChunkError> {
        // The index becomes the top half of every chunk ref, and the file name must stay six
        // digits for readers that list `chunks/` by name order.
        if u64::from(self.first_file) + u64::from(self.segments) >= 999_999 {
            return Err(ChunkError::TooManySegments);
        }
        put_be32(out, MAGIC_CHUNKS);
        out.extend_from_slice(&[CHUNKS_FORMAT_V1, 0, 0, 0]);
        self.segments += 1;
        self.pos = SEGMENT_HEADER_LEN;
        Ok(self.first_file + self.segments - 1)
    }

    /// Appends one chunk to the current segment and returns its reference. Does not cut:
    /// ask [`needs_new_segment`](Self::needs_new_segment) first.
    pub fn append_chunk(
        &mut self,
        out: &mut Vec<u8>,
        encoding: u8,
        data: &[u8],
    ) -> Result<u64, ChunkError> {
        if self.segments == 0 {
            return Err(ChunkError::NoSegment);
        }
        let len = Self::encoded_len(data.len());
        // The chunk's offset must fit the ref's low 32 bits (the readers' length field is a
        // 32-bit varint too).
        if data.len() > u32::MAX as usize || self.pos > u64::from(u32::MAX) {
            return Err(ChunkError::ChunkTooLarge(data.len()));
        }
        let r = chunk_ref(self.first_file + self.segments - 1, self.pos as u32);
        put_uvarint(out, data.len() as u64);
        out.push(encoding);
        out.extend_from_slice(data);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&[encoding]), data);
        put_be32(out, crc);
        self.pos += len;
        Ok(r)
    }

    /// Bytes written to the current segment so far (header included); 0 before the first.
    pub fn segment_len(&self) -> u64 {
        self.pos
    }

    /// Number of segments started.
    pub fn segments(&self) -> u32 {
        self.segments
    }
}

#[cfg(test)]
mod tests {
    use super::super::reader::{check_segment_header, read_chunk_record};
    use super::*;
    use crate::xor::{XorChunk, ENCODING_XOR};

    #[test]
    fn golden_single_chunk_segment() {
        let mut enc = SegmentEncoder::new(DEFAULT_SEGMENT_SIZE).unwrap();
        let mut out = Vec::new();
        assert!(enc.needs_new_segment(3));
        assert_eq!(enc.start_segment(&mut out).unwrap(), 0);
        let r = enc.append_chunk(&mut out, 1, &[0xAA, 0xBB, 0xCC]).unwrap();
        assert_eq!(
            r, 8,
            "first chunk sits right after the header in file index 0"
        );
        let crc = crc32c::crc32c(&[1, 0xAA, 0xBB, 0xCC]).to_be_bytes();
        let mut want = vec![
            0x85, 0xBD, 0x40, 0xDD, 0x01, 0, 0, 0, 3, 1, 0xAA, 0xBB, 0xCC,
        ];
        want.extend_from_slice(&crc);
        assert_eq!(out, want);
        assert_eq!(enc.segment_len(), want.len() as u64);
    }

    #[test]
    fn cuts_before_crossing_the_limit() {
        // Header 8 + two chunks of 1+1+10+4 = 16 bytes fit exactly in 40.
        let mut enc = SegmentEncoder::new(40).unwrap();
        let mut segs: Vec<Vec<u8>> = Vec::new();
        let mut refs = Vec::new();
        for i in 0..5u8 {
            let data = [i; 10];
            if enc.needs_new_segment(data.len()) {
                segs.push(Vec::new());
                let idx = enc.start_segment(segs.last_mut().unwrap()).unwrap();
                assert_eq!(idx as usize, segs.len() - 1);
            }
            refs.push(
                enc.append_chunk(segs.last_mut().unwrap(), 1, &data)
                    .unwrap(),
            );
        }
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[0].len(), 40);
        assert_eq!(segs[1].len(), 40);
        assert_eq!(segs[2].len(), 24);
        let split: Vec<_> = refs.iter().map(|&r| split_chunk_ref(r)).collect();
        assert_eq!(split, [(0, 8), (0, 24), (1, 8), (1, 24), (2, 8)]);
    }

    #[test]
    fn oversized_chunk_gets_its_own_segment() {
        let mut enc = SegmentEncoder::new(20).unwrap();
        let mut out = Vec::new();
        assert!(enc.needs_new_segment(100));
        enc.start_segment(&mut out).unwrap();
        assert!(
            !enc.needs_new_segment(100),
            "an empty segment takes any chunk"
        );
        enc.append_chunk(&mut out, 1, &[7; 100]).unwrap();
        assert!(enc.needs_new_segment(1));
    }

    #[test]
    fn rejects_bad_sizes_and_missing_segment() {
        assert_eq!(
            SegmentEncoder::new(8).unwrap_err(),
            ChunkError::BadSegmentSize(8)
        );
        assert!(SegmentEncoder::new(1 << 33).is_err());
        let mut enc = SegmentEncoder::new(100).unwrap();
        assert_eq!(
            enc.append_chunk(&mut Vec::new(), 1, &[1]).unwrap_err(),
            ChunkError::NoSegment
        );
    }

    #[test]
    fn round_trip_xor_chunks() {
        let mut chunks = Vec::new();
        for s in 0..3 {
            let mut c = XorChunk::new();
            for i in 0..120i64 {
                c.append(1_000 + i * 15_000 + s, (i * s) as f64 * 0.5);
            }
            chunks.push(c);
        }
        let mut enc = SegmentEncoder::new(DEFAULT_SEGMENT_SIZE).unwrap();
        let mut out = Vec::new();
        enc.start_segment(&mut out).unwrap();
        let refs: Vec<u64> = chunks
            .iter()
            .map(|c| enc.append_chunk(&mut out, ENCODING_XOR, c.bytes()).unwrap())
            .collect();
        check_segment_header(&out).unwrap();
        for (r, c) in refs.iter().zip(&chunks) {
            let (file, offset) = split_chunk_ref(*r);
            assert_eq!(file, 0);
            let (enc_byte, data) = read_chunk_record(&out, offset as usize).unwrap();
            assert_eq!(enc_byte, ENCODING_XOR);
            assert_eq!(data, c.bytes());
        }
        assert_eq!(segment_file_name(0), "000001");
        assert_eq!(segment_file_name(41), "000042");
    }
}
