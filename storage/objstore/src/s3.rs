//! The S3 backend of [`Bucket`](crate::Bucket), through `aws-sdk-s3`.
//!
//! Owns the S3 client setup (static credentials, custom endpoint, region, path style,
//! plain HTTP when `insecure: true`, rustls with ring for HTTPS) and the upload paths:
//! a single `PutObject` up to `part_size`, multipart above it. Must not retry beyond the
//! SDK's few quick attempts per request: the shipper owns the long retry loop (with
//! backoff and shutdown) around whole blocks.
//!
//! Choices that matter for S3-compatible servers:
//! - checksums `WhenRequired` (the SDK's default since early 2025 adds CRC32 trailers with
//!   `aws-chunked` bodies, which older MinIO, Ceph and other S3-compatible servers refuse);
//!   integrity comes from `Content-MD5` instead, as Thanos (minio-go) sends it;
//! - no `sigv4a` (only for multi-region access points), no default HTTPS client (that would
//!   build aws-lc from C); our own hyper + rustls/ring client serves both http and https.
//!
//! Permissions: `s3:PutObject` (multipart included), `s3:GetObject` for the existence
//! check, and, like Thanos, `s3:ListBucket`: without it AWS answers a `HeadObject` of a
//! missing key with 403 instead of 404, and the shipper's "is this block already there"
//! check keeps failing.
//!
//! Limits: a single PUT is capped by S3 at 5 GiB (only relevant with `disable_multipart`);
//! a multipart upload has at most 10,000 parts, so for files larger than
//! `10_000 × part_size` the part size is raised to fit.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, StorageClass};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls;
use md5::{Digest, Md5};

use crate::config::{ConfigError, S3Config};
use crate::{io_err, ObjstoreError};

/// S3's maximum number of parts in one multipart upload.
const MAX_PARTS: u64 = 10_000;

pub(crate) struct S3Bucket {
    client: Client,
    bucket: String,
    part_size: u64,
    multipart: bool,
    content_md5: bool,
    metadata: HashMap<String, String>,
    storage_class: Option<StorageClass>,
}

impl fmt::Debug for S3Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Bucket")
            .field("bucket", &self.bucket)
            .field("part_size", &self.part_size)
            .field("multipart", &self.multipart)
            .finish_non_exhaustive()
    }
}

