use super::*;
use crate::series_hash;

fn parse(json: &str) -> Result<Hashrings, HashringError> {
    Hashrings::parse(json.as_bytes(), Algorithm::Hashmod)
}

fn parse_ok(json: &str) -> Hashrings {
    parse(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn addresses(ring: &Hashring) -> Vec<&str> {
    ring.endpoints()
        .iter()
        .map(|e| e.address.as_str())
        .collect()
}

fn endpoints(addresses: &[&str]) -> Vec<Endpoint> {
    addresses.iter().map(|a| Endpoint::new(*a)).collect()
}

fn zoned(pairs: &[(&str, &str)]) -> Vec<Endpoint> {
    pairs
        .iter()
        .map(|(a, z)| Endpoint {
            address: a.to_string(),
            az: Some(z.to_string()),
        })
        .collect()
}

fn node_addresses(n: usize) -> Vec<String> {
    (0..n)
        .map(|k| format!("sluice-{k}.sluice.monitoring.svc:10901"))
        .collect()
}

fn ring_of(algorithm: Algorithm, n: usize) -> Hashring {
    let eps = node_addresses(n).into_iter().map(Endpoint::new).collect();
    Hashring::new("r", algorithm, eps).expect("valid ring")
}

/// `n` series as node_exporter exposes them: 8 CPUs x 10 modes per host, hosts numbered
/// 10.0.x.y:9100, all in one tenant.
fn realistic_hashes(n: usize) -> Vec<u64> {
    const MODES: [&str; 10] = [
        "idle",
        "user",
        "system",
        "iowait",
        "irq",
        "softirq",
        "steal",
        "nice",
        "guest",
        "guest_nice",
    ];
    (0..n)
        .map(|i| {
            let host = i / 80;
            let cpu = (i % 8).to_string();
            let mode = MODES[(i / 8) % 10];
            let instance = format!("10.0.{}.{}:9100", host / 256, host % 256);
            series_hash(
                "default-tenant",
                [
                    ("__name__", "node_cpu_seconds_total"),
                    ("cpu", cpu.as_str()),
                    ("instance", instance.as_str()),
                    ("job", "node"),
                    ("mode", mode),
                ],
            )
        })
        .collect()
}

fn owner(ring: &Hashring, h: u64) -> usize {
    let mut out = Vec::new();
    ring.replicas(h, 1, &mut out).expect("rf 1");
    out[0]
}

// ---------------------------------------------------------------- parsing

#[test]
fn parses_string_and_object_endpoints() {
    let rings = parse_ok(
        r#"[{
            "hashring": "default",
            "endpoints": [
                "10.0.0.3:10901",
                {"address": "10.0.0.1:10901"},
                {"address": "10.0.0.2:10901", "az": "", "capnproto_address": "10.0.0.2:19391"}
            ]
        }]"#,
    );
    let ring = &rings.rings()[0];
    assert_eq!(ring.name(), "default");
    assert_eq!(ring.algorithm(), Algorithm::Hashmod);
    // Sorted by address whatever the file order; an empty az is no zone.
    assert_eq!(
        addresses(ring),
        ["10.0.0.1:10901", "10.0.0.2:10901", "10.0.0.3:10901"]
    );
    assert!(ring.endpoints().iter().all(|e| e.az.is_none()));
    assert_eq!(ring.endpoint_index("10.0.0.2:10901"), Some(1));
    assert_eq!(ring.endpoint_index("10.0.0.9:10901"), None);
    assert!(ring.tenants().is_empty());
    assert_eq!(ring.max_replication_factor(), 3);
}

