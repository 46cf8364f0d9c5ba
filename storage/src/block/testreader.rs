//! Test-only minimal reader for what this module writes: parses an index file (checking
//! magic, every CRC, alignment and the sequential series layout) and chunk segments, so the
//! encoders can be round-tripped without Prometheus. Deliberately written from the format
//! description, not from the writer's code.

use std::collections::{BTreeMap, HashMap};

use super::index::{ChunkMeta, Toc};

pub(crate) struct ParsedSeries {
    pub series_ref: u32,
    pub labels: Vec<(String, String)>,
    pub chunks: Vec<ChunkMeta>,
}

pub(crate) struct ParsedIndex {
    pub toc: Toc,
    pub symbols: Vec<String>,
    pub series: Vec<ParsedSeries>,
    pub postings: HashMap<(String, String), Vec<u32>>,
    pub postings_order: Vec<(String, String)>,
    pub label_indices: BTreeMap<String, Vec<String>>,
}

struct Dec<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Dec<'a> {
    fn at(b: &'a [u8], p: usize) -> Self {
        Dec { b, p }
    }
    fn be32(&mut self) -> u32 {
        let v = u32::from_be_bytes(self.b[self.p..self.p + 4].try_into().unwrap());
        self.p += 4;
        v
    }
    fn be64(&mut self) -> u64 {
        let v = u64::from_be_bytes(self.b[self.p..self.p + 8].try_into().unwrap());
        self.p += 8;
        v
    }
    fn uvarint(&mut self) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let x = self.b[self.p];
            self.p += 1;
            v |= u64::from(x & 0x7f) << shift;
            if x < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    fn varint(&mut self) -> i64 {
        let u = self.uvarint();
        ((u >> 1) as i64) ^ -((u & 1) as i64)
    }
    fn str(&mut self) -> String {
        let n = self.uvarint() as usize;
        let s = std::str::from_utf8(&self.b[self.p..self.p + n])
            .unwrap()
            .to_string();
        self.p += n;
        s
    }
    /// Reads a `len(4) body CRC` section at the current position; returns the body range.
    fn section(&mut self) -> std::ops::Range<usize> {
        let len = self.be32() as usize;
        let body = self.p..self.p + len;
        let crc = u32::from_be_bytes(self.b[body.end..body.end + 4].try_into().unwrap());
        assert_eq!(
            crc,
            crc32c::crc32c(&self.b[body.clone()]),
            "section CRC at {}",
            self.p - 4
        );
        body
    }
}

