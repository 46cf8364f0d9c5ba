//! What each connection sends, and when it gives up waiting: the pure, clock-free rules of the
//! flood, kept apart from threads and sockets so they can be unit-tested.
//!
//! Owns three decisions:
//! - **Ownership.** Every series id belongs to exactly one connection. A receiver without an
//!   out-of-order window (Prometheus, Sluice) rejects a sample older than the series' newest, and
//!   connections run at their own pace, so two connections sharing a series would eventually
//!   send it out of order. Disjoint slices make in-order delivery hold by construction: each
//!   connection sends its requests one after the other and its timestamps only grow.
//! - **Churn.** A connection's slice can be larger than its active share; the active series are
//!   a window sliding over the slice (wrapping around), so `--churn` replaces the oldest series
//!   with never-seen ones at a steady rate without any series changing owner.
//! - **Backoff.** The remote-write sender contract: 30 ms doubling to a 5 s cap.

use std::ops::Range;
use std::time::Duration;

/// Prometheus' default scrape interval: one "round" (every active series once) is one scrape.
pub const SCRAPE_INTERVAL_MS: i64 = 15_000;

/// First retry delay of the sender contract (Prometheus' `min_backoff`).
pub const MIN_BACKOFF: Duration = Duration::from_millis(30);
/// Retry delay cap of the sender contract (Prometheus' `max_backoff`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The delay before retry number `attempt` (0 for the first retry): 30 ms, 60 ms, 120 ms, ...
/// capped at 5 s.
pub fn backoff(attempt: u32) -> Duration {
    // Past 2^8 the cap has long been reached; clamping the shift avoids overflow.
    MIN_BACKOFF
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF)
}

/// The series one connection owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    /// Series ids of the [`SeriesSet`](sluice_bench::SeriesSet) this connection alone sends.
    pub ids: Range<usize>,
    /// How many of them are active (sent every round) at any time; `<= ids.len()`.
    pub active: usize,
}

impl Slice {
    /// Series id of active slot `slot` (`< active`) when the window has slid by `offset`.
    /// The window wraps around the slice, so a series that churned out long ago comes back
    /// later, still with newer timestamps than it ever had: in order.
    pub fn id(&self, offset: u64, slot: usize) -> usize {
        let len = self.ids.len() as u64;
        self.ids.start + ((offset + slot as u64) % len) as usize
    }
}

/// Splits `active` series plus `extra` never-yet-active ones (the churn reserve) over
/// `connections` connections: contiguous, disjoint slices covering `0..active + extra`, each
/// with its proportional share of both. Contiguous because neighbouring ids are one target's
/// series, so a request looks like what a Prometheus shard sends.
///
/// With `extra == 0` connection `c`'s slice is `active*c/n .. active*(c+1)/n`, so without churn
/// the ids sent are exactly `0..active`. Panics if `connections == 0`.
pub fn partition(active: usize, extra: usize, connections: usize) -> Vec<Slice> {
    assert!(connections > 0, "at least one connection");
    let share = |total: usize, c: usize| total * c / connections;
    let mut start = 0;
    (0..connections)
        .map(|c| {
            let act = share(active, c + 1) - share(active, c);
            let ext = share(extra, c + 1) - share(extra, c);
            let ids = start..start + act + ext;
            start = ids.end;
            Slice { ids, active: act }
        })
        .collect()
}

/// How far a connection's window has slid after `elapsed_ms` of the run, at `churn_per_s` new
/// series per second for the whole flood, of which this connection takes its `active` share
/// out of `total_active`.
pub fn churn_offset(elapsed_ms: u64, churn_per_s: f64, active: usize, total_active: usize) -> u64 {
    if churn_per_s <= 0.0 || total_active == 0 {
        return 0;
    }
    let per_s = churn_per_s * active as f64 / total_active as f64;
    (per_s * elapsed_ms as f64 / 1000.0) as u64
}

/// Timestamp of scrape number `scrape` (round `r` with `k` samples per series covers scrapes
/// `r*k .. r*k + k`).
pub fn scrape_ts(start_ms: i64, scrape: u64) -> i64 {
    start_ms + scrape as i64 * SCRAPE_INTERVAL_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_disjoint_contiguous_and_cover_everything() {
        for (active, extra, conns) in [(100_000, 0, 2), (20_000, 3_000, 3), (7, 5, 7), (1, 0, 1)] {
            let slices = partition(active, extra, conns);
            assert_eq!(slices.len(), conns);
            let mut next = 0;
            for s in &slices {
                assert_eq!(s.ids.start, next, "gap or overlap in {slices:?}");
                assert!(s.active <= s.ids.len());
                next = s.ids.end;
            }
            assert_eq!(next, active + extra);
            assert_eq!(slices.iter().map(|s| s.active).sum::<usize>(), active);
            // Shares differ by at most one series: no connection carries more of the load.
            let (lo, hi) = slices.iter().fold((usize::MAX, 0), |(lo, hi), s| {
                (lo.min(s.active), hi.max(s.active))
            });
            assert!(hi - lo <= 1, "{slices:?}");
        }
    }

    #[test]
    fn without_churn_the_active_ids_are_exactly_the_first_n() {
        let slices = partition(20_000, 0, 3);
        let mut ids: Vec<usize> = slices
            .iter()
            .flat_map(|s| (0..s.active).map(move |slot| s.id(0, slot)))
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..20_000).collect::<Vec<_>>());
    }

    #[test]
    fn a_churning_window_stays_inside_its_slice_and_has_no_duplicates() {
        let slices = partition(1_000, 300, 2);
        for s in &slices {
            for offset in [0, 1, 149, 150, 151, 649, 650, 10_000] {
                let mut ids: Vec<usize> = (0..s.active).map(|slot| s.id(offset, slot)).collect();
                assert!(ids.iter().all(|id| s.ids.contains(id)));
                ids.sort_unstable();
                ids.dedup();
                assert_eq!(ids.len(), s.active, "offset {offset}");
            }
        }
        // Sliding by k replaces exactly k series.
        let s = &slices[0];
        let before: Vec<usize> = (0..s.active).map(|slot| s.id(0, slot)).collect();
        let after: Vec<usize> = (0..s.active).map(|slot| s.id(10, slot)).collect();
        assert_eq!(after.iter().filter(|id| !before.contains(id)).count(), 10);
    }

    #[test]
    fn churn_is_split_by_share() {
        assert_eq!(churn_offset(10_000, 0.0, 500, 1_000), 0);
        assert_eq!(churn_offset(10_000, 100.0, 500, 1_000), 500);
        assert_eq!(churn_offset(1_500, 100.0, 1_000, 1_000), 150);
    }

    #[test]
    fn backoff_doubles_from_30ms_to_a_5s_cap() {
        let ms: Vec<u128> = (0..10).map(|a| backoff(a).as_millis()).collect();
        assert_eq!(ms, [30, 60, 120, 240, 480, 960, 1920, 3840, 5000, 5000]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn rounds_are_15s_apart() {
        assert_eq!(scrape_ts(1_000, 0), 1_000);
        assert_eq!(scrape_ts(1_000, 4), 61_000);
    }
}
