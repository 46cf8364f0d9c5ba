//! The protobuf wire format, as far as the remote-write decoders read it: a cursor over one
//! message ([`Reader`]), varints, fixed-width and length-delimited fields, field keys, and the
//! rules for fields a decoder does not know.
//!
//! Owns every byte-level check and the wording of [`DecodeError::Protobuf`]: each message names
//! the field and the byte offset. Must not know any schema: which fields a message has and
//! what they mean belongs to [`super::v1`] and [`super::v2`], which hand their known fields in
//! as [`KnownField`] lists. Reads borrow from the input; nothing here allocates but an error.

use super::DecodeError;

/// Wire types (the low 3 bits of a field key), as the protobuf encoding spec numbers them.
pub(super) const WT_VARINT: u8 = 0;
pub(super) const WT_I64: u8 = 1;
pub(super) const WT_LEN: u8 = 2;
pub(super) const WT_START_GROUP: u8 = 3;
pub(super) const WT_END_GROUP: u8 = 4;
pub(super) const WT_I32: u8 = 5;

/// Field keys (`field << 3 | wire type`) of the fields we decode. Matching the whole key in one
/// comparison is cheaper than splitting it, and a key with the right field number but another
/// wire type falls through to [`Reader::skip_other`], which reports it.
pub(super) const KEY_1_I64: u64 = (1 << 3) | WT_I64 as u64;
pub(super) const KEY_1_LEN: u64 = (1 << 3) | WT_LEN as u64;
pub(super) const KEY_2_VARINT: u64 = (2 << 3) | WT_VARINT as u64;
pub(super) const KEY_2_LEN: u64 = (2 << 3) | WT_LEN as u64;
pub(super) const KEY_3_LEN: u64 = (3 << 3) | WT_LEN as u64;
pub(super) const KEY_4_LEN: u64 = (4 << 3) | WT_LEN as u64;

/// Field 1 and field 2 of wire type 2 (length-delimited), as single bytes.
pub(super) const KEY_1_LEN_BYTE: u8 = 0x0a;
pub(super) const KEY_2_LEN_BYTE: u8 = 0x12;

