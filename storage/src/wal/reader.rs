//! WAL replay: reads a core's segments in order and hands records to a visitor.
//!
//! A checksum failure followed by good records is skipped, logged and counted; an unreadable
//! tail (a write torn by a crash) is cut off so the segment ends at its last good record.
//! Never panics on any bytes. Must not decide what a series id means: that is the visitor's.

use std::path::Path;

use super::record::{
    decode_min_time, decode_samples, decode_series, read_frame, Frame, RecordType, SampleRecord,
    PAGE,
};
use super::{checkpoint_name, list_checkpoints, list_segments, segment_name, WalError};

/// Receives replayed records in log order.
pub trait ReplayVisitor {
    /// A series record entry: the id the writing core gave it and its labels.
    fn series(&mut self, id: u32, labels: &[(&str, &str)]);
    /// One sample of a samples record.
    fn sample(&mut self, sample: SampleRecord);
    /// Samples older than `t` are persisted in a block (from a checkpoint): drop them.
    fn min_time(&mut self, _t: i64) {}
}

/// What a replay saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayStats {
    pub segments: u32,
    pub records: u64,
    pub series: u64,
    pub samples: u64,
    /// Records skipped because their checksum, type or payload was bad.
    pub corrupt_records: u64,
    /// Bytes cut off the end of segments because they held no readable record.
    pub truncated_bytes: u64,
    /// Highest segment index seen.
    pub last_segment: Option<u32>,
    /// The checkpoint replayed first (`checkpoint.N` covers segments up to N), if any.
    pub checkpoint: Option<u32>,
    /// Newest sample timestamp of each replayed segment that holds samples.
    pub segment_max_t: Vec<(u32, i64)>,
}

/// Replays every segment of `dir` into `visitor`. With `repair`, unreadable segment tails are
/// truncated on disk (so that later appends never follow garbage).
pub fn replay_dir(
    dir: &Path,
    visitor: &mut dyn ReplayVisitor,
    repair: bool,
) -> Result<ReplayStats, WalError> {
    let mut stats = ReplayStats::default();
    let checkpoint = list_checkpoints(dir)?.last().copied();
    if let Some(n) = checkpoint {
        let path = dir.join(checkpoint_name(n));
        let data =
            std::fs::read(&path).map_err(|e| WalError::io("reading WAL checkpoint", &path, e))?;
        let mut scratch = Vec::new();
        let mut max_t = i64::MIN;
        replay_segment(&data, &path, visitor, &mut scratch, &mut stats, &mut max_t);
        stats.checkpoint = Some(n);
        if repair {
            // A crash between writing a checkpoint and deleting what it replaced.
            remove_covered(dir, n)?;
        }
    }
    for index in list_segments(dir)? {
        if checkpoint.is_some_and(|n| index <= n) {
            continue;
        }
        let path = dir.join(segment_name(index));
        let data =
            std::fs::read(&path).map_err(|e| WalError::io("reading WAL segment", &path, e))?;
        stats.segments += 1;
        stats.last_segment = Some(index);
        let mut scratch = Vec::new();
        let mut max_t = i64::MIN;
        let good_end = replay_segment(&data, &path, visitor, &mut scratch, &mut stats, &mut max_t);
        if max_t != i64::MIN {
            stats.segment_max_t.push((index, max_t));
        }
        let written_end = data.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        if written_end > good_end {
            // Bytes after the last good record that are not padding: a torn write.
            let cut = (data.len() - good_end) as u64;
            tracing::warn!(
                segment = %path.display(),
                at = good_end,
                bytes = cut,
                "WAL segment ends in an unreadable tail (torn write); truncating it"
            );
            stats.truncated_bytes += cut;
            if repair {
                truncate(&path, good_end as u64)?;
            }
        }
    }
    Ok(stats)
}

/// Deletes the segments and older checkpoints that checkpoint `n` replaces.
pub fn remove_covered(dir: &Path, n: u32) -> Result<(), WalError> {
    for index in list_segments(dir)? {
        if index <= n {
            let p = dir.join(segment_name(index));
            std::fs::remove_file(&p).map_err(|e| WalError::io("deleting WAL segment", &p, e))?;
        }
    }
    for c in list_checkpoints(dir)? {
        if c < n {
            let p = dir.join(checkpoint_name(c));
            std::fs::remove_file(&p)
                .map_err(|e| WalError::io("deleting old WAL checkpoint", &p, e))?;
        }
    }
    Ok(())
}

