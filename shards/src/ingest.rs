//! The write path of one request: hash every series, keep this core's share, ship the other
//! shares to their owning cores, and wait until all of them are durable.
//!
//! Owns routing within the node. Must not decode or validate (the request arrives decoded)
//! and must not answer the client (it returns the merged outcome).

use sluice_core::{core_for_hash, put_series_key, TenantHasher, WriteRequestRef};

use crate::batch::{LocalBatch, OwnedBatch};
use crate::runtime::Ctx;
use crate::shard::ApplyOutcome;

/// Per-request buffers, reused across requests by the caller.
#[derive(Default)]
pub struct IngestScratch {
    local: Vec<u32>,
    local_hashes: Vec<u64>,
    /// Keys of every series of the request, and each local series' range in them.
    keys: Vec<u8>,
    local_keys: Vec<(u32, u32)>,
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
    scratch.keys.clear();
    scratch.local_keys.clear();
    let hasher = TenantHasher::new(tenant.as_bytes());
    let mut remote: Vec<Option<OwnedBatch>> = (0..cores).map(|_| None).collect();
    for (i, s) in req.series.iter().enumerate() {
        let labels = &req.labels[s.labels.start as usize..s.labels.end as usize];
        let start = scratch.keys.len();
        put_series_key(
            &mut scratch.keys,
            labels
                .iter()
                .map(|l| (l.name_bytes(buf), l.value_bytes(buf))),
        );
        let key = &scratch.keys[start..];
        let hash = hasher.hash_key(key);
        let core = core_for_hash(hash, cores);
        if core == me {
            scratch.local.push(i as u32);
            scratch.local_hashes.push(hash);
            scratch
                .local_keys
                .push((start as u32, scratch.keys.len() as u32));
        } else {
            remote[core].get_or_insert_with(OwnedBatch::default).push(
                hash,
                key,
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
            series: &scratch.local,
            hashes: &scratch.local_hashes,
            keys: &scratch.keys,
            key_ranges: &scratch.local_keys,
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
