//! Adapts glommio's TCP stream and a timer to hyper's runtime traits.
//!
//! Owns nothing but the byte shuffling between the two: reads go through glommio's receive
//! buffer (`AsyncBufRead`) so no uninitialised memory is ever exposed, writes pass straight
//! through. Must not interpret the bytes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
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

/// hyper's timer, for the deadline of a request's headers. hyper needs `Send` sleeps and
/// glommio's timers belong to one executor; a general timer (futures-timer) wakes its thread
/// for every sleep created, which is every request. These sleeps cost nothing until a read
/// actually waits: a waiting sleep leaves its deadline and waker in a list that one thread
/// checks every [`TICK`], so a deadline fires up to a tick late.
#[derive(Clone, Copy)]
pub struct HyperTimer;

/// How often the timer thread wakes the sleeps whose deadline passed.
const TICK: Duration = Duration::from_millis(100);

/// Sleeps that wait, with their deadlines; each entry is dropped once woken or abandoned.
type Waiting = Mutex<Vec<(Instant, Weak<Mutex<Option<Waker>>>)>>;

fn waiting() -> &'static Waiting {
    static WAITING: OnceLock<Waiting> = OnceLock::new();
    WAITING.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("sluice-timer".into())
            .spawn(|| loop {
                std::thread::sleep(TICK);
                let now = Instant::now();
                let mut due = Vec::new();
                if let Ok(mut list) = waiting().lock() {
                    list.retain(|(at, w)| match w.upgrade() {
                        Some(w) if *at <= now => {
                            due.push(w);
                            false
                        }
                        Some(_) => true,
                        None => false,
                    });
                }
                for w in due {
                    if let Some(waker) = w.lock().ok().and_then(|mut w| w.take()) {
                        waker.wake();
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(
                "cannot start the HTTP timer thread (header timeouts will not fire): {e}"
            );
        }
        Mutex::new(Vec::new())
    })
}

struct Sleep {
    deadline: Instant,
    /// The waker the timer thread calls; registered at the first poll that waits.
    waker: Option<Arc<Mutex<Option<Waker>>>>,
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
                if let Ok(mut list) = waiting().lock() {
                    list.push((self.deadline, Arc::downgrade(&w)));
                }
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
