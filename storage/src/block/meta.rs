//! `meta.json` of a block: the Prometheus `tsdb.BlockMeta` fields plus the Thanos section
//! (`pkg/block/metadata`), serialized like Go's `encoding/json` writes them (tab indent,
//! Go field names, `omitempty` fields left out when zero, trailing newline as Thanos'
//! `json.Encoder` adds).
//!
//! Owns the JSON shape only; no I/O (the caller writes `meta.json.tmp` and renames it).
//!
//! Subtleties:
//! - `maxTime` is exclusive: last sample + 1 (or the end of the aligned block range).
//! - `stats` fields are `omitempty` in Prometheus, `stats` itself is always present.
//! - `thanos.files` lists `chunks/*` and `index` with `size_bytes`, and `meta.json` *without*
//!   a size (it cannot contain its own size; Thanos' `GatherFileStats` does the same), sorted
//!   by `rel_path`; `tombstones` is not listed (Thanos does not upload it).
//! - `thanos.labels` is a Go map, which `encoding/json` writes with sorted keys: a `BTreeMap`.
//! - Go escapes `<`, `>` and `&` in strings as `\u003c`…; serde_json does not. Both are the
//!   same JSON value, so readers do not care; only byte-for-byte comparisons would.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// `meta.json` format version.
pub const META_VERSION_1: u32 = 1;
/// Thanos section version.
pub const THANOS_VERSION_1: u32 = 1;

/// The whole `meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMeta {
    #[serde(with = "ulid_string")]
    pub ulid: Ulid,
    /// First timestamp (ms) covered, inclusive.
    #[serde(rename = "minTime")]
    pub min_time: i64,
    /// End of the covered range (ms), exclusive.
    #[serde(rename = "maxTime")]
    pub max_time: i64,
    #[serde(default)]
    pub stats: BlockStats,
    pub compaction: BlockCompaction,
    pub version: u32,
    /// Absent in plain Prometheus blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thanos: Option<ThanosMeta>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockStats {
    #[serde(rename = "numSamples", default, skip_serializing_if = "is_zero")]
    pub num_samples: u64,
    #[serde(rename = "numSeries", default, skip_serializing_if = "is_zero")]
    pub num_series: u64,
    #[serde(rename = "numChunks", default, skip_serializing_if = "is_zero")]
    pub num_chunks: u64,
    #[serde(rename = "numTombstones", default, skip_serializing_if = "is_zero")]
    pub num_tombstones: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockCompaction {
    /// 1 for blocks cut from the head.
    pub level: u32,
    /// ULIDs of the head blocks that went into this one (our own ULID for a fresh block).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "ulid_string_vec"
    )]
    pub sources: Vec<Ulid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThanosMeta {
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub version: u32,
    /// External labels identifying the producer (tenant, replica, …).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub downsample: ThanosDownsample,
    /// Who uploaded the block, e.g. `"receive"`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ThanosFile>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThanosDownsample {
    /// 0 (raw), 300000 (5m) or 3600000 (1h).
    pub resolution: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThanosFile {
    pub rel_path: String,
    /// 0 (left out) for `meta.json`.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub size_bytes: i64,
}

impl BlockMeta {
    /// Serializes as Go would: tab-indented, trailing newline.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(1024);
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        self.serialize(&mut ser)?;
        out.push(b'\n');
        Ok(out)
    }

    pub fn from_json(b: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(b)
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// ULIDs as their 26-character Crockford base32 strings, as Go's `ulid.ULID` marshals.
mod ulid_string {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use ulid::Ulid;

    pub fn serialize<S: Serializer>(u: &Ulid, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&u.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ulid, D::Error> {
        let s = String::deserialize(d)?;
        Ulid::from_string(&s).map_err(D::Error::custom)
    }
}

mod ulid_string_vec {
    use serde::{de::Error, ser::SerializeSeq, Deserialize, Deserializer, Serializer};
    use ulid::Ulid;

    pub fn serialize<S: Serializer>(v: &[Ulid], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for u in v {
            seq.serialize_element(&u.to_string())?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Ulid>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| Ulid::from_string(s).map_err(D::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_meta_json() {
        let ulid = Ulid::from_string("01HZX3K8Q4T5V6W7X8Y9Z0ABCD").unwrap();
        let meta = BlockMeta {
            ulid,
            min_time: 1000,
            max_time: 7_201_000,
            stats: BlockStats {
                num_samples: 480,
                num_series: 2,
                num_chunks: 4,
                num_tombstones: 0,
            },
            compaction: BlockCompaction {
                level: 1,
                sources: vec![ulid],
            },
            version: META_VERSION_1,
            thanos: Some(ThanosMeta {
                version: THANOS_VERSION_1,
                labels: [("tenant_id", "t1"), ("replica", "r0")]
                    .into_iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
                downsample: ThanosDownsample { resolution: 0 },
                source: "receive".into(),
                files: vec![
                    ThanosFile {
                        rel_path: "chunks/000001".into(),
                        size_bytes: 1234,
                    },
                    ThanosFile {
                        rel_path: "index".into(),
                        size_bytes: 567,
                    },
                    ThanosFile {
                        rel_path: "meta.json".into(),
                        size_bytes: 0,
                    },
                ],
            }),
        };
        let want = r#"{
	"ulid": "01HZX3K8Q4T5V6W7X8Y9Z0ABCD",
	"minTime": 1000,
	"maxTime": 7201000,
	"stats": {
		"numSamples": 480,
		"numSeries": 2,
		"numChunks": 4
	},
	"compaction": {
		"level": 1,
		"sources": [
			"01HZX3K8Q4T5V6W7X8Y9Z0ABCD"
		]
	},
	"version": 1,
	"thanos": {
		"version": 1,
		"labels": {
			"replica": "r0",
			"tenant_id": "t1"
		},
		"downsample": {
			"resolution": 0
		},
		"source": "receive",
		"files": [
			{
				"rel_path": "chunks/000001",
				"size_bytes": 1234
			},
			{
				"rel_path": "index",
				"size_bytes": 567
			},
			{
				"rel_path": "meta.json"
			}
		]
	}
}
"#;
        let got = meta.to_json().unwrap();
        assert_eq!(std::str::from_utf8(&got).unwrap(), want);
        assert_eq!(BlockMeta::from_json(&got).unwrap(), meta);
    }

    #[test]
    fn reads_plain_prometheus_meta() {
        let b = br#"{"ulid":"01HZX3K8Q4T5V6W7X8Y9Z0ABCD","minTime":0,"maxTime":10,
            "stats":{"numSamples":3},"compaction":{"level":2,"sources":["01HZX3K8Q4T5V6W7X8Y9Z0ABCD"],
            "parents":[]},"version":1}"#;
        let m = BlockMeta::from_json(b).unwrap();
        assert_eq!(m.stats.num_samples, 3);
        assert_eq!(m.compaction.level, 2);
        assert!(m.thanos.is_none());
    }
}
