//! The cache-line prefetch hint the ingest path's lookup tables share.
//!
//! Owns only the hint. Must not be used where a value is read at once (it only pays when
//! issued several lookups ahead).

/// A prefetch hint for the cache line holding `v`.
#[inline(always)]
pub fn prefetch<T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint: it never faults and has no effect the program can observe,
    // and SSE is part of the x86_64 baseline.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((v as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Prefetch hints for the first and the last cache line of `v`: all of a value of up to
/// 65 bytes, or one that straddles two lines.
#[inline(always)]
pub fn prefetch_ends<T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `prefetch`; the last byte's address is inside `v`.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = (v as *const T).cast::<i8>();
        _mm_prefetch::<_MM_HINT_T0>(start);
        _mm_prefetch::<_MM_HINT_T0>(start.add(std::mem::size_of::<T>().saturating_sub(1)));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}
