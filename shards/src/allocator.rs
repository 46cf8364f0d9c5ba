//! What the allocator does with memory this process frees: large blocks go back to the
//! kernel at once.
//!
//! Owns the process-wide glibc malloc settings. Must not change them once the cores run:
//! `mallopt` is not meant to race with allocations on other threads.
//!
//! glibc serves a block of at least its mmap threshold from a mapping of its own and unmaps
//! it when freed; anything smaller comes from an arena, which keeps freed memory for reuse.
//! The threshold starts at 128 KiB but rises (up to 32 MiB) each time a mapped block is freed,
//! so after one large request every later buffer up to that size comes from the arenas, and a
//! spike leaves tens of MiB resident for good (bench/RESULTS.md, "Memory accounting": +25 MiB
//! after eight 16 MiB requests, +2 MiB with the threshold fixed). Setting the threshold also
//! turns the rise off. The price is a `mmap`/`munmap` per block of at least the threshold;
//! request buffers are pooled (see `sluice-net`'s `receive`), so a steady flow of ordinary
//! requests does not pay it. `malloc_trim` after a large request, the other candidate, walked
//! every arena under its lock (~100 µs, stalling the other cores' allocations) and still left
//! +24 MiB.

/// Blocks of at least this many bytes are mapped on their own and unmapped when freed.
pub const MMAP_THRESHOLD: usize = 1 << 20;

/// Applies the settings above (a no-op outside glibc).
pub fn return_large_blocks_to_the_kernel() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}
