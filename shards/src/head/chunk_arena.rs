//! The closed chunks of one head, packed back to back in pages instead of one heap
//! allocation each, chained per series — and, once a page is full, written out to a spill
//! file and read back through a memory map, as Prometheus keeps its full head chunks in
//! m-mapped `chunks_head` files.
//!
//! A head holds one closed chunk of ~300 bytes per series every 30 minutes of a 15s scrape.
//! Kept in the heap, they were most of a series' memory after an hour (a 100k-series flood
//! at 212 samples per series: 1,210 B of RSS per series, 310 of them in one closed chunk)
//! and grew with every chunk. Spilled, a series costs its labels, index entries and open
//! chunk, whatever its age: the closed chunks are page cache the kernel may drop, and are
//! read (mapped) only by queries and by the cut that persists them. The file is unnamed
//! (`O_TMPFILE`): the WAL, not this file, is what a restart replays, so it need not survive
//! one.
//!
//! A chunk is a 38-byte record header followed by its data. A series keeps only the
//! [`ChunkRef`] of its newest chunk; each record links to the one before it, so a record
//! is never written again once its page is full (the file is append-only per page).
//!
//! Chunks never span a block range, and every page holds chunks of one range only, so a cut
//! frees whole pages of the range it persisted: no copying, no fragmentation. A record
//! whose predecessor lies in a freed range ends its chain.
//!
//! Owns the page layout, the record format, the spill file and page reuse. Must not know
//! about series, labels or cutting policy: the head links the records and decides what is
//! unreachable.

use std::cell::Cell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

use memmap2::{Mmap, MmapOptions};

/// Where a chunk record lives: page index (high 32 bits) and byte offset in the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef(u64);

impl ChunkRef {
    /// No chunk: the start of a chain, or a series without closed chunks.
    pub const NONE: ChunkRef = ChunkRef(u64::MAX);

    fn new(page: usize, offset: usize) -> Self {
        ChunkRef((page as u64) << 32 | offset as u64)
    }

    fn page(self) -> usize {
        (self.0 >> 32) as usize
    }

    fn offset(self) -> usize {
        (self.0 & u32::MAX as u64) as usize
    }

    /// Whether this is [`ChunkRef::NONE`].
    pub fn is_none(self) -> bool {
        self == Self::NONE
    }
}

/// A record: prev (u64), prev's block range (i64), min_t (i64), max_t (i64), data length
/// (u16), CRC32C (u32) of everything before it and the data, all little-endian, then the
/// data. Keeping the predecessor's range in the record lets a chain end at a freed range
/// without reading the (freed, maybe reused) predecessor. The CRC is checked when a record
/// is read from the spill file: a page lost to a writeback error reads back as zeros.
const HEADER: usize = 8 + 8 + 8 + 8 + 2 + 4;
const PREV: usize = 0;
const PREV_RANGE: usize = 8;
const MIN_T: usize = 16;
const MAX_T: usize = 24;
const LEN: usize = 32;
const CRC: usize = 34;

/// Bytes of a page kept in the heap. Small on purpose: a page comes from the allocator's
/// free space, and when every series closes a chunk at once (senders scrape in step), that
/// free space is the open chunks' buffers just released, in pieces of a few hundred bytes
/// that coalesce. Pages of 4 KiB fill those holes as they form; 64 KiB or 1 MiB pages took
/// fresh memory and left the holes resident (RSS per series at 100k series, 158 samples:
/// 887 B here, 994 B with 64 KiB, 1,135 B with 1 MiB).
const PAGE: usize = 4 << 10;

/// Bytes of a spilled page: a page that spills grows (by doubling from [`PAGE`]) up to this
/// before it is written, so that a flood closing ~10k chunks a second writes ~50 times a
/// second, not ~900.
const SLOT: usize = 64 << 10;

/// Slots per mapping of the spill file (16 MiB): the file grows a mapping at a time.
const SLOTS_PER_MAP: usize = 256;

/// A closed chunk, read from its record.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a> {
    pub min_t: i64,
    pub max_t: i64,
    /// XOR chunk data (2-byte sample count + bitstream).
    pub data: &'a [u8],
    prev: ChunkRef,
    prev_range: i64,
}

