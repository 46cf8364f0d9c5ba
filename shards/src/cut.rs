//! Cutting the head into blocks: when a tenant's head spans more than 1.5 block ranges (as
//! in Prometheus), its oldest range is persisted as a TSDB block, dropped from memory, and
//! the WAL segments it made obsolete are replaced by a checkpoint.
//!
//! Owns the cut protocol. Core 0 coordinates; every core writes its own part:
//! 1. plan (all cores): close open chunks before the boundary, refuse older samples from now
//!    on, count the segment files the part will fill;
//! 2. write (all cores, concurrently): the part's chunks go to its own segment files through
//!    direct I/O, numbered after the previous cores' files;
//! 3. seal (a helper thread, off the cores): the cores' series lists are merged into the
//!    index, `meta.json` is written last, the block is renamed into place;
//! 4. the block joins the queryable set; then every core drops what it persisted and
//!    checkpoints its WAL; the tenant's shipper is woken.
//!
//! A crash before step 3's rename leaves only a `*.tmp-for-creation` directory (removed at
//! start) and the WAL intact, so the block is cut again. Must not know block or WAL formats
//! (`sluice_storage` does) nor HTTP.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sluice_storage::block::chunks::SegmentEncoder;
use sluice_storage::block::dma::DmaSegmentWriter;
use sluice_storage::block::index::ChunkMeta;
use sluice_storage::block::reader::BlockReader;
use sluice_storage::block::{begin_block, seal_block, BlockOptions, PartSeries};
use sluice_storage::wal::CheckpointBuilder;
use sluice_storage::xor::ENCODING_XOR;

use crate::blocks::blocks_dir;
use crate::mesh::Ctx;
use crate::shard::Shard;

/// Head time range of one tenant on one core.
type TenantRange = (String, (i64, i64));

/// What one core wrote of a block.
pub struct PartOutput {
    pub series: Vec<PartSeries>,
    pub files: Vec<(String, u64)>,
}

/// The end of the aligned block range holding `t` (`None` past the end of time).
pub fn range_end(t: i64, range: i64) -> Option<i64> {
    t.div_euclid(range).checked_add(1)?.checked_mul(range)
}

impl Shard {
    /// Time range of every tenant's head on this core.
    pub fn head_ranges(&self) -> Vec<TenantRange> {
        self.tenants()
            .iter()
            .filter_map(|t| Some((t.name.clone(), t.head.borrow().time_range()?)))
            .collect()
    }

    /// Step 1: fixes which series this core persists for `[.., before)` and returns how many
    /// segment files they fill.
    pub fn plan_cut(&self, tenant: &str, before: i64, segment_size: u64) -> Result<u32, String> {
        let t = self.tenant(tenant).map_err(|e| e.to_string())?;
        let mut head = t.head.borrow_mut();
        let ids = head.prepare_cut(before);
        let lens = ids
            .iter()
            .flat_map(|id| head.chunks_before(*id, before).map(|c| c.data.len()));
        let n = SegmentEncoder::segments_needed(segment_size, lens).map_err(|e| e.to_string())?;
        // Everything logged so far can become obsolete at the next cut.
        t.wal.roll();
        *t.cut_plan.borrow_mut() = Some(ids);
        Ok(n)
    }