/// A field a message knows: number, name for errors, expected wire type. A known field that
/// arrives with another wire type is an error, not an unknown field to skip: it means the
/// sender's schema disagrees with ours and its data would be misread.
pub(super) type KnownField = (u64, &'static str, u8);

/// A varint failure, without context: the hot path returns this small value and the caller
/// names the field only when building the (cold) error.
#[derive(Debug, Clone, Copy)]
pub(super) enum VarintError {
    /// The buffer (or the enclosing message) ended inside the varint that starts here.
    Truncated(usize),
    /// The varint starting here does not fit in 64 bits.
    Overflow(usize),
}

impl VarintError {
    #[cold]
    #[inline(never)]
    pub(super) fn into_error(self, part: &str, what: &str) -> DecodeError {
        DecodeError::Protobuf(match self {
            VarintError::Truncated(at) => {
                format!("truncated varint ({part} {what}) at byte offset {at}")
            }
            VarintError::Overflow(at) => {
                format!("varint ({part} {what}) at byte offset {at} overflows 64 bits")
            }
        })
    }
}

/// A cursor over one message. `buf` ends exactly where the message ends (nested messages get a
/// prefix of the request), so offsets are absolute and "past the end" is a single length check.
///
/// Invariant: `pos <= buf.len()`.
#[derive(Clone)]
pub(super) struct Reader<'a> {
    /// The request up to the end of this message.
    pub(super) buf: &'a [u8],
    /// The next byte to read, as an offset into the request.
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    #[inline(always)]
    pub(super) fn has_more(&self) -> bool {
        self.pos < self.buf.len()
    }

    #[inline(always)]
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads a varint. Tags and most lengths are a single byte, so that case is inlined and the
    /// rest is out of line.
    #[inline(always)]
    pub(super) fn varint(&mut self) -> Result<u64, VarintError> {
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        self.varint_multi()
    }

    /// Multi-byte varint. With 10 bytes in reach (the common case) it reads a fixed-size array,
    /// which needs one bounds check and unrolls; near the end it falls back to a checked loop.
    #[inline(never)]
    fn varint_multi(&mut self) -> Result<u64, VarintError> {
        let start = self.pos;
        let rest = self.buf.get(start..).unwrap_or(&[]);
        if let Some(chunk) = rest.first_chunk::<10>() {
            let mut v = 0u64;
            for (i, &b) in chunk.iter().enumerate() {
                v |= u64::from(b & 0x7f) << (7 * i);
                if b < 0x80 {
                    // The 10th byte holds bit 63 only; anything more does not fit a u64.
                    if i == 9 && b > 1 {
                        return Err(VarintError::Overflow(start));
                    }
                    self.pos = start + i + 1;
                    return Ok(v);
                }
            }
            return Err(VarintError::Overflow(start));
        }
        // Fewer than 10 bytes left, so at most 9 are read and the shift stays below 63.
        let mut v = 0u64;
        for (i, &b) in rest.iter().enumerate() {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.pos = start + i + 1;
                return Ok(v);
            }
        }
        Err(VarintError::Truncated(start))
    }

    /// Reads a length prefix and returns the byte range it covers, checked to lie inside this
    /// message.
    #[inline(always)]
    pub(super) fn len_delim(&mut self, what: &'static str) -> Result<(usize, usize), DecodeError> {
        let at = self.pos;
        let len = self.varint().map_err(|e| e.into_error("length of", what))?;
        let remaining = self.remaining();
        if len > remaining as u64 {
            return Err(truncated_len(what, at, len, remaining));
        }
        let start = self.pos;
        // len <= remaining, so this stays within buf.
        self.pos = start + len as usize;
        Ok((start, self.pos))
    }

    /// The next field of `message`: where it starts and its key; `None` at the end.
    #[inline(always)]
    pub(super) fn next_key(
        &mut self,
        message: &'static str,
    ) -> Result<Option<(usize, u64)>, DecodeError> {
        if !self.has_more() {
            return Ok(None);
        }
        let at = self.pos;
        let key = self
            .varint()
            .map_err(|e| e.into_error("field tag in", message))?;
        Ok(Some((at, key)))
    }

    #[inline(always)]
    pub(super) fn skip_len_delim(&mut self, what: &'static str) -> Result<(), DecodeError> {
        self.len_delim(what).map(|_| ())
    }

    /// A reader over the embedded message that starts here.
    #[inline(always)]
    pub(super) fn message(&mut self, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        let (start, end) = self.len_delim(what)?;
        let buf = self.buf.get(..end).unwrap_or(&[]);
        Ok(Reader {
            buf,
            pos: start.min(buf.len()),
        })
    }

    #[inline(always)]
    pub(super) fn fixed64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let at = self.pos;
        match self.buf.get(at..).and_then(|rest| rest.first_chunk::<8>()) {
            Some(bytes) => {
                self.pos = at + 8;
                Ok(u64::from_le_bytes(*bytes))
            }
            None => Err(truncated_fixed(what, at, 8, self.remaining())),
        }
    }

    fn skip_fixed(&mut self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        let at = self.pos;
        if self.remaining() < n {
            return Err(truncated_fixed(what, at, n, self.remaining()));
        }
        self.pos = at + n;
        Ok(())
    }

    /// Handles a key the caller did not match: rejects malformed keys and known fields with the
    /// wrong wire type, and skips unknown fields by their wire type.
    #[inline(never)]
    pub(super) fn skip_other(
        &mut self,
        key: u64,
        at: usize,
        msg: &'static str,
        known: &[KnownField],
    ) -> Result<(), DecodeError> {
        let field = key >> 3;
        let wt = (key & 7) as u8;
        if key > u64::from(u32::MAX) || field == 0 {
            return Err(DecodeError::Protobuf(format!(
                "invalid field number {field} in {msg} at byte offset {at}"
            )));
        }
        if let Some(&(_, name, expected)) = known.iter().find(|k| k.0 == field) {
            return Err(DecodeError::Protobuf(format!(
                "{msg}.{name} (field {field}) at byte offset {at} has wire type {wt} ({}), \
                 expected {expected} ({})",
                wire_type_name(wt),
                wire_type_name(expected)
            )));
        }
        match wt {
            WT_VARINT => self
                .varint()
                .map(|_| ())
                .map_err(|e| e.into_error("value of unknown field in", msg)),
            WT_I64 => self.skip_fixed(8, "unknown fixed64 field"),
            WT_LEN => self.skip_len_delim("unknown length-delimited field"),
            WT_I32 => self.skip_fixed(4, "unknown fixed32 field"),
            WT_START_GROUP | WT_END_GROUP => Err(DecodeError::Protobuf(format!(
                "field {field} in {msg} at byte offset {at} uses the deprecated group wire type \
                 {wt}, which is not supported"
            ))),
            _ => Err(DecodeError::Protobuf(format!(
                "field {field} in {msg} at byte offset {at} has invalid wire type {wt}"
            ))),
        }
    }
}

fn wire_type_name(wt: u8) -> &'static str {
    match wt {
        WT_VARINT => "varint",
        WT_I64 => "fixed64",
        WT_LEN => "length-delimited",
        WT_START_GROUP => "start group",
        WT_END_GROUP => "end group",
        WT_I32 => "fixed32",
        _ => "invalid",
    }
}

#[cold]
#[inline(never)]
fn truncated_len(what: &str, at: usize, len: u64, remaining: usize) -> DecodeError {
    DecodeError::Protobuf(format!(
        "truncated {what}: length {len} at byte offset {at} exceeds the {remaining} bytes left \
         in its enclosing message"
    ))
}

#[cold]
#[inline(never)]
fn truncated_fixed(what: &str, at: usize, need: usize, remaining: usize) -> DecodeError {
    DecodeError::Protobuf(format!(
        "truncated {what} at byte offset {at}: needs {need} bytes but only {remaining} left"
    ))
}
