//! The write path of one request: hash every series, keep this core's share, ship the other
//! shares to their owning cores, and wait until all of them are durable.
//!
//! Owns routing within the node. Must not decode or validate (the request arrives decoded)
//! and must not answer the client (it returns the merged outcome).

use sluice_core::{core_for_hash, series_hash_bytes, WriteRequestRef};

use crate::batch::{LocalBatch, OwnedBatch};
use crate::runtime::Ctx;
use crate::shard::ApplyOutcome;

/// Per-request buffers, reused across requests by the caller.
#[derive(Default)]
pub struct IngestScratch {
    local: Vec<u32>,
    local_hashes: Vec<u64>,
    /// Canonical series bytes for hashing.
    hash_buf: Vec<u8>,
}

/// Appends a decoded request for `tenant` across the node's cores.
pub async fn ingest(
    ctx: &Ctx,
    tenant: &str,
    req: &WriteRequestRef,
    buf: &[u8],
    scratch: &mut IngestScratch,
) -> ApplyOutcome {
    let cores = ctx.cores();
    let me = ctx.core();
    scratch.local.clear();
    scratch.local_hashes.clear();
    let mut remote: Vec<Option<OwnedBatch>> = (0..cores).map(|_| None).collect();
    for (i, s) in req.series.iter().enumerate() {
        let labels = &req.labels[s.labels.start as usize..s.labels.end as usize];
        let label_bytes = labels
            .iter()
            .map(|l| (l.name_bytes(buf), l.value_bytes(buf)));
        let hash = series_hash_bytes(
            &mut scratch.hash_buf,
            tenant.as_bytes(),
            label_bytes.clone(),
        );
        let core = core_for_hash(hash, cores);
        if core == me {
            scratch.local.push(i as u32);
            scratch.local_hashes.push(hash);
        } else {
            remote[core].get_or_insert_with(OwnedBatch::default).push(
                hash,
                label_bytes,
                req.series_samples(s),
            );
        }
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
            r.unwrap_or_else(|e| ApplyOutcome {
                failure: Some(e.to_string()),
                ..Default::default()
            })
        })
    });
    let local = async {
        if scratch.local.is_empty() {
            return ApplyOutcome::default();
        }
        let batch = LocalBatch {
            req,
            buf,
            series: &scratch.local,
            hashes: &scratch.local_hashes,
        };
        ctx.shard.ingest(tenant, &batch).await
    };
    let (mut out, others) =
        futures::future::join(local, futures::future::join_all(remote_calls)).await;
    for o in others {
        out.merge(o);
    }
    out
}
