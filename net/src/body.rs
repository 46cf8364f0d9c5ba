//! Reading request bodies: into a buffer, under a size limit and a stall timeout, with the
//! memory reserved before the buffer grows.
//!
//! Owns the rules every body reader follows (the remote-write endpoint, the replication RPC,
//! the read API): a body may not exceed its limit, may not stall — no bytes at all — for longer
//! than `--http.body-read-timeout`, and its buffer grows only after the caller reserved the
//! memory. Must not decide the answer: it says what went wrong, the caller answers (or ends the
//! connection).
//!
//! A stall is "no bytes for the timeout", not "the whole body within it": a large body on a
//! slow but moving link is fine, a sender that went quiet after its headers is not.

use std::future::Future;
use std::time::Duration;

use futures::io::{AsyncRead, AsyncReadExt};
use http_body_util::BodyExt;

/// How much of a body may arrive and how long it may pause.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body accepted, in bytes.
    pub max: usize,
    /// Longest pause between two pieces of the body; `None`: no limit.
    pub stall: Option<Duration>,
}

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("no body bytes for {0:?}")]
    Stalled(Duration),
    #[error("reading body: {0}")]
    Read(String),
    /// The memory for the body was not granted (the reservation's message).
    #[error("{0}")]
    OverBudget(String),
}

/// A body that stalled: what a request handler returns to hyper to have the connection
/// dropped without an answer.
#[derive(Debug, thiserror::Error)]
#[error("request body stalled: no bytes for {0:?}")]
pub struct Stalled(pub Duration);

/// Reads `body` to its end into `out` (cleared first). Before `out` grows, `reserve(bytes)` is
/// asked for the bytes it is about to allocate: room for the whole body at once when
/// `size_hint` (its `Content-Length`) says how long it is, otherwise twice what arrived so far.
pub async fn read<B>(
    mut body: B,
    out: &mut Vec<u8>,
    limits: Limits,
    size_hint: Option<usize>,
    mut reserve: impl FnMut(usize) -> Result<(), String>,
) -> Result<(), BodyError>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    out.clear();
    while let Some(frame) = within(limits.stall, body.frame()).await? {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let len = out.len() + data.len();
        if len > limits.max {
            return Err(BodyError::TooLarge {
                len,
                max: limits.max,
            });
        }
        if len > out.capacity() {
            let want = size_hint
                .filter(|&h| h >= len)
                .unwrap_or(len.max(2 * out.len()))
                .min(limits.max);
            reserve(want - out.capacity()).map_err(BodyError::OverBudget)?;
            // Exactly what was reserved: `extend` alone could double the buffer.
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(data);
    }
    Ok(())
}

/// Reads `body` to its end without keeping it (before an early answer, so a client still
/// sending sees the answer instead of a reset), at most `max` bytes: beyond that the
/// connection is not worth keeping.
pub async fn drain<B>(mut body: B, max: usize, stall: Option<Duration>) -> Result<(), BodyError>
where
    B: hyper::body::Body + Unpin,
    B::Error: std::fmt::Display,
{
    let mut seen = 0usize;
    while let Some(frame) = within(stall, body.frame()).await? {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        if let Some(data) = frame.data_ref() {
            seen += bytes::Buf::remaining(data);
            if seen > max {
                return Err(BodyError::TooLarge { len: seen, max });
            }
        }
    }
    Ok(())
}

/// Fills `buf` from `r`, each read waiting at most `stall`. The end of the stream before
/// `buf` is full is an error: a frame was cut short.
pub async fn read_exact<R: AsyncRead + Unpin>(
    r: &mut R,
    mut buf: &mut [u8],
    stall: Option<Duration>,
) -> Result<(), BodyError> {
    while !buf.is_empty() {
        let n = within(stall, r.read(buf))
            .await?
            .map_err(|e| BodyError::Read(e.to_string()))?;
        if n == 0 {
            return Err(BodyError::Read(format!(
                "connection closed with {} bytes of the frame missing",
                buf.len()
            )));
        }
        buf = &mut buf[n..];
    }
    Ok(())
}

/// Reads and drops the next `len` bytes of `r` in small pieces (never holding more than one),
/// each read waiting at most `stall`; returns their CRC32C and copies the first
/// `head.len()` of them (or fewer, if `len` is shorter) into `head`.
pub async fn discard<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
    stall: Option<Duration>,
    head: &mut [u8],
) -> Result<u32, BodyError> {
    let mut piece = [0u8; 16 << 10];
    let mut crc = 0u32;
    let mut done = 0usize;
    while done < len {
        let want = piece.len().min(len - done);
        let n = within(stall, r.read(&mut piece[..want]))
            .await?
            .map_err(|e| BodyError::Read(e.to_string()))?;
        if n == 0 {
            return Err(BodyError::Read(format!(
                "connection closed with {} bytes of the frame missing",
                len - done
            )));
        }
        if done < head.len() {
            let k = (head.len() - done).min(n);
            head[done..done + k].copy_from_slice(&piece[..k]);
        }
        crc = crc32c::crc32c_append(crc, &piece[..n]);
        done += n;
    }
    Ok(crc)
}

/// Awaits `fut`, or fails with [`BodyError::Stalled`] when it has not finished within
/// `stall`. The timer exists only if `fut` has to wait (the sleep is created when first
/// polled), so a body that is already buffered costs nothing.
async fn within<T>(stall: Option<Duration>, fut: impl Future<Output = T>) -> Result<T, BodyError> {
    match stall {
        None => Ok(fut.await),
        Some(d) => {
            futures_lite::future::or(async { Ok(fut.await) }, async {
                glommio::timer::sleep(d).await;
                Err(BodyError::Stalled(d))
            })
            .await
        }
    }
}