    /// Step 2: writes the planned series' chunks into `chunks_dir`, files numbered from
    /// `first_file`.
    pub async fn write_cut_part(
        &self,
        tenant: &str,
        before: i64,
        chunks_dir: PathBuf,
        first_file: u32,
        segment_size: u64,
    ) -> Result<PartOutput, String> {
        let t = self.tenant(tenant).map_err(|e| e.to_string())?;
        let ids = t.cut_plan.borrow_mut().take().unwrap_or_default();
        let bytes_planned: u64 = {
            let head = t.head.borrow();
            ids.iter()
                .flat_map(|id| head.chunks_before(*id, before))
                .map(|c| SegmentEncoder::encoded_len(c.data.len()))
                .sum()
        };
        let mut w = DmaSegmentWriter::new(&chunks_dir, first_file, segment_size)
            .map_err(|e| e.to_string())?
            .with_size_hint(bytes_planned);
        let mut series = Vec::with_capacity(ids.len());
        let mut bytes: Vec<u8> = Vec::new();
        let mut spans: Vec<(i64, i64, usize, usize)> = Vec::new();
        for id in ids {
            // Copy out before awaiting: appends go on while the part is written (they only
            // ever add chunks after `before`, which this part does not take).
            let labels: Vec<(String, String)> = {
                let head = t.head.borrow();
                bytes.clear();
                spans.clear();
                for c in head.chunks_before(id, before) {
                    spans.push((c.min_t, c.max_t, bytes.len(), c.data.len()));
                    bytes.extend_from_slice(c.data);
                }
                head.labels(id)
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect()
            };
            let mut chunks = Vec::with_capacity(spans.len());
            let mut num_samples = 0u64;
            for &(min_time, max_time, at, len) in &spans {
                let data = &bytes[at..at + len];
                num_samples += u64::from(u16::from_be_bytes([data[0], data[1]]));
                let chunk_ref = w
                    .append(ENCODING_XOR, data)
                    .await
                    .map_err(|e| e.to_string())?;
                chunks.push(ChunkMeta {
                    min_time,
                    max_time,
                    chunk_ref,
                });
            }
            series.push(PartSeries {
                labels,
                chunks,
                num_samples,
            });
        }
        // A chain cut short by a damaged spill page would leave its older chunks out of the
        // block, and the WAL behind them would then go: refuse the cut instead, so that
        // the WAL keeps everything until a restart rebuilds the head from it.
        if t.head.borrow().corrupt_chunk_reads() > 0 {
            return Err(format!(
                "{} reads of spilled head chunks failed their checksum on core {}; the WAL \
                 still holds the samples: restart to rebuild the head from it",
                t.head.borrow().corrupt_chunk_reads(),
                self.id
            ));
        }
        let files = w.finish().await.map_err(|e| e.to_string())?;
        Ok(PartOutput { series, files })
    }

    /// Step 4: drops what the block now holds and replaces obsolete WAL segments by a
    /// checkpoint. Returns how many series were garbage-collected.
    pub async fn finish_cut(&self, tenant: &str, before: i64) -> Result<usize, String> {
        let t = self.tenant(tenant).map_err(|e| e.to_string())?;
        let collected = t.head.borrow_mut().truncate(before);
        // Series that stopped coming must not hold memory in the decoder's table either;
        // the live ones are learnt again within a scrape.
        self.known.borrow_mut().clear();
        t.active
            .fetch_sub(collected as u64, std::sync::atomic::Ordering::Relaxed);
        let obsolete = t.wal.obsolete_before(before).map_err(|e| e.to_string())?;
        if let Some(n) = obsolete {
            let bytes = {
                let head = t.head.borrow();
                // The limit, not the highest live id: collected ids stay taken.
                let mut cp = CheckpointBuilder::new(before, head.id_limit());
                for id in (0..head.id_limit()).filter(|id| head.is_live(*id)) {
                    cp.add_series(id, head.labels(id));
                }
                cp.finish()
            };
            t.wal
                .checkpoint(n, &bytes)
                .await
                .map_err(|e| e.to_string())?;
            self.metrics
                .wal_checkpoints
                .set(self.metrics.wal_checkpoints.get() + 1);
        }
        Ok(collected)
    }

    /// Forgets a plan whose cut failed.
    pub fn abort_cut(&self, tenant: &str) {
        if let Ok(t) = self.tenant(tenant) {
            t.cut_plan.borrow_mut().take();
        }
    }
}

