//! The cluster write: place every series of a request on its replicas (the hashring), store
//! this node's share locally, send the other shares to their nodes over the replication RPC,
//! and decide the answer by write quorum.
//!
//! Owns placement of a request, the quorum rule and the status the sender sees. Must not
//! decode requests (they arrive decoded) or touch connections (the core's `Peers` does).
//!
//! **Quorum**: with replication factor R every series must be durable on ⌊R/2⌋+1 of its R
//! replicas. A replica that stored a series' valid samples but refused others (out of order,
//! out of bounds) counts as durable; the answer is then 409, as on a single node. The
//! answer comes as soon as it is certain: once every series has its quorum (a stopped peer
//! then costs nothing), or once some series can no longer reach it — never later than the
//! forward timeout. The local share is always awaited, never abandoned half-way.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::stream::{FuturesUnordered, StreamExt};
use hyper::StatusCode;
use sluice_core::hashring::Hashrings;
use sluice_core::WriteRequestRef;
use sluice_shards::batch::SeriesBatch;
use sluice_shards::{ingest_batch, ApplyOutcome, IngestScratch};

use crate::reject::Verdict;
use crate::rpc::frame::{encode_forward, Reply, Status, WriteEncoder};
use crate::state::CoreState;
pub use crate::write::ClusterScratch;

/// Cluster settings shared by every core.
#[derive(Debug)]
pub struct ClusterConfig {
    /// This node's endpoint, exactly as the hashrings file writes it; `None`: this node
    /// only forwards.
    pub node_name: Option<String>,
    /// Replicas per series.
    pub replication_factor: usize,
    /// How long a replica may take to answer.
    pub forward_timeout: Duration,
    /// The rings, swapped whole on reload.
    pub hashrings: Arc<ArcSwap<Hashrings>>,
}

impl ClusterConfig {
    /// Write quorum: ⌊R/2⌋+1.
    pub fn quorum(&self) -> usize {
        self.replication_factor / 2 + 1
    }
}

/// How a replica (an endpoint of the ring) answered.
#[derive(Debug, Clone)]
enum Answer {
    Pending,
    /// Durable; with a message when some samples were refused.
    Durable(Option<String>),
    /// Over a tenant limit: nothing stored.
    Limited(String),
    /// Not durable.
    Failed(String),
}

/// The answer to the sender: a status and a message (empty for 204).
pub type Outcome = (StatusCode, &'static str, String);

/// A decoded remote-write request as it arrived.
pub struct Request<'a> {
    pub tenant: &'a str,
    /// The body as received (snappy-compressed protobuf).
    pub snappy: &'a [u8],
    pub req: &'a WriteRequestRef,
    /// The decompressed payload `req` borrows from.
    pub payload: &'a [u8],
    /// `snappy` is a remote write 1.0 body. Only such a body may go to a peer as it came
    /// (a `FORWARD` frame, which peers decode as 1.0); a 2.0 body is re-encoded per peer in
    /// `WRITE` frames like any partial share.
    pub v1_body: bool,
}

