//! The memory budget: back-pressure instead of running out of memory.
//!
//! Owns admission of remote-write requests and replicas by memory, and the figures they
//! reserve ([`need`]: the one place that says what a request costs, for HTTP and the
//! replication RPC alike). Two limits:
//! - **in flight**: a request reserves what it will hold before it allocates it, stage by
//!   stage, and gives it back when answered; requests whose reservations would exceed the
//!   limit wait outside (429 over HTTP, `Unavailable` over the RPC). One request is always
//!   admitted when nothing else is in flight, so a request larger than the limit is slow, not
//!   impossible.
//! - **resident**: while the process' RSS (sampled every 100 ms) is at the limit, every write
//!   gets 429 — the guard against the head outgrowing the machine. RSS includes memory the
//!   allocator keeps after a spike, so this limit belongs well above normal use.
//!
//! A refused request gets 429 with `Retry-After` and nothing of it is stored. Must not know
//! HTTP.
//!
//! # What a request costs
//!
//! A request is charged every byte its buffers hold: the capacity of the pooled buffers it
//! takes, then whatever it allocates, each time before it does. `P` is the decompressed
//! payload, `N` series, `S` samples, `K` bytes of series keys, `R` replicas:
//!
//! | stage | reserved before it allocates |
//! |---|---|
//! | start | the pooled buffers' capacity, and the body's `Content-Length` beyond it |
//! | body without a length | as it grows, doubling |
//! | payload | `P`, beyond the pooled capacity |
//! | decoding | what the decoder's vectors grow by, asked for before each doubling (`sluice_core::Grow`): exact. At most `16·P + 16 KiB` ([`need::decoding`]) |
//! | keys and hashes | `24·N + K`, beyond the pooled capacity (`SeriesKeys::bytes_to_grow`) |
//! | routing ([`need::routing`]) | with several cores, copies to the others `2·(K + 16·S + 24·N)`; in a cluster, frames to the replicas `2·R·(8·N + K + 16·S)` (or `R·body` forwarded whole) |
//! | replication frame | its length, then its index (`24·len/19` at most, then exactly) and the copies to other cores |
//!
//! Measured by `tests::worst_case_payloads_stay_within_the_reservation` with a counting
//! allocator (peak bytes allocated ÷ `P`, fresh buffers; routing as a cluster node of 2 cores
//! with `R` = 3, every series copied to the other core):
//!
//! | payload | decoding | keys and routing |
//! |---|---|---|
//! | 1.0, one series of 2-byte samples | 16.0 | 32.0 |
//! | 1.0, one-sample series `{__name__="a"}` | 5.1 (10.1 with known series) | 18.7 |
//! | 1.0, 2-byte empty labels (refused) | 16.0 | – |
//! | 1.0, 2-byte empty series, known-series scan (refused) | 0.01 | – |
//! | 2.0, one-sample series, 8 bytes each | 12.0 | 44.5 |
//! | 2.0, one series of 1-byte label references (refused) | 16.0 | – |
//! | 2.0, one series of 2-byte samples | 16.0 | 32.0 |
//! | 2.0, every series refers to one 1000-byte value | 5.8 | 882 |
//! | 1.0 Prometheus-like (10 labels, 1 sample) | 1.2 (0.4 with known series) | 6.2 (4.6) |
//! | 2.0 Prometheus-like | 3.9 | 18.9 |
//!
//! Why decoding is 16·P at most: every decoded entry (a series, a label, a sample: 16 bytes
//! each) is a protobuf field of at least 2 bytes, 8×, and a vector grows by doubling, so it may
//! be twice its contents. Remote write 2.0's label references are resolved as they arrive, and
//! the 1.0 known-series scan (80 bytes per series) ends at a series too short to be valid, so
//! neither exceeds 8×. After decoding nothing is bounded by `P`: a 2.0 symbol may be referenced
//! by every series, so a 2-byte reference can stand for a key of any length. Those stages are
//! reserved from the decoded request's counts ([`need::Shape`]).
//!
//! Decoding is charged as it grows rather than its worst case up front and the real figure
//! after: the worst case, 17·P with the payload, would be charged to every request while it
//! decodes, and under a budget smaller than that a request waits for a moment with nothing
//! else in flight, which a steady flow of other requests never leaves it (a 12 MiB budget
//! refused every 0.9 MiB request of a 32-writer flood). An ordinary Prometheus-like request is
//! charged what its buffers hold: about `3·P` on one core for a pooled set that has served
//! requests of its size before (body `0.25·P`, payload `P`, decoded series `P`, keys of
//! first-seen series `0.9·P`), and about `5·P` on several (plus the copies' bound).
//!
//! Not charged: the head's and the WAL's own growth (what `--memory-budget` is for), and the
//! buffers a core's pool keeps between requests — at most 8 sets of at most 16 MiB, and at
//! most a quarter of the in-flight budget over all cores (32 MiB per core without a budget;
//! see `receive`). So requests in flight keep RSS within the budget plus a quarter of it, plus
//! what the allocator and the connections hold.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often resident memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The process-wide budget.
#[derive(Debug, Default)]
pub struct MemoryBudget {
    /// Resident bytes; 0: no limit.
    limit: u64,
    /// Bytes reserved by requests in flight; 0: no limit.
    inflight_limit: u64,
    reserved: AtomicU64,
    rss: AtomicU64,
    /// Requests refused, for /metrics.
    pub refused: AtomicU64,
}

