//! Enforcing the per-tenant limits of `--receive.limits-config-file` on a write.
//!
//! Owns the checks and their messages: request size, series and samples per request (413,
//! checked where the request arrives) and the tenant's active series on this node (429,
//! checked on every node that stores a share, as each node knows only its own head). Must
//! not parse the file (`sluice_core::limits`) or store anything.

use hyper::StatusCode;

use crate::state::CoreState;

/// Refuses a request over its tenant's request limits: status, reason, message.
pub fn check_request(
    st: &CoreState,
    tenant: &str,
    bytes: usize,
    series: usize,
    samples: usize,
) -> Result<(), (StatusCode, &'static str, String)> {
    let limits = st.cfg.limits.load();
    if limits.is_empty() {
        return Ok(());
    }
    let l = limits.for_tenant(tenant);
    for (what, n, max) in [
        ("bytes", bytes as u64, l.request_bytes),
        ("series", series as u64, l.request_series),
        ("samples", samples as u64, l.request_samples),
    ] {
        if max > 0 && n > max {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                "limit",
                format!("request of {n} {what} exceeds tenant {tenant:?}'s limit of {max} {what} per request"),
            ));
        }
    }
    Ok(())
}

/// Refuses a write when the tenant already has its limit of active series on this node
/// (Thanos' `head_series_limit`: the whole write, until series are collected by a cut).
pub fn check_head_series(st: &CoreState, tenant: &str) -> Result<(), String> {
    let limits = st.cfg.limits.load();
    if limits.is_empty() {
        return Ok(());
    }
    let max = limits.for_tenant(tenant).head_series;
    if max == 0 {
        return Ok(());
    }
    // The core's own handle on the shared counter: no lock on the write path.
    let active = st
        .ctx
        .shard
        .tenant(tenant)
        .map_or(0, |t| t.active.load(std::sync::atomic::Ordering::Relaxed));
    if active >= max {
        return Err(format!(
            "tenant {tenant:?} has {active} active series on this node, its limit is {max}"
        ));
    }
    Ok(())
}