enum Bytes {
    /// Records back to back, in the heap. Records are addressed by offset, so the buffer
    /// may grow.
    Resident(Vec<u8>),
    /// Written to the page's slot of the spill file (slot = page index); `len` bytes of
    /// records.
    Spilled { len: u32 },
    /// Freed, for reuse.
    Free,
}

struct Page {
    bytes: Bytes,
    /// The block range (index) every chunk of the page lies in.
    range: i64,
}

/// The unnamed file full pages are written to, and its mappings.
struct Spill {
    file: File,
    maps: Vec<Mmap>,
    /// A write failed (disk full): pages stay in the heap from then on. Logged once.
    failed: bool,
}

/// Closed chunks of one head.
pub struct ChunkArena {
    /// Indexed by [`ChunkRef::page`]; a freed page is left empty for reuse.
    pages: Vec<Page>,
    free: Vec<u32>,
    /// The page being filled for each block range that has one (rarely more than two).
    filling: Vec<u32>,
    /// Capacity of the pages held in the heap.
    resident: usize,
    /// Bytes of records in spilled pages.
    spilled: usize,
    /// Spilled records that failed their CRC (each read counts).
    corrupt: Cell<u64>,
    /// Pages of ranges below this have been freed.
    live_from: i64,
    spill: Option<Spill>,
}

impl Default for ChunkArena {
    fn default() -> Self {
        ChunkArena {
            pages: Vec::new(),
            free: Vec::new(),
            filling: Vec::new(),
            resident: 0,
            spilled: 0,
            corrupt: Cell::new(0),
            live_from: i64::MIN,
            spill: None,
        }
    }
}

impl ChunkArena {
    /// From now on, writes each full page to `file` (an empty file, best unnamed: see
    /// `tempfile::tempfile_in`) and frees its memory; reads go through a map of the file.
    pub fn spill_to(&mut self, file: File) {
        self.spill = Some(Spill {
            file,
            maps: Vec::new(),
            failed: false,
        });
    }

