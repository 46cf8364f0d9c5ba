//! `sluice check config`: validates the files a receiver would load, without starting it,
//! and the flags that name them (shared with the receiver, so both read the same files the
//! same way).
//!
//! Owns the report (one line per file: what it holds, or what is wrong). Must not start
//! anything or write files.

use std::path::PathBuf;

use sluice_objstore::ObjstoreConfig;

use crate::reload;

/// The configuration files and the flags that decide how they are read.
#[derive(Debug, clap::Args)]
pub struct ConfigFiles {
    /// Object storage for blocks, as a Thanos objstore YAML file (`type: S3` or
    /// `type: FILESYSTEM`). Default: a local directory bucket at <data-dir>/bucket.
    #[arg(
        long = "objstore.config-file",
        env = "SLUICE_OBJSTORE_CONFIG_FILE",
        conflicts_with = "objstore_config"
    )]
    pub objstore_config_file: Option<PathBuf>,

    /// Object storage for blocks, the Thanos objstore YAML inline (instead of a file).
    #[arg(long = "objstore.config", env = "SLUICE_OBJSTORE_CONFIG")]
    pub objstore_config: Option<String>,

    /// Thanos hashrings file (JSON list of rings with endpoints and tenants). Turns on the
    /// cluster: every series goes to its replicas on the ring's nodes. Re-read when it
    /// changes (polled, and on SIGHUP); an invalid version is logged and ignored.
    #[arg(long = "receive.hashrings-file", env = "SLUICE_RECEIVE_HASHRINGS_FILE")]
    pub hashrings_file: Option<PathBuf>,

    /// Placement algorithm of rings that do not name one: `hashmod` or `ketama`.
    #[arg(
        long = "receive.hashrings-algorithm",
        env = "SLUICE_RECEIVE_HASHRINGS_ALGORITHM",
        default_value = "hashmod"
    )]
    pub hashrings_algorithm: sluice_core::hashring::Algorithm,

    /// Replicas of every series (write quorum: R/2+1 of them must be durable).
    #[arg(
        long = "receive.replication-factor",
        env = "SLUICE_RECEIVE_REPLICATION_FACTOR",
        default_value_t = 1
    )]
    pub replication_factor: usize,

    /// This node's endpoint exactly as the hashrings file writes it (e.g. sluice-0:10901).
    /// A node that is in no ring only forwards. Alias: --receive.local-endpoint.
    #[arg(
        long = "node-name",
        alias = "receive.local-endpoint",
        env = "SLUICE_NODE_NAME"
    )]
    pub node_name: Option<String>,

    /// Per-tenant write limits, Thanos' limits YAML (request size/series/samples → 413,
    /// active series → 429). Re-read when it changes.
    #[arg(
        long = "receive.limits-config-file",
        env = "SLUICE_RECEIVE_LIMITS_CONFIG_FILE"
    )]
    pub limits_file: Option<PathBuf>,
}

/// Checks every file given; prints one line per file. Returns the exit status.
pub fn run(f: &ConfigFiles) -> i32 {
    let mut failed = false;
    let mut checked = 0;
    let mut report = |what: String, r: anyhow::Result<String>| {
        checked += 1;
        match r {
            Ok(ok) => println!("{what}: OK: {ok}"),
            Err(e) => {
                failed = true;
                println!("{what}: ERROR: {e:#}");
            }
        }
    };
    if f.replication_factor == 0 {
        report(
            "--receive.replication-factor".into(),
            Err(anyhow::anyhow!("must be at least 1")),
        );
    }
    if let Some(path) = &f.hashrings_file {
        let src = reload::RingSource {
            path: path.clone(),
            algorithm: f.hashrings_algorithm,
            replication_factor: f.replication_factor,
            node_name: f.node_name.clone(),
        };
        report(
            format!("hashrings file {}", path.display()),
            src.load().map(|(_, rings)| {
                let mut parts: Vec<String> = rings
                    .rings()
                    .iter()
                    .map(|r| {
                        format!(
                            "ring {:?} ({}, {} endpoints)",
                            r.name(),
                            r.algorithm().as_str(),
                            r.endpoints().len()
                        )
                    })
                    .collect();
                match &f.node_name {
                    Some(n) if rings.rings().iter().all(|r| r.endpoint_index(n).is_none()) => parts
                        .push(format!(
                            "--node-name {n:?} is in no ring (it would only forward)"
                        )),
                    Some(n) => parts.push(format!("--node-name {n:?} found")),
                    None => {}
                }
                format!(
                    "{}; replication factor {} fits every ring",
                    parts.join(", "),
                    f.replication_factor
                )
            }),
        );
    }
    if let Some(path) = &f.limits_file {
        report(
            format!("limits file {}", path.display()),
            reload::load_limits(path).map(|(_, l)| {
                if l.is_empty() {
                    "no limits set".to_string()
                } else {
                    "limits parsed".to_string()
                }
            }),
        );
    }
    let objstore = match (&f.objstore_config_file, &f.objstore_config) {
        (Some(path), _) => Some((
            format!("objstore config {}", path.display()),
            ObjstoreConfig::from_file(path),
        )),
        (None, Some(yaml)) => Some((
            "--objstore.config".to_string(),
            ObjstoreConfig::from_yaml(yaml),
        )),
        (None, None) => None,
    };
    if let Some((what, r)) = objstore {
        report(
            what,
            r.map(|c| format!("{} bucket", bucket_kind(&c)))
                .map_err(anyhow::Error::from),
        );
    }
    if checked == 0 {
        eprintln!(
            "nothing to check: pass --receive.hashrings-file, --receive.limits-config-file or --objstore.config-file"
        );
        return 2;
    }
    i32::from(failed)
}

fn bucket_kind(c: &ObjstoreConfig) -> &'static str {
    match c.bucket {
        sluice_objstore::BucketConfig::Filesystem { .. } => "FILESYSTEM",
        sluice_objstore::BucketConfig::S3(_) => "S3",
    }
}
