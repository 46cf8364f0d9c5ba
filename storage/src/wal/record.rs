//! WAL record framing and payloads.
//!
//! Frame: `len u32 LE | crc32c(type ‖ payload) u32 LE | type u8 | payload[len]`. A zero header
//! marks the end of written data (DMA writes zero-pad the last page) — unless the rest of its
//! page is zeros and the next page starts with a good frame: a write issued while the one
//! before was still in flight starts on a fresh page rather than rewrite that write's last.
//!
//! Payloads (ids are the owning core's series ids; labels travel once, in series records):
//! - series: `{ id u32 LE, uvarint n, (uvarint len, name, uvarint len, value)×n }*`
//! - samples: `base_t i64 LE, { uvarint id, varint (t − base_t), value bits u64 LE }*`
//! - min time: `t i64 LE` — samples older than `t` are in a block; replay drops them. Written
//!   at the start of a checkpoint.
//! - next id: `id u32 LE` — every id below `id` has been handed out; the writer's next new
//!   series gets at least `id`. Written in a checkpoint after its min time, because the
//!   checkpoint keeps only live series and the ids of collected ones must stay taken.
//!
//! The whole format, and what replay keeps after damage, is specified in `docs/format/wal.md`.
//! Must not allocate per sample: encoders append into the caller's buffer.

use crate::encoding::{put_uvarint, put_varint, uvarint, varint};

/// Bytes of a frame header.
pub const HEADER_LEN: usize = 9;

/// Writes cover whole pages of this size; zeros that pad a page end are skipped by readers.
pub const PAGE: usize = 4096;

/// Largest payload a reader accepts; anything larger is corruption, not a record. The
/// writer's largest records hold one request's series or samples, which are smaller than the
/// request's decompressed protobuf; the binary caps that well below this.
pub const MAX_PAYLOAD: usize = 1 << 30;

/// Kinds of records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    Series = 1,
    Samples = 2,
    MinTime = 3,
    NextId = 4,
}

impl RecordType {
    pub(crate) fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(RecordType::Series),
            2 => Some(RecordType::Samples),
            3 => Some(RecordType::MinTime),
            4 => Some(RecordType::NextId),
            _ => None,
        }
    }
}

/// Starts a record at the end of `buf`; returns its start for [`end_record`].
#[inline]
pub fn begin_record(buf: &mut Vec<u8>, ty: RecordType) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER_LEN]);
    buf[start + 8] = ty as u8;
    start
}

/// Finishes the record begun at `start`: patches length and CRC. Returns the frame length.
#[inline]
pub fn end_record(buf: &mut [u8], start: usize) -> usize {
    let payload_len = buf.len() - start - HEADER_LEN;
    let crc = crc32c::crc32c(&buf[start + 8..]);
    buf[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    buf.len() - start
}

/// Appends one series entry to a series record payload.
pub fn put_series<I, N, V>(buf: &mut Vec<u8>, id: u32, labels: I)
where
    I: IntoIterator<Item = (N, V)>,
    I::IntoIter: Clone,
    N: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let labels = labels.into_iter();
    buf.extend_from_slice(&id.to_le_bytes());
    put_uvarint(buf, labels.clone().count() as u64);
    for (n, v) in labels {
        let (n, v) = (n.as_ref(), v.as_ref());
        put_uvarint(buf, n.len() as u64);
        buf.extend_from_slice(n);
        put_uvarint(buf, v.len() as u64);
        buf.extend_from_slice(v);
    }
}

/// Writes a min-time payload.
pub fn put_min_time(buf: &mut Vec<u8>, t: i64) {
    buf.extend_from_slice(&t.to_le_bytes());
}

/// Reads a min-time payload.
pub fn decode_min_time(payload: &[u8]) -> Result<i64, PayloadError> {
    payload
        .try_into()
        .map(i64::from_le_bytes)
        .map_err(|_| PayloadError("min time"))
}

/// Writes a next-id payload.
pub fn put_next_id(buf: &mut Vec<u8>, id: u32) {
    buf.extend_from_slice(&id.to_le_bytes());
}

/// Reads a next-id payload.
pub fn decode_next_id(payload: &[u8]) -> Result<u32, PayloadError> {
    payload
        .try_into()
        .map(u32::from_le_bytes)
        .map_err(|_| PayloadError("next id"))
}

