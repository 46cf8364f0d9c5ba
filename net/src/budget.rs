//! The memory budget: back-pressure instead of running out of memory.
//!
//! Owns admission of remote-write requests by memory, with two limits:
//! - **in flight**: a request reserves what it will hold (its body, then three times its
//!   decompressed size: the payload, the decoded series and the copies that travel to other
//!   cores) before it holds it, and gives it back when answered; requests whose reservations
//!   would exceed the limit wait outside (429). One request is always admitted when nothing
//!   else is in flight, so a request larger than the limit is slow, not impossible.
//! - **resident**: while the process' RSS (sampled every 100 ms) is at the limit, every write
//!   gets 429 — the guard against the head outgrowing the machine. RSS includes memory the
//!   allocator keeps after a spike, so this limit belongs well above normal use.
//!
//! A refused request gets 429 with `Retry-After` and nothing of it is stored. Must not know
//! HTTP.

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

/// Memory a request holds; returned on drop.
#[derive(Debug)]
pub struct Permit<'a> {
    budget: &'a MemoryBudget,
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
    pub fn try_reserve(&self, bytes: u64) -> Result<Permit<'_>, String> {
        let mut p = Permit {
            budget: self,
            bytes: 0,
        };
        p.grow_to(bytes)?;
        Ok(p)
    }

    /// The in-flight limit in bytes (0: none).
    pub fn inflight_limit(&self) -> u64 {
        self.inflight_limit
    }

    fn admit(&self, more: u64) -> Result<(), String> {
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
        if self.inflight_limit > 0 && before > 0 && before + more > self.inflight_limit {
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

impl Permit<'_> {
    /// Grows the reservation to `bytes` in total (no-op when it is that large already).
    pub fn grow_to(&mut self, bytes: u64) -> Result<(), String> {
        if bytes <= self.bytes {
            return Ok(());
        }
        self.budget.admit(bytes - self.bytes)?;
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.budget.reserved.fetch_sub(self.bytes, Ordering::AcqRel);
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
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2GB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("x").is_err());
        assert!(parse_bytes("5 parsecs").is_err());
    }

    #[test]
    fn reservations_are_refused_over_the_limits_and_returned_on_drop() {
        let b = MemoryBudget {
            limit: 1000,
            inflight_limit: 600,
            ..MemoryBudget::default()
        };
        b.rss.store(400, Ordering::Relaxed);
        // Alone, a request larger than the in-flight limit is admitted.
        drop(b.try_reserve(700).unwrap());
        let mut p = b.try_reserve(300).unwrap();
        assert!(b.try_reserve(301).is_err());
        assert!(p.grow_to(600).is_ok());
        assert!(b.try_reserve(1).is_err());
        assert_eq!(b.reserved(), 600);
        drop(p);
        assert_eq!(b.reserved(), 0);
        assert_eq!(b.refused.load(Ordering::Relaxed), 2);
        b.rss.store(1000, Ordering::Relaxed);
        assert!(b.try_reserve(1).unwrap_err().contains("resident"));
        let off = MemoryBudget::default();
        assert!(off.try_reserve(u64::MAX / 2).is_ok());
    }
}
