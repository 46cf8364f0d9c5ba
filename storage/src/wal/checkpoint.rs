//! WAL checkpoints: once a block holds every sample before some time `t`, the segments that
//! hold only such samples are replaced by `checkpoint.N` — a min-time record (`t`), a next-id
//! record (the head's id limit) and a series record for every series still in the head — so
//! the log stops growing while series ids stay valid for the segments that remain. The
//! next-id record keeps the ids of collected series taken: no record names them any more, but
//! a replay that handed them out again could not tell a jump past them from corruption.
//!
//! Owns the checkpoint's content and the crash-safe swap: written as `checkpoint.N.tmp`,
//! synced, renamed, directory synced, and only then are segments `≤ N` and older checkpoints
//! deleted (replay repeats that deletion if a crash interrupted it). Must not decide when to
//! checkpoint or which series are live: the caller (the shard) passes them.

use std::path::Path;

use futures::AsyncWriteExt;
use glommio::io::{DmaStreamWriterBuilder, OpenOptions};

use super::reader::remove_covered;
use super::record::{begin_record, end_record, put_min_time, put_next_id, put_series, RecordType};
use super::writer::{sync_dir, Wal};
use super::{checkpoint_name, WalError};

/// A series record is closed at this many series or this many bytes, whichever comes first:
/// far below the reader's payload limit however long the label sets are.
const SERIES_PER_RECORD: usize = 4096;
const BYTES_PER_RECORD: usize = 16 << 20;

/// The bytes of a checkpoint: framed records, built in memory by the caller's loop.
pub struct CheckpointBuilder {
    buf: Vec<u8>,
    record_start: Option<usize>,
    in_record: usize,
}

impl CheckpointBuilder {
    /// A checkpoint saying that samples before `min_t` are in blocks and that every series
    /// id below `next_series_id` has been handed out.
    pub fn new(min_t: i64, next_series_id: u32) -> Self {
        let mut buf = Vec::new();
        let start = begin_record(&mut buf, RecordType::MinTime);
        put_min_time(&mut buf, min_t);
        end_record(&mut buf, start);
        let start = begin_record(&mut buf, RecordType::NextId);
        put_next_id(&mut buf, next_series_id);
        end_record(&mut buf, start);
        CheckpointBuilder {
            buf,
            record_start: None,
            in_record: 0,
        }
    }

    /// Adds a live series with its id.
    pub fn add_series<I, N, V>(&mut self, id: u32, labels: I)
    where
        I: IntoIterator<Item = (N, V)>,
        I::IntoIter: Clone,
        N: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        if self.record_start.is_none() {
            self.record_start = Some(begin_record(&mut self.buf, RecordType::Series));
        }
        put_series(&mut self.buf, id, labels);
        self.in_record += 1;
        let bytes = self.record_start.map_or(0, |start| self.buf.len() - start);
        if self.in_record == SERIES_PER_RECORD || bytes >= BYTES_PER_RECORD {
            self.close_record();
        }
    }

    fn close_record(&mut self) {
        if let Some(start) = self.record_start.take() {
            end_record(&mut self.buf, start);
        }
        self.in_record = 0;
    }

    /// The finished bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.close_record();
        self.buf
    }
}

impl Wal {
    /// Writes `checkpoint.N` with `bytes` (from [`CheckpointBuilder`]) through direct I/O and
    /// then deletes the segments (≤ `n`) and older checkpoints it replaces. `n` must come from
    /// [`Wal::obsolete_before`].
    pub async fn checkpoint(&self, n: u32, bytes: &[u8]) -> Result<(), WalError> {
        let dir = self.dir().to_path_buf();
        let path = dir.join(checkpoint_name(n));
        let tmp = dir.join(format!("{}.tmp", checkpoint_name(n)));
        if tmp.exists() {
            std::fs::remove_file(&tmp)
                .map_err(|e| WalError::io("removing stale checkpoint", &tmp, e))?;
        }
        write_synced(&tmp, bytes).await?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| WalError::io("renaming WAL checkpoint", &tmp, e))?;
        sync_dir(&dir)?;
        remove_covered(&dir, n)?;
        self.forget_up_to(n);
        Ok(())
    }
}

async fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .dma_open(path)
        .await
        .map_err(|e| WalError::io("creating WAL checkpoint", path, e.into()))?;
    let mut w = DmaStreamWriterBuilder::new(file)
        .with_buffer_size(256 << 10)
        .with_write_behind(2)
        .build();
    let err = |e| WalError::io("writing WAL checkpoint", path, e);
    w.write_all(bytes).await.map_err(err)?;
    w.close().await.map_err(err)?;
    // Closing synced the data, then truncated the padded last page: sync the new size too.
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| WalError::io("syncing WAL checkpoint", path, e))
}

