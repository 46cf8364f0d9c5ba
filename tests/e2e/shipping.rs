//! Shipping: cut blocks reach a real S3-compatible server (moto) under `<ulid>/…`, also when
//! the server is down at first, each block exactly once; and the embedded default (a local
//! directory bucket) receives them too.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{request, sealed_blocks, simple_series, Server};

const HOUR2: i64 = 2 * 3600 * 1000;
const T0: i64 = 236_200 * HOUR2;
const STEP: i64 = 60_000;
const BUCKET: &str = "sluice-e2e";

fn moto_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("moto_server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "moto_server not found on PATH: install it with `pip install 'moto[server]'` \
                 (scripts/test.sh does)"
            )
        })
}

struct Moto(Child);

impl Moto {
    fn start(port: u16) -> Moto {
        let child = Command::new(moto_binary())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server");
        let m = Moto(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server not listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Object keys and sizes in the bucket (moto does not check signatures).
fn list(port: u16) -> Vec<(String, u64)> {
    let xml = crate::harness::client()
        .get(&format!(
            "http://127.0.0.1:{port}/{BUCKET}?list-type=2&max-keys=1000"
        ))
        .call()
        .expect("listing the bucket")
        .into_string()
        .unwrap();
    let mut out = Vec::new();
    for part in xml.split("<Contents>").skip(1) {
        let field = |tag: &str| {
            let open = format!("<{tag}>");
            let start = part.find(&open).expect(tag) + open.len();
            let end = part[start..].find('<').unwrap() + start;
            part[start..end].to_string()
        };
        out.push((field("Key"), field("Size").parse().unwrap()));
    }
    out.sort();
    out
}

fn send_hours(s: &Server, name: &str, quarters_of_2h: i64) {
    let series = simple_series(name, 20);
    let mut t = T0;
    while t < T0 + quarters_of_2h * HOUR2 / 4 {
        let (code, body) = s.write(&request(&series, t, |i| i as f64 + t as f64));
        assert_eq!(code, 204, "{body}");
        t += STEP;
    }
}

fn wait(what: &str, s: &Server, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !f() {
        assert!(Instant::now() < deadline, "{what}; log:\n{}", s.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn blocks_reach_s3_once_even_when_the_server_is_down_at_first() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = format!(
        "type: S3\nconfig:\n  bucket: {BUCKET}\n  endpoint: 127.0.0.1:{port}\n  region: us-east-1\n  access_key: testing\n  secret_key: testing\n  insecure: true\n"
    );
    // Nothing listens on the S3 port yet.
    let s = Server::start(2, &["--objstore.config", &cfg]);
    send_hours(&s, "shipped", 11);
    wait("two blocks cut", &s, || {
        sealed_blocks(&s.data_dir, "default-tenant").len() == 2
    });
    wait("failed uploads", &s, || {
        s.metric_sum("sluice_shipper_failures_total") >= 1
    });
    assert_eq!(s.metric_sum("sluice_shipper_uploaded_blocks_total"), 0);

    let _moto = Moto::start(port);
    ureq::put(&format!("http://127.0.0.1:{port}/{BUCKET}"))
        .call()
        .expect("creating the bucket");
    wait("uploads after the server came up", &s, || {
        s.metric_sum("sluice_shipper_uploaded_blocks_total") == 2
    });
    let objects = list(port);
    for block in sealed_blocks(&s.data_dir, "default-tenant") {
        let ulid = block.file_name().unwrap().to_str().unwrap();
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(block.join("meta.json")).unwrap()).unwrap();
        for f in meta["thanos"]["files"].as_array().unwrap() {
            let rel = f["rel_path"].as_str().unwrap();
            let key = format!("{ulid}/{rel}");
            let local = std::fs::metadata(block.join(rel)).unwrap().len();
            assert!(
                objects.contains(&(key.clone(), local)),
                "{key} ({local} bytes) not in the bucket: {objects:?}"
            );
        }
    }
    // Exactly the blocks' files, each once (2 blocks × (2 segments, index, tombstones, meta)).
    assert_eq!(objects.len(), 10, "{objects:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.metric_sum("sluice_shipper_uploaded_blocks_total"), 2);
    assert_eq!(s.metric_sum("sluice_shipper_pending_blocks"), 0);
}

#[test]
fn embedded_default_ships_to_a_local_directory_bucket() {
    let s = Server::start(1, &[]);
    send_hours(&s, "local_bucket", 7);
    wait("a block", &s, || {
        sealed_blocks(&s.data_dir, "default-tenant").len() == 1
    });
    let block = &sealed_blocks(&s.data_dir, "default-tenant")[0];
    let in_bucket = s
        .data_dir
        .join("bucket")
        .join(block.file_name().unwrap())
        .join("meta.json");
    wait("the block in the bucket", &s, || in_bucket.is_file());
    for f in ["index", "chunks/000001", "tombstones"] {
        let local = std::fs::read(block.join(f)).unwrap();
        let shipped = std::fs::read(in_bucket.parent().unwrap().join(f)).unwrap();
        assert_eq!(local, shipped, "{f}");
    }
}
