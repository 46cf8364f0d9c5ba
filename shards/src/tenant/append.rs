//! Appending a batch to a tenant: series resolved (found by identity and confirmed by labels,
//! or created and logged), then samples appended under the head's rules and logged — head
//! first, then the WAL tail, in two records per batch.
//!
//! Owns the append loop and its prefetching. Must not commit the WAL (the shard waits for
//! durability) or count metrics.

use std::sync::atomic::Ordering;

use sluice_core::{check_hash, key_labels, Identity};
use sluice_storage::wal::{record, RecordType};

use super::Tenant;
use crate::batch::SeriesBatch;
use crate::head::{Appended, Rejected};
use crate::outcome::{ApplyOutcome, Rejection};

/// How many series ahead of a head lookup its cache lines are prefetched.
const PREFETCH_AHEAD: usize = 16;

/// The id slot of a batch series that was not stored (see [`ApplyOutcome::misidentified`]).
const MISIDENTIFIED: u32 = u32::MAX;

/// The id slot of a batch series whose identity the head does not know (yet).
const NO_CANDIDATE: u32 = u32::MAX - 1;

impl Tenant {
    /// Appends `batch` to the head, then its records to the WAL tail (not yet committed:
    /// the shard commits). `ids` and `scratch` are the core's reused buffers; samples newer
    /// than `future_limit` are refused.
    pub(crate) fn apply<B: SeriesBatch>(
        &self,
        batch: &B,
        ids: &mut Vec<u32>,
        scratch: &mut Vec<u8>,
        future_limit: Option<i64>,
    ) -> ApplyOutcome {
        let t = self;
        let mut out = ApplyOutcome::default();
        let mut head = t.head.borrow_mut();
        ids.clear();
        // Pass 1: resolve series, logging the new ones in one record.
        t.wal.append(RecordType::Series, |buf| {
            let n = batch.len();
            // With 100k+ series every lookup misses the cache twice (index slot, then the
            // series): fetch the slots PREFETCH_AHEAD series ahead and, half-way there, the
            // series, so that the misses overlap instead of following one another.
            for i in 0..n.min(PREFETCH_AHEAD) {
                head.prefetch_slot(batch.hash(i));
            }
            for i in 0..n {
                if i + PREFETCH_AHEAD < n {
                    head.prefetch_slot(batch.hash(i + PREFETCH_AHEAD));
                }
                if i + PREFETCH_AHEAD / 2 < n {
                    head.prefetch_series(batch.hash(i + PREFETCH_AHEAD / 2));
                }
                ids.push(
                    head.candidate(batch.hash(i), batch.check(i))
                        .unwrap_or(NO_CANDIDATE),
                );
            }
            // Confirm each candidate by its labels; a mismatch (or no candidate) takes the
            // slow path: another series of the identity, a new series, or a wrong identity.
            for (i, slot) in ids.iter_mut().enumerate() {
                let candidate = *slot;
                if candidate != NO_CANDIDATE
                    && head.labels_match(candidate, batch.labels(i, scratch))
                {
                    continue;
                }
                let hash = batch.hash(i);
                let check = batch.check(i);
                // Another series of this identity, or none (the rare path).
                *slot = match head.find_exact(hash, check, batch.labels(i, scratch)) {
                    Some(id) => id,
                    None => {
                        let key = batch.key(i, scratch);
                        // The identity must be the key's own before a series is made of it:
                        // an identity from the decoder's table of known series whose
                        // fingerprint collided would name (and route) these labels as
                        // another series.
                        if (hash, check) != (t.hasher.hash_key(key), check_hash(key)) {
                            out.misidentified.push(Identity { hash, check });
                            MISIDENTIFIED
                        } else {
                            let id = head.create_checked(Identity { hash, check }, key);
                            record::put_series(buf, id, key_labels(key));
                            out.new_series += 1;
                            id
                        }
                    }
                };
            }
        });
        // Pass 2: append samples, logging the stored ones in one record.
        let mut newest = i64::MIN;
        t.wal.append(RecordType::Samples, |buf| {
            let mut base: Option<i64> = None;
            // The series were read in pass 1, but with 100k+ series they and their open
            // chunks' buffers are out of cache again: fetch the series PREFETCH_AHEAD ahead
            // and, half-way there, the byte its chunk writes next.
            for i in 0..ids.len() {
                if let Some(ahead) = ids.get(i + PREFETCH_AHEAD) {
                    head.prefetch_append(*ahead);
                }
                if let Some(ahead) = ids.get(i + PREFETCH_AHEAD / 2) {
                    head.prefetch_chunk_write(*ahead);
                }
                let id = &ids[i];
                if *id == MISIDENTIFIED {
                    continue;
                }
                for s in batch.samples(i) {
                    let appended = match future_limit {
                        Some(max_t) if s.timestamp > max_t => {
                            Err(Rejected::TooFarInFuture { max_t })
                        }
                        _ => head.append(*id, s.timestamp, s.value),
                    };
                    match appended {
                        Ok(Appended::New) => {
                            let base_t = *base.get_or_insert_with(|| {
                                record::put_samples_base(buf, s.timestamp);
                                s.timestamp
                            });
                            record::put_sample(buf, base_t, *id, s.timestamp, s.value);
                            newest = newest.max(s.timestamp);
                            out.appended += 1;
                        }
                        Ok(Appended::Repeat) => out.repeats += 1,
                        Err(r) => {
                            if out.count_rejection() {
                                let labels = key_labels(batch.key(i, scratch));
                                out.rejections.push(Rejection::new(r, s.timestamp, labels));
                            }
                        }
                    }
                }
            }
        });
        if newest != i64::MIN {
            t.wal.note_max_t(newest);
        }
        if out.new_series > 0 {
            t.active.fetch_add(out.new_series, Ordering::Relaxed);
        }
        out
    }
}
