//! One core's outgoing replication connections: one pipelined connection per peer node.
//!
//! Owns connecting (with exponential backoff while a peer is down), sending frames, pairing
//! replies with callers by request id, and the per-call timeout. A call to a peer that is
//! down fails at once (the quorum decides whether the write still succeeds), a call to a peer
//! that stopped answering fails after the timeout, never later. Must not know what a frame
//! carries beyond its id.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::StreamExt;
use glommio::net::TcpStream;

use super::frame::{check_body, parse_header, Reply, HEADER_LEN};

/// Backoff between connection attempts to a peer that is down.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Bytes queued to one peer beyond which new calls fail at once: a peer that stopped
/// reading must not make this core buffer without bound.
const MAX_QUEUED_BYTES: usize = 64 << 20;

/// Largest reply frame accepted (replies are small; anything bigger is corruption).
const MAX_REPLY_BYTES: usize = 1 << 20;

/// Why a call got no reply.
pub type CallError = String;

/// This core's connections, by peer address.
pub struct Peers {
    peers: RefCell<HashMap<String, Rc<Peer>>>,
    timeout: Duration,
    next_id: Cell<u64>,
}

struct Peer {
    addr: String,
    queue: mpsc::UnboundedSender<(u64, Vec<u8>)>,
    queued_bytes: Cell<usize>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Result<Reply, CallError>>>>,
    /// Why the last connection attempt or connection failed; `None` while connected.
    down: RefCell<Option<String>>,
}

impl Peers {
    /// Connections whose calls time out after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Peers {
            peers: RefCell::new(HashMap::new()),
            timeout,
            next_id: Cell::new(1),
        }
    }

    /// A fresh request id for a frame to any peer.
    pub fn next_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    fn peer(&self, addr: &str) -> Rc<Peer> {
        if let Some(p) = self.peers.borrow().get(addr) {
            return p.clone();
        }
        let (tx, rx) = mpsc::unbounded();
        let peer = Rc::new(Peer {
            addr: addr.to_string(),
            queue: tx,
            queued_bytes: Cell::new(0),
            pending: RefCell::new(HashMap::new()),
            down: RefCell::new(None),
        });
        glommio::spawn_local(run_peer(peer.clone(), rx, self.timeout)).detach();
        self.peers
            .borrow_mut()
            .insert(addr.to_string(), peer.clone());
        peer
    }

    /// Sends `frame` (a sealed write frame with request id `id`) to `addr` and waits for the
    /// reply, at most the timeout. Dropping the future abandons the call (the frame may still
    /// reach the peer; its reply is then ignored).
    pub async fn call(&self, addr: &str, id: u64, frame: Vec<u8>) -> Result<Reply, CallError> {
        let peer = self.peer(addr);
        if let Some(why) = peer.down.borrow().as_ref() {
            return Err(format!("{addr} is down: {why}"));
        }
        if peer.queued_bytes.get() + frame.len() > MAX_QUEUED_BYTES {
            return Err(format!(
                "{addr} is not reading: over {MAX_QUEUED_BYTES} bytes queued"
            ));
        }
        let (tx, rx) = oneshot::channel();
        peer.pending.borrow_mut().insert(id, tx);
        let _forget = Forget { peer: &peer, id };
        peer.queued_bytes.set(peer.queued_bytes.get() + frame.len());
        if peer.queue.unbounded_send((id, frame)).is_err() {
            return Err(format!("{addr}: connection task ended"));
        }
        let timeout = self.timeout;
        let reply = futures_lite::future::or(async { Some(rx.await) }, async {
            glommio::timer::sleep(timeout).await;
            None
        })
        .await;
        match reply {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(format!("{addr}: connection closed")),
            None => Err(format!("{addr}: no reply within {timeout:?}")),
        }
    }
}

/// Removes a call's pending entry when the call ends, however it ends.
struct Forget<'a> {
    peer: &'a Peer,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.peer.pending.borrow_mut().remove(&self.id);
    }
}

impl Peer {
    fn fail_pending(&self, why: &str) {
        for (_, tx) in self.pending.borrow_mut().drain() {
            let _ = tx.send(Err(format!("{}: {why}", self.addr)));
        }
    }

