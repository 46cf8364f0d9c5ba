//! Sluice storage: the byte formats and files a core persists, each byte-exact with what
//! Prometheus writes or specified in `docs/format/`.
//!
//! The main types, by the way data flows through them:
//! - [`xor::XorChunk`] appends samples to a Prometheus XOR ("Gorilla") chunk, and
//!   [`xor::XorIter`] reads one back;
//! - [`wal::Wal`] is a core's group-committing write-ahead log (glommio DMA files);
//!   [`wal::replay_dir`] hands what survived to a [`wal::ReplayVisitor`] after a restart,
//!   [`wal::CheckpointBuilder`] compacts the log once blocks hold the old samples, and
//!   [`wal::prepare_layout`] re-routes it when the core count changes (along a
//!   [`wal::SeriesOwner`] the caller supplies);
//! - [`block::write_block`] (or [`block::begin_block`], the cores'
//!   [`block::dma::DmaSegmentWriter`]s and [`block::seal_block`]) turns finished chunks into
//!   a TSDB block directory with its [`block::meta::BlockMeta`], and
//!   [`block::reader::BlockReader`] reads sealed blocks for queries.
//!
//! Owns those formats and files, and nothing above them. Must not know about HTTP,
//! routing, other cores or object storage (shipping blocks is `sluice-objstore`, which
//! reads what this crate seals): a caller hands it bytes, series ids and labels. No tokio
//! and no network client here: the write paths run on the cores' glommio executors.

pub mod block;
pub(crate) mod encoding;
pub mod wal;
pub mod xor;
