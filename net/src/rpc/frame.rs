//! The replication RPC's wire format: length-prefixed, CRC-checked frames.
//!
//! Owns encoding and decoding of frames, and the checks that make a frame from the network
//! safe to hand to the shards (bounds, CRC, label validity). Must not do I/O.
//!
//! # Layout (all integers little-endian)
//!
//! ```text
//! frame  := len:u32  crc:u32  body            len = body length, crc = CRC32C(body)
//! body   := WRITE id:u64 tenant_len:u8 tenant n_series:u32 series*
//!         | FORWARD id:u64 tenant_len:u8 tenant request
//!         | REPLY id:u64 status:u8 stored:u64 rejected:u64 msg_len:u32 msg
//! series := key_len:u32 n_samples:u32 key (t:i64 v:u64)*n_samples
//! ```
//!
//! `WRITE` = 1, `REPLY` = 2, `FORWARD` = 3. `FORWARD` carries a whole remote-write 1.0
//! request as the sender received it (snappy-compressed protobuf, to the end of the body):
//! when a peer is a replica of every series of a request (R = number of nodes, the usual
//! Thanos set-up) that is both the smallest encoding and free to produce; the peer decodes
//! and validates it like an HTTP request. `WRITE` carries a share of a request. `key` is the series key of `sluice_core::put_series_key`
//! (`(name 0xff value 0xff)*`, names ascending); `v` is the sample's `f64` bit pattern, so
//! stale markers travel exactly. The receiver computes each series' hash itself (from the
//! tenant and the key) instead of trusting one on the wire. A `WRITE` is always a replica:
//! the receiving node stores it and never forwards it again. `id` pairs replies with
//! requests on a pipelined connection.

use sluice_core::{Sample, TenantHasher};
use sluice_shards::batch::{put_samples, SeriesBatch, SeriesSpans};

/// Bytes before a frame's body.
pub const HEADER_LEN: usize = 8;

const WRITE: u8 = 1;
const REPLY: u8 = 2;
const FORWARD: u8 = 3;

/// What a request body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Write,
    Forward,
}

/// The kind of a request body, by its first byte.
pub fn request_kind(body: &[u8]) -> Result<Kind, FrameError> {
    match body.first() {
        Some(&WRITE) => Ok(Kind::Write),
        Some(&FORWARD) => Ok(Kind::Forward),
        Some(&k) => Err(FrameError::UnknownKind(k)),
        None => Err(FrameError::Truncated),
    }
}

/// Appends a `FORWARD` frame: `request` is a snappy-compressed remote-write 1.0 body.
pub fn encode_forward(out: &mut Vec<u8>, id: u64, tenant: &str, request: &[u8]) {
    let start = begin_request(out, FORWARD, id, tenant);
    out.extend_from_slice(request);
    seal(out, start);
}

/// Starts a request frame (header placeholder, kind, id, tenant of at most 255 bytes —
/// tenants are at most 128); returns where the frame starts, for [`seal`].
fn begin_request(out: &mut Vec<u8>, kind: u8, id: u64, tenant: &str) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.push(kind);
    out.extend_from_slice(&id.to_le_bytes());
    let t = &tenant.as_bytes()[..tenant.len().min(255)];
    out.push(t.len() as u8);
    out.extend_from_slice(t);
    start
}

/// Reads a request body's kind (which must be `kind`), id and tenant.
fn read_request_head<'a>(
    r: &mut Reader<'a>,
    kind: u8,
    valid_tenant: impl Fn(&str) -> bool,
) -> Result<WriteHead<'a>, FrameError> {
    match r.u8()? {
        k if k == kind => {}
        k => return Err(FrameError::UnknownKind(k)),
    }
    let id = r.u64()?;
    let tn = r.u8()? as usize;
    let tenant = std::str::from_utf8(r.take(tn)?).map_err(|_| FrameError::Tenant)?;
    if !valid_tenant(tenant) {
        return Err(FrameError::Tenant);
    }
    Ok(WriteHead { id, tenant })
}

/// Decodes a `FORWARD` body (CRC already checked): its id, tenant and request bytes.
pub fn decode_forward(
    body: &[u8],
    valid_tenant: impl Fn(&str) -> bool,
) -> Result<(WriteHead<'_>, &[u8]), FrameError> {
    let mut r = Reader(body);
    let head = read_request_head(&mut r, FORWARD, valid_tenant)?;
    Ok((head, r.0))
}

