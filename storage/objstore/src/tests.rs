//! Object storage tests: config parsing, the shipper against a local-directory bucket
//! (ship, restart without re-upload, retention), and against a real S3-compatible server,
//! `moto_server` (`pip install 'moto[server]'`), started by each test on a random loopback
//! port. A missing `moto_server` fails the test with the install command; nothing skips.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sluice_storage::block::{write_block, BlockChunk, BlockOptions, BlockSeries, TMP_SUFFIX};
use sluice_storage::xor::XorChunk;
use ulid::Ulid;

use super::bucket::walk;
use super::*;

const HOUR_MS: i64 = 3_600_000;
const BUCKET: &str = "sluice-test";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Writes a block with `n_series` series of 100 samples, 15 s apart, from `start_ms`.
fn make_block(dir: &Path, start_ms: i64, n_series: usize) -> Ulid {
    let series: Vec<BlockSeries> = (0..n_series)
        .map(|i| {
            let mut c = XorChunk::new();
            for k in 0..100i64 {
                c.append(start_ms + k * 15_000, (i as f64) * 1.5 + k as f64);
            }
            BlockSeries {
                labels: vec![
                    ("__name__".into(), "sluice_ship_test".into()),
                    ("series".into(), format!("s{i:04}")),
                ],
                chunks: vec![BlockChunk {
                    min_time: start_ms,
                    max_time: start_ms + 99 * 15_000,
                    data: c.bytes().to_vec(),
                }],
            }
        })
        .collect();
    let ext: BTreeMap<String, String> = [("tenant_id".to_string(), "t1".to_string())].into();
    write_block(dir, series, &BlockOptions::new(ext))
        .expect("write block")
        .expect("block has samples")
        .meta
        .ulid
}

