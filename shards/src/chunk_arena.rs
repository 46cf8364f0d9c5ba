//! The closed chunks of one head, packed back to back in large pages instead of one heap
//! allocation each, and chained per series.
//!
//! A head holds one closed chunk of ~300 bytes per series every 30 minutes of a 15s scrape.
//! As a `Vec` of boxed chunks per series, each chunk cost a 32-byte descriptor, the `Vec`'s
//! own allocation and the allocator's header on the data: ~90 bytes beside 300, and 24 bytes
//! in every series for the `Vec`. Here a chunk is a 26-byte record header followed by its
//! data, and a series keeps only the [`ChunkRef`] of its oldest chunk; each record links to
//! the series' next one.
//!
//! Chunks never span a block range, and every page holds chunks of one range only, so a cut
//! frees whole pages of the range it persisted: no copying, no fragmentation.
//!
//! Owns the page layout, the record format and page reuse. Must not know about series,
//! labels or cutting policy: the head links the records and decides what is unreachable.

/// Where a chunk record lives: page index (high 32 bits) and byte offset in the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef(u64);

impl ChunkRef {
    /// No chunk: the end of a chain, or a series without closed chunks.
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

/// A record: next (u64), min_t (i64), max_t (i64), data length (u16), all little-endian,
/// then the data.
const HEADER: usize = 8 + 8 + 8 + 2;
const NEXT: usize = 0;
const MIN_T: usize = 8;
const MAX_T: usize = 16;
const LEN: usize = 24;

/// Bytes per page. Small on purpose: a page comes from the allocator's free space, and
/// when every series closes a chunk at once (senders scrape in step), that free space is the
/// open chunks' buffers just released, in pieces of a few hundred bytes that coalesce. Pages
/// of 4 KiB fill those holes as they form; 64 KiB or 1 MiB pages took fresh memory and left
/// the holes resident (RSS per series at 100k series, 158 samples: 887 B here, 994 B with
/// 64 KiB, 1,135 B with 1 MiB).
const PAGE: usize = 4 << 10;

/// A closed chunk, read from its record.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a> {
    pub min_t: i64,
    pub max_t: i64,
    /// XOR chunk data (2-byte sample count + bitstream).
    pub data: &'a [u8],
    next: ChunkRef,
}

struct Page {
    /// Records back to back; the capacity is fixed when the page is made, so records never
    /// move.
    bytes: Vec<u8>,
    /// The block range (index) every chunk of the page lies in.
    range: i64,
}

/// Closed chunks of one head.
#[derive(Default)]
pub struct ChunkArena {
    /// Indexed by [`ChunkRef::page`]; a freed page is left empty for reuse.
    pages: Vec<Page>,
    free: Vec<u32>,
    /// The page being filled for each block range that has one (rarely more than two).
    filling: Vec<u32>,
    /// Capacity of the live pages.
    capacity: usize,
}

impl ChunkArena {
    /// Stores a closed chunk of block range `range` (its index, `min_t / range_ms`), as the
    /// end of a chain. Link it with [`set_next`](Self::set_next).
    ///
    /// # Panics
    /// If `data` is longer than `u16::MAX` bytes (an XOR chunk of 120 samples is at most
    /// ~2.3 KiB).
    pub fn push(&mut self, range: i64, min_t: i64, max_t: i64, data: &[u8]) -> ChunkRef {
        let len = u16::try_from(data.len()).expect("chunk longer than 64 KiB");
        let need = HEADER + data.len();
        let page = self.page_for(range, need);
        let bytes = &mut self.pages[page].bytes;
        let offset = bytes.len();
        bytes.extend_from_slice(&ChunkRef::NONE.0.to_le_bytes());
        bytes.extend_from_slice(&min_t.to_le_bytes());
        bytes.extend_from_slice(&max_t.to_le_bytes());
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(data);
        ChunkRef::new(page, offset)
    }

    /// A page of `range` with room for `need` bytes.
    fn page_for(&mut self, range: i64, need: usize) -> usize {
        let filling = self
            .filling
            .iter()
            .position(|p| self.pages[*p as usize].range == range);
        if let Some(i) = filling {
            let page = &self.pages[self.filling[i] as usize].bytes;
            if page.capacity() - page.len() >= need {
                return self.filling[i] as usize;
            }
            // The page is full (its last few bytes stay unused).
            self.filling.swap_remove(i);
        }
        let size = PAGE.max(need);
        self.capacity += size;
        let page = Page {
            bytes: Vec::with_capacity(size),
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

    /// The chunk at `r` (which must be a live record).
    pub fn get(&self, r: ChunkRef) -> Chunk<'_> {
        let bytes = &self.pages[r.page()].bytes[r.offset()..];
        let u64_at =
            |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8-byte field"));
        let len = u16::from_le_bytes([bytes[LEN], bytes[LEN + 1]]) as usize;
        Chunk {
            min_t: u64_at(MIN_T) as i64,
            max_t: u64_at(MAX_T) as i64,
            data: &bytes[HEADER..HEADER + len],
            next: ChunkRef(u64_at(NEXT)),
        }
    }

    /// Makes `next` follow `r` in its chain.
    pub fn set_next(&mut self, r: ChunkRef, next: ChunkRef) {
        let bytes = &mut self.pages[r.page()].bytes[r.offset()..];
        bytes[NEXT..NEXT + 8].copy_from_slice(&next.0.to_le_bytes());
    }

    /// The chain that starts at `first`, in order.
    pub fn chain(&self, first: ChunkRef) -> Chain<'_> {
        Chain {
            arena: self,
            next: first,
        }
    }

