//! Per-core runtime (being written).