/// Replays one segment's bytes; returns the end offset of its last good record.
fn replay_segment<'a>(
    data: &'a [u8],
    path: &Path,
    visitor: &mut dyn ReplayVisitor,
    scratch: &mut Vec<(&'a str, &'a str)>,
    stats: &mut ReplayStats,
    max_t: &mut i64,
) -> usize {
    let mut pos = 0;
    let mut good_end = 0;
    loop {
        match read_frame(data, pos) {
            Frame::End => match padding_end(data, pos) {
                Some(next) => pos = next,
                None => return good_end,
            },
            Frame::Corrupt { .. } if padding_end(data, pos).is_some() => {
                // Zeros up to a page end whose header ran into the next page's record.
                pos = padding_end(data, pos).expect("just checked");
            }
            Frame::Record(ty, payload) => {
                stats.records += 1;
                let res = match ty {
                    RecordType::Series => decode_series(payload, scratch, |id, labels| {
                        stats.series += 1;
                        visitor.series(id, labels);
                    }),
                    RecordType::Samples => decode_samples(payload, |s| {
                        stats.samples += 1;
                        *max_t = (*max_t).max(s.t);
                        visitor.sample(s);
                    }),
                    RecordType::MinTime => decode_min_time(payload).map(|t| visitor.min_time(t)),
                };
                if let Err(e) = res {
                    stats.corrupt_records += 1;
                    tracing::error!(segment = %path.display(), offset = pos, "skipping WAL record: {e}");
                }
                pos += super::record::HEADER_LEN + payload.len();
                good_end = pos;
            }
            Frame::Corrupt { reason, skip } => {
                // Only a corrupt record followed by a good one counts as skipped; one at the end
                // is a torn tail and is reported by the caller as truncated bytes.
                // A length field that cannot be trusted: look for the next frame whose checksum
                // holds (a false match needs a CRC32C collision).
                let next = match skip {
                    Some(next) if follows_good_record(data, next) => Some(next),
                    _ => (pos + 1..data.len()).find(|p| follows_good_record(data, *p)),
                };
                match next {
                    Some(next) => {
                        stats.corrupt_records += 1;
                        tracing::error!(
                            segment = %path.display(),
                            offset = pos,
                            "skipping corrupt WAL record: {reason}"
                        );
                        pos = next;
                    }
                    _ => return good_end,
                }
            }
        }
    }
}

/// Where the next record starts if `pos` is in the zeros that pad a page whose last write
/// was followed by one on a fresh page: the next page, when it starts with a good record.
fn padding_end(data: &[u8], pos: usize) -> Option<usize> {
    let next = pos.next_multiple_of(PAGE);
    if next == pos || next >= data.len() || data[pos..next].iter().any(|b| *b != 0) {
        return None;
    }
    follows_good_record(data, next).then_some(next)
}

fn follows_good_record(data: &[u8], pos: usize) -> bool {
    matches!(read_frame(data, pos), Frame::Record(..))
}

fn truncate(path: &Path, len: u64) -> Result<(), WalError> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| WalError::io("opening WAL segment to repair", path, e))?;
    f.set_len(len)
        .map_err(|e| WalError::io("truncating WAL segment", path, e))?;
    f.sync_all()
        .map_err(|e| WalError::io("syncing repaired WAL segment", path, e))
}

#[cfg(test)]
mod tests {
    use super::super::record::*;
    use super::*;

    #[derive(Default)]
    struct Collect {
        series: Vec<(u32, Vec<(String, String)>)>,
        samples: Vec<SampleRecord>,
    }

    impl ReplayVisitor for Collect {
        fn series(&mut self, id: u32, labels: &[(&str, &str)]) {
            let l = labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            self.series.push((id, l));
        }
        fn sample(&mut self, s: SampleRecord) {
            self.samples.push(s);
        }
    }