/// How the coordinator cuts.
#[derive(Debug, Clone)]
pub struct CutConfig {
    pub block_range_ms: i64,
    /// How often heads are checked.
    pub check_interval: Duration,
    /// Thanos external labels every block carries (the tenant label is added).
    pub external_labels: BTreeMap<String, String>,
    pub segment_size: u64,
    /// Test hook: wait this long between writing the chunks and sealing the block, so a test
    /// can kill the process in the middle of a block write.
    pub pause_before_seal: Option<Duration>,
}

/// Core 0's loop: checks the heads and cuts blocks until shutdown.
pub async fn run_cutter(ctx: Ctx, cfg: CutConfig) {
    let range = cfg.block_range_ms;
    let mut failures = 0u32;
    loop {
        let wait = if failures == 0 {
            cfg.check_interval
        } else {
            // Back off on repeated failures (a full disk should not be hammered).
            cfg.check_interval * 2u32.saturating_pow(failures.min(6))
        };
        glommio::timer::sleep(wait).await;
        if ctx.global.shutting_down() {
            return;
        }
        ctx.global.blocks.refresh();
        // Cut until every head spans at most 1.5 ranges (several blocks after a long gap),
        // asking the heads for their oldest sample after each cut so empty ranges are skipped.
        while !ctx.global.shutting_down() {
            let Ok(ranges) = tenant_ranges(&ctx).await else {
                break;
            };
            let due = ranges.into_iter().find_map(|(tenant, (min, max))| {
                let before = range_end(min, range)?;
                (max.saturating_sub(min) > range / 2 * 3).then_some((tenant, min, before))
            });
            let Some((tenant, min, before)) = due else {
                break;
            };
            if let Err(e) = cut_block(&ctx, &cfg, &tenant, min, before).await {
                failures += 1;
                ctx.global
                    .block_cut_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(tenant, min, before, "block cut failed (retrying): {e}");
                break;
            }
            failures = 0;
        }
    }
}

/// Oldest and newest head sample per tenant over every core.
async fn tenant_ranges(ctx: &Ctx) -> Result<BTreeMap<String, (i64, i64)>, crate::Unreachable> {
    let per_core = ctx
        .on_all(|shard: Rc<Shard>| Box::pin(async move { shard.head_ranges() }))
        .await;
    let mut out: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in per_core {
        for (tenant, (min, max)) in r? {
            let e = out.entry(tenant).or_insert((min, max));
            e.0 = e.0.min(min);
            e.1 = e.1.max(max);
        }
    }
    Ok(out)
}

/// Persists `[min, before)` of `tenant` as one block (steps 1–4).
async fn cut_block(
    ctx: &Ctx,
    cfg: &CutConfig,
    tenant: &str,
    min: i64,
    before: i64,
) -> Result<(), String> {
    let started = Instant::now();
    let dir = blocks_dir(&ctx.shard.cfg.data_dir, tenant);
    let ulid = ulid::Ulid::new();
    let tmp_dir = begin_block(&dir, ulid).map_err(|e| e.to_string())?;
    let result = write_and_seal(ctx, cfg, tenant, (min, before), &dir, &tmp_dir, ulid).await;
    let block = match result {
        Ok(b) => b,
        Err(e) => {
            let name = tenant.to_string();
            ctx.on_all(move |s: Rc<Shard>| {
                let name = name.clone();
                Box::pin(async move { s.abort_cut(&name) })
            })
            .await;
            let _ = std::fs::remove_dir_all(&tmp_dir);
            return Err(e);
        }
    };
    let Some(block) = block else {
        // Nothing before the boundary after all (e.g. only empty series): just move on.
        let _ = std::fs::remove_dir_all(&tmp_dir);
        finish_everywhere(ctx, tenant, before).await?;
        return Ok(());
    };
    let meta = block.meta().clone();
    // Queryable before the head lets go of the same samples.
    ctx.global.blocks.add(tenant, block);
    ctx.global.blocks_written.fetch_add(1, Ordering::Relaxed);
    let collected = finish_everywhere(ctx, tenant, before).await?;
    ctx.global.shippers.notify(tenant);
    tracing::info!(
        tenant,
        block = %meta.ulid,
        min_time = meta.min_time,
        max_time = meta.max_time,
        series = meta.stats.num_series,
        samples = meta.stats.num_samples,
        collected_series = collected,
        took_ms = started.elapsed().as_millis() as u64,
        "cut block"
    );
    Ok(())
}

