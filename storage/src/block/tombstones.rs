//! The `tombstones` file of a block. Sluice never deletes series inside a block, so it only
//! ever writes the empty file; no I/O here.
//!
//! Layout (Prometheus `tsdb/tombstones`): magic `0x0130BA30` (BE), version byte `1`, the
//! entries (none), then CRC32C (BE) of the entries *without* the version byte. For no
//! entries that is the CRC of nothing, i.e. `00 00 00 00`, so the file is 9 bytes:
//! `01 30 BA 30 01 00 00 00 00`.

/// Magic number at the start of the tombstones file.
pub const MAGIC_TOMBSTONES: u32 = 0x0130_BA30;
/// Tombstones format version.
pub const TOMBSTONES_FORMAT_V1: u8 = 1;

/// The complete empty tombstones file.
pub fn empty_tombstones() -> [u8; 9] {
    let mut b = [0u8; 9];
    b[..4].copy_from_slice(&MAGIC_TOMBSTONES.to_be_bytes());
    b[4] = TOMBSTONES_FORMAT_V1;
    // The CRC covers the (empty) entries after the version byte.
    b[5..].copy_from_slice(&crc32c::crc32c(&[]).to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    #[test]
    fn golden_empty_tombstones() {
        assert_eq!(
            super::empty_tombstones(),
            [0x01, 0x30, 0xBA, 0x30, 0x01, 0x00, 0x00, 0x00, 0x00]
        );
    }
}
