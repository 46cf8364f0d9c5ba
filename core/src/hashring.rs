//! The Thanos-compatible hashring: which nodes own a series.
//!
//! Owns the hashrings file (the JSON of Thanos Receive's `--receive.hashrings-file`), the
//! choice of ring for a tenant and the placement of a series on R distinct endpoints, computed
//! exactly as Thanos Receive computes it, so that Sluice and Thanos nodes can read one file
//! and agree on every series' owners. Must not touch files, sockets or clocks (the caller
//! reads and watches the file and swaps the parsed [`Hashrings`] in), and must not define the
//! series hash: it takes the 64-bit hash of [`crate::hash`] and never sees labels.
//!
//! # The placement, precisely
//!
//! **Series hash** `h`: xxHash64, seed 0, over `tenant 0xff (name 0xff value 0xff)*` with the
//! labels in ascending name order ([`crate::series_hash`]; Thanos' `labelpb.HashWithPrefix`).
//!
//! **Endpoints** of a ring are ordered by address, compared as bytes; [`Hashring::replicas`]
//! returns indexes into that order ([`Hashring::endpoints`]). Addresses are unique in a ring.
//!
//! **`hashmod`** (N endpoints): replica `k` (0-based) is endpoint `(h mod N + k) mod N`.
//! Thanos computes `((h + k) mod 2^64) mod N`; the two agree except when `h + k` overflows,
//! i.e. for the `k - 1` largest values of `h`, where Thanos' sum wraps and can name the same
//! endpoint twice (when N is not a power of two). Sluice keeps the replicas distinct there.
//!
//! **`ketama`**: the ring has [`SECTIONS_PER_NODE`] (1000) sections per endpoint. Section `i`
//! (1 ≤ i ≤ 1000) of endpoint `address` has the point xxHash64, seed 0, of the UTF-8 bytes of
//! `address ":" decimal(i)`, e.g. `"10.0.0.1:10901:1"` … `"10.0.0.1:10901:1000"`. The sections
//! are sorted by point, ascending (two equal points — a 64-bit collision — are ordered by
//! endpoint address; Thanos leaves that order to its unstable sort). The walk starts at the first
//! section whose point is `≥ h`, or at section 0 if there is none, and goes forward, wrapping
//! around. A section's endpoint becomes the next replica unless it is one already, or the
//! zone rule below skips it. Replica 0 is the first taken, and so on; the list for R is
//! always a prefix of the list for R + 1 (Thanos precomputes the list per section for its
//! configured R; this walk yields the same list without storing it).
//!
//! **Zone rule** (ketama only): every endpoint is in a zone, its `az`, or the zone "" without
//! one. When the ring spans two or more zones, an endpoint whose zone already holds `c > 0` of
//! the series' replicas is skipped while some zone of the ring holds fewer than `c`. So zones
//! fill evenly, and at most `Σ_zones min(size, s + 1)` replicas exist, `s` being the smallest
//! zone's size; asking for more is an error (Thanos would loop forever).
//!
//! **Tenants**: the rings are tried in file order and the first that matches the tenant wins.
//! A ring without tenants (field absent, `null` or `[]`) matches every tenant, so it is the
//! default ring. `"tenant_matcher_type": "exact"` (the default) compares whole strings;
//! `"glob"` uses Go's `filepath.Match` (Unix), reimplemented in the `glob` submodule.

mod glob;

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};
use xxhash_rust::xxh64::xxh64;

use glob::GlobPattern;

/// Sections per endpoint on a ketama ring (Thanos' `SectionsPerNode`). Part of the placement:
/// changing it moves series.
pub const SECTIONS_PER_NODE: usize = 1000;

/// How a ring places series on its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `hash mod N`: even, but changing N moves almost every series.
    Hashmod,
    /// Consistent hashing: adding an endpoint moves about 1/N of the series.
    Ketama,
}