    fn segment(n_samples: usize) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        let s = begin_record(&mut buf, RecordType::Series);
        put_series(&mut buf, 0, [("__name__", "up")]);
        end_record(&mut buf, s);
        ends.push(buf.len());
        for i in 0..n_samples {
            let s = begin_record(&mut buf, RecordType::Samples);
            put_samples_base(&mut buf, 0);
            put_sample(&mut buf, 0, 0, i as i64 * 1000, i as f64);
            end_record(&mut buf, s);
            ends.push(buf.len());
        }
        (buf, ends)
    }

    #[test]
    fn replays_padded_segment_and_truncates_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, ends) = segment(10);
        // Torn: cut in the middle of the last record, then zero padding as a DMA write leaves.
        let cut = ends[9] + 5;
        let mut torn = seg[..cut].to_vec();
        torn.extend([0u8; 4096]);
        std::fs::write(dir.path().join("00000000"), &torn).unwrap();
        let mut c = Collect::default();
        let stats = replay_dir(dir.path(), &mut c, true).unwrap();
        assert_eq!(c.series.len(), 1);
        assert_eq!(c.samples.len(), 9);
        assert_eq!(stats.corrupt_records, 0);
        assert!(stats.truncated_bytes > 0);
        assert_eq!(
            std::fs::metadata(dir.path().join("00000000"))
                .unwrap()
                .len(),
            ends[9] as u64
        );
        // Replaying the repaired segment gives the same data and nothing to repair.
        let mut c2 = Collect::default();
        let stats2 = replay_dir(dir.path(), &mut c2, true).unwrap();
        assert_eq!(c2.samples, c.samples);
        assert_eq!(stats2.truncated_bytes, 0);
    }

    /// A write issued while the one before was still in flight starts on the next page: the
    /// zeros that end the earlier page are skipped, however few there are (fewer than a
    /// header's worth make the header run into the next page's record).
    #[test]
    fn skips_the_zeros_that_pad_a_page_before_the_next_write() {
        for gap in [1, 4, HEADER_LEN - 1, HEADER_LEN, 100, PAGE - 200] {
            // A series record that ends `gap` bytes before the page end.
            let series = |value_len: usize| {
                let mut buf = Vec::new();
                let s = begin_record(&mut buf, RecordType::Series);
                let v = "x".repeat(value_len);
                put_series(&mut buf, 0, [("__name__", v.as_str())]);
                end_record(&mut buf, s);
                buf
            };
            let probe = series(1000).len();
            let mut seg = series(1000 + (PAGE - gap) - probe);
            assert_eq!(seg.len(), PAGE - gap);
            seg.resize(PAGE, 0);
            // The next write's records: the sample records of a `segment`.
            let (rest, _) = segment(3);
            seg.extend_from_slice(&rest[seg_series_len(&rest)..]);
            seg.resize(seg.len().next_multiple_of(PAGE), 0);
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("00000000"), &seg).unwrap();
            let mut c = Collect::default();
            let stats = replay_dir(dir.path(), &mut c, true).unwrap();
            assert_eq!(c.series.len(), 1, "gap {gap}");
            let ts: Vec<i64> = c.samples.iter().map(|s| s.t).collect();
            assert_eq!(ts, [0, 1000, 2000], "gap {gap}");
            assert_eq!(
                (stats.corrupt_records, stats.truncated_bytes),
                (0, 0),
                "gap {gap}"
            );
        }
    }

    /// Bytes of the series record at the start of a [`segment`].
    fn seg_series_len(seg: &[u8]) -> usize {
        HEADER_LEN + u32::from_le_bytes(seg[..4].try_into().unwrap()) as usize
    }

    #[test]
    fn skips_a_corrupt_record_in_the_middle() {
        let dir = tempfile::tempdir().unwrap();
        let (mut seg, ends) = segment(5);
        seg[ends[2] + HEADER_LEN + 3] ^= 0xff; // inside sample record #3
        std::fs::write(dir.path().join("00000000"), &seg).unwrap();
        let mut c = Collect::default();
        let stats = replay_dir(dir.path(), &mut c, true).unwrap();
        assert_eq!(stats.corrupt_records, 1);
        let ts: Vec<i64> = c.samples.iter().map(|s| s.t).collect();
        assert_eq!(ts, vec![0, 1000, 3000, 4000]);
    }

    #[test]
    fn segments_replay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, _) = segment(2);
        std::fs::write(dir.path().join("00000002"), &seg).unwrap();
        std::fs::write(dir.path().join("00000001"), &seg).unwrap();
        std::fs::write(dir.path().join("junk.tmp"), b"xx").unwrap();
        let mut c = Collect::default();
        let stats = replay_dir(dir.path(), &mut c, false).unwrap();
        assert_eq!(stats.segments, 2);
        assert_eq!(stats.last_segment, Some(2));
        assert_eq!(c.samples.len(), 4);
    }

    #[test]
    fn a_corrupt_length_field_resyncs_at_the_next_good_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut seg, ends) = segment(5);
        // Make record #3's length absurd: its extent can no longer be trusted.
        seg[ends[2]..ends[2] + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(dir.path().join("00000000"), &seg).unwrap();
        let mut c = Collect::default();
        let stats = replay_dir(dir.path(), &mut c, true).unwrap();
        assert_eq!(stats.corrupt_records, 1);
        assert_eq!(c.samples.len(), 4);
        assert_eq!(stats.truncated_bytes, 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Replay of arbitrary bytes never panics, and repair leaves a segment that replays
        /// the same records again with nothing left to repair.
        #[test]
        fn replay_of_random_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("00000000"), &bytes).unwrap();
            let mut c = Collect::default();
            let first = replay_dir(dir.path(), &mut c, true).unwrap();
            let mut again = Collect::default();
            let second = replay_dir(dir.path(), &mut again, true).unwrap();
            proptest::prop_assert_eq!(second.truncated_bytes, 0);
            proptest::prop_assert_eq!(first.samples, second.samples);
        }

        /// Mutating a valid segment loses at most the records the mutations touched.
        #[test]
        fn replay_of_a_mutated_segment_never_panics(
            flips in proptest::collection::vec((0usize..10_000, proptest::prelude::any::<u8>()), 1..6),
            cut in proptest::option::of(0usize..10_000),
        ) {
            let (mut seg, _) = segment(100);
            for (pos, b) in flips {
                let p = pos % seg.len();
                seg[p] = b;
            }
            if let Some(c) = cut {
                seg.truncate(c % seg.len());
            }
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("00000000"), &seg).unwrap();
            let mut c = Collect::default();
            let stats = replay_dir(dir.path(), &mut c, true).unwrap();
            proptest::prop_assert!(c.samples.len() <= 100);
            proptest::prop_assert!(stats.records <= 101);
        }
    }
}