#[test]
fn parses_tenants_matchers_algorithms_and_labels() {
    let rings = parse_ok(
        r#"[
            {"hashring": "a", "tenants": ["t2", "t1"], "endpoints": ["a:1"],
             "external_labels": {"region": "eu", "cluster": "c1"}},
            {"hashring": "b", "tenants": ["team-*"], "tenant_matcher_type": "glob",
             "algorithm": "ketama",
             "endpoints": [{"address": "b:1", "az": "z1"}, {"address": "b:2", "az": "z2"}]},
            {"hashring": "c", "tenants": null, "tenant_matcher_type": "exact", "algorithm": "",
             "endpoints": ["c:1"], "shuffle_sharding_config": {"shard_size": 0}}
        ]"#,
    );
    let [a, b, c] = rings.rings() else {
        panic!("three rings")
    };
    assert_eq!(a.tenants(), ["t2", "t1"]);
    assert_eq!(a.tenant_matcher(), TenantMatcher::Exact);
    assert_eq!(
        a.external_labels(),
        [
            ("cluster".to_string(), "c1".to_string()),
            ("region".to_string(), "eu".to_string())
        ]
    );
    assert_eq!(b.tenant_matcher(), TenantMatcher::Glob);
    assert_eq!(b.algorithm(), Algorithm::Ketama);
    assert_eq!(b.endpoints()[1].az.as_deref(), Some("z2"));
    // "" means "the default algorithm", as in Thanos.
    assert_eq!(c.algorithm(), Algorithm::Hashmod);
    assert!(c.tenants().is_empty());

    let ketama_default =
        Hashrings::parse(br#"[{"endpoints": ["x:1"]}]"#, Algorithm::Ketama).expect("valid");
    assert_eq!(ketama_default.rings()[0].algorithm(), Algorithm::Ketama);
    assert_eq!(ketama_default.rings()[0].name(), "");
}

#[test]
fn invalid_files_give_the_right_error() {
    use HashringError as E;
    type Expect = fn(&HashringError) -> bool;
    let cases: Vec<(&str, Expect)> = vec![
        ("[{", |e| matches!(e, E::Json(_))),
        ("", |e| matches!(e, E::Json(_))),
        (r#"{"hashring": "x"}"#, |e| {
            matches!(e, E::NotAList { found: "an object" })
        }),
        ("[]", |e| matches!(e, E::Empty)),
        (r#"["a:1"]"#, |e| {
            matches!(
                e,
                E::NotAnObject {
                    found: "a string",
                    ..
                }
            )
        }),
        (
            r#"[{"hashring": "x", "endpoints": []}]"#,
            |e| matches!(e, E::NoEndpoints { ring } if ring.name == "x"),
        ),
        (r#"[{"hashring": "x"}]"#, |e| {
            matches!(e, E::NoEndpoints { .. })
        }),
        (r#"[{"endpoints": ["a:1", ""]}]"#, |e| {
            matches!(e, E::EmptyAddress { index: 1, .. })
        }),
        (r#"[{"endpoints": [{"az": "z"}]}]"#, |e| {
            matches!(e, E::EmptyAddress { index: 0, .. })
        }),
        (
            r#"[{"endpoints": ["b:1"]}, {"hashring": "y", "endpoints": ["a:1", "b:1", {"address": "a:1"}]}]"#,
            |e| {
                matches!(e, E::DuplicateEndpoint { ring, address, first: 0, second: 2 }
                    if ring.index == 1 && ring.name == "y" && address == "a:1")
            },
        ),
        (
            r#"[{"endpoints": ["a:1"], "algorithm": "rendezvous"}]"#,
            |e| matches!(e, E::UnknownAlgorithm { value, .. } if value == "rendezvous"),
        ),
        (
            r#"[{"endpoints": ["a:1"], "tenant_matcher_type": "regex"}]"#,
            |e| matches!(e, E::UnknownMatcher { value, .. } if value == "regex"),
        ),
        (
            r#"[{"endpoints": ["a:1"], "tenant_matcher_type": "glob", "tenants": ["ok-*", "bad["]}]"#,
            |e| matches!(e, E::BadGlob { index: 1, pattern, .. } if pattern == "bad["),
        ),
        (
            r#"[{"endpoints": ["a:1"], "tenant": ["t"]}]"#,
            |e| matches!(e, E::UnknownField { field, .. } if field == "tenant"),
        ),
        (
            r#"[{"endpoints": [{"address": "a:1", "zone": "z"}]}]"#,
            |e| matches!(e, E::UnknownField { field, .. } if field == "endpoints[0].zone"),
        ),
        (
            r#"[{"endpoints": "a:1"}]"#,
            |e| matches!(e, E::WrongType { field, found: "a string", .. } if field == "endpoints"),
        ),
        (
            r#"[{"endpoints": [7]}]"#,
            |e| matches!(e, E::WrongType { field, found: "a number", .. } if field == "endpoints[0]"),
        ),
        (
            r#"[{"endpoints": ["a:1"], "tenants": ["t", 3]}]"#,
            |e| matches!(e, E::WrongType { field, .. } if field == "tenants[1]"),
        ),
        (
            r#"[{"hashring": 5, "endpoints": ["a:1"]}]"#,
            |e| matches!(e, E::WrongType { field, .. } if field == "hashring"),
        ),
        (
            r#"[{"endpoints": [{"address": "a:1", "az": "z1"}]}]"#,
            |e| matches!(e, E::ZoneWithHashmod { index: 0, az, .. } if az == "z1"),
        ),
        (
            r#"[{"endpoints": ["a:1", "b:1"], "algorithm": "ketama", "shuffle_sharding_config": {"shard_size": 1}}]"#,
            |e| matches!(e, E::Unsupported { .. }),
        ),
    ];
    for (json, expected) in cases {
        match parse(json) {
            Ok(_) => panic!("{json}: accepted"),
            Err(e) => assert!(expected(&e), "{json}: unexpected error {e:?}"),
        }
    }
}

