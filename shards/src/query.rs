//! Reading the heads: series selection, samples, label names and values — per core, and
//! fanned out over all cores with the results merged.
//!
//! Owns the labels a node adds to what it stores, as queries see them: each tenant's series
//! carry `<tenant_label>="<tenant>"` and the node's external labels (`--label`, e.g.
//! `receive_replica="a"`, as Thanos Receive exposes them so queriers can deduplicate), and
//! matchers on those names are decided by those values. A series' own label of the same name
//! wins. Must not evaluate PromQL: callers get raw series and samples.

use std::collections::BTreeSet;
use std::rc::Rc;

use sluice_storage::block::reader::BlockReadError;

use crate::blockquery;
use crate::matcher::Matcher;
use crate::mesh::Unreachable;
use crate::runtime::Ctx;
use crate::shard::{Shard, Tenant};

/// Which series to read: those matching any of the matcher sets (no sets: all series), with
/// a sample in `[mint, maxt]`.
#[derive(Debug, Clone)]
pub struct Selection {
    pub matcher_sets: Vec<Vec<Matcher>>,
    pub mint: i64,
    pub maxt: i64,
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

impl Shard {
    fn added<'a>(&'a self, t: &'a Tenant) -> Vec<(&'a str, &'a str)> {
        added_labels(&self.cfg.tenant_label, &t.name, &self.cfg.external_labels)
    }

    /// Series ids of `t` that `sel` selects.
    fn selected(&self, t: &Tenant, sel: &Selection) -> Vec<u32> {
        let head = t.head.borrow();
        let added = self.added(t);
        let mut ids: Vec<u32> = Vec::new();
        let all = [Vec::new()];
        let sets: &[Vec<Matcher>] = if sel.matcher_sets.is_empty() {
            &all
        } else {
            &sel.matcher_sets
        };
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

    /// Series on this core that `sel` selects, with samples in range if `with_samples`.
    pub fn select(&self, sel: &Selection, with_samples: bool) -> Vec<SeriesData> {
        let mut out = Vec::new();
        for t in self.tenants() {
            let ids = self.selected(&t, sel);
            let head = t.head.borrow();
            let added = self.added(&t);
            for id in ids {
                let mut samples = Vec::new();
                if with_samples {
                    head.samples(id, sel.mint, sel.maxt, |ts, v| samples.push((ts, v)));
                }
                out.push(SeriesData {
                    labels: with_added(head.labels(id), &added),
                    samples,
                });
            }
        }
        out
    }

    /// Label names of the selected series on this core.
    pub fn label_names(&self, sel: &Selection) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for t in self.tenants() {
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
        for t in self.tenants() {
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
/// found in several places merged (samples in time order, each timestamp once).
pub async fn select_all(
    ctx: &Ctx,
    sel: Selection,
    with_samples: bool,
) -> Result<Vec<SeriesData>, QueryError> {
    // Heads first, then blocks: a cut adds its block before the heads let go of the same
    // samples, so in this order a concurrent cut is seen in one place or both, never neither.
    let sel_for_heads = sel.clone();
    let results = ctx
        .on_all(move |shard: Rc<Shard>| {
            let sel = sel_for_heads.clone();
            Box::pin(async move { shard.select(&sel, with_samples) })
        })
        .await;
    let mut out = Vec::new();
    for r in results {
        out.extend(r?);
    }
    out.extend(select_blocks(ctx, &sel, with_samples)?);
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

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    #[error("reading a persisted block: {0}")]
    Block(#[from] BlockReadError),
}

/// Selects from the local blocks of every tenant the selection can match.
fn select_blocks(
    ctx: &Ctx,
    sel: &Selection,
    with_samples: bool,
) -> Result<Vec<SeriesData>, BlockReadError> {
    let cfg = &ctx.shard.cfg;
    let all = [Vec::new()];
    let sets: &[Vec<Matcher>] = if sel.matcher_sets.is_empty() {
        &all
    } else {
        &sel.matcher_sets
    };
    let mut out = Vec::new();
    for tenant in ctx.global.blocks.tenants() {
        let blocks = ctx.global.blocks.for_tenant(&tenant);
        let added = added_labels(&cfg.tenant_label, &tenant, &cfg.external_labels);
        for set in sets {
            let Some(rest) = split_matchers(set, &added) else {
                continue;
            };
            for b in &blocks {
                blockquery::for_each_series(
                    b,
                    &rest,
                    sel.mint,
                    sel.maxt,
                    with_samples,
                    |labels, samples| {
                        out.push(SeriesData {
                            labels: with_added(labels.iter().copied(), &added),
                            samples,
                        })
                    },
                )?;
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
    from_blocks: impl FnOnce() -> Result<BTreeSet<String>, BlockReadError>,
) -> Result<Vec<String>, QueryError>
where
    F: Fn(&Shard) -> BTreeSet<String> + Send + Clone + 'static,
{
    let results = ctx
        .on_all(move |shard: Rc<Shard>| {
            let f = f.clone();
            Box::pin(async move { f(&shard) })
        })
        .await;
    let mut out = BTreeSet::new();
    for r in results {
        out.extend(r?);
    }
    out.extend(from_blocks()?);
    Ok(out.into_iter().collect())
}

/// Label names across every core and the local blocks, sorted.
pub async fn label_names_all(ctx: &Ctx, sel: Selection) -> Result<Vec<String>, QueryError> {
    let for_heads = sel.clone();
    union_all(
        ctx,
        move |shard| shard.label_names(&for_heads),
        || {
            Ok(select_blocks(ctx, &sel, false)?
                .into_iter()
                .flat_map(|s| s.labels.into_iter().map(|(n, _)| n))
                .collect())
        },
    )
    .await
}

/// Values of one label across every core and the local blocks, sorted.
pub async fn label_values_all(
    ctx: &Ctx,
    name: String,
    sel: Selection,
) -> Result<Vec<String>, QueryError> {
    let (for_heads, name_for_heads) = (sel.clone(), name.clone());
    union_all(
        ctx,
        move |shard| shard.label_values(&name_for_heads, &for_heads),
        || {
            Ok(select_blocks(ctx, &sel, false)?
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