impl Algorithm {
    /// The name used in the hashrings file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Hashmod => "hashmod",
            Algorithm::Ketama => "ketama",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An algorithm name that is neither `hashmod` nor `ketama`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hashring algorithm {0:?} (expected \"hashmod\" or \"ketama\")")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hashmod" => Ok(Algorithm::Hashmod),
            "ketama" => Ok(Algorithm::Ketama),
            other => Err(UnknownAlgorithm(other.to_string())),
        }
    }
}

/// How a ring's `tenants` are compared with a request's tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantMatcher {
    /// Whole-string equality (Thanos' default, `"exact"` or absent).
    Exact,
    /// Go `filepath.Match` patterns (`"glob"`).
    Glob,
}

/// One node of a ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` the node receives remote write and replication on; unique in its ring.
    pub address: String,
    /// Availability zone; `None` when absent or empty (Thanos treats both as the zone "").
    pub az: Option<String>,
}

impl Endpoint {
    /// An endpoint without a zone.
    pub fn new(address: impl Into<String>) -> Self {
        Endpoint {
            address: address.into(),
            az: None,
        }
    }
}

/// Which ring an error is about: its position in the file (0-based) and its `hashring` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingId {
    /// Position in the file's list.
    pub index: usize,
    /// The `hashring` field, empty when absent.
    pub name: String,
}

impl fmt::Display for RingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            write!(f, "hashrings[{}] (unnamed)", self.index)
        } else {
            write!(f, "hashrings[{}] {:?}", self.index, self.name)
        }
    }
}

const RING_FIELDS: &str = "hashring, endpoints, tenants, tenant_matcher_type, algorithm, \
                           external_labels, shuffle_sharding_config";
const ENDPOINT_FIELDS: &str = "address, az, capnproto_address";

/// What is wrong with a hashrings file, a ring or a placement request.
#[derive(Debug, thiserror::Error)]
pub enum HashringError {
    #[error("hashrings file is not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error("hashrings file must be a JSON list of hashrings, found {found}")]
    NotAList { found: &'static str },
    #[error("hashrings file lists no hashring")]
    Empty,
    #[error("{ring}: must be a JSON object, found {found}")]
    NotAnObject { ring: RingId, found: &'static str },
    #[error("{ring}: unknown field {field:?} (known: {known})")]
    UnknownField {
        ring: RingId,
        field: String,
        known: &'static str,
    },
    #[error("{ring}: {field} must be {expected}, found {found}")]
    WrongType {
        ring: RingId,
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{ring}: endpoints is empty; a hashring needs at least one endpoint")]
    NoEndpoints { ring: RingId },
    #[error("{ring}: endpoints[{index}] has an empty address")]
    EmptyAddress { ring: RingId, index: usize },
    #[error(
        "{ring}: endpoint {address:?} is listed twice (endpoints[{first}] and endpoints[{second}])"
    )]
    DuplicateEndpoint {
        ring: RingId,
        address: String,
        first: usize,
        second: usize,
    },
    #[error("{ring}: unknown algorithm {value:?} (expected \"hashmod\" or \"ketama\")")]
    UnknownAlgorithm { ring: RingId, value: String },
    #[error("{ring}: unknown tenant_matcher_type {value:?} (expected \"exact\" or \"glob\")")]
    UnknownMatcher { ring: RingId, value: String },
    #[error("{ring}: tenants[{index}] {pattern:?} is not a valid glob: it {reason}")]
    BadGlob {
        ring: RingId,
        index: usize,
        pattern: String,
        reason: &'static str,
    },
    #[error(
        "{ring}: endpoints[{index}] {address:?} has availability zone {az:?}, which the hashmod \
         algorithm cannot honour; use \"algorithm\": \"ketama\" or remove the zones"
    )]
    ZoneWithHashmod {
        ring: RingId,
        index: usize,
        address: String,
        az: String,
    },
    #[error("{ring}: {field} is not supported (series would be placed unlike Thanos places them)")]
    Unsupported { ring: RingId, field: &'static str },
    #[error("replication factor must be at least 1")]
    ZeroReplicationFactor,
    #[error(
        "{ring}: replication factor {rf} needs {rf} distinct endpoints, but this ring can give a \
         series at most {max} (it has {endpoints} endpoints{})",
        zone_note(.max, .endpoints)
    )]
    ReplicationFactorTooLarge {
        ring: RingId,
        rf: usize,
        max: usize,
        endpoints: usize,
    },
}

