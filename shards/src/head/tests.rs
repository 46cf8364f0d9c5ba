//! Unit tests of the head.

use super::append::chunk_target;
use super::index::short_eq;
use super::*;
use sluice_core::series_hash;
use sluice_core::{key_labels, Identity};
use sluice_core::{MatchOp, Matcher, STALE_NAN_BITS};

fn key(l: &[(&str, &str)]) -> Vec<u8> {
    let mut k = Vec::new();
    sluice_core::put_series_key(&mut k, l.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
    k
}

/// Creates `n` series `up{i="0"}`, `up{i="1"}`, … and returns their ids.
fn up_series(h: &mut Head, n: u32) -> Vec<u32> {
    (0..n)
        .map(|i| {
            let v = i.to_string();
            let l = [("__name__", "up"), ("i", v.as_str())];
            h.create(series_hash("t", l), &key(&l))
        })
        .collect()
}

fn head_with(series: &[&[(&str, &str)]]) -> Head {
    let mut h = Head::new();
    for l in series {
        let id = h.create(series_hash("t", l.iter().copied()), &key(l));
        h.append(id, 1000, 1.0).unwrap();
    }
    h
}

#[test]
fn finds_series_by_labels() {
    let l = [("__name__", "up"), ("job", "a")];
    let h = head_with(&[&l]);
    let hash = series_hash("t", l);
    assert_eq!(h.find(hash, &key(&l)), Some(0));
    let other = [("__name__", "up"), ("job", "b")];
    assert_eq!(h.find(hash, &key(&other)), None);
}

#[test]
fn append_rules() {
    let mut h = head_with(&[&[("__name__", "up")]]);
    assert_eq!(h.append(0, 2000, 2.0), Ok(Appended::New));
    assert_eq!(h.append(0, 2000, 2.0), Ok(Appended::Repeat));
    assert_eq!(h.append(0, 1000, 1.0), Ok(Appended::Repeat));
    assert_eq!(h.append(0, 2000, 3.0), Err(Rejected::DuplicateTimestamp));
    assert_eq!(h.append(0, 1000, 5.0), Err(Rejected::DuplicateTimestamp));
    assert_eq!(
        h.append(0, 1500, 1.0),
        Err(Rejected::OutOfOrder { last_t: 2000 })
    );
    let stale = f64::from_bits(STALE_NAN_BITS);
    assert_eq!(h.append(0, 3000, stale), Ok(Appended::New));
    assert_eq!(h.append(0, 3000, stale), Ok(Appended::Repeat));
}

#[test]
fn chunks_are_cut_and_read_back() {
    let mut h = head_with(&[&[("__name__", "up")]]);
    for i in 2..=500i64 {
        h.append(0, i * 1000, i as f64).unwrap();
    }
    let mut got = Vec::new();
    h.samples(0, i64::MIN, i64::MAX, |t, v| got.push((t, v)));
    assert_eq!(got.len(), 500);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, (t, v))| *t == (i as i64 + 1) * 1000 && *v == (i + 1) as f64));
    let per_chunk = chunk_target(h.hash(0)) as usize;
    assert!((104..=135).contains(&per_chunk));
    assert_eq!(h.chunks_of(0).count(), (500 - 1) / per_chunk);
    assert!(h
        .chunks_of(0)
        .all(|c| u16::from_be_bytes([c.data[0], c.data[1]]) as usize == per_chunk));
    // Retry of a sample deep in a closed chunk is recognised.
    assert_eq!(h.append(0, 7000, 7.0), Ok(Appended::Repeat));
    let mut window = Vec::new();
    h.samples(0, 10_000, 12_000, |t, _| window.push(t));
    assert_eq!(window, vec![10_000, 11_000, 12_000]);
}