    /// The last record of the chain that starts at `first` (`NONE` for an empty chain).
    pub fn last_ref(&self, first: ChunkRef) -> ChunkRef {
        let mut at = first;
        while !at.is_none() {
            let next = self.get(at).next;
            if next.is_none() {
                break;
            }
            at = next;
        }
        at
    }

    /// The first record of the chain at `first` whose chunk ends at or after `before`
    /// (`NONE` if there is none): what remains of a chain once older chunks are dropped.
    pub fn first_from(&self, first: ChunkRef, before: i64) -> ChunkRef {
        let mut at = first;
        while !at.is_none() {
            let c = self.get(at);
            if c.max_t >= before {
                break;
            }
            at = c.next;
        }
        at
    }

    /// Frees the pages of every block range below `range`. The caller has unlinked all
    /// their records (chains only ever drop a prefix, and a range's chunks end before the
    /// next range starts).
    pub fn release_ranges_below(&mut self, range: i64) {
        for (i, page) in self.pages.iter_mut().enumerate() {
            if page.range < range && page.bytes.capacity() > 0 {
                self.capacity -= page.bytes.capacity();
                page.bytes = Vec::new();
                self.free.push(i as u32);
            }
        }
        let pages = &self.pages;
        self.filling
            .retain(|p| pages[*p as usize].bytes.capacity() > 0);
    }

    /// Bytes the pages hold (used or not).
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Iterator over a chain of chunks, oldest first.
#[derive(Clone)]
pub struct Chain<'a> {
    arena: &'a ChunkArena,
    next: ChunkRef,
}

impl<'a> Iterator for Chain<'a> {
    type Item = Chunk<'a>;

    fn next(&mut self) -> Option<Chunk<'a>> {
        if self.next.is_none() {
            return None;
        }
        let c = self.arena.get(self.next);
        self.next = c.next;
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(a: &ChunkArena, first: ChunkRef) -> Vec<(i64, i64, Vec<u8>)> {
        a.chain(first)
            .map(|c| (c.min_t, c.max_t, c.data.to_vec()))
            .collect()
    }

    #[test]
    fn chains_link_records_across_pages_and_ranges() {
        let mut a = ChunkArena::default();
        // Two interleaved chains, with chunks big enough to fill several pages.
        let (mut first, mut last) = ([ChunkRef::NONE; 2], [ChunkRef::NONE; 2]);
        let mut want: [Vec<(i64, i64, Vec<u8>)>; 2] = Default::default();
        for i in 0..200i64 {
            let s = (i % 2) as usize;
            let data = vec![i as u8; 100 + i as usize * 7];
            let r = a.push(i / 50, i * 10, i * 10 + 9, &data);
            if first[s].is_none() {
                first[s] = r;
            } else {
                a.set_next(last[s], r);
            }
            last[s] = r;
            want[s].push((i * 10, i * 10 + 9, data));
        }
        for s in 0..2 {
            assert_eq!(chain(&a, first[s]), want[s]);
            assert_eq!(a.last_ref(first[s]), last[s]);
        }
        assert!(a.pages.len() > 4, "the chunks spread over several pages");
        assert!(a.pages.iter().all(|p| p.bytes.len() <= p.bytes.capacity()));

        // Dropping ranges 0 and 1 (chunks 0..100) keeps the rest of each chain readable.
        let rest: Vec<ChunkRef> = first.iter().map(|f| a.first_from(*f, 1000)).collect();
        let before = a.capacity();
        a.release_ranges_below(2);
        assert!(a.capacity() < before);
        for s in 0..2 {
            assert_eq!(chain(&a, rest[s]), want[s][50..]);
        }
        // Freed pages are reused.
        let pages = a.pages.len();
        let r = a.push(9, 5, 6, &[1, 2, 3]);
        assert_eq!(a.pages.len(), pages);
        assert_eq!(chain(&a, r), vec![(5, 6, vec![1, 2, 3])]);
    }

    #[test]
    fn a_record_larger_than_a_page_gets_a_page_of_its_own() {
        let mut a = ChunkArena::default();
        let big = vec![7u8; PAGE * 2];
        let r = a.push(0, 1, 2, &big);
        assert_eq!(a.get(r).data, &big[..]);
        let small = a.push(0, 3, 4, &[1]);
        assert_eq!(a.get(small).data, &[1]);
    }

    #[test]
    fn the_first_record_at_or_after_a_time() {
        let mut a = ChunkArena::default();
        let r1 = a.push(0, 0, 9, &[1]);
        let r2 = a.push(0, 10, 19, &[2]);
        a.set_next(r1, r2);
        assert_eq!(a.first_from(r1, 0), r1);
        assert_eq!(a.first_from(r1, 9), r1);
        assert_eq!(a.first_from(r1, 10), r2);
        assert_eq!(a.first_from(r1, 20), ChunkRef::NONE);
        assert_eq!(a.first_from(ChunkRef::NONE, 0), ChunkRef::NONE);
    }
}