#[test]
fn error_messages_name_the_ring_and_the_field() {
    let msg = |json: &str| parse(json).map(|_| ()).unwrap_err().to_string();
    assert_eq!(
        msg(
            r#"[{"hashring": "a", "endpoints": ["x:1"]}, {"hashring": "b", "endpoints": ["x:1", "x:1"]}]"#
        ),
        r#"hashrings[1] "b": endpoint "x:1" is listed twice (endpoints[0] and endpoints[1])"#
    );
    assert_eq!(
        msg(r#"[{"endpoints": [], "tenants": ["t"]}]"#),
        "hashrings[0] (unnamed): endpoints is empty; a hashring needs at least one endpoint"
    );
    assert_eq!(
        msg(
            r#"[{"hashring": "g", "endpoints": ["x:1"], "tenant_matcher_type": "glob", "tenants": ["[a-"]}]"#
        ),
        r#"hashrings[0] "g": tenants[0] "[a-" is not a valid glob: it has an unclosed character class"#
    );
    assert!(
        msg(r#"[{"hashring": "g", "endpoints": ["x:1"], "tenantz": []}]"#).starts_with(
            r#"hashrings[0] "g": unknown field "tenantz" (known: hashring, endpoints"#
        )
    );
    assert!(msg("[1,").starts_with("hashrings file is not valid JSON: "));
}

// ---------------------------------------------------------------- tenants

#[test]
fn tenants_pick_the_first_matching_ring_in_file_order() {
    let rings = parse_ok(
        r#"[
            {"hashring": "exact", "tenants": ["t1", "t2"], "endpoints": ["e:1"]},
            {"hashring": "glob", "tenants": ["team-*", "x?"], "tenant_matcher_type": "glob",
             "endpoints": ["g:1"]},
            {"hashring": "t1-again", "tenants": ["t1", "team-a"], "endpoints": ["t:1"]},
            {"hashring": "default", "endpoints": ["d:1"]},
            {"hashring": "shadowed", "tenants": ["never"], "endpoints": ["s:1"]}
        ]"#,
    );
    let ring = |t: &str| rings.ring_for_tenant(t).map(|r| r.name().to_string());
    assert_eq!(ring("t1").as_deref(), Some("exact"));
    assert_eq!(ring("t2").as_deref(), Some("exact"));
    assert_eq!(ring("team-a").as_deref(), Some("glob"));
    assert_eq!(ring("xy").as_deref(), Some("glob"));
    assert_eq!(ring("xyz").as_deref(), Some("default"));
    // Exact is whole-string: no prefix or pattern reading.
    assert_eq!(ring("t").as_deref(), Some("default"));
    assert_eq!(ring("t*").as_deref(), Some("default"));
    // A catch-all ring takes everything after it, as in Thanos.
    assert_eq!(ring("never").as_deref(), Some("default"));
    assert_eq!(ring("").as_deref(), Some("default"));
}