#[test]
fn a_spilling_head_reads_its_chunks_back_across_a_cut() {
    let hour = 3_600_000;
    let mut h = Head::with_block_range(hour);
    h.spill_chunks_to(tempfile::tempfile().unwrap());
    let ids = up_series(&mut h, 500);
    let value = |id: u32, t: i64| f64::from(id) * 1e6 + (t / 15_000) as f64;
    // Two and a half hours of a 15s scrape, cutting the first hour after 90 minutes.
    for round in 0..600i64 {
        let t = round * 15_000;
        for id in &ids {
            h.append(*id, t, value(*id, t)).unwrap();
        }
        if t == 90 * 60_000 {
            assert_eq!(h.prepare_cut(hour).len(), ids.len());
            for id in &ids {
                let n: u16 = h
                    .chunks_before(*id, hour)
                    .map(|c| u16::from_be_bytes([c.data[0], c.data[1]]))
                    .sum();
                assert_eq!(n, 240, "the first hour of series {id}");
            }
            assert_eq!(h.truncate(hour), 0);
        }
    }
    assert!(h.chunks.spilled() > 0, "full pages left the heap");
    assert!(
        h.chunks.resident() <= 3 * (64 << 10),
        "{} bytes of chunks in the heap",
        h.chunks.resident()
    );
    for id in &ids {
        let mut got = Vec::new();
        h.samples(*id, i64::MIN, i64::MAX, |t, v| got.push((t, v)));
        let want: Vec<(i64, f64)> = (240..600)
            .map(|r| (r * 15_000, value(*id, r * 15_000)))
            .collect();
        assert_eq!(got, want, "series {id}");
    }
    assert_eq!(h.time_range(), Some((hour, 599 * 15_000)));
}

#[test]
fn chunks_never_span_a_block_boundary() {
    let mut h = Head::with_block_range(10_000);
    let l = [("__name__", "up")];
    let id = h.create(series_hash("t", l), &key(&l));
    for t in [1_000, 9_000, 10_000, 15_000, 19_999, 25_000, 33_000] {
        h.append(id, t, 1.0).unwrap();
    }
    let ranges: Vec<(i64, i64)> = h.chunks_of(id).map(|c| (c.min_t, c.max_t)).collect();
    assert_eq!(
        ranges,
        vec![(1_000, 9_000), (10_000, 19_999), (25_000, 25_000)]
    );
    assert_eq!(h.series[id as usize].open.first_time(), Some(33_000));
    let mut all = Vec::new();
    h.samples(id, i64::MIN, i64::MAX, |t, _| all.push(t));
    assert_eq!(
        all,
        vec![1_000, 9_000, 10_000, 15_000, 19_999, 25_000, 33_000]
    );
}

#[test]
fn select_follows_prometheus_matcher_semantics() {
    let h = head_with(&[
        &[("__name__", "up"), ("job", "a")],
        &[("__name__", "up"), ("job", "b"), ("zone", "x")],
        &[("__name__", "down"), ("job", "a")],
    ]);
    let m = |n: &str, op, v: &str| Matcher::new(n, op, v).unwrap();
    assert_eq!(h.select(&[m("__name__", MatchOp::Equal, "up")]), vec![0, 1]);
    assert_eq!(
        h.select(&[
            m("__name__", MatchOp::Equal, "up"),
            m("job", MatchOp::NotEqual, "a")
        ]),
        vec![1]
    );
    assert_eq!(h.select(&[m("job", MatchOp::Regex, "a|b")]), vec![0, 1, 2]);
    assert_eq!(h.select(&[m("job", MatchOp::Regex, "a|")]), vec![0, 2]);
    // zone="" matches series without the label.
    assert_eq!(h.select(&[m("zone", MatchOp::Equal, "")]), vec![0, 2]);
    assert_eq!(h.select(&[m("zone", MatchOp::NotRegex, ".+")]), vec![0, 2]);
    assert_eq!(
        h.select(&[m("__name__", MatchOp::Equal, "nope")]),
        Vec::<u32>::new()
    );
    // Regex is anchored.
    assert_eq!(
        h.select(&[m("__name__", MatchOp::Regex, "u")]),
        Vec::<u32>::new()
    );
}

#[test]
fn appends_outside_the_window_or_before_persisted_data_are_out_of_bounds() {
    let mut h = Head::with_block_range(10_000);
    let a = [("__name__", "a")];
    let b = [("__name__", "b")];
    let ia = h.create(series_hash("t", a), &key(&a));
    let ib = h.create(series_hash("t", b), &key(&b));
    h.append(ia, 100_000, 1.0).unwrap();
    // Half a block range behind the newest sample is the oldest accepted.
    assert_eq!(h.append(ib, 95_000, 1.0), Ok(Appended::New));
    // Bounds come before order, as in Prometheus.
    assert_eq!(
        h.append(ib, 94_999, 1.0),
        Err(Rejected::OutOfBounds { min_t: 95_000 })
    );
    let c = [("__name__", "c")];
    let ic = h.create(series_hash("t", c), &key(&c));
    assert_eq!(
        h.append(ic, 94_999, 1.0),
        Err(Rejected::OutOfBounds { min_t: 95_000 })
    );
    // Replay follows the log, not the window; persisted data stays refused.
    assert_eq!(h.replay_append(ic, 94_999, 1.0), Ok(Appended::New));
    h.set_min_valid(99_000);
    let d = [("__name__", "d")];
    let id = h.create(series_hash("t", d), &key(&d));
    assert_eq!(
        h.replay_append(id, 98_999, 1.0),
        Err(Rejected::OutOfBounds { min_t: 99_000 })
    );
}

