//! Running one PromQL query within its limits: a slot of `--query.max-concurrent` (waiting in
//! line until the query's deadline), a thread of its own for parsing, planning and evaluating,
//! and the reads on the cores in between, bounded by `--query.max-samples` as they load.
//!
//! The thread has a stack sized for the deepest query accepted
//! (`sluice_promql::depth::EVAL_STACK_BYTES`) and runs at a lower CPU priority than the
//! cores, so no query can overflow a core's stack or take a core's time from ingestion; a
//! panic on it fails the query (500) and nothing else. Owns that thread and its hand-offs;
//! must not read storage itself (the cores do, through `sluice-shards`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::channel::mpsc;
use futures::StreamExt;
use sluice_promql::{EngineOptions, Fetched, Labels, Query, QueryValue, SelectorRequest, Series};
use sluice_shards::{select_all, ReadLimits, Selection};

use super::gate::Slot;
use super::ApiError;
use super::Reader;
use crate::DebugPanic;

/// What a query asks for, besides its text.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Instant { t: i64 },
    Range { start: i64, end: i64, step: i64 },
}

/// From the query thread to the core.
enum FromThread {
    /// The reads evaluation needs (or why the query is refused).
    Plan(Result<Vec<SelectorRequest>, sluice_promql::Error>),
    /// The result.
    Done(Result<QueryValue, sluice_promql::Error>),
    Panicked(String),
}

/// A query answered, with the slot it holds until its answer is sent.
pub(super) struct Answered {
    pub value: QueryValue,
    /// Shared with the query thread: the slot is free once both are done.
    pub slot: Arc<Slot>,
}

/// Cancels the query when the core stops waiting for it (its client went away, or it
/// failed): the thread and the cores' reads stop at their next check instead of running to
/// the deadline.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `text` as `kind`: parses, reads and evaluates it within the read limits, for
/// `tenant`'s series only when given. `timeout` is the query's (already capped by
/// `--query.timeout`).
pub(super) async fn run(
    st: &Reader<'_>,
    text: &str,
    kind: Kind,
    timeout: std::time::Duration,
    tenant: Option<String>,
) -> Result<Answered, ApiError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let read = &st.cfg.read;
    // Refused before it costs a slot or a thread.
    sluice_promql::depth::check_text(text).map_err(bad_query)?;
    let slot = Arc::new(
        read.query_gate
            .enter(deadline)
            .await
            .map_err(|_| ApiError::Timeout("query timed out in query queue".into()))?,
    );
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel_on_drop = CancelOnDrop(cancelled.clone());
    let opts = EngineOptions {
        timeout,
        // 0: no limit, as for the reads.
        max_samples: match read.max_samples {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        },
        lookback_ms: read.lookback_delta_ms,
        started: Some(started),
        cancelled: Some(cancelled.clone()),
        ..EngineOptions::default()
    };
    let thread_slot = slot.clone();
    let hook = |site| read.debug_panic_at(text, site);
    let (to_core, mut from_thread) = mpsc::unbounded::<FromThread>();
    let (data_tx, data_rx) = std::sync::mpsc::channel::<Fetched>();
    let thread_text = text.to_string();
    let eval_panics = hook(DebugPanic::Eval);
    std::thread::Builder::new()
        .name("sluice-query".into())
        .stack_size(sluice_promql::depth::EVAL_STACK_BYTES)
        .spawn(move || {
            lower_priority();
            let send = |m| {
                let _ = to_core.unbounded_send(m);
            };
            let outcome = sluice_shards::panics::catch(|| {
                let parsed = match kind {
                    Kind::Instant { t } => Query::instant(&thread_text, t, opts),
                    Kind::Range { start, end, step } => {
                        Query::range(&thread_text, start, end, step, opts)
                    }
                };
                let q = match parsed {
                    Ok(q) => q,
                    Err(e) => return send(FromThread::Plan(Err(e))),
                };
                send(FromThread::Plan(q.requests()));
                // The core gave up (client gone, read failed): nothing to evaluate.
                let Ok(data) = data_rx.recv() else {
                    return;
                };
                if eval_panics {
                    panic!("test hook: panic while evaluating (--debug.panic-in=eval)");
                }
                let v = q.exec(&data);
                // The data and the tree go on this thread, not the core's.
                drop(data);
                send(FromThread::Done(v));
            });
            if let Err(p) = outcome {
                send(FromThread::Panicked(p.0));
            }
            // The query's memory is gone only now: the slot goes with it.
            drop(thread_slot);
        })
        .map_err(|e| ApiError::Internal(format!("cannot start a query thread: {e}")))?;

    let requests = match from_thread.next().await {
        Some(FromThread::Plan(Ok(r))) => r,
        Some(FromThread::Plan(Err(e))) => return Err(bad_query(e)),
        other => return Err(thread_failed(text, other)),
    };
    let mut limits = ReadLimits::with_cancel(read.max_samples, deadline, cancelled.clone());
    limits.debug_panic = hook(DebugPanic::Select);
    let data = fetch(st, &requests, tenant, &limits)
        .await
        .inspect_err(|e| {
            if let ApiError::Internal(msg) = e {
                tracing::error!(query = text, "query read failed: {msg}");
            }
        })?;
    let _ = data_tx.send(data);
    match from_thread.next().await {
        Some(FromThread::Done(Ok(value))) => Ok(Answered { value, slot }),
        Some(FromThread::Done(Err(e))) => Err(e.into()),
        other => Err(thread_failed(text, other)),
    }
}

/// The query thread ended without an answer: it panicked (logged with the query).
fn thread_failed(text: &str, msg: Option<FromThread>) -> ApiError {
    let why = match msg {
        Some(FromThread::Panicked(p)) => p,
        _ => "the query thread ended without an answer".to_string(),
    };
    tracing::error!(query = text, "query failed: {why}");
    ApiError::Internal(format!("internal error while evaluating the query: {why}"))
}

/// Reads every selector's series from the cores (heads and blocks), all sharing `limits`.
async fn fetch(
    st: &Reader<'_>,
    requests: &[SelectorRequest],
    tenant: Option<String>,
    limits: &ReadLimits,
) -> Result<Fetched, ApiError> {
    let mut fetches = Vec::with_capacity(requests.len());
    for r in requests {
        let sel = Selection {
            matcher_sets: vec![r.matchers.clone()],
            mint: r.mint,
            maxt: r.maxt,
            tenant: tenant.clone(),
        };
        let key = r.key;
        fetches.push(async move {
            select_all(st.ctx, sel, true, limits)
                .await
                .map(|s| (key, s))
        });
    }
    let results = futures::future::try_join_all(fetches).await?;
    let mut fetched = Fetched::new();
    for (key, series) in results {
        fetched.insert(
            key,
            series
                .into_iter()
                .map(|s| Series {
                    labels: Labels::new(s.labels),
                    samples: s.samples,
                })
                .collect(),
        );
    }
    Ok(fetched)
}

/// Queries yield the CPU to the cores: a heavy evaluation slows other queries, not ingestion.
fn lower_priority() {
    // SAFETY: plain syscalls on this thread's own id; failure only leaves the priority as is.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// A query the engine refuses, in the words of the API's `query` parameter.
pub(super) fn bad_query(e: sluice_promql::Error) -> ApiError {
    match e {
        sluice_promql::Error::BadData(m) => {
            ApiError::BadData(format!("invalid parameter \"query\": {m}"))
        }
        other => other.into(),
    }
}
