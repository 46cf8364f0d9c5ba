//! The write path of one batch within the node: hash every series, keep this core's share,
//! ship the other shares to their owning cores, and wait until all of them are durable.
//!
//! Owns routing within the node. Must not decode or validate (batches arrive decoded) and
//! must not answer the client (it returns the merged outcome). Which *node* owns a series is
//! the caller's business (the cluster layer passes only this node's share).

#[cfg(test)]
mod routing_tests;

use sluice_core::{
    check_hash, core_for_hash, put_hashed_series_key, Identity, KnownSeries, WriteRequestRef,
};

use crate::batch::{OwnedBatch, RequestBatch, SeriesBatch, Subset, NO_KEY};
use crate::mesh::Ctx;
use crate::outcome::{ApplyFailure, ApplyOutcome};

/// Identity and key of every series of a request, computed once per request.
#[derive(Default)]
pub struct SeriesKeys {
    hashes: Vec<u64>,
    checks: Vec<u64>,
    keys: Vec<u8>,
    key_ranges: Vec<(u32, u32)>,
}

impl SeriesKeys {
    /// Computes `tenant`'s identities of `req`'s series (`buf`: the decoded payload) and the
    /// keys of those the decoder did not recognise, and teaches `known` the fingerprints of
    /// the latter.
    pub fn compute(
        &mut self,
        tenant: &str,
        req: &WriteRequestRef,
        buf: &[u8],
        mut known: Option<&mut KnownSeries>,
    ) {
        self.hashes.clear();
        self.checks.clear();
        self.keys.clear();
        self.key_ranges.clear();
        // Exact sizes, so that what the memory budget reserved for these (see
        // `SeriesKeys::bytes_for`) is what they take: growing by doubling could take twice.
        let n = req.series.len();
        self.hashes.reserve_exact(n);
        self.checks.reserve_exact(n);
        self.key_ranges.reserve_exact(n);
        self.keys.reserve_exact(req.key_bytes().parsed);
        for (i, s) in req.series.iter().enumerate() {
            if let Some(id) = req.known(i) {
                self.hashes.push(id.hash);
                self.checks.push(id.check);
                self.key_ranges.push(NO_KEY);
                continue;
            }
            let labels = &req.labels[s.labels.start as usize..s.labels.end as usize];
            let (hash, start) = put_hashed_series_key(
                &mut self.keys,
                tenant.as_bytes(),
                labels
                    .iter()
                    .map(|l| (l.name_bytes(buf), l.value_bytes(buf))),
            );
            let check = check_hash(&self.keys[start..]);
            if let (Some(known), Some(fp)) = (known.as_deref_mut(), req.fingerprint(i)) {
                known.insert(fp, Identity { hash, check });
            }
            self.hashes.push(hash);
            self.checks.push(check);
            self.key_ranges.push((start as u32, self.keys.len() as u32));
        }
    }

    /// The most [`compute`](Self::compute) allocates for `series` series whose parsed keys
    /// take `parsed_key_bytes` (`WriteRequestRef::key_bytes`): a hash, a check hash and a key
    /// range per series, and the keys.
    pub fn bytes_for(series: usize, parsed_key_bytes: usize) -> usize {
        series * (2 * std::mem::size_of::<u64>() + std::mem::size_of::<(u32, u32)>())
            + parsed_key_bytes
    }

    /// Of [`bytes_for`](Self::bytes_for), what these vectors lack room for (they keep their
    /// capacity from request to request).
    pub fn bytes_to_grow(&self, series: usize, parsed_key_bytes: usize) -> usize {
        let lack = |v: usize, cap: usize| v.saturating_sub(cap);
        (lack(series, self.hashes.capacity()) + lack(series, self.checks.capacity()))
            * std::mem::size_of::<u64>()
            + lack(series, self.key_ranges.capacity()) * std::mem::size_of::<(u32, u32)>()
            + lack(parsed_key_bytes, self.keys.capacity())
    }

    /// Bytes these vectors hold (their capacity).
    pub fn capacity_bytes(&self) -> usize {
        (self.hashes.capacity() + self.checks.capacity()) * std::mem::size_of::<u64>()
            + self.keys.capacity()
            + self.key_ranges.capacity() * std::mem::size_of::<(u32, u32)>()
    }

    /// The request's series as a batch (after [`compute`](Self::compute) on the same request
    /// and payload).
    pub fn batch<'a>(&'a self, req: &'a WriteRequestRef, buf: &'a [u8]) -> RequestBatch<'a> {
        RequestBatch {
            req,
            buf,
            hashes: &self.hashes,
            checks: &self.checks,
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
    /// Key of a series being copied to another core.
    pub key: Vec<u8>,
}

impl IngestScratch {
    /// Bytes these buffers hold (their capacity).
    pub fn capacity_bytes(&self) -> usize {
        self.keys.capacity_bytes()
            + self.local.capacity() * std::mem::size_of::<u32>()
            + self.key.capacity()
    }
}