/// A replica's answer to a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Every sample is durable.
    Ok = 0,
    /// Some samples were refused (out of order, out of bounds, conflicting); the rest are
    /// durable. The sender gets a 409 and must not retry.
    Conflict = 1,
    /// Over a tenant limit; nothing stored (429).
    Limited = 2,
    /// The frame itself is invalid; nothing stored (400).
    BadRequest = 3,
    /// Not durable (storage failure, shutting down); the sender may retry (503).
    Unavailable = 4,
}

impl Status {
    fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::Conflict,
            2 => Status::Limited,
            3 => Status::BadRequest,
            4 => Status::Unavailable,
            _ => return None,
        })
    }
}

/// A frame that cannot be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame checksum mismatch (corrupt frame)")]
    Checksum,
    #[error("frame truncated")]
    Truncated,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("unknown reply status {0}")]
    UnknownStatus(u8),
    #[error("invalid tenant in frame")]
    Tenant,
    #[error("invalid series key in frame: {0}")]
    Key(String),
    #[error("{0} bytes after the last series")]
    Trailing(usize),
}

/// Reads a frame header: the body length (checked against `max`) and the body's CRC.
pub fn parse_header(h: &[u8; HEADER_LEN], max: usize) -> Result<(usize, u32), FrameError> {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok((len, u32::from_le_bytes([h[4], h[5], h[6], h[7]])))
}

/// Checks a body against its header's CRC.
pub fn check_body(body: &[u8], crc: u32) -> Result<(), FrameError> {
    if crc32c::crc32c(body) == crc {
        Ok(())
    } else {
        Err(FrameError::Checksum)
    }
}

/// Builds one write frame at the end of a buffer, series by series. Several frames may
/// share a buffer (pipelining); each is sealed by [`finish`](Self::finish). Holds positions
/// only, so a caller can keep one encoder per destination next to its buffer.
#[derive(Debug)]
pub struct WriteEncoder {
    start: usize,
    n_series_at: usize,
    n_series: u32,
    samples: usize,
}

impl WriteEncoder {
    /// Starts a write frame for `tenant` (at most 255 bytes: tenants are at most 128).
    pub fn begin(out: &mut Vec<u8>, id: u64, tenant: &str) -> Self {
        let start = begin_request(out, WRITE, id, tenant);
        let n_series_at = out.len();
        out.extend_from_slice(&0u32.to_le_bytes());
        WriteEncoder {
            start,
            n_series_at,
            n_series: 0,
            samples: 0,
        }
    }

