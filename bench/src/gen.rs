//! Deterministic generator of realistic Kubernetes-cluster series and their samples.
//!
//! Owns *what* a payload contains: label sets shaped like those of node_exporter, the kubelet's
//! cAdvisor endpoint and kube-state-metrics as scraped by a kube-prometheus style Prometheus
//! (with a `cluster` external label), and a value for every (series, timestamp). Encoding is
//! [`crate::prompb`]'s job; sending is the load generator's.
//!
//! Why realistic rather than `metric_0{a="1"}`: decode, hashing, snappy and storage costs all
//! depend on label count, string lengths and repetition, so only payloads that look like the
//! real thing give numbers that transfer.
//!
//! Everything is a pure function of the seed: no `rand`, no clock, no `HashMap` iteration
//! order, only integer and correctly rounded IEEE arithmetic. So a test (or a load generator
//! and a checker on another machine) can recompute any label set or value from `(seed, i, ts)`.
//!
//! The series are produced by walking a synthetic cluster node by node: each node's
//! node_exporter series, then for each pod on it its cAdvisor and kube-state-metrics series.
//! The walk never depends on `n_series`, so `SeriesSet::new(n, seed)` is a prefix of
//! `SeriesSet::new(m, seed)` for `n <= m` and a load generator can grow its series count
//! without renaming existing series.

use std::ops::Range;

use crate::prompb::{Label, MetricMetadata, MetricType, Sample, TimeSeries, WriteRequest};

pub use crate::prompb::{encode, encode_snappy};

/// Counters count from this instant (2023-11-14T22:13:20Z) and stay at their base before it,
/// so they are monotonic for every timestamp while keeping magnitudes plausible for "now".
pub const COUNTER_EPOCH_MS: i64 = 1_700_000_000_000;

/// How a series' value evolves with time. `quantum` is the resolution values are rounded to
/// (1 for byte counts, 0.01 for jiffy-based CPU seconds, 0 for none), because real exporters
/// produce such values and they compress differently from full-mantissa floats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    /// Monotonic non-decreasing: `base + rate_per_s * seconds since COUNTER_EPOCH_MS`,
    /// rounded down to `quantum`.
    Counter {
        /// Value at [`COUNTER_EPOCH_MS`] and before.
        base: f64,
        /// Increase per second.
        rate_per_s: f64,
        /// Resolution, rounded down to; 0 for none.
        quantum: f64,
    },
    /// A triangle wave `mid ± amp` with ±2.5% of `amp` of per-sample noise, rounded to
    /// `quantum`. Never negative: `mid >= 1.05 * amp` for every gauge generated.
    Gauge {
        /// Centre of the wave.
        mid: f64,
        /// Amplitude of the wave.
        amp: f64,
        /// Period of the wave.
        period_ms: i64,
        /// Offset of the wave, so series do not move in lockstep.
        phase_ms: i64,
        /// Resolution, rounded to; 0 for none.
        quantum: f64,
    },
    /// Always the same value: info metrics, enum states, resource requests, `up`.
    Const(f64),
}

/// One generated series.
#[derive(Clone, Debug, PartialEq)]
struct Series {
    labels: Vec<(String, String)>,
    shape: Shape,
}

/// A fixed, reproducible population of series.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSet {
    seed: u64,
    series: Vec<Series>,
}

