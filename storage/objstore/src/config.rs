//! The Thanos objstore YAML (`--objstore.config-file` / `--objstore.config`), parsed into a
//! typed [`ObjstoreConfig`].
//!
//! Owns parsing and validation only: no I/O besides reading the file, no network. The shape
//! is Thanos' (`thanos-io/objstore`, `client/factory.go` and `providers/{filesystem,s3}`):
//! ```yaml
//! type: S3            # or FILESYSTEM; matched case-insensitively, as Thanos does
//! config: { ... }     # provider fields, below
//! prefix: ""          # optional: every object key is put under <prefix>/
//! ```
//! Thanos decodes strictly (`yaml.UnmarshalStrict`), so unknown keys are errors here too,
//! naming the key. Thanos S3 fields that we accept but do not act on are listed on
//! [`S3Config`]; fields whose non-default value would change what reaches the bucket
//! (`sse_config.type`, `signature_version2`, `aws_sdk_auth`) are refused rather than
//! silently ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::Deserialize;

/// Thanos' default S3 part size (64 MiB): files larger than this go up as multipart uploads.
pub const DEFAULT_PART_SIZE: u64 = 64 << 20;
/// S3's minimum size of every part but the last.
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Region used when the config leaves `region` empty. Thanos (minio-go) would ask the
/// server for the bucket's location instead; S3-compatible servers accept `us-east-1`, and
/// AWS redirects with an error naming the right region.
pub const DEFAULT_REGION: &str = "us-east-1";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read objstore config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("objstore config: invalid YAML: {0}")]
    Yaml(String),
    #[error("objstore config: missing field `{0}`")]
    Missing(&'static str),
    #[error("objstore config: bucket type {0:?} is not supported (supported: FILESYSTEM, S3)")]
    UnsupportedType(String),
    #[error("objstore config: field `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// A parsed objstore configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjstoreConfig {
    pub bucket: BucketConfig,
    /// Key prefix inside the bucket, without leading/trailing `/` (empty: none).
    pub prefix: String,
}

/// Which backend, with its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BucketConfig {
    /// `type: FILESYSTEM`: objects are files under `directory` (relative paths are taken
    /// from the working directory, as Thanos does).
    Filesystem { directory: PathBuf },
    /// `type: S3`.
    S3(S3Config),
}

/// `type: S3` settings. Field names are the YAML keys.
///
/// Accepted and ignored (Thanos tuning that has no counterpart here, or that only affects
/// reads): `http_config`, `trace`, `list_objects_version` (`""`, `v1`, `v2`),
/// `disable_dualstack`, `sts_endpoint`, empty `sse_config`, `signature_version2: false`,
/// `aws_sdk_auth: false`.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// `host[:port]` as in Thanos; an `http://` or `https://` prefix is also accepted and
    /// then decides the scheme instead of `insecure`.
    pub endpoint: String,
    /// Signing region ([`DEFAULT_REGION`] when empty).
    pub region: String,
    /// Static credentials. When both are empty, `AWS_ACCESS_KEY_ID` /
    /// `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` are read when the client is built
    /// (Thanos' second credential source; its `~/.aws/credentials` and instance-profile
    /// sources are not supported).
    pub access_key: String,
    pub secret_key: String,
    pub session_token: String,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    pub bucket_lookup_type: BucketLookupType,
    /// Multipart part size in bytes (files larger than this are uploaded in parts).
    pub part_size: u64,
    /// Always a single PUT (S3 caps those at 5 GiB; our largest files are 512 MiB segments).
    pub disable_multipart: bool,
    /// Send `Content-MD5` with every PUT / part so the server verifies the bytes (Thanos
    /// default: true).
    pub send_content_md5: bool,
    /// User metadata put on every object; an `X-Amz-Storage-Class` key sets the storage
    /// class instead, as in Thanos.
    pub put_user_metadata: BTreeMap<String, String>,
}

impl fmt::Debug for S3Config {
    // Hand-written so secrets never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("secret_key", &redact(&self.secret_key))
            .field("session_token", &redact(&self.session_token))
            .field("insecure", &self.insecure)
            .field("bucket_lookup_type", &self.bucket_lookup_type)
            .field("part_size", &self.part_size)
            .field("disable_multipart", &self.disable_multipart)
            .field("send_content_md5", &self.send_content_md5)
            .field("put_user_metadata", &self.put_user_metadata)
            .finish()
    }
}

