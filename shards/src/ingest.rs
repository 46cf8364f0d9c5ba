//! The write path of one batch within the node: hash every series, keep this core's share,
//! ship the other shares to their owning cores, and wait until all of them are durable.
//!
//! Owns routing within the node. Must not decode or validate (batches arrive decoded) and
//! must not answer the client (it returns the merged outcome). Which *node* owns a series is
//! the caller's business (the cluster layer passes only this node's share).

use sluice_core::{core_for_hash, put_hashed_series_key, WriteRequestRef};

use crate::batch::{OwnedBatch, RequestBatch, SeriesBatch, Subset};
use crate::runtime::Ctx;
use crate::shard::ApplyOutcome;

/// Key and hash of every series of a request, computed once per request.
#[derive(Default)]
pub struct SeriesKeys {
    hashes: Vec<u64>,
    keys: Vec<u8>,
    key_ranges: Vec<(u32, u32)>,
}

impl SeriesKeys {
    /// Computes the keys and `tenant`'s hashes of `req`'s series (`buf`: the decoded payload).
    pub fn compute(&mut self, tenant: &str, req: &WriteRequestRef, buf: &[u8]) {
        self.hashes.clear();
        self.keys.clear();
        self.key_ranges.clear();
        for s in &req.series {
            let labels = &req.labels[s.labels.start as usize..s.labels.end as usize];
            let (hash, start) = put_hashed_series_key(
                &mut self.keys,
                tenant.as_bytes(),
                labels
                    .iter()
                    .map(|l| (l.name_bytes(buf), l.value_bytes(buf))),
            );
            self.hashes.push(hash);
            self.key_ranges.push((start as u32, self.keys.len() as u32));
        }
    }

    /// The request's series as a batch (after [`compute`](Self::compute) on the same request).
    pub fn batch<'a>(&'a self, req: &'a WriteRequestRef) -> RequestBatch<'a> {
        RequestBatch {
            req,
            hashes: &self.hashes,
            keys: &self.keys,
            key_ranges: &self.key_ranges,
        }
    }
}

/// Per-request buffers, reused across requests by the caller.
#[derive(Default)]
pub struct IngestScratch {
    pub keys: SeriesKeys,
    /// This core's share of the batch being routed.
    pub local: Vec<u32>,
}

/// Appends a decoded request for `tenant` across the node's cores.
pub async fn ingest(
    ctx: &Ctx,
    tenant: &str,
    req: &WriteRequestRef,
    buf: &[u8],
    scratch: &mut IngestScratch,
) -> ApplyOutcome {
    scratch.keys.compute(tenant, req, buf);
    let batch = scratch.keys.batch(req);
    ingest_batch(ctx, tenant, &batch, None, &mut scratch.local).await
}

/// Appends `batch`'s series (or only those listed in `only`) across the node's cores: this
/// core's share in place, the others copied to their cores. `local` is scratch.
pub async fn ingest_batch<B: SeriesBatch>(
    ctx: &Ctx,
    tenant: &str,
    batch: &B,
    only: Option<&[u32]>,
    local: &mut Vec<u32>,
) -> ApplyOutcome {
    let cores = ctx.cores();
    let me = ctx.core();
    local.clear();
    let mut remote: Vec<Option<OwnedBatch>> = (0..cores).map(|_| None).collect();
    let mut route = |i: u32| {
        let hash = batch.hash(i as usize);
        let core = core_for_hash(hash, cores);
        if core == me {
            local.push(i);
        } else {
            remote[core].get_or_insert_with(OwnedBatch::default).push(
                hash,
                batch.key(i as usize),
                batch.samples(i as usize),
            );
        }
    };
    match only {
        Some(only) => only.iter().copied().for_each(&mut route),
        None => (0..batch.len() as u32).for_each(&mut route),
    }
    let remote_calls = remote.into_iter().enumerate().filter_map(|(k, batch)| {
        let batch = batch?;
        let tenant = tenant.to_string();
        Some(async move {
            let r = ctx
                .on_core(k, move |shard| {
                    Box::pin(async move { shard.ingest(&tenant, &batch).await })
                })
                .await;
            r.unwrap_or_else(|e| ApplyOutcome::failed(e.to_string()))
        })
    });
    let local = async {
        if local.is_empty() {
            return ApplyOutcome::default();
        }
        let mine = Subset {
            batch,
            indexes: local,
        };
        ctx.shard.ingest(tenant, &mine).await
    };
    let (mut out, others) =
        futures::future::join(local, futures::future::join_all(remote_calls)).await;
    for o in others {
        out.merge(o);
    }
    out
}
