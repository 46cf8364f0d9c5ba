//! Reading the heads and local blocks: series selection, samples, label names and values —
//! per core, and fanned out over all cores with the results merged.
//!
//! Owns the labels a node adds to what it stores, as queries see them: each tenant's series
//! carry `<tenant_label>="<tenant>"` and the node's external labels (`--label`, e.g.
//! `receive_replica="a"`, as Thanos Receive exposes them so queriers can deduplicate), and
//! matchers on those names are decided by those values. A series' own label of the same name
//! wins. Also owns the read limits applied *while* reading ([`ReadLimits`]: samples loaded,
//! deadline) and the slicing that keeps a large read from holding a core: a core reads a
//! slice of series, then yields to its other work (ingestion) when its time slice is used up.
//! Every per-core part runs in a read zone ([`crate::panics`]). Must not evaluate PromQL:
//! callers get raw series and samples.

use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use sluice_core::Matcher;
use sluice_storage::block::reader::BlockReadError;

mod blocks;

use crate::mesh::Ctx;
use crate::mesh::Unreachable;
use crate::panics::Panicked;
use crate::shard::Shard;
use crate::tenant::Tenant;
use blocks::SeriesCursor;

/// Series read between two checks of the deadline, the sample limit and the core's time
/// slice. Small enough that a slice of large series stays well under a millisecond.
const SLICE: usize = 64;

/// Which series to read: those matching any of the matcher sets (no sets: all series), with
/// a sample in `[mint, maxt]`, of one tenant or of all.
#[derive(Debug, Clone)]
pub struct Selection {
    pub matcher_sets: Vec<Vec<Matcher>>,
    pub mint: i64,
    pub maxt: i64,
    /// Only this tenant's series (`--query.enforce-tenancy`); `None`: every tenant's.
    pub tenant: Option<String>,
}

impl Selection {
    fn wants_tenant(&self, name: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == name)
    }
}

/// Limits one read (all of its selections, on every core) shares, checked while it reads:
/// a read over them stops at once instead of loading everything first.
#[derive(Debug, Clone)]
pub struct ReadLimits {
    /// Most samples the read may load in total; 0: no limit.
    pub max_samples: u64,
    /// When the read gives up.
    pub deadline: Instant,
    /// Test hook (`--debug.panic-in=select`): the read panics on every core it reads.
    pub debug_panic: bool,
    loaded: Arc<AtomicU64>,
    /// Set when nobody waits for the read any more (its client went away).
    cancelled: Arc<AtomicBool>,
}

impl ReadLimits {
    /// Limits for one read.
    pub fn new(max_samples: u64, deadline: Instant) -> Self {
        Self::with_cancel(max_samples, deadline, Arc::new(AtomicBool::new(false)))
    }

    /// Limits for one read that stops early once `cancelled` is set.
    pub fn with_cancel(max_samples: u64, deadline: Instant, cancelled: Arc<AtomicBool>) -> Self {
        ReadLimits {
            max_samples,
            deadline,
            debug_panic: false,
            loaded: Arc::new(AtomicU64::new(0)),
            cancelled,
        }
    }

    /// Samples loaded so far (every core, every selection).
    pub fn loaded(&self) -> u64 {
        self.loaded.load(Ordering::Relaxed)
    }

    /// Counts `n` more loaded samples; errs once over the limit.
    fn add(&self, n: usize) -> Result<(), QueryError> {
        let total = self.loaded.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if self.max_samples > 0 && total > self.max_samples {
            return Err(QueryError::TooManySamples {
                limit: self.max_samples,
            });
        }
        Ok(())
    }

    /// Errs once the deadline has passed.
    fn check_time(&self) -> Result<(), QueryError> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(QueryError::Cancelled);
        }
        if Instant::now() > self.deadline {
            return Err(QueryError::Timeout);
        }
        Ok(())
    }
}

/// A series as returned to a query: labels (tenant label included) and, if asked, samples.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesData {
    pub labels: Vec<(String, String)>,
    pub samples: Vec<(i64, f64)>,
}

/// The labels a node adds to every series of a tenant: the tenant label and the external
/// labels, sorted by name.
fn added_labels<'a>(
    tenant_label: &'a str,
    tenant: &'a str,
    external: &'a [(String, String)],
) -> Vec<(&'a str, &'a str)> {
    let mut v: Vec<(&str, &str)> = external
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .filter(|(n, _)| *n != tenant_label)
        .collect();
    v.push((tenant_label, tenant));
    v.sort_unstable();
    v
}

/// Whether a matcher set can match the series of a tenant as far as the added labels decide,
/// and the matchers left for the stored labels.
fn split_matchers(set: &[Matcher], added: &[(&str, &str)]) -> Option<Vec<Matcher>> {
    let mut rest = Vec::with_capacity(set.len());
    for m in set {
        match added.iter().find(|(n, _)| *n == m.name) {
            Some((_, v)) if !m.matches(v) => return None,
            Some(_) => {}
            None => rest.push(m.clone()),
        }
    }
    Some(rest)
}