fn zone_note(max: &usize, endpoints: &usize) -> &'static str {
    if max < endpoints {
        "; the availability-zone spread rule limits the rest"
    } else {
        ""
    }
}

/// All rings of a hashrings file, in file order. Immutable once built: a reload builds a new
/// one and swaps it in, so readers never see a half-updated ring.
#[derive(Debug, Clone)]
pub struct Hashrings {
    rings: Vec<Hashring>,
}

impl Hashrings {
    /// Parses and validates a hashrings file. `default_algorithm` applies to rings without an
    /// `algorithm` field (Thanos' `--receive.hashrings-algorithm`, default `hashmod`).
    pub fn parse(json: &[u8], default_algorithm: Algorithm) -> Result<Self, HashringError> {
        let doc: Value = serde_json::from_slice(json).map_err(HashringError::Json)?;
        let Value::Array(items) = doc else {
            return Err(HashringError::NotAList {
                found: json_kind(&doc),
            });
        };
        if items.is_empty() {
            return Err(HashringError::Empty);
        }
        let rings = items
            .iter()
            .enumerate()
            .map(|(index, item)| parse_ring(index, item, default_algorithm))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Hashrings { rings })
    }

    /// One catch-all hashmod ring of one endpoint: a single node without a hashrings file.
    pub fn single_node(address: impl Into<String>) -> Result<Self, HashringError> {
        let ring = Hashring::new("", Algorithm::Hashmod, vec![Endpoint::new(address)])?;
        Ok(Hashrings { rings: vec![ring] })
    }

    /// The ring that owns `tenant`'s series: the first in file order that matches it.
    /// `None` when no ring matches (Thanos: "no matching hashring to handle tenant").
    pub fn ring_for_tenant(&self, tenant: &str) -> Option<&Hashring> {
        self.rings.iter().find(|r| r.matches_tenant(tenant))
    }

    /// All rings, in file order.
    pub fn rings(&self) -> &[Hashring] {
        &self.rings
    }

    /// Checks at load time that every ring can place `rf` replicas, so the write path never
    /// meets [`HashringError::ReplicationFactorTooLarge`].
    pub fn check_replication_factor(&self, rf: usize) -> Result<(), HashringError> {
        self.rings
            .iter()
            .try_for_each(|r| r.check_replication_factor(rf))
    }
}

/// Which tenants a ring takes, in the form that is fast to test.
#[derive(Debug, Clone)]
enum TenantLookup {
    /// No tenants listed: every tenant.
    All,
    /// Sorted, for binary search.
    Exact(Vec<String>),
    Glob(Vec<GlobPattern>),
}

/// One ring: its endpoints, its tenants and, for ketama, the sorted sections.
#[derive(Debug, Clone)]
pub struct Hashring {
    /// Position and name in the file, for errors and logs.
    id: RingId,
    algorithm: Algorithm,
    /// Sorted by address; `replicas` returns indexes into this.
    endpoints: Vec<Endpoint>,
    /// `tenants` as written in the file.
    tenants: Vec<String>,
    matcher: TenantMatcher,
    lookup: TenantLookup,
    /// `external_labels` of the ring, sorted by name (carried for the caller; no effect here).
    external_labels: Vec<(String, String)>,
    /// Ketama section points, ascending (empty for hashmod). Kept apart from the owners so
    /// the binary search touches only the points.
    section_points: Vec<u64>,
    /// The endpoint index owning each section.
    section_owners: Vec<u32>,
    /// Zone number of each endpoint (0.. `zones`).
    endpoint_zone: Vec<u32>,
    /// Number of distinct zones (the endpoints without `az` form one).
    zones: usize,
    /// The largest replication factor this ring can satisfy.
    max_replicas: usize,
}

