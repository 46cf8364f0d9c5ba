//! The [`Bucket`] the shipper writes to, and its local-directory backend.
//!
//! Owns object keys (the configured prefix, `/` separators, no `..`) and the local
//! directory backend's atomic writes. The S3 backend lives in `s3.rs`. Knows nothing about
//! blocks: it moves files to keys.
//!
//! Methods are `async` because the S3 backend is; the local backend does blocking file I/O
//! inside them, which is fine on the shipper's own thread (nothing else runs on that
//! runtime) and must not be used from a glommio core.

use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{BucketConfig, ObjstoreConfig};
use crate::s3::S3Bucket;
use crate::{io_err, ObjstoreError};

/// Suffix of the file a local-directory upload is written to before it is renamed to its
/// key; listings skip it (a crash can leave one behind; the next upload of that key
/// overwrites it).
const FS_TMP_SUFFIX: &str = ".tmp-upload";

/// Called with the key (without the bucket prefix) after every successful object upload,
/// in upload order. For tests and tracing.
#[derive(Clone)]
pub struct UploadHook(pub Arc<dyn Fn(&str) + Send + Sync>);

impl fmt::Debug for UploadHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UploadHook")
    }
}

/// A bucket: a backend plus the configured key prefix.
#[derive(Debug)]
pub struct Bucket {
    backend: Backend,
    prefix: String,
    hook: Option<UploadHook>,
}

#[derive(Debug)]
enum Backend {
    Fs(FsBucket),
    S3(Box<S3Bucket>),
}

impl Bucket {
    /// Builds the client for `cfg`. No request is sent (an unreachable server shows up on
    /// the first upload, where the shipper retries).
    pub fn new(cfg: &ObjstoreConfig) -> Result<Self, ObjstoreError> {
        let backend = match &cfg.bucket {
            BucketConfig::Filesystem { directory } => Backend::Fs(FsBucket {
                root: directory.clone(),
            }),
            BucketConfig::S3(s3) => Backend::S3(Box::new(S3Bucket::new(s3)?)),
        };
        Ok(Bucket {
            backend,
            prefix: cfg.prefix.clone(),
            hook: None,
        })
    }

    /// Calls `hook` after every successful upload.
    pub fn with_upload_hook(mut self, hook: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.hook = Some(UploadHook(Arc::new(hook)));
        self
    }

    /// `fs:<dir>` or `s3://<bucket>`, for logs.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Fs(b) => format!("fs:{}", b.root.display()),
            Backend::S3(b) => format!("s3://{}", b.bucket_name()),
        }
    }

    fn full_key(&self, key: &str) -> Result<String, ObjstoreError> {
        let bad = key.is_empty()
            || key.starts_with('/')
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..");
        if bad {
            return Err(ObjstoreError::BadKey(key.to_string()));
        }
        Ok(if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        })
    }

    /// Uploads the local file `path` as object `key`, replacing any object of that name.
    /// Returns the bytes uploaded.
    pub async fn upload_file(&self, key: &str, path: &Path) -> Result<u64, ObjstoreError> {
        let full = self.full_key(key)?;
        let n = match &self.backend {
            Backend::Fs(b) => b.upload_file(&full, path)?,
            Backend::S3(b) => b.upload_file(&full, path).await?,
        };
        if let Some(h) = &self.hook {
            (h.0)(key);
        }
        Ok(n)
    }

    /// Whether object `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool, ObjstoreError> {
        let full = self.full_key(key)?;
        match &self.backend {
            Backend::Fs(b) => b.exists(&full),
            Backend::S3(b) => b.exists(&full).await,
        }
    }

    /// Object contents (whole object in memory; meant for `meta.json`-sized objects and
    /// tests).
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, ObjstoreError> {
        let full = self.full_key(key)?;
        match &self.backend {
            Backend::Fs(b) => b.get(&full),
            Backend::S3(b) => b.get(&full).await,
        }
    }

    /// Every key in the bucket (under the prefix, which is stripped), sorted.
    pub async fn list(&self) -> Result<Vec<String>, ObjstoreError> {
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut keys = match &self.backend {
            Backend::Fs(b) => b.list(&prefix)?,
            Backend::S3(b) => b.list(&prefix).await?,
        };
        for k in &mut keys {
            k.drain(..prefix.len());
        }
        keys.sort();
        Ok(keys)
    }

    /// The S3 backend, for tests that need the raw client (creating the bucket, reading
    /// object attributes).
    #[cfg(test)]
    pub(crate) fn s3(&self) -> Option<&S3Bucket> {
        match &self.backend {
            Backend::S3(b) => Some(b),
            Backend::Fs(_) => None,
        }
    }
}

/// `type: FILESYSTEM`: object `a/b` is the file `<root>/a/b`.
#[derive(Debug)]
struct FsBucket {
    root: PathBuf,
}

impl FsBucket {
    /// Copy to `<key>.tmp-upload`, fsync, rename over `<key>`, fsync the directories: a
    /// reader never sees a partial object, and once `meta.json` is in place every file
    /// uploaded before it is durable too.
    fn upload_file(&self, key: &str, src: &Path) -> Result<u64, ObjstoreError> {
        let dst = self.root.join(key);
        let dir = dst.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let mut tmp = dst.clone().into_os_string();
        tmp.push(FS_TMP_SUFFIX);
        let tmp = PathBuf::from(tmp);
        // fs::copy truncates a leftover tmp file and uses copy_file_range on Linux.
        let n = fs::copy(src, &tmp).map_err(io_err("copy to", &tmp))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, &dst).map_err(io_err("rename", &tmp))?;
        // The new entry, and any directory created above, must survive a crash.
        let mut d = dir.as_path();
        loop {
            sync_dir(d)?;
            if d == self.root.as_path() {
                break;
            }
            match d.parent() {
                Some(p) if p.starts_with(&self.root) => d = p,
                _ => break,
            }
        }
        Ok(n)
    }

    fn exists(&self, key: &str) -> Result<bool, ObjstoreError> {
        let p = self.root.join(key);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("stat", &p)(e)),
        }
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, ObjstoreError> {
        let p = self.root.join(key);
        fs::read(&p).map_err(io_err("read", &p))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, ObjstoreError> {
        let mut out = Vec::new();
        if self.root.is_dir() {
            walk(&self.root, "", &mut out)?;
        }
        out.retain(|k| k.starts_with(prefix) && !k.ends_with(FS_TMP_SUFFIX));
        Ok(out)
    }
}

/// Appends every file under `dir` as `<rel>/<name>` keys.
pub(crate) fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), ObjstoreError> {
    let entries = fs::read_dir(dir).map_err(io_err("read directory", dir))?;
    for e in entries {
        let e = e.map_err(io_err("read directory", dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let key = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let ft = e.file_type().map_err(io_err("stat", &e.path()))?;
        if ft.is_dir() {
            walk(&e.path(), &key, out)?;
        } else if ft.is_file() {
            out.push(key);
        }
    }
    Ok(())
}

pub(crate) fn sync_dir(path: &Path) -> Result<(), ObjstoreError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err("fsync directory", path))
}
