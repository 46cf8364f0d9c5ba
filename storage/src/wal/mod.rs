//! Per-core write-ahead log: `<data-dir>/<tenant>/wal/core-K/NNNNNNNN` segments.
//!
//! Owns the record framing (length + CRC32C), the series and sample record payloads, the
//! group-committing writer (glommio DMA files, io_uring), replay (damage skipping, torn-tail
//! repair and the series id rules), and the one-time re-layout when the core count changes.
//! The format and the recovery rules are specified in `docs/format/wal.md`. Must not know
//! what a head or a request is: callers pass series ids, labels and samples.
//!
//! Durability contract: a record is in the file (survives `kill -9`) once `commit` returns,
//! whatever the fsync policy; with [`FsyncPolicy::Always`] it has also been `fdatasync`ed.

pub mod checkpoint;
pub mod layout;
#[cfg(test)]
mod powercut;
pub mod reader;
pub mod record;
pub mod writer;
mod zeroing;

use std::path::PathBuf;
use std::time::Duration;

pub use checkpoint::CheckpointBuilder;
pub use layout::{prepare_layout, SeriesOwner, CORES_FILE};
pub use reader::{replay_dir, ReplayStats, ReplayVisitor};
pub use record::{RecordType, SampleRecord};
pub use writer::Wal;

/// Segments are cut before they would exceed this size (as Prometheus' WAL).
pub const SEGMENT_SIZE: u64 = 128 * 1024 * 1024;

/// When an acknowledged write reaches stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Acknowledge only after `fdatasync` (group commit amortises it across requests).
    Always,
    /// Acknowledge after the write; `fdatasync` on a timer.
    Interval(Duration),
    /// Acknowledge after the write; leave syncing to the kernel.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => match s.strip_prefix("interval=") {
                Some(d) => sluice_core::parse_duration(d)
                    .map_err(|e| e.to_string())
                    .and_then(|d| {
                        if d.is_zero() {
                            Err("fsync interval must be > 0".to_string())
                        } else {
                            Ok(FsyncPolicy::Interval(d))
                        }
                    }),
                None => Err(format!(
                    "invalid fsync policy {s:?}: expected always, never or interval=<duration> (e.g. interval=1s)"
                )),
            },
        }
    }
}

/// A WAL failure, naming the operation and the file.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("WAL of {dir} failed earlier and no longer accepts writes: {reason}")]
    Failed { dir: PathBuf, reason: String },
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WalError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// The directory of core `core`'s WAL for a tenant directory.
pub fn core_dir(tenant_dir: &std::path::Path, core: usize) -> PathBuf {
    tenant_dir.join("wal").join(format!("core-{core}"))
}

/// The file name of segment `index`.
pub fn segment_name(index: u32) -> String {
    format!("{index:08}")
}

/// The file name of the checkpoint that replaces segments up to `index`.
pub fn checkpoint_name(index: u32) -> String {
    format!("checkpoint.{index:08}")
}

/// Checkpoints present in `dir` (the segment index each covers), ascending.
pub fn list_checkpoints(dir: &std::path::Path) -> Result<Vec<u32>, WalError> {
    list_numbered(dir, "checkpoint.")
}

/// Segment indexes present in `dir`, ascending. Files that are not segments are ignored.
pub fn list_segments(dir: &std::path::Path) -> Result<Vec<u32>, WalError> {
    list_numbered(dir, "")
}

/// Indexes of the files in `dir` named `<prefix>` + 8 digits, ascending.
fn list_numbered(dir: &std::path::Path, prefix: &str) -> Result<Vec<u32>, WalError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(WalError::io("listing WAL directory", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io("listing WAL directory", dir, e))?;
        let name = entry.file_name();
        if let Some(n) = name.to_string_lossy().strip_prefix(prefix) {
            if n.len() == 8 && n.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(i) = n.parse() {
                    out.push(i);
                }
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fsync_policies() {
        assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
        assert_eq!("never".parse(), Ok(FsyncPolicy::Never));
        assert_eq!(
            "interval=2s".parse(),
            Ok(FsyncPolicy::Interval(Duration::from_secs(2)))
        );
        assert!("interval=0".parse::<FsyncPolicy>().is_err());
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
        assert!("interval=1.5s".parse::<FsyncPolicy>().is_err());
    }
}
