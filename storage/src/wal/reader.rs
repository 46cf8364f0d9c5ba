//! WAL replay: reads a core's checkpoint and segments in log order, decides which records can
//! be trusted, and hands those to a visitor.
//!
//! Owns the recovery rules of `docs/format/wal.md`: what is kept after damage (a stretch
//! without a good frame in the middle of a file is skipped up to the next frame whose
//! checksum holds; a torn tail is cut off) and the series id rules, applied in log order as
//! records are read:
//! - a series entry binds its id to its labels if the id is not bound yet; the same id with the
//!   same labels again (a checkpoint and a segment it kept) is passed over; with other labels
//!   the id is ambiguous from there on and none of its later samples is handed on;
//! - a sample is handed on only if a series record read *before* it bound its id, so samples
//!   whose series record was lost can never be attached to a series logged after them;
//! - [`ReplayStats::next_series_id`] is one past the highest id any record named (series
//!   entries and samples, handed on or not) and at least the checkpoint's next id: a writer
//!   that starts from it never hands out an id a surviving record already uses;
//! - an id too far beyond the ids established so far (`IdRules::ceiling`) is corruption, not
//!   a series: it binds nothing and raises nothing, so no record can make a visitor allocate
//!   for billions of ids.
//!
//! Never panics on any bytes. Must not decide what a series is beyond its id and labels:
//! building a head (or re-routing a log) is the visitor's.

use std::collections::HashMap;
use std::path::Path;

use super::record::{
    decode_min_time, decode_next_id, decode_samples, decode_series, read_frame, Frame, RecordType,
    SampleRecord, HEADER_LEN, PAGE,
};
use super::{checkpoint_name, list_checkpoints, list_segments, segment_name, WalError};

/// Receives replayed records in log order, after the id rules (module docs) sorted them.
pub trait ReplayVisitor {
    /// A series id bound to its labels: called once per id, for the first series record that
    /// names it.
    fn series(&mut self, id: u32, labels: &[(&str, &str)]);
    /// One sample whose id a series record read before it bound.
    fn sample(&mut self, sample: SampleRecord);
    /// Samples older than `t` are persisted in a block (from a checkpoint): drop them.
    fn min_time(&mut self, _t: i64) {}
    /// Samples before this time are persisted and dropped by the visitor anyway: one whose
    /// series is unknown is then expected (its series was collected) and not counted as lost.
    fn persisted_before(&self) -> i64 {
        i64::MIN
    }
}

/// What a replay saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayStats {
    pub segments: u32,
    pub records: u64,
    pub series: u64,
    pub samples: u64,
    /// Records skipped: each damaged stretch that began with an unreadable frame (how many
    /// records the stretch held cannot be known), each record whose checksum holds but whose
    /// payload does not decode or names an id past the ceiling.
    pub corrupt_records: u64,
    /// Damaged regions found: each unreadable stretch skipped in the middle of a file, each
    /// torn tail cut off.
    pub damaged_regions: u64,
    /// Samples dropped because no series record read before them bound their id (not
    /// counting those older than [`ReplayVisitor::persisted_before`]).
    pub unknown_series_samples: u64,
    /// Series entries that named an id already bound to other labels.
    pub conflicting_series: u64,
    /// One past the highest series id named by any record read, and at least the
    /// checkpoint's next id: the lowest id a writer may hand out after this replay.
    pub next_series_id: u32,
    /// Bytes cut off the end of segments because they held no readable record.
    pub truncated_bytes: u64,
    /// Highest segment index seen.
    pub last_segment: Option<u32>,
    /// The checkpoint replayed first (`checkpoint.N` covers segments up to N), if any.
    pub checkpoint: Option<u32>,
    /// Newest sample timestamp of each replayed segment that holds samples.
    pub segment_max_t: Vec<(u32, i64)>,
}

/// Ids may run ahead of those established so far (named by earlier records, or the
/// checkpoint's next id) by this many, or by as many as are established if that is more.
/// Writers hand ids out densely, so a legitimate jump is only the ids of series records lost
/// in one damaged stretch; a visitor that keeps ids dense (the head) spends ~90 bytes on each
/// id it skips, so one bad record costs it at most ~90 MiB or a doubling, never 2^32 ids.
const MIN_ID_HEADROOM: u64 = 1 << 20;