#[cfg(test)]
mod tests {
    use super::super::reader::{replay_dir, ReplayVisitor};
    use super::super::record::{put_sample, put_samples_base, SampleRecord};
    use super::super::{list_checkpoints, list_segments, FsyncPolicy};
    use super::*;

    #[derive(Default)]
    struct Seen {
        series: Vec<u32>,
        samples: Vec<(u32, i64)>,
        min_time: Option<i64>,
    }
    impl ReplayVisitor for Seen {
        fn series(&mut self, id: u32, _: &[(&str, &str)]) {
            self.series.push(id);
        }
        fn sample(&mut self, s: SampleRecord) {
            self.samples.push((s.id, s.t));
        }
        fn min_time(&mut self, t: i64) {
            self.min_time = Some(t);
        }
    }

    fn log(wal: &Wal, id: u32, t: i64) -> u64 {
        let lsn = wal.append(RecordType::Samples, |b| {
            put_samples_base(b, t);
            put_sample(b, t, id, t, 1.0);
        });
        wal.note_max_t(t);
        lsn
    }

    #[test]
    fn checkpoint_replaces_obsolete_segments_and_replays_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let wal = Wal::open(&path, 0, FsyncPolicy::Never).unwrap();
                wal.append(RecordType::Series, |b| {
                    put_series(b, 0, [("__name__", "a")]);
                    put_series(b, 1, [("__name__", "b")]);
                });
                log(&wal, 0, 1_000);
                log(&wal, 1, 2_000);
                wal.commit(wal.appended()).await.unwrap();
                wal.roll();
                log(&wal, 0, 12_000);
                wal.commit(wal.appended()).await.unwrap();
                wal.roll();
                log(&wal, 0, 13_000);
                let lsn = log(&wal, 0, 14_000);
                wal.commit(lsn).await.unwrap();
                // Segment 0 holds only samples before 10 000; segment 1 does not; 2 is live.
                assert_eq!(wal.obsolete_before(10_000).unwrap(), Some(0));
                assert_eq!(wal.obsolete_before(1_500).unwrap(), None);
                assert_eq!(wal.obsolete_before(20_000).unwrap(), Some(1));
                let mut cp = CheckpointBuilder::new(10_000, 2);
                cp.add_series(0, [("__name__", "a")]);
                wal.checkpoint(0, &cp.finish()).await.unwrap();
                assert_eq!(list_segments(&path).unwrap(), vec![1, 2]);
                assert_eq!(list_checkpoints(&path).unwrap(), vec![0]);
                assert_eq!(wal.obsolete_before(10_000).unwrap(), None);
                wal.sync().await.unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
        let mut seen = Seen::default();
        let stats = replay_dir(dir.path(), &mut seen, true).unwrap();
        assert_eq!(stats.checkpoint, Some(0));
        assert_eq!(seen.min_time, Some(10_000));
        assert_eq!(seen.series, vec![0], "only the live series come back");
        assert_eq!(
            stats.next_series_id, 2,
            "series 1 was collected, but its id stays taken"
        );
        assert_eq!(seen.samples, vec![(0, 12_000), (0, 13_000), (0, 14_000)]);
        assert_eq!(stats.segment_max_t, vec![(1, 12_000), (2, 14_000)]);

        // A crash between the checkpoint's rename and the deletions: replay finishes them.
        std::fs::write(dir.path().join(crate::wal::segment_name(0)), b"stale").unwrap();
        let mut again = Seen::default();
        replay_dir(dir.path(), &mut again, true).unwrap();
        assert_eq!(again.samples, seen.samples);
        assert_eq!(list_segments(dir.path()).unwrap(), vec![1, 2]);
    }

    /// Long label sets: records are closed by size as well as by count, so each stays far
    /// below the reader's payload limit and every series replays.
    #[test]
    fn checkpoint_records_are_split_by_size() {
        let long = "x".repeat(3 << 20);
        let mut cp = CheckpointBuilder::new(0, 12);
        for id in 0..12u32 {
            cp.add_series(id, [("__name__", "big"), ("v", long.as_str())]);
        }
        let bytes = cp.finish();
        let (mut pos, mut records) = (0, 0);
        while pos < bytes.len() {
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            assert!(len <= BYTES_PER_RECORD + (4 << 20), "record of {len} bytes");
            pos += crate::wal::record::HEADER_LEN + len;
            records += 1;
        }
        assert!(records >= 3, "{records} records");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(checkpoint_name(0)), &bytes).unwrap();
        let mut seen = Seen::default();
        replay_dir(dir.path(), &mut seen, false).unwrap();
        assert_eq!(seen.series, (0..12).collect::<Vec<_>>());
    }
}
