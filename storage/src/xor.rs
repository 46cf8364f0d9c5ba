//! Prometheus XOR ("Gorilla") chunk encoding, bit-exact with `tsdb/chunkenc/xor.go` and
//! `bstream.go`.
//!
//! Owns only the chunk *data* bytes: the 2-byte big-endian sample count followed by the
//! bitstream, as Prometheus' format page describes them:
//! <https://github.com/prometheus/prometheus/blob/main/tsdb/docs/format/chunks.md#xor-chunk-data>.
//! It does not know about chunk files, CRCs, the encoding byte's placement, series or
//! cutting policy; callers decide when a chunk is full and where its bytes go.
//!
//! Bit-exactness includes the byte *length*: Prometheus' `bstream.writeByte` always appends a
//! fresh byte, so when a sample's last `writeBits` call writes a whole number of bytes and ends
//! on a byte boundary, the Go stream carries one extra all-zero byte. [`XorChunk`] reproduces
//! that so `bytes()` equals what Prometheus would have produced for the same samples.

use crate::encoding::{read_uvarint, unzigzag, uvarint_bytes, zigzag, VarintError};

/// Encoding byte of XOR chunks in chunk segment files.
pub const ENCODING_XOR: u8 = 1;

/// Prometheus starts a fresh appender with this "no window yet" marker so the first non-zero
/// value delta always opens a window, even if its leading/trailing counts are 0.
const NO_WINDOW: u8 = 0xff;

/// Initial capacity of [`XorChunk::new`]: room for the first ten-odd samples. Every series of
/// a head has an open chunk, so this is paid per active series; Prometheus starts at 128, but
/// half of that is idle in a young chunk, and growing (64, 128, 256) costs three small copies
/// per 120 samples.
const DEFAULT_CAPACITY: usize = 64;

/// Zeroed bytes kept past the logical end while appending, so every bit write is one
/// fixed-size 16-byte read-modify-write with no length checks or reallocation. One sample
/// is at most 145 bits (19 bytes) and a write touches 16 bytes from its first byte.
const WRITE_SLACK: usize = 19 + 16;

/// An XOR chunk being appended to. Its bytes are always a valid chunk (2-byte BE sample count
/// header + bitstream, last byte zero-padded), so a reader can iterate it at any time.
#[derive(Debug, Clone)]
pub struct XorChunk {
    /// Header + bitstream (`..len`), followed by zeros that are not part of the chunk. A
    /// boxed slice, not a `Vec`: its length is its capacity, which saves a word in every
    /// active series' open chunk.
    buf: Box<[u8]>,
    /// Length of the chunk data in `buf`, exactly as Prometheus would have it (including its
    /// trailing pad byte, see module docs). `u32` like `bit_len`: a chunk holds at most
    /// `u16::MAX` samples of at most 19 bytes, and every series keeps an open chunk.
    len: u32,
    /// Bits of bitstream written after the header.
    bit_len: u32,
    num: u16,
    t: i64,
    v_bits: u64,
    t_delta: u64,
    leading: u8,
    trailing: u8,
}

impl Default for XorChunk {
    fn default() -> Self {
        Self::new()
    }
}

impl XorChunk {
    /// An empty chunk: `bytes() == [0, 0]`.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// An empty chunk whose buffer starts with `bytes` bytes of capacity. While appending, the
    /// buffer also holds a few dozen bytes of zeroed write slack past the chunk data.
    pub fn with_capacity(bytes: usize) -> Self {
        XorChunk {
            buf: vec![0; bytes.max(2)].into_boxed_slice(),
            len: 2,
            bit_len: 0,
            num: 0,
            t: 0,
            v_bits: 0,
            t_delta: 0,
            leading: NO_WINDOW,
            trailing: 0,
        }
    }

    /// Grows the buffer to hold `need` bytes plus an eighth of its size (at least 32 bytes)
    /// instead of doubling it: the open chunk of every active series lives in memory, and
    /// doubling left a typical chunk near half empty (a 250-byte chunk in 512 bytes). An
    /// eighth rather than a quarter saved ~19 bytes per series (100k flood series, 180
    /// samples) for ~3 more copies per chunk, which `bench/ab` could not tell apart.
    #[cold]
    fn grow(&mut self, need: usize) {
        let target = need + (self.buf.len() / 8).max(32);
        let mut buf = std::mem::take(&mut self.buf).into_vec();
        buf.reserve_exact(target - buf.len());
        buf.resize(target, 0);
        self.buf = buf.into_boxed_slice();
    }