    /// Stores a closed chunk of block range `range` (its index, `min_t / range_ms`) after
    /// `prev`, the newest chunk of its series (`NONE` for the first), which must be live.
    ///
    /// # Panics
    /// If `data` is longer than `u16::MAX` bytes (an XOR chunk of 120 samples is at most
    /// ~2.3 KiB).
    pub fn push(
        &mut self,
        range: i64,
        min_t: i64,
        max_t: i64,
        data: &[u8],
        prev: ChunkRef,
    ) -> ChunkRef {
        let len = u16::try_from(data.len()).expect("chunk longer than 64 KiB");
        let prev_range = if prev.is_none() {
            i64::MIN
        } else {
            self.pages[prev.page()].range
        };
        let need = HEADER + data.len();
        let page = self.page_for(range, need);
        let Bytes::Resident(bytes) = &mut self.pages[page].bytes else {
            unreachable!("a filling page is in the heap");
        };
        let offset = bytes.len();
        bytes.extend_from_slice(&prev.0.to_le_bytes());
        bytes.extend_from_slice(&prev_range.to_le_bytes());
        bytes.extend_from_slice(&min_t.to_le_bytes());
        bytes.extend_from_slice(&max_t.to_le_bytes());
        bytes.extend_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[offset..]), data);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(data);
        ChunkRef::new(page, offset)
    }

    fn spilling(&self) -> bool {
        self.spill.as_ref().is_some_and(|s| !s.failed)
    }

    /// A page of `range` with room for `need` bytes.
    fn page_for(&mut self, range: i64, need: usize) -> usize {
        let spilling = self.spilling();
        let filling = self
            .filling
            .iter()
            .position(|p| self.pages[*p as usize].range == range);
        if let Some(i) = filling {
            let index = self.filling[i] as usize;
            let Bytes::Resident(bytes) = &mut self.pages[index].bytes else {
                unreachable!("a filling page is in the heap");
            };
            if bytes.capacity() - bytes.len() >= need {
                return index;
            }
            if spilling && bytes.len() + need <= SLOT {
                let target = (bytes.capacity() * 2).max(bytes.len() + need).min(SLOT);
                let before = bytes.capacity();
                bytes.reserve_exact(target - bytes.len());
                self.resident += bytes.capacity() - before;
                return index;
            }
            // The page is full (its last few bytes stay unused).
            self.filling.swap_remove(i);
            if spilling {
                self.spill_page(index);
            }
        }
        let size = PAGE.max(need);
        self.resident += size;
        let page = Page {
            bytes: Bytes::Resident(Vec::with_capacity(size)),
            range,
        };
        let index = match self.free.pop() {
            Some(i) => {
                self.pages[i as usize] = page;
                i as usize
            }
            None => {
                self.pages.push(page);
                self.pages.len() - 1
            }
        };
        self.filling.push(index as u32);
        index
    }

    /// Writes full page `index` to its slot of the spill file and frees its memory. On an
    /// error the page stays in the heap, and so do all later ones: nothing is lost, memory
    /// just grows as it did without a spill file.
    fn spill_page(&mut self, index: usize) {
        let (
            Some(spill),
            Page {
                bytes: Bytes::Resident(bytes),
                ..
            },
        ) = (self.spill.as_mut(), &mut self.pages[index])
        else {
            return;
        };
        if bytes.len() > SLOT {
            return;
        }
        let written = spill
            .map_slot(index)
            .and_then(|()| spill.file.write_all_at(bytes, (index * SLOT) as u64));
        match written {
            Ok(()) => {
                self.resident -= bytes.capacity();
                self.spilled += bytes.len();
                let len = bytes.len() as u32;
                self.pages[index].bytes = Bytes::Spilled { len };
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot write closed head chunks to their spill file; keeping them in memory"
                );
                spill.failed = true;
            }
        }
    }

    /// The bytes of the record at `r` (which must be live) and everything after it in its
    /// page, and whether they come from the spill file.
    fn record(&self, r: ChunkRef) -> (&[u8], bool) {
        let at = r.offset();
        match &self.pages[r.page()].bytes {
            Bytes::Resident(bytes) => (&bytes[at..], false),
            Bytes::Spilled { len } => {
                let spill = self
                    .spill
                    .as_ref()
                    .expect("a spilled page has a spill file");
                let (map, start) = Spill::slot_position(r.page());
                let slot = &spill.maps[map][start..start + *len as usize];
                (slot.get(at..).unwrap_or(&[]), true)
            }
            Bytes::Free => panic!("chunk {r:?} is in a freed page"),
        }
    }

    /// The chunk at `r` (which must be a live record), or `None` if it was spilled and does
    /// not read back as it was written (counted in [`corrupt`](Self::corrupt)).
    pub fn get(&self, r: ChunkRef) -> Option<Chunk<'_>> {
        let (bytes, spilled) = self.record(r);
        let chunk = parse_record(bytes, spilled);
        if chunk.is_none() {
            self.corrupt.set(self.corrupt.get() + 1);
        }
        chunk
    }

    /// Spilled records that failed their check when read: a damaged spill file. Their series'
    /// older chunks are unreadable; the WAL still holds them.
    pub fn corrupt(&self) -> u64 {
        self.corrupt.get()
    }

    /// The chunk before `c` in its chain, unless it lies in a freed range.
    fn prev_of(&self, c: &Chunk<'_>) -> ChunkRef {
        if c.prev_range < self.live_from {
            ChunkRef::NONE
        } else {
            c.prev
        }
    }

    /// The chain that ends at `newest`, newest first.
    ///
    /// Every step must go back in time: a record that does not (only a damaged spill page,
    /// read back as zeros or garbage, could hold one) ends the walk instead of looping or
    /// wandering into other series' chunks.
    fn walk_back(&self, newest: ChunkRef) -> impl Iterator<Item = Chunk<'_>> + '_ {
        let mut at = newest;
        let mut before = i64::MAX;
        std::iter::from_fn(move || {
            if at.is_none() {
                return None;
            }
            let c = self.get(at)?;
            if c.max_t >= before {
                return None;
            }
            before = c.min_t;
            at = self.prev_of(&c);
            Some(c)
        })
    }

    /// The chain that ends at `newest`, oldest first.
    pub fn chain(&self, newest: ChunkRef) -> Chain<'_> {
        Chain {
            chunks: self.walk_back(newest).collect(),
        }
    }

    /// The oldest chunk of the chain that ends at `newest`, if any.
    pub fn oldest(&self, newest: ChunkRef) -> Option<Chunk<'_>> {
        self.walk_back(newest).last()
    }

    /// Frees the pages of every block range below `range`; chains end where they reach
    /// one. The caller no longer refers to any of their records (a series whose chunks all
    /// lie below `range` has dropped its chain).
    pub fn release_ranges_below(&mut self, range: i64) {
        self.live_from = self.live_from.max(range);
        for (i, page) in self.pages.iter_mut().enumerate() {
            if page.range >= range {
                continue;
            }
            match std::mem::replace(&mut page.bytes, Bytes::Free) {
                Bytes::Resident(bytes) => self.resident -= bytes.capacity(),
                Bytes::Spilled { len } => {
                    self.spilled -= len as usize;
                    if let Some(spill) = &self.spill {
                        spill.punch(i);
                    }
                }
                Bytes::Free => continue,
            }
            self.free.push(i as u32);
        }
        let pages = &self.pages;
        self.filling
            .retain(|p| !matches!(pages[*p as usize].bytes, Bytes::Free));
    }

    /// Bytes the pages in the heap hold (used or not).
    pub fn resident(&self) -> usize {
        self.resident
    }

    /// Bytes of chunk records in the spill file (not freed).
    pub fn spilled(&self) -> usize {
        self.spilled
    }
}

