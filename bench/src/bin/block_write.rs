//! `block_write`: how fast a TSDB block is persisted the way a block cut does it — each core
//! writes its share of the chunks to its own segment files with direct I/O on its own glommio
//! executor, then the index is built from every core's series and the block is sealed.
//!
//! The data is realistic (the flood's series, 15 s samples, XOR chunks of 120 samples) and
//! built in memory first, so the figures are the write path alone. Compare the chunk phase's
//! MB/s with the disk's own `dd if=/dev/zero of=F bs=1M count=2048 oflag=direct`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use sluice_bench::SeriesSet;
use sluice_storage::block::chunks::{SegmentEncoder, DEFAULT_SEGMENT_SIZE};
use sluice_storage::block::dma::DmaSegmentWriter;
use sluice_storage::block::index::ChunkMeta;
use sluice_storage::block::{begin_block, seal_block, BlockOptions, PartSeries};
use sluice_storage::xor::{XorChunk, ENCODING_XOR};

#[derive(Debug, Parser)]
#[command(about = "Measures block writes: per-core direct-I/O chunk segments, then the index")]
struct Args {
    /// Active series in the block.
    #[arg(long, default_value_t = 100_000)]
    series: usize,
    /// Samples per series (480 = a 2h block at a 15s scrape interval).
    #[arg(long, default_value_t = 480)]
    samples_per_series: usize,
    /// Writer cores (one glommio executor each, pinned to CPU k).
    #[arg(long, default_value_t = 2)]
    cores: usize,
    /// Where to write (a temporary directory inside it; removed afterwards).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

type Chunks = Vec<(i64, i64, Vec<u8>)>;
/// One core's share: series labels and their chunks, in label order.
type Part = Vec<(Vec<(String, String)>, Chunks)>;

fn main() -> Result<()> {
    let args = Args::parse();
    let set = SeriesSet::new(args.series, 42);
    let t0 = 1_760_000_000_000i64 / 7_200_000 * 7_200_000;
    let step = 15_000;
    let build = Instant::now();
    // Per core: (labels, chunks) in label order, as a core's cut plan hands them out.
    let mut parts: Vec<Part> = vec![Vec::new(); args.cores];
    for i in 0..args.series {
        let mut chunks = Vec::new();
        let mut c = XorChunk::new();
        let mut first = t0;
        for k in 0..args.samples_per_series {
            let t = t0 + k as i64 * step;
            if c.num_samples() == 120 {
                let last = c.last().map_or(t, |(t, _)| t);
                chunks.push((first, last, std::mem::take(&mut c).bytes().to_vec()));
                first = t;
            }
            c.append(t, set.value(i, t));
        }
        if let Some((last, _)) = c.last() {
            chunks.push((first, last, c.bytes().to_vec()));
        }
        let mut labels = set.labels(i).to_vec();
        labels.sort();
        parts[i % args.cores].push((labels, chunks));
    }
    for p in &mut parts {
        p.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let samples = (args.series * args.samples_per_series) as u64;
    eprintln!(
        "built {} series, {samples} samples in {:.1}s",
        args.series,
        build.elapsed().as_secs_f64()
    );

    let work = tempfile::tempdir_in(&args.dir).context("temporary directory")?;
    let blocks = work.path().join("blocks");
    let ulid = ulid::Ulid::new();
    let tmp_dir = begin_block(&blocks, ulid)?;
    let chunks_dir = tmp_dir.join("chunks");
    let mut first_files = Vec::new();
    let mut next = 0;
    for p in &parts {
        first_files.push(next);
        let lens = p
            .iter()
            .flat_map(|(_, cs)| cs.iter().map(|(_, _, d)| d.len()));
        next += SegmentEncoder::segments_needed(DEFAULT_SEGMENT_SIZE, lens)?;
    }

    let started = Instant::now();
    let mut handles = Vec::new();
    for (k, part) in parts.into_iter().enumerate() {
        let dir = chunks_dir.clone();
        let first = first_files[k];
        let h = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(k))
            .io_memory(1 << 20)
            .spawn(move || async move { write_part(dir, first, part).await })
            .map_err(|e| anyhow::anyhow!("starting a writer executor: {e}"))?;
        handles.push(h);
    }
    let mut series = Vec::new();
    let mut files = Vec::new();
    for h in handles {
        let (s, f) = h
            .join()
            .map_err(|e| anyhow::anyhow!("writer executor: {e}"))??;
        series.extend(s);
        files.extend(f);
    }
    let chunk_secs = started.elapsed().as_secs_f64();
    let chunk_bytes: u64 = files.iter().map(|(_, s)| s).sum();

    let seal_started = Instant::now();
    let mut opts = BlockOptions::new([("tenant_id".to_string(), "bench".to_string())].into());
    opts.ulid = Some(ulid);
    opts.time_range = Some((t0, t0 + 7_200_000));
    let written = seal_block(&blocks, &tmp_dir, series, &files, &opts)?;
    let seal_secs = seal_started.elapsed().as_secs_f64();
    let total_secs = started.elapsed().as_secs_f64();
    let index_bytes = std::fs::metadata(written.path.join("index"))?.len();
    let mb = |b: u64| b as f64 / 1e6;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "series": args.series,
                "samples": samples,
                "cores": args.cores,
                "chunk_bytes": chunk_bytes,
                "index_bytes": index_bytes,
                "chunk_write_s": chunk_secs,
                "chunk_write_mb_per_s": mb(chunk_bytes) / chunk_secs,
                "seal_s": seal_secs,
                "total_s": total_secs,
                "samples_per_s": samples as f64 / total_secs,
                "bytes_per_sample": (chunk_bytes + index_bytes) as f64 / samples as f64,
            })
        );
    } else {
        println!(
            "chunks: {:.1} MB in {chunk_secs:.3}s = {:.0} MB/s ({} cores, direct I/O)",
            mb(chunk_bytes),
            mb(chunk_bytes) / chunk_secs,
            args.cores
        );
        println!(
            "index + seal: {:.1} MB index in {seal_secs:.3}s",
            mb(index_bytes)
        );
        println!(
            "block: {samples} samples in {total_secs:.3}s = {:.2}M samples/s, {:.2} bytes/sample",
            samples as f64 / total_secs / 1e6,
            (chunk_bytes + index_bytes) as f64 / samples as f64
        );
    }
    Ok(())
}

async fn write_part(
    dir: PathBuf,
    first_file: u32,
    part: Part,
) -> Result<(Vec<PartSeries>, Vec<(String, u64)>)> {
    let bytes: u64 = part
        .iter()
        .flat_map(|(_, cs)| cs.iter())
        .map(|(_, _, d)| SegmentEncoder::encoded_len(d.len()))
        .sum();
    let mut w =
        DmaSegmentWriter::new(&dir, first_file, DEFAULT_SEGMENT_SIZE)?.with_size_hint(bytes);
    let mut out = Vec::with_capacity(part.len());
    for (labels, chunks) in part {
        let mut metas = Vec::with_capacity(chunks.len());
        let mut n = 0;
        for (min_time, max_time, data) in &chunks {
            n += u64::from(u16::from_be_bytes([data[0], data[1]]));
            metas.push(ChunkMeta {
                min_time: *min_time,
                max_time: *max_time,
                chunk_ref: w.append(ENCODING_XOR, data).await?,
            });
        }
        out.push(PartSeries {
            labels,
            chunks: metas,
            num_samples: n,
        });
    }
    Ok((out, w.finish().await?))
}