    /// Adds one series.
    pub fn push(&mut self, out: &mut Vec<u8>, key: &[u8], samples: &[Sample]) {
        out.reserve(8 + key.len() + samples.len() * 16);
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(&(samples.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        put_samples(out, samples.iter().copied());
        self.n_series += 1;
        self.samples += samples.len();
    }

    /// Series added so far.
    pub fn len(&self) -> usize {
        self.n_series as usize
    }

    /// Whether no series was added.
    pub fn is_empty(&self) -> bool {
        self.n_series == 0
    }

    /// Samples added so far.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Seals the frame (count, length, CRC); `out` must be the buffer it was begun in.
    pub fn finish(self, out: &mut [u8]) {
        out[self.n_series_at..self.n_series_at + 4].copy_from_slice(&self.n_series.to_le_bytes());
        seal(out, self.start);
    }
}

/// Writes the header of the frame that starts at `start` and runs to the buffer's end.
fn seal(out: &mut [u8], start: usize) {
    let body = &out[start + HEADER_LEN..];
    let len = body.len() as u32;
    let crc = crc32c::crc32c(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub id: u64,
    pub status: Status,
    /// Samples stored or already present.
    pub stored: u64,
    /// Samples refused.
    pub rejected: u64,
    pub message: String,
}

impl Reply {
    /// Appends this reply as a frame.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        out.push(REPLY);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.push(self.status as u8);
        out.extend_from_slice(&self.stored.to_le_bytes());
        out.extend_from_slice(&self.rejected.to_le_bytes());
        // A message is a human-readable summary; cap it so a reply stays small.
        let msg = truncate_utf8(&self.message, 4096);
        out.extend_from_slice(&(msg.len() as u32).to_le_bytes());
        out.extend_from_slice(msg.as_bytes());
        seal(out, start);
    }

    /// Decodes a reply body (CRC already checked).
    pub fn decode(body: &[u8]) -> Result<Reply, FrameError> {
        let mut r = Reader(body);
        match r.u8()? {
            REPLY => {}
            k => return Err(FrameError::UnknownKind(k)),
        }
        let id = r.u64()?;
        let s = r.u8()?;
        let status = Status::from_u8(s).ok_or(FrameError::UnknownStatus(s))?;
        let stored = r.u64()?;
        let rejected = r.u64()?;
        let n = r.u32()? as usize;
        let message = String::from_utf8_lossy(r.take(n)?).into_owned();
        Ok(Reply {
            id,
            status,
            stored,
            rejected,
            message,
        })
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A decoded write frame: series borrowed from the body, hashes computed here.
#[derive(Debug, Default)]
pub struct WriteBatch {
    spans: SeriesSpans,
}

/// The parts of a write frame besides its series.
#[derive(Debug, PartialEq, Eq)]
pub struct WriteHead<'a> {
    pub id: u64,
    pub tenant: &'a str,
}

/// Reads only the id of a request body, so that even a frame that fails to decode gets a
/// reply.
pub fn write_id(body: &[u8]) -> Option<u64> {
    let mut r = Reader(body);
    request_kind(body).ok()?;
    r.u8().ok()?;
    r.u64().ok()
}

impl WriteBatch {
    /// Decodes a write body (CRC already checked) into `self`, validating every key;
    /// `valid_tenant` decides which tenant names are acceptable.
    pub fn decode<'a>(
        &mut self,
        body: &'a [u8],
        valid_tenant: impl Fn(&str) -> bool,
    ) -> Result<WriteHead<'a>, FrameError> {
        self.spans.clear();
        let mut r = Reader(body);
        let WriteHead { id, tenant } = read_request_head(&mut r, WRITE, valid_tenant)?;
        let hasher = TenantHasher::new(tenant.as_bytes());
        let n = r.u32()? as usize;
        // Each valid series takes at least MIN_WRITE_SERIES_BYTES: a count beyond that is a
        // lie, not a reason to reserve memory (the budget reserved this much for it, see
        // `need::write_frame_index`).
        self.spans
            .reserve(n.min(r.0.len() / crate::budget::need::MIN_WRITE_SERIES_BYTES));
        for _ in 0..n {
            let key_len = r.u32()? as usize;
            let n_samples = r.u32()? as usize;
            let key_at = body.len() - r.0.len();
            let key = r.take(key_len)?;
            validate_key(key)?;
            let samples_at = body.len() - r.0.len();
            let bytes = n_samples.checked_mul(16).ok_or(FrameError::Truncated)?;
            r.take(bytes)?;
            self.spans
                .push(hasher.hash_key(key), key_at, key_len, samples_at, n_samples);
        }
        if !r.0.is_empty() {
            return Err(FrameError::Trailing(r.0.len()));
        }
        Ok(WriteHead { id, tenant })
    }

    /// Number of samples.
    pub fn num_samples(&self) -> usize {
        self.spans.num_samples()
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the batch has no series.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Bytes of the series' keys.
    pub fn key_bytes(&self) -> usize {
        self.spans.key_bytes()
    }

    /// Bytes the batch's index holds.
    pub fn capacity_bytes(&self) -> usize {
        self.spans.capacity_bytes()
    }

    /// The batch over the body it was decoded from.
    pub fn view<'a>(&'a self, body: &'a [u8]) -> WriteView<'a> {
        WriteView { batch: self, body }
    }
}

/// A [`WriteBatch`] with its body: what the shards append.
pub struct WriteView<'a> {
    batch: &'a WriteBatch,
    body: &'a [u8],
}

impl SeriesBatch for WriteView<'_> {
    fn len(&self) -> usize {
        self.batch.spans.len()
    }

    fn hash(&self, i: usize) -> u64 {
        self.batch.spans.hash(i)
    }

    fn key<'s>(&'s self, i: usize, _: &'s mut Vec<u8>) -> &'s [u8] {
        self.batch.spans.key(self.body, i)
    }

    fn samples(&self, i: usize) -> impl Iterator<Item = Sample> {
        self.batch.spans.samples(self.body, i)
    }
}

/// A key from the network must be what `put_series_key` writes for a valid label set: the
/// shards trust keys completely.
fn validate_key(key: &[u8]) -> Result<(), FrameError> {
    if key.last() != Some(&0xff) || key.iter().filter(|b| **b == 0xff).count() % 2 != 0 {
        return Err(FrameError::Key("malformed key".into()));
    }
    let mut bad_utf8 = false;
    let labels = sluice_core::key_labels(key).map(|(n, v)| {
        match (std::str::from_utf8(n), std::str::from_utf8(v)) {
            (Ok(n), Ok(v)) => (n, v),
            // An empty name fails the label check below, which ends the walk.
            _ => {
                bad_utf8 = true;
                ("", "")
            }
        }
    });
    let checked = sluice_core::labels::validate_label_set(labels);
    if bad_utf8 {
        return Err(FrameError::Key("label not UTF-8".into()));
    }
    checked.map_err(|e| FrameError::Key(e.to_string()))
}

/// Bounds-checked little-endian reads.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests;
