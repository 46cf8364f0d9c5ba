//! Byte-level helpers shared by the storage formats (WAL records, block chunks and index): Go
//! `encoding/binary` varints, big-endian integers and zero padding, all appending to a
//! caller-owned `Vec<u8>`.
//!
//! Owns nothing format-specific; layouts live in `wal/record.rs`, `block/chunks.rs` and
//! `block/index.rs`.

/// Appends `v` as a Go `binary.PutUvarint` (LEB128, 7 bits per byte, low groups first).
#[inline]
pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` as a Go `binary.PutVarint` (zigzag, then uvarint).
#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Number of bytes `put_uvarint(v)` appends.
pub(crate) fn uvarint_len(v: u64) -> usize {
    // 1 byte per started group of 7 significant bits; 0 still takes one byte.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends a Go `PutUvarintStr`: uvarint byte length, then the bytes.
pub(crate) fn put_uvarint_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn put_be32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_be64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends zero bytes until `out.len()` is a multiple of `align`.
pub(crate) fn pad_to(out: &mut Vec<u8>, align: usize) {
    let rem = out.len() % align;
    if rem != 0 {
        out.resize(out.len() + align - rem, 0);
    }
}

/// Overwrites 4 bytes at `at` with `v` big-endian (a length field reserved earlier).
pub(crate) fn patch_be32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_go_encoding() {
        let mut b = Vec::new();
        put_uvarint(&mut b, 0);
        put_uvarint(&mut b, 127);
        put_uvarint(&mut b, 128);
        put_uvarint(&mut b, 300);
        assert_eq!(b, [0x00, 0x7f, 0x80, 0x01, 0xac, 0x02]);

        let mut b = Vec::new();
        put_varint(&mut b, 0);
        put_varint(&mut b, -1);
        put_varint(&mut b, 1);
        put_varint(&mut b, -64);
        put_varint(&mut b, 64);
        assert_eq!(b, [0x00, 0x01, 0x02, 0x7f, 0x80, 0x01]);

        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_uvarint(&mut b, v);
            assert_eq!(b.len(), uvarint_len(v), "{v}");
        }
    }

    #[test]
    fn padding() {
        let mut b = vec![1u8; 5];
        pad_to(&mut b, 16);
        assert_eq!(b.len(), 16);
        pad_to(&mut b, 16);
        assert_eq!(b.len(), 16);
        assert!(b[5..].iter().all(|&x| x == 0));
    }
}
