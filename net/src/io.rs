//! Adapts glommio's TCP stream and a timer to hyper's runtime traits.
//!
//! Owns nothing but the byte shuffling between the two: reads go through glommio's receive
//! buffer (`AsyncBufRead`) so no uninitialised memory is ever exposed, writes pass straight
//! through. Must not interpret the bytes.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::{AsyncBufRead, AsyncWrite};
use glommio::net::{Preallocated, TcpStream};

/// A glommio TCP stream speaking hyper's `Read`/`Write`.
pub struct HyperIo(pub TcpStream<Preallocated>);

impl hyper::rt::Read for HyperIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = Pin::new(&mut self.0);
        let data = match stream.poll_fill_buf(cx) {
            Poll::Ready(Ok(d)) => d,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        let n = data.len().min(buf.remaining());
        buf.put_slice(&data[..n]);
        Pin::new(&mut self.0).consume(n);
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for HyperIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// hyper's timer, for the deadline of a request's headers. hyper wants `Send` sleeps, and
/// glommio's timers belong to one executor, so these sleeps do not arm a timer each: a sleep
/// that waits leaves its deadline and waker in its core's list, and that core's
/// [`run_header_deadlines`] task wakes the ones that passed every [`TICK`] (a deadline fires
/// up to a tick late). Nothing is shared between cores and no other thread is involved.
#[derive(Clone, Copy)]
pub struct HyperTimer;

/// How often a core wakes the sleeps whose deadline passed.
const TICK: Duration = Duration::from_millis(100);

type WakerSlot = Arc<Mutex<Option<Waker>>>;

/// A waiting sleep's deadline and (weakly) its waker.
type Waiting = (Instant, Weak<Mutex<Option<Waker>>>);

thread_local! {
    /// This core's waiting sleeps: a connection is only ever polled on the core that accepted
    /// it. An entry goes once woken, or once its sleep is dropped.
    static WAITING: RefCell<Vec<Waiting>> =
        const { RefCell::new(Vec::new()) };
}

/// Wakes this core's header deadlines as they pass; spawn it on every core that serves HTTP
/// with a header timeout.
pub async fn run_header_deadlines() {
    let mut due: Vec<WakerSlot> = Vec::new();
    loop {
        glommio::timer::sleep(TICK).await;
        let now = Instant::now();
        WAITING.with(|w| {
            w.borrow_mut().retain(|(at, slot)| match slot.upgrade() {
                Some(slot) if *at <= now => {
                    due.push(slot);
                    false
                }
                Some(_) => true,
                None => false,
            })
        });
        for slot in due.drain(..) {
            let waker = slot.lock().ok().and_then(|mut w| w.take());
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

struct Sleep {
    deadline: Instant,
    /// The waker [`run_header_deadlines`] calls; registered at the first poll that waits.
    waker: Option<WakerSlot>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        match &self.waker {
            Some(w) => {
                if let Ok(mut w) = w.lock() {
                    *w = Some(cx.waker().clone());
                }
            }
            None => {
                let w = Arc::new(Mutex::new(Some(cx.waker().clone())));
                WAITING.with(|list| list.borrow_mut().push((self.deadline, Arc::downgrade(&w))));
                self.waker = Some(w);
            }
        }
        Poll::Pending
    }
}

impl hyper::rt::Sleep for Sleep {}

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep {
            deadline,
            waker: None,
        })
    }
}