impl Hashring {
    /// A ring that takes every tenant. Endpoints may come in any order; they are validated
    /// (non-empty, unique addresses, no zones with hashmod) and sorted by address.
    pub fn new(
        name: impl Into<String>,
        algorithm: Algorithm,
        endpoints: Vec<Endpoint>,
    ) -> Result<Self, HashringError> {
        let id = RingId {
            index: 0,
            name: name.into(),
        };
        Self::build(id, algorithm, endpoints, SECTIONS_PER_NODE)
    }

    fn build(
        id: RingId,
        algorithm: Algorithm,
        mut endpoints: Vec<Endpoint>,
        sections_per_node: usize,
    ) -> Result<Self, HashringError> {
        if endpoints.is_empty() {
            return Err(HashringError::NoEndpoints { ring: id });
        }
        // Thanos treats "" as "no zone"; one spelling of that keeps zone counting simple.
        for e in &mut endpoints {
            if e.az.as_deref() == Some("") {
                e.az = None;
            }
        }
        if let Some(index) = endpoints.iter().position(|e| e.address.is_empty()) {
            return Err(HashringError::EmptyAddress { ring: id, index });
        }
        if algorithm == Algorithm::Hashmod {
            if let Some((index, e)) = endpoints.iter().enumerate().find(|(_, e)| e.az.is_some()) {
                return Err(HashringError::ZoneWithHashmod {
                    ring: id,
                    index,
                    address: e.address.clone(),
                    az: e.az.clone().unwrap_or_default(),
                });
            }
        }
        // Duplicates are found on file positions (sorted by address, then position) so the
        // error can point at both entries.
        let mut order: Vec<usize> = (0..endpoints.len()).collect();
        order.sort_by(|&a, &b| {
            endpoints[a]
                .address
                .cmp(&endpoints[b].address)
                .then(a.cmp(&b))
        });
        if let Some(w) = order
            .windows(2)
            .find(|w| endpoints[w[0]].address == endpoints[w[1]].address)
        {
            return Err(HashringError::DuplicateEndpoint {
                address: endpoints[w[0]].address.clone(),
                first: w[0],
                second: w[1],
                ring: id,
            });
        }
        endpoints.sort_by(|a, b| a.address.cmp(&b.address));

        let mut zone_names: Vec<Option<&str>> = endpoints.iter().map(|e| e.az.as_deref()).collect();
        zone_names.sort_unstable();
        zone_names.dedup();
        let endpoint_zone: Vec<u32> = endpoints
            .iter()
            // Each name comes from the list just built, so the search always succeeds.
            .map(|e| zone_names.binary_search(&e.az.as_deref()).unwrap_or(0) as u32)
            .collect();
        let zones = zone_names.len();
        let max_replicas = match algorithm {
            Algorithm::Hashmod => endpoints.len(),
            Algorithm::Ketama => max_zone_spread(&endpoint_zone, zones),
        };

        let (section_points, section_owners) = match algorithm {
            Algorithm::Hashmod => (Vec::new(), Vec::new()),
            Algorithm::Ketama => ketama_sections(&endpoints, sections_per_node),
        };

        Ok(Hashring {
            id,
            algorithm,
            endpoints,
            tenants: Vec::new(),
            matcher: TenantMatcher::Exact,
            lookup: TenantLookup::All,
            external_labels: Vec::new(),
            section_points,
            section_owners,
            endpoint_zone,
            zones,
            max_replicas,
        })
    }

    /// Position and name in the file.
    pub fn id(&self) -> &RingId {
        &self.id
    }

