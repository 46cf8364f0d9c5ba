//! The thin std-I/O layer of the block writer: creates, fills and fsyncs files and
//! directories. Every byte it writes was produced by the encoders (`chunks.rs`, `index.rs`,
//! `meta.rs`, `tombstones.rs`); this file decides nothing about formats, so it can be swapped
//! for glommio DMA files without touching them.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::chunks::{segment_file_name, SegmentEncoder};
use super::BlockError;

/// Buffered bytes at which the segment writer hands its buffer to the file. Large enough to
/// make writes cheap, small enough not to hold a whole 512 MiB segment in memory.
const FLUSH_BYTES: usize = 8 << 20;

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BlockError {
    let path = path.to_path_buf();
    move |source| BlockError::Io { op, path, source }
}

/// Maps a glommio I/O error to a [`BlockError`] naming the operation and file.
pub(crate) fn glommio_err(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(glommio::GlommioError<()>) -> BlockError {
    let path = path.to_path_buf();
    move |e| BlockError::Io {
        op,
        path,
        source: e.into(),
    }
}

/// The file name of a segment path, for the block's file list.
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Creates `path` (which must not exist), writes `bytes` and fsyncs it.
pub(crate) fn write_file_synced(path: &Path, bytes: &[u8]) -> Result<(), BlockError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err("create", path))?;
    f.write_all(bytes).map_err(io_err("write", path))?;
    f.sync_all().map_err(io_err("fsync", path))
}

/// Fsyncs a directory so entries created or renamed in it survive a crash.
pub(crate) fn sync_dir(path: &Path) -> Result<(), BlockError> {
    File::open(path)
        .map_err(io_err("open directory", path))?
        .sync_all()
        .map_err(io_err("fsync directory", path))
}

pub(crate) fn create_dir(path: &Path) -> Result<(), BlockError> {
    fs::create_dir(path).map_err(io_err("create directory", path))
}

/// Writes chunk segment files into a `chunks/` directory, driving a [`SegmentEncoder`].
pub(crate) struct SegmentFiles {
    dir: PathBuf,
    enc: SegmentEncoder,
    buf: Vec<u8>,
    current: Option<(File, PathBuf)>,
    /// (file name, size) of every finished segment, in order.
    finished: Vec<(String, u64)>,
}

impl SegmentFiles {
    pub(crate) fn new(dir: &Path, max_segment_size: u64) -> Result<Self, BlockError> {
        Ok(SegmentFiles {
            dir: dir.to_path_buf(),
            enc: SegmentEncoder::new(max_segment_size)?,
            buf: Vec::with_capacity(FLUSH_BYTES + (64 << 10)),
            current: None,
            finished: Vec::new(),
        })
    }

    /// Appends one chunk, starting a new segment file first when needed; returns its ref.
    pub(crate) fn append(&mut self, encoding: u8, data: &[u8]) -> Result<u64, BlockError> {
        if self.enc.needs_new_segment(data.len()) {
            self.finish_segment()?;
            let index = self.enc.start_segment(&mut self.buf)?;
            let path = self.dir.join(segment_file_name(index));
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io_err("create", &path))?;
            self.current = Some((f, path));
        }
        let r = self.enc.append_chunk(&mut self.buf, encoding, data)?;
        if self.buf.len() >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(r)
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        if let Some((f, path)) = &mut self.current {
            f.write_all(&self.buf).map_err(io_err("write", path))?;
        }
        self.buf.clear();
        Ok(())
    }

    fn finish_segment(&mut self) -> Result<(), BlockError> {
        self.flush()?;
        if let Some((f, path)) = self.current.take() {
            f.sync_all().map_err(io_err("fsync", &path))?;
            self.finished
                .push((file_name(&path), self.enc.segment_len()));
        }
        Ok(())
    }

    /// Flushes and fsyncs the last segment and the directory; returns (name, size) of every
    /// segment file.
    pub(crate) fn finish(mut self) -> Result<Vec<(String, u64)>, BlockError> {
        self.finish_segment()?;
        sync_dir(&self.dir)?;
        Ok(self.finished)
    }
}