impl SeriesSet {
    /// The first `n_series` series of the cluster described by `seed`.
    ///
    /// Memory is roughly 1 KiB per series (labels are owned strings), so a million series cost
    /// about a gigabyte.
    pub fn new(n_series: usize, seed: u64) -> Self {
        let mut cluster = Cluster::new(seed);
        let mut series = Vec::with_capacity(n_series);
        let mut node = 0u32;
        while series.len() < n_series {
            cluster.node(node, &mut series);
            node += 1;
        }
        // The walk emits whole nodes; cutting the last one keeps the prefix property.
        series.truncate(n_series);
        SeriesSet { seed, series }
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether there are no series.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The seed this set was built from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Labels of series `i`, sorted by name, `__name__` included. Panics if `i >= len()`.
    pub fn labels(&self, i: usize) -> &[(String, String)] {
        &self.series[i].labels
    }

    /// How series `i`'s value moves. Panics if `i >= len()`.
    pub fn shape(&self, i: usize) -> Shape {
        self.series[i].shape
    }

    /// The value of series `i` at `ts_ms`, the same on every call and every machine.
    /// Panics if `i >= len()`.
    pub fn value(&self, i: usize, ts_ms: i64) -> f64 {
        match self.series[i].shape {
            Shape::Counter {
                base,
                rate_per_s,
                quantum,
            } => {
                let elapsed_s = ts_ms.saturating_sub(COUNTER_EPOCH_MS).max(0) as f64 / 1000.0;
                quantize_down(base + rate_per_s * elapsed_s, quantum)
            }
            Shape::Gauge {
                mid,
                amp,
                period_ms,
                phase_ms,
                quantum,
            } => {
                let p =
                    ts_ms.wrapping_add(phase_ms).rem_euclid(period_ms) as f64 / period_ms as f64;
                let triangle = 4.0 * (p - 0.5).abs() - 1.0; // -1..=1
                let noise = unit(mix(self.seed ^ mix(i as u64 ^ mix(ts_ms as u64)))) - 0.5;
                let v = mid + amp * triangle + 0.05 * amp * noise;
                if quantum > 0.0 {
                    (v / quantum).round() * quantum
                } else {
                    v
                }
            }
            Shape::Const(v) => v,
        }
    }

    /// A request carrying series `range`, each with `samples_per_series` samples at `ts_ms`,
    /// `ts_ms + step_ms`, ... valued by [`value`](Self::value). Panics if `range` is out of
    /// bounds.
    pub fn write_request(
        &self,
        range: Range<usize>,
        ts_ms: i64,
        samples_per_series: usize,
        step_ms: i64,
    ) -> WriteRequest {
        let timeseries = self.series[range.clone()]
            .iter()
            .zip(range)
            .map(|(s, i)| TimeSeries {
                labels: s
                    .labels
                    .iter()
                    .map(|(name, value)| Label {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                samples: (0..samples_per_series as i64)
                    .map(|k| {
                        let timestamp = ts_ms + k * step_ms;
                        Sample {
                            value: self.value(i, timestamp),
                            timestamp,
                        }
                    })
                    .collect(),
                exemplars: Vec::new(),
            })
            .collect();
        WriteRequest {
            timeseries,
            metadata: Vec::new(),
        }
    }

    /// Metadata for every metric family present, in first-appearance order, as Prometheus
    /// sends it (in requests of its own, without series).
    pub fn metadata(&self) -> Vec<MetricMetadata> {
        let mut seen: Vec<&str> = Vec::new();
        for s in &self.series {
            let name = s
                .labels
                .iter()
                .find(|(n, _)| n == "__name__")
                .map(|(_, v)| v.as_str());
            if let Some(name) = name {
                if !seen.contains(&name) {
                    seen.push(name);
                }
            }
        }
        seen.into_iter()
            .filter_map(|name| METRICS.iter().find(|m| m.0 == name))
            .map(|&(name, kind, help, unit)| MetricMetadata {
                r#type: kind as i32,
                metric_family_name: name.to_string(),
                help: help.to_string(),
                unit: unit.to_string(),
            })
            .collect()
    }
}

/// Every metric family the generator emits: name, type, help, unit.
const METRICS: &[(&str, MetricType, &str, &str)] = &[
    (
        "up",
        MetricType::Gauge,
        "Whether the target was scraped successfully.",
        "",
    ),
    (
        "node_cpu_seconds_total",
        MetricType::Counter,
        "Seconds the CPUs spent in each mode.",
        "seconds",
    ),
    (
        "node_filesystem_avail_bytes",
        MetricType::Gauge,
        "Filesystem space available to non-root users in bytes.",
        "bytes",
    ),
    (
        "node_filesystem_size_bytes",
        MetricType::Gauge,
        "Filesystem size in bytes.",
        "bytes",
    ),
    (
        "node_network_receive_bytes_total",
        MetricType::Counter,
        "Network device statistic receive_bytes.",
        "bytes",
    ),
    (
        "node_network_transmit_bytes_total",
        MetricType::Counter,
        "Network device statistic transmit_bytes.",
        "bytes",
    ),
    (
        "node_disk_read_bytes_total",
        MetricType::Counter,
        "The total number of bytes read successfully.",
        "bytes",
    ),
    (
        "node_disk_written_bytes_total",
        MetricType::Counter,
        "The total number of bytes written successfully.",
        "bytes",
    ),
    (
        "node_memory_MemAvailable_bytes",
        MetricType::Gauge,
        "Memory information field MemAvailable_bytes.",
        "bytes",
    ),
    (
        "node_memory_MemTotal_bytes",
        MetricType::Gauge,
        "Memory information field MemTotal_bytes.",
        "bytes",
    ),
    ("node_load1", MetricType::Gauge, "1m load average.", ""),
    (
        "container_cpu_usage_seconds_total",
        MetricType::Counter,
        "Cumulative cpu time consumed in seconds.",
        "seconds",
    ),
    (
        "container_memory_working_set_bytes",
        MetricType::Gauge,
        "Current working set in bytes.",
        "bytes",
    ),
    (
        "container_network_receive_bytes_total",
        MetricType::Counter,
        "Cumulative count of bytes received.",
        "bytes",
    ),
    (
        "container_network_transmit_bytes_total",
        MetricType::Counter,
        "Cumulative count of bytes transmitted.",
        "bytes",
    ),
    (
        "kube_pod_info",
        MetricType::Gauge,
        "Information about pod.",
        "",
    ),
    (
        "kube_pod_status_phase",
        MetricType::Gauge,
        "The pods current phase.",
        "",
    ),
    (
        "kube_pod_container_status_restarts_total",
        MetricType::Counter,
        "The number of container restarts per container.",
        "",
    ),
    (
        "kube_pod_container_resource_requests",
        MetricType::Gauge,
        "The number of requested request resource by a container.",
        "",
    ),
];

const CPU_MODES: &[(&str, f64)] = &[
    // (mode, share of a CPU's time): together ~1 core-second per second per CPU.
    ("idle", 0.72),
    ("iowait", 0.01),
    ("irq", 0.002),
    ("nice", 0.0005),
    ("softirq", 0.008),
    ("steal", 0.003),
    ("system", 0.06),
    ("user", 0.19),
];

const FILESYSTEMS: &[(&str, &str, &str)] = &[
    ("/dev/nvme0n1p1", "xfs", "/"),
    ("/dev/nvme1n1", "ext4", "/var/lib/containerd"),
    ("tmpfs", "tmpfs", "/run"),
];

/// (namespace, deployment, containers).
const DEPLOYMENTS: &[(&str, &str, &[&str])] = &[
    ("payments", "payments-api", &["payments-api", "istio-proxy"]),
    ("payments", "ledger-worker", &["ledger-worker"]),
    ("checkout", "checkout-web", &["checkout-web", "istio-proxy"]),
    ("checkout", "cart-service", &["cart-service"]),
    ("search", "search-indexer", &["indexer", "fluent-bit"]),
    ("search", "query-frontend", &["query-frontend"]),
    ("identity", "auth-gateway", &["auth-gateway", "istio-proxy"]),
    ("kube-system", "coredns", &["coredns"]),
    (
        "monitoring",
        "grafana",
        &["grafana", "grafana-sc-dashboard"],
    ),
    ("ingress-nginx", "ingress-nginx-controller", &["controller"]),
    ("data", "redis-cache", &["redis", "redis-exporter"]),
    ("data", "kafka-connect", &["kafka-connect"]),
];

const PHASES: &[&str] = &["Failed", "Pending", "Running", "Succeeded", "Unknown"];

const CLUSTERS: &[(&str, &str)] = &[
    ("prod-eu-west-1", "eu-west-1"),
    ("prod-us-east-1", "us-east-1"),
    ("staging-eu-central-1", "eu-central-1"),
];

/// Kubernetes' alphabet for generated name suffixes (no vowels, no look-alike digits).
const K8S_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// State shared by the whole walk: per-cluster constants drawn once from the seed, and the
/// generator all later draws come from, in walk order.
struct Cluster {
    rng: SplitMix64,
    cluster: &'static str,
    region: &'static str,
    /// Added to node and pod numbers before the bijections that make IPs and pod names unique.
    ip_offset: u32,
    pod_offset: u32,
    /// Per deployment: its current ReplicaSet's pod-template hash.
    rs_hash: Vec<String>,
    /// Per deployment and container: image reference.
    images: Vec<Vec<String>>,
    ksm_instance: String,
    pods_so_far: u32,
}

impl Cluster {
    fn new(seed: u64) -> Self {
        let mut rng = SplitMix64(seed);
        let (cluster, region) = *rng.pick(CLUSTERS);
        let ip_offset = rng.next_u64() as u32;
        let pod_offset = rng.next_u64() as u32;
        let rs_hash = DEPLOYMENTS
            .iter()
            .map(|_| {
                let len = 9 + rng.below(2) as usize;
                k8s_chars(&mut rng, len)
            })
            .collect();
        let images = DEPLOYMENTS
            .iter()
            .map(|(ns, _, containers)| {
                containers
                    .iter()
                    .map(|c| {
                        format!(
                            "registry.internal.example.com/{ns}/{c}:v{}.{}.{}",
                            1 + rng.below(3),
                            rng.below(40),
                            rng.below(12)
                        )
                    })
                    .collect()
            })
            .collect();
        let ksm_instance = format!(
            "10.{}.{}.{}:8080",
            100 + rng.below(100),
            rng.below(256),
            1 + rng.below(254)
        );
        Cluster {
            rng,
            cluster,
            region,
            ip_offset,
            pod_offset,
            rs_hash,
            images,
            ksm_instance,
            pods_so_far: 0,
        }
    }

    /// Appends every series of node `n`.
    fn node(&mut self, n: u32, out: &mut Vec<Series>) {
        // Multiplying by an odd number is a bijection mod 2^24, so every node (up to 16M) gets
        // its own IP and thus its own `instance`, which keeps all series unique.
        let x = n.wrapping_mul(0x9E_37_79).wrapping_add(self.ip_offset) & 0xFF_FFFF;
        let ip = format!("10.{}.{}.{}", x >> 16, (x >> 8) & 0xFF, x & 0xFF);
        let node_name = format!(
            "ip-{}.{}.compute.internal",
            ip.replace('.', "-"),
            self.region
        );
        self.node_exporter(&ip, out);
        let pods = 8 + self.rng.below(17) as usize;
        for _ in 0..pods {
            self.pod(&ip, &node_name, out);
        }
    }

    fn node_exporter(&mut self, ip: &str, out: &mut Vec<Series>) {
        let rng = &mut self.rng;
        let pod = format!("node-exporter-{}", k8s_chars(rng, 5));
        let base = [
            ("cluster", self.cluster.to_string()),
            ("container", "node-exporter".to_string()),
            ("instance", format!("{ip}:9100")),
            ("job", "node-exporter".to_string()),
            ("namespace", "monitoring".to_string()),
            ("pod", pod),
            ("service", "node-exporter".to_string()),
        ];
        let mut push = |name: &str, extra: &[(&str, String)], shape: Shape| {
            out.push(series(name, &base, extra, shape));
        };
        push("up", &[], Shape::Const(1.0));

        let cpus = [4u64, 8, 16][rng.below(3) as usize];
        let load = rng.unit();
        for cpu in 0..cpus {
            for &(mode, share) in CPU_MODES {
                let rate = share * (0.8 + 0.4 * rng.unit());
                push(
                    "node_cpu_seconds_total",
                    &[("cpu", cpu.to_string()), ("mode", mode.to_string())],
                    counter(rng, rate, 1e5, 0.01),
                );
            }
        }

        for &(device, fstype, mountpoint) in FILESYSTEMS {
            let size = (20 + rng.below(480)) as f64 * GIB;
            let extra = [
                ("device", device.to_string()),
                ("fstype", fstype.to_string()),
                ("mountpoint", mountpoint.to_string()),
            ];
            push(
                "node_filesystem_avail_bytes",
                &extra,
                gauge(rng, size * 0.5, size * 0.3, 4096.0),
            );
            push("node_filesystem_size_bytes", &extra, Shape::Const(size));
        }

        for device in ["eth0", "lo"] {
            for name in [
                "node_network_receive_bytes_total",
                "node_network_transmit_bytes_total",
            ] {
                let rate = 1e4 * (1.0 + 999.0 * rng.unit());
                push(
                    name,
                    &[("device", device.to_string())],
                    counter(rng, rate, 1e9, 1.0),
                );
            }
        }
        for device in ["nvme0n1", "nvme1n1"] {
            for name in [
                "node_disk_read_bytes_total",
                "node_disk_written_bytes_total",
            ] {
                let rate = 1e3 * (1.0 + 9999.0 * rng.unit());
                push(
                    name,
                    &[("device", device.to_string())],
                    counter(rng, rate, 1e9, 1.0),
                );
            }
        }

        let mem = (cpus * 4) as f64 * GIB;
        push(
            "node_memory_MemAvailable_bytes",
            &[],
            gauge(rng, mem * 0.45, mem * 0.3, 4096.0),
        );
        push("node_memory_MemTotal_bytes", &[], Shape::Const(mem));
        let l = cpus as f64 * (0.1 + 0.6 * load);
        push("node_load1", &[], gauge(rng, l, l * 0.5, 0.01));
    }

    fn pod(&mut self, node_ip: &str, node_name: &str, out: &mut Vec<Series>) {
        let d = self.rng.below(DEPLOYMENTS.len() as u64) as usize;
        let (namespace, deployment, containers) = DEPLOYMENTS[d];
        let replicaset = format!("{deployment}-{}", self.rs_hash[d]);
        // A bijection of the pod number mod 27^5 (the multiplier is not a multiple of 3), so
        // pod names are unique cluster-wide for the first 14M pods.
        let space = (K8S_ALPHABET.len() as u64).pow(5);
        let mut k = (u64::from(self.pods_so_far) * 7_368_787 + u64::from(self.pod_offset)) % space;
        self.pods_so_far += 1;
        let mut suffix = String::with_capacity(5);
        for _ in 0..5 {
            suffix.push(K8S_ALPHABET[(k % 27) as usize] as char);
            k /= 27;
        }
        let pod = format!("{replicaset}-{suffix}");

        let rng = &mut self.rng;
        let uid = uuid_v4(rng);
        let pod_ip = format!(
            "10.{}.{}.{}",
            128 + rng.below(64),
            rng.below(256),
            1 + rng.below(254)
        );
        let running = rng.below(50) != 0;

        // --- kubelet /metrics/cadvisor ---
        let kubelet = [
            ("cluster", self.cluster.to_string()),
            ("instance", format!("{node_ip}:10250")),
            ("job", "kubelet".to_string()),
            ("metrics_path", "/metrics/cadvisor".to_string()),
            ("node", node_name.to_string()),
        ];
        let pod_slice = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            uid.replace('-', "_")
        );
        for (c, container) in containers.iter().enumerate() {
            let id = format!("{pod_slice}/cri-containerd-{}.scope", hex(rng, 64));
            let extra = [
                ("container", container.to_string()),
                ("id", id),
                ("image", self.images[d][c].clone()),
                ("namespace", namespace.to_string()),
                ("pod", pod.clone()),
            ];
            let cores = 0.002 + 1.5 * rng.unit() * rng.unit();
            let mut with_cpu = extra.to_vec();
            with_cpu.push(("cpu", "total".to_string()));
            out.push(series(
                "container_cpu_usage_seconds_total",
                &kubelet,
                &with_cpu,
                counter(rng, cores, 1e3, 0.0),
            ));
            let mem = (16.0 + 2000.0 * rng.unit() * rng.unit()) * MIB;
            out.push(series(
                "container_memory_working_set_bytes",
                &kubelet,
                &extra,
                gauge(rng, mem, mem * 0.2, 4096.0),
            ));
        }
        for name in [
            "container_network_receive_bytes_total",
            "container_network_transmit_bytes_total",
        ] {
            let rate = 1e3 * (1.0 + 999.0 * rng.unit());
            let extra = [
                ("interface", "eth0".to_string()),
                ("namespace", namespace.to_string()),
                ("pod", pod.clone()),
            ];
            out.push(series(name, &kubelet, &extra, counter(rng, rate, 1e6, 1.0)));
        }

        // --- kube-state-metrics (honor_labels: namespace/pod/container are the pod's) ---
        let ksm = [
            ("cluster", self.cluster.to_string()),
            ("instance", self.ksm_instance.clone()),
            ("job", "kube-state-metrics".to_string()),
            ("namespace", namespace.to_string()),
            ("pod", pod.clone()),
            ("uid", uid),
        ];
        out.push(series(
            "kube_pod_info",
            &ksm,
            &[
                ("created_by_kind", "ReplicaSet".to_string()),
                ("created_by_name", replicaset),
                ("host_ip", node_ip.to_string()),
                ("node", node_name.to_string()),
                ("pod_ip", pod_ip),
            ],
            Shape::Const(1.0),
        ));
        let current = if running { "Running" } else { "Pending" };
        for phase in PHASES {
            let on = *phase == current;
            out.push(series(
                "kube_pod_status_phase",
                &ksm,
                &[("phase", phase.to_string())],
                Shape::Const(if on { 1.0 } else { 0.0 }),
            ));
        }
        for container in containers {
            // Restarts are rare: a few per month at most, often none.
            let rate = rng.unit() * rng.unit() * 2e-6;
            out.push(series(
                "kube_pod_container_status_restarts_total",
                &ksm,
                &[("container", container.to_string())],
                counter(rng, rate, 3.0, 1.0),
            ));
            let cpu = (1 + rng.below(20)) as f64 * 0.05;
            let mem = (1u64 << (6 + rng.below(5))) as f64 * MIB;
            for (resource, unit, v) in [("cpu", "core", cpu), ("memory", "byte", mem)] {
                out.push(series(
                    "kube_pod_container_resource_requests",
                    &ksm,
                    &[
                        ("container", container.to_string()),
                        ("node", node_name.to_string()),
                        ("resource", resource.to_string()),
                        ("unit", unit.to_string()),
                    ],
                    Shape::Const(v),
                ));
            }
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// Builds a series: `__name__` plus the target's labels plus the metric's own, sorted by name
/// as Prometheus sends them (`__name__` sorts first: `_` is below every lowercase letter).
fn series(name: &str, base: &[(&str, String)], extra: &[(&str, String)], shape: Shape) -> Series {
    let mut labels: Vec<(String, String)> = Vec::with_capacity(1 + base.len() + extra.len());
    labels.push(("__name__".to_string(), name.to_string()));
    labels.extend(
        base.iter()
            .chain(extra)
            .map(|(n, v)| (n.to_string(), v.clone())),
    );
    labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    debug_assert!(
        labels.windows(2).all(|w| w[0].0 < w[1].0),
        "duplicate label in {labels:?}"
    );
    Series { labels, shape }
}

/// A counter that started at a random point below `max_base`.
fn counter(rng: &mut SplitMix64, rate_per_s: f64, max_base: f64, quantum: f64) -> Shape {
    Shape::Counter {
        base: quantize_down(max_base * rng.unit(), quantum),
        rate_per_s,
        quantum,
    }
}

/// A gauge with a period between 10 minutes and 6 hours.
fn gauge(rng: &mut SplitMix64, mid: f64, amp: f64, quantum: f64) -> Shape {
    let period_ms = 600_000 + rng.below(6 * 3_600_000 - 600_000) as i64;
    Shape::Gauge {
        mid: mid.max(1.05 * amp),
        amp,
        period_ms,
        phase_ms: rng.below(period_ms as u64) as i64,
        quantum,
    }
}

fn quantize_down(v: f64, quantum: f64) -> f64 {
    if quantum > 0.0 {
        (v / quantum).floor() * quantum
    } else {
        v
    }
}

fn k8s_chars(rng: &mut SplitMix64, len: usize) -> String {
    (0..len).map(|_| *rng.pick(K8S_ALPHABET) as char).collect()
}

fn hex(rng: &mut SplitMix64, len: usize) -> String {
    (0..len)
        .map(|_| char::from_digit(rng.below(16) as u32, 16).unwrap_or('0'))
        .collect()
}

/// A random (version 4, variant 1) UUID, as Kubernetes uses for object uids.
fn uuid_v4(rng: &mut SplitMix64) -> String {
    let a = rng.next_u64();
    let b = rng.next_u64();
    let a = (a & !0xF000) | 0x4000; // version nibble
    let b = (b & !(0xC << 60)) | (0x8 << 60); // variant bits
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0xFFFF,
        b >> 48,
        b & 0xFFFF_FFFF_FFFF
    )
}

/// SplitMix64's finalizer: a bijective 64-bit mix, used to hash (seed, series, timestamp).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Maps 53 bits of `h` to `[0, 1)` exactly.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// SplitMix64: tiny, fast, good enough statistically, and fully specified, so the sequence is
/// the same everywhere (unlike `rand`'s `StdRng`, whose algorithm may change between versions).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `[0, n)`; the modulo bias is irrelevant for test data.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn unit(&mut self) -> f64 {
        unit(self.next_u64())
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn is_label_name(s: &str) -> bool {
        let mut b = s.bytes();
        matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
    }

    #[test]
    fn same_seed_same_series_and_bytes() {
        let a = SeriesSet::new(3000, 42);
        let b = SeriesSet::new(3000, 42);
        assert_eq!(a, b);
        let ra = encode_snappy(&a.write_request(0..3000, 1_750_000_000_000, 2, 15_000));
        let rb = encode_snappy(&b.write_request(0..3000, 1_750_000_000_000, 2, 15_000));
        assert_eq!(ra, rb);

        let c = SeriesSet::new(3000, 43);
        assert_ne!(a.labels(5), c.labels(5));
    }

    #[test]
    fn smaller_set_is_a_prefix_of_a_larger_one() {
        let small = SeriesSet::new(777, 9);
        let big = SeriesSet::new(5000, 9);
        for i in 0..small.len() {
            assert_eq!(small.labels(i), big.labels(i));
            assert_eq!(small.shape(i), big.shape(i));
            assert_eq!(
                small.value(i, 1_760_000_000_000),
                big.value(i, 1_760_000_000_000)
            );
        }
    }

    #[test]
    fn labels_are_valid_sorted_unique_and_realistic() {
        let set = SeriesSet::new(20_000, 1);
        assert_eq!(set.len(), 20_000);
        let mut seen = HashSet::new();
        let mut jobs = HashSet::new();
        let mut names = HashSet::new();
        for i in 0..set.len() {
            let labels = set.labels(i);
            assert!(
                (6..=12).contains(&labels.len()),
                "{} labels: {labels:?}",
                labels.len()
            );
            assert_eq!(labels[0].0, "__name__");
            for w in labels.windows(2) {
                assert!(w[0].0 < w[1].0, "unsorted or duplicate: {labels:?}");
            }
            for (n, v) in labels {
                assert!(is_label_name(n), "bad name {n:?}");
                assert!(!v.is_empty(), "empty value for {n}");
            }
            names.insert(labels[0].1.clone());
            jobs.insert(labels.iter().find(|l| l.0 == "job").unwrap().1.clone());
            assert!(seen.insert(labels.to_vec()), "duplicate series {labels:?}");
        }
        assert_eq!(
            jobs,
            HashSet::from(["node-exporter", "kubelet", "kube-state-metrics"].map(String::from))
        );
        // Every family in the catalogue shows up, and only those.
        assert_eq!(names.len(), METRICS.len());
        assert_eq!(set.metadata().len(), METRICS.len());
    }

    #[test]
    fn a_default_sized_batch_mixes_all_exporters() {
        let set = SeriesSet::new(2000, 3);
        let jobs: HashSet<_> = (0..2000)
            .map(|i| {
                set.labels(i)
                    .iter()
                    .find(|l| l.0 == "job")
                    .unwrap()
                    .1
                    .clone()
            })
            .collect();
        assert_eq!(jobs.len(), 3, "{jobs:?}");
    }

    #[test]
    fn counters_never_decrease_and_gauges_stay_non_negative() {
        let set = SeriesSet::new(3000, 5);
        for i in 0..set.len() {
            let mut prev = f64::NEG_INFINITY;
            for k in 0..50 {
                let ts = COUNTER_EPOCH_MS - 60_000 + k * 173_000_000;
                let v = set.value(i, ts);
                assert!(v.is_finite() && v >= 0.0, "series {i} at {ts}: {v}");
                if let Shape::Counter { .. } = set.shape(i) {
                    assert!(v >= prev, "counter {i} went down at {ts}: {prev} -> {v}");
                }
                prev = v;
            }
        }
    }

    #[test]
    fn uuid_looks_like_a_v4_uuid() {
        let u = uuid_v4(&mut SplitMix64(7));
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
    }

    #[test]
    fn sluice_decoder_reads_back_the_same_series_and_samples() {
        let set = SeriesSet::new(2600, 11);
        let (ts, step) = (1_760_000_000_000, 15_000);
        let range = 100..2600;
        let mut req = set.write_request(range.clone(), ts, 3, step);
        // Metadata must be skipped, not trip the decoder.
        req.metadata = set.metadata();
        let body = encode_snappy(&req);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert_eq!(raw, encode(&req));

        let mut d = sluice_core::WriteRequestRef::default();
        d.decode(&raw).unwrap();
        assert_eq!(d.series.len(), range.len());
        for (s, i) in d.series.iter().zip(range) {
            let got: Vec<(&str, &str)> = d.series_labels(&raw, s).collect();
            let want: Vec<(&str, &str)> = set
                .labels(i)
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            assert_eq!(got, want);
            let samples = d.series_samples(s);
            assert_eq!(samples.len(), 3);
            for (k, smp) in samples.iter().enumerate() {
                let t = ts + k as i64 * step;
                assert_eq!(smp.timestamp, t);
                assert_eq!(smp.value.to_bits(), set.value(i, t).to_bits());
            }
        }
    }
}