    /// The `hashring` name (empty when the file gives none).
    pub fn name(&self) -> &str {
        &self.id.name
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The endpoints, sorted by address: what [`Hashring::replicas`] indexes.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The index of the endpoint with this address (e.g. to find the local node).
    pub fn endpoint_index(&self, address: &str) -> Option<usize> {
        self.endpoints
            .binary_search_by(|e| e.address.as_str().cmp(address))
            .ok()
    }

    /// The `tenants` field as written; empty for a catch-all ring.
    pub fn tenants(&self) -> &[String] {
        &self.tenants
    }

    pub fn tenant_matcher(&self) -> TenantMatcher {
        self.matcher
    }

    /// The ring's `external_labels`, sorted by name.
    pub fn external_labels(&self) -> &[(String, String)] {
        &self.external_labels
    }

    /// Whether this ring takes `tenant` (ignoring rings before it).
    pub fn matches_tenant(&self, tenant: &str) -> bool {
        match &self.lookup {
            TenantLookup::All => true,
            TenantLookup::Exact(sorted) => {
                sorted.binary_search_by(|t| t.as_str().cmp(tenant)).is_ok()
            }
            TenantLookup::Glob(patterns) => patterns.iter().any(|p| p.matches(tenant)),
        }
    }

    /// The largest replication factor this ring can place: the endpoint count, or less for a
    /// ketama ring whose zones are uneven (see the module doc).
    pub fn max_replication_factor(&self) -> usize {
        self.max_replicas
    }

    /// Whether `rf` replicas can be placed on this ring.
    pub fn check_replication_factor(&self, rf: usize) -> Result<(), HashringError> {
        if rf == 0 {
            return Err(HashringError::ZeroReplicationFactor);
        }
        if rf > self.max_replicas {
            return Err(HashringError::ReplicationFactorTooLarge {
                ring: self.id.clone(),
                rf,
                max: self.max_replicas,
                endpoints: self.endpoints.len(),
            });
        }
        Ok(())
    }

    /// Replaces `out` with the indexes (into [`Hashring::endpoints`]) of the `rf` distinct
    /// endpoints that own the series of hash `series_hash`, replica 0 first — Thanos'
    /// `GetN(tenant, series, 0..rf)`. Allocation-free once `out` has room for `rf`.
    pub fn replicas(
        &self,
        series_hash: u64,
        rf: usize,
        out: &mut Vec<usize>,
    ) -> Result<(), HashringError> {
        out.clear();
        self.check_replication_factor(rf)?;
        match self.algorithm {
            Algorithm::Hashmod => {
                let n = self.endpoints.len() as u64;
                let first = series_hash % n;
                // `first + k` stays below 2N: no overflow, unlike Thanos' `h + k` (module doc).
                out.extend((0..rf as u64).map(|k| ((first + k) % n) as usize));
                Ok(())
            }
            Algorithm::Ketama => self.ketama_replicas(series_hash, rf, out),
        }
    }

    fn ketama_replicas(
        &self,
        h: u64,
        rf: usize,
        out: &mut Vec<usize>,
    ) -> Result<(), HashringError> {
        let sections = self.section_points.len();
        let mut at = self.section_points.partition_point(|&p| p < h);
        if at == sections {
            at = 0;
        }
        // While fewer than `max_replicas` are taken, every full turn takes at least one more
        // endpoint (module doc), so `rf` turns always suffice; the bound turns a bug into an
        // error instead of a hang.
        for _ in 0..sections * rf {
            let e = self.section_owners[at] as usize;
            if !out.contains(&e) && self.zone_allows(e, out) {
                out.push(e);
                if out.len() == rf {
                    return Ok(());
                }
            }
            at += 1;
            if at == sections {
                at = 0;
            }
        }
        let placed = out.len();
        out.clear();
        Err(HashringError::ReplicationFactorTooLarge {
            ring: self.id.clone(),
            rf,
            max: placed,
            endpoints: self.endpoints.len(),
        })
    }

    /// Thanos' spread rule: skip an endpoint whose zone already holds more replicas than the
    /// least-used zone of the ring. Counting over `out` (≤ rf entries) needs no scratch map.
    #[inline]
    fn zone_allows(&self, e: usize, taken: &[usize]) -> bool {
        if self.zones <= 1 {
            return true;
        }
        let zone_count = |z: u32| {
            taken
                .iter()
                .filter(|&&t| self.endpoint_zone[t] == z)
                .count()
        };
        let here = zone_count(self.endpoint_zone[e]);
        if here == 0 {
            return true;
        }
        if taken.len() < self.zones {
            // Some zone still holds none, and this one holds some.
            return false;
        }
        let least = (0..self.zones as u32).map(zone_count).min().unwrap_or(0);
        here <= least
    }
}

/// The ketama sections of `endpoints` (already in their final order): points ascending, ties
/// by endpoint index, and the owner of each.
fn ketama_sections(endpoints: &[Endpoint], per_node: usize) -> (Vec<u64>, Vec<u32>) {
    let mut sections: Vec<(u64, u32)> = Vec::with_capacity(endpoints.len() * per_node);
    let mut key = String::new();
    for (index, e) in endpoints.iter().enumerate() {
        for i in 1..=per_node {
            key.clear();
            key.push_str(&e.address);
            key.push(':');
            key.push_str(&i.to_string());
            sections.push((xxh64(key.as_bytes(), 0), index as u32));
        }
    }
    sections.sort_unstable();
    sections.into_iter().unzip()
}

/// The most replicas the zone rule can place: with one zone, every endpoint; otherwise each
/// zone contributes up to one more than the smallest zone's size (module doc).
fn max_zone_spread(endpoint_zone: &[u32], zones: usize) -> usize {
    if zones <= 1 {
        return endpoint_zone.len();
    }
    let mut sizes = vec![0usize; zones];
    for &z in endpoint_zone {
        sizes[z as usize] += 1;
    }
    let smallest = sizes.iter().copied().min().unwrap_or(0);
    sizes.iter().map(|&s| s.min(smallest + 1)).sum()
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(
    ring: &RingId,
    field: impl Into<String>,
    expected: &'static str,
    v: &Value,
) -> HashringError {
    HashringError::WrongType {
        ring: ring.clone(),
        field: field.into(),
        expected,
        found: json_kind(v),
    }
}

/// An optional string field; `null` counts as absent, as Go's decoder has it.
fn opt_str<'a>(
    ring: &RingId,
    obj: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, HashringError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(ring, field, "a string", other)),
    }
}