/// The series id rules of one replay (module docs).
struct IdRules {
    /// One bit per id below `bound.len()`: bound by a series record read earlier, and not
    /// ambiguous since.
    usable: Vec<u64>,
    /// Per id, a fingerprint of the labels it was bound to; 0 while unbound.
    bound: Vec<u64>,
    /// Bindings of ids too far past the dense ones to grow them for (only a log with no
    /// ceiling has those): `(fingerprint, usable)`.
    far: HashMap<u32, (u64, bool)>,
    /// One past the highest id named so far, or the checkpoint's next id if higher.
    next: u64,
    /// Whether the log's start is known — an empty history, or a checkpoint that states its
    /// next id — so that an id can be judged too far ahead. A checkpoint written before next
    /// ids were logged leaves every id below `u32::MAX` acceptable, as it always was: its
    /// series may have been followed by ids far past them (collected ones it no longer names),
    /// and rejecting those would drop a whole tenant's log once, at the upgrade.
    bounded: bool,
}

/// What a series entry did to its id.
enum Binding {
    New,
    Same,
    Conflict,
}

impl IdRules {
    fn new(bounded: bool) -> Self {
        IdRules {
            usable: Vec::new(),
            bound: Vec::new(),
            far: HashMap::new(),
            next: 0,
            bounded,
        }
    }

    /// Ids at or above this are corruption. `u32::MAX` is never an id (heads use it as
    /// "none").
    fn ceiling(&self) -> u64 {
        let max = u64::from(u32::MAX);
        if self.bounded {
            self.next
                .saturating_add(self.next.max(MIN_ID_HEADROOM))
                .min(max)
        } else {
            max
        }
    }

    /// A record named `id` (below the ceiling).
    #[inline]
    fn name(&mut self, id: u32) {
        self.next = self.next.max(u64::from(id) + 1);
    }

    #[inline]
    fn usable(&self, id: u32) -> bool {
        let i = id as usize;
        if i < self.bound.len() {
            (self.usable[i / 64] >> (i % 64)) & 1 == 1
        } else {
            !self.far.is_empty() && self.far.get(&id).is_some_and(|b| b.1)
        }
    }

    fn bind(&mut self, id: u32, fingerprint: u64) -> Binding {
        let i = id as usize;
        // The dense tables grow with what is bound, never by one far id alone.
        if i >= self.bound.len() && i < MIN_ID_HEADROOM as usize + 2 * self.bound.len() {
            self.bound.resize(i + 1, 0);
            self.usable.resize(i / 64 + 1, 0);
        }
        if i >= self.bound.len() {
            return match self.far.get_mut(&id) {
                None => {
                    self.far.insert(id, (fingerprint, true));
                    Binding::New
                }
                Some((f, _)) if *f == fingerprint => Binding::Same,
                Some((_, usable)) => {
                    *usable = false;
                    Binding::Conflict
                }
            };
        }
        match self.bound[i] {
            0 => {
                self.bound[i] = fingerprint;
                self.usable[i / 64] |= 1 << (i % 64);
                Binding::New
            }
            f if f == fingerprint => Binding::Same,
            _ => {
                self.usable[i / 64] &= !(1 << (i % 64));
                Binding::Conflict
            }
        }
    }
}

/// A non-zero fingerprint of a label set, to tell a repeated series record from a conflicting
/// one.
fn fingerprint(labels: &[(&str, &str)]) -> u64 {
    sluice_core::series_hash("", labels.iter().copied()) | 1
}

/// One replay's state.
struct Replay<'v> {
    visitor: &'v mut dyn ReplayVisitor,
    stats: ReplayStats,
    ids: IdRules,
}