    /// Appends a sample. The caller guarantees `t` is greater than the previous timestamp
    /// (timestamps are still encoded with wrapping arithmetic, as Go does, so a violation
    /// produces a strange chunk rather than a panic).
    ///
    /// # Panics
    /// If the chunk already holds `u16::MAX` samples: the count header cannot express more,
    /// and wrapping it (as Go would) silently corrupts the chunk.
    pub fn append(&mut self, t: i64, v: f64) {
        assert!(self.num < u16::MAX, "XOR chunk sample count overflow");
        let need = 2 + self.bit_len as usize / 8 + WRITE_SLACK;
        if self.buf.len() < need {
            self.grow(need);
        }
        let v_bits = v.to_bits();
        // Whether Prometheus' last `writeBits` call for this sample ended in `writeByte`, which
        // is what decides the extra zero byte.
        let ends_with_byte_write = match self.num {
            0 => {
                self.write_uvarint(zigzag(t));
                self.write_bits(v_bits, 64);
                true
            }
            1 => {
                let delta = t.wrapping_sub(self.t) as u64;
                self.write_uvarint(delta);
                self.t_delta = delta;
                self.write_value(v_bits)
            }
            _ => {
                let delta = t.wrapping_sub(self.t) as u64;
                self.write_dod(delta.wrapping_sub(self.t_delta) as i64);
                self.t_delta = delta;
                self.write_value(v_bits)
            }
        };
        self.t = t;
        self.v_bits = v_bits;
        self.num += 1;
        self.buf[..2].copy_from_slice(&self.num.to_be_bytes());
        let pad = u32::from(ends_with_byte_write && self.bit_len & 7 == 0);
        self.len = 2 + self.bit_len.div_ceil(8) + pad;
    }

    /// Number of samples in the chunk.
    pub fn num_samples(&self) -> u16 {
        self.num
    }

    /// The byte the next append writes first: what an ingest loop prefetches a few series
    /// ahead, since with 100k+ series the open chunks are far out of cache.
    #[inline]
    pub fn write_position(&self) -> &u8 {
        let at = 2 + self.bit_len as usize / 8;
        self.buf.get(at).unwrap_or(&self.buf[0])
    }

    /// The exact Prometheus chunk data: what follows the encoding byte in a chunk file.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// Iterates the samples appended so far.
    pub fn iter(&self) -> XorIter<'_> {
        XorIter::new(self.bytes())
    }

    /// Timestamp of the first sample, if any.
    pub fn first_time(&self) -> Option<i64> {
        // Read back from the chunk (the iterator's first sample) rather than kept in a field:
        // every active series has an open chunk, and only cuts and queries ask, not appends.
        self.iter().next().map(|(t, _)| t)
    }

    /// The last appended sample, if any (value bits exactly as appended).
    pub fn last(&self) -> Option<(i64, f64)> {
        (self.num > 0).then(|| (self.t, f64::from_bits(self.v_bits)))
    }

    /// Releases spare capacity; meant for chunks that will not be appended to again.
    pub fn shrink_to_fit(&mut self) {
        // Dropping the write slack is fine: a later append re-adds it.
        self.buf = self.bytes().into();
    }

    /// Writes the `n` (1..=64) low bits of `v`, most significant first, right after the
    /// current bit position. Bits of `v` above `n` are ignored. `append` has ensured the
    /// slack, and everything past the written bits is zero, so OR-ing a window suffices.
    #[inline]
    fn write_bits(&mut self, v: u64, n: u32) {
        debug_assert!((1..=64).contains(&n));
        let v = if n < 64 { v & ((1u64 << n) - 1) } else { v };
        let at = 2 + self.bit_len as usize / 8;
        let used = self.bit_len % 8;
        // used + n <= 71 bits, so a 16-byte window always holds the write.
        let window = (v as u128) << (128 - used - n);
        let slot: &mut [u8; 16] = (&mut self.buf[at..at + 16])
            .try_into()
            .expect("slice of length 16");
        *slot = (u128::from_be_bytes(*slot) | window).to_be_bytes();
        self.bit_len += n;
    }

    fn write_uvarint(&mut self, x: u64) {
        // Only used for the first two samples, so byte-at-a-time is fine.
        uvarint_bytes(x, |b| self.write_bits(u64::from(b), 8));
    }

    #[inline]
    fn write_dod(&mut self, dod: i64) {
        let d = dod as u64;
        if dod == 0 {
            self.write_bits(0, 1);
        } else if fits_bits(dod, 14) {
            self.write_bits((0b10 << 14) | (d & mask(14)), 16);
        } else if fits_bits(dod, 17) {
            self.write_bits((0b110 << 17) | (d & mask(17)), 20);
        } else if fits_bits(dod, 20) {
            self.write_bits((0b1110 << 20) | (d & mask(20)), 24);
        } else {
            self.write_bits(0b1111, 4);
            self.write_bits(d, 64);
        }
    }

    /// Writes the value part of a sample; returns whether Go's final write was a whole number
    /// of bytes (see [`XorChunk::append`]).
    #[inline]
    fn write_value(&mut self, v_bits: u64) -> bool {
        let delta = v_bits ^ self.v_bits;
        if delta == 0 {
            self.write_bits(0, 1);
            return false;
        }
        // Capped because the window header stores the leading count in 5 bits.
        let lead = (delta.leading_zeros() as u8).min(31);
        let trail = delta.trailing_zeros() as u8;
        let (ctrl, ctrl_len, shift, m) =
            if self.leading != NO_WINDOW && lead >= self.leading && trail >= self.trailing {
                // `10`: reuse the previous window.
                let m = 64 - self.leading - self.trailing;
                (0b10u64, 2u32, self.trailing, m)
            } else {
                // `11` + 5-bit leading + 6-bit significant count (64 wraps to 0 in 6 bits;
                // 0 significant bits can't occur since delta != 0).
                self.leading = lead;
                self.trailing = trail;
                let m = 64 - lead - trail;
                let ctrl = (0b11 << 11) | ((lead as u64) << 6) | (m as u64 & 0x3f);
                (ctrl, 13, trail, m)
            };
        let payload = delta >> shift;
        let m32 = m as u32;
        if ctrl_len + m32 <= 64 {
            self.write_bits((ctrl << m32) | payload, ctrl_len + m32);
        } else {
            self.write_bits(ctrl, ctrl_len);
            self.write_bits(payload, m32);
        }
        m & 7 == 0
    }
}