/// Memory a request holds; returned on drop. Owns a handle on the budget, so it can travel
/// with a replica's frame into the task that stores it.
#[derive(Debug)]
pub struct Permit {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl MemoryBudget {
    /// A budget of `limit` resident bytes and `inflight_limit` reserved bytes (0: none),
    /// sampling this process' RSS on a thread.
    pub fn start(limit: u64, inflight_limit: u64) -> std::io::Result<Arc<MemoryBudget>> {
        let b = Arc::new(MemoryBudget {
            limit,
            inflight_limit,
            ..MemoryBudget::default()
        });
        if limit > 0 {
            b.rss.store(resident_bytes(), Ordering::Relaxed);
            let weak = Arc::downgrade(&b);
            std::thread::Builder::new()
                .name("sluice-rss".into())
                .spawn(move || {
                    while let Some(b) = weak.upgrade() {
                        b.rss.store(resident_bytes(), Ordering::Relaxed);
                        drop(b);
                        std::thread::sleep(SAMPLE_EVERY);
                    }
                })?;
        }
        Ok(b)
    }

    /// The budget in bytes (0: none).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes reserved by requests in flight.
    pub fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::Relaxed)
    }

    /// Reserves `bytes`, or says why not.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Result<Permit, String> {
        let mut p = Permit {
            budget: self.clone(),
            bytes: 0,
        };
        p.grow_to(bytes)?;
        Ok(p)
    }

    /// The in-flight limit in bytes (0: none).
    pub fn inflight_limit(&self) -> u64 {
        self.inflight_limit
    }

    /// Admits `more` bytes for a request holding `own` already: always while no other request
    /// holds any (so that one request larger than the limit still goes through, alone).
    fn admit(&self, more: u64, own: u64) -> Result<(), String> {
        if more == 0 {
            return Ok(());
        }
        let rss = self.rss.load(Ordering::Relaxed);
        if self.limit > 0 && rss >= self.limit {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "over the memory budget: resident memory {rss} bytes is at --memory-budget \
                 {} bytes; retry later",
                self.limit
            ));
        }
        let before = self.reserved.fetch_add(more, Ordering::AcqRel);
        let others = before.saturating_sub(own);
        if self.inflight_limit > 0 && others > 0 && before + more > self.inflight_limit {
            self.reserved.fetch_sub(more, Ordering::AcqRel);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "over the memory budget for requests in flight (--memory-budget.in-flight {} \
                 bytes): {before} bytes held, this request needs {more} more; retry later",
                self.inflight_limit
            ));
        }
        Ok(())
    }
}

impl Permit {
    /// Grows the reservation to `bytes` in total (no-op when it is that large already).
    pub fn grow_to(&mut self, bytes: u64) -> Result<(), String> {
        if bytes <= self.bytes {
            return Ok(());
        }
        self.budget.admit(bytes - self.bytes, self.bytes)?;
        self.bytes = bytes;
        Ok(())
    }