fn parse_ring(
    index: usize,
    item: &Value,
    default_algorithm: Algorithm,
) -> Result<Hashring, HashringError> {
    let unnamed = RingId {
        index,
        name: String::new(),
    };
    let Value::Object(obj) = item else {
        return Err(HashringError::NotAnObject {
            ring: unnamed,
            found: json_kind(item),
        });
    };
    let name = opt_str(&unnamed, obj, "hashring")?.unwrap_or_default();
    let id = RingId {
        index,
        name: name.to_string(),
    };

    // Go ignores unknown fields; Sluice refuses them, because a misspelt "tenants" would
    // otherwise turn a tenant's ring into a catch-all without a word.
    if let Some(field) = obj
        .keys()
        .find(|k| !RING_FIELDS.split(", ").any(|known| known == k.as_str()))
    {
        return Err(HashringError::UnknownField {
            ring: id,
            field: field.clone(),
            known: RING_FIELDS,
        });
    }

    let algorithm = match opt_str(&id, obj, "algorithm")? {
        None | Some("") => default_algorithm,
        Some(s) => {
            s.parse()
                .map_err(|UnknownAlgorithm(value)| HashringError::UnknownAlgorithm {
                    ring: id.clone(),
                    value,
                })?
        }
    };
    let matcher = match opt_str(&id, obj, "tenant_matcher_type")? {
        None | Some("") | Some("exact") => TenantMatcher::Exact,
        Some("glob") => TenantMatcher::Glob,
        Some(other) => {
            return Err(HashringError::UnknownMatcher {
                ring: id,
                value: other.to_string(),
            })
        }
    };
    check_shuffle_sharding(&id, obj)?;

    let endpoints = match obj.get("endpoints") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| parse_endpoint(&id, i, v))
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => return Err(wrong_type(&id, "endpoints", "a list", other)),
    };

    let tenants: Vec<String> = match obj.get("tenants") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(wrong_type(&id, format!("tenants[{i}]"), "a string", other)),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(wrong_type(&id, "tenants", "a list of strings", other)),
    };
    let lookup = if tenants.is_empty() {
        TenantLookup::All
    } else {
        match matcher {
            TenantMatcher::Exact => {
                let mut sorted = tenants.clone();
                sorted.sort_unstable();
                sorted.dedup();
                TenantLookup::Exact(sorted)
            }
            TenantMatcher::Glob => TenantLookup::Glob(
                tenants
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        GlobPattern::new(t).map_err(|reason| HashringError::BadGlob {
                            ring: id.clone(),
                            index: i,
                            pattern: t.clone(),
                            reason,
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        }
    };

    let mut external_labels: Vec<(String, String)> = match obj.get("external_labels") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(labels)) => labels
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(wrong_type(
                    &id,
                    format!("external_labels.{k}"),
                    "a string",
                    other,
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(wrong_type(
                &id,
                "external_labels",
                "an object of strings",
                other,
            ))
        }
    };
    external_labels.sort_unstable();

    let mut ring = Hashring::build(id, algorithm, endpoints, SECTIONS_PER_NODE)?;
    ring.tenants = tenants;
    ring.matcher = matcher;
    ring.lookup = lookup;
    ring.external_labels = external_labels;
    Ok(ring)
}

/// Shuffle sharding changes which endpoints a tenant's series go to; without it Sluice would
/// place them unlike Thanos, so a ring that enables it is refused rather than misread.
fn check_shuffle_sharding(id: &RingId, obj: &Map<String, Value>) -> Result<(), HashringError> {
    match obj.get("shuffle_sharding_config") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(cfg)) => match cfg.get("shard_size") {
            None | Some(Value::Null) => Ok(()),
            Some(Value::Number(n)) if n.as_f64() == Some(0.0) => Ok(()),
            Some(Value::Number(_)) => Err(HashringError::Unsupported {
                ring: id.clone(),
                field: "shuffle_sharding_config.shard_size > 0 (shuffle sharding)",
            }),
            Some(other) => Err(wrong_type(
                id,
                "shuffle_sharding_config.shard_size",
                "a number",
                other,
            )),
        },
        Some(other) => Err(wrong_type(
            id,
            "shuffle_sharding_config",
            "an object",
            other,
        )),
    }
}

