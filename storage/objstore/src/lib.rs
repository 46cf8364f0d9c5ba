//! Sluice object storage: ships the sealed TSDB blocks of a blocks directory to a bucket (a
//! local directory or S3) the way Thanos' shipper does, so Thanos Store Gateway and
//! Compactor read them as their own.
//!
//! The main types:
//! - [`ObjstoreConfig`] (with [`BucketConfig`] and [`S3Config`]): the Thanos objstore YAML,
//!   parsed and validated ([`ObjstoreConfig::from_yaml`], [`ObjstoreConfig::from_file`]);
//! - [`Bucket`]: where objects go, a local directory or S3, under the configured prefix;
//! - [`Shipper`]: started per blocks directory with [`Shipper::start`], it runs on its own
//!   thread and hands back a [`ShipperHandle`] to wake it ([`ShipperHandle::notify`]), read
//!   its [`ShipperStats`] and stop it;
//! - [`ObjstoreError`]: every failure, naming the operation and the object or file.
//!
//! It is a crate of its own so that `sluice-storage` (the byte formats, written on glommio
//! cores) does not build or link tokio and the AWS SDK.
//!
//! Owns:
//! - `config.rs`: the Thanos objstore YAML (`type: FILESYSTEM | S3`, `config`, `prefix`);
//! - `bucket.rs`: the [`Bucket`] abstraction and its local-directory backend (atomic writes);
//! - `s3.rs`: the S3 backend (aws-sdk-s3, static credentials, custom endpoint, path style,
//!   multipart for large files);
//! - `shipper.rs`: the [`Shipper`] thread (own tokio runtime), the upload order
//!   (everything, then `meta.json`), retries with backoff, the `thanos.shipper.json` state
//!   file, and deleting shipped blocks past retention.
//!
//! Must not touch: the block format or how blocks are written ([`sluice_storage::block`] seals
//! them; here they are read-only input, only `meta.json` is parsed, with its type), the WAL,
//! the shard cores (nothing here runs on a glommio executor; the shard side only calls the
//! non-blocking [`ShipperHandle::notify`]). The one thing it changes in the blocks directory
//! besides its state file is deleting whole blocks that are shipped and past retention, so
//! readers of local blocks must tolerate a block vanishing (it goes through a
//! `<ulid>.tmp-for-deletion` rename first, as in Prometheus).

mod bucket;
mod config;
mod s3;
mod shipper;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use bucket::{Bucket, UploadHook};
pub use config::{
    BucketConfig, BucketLookupType, ConfigError, ObjstoreConfig, S3Config, DEFAULT_PART_SIZE,
    DEFAULT_REGION, MIN_PART_SIZE,
};
pub use shipper::{
    ShippedState, Shipper, ShipperHandle, ShipperNotifier, ShipperOptions, ShipperStats, STATE_FILE,
};

/// Everything that can go wrong talking to a bucket or the blocks directory. Each variant
/// names the operation and the object or file.
#[derive(Debug, thiserror::Error)]
pub enum ObjstoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("S3 {op} s3://{bucket}/{key}: {message}")]
    S3 {
        op: &'static str,
        bucket: String,
        key: String,
        /// The SDK error with its whole source chain.
        message: String,
    },
    #[error("invalid object key {0:?}")]
    BadKey(String),
    #[error("block {}: unreadable meta.json: {reason}", path.display())]
    BlockMeta { path: PathBuf, reason: String },
    #[error("shipper state file {}: {reason}", path.display())]
    State { path: PathBuf, reason: String },
    #[error("start shipper thread: {0}")]
    Thread(std::io::Error),
    #[error("stopped by shutdown before block {0} was complete in the bucket")]
    Interrupted(ulid::Ulid),
}

pub(crate) fn io_err(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> ObjstoreError {
    let path = path.to_path_buf();
    move |source| ObjstoreError::Io { op, path, source }
}