/// Thanos `bucket_lookup_type`: how the bucket name goes into requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BucketLookupType {
    /// minio-go's rule, which Thanos inherits: virtual-hosted for AWS, Google and Aliyun
    /// endpoints, path style for everything else (MinIO, Ceph, moto, …).
    #[default]
    Auto,
    /// `https://<bucket>.<endpoint>/<key>`.
    VirtualHosted,
    /// `https://<endpoint>/<bucket>/<key>`; what MinIO-style servers need.
    Path,
}

impl S3Config {
    /// Whether requests use path-style addressing (resolving `auto` like minio-go).
    pub fn path_style(&self) -> bool {
        match self.bucket_lookup_type {
            BucketLookupType::Path => true,
            BucketLookupType::VirtualHosted => false,
            BucketLookupType::Auto => {
                let host = self.host().to_ascii_lowercase();
                let host = host.split(':').next().unwrap_or("");
                let virtual_capable = [".amazonaws.com", ".amazonaws.com.cn", ".aliyuncs.com"]
                    .iter()
                    .any(|s| host.ends_with(s))
                    || host == "storage.googleapis.com";
                // A dotted bucket name breaks the wildcard certificate under TLS.
                let dotted_tls = self.bucket.contains('.') && self.scheme() == "https";
                !virtual_capable || dotted_tls
            }
        }
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.endpoint.starts_with("http://") {
            "http"
        } else if self.endpoint.starts_with("https://") || !self.insecure {
            "https"
        } else {
            "http"
        }
    }

    /// The endpoint without a scheme.
    pub fn host(&self) -> &str {
        self.endpoint
            .strip_prefix("http://")
            .or_else(|| self.endpoint.strip_prefix("https://"))
            .unwrap_or(&self.endpoint)
            .trim_end_matches('/')
    }

    /// `scheme://host[:port]` for the S3 client.
    pub fn endpoint_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.host())
    }

    /// The signing region.
    pub fn region_or_default(&self) -> &str {
        if self.region.is_empty() {
            DEFAULT_REGION
        } else {
            &self.region
        }
    }
}

impl ObjstoreConfig {
    /// A local directory bucket (the embedded default, `<data-dir>/bucket`).
    pub fn filesystem(directory: impl Into<PathBuf>) -> Self {
        ObjstoreConfig {
            bucket: BucketConfig::Filesystem {
                directory: directory.into(),
            },
            prefix: String::new(),
        }
    }

    /// Reads and parses an objstore config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Parses the YAML text of a Thanos objstore config.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        // Two passes over the same text: the first learns `type`, the second decodes
        // `config` strictly into that provider's fields (no untyped YAML value needed).
        let top: Top<IgnoredAny> = parse(text)?;
        let prefix = top.prefix.unwrap_or_default().trim_matches('/').to_string();
        let kind = top.kind.ok_or(ConfigError::Missing("type"))?;
        let bucket = match kind.to_ascii_uppercase().as_str() {
            "FILESYSTEM" => {
                let raw: Top<RawFilesystem> = parse(text)?;
                let raw = raw.config.ok_or(ConfigError::Missing("config"))?;
                let directory = raw.directory.unwrap_or_default();
                if directory.is_empty() {
                    return Err(ConfigError::Missing("config.directory"));
                }
                BucketConfig::Filesystem {
                    directory: PathBuf::from(directory),
                }
            }
            "S3" => {
                let raw: Top<RawS3> = parse(text)?;
                BucketConfig::S3(raw.config.ok_or(ConfigError::Missing("config"))?.check()?)
            }
            _ => return Err(ConfigError::UnsupportedType(kind)),
        };
        Ok(ObjstoreConfig { bucket, prefix })
    }
}

