//! Reading persisted local blocks for queries: series selection with Prometheus matcher
//! semantics over a block's postings, and samples from its chunks.
//!
//! Owns matching against one block (the head has its own, `Head::select`). Must not touch the
//! heads or merge results: `query.rs` combines blocks and heads.

use sluice_storage::block::index::ChunkMeta;
use sluice_storage::block::reader::{BlockReadError, BlockReader};
use sluice_storage::xor::XorIter;

use crate::matcher::Matcher;

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

/// Calls `f(labels, samples)` for every series of `b` that matches `matchers` and has a sample
/// in `[mint, maxt]`; samples are only decoded when `with_samples`.
pub fn for_each_series(
    b: &BlockReader,
    matchers: &[Matcher],
    mint: i64,
    maxt: i64,
    with_samples: bool,
    mut f: impl FnMut(&[(&str, &str)], Vec<(i64, f64)>),
) -> Result<(), BlockReadError> {
    let meta = b.meta();
    if meta.max_time <= mint || meta.min_time > maxt {
        return Ok(());
    }
    let mut labels: Vec<(&str, &str)> = Vec::new();
    let mut chunks: Vec<ChunkMeta> = Vec::new();
    for r in select_refs(b, matchers)? {
        b.series(r, &mut labels, &mut chunks)?;
        let matches = matchers.iter().all(|m| {
            let v = labels
                .iter()
                .find(|(n, _)| *n == m.name)
                .map_or("", |(_, v)| *v);
            m.matches(v)
        });
        if !matches {
            continue;
        }
        let mut overlapping = chunks
            .iter()
            .filter(|c| c.max_time >= mint && c.min_time <= maxt)
            .peekable();
        if overlapping.peek().is_none() {
            continue;
        }
        let mut samples = Vec::new();
        if with_samples {
            for c in overlapping {
                for (t, v) in XorIter::new(b.chunk(c.chunk_ref)?) {
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
    Ok(())
}