/// Writes a decoded request to its replicas.
pub async fn write(
    st: &CoreState,
    cluster: &ClusterConfig,
    r: Request<'_>,
    scratch: &mut IngestScratch,
    cs: &mut ClusterScratch,
) -> Outcome {
    let Request {
        tenant,
        snappy,
        req,
        payload,
        v1_body,
    } = r;
    let peers = &st.peers;
    let rings = cluster.hashrings.load();
    let Some(ring) = rings.ring_for_tenant(tenant) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_hashring",
            format!("no hashring matches tenant {tenant:?}"),
        );
    };
    let rf = cluster.replication_factor;
    let me = cluster
        .node_name
        .as_deref()
        .and_then(|n| ring.endpoint_index(n));
    let endpoints = ring.endpoints();
    // Decoded without the core's known series (a peer needs every key anyway).
    scratch.keys.compute(tenant, req, payload, None);
    let batch = scratch.keys.batch(req, payload);

    cs.replicas.clear();
    cs.frames.clear();
    cs.frames.resize_with(endpoints.len(), || None);
    let local = &mut scratch.local;
    local.clear();
    // How many series each R-entry group of `cs.replicas` stands for.
    let weight;
    let forward_all = v1_body && rf >= endpoints.len();
    if forward_all {
        // Every node holds every series: each peer gets the request exactly as it came
        // (smallest on the wire, nothing to encode), and one replica set covers all series.
        weight = batch.len();
        cs.replicas.extend(0..endpoints.len() as u16);
        for (i, f) in cs.frames.iter_mut().enumerate() {
            if Some(i) == me {
                local.extend(0..batch.len() as u32);
                continue;
            }
            let mut buf = Vec::with_capacity(snappy.len() + 32);
            let id = peers.next_id();
            encode_forward(&mut buf, id, tenant, snappy);
            *f = Some((buf, None, id));
        }
    } else {
        weight = 1;
        for i in 0..batch.len() {
            if let Err(e) = ring.replicas(batch.hash(i), rf, &mut cs.one) {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no_hashring",
                    e.to_string(),
                );
            }
            for &r in &cs.one {
                cs.replicas.push(r as u16);
                if Some(r) == me {
                    local.push(i as u32);
                    continue;
                }
                let (buf, enc, _) = cs.frames[r].get_or_insert_with(|| {
                    let mut buf = Vec::new();
                    let id = peers.next_id();
                    let enc = WriteEncoder::begin(&mut buf, id, tenant);
                    (buf, Some(enc), id)
                });
                if let Some(enc) = enc {
                    let key = batch.key(i, &mut scratch.key);
                    enc.push(buf, key, req.series_samples(&req.series[i]));
                }
            }
        }
    }
    // Endpoints per group of `cs.replicas`.
    let group = if forward_all { endpoints.len() } else { rf };

    let mut answers = vec![Answer::Pending; endpoints.len()];
    let local_share = std::mem::take(local);
    let mut calls = FuturesUnordered::new();
    let mut sent_bytes = 0u64;
    let mut sent_samples = 0u64;
    for (r, f) in cs.frames.iter_mut().enumerate() {
        let Some((mut buf, enc, id)) = f.take() else {
            continue;
        };
        match enc {
            Some(enc) => {
                sent_samples += enc.samples() as u64;
                enc.finish(&mut buf);
            }
            None => sent_samples += req.samples.len() as u64,
        }
        sent_bytes += buf.len() as u64;
        let addr = endpoints[r].address.as_str();
        calls.push(async move { (r, peers.call(addr, id, buf).await) });
    }
    st.ctx
        .shard
        .metrics
        .count_rpc_sent(sent_bytes, sent_samples);

    let mut local_done = local_share.is_empty();
    if let Some(me) = me {
        if local_done {
            // This node holds no replica of these series; it is not asked.
            answers[me] = Answer::Failed("not a replica".into());
        } else if let Err(msg) = crate::limits::check_head_series(st, tenant) {
            // This node's own share meets the tenant's limit like a peer's would.
            answers[me] = Answer::Limited(msg);
            local_done = true;
        }
    }
    let mut local_fut = std::pin::pin!(async {
        let (mut route, mut key) = (Vec::new(), Vec::new());
        let out = ingest_batch(
            &st.ctx,
            tenant,
            &batch,
            Some(&local_share),
            &mut route,
            &mut key,
        )
        .await;
        (out, local_share)
    });
    let q = cluster.quorum();
    loop {
        if local_done {
            if let Some(decided) = decide(&answers, &cs.replicas, group, weight, q) {
                return decided;
            }
        }
        let next = if local_done {
            futures_lite::future::or(async { calls.next().await.map(Ok) }, async {
                std::future::pending().await
            })
            .await
        } else {
            futures_lite::future::or(
                async {
                    let r = (&mut local_fut).await;
                    Some(Err(r))
                },
                async {
                    match calls.next().await {
                        Some(c) => Some(Ok(c)),
                        None => std::future::pending().await,
                    }
                },
            )
            .await
        };
        match next {
            Some(Ok((r, reply))) => {
                answers[r] = answer_of_reply(&endpoints[r].address, reply);
                if matches!(answers[r], Answer::Failed(_)) {
                    st.ctx.shard.metrics.count_rpc_failed(1);
                }
            }
            Some(Err((out, share))) => {
                local_done = true;
                *local = share;
                if let Some(me) = me {
                    answers[me] = answer_of_local(out);
                }
            }
            // Every call answered and still undecided cannot happen (decide sees no
            // pending answer); keep the compiler and a future bug honest.
            None => {
                return decide(&answers, &cs.replicas, group, weight, q).unwrap_or((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "quorum",
                    "replication undecided".into(),
                ))
            }
        }
    }
}

fn answer_of_local(out: ApplyOutcome) -> Answer {
    let verdict = Verdict::of(&out);
    match &verdict {
        Verdict::NotDurable(f) => Answer::Failed(format!("local write: {f}")),
        Verdict::SomeRefused { count, .. } => Answer::Durable(Some(format!(
            "{count} samples rejected ({})",
            verdict.first_refusal()
        ))),
        Verdict::Stored => Answer::Durable(None),
    }
}

