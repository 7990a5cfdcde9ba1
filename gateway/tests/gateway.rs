//! End-to-end: `crowd gateway` over a `crowd devnet` of real processes on
//! loopback, driven by third-party clients — IPFS's JS stack for CARs,
//! boto3 and rclone for S3 — and by raw HTTP for bad input. Every wait is
//! bounded; nothing asserts on timing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crowd_chunker::{verify_block, CarIndex, Cid};
use crowd_tests::{bin, random_bytes};
use serde_json::Value;

/// One devnet at a time: seven processes each on a 2-core machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn crowd_at(home: &Path, args: &[&str]) -> Output {
    Command::new(bin("crowd"))
        .args(args)
        .env("CROWD_HOME", home)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

struct Devnet {
    home: tempfile::TempDir,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Devnet {
    fn up() -> Self {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let net = Self {
            home: tempfile::tempdir().unwrap(),
            _turn: turn,
        };
        net.ok(&[
            "devnet",
            "up",
            "--nodes",
            "6",
            "--epoch-secs",
            "2",
            "--trackers",
            "1",
            "--timeout",
            "120",
        ]);
        net
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = crowd_at(self.home(), args);
        assert!(
            out.status.success(),
            "crowd {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Puts `bytes` (with `extra` flags); the root CID.
    fn put(&self, name: &str, bytes: &[u8], extra: &[&str]) -> String {
        let path = self.home().join(name);
        std::fs::write(&path, bytes).unwrap();
        let mut args = vec!["put", path.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        let v: Value = serde_json::from_str(&self.ok(&args)).unwrap();
        v["root"].as_str().unwrap().to_string()
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = crowd_at(self.home(), &["devnet", "down"]);
    }
}

/// A running `crowd gateway` and what it printed when ready.
struct Gateway {
    child: Child,
    addr: String,
    ready: Value,
}

impl Gateway {
    fn start(home: &Path) -> Self {
        let mut child = Command::new(bin("crowd"))
            .args(["gateway", "--listen", "127.0.0.1:0"])
            .env("CROWD_HOME", home)
            .env("RUST_LOG", "crowd_gateway=debug,warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(home.join("gateway.log")).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the gateway printed no ready line in 60 s");
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the ready line {line:?} is not JSON: {e}"));
        let http = ready["http"].as_str().unwrap();
        let addr = http.strip_prefix("http://").unwrap().to_string();
        for key in ["s3_access_key", "s3_secret_key"] {
            assert!(
                ready[key].as_str().is_some_and(|k| k.len() >= 16),
                "{key} in {ready}"
            );
        }
        Self { child, addr, ready }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory so far, in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        kib * 1024
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.0 response: status, headers (lowercase names), body.
struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request over a fresh connection (HTTP/1.0: the body ends at close).
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

fn assert_one_line(reply: &Reply, status: u16, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.text());
    assert_eq!(
        reply.text().trim_end().lines().count(),
        1,
        "{what}: {:?}",
        reply.text()
    );
}

fn ipfs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ipfs")
}

/// `node check.mjs`: IPFS's JS stack checks the CAR block by block and reads
/// the file (or a range) from it.
fn js_check(car: &Path, root: &str, original: &Path, range: Option<(u64, u64)>) -> Value {
    let mut cmd = Command::new("node");
    cmd.current_dir(ipfs_dir())
        .arg("check.mjs")
        .arg(car)
        .arg(root)
        .arg(original);
    if let Some((offset, len)) = range {
        cmd.arg(offset.to_string()).arg(len.to_string());
    }
    let out = cmd.output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("check.mjs: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["ok"], true, "check.mjs on {}: {v}", car.display());
    v
}

#[test]
fn the_ipfs_gateway_serves_public_files_verifiably_and_refuses_private_ones() {
    assert!(
        ipfs_dir().join("node_modules/ipfs-unixfs-exporter").is_dir(),
        "the IPFS check needs gateway/tests/ipfs's npm packages: run scripts/setup"
    );
    let net = Devnet::up();
    // 6 MiB + 5: six 1 MiB leaves and a short one under one dag-pb root
    let big = random_bytes((6 << 20) + 5, 41);
    let big_root = net.put("big.bin", &big, &["--public"]);
    let small = b"hello, crowd".to_vec();
    let small_root = net.put("small.bin", &small, &["--public"]);
    let secret_root = net.put("secret.bin", &random_bytes(1000, 42), &[]);
    let gw = Gateway::start(net.home());
    let addr = gw.addr.as_str();
    let dir = net.home();

    // the file's bytes, whole and by Range
    let whole = http(addr, "GET", &format!("/ipfs/{big_root}"), &[]);
    assert_eq!(whole.status, 200, "{}", whole.text());
    assert!(whole.body == big, "the file's bytes differ");
    assert_eq!(whole.header("etag"), format!("\"{big_root}\""));
    assert_eq!(whole.header("x-ipfs-roots"), big_root);
    assert_eq!(
        whole.header("cache-control"),
        "public, max-age=29030400, immutable"
    );
    assert_eq!(whole.header("accept-ranges"), "bytes");
    for (range, from, to) in [
        ("bytes=0-0", 0, 1),
        ("bytes=1048570-2097160", 1_048_570, 2_097_161),
        ("bytes=-7", big.len() - 7, big.len()),
        ("bytes=6291450-", 6_291_450, big.len()),
    ] {
        let r = http(addr, "GET", &format!("/ipfs/{big_root}"), &[("Range", range)]);
        assert_eq!(r.status, 206, "{range}: {}", r.text());
        assert!(r.body == big[from..to], "{range}: wrong bytes");
        assert_eq!(
            r.header("content-range"),
            format!("bytes {from}-{}/{}", to - 1, big.len())
        );
    }
    let r = http(
        addr,
        "GET",
        &format!("/ipfs/{big_root}"),
        &[("Range", "bytes=99999999-")],
    );
    assert_one_line(&r, 416, "a range after the end");
    assert_eq!(r.header("content-range"), format!("bytes */{}", big.len()));
    let head = http(addr, "HEAD", &format!("/ipfs/{big_root}"), &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), big.len().to_string());

    // a raw block: its bytes hash to its CID, by format or by Accept
    for (query, accept) in [("?format=raw", None), ("", Some("application/vnd.ipld.raw"))] {
        let mut h = Vec::new();
        if let Some(a) = accept {
            h.push(("Accept", a));
        }
        let r = http(addr, "GET", &format!("/ipfs/{big_root}{query}"), &h);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type"), "application/vnd.ipld.raw");
        assert_eq!(r.header("etag"), format!("\"{big_root}.raw\""));
        let cid: Cid = big_root.parse().unwrap();
        verify_block(&cid, &r.body, 0).unwrap();
    }
    let small_raw = http(addr, "GET", &format!("/ipfs/{small_root}?format=raw"), &[]);
    assert_eq!(small_raw.body, small, "a one-chunk file is its raw leaf");

    // the whole DAG as a CAR: checked by IPFS's JS stack, then by ours
    let car = http(addr, "GET", &format!("/ipfs/{big_root}?format=car"), &[]);
    assert_eq!(car.status, 200, "{}", car.text());
    assert_eq!(
        car.header("content-type"),
        "application/vnd.ipld.car; version=1; order=dfs; dups=n"
    );
    assert_eq!(car.header("x-ipfs-roots"), big_root);
    assert!(car.header("etag").starts_with(&format!("\"{big_root}.car.")));
    assert_eq!(car.header("cache-control"), "public, max-age=29030400, immutable");
    let car_path = dir.join("big.car");
    std::fs::write(&car_path, &car.body).unwrap();
    let original = dir.join("big.bin");
    let v = js_check(&car_path, &big_root, &original, None);
    assert_eq!(v["blocks"], 8, "{v}");
    assert_eq!(v["roots"], serde_json::json!([big_root]));
    let index = CarIndex::scan(std::fs::File::open(&car_path).unwrap()).unwrap();
    assert_eq!(index.blocks.len(), 8);

    // a leaf inside the DAG, raw: found by the cache's block index
    let leaf = index
        .blocks
        .keys()
        .find(|c| c.codec() == crowd_chunker::RAW)
        .unwrap()
        .to_string();
    let r = http(addr, "GET", &format!("/ipfs/{leaf}?format=raw"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    verify_block(&leaf.parse().unwrap(), &r.body, 0).unwrap();

    // entity-bytes: only the blocks for the range, which the JS exporter reads
    for (param, offset, len, blocks) in [
        ("1048576:2097151", 1_048_576u64, 1_048_576u64, 2),
        ("1048570:1048580", 1_048_570, 11, 3),
        ("-3:*", big.len() as u64 - 3, 3, 2),
        ("0:*", 0, big.len() as u64, 8),
    ] {
        let r = http(
            addr,
            "GET",
            &format!("/ipfs/{big_root}?format=car&entity-bytes={param}"),
            &[],
        );
        assert_eq!(r.status, 200, "{param}: {}", r.text());
        let path = dir.join("range.car");
        std::fs::write(&path, &r.body).unwrap();
        let v = js_check(&path, &big_root, &original, Some((offset, len)));
        assert_eq!(v["blocks"], blocks, "entity-bytes={param}: {v}");
        assert_eq!(v["bytes"], len, "entity-bytes={param}: {v}");
    }
    // dag-scope=block: the root alone
    let r = http(
        addr,
        "GET",
        &format!("/ipfs/{big_root}?format=car&dag-scope=block"),
        &[],
    );
    let path = dir.join("block.car");
    std::fs::write(&path, &r.body).unwrap();
    assert_eq!(
        CarIndex::scan(std::fs::File::open(&path).unwrap())
            .unwrap()
            .blocks
            .len(),
        1
    );
    // HEAD of a CAR: headers, no body
    let r = http(addr, "HEAD", &format!("/ipfs/{big_root}?format=car"), &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert!(r.header("content-type").starts_with("application/vnd.ipld.car"));

    // a private file is never served in plaintext
    for q in ["", "?format=raw", "?format=car"] {
        let r = http(addr, "GET", &format!("/ipfs/{secret_root}{q}"), &[]);
        assert_one_line(&r, 403, "a private file");
    }

    // bad input: one line each, and the gateway goes on serving
    let unknown = crowd_chunker::HashAlg::Blake3.cid(crowd_chunker::RAW, b"never stored");
    let r = http(addr, "GET", &format!("/ipfs/{unknown}"), &[]);
    assert_one_line(&r, 404, "an unknown CID");
    for (path, what) in [
        ("/ipfs/not-a-cid".to_string(), "a malformed CID"),
        ("/ipfs/".to_string(), "no CID"),
        (format!("/ipfs/{big_root}?format=tar"), "an unknown format"),
        (
            format!("/ipfs/{big_root}?format=car&dag-scope=most"),
            "a bad dag-scope",
        ),
        (
            format!("/ipfs/{big_root}?format=car&entity-bytes=x:y"),
            "bad entity-bytes",
        ),
        (
            format!("/ipfs/{big_root}?format=car&entity-bytes=99999999:*"),
            "entity-bytes after the end",
        ),
        (format!("/ipfs/{big_root}?format=car&car-version=2"), "CAR v2"),
        (format!("/ipfs/{}", "b".repeat(300)), "an overlong CID"),
    ] {
        let r = http(addr, "GET", &path, &[]);
        assert_one_line(&r, 400, what);
    }
    // an oversized header block is refused by the HTTP layer
    let huge = "x".repeat(1 << 20);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let _ = write!(
        s,
        "GET /ipfs/{big_root} HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\n\r\n"
    );
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(
        raw.is_empty() || text.starts_with("HTTP/1.1 431"),
        "an oversized header: {text}"
    );
    drop(s);

    // a client that stops reading mid-download: the gateway's memory stays
    // bounded and the next request is served
    let before = gw.peak_rss();
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET /ipfs/{big_root}?format=car HTTP/1.0\r\n\r\n").unwrap();
        let mut first = [0u8; 1024];
        s.read_exact(&mut first).unwrap();
        stalled.push(s); // never read again
    }
    std::thread::sleep(Duration::from_secs(2));
    let r = http(addr, "GET", &format!("/ipfs/{small_root}"), &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, small.as_slice()));
    let after = gw.peak_rss();
    assert!(
        after < 256 << 20,
        "the gateway's peak RSS is {} MiB (was {} MiB before the stalled downloads)",
        after >> 20,
        before >> 20
    );
    drop(stalled);
}

/// The Python with boto3 that `scripts/setup` makes.
fn python() -> PathBuf {
    let path = std::env::var_os("CROWD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/crowdstore/venv/bin/python")
        });
    assert!(
        path.exists(),
        "{} not found: run scripts/setup (it makes a virtualenv with boto3)",
        path.display()
    );
    path
}

/// `rclone ARGS` against the gateway, configured by environment only.
fn rclone(gw: &Gateway, args: &[&str]) -> Output {
    let out = Command::new("rclone")
        .args(args)
        .args([
            "--s3-upload-cutoff",
            "5M",
            "--s3-chunk-size",
            "5M",
            "--retries",
            "1",
        ])
        .env("RCLONE_CONFIG", "/dev/null")
        .env("RCLONE_CONFIG_CROWD_TYPE", "s3")
        .env("RCLONE_CONFIG_CROWD_PROVIDER", "Other")
        .env("RCLONE_CONFIG_CROWD_REGION", "us-east-1")
        .env("RCLONE_CONFIG_CROWD_FORCE_PATH_STYLE", "true")
        .env("RCLONE_CONFIG_CROWD_ENDPOINT", gw.url())
        .env(
            "RCLONE_CONFIG_CROWD_ACCESS_KEY_ID",
            gw.ready["s3_access_key"].as_str().unwrap(),
        )
        .env(
            "RCLONE_CONFIG_CROWD_SECRET_ACCESS_KEY",
            gw.ready["s3_secret_key"].as_str().unwrap(),
        )
        // a CA bundle for TLS makes rclone refuse its plain-HTTP transport
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .expect("rclone not found: run scripts/setup");
    assert!(
        out.status.success(),
        "rclone {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn tree_files(dir: &Path, base: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            tree_files(&p, base, out);
        } else {
            out.push((
                p.strip_prefix(base).unwrap().display().to_string(),
                std::fs::read(&p).unwrap(),
            ));
        }
    }
    out.sort();
}

/// The files this home's `crowd ls` lists: name → (public, root).
fn listed(net: &Devnet) -> BTreeMap<String, (bool, String)> {
    let v: Value = serde_json::from_str(&net.ok(&["ls", "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                (
                    f["public"].as_bool().unwrap(),
                    f["root"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn s3_clients_store_list_and_read_private_objects_through_the_gateway() {
    let net = Devnet::up();
    let gw = Gateway::start(net.home());

    // boto3: every operation and error code (gateway/tests/s3/boto3_check.py)
    let out = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/boto3_check.py"))
        .arg(gw.url())
        .arg(gw.ready["s3_access_key"].as_str().unwrap())
        .arg(gw.ready["s3_secret_key"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boto3: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["checks"].as_u64().unwrap() >= 60, "{report}");
    // what boto3 kept is stored as private files of this home; what it
    // deleted had its deals ended (crowd rm: no longer listed)
    let files = listed(&net);
    for key in report["kept"].as_object().unwrap().keys() {
        let (public, _) = files
            .get(&format!("s3://{key}"))
            .unwrap_or_else(|| panic!("{key} is not among this home's files: {files:?}"));
        assert!(!public, "{key} was stored in plaintext");
    }
    for key in report["deleted"].as_array().unwrap() {
        let name = format!("s3://{}", key.as_str().unwrap());
        assert!(!files.contains_key(&name), "{name} is still stored");
    }

    // rclone: copy, check and sync a tree of 0, 1, 5 MiB + 1 and 64 MiB files
    // (the 64 MiB one in 5 MiB multipart parts)
    let src = net.home().join("tree");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("empty.bin"), b"").unwrap();
    std::fs::write(src.join("one.bin"), b"1").unwrap();
    std::fs::write(src.join("sub/five.bin"), random_bytes((5 << 20) + 1, 51)).unwrap();
    std::fs::write(src.join("sub/deeper/sixtyfour.bin"), random_bytes(64 << 20, 52)).unwrap();
    let src_s = src.to_str().unwrap();
    rclone(&gw, &["mkdir", "crowd:tree"]);
    rclone(&gw, &["copy", src_s, "crowd:tree"]);
    let check = rclone(&gw, &["check", src_s, "crowd:tree"]);
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(
        said.contains("0 differences found") && said.contains("4 matching files"),
        "{said}"
    );
    // change the tree: one file gone, one changed, one new
    std::fs::remove_file(src.join("one.bin")).unwrap();
    std::fs::write(src.join("sub/five.bin"), b"changed").unwrap();
    std::fs::write(src.join("new.txt"), b"new").unwrap();
    rclone(&gw, &["sync", src_s, "crowd:tree"]);
    let check = rclone(&gw, &["check", src_s, "crowd:tree"]);
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(
        said.contains("0 differences found") && said.contains("4 matching files"),
        "{said}"
    );
    let back = net.home().join("back");
    rclone(&gw, &["copy", "crowd:tree", back.to_str().unwrap()]);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    tree_files(&src, &src, &mut a);
    tree_files(&back, &back, &mut b);
    assert!(a == b, "the tree copied back differs");
    let files = listed(&net);
    assert!(
        !files.contains_key("s3://tree/one.bin"),
        "a file sync deleted is still stored"
    );
    assert!(files.contains_key("s3://tree/sub/deeper/sixtyfour.bin"));

    // a GetObject whose reader stops: memory stays bounded, the next is served
    // unsigned: refused (S3 error XML) before any byte of the object is read
    let r = http(&gw.addr, "GET", "/tree/sub/deeper/sixtyfour.bin", &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("<Code>AccessDenied</Code>"), "{}", r.text());
    let readers: Vec<Child> = (0..3)
        .map(|_| {
            Command::new(python())
                .arg("-c")
                .arg(STALLED_READER)
                .arg(gw.url())
                .arg(gw.ready["s3_access_key"].as_str().unwrap())
                .arg(gw.ready["s3_secret_key"].as_str().unwrap())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut stalled = Vec::new();
    for mut child in readers {
        // each prints once it has read its first MiB, then sleeps
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        stalled.push(KillOnDrop(child));
        assert_eq!(line.trim(), "reading", "a stalled reader did not start");
    }
    // while they stall: a whole check of the tree is served
    rclone(&gw, &["check", src_s, "crowd:tree"]);
    let peak = gw.peak_rss();
    assert!(peak < 256 << 20, "the gateway's peak RSS is {} MiB", peak >> 20);
    drop(stalled);
}

/// Opens the 64 MiB object with boto3, reads 1 MiB, then stops reading.
const STALLED_READER: &str = r#"
import sys, time, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2],
    aws_secret_access_key=sys.argv[3], region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}))
body = s3.get_object(Bucket="tree", Key="sub/deeper/sixtyfour.bin")["Body"]
body.read(1 << 20)
print("reading", flush=True)
time.sleep(30)
"#;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