#[inline]
fn mask(n: u32) -> u64 {
    (1u64 << n) - 1
}

/// Prometheus' `bitRange`: the range is asymmetric, [-(2^(n-1) - 1), 2^(n-1)], because the
/// decoder treats the bit pattern 2^(n-1) as positive.
#[inline]
fn fits_bits(x: i64, n: u32) -> bool {
    let half = 1i64 << (n - 1);
    -(half - 1) <= x && x <= half
}

const ERR_TRUNCATED: &str =
    "xor chunk: truncated (bitstream ends before the header's sample count)";
const ERR_SHORT_HEADER: &str = "xor chunk: shorter than its 2-byte header";
const ERR_VARINT_OVERFLOW: &str = "xor chunk: varint overflows a 64-bit integer";
const ERR_BAD_WINDOW: &str = "xor chunk: value window wider than 64 bits";

/// Iterates any XOR chunk bytes (e.g. read from a file). Stops at the header's sample count;
/// on corrupt/truncated input it stops and `error()` reports it (never panics, never reads out
/// of bounds).
#[derive(Debug, Clone)]
pub struct XorIter<'a> {
    /// Bitstream after the header.
    data: &'a [u8],
    /// First byte of `data` not yet counted in `avail`.
    next_byte: usize,
    /// Unread bits, most significant first. The top `avail` bits are valid; the rest are
    /// either zero or the true following stream bits (the word refill may load a byte early),
    /// never garbage, so peeking past `avail` is harmless.
    acc: u64,
    avail: u32,
    num_total: u16,
    num_read: u16,
    t: i64,
    v_bits: u64,
    t_delta: u64,
    // Go's iterator starts at 0/0 (not the appender's sentinel); corrupt chunks that reuse a
    // window before opening one then read 64 bits, as in Prometheus.
    leading: u8,
    trailing: u8,
    err: Option<&'static str>,
}

impl<'a> XorIter<'a> {
    /// Iterates the chunk data `chunk_bytes` (header + bitstream, without the encoding byte).
    pub fn new(chunk_bytes: &'a [u8]) -> Self {
        let (num_total, data, err) = match chunk_bytes {
            [hi, lo, rest @ ..] => (u16::from_be_bytes([*hi, *lo]), rest, None),
            _ => (0, &[][..], Some(ERR_SHORT_HEADER)),
        };
        XorIter {
            data,
            next_byte: 0,
            acc: 0,
            avail: 0,
            num_total,
            num_read: 0,
            t: 0,
            v_bits: 0,
            t_delta: 0,
            leading: 0,
            trailing: 0,
            err,
        }
    }