/// Starts a samples payload whose timestamps are stored relative to `base_t`.
#[inline]
pub fn put_samples_base(buf: &mut Vec<u8>, base_t: i64) {
    buf.extend_from_slice(&base_t.to_le_bytes());
}

/// Appends one sample to a samples payload started with `base_t`.
#[inline]
pub fn put_sample(buf: &mut Vec<u8>, base_t: i64, id: u32, t: i64, v: f64) {
    put_uvarint(buf, id as u64);
    put_varint(buf, t.wrapping_sub(base_t));
    buf.extend_from_slice(&v.to_bits().to_le_bytes());
}

/// Reads a uvarint at `*pos`, advancing it. `None` if truncated or longer than 10 bytes.
#[inline]
fn get_uvarint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let (v, n) = uvarint(buf.get(*pos..)?).ok()?;
    *pos += n;
    Some(v)
}

#[inline]
fn get_varint(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let (v, n) = varint(buf.get(*pos..)?).ok()?;
    *pos += n;
    Some(v)
}

#[inline]
fn get_bytes<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Option<&'a [u8]> {
    let end = pos.checked_add(n)?;
    let s = buf.get(*pos..end)?;
    *pos = end;
    Some(s)
}

/// What scanning a frame found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole record with a good checksum.
    Record(RecordType, &'a [u8]),
    /// End of written data: a zero header or the end of the buffer.
    End,
    /// The frame is unreadable. `skip` is where the next frame would start if the length
    /// field can be trusted (`None` if it cannot).
    Corrupt {
        reason: &'static str,
        skip: Option<usize>,
    },
}

/// Reads the frame at `pos` of a segment.
pub fn read_frame(seg: &[u8], pos: usize) -> Frame<'_> {
    let Some(rest) = seg.get(pos..) else {
        return Frame::End;
    };
    if rest.is_empty() {
        return Frame::End;
    }
    if rest.len() < HEADER_LEN {
        return if rest.iter().all(|b| *b == 0) {
            Frame::End
        } else {
            Frame::Corrupt {
                reason: "truncated record header",
                skip: None,
            }
        };
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    let ty = rest[8];
    if len == 0 && crc == 0 && ty == 0 {
        return Frame::End;
    }
    if len > MAX_PAYLOAD {
        return Frame::Corrupt {
            reason: "record length out of range",
            skip: None,
        };
    }
    let Some(body) = rest.get(8..HEADER_LEN + len) else {
        return Frame::Corrupt {
            reason: "truncated record",
            skip: None,
        };
    };
    let skip = Some(pos + HEADER_LEN + len);
    if crc32c::crc32c(body) != crc {
        return Frame::Corrupt {
            reason: "checksum mismatch",
            skip,
        };
    }
    match RecordType::from_u8(ty) {
        Some(t) => Frame::Record(t, &body[1..]),
        None => Frame::Corrupt {
            reason: "unknown record type",
            skip,
        },
    }
}

/// A decoded payload was malformed despite a good checksum (a bug or a foreign file).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed {0} record payload")]
pub struct PayloadError(pub &'static str);

/// Calls `f(id, labels)` for each series of a series payload. `scratch` is reused for labels.
pub fn decode_series<'a, F>(
    payload: &'a [u8],
    scratch: &mut Vec<(&'a str, &'a str)>,
    mut f: F,
) -> Result<(), PayloadError>
where
    F: FnMut(u32, &[(&'a str, &'a str)]),
{
    let err = || PayloadError("series");
    let mut pos = 0;
    while pos < payload.len() {
        let id = get_bytes(payload, &mut pos, 4).ok_or_else(err)?;
        let id = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
        let n = get_uvarint(payload, &mut pos).ok_or_else(err)? as usize;
        if n > payload.len() {
            return Err(err());
        }
        scratch.clear();
        for _ in 0..n {
            let ln = get_uvarint(payload, &mut pos).ok_or_else(err)? as usize;
            let name = get_bytes(payload, &mut pos, ln).ok_or_else(err)?;
            let lv = get_uvarint(payload, &mut pos).ok_or_else(err)? as usize;
            let value = get_bytes(payload, &mut pos, lv).ok_or_else(err)?;
            let name = std::str::from_utf8(name).map_err(|_| err())?;
            let value = std::str::from_utf8(value).map_err(|_| err())?;
            scratch.push((name, value));
        }
        f(id, scratch);
    }
    Ok(())
}

