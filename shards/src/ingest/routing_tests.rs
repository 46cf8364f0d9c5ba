//! Routing within the node, on real executors: a series the decoder recognised by a
//! fingerprint another label set shares is routed to the other set's core, refused there,
//! and its fingerprint poisoned on the receiving core, so the retry stores it as itself.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_core::{core_for_hash, series_hash, KnownSeries, WriteRequestRef};
use sluice_objstore::ShipperOptions;
use sluice_storage::block::chunks::DEFAULT_SEGMENT_SIZE;
use sluice_storage::wal::FsyncPolicy;

use super::{ingest, IngestScratch};
use crate::blocks::shipping::Shippers;
use crate::blocks::LocalBlocks;
use crate::config::ShardConfig;
use crate::cut::CutConfig;
use crate::mesh::{Ctx, Global};
use crate::outcome::ApplyFailure;
use crate::runtime::{run, RuntimeConfig};

/// A remote-write 1.0 request of one series `up{i="<i>"}` with one sample at `t`.
fn request(i: &str, t: u8) -> Vec<u8> {
    super::tests::request_at(&[&[("__name__", "up"), ("i", i)]], t)
}

/// Runs `test` on core 0 of a two-core runtime, then stops it.
fn on_two_cores(
    test: impl FnOnce(Ctx) -> futures::future::LocalBoxFuture<'static, ()> + Send + Clone + 'static,
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let global = Arc::new(Global::new(
        2,
        LocalBlocks::open(&data),
        Shippers::new(data.clone(), None, ShipperOptions::default()),
    ));
    let cfg = RuntimeConfig {
        shard: ShardConfig {
            data_dir: data,
            cores: 2,
            fsync: FsyncPolicy::Never,
            tenant_label: "tenant_id".into(),
            block_range_ms: crate::head::DEFAULT_BLOCK_RANGE_MS,
            too_far_in_future_ms: None,
            external_labels: Vec::new(),
            active_series: Default::default(),
        },
        cpus: Vec::new(),
        io_memory: 1 << 20,
        channel_depth: 64,
        cut: CutConfig {
            block_range_ms: crate::head::DEFAULT_BLOCK_RANGE_MS,
            check_interval: Duration::from_secs(3600),
            external_labels: BTreeMap::new(),
            segment_size: DEFAULT_SEGMENT_SIZE,
            pause_before_seal: None,
        },
    };
    let failed = Arc::new(Mutex::new(None::<String>));
    let failed_in = failed.clone();
    let result = run(cfg, global.clone(), move |ctx: Ctx| {
        let test = test.clone();
        let failed = failed_in.clone();
        async move {
            ctx.global.ready_cores.fetch_add(1, Ordering::AcqRel);
            if ctx.core() == 0 {
                while !ctx.global.cores_serving() {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                let done = crate::panics::CatchPanic::new(test(ctx.clone())).await;
                if let Err(p) = done {
                    *failed.lock().unwrap() = Some(p.0);
                }
                ctx.global.shutdown.store(true, Ordering::Release);
            }
            while !ctx.global.shutting_down() {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    result.unwrap();
    let msg = failed.lock().unwrap().take();
    if let Some(msg) = msg {
        panic!("{msg}");
    }
}

#[test]
fn a_fingerprint_shared_with_a_series_of_another_core_is_poisoned_and_the_retry_stores() {
    on_two_cores(|ctx| {
        Box::pin(async move {
            // Series `a` lives on core 1; `b` is what the request really carries.
            let a = (0..)
                .map(|n: u32| n.to_string())
                .find(|i| {
                    let hash = series_hash("t", [("__name__", "up"), ("i", i.as_str())]);
                    core_for_hash(hash, 2) == 1
                })
                .unwrap();
            let (buf_a, buf_b) = (request(&a, 1), request("b", 2));
            let mut req = WriteRequestRef::default();
            let mut scratch = IngestScratch::default();
            let seed = ctx.shard.known.borrow().tenant_seed(b"t");
            // Learn `a`'s identity and `b`'s fingerprint, then plant the collision.
            req.decode_known(&buf_a, &ctx.shard.known.borrow(), seed)
                .unwrap();
            let out = ingest(&ctx, "t", &req, &buf_a, &mut scratch).await;
            assert!(out.failure.is_none() && out.appended == 1, "{out:?}");
            let a_id = req.known(0).or_else(|| {
                req.decode_known(&buf_a, &ctx.shard.known.borrow(), seed)
                    .unwrap();
                req.known(0)
            });
            let a_id = a_id.expect("a is known after its first write");
            req.decode_known(&buf_b, &KnownSeries::new(), seed).unwrap();
            let fp_b = req.fingerprint(0).expect("b has a fingerprint");
            ctx.shard.known.borrow_mut().insert(fp_b, a_id);

            // `b` arrives, is taken for `a`, routed to core 1 and refused there.
            req.decode_known(&buf_b, &ctx.shard.known.borrow(), seed)
                .unwrap();
            assert_eq!(req.known(0), Some(a_id));
            let out = ingest(&ctx, "t", &req, &buf_b, &mut scratch).await;
            assert_eq!(out.appended, 0);
            assert_eq!(out.failure, Some(ApplyFailure::Misidentified { series: 1 }));
            assert_eq!(ctx.shard.known.borrow().get(fp_b), None, "poisoned");

            // The retry decodes `b` in full and stores it as itself; `a` kept only its own.
            req.decode_known(&buf_b, &ctx.shard.known.borrow(), seed)
                .unwrap();
            assert_eq!(req.known(0), None);
            let out = ingest(&ctx, "t", &req, &buf_b, &mut scratch).await;
            assert!(out.failure.is_none() && out.appended == 1, "{out:?}");
            let series = ctx
                .on_all(|shard| {
                    Box::pin(async move {
                        shard
                            .tenant("t")
                            .map(|t| t.head.borrow().num_series())
                            .unwrap_or(0)
                    })
                })
                .await;
            let counts: Vec<usize> = series.into_iter().map(|r| r.unwrap()).collect();
            assert_eq!(counts.iter().sum::<usize>(), 2, "{counts:?}");
        })
    });
}