impl S3Bucket {
    pub(crate) fn new(cfg: &S3Config) -> Result<Self, ObjstoreError> {
        let creds = if cfg.access_key.is_empty() {
            // Thanos' next credential source after the config file.
            let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(a), Some(s)) => {
                    Credentials::new(a, s, env("AWS_SESSION_TOKEN"), None, "sluice-objstore-env")
                }
                _ => return Err(ConfigError::Missing("config.access_key").into()),
            }
        } else {
            let token = (!cfg.session_token.is_empty()).then(|| cfg.session_token.clone());
            Credentials::new(
                cfg.access_key.clone(),
                cfg.secret_key.clone(),
                token,
                None,
                "sluice-objstore-config",
            )
        };

        // Serves http:// too (hyper-rustls "https or http"); proxies from the environment
        // are not used.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();

        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .credentials_provider(creds)
            .region(Region::new(cfg.region_or_default().to_string()))
            .endpoint_url(cfg.endpoint_url())
            .force_path_style(cfg.path_style())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // A few quick attempts per request smooth over a dropped connection or a 503;
            // outages are the shipper's backoff loop's job.
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_secs(2)),
            )
            // Bounded so shutdown is never stuck behind a server that accepts and hangs
            // (read = time to the response's first byte, as Thanos' 2 m header timeout).
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(120))
                    .build(),
            )
            .build();

        let mut metadata = HashMap::new();
        let mut storage_class = None;
        for (k, v) in &cfg.put_user_metadata {
            if k.eq_ignore_ascii_case("x-amz-storage-class") {
                storage_class = Some(StorageClass::from(v.as_str()));
            } else {
                metadata.insert(k.clone(), v.clone());
            }
        }
        Ok(S3Bucket {
            client: Client::from_conf(conf),
            bucket: cfg.bucket.clone(),
            part_size: cfg.part_size,
            multipart: !cfg.disable_multipart,
            content_md5: cfg.send_content_md5,
            metadata,
            storage_class,
        })
    }

    pub(crate) fn bucket_name(&self) -> &str {
        &self.bucket
    }

    #[cfg(test)]
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    fn err<E: std::error::Error>(
        &self,
        op: &'static str,
        key: &str,
    ) -> impl FnOnce(E) -> ObjstoreError {
        let bucket = self.bucket.clone();
        let key = key.to_string();
        move |e| ObjstoreError::S3 {
            op,
            bucket,
            key,
            message: error_chain(&e),
        }
    }

    pub(crate) async fn upload_file(&self, key: &str, path: &Path) -> Result<u64, ObjstoreError> {
        let size = std::fs::metadata(path).map_err(io_err("stat", path))?.len();
        if self.multipart && size > self.part_size {
            self.upload_multipart(key, path, size).await?;
        } else {
            self.put(key, path, size).await?;
        }
        Ok(size)
    }

    async fn put(&self, key: &str, path: &Path, size: u64) -> Result<(), ObjstoreError> {
        // Re-opened by the SDK on each attempt, so retries resend the whole file.
        let body = ByteStream::read_from()
            .path(path)
            .length(Length::Exact(size))
            .build()
            .await
            .map_err(self.err("open body for PutObject", key))?;
        let md5 = if self.content_md5 {
            Some(aws_smithy_types::base64::encode(file_md5(path, 0, size)?))
        } else {
            None
        };
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(size as i64)
            .set_content_md5(md5)
            .set_metadata((!self.metadata.is_empty()).then(|| self.metadata.clone()))
            .set_storage_class(self.storage_class.clone())
            .body(body)
            .send()
            .await
            .map_err(self.err("PutObject", key))?;
        Ok(())
    }

    async fn upload_multipart(
        &self,
        key: &str,
        path: &Path,
        size: u64,
    ) -> Result<(), ObjstoreError> {
        let mut part_size = self.part_size;
        if size.div_ceil(part_size) > MAX_PARTS {
            part_size = size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20);
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_metadata((!self.metadata.is_empty()).then(|| self.metadata.clone()))
            .set_storage_class(self.storage_class.clone())
            .send()
            .await
            .map_err(self.err("CreateMultipartUpload", key))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(ObjstoreError::S3 {
                op: "CreateMultipartUpload",
                bucket: self.bucket.clone(),
                key: key.to_string(),
                message: "response has no UploadId".into(),
            });
        };
        match self
            .upload_parts(key, path, size, part_size, &upload_id)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => {
                // Best effort: otherwise the server keeps the parts (and bills them) until
                // a lifecycle rule cleans them up. The upload error is the one to report.
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        part_size: u64,
        upload_id: &str,
    ) -> Result<(), ObjstoreError> {
        let mut parts = Vec::new();
        let mut part_md5s = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < size {
            let len = part_size.min(size - offset);
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(self.err("open body for UploadPart", key))?;
            // Always computed: the parts' MD5s also give the object's expected ETag.
            let md5 = file_md5(path, offset, len)?;
            part_md5s.extend_from_slice(&md5);
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len as i64)
                .set_content_md5(
                    self.content_md5
                        .then(|| aws_smithy_types::base64::encode(md5)),
                )
                .body(body)
                .send()
                .await
                .map_err(self.err("UploadPart", key))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            );
            offset += len;
            number += 1;
        }
        let n_parts = parts.len();
        let result = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        let Err(e) = result else { return Ok(()) };
        // Some S3-compatible servers answer 200 with a body the SDK cannot parse (moto 5
        // names the root element `CompleteMultipartUploadResponse` instead of `…Result`).
        // A real failure is an error document with a code; an unparseable 200 is accepted
        // only if the object now has exactly the size and multipart ETag of our parts.
        let ok_status = e.raw_response().is_some_and(|r| r.status().is_success());
        let no_code = e.as_service_error().is_some_and(|s| s.code().is_none());
        if ok_status && no_code {
            let want = format!("{}-{n_parts}", hex(&Md5::digest(&part_md5s)));
            if let Ok(head) = self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                let etag = head.e_tag().unwrap_or_default().trim_matches('"');
                if etag == want && head.content_length() == Some(size as i64) {
                    tracing::debug!(key, "CompleteMultipartUpload: unparseable 200 reply, object verified by HeadObject");
                    return Ok(());
                }
            }
        }
        Err(self.err("CompleteMultipartUpload", key)(e))
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<bool, ObjstoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let not_found = e.as_service_error().is_some_and(|s| s.is_not_found())
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404);
                if not_found {
                    Ok(false)
                } else {
                    Err(self.err("HeadObject", key)(e))
                }
            }
        }
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Vec<u8>, ObjstoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(self.err("GetObject", key))?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(self.err("GetObject body", key))?;
        Ok(bytes.to_vec())
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<String>, ObjstoreError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(self.err("ListObjectsV2", prefix))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(keys)
    }
}

/// MD5 of `len` bytes of `path` from `offset` (base64 of it is `Content-MD5`).
fn file_md5(path: &Path, offset: u64, len: u64) -> Result<[u8; 16], ObjstoreError> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(io_err("open", path))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(io_err("seek", path))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = f.read(&mut buf[..want]).map_err(io_err("read", path))?;
        if n == 0 {
            return Err(ObjstoreError::Io {
                op: "read (file shrank during upload)",
                path: path.to_path_buf(),
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(h.finalize().into())
}

/// `a: b: c` from an error and its sources, skipping repeats. (The SDK's
/// `DisplayErrorContext` appends the whole Debug form, raw response included, which is too
/// much for logs and the `last_error` counter.)
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