/// One sample of a samples record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRecord {
    pub id: u32,
    pub t: i64,
    pub v: f64,
}

/// Calls `f` for each sample of a samples payload.
pub fn decode_samples<F>(payload: &[u8], mut f: F) -> Result<(), PayloadError>
where
    F: FnMut(SampleRecord),
{
    let err = || PayloadError("samples");
    let mut pos = 0;
    let base = get_bytes(payload, &mut pos, 8).ok_or_else(err)?;
    let base_t = i64::from_le_bytes(base.try_into().map_err(|_| err())?);
    while pos < payload.len() {
        let id = get_uvarint(payload, &mut pos).ok_or_else(err)?;
        let id = u32::try_from(id).map_err(|_| err())?;
        let dt = get_varint(payload, &mut pos).ok_or_else(err)?;
        let bits = get_bytes(payload, &mut pos, 8).ok_or_else(err)?;
        let bits = u64::from_le_bytes(bits.try_into().map_err(|_| err())?);
        f(SampleRecord {
            id,
            t: base_t.wrapping_add(dt),
            v: f64::from_bits(bits),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::STALE_NAN_BITS;

    fn frame_of(ty: RecordType, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        let s = begin_record(&mut buf, ty);
        buf.extend_from_slice(payload);
        end_record(&mut buf, s);
        buf
    }

    #[test]
    fn series_round_trip() {
        let mut buf = Vec::new();
        put_series(&mut buf, 7, [("__name__", "up"), ("job", "node")]);
        put_series(&mut buf, 8, [("__name__", "x")]);
        let mut scratch = Vec::new();
        let mut got = Vec::new();
        decode_series(&buf, &mut scratch, |id, l| got.push((id, l.to_vec()))).unwrap();
        assert_eq!(
            got,
            vec![
                (7, vec![("__name__", "up"), ("job", "node")]),
                (8, vec![("__name__", "x")])
            ]
        );
    }

    #[test]
    fn samples_round_trip_exact_bits() {
        let mut buf = Vec::new();
        put_samples_base(&mut buf, 1_000);
        let stale = f64::from_bits(STALE_NAN_BITS);
        put_sample(&mut buf, 1_000, 3, 1_000, 1.5);
        put_sample(&mut buf, 1_000, 300_000, -5, stale);
        put_sample(&mut buf, 1_000, 0, i64::MAX, -0.0);
        let mut got = Vec::new();
        decode_samples(&buf, |s| got.push((s.id, s.t, s.v.to_bits()))).unwrap();
        assert_eq!(
            got,
            vec![
                (3, 1_000, 1.5f64.to_bits()),
                (300_000, -5, STALE_NAN_BITS),
                (0, i64::MAX, (-0.0f64).to_bits())
            ]
        );
    }

    #[test]
    fn frames_detect_corruption_and_end() {
        let mut seg = frame_of(RecordType::Samples, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let first_len = seg.len();
        seg.extend(frame_of(RecordType::Series, b"abc"));
        assert!(matches!(
            read_frame(&seg, 0),
            Frame::Record(RecordType::Samples, _)
        ));
        assert!(matches!(
            read_frame(&seg, first_len),
            Frame::Record(RecordType::Series, b"abc")
        ));
        assert_eq!(read_frame(&seg, seg.len()), Frame::End);
        let mut padded = seg.clone();
        padded.extend([0u8; 100]);
        assert_eq!(read_frame(&padded, seg.len()), Frame::End);
        // Flip a payload bit: checksum mismatch, but the length lets a reader skip it.
        let mut bad = seg.clone();
        bad[HEADER_LEN + 2] ^= 1;
        assert_eq!(
            read_frame(&bad, 0),
            Frame::Corrupt {
                reason: "checksum mismatch",
                skip: Some(first_len)
            }
        );
        // Cut in the middle of the second record: a torn tail.
        let torn = &seg[..seg.len() - 1];
        assert!(matches!(
            read_frame(torn, first_len),
            Frame::Corrupt { skip: None, .. }
        ));
    }

    #[test]
    fn payload_decoders_reject_garbage_without_panicking() {
        for len in 0..40 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let mut scratch = Vec::new();
            let _ = decode_series(&junk, &mut scratch, |_, _| {});
            let _ = decode_samples(&junk, |_| {});
        }
    }
}
