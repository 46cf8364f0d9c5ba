//! The head's read side: a series' labels and samples, and selecting series with Prometheus'
//! matcher semantics over the postings.
//!
//! Owns matching against the head (blocks have their own). Must not change the head.
use sluice_storage::xor::XorIter;

use super::Head;
use sluice_core::Matcher;

impl Head {
    /// Labels of series `id`, ascending by name (none for a collected series).
    pub fn labels(&self, id: u32) -> impl Iterator<Item = (&str, &str)> + Clone + '_ {
        let (names, values) = self.label_sets.get(self.series[id as usize].labels);
        names
            .iter()
            .zip(values)
            .map(|(n, v)| (self.symbols.get(*n), self.symbols.get(*v)))
    }

    /// Whether series `id` is live (not collected, not a placeholder for a lost id).
    pub fn is_live(&self, id: u32) -> bool {
        !self.series[id as usize].labels.is_none()
    }

    /// The portable hash of series `id`.
    pub fn hash(&self, id: u32) -> u64 {
        self.series[id as usize].hash
    }

    /// Whether series `id` has a sample in `[mint, maxt]`.
    pub fn overlaps(&self, id: u32, mint: i64, maxt: i64) -> bool {
        let s = &self.series[id as usize];
        match (s.min_t(&self.chunks), s.max_t(&self.chunks)) {
            (Some(min), Some(max)) => min <= maxt && max >= mint,
            _ => false,
        }
    }

    /// Calls `f` for every sample of series `id` in `[mint, maxt]`, in time order.
    pub fn samples(&self, id: u32, mint: i64, maxt: i64, mut f: impl FnMut(i64, f64)) {
        let s = &self.series[id as usize];
        for c in self.chunks_of(id) {
            if c.max_t < mint || c.min_t > maxt {
                continue;
            }
            for (t, v) in XorIter::new(c.data) {
                if t >= mint && t <= maxt {
                    f(t, v);
                }
            }
        }
        for (t, v) in s.open.iter() {
            if t >= mint && t <= maxt {
                f(t, v);
            }
        }
    }

    /// Ids of the series matching every matcher (Prometheus semantics: a matcher that
    /// matches "" also matches series without the label), ascending.
    pub fn select(&self, matchers: &[Matcher]) -> Vec<u32> {
        // Narrow with the matchers that need the label to be present, then check all.
        let mut candidates: Option<Vec<u32>> = None;
        for m in matchers.iter().filter(|m| !m.matches("")) {
            let Some(name) = self.symbols.lookup(&m.name) else {
                return Vec::new();
            };
            let mut ids: Vec<u32> = Vec::new();
            let values = self.values.get(&name).map(Vec::as_slice).unwrap_or(&[]);
            let matching: Vec<u32> = values
                .iter()
                .copied()
                .filter(|v| m.matches(self.symbols.get(*v)))
                .collect();
            if matching.len() == 1 {
                ids.extend_from_slice(&self.postings[&(name, matching[0])]);
            } else {
                for v in matching {
                    ids.extend_from_slice(&self.postings[&(name, v)]);
                }
                ids.sort_unstable();
                ids.dedup();
            }
            candidates = Some(match candidates {
                None => ids,
                Some(prev) => intersect(&prev, &ids),
            });
            if candidates.as_ref().is_some_and(Vec::is_empty) {
                return Vec::new();
            }
        }
        let candidates = candidates.unwrap_or_else(|| (0..self.series.len() as u32).collect());
        // A name the head has never seen is absent from every series.
        let names: Vec<Option<u32>> = matchers
            .iter()
            .map(|m| self.symbols.lookup(&m.name))
            .collect();
        candidates
            .into_iter()
            .filter(|id| {
                let labels = self.series[*id as usize].labels;
                !labels.is_none()
                    && matchers.iter().zip(&names).all(|(m, name)| {
                        let value = name
                            .and_then(|n| self.label_sets.value_of(labels, n))
                            .map_or("", |v| self.symbols.get(v));
                        m.matches(value)
                    })
            })
            .collect()
    }
}

fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}