fn answer_of_reply(addr: &str, reply: Result<Reply, String>) -> Answer {
    match reply {
        Err(e) => Answer::Failed(e),
        Ok(r) => match r.status {
            Status::Ok => Answer::Durable(None),
            Status::Conflict => Answer::Durable(Some(format!(
                "{addr}: {} samples rejected ({})",
                r.rejected, r.message
            ))),
            Status::Limited => Answer::Limited(format!("{addr}: {}", r.message)),
            Status::BadRequest | Status::Unavailable => {
                Answer::Failed(format!("{addr}: {}", r.message))
            }
        },
    }
}

/// The answer, once it is certain: every series durable on `q` replicas, or some series
/// unable to get there. `replicas` holds one group of `rf` endpoints per `weight` series.
fn decide(
    answers: &[Answer],
    replicas: &[u16],
    rf: usize,
    weight: usize,
    q: usize,
) -> Option<Outcome> {
    let mut short = 0usize;
    let mut undecided = false;
    let n = replicas.len() / rf.max(1) * weight;
    for reps in replicas.chunks(rf.max(1)) {
        let mut durable = 0;
        let mut pending = 0;
        for &r in reps {
            match answers[r as usize] {
                Answer::Durable(_) => durable += 1,
                Answer::Pending => pending += 1,
                _ => {}
            }
        }
        if durable >= q {
            continue;
        }
        if durable + pending >= q {
            undecided = true;
        } else {
            short += weight;
        }
    }
    if short > 0 {
        let limited: Vec<&str> = answers
            .iter()
            .filter_map(|a| match a {
                Answer::Limited(m) => Some(m.as_str()),
                _ => None,
            })
            .collect();
        if !limited.is_empty() {
            return Some((
                StatusCode::TOO_MANY_REQUESTS,
                "limit",
                format!("tenant over its limit: {}", limited.join("; ")),
            ));
        }
        let failed: Vec<&str> = answers
            .iter()
            .filter_map(|a| match a {
                Answer::Failed(m) if m != "not a replica" => Some(m.as_str()),
                _ => None,
            })
            .collect();
        return Some((
            StatusCode::SERVICE_UNAVAILABLE,
            "quorum",
            format!(
                "write quorum ({q} of {rf} replicas) not reached for {short} of {n} series; failing: {}",
                failed.join("; ")
            ),
        ));
    }
    if undecided {
        return None;
    }
    let conflicts: Vec<&str> = answers
        .iter()
        .filter_map(|a| match a {
            Answer::Durable(Some(m)) => Some(m.as_str()),
            _ => None,
        })
        .collect();
    if conflicts.is_empty() {
        Some((StatusCode::NO_CONTENT, "", String::new()))
    } else {
        Some((
            StatusCode::CONFLICT,
            "out_of_order",
            format!(
                "some samples rejected, the others stored: {}",
                conflicts.join("; ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Answer {
        Answer::Durable(None)
    }

    #[test]
    fn quorum_decisions() {
        // Two series, R=3, replicas {0,1,2} and {1,2,3}.
        let reps = [0u16, 1, 2, 1, 2, 3];
        let p = Answer::Pending;
        let f = || Answer::Failed("down".into());
        assert!(decide(
            &[p.clone(), p.clone(), p.clone(), p.clone()],
            &reps,
            3,
            1,
            2
        )
        .is_none());
        // Endpoints 1 and 2 durable: both series have quorum, whatever 0 and 3 do.
        let ok = decide(&[p.clone(), d(), d(), p.clone()], &reps, 3, 1, 2).unwrap();
        assert_eq!(ok.0, StatusCode::NO_CONTENT);
        // 1 and 2 failed: neither series can reach 2.
        let no = decide(&[d(), f(), f(), p.clone()], &reps, 3, 1, 2).unwrap();
        assert_eq!(no.0, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            no.2.contains("2 of 2 series") && no.2.contains("down"),
            "{}",
            no.2
        );
        // 0 durable, 1 failed, 2 pending: undecided.
        assert!(decide(&[d(), f(), p.clone(), d()], &reps, 3, 1, 2).is_none());
        let c = decide(
            &[d(), Answer::Durable(Some("x".into())), d(), d()],
            &reps,
            3,
            1,
            2,
        )
        .unwrap();
        assert_eq!(c.0, StatusCode::CONFLICT);
        let l = decide(
            &[Answer::Limited("over".into()), p.clone(), p.clone()],
            &[0],
            1,
            1,
            1,
        )
        .unwrap();
        assert_eq!(l.0, StatusCode::TOO_MANY_REQUESTS);
    }
}