fn files_of(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(dir, "", &mut out).unwrap();
    out.sort();
    out
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Upload log filled by a bucket's upload hook.
type Log = Arc<Mutex<Vec<String>>>;

fn logged_bucket(cfg: &ObjstoreConfig) -> (Bucket, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let b = Bucket::new(cfg)
        .unwrap()
        .with_upload_hook(move |k| l.lock().unwrap().push(k.to_string()));
    (b, log)
}

/// Every key of `ulid` was uploaded exactly once and `meta.json` came last.
fn assert_uploaded_once_meta_last(log: &[String], ulid: Ulid, local_files: &[String]) {
    let prefix = format!("{ulid}/");
    let mine: Vec<&str> = log.iter().filter_map(|k| k.strip_prefix(&prefix)).collect();
    assert_eq!(mine.last(), Some(&"meta.json"), "meta.json last: {mine:?}");
    let set: BTreeSet<&str> = mine.iter().copied().collect();
    assert_eq!(
        set.len(),
        mine.len(),
        "an object was uploaded twice: {mine:?}"
    );
    let want: BTreeSet<&str> = local_files.iter().map(String::as_str).collect();
    assert_eq!(set, want, "uploaded objects vs local files");
}

fn state(dir: &Path) -> BTreeSet<Ulid> {
    ShippedState::read(dir).unwrap().expect("state file exists")
}

fn fast_opts() -> ShipperOptions {
    ShipperOptions {
        retention: None,
        // Long: passes in these tests come from start, notify() or a retry.
        rescan_interval: Duration::from_secs(3600),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
    }
}

// ---------------------------------------------------------------------------------------
// Config

#[test]
fn objstore_config_filesystem_and_s3() {
    let fs = ObjstoreConfig::from_yaml("type: FILESYSTEM\nconfig:\n  directory: /data/bucket\n")
        .unwrap();
    assert_eq!(fs, ObjstoreConfig::filesystem("/data/bucket"));

    let minio = ObjstoreConfig::from_yaml(
        r#"
type: s3
config:
  bucket: "thanos"
  endpoint: "minio:9000"
  region: ""
  access_key: "AKIA"
  secret_key: "s3cr3t"
  insecure: true
  bucket_lookup_type: auto
  part_size: 0
  http_config:
    idle_conn_timeout: 1m30s
  trace:
    enable: false
  sse_config:
    type: ""
prefix: /tenant-a/
"#,
    )
    .unwrap();
    assert_eq!(minio.prefix, "tenant-a");
    let BucketConfig::S3(s3) = &minio.bucket else {
        panic!("S3 expected")
    };
    assert_eq!(s3.endpoint_url(), "http://minio:9000");
    assert!(s3.path_style(), "auto → path style for a non-AWS endpoint");
    assert_eq!(s3.region_or_default(), "us-east-1");
    assert_eq!(s3.part_size, DEFAULT_PART_SIZE);
    assert!(s3.send_content_md5);
    assert!(!format!("{s3:?}").contains("s3cr3t"), "secret in Debug");

    let aws = ObjstoreConfig::from_yaml(
        "type: S3\nconfig:\n  bucket: b\n  endpoint: s3.eu-west-1.amazonaws.com\n  region: eu-west-1\n  access_key: a\n  secret_key: s\n",
    )
    .unwrap();
    let BucketConfig::S3(aws) = &aws.bucket else {
        panic!()
    };
    assert_eq!(aws.endpoint_url(), "https://s3.eu-west-1.amazonaws.com");
    assert!(!aws.path_style(), "auto → virtual-hosted on AWS");
    let forced = ObjstoreConfig::from_yaml(
        "type: S3\nconfig:\n  bucket: b\n  endpoint: s3.amazonaws.com\n  access_key: a\n  secret_key: s\n  bucket_lookup_type: path\n",
    )
    .unwrap();
    let BucketConfig::S3(forced) = &forced.bucket else {
        panic!()
    };
    assert!(forced.path_style());
}

#[test]
fn objstore_config_errors_name_the_field() {
    let err = |y: &str| ObjstoreConfig::from_yaml(y).unwrap_err().to_string();
    let cases = [
        ("type: GCS\nconfig:\n  bucket: b\n", "\"GCS\""),
        ("config:\n  directory: x\n", "`type`"),
        ("type: FILESYSTEM\n", "`config`"),
        ("type: FILESYSTEM\nconfig:\n  dir: x\n", "dir"),
        ("type: FILESYSTEM\nconfig:\n  directory: \"\"\n", "config.directory"),
        (
            "type: S3\nconfig:\n  endpoint: e:9000\n  access_key: a\n  secret_key: s\n",
            "config.bucket",
        ),
        (
            "type: S3\nconfig:\n  bucket: b\n  access_key: a\n  secret_key: s\n",
            "config.endpoint",
        ),
        (
            "type: S3\nconfig:\n  bucket: b\n  endpoint: e\n  access_key: a\n",
            "config.secret_key",
        ),
        (
            "type: S3\nconfig:\n  bucket: b\n  endpoint: e\n  secret_key: s\n",
            "config.access_key",
        ),
        (
            "type: S3\nconfig:\n  bucket: b\n  endpoint: e\n  access_key: a\n  secret_key: s\n  bucket_lookup_type: dns\n",
            "config.bucket_lookup_type",
        ),
        (
            "type: S3\nconfig:\n  bucket: b\n  endpoint: e\n  access_key: a\n  secret_key: s\n  s3_force_path_style: true\n",
            "s3_force_path_style",
        ),
        (
            "type: S3\nconfig:\n  bucket: b\n  endpoint: e\n  access_key: a\n  secret_key: s\n  part_size: 1024\n",
            "config.part_size",
        ),
        (
            "type: S3\nconfig:\n  bucket: b\n  endpoint: e\n  access_key: a\n  secret_key: s\n  sse_config:\n    type: SSE-S3\n",
            "config.sse_config.type",
        ),
        (
            "type: S3\nconfig:\n  bucket: b\n  endpoint: e/path\n  access_key: a\n  secret_key: s\n",
            "config.endpoint",
        ),
        ("type: [\n", "YAML"),
    ];
    for (yaml, needle) in cases {
        let e = err(yaml);
        assert!(
            e.contains(needle),
            "{yaml:?}: error {e:?} should name {needle}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Local-directory bucket

#[test]
fn objstore_filesystem_ship_restart_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let blocks = tmp.path().join("blocks");
    let bucket_dir = tmp.path().join("bucket");
    let now = now_ms();
    let old = make_block(&blocks, 1_600_000_000_000, 3); // 2020: past any retention
    let recent = make_block(&blocks, now - HOUR_MS, 5);
    // Not blocks: an unfinished block and other directories/files.
    let unfinished = blocks.join(format!("{}{}", Ulid::new(), TMP_SUFFIX));
    std::fs::create_dir_all(unfinished.join("chunks")).unwrap();
    std::fs::write(unfinished.join("index"), b"partial").unwrap();
    std::fs::create_dir_all(blocks.join("wal")).unwrap();
    std::fs::create_dir_all(blocks.join(Ulid::new().to_string())).unwrap(); // no meta.json

    let cfg = ObjstoreConfig::from_yaml(&format!(
        "type: FILESYSTEM\nconfig:\n  directory: {}\nprefix: tenant-a\n",
        bucket_dir.display()
    ))
    .unwrap();
    let in_bucket = |u: Ulid| bucket_dir.join("tenant-a").join(u.to_string());

    // Ship both, then a third one announced by notify().
    let (b, log) = logged_bucket(&cfg);
    let h = Shipper::start_with_bucket(b, blocks.clone(), fast_opts()).unwrap();
    wait_for("2 uploads", Duration::from_secs(10), || {
        h.stats().uploaded_blocks == 2
    });
    let third = make_block(&blocks, now - 2 * HOUR_MS, 2);
    h.notify();
    wait_for("notified upload", Duration::from_secs(10), || {
        h.stats().uploaded_blocks == 3
    });
    let stats = h.stats();
    h.shutdown();
    assert_eq!(stats.failures, 0, "{:?}", stats.last_error);
    assert_eq!(stats.pending_blocks, 0);
    let log = log.lock().unwrap().clone();
    for u in [old, recent, third] {
        let local = files_of(&blocks.join(u.to_string()));
        assert!(local.contains(&"meta.json".to_string()));
        assert!(local.iter().any(|f| f.starts_with("chunks/")));
        assert_eq!(files_of(&in_bucket(u)), local, "bucket files of {u}");
        for f in &local {
            assert_eq!(
                std::fs::read(in_bucket(u).join(f)).unwrap(),
                std::fs::read(blocks.join(u.to_string()).join(f)).unwrap(),
                "{u}/{f}"
            );
        }
        assert_uploaded_once_meta_last(&log, u, &local);
    }
    assert_eq!(log.len(), stats.uploaded_objects as usize);
    assert_eq!(state(&blocks), BTreeSet::from([old, recent, third]));
    let state_text = std::fs::read_to_string(blocks.join(STATE_FILE)).unwrap();
    assert!(state_text.starts_with("{\n\t\"version\": 1,\n\t\"uploaded\": [\n"));
    // Nothing but the three blocks (no temp files) in the bucket.
    let listed = rt().block_on(Bucket::new(&cfg).unwrap().list()).unwrap();
    assert_eq!(listed.len(), log.len(), "{listed:?}");

    let mtimes = || -> BTreeMap<String, SystemTime> {
        files_of(&bucket_dir)
            .into_iter()
            .map(|f| {
                let m = std::fs::metadata(bucket_dir.join(&f)).unwrap();
                (f, m.modified().unwrap())
            })
            .collect()
    };
    let before = mtimes();

    // Restart with retention: nothing re-uploaded; the old shipped block is deleted.
    let (b, log2) = logged_bucket(&cfg);
    let opts = ShipperOptions {
        retention: Some(Duration::from_secs(24 * 3600)),
        ..fast_opts()
    };
    let h = Shipper::start_with_bucket(b, blocks.clone(), opts.clone()).unwrap();
    wait_for("a pass", Duration::from_secs(10), || h.stats().passes >= 1);
    let stats = h.stats();
    h.shutdown();
    assert_eq!(stats.uploaded_blocks, 0);
    assert_eq!(stats.deleted_blocks, 1);
    assert!(
        log2.lock().unwrap().is_empty(),
        "{:?}",
        log2.lock().unwrap()
    );
    assert_eq!(mtimes(), before, "bucket files rewritten on restart");
    assert!(
        !blocks.join(old.to_string()).exists(),
        "old shipped block kept"
    );
    assert!(blocks.join(recent.to_string()).exists());
    assert!(blocks.join(third.to_string()).exists());
    assert!(
        unfinished.exists(),
        "an unfinished block is not ours to delete"
    );
    assert_eq!(state(&blocks), BTreeSet::from([recent, third]));

    // Lost state file (e.g. crash between the meta.json upload and the state write): the
    // bucket's meta.json is found, nothing is uploaded again.
    std::fs::remove_file(blocks.join(STATE_FILE)).unwrap();
    let (b, log3) = logged_bucket(&cfg);
    let h = Shipper::start_with_bucket(b, blocks.clone(), fast_opts()).unwrap();
    wait_for("a pass", Duration::from_secs(10), || h.stats().passes >= 1);
    assert_eq!(h.stats().uploaded_blocks, 0);
    h.shutdown();
    assert!(log3.lock().unwrap().is_empty());
    assert_eq!(mtimes(), before);
    assert_eq!(state(&blocks), BTreeSet::from([recent, third]));

    // An old block that cannot be shipped (the bucket directory cannot be created) is kept
    // despite retention; the failure is counted and named.
    let unshipped_old = make_block(&blocks, 1_600_000_000_000, 1);
    let blocker = tmp.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let broken = ObjstoreConfig::filesystem(blocker.join("bucket"));
    let h = Shipper::start(&broken, blocks.clone(), opts).unwrap();
    wait_for("failures", Duration::from_secs(10), || {
        h.stats().failures >= 2
    });
    let stats = h.stats();
    h.shutdown();
    assert_eq!(stats.deleted_blocks, 0);
    assert_eq!(stats.pending_blocks, 1);
    assert!(blocks.join(unshipped_old.to_string()).exists());
    let err = stats.last_error.unwrap();
    assert!(err.contains("not-a-dir"), "{err}");
    assert_eq!(state(&blocks), BTreeSet::from([recent, third]));
}

// ---------------------------------------------------------------------------------------
// S3 against moto_server

const MOTO_INSTALL: &str = "pip install 'moto[server]'";

fn moto_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("moto_server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "moto_server not found on PATH: the S3 tests need a real S3-compatible \
                 server; install it with `{MOTO_INSTALL}`"
            )
        })
}

