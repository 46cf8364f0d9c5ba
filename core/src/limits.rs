//! Per-tenant write limits, in the format of Thanos Receive's `--receive.limits-config-file`.
//!
//! Owns parsing and resolving the limits of one tenant (its own values over the defaults;
//! 0 or absent means unlimited). Must not enforce anything or read files: the caller reads
//! and reloads the file and checks requests against [`TenantLimits`].
//!
//! ```yaml
//! write:
//!   global:                      # accepted; Sluice has no global concurrency limit
//!     max_concurrency: 30
//!   default:
//!     request:
//!       size_bytes_limit: 0      # compressed request body (413)
//!       series_limit: 0          # series per request (413)
//!       samples_limit: 0         # samples per request (413)
//!     head_series_limit: 0       # active series of the tenant on this node (429)
//!   tenants:
//!     team-a:
//!       head_series_limit: 100000
//! ```

use std::collections::HashMap;

use serde::Deserialize;

/// A limits file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("limits config: {0}")]
pub struct LimitsError(String);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    write: Option<WriteSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteSection {
    #[serde(default)]
    global: Option<Global>,
    #[serde(default)]
    default: Option<Entry>,
    #[serde(default)]
    tenants: Option<HashMap<String, Entry>>,
}

/// Accepted so Thanos files load; Sluice has no global concurrency limit or meta-monitoring.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Global {
    #[serde(default)]
    max_concurrency: Option<i64>,
    #[serde(default)]
    meta_monitoring_url: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    meta_monitoring_limit_query: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    meta_monitoring_http_client: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default)]
    request: Option<RequestEntry>,
    #[serde(default)]
    head_series_limit: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestEntry {
    #[serde(default)]
    size_bytes_limit: Option<u64>,
    #[serde(default)]
    series_limit: Option<u64>,
    #[serde(default)]
    samples_limit: Option<u64>,
}

/// The limits of one tenant; 0 = unlimited.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TenantLimits {
    pub request_bytes: u64,
    pub request_series: u64,
    pub request_samples: u64,
    pub head_series: u64,
}

/// A parsed limits file.
#[derive(Debug, Default, Clone)]
pub struct Limits {
    default: TenantLimits,
    tenants: HashMap<String, TenantLimits>,
}

fn resolve(e: &Entry, base: TenantLimits) -> TenantLimits {
    let r = e.request.clone().unwrap_or_default();
    TenantLimits {
        request_bytes: r.size_bytes_limit.unwrap_or(base.request_bytes),
        request_series: r.series_limit.unwrap_or(base.request_series),
        request_samples: r.samples_limit.unwrap_or(base.request_samples),
        head_series: e.head_series_limit.unwrap_or(base.head_series),
    }
}

impl Limits {
    /// Parses the YAML of a limits file (unknown keys are errors, as in Thanos).
    pub fn parse(yaml: &str) -> Result<Limits, LimitsError> {
        if yaml.trim().is_empty() {
            return Ok(Limits::default());
        }
        let f: File = serde_saphyr::from_str(yaml).map_err(|e| LimitsError(e.to_string()))?;
        let w = f.write.unwrap_or_default();
        if let Some(g) = &w.global {
            if g.max_concurrency.is_some_and(|c| c < 0) {
                return Err(LimitsError("write.global.max_concurrency < 0".into()));
            }
        }
        let default = w
            .default
            .as_ref()
            .map(|e| resolve(e, TenantLimits::default()))
            .unwrap_or_default();
        let tenants = w
            .tenants
            .unwrap_or_default()
            .iter()
            .map(|(t, e)| (t.clone(), resolve(e, default)))
            .collect();
        Ok(Limits { default, tenants })
    }

    /// `tenant`'s limits.
    pub fn for_tenant(&self, tenant: &str) -> TenantLimits {
        self.tenants.get(tenant).copied().unwrap_or(self.default)
    }

    /// Whether any limit is set at all (so the write path can skip the checks).
    pub fn is_empty(&self) -> bool {
        self.default == TenantLimits::default()
            && self.tenants.values().all(|l| *l == TenantLimits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_values_override_defaults_field_by_field() {
        let l = Limits::parse(
            "write:\n  global:\n    max_concurrency: 30\n  default:\n    request:\n      series_limit: 100\n      samples_limit: 1000\n    head_series_limit: 50\n  tenants:\n    a:\n      head_series_limit: 7\n    b:\n      request:\n        series_limit: 0\n",
        )
        .unwrap();
        assert_eq!(
            l.for_tenant("a"),
            TenantLimits {
                request_bytes: 0,
                request_series: 100,
                request_samples: 1000,
                head_series: 7
            }
        );
        assert_eq!(l.for_tenant("b").request_series, 0);
        assert_eq!(l.for_tenant("b").request_samples, 1000);
        assert_eq!(l.for_tenant("other").head_series, 50);
        assert!(!l.is_empty());
        assert!(Limits::parse("").unwrap().is_empty());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = Limits::parse("write:\n  default:\n    head_series: 5\n").unwrap_err();
        assert!(e.to_string().contains("head_series"), "{e}");
        assert!(Limits::parse("write: [").is_err());
    }
}
