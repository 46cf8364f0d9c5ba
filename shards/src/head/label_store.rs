//! The label sets of one head's series, as symbol ids, in two flat arrays: the label *names*
//! of each distinct list of names once (a "shape"), and every series' label *values*.
//!
//! The series of one exporter share their label names (node_exporter's `__name__, cluster,
//! instance, job, ...`), so a head of 100k flood series holds a few hundred shapes: storing
//! names once per shape instead of once per series halves the bytes of every label set
//! (~39 of ~78 bytes a series).
//!
//! Owns both arrays, shape interning and compaction. Must not know about symbols' strings,
//! postings or series: the head interns the strings and keeps each series' [`Labels`].
//! Shapes are never removed (like symbols): there are few, and a later series often reuses
//! one.

use std::collections::HashMap;

/// Where one series' labels are: its values from `at` in the store's values, its names in
/// shape `shape`. `Labels::NONE` for a collected series.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Labels {
    at: u32,
    shape: u32,
}

impl Labels {
    /// No labels: a collected series, or a placeholder for an id lost from the WAL.
    pub const NONE: Labels = Labels {
        at: 0,
        shape: u32::MAX,
    };

    /// Whether this is [`Labels::NONE`].
    pub fn is_none(self) -> bool {
        self.shape == u32::MAX
    }
}

/// Label sets of one head.
#[derive(Default)]
pub struct LabelStore {
    /// Shapes back to back, each as its length followed by its name ids (ascending by
    /// name, as the series' labels are).
    names: Vec<u32>,
    /// Start of a shape in `names`, by its name ids.
    shapes: HashMap<Box<[u32]>, u32, ahash::RandomState>,
    /// Every series' value ids back to back, in the order of its shape's names.
    values: Vec<u32>,
    /// Entries of `values` that no live series refers to (of collected series).
    dead: usize,
    /// The name ids of the set being pushed (kept to spare an allocation per new series).
    scratch: Vec<u32>,
}

impl LabelStore {
    /// Stores a label set given as (name id, value id) pairs, ascending by name.
    pub fn push(&mut self, pairs: impl IntoIterator<Item = (u32, u32)>) -> Labels {
        let at = self.values.len();
        self.scratch.clear();
        for (n, v) in pairs {
            self.scratch.push(n);
            self.values.push(v);
        }
        let shape = match self.shapes.get(self.scratch.as_slice()) {
            Some(shape) => *shape,
            None => {
                let shape = u32::try_from(self.names.len()).expect("fewer than 2^32 name ids");
                self.names.push(self.scratch.len() as u32);
                self.names.extend_from_slice(&self.scratch);
                self.shapes.insert(self.scratch.as_slice().into(), shape);
                shape
            }
        };
        Labels {
            at: u32::try_from(at).expect("fewer than 2^32 label values per head"),
            shape,
        }
    }

    /// The name ids and value ids of `labels` (equally long; empty for [`Labels::NONE`]).
    #[inline]
    pub fn get(&self, labels: Labels) -> (&[u32], &[u32]) {
        if labels.is_none() {
            return (&[], &[]);
        }
        let shape = labels.shape as usize;
        let len = self.names[shape] as usize;
        let at = labels.at as usize;
        (
            &self.names[shape + 1..shape + 1 + len],
            &self.values[at..at + len],
        )
    }

    /// The value id of name id `name` in `labels`, if the set has that name.
    pub fn value_of(&self, labels: Labels, name: u32) -> Option<u32> {
        let (names, values) = self.get(labels);
        names.iter().position(|n| *n == name).map(|i| values[i])
    }

    /// Marks `labels` as no longer referred to; their space is reclaimed by a later
    /// [`compact`](Self::compact).
    pub fn release(&mut self, labels: Labels) {
        self.dead += self.get(labels).1.len();
    }

    /// Whether enough values are dead (half) that [`compact`](Self::compact) is worth it:
    /// churn would otherwise grow the store without bound.
    pub fn wants_compaction(&self) -> bool {
        self.dead * 2 > self.values.len()
    }

    /// Moves the values of the live sets (every one the caller still holds, each yielded
    /// once) into a new array without the released ones, updating each set in place.
    pub fn compact<'a>(&mut self, live: impl Iterator<Item = &'a mut Labels>) {
        let mut values = Vec::with_capacity(self.values.len() - self.dead);
        for labels in live.filter(|l| !l.is_none()) {
            let (_, old) = self.get(*labels);
            labels.at = values.len() as u32;
            values.extend_from_slice(old);
        }
        self.values = values;
        self.dead = 0;
    }

    /// Number of value ids stored, live or dead.
    #[cfg(test)]
    pub(crate) fn stored_values(&self) -> usize {
        self.values.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_of_one_shape_share_their_names() {
        let mut s = LabelStore::default();
        let a = s.push([(1, 10), (2, 20)]);
        let b = s.push([(1, 11), (2, 21)]);
        let c = s.push([(1, 12), (3, 30)]);
        assert_eq!(s.get(a), (&[1, 2][..], &[10, 20][..]));
        assert_eq!(s.get(b), (&[1, 2][..], &[11, 21][..]));
        assert_eq!(s.get(c), (&[1, 3][..], &[12, 30][..]));
        // Two shapes, each stored once with its length.
        assert_eq!(s.names.len(), 6);
        assert_eq!(s.value_of(c, 3), Some(30));
        assert_eq!(s.value_of(b, 3), None);
        assert_eq!(s.get(Labels::NONE), (&[][..], &[][..]));
    }

    #[test]
    fn compaction_keeps_live_sets_and_drops_released_ones() {
        let mut s = LabelStore::default();
        let mut sets: Vec<Labels> = (0..10).map(|i| s.push([(1, i), (2, 100 + i)])).collect();
        for l in sets.iter_mut().take(6) {
            s.release(*l);
            *l = Labels::NONE;
        }
        assert!(s.wants_compaction());
        s.compact(sets.iter_mut());
        assert_eq!(s.stored_values(), 8);
        assert!(!s.wants_compaction());
        for (i, l) in sets.iter().enumerate().skip(6) {
            assert_eq!(s.get(*l), (&[1, 2][..], &[i as u32, 100 + i as u32][..]));
        }
    }
}
