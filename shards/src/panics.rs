//! Which panics the process survives: those of reads.
//!
//! A read (a query, the series and labels APIs, remote read, `/metrics`) only looks at a
//! core's state, so a panic in one — a bug, in our code or in a parser crate — can end that
//! request and leave the core as it was: the borrows it held are released while unwinding.
//! A write is different: a panic in the middle of appending can leave a head and its WAL tail
//! disagreeing, and a core in that state must not acknowledge another write. So the process
//! hook (in the binary) aborts on every panic *outside* a read zone, and a restart replays the
//! WAL, which holds every acknowledged sample; inside one it only logs, and the zone's
//! [`catch`] or [`CatchPanic`] turns the unwind into an error for that request.
//!
//! Owns the per-thread zone marker and the count of survived panics. Must not decide what a
//! caught panic answers: callers map [`Panicked`] to their status code.

use std::cell::Cell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

thread_local! {
    /// How many read zones this thread is inside (zones nest: a read future polls others).
    static ZONE: Cell<u32> = const { Cell::new(0) };
}

/// Panics caught in read zones since start (`sluice_http_panics_total`).
static CAUGHT: AtomicU64 = AtomicU64::new(0);

/// A read that panicked; the message is the panic's.
#[derive(Debug, Clone, thiserror::Error)]
#[error("internal error: the read panicked: {0}")]
pub struct Panicked(pub String);

/// Whether a panic on this thread right now happens inside a read zone (the process hook
/// lets those unwind instead of aborting).
pub fn in_read_zone() -> bool {
    ZONE.with(|z| z.get() > 0)
}

/// Panics survived so far.
pub fn caught() -> u64 {
    CAUGHT.load(Ordering::Relaxed)
}

/// Leaves the zone when dropped, also while unwinding.
struct Entered;

impl Entered {
    fn new() -> Self {
        ZONE.with(|z| z.set(z.get() + 1));
        Entered
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        ZONE.with(|z| z.set(z.get().saturating_sub(1)));
    }
}

fn message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Runs the read `f` in a zone: a panic in it becomes `Err`.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Panicked> {
    let _zone = Entered::new();
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        CAUGHT.fetch_add(1, Ordering::Relaxed);
        Panicked(message(p.as_ref()))
    })
}

/// A read future polled in a zone: a panic in any poll ends it with `Err` (it is not polled
/// again; what it held is dropped).
pub struct CatchPanic<F> {
    inner: Option<Pin<Box<F>>>,
}

impl<F: Future> CatchPanic<F> {
    pub fn new(f: F) -> Self {
        CatchPanic {
            inner: Some(Box::pin(f)),
        }
    }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(Err(Panicked("polled after a panic".into())));
        };
        match catch(|| inner.as_mut().poll(cx)) {
            Ok(Poll::Ready(v)) => {
                self.inner = None;
                Poll::Ready(Ok(v))
            }
            Ok(Poll::Pending) => Poll::Pending,
            Err(p) => {
                // Dropped outside the zone's unwind, like any finished future.
                self.inner = None;
                Poll::Ready(Err(p))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_a_zone_is_an_error_and_the_zone_is_left() {
        assert!(!in_read_zone());
        let before = caught();
        let r: Result<(), _> = catch(|| {
            assert!(in_read_zone());
            panic!("boom")
        });
        assert_eq!(r.unwrap_err().0, "boom");
        assert!(!in_read_zone());
        assert_eq!(caught(), before + 1);
        assert_eq!(catch(|| 7).unwrap(), 7);
    }

    #[test]
    fn a_panicking_future_ends_with_an_error() {
        let ok = futures_lite::future::block_on(CatchPanic::new(async { 3 }));
        assert_eq!(ok.unwrap(), 3);
        let bad = futures_lite::future::block_on(CatchPanic::new(async {
            futures::future::ready(()).await;
            panic!("in a future {}", 1)
        }));
        assert_eq!(bad.unwrap_err().0, "in a future 1");
        assert!(!in_read_zone());
    }
}