/// Replays the checkpoint and every later segment of `dir` into `visitor`. With `repair`,
/// torn segment tails are truncated on disk (so that later appends never follow garbage).
pub fn replay_dir(
    dir: &Path,
    visitor: &mut dyn ReplayVisitor,
    repair: bool,
) -> Result<ReplayStats, WalError> {
    let checkpoint = list_checkpoints(dir)?.last().copied();
    let mut r = Replay {
        visitor,
        stats: ReplayStats::default(),
        ids: IdRules::new(checkpoint.is_none()),
    };
    if let Some(n) = checkpoint {
        let path = dir.join(checkpoint_name(n));
        let data =
            std::fs::read(&path).map_err(|e| WalError::io("reading WAL checkpoint", &path, e))?;
        let mut max_t = i64::MIN;
        let (good_end, written_end) = r.replay_file(&data, &path, &mut max_t);
        if written_end > good_end {
            // Written whole and synced before its rename: only the medium can damage it.
            r.stats.damaged_regions += 1;
            tracing::error!(
                checkpoint = %path.display(),
                at = good_end,
                "WAL checkpoint ends in an unreadable stretch"
            );
        }
        r.stats.checkpoint = Some(n);
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
        r.stats.segments += 1;
        r.stats.last_segment = Some(index);
        let mut max_t = i64::MIN;
        let (good_end, written_end) = r.replay_file(&data, &path, &mut max_t);
        if max_t != i64::MIN {
            r.stats.segment_max_t.push((index, max_t));
        }
        if written_end > good_end {
            // Bytes after the last good record that are not padding: a torn write.
            let cut = (data.len() - good_end) as u64;
            tracing::warn!(
                segment = %path.display(),
                at = good_end,
                bytes = cut,
                "WAL segment ends in an unreadable tail (torn write); truncating it"
            );
            r.stats.damaged_regions += 1;
            r.stats.truncated_bytes += cut;
            if repair {
                truncate(&path, good_end as u64)?;
            }
        }
    }
    r.stats.next_series_id = u32::try_from(r.ids.next).unwrap_or(u32::MAX);
    Ok(r.stats)
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

impl Replay<'_> {
    /// Replays one file's bytes. Returns the end of its last good record and the end of its
    /// written data (past the last non-zero byte); data between them is a torn tail.
    fn replay_file(&mut self, data: &[u8], path: &Path, max_t: &mut i64) -> (usize, usize) {
        let written_end = data.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        let mut scratch = Vec::new();
        let mut pos = 0;
        let mut good_end = 0;
        while pos < written_end {
            let (reason, skip) = match read_frame(data, pos) {
                Frame::Record(ty, payload) => {
                    self.record(ty, payload, &mut scratch, max_t, path, pos);
                    pos += HEADER_LEN + payload.len();
                    good_end = pos;
                    continue;
                }
                Frame::Corrupt { reason, skip } => (Some(reason), skip),
                Frame::End => (None, None),
            };
            if let Some(next) = padding_end(data, pos) {
                // The zeros that end a page when the next write started on a fresh page (its
                // header may have run into that page's record).
                pos = next;
                continue;
            }
            // A frame that does not read, or zeros where more records follow (a write that
            // never landed): skip to the next frame whose checksum holds — where the damaged
            // frame's length says, if a good frame is there, else the first one after it.
            let next = skip
                .filter(|n| follows_good_record(data, *n))
                .or_else(|| next_good_frame(data, pos + 1, written_end));
            let Some(next) = next else {
                // Nothing good follows: a torn tail, which the caller reports.
                break;
            };
            self.stats.damaged_regions += 1;
            if reason.is_some() {
                self.stats.corrupt_records += 1;
            }
            tracing::error!(
                file = %path.display(),
                offset = pos,
                bytes = next - pos,
                "skipping a damaged stretch of the WAL: {}",
                reason.unwrap_or("zeros where records follow (a lost write)")
            );
            pos = next;
        }
        (good_end, written_end)
    }

    /// Applies one record with a good checksum, under the id rules.
    fn record<'a>(
        &mut self,
        ty: RecordType,
        payload: &'a [u8],
        scratch: &mut Vec<(&'a str, &'a str)>,
        max_t: &mut i64,
        path: &Path,
        pos: usize,
    ) {
        let Replay {
            visitor,
            stats,
            ids,
        } = self;
        stats.records += 1;
        // Fixed per record: ids a record names cannot vouch for each other.
        let ceiling = ids.ceiling();
        let mut beyond = None;
        let res = match ty {
            RecordType::Series => decode_series(payload, scratch, |id, labels| {
                stats.series += 1;
                if u64::from(id) >= ceiling {
                    beyond = Some(id);
                    return;
                }
                ids.name(id);
                match ids.bind(id, fingerprint(labels)) {
                    Binding::New => visitor.series(id, labels),
                    Binding::Same => {}
                    Binding::Conflict => {
                        stats.conflicting_series += 1;
                        tracing::error!(
                            file = %path.display(),
                            offset = pos,
                            id,
                            "WAL series record names an id already bound to other labels; \
                             dropping that id's later samples"
                        );
                    }
                }
            }),
            RecordType::Samples => {
                let persisted = visitor.persisted_before();
                decode_samples(payload, |s| {
                    stats.samples += 1;
                    *max_t = (*max_t).max(s.t);
                    if u64::from(s.id) >= ceiling {
                        beyond = Some(s.id);
                    } else {
                        ids.name(s.id);
                        if ids.usable(s.id) {
                            visitor.sample(s);
                            return;
                        }
                    }
                    if s.t >= persisted {
                        stats.unknown_series_samples += 1;
                    }
                })
            }
            RecordType::MinTime => decode_min_time(payload).map(|t| visitor.min_time(t)),
            RecordType::NextId => decode_next_id(payload).map(|n| {
                ids.next = ids.next.max(u64::from(n));
                ids.bounded = true;
            }),
        };
        if let Err(e) = res {
            stats.corrupt_records += 1;
            tracing::error!(file = %path.display(), offset = pos, "skipping WAL record: {e}");
        } else if let Some(id) = beyond {
            stats.corrupt_records += 1;
            tracing::error!(
                file = %path.display(),
                offset = pos,
                id,
                limit = ceiling,
                "WAL record names a series id far beyond every id before it; ignoring those entries"
            );
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

/// The first position in `from..end` where a frame with a good checksum starts.
fn next_good_frame(data: &[u8], from: usize, end: usize) -> Option<usize> {
    let mut p = from;
    while p < end {
        if data[p] == 0 {
            // A frame's type byte (its header's last) is never zero, so within a run of zeros
            // only the last HEADER_LEN - 1 positions can start one.
            let non_zero = p + data[p..end].iter().position(|b| *b != 0)?;
            p = p.max(non_zero.saturating_sub(HEADER_LEN - 1));
        }
        // The type byte first: most positions fail it without a checksum over their length.
        let typed = data
            .get(p + HEADER_LEN - 1)
            .is_some_and(|t| RecordType::from_u8(*t).is_some());
        if typed && follows_good_record(data, p) {
            return Some(p);
        }
        p += 1;
    }
    None
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

    /// Frames of a hand-made log.
    #[derive(Default)]
    struct Log(Vec<u8>);

    impl Log {
        fn series(mut self, ids: &[(u32, &str)]) -> Self {
            let s = begin_record(&mut self.0, RecordType::Series);
            for (id, name) in ids {
                put_series(&mut self.0, *id, [("__name__", *name)]);
            }
            end_record(&mut self.0, s);
            self
        }
        fn samples(mut self, samples: &[(u32, i64)]) -> Self {
            let s = begin_record(&mut self.0, RecordType::Samples);
            put_samples_base(&mut self.0, 0);
            for (id, t) in samples {
                put_sample(&mut self.0, 0, *id, *t, *t as f64);
            }
            end_record(&mut self.0, s);
            self
        }
        fn record(mut self, ty: RecordType, payload: &[u8]) -> Self {
            let s = begin_record(&mut self.0, ty);
            self.0.extend_from_slice(payload);
            end_record(&mut self.0, s);
            self
        }
        fn write(self, dir: &Path, name: &str) -> Vec<u8> {
            std::fs::write(dir.join(name), &self.0).unwrap();
            self.0
        }
    }

    /// Each sample as (its series' name, t): who the replay attached it to.
    fn attributed(c: &Collect) -> Vec<(String, i64)> {
        c.samples
            .iter()
            .map(|s| {
                let (_, labels) = c.series.iter().find(|(id, _)| *id == s.id).unwrap();
                (labels[0].1.clone(), s.t)
            })
            .collect()
    }

    /// A sample is judged when it is read: one whose series record comes later in the log (a
    /// log written before ids were never reused: series 5's record was lost and id 5 handed out
    /// again) is dropped, not attached to the later series.
    #[test]
    fn a_sample_needs_a_series_record_before_it() {
        let dir = tempfile::tempdir().unwrap();
        Log::default()
            .series(&[(4, "a")])
            .samples(&[(4, 1), (5, 1), (9, 2)])
            .series(&[(5, "b")])
            .samples(&[(5, 3), (4, 3)])
            .write(dir.path(), "00000000");
        let mut c = Collect::default();
        let stats = replay_dir(dir.path(), &mut c, true).unwrap();
        assert_eq!(
            attributed(&c),
            [("a".into(), 1), ("b".into(), 3), ("a".into(), 3)]
        );
        assert_eq!(stats.unknown_series_samples, 2);
        assert_eq!(stats.corrupt_records, 0);
        // Id 9 has no series record, but a sample names it: it is taken.
        assert_eq!(stats.next_series_id, 10);
    }

    /// The same id again with the same labels (a checkpoint and a segment it kept) binds once;
    /// with other labels the id is ambiguous and none of its later samples is attached to
    /// either series.
    #[test]
    fn a_series_id_binds_once_and_a_conflict_drops_its_later_samples() {
        let dir = tempfile::tempdir().unwrap();
        Log::default()
            .series(&[(0, "a"), (1, "b")])
            .samples(&[(0, 1), (1, 1)])
            .series(&[(0, "a")])
            .samples(&[(0, 2)])
            .series(&[(1, "c")])
            .samples(&[(1, 3), (0, 3)])
            .write(dir.path(), "00000000");
        let mut c = Collect::default();
        let stats = replay_dir(dir.path(), &mut c, true).unwrap();
        let ids: Vec<u32> = c.series.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [0, 1]);
        assert_eq!(
            attributed(&c),
            [
                ("a".into(), 1),
                ("b".into(), 1),
                ("a".into(), 2),
                ("a".into(), 3)
            ]
        );
        assert_eq!(stats.conflicting_series, 1);
        assert_eq!(stats.unknown_series_samples, 1);
    }

    /// Samples older than the persisted range whose series the checkpoint no longer holds
    /// (collected by a block cut) are expected, not lost; their ids stay taken, and so do the
    /// ids below the checkpoint's next id.
    #[test]
    fn collected_series_are_not_lost_samples_and_keep_their_ids() {
        struct Persisted(Collect, i64);
        impl ReplayVisitor for Persisted {
            fn series(&mut self, id: u32, labels: &[(&str, &str)]) {
                self.0.series(id, labels);
            }
            fn sample(&mut self, s: SampleRecord) {
                self.0.sample(s);
            }
            fn min_time(&mut self, t: i64) {
                self.1 = self.1.max(t);
            }
            fn persisted_before(&self) -> i64 {
                self.1
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut min_time = Vec::new();
        put_min_time(&mut min_time, 100);
        let mut next_id = Vec::new();
        put_next_id(&mut next_id, 40);
        Log::default()
            .record(RecordType::MinTime, &min_time)
            .record(RecordType::NextId, &next_id)
            .series(&[(7, "live")])
            .write(dir.path(), &checkpoint_name(0));
        Log::default()
            .samples(&[(3, 50), (7, 150), (12, 99), (13, 120)])
            .write(dir.path(), "00000001");
        let mut v = Persisted(Collect::default(), i64::MIN);
        let stats = replay_dir(dir.path(), &mut v, true).unwrap();
        assert_eq!(v.0.samples.len(), 1);
        assert_eq!(
            stats.unknown_series_samples, 1,
            "only the sample at 120 should have had a series"
        );
        assert_eq!(stats.next_series_id, 40);
    }

    /// A record naming an id far beyond every id before it is corruption: it binds nothing,
    /// raises nothing, and the rest of the log replays.
    #[test]
    fn an_absurd_id_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        Log::default()
            .series(&[(0, "a")])
            .series(&[(3_000_000_000, "huge")])
            .samples(&[(0, 1), (4_000_000_000, 1)])
            .series(&[(1, "b")])
            .samples(&[(1, 2)])
            .write(dir.path(), "00000000");
        let mut c = Collect::default();
        let stats = replay_dir(dir.path(), &mut c, true).unwrap();
        let ids: Vec<u32> = c.series.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [0, 1]);
        assert_eq!(attributed(&c), [("a".into(), 1), ("b".into(), 2)]);
        assert_eq!(stats.corrupt_records, 2);
        assert_eq!(stats.next_series_id, 2);
        // Within the headroom, a jump is a gap left by lost series records.
        let dir = tempfile::tempdir().unwrap();
        Log::default()
            .series(&[(0, "a")])
            .series(&[(900_000, "far")])
            .write(dir.path(), "00000000");
        let stats = replay_dir(dir.path(), &mut Collect::default(), true).unwrap();
        assert_eq!(stats.next_series_id, 900_001);
    }

    /// A checkpoint written before next ids were logged says nothing about the ids it
    /// dropped: no id below `u32::MAX` is judged too far ahead after it.
    #[test]
    fn a_checkpoint_without_a_next_id_accepts_any_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut min_time = Vec::new();
        put_min_time(&mut min_time, 0);
        Log::default()
            .record(RecordType::MinTime, &min_time)
            .write(dir.path(), &checkpoint_name(0));
        Log::default()
            .series(&[(3_000_000_000, "after_churn")])
            .samples(&[(3_000_000_000, 5)])
            .write(dir.path(), "00000001");
        let mut c = Collect::default();
        let stats = replay_dir(dir.path(), &mut c, true).unwrap();
        assert_eq!(c.samples.len(), 1);
        assert_eq!(stats.next_series_id, 3_000_000_001);
    }

    /// The user's report: the page holding the last series record is lost, samples of those
    /// series follow it. They are dropped, their ids stay taken, the damage is counted once,
    /// and nothing else is lost.
    #[test]
    fn a_lost_series_record_drops_its_samples_and_keeps_its_ids() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        let mut log = Log::default();
        for round in 0..4u32 {
            let ids: Vec<(u32, &str)> = (round * 10..round * 10 + 10)
                .map(|i| (i, names[i as usize].as_str()))
                .collect();
            log = log.series(&ids);
            let all: Vec<(u32, i64)> = (0..round * 10 + 10).map(|i| (i, round as i64)).collect();
            log = log.samples(&all);
        }
        // Rounds that only sample: the last series record lands pages after the others.
        for t in 4..24 {
            let all: Vec<(u32, i64)> = (0..40).map(|i| (i, t)).collect();
            log = log.samples(&all);
        }
        let series_at = log.0.len();
        assert!(series_at > 2 * PAGE);
        log = log.series(&[(40, "s40"), (41, "s41")]);
        let series_end = log.0.len();
        for t in 24..60 {
            let all: Vec<(u32, i64)> = (0..42).map(|i| (i, t)).collect();
            log = log.samples(&all);
        }
        let mut seg = log.0;
        // Zero the page holding the record, and every page it reaches into.
        let from = series_at / PAGE * PAGE;
        let to = series_end.next_multiple_of(PAGE);
        seg[from..to].fill(0);
        std::fs::write(dir.path().join("00000000"), &seg).unwrap();
        let mut c = Collect::default();
        let stats = replay_dir(dir.path(), &mut c, true).unwrap();
        assert!(c.series.iter().all(|(id, _)| *id < 40));
        assert!(c.samples.iter().all(|s| s.id < 40));
        assert!(stats.unknown_series_samples >= 2 * 20);
        assert_eq!(stats.next_series_id, 42);
        assert_eq!((stats.damaged_regions, stats.truncated_bytes), (1, 0));
        // Every sample of the last round survives.
        let last: Vec<u32> = c
            .samples
            .iter()
            .filter(|s| s.t == 59)
            .map(|s| s.id)
            .collect();
        assert_eq!(last, (0..40).collect::<Vec<_>>());
    }

    /// A write that never landed leaves whole zero pages between records that did (a later
    /// write in flight completed): the records after the hole are kept, not cut off.
    #[test]
    fn records_after_a_lost_write_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Log::default().series(&[(0, "a")]).samples(&[(0, 1)]).0;
        seg.resize(3 * PAGE, 0);
        seg.extend(
            Log::default()
                .samples(&[(0, 2)])
                .series(&[(1, "b")])
                .samples(&[(1, 3)])
                .0,
        );
        std::fs::write(dir.path().join("00000000"), &seg).unwrap();
        let mut c = Collect::default();
        let stats = replay_dir(dir.path(), &mut c, true).unwrap();
        assert_eq!(
            attributed(&c),
            [("a".into(), 1), ("a".into(), 2), ("b".into(), 3)]
        );
        assert_eq!(
            (
                stats.damaged_regions,
                stats.corrupt_records,
                stats.truncated_bytes
            ),
            (1, 0, 0)
        );
        assert_eq!(std::fs::read(dir.path().join("00000000")).unwrap(), seg);
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