#[test]
fn a_cut_hands_out_whole_chunks_in_label_order_then_frees_them() {
    let mut h = Head::with_block_range(10_000);
    let old = [("__name__", "z_old")];
    let both = [("__name__", "a_both"), ("job", "x")];
    let shorter = [("__name__", "a_both")];
    let io = h.create(series_hash("t", old), &key(&old));
    let ib = h.create(series_hash("t", both), &key(&both));
    let is = h.create(series_hash("t", shorter), &key(&shorter));
    for t in [1_000, 2_000, 9_999] {
        h.append(io, t, 1.0).unwrap();
        h.append(ib, t, 2.0).unwrap();
    }
    for t in [10_000, 14_000] {
        h.append(ib, t, 3.0).unwrap();
        h.append(is, t, 4.0).unwrap();
    }
    assert_eq!(h.time_range(), Some((1_000, 14_000)));
    // Label order: {__name__="a_both"} < {__name__="a_both", job="x"} < {z_old}.
    let ids = h.prepare_cut(10_000);
    assert_eq!(ids, vec![ib, io]);
    for id in [ib, io] {
        let chunks: Vec<_> = h.chunks_before(id, 10_000).collect();
        assert_eq!(chunks.len(), 1);
        assert_eq!((chunks[0].min_t, chunks[0].max_t), (1_000, 9_999));
    }
    // The cut boundary is now the oldest accepted time.
    assert_eq!(
        h.append(is, 9_000, 1.0),
        Err(Rejected::OutOfBounds { min_t: 10_000 })
    );
    let pages_before = h.chunks.resident();
    assert_eq!(
        h.truncate(10_000),
        1,
        "the series with only old samples is collected"
    );
    assert!(
        h.chunks.resident() < pages_before,
        "the persisted range's chunk pages are freed"
    );
    assert_eq!(h.num_series(), 2);
    assert_eq!(h.time_range(), Some((10_000, 14_000)));
    assert_eq!(h.find(series_hash("t", old), &key(&old)), None);
    let m = |n: &str, op, v: &str| Matcher::new(n, op, v).unwrap();
    assert_eq!(
        h.select(&[m("__name__", MatchOp::Regex, ".+")]),
        vec![ib, is]
    );
    let mut left = Vec::new();
    h.samples(ib, i64::MIN, i64::MAX, |t, _| left.push(t));
    assert_eq!(left, vec![10_000, 14_000]);
    // The same labels again make a new series with a new id.
    let again = h.create(series_hash("t", old), &key(&old));
    assert_eq!(again, 3);
    assert_eq!(h.find(series_hash("t", old), &key(&old)), Some(3));
}

#[test]
fn short_eq_is_slice_equality() {
    let words: Vec<Vec<u8>> = (0..40)
        .flat_map(|n| {
            let base: Vec<u8> = (0..n as u8).map(|i| b'a' + i % 26).collect();
            let mut variants = vec![base.clone()];
            for at in 0..n {
                let mut v = base.clone();
                v[at] ^= 1;
                variants.push(v);
            }
            variants
        })
        .collect();
    for a in &words {
        for b in &words {
            assert_eq!(short_eq(a, b), a == b, "{a:?} {b:?}");
        }
    }
}

/// Two label sets with one 128-bit identity are two series, each found by its labels.
#[test]
fn one_identity_two_label_sets_two_series() {
    let mut h = Head::new();
    let same = Identity { hash: 7, check: 9 };
    let (x, y, z) = (
        key(&[("__name__", "x")]),
        key(&[("__name__", "y")]),
        key(&[("__name__", "z")]),
    );
    let ix = h.create_checked(same, &x);
    let iy = h.create_checked(same, &y);
    assert_ne!(ix, iy);
    assert_eq!(h.find_exact(7, 9, key_labels(&x)), Some(ix));
    assert_eq!(h.find_exact(7, 9, key_labels(&y)), Some(iy));
    assert_eq!(h.find_exact(7, 9, key_labels(&z)), None);
    assert_eq!(h.find_exact(7, 8, key_labels(&x)), None);
}

