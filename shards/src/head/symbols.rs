//! The interned label strings of one head: every distinct name and value is stored once, in
//! one arena, and series refer to them by `u32` id.
//!
//! Owns the string arena and its lookup table. Must not know about series or postings (the
//! head keeps those). Strings are never removed: a head lives at most one block range plus
//! the time to cut it, and a later series often reuses the same values.

use hashbrown::HashTable;

/// Interned strings.
pub struct Symbols {
    /// Every string, back to back. Only ever extended with whole `&str`s, so any span
    /// recorded in `ends` is valid UTF-8.
    bytes: Vec<u8>,
    /// End of string `id` in `bytes` (its start is the previous end).
    ends: Vec<u64>,
    /// Ids, found by the hash of their string.
    index: HashTable<u32>,
    hasher: ahash::RandomState,
}

impl Default for Symbols {
    fn default() -> Self {
        Symbols {
            bytes: Vec::new(),
            ends: Vec::new(),
            index: HashTable::new(),
            hasher: ahash::RandomState::new(),
        }
    }
}

impl Symbols {
    /// The id of `s`, interning it first if it is new.
    pub fn intern(&mut self, s: &str) -> u32 {
        let hash = self.hasher.hash_one(s);
        let Symbols {
            bytes,
            ends,
            index,
            hasher,
        } = self;
        let found = index.find(hash, |id| string(bytes, ends, *id) == s);
        if let Some(id) = found {
            return *id;
        }
        let id = ends.len() as u32;
        bytes.extend_from_slice(s.as_bytes());
        ends.push(bytes.len() as u64);
        index.insert_unique(hash, id, |id| hasher.hash_one(string(bytes, ends, *id)));
        id
    }

    /// Interns validated UTF-8 bytes (lossily for anything else, which the decoder rules out).
    pub fn intern_bytes(&mut self, b: &[u8]) -> u32 {
        match std::str::from_utf8(b) {
            Ok(s) => self.intern(s),
            Err(_) => self.intern(&String::from_utf8_lossy(b)),
        }
    }

    /// The id of `s`, if it is known.
    pub fn lookup(&self, s: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(s);
        self.index
            .find(hash, |id| string(&self.bytes, &self.ends, *id) == s)
            .copied()
    }

    /// The string of symbol `id`.
    #[inline]
    pub fn get(&self, id: u32) -> &str {
        string(&self.bytes, &self.ends, id)
    }

    /// The bytes of symbol `id` (which this table handed out): the lookup every append
    /// makes for each label it confirms, so without the UTF-8 view or a second bounds check.
    #[inline(always)]
    pub fn bytes(&self, id: u32) -> &[u8] {
        let id = id as usize;
        let end = self.ends[id] as usize;
        let start = match id.checked_sub(1) {
            Some(prev) => self.ends[prev] as usize,
            None => 0,
        };
        self.bytes.get(start..end).unwrap_or(&[])
    }

    /// Number of distinct strings.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ends.len()
    }
}

#[inline]
fn string<'a>(bytes: &'a [u8], ends: &[u64], id: u32) -> &'a str {
    let id = id as usize;
    let start = if id == 0 { 0 } else { ends[id - 1] as usize };
    let s = &bytes[start..ends[id] as usize];
    // SAFETY: `bytes` is only ever extended with the bytes of a whole `&str` and each span
    // in `ends` is exactly one of them, so `s` is valid UTF-8.
    unsafe { std::str::from_utf8_unchecked(s) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_each_string_once() {
        let mut s = Symbols::default();
        let a = s.intern("job");
        let b = s.intern("node");
        let e = s.intern("");
        assert_eq!(s.intern("job"), a);
        assert_eq!(s.intern_bytes(b"node"), b);
        assert_eq!((s.get(a), s.get(b), s.get(e)), ("job", "node", ""));
        assert_eq!(s.lookup("node"), Some(b));
        assert_eq!(s.lookup("nod"), None);
        assert_eq!(s.len(), 3);
        let many: Vec<u32> = (0..10_000).map(|i| s.intern(&format!("v{i}"))).collect();
        for (i, id) in many.iter().enumerate() {
            assert_eq!(s.get(*id), format!("v{i}"));
            assert_eq!(s.lookup(&format!("v{i}")), Some(*id));
        }
        assert_eq!(s.intern_bytes(b"\xff"), s.intern("\u{FFFD}"));
    }
}