/// A record's chunk, from the record's bytes onwards; `checked` verifies its length and CRC
/// (`None` if either is wrong).
fn parse_record(bytes: &[u8], checked: bool) -> Option<Chunk<'_>> {
    let header = bytes.get(..HEADER)?;
    let u64_at =
        |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8-byte field"));
    let len = u16::from_le_bytes([header[LEN], header[LEN + 1]]) as usize;
    let data = bytes.get(HEADER..HEADER + len)?;
    if checked {
        let stored = u32::from_le_bytes(header[CRC..CRC + 4].try_into().expect("4-byte field"));
        if crc32c::crc32c_append(crc32c::crc32c(&header[..CRC]), data) != stored {
            return None;
        }
    }
    Some(Chunk {
        min_t: u64_at(MIN_T) as i64,
        max_t: u64_at(MAX_T) as i64,
        data,
        prev: ChunkRef(u64_at(PREV)),
        prev_range: u64_at(PREV_RANGE) as i64,
    })
}

impl Spill {
    /// Which map holds the slot of page `index`, and where in it.
    fn slot_position(index: usize) -> (usize, usize) {
        (index / SLOTS_PER_MAP, (index % SLOTS_PER_MAP) * SLOT)
    }

    /// Grows the file and its maps to cover the slot of page `index`.
    fn map_slot(&mut self, index: usize) -> std::io::Result<()> {
        let span = SLOTS_PER_MAP * SLOT;
        while self.maps.len() <= index / SLOTS_PER_MAP {
            let start = self.maps.len() * span;
            if self.file.metadata()?.len() < (start + span) as u64 {
                // Sparse: only written slots take disk space.
                self.file.set_len((start + span) as u64)?;
            }
            // SAFETY: the file is this arena's own, unnamed; its bytes change only by
            // `spill_page` writing the slot of a page that no record refers to yet (a new
            // page, or a freed one being reused), and no borrow of a slot outlives the
            // `&self` it came from, which a write (`&mut self`) cannot overlap.
            let map = unsafe {
                MmapOptions::new()
                    .offset(start as u64)
                    .len(span)
                    .map(&self.file)?
            };
            self.maps.push(map);
        }
        Ok(())
    }

    /// Gives the disk space and the page cache of page `index`'s slot back (best effort: a
    /// file system that cannot punch holes keeps them until the slot is reused).
    fn punch(&self, index: usize) {
        // SAFETY: plain fallocate on a file descriptor we own; no memory is passed.
        unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                (index * SLOT) as libc::off_t,
                SLOT as libc::off_t,
            );
        }
    }
}

/// Iterator over a chain of chunks, oldest first.
#[derive(Clone)]
pub struct Chain<'a> {
    /// Newest first: the iterator pops from the end.
    chunks: Vec<Chunk<'a>>,
}

impl<'a> Iterator for Chain<'a> {
    type Item = Chunk<'a>;

