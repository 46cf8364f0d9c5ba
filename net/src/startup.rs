//! Answering while the cores replay their WALs: one extra executor on its own thread listens
//! on the same address (`SO_REUSEPORT`) from the start and answers every request with 503
//! (`/-/healthy` with 200), so senders and orchestrators see "not ready yet" instead of
//! "connection refused". It stops once every core serves.
//!
//! Owns only that interim listener. Must not touch shards or storage: it reads the readiness
//! flags in [`Global`] and nothing else.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use glommio::net::Preallocated;
use hyper::service::service_fn;
use hyper::StatusCode;
use sluice_shards::Global;

use crate::io::HyperIo;
use crate::listener::{accept_until, Listener};
use crate::response::text;

/// Fails with "address in use" if anything already accepts connections on `addr`.
///
/// Every listener of ours sets `SO_REUSEPORT` (one per core), and the kernel grants that to
/// any other process of the same user too: a second sluice started on a running one's port
/// would bind without error, take a share of its connections, and reset the ones queued on
/// it when it stops. So, before our own listeners exist, we try to connect. (Binding a
/// plain socket first is no test: a port just left by a sluice that was restarted keeps
/// its closed connections in TIME_WAIT for a minute, and those refuse such a bind while
/// the new `SO_REUSEPORT` listeners are allowed.)
pub fn check_address_free(addr: SocketAddr) -> std::io::Result<()> {
    let mut probe = addr;
    if probe.ip().is_unspecified() {
        probe.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    if probe.port() == 0 {
        return Ok(());
    }
    match std::net::TcpStream::connect_timeout(&probe, Duration::from_secs(1)) {
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("Address already in use: another process accepts connections on {probe}"),
        )),
        Err(_) => Ok(()),
    }
}

/// Starts the interim listener on `listen`. Binding errors (address in use) surface here,
/// before any replay work.
pub fn answer_until_ready(
    listen: SocketAddr,
    global: Arc<Global>,
) -> std::io::Result<glommio::ExecutorJoinHandle<()>> {
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    global.interim_listener.store(true, Ordering::Release);
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("sluice-startup")
        .io_memory(256 << 10)
        .spawn(move || async move {
            let listener = match Listener::bind(listen) {
                Ok(l) => {
                    let _ = bound_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = bound_tx.send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            };
            serve_until_ready(listener, global).await;
        })
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    match bound_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::other("startup listener thread ended")),
    }
}

async fn serve_until_ready(listener: Listener, global: Arc<Global>) {
    // Every core counts itself only once its own listener is bound, so when all have, the
    // address is covered without this one: stop at once. `/-/ready` stays 503 until this
    // socket has stopped listening, so no client told "ready" can land here.
    let open = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let stop = async {
        while !global.cores_serving() && !global.shutting_down() {
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
    };
    accept_until(listener, stop, |stream| {
        let global = global.clone();
        let open = open.clone();
        open.set(open.get() + 1);
        glommio::spawn_local(async move {
            let io = HyperIo(stream.buffered_with(Preallocated::new(8 << 10)));
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let ready = global.ready_cores.load(Ordering::Acquire);
                let cores = global.cores;
                async move {
                    let mut resp = if req.uri().path() == "/-/healthy" {
                        text(StatusCode::OK, "Sluice is Healthy.")
                    } else {
                        let mut resp = text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!(
                                "Sluice is starting: replaying the WAL ({ready} of {cores} cores ready)"
                            ),
                        );
                        resp.headers_mut().insert(
                            hyper::header::RETRY_AFTER,
                            hyper::header::HeaderValue::from_static("1"),
                        );
                        resp
                    };
                    // Say so: a client that pooled this connection would later find it gone.
                    resp.headers_mut().insert(
                        hyper::header::CONNECTION,
                        hyper::header::HeaderValue::from_static("close"),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            // One answer per connection: the sender reconnects and reaches a core once ready.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(io, svc)
                .await;
            open.set(open.get() - 1);
        })
        .detach();
    })
    .await;
    global.interim_listener.store(false, Ordering::Release);
    // Tasks still running when this executor ends would be leaked with their sockets: wait
    // for every connection to get its answer, but not for a client that never sends its
    // request (there is no header timeout yet), or shutdown would wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while open.get() > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}