/// The matcher sets of a selection (none: one empty set, which selects everything).
fn sets_of(sel: &Selection) -> &[Vec<Matcher>] {
    const ALL: &[Vec<Matcher>] = &[Vec::new()];
    if sel.matcher_sets.is_empty() {
        ALL
    } else {
        &sel.matcher_sets
    }
}

/// Yields to the core's other tasks once this one has used its time slice.
async fn yield_if_needed() {
    glommio::yield_if_needed().await;
}

impl Shard {
    fn added<'a>(&'a self, t: &'a Tenant) -> Vec<(&'a str, &'a str)> {
        added_labels(&self.cfg.tenant_label, &t.name, &self.cfg.external_labels)
    }

    /// Tenants of this core a selection reads.
    fn tenants_for(&self, sel: &Selection) -> Vec<Rc<Tenant>> {
        let mut all = self.tenants();
        all.retain(|t| sel.wants_tenant(&t.name));
        all
    }

    /// Series ids of `t` that `sel` selects.
    fn selected(&self, t: &Tenant, sel: &Selection) -> Vec<u32> {
        let head = t.head.borrow();
        let added = self.added(t);
        let mut ids: Vec<u32> = Vec::new();
        let sets = sets_of(sel);
        for set in sets {
            if let Some(rest) = split_matchers(set, &added) {
                ids.extend(head.select(&rest));
            }
        }
        if sets.len() > 1 {
            ids.sort_unstable();
            ids.dedup();
        }
        ids.retain(|id| head.overlaps(*id, sel.mint, sel.maxt));
        ids
    }

    /// Series on this core that `sel` selects, with samples in range if `with_samples`, a
    /// slice of series at a time: between slices the head is not borrowed, so ingestion can
    /// go on (a series collected meanwhile is skipped: its samples are in a block, which
    /// [`select_all`] reads after the heads).
    pub async fn select(
        &self,
        sel: &Selection,
        with_samples: bool,
        limits: &ReadLimits,
    ) -> Result<Vec<SeriesData>, QueryError> {
        let mut out = Vec::new();
        if limits.debug_panic {
            panic!("test hook: panic while selecting (--debug.panic-in=select)");
        }
        for t in self.tenants_for(sel) {
            let ids = self.selected(&t, sel);
            let added = self.added(&t);
            for slice in ids.chunks(SLICE) {
                {
                    let head = t.head.borrow();
                    for &id in slice {
                        if !head.is_live(id) {
                            continue;
                        }
                        let mut samples = Vec::new();
                        if with_samples {
                            head.samples(id, sel.mint, sel.maxt, |ts, v| samples.push((ts, v)));
                            if samples.is_empty() {
                                continue;
                            }
                            limits.add(samples.len())?;
                        }
                        out.push(SeriesData {
                            labels: with_added(head.labels(id), &added),
                            samples,
                        });
                    }
                }
                limits.check_time()?;
                yield_if_needed().await;
            }
        }
        Ok(out)
    }

    /// Label names of the selected series on this core.
    pub fn label_names(&self, sel: &Selection) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for t in self.tenants_for(sel) {
            let ids = self.selected(&t, sel);
            if !ids.is_empty() {
                out.extend(self.added(&t).iter().map(|(n, _)| n.to_string()));
            }
            let head = t.head.borrow();
            for id in ids {
                for (n, _) in head.labels(id) {
                    if !out.contains(n) {
                        out.insert(n.to_string());
                    }
                }
            }
        }
        out
    }

    /// Values of label `name` among the selected series on this core.
    pub fn label_values(&self, name: &str, sel: &Selection) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for t in self.tenants_for(sel) {
            let ids = self.selected(&t, sel);
            let head = t.head.borrow();
            for id in ids {
                let v = head.labels(id).find(|(n, _)| *n == name).map(|(_, v)| v);
                match v {
                    Some(v) if !out.contains(v) => {
                        out.insert(v.to_string());
                    }
                    Some(_) => {}
                    None => {
                        if let Some((_, v)) = self.added(&t).iter().find(|(n, _)| *n == name) {
                            out.insert(v.to_string());
                        }
                    }
                }
            }
        }
        out
    }
}

/// Labels plus the added labels in their sorted places (a series' own label of that name
/// wins).
fn with_added<'a>(
    labels: impl Iterator<Item = (&'a str, &'a str)>,
    added: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = labels
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    for (name, value) in added {
        if let Err(pos) = out.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            out.insert(pos, (name.to_string(), value.to_string()));
        }
    }
    out
}