    /// Sets the reservation to `bytes`: a smaller figure gives the difference back at once
    /// (the real cost, once known, replacing a worst case), a larger one is admitted like
    /// [`grow_to`](Self::grow_to).
    pub fn resize(&mut self, bytes: u64) -> Result<(), String> {
        if bytes < self.bytes {
            self.budget
                .reserved
                .fetch_sub(self.bytes - bytes, Ordering::AcqRel);
            self.bytes = bytes;
            return Ok(());
        }
        self.grow_to(bytes)
    }

    /// Bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget.reserved.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// What a request reserves at each stage (see the module documentation for the figures).
pub mod need {
    use sluice_core::KeyBytes;
    use sluice_shards::batch::{OwnedBatch, SeriesSpans, SAMPLE_BYTES};

    /// Decoded bytes per payload byte, at most: 16-byte entries from fields of at least 2
    /// bytes, in vectors that may be up to twice as large as their contents.
    pub const DECODE_PER_PAYLOAD_BYTE: u64 = 16;

    /// The decoder's vectors before their first doubling (a few entries each), and the
    /// message of a refused request (a bounded rendering of one series).
    const DECODE_FIXED: u64 = 16 << 10;

    /// The fewest bytes a series takes in a `WRITE` frame: its two counts and the shortest
    /// valid key, `__name__\xffa\xff`.
    pub const MIN_WRITE_SERIES_BYTES: usize = 8 + 11;

    /// Bytes of a frame's header and request head, at most (a tenant is at most 255 bytes).
    const FRAME_HEAD: u64 = 8 + 1 + 8 + 1 + 255 + 4;

    /// The most a payload of `payload` bytes and its decoded vectors take (decoding itself
    /// reserves as it grows, up to this).
    pub fn decoding(payload: usize) -> u64 {
        let p = payload as u64;
        p + DECODE_PER_PAYLOAD_BYTE * p + DECODE_FIXED
    }

    /// The index of a `WRITE` frame of `len` bytes, at most (it is sized before the series are
    /// checked, from the bytes they could fill).
    pub fn write_frame_index(len: usize) -> u64 {
        (len / MIN_WRITE_SERIES_BYTES * SeriesSpans::ENTRY_BYTES) as u64
    }

    /// A decoded request's counts, what the stages after decoding allocate in proportion to.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Shape {
        pub series: usize,
        pub samples: usize,
        /// Bytes of the series' keys.
        pub keys: KeyBytes,
    }

    /// Where a decoded request's series go.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Route {
        /// Cores of this node (series owned by the others are copied to them).
        pub cores: usize,
        /// Replicas per series in a cluster; 0 on a single node.
        pub replicas: usize,
        /// The body as received, which a peer may get whole instead of its share (remote
        /// write 1.0 in a cluster); 0 when it never is.
        pub forward_body: usize,
    }

    /// What a decoded request allocates after decoding, besides its keys and hashes
    /// (`SeriesKeys::bytes_to_grow`, reused from request to request), reserved before it does:
    /// copies of the series other cores own, and in a cluster the frames to its replicas, all
    /// allocated afresh for each request.
    pub fn routing(s: &Shape, r: &Route) -> u64 {
        let all_keys = s.keys.parsed + s.keys.known;
        // This core's share as indexes (two lists in a cluster), growing by doubling.
        let mut n = 2 * 2 * 4 * s.series;
        if r.cores > 1 {
            // Every series may belong to another core; a batch per core.
            n += OwnedBatch::bytes_for(s.series, all_keys, s.samples) + 64 * r.cores;
        }
        if r.replicas > 0 {
            // Replica lists (u16 per replica and series), then each series in the frames of
            // up to R peers, or the body to each peer.
            n += 2 * 2 * r.replicas * s.series;
            let shares = 2 * r.replicas * (8 * s.series + all_keys + SAMPLE_BYTES * s.samples);
            let whole = r.replicas * r.forward_body;
            n += shares.max(whole) + r.replicas * FRAME_HEAD as usize;
        }
        n as u64
    }
}

/// This process' resident set size, from `/proc/self/statm` (0 if unreadable).
fn resident_bytes() -> u64 {
    let page = 4096u64;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page)
}

/// Parses a byte size: a plain number, or with a KiB/MiB/GiB/KB/MB/GB suffix (binary for
/// both spellings, as operators mean them for memory).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a byte size (e.g. 512MiB)"))?;
    let mul: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => return Err(format!("unknown unit {u:?} in {s:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests;
