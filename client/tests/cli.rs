//! The `crowd` binary as a user runs it: outputs, exit codes, error lines.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::Path;
use std::process::{Command, Output};

fn crowd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crowd"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A failure: non-zero exit, nothing on stdout, one `crowd:` line on stderr
/// that contains `needle`, and no panic.
fn assert_one_line_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, stderr: {err}");
    assert!(o.stdout.is_empty(), "stdout: {}", stdout(o));
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("crowd: "), "{err:?}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert!(!err.contains("panicked"), "{err:?}");
}

fn write(dir: &Path, name: &str, data: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn cid_prints_only_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "a", b"hello");
    let o = crowd(&["cid", &f]);
    assert!(o.status.success(), "{}", stderr(&o));
    // one raw leaf: CIDv1, raw codec, BLAKE3 of the bytes
    let expected = {
        let mh = cid::multihash::Multihash::<64>::wrap(0x1e, blake3::hash(b"hello").as_bytes()).unwrap();
        cid::Cid::new_v1(0x55, mh).to_string()
    };
    assert_eq!(stdout(&o), format!("{expected}\n"));
    assert!(o.stderr.is_empty());
}

#[test]
fn cid_of_empty_file_matches_ipfs() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "empty", b"");
    let o = crowd(&["cid", "--hash", "sha2-256", &f]);
    // what kubo and the JS importer give an empty file with CIDv1 raw leaves
    assert_eq!(
        stdout(&o).trim(),
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    );
}

#[test]
fn flags_change_the_root_and_stdin_matches_file() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let f = write(dir.path(), "d", &data);
    let roots: Vec<String> = [
        vec!["cid", &f],
        vec!["cid", &f, "--hash", "sha2-256"],
        vec!["cid", &f, "--chunk-size", "64K"],
        vec!["cid", &f, "--chunk-size", "1024", "--max-links", "4"],
        vec!["cid", &f, "--chunker", "fastcdc", "--chunk-size", "16KiB"],
    ]
    .iter()
    .map(|a| stdout(&crowd(a)))
    .collect();
    let unique: std::collections::HashSet<_> = roots.iter().collect();
    assert_eq!(unique.len(), roots.len(), "{roots:?}");

    let piped = Command::new(env!("CARGO_BIN_EXE_crowd"))
        .args(["cid", "-", "--chunk-size", "1024", "--max-links", "4"])
        .stdin(std::fs::File::open(&f).unwrap())
        .output()
        .unwrap();
    assert_eq!(stdout(&piped), roots[3]);
}

#[test]
fn car_roundtrip_and_root_agrees_with_cid() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..2_500_000u32).map(|i| (i ^ (i >> 9)) as u8).collect();
    let f = write(dir.path(), "d", &data);
    let car = dir.path().join("d.car");
    let out = dir.path().join("back");
    let o = crowd(&["car", &f, "-o", car.to_str().unwrap(), "--chunk-size", "256K"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), stdout(&crowd(&["cid", &f, "--chunk-size", "256K"])));
    let x = crowd(&["car-extract", car.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(x.status.success(), "{}", stderr(&x));
    assert_eq!(stdout(&x), stdout(&o));
    assert_eq!(std::fs::read(&out).unwrap(), data);
}

#[test]
fn bad_input_is_one_line_and_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "d", b"some bytes");
    let missing = dir.path().join("nope");
    let missing = missing.to_str().unwrap();
    assert_one_line_error(&crowd(&["cid", missing]), "cannot open");
    assert_one_line_error(&crowd(&["cid", dir.path().to_str().unwrap()]), "is a directory");
    assert_one_line_error(&crowd(&["cid", &f, "--chunk-size", "0"]), "chunk size 0");
    assert_one_line_error(&crowd(&["cid", &f, "--chunk-size", "9MiB"]), "chunk size");
    assert_one_line_error(&crowd(&["cid", &f, "--max-links", "1"]), "max links 1");
    assert_one_line_error(&crowd(&["cid", &f, "--hash", "md5"]), "md5");
    assert_one_line_error(&crowd(&["cid", &f, "--chunker", "rabin"]), "rabin");
    assert_one_line_error(&crowd(&["cid"]), "required");
    assert_one_line_error(&crowd(&["car", &f]), "--output");
}

#[test]
fn bad_car_is_one_line_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let f = write(dir.path(), "d", &data);
    let car = dir.path().join("d.car");
    let car_s = car.to_str().unwrap();
    assert!(crowd(&["car", &f, "-o", car_s, "--chunk-size", "4096"])
        .status
        .success());
    let good = std::fs::read(&car).unwrap();
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();

    // truncated
    let t = write(dir.path(), "t.car", &good[..good.len() - 100]);
    assert_one_line_error(&crowd(&["car-extract", &t, "-o", out_s]), "truncated CAR");
    // a flipped byte in the last block
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 10] ^= 1;
    let c = write(dir.path(), "c.car", &bad);
    assert_one_line_error(
        &crowd(&["car-extract", &c, "-o", out_s]),
        "does not match its CID",
    );
    // not a CAR
    assert_one_line_error(&crowd(&["car-extract", &f, "-o", out_s]), "CAR");
    assert!(!out.exists(), "a failed extract must not leave output");
    // nothing partial left behind either
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn help_documents_every_flag() {
    let o = crowd(&["cid", "--help"]);
    let text = stdout(&o);
    for flag in ["--hash", "--chunker", "--chunk-size", "--max-links"] {
        assert!(text.contains(flag), "{flag} missing from help");
    }
}
