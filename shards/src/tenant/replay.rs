//! Replaying a tenant's WAL into a fresh head: series records bind ids, samples are
//! appended grouped by series, and the reader's id rules (docs/format/wal.md) decide which
//! samples a series gets.
//!
//! Owns the replay visitor. Must not open files (the tenant does) or decide what is damaged
//! (the WAL reader does).

use sluice_core::{put_series_key, TenantHasher};
use sluice_storage::wal::{ReplayVisitor, SampleRecord};

use crate::head::Head;

/// Replays a WAL directory into a fresh head. The reader hands on only samples whose series
/// record came before them in the log, so buffering them for [`HeadReplay::flush`] cannot
/// attach any to a series bound later.
pub(super) struct HeadReplay {
    pub(super) hasher: TenantHasher,
    pub(super) head: Head,
    /// Samples before this are in blocks.
    pub(super) min_valid: i64,
    pub(super) key: Vec<u8>,
    /// Samples not yet appended, applied in series order (see [`HeadReplay::flush`]).
    pub(super) pending: Vec<SampleRecord>,
    /// Samples the reader handed on for an id the head has no live series for: never, unless
    /// the reader has a bug.
    pub(super) unbound: u64,
}

/// Samples buffered during replay before they are applied (24 MiB).
const REPLAY_BATCH: usize = 1 << 20;

impl HeadReplay {
    /// Appends the buffered samples grouped by series. The log interleaves every series
    /// (one request holds thousands), so appending in log order touches a different chunk
    /// on every sample, a cache miss each; grouped, a series' samples share one. The sort
    /// is stable, so each series still gets its samples in log order.
    pub(super) fn flush(&mut self) {
        self.pending.sort_by_key(|s| s.id);
        for s in self.pending.drain(..) {
            // The reader bound every id it hands on, and a bound series stays live until
            // replay ends; the check only keeps a reader bug from panicking here.
            if s.id < self.head.id_limit() && self.head.is_live(s.id) {
                // Repeats cannot be logged, so a rejection here means a log written by a
                // buggy or foreign writer; the head keeps what it has.
                let _ = self.head.replay_append(s.id, s.t, s.v);
            } else {
                self.unbound += 1;
            }
        }
    }
}

impl ReplayVisitor for HeadReplay {
    fn series(&mut self, id: u32, labels: &[(&str, &str)]) {
        self.key.clear();
        put_series_key(
            &mut self.key,
            labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        );
        let hash = self.hasher.hash_key(&self.key);
        self.head.create_with_id(id, hash, &self.key);
    }

    fn sample(&mut self, s: SampleRecord) {
        if s.t < self.min_valid {
            // Persisted in a block: its series may be gone from the log, and that is fine.
            return;
        }
        self.pending.push(s);
        if self.pending.len() == REPLAY_BATCH {
            self.flush();
        }
    }

    fn min_time(&mut self, t: i64) {
        self.min_valid = self.min_valid.max(t);
        self.head.set_min_valid(t);
    }

    fn persisted_before(&self) -> i64 {
        self.min_valid
    }
}
