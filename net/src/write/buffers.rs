//! The buffers a write needs (body, payload, decoded request, routing scratch) and the
//! per-core pool that keeps them between requests, bounded in count and bytes.
//!
//! Owns the pool's bounds. Must not decide what a request may reserve (`budget`): it reports
//! the capacity it hands out so the request is charged for it.

use sluice_core::{V2Decoder, WriteRequestRef};
use sluice_shards::IngestScratch;

use crate::rpc::frame::WriteEncoder;

/// Buffers one remote-write request needs; pooled per core.
#[derive(Default)]
pub struct WriteBuffers {
    pub(crate) body: Vec<u8>,
    pub(crate) dec: Decoded,
    pub(crate) scratch: IngestScratch,
    pub(crate) cluster: ClusterScratch,
}

/// A decompressed payload and what it decodes to.
#[derive(Default)]
pub(crate) struct Decoded {
    pub(crate) decompressed: Vec<u8>,
    pub(crate) req: WriteRequestRef,
    pub(crate) v2: V2Decoder,
}

impl WriteBuffers {
    /// Bytes these buffers hold, every vector's capacity: what the pool keeps if it keeps them.
    fn capacity_bytes(&self) -> usize {
        self.body.capacity()
            + self.dec.decompressed.capacity()
            + self.dec.req.capacity_bytes()
            + self.dec.v2.capacity_bytes()
            + self.scratch.capacity_bytes()
            + self.cluster.capacity_bytes()
    }
}

/// Buffers holding more than this are freed after their request rather than pooled: one huge
/// request must not pin its memory forever. A request of Prometheus' default size (2,000
/// samples, a 0.5 MiB payload) needs 1–2 MiB.
const MAX_POOLED_BYTES: usize = 16 << 20;

/// Buffers a core keeps for its next requests, at most: as many as it serves at once in a
/// busy steady state.
const MAX_POOLED: usize = 8;

/// Bytes a core's pool keeps between requests, at most, and at most a quarter of the
/// in-flight budget shared by the cores: idle pooled buffers are the only request memory the
/// budget does not charge (a request is charged the pooled capacity it takes), so this bounds
/// how far RSS can exceed the budget.
const MAX_IDLE_BYTES: usize = 32 << 20;

/// A core's request buffers kept between requests.
pub struct BufferPool {
    sets: Vec<WriteBuffers>,
    /// Capacity of the sets kept.
    idle_bytes: usize,
    max_idle_bytes: usize,
}

impl BufferPool {
    /// A pool for one of `cores` cores under an in-flight budget of `inflight_limit` bytes
    /// (0: none).
    pub fn new(inflight_limit: u64, cores: usize) -> BufferPool {
        let share = match inflight_limit {
            0 => MAX_IDLE_BYTES,
            l => (l / 4 / cores.max(1) as u64).min(MAX_IDLE_BYTES as u64) as usize,
        };
        BufferPool {
            sets: Vec::new(),
            idle_bytes: 0,
            max_idle_bytes: share,
        }
    }

    /// A set of buffers and its capacity (to be charged to whoever takes it).
    pub(crate) fn take(&mut self) -> (WriteBuffers, usize) {
        match self.sets.pop() {
            Some(set) => {
                let bytes = set.capacity_bytes();
                self.idle_bytes -= bytes;
                (set, bytes)
            }
            None => (WriteBuffers::default(), 0),
        }
    }

    /// Keeps `set`, or frees it when it holds more than [`MAX_POOLED_BYTES`] or the pool is
    /// full (by count or bytes).
    pub(crate) fn give(&mut self, set: WriteBuffers) {
        let bytes = set.capacity_bytes();
        if self.sets.len() < MAX_POOLED
            && bytes <= MAX_POOLED_BYTES
            && self.idle_bytes + bytes <= self.max_idle_bytes
        {
            self.idle_bytes += bytes;
            self.sets.push(set);
        }
    }
}

/// Per-request buffers of the cluster write, pooled with the request's.
#[derive(Default)]
pub struct ClusterScratch {
    /// Replica endpoint indexes of every series, R per series.
    pub(crate) replicas: Vec<u16>,
    pub(crate) one: Vec<usize>,
    /// Frame under construction per endpoint.
    pub(crate) frames: Vec<Option<PeerFrame>>,
}

impl ClusterScratch {
    /// Bytes these buffers hold (their capacity; the frames themselves leave with their
    /// calls).
    pub fn capacity_bytes(&self) -> usize {
        self.replicas.capacity() * std::mem::size_of::<u16>()
            + self.one.capacity() * std::mem::size_of::<usize>()
            + self.frames.capacity() * std::mem::size_of::<Option<PeerFrame>>()
    }
}

/// The frame for one peer: bytes, the encoder of a `WRITE` frame (`None` for a `FORWARD`),
/// request id.
pub(crate) type PeerFrame = (Vec<u8>, Option<WriteEncoder>, u64);
