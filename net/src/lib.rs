//! Sluice net: the HTTP API each core serves on its own `SO_REUSEPORT` listener.
//!
//! Owns HTTP framing (hyper over glommio), the remote-write endpoint, the read API and
//! `/metrics`. Must not touch storage directly: writes and reads go through `sluice-shards`.

mod api;
mod body;
pub mod budget;
pub mod cluster;
mod io;
mod limits;
mod listener;
mod metrics_text;
mod receive;
mod response;
pub mod rpc;
mod server;
mod startup;

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
}
