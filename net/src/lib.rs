//! Sluice net: what each core serves on the network — the HTTP API on its own
//! `SO_REUSEPORT` listener, and the replication RPC between nodes.
//!
//! The main types and entry points:
//! - [`serve`] runs a core's HTTP server with its [`NetConfig`]; the router sends
//!   `/api/v1/receive` to the remote-write endpoint and everything else to the read side
//!   ([`api`], whose limits are [`ReadConfig`]).
//! - [`write`](mod@write): what HTTP writes and replicas share — pooled buffers and decoding
//!   within the [`budget`]; [`reject`]: the [`reject::Reject`] a sender sees and the one
//!   mapping of an append's outcome to it ([`reject::Verdict`]).
//! - [`cluster`]: splitting a write by owning node (Thanos hashrings) and waiting for a write
//!   quorum; [`rpc`]: the frames and the client connections; the replication server
//!   (`replication`) takes replicas.
//!
//! Must not touch storage directly: writes and reads go through `sluice-shards`. See
//! `docs/ARCHITECTURE.md` for the whole path.

pub mod api;
mod body;
pub mod budget;
pub mod cluster;
mod io;
mod limits;
mod listener;
mod metrics_text;
mod receive;
pub mod reject;
mod replication;
mod response;
pub mod rpc;
mod server;
mod startup;
mod state;
pub mod write;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
pub use cluster::ClusterConfig;
use sluice_core::limits::Limits;

pub use server::serve;
pub use startup::{answer_until_ready, check_address_free};

/// HTTP settings shared by every core.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub listen: SocketAddr,
    /// Largest accepted (compressed) request body.
    pub max_request_bytes: usize,
    /// A client that has not sent a request's headers within this is disconnected (a
    /// slow-loris guard); `None`: no limit.
    pub header_read_timeout: Option<std::time::Duration>,
    /// A request body (or a replication frame) that stalls, no bytes at all, longer than this
    /// is dropped with its connection; `None`: no limit.
    pub body_read_timeout: Option<std::time::Duration>,
    /// Largest accepted decompressed remote-write payload.
    pub max_decompressed_bytes: usize,
    /// Header naming the tenant of a write.
    pub tenant_header: String,
    /// Tenant of writes without the header.
    pub default_tenant: String,
    /// Per-tenant limits (swapped whole on reload).
    pub limits: Arc<ArcSwap<Limits>>,
    /// The hashring and replication settings; `None`: a single node, everything local.
    pub cluster: Option<Arc<ClusterConfig>>,
    /// Where peers send replicas; `None`: no replication listener.
    pub rpc_listen: Option<SocketAddr>,
    /// Largest replication frame accepted from a peer.
    pub max_rpc_frame_bytes: usize,
    /// Memory admission of remote-write requests.
    pub budget: Arc<budget::MemoryBudget>,
    /// Limits and settings of the read API and remote read.
    pub read: ReadConfig,
}

/// How reads are bounded (Prometheus' flags and defaults) and scoped.
#[derive(Debug, Clone)]
pub struct ReadConfig {
    /// Longest a query may take, queueing included (`--query.timeout`).
    pub query_timeout: std::time::Duration,
    /// Most samples a query may load (`--query.max-samples`).
    pub max_samples: u64,
    /// How far back an instant selector looks (`--query.lookback-delta`), in ms.
    pub lookback_delta_ms: i64,
    /// Queries running at once (`--query.max-concurrent`); more wait.
    pub query_gate: Arc<api::Gate>,
    /// Most samples one remote read may return (`--storage.remote.read-sample-limit`;
    /// 0: none).
    pub remote_read_sample_limit: u64,
    /// Remote reads running at once (`--storage.remote.read-concurrent-limit`); more wait.
    pub remote_read_gate: Arc<api::Gate>,
    /// Largest frame of a streamed remote-read answer
    /// (`--storage.remote.read-max-bytes-in-frame`).
    pub remote_read_max_bytes_in_frame: usize,
    /// Every read is scoped to the tenant of its tenant header (the default tenant when
    /// absent), as Thanos Query's `--query.enforce-tenancy`.
    pub enforce_tenancy: bool,
    /// Test hook (`--debug.panics`): a read whose query (or remote-read matcher value)
    /// contains `sluice_debug_panic_<site>` panics there ([`ReadConfig::debug_panic_at`]).
    pub debug_panics: bool,
}

/// Where the test hook makes a marked read panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugPanic {
    /// On the query's evaluation thread (`sluice_debug_panic_eval`).
    Eval,
    /// On every core, while reading the heads (`sluice_debug_panic_select`).
    Select,
    /// While writing the answer (`sluice_debug_panic_answer`).
    Answer,
}

impl ReadConfig {
    /// Whether the test hook makes a read of `text` panic at `site`.
    pub fn debug_panic_at(&self, text: &str, site: DebugPanic) -> bool {
        let marker = match site {
            DebugPanic::Eval => "sluice_debug_panic_eval",
            DebugPanic::Select => "sluice_debug_panic_select",
            DebugPanic::Answer => "sluice_debug_panic_answer",
        };
        self.debug_panics && text.contains(marker)
    }
}