    fn next(&mut self) -> Option<Chunk<'a>> {
        self.chunks.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(a: &ChunkArena, newest: ChunkRef) -> Vec<(i64, i64, Vec<u8>)> {
        a.chain(newest)
            .map(|c| (c.min_t, c.max_t, c.data.to_vec()))
            .collect()
    }

    fn spilling() -> ChunkArena {
        let mut a = ChunkArena::default();
        a.spill_to(tempfile::tempfile().unwrap());
        a
    }

    /// Two interleaved chains of 200 chunks over four ranges, big enough to fill several
    /// pages; then ranges 0 and 1 are freed.
    fn link_and_release(mut a: ChunkArena) -> ChunkArena {
        let mut newest = [ChunkRef::NONE; 2];
        let mut want: [Vec<(i64, i64, Vec<u8>)>; 2] = Default::default();
        for i in 0..200i64 {
            let s = (i % 2) as usize;
            let data = vec![i as u8; 100 + i as usize * 7];
            newest[s] = a.push(i / 50, i * 10, i * 10 + 9, &data, newest[s]);
            want[s].push((i * 10, i * 10 + 9, data));
        }
        for s in 0..2 {
            assert_eq!(chain(&a, newest[s]), want[s]);
            assert_eq!(a.oldest(newest[s]).unwrap().min_t, want[s][0].0);
        }
        assert!(a.pages.len() > 4, "the chunks spread over several pages");

        // Dropping ranges 0 and 1 (chunks 0..100) keeps the rest of each chain readable.
        let before = a.resident();
        a.release_ranges_below(2);
        assert!(a.resident() <= before);
        for s in 0..2 {
            assert_eq!(chain(&a, newest[s]), want[s][50..]);
            assert_eq!(a.oldest(newest[s]).unwrap().min_t, want[s][50].0);
        }
        // Freed pages are reused, and a new chain does not run into the old ones.
        let pages = a.pages.len();
        let r = a.push(9, 5, 6, &[1, 2, 3], ChunkRef::NONE);
        assert_eq!(a.pages.len(), pages);
        assert_eq!(chain(&a, r), vec![(5, 6, vec![1, 2, 3])]);
        for s in 0..2 {
            assert_eq!(chain(&a, newest[s]), want[s][50..]);
        }
        a
    }

    #[test]
    fn chains_link_records_across_pages_and_ranges() {
        let a = link_and_release(ChunkArena::default());
        assert_eq!(a.spilled(), 0);
        assert!(a.pages.iter().all(|p| match &p.bytes {
            Bytes::Resident(b) => b.capacity() <= PAGE,
            _ => true,
        }));
    }

    #[test]
    fn full_pages_are_spilled_and_read_back_from_the_file() {
        let a = link_and_release(spilling());
        assert!(a.spilled() > 0, "full pages went to the file");
        // Only the page being filled per range stays in the heap.
        assert!(a.resident() <= 3 * SLOT, "{} bytes resident", a.resident());
    }

    #[test]
    fn a_spilled_arena_keeps_memory_flat_while_chunks_pile_up() {
        let mut a = spilling();
        let mut newest = vec![ChunkRef::NONE; 1000];
        let data = [7u8; 300];
        for round in 0..20i64 {
            for (s, n) in newest.iter_mut().enumerate() {
                *n = a.push(0, round * 100 + s as i64, round * 100 + s as i64, &data, *n);
            }
        }
        // 20,000 chunks of ~334 bytes: 6.7 MB, of which one page is in the heap.
        assert!(a.resident() <= SLOT, "{} bytes resident", a.resident());
        assert!(a.spilled() >= 100 * SLOT * 9 / 10);
        for (s, n) in newest.iter().enumerate() {
            let got: Vec<i64> = a.chain(*n).map(|c| c.min_t).collect();
            let want: Vec<i64> = (0..20).map(|round| round * 100 + s as i64).collect();
            assert_eq!(got, want);
            assert!(a.chain(*n).all(|c| c.data == data));
        }
    }