pub(crate) fn parse_index(b: &[u8]) -> ParsedIndex {
    assert_eq!(&b[..5], &[0xBA, 0xAA, 0xD7, 0x00, 2], "magic and version 2");
    let toc_at = b.len() - 52;
    let crc = u32::from_be_bytes(b[toc_at + 48..].try_into().unwrap());
    assert_eq!(crc, crc32c::crc32c(&b[toc_at..toc_at + 48]), "TOC CRC");
    let mut d = Dec::at(b, toc_at);
    let toc = Toc {
        symbols: d.be64(),
        series: d.be64(),
        label_indices: d.be64(),
        label_indices_table: d.be64(),
        postings: d.be64(),
        postings_table: d.be64(),
    };

    // Symbols.
    let mut d = Dec::at(b, toc.symbols as usize);
    let body = d.section();
    let mut d = Dec::at(b, body.start);
    let n = d.be32();
    let symbols: Vec<String> = (0..n).map(|_| d.str()).collect();
    assert_eq!(d.p, body.end, "symbol table length");
    assert!(symbols.windows(2).all(|w| w[0] < w[1]), "symbols ascending");

    // Series, scanned sequentially like Prometheus' writer does when it builds postings.
    let mut series = Vec::new();
    let mut p = toc.series as usize;
    let end = toc.label_indices as usize;
    while p < end {
        if b[p] == 0 {
            p += 1; // Padding (a series entry's length varint is never 0).
            continue;
        }
        assert_eq!(p % 16, 0, "series entry aligned");
        let mut d = Dec::at(b, p);
        let len = d.uvarint() as usize;
        let body = d.p..d.p + len;
        let crc = u32::from_be_bytes(b[body.end..body.end + 4].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&b[body.clone()]), "series CRC");
        let nl = d.uvarint();
        let labels = (0..nl)
            .map(|_| {
                let n = symbols[d.uvarint() as usize].clone();
                let v = symbols[d.uvarint() as usize].clone();
                (n, v)
            })
            .collect();
        let nc = d.uvarint();
        let mut chunks: Vec<ChunkMeta> = Vec::new();
        for i in 0..nc {
            let c = if i == 0 {
                let min_time = d.varint();
                let max_time = min_time + d.uvarint() as i64;
                ChunkMeta {
                    min_time,
                    max_time,
                    chunk_ref: d.uvarint(),
                }
            } else {
                let prev = chunks.last().unwrap();
                let min_time = prev.max_time + d.uvarint() as i64;
                let max_time = min_time + d.uvarint() as i64;
                let chunk_ref = (prev.chunk_ref as i64 + d.varint()) as u64;
                ChunkMeta {
                    min_time,
                    max_time,
                    chunk_ref,
                }
            };
            chunks.push(c);
        }
        assert_eq!(d.p, body.end, "series entry length");
        series.push(ParsedSeries {
            series_ref: (p / 16) as u32,
            labels,
            chunks,
        });
        p = body.end + 4;
    }

    // Postings offset table and the lists it points at.
    let mut d = Dec::at(b, toc.postings_table as usize);
    let body = d.section();
    let mut d = Dec::at(b, body.start);
    let n = d.be32();
    let mut postings = HashMap::new();
    let mut postings_order = Vec::new();
    for _ in 0..n {
        assert_eq!(d.uvarint(), 2);
        let key = (d.str(), d.str());
        let off = d.uvarint() as usize;
        assert_eq!(off % 4, 0, "postings aligned");
        assert!(off as u64 >= toc.postings && off < toc.label_indices_table as usize);
        let mut pd = Dec::at(b, off);
        let pb = pd.section();
        let mut pd = Dec::at(b, pb.start);
        let cnt = pd.be32();
        assert_eq!(pb.len(), 4 + 4 * cnt as usize);
        let list: Vec<u32> = (0..cnt).map(|_| pd.be32()).collect();
        assert!(list.windows(2).all(|w| w[0] < w[1]), "postings ascending");
        postings_order.push(key.clone());
        postings.insert(key, list);
    }
    assert_eq!(d.p, body.end);

    // Label offset table and label indices.
    let mut d = Dec::at(b, toc.label_indices_table as usize);
    let body = d.section();
    let mut d = Dec::at(b, body.start);
    let n = d.be32();
    let mut label_indices = BTreeMap::new();
    for _ in 0..n {
        assert_eq!(d.uvarint(), 1);
        let name = d.str();
        let off = d.uvarint() as usize;
        assert_eq!(off % 4, 0, "label index aligned");
        let mut ld = Dec::at(b, off);
        let lb = ld.section();
        let mut ld = Dec::at(b, lb.start);
        assert_eq!(ld.be32(), 1, "one name per label index");
        let cnt = ld.be32();
        let values = (0..cnt)
            .map(|_| symbols[ld.be32() as usize].clone())
            .collect();
        assert_eq!(ld.p, lb.end);
        label_indices.insert(name, values);
    }
    assert_eq!(d.p, body.end);

    ParsedIndex {
        toc,
        symbols,
        series,
        postings,
        postings_order,
        label_indices,
    }
}

/// Reads the chunk at `chunk_ref` from segment files given in file-index order; checks the
/// header and CRC. Returns (encoding, data).
pub(crate) fn read_chunk(segments: &[Vec<u8>], chunk_ref: u64) -> (u8, &[u8]) {
    let seg = &segments[(chunk_ref >> 32) as usize];
    assert_eq!(
        &seg[..8],
        &[0x85, 0xBD, 0x40, 0xDD, 1, 0, 0, 0],
        "segment header"
    );
    let mut d = Dec::at(seg, chunk_ref as u32 as usize);
    let len = d.uvarint() as usize;
    let enc = seg[d.p];
    let data = &seg[d.p + 1..d.p + 1 + len];
    let crc = u32::from_be_bytes(seg[d.p + 1 + len..d.p + 5 + len].try_into().unwrap());
    assert_eq!(crc, crc32c::crc32c(&seg[d.p..d.p + 1 + len]), "chunk CRC");
    (enc, data)
}