/// Steps 1–3; `Ok(None)` when no core had anything to persist.
async fn write_and_seal(
    ctx: &Ctx,
    cfg: &CutConfig,
    tenant: &str,
    (min, before): (i64, i64),
    dir: &std::path::Path,
    tmp_dir: &std::path::Path,
    ulid: ulid::Ulid,
) -> Result<Option<BlockReader>, String> {
    let seg = cfg.segment_size;
    let name = tenant.to_string();
    let counts = ctx
        .on_all(move |s: Rc<Shard>| {
            let name = name.clone();
            Box::pin(async move { s.plan_cut(&name, before, seg) })
        })
        .await;
    let mut first_files = Vec::with_capacity(counts.len());
    let mut next = 0u32;
    for c in counts {
        first_files.push(next);
        next += c.map_err(|e| e.to_string())??;
    }
    let chunks_dir = tmp_dir.join("chunks");
    let name = tenant.to_string();
    let parts = ctx
        .on_all(move |s: Rc<Shard>| {
            let (name, chunks_dir) = (name.clone(), chunks_dir.clone());
            let first = first_files[s.id];
            Box::pin(async move {
                s.write_cut_part(&name, before, chunks_dir, first, seg)
                    .await
            })
        })
        .await;
    let mut series = Vec::new();
    let mut files = Vec::new();
    for p in parts {
        let p = p.map_err(|e| e.to_string())??;
        series.extend(p.series);
        files.extend(p.files);
    }
    if series.is_empty() {
        return Ok(None);
    }
    if let Some(pause) = cfg.pause_before_seal {
        tracing::warn!(?pause, "pausing before sealing the block (test hook)");
        glommio::timer::sleep(pause).await;
    }
    let mut labels = cfg.external_labels.clone();
    labels.insert(ctx.shard.cfg.tenant_label.clone(), tenant.to_string());
    let mut opts = BlockOptions::new(labels);
    opts.ulid = Some(ulid);
    opts.time_range = Some((min, before));
    opts.segment_size = seg;
    let (dir, tmp_dir) = (dir.to_path_buf(), tmp_dir.to_path_buf());
    // Sorting and encoding the index is seconds of CPU for millions of series: keep it off
    // the cores, which go on serving writes meanwhile.
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::Builder::new()
        .name("sluice-seal".into())
        .spawn(move || {
            let r = seal_block(&dir, &tmp_dir, series, &files, &opts)
                .map_err(|e| e.to_string())
                .and_then(|w| {
                    BlockReader::open(&w.path).map_err(|e| {
                        // A block we cannot read back is not kept: the cut is retried and
                        // must not leave two blocks over one range.
                        let _ = std::fs::remove_dir_all(&w.path);
                        format!("reading back the sealed block: {e}")
                    })
                });
            let _ = tx.send(r);
        })
        .map_err(|e| format!("starting the block sealing thread: {e}"))?;
    let reader = rx
        .await
        .map_err(|_| "block sealing thread ended without an answer".to_string())??;
    Ok(Some(reader))
}

async fn finish_everywhere(ctx: &Ctx, tenant: &str, before: i64) -> Result<usize, String> {
    let name = tenant.to_string();
    let results = ctx
        .on_all(move |s: Rc<Shard>| {
            let name = name.clone();
            Box::pin(async move { s.finish_cut(&name, before).await })
        })
        .await;
    let mut collected = 0;
    for r in results {
        collected += r.map_err(|e| e.to_string())??;
    }
    Ok(collected)
}