    #[test]
    fn a_damaged_spill_page_is_detected_not_read() {
        let file = tempfile::tempfile().unwrap();
        let writer = file.try_clone().unwrap();
        let mut a = ChunkArena::default();
        a.spill_to(file);
        let data = [7u8; 300];
        let mut newest = [ChunkRef::NONE; 2];
        for i in 0..600i64 {
            let s = (i % 2) as usize;
            newest[s] = a.push(0, i, i, &data, newest[s]);
        }
        let Bytes::Spilled { len } = a.pages[0].bytes else {
            panic!("page 0 is spilled");
        };
        assert_eq!(a.chain(newest[0]).count(), 300);
        assert_eq!(a.corrupt(), 0);

        // A writeback error loses page 0: it reads back as zeros. Hole punching does that.
        Spill::punch(a.spill.as_ref().unwrap(), 0);
        // Page 1 gets one flipped byte in its first record's data.
        let (_, start) = Spill::slot_position(1);
        writer
            .write_all_at(&[0xff], (start + HEADER + 5) as u64)
            .unwrap();
        assert!(len > 0);

        // Each chain now ends at its first damaged record, newest side intact.
        for (s, n) in newest.iter().enumerate() {
            let got: Vec<i64> = a.chain(*n).map(|c| c.min_t).collect();
            assert!(!got.is_empty() && got.len() < 300, "{} chunks", got.len());
            assert!(got.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(*got.last().unwrap(), 598 + s as i64);
            assert!(a.chain(*n).all(|c| c.data == data));
        }
        assert!(a.corrupt() >= 2, "{} damaged reads counted", a.corrupt());
    }

    #[test]
    fn a_failing_spill_file_keeps_the_chunks_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro");
        std::fs::write(&path, b"").unwrap();
        let mut a = ChunkArena::default();
        // Read-only: growing and writing it fail.
        a.spill_to(File::open(&path).unwrap());
        let mut newest = ChunkRef::NONE;
        for i in 0..100i64 {
            newest = a.push(0, i, i, &[i as u8; 500], newest);
        }
        assert_eq!(a.spilled(), 0);
        let got: Vec<(i64, Vec<u8>)> = a
            .chain(newest)
            .map(|c| (c.min_t, c.data.to_vec()))
            .collect();
        let want: Vec<(i64, Vec<u8>)> = (0..100).map(|i| (i, vec![i as u8; 500])).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_record_larger_than_a_page_gets_a_page_of_its_own() {
        for mut a in [ChunkArena::default(), spilling()] {
            let big = vec![7u8; u16::MAX as usize];
            let r = a.push(0, 1, 2, &big, ChunkRef::NONE);
            assert_eq!(a.get(r).unwrap().data, &big[..]);
            let small = a.push(0, 3, 4, &[1], r);
            assert_eq!(a.get(small).unwrap().data, &[1]);
            let after = a.push(0, 5, 6, &[2; 3000], small);
            assert_eq!(chain(&a, after).len(), 3);
        }
    }

    #[test]
    fn a_record_that_does_not_go_back_in_time_ends_the_walk() {
        let mut a = ChunkArena::default();
        let r1 = a.push(0, 0, 9, &[1], ChunkRef::NONE);
        let r2 = a.push(0, 10, 19, &[2], r1);
        // Overlaps the chunk it links to.
        let r3 = a.push(0, 5, 25, &[3], r2);
        assert_eq!(chain(&a, r2).len(), 2);
        assert_eq!(chain(&a, r3), vec![(5, 25, vec![3])]);
        // A zeroed record links to page 0's first record, which need not be older.
        let looped = a.push(0, 0, 9, &[4], ChunkRef::new(0, 0));
        assert_eq!(a.oldest(looped).unwrap().data, &[4]);
    }

    #[test]
    fn a_chain_ends_at_a_freed_range() {
        let mut a = ChunkArena::default();
        let r1 = a.push(0, 0, 9, &[1], ChunkRef::NONE);
        let r2 = a.push(1, 10, 19, &[2], r1);
        assert_eq!(a.oldest(r2).unwrap().min_t, 0);
        a.release_ranges_below(1);
        assert_eq!(chain(&a, r2), vec![(10, 19, vec![2])]);
        // The freed page is reused by a later range; the chain still ends.
        let r3 = a.push(2, 20, 29, &[3], r2);
        assert_eq!(chain(&a, r3), vec![(10, 19, vec![2]), (20, 29, vec![3])]);
    }
}
