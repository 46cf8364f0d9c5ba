//! Prometheus' stale marker: the one NaN, bits `0x7ff0000000000002`, that says a series
//! ended (a target vanished, a rule stopped producing it), as opposed to any other NaN, which
//! is a value like any other.
//!
//! Owns the marker's bit pattern and the test for it, for every crate that carries samples:
//! the decoders keep it bit-exact, the WAL and chunks store it, the engine stops a series at
//! it. Must not be tested with `==` or `is_nan()`: NaN equals nothing, and only the bits tell
//! the marker from a NaN value.

/// The bits of Prometheus' stale-marker NaN (`value.StaleNaN`).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether `v` is Prometheus' stale marker (not just any NaN).
#[inline]
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_marker_is_stale() {
        assert!(is_stale(f64::from_bits(STALE_NAN_BITS)));
        assert!(!is_stale(f64::NAN), "an ordinary NaN is a value");
        assert!(!is_stale(0.0));
    }
}