#[test]
fn without_a_catch_all_ring_unknown_tenants_have_none() {
    let rings = parse_ok(
        r#"[{"tenants": ["a"], "endpoints": ["x:1"]},
            {"tenants": ["b*"], "tenant_matcher_type": "glob", "endpoints": ["y:1"]}]"#,
    );
    assert!(rings.ring_for_tenant("a").is_some());
    assert!(rings.ring_for_tenant("bb").is_some());
    assert!(rings.ring_for_tenant("c").is_none());
    // An empty tenant list is a catch-all, exactly like an absent one.
    let rings = parse_ok(r#"[{"tenants": [], "endpoints": ["x:1"]}]"#);
    assert!(rings.ring_for_tenant("anything").is_some());
}

// ---------------------------------------------------------------- replicas

#[test]
fn replicas_are_distinct_deterministic_and_prefixes() {
    for algorithm in [Algorithm::Hashmod, Algorithm::Ketama] {
        let ring = ring_of(algorithm, 5);
        let mut out = Vec::new();
        let mut again = Vec::new();
        let mut longer = Vec::new();
        for h in realistic_hashes(2_000)
            .into_iter()
            .chain([0, 1, u64::MAX, u64::MAX - 1])
        {
            for rf in 1..=5 {
                ring.replicas(h, rf, &mut out).expect("rf ≤ endpoints");
                assert_eq!(out.len(), rf);
                let mut sorted = out.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted.len(), rf, "{algorithm}: duplicate in {out:?}");
                assert!(out.iter().all(|&e| e < 5));
                ring.replicas(h, rf, &mut again).expect("same call");
                assert_eq!(out, again, "{algorithm}: not deterministic");
                if rf < 5 {
                    ring.replicas(h, rf + 1, &mut longer).expect("rf+1");
                    assert_eq!(out[..], longer[..rf], "{algorithm}: R not a prefix of R+1");
                }
            }
        }
        // A ring built again (other file order) places identically.
        let mut shuffled: Vec<Endpoint> = ring.endpoints().to_vec();
        shuffled.reverse();
        let rebuilt = Hashring::new("r", algorithm, shuffled).expect("valid");
        for h in realistic_hashes(500) {
            ring.replicas(h, 3, &mut out).expect("rf 3");
            rebuilt.replicas(h, 3, &mut again).expect("rf 3");
            assert_eq!(out, again);
        }
    }
}

#[test]
fn replicas_reuse_the_output_buffer() {
    let ring = ring_of(Algorithm::Ketama, 4);
    let mut out = Vec::with_capacity(3);
    let ptr = out.as_ptr();
    for h in realistic_hashes(1_000) {
        ring.replicas(h, 3, &mut out).expect("rf 3");
    }
    assert_eq!(out.as_ptr(), ptr, "the buffer was reallocated");
    assert_eq!(out.capacity(), 3);
}