fn parse<'de, T: Deserialize<'de>>(text: &'de str) -> Result<T, ConfigError> {
    serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml(e.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Top<C> {
    #[serde(rename = "type")]
    kind: Option<String>,
    config: Option<C>,
    prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilesystem {
    directory: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    bucket: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    access_key: Option<String>,
    secret_key: Option<String>,
    session_token: Option<String>,
    insecure: Option<bool>,
    bucket_lookup_type: Option<String>,
    part_size: Option<u64>,
    disable_multipart: Option<bool>,
    send_content_md5: Option<bool>,
    put_user_metadata: Option<BTreeMap<String, String>>,
    // Refused when set to something we would not honour.
    aws_sdk_auth: Option<bool>,
    signature_version2: Option<bool>,
    sse_config: Option<RawSse>,
    list_objects_version: Option<String>,
    // Accepted, ignored.
    #[serde(rename = "http_config")]
    _http_config: Option<IgnoredAny>,
    #[serde(rename = "trace")]
    _trace: Option<IgnoredAny>,
    #[serde(rename = "disable_dualstack")]
    _disable_dualstack: Option<IgnoredAny>,
    #[serde(rename = "sts_endpoint")]
    _sts_endpoint: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSse {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "kms_key_id")]
    _kms_key_id: Option<IgnoredAny>,
    #[serde(rename = "kms_encryption_context")]
    _kms_encryption_context: Option<IgnoredAny>,
    #[serde(rename = "encryption_key")]
    _encryption_key: Option<IgnoredAny>,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl RawS3 {
    fn check(self) -> Result<S3Config, ConfigError> {
        let required = |v: Option<String>, field: &'static str| match v {
            Some(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            _ => Err(ConfigError::Missing(field)),
        };
        let bucket = required(self.bucket, "config.bucket")?;
        let endpoint = required(self.endpoint, "config.endpoint")?;
        let access_key = self.access_key.unwrap_or_default();
        let secret_key = self.secret_key.unwrap_or_default();
        // Thanos' rule: both or neither (then the environment provides them).
        if access_key.is_empty() && !secret_key.is_empty() {
            return Err(ConfigError::Missing("config.access_key"));
        }
        if !access_key.is_empty() && secret_key.is_empty() {
            return Err(ConfigError::Missing("config.secret_key"));
        }
        if self.aws_sdk_auth == Some(true) {
            return Err(invalid(
                "config.aws_sdk_auth",
                "the AWS SDK credential chain is not supported; set access_key and secret_key \
                 (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
            ));
        }
        if self.signature_version2 == Some(true) {
            return Err(invalid(
                "config.signature_version2",
                "only signature v4 is supported",
            ));
        }
        if let Some(kind) = self.sse_config.and_then(|s| s.kind) {
            if !kind.is_empty() {
                return Err(invalid(
                    "config.sse_config.type",
                    format!("server-side encryption {kind:?} is not supported"),
                ));
            }
        }
        match self.list_objects_version.as_deref() {
            None | Some("") | Some("v1") | Some("v2") => {}
            Some(v) => {
                return Err(invalid(
                    "config.list_objects_version",
                    format!("{v:?} is not one of \"\", v1, v2"),
                ))
            }
        }
        let bucket_lookup_type = match self.bucket_lookup_type.as_deref() {
            None | Some("auto") => BucketLookupType::Auto,
            Some("virtual-hosted") => BucketLookupType::VirtualHosted,
            Some("path") => BucketLookupType::Path,
            Some(other) => {
                return Err(invalid(
                    "config.bucket_lookup_type",
                    format!("{other:?} is not one of auto, virtual-hosted, path"),
                ))
            }
        };
        let part_size = match self.part_size {
            None | Some(0) => DEFAULT_PART_SIZE,
            Some(n) if n < MIN_PART_SIZE => {
                return Err(invalid(
                    "config.part_size",
                    format!("{n} bytes is below S3's minimum part size of {MIN_PART_SIZE}"),
                ))
            }
            Some(n) => n,
        };
        let cfg = S3Config {
            bucket,
            endpoint,
            region: self.region.unwrap_or_default().trim().to_string(),
            access_key,
            secret_key,
            session_token: self.session_token.unwrap_or_default(),
            insecure: self.insecure.unwrap_or(false),
            bucket_lookup_type,
            part_size,
            disable_multipart: self.disable_multipart.unwrap_or(false),
            send_content_md5: self.send_content_md5.unwrap_or(true),
            put_user_metadata: self.put_user_metadata.unwrap_or_default(),
        };
        let host = cfg.host();
        if host.is_empty() || host.contains('/') {
            return Err(invalid(
                "config.endpoint",
                format!("{:?} is not host[:port] (no path allowed)", cfg.endpoint),
            ));
        }
        Ok(cfg)
    }
}