fn free_port() -> u16 {
    // Bound and released: nothing listens there until a server is started on it.
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `moto_server` child process on 127.0.0.1, killed on drop.
struct Moto {
    child: Child,
}

impl Moto {
    fn start(port: u16, tls: bool) -> Moto {
        let mut cmd = Command::new(moto_binary());
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        if tls {
            cmd.arg("-s");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start moto_server ({MOTO_INSTALL}): {e}"));
        let mut m = Moto { child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = m.child.try_wait().unwrap() {
                panic!("moto_server exited before listening on port {port}: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server not listening after 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3_config(port: u16, extra: &str) -> ObjstoreConfig {
    ObjstoreConfig::from_yaml(&format!(
        "type: S3
config:
  bucket: {BUCKET}
  endpoint: 127.0.0.1:{port}
  region: us-east-1
  access_key: testing
  secret_key: testing
  insecure: true
{extra}"
    ))
    .unwrap()
}

fn create_bucket(cfg: &ObjstoreConfig) {
    let b = Bucket::new(cfg).unwrap();
    rt().block_on(async {
        b.s3()
            .unwrap()
            .client()
            .create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .expect("create bucket")
    });
}

/// Every local file of each block is in the bucket under `<ulid>/<rel>` with equal bytes,
/// and the bucket holds nothing else.
fn assert_bucket_matches(cfg: &ObjstoreConfig, blocks: &Path, ulids: &[Ulid]) {
    let b = Bucket::new(cfg).unwrap();
    let rt = rt();
    let listed = rt.block_on(b.list()).unwrap();
    let mut want = Vec::new();
    for u in ulids {
        let dir = blocks.join(u.to_string());
        for f in files_of(&dir) {
            let key = format!("{u}/{f}");
            let got = rt.block_on(b.get(&key)).unwrap();
            assert_eq!(got, std::fs::read(dir.join(&f)).unwrap(), "{key}");
            want.push(key);
        }
    }
    want.sort();
    assert_eq!(listed, want);
}

#[test]
fn objstore_s3_moto_ship_and_multipart() {
    let port = free_port();
    let _moto = Moto::start(port, false);
    // `auto` lookup must pick path style for 127.0.0.1 (moto, like MinIO, needs it).
    let cfg = s3_config(port, "  bucket_lookup_type: auto\n  part_size: 5242880\n");
    create_bucket(&cfg);

    let tmp = tempfile::tempdir().unwrap();
    let blocks = tmp.path().join("blocks");
    let a = make_block(&blocks, now_ms() - 3 * HOUR_MS, 4);
    let b = make_block(&blocks, now_ms() - HOUR_MS, 7);
    let (bucket, log) = logged_bucket(&cfg);
    let h = Shipper::start_with_bucket(bucket, blocks.clone(), fast_opts()).unwrap();
    wait_for("2 uploads", Duration::from_secs(20), || {
        h.stats().uploaded_blocks == 2
    });
    let stats = h.stats();
    h.shutdown();
    assert_eq!(stats.failures, 0, "{:?}", stats.last_error);
    let log = log.lock().unwrap().clone();
    for u in [a, b] {
        assert_uploaded_once_meta_last(&log, u, &files_of(&blocks.join(u.to_string())));
    }
    // Oldest block first.
    let first_b = log.iter().position(|k| k.starts_with(&b.to_string()));
    let last_a = log.iter().rposition(|k| k.starts_with(&a.to_string()));
    assert!(last_a < first_b, "{log:?}");
    assert_bucket_matches(&cfg, &blocks, &[a, b]);
    assert_eq!(state(&blocks), BTreeSet::from([a, b]));

    // A file above part_size goes up in parts (ETag "<md5 of md5s>-<parts>") and reads
    // back byte for byte; Content-MD5 is checked by the server on every part.
    let big = tmp.path().join("big");
    let data: Vec<u8> = (0..11u64 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&big, &data).unwrap();
    let bucket = Bucket::new(&cfg).unwrap();
    let rt = rt();
    let n = rt.block_on(bucket.upload_file("big/object", &big)).unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(rt.block_on(bucket.get("big/object")).unwrap(), data);
    let head = rt
        .block_on(
            bucket
                .s3()
                .unwrap()
                .client()
                .head_object()
                .bucket(BUCKET)
                .key("big/object")
                .send(),
        )
        .unwrap();
    let etag = head.e_tag().unwrap_or_default();
    assert!(
        etag.trim_matches('"').ends_with("-3"),
        "multipart ETag: {etag}"
    );
    assert!(rt.block_on(bucket.exists("big/object")).unwrap());
    assert!(!rt.block_on(bucket.exists("big/nothing")).unwrap());
}

#[test]
fn objstore_s3_server_down_then_up_uploads_each_block_once() {
    let port = free_port();
    let cfg = s3_config(port, "  bucket_lookup_type: path\n");
    let tmp = tempfile::tempdir().unwrap();
    let blocks = tmp.path().join("blocks");
    let a = make_block(&blocks, now_ms() - 3 * HOUR_MS, 3);
    let b = make_block(&blocks, now_ms() - HOUR_MS, 3);

    // Nothing listens on the port yet: every pass fails and backs off.
    let (bucket, log) = logged_bucket(&cfg);
    let h = Shipper::start_with_bucket(bucket, blocks.clone(), fast_opts()).unwrap();
    wait_for("3 failures", Duration::from_secs(20), || {
        h.stats().failures >= 3
    });
    let s = h.stats();
    assert_eq!(s.uploaded_blocks, 0);
    assert_eq!(s.pending_blocks, 2);
    let err = s.last_error.unwrap();
    assert!(
        err.contains("HeadObject") && err.contains(&format!("{a}/meta.json")),
        "{err}"
    );
    assert!(log.lock().unwrap().is_empty());
    assert!(state(&blocks).is_empty());

    // The server comes up (its bucket a moment later, so the first tries may still fail).
    let _moto = Moto::start(port, false);
    create_bucket(&cfg);
    wait_for("2 uploads", Duration::from_secs(30), || {
        h.stats().uploaded_blocks == 2
    });
    h.notify(); // an extra pass must not upload anything again
    wait_for("pending 0", Duration::from_secs(10), || {
        h.stats().pending_blocks == 0
    });
    let s = h.stats();
    h.shutdown();
    assert_eq!(s.uploaded_blocks, 2);
    let log = log.lock().unwrap().clone();
    for u in [a, b] {
        assert_uploaded_once_meta_last(&log, u, &files_of(&blocks.join(u.to_string())));
    }
    assert_eq!(state(&blocks), BTreeSet::from([a, b]));
    assert_bucket_matches(&cfg, &blocks, &[a, b]);

    // Restart: nothing goes up again.
    let (bucket, log2) = logged_bucket(&cfg);
    let h = Shipper::start_with_bucket(bucket, blocks.clone(), fast_opts()).unwrap();
    wait_for("a pass", Duration::from_secs(10), || h.stats().passes >= 1);
    assert_eq!(h.stats().uploaded_blocks, 0);
    h.shutdown();
    assert!(log2.lock().unwrap().is_empty());
}

/// `insecure: false` really speaks TLS (rustls): against moto's self-signed certificate
/// the handshake fails on certificate verification, not on anything else.
#[test]
fn objstore_s3_https_verifies_certificates() {
    let port = free_port();
    let _moto = Moto::start(port, true);
    let cfg = ObjstoreConfig::from_yaml(&format!(
        "type: S3\nconfig:\n  bucket: {BUCKET}\n  endpoint: 127.0.0.1:{port}\n  access_key: a\n  secret_key: s\n"
    ))
    .unwrap();
    let BucketConfig::S3(s3) = &cfg.bucket else {
        panic!()
    };
    assert_eq!(s3.endpoint_url(), format!("https://127.0.0.1:{port}"));
    let b = Bucket::new(&cfg).unwrap();
    let err = rt()
        .block_on(b.exists("x/meta.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.to_lowercase().contains("certificate"),
        "expected a certificate verification error, got: {err}"
    );
}
