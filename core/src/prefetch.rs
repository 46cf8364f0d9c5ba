//! The cache-line prefetch hint the ingest path's lookup tables share.
//!
//! Owns only the hint. Must not be used where a value is read at once (it only pays when
//! issued several lookups ahead).

/// A prefetch hint for the cache line holding `v`.
#[inline(always)]
pub fn prefetch<T>(v: &T) {
    prefetch_address((v as *const T).cast());
}

/// Prefetch hints for the first and the last cache line of `v`: all of a value of up to
/// 65 bytes, or one that straddles two lines.
#[inline(always)]
pub fn prefetch_ends<T>(v: &T) {
    let start: *const u8 = (v as *const T).cast();
    prefetch_address(start);
    prefetch_address(start.wrapping_add(std::mem::size_of::<T>().saturating_sub(1)));
}

#[inline(always)]
fn prefetch_address(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint: it never faults and has no effect the program can observe
    // (any address will do), and SSE is part of the x86_64 baseline.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