/// Selects across every core's head and the local blocks; series sorted by labels, a series
/// found in several places merged (samples in time order, each timestamp once). Stops with
/// an error as soon as `limits` are exceeded.
pub async fn select_all(
    ctx: &Ctx,
    sel: Selection,
    with_samples: bool,
    limits: &ReadLimits,
) -> Result<Vec<SeriesData>, QueryError> {
    // A read of many selections that each match nothing still stops at its deadline.
    limits.check_time()?;
    // Heads first, then blocks: a cut adds its block before the heads let go of the same
    // samples, so in this order a concurrent cut is seen in one place or both, never neither.
    let sel_for_heads = sel.clone();
    let limits_for_heads = limits.clone();
    let results = ctx
        .read_all(move |shard: Rc<Shard>| {
            let sel = sel_for_heads.clone();
            let limits = limits_for_heads.clone();
            Box::pin(async move { shard.select(&sel, with_samples, &limits).await })
        })
        .await;
    let mut out = Vec::new();
    for r in results {
        out.extend(r??);
    }
    out.extend(select_blocks(ctx, &sel, with_samples, limits).await?);
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out.dedup_by(|later, first| {
        if later.labels != first.labels {
            return false;
        }
        first.samples.append(&mut later.samples);
        true
    });
    for s in &mut out {
        if !s.samples.is_sorted_by_key(|(t, _)| *t) {
            s.samples.sort_by_key(|(t, _)| *t);
        }
        s.samples.dedup_by_key(|(t, _)| *t);
    }
    Ok(out)
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    #[error("reading a persisted block: {0}")]
    Block(#[from] BlockReadError),
    /// The read would load more samples than its limit.
    #[error("the read would load more than {limit} samples")]
    TooManySamples { limit: u64 },
    /// The read's deadline passed.
    #[error("the read timed out")]
    Timeout,
    /// Nobody waits for the read any more.
    #[error("the read was cancelled")]
    Cancelled,
    #[error(transparent)]
    Panicked(#[from] Panicked),
}

impl From<crate::mesh::ReadFailed> for QueryError {
    fn from(e: crate::mesh::ReadFailed) -> Self {
        match e {
            crate::mesh::ReadFailed::Unreachable(u) => QueryError::Unreachable(u),
            crate::mesh::ReadFailed::Panicked(p) => QueryError::Panicked(p),
        }
    }
}

/// Selects from the local blocks of every tenant the selection can match.
async fn select_blocks(
    ctx: &Ctx,
    sel: &Selection,
    with_samples: bool,
    limits: &ReadLimits,
) -> Result<Vec<SeriesData>, QueryError> {
    let cfg = &ctx.shard.cfg;
    let mut out = Vec::new();
    for tenant in ctx.global.blocks.tenants() {
        if !sel.wants_tenant(&tenant) {
            continue;
        }
        let blocks = ctx.global.blocks.for_tenant(&tenant);
        let added = added_labels(&cfg.tenant_label, &tenant, &cfg.external_labels);
        for set in sets_of(sel) {
            let Some(rest) = split_matchers(set, &added) else {
                continue;
            };
            for b in &blocks {
                let mut cursor = SeriesCursor::new(b, &rest, sel.mint, sel.maxt, with_samples)?;
                while !cursor.done() {
                    let mut over = Ok(());
                    cursor.next_slice(SLICE, |labels, samples| {
                        if over.is_ok() {
                            over = limits.add(samples.len());
                        }
                        out.push(SeriesData {
                            labels: with_added(labels.iter().copied(), &added),
                            samples,
                        })
                    })?;
                    over?;
                    limits.check_time()?;
                    yield_if_needed().await;
                }
            }
        }
    }
    Ok(out)
}

/// Runs `f` on every core, then `from_blocks` (heads first, see [`select_all`]), and returns
/// the sorted union of the strings they found.
async fn union_all<F>(
    ctx: &Ctx,
    f: F,
    from_blocks: impl std::future::Future<Output = Result<BTreeSet<String>, QueryError>>,
) -> Result<Vec<String>, QueryError>
where
    F: Fn(&Shard) -> BTreeSet<String> + Send + Clone + 'static,
{
    let results = ctx
        .read_all(move |shard: Rc<Shard>| {
            let f = f.clone();
            Box::pin(async move { f(&shard) })
        })
        .await;
    let mut out = BTreeSet::new();
    for r in results {
        out.extend(r?);
    }
    out.extend(from_blocks.await?);
    Ok(out.into_iter().collect())
}

/// Label names across every core and the local blocks, sorted.
pub async fn label_names_all(
    ctx: &Ctx,
    sel: Selection,
    limits: &ReadLimits,
) -> Result<Vec<String>, QueryError> {
    let for_heads = sel.clone();
    union_all(ctx, move |shard| shard.label_names(&for_heads), async {
        Ok(select_blocks(ctx, &sel, false, limits)
            .await?
            .into_iter()
            .flat_map(|s| s.labels.into_iter().map(|(n, _)| n))
            .collect())
    })
    .await
}

/// Values of one label across every core and the local blocks, sorted.
pub async fn label_values_all(
    ctx: &Ctx,
    name: String,
    sel: Selection,
    limits: &ReadLimits,
) -> Result<Vec<String>, QueryError> {
    let (for_heads, name_for_heads) = (sel.clone(), name.clone());
    union_all(
        ctx,
        move |shard| shard.label_values(&name_for_heads, &for_heads),
        async {
            Ok(select_blocks(ctx, &sel, false, limits)
                .await?
                .into_iter()
                .filter_map(|s| {
                    s.labels
                        .into_iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| v)
                })
                .collect())
        },
    )
    .await
}