/// `"host:port"` or `{"address": "host:port", "az": "zone", "capnproto_address": ...}`.
fn parse_endpoint(id: &RingId, i: usize, v: &Value) -> Result<Endpoint, HashringError> {
    match v {
        Value::String(s) => Ok(Endpoint::new(s.clone())),
        Value::Object(obj) => {
            if let Some(field) = obj
                .keys()
                .find(|k| !ENDPOINT_FIELDS.split(", ").any(|known| known == k.as_str()))
            {
                return Err(HashringError::UnknownField {
                    ring: id.clone(),
                    field: format!("endpoints[{i}].{field}"),
                    known: ENDPOINT_FIELDS,
                });
            }
            let field = |name: &str| -> Result<Option<&str>, HashringError> {
                match obj.get(name) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s)),
                    Some(other) => Err(wrong_type(
                        id,
                        format!("endpoints[{i}].{name}"),
                        "a string",
                        other,
                    )),
                }
            };
            // Sluice replicates over its own protocol; the Cap'n Proto address is accepted so
            // Thanos files load, and otherwise unused.
            field("capnproto_address")?;
            Ok(Endpoint {
                address: field("address")?.unwrap_or_default().to_string(),
                az: field("az")?.filter(|az| !az.is_empty()).map(str::to_string),
            })
        }
        other => Err(wrong_type(
            id,
            format!("endpoints[{i}]"),
            "a \"host:port\" string or an object with \"address\"",
            other,
        )),
    }
}

#[cfg(test)]
mod tests;