    fn dequeued(&self, n: usize) {
        self.queued_bytes
            .set(self.queued_bytes.get().saturating_sub(n));
    }
}

/// The peer's connection task: connect, pump frames and replies until the connection fails,
/// back off (failing whatever is queued meanwhile), repeat.
async fn run_peer(
    peer: Rc<Peer>,
    mut queue: mpsc::UnboundedReceiver<(u64, Vec<u8>)>,
    timeout: Duration,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let why = match connect(&peer.addr, timeout).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                tracing::info!(peer = %peer.addr, "replication connection up");
                *peer.down.borrow_mut() = None;
                backoff = MIN_BACKOFF;
                let why = pump(&peer, stream, &mut queue).await;
                tracing::warn!(peer = %peer.addr, "replication connection lost: {why}");
                why
            }
            Err(e) => e.to_string(),
        };
        *peer.down.borrow_mut() = Some(why.clone());
        peer.fail_pending(&why);
        // Until the next attempt, calls fail at once (they see `down`); frames queued before
        // that are failed here.
        let drain = async {
            while let Some((id, frame)) = queue.next().await {
                peer.dequeued(frame.len());
                if let Some(tx) = peer.pending.borrow_mut().remove(&id) {
                    let _ = tx.send(Err(format!("{}: {why}", peer.addr)));
                }
            }
        };
        let ended = futures_lite::future::or(
            async {
                drain.await;
                true
            },
            async {
                glommio::timer::sleep(backoff).await;
                false
            },
        )
        .await;
        if ended {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Resolves `addr` (host names included, on a blocking-pool thread: a DNS lookup must not
/// stall the core) and connects within `timeout`.
async fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, String> {
    let name = addr.to_string();
    let resolved = glommio::executor()
        .spawn_blocking(move || {
            std::net::ToSocketAddrs::to_socket_addrs(&name).map(|a| a.collect::<Vec<_>>())
        })
        .await
        .map_err(|e| format!("resolving {addr}: {e}"))?;
    let mut last = format!("{addr} resolves to no address");
    for a in resolved {
        match TcpStream::connect_timeout(a, timeout).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// Runs one connection until it fails; returns why.
async fn pump(
    peer: &Peer,
    stream: TcpStream,
    queue: &mut mpsc::UnboundedReceiver<(u64, Vec<u8>)>,
) -> String {
    let (mut rd, mut wr) = stream.split();
    let writer = async {
        let mut out = Vec::new();
        loop {
            let Some((_, frame)) = queue.next().await else {
                return "shutting down".to_string();
            };
            peer.dequeued(frame.len());
            // Frames whose caller stopped waiting (quorum reached elsewhere, timeout) are
            // still sent: the replica should hold the data whether or not anyone waits.
            // What else is queued goes out in the same write.
            let mut more = queue.try_recv().ok();
            let bytes: &[u8] = if more.is_none() {
                &frame
            } else {
                out.clear();
                out.extend_from_slice(&frame);
                while let Some((_, f)) = more {
                    peer.dequeued(f.len());
                    out.extend_from_slice(&f);
                    more = queue.try_recv().ok();
                }
                &out
            };
            if let Err(e) = wr.write_all(bytes).await {
                return format!("write: {e}");
            }
            if let Err(e) = wr.flush().await {
                return format!("write: {e}");
            }
        }
    };
    let reader = async {
        let mut header = [0u8; HEADER_LEN];
        let mut body = Vec::new();
        loop {
            if let Err(e) = rd.read_exact(&mut header).await {
                return format!("read: {e}");
            }
            let (len, crc) = match parse_header(&header, MAX_REPLY_BYTES) {
                Ok(h) => h,
                Err(e) => return e.to_string(),
            };
            body.resize(len, 0);
            if let Err(e) = rd.read_exact(&mut body).await {
                return format!("read: {e}");
            }
            let reply = check_body(&body, crc).and_then(|()| Reply::decode(&body));
            match reply {
                Ok(r) => {
                    if let Some(tx) = peer.pending.borrow_mut().remove(&r.id) {
                        let _ = tx.send(Ok(r));
                    }
                }
                Err(e) => return e.to_string(),
            }
        }
    };
    futures_lite::future::or(writer, reader).await
}
