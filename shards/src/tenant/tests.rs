//! Unit tests of a tenant: replay under the WAL's id rules, and appends that never store
//! into another series.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_core::{check_hash, put_series_key, Identity};
use sluice_storage::wal::{self, record, FsyncPolicy, RecordType};

use super::*;
use crate::batch::SeriesBatch;
use crate::config::ShardConfig;
use crate::head::Head;
use crate::outcome::ApplyOutcome;
use crate::shard::Shard;
use sluice_storage::wal::record::{begin_record, end_record, put_sample, put_samples_base};

fn config(data_dir: &std::path::Path) -> Arc<ShardConfig> {
    Arc::new(ShardConfig {
        data_dir: data_dir.to_path_buf(),
        cores: 1,
        fsync: FsyncPolicy::Never,
        tenant_label: "tenant_id".to_string(),
        block_range_ms: crate::head::DEFAULT_BLOCK_RANGE_MS,
        too_far_in_future_ms: None,
        external_labels: Vec::new(),
        active_series: Arc::new(crate::active::ActiveSeries::default()),
    })
}

fn frame(buf: &mut Vec<u8>, ty: RecordType, fill: impl FnOnce(&mut Vec<u8>)) {
    let s = begin_record(buf, ty);
    fill(buf);
    end_record(buf, s);
}

fn samples(buf: &mut Vec<u8>, samples: &[(u32, i64)]) {
    frame(buf, RecordType::Samples, |b| {
        put_samples_base(b, 0);
        for (id, t) in samples {
            put_sample(b, 0, *id, *t, f64::from(*id));
        }
    });
}

/// A log whose series records for ids 3 and 7 were lost (3's id was handed out again by a
/// build from before the id rules): the head keeps only samples logged after their own
/// series record, counts the rest, and hands out new ids past every id the log names.
#[test]
fn replay_drops_orphaned_samples_and_reserves_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = wal::core_dir(&dir.path().join("t"), 0);
    std::fs::create_dir_all(&wal_dir).unwrap();
    let mut seg = Vec::new();
    frame(&mut seg, RecordType::Series, |b| {
        record::put_series(b, 0, [("__name__", "a")]);
        record::put_series(b, 1, [("__name__", "b")]);
    });
    samples(&mut seg, &[(0, 1_000), (1, 1_000), (3, 1_000), (7, 1_000)]);
    frame(&mut seg, RecordType::Series, |b| {
        record::put_series(b, 3, [("__name__", "reused")]);
    });
    samples(&mut seg, &[(3, 2_000), (0, 2_000)]);
    std::fs::write(wal_dir.join(wal::segment_name(0)), &seg).unwrap();
    let shard = Shard::open(0, config(dir.path()), BTreeMap::new()).unwrap();
    let t = shard.tenant("t").unwrap();
    let mut head = t.head.borrow_mut();
    let got = |head: &Head, id| {
        let mut v = Vec::new();
        head.samples(id, i64::MIN, i64::MAX, |t, _| v.push(t));
        v
    };
    assert_eq!(got(&head, 0), [1_000, 2_000]);
    assert_eq!(got(&head, 1), [1_000]);
    assert_eq!(
        got(&head, 3),
        [2_000],
        "only what was logged after its record"
    );
    assert_eq!(head.num_series(), 3);
    assert_eq!(
        shard.replay_damage(),
        ReplayDamage {
            corrupt_records: 0,
            regions: 0,
            unknown_series_samples: 2
        }
    );
    let mut k = Vec::new();
    put_series_key(&mut k, [(&b"__name__"[..], &b"new"[..])]);
    let id = head.create(0, &k);
    assert_eq!(id, 8, "id 7 is named by a sample: it stays taken");
    drop(head);
    let snap = shard.snapshot();
    assert_eq!(snap.wal_replay_unknown_series_samples, 2);
}

fn apply(t: &Tenant, batch: &Given) -> ApplyOutcome {
    t.apply(batch, &mut Vec::new(), &mut Vec::new(), None)
}

/// A batch whose series carry given identities (as the decoder's table of known series
/// hands them out).
struct Given(Vec<(Identity, Vec<u8>, sluice_core::Sample)>);

impl SeriesBatch for Given {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn hash(&self, i: usize) -> u64 {
        self.0[i].0.hash
    }
    fn check(&self, i: usize) -> u64 {
        self.0[i].0.check
    }
    fn key<'s>(&'s self, i: usize, _: &'s mut Vec<u8>) -> &'s [u8] {
        &self.0[i].1
    }
    fn samples(&self, i: usize) -> impl Iterator<Item = sluice_core::Sample> {
        std::iter::once(self.0[i].2)
    }
}

/// A series handed another series' identity (a fingerprint collision in the decoder)
/// is neither stored into that series nor created under the wrong identity: the outcome
/// names it, and the series it was mistaken for keeps only its own samples.
#[test]
fn an_identity_that_is_not_the_labels_own_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let shard = Shard::open(0, config(dir.path()), BTreeMap::new()).unwrap();
    let t = shard.tenant("t").unwrap();
    let key = |v: &str| {
        let mut k = Vec::new();
        put_series_key(&mut k, [(&b"__name__"[..], v.as_bytes())]);
        k
    };
    let identity = |k: &[u8]| Identity {
        hash: t.hasher.hash_key(k),
        check: check_hash(k),
    };
    let sample = |ts, v| sluice_core::Sample {
        timestamp: ts,
        value: v,
    };
    let (a, b) = (key("a"), key("b"));
    let out = apply(&t, &Given(vec![(identity(&a), a.clone(), sample(1, 1.0))]));
    assert_eq!((out.new_series, out.appended), (1, 1));
    // `b` arrives with `a`'s identity (both halves), then with `a`'s hash only.
    let wrong_full = identity(&a);
    let wrong_hash = Identity {
        check: check_hash(&b),
        ..identity(&a)
    };
    for wrong in [wrong_full, wrong_hash] {
        let out = apply(&t, &Given(vec![(wrong, b.clone(), sample(2, 2.0))]));
        assert_eq!((out.new_series, out.appended), (0, 0), "{wrong:?}");
        assert_eq!(out.misidentified, vec![wrong]);
    }
    let head = t.head.borrow();
    assert_eq!(head.num_series(), 1);
    let mut got = Vec::new();
    head.samples(0, i64::MIN, i64::MAX, |ts, v| got.push((ts, v)));
    assert_eq!(got, [(1, 1.0)]);
    drop(head);
    // With its own identity, `b` is its own series.
    let out = apply(&t, &Given(vec![(identity(&b), b.clone(), sample(2, 2.0))]));
    assert_eq!((out.new_series, out.appended), (1, 1));
    assert!(out.misidentified.is_empty());
}
