//! Byte-level helpers shared by the storage formats (WAL records, XOR chunks, block chunks
//! and index): Go `encoding/binary` varints, big-endian integers and zero padding. Writers
//! append to a caller-owned `Vec<u8>`; readers borrow the input.
//!
//! Owns the one varint encoder and decoder of this crate: every format that stores varints
//! (`wal/record.rs`, `xor.rs`, `block/chunks.rs`, `block/index.rs`, `block/reader.rs`) goes
//! through the functions here, so they agree on Go's rules, overflow included. Owns nothing
//! format-specific: layouts live in those modules.

/// Appends `v` as a Go `binary.PutUvarint` (LEB128, 7 bits per byte, low groups first).
#[inline]
pub(crate) fn put_uvarint(out: &mut Vec<u8>, v: u64) {
    uvarint_bytes(v, |b| out.push(b));
}

/// Hands the bytes of `v` as a uvarint to `emit`, in order: [`put_uvarint`] appends them to a
/// buffer, the XOR chunk writes them into its bitstream (where they need not be byte-aligned).
#[inline]
pub(crate) fn uvarint_bytes(mut v: u64, mut emit: impl FnMut(u8)) {
    while v >= 0x80 {
        emit((v as u8) | 0x80);
        v >>= 7;
    }
    emit(v as u8);
}

/// Appends `v` as a Go `binary.PutVarint` (zigzag, then uvarint).
#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v));
}

/// Go's `binary.PutVarint` mapping of signed to unsigned: 0, -1, 1, -2, … → 0, 1, 2, 3, …
#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v as u64) << 1) ^ ((v >> 63) as u64)
}

/// The inverse of [`zigzag`] (Go's `binary.Varint`).
#[inline]
pub(crate) fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
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

/// Why a uvarint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The input ended before the varint's last byte.
    Truncated,
    /// Ten bytes without an end, or a tenth byte above 1: the value does not fit in 64 bits.
    Overflow,
}

/// Reads a uvarint from a byte source with Go's `binary.ReadUvarint` rules: at most ten
/// bytes, the tenth at most 1. `next` yields the following byte, `None` at the end of the
/// input. The XOR chunk reads from its bitstream through this; byte slices use [`uvarint`].
#[inline]
pub(crate) fn read_uvarint(mut next: impl FnMut() -> Option<u8>) -> Result<u64, VarintError> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = next().ok_or(VarintError::Truncated)?;
        if b < 0x80 {
            if i == 9 && b > 1 {
                return Err(VarintError::Overflow);
            }
            return Ok(v | u64::from(b) << (7 * i));
        }
        v |= u64::from(b & 0x7f) << (7 * i);
    }
    Err(VarintError::Overflow)
}

/// Go's `binary.Uvarint` at the start of `buf`: the value and how many bytes it took.
#[inline]
pub(crate) fn uvarint(buf: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut bytes = buf.iter();
    let v = read_uvarint(|| bytes.next().copied())?;
    Ok((v, buf.len() - bytes.len()))
}

/// Go's `binary.Varint` at the start of `buf`: the value and how many bytes it took.
#[inline]
pub(crate) fn varint(buf: &[u8]) -> Result<(i64, usize), VarintError> {
    uvarint(buf).map(|(u, n)| (unzigzag(u), n))
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
            b.push(0xAA); // Whatever follows is not read.
            assert_eq!(uvarint(&b), Ok((v, uvarint_len(v))), "{v}");
        }
        for v in [0i64, 1, -1, 63, -64, 64, i64::MIN, i64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(varint(&b), Ok((v, b.len())), "{v}");
        }
    }

    /// Go's `binary.Uvarint` limits: ten bytes at most, the tenth at most 1.
    #[test]
    fn varint_decoding_follows_go_limits() {
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(uvarint(&max), Ok((u64::MAX, 10)));
        let mut over = max;
        over[9] = 0x02;
        assert_eq!(uvarint(&over), Err(VarintError::Overflow));
        assert_eq!(uvarint(&[0x80; 11]), Err(VarintError::Overflow));
        assert_eq!(uvarint(&[]), Err(VarintError::Truncated));
        assert_eq!(uvarint(&[0x80, 0x80]), Err(VarintError::Truncated));
        // Non-minimal encodings are accepted, as Go does.
        assert_eq!(uvarint(&[0x80, 0x00]), Ok((0, 2)));
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
