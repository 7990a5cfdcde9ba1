//! `crowd devnet up/status/down` with real `crowd-tracker` and `crowd-node`
//! processes on loopback (built next to `crowd`: `cargo build --workspace --bins`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::{multiaddr::Protocol, Multiaddr};
use crowd_protocol::{Network, NetworkConfig, Request, Response, TrackerRequest, TrackerResponse};
use serde_json::Value;

fn crowd(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crowd"))
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn status_json(home: &Path) -> Value {
    let out = crowd(home, &["devnet", "status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn processes(status: &Value) -> Vec<Value> {
    status["processes"].as_array().unwrap().clone()
}

/// The sibling binaries the devnet runs; a clear failure if they were not built.
fn require_service_binaries() {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_crowd"));
    let dir = dir.parent().unwrap();
    for b in ["crowd-tracker", "crowd-node"] {
        assert!(
            dir.join(b).is_file(),
            "{b} is not built in {}: run `cargo build --workspace --bins` first",
            dir.display()
        );
    }
}

/// Runs `devnet down` when dropped, so a failed test leaves no processes behind.
struct Down<'a>(&'a Path);
impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = crowd(self.0, &["devnet", "down"]);
    }
}

fn pid_running(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !matches!(
                s.rsplit_once(')').and_then(|(_, r)| r.trim().chars().next()),
                Some('Z')
            )
        })
        .unwrap_or(false)
}

/// The client's available balance, asked of the tracker over the wire as
/// `key`'s owner (the tracker answers an account only to itself).
fn available(tracker_addr: &str, key: &Keypair) -> u128 {
    let account = key.public().to_peer_id();
    let addr: Multiaddr = tracker_addr.parse().unwrap();
    let Some(Protocol::P2p(tracker)) = addr.iter().last() else {
        panic!("{tracker_addr} has no /p2p/")
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = NetworkConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            ..NetworkConfig::default()
        };
        let (net, _inbound) = Network::start(key.clone(), config).await.unwrap();
        net.dial(tracker, vec![addr]).await.unwrap();
        match net
            .request(tracker, Request::Tracker(TrackerRequest::Account(account)))
            .await
            .unwrap()
        {
            Response::Tracker(TrackerResponse::Account(a)) => a.available,
            other => panic!("{other:?}"),
        }
    })
}

/// A small devnet with one tracker (this file's tests count its processes).
const UP_ONE_TRACKER: &[&str] = &[
    "devnet",
    "up",
    "--nodes",
    "3",
    "--epoch-secs",
    "1",
    "--trackers",
    "1",
];