/// Replay binds ids as the log names them: gaps become placeholders, a placeholder may be
/// bound later (postings stay sorted), a live id is left alone, and reserved ids are never
/// handed out.
#[test]
fn replay_binds_placeholders_and_reserved_ids_stay_taken() {
    let mut h = Head::new();
    let l = |i: u32| {
        let v = i.to_string();
        let l = [("__name__", "up"), ("i", v.as_str())];
        (series_hash("t", l), key(&l))
    };
    let (h2, k2) = l(2);
    assert!(h.create_with_id(2, h2, &k2));
    assert_eq!((h.id_limit(), h.num_series()), (3, 1));
    assert!(!h.is_live(0) && !h.is_live(1));
    let (h0, k0) = l(0);
    assert!(h.create_with_id(0, h0, &k0));
    let (h9, k9) = l(9);
    assert!(!h.create_with_id(2, h9, &k9), "a live id keeps its series");
    assert!(h.key_matches(2, &k2));
    h.reserve_ids(10);
    assert_eq!(h.id_limit(), 10);
    let (h5, k5) = l(5);
    assert_eq!(h.create(h5, &k5), 10);
    let m = |n: &str, op, v: &str| Matcher::new(n, op, v).unwrap();
    assert_eq!(
        h.select(&[m("__name__", MatchOp::Equal, "up")]),
        vec![0, 2, 10]
    );
    assert_eq!(
        h.select(&[
            m("__name__", MatchOp::Equal, "up"),
            m("i", MatchOp::Regex, "0|5")
        ]),
        vec![0, 10]
    );
    assert_eq!(h.find(h0, &k0), Some(0));
    // Reserving below the limit changes nothing.
    h.reserve_ids(4);
    assert_eq!(h.id_limit(), 11);
}

#[test]
fn a_series_stays_small() {
    // Paid by every active series (100k series: 100 bytes here are 10% of the RSS
    // target): labels 8, hashes 16, newest closed chunk 8, open chunk 56.
    assert!(std::mem::size_of::<Series>() <= 88);
}

#[test]
fn churned_series_do_not_keep_their_labels() {
    let mut h = Head::with_block_range(10_000);
    // Generation after generation of series, each living one block range: old ones are
    // collected at every cut, and their labels must not pile up.
    for gen in 0..20u32 {
        let t = i64::from(gen) * 10_000;
        for i in gen * 100..gen * 100 + 100 {
            let pod = i.to_string();
            let l = [("__name__", "churn"), ("pod", pod.as_str())];
            let id = h.create(series_hash("t", l), &key(&l));
            h.append(id, t + 1, 1.0).unwrap();
        }
        h.prepare_cut(t);
        h.truncate(t);
        assert!(
            h.label_sets.stored_values() <= 4 * 200,
            "labels of collected series are dropped"
        );
        assert!(
            h.chunks.resident() <= 4 * 4096,
            "chunk pages of persisted ranges are freed"
        );
    }
    assert_eq!(h.num_series(), 100);
    for id in 1900..2000u32 {
        let pod = id.to_string();
        assert!(
            h.key_matches(id, &key(&[("__name__", "churn"), ("pod", pod.as_str())])),
            "series {id} keeps its own labels"
        );
    }
    assert!(!h.is_live(0));
}

#[test]
fn series_scraped_in_step_cut_their_chunks_in_different_rounds() {
    let mut h = Head::new();
    let ids = up_series(&mut h, 1000);
    let mut most = 0;
    for round in 0..480i64 {
        let before: Vec<usize> = ids.iter().map(|id| h.chunks_of(*id).count()).collect();
        for id in &ids {
            h.append(*id, 1_000 + round * 15_000, 1.0).unwrap();
        }
        let cut = ids
            .iter()
            .zip(&before)
            .filter(|(id, n)| h.chunks_of(**id).count() > **n)
            .count();
        most = most.max(cut);
    }
    // All 1000 in one round with a single count; an eighth at most with 32.
    assert!(
        most <= 1000 / 8 + 30,
        "{most} series cut a chunk in one round"
    );
}