/// Appends a decoded request for `tenant` across the node's cores.
pub async fn ingest(
    ctx: &Ctx,
    tenant: &str,
    req: &WriteRequestRef,
    buf: &[u8],
    scratch: &mut IngestScratch,
) -> ApplyOutcome {
    scratch
        .keys
        .compute(tenant, req, buf, Some(&mut ctx.shard.known.borrow_mut()));
    let batch = scratch.keys.batch(req, buf);
    let mut out = ingest_batch(
        ctx,
        tenant,
        &batch,
        None,
        &mut scratch.local,
        &mut scratch.key,
    )
    .await;
    if !out.misidentified.is_empty() {
        // The decoder recognised some series by a fingerprint another label set shares:
        // those were not stored. Never trust those fingerprints again, and have the sender
        // retry: the retry decodes them in full and stores them as themselves.
        let mut known = ctx.shard.known.borrow_mut();
        let mut poisoned = 0;
        for i in 0..req.series.len() {
            if let (Some(id), Some(fp)) = (req.known(i), req.fingerprint(i)) {
                // By hash: a series copied to another core is reported with the check
                // computed from its real key there, not the one the table handed out.
                if out.misidentified.iter().any(|m| m.hash == id.hash) {
                    known.poison(fp);
                    poisoned += 1;
                }
            }
        }
        tracing::warn!(
            tenant,
            series = poisoned,
            "label fingerprints shared by two series; those series were not stored, the request is retried"
        );
        if out.failure.is_none() {
            out.failure = Some(ApplyFailure::Misidentified { series: poisoned });
        }
    }
    out
}

/// Appends `batch`'s series (or only those listed in `only`) across the node's cores: this
/// core's share in place, the others copied to their cores. `local` and `key` are scratch.
pub async fn ingest_batch<B: SeriesBatch>(
    ctx: &Ctx,
    tenant: &str,
    batch: &B,
    only: Option<&[u32]>,
    local: &mut Vec<u32>,
    key: &mut Vec<u8>,
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
                batch.key(i as usize, key),
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
            r.unwrap_or_else(|e| ApplyOutcome::failed(e.into()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::{key_labels, series_hash};

    /// A length-delimited field (bodies under 128 bytes).
    fn field(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
        out.extend([tag, body.len() as u8]);
        out.extend_from_slice(body);
    }

    /// A remote-write 1.0 request; every series gets one sample (t 5, value 1.5).
    fn request(series: &[&[(&str, &str)]]) -> Vec<u8> {
        request_at(series, 5)
    }

    /// A remote-write 1.0 request; every series gets one sample (t, value 1.5).
    pub(super) fn request_at(series: &[&[(&str, &str)]], t: u8) -> Vec<u8> {
        let mut req = Vec::new();
        for labels in series {
            let mut ts = Vec::new();
            for (n, v) in *labels {
                let mut l = Vec::new();
                field(&mut l, 0x0a, n.as_bytes());
                field(&mut l, 0x12, v.as_bytes());
                field(&mut ts, 0x0a, &l);
            }
            let mut sample = vec![0x09];
            sample.extend(1.5f64.to_le_bytes());
            sample.extend([0x10, t]);
            field(&mut ts, 0x12, &sample);
            field(&mut req, 0x0a, &ts);
        }
        req
    }

    #[test]
    fn known_series_keep_their_identity_and_get_a_key_on_demand() {
        let a: &[(&str, &str)] = &[("__name__", "up"), ("job", "a")];
        let b: &[(&str, &str)] = &[("__name__", "up"), ("job", "b")];
        let buf = request(&[a, b]);
        let mut known = KnownSeries::new();
        let seed = known.tenant_seed(b"t");
        let (mut req, mut keys) = (WriteRequestRef::default(), SeriesKeys::default());
        req.decode_known(&buf, &known, seed).unwrap();
        keys.compute("t", &req, &buf, Some(&mut known));
        assert_eq!(known.len(), 2, "the first sight teaches both");

        req.decode_known(&buf, &known, seed).unwrap();
        assert!(req.known(0).is_some() && req.known(1).is_some());
        keys.compute("t", &req, &buf, Some(&mut known));
        assert_eq!(
            keys.key_ranges,
            [NO_KEY, NO_KEY],
            "no key built for known series"
        );
        let batch = keys.batch(&req, &buf);
        for (i, labels) in [a, b].into_iter().enumerate() {
            let mut scratch = Vec::new();
            let key = batch.key(i, &mut scratch).to_vec();
            let bytes: Vec<_> = labels
                .iter()
                .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
                .collect();
            assert_eq!(key_labels(&key).collect::<Vec<_>>(), bytes);
            assert_eq!(batch.hash(i), series_hash("t", labels.iter().copied()));
            assert_eq!(batch.check(i), check_hash(&key));
            let samples: Vec<_> = batch.samples(i).map(|s| (s.timestamp, s.value)).collect();
            assert_eq!(samples, [(5, 1.5)]);
        }
    }
}