#[test]
fn up_status_down_and_up_again() {
    require_service_binaries();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let _down = Down(home);

    let out = crowd(home, UP_ONE_TRACKER);
    assert!(out.status.success(), "up failed: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("devnet up"), "{}", text(&out.stdout));

    // four live processes, each with a peer id, addresses and its own home
    let status = status_json(home);
    let procs = processes(&status);
    assert_eq!(procs.len(), 4, "{status:#}");
    assert_eq!(procs.iter().filter(|p| p["role"] == "tracker").count(), 1);
    assert_eq!(procs.iter().filter(|p| p["role"] == "node").count(), 3);
    let mut homes = std::collections::HashSet::new();
    for p in &procs {
        assert_eq!(p["alive"], true, "{p:#}");
        assert!(pid_running(p["pid"].as_u64().unwrap()), "{p:#}");
        let peer = p["peer_id"].as_str().unwrap();
        assert!(peer.starts_with("12D3KooW"), "{p:#}");
        let addrs = p["addrs"].as_array().unwrap();
        assert!(!addrs.is_empty(), "{p:#}");
        for a in addrs {
            let a = a.as_str().unwrap();
            assert!(a.starts_with("/ip4/127.0.0.1/"), "not loopback: {a}");
            assert!(a.ends_with(&format!("/p2p/{peer}")), "{a}");
        }
        assert!(homes.insert(p["home"].as_str().unwrap().to_string()));
    }
    let human = crowd(home, &["devnet", "status"]);
    assert!(
        text(&human.stdout).contains("4 of 4 processes running"),
        "{}",
        text(&human.stdout)
    );

    // the client is configured for this tracker and funded
    let tracker = procs.iter().find(|p| p["role"] == "tracker").unwrap();
    let tracker_id = tracker["peer_id"].as_str().unwrap();
    let config: toml::Table = std::fs::read_to_string(home.join("config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(config["tracker_peer_id"].as_str(), Some(tracker_id));
    let tracker_addr = config["tracker_address"].as_str().unwrap();
    assert!(
        tracker_addr.ends_with(&format!("/p2p/{tracker_id}")),
        "{tracker_addr}"
    );
    let key_path = home.join("identity.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let client = Keypair::from_protobuf_encoding(&std::fs::read(&key_path).unwrap()).unwrap();
    assert!(available(tracker_addr, &client) >= 1_000_000_000_000_000);

    // a second `up` is refused in one line and leaves the devnet alone
    let again = crowd(home, &["devnet", "up", "--nodes", "3", "--trackers", "1"]);
    assert!(!again.status.success());
    let err = text(&again.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("already running"), "{err}");
    assert!(processes(&status_json(home)).iter().all(|p| p["alive"] == true));

    // down stops every process; status shows them stopped
    let out = crowd(home, &["devnet", "down"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("stopped 4 processes"),
        "{}",
        text(&out.stdout)
    );
    let after = processes(&status_json(home));
    assert_eq!(after.len(), 4);
    for p in &after {
        assert_eq!(p["alive"], false, "{p:#}");
        assert!(!pid_running(p["pid"].as_u64().unwrap()), "{p:#}");
    }

    // up again resumes with the same identities
    let out = crowd(home, UP_ONE_TRACKER);
    assert!(out.status.success(), "second up failed: {}", text(&out.stderr));
    let resumed = processes(&status_json(home));
    let ids = |ps: &[Value]| ps.iter().map(|p| p["peer_id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&resumed), ids(&procs));
    assert!(resumed.iter().all(|p| p["alive"] == true));

    // down --clean removes the directory
    let out = crowd(home, &["devnet", "down", "--clean"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!home.join("devnet").exists());
    for p in &resumed {
        assert!(!pid_running(p["pid"].as_u64().unwrap()), "{p:#}");
    }
    assert!(processes(&status_json(home)).is_empty());
}

#[test]
fn a_process_that_fails_to_start_is_named_and_nothing_is_left_running() {
    require_service_binaries();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let _down = Down(home);
    // a tracker home whose config cannot load: `up` reuses it and the tracker exits
    std::fs::create_dir_all(home.join("devnet/tracker")).unwrap();
    std::fs::write(home.join("devnet/tracker/config.toml"), "this is not TOML [\n").unwrap();
    let out = crowd(
        home,
        &[
            "devnet",
            "up",
            "--nodes",
            "2",
            "--timeout",
            "30",
            "--trackers",
            "1",
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let last = err.lines().last().unwrap();
    assert!(last.starts_with("crowd: tracker (pid "), "{err}");
    assert!(last.contains("exited before it was ready"), "{err}");
    assert!(last.contains("tracker.log"), "{err}");
    assert!(processes(&status_json(home)).iter().all(|p| p["alive"] == false));
}

#[test]
fn status_and_down_without_a_devnet() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let out = crowd(home, &["devnet", "status"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("no devnet"), "{}", text(&out.stdout));
    assert!(processes(&status_json(home)).is_empty());
    let out = crowd(home, &["devnet", "down"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("no devnet"), "{}", text(&out.stdout));
}

#[test]
fn bad_up_arguments_are_one_line_errors() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["devnet", "up", "--nodes", "0"][..],
        &["devnet", "up", "--epoch-secs", "0"],
        &["devnet", "up", "--epoch-secs", "nan"],
        &["devnet", "up", "--nodes", "many"],
    ] {
        let out = crowd(home.path(), args);
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("crowd: "), "{err}");
        assert!(!home.path().join("devnet/devnet.json").exists());
    }
}
