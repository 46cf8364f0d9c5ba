//! Reading persisted local blocks for queries: series selection with Prometheus matcher
//! semantics over a block's postings, and samples from its chunks, a slice of series at a
//! time so the caller can yield to its core's other work between slices.
//!
//! Owns matching against one block (the head has its own, `Head::select`). Must not touch the
//! heads or merge results: the read module combines blocks and heads.

use sluice_core::Matcher;
use sluice_storage::block::index::ChunkMeta;
use sluice_storage::block::reader::{BlockReadError, BlockReader};
use sluice_storage::xor::XorIter;

/// Refs of the series in `b` matching every matcher (a matcher that matches "" also matches
/// series without the label), ascending.
fn select_refs(b: &BlockReader, matchers: &[Matcher]) -> Result<Vec<u32>, BlockReadError> {
    let mut candidates: Option<Vec<u32>> = None;
    for m in matchers.iter().filter(|m| !m.matches("")) {
        let mut refs = Vec::new();
        for v in b.label_values(&m.name) {
            if m.matches(v) {
                refs.extend(b.postings(&m.name, v)?);
            }
        }
        refs.sort_unstable();
        refs.dedup();
        candidates = Some(match candidates {
            None => refs,
            Some(prev) => {
                let keep: std::collections::HashSet<u32> = refs.into_iter().collect();
                prev.into_iter().filter(|r| keep.contains(r)).collect()
            }
        });
        if candidates.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
    }
    match candidates {
        Some(c) => Ok(c),
        None => b.all_postings(),
    }
}

/// The series of one block that match a selection, read a slice at a time.
pub struct SeriesCursor<'b> {
    b: &'b BlockReader,
    matchers: &'b [Matcher],
    mint: i64,
    maxt: i64,
    with_samples: bool,
    refs: Vec<u32>,
    next: usize,
    chunks: Vec<ChunkMeta>,
}

impl<'b> SeriesCursor<'b> {
    /// The series of `b` that match `matchers` and have a sample in `[mint, maxt]`; their
    /// samples are decoded only `with_samples`.
    pub fn new(
        b: &'b BlockReader,
        matchers: &'b [Matcher],
        mint: i64,
        maxt: i64,
        with_samples: bool,
    ) -> Result<Self, BlockReadError> {
        let meta = b.meta();
        let refs = if meta.max_time <= mint || meta.min_time > maxt {
            Vec::new()
        } else {
            select_refs(b, matchers)?
        };
        Ok(SeriesCursor {
            b,
            matchers,
            mint,
            maxt,
            with_samples,
            refs,
            next: 0,
            chunks: Vec::new(),
        })
    }

    /// Whether every candidate series has been read.
    pub fn done(&self) -> bool {
        self.next >= self.refs.len()
    }

    /// Reads up to `max` more candidate series, calling `f(labels, samples)` for each one
    /// that matches (samples in time order, empty unless asked for).
    pub fn next_slice(
        &mut self,
        max: usize,
        mut f: impl FnMut(&[(&str, &str)], Vec<(i64, f64)>),
    ) -> Result<(), BlockReadError> {
        let (mint, maxt) = (self.mint, self.maxt);
        let end = (self.next + max).min(self.refs.len());
        let mut labels: Vec<(&str, &str)> = Vec::new();
        for i in self.next..end {
            self.b.series(self.refs[i], &mut labels, &mut self.chunks)?;
            let matches = self.matchers.iter().all(|m| {
                let v = labels
                    .iter()
                    .find(|(n, _)| *n == m.name)
                    .map_or("", |(_, v)| *v);
                m.matches(v)
            });
            if !matches {
                continue;
            }
            let mut overlapping = self
                .chunks
                .iter()
                .filter(|c| c.max_time >= mint && c.min_time <= maxt)
                .peekable();
            if overlapping.peek().is_none() {
                continue;
            }
            let mut samples = Vec::new();
            if self.with_samples {
                for c in overlapping {
                    for (t, v) in XorIter::new(self.b.chunk(c.chunk_ref)?) {
                        if t >= mint && t <= maxt {
                            samples.push((t, v));
                        }
                    }
                }
                if samples.is_empty() {
                    continue;
                }
            }
            f(&labels, samples);
        }
        self.next = end;
        Ok(())
    }
}
