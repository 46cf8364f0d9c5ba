//! Cross-core calls: run a job on another core and get its reply, over glommio's lock-free
//! SPSC channel meshes.
//!
//! Two meshes: requests (job + caller) and replies. A reply is consumed by a task that never
//! waits on anything, so a core blocked sending a request can always be answered — one mesh
//! for both directions could deadlock when two cores' queues fill up at once. Owns request ids
//! and pending replies; must not know what a job does.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};

use crate::shard::Shard;

mod ctx;

pub use ctx::{Ctx, Global, ReadFailed};

/// A job's answer, sent back to the caller's core.
pub type Reply = Box<dyn Any + Send>;

/// Work for another core: it runs there, against that core's shard.
pub type Job = Box<dyn FnOnce(Rc<Shard>) -> LocalBoxFuture<'static, Reply> + Send>;

/// A job in flight to its core.
pub struct Request {
    id: u64,
    from: usize,
    job: Job,
}

/// The answer to a [`Request`].
pub struct Response {
    id: u64,
    reply: Reply,
}

/// The two meshes, built once and cloned into every executor.
#[derive(Clone)]
pub struct MeshBuilders {
    requests: MeshBuilder<Request, Full>,
    replies: MeshBuilder<Response, Full>,
}

impl MeshBuilders {
    /// Meshes for `cores` executors with `depth` slots per channel.
    pub fn new(cores: usize, depth: usize) -> Self {
        MeshBuilders {
            requests: MeshBuilder::full(cores, depth),
            replies: MeshBuilder::full(cores, depth),
        }
    }
}

/// A core's end of the meshes.
pub struct Mesh {
    me: usize,
    requests: Senders<Request>,
    replies: Rc<Senders<Response>>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Reply>>>,
    next_id: Cell<u64>,
    shard: Rc<Shard>,
}

/// A peer core went away (shutdown) or never answered.
#[derive(Debug, thiserror::Error)]
#[error("core {0} is not reachable")]
pub struct Unreachable(pub usize);

impl From<Unreachable> for crate::outcome::ApplyFailure {
    fn from(u: Unreachable) -> Self {
        crate::outcome::ApplyFailure::Unreachable(u.0)
    }
}

impl Mesh {
    /// Joins both meshes (waits for every core) and starts serving jobs sent to this core.
    pub async fn join(builders: MeshBuilders, shard: Rc<Shard>) -> Rc<Mesh> {
        let (req_tx, mut req_rx) = builders
            .requests
            .join()
            .await
            .expect("joining the request mesh");
        let (rep_tx, mut rep_rx) = builders
            .replies
            .join()
            .await
            .expect("joining the reply mesh");
        let mesh = Rc::new(Mesh {
            me: req_tx.peer_id(),
            requests: req_tx,
            replies: Rc::new(rep_tx),
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            shard: shard.clone(),
        });
        for (_, rx) in req_rx.streams() {
            let shard = shard.clone();
            let replies = mesh.replies.clone();
            glommio::spawn_local(async move {
                while let Some(req) = rx.recv().await {
                    let shard = shard.clone();
                    let replies = replies.clone();
                    // Each job runs as its own task so a slow one (a WAL sync) does not hold
                    // up the next: that is what lets group commit batch across cores.
                    glommio::spawn_local(async move {
                        let reply = (req.job)(shard).await;
                        let _ = replies
                            .send_to(req.from, Response { id: req.id, reply })
                            .await;
                    })
                    .detach();
                }
            })
            .detach();
        }
        for (_, rx) in rep_rx.streams() {
            let mesh = mesh.clone();
            glommio::spawn_local(async move {
                while let Some(resp) = rx.recv().await {
                    if let Some(tx) = mesh.pending.borrow_mut().remove(&resp.id) {
                        mesh.in_flight_add(-1);
                        let _ = tx.send(resp.reply);
                    }
                }
            })
            .detach();
        }
        mesh
    }

    /// This core's index.
    pub fn me(&self) -> usize {
        self.me
    }

    fn in_flight_add(&self, d: i64) {
        let c = &self.shard.metrics.cross_core_in_flight;
        c.set(c.get().saturating_add_signed(d));
    }

    /// Runs `job` on core `core` (which must not be this one) and returns its reply.
    pub async fn call(&self, core: usize, job: Job) -> Result<Reply, Unreachable> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        self.in_flight_add(1);
        let req = Request {
            id,
            from: self.me,
            job,
        };
        if self.requests.send_to(core, req).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            self.in_flight_add(-1);
            return Err(Unreachable(core));
        }
        rx.await.map_err(|_| Unreachable(core))
    }
}