#[test]
fn replication_factor_beyond_the_ring_is_an_error() {
    for algorithm in [Algorithm::Hashmod, Algorithm::Ketama] {
        let ring = ring_of(algorithm, 3);
        let mut out = vec![9];
        let err = ring.replicas(42, 4, &mut out).unwrap_err();
        assert!(
            matches!(
                err,
                HashringError::ReplicationFactorTooLarge {
                    rf: 4,
                    max: 3,
                    endpoints: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(out.is_empty(), "a failed call leaves no stale owners");
        assert!(matches!(
            ring.replicas(42, 0, &mut out),
            Err(HashringError::ZeroReplicationFactor)
        ));
        assert!(ring.check_replication_factor(3).is_ok());
    }
    let rings = parse_ok(
        r#"[{"tenants": ["a"], "endpoints": ["x:1", "x:2", "x:3"]}, {"endpoints": ["y:1", "y:2"]}]"#,
    );
    assert!(rings.check_replication_factor(2).is_ok());
    let err = rings.check_replication_factor(3).unwrap_err();
    assert_eq!(
        err.to_string(),
        "hashrings[1] (unnamed): replication factor 3 needs 3 distinct endpoints, but this ring \
         can give a series at most 2 (it has 2 endpoints)"
    );
}

#[test]
fn hashmod_keeps_replicas_distinct_where_thanos_sum_would_wrap() {
    // 2^64 - 1 ≡ 0 (mod 3). Thanos computes (h + 1) mod 2^64 = 0 → endpoint 0 again for
    // replica 1; Sluice takes the next endpoint (module doc).
    let ring = ring_of(Algorithm::Hashmod, 3);
    let mut out = Vec::new();
    ring.replicas(u64::MAX, 3, &mut out).expect("rf 3");
    assert_eq!(out, [0, 1, 2]);
}

// ---------------------------------------------------------------- zones

#[test]
fn ketama_spreads_replicas_over_zones() {
    let ring = Hashring::new(
        "z",
        Algorithm::Ketama,
        zoned(&[
            ("a", "1"),
            ("b", "2"),
            ("c", "1"),
            ("d", "2"),
            ("e", "3"),
            ("f", "3"),
        ]),
    )
    .expect("valid");
    let mut out = Vec::new();
    for h in realistic_hashes(5_000) {
        ring.replicas(h, 3, &mut out).expect("rf 3");
        let mut zones: Vec<&str> = out
            .iter()
            .map(|&e| ring.endpoints()[e].az.as_deref().unwrap_or(""))
            .collect();
        zones.sort_unstable();
        assert_eq!(zones, ["1", "2", "3"], "replicas {out:?}");
    }
}

#[test]
fn zones_fill_evenly_like_thanos_even_az_spread() {
    // Thanos' TestKetamaHashringEvenAZSpread, largest case: 12 nodes in 5 zones, R = 10. The
    // replicas cover min(R, zones) zones and no zone holds more than one above the least.
    let pairs = [
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
        ("d", "1"),
        ("e", "2"),
        ("f", "3"),
        ("g", "4"),
        ("h", "4"),
        ("i", "4"),
        ("j", "5"),
        ("k", "5"),
        ("l", "5"),
    ];
    let ring = Hashring::new("z", Algorithm::Ketama, zoned(&pairs)).expect("valid");
    assert_eq!(ring.max_replication_factor(), 2 + 2 + 2 + 3 + 3);
    let mut out = Vec::new();
    for h in realistic_hashes(2_000) {
        for rf in [1, 2, 5, 10, 12] {
            ring.replicas(h, rf, &mut out).expect("rf ≤ 12");
            let mut per_zone = [0usize; 5];
            for &e in &out {
                let zone = ring.endpoints()[e].az.as_deref().unwrap_or("");
                per_zone[zone.parse::<usize>().expect("numeric zone") - 1] += 1;
            }
            let used = per_zone.iter().filter(|&&c| c > 0).count();
            assert_eq!(used, rf.min(5), "{per_zone:?}");
            let (lo, hi) = (per_zone.iter().min(), per_zone.iter().max());
            if rf >= 5 {
                assert!(
                    hi.zip(lo).is_some_and(|(hi, lo)| hi - lo <= 1),
                    "{per_zone:?}"
                );
            }
        }
    }
}

#[test]
fn uneven_zones_limit_the_replication_factor() {
    // Zone 1 has three nodes, zone 2 one: the rule gives zone 1 its second replica only when
    // zone 2 has one, and never a third, so 3 replicas at most (Thanos would loop forever on 4).
    let ring = Hashring::new(
        "z",
        Algorithm::Ketama,
        zoned(&[("a", "1"), ("b", "1"), ("c", "1"), ("d", "2")]),
    )
    .expect("valid");
    assert_eq!(ring.max_replication_factor(), 3);
    let mut out = Vec::new();
    for h in realistic_hashes(1_000) {
        ring.replicas(h, 3, &mut out).expect("rf 3");
        assert!(out.contains(&3), "zone 2 missing from {out:?}");
    }
    let err = ring.replicas(7, 4, &mut out).unwrap_err();
    assert!(err.to_string().contains("availability-zone"), "{err}");

    // Endpoints without az form the zone "" (as in Thanos), next to the named zones.
    let mixed = Hashring::new(
        "m",
        Algorithm::Ketama,
        vec![
            Endpoint::new("a"),
            Endpoint::new("b"),
            Endpoint {
                address: "c".into(),
                az: Some("x".into()),
            },
        ],
    )
    .expect("valid");
    assert_eq!(mixed.max_replication_factor(), 3);
    for h in realistic_hashes(1_000) {
        mixed.replicas(h, 2, &mut out).expect("rf 2");
        assert!(out.contains(&2), "zone x missing from {out:?}");
    }
}

// ---------------------------------------------------------------- balance and movement

#[test]
fn four_endpoints_share_100k_series_evenly() {
    let hashes = realistic_hashes(100_000);
    for algorithm in [Algorithm::Hashmod, Algorithm::Ketama] {
        let ring = ring_of(algorithm, 4);
        let mut counts = [0usize; 4];
        for &h in &hashes {
            counts[owner(&ring, h)] += 1;
        }
        let even = hashes.len() / 4;
        let worst = counts
            .iter()
            .map(|&c| (c as f64 - even as f64).abs() / even as f64)
            .fold(0.0, f64::max);
        println!(
            "{algorithm}: 100k series over 4 endpoints: {counts:?} (worst {:+.2}% from even)",
            worst * 100.0
        );
        for c in counts {
            assert!(
                (even * 9 / 10..=even * 11 / 10).contains(&c),
                "{algorithm}: {counts:?} not within ±10% of {even}"
            );
        }
    }
}

#[test]
fn adding_a_fifth_endpoint_moves_few_series_with_ketama() {
    let hashes = realistic_hashes(100_000);
    for algorithm in [Algorithm::Ketama, Algorithm::Hashmod] {
        let four = ring_of(algorithm, 4);
        let five = ring_of(algorithm, 5);
        // Endpoint indexes differ between the rings; compare addresses.
        let moved = hashes
            .iter()
            .filter(|&&h| {
                four.endpoints()[owner(&four, h)].address
                    != five.endpoints()[owner(&five, h)].address
            })
            .count();
        let fraction = moved as f64 / hashes.len() as f64;
        println!(
            "{algorithm}: 4 → 5 endpoints moves {moved} of {} series ({:.1}%)",
            hashes.len(),
            fraction * 100.0
        );
        match algorithm {
            Algorithm::Ketama => assert!(fraction <= 0.25, "ketama moved {fraction}"),
            // Kept to document hashmod's cost, not as a goal: about 4/5 move.
            Algorithm::Hashmod => assert!(fraction > 0.6, "hashmod moved only {fraction}"),
        }
    }
}

#[test]
fn ketama_growth_only_moves_series_to_the_new_endpoints() {
    // Thanos' TestKetamaHashringReplicationConsistency: with R = 2, an endpoint of the old ring
    // gets no series it did not have before.
    let hashes = realistic_hashes(20_000);
    let old = Hashring::new(
        "r",
        Algorithm::Ketama,
        endpoints(&["node-1", "node-4", "node-5"]),
    )
    .expect("valid");
    let new = Hashring::new(
        "r",
        Algorithm::Ketama,
        endpoints(&["node-4", "node-3", "node-1", "node-2", "node-5"]),
    )
    .expect("valid");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for h in hashes {
        old.replicas(h, 2, &mut a).expect("rf 2");
        new.replicas(h, 2, &mut b).expect("rf 2");
        let before: Vec<&str> = a
            .iter()
            .map(|&e| old.endpoints()[e].address.as_str())
            .collect();
        for &e in &b {
            let addr = new.endpoints()[e].address.as_str();
            if old.endpoint_index(addr).is_some() {
                assert!(before.contains(&addr), "{addr} gained a series");
            }
        }
    }
}

// ---------------------------------------------------------------- pinned placements

/// Golden placements from Thanos' own `TestKetamaHashringGet` (pkg/receive/hashring_test.go),
/// which builds its rings with 10 sections per node, tenant "tenant": these answers are what
/// Thanos' implementation returns, so matching them checks the section hashing, the sort, the
/// search and the walk against Thanos itself, not against this file's reading of it.
#[test]
fn ketama_matches_thanos_golden_placements() {
    let nginx = series_hash("tenant", [("pod", "nginx")]);
    let thanos = series_hash("tenant", [("pod", "thanos")]);
    let cases: &[(&[&str], u64, usize, &str)] = &[
        (&["node-1", "node-2", "node-3"], nginx, 0, "node-2"),
        (&["node-1", "node-2", "node-3"], nginx, 1, "node-1"),
        (&["node-1", "node-2", "node-3"], nginx, 2, "node-3"),
        (&["node-1", "node-3", "node-2"], nginx, 2, "node-3"),
        (
            &["node-0", "node-1", "node-2", "node-3"],
            nginx,
            0,
            "node-2",
        ),
        (
            &["node-1", "node-2", "node-3", "node-4"],
            nginx,
            0,
            "node-2",
        ),
        (&["node-1", "node-2", "node-3"], thanos, 0, "node-3"),
    ];
    let id = RingId {
        index: 0,
        name: "thanos-test".into(),
    };
    let mut out = Vec::new();
    for &(nodes, h, n, want) in cases {
        let ring =
            Hashring::build(id.clone(), Algorithm::Ketama, endpoints(nodes), 10).expect("valid");
        ring.replicas(h, n + 1, &mut out).expect("rf ≤ nodes");
        assert_eq!(
            ring.endpoints()[out[n]].address,
            want,
            "{nodes:?} replica {n}"
        );
    }
}

/// Regression pins at the real 1000 sections per node. Hashmod values follow by hand from
/// the documented rule and the pinned series hash of `hash.rs`; the ketama values were
/// computed by this implementation (consistent with the Thanos goldens above) so any change of
/// placement is caught.
#[test]
fn placements_are_pinned() {
    // hash.rs pins this series' hash: 6_922_102_804_602_007_019.
    let h = series_hash("default-tenant", [("__name__", "up"), ("job", "node")]);
    assert_eq!(h, 6_922_102_804_602_007_019);
    let mut out = Vec::new();

    // 6_922_102_804_602_007_019 mod 3 = 2, mod 4 = 3, mod 5 = 4.
    let three = ring_of(Algorithm::Hashmod, 3);
    three.replicas(h, 3, &mut out).expect("rf 3");
    assert_eq!(out, [2, 0, 1]);
    ring_of(Algorithm::Hashmod, 4)
        .replicas(h, 2, &mut out)
        .expect("rf 2");
    assert_eq!(out, [3, 0]);
    ring_of(Algorithm::Hashmod, 5)
        .replicas(h, 1, &mut out)
        .expect("rf 1");
    assert_eq!(out, [4]);

    let ketama = ring_of(Algorithm::Ketama, 5);
    let hashes = realistic_hashes(3);
    let mut got = Vec::new();
    for &x in [h].iter().chain(&hashes) {
        ketama.replicas(x, 3, &mut out).expect("rf 3");
        got.push(out.clone());
    }
    println!("ketama pins: {got:?}");
    assert_eq!(got, PINNED_KETAMA);
}

const PINNED_KETAMA: [[usize; 3]; 4] = [[1, 0, 3], [3, 4, 2], [4, 3, 2], [4, 1, 2]];
