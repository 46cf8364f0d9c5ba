//! Decoding a remote-write body within the memory budget: the protocol of a `Content-Type`,
//! snappy, the 1.0 or 2.0 decoder (recognising known series where it may), and the routing
//! reservation that follows. Shared by the HTTP endpoint and the replica path.
//!
//! Owns the order of reservations during decoding (payload room, then each decoded vector's
//! growth, then routing: `budget::need`). Must not answer a sender: it returns a [`Reject`].

use std::cell::RefCell;

use hyper::StatusCode;
use sluice_core::{DecodeError, KnownSeries, WriteRequestRef};
use sluice_shards::SeriesKeys;

use super::buffers::Decoded;
use crate::budget::need::{self, Route, Shape};
use crate::budget::Permit;
use crate::reject::{bad_snappy, over_budget, Reject};

/// The remote-write protocol of a request, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    /// `prometheus.WriteRequest`.
    V1,
    /// `io.prometheus.write.v2.Request`.
    V2,
}

/// The protocol of a `Content-Type` (RFC 9110: media type and parameter names are
/// case-insensitive, a value may be quoted; the message name is case-sensitive), or `None`
/// for an unsupported type. Parameters other than `proto` are ignored.
pub(crate) fn negotiate(ct: &str) -> Option<Proto> {
    let mut parts = ct.split(';').map(str::trim);
    let media = parts.next().unwrap_or("");
    if !media.eq_ignore_ascii_case("application/x-protobuf") {
        return None;
    }
    let mut proto = Proto::V1;
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        if !k.trim().eq_ignore_ascii_case("proto") {
            continue;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        proto = match v {
            "prometheus.WriteRequest" => Proto::V1,
            "io.prometheus.write.v2.Request" => Proto::V2,
            _ => return None,
        };
    }
    Some(proto)
}

/// Grows `permit` by what routing the decoded `req` allocates, before it does: the keys and
/// hashes `keys` lacks room for, then [`need::routing`].
pub(crate) fn reserve_routing(
    permit: &mut Permit,
    req: &WriteRequestRef,
    keys: &SeriesKeys,
    route: &Route,
) -> Result<(), Reject> {
    let shape = Shape {
        series: req.series.len(),
        samples: req.samples.len(),
        keys: req.key_bytes(),
    };
    let more =
        keys.bytes_to_grow(shape.series, shape.keys.parsed) as u64 + need::routing(&shape, route);
    permit.grow_to(permit.bytes() + more).map_err(over_budget)
}

/// Decompresses and decodes `body` (of protocol `proto`) into `dec`, recognising the series
/// of `tenant` that `known` remembers (remote write 1.0 only); returns the payload length.
///
/// `permit` holds what `dec` already has; it grows by the payload's room before it is
/// decompressed, and by each decoded vector's growth before it grows: decoding is charged
/// exactly what it allocates, never a worst case (which is 16 times the payload, see
/// `budget`).
pub(crate) fn decode(
    body: &[u8],
    dec: &mut Decoded,
    proto: Proto,
    max_decompressed: usize,
    known: Option<&RefCell<KnownSeries>>,
    tenant: &str,
    permit: &mut Permit,
) -> Result<usize, Reject> {
    let held = permit.bytes();
    let len = snap::raw::decompress_len(body).map_err(|e| bad_snappy(&e))?;
    if len > max_decompressed {
        return Err(Reject::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "decompressed request of {len} bytes exceeds the limit of {max_decompressed} bytes"
            ),
        ));
    }
    let room = len.saturating_sub(dec.decompressed.capacity());
    permit.grow_to(held + room as u64).map_err(over_budget)?;
    // Grow only: a buffer that already has the length is not re-zeroed per request. Exactly:
    // `resize` alone could double the buffer.
    if dec.decompressed.len() < len {
        dec.decompressed.reserve_exact(len - dec.decompressed.len());
        dec.decompressed.resize(len, 0);
    }
    let n = snap::raw::Decoder::new()
        .decompress(body, &mut dec.decompressed[..len])
        .map_err(|e| bad_snappy(&e))?;
    let Decoded {
        decompressed,
        req,
        v2,
    } = dec;
    let payload = &decompressed[..n];
    // Each vector's growth is reserved just before it happens (once per doubling).
    let mut grow = |bytes: usize| permit.grow_to(permit.bytes() + bytes as u64);
    let res = match proto {
        Proto::V1 => match known {
            Some(known) => {
                let known = known.borrow();
                let seed = known.tenant_seed(tenant.as_bytes());
                req.decode_known_within(payload, &known, seed, &mut grow)
            }
            None => req.decode_within(payload, &mut grow),
        },
        // Exemplars and histograms are counted by the decoder, but nothing uses the counts:
        // exemplars are not stored, and histograms fail the request.
        Proto::V2 => v2.decode_within(payload, req, &mut grow).map(|_| ()),
    };
    res.map_err(|e| {
        let reason = match e {
            DecodeError::Memory(msg) => return over_budget(msg),
            DecodeError::Protobuf(_) => "bad_protobuf",
            DecodeError::InvalidSeries { .. } => "invalid_labels",
            DecodeError::SymbolRef(_) => "bad_symbol_ref",
            _ => "unsupported",
        };
        Reject::new(StatusCode::BAD_REQUEST, reason, e.to_string())
    })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let v1 = Some(Proto::V1);
        let v2 = Some(Proto::V2);
        for (ct, want) in [
            ("application/x-protobuf", v1),
            ("Application/X-Protobuf", v1),
            ("application/x-protobuf; proto=prometheus.WriteRequest", v1),
            ("application/x-protobuf;charset=utf-8", v1),
            (
                "application/x-protobuf;proto=io.prometheus.write.v2.Request",
                v2,
            ),
            (
                "application/x-protobuf; PROTO=\"io.prometheus.write.v2.Request\"",
                v2,
            ),
            (
                "application/x-protobuf;proto=io.prometheus.write.v3.Request",
                None,
            ),
            (
                "application/x-protobuf;proto=io.prometheus.write.v2.request",
                None,
            ),
            ("application/x-protobuf;proto=", None),
            ("application/json", None),
            ("", None),
        ] {
            assert_eq!(negotiate(ct), want, "{ct:?}");
        }
    }
}