    /// Why iteration stopped early, if it did.
    pub fn error(&self) -> Option<&'static str> {
        self.err
    }

    /// Tops `acc` up to at least 57 valid bits, or to the end of the data. Only called with
    /// `avail` < 57, so the shifts below stay in range.
    #[inline]
    fn refill(&mut self) {
        let at = self.next_byte;
        if let Some(w) = self.data.get(at..at + 8) {
            let word = u64::from_be_bytes(w.try_into().expect("slice of length 8"));
            self.acc |= word >> self.avail;
            let whole = (63 - self.avail) / 8;
            self.next_byte += whole as usize;
            self.avail += whole * 8;
        } else {
            while self.avail <= 56 {
                let Some(&b) = self.data.get(self.next_byte) else {
                    break;
                };
                self.acc |= (b as u64) << (56 - self.avail);
                self.avail += 8;
                self.next_byte += 1;
            }
        }
    }

    /// Reads `n` (1..=56) bits.
    #[inline]
    fn read_bits(&mut self, n: u32) -> Result<u64, &'static str> {
        debug_assert!((1..=56).contains(&n));
        if self.avail < n {
            self.refill();
            if self.avail < n {
                return Err(ERR_TRUNCATED);
            }
        }
        let v = self.acc >> (64 - n);
        self.acc <<= n;
        self.avail -= n;
        Ok(v)
    }

    /// Reads `n` (1..=64) bits.
    #[inline]
    fn read_long(&mut self, n: u32) -> Result<u64, &'static str> {
        if n <= 56 {
            self.read_bits(n)
        } else {
            let hi = self.read_bits(n - 32)?;
            Ok((hi << 32) | self.read_bits(32)?)
        }
    }

    /// Go's `binary.ReadUvarint` over the bitstream, including its overflow rule.
    fn read_uvarint(&mut self) -> Result<u64, &'static str> {
        // `read_bits` fails only when the stream ends.
        read_uvarint(|| self.read_bits(8).ok().map(|b| b as u8)).map_err(|e| match e {
            VarintError::Truncated => ERR_TRUNCATED,
            VarintError::Overflow => ERR_VARINT_OVERFLOW,
        })
    }

    fn read_dod(&mut self) -> Result<i64, &'static str> {
        // Prefix is up to four 1s terminated by a 0 (the fifth variant `1111` has no 0).
        if self.avail < 4 {
            self.refill();
        }
        let ones = (((self.acc >> 60) as u8) << 4).leading_ones();
        let prefix_len = (ones + 1).min(4);
        if self.avail < prefix_len {
            return Err(ERR_TRUNCATED);
        }
        self.acc <<= prefix_len;
        self.avail -= prefix_len;
        let sz = match ones {
            0 => return Ok(0),
            1 => 14,
            2 => 17,
            3 => 20,
            _ => return Ok(self.read_long(64)? as i64),
        };
        let bits = self.read_bits(sz)?;
        // Patterns above 2^(sz-1) are negative (see `fits_bits` for the asymmetry).
        Ok(if bits > 1 << (sz - 1) {
            bits as i64 - (1i64 << sz)
        } else {
            bits as i64
        })
    }

    fn read_value(&mut self) -> Result<(), &'static str> {
        if self.read_bits(1)? == 0 {
            return Ok(());
        }
        if self.read_bits(1)? == 1 {
            let hdr = self.read_bits(11)?;
            let lead = (hdr >> 6) as u8;
            let sig = match (hdr & 0x3f) as u8 {
                0 => 64,
                m => m,
            };
            if lead + sig > 64 {
                return Err(ERR_BAD_WINDOW);
            }
            self.leading = lead;
            self.trailing = 64 - lead - sig;
        }
        // Always in 1..=64 given the checks above (or the initial 0/0 window).
        let m = 64 - self.leading as u32 - self.trailing as u32;
        let bits = self.read_long(m)?;
        self.v_bits ^= bits << self.trailing;
        Ok(())
    }

    fn decode_next(&mut self) -> Result<(), &'static str> {
        match self.num_read {
            0 => {
                self.t = unzigzag(self.read_uvarint()?);
                self.v_bits = self.read_long(64)?;
            }
            1 => {
                self.t_delta = self.read_uvarint()?;
                self.t = self.t.wrapping_add(self.t_delta as i64);
                self.read_value()?;
            }
            _ => {
                let dod = self.read_dod()?;
                self.t_delta = (self.t_delta as i64).wrapping_add(dod) as u64;
                self.t = self.t.wrapping_add(self.t_delta as i64);
                self.read_value()?;
            }
        }
        Ok(())
    }
}

