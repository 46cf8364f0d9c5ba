//! Our `SO_REUSEPORT` listeners and their accept loop, which stops listening at once.
//!
//! Stopping is the delicate part. An armed glommio accept is an io_uring request that holds
//! the listening socket's file, so dropping a `TcpListener` closes our descriptor but leaves
//! the socket listening, in the address' `SO_REUSEPORT` group, until the ring gets round to
//! the cancellation (or is torn down with its executor). Connections the kernel hands it
//! meanwhile are reset, or accepted for a future that is gone and never answered. That is
//! how the interim start-up listener reset a client's first request after `/-/ready` said
//! 200. So [`accept_until`] shuts the socket down (which takes it out of the group on the
//! spot and ends the armed accept) and then collects that accept, serving a connection it
//! took at the last moment. It also keeps one accept armed across its wake-ups instead of
//! arming a new one each time: a cancelled accept may already have taken a connection.
//!
//! Owns the listening sockets only; what a connection is for is the caller's business.

use std::future::Future;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::pin::pin;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, Socket, Type};

/// Connections the kernel queues for a listener before we accept them.
const BACKLOG: i32 = 1024;

/// How long an accept may take to end once its socket is shut down (it ends at once; this
/// is only a bound in case a kernel does not wake it).
const LAST_ACCEPT_WAIT: Duration = Duration::from_millis(200);

/// A listening socket that shares its address with the other cores' (`SO_REUSEPORT`).
pub struct Listener {
    /// Kept beside the glommio listener, which does not lend its descriptor: shutting the
    /// socket down is the one thing it cannot do.
    socket: Socket,
    listener: TcpListener,
}

impl Listener {
    /// Binds and listens on `addr`. Must run on a glommio executor.
    pub fn bind(addr: SocketAddr) -> std::io::Result<Listener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        let fd = socket.try_clone()?.into_raw_fd();
        // SAFETY: `fd` is a fresh duplicate of a bound, listening socket that nothing else
        // owns; the glommio listener takes it over and closes it.
        let listener = unsafe { TcpListener::from_raw_fd(fd) };
        Ok(Listener { socket, listener })
    }
}

/// Accepts connections and hands each to `serve` until `stop` completes; then stops
/// listening and serves the connection (if any) that the last armed accept took.
pub async fn accept_until(
    listener: Listener,
    stop: impl Future<Output = ()>,
    mut serve: impl FnMut(TcpStream),
) {
    let mut stop = pin!(stop);
    let mut next = Box::pin(listener.listener.accept());
    loop {
        let accepted = futures_lite::future::or(async { Some(next.as_mut().await) }, async {
            stop.as_mut().await;
            None
        })
        .await;
        match accepted {
            Some(r) => {
                next = Box::pin(listener.listener.accept());
                match r {
                    Ok(stream) => serve(stream),
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            None => break,
        }
    }
    if let Err(e) = listener.socket.shutdown(Shutdown::Both) {
        tracing::warn!("cannot shut the listening socket down: {e}");
    }
    let last = futures_lite::future::or(async { Some(next.await) }, async {
        glommio::timer::sleep(LAST_ACCEPT_WAIT).await;
        None
    })
    .await;
    if let Some(Ok(stream)) = last {
        serve(stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::io::Read;
    use std::rc::Rc;

    /// Until the loop is stopped every connection is served, including one that arrives
    /// while the loop waits; the moment it returns, the address refuses connections, though
    /// the executor (and its ring, where an accept was armed) lives on.
    #[test]
    fn stopping_stops_listening_at_once_and_serves_what_was_accepted() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
                let addr = listener.socket.local_addr().unwrap().as_socket().unwrap();
                let stopped = Rc::new(Cell::new(false));
                // Clients on threads of their own, then the stop.
                let clients = {
                    let stopped = stopped.clone();
                    glommio::spawn_local(async move {
                        for _ in 0..3 {
                            let got = glommio::executor()
                                .spawn_blocking(move || {
                                    let mut c = std::net::TcpStream::connect(addr)?;
                                    let mut got = String::new();
                                    c.read_to_string(&mut got)?;
                                    std::io::Result::Ok(got)
                                })
                                .await;
                            assert_eq!(got.unwrap(), "hi");
                        }
                        // Let the armed accept wait through several of the stop checks.
                        glommio::timer::sleep(Duration::from_millis(20)).await;
                        stopped.set(true);
                    })
                };
                let stop = {
                    let stopped = stopped.clone();
                    async move {
                        while !stopped.get() {
                            glommio::timer::sleep(Duration::from_millis(1)).await;
                        }
                    }
                };
                let mut served = 0;
                accept_until(listener, stop, |mut stream| {
                    served += 1;
                    glommio::spawn_local(async move {
                        use futures_lite::AsyncWriteExt;
                        let _ = stream.write_all(b"hi").await;
                    })
                    .detach();
                })
                .await;
                // No await between the loop's end and this: the ring has had no chance to
                // act on anything the loop left behind.
                let refused = std::net::TcpStream::connect(addr).map(|_| ());
                assert_eq!(
                    refused.map_err(|e| e.kind()),
                    Err(std::io::ErrorKind::ConnectionRefused)
                );
                clients.await;
                assert_eq!(served, 3);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