impl Iterator for XorIter<'_> {
    type Item = (i64, f64);

    #[inline]
    fn next(&mut self) -> Option<(i64, f64)> {
        if self.err.is_some() || self.num_read == self.num_total {
            return None;
        }
        match self.decode_next() {
            Ok(()) => {
                self.num_read += 1;
                Some((self.t, f64::from_bits(self.v_bits)))
            }
            Err(e) => {
                self.err = Some(e);
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.err.is_some() {
            (0, Some(0))
        } else {
            (0, Some((self.num_total - self.num_read) as usize))
        }
    }
}

impl<'a> IntoIterator for &'a XorChunk {
    type Item = (i64, f64);
    type IntoIter = XorIter<'a>;

    fn into_iter(self) -> XorIter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sluice_core::STALE_NAN_BITS;

    /// A deliberately naive, bit-at-a-time model of Prometheus' appender and bstream (its
    /// writeBit/writeByte byte-append rules included), used to check the optimized writer's
    /// bytes and length independently.
    struct Model {
        stream: Vec<u8>,
        free: u8, // unwritten low bits in the last byte
        n: u16,
        t: i64,
        v: u64,
        td: u64,
        lead: u8,
        trail: u8,
    }

    impl Model {
        fn new() -> Self {
            Model {
                stream: vec![0, 0],
                free: 0,
                n: 0,
                t: 0,
                v: 0,
                td: 0,
                lead: 0xff,
                trail: 0,
            }
        }
        fn bit(&mut self, b: bool) {
            if self.free == 0 {
                self.stream.push(0);
                self.free = 8;
            }
            if b {
                *self.stream.last_mut().unwrap() |= 1 << (self.free - 1);
            }
            self.free -= 1;
        }
        fn byte(&mut self, b: u8) {
            if self.free == 0 {
                self.stream.push(0);
                self.free = 8;
            }
            *self.stream.last_mut().unwrap() |= b >> (8 - self.free);
            self.stream.push(((b as u16) << self.free) as u8);
        }
        fn bits(&mut self, v: u64, n: u32) {
            let mut left = n;
            while left >= 8 {
                self.byte((v >> (left - 8)) as u8);
                left -= 8;
            }
            while left > 0 {
                self.bit((v >> (left - 1)) & 1 == 1);
                left -= 1;
            }
        }
        fn uvarint(&mut self, x: u64) {
            uvarint_bytes(x, |b| self.byte(b));
        }
        fn value(&mut self, vb: u64) {
            let d = vb ^ self.v;
            if d == 0 {
                self.bit(false);
                return;
            }
            self.bit(true);
            let lead = (d.leading_zeros() as u8).min(31);
            let trail = d.trailing_zeros() as u8;
            if self.lead != 0xff && lead >= self.lead && trail >= self.trail {
                self.bit(false);
                self.bits(d >> self.trail, (64 - self.lead - self.trail) as u32);
            } else {
                self.lead = lead;
                self.trail = trail;
                self.bit(true);
                self.bits(lead as u64, 5);
                let sig = 64 - lead - trail;
                self.bits(sig as u64 & 0x3f, 6);
                self.bits(d >> trail, sig as u32);
            }
        }
        fn append(&mut self, t: i64, v: f64) {
            let vb = v.to_bits();
            let mut td = 0;
            if self.n == 0 {
                self.uvarint(zigzag(t));
                self.bits(vb, 64);
            } else if self.n == 1 {
                td = t.wrapping_sub(self.t) as u64;
                self.uvarint(td);
                self.value(vb);
            } else {
                td = t.wrapping_sub(self.t) as u64;
                let dod = td.wrapping_sub(self.td) as i64;
                let buckets: [(u64, u32, u32); 3] =
                    [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)];
                if dod == 0 {
                    self.bit(false);
                } else if let Some(&(p, pl, w)) = buckets.iter().find(|b| fits_bits(dod, b.2)) {
                    self.bits(p, pl);
                    self.bits(dod as u64 & mask(w), w);
                } else {
                    self.bits(0b1111, 4);
                    self.bits(dod as u64, 64);
                }
                self.value(vb);
            }
            self.t = t;
            self.v = vb;
            self.td = td;
            self.n += 1;
            self.stream[..2].copy_from_slice(&self.n.to_be_bytes());
        }
    }

    fn encode(samples: &[(i64, f64)]) -> XorChunk {
        let mut c = XorChunk::new();
        for &(t, v) in samples {
            c.append(t, v);
        }
        c
    }

    fn bits_of(samples: &[(i64, f64)]) -> Vec<(i64, u64)> {
        samples.iter().map(|&(t, v)| (t, v.to_bits())).collect()
    }

    /// Round-trips, compares against the model, and checks validity after every append.
    fn check(samples: &[(i64, f64)]) {
        let mut c = XorChunk::new();
        let mut m = Model::new();
        for (i, &(t, v)) in samples.iter().enumerate() {
            c.append(t, v);
            m.append(t, v);
            assert_eq!(
                c.bytes(),
                &m.stream[..],
                "bytes differ from model after sample {i}"
            );
            let mut it = c.iter();
            let got: Vec<_> = it.by_ref().map(|(t, v)| (t, v.to_bits())).collect();
            assert_eq!(it.error(), None);
            assert_eq!(got, bits_of(&samples[..=i]), "decode after sample {i}");
            assert_eq!(c.num_samples() as usize, i + 1);
            assert_eq!(
                c.last().map(|(t, v)| (t, v.to_bits())),
                Some((t, v.to_bits()))
            );
            assert_eq!(c.first_time(), Some(samples[0].0));
        }
    }

    #[test]
    fn first_time_is_read_back_for_any_timestamp() {
        for t in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            1_760_000_000_000,
            i64::MIN,
            i64::MAX,
            -1_760_000_000_000,
        ] {
            let mut c = XorChunk::new();
            c.append(t, 1.5);
            assert_eq!(c.first_time(), Some(t), "{t}");
            c.append(t.wrapping_add(15_000), 2.5);
            assert_eq!(c.first_time(), Some(t), "{t} after a second sample");
        }
    }

    #[test]
    fn empty_chunk() {
        let c = XorChunk::new();
        assert_eq!(c.bytes(), &[0, 0]);
        assert_eq!(c.num_samples(), 0);
        assert_eq!(c.first_time(), None);
        assert_eq!(c.last(), None);
        let mut it = c.iter();
        assert_eq!(it.next(), None);
        assert_eq!(it.error(), None);
        assert_eq!(XorChunk::default().bytes(), XorChunk::new().bytes());
        assert_eq!(XorChunk::with_capacity(0).bytes(), &[0, 0]);
    }

    /// Hand-derived from the Prometheus algorithm:
    ///
    /// * header `00 03` (3 samples).
    /// * (1000, 1.0): zigzag varint of 1000 is 2000 = 0x7d0 → `d0 0f`; then the raw bits of
    ///   1.0 `3f f0 00 00 00 00 00 00`. bstream's writeByte always appends a byte, so the Go
    ///   stream now ends in an empty byte (position is byte-aligned).
    /// * (2000, 1.0): uvarint(1000) → `e8 07` (filling that empty byte), value delta 0 → bit `0`.
    /// * (3000, 2.0): dod = 1000 − 1000 = 0 → bit `0`. Value delta 0x3ff0…^0x4000… =
    ///   0x7ff0_0000_0000_0000: leading 1, trailing 52, and no window yet (0xff sentinel), so
    ///   `1` `1`, 5-bit leading `00001`, 6-bit sigbits 11 `001011`, then 11 bits `11111111111`.
    /// * Bits after `e8 07`: `0 0 1 1 00001 001011 11111111111` (26 bits) =
    ///   `00110000 10010111 11111111 11` → `30 97 ff c0` (last byte zero-padded).
    #[test]
    fn golden_three_samples() {
        let c = encode(&[(1000, 1.0), (2000, 1.0), (3000, 2.0)]);
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x00, 0x03,
            0xd0, 0x0f,
            0x3f, 0xf0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0xe8, 0x07,
            0x30, 0x97, 0xff, 0xc0,
        ];
        assert_eq!(c.bytes(), want);
        let got: Vec<_> = XorIter::new(want).collect();
        assert_eq!(got, vec![(1000, 1.0), (2000, 1.0), (3000, 2.0)]);
    }

    /// The intermediate states of the golden chunk, showing Prometheus' extra zero byte after
    /// the first sample (writeBits of 64 bits ends byte-aligned with a writeByte).
    #[test]
    fn golden_prefixes_and_pad_byte() {
        let mut c = XorChunk::new();
        c.append(1000, 1.0);
        assert_eq!(
            c.bytes(),
            &[0, 1, 0xd0, 0x0f, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 0x00]
        );
        c.append(2000, 1.0);
        // 97 bits → 13 bytes; the value's single `0` bit went into the previously empty byte.
        assert_eq!(
            c.bytes(),
            &[0, 2, 0xd0, 0x0f, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 0xe8, 0x07, 0x00]
        );
    }

    #[test]
    fn regular_scrapes_counters_120_and_240() {
        for n in [120usize, 240] {
            let start = 1_700_000_000_000i64;
            let samples: Vec<_> = (0..n)
                .map(|i| (start + i as i64 * 15_000, (i * i) as f64 * 3.5 + 17.0))
                .collect();
            check(&samples);
            let c = encode(&samples);
            // Regular scrapes of a counter should compress well below 16 bytes/sample.
            assert!(c.bytes().len() < n * 8, "{} bytes", c.bytes().len());
            let constant: Vec<_> = (0..n).map(|i| (start + i as i64 * 15_000, 42.0)).collect();
            check(&constant);
            // Header, 6-byte varint t0, raw value, 2-byte uvarint(15000), 1 value bit, then
            // 1 dod bit + 1 value bit per further sample.
            let bits = 6 * 8 + 64 + 2 * 8 + 1 + (n - 2) * 2;
            assert_eq!(encode(&constant).bytes().len(), 2 + bits.div_ceil(8));
        }
    }

    #[test]
    fn irregular_timestamps() {
        let mut t = 5i64;
        let mut samples = Vec::new();
        let mut x = 0x1234_5678_9abc_def0u64;
        for i in 0..240 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let step = match i % 5 {
                0 => 1 + (x % 10),
                1 => 15_000 + (x % 200),
                2 => 1 + (x % 1_000_000),
                3 => 1 + (x % 100_000_000_000),
                _ => 15_000,
            };
            t += step as i64;
            samples.push((t, (x % 1000) as f64 / 7.0));
        }
        check(&samples);
    }

    #[test]
    fn extreme_timestamps() {
        check(&[
            (i64::MIN, 1.0),
            (i64::MIN + 1, 2.0),
            (i64::MAX - 1, 3.0),
            (i64::MAX, 4.0),
        ]);
        check(&[(i64::MIN, 1.0), (i64::MAX, 2.0)]);
        check(&[
            (-1_000_000, 0.5),
            (-999_000, 0.5),
            (-998_000, 0.25),
            (0, 0.0),
            (1, 1.0),
        ]);
        check(&[(-1, 1.0), (0, 1.0), (1, 1.0)]);
        check(&[(0, 1.0)]);
        check(&[(i64::MAX, 1.0)]);
        check(&[(i64::MIN, 1.0)]);
    }

    /// Bits the third sample adds, for a dod of `dod` with an unchanged value (1 value bit).
    fn third_sample_bits(dod: i64) -> usize {
        let base = 10_000_000i64;
        let mut c = XorChunk::new();
        c.append(0, 1.0);
        c.append(base, 1.0);
        let before = c.bit_len;
        c.append(2 * base + dod, 1.0);
        check(&[(0, 1.0), (base, 1.0), (2 * base + dod, 1.0)]);
        (c.bit_len - before - 1) as usize
    }

    #[test]
    fn dod_bucket_edges() {
        let cases: &[(i64, usize)] = &[
            (0, 1),
            (1, 16),
            (-1, 16),
            (8191, 16),
            (8192, 16),
            (-8191, 16),
            (-8192, 20),
            (8193, 20),
            (65535, 20),
            (65536, 20),
            (-65535, 20),
            (-65536, 24),
            (65537, 24),
            (524287, 24),
            (524288, 24),
            (-524287, 24),
            (-524288, 68),
            (524289, 68),
            (5_000_000, 68),
            (-9_999_999, 68),
        ];
        for &(dod, bits) in cases {
            assert_eq!(third_sample_bits(dod), bits, "dod {dod}");
        }
        // A dod needing all 64 bits.
        check(&[(i64::MIN, 1.0), (0, 1.0), (i64::MAX, 1.0)]);
        check(&[(0, 1.0), (i64::MAX - 1, 1.0), (i64::MAX, 1.0)]);
    }

    #[test]
    fn special_values_bits_exact() {
        let vals = [
            f64::from_bits(STALE_NAN_BITS),
            f64::NAN,
            f64::from_bits(0xfff8_0000_0000_0001),
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            0.0,
            -0.0,
            f64::from_bits(STALE_NAN_BITS),
            1.0,
            f64::from_bits(STALE_NAN_BITS),
            f64::MIN_POSITIVE,
            f64::from_bits(1), // smallest subnormal: XOR with 0 has 63 leading zeros (capped)
            0.0,
            f64::MAX,
            f64::MIN,
            -f64::from_bits(1),
            f64::EPSILON,
        ];
        let samples: Vec<_> = vals
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as i64 * 15_000, v))
            .collect();
        check(&samples);
        // Each value as the first sample, and as the second (raw bits vs. first XOR window).
        for &v in &vals {
            check(&[(0, v), (1, v), (2, v)]);
            check(&[(0, 3.0), (1, v), (2, 3.0)]);
        }
    }

    #[test]
    fn value_windows() {
        // Full-width delta (leading = trailing = 0 → sigbits 64 stored as 0).
        check(&[
            (0, f64::from_bits(0)),
            (1, f64::from_bits(u64::MAX)),
            (2, f64::from_bits(0)),
        ]);
        check(&[
            (0, f64::from_bits(0)),
            (1, f64::from_bits(0x8000_0000_0000_0001)),
        ]);
        // Window reuse then a narrower-leading delta that must open a new window.
        let bits = [
            0u64,
            0xf0,
            0x30,
            0x10,
            0xf000_0000,
            0x1_0000_0000_0000,
            0x8000_0000_0000_0000,
        ];
        let samples: Vec<_> = bits
            .iter()
            .enumerate()
            .map(|(i, &b)| (i as i64, f64::from_bits(b)))
            .collect();
        check(&samples);
    }

    #[test]
    fn random_value_bits() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let samples: Vec<_> = (0..240)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (i * 15_000, f64::from_bits(x))
            })
            .collect();
        check(&samples);
    }

    #[test]
    fn bad_headers() {
        for b in [&[][..], &[0][..]] {
            let mut it = XorIter::new(b);
            assert_eq!(it.next(), None);
            assert_eq!(it.error(), Some(ERR_SHORT_HEADER));
        }
        let mut it = XorIter::new(&[0, 5]);
        assert_eq!(it.next(), None);
        assert_eq!(it.error(), Some(ERR_TRUNCATED));
        // Varint longer than 10 bytes.
        let mut it = XorIter::new(&[
            0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ]);
        assert_eq!(it.next(), None);
        assert_eq!(it.error(), Some(ERR_VARINT_OVERFLOW));
        // 10th varint byte > 1 overflows.
        let mut bytes = vec![
            0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ];
        bytes.extend_from_slice(&[0; 8]);
        let mut it = XorIter::new(&bytes);
        assert_eq!(it.next(), None);
        assert_eq!(it.error(), Some(ERR_VARINT_OVERFLOW));
    }

    #[test]
    fn trailing_bytes_after_count_are_ignored() {
        let c = encode(&[(1, 1.0), (2, 2.0)]);
        let mut b = c.bytes().to_vec();
        b.extend_from_slice(&[0xff; 20]);
        let mut it = XorIter::new(&b);
        assert_eq!(it.by_ref().count(), 2);
        assert_eq!(it.error(), None);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_safe() {
        let samples: Vec<_> = (0..120)
            .map(|i| {
                (
                    1_000 + i * 15_000 + (i % 7) * 3,
                    if i % 10 == 0 {
                        f64::NAN
                    } else {
                        i as f64 * 1.1
                    },
                )
            })
            .collect();
        let c = encode(&samples);
        let full = c.bytes();
        let want = bits_of(&samples);
        for len in 0..full.len() {
            let mut it = XorIter::new(&full[..len]);
            let got: Vec<_> = it.by_ref().map(|(t, v)| (t, v.to_bits())).collect();
            assert_eq!(&want[..got.len()], &got[..], "truncated to {len}");
            // Only the trailing pad/partial bits may be cut without losing a sample.
            if got.len() < samples.len() {
                assert!(it.error().is_some(), "truncated to {len} without error");
            }
        }
        for bit in 0..full.len() * 8 {
            let mut b = full.to_vec();
            b[bit / 8] ^= 1 << (bit % 8);
            let mut it = XorIter::new(&b);
            for _ in it.by_ref() {}
            let _ = it.error();
        }
    }

    #[test]
    fn shrink_and_capacity() {
        let mut c = XorChunk::with_capacity(4096);
        for i in 0..10 {
            c.append(i, i as f64);
        }
        let before = c.bytes().to_vec();
        c.shrink_to_fit();
        assert_eq!(c.bytes(), &before[..]);
        assert_eq!((&c).into_iter().count(), 10);
        // Appending after shrinking must still produce exactly the continuous encoding.
        c.append(10, 10.0);
        let mut m = Model::new();
        for i in 0..=10 {
            m.append(i, i as f64);
        }
        assert_eq!(c.bytes(), &m.stream[..]);
    }

    fn sample_seq() -> impl Strategy<Value = Vec<(i64, f64)>> {
        let step = prop_oneof![
            Just(15_000i64),
            1i64..20,
            14_000i64..16_000,
            1i64..2_000_000,
            1i64..(1 << 40),
        ];
        let value = prop_oneof![
            any::<u64>().prop_map(f64::from_bits),
            (0u32..10).prop_map(|x| x as f64),
            Just(f64::from_bits(STALE_NAN_BITS)),
            any::<f64>(),
        ];
        (any::<i64>(), prop::collection::vec((step, value), 1..300)).prop_map(|(t0, rest)| {
            let mut t = t0 / 2;
            rest.into_iter()
                .map(|(s, v)| {
                    t = t.saturating_add(s);
                    (t, v)
                })
                .scan(None, |prev: &mut Option<i64>, (t, v)| {
                    // Keep timestamps strictly increasing even after saturation.
                    if prev.is_some_and(|p| t <= p) {
                        return Some(None);
                    }
                    *prev = Some(t);
                    Some(Some((t, v)))
                })
                .flatten()
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn prop_round_trip_matches_model(samples in sample_seq()) {
            let c = encode(&samples);
            let mut m = Model::new();
            for &(t, v) in &samples {
                m.append(t, v);
            }
            prop_assert_eq!(c.bytes(), &m.stream[..]);
            let mut it = c.iter();
            let got: Vec<_> = it.by_ref().map(|(t, v)| (t, v.to_bits())).collect();
            prop_assert_eq!(it.error(), None);
            prop_assert_eq!(got, bits_of(&samples));
        }

        #[test]
        fn prop_random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let mut it = XorIter::new(&bytes);
            let mut n = 0usize;
            for _ in it.by_ref() {
                n += 1;
            }
            prop_assert!(n <= 65535);
            if bytes.len() >= 2 {
                let declared = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
                prop_assert!(n == declared || it.error().is_some());
            } else {
                prop_assert!(it.error().is_some());
            }
        }

        #[test]
        fn prop_corrupted_chunk_never_panics(
            samples in sample_seq(),
            flips in prop::collection::vec(any::<prop::sample::Index>(), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let c = encode(&samples);
            let mut b = c.bytes().to_vec();
            for f in flips {
                let i = f.index(b.len() * 8);
                b[i / 8] ^= 1 << (i % 8);
            }
            b.truncate(cut.index(b.len() + 1));
            let mut it = XorIter::new(&b);
            for _ in it.by_ref() {}
            let _ = it.error();
        }
    }
}
