//! End-to-end: the `crowd` binary against a `crowd devnet` of real
//! `crowd-tracker` and `crowd-node` processes on loopback — exactly what a
//! user runs. Every wait is bounded; nothing asserts on timing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crowd_tests::{bin, random_bytes};
use serde_json::Value;

/// Put's segment size (16 MiB, a multiple of k = 4).
const SEGMENT: usize = 16 << 20;

/// One devnet at a time: seven processes each on a 2-core machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Devnet {
    home: tempfile::TempDir,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Devnet {
    fn up(nodes: usize, epoch_secs: &str) -> Self {
        Self::up_with(nodes, epoch_secs, Some(1))
    }

    /// A devnet with `trackers` tracker processes (a replica set beyond 1).
    /// `trackers`: `None` takes `devnet up`'s default.
    fn up_with(nodes: usize, epoch_secs: &str, trackers: Option<usize>) -> Self {
        let turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let home = tempfile::tempdir().unwrap();
        let net = Self { home, _turn: turn };
        let nodes = nodes.to_string();
        let mut args = vec![
            "devnet",
            "up",
            "--nodes",
            &nodes,
            "--epoch-secs",
            epoch_secs,
            "--timeout",
            "120",
        ];
        let trackers = trackers.map(|n| n.to_string());
        if let Some(n) = &trackers {
            args.extend(["--trackers", n]);
        }
        let out = net.crowd(&args);
        assert!(
            out.status.success(),
            "devnet up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        net
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    fn crowd(&self, args: &[&str]) -> Output {
        crowd_at(self.home(), args)
    }

    /// `crowd ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.crowd(args);
        assert!(
            out.status.success(),
            "crowd {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn processes(&self) -> Vec<Value> {
        self.json(&["devnet", "status", "--json"])["processes"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn process(&self, peer: &str) -> Value {
        self.processes()
            .into_iter()
            .find(|p| p["peer_id"] == peer)
            .unwrap_or_else(|| panic!("no devnet process {peer}"))
    }

    fn sigkill(&self, peer: &str) {
        let pid = self.process(peer)["pid"].as_u64().unwrap();
        let status = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Writes `bytes` to a file, puts it, returns `put --json`.
    fn put(&self, name: &str, bytes: &[u8], extra: &[&str]) -> Value {
        let path = self.home().join(name);
        std::fs::write(&path, bytes).unwrap();
        let mut args = vec!["put", path.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        self.json(&args)
    }

    fn get(&self, root: &str, name: &str) -> Vec<u8> {
        let out = self.home().join(name);
        self.ok(&["get", root, "-o", out.to_str().unwrap()]);
        std::fs::read(out).unwrap()
    }

    /// `crowd get ROOT -o OUT` started in the background (to be killed).
    fn spawn_get(&self, root: &str, out: &Path, stderr: std::process::Stdio) -> std::process::Child {
        Command::new(bin("crowd"))
            .arg("--home")
            .arg(self.home())
            .args(["get", root, "-o", out.to_str().unwrap()])
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    fn status(&self, root: &str) -> Vec<Value> {
        self.json(&["status", root, "--json"])["pieces"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Polls `status` until `done` holds for every piece.
    fn wait_status(
        &self,
        root: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let s = self.status(root);
            if done(&s) {
                return s;
            }
            assert!(start.elapsed() < timeout, "timed out waiting for {what}: {s:#?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.crowd(&["devnet", "down"]);
    }
}

fn crowd_at(home: &Path, args: &[&str]) -> Output {
    Command::new(bin("crowd"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("CROWD_HOME")
        .output()
        .unwrap()
}

/// A failed command: non-zero exit and exactly one line on stderr, which
/// contains `needle`.
fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a failure, got success: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(
        lines[0].to_lowercase().contains(&needle.to_lowercase()),
        "'{needle}' not in: {}",
        lines[0]
    );
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn u128_of(v: &Value, key: &str) -> u128 {
    match &v[key] {
        Value::Number(n) => n.as_u64().map(u128::from).unwrap(),
        Value::String(s) => s.parse().unwrap(),
        other => panic!("{key}: {other}"),
    }
}

fn root_of(put: &Value) -> String {
    put["root"].as_str().unwrap().to_string()
}

/// `crowd-tracker ledger verify --json [--upto N]` on a tracker home.
fn verify_home(home: &str, upto: Option<u64>) -> Value {
    let mut cmd = Command::new(bin("crowd-tracker"));
    cmd.args(["ledger", "verify", "--json", "--home", home]);
    if let Some(n) = upto {
        cmd.args(["--upto", &n.to_string()]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A process the test started itself, SIGKILLed when dropped.
struct Spawned(std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `crowd devnet up` (three tracker replicas by default): nodes and the client follow the replica
/// set. The leader is SIGKILLed; a put and a get issued right after succeed
/// (the client follows the next leader); the killed replica restarts and
/// catches up; all three ledgers verify to the same head and totals at one
/// position; both files come back identical.
#[test]
fn a_devnet_of_three_tracker_replicas_puts_and_gets_across_the_leaders_sigkill() {
    let net = Devnet::up_with(6, "1", None);
    let a = random_bytes(1_500_000, 31);
    let root_a = root_of(&net.put("a", &a, &[]));
    let trackers: Vec<Value> = net
        .processes()
        .into_iter()
        .filter(|p| p["role"] == "tracker")
        .collect();
    assert_eq!(trackers.len(), 3);
    // `devnet status` names exactly one leader
    let leaders = |net: &Devnet| -> Vec<Value> {
        net.processes()
            .into_iter()
            .filter(|p| p["role"] == "tracker" && p["leads"] == true)
            .collect()
    };
    let first = leaders(&net);
    assert_eq!(first.len(), 1, "{trackers:?}");
    let leader = first[0].clone();
    net.sigkill(leader["peer_id"].as_str().unwrap());

    // issued during the failover: both succeed
    let b = random_bytes(1_000_000, 32);
    let root_b = root_of(&net.put("b", &b, &[]));
    assert_eq!(net.get(&root_a, "a.out"), a);
    let next = leaders(&net);
    assert_eq!(next.len(), 1, "{next:?}");
    assert_ne!(next[0]["peer_id"], leader["peer_id"]);

    // the killed replica restarts on its home and catches up
    let home = leader["home"].as_str().unwrap().to_string();
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(leader["log"].as_str().unwrap())
        .unwrap();
    let _restarted = Spawned(
        Command::new(bin("crowd-tracker"))
            .args(["run", "--home", &home, "--epoch-secs", "1", "--devnet"])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let other = trackers.iter().find(|t| t["home"] != leader["home"]).unwrap();
    let target = u64_of(&verify_home(other["home"].as_str().unwrap(), None), "entries");
    let start = Instant::now();
    while u64_of(&verify_home(&home, None), "entries") < target {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the restarted replica did not catch up"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let reports: Vec<Value> = trackers
        .iter()
        .map(|t| verify_home(t["home"].as_str().unwrap(), Some(target)))
        .collect();
    for r in &reports {
        assert_eq!(
            (&r["head"], &r["totals"]),
            (&reports[0]["head"], &reports[0]["totals"]),
            "{reports:?}"
        );
    }
    assert_eq!(net.get(&root_b, "b.out"), b);
}

#[test]
fn put_then_get_is_identical_for_every_size_and_bad_input_is_one_line() {
    let net = Devnet::up(6, "1");
    for (i, len) in [0, 1, SEGMENT, 2 * SEGMENT + 12_345].into_iter().enumerate() {
        let data = random_bytes(len, i as u64);
        let put = net.put(&format!("in-{len}"), &data, &[]);
        assert_eq!(u64_of(&put, "size"), len as u64);
        let deals = put["deals"].as_array().unwrap();
        // an empty file needs no storage; anything else is 4+2 deals with 6 distinct providers
        if len > 0 {
            assert_eq!(deals.len(), 6, "{put}");
            let mut providers: Vec<&str> = deals.iter().map(|d| d["provider"].as_str().unwrap()).collect();
            providers.sort();
            providers.dedup();
            assert_eq!(providers.len(), 6);
        }
        let back = net.get(&root_of(&put), &format!("out-{len}"));
        assert!(back == data, "{len} bytes came back different");
        // the root CID is the one `crowd cid` computes offline
        let cid = net.ok(&["cid", net.home().join(format!("in-{len}")).to_str().unwrap()]);
        assert_eq!(cid.trim(), root_of(&put));
    }
    let listed = net.ok(&["ls"]);
    assert!(listed.lines().count() >= 4, "{listed}");

    // bad input: one clear line and a non-zero exit
    let unknown = {
        let other = net.home().join("never-stored");
        std::fs::write(&other, random_bytes(1000, 99)).unwrap();
        net.ok(&["cid", other.to_str().unwrap()]).trim().to_string()
    };
    let out_path = net.home().join("x");
    let out = out_path.to_str().unwrap();
    assert_one_line_error(&net.crowd(&["get", &unknown, "-o", out]), "unknown");
    assert_one_line_error(&net.crowd(&["get", "not-a-cid", "-o", out]), "not a CID");
    assert!(!out_path.exists());
    assert_one_line_error(&net.crowd(&["put", "/does/not/exist"]), "/does/not/exist");
    let small = net.home().join("small");
    std::fs::write(&small, b"hello").unwrap();
    let small = small.to_str().unwrap();
    assert_one_line_error(
        &net.crowd(&["put", small, "--data-shards", "5", "--parity-shards", "2"]),
        "providers",
    );
    // a second client of the same network with no funds
    let poor = tempfile::tempdir().unwrap();
    std::fs::copy(net.home().join("config.toml"), poor.path().join("config.toml")).unwrap();
    assert_one_line_error(&crowd_at(poor.path(), &["put", small]), "funds");
}

#[test]
fn get_survives_m_providers_killed_before_and_during_the_download() {
    let net = Devnet::up(6, "1");
    let data = random_bytes(3 * SEGMENT, 7);
    let put = net.put("big", &data, &[]);
    let root = root_of(&put);
    let deals = put["deals"].as_array().unwrap();
    let provider_of = |index: u64| {
        deals.iter().find(|d| u64_of(d, "index") == index).unwrap()["provider"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // during: a get is running when two data-piece providers die
    let out = net.home().join("during");
    let mut child = net.spawn_get(&root, &out, std::process::Stdio::piped());
    // wait until bytes are arriving (the resume directory exists), then kill
    let resume = net.home().join(".during.crowd-get");
    let start = Instant::now();
    while !resume.exists() && start.elapsed() < Duration::from_secs(30) && child.try_wait().unwrap().is_none()
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    net.sigkill(&provider_of(0));
    net.sigkill(&provider_of(1));
    let result = child.wait_with_output().unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        std::fs::read(&out).unwrap() == data,
        "get during the kills returned other bytes"
    );

    // before: the two are already dead
    assert!(net.get(&root, "before") == data);
}

/// A get killed mid-way keeps what its output had on disk: the next one
/// checks those bytes and fetches only the rest.
#[test]
fn an_interrupted_get_keeps_its_output_on_disk_and_fetches_only_the_rest() {
    let net = Devnet::up(6, "1");
    // private (the default): the kept output is plaintext, resumed at a
    // segment's tag
    let data = random_bytes(16 * SEGMENT, 21);
    let root = root_of(&net.put("big", &data, &[]));
    for attempt in 0..3 {
        let out = net.home().join(format!("back-{attempt}"));
        let resume = net.home().join(format!(".back-{attempt}.crowd-get"));
        let mut child = net.spawn_get(&root, &out, std::process::Stdio::null());
        // kill it once a frontier is recorded
        let start = Instant::now();
        while !resume.join("frontier").exists()
            && start.elapsed() < Duration::from_secs(60)
            && child.try_wait().unwrap().is_none()
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if out.exists() {
            // it finished before it was killed: again, with a fresh output
            assert!(status.success());
            assert!(std::fs::read(&out).unwrap() == data);
            continue;
        }
        assert!(!status.success(), "the get was not killed mid-way");
        let frontier: u64 = std::fs::read_to_string(resume.join("frontier"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let kept = std::fs::read(resume.join("output")).unwrap();
        assert!(
            frontier > 0 && kept.len() as u64 >= frontier,
            "{frontier} {}",
            kept.len()
        );
        assert!(
            kept[..frontier as usize] == data[..frontier as usize],
            "the kept output differs"
        );

        let again = net.json(&["get", &root, "-o", out.to_str().unwrap(), "--json"]);
        let fetched_from = again["fetched"][0].as_u64().unwrap();
        assert!(fetched_from > 0, "fetched everything again: {again}");
        assert!(std::fs::read(&out).unwrap() == data, "the resumed get differs");
        assert!(!resume.exists());
        return;
    }
    panic!("the get finished before it could be killed, three times");
}

#[test]
fn corrupted_replica_faults_stops_payment_and_get_still_works_and_tracker_restart_keeps_the_ledger() {
    let net = Devnet::up(6, "1");
    let data = random_bytes(2_000_000, 3);
    let put = net.put("file", &data, &["--epochs", "200"]);
    let root = root_of(&put);
    let status = net.wait_status(
        &root,
        "every deal active and proven",
        Duration::from_secs(90),
        |s| all_proven(s),
    );

    // corrupt one provider's replica on disk
    let victim = &status[2];
    let deal_id = u64_of(victim, "deal_id");
    let node = net.process(victim["provider"].as_str().unwrap());
    let replica = PathBuf::from(node["home"].as_str().unwrap())
        .join("replicas")
        .join(format!("{deal_id:020}.replica"));
    let mut bytes = std::fs::read(&replica).unwrap();
    for b in bytes.iter_mut().step_by(7) {
        *b ^= 0x5a;
    }
    std::fs::write(&replica, bytes).unwrap();
    let faulted = net.wait_status(
        &root,
        "the corrupted deal to fault",
        Duration::from_secs(60),
        |s| u64_of(&s[2], "faulted_epochs") >= 1,
    );
    let paid_at_fault = u128_of(&faulted[2], "paid");
    // terminated after `repair_after_missed` (2) faults: status shows the
    // index as lost (no spare provider on 6 nodes to repair it)
    let ended = |p: &Value| p["state"] == "terminated" || p["state"] == "lost";
    let later = net.wait_status(&root, "two more faults", Duration::from_secs(60), |s| {
        u64_of(&s[2], "faulted_epochs") >= 3 || ended(&s[2])
    });
    assert_eq!(
        u128_of(&later[2], "paid"),
        paid_at_fault,
        "a faulting deal was still paid"
    );
    // the others keep being proven and paid
    let healthy = &later[0];
    assert!(u64_of(healthy, "faulted_epochs") == 0 && u128_of(healthy, "paid") > 0);
    assert!(net.get(&root, "after-corruption") == data);

    // a tracker killed mid-run and restarted keeps every balance and deal
    let balance_before = net.json(&["balance", "--json"]);
    let deals_before = net.status(&root);
    let tracker = net
        .processes()
        .into_iter()
        .find(|p| p["role"] == "tracker")
        .unwrap();
    let tracker_home = PathBuf::from(tracker["home"].as_str().unwrap());
    net.sigkill(tracker["peer_id"].as_str().unwrap());
    let restarted = Restarted::start(&tracker_home);
    let balance_after = net.json(&["balance", "--json"]);
    let deals_after = net.status(&root);
    // the client's money is either still its own or paid to providers
    let client_total = |b: &Value| u128_of(b, "available") + u128_of(b, "locked_escrow");
    let paid = |s: &[Value]| s.iter().map(|p| u128_of(p, "paid")).sum::<u128>();
    let compensation = |s: &[Value]| s.iter().filter(|p| ended(p)).count();
    if compensation(&deals_before) == compensation(&deals_after) {
        assert_eq!(
            client_total(&balance_before) + paid(&deals_before),
            client_total(&balance_after) + paid(&deals_after),
            "before {balance_before} after {balance_after}"
        );
    }
    assert_eq!(deals_before.len(), deals_after.len());
    for (b, a) in deals_before.iter().zip(&deals_after) {
        assert_eq!(b["deal_id"], a["deal_id"]);
        assert!(u128_of(a, "paid") >= u128_of(b, "paid"));
        assert!(u64_of(a, "proven_epochs") >= u64_of(b, "proven_epochs"));
    }
    // and it goes on proving
    let proven = u64_of(&deals_after[0], "proven_epochs");
    net.wait_status(&root, "proving after the restart", Duration::from_secs(60), |s| {
        u64_of(&s[0], "proven_epochs") > proven
    });
    drop(restarted);
    let verify = Command::new(bin("crowd-tracker"))
        .args(["ledger", "verify", "--home"])
        .arg(&tracker_home)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// A tracker restarted by hand from its devnet home (same identity, ledger
/// and listen address), stopped on drop.
struct Restarted(std::process::Child);

impl Restarted {
    fn start(home: &Path) -> Self {
        let info = home.join("tracker.json");
        let _ = std::fs::remove_file(&info);
        let log = std::fs::File::create(home.join("restarted.log")).unwrap();
        let child = Command::new(bin("crowd-tracker"))
            .args(["run", "--home"])
            .arg(home)
            .args(["--epoch-secs", "1", "--devnet"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !info.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "restarted tracker not ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self(child)
    }
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// Every file under `dir` (recursively) with its bytes.
fn files_under(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            files_under(&path, out);
        } else if meta.is_file() {
            // a file may vanish (RocksDB compaction) between listing and reading
            if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
}

/// The body of `GET /metrics` at a devnet process's metrics address.
fn scrape(p: &Value) -> String {
    let addr = p["metrics"]
        .as_str()
        .filter(|a| !a.is_empty())
        .expect("a metrics address");
    http_get(addr, "/metrics").1
}

/// One metric of a devnet process (its first sample starting with `name`).
fn metric(p: &Value, name: &str) -> f64 {
    let body = scrape(p);
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

fn nodes(net: &Devnet) -> Vec<Value> {
    net.processes()
        .into_iter()
        .filter(|p| p["role"] == "node")
        .collect()
}

/// The sum of `crowd_node_bytes_served_total` over every node's /metrics.
fn bytes_served(net: &Devnet) -> u64 {
    nodes(net)
        .iter()
        .map(|p| metric(p, "crowd_node_bytes_served_total") as u64)
        .sum()
}

fn tracker_epoch(net: &Devnet) -> u64 {
    let tracker = net
        .processes()
        .into_iter()
        .find(|p| p["role"] == "tracker")
        .unwrap();
    metric(&tracker, "crowd_tracker_epoch") as u64
}

/// Bytes a node keeps for deals on disk: everything under `pieces/` and
/// `replicas/` (pieces, replicas, outboards), and what it reports.
fn node_space(p: &Value) -> (u64, u64) {
    let home = PathBuf::from(p["home"].as_str().unwrap());
    let mut files = Vec::new();
    for dir in ["pieces", "replicas"] {
        files_under(&home.join(dir), &mut files);
    }
    let on_disk = files.iter().map(|(_, b)| b.len() as u64).sum();
    (on_disk, metric(p, "crowd_node_space_used_bytes") as u64)
}

/// `crowd-tracker ledger verify` on the devnet's tracker home passes.
fn assert_ledger_verifies(net: &Devnet) {
    let tracker = net
        .processes()
        .into_iter()
        .find(|p| p["role"] == "tracker")
        .unwrap();
    let verify = Command::new(bin("crowd-tracker"))
        .args(["ledger", "verify", "--home", tracker["home"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// Every piece's deal is active and proven at least once.
fn all_proven(status: &[Value]) -> bool {
    status
        .iter()
        .all(|p| p["state"] == "active" && u64_of(p, "proven_epochs") >= 1)
}

fn providers_of(status: &[Value]) -> Vec<String> {
    status
        .iter()
        .map(|p| p["provider"].as_str().unwrap().to_string())
        .collect()
}

/// With no client command, the tracker repairs the pieces of two providers
/// that were SIGKILLed and lost their disks onto two other providers, within
/// 10 epochs; the file then survives the loss of two more of the original
/// providers (without the repair it would be lost: 4 of 6 pieces gone).
#[test]
fn lost_pieces_are_repaired_with_no_client_online_and_the_file_survives_two_more_losses() {
    let net = Devnet::up(8, "1");
    let data = random_bytes(3_000_000, 21);
    let put = net.put("file", &data, &["--epochs", "400"]);
    let root = root_of(&put);
    let all_active = |s: &[Value]| s.len() == 6 && all_proven(s);
    let first = net.wait_status(
        &root,
        "every deal active and proven",
        Duration::from_secs(120),
        all_active,
    );
    let original = providers_of(&first);
    for peer in &original[..2] {
        let home = PathBuf::from(net.process(peer)["home"].as_str().unwrap());
        net.sigkill(peer);
        std::fs::remove_dir_all(&home).unwrap();
    }
    let killed_at = tracker_epoch(&net);
    // "active": the seal proof verified (the new deals are challenged from
    // their start epoch on)
    let healed = net.wait_status(
        &root,
        "6 active pieces on 6 distinct live providers",
        Duration::from_secs(180),
        |s| {
            let mut providers = providers_of(s);
            providers.sort();
            providers.dedup();
            s.len() == 6
                && s.iter().all(|p| p["state"] == "active")
                && providers.len() == 6
                && !providers.iter().any(|p| original[..2].contains(p))
        },
    );
    let healed_at = tracker_epoch(&net);
    assert!(
        healed_at <= killed_at + 10,
        "healed at epoch {healed_at}, killed at {killed_at}: more than 10 epochs"
    );
    let status = net.json(&["status", &root, "--json"]);
    assert!(u64_of(&status["repairs"], "done") >= 2, "{status}");
    // the new providers are the two that held nothing of the file
    let now = providers_of(&healed);
    let new: Vec<&String> = now.iter().filter(|p| !original.contains(p)).collect();
    assert_eq!(new.len(), 2, "{now:?} vs {original:?}");
    // two more of the original providers go: only the repairs make k = 4
    for peer in &original[2..4] {
        net.sigkill(peer);
    }
    assert!(net.get(&root, "after-repair") == data, "the file did not survive");
    assert_ledger_verifies(&net);
}

/// A provider whose unsealed piece copy is corrupt on disk serves bad bytes
/// as a repair source: the repair of another lost piece skips it (every
/// fetched byte is verified; the repairing node logs it as a bad source),
/// the rebuilt piece still matches its CID (its seal proof verifies
/// against it: "active"), and the file comes back whole. The bad source
/// faults: the tracker fetches the group the repairer named from it, sees
/// it fail verification itself, and records a retrieval fault on its deal
/// (its replica is intact, so it keeps proving its windows).
#[test]
fn a_repair_source_serving_corrupt_bytes_is_skipped_the_repair_still_matches_its_cid_and_the_source_faults() {
    let net = Devnet::up(8, "1");
    let data = random_bytes(2_000_000, 41);
    let put = net.put("file", &data, &["--epochs", "400"]);
    let root = root_of(&put);
    let first = net.wait_status(
        &root,
        "every deal active and proven",
        Duration::from_secs(120),
        |s| s.len() == 6 && all_proven(s),
    );
    let providers = providers_of(&first);
    // index 0's provider serves fetches from its unsealed copy: corrupt it
    let bad_home = PathBuf::from(net.process(&providers[0])["home"].as_str().unwrap());
    let mut files = Vec::new();
    files_under(&bad_home.join("pieces"), &mut files);
    let mut corrupted = 0;
    for (path, mut bytes) in files {
        if path.extension().is_some_and(|e| e == "outboard") {
            continue;
        }
        for b in bytes.iter_mut().step_by(7) {
            *b ^= 0x5a;
        }
        std::fs::write(&path, bytes).unwrap();
        corrupted += 1;
    }
    assert_eq!(corrupted, 1, "the provider keeps one unsealed piece");
    // index 1's provider goes, with its disk: index 1 is rebuilt from the
    // live pieces, the corrupt one listed first (active sources by index)
    let lost_home = PathBuf::from(net.process(&providers[1])["home"].as_str().unwrap());
    net.sigkill(&providers[1]);
    std::fs::remove_dir_all(&lost_home).unwrap();
    let healed = net.wait_status(&root, "index 1 repaired", Duration::from_secs(180), |s| {
        s[1]["state"] == "active" && s[1]["provider"] != providers[1].as_str()
    });
    let repairer = net.process(healed[1]["provider"].as_str().unwrap());
    let log = std::fs::read_to_string(repairer["log"].as_str().unwrap()).unwrap();
    assert!(
        log.lines().any(|l| l.contains("repair source dropped")
            && l.contains(providers[0].as_str())
            && l.contains("BadBytes")),
        "the repairing node did not skip the corrupt source:\n{log}"
    );
    // the bad source faults for it, on the tracker's own audit
    let tracker = net
        .processes()
        .into_iter()
        .find(|p| p["role"] == "tracker")
        .unwrap();
    assert!(metric(&tracker, "crowd_tracker_retrieval_faults_total") >= 1.0);
    let faulted = net.wait_status(&root, "the bad source faulted", Duration::from_secs(60), |s| {
        u64_of(&s[0], "faulted_epochs") >= 1
    });
    assert_eq!(faulted[0]["provider"], providers[0].as_str());
    let tracker_log = std::fs::read_to_string(tracker["log"].as_str().unwrap()).unwrap();
    assert!(
        tracker_log.lines().any(|l| l.contains("retrieval audit")
            && l.contains(providers[0].as_str())
            && l.contains("not its piece's")),
        "the tracker did not audit the named source:\n{tracker_log}"
    );
    // nobody else was found serving bad bytes
    for other in &providers[1..] {
        assert!(
            !tracker_log
                .lines()
                .any(|l| l.contains("not its piece's") && l.contains(other.as_str())),
            "{other} was faulted for bytes it did not serve:\n{tracker_log}"
        );
    }
    assert!(
        net.get(&root, "after-bad-source") == data,
        "the file did not come back whole"
    );
    assert_ledger_verifies(&net);
}

/// `crowd rm` ends the deals at once, refunds the unearned escrow, and every
/// node gives back every byte (on disk and in what it reports); renewal
/// moves the end and proofs go on past the old one; an unrenewed file
/// expires and is collected the same way.
#[test]
fn rm_gives_back_every_byte_renew_extends_and_an_expired_file_is_collected() {
    let net = Devnet::up(6, "1");
    let before: Vec<(u64, u64)> = nodes(&net).iter().map(node_space).collect();
    let balance = |net: &Devnet| net.json(&["balance", "--json"]);
    let a = net.put("a", &random_bytes(1_500_000, 31), &["--epochs", "400"]);
    let b = net.put("b", &random_bytes(1_000_000, 32), &["--epochs", "12"]);
    let (ra, rb) = (root_of(&a), root_of(&b));
    net.wait_status(&ra, "file a active", Duration::from_secs(120), all_proven);
    let sb = net.wait_status(&rb, "file b active", Duration::from_secs(120), all_proven);
    assert!(nodes(&net).iter().map(node_space).any(|(disk, _)| disk > 0));

    // renew b past its end: its deals' end moves and proofs continue there
    let old_end = u64_of(&net.json(&["status", &rb, "--json"]), "end_epoch");
    let renewed = net.json(&["renew", &rb, "--epochs", "4", "--json"]);
    assert_eq!(
        u64_of(&renewed["files"][0], "end_epoch"),
        old_end + 4,
        "{renewed}"
    );
    assert_eq!(
        u64_of(&net.json(&["status", &rb, "--json"]), "end_epoch"),
        old_end + 4
    );
    assert!(sb.iter().all(|p| u64_of(p, "proven_epochs") <= 12));

    // rm a: refunded now, deals removed
    let funds_before = balance(&net);
    let removed = net.json(&["rm", &ra, "--json"]);
    let refund = u128_of(&removed, "refund");
    assert!(refund > 0, "{removed}");
    let funds_after = balance(&net);
    assert!(
        u128_of(&funds_after, "available") >= u128_of(&funds_before, "available") + refund,
        "refund {refund}: before {funds_before} after {funds_after}"
    );
    let sa = net.json(&["status", &ra, "--json"]);
    assert!(
        sa["pieces"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "removed"),
        "{sa}"
    );
    // rm again, or of a root that is not ours: one line
    assert_one_line_error(&net.crowd(&["rm", &ra]), "");
    assert_one_line_error(&net.crowd(&["rm", "not-a-cid"]), "");

    // b is proven after its old end, then expires; then every node is back
    // to its bytes before the puts
    // a deal is challenged only within its term: more proven epochs than
    // its original 12 means it was proven after the old end
    net.wait_status(&rb, "proofs past the old end", Duration::from_secs(120), |s| {
        s.iter().all(|p| u64_of(p, "proven_epochs") > 12)
    });
    net.wait_status(&rb, "file b expired", Duration::from_secs(120), |s| {
        s.iter().all(|p| p["state"] == "completed")
    });
    let start = Instant::now();
    loop {
        let now: Vec<(u64, u64)> = nodes(&net).iter().map(node_space).collect();
        if now == before {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "space not given back: before {before:?} now {now:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_ledger_verifies(&net);
}

/// Private by default: nothing a provider or the tracker keeps holds the
/// plaintext; the owner gets it back whole and by range (fetching only the
/// segments the range touches); a capability lets another home read it and
/// nothing else does; a key backup restores the owner in a fresh home.
#[test]
fn private_files_are_ciphertext_on_every_disk_shared_by_capability_and_restored_from_a_key_backup() {
    let net = Devnet::up(6, "1");
    // a distinctive 64-byte marker, repeated at odd offsets in random bytes
    let marker: Vec<u8> = (0..64u8)
        .map(|i| b"crowdstore-private-marker!"[i as usize % 26] ^ (i & 1))
        .collect();
    // big enough that a 1 MiB segment lies inside one 4 MiB data shard
    let len = 20 * (1 << 20) + 777_777;
    let mut data = random_bytes(len, 4242);
    let mut at = 13;
    while at + 64 < len {
        data[at..at + 64].copy_from_slice(&marker);
        at += 99_991;
    }
    let put = net.put("secret.bin", &data, &[]);
    let root = root_of(&put);
    assert_eq!(put["public"], false, "{put}");
    // the root printed is the plaintext's, as `crowd cid` computes it
    let cid = net.ok(&["cid", net.home().join("secret.bin").to_str().unwrap()]);
    assert_eq!(cid.trim(), root);
    // once every piece is sealed, providers hold their replicas, outboards and unsealed copies
    net.wait_status(&root, "every piece sealed", Duration::from_secs(120), |s| {
        s.len() == 6 && s.iter().all(|p| p["seal"] == "sealed" && p["state"] == "active")
    });

    // no file under any node's or the tracker's home holds the marker or a sampled window
    let samples: Vec<usize> = (0..1_000).map(|i| (i * 7_919 + 31) % (len - 64)).collect();
    let mut windows: std::collections::HashSet<&[u8]> = samples.iter().map(|&s| &data[s..s + 64]).collect();
    windows.insert(&marker);
    let prefixes: std::collections::HashSet<[u8; 8]> = windows
        .iter()
        .map(|w| <[u8; 8]>::try_from(&w[..8]).unwrap())
        .collect();
    let mut files = Vec::new();
    for p in net.processes() {
        files_under(Path::new(p["home"].as_str().unwrap()), &mut files);
    }
    let scanned: usize = files.iter().map(|(_, b)| b.len()).sum();
    assert!(
        scanned > 6 * len / 4,
        "the providers hold the pieces: {scanned} bytes scanned"
    );
    for (path, bytes) in &files {
        for w in bytes.windows(64) {
            let head: [u8; 8] = w[..8].try_into().unwrap();
            if prefixes.contains(&head) && windows.contains(w) {
                panic!("{} holds 64 bytes of the plaintext", path.display());
            }
        }
    }

    // the owner gets it back
    assert!(
        net.get(&root, "back.bin") == data,
        "the private file came back different"
    );
    // a range: exactly those bytes, and only the segments it touches are fetched
    let (a, b) = (5 * (1 << 20) + 5, 5 * (1 << 20) + 70_000);
    let out = net.home().join("range.bin");
    let before = bytes_served(&net);
    let got = net.json(&[
        "get",
        &root,
        "-o",
        out.to_str().unwrap(),
        "--range",
        &format!("{a}-{b}"),
        "--json",
    ]);
    let served = bytes_served(&net) - before;
    assert!(
        std::fs::read(&out).unwrap() == data[a..b],
        "the range came back different"
    );
    let fetched = got["fetched"].as_array().unwrap();
    let (fa, fb) = (fetched[0].as_u64().unwrap(), fetched[1].as_u64().unwrap());
    assert_eq!(
        (fa, fb),
        (5 * ((1 << 20) + 16), 6 * ((1 << 20) + 16)),
        "one encrypted segment: {got}"
    );
    // that segment's columns from k = 4 pieces (5 with the spare a get
    // starts), with the verification framing: far less than the 20 MiB file
    let bound = 5 * ((1 << 20) + 16) * 5 / 4;
    assert!(
        served > 0 && served < bound,
        "{served} bytes served for a {}-byte range (bound {bound})",
        b - a
    );

    // share: another home with its own key and no records reads it by capability
    let cap = net.ok(&["share", &root]);
    assert_eq!(cap.lines().count(), 1);
    let cap = cap.trim().to_string();
    assert!(cap.starts_with("crowd:") && !cap.contains(' '), "{cap}");
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(net.home().join("config.toml"), other.path().join("config.toml")).unwrap();
    let shared = other.path().join("shared.bin");
    let ok = crowd_at(other.path(), &["get", &cap, "-o", shared.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(
        std::fs::read(&shared).unwrap() == data,
        "the capability read another file"
    );
    // without it: one line, no output
    let refused = other.path().join("refused.bin");
    let r = refused.to_str().unwrap();
    assert_one_line_error(&crowd_at(other.path(), &["get", &root, "-o", r]), "capability");
    // by its ciphertext's root the network has the manifest, but its envelope is not this client's
    let network_root = std::fs::read_dir(net.home().join("files"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_slice::<Value>(&std::fs::read(p).unwrap()).unwrap())
        .find(|r| r["root"] == root.as_str())
        .map(|r| r["network_root"].as_str().unwrap().to_string())
        .unwrap();
    assert_ne!(network_root, root);
    assert_one_line_error(
        &crowd_at(other.path(), &["get", &network_root, "-o", r]),
        "capability",
    );
    // bad capabilities
    assert_one_line_error(
        &crowd_at(other.path(), &["get", &cap[..cap.len() - 9], "-o", r]),
        "capability",
    );
    assert_one_line_error(
        &crowd_at(other.path(), &["get", "crowd:0000", "-o", r]),
        "capability",
    );
    let second = net.put("second.bin", &random_bytes(70_000, 5), &[]);
    let cap2: crowd_client::Capability = net.ok(&["share", &root_of(&second)]).trim().parse().unwrap();
    let cap1: crowd_client::Capability = cap.parse().unwrap();
    let wrong_key = crowd_client::Capability {
        key: cap2.key.clone(),
        ..cap1.clone()
    };
    assert_one_line_error(
        &crowd_at(other.path(), &["get", &wrong_key.to_string(), "-o", r]),
        "does not open",
    );
    let wrong_manifest = crowd_client::Capability {
        manifest: cap2.manifest,
        ..cap1.clone()
    };
    assert_one_line_error(
        &crowd_at(other.path(), &["get", &wrong_manifest.to_string(), "-o", r]),
        "manifest",
    );
    assert!(!refused.exists(), "a refused get wrote its output");

    // public: the plain DAG, the same root as `crowd cid`, the same CAR as `crowd car`
    let plain = random_bytes(3 * (1 << 20) + 5, 6);
    let public = net.put("public.bin", &plain, &["--public"]);
    assert_eq!(public["public"], true);
    let public_root = root_of(&public);
    let p = net.home().join("public.bin");
    assert_eq!(net.ok(&["cid", p.to_str().unwrap()]).trim(), public_root);
    let (car_local, car_net) = (net.home().join("local.car"), net.home().join("net.car"));
    net.ok(&["car", p.to_str().unwrap(), "-o", car_local.to_str().unwrap()]);
    net.ok(&["export", &public_root, "-o", car_net.to_str().unwrap()]);
    assert!(std::fs::read(&car_local).unwrap() == std::fs::read(&car_net).unwrap());
    // and anyone reads it by its root
    let anyone = other.path().join("public.bin");
    let ok = crowd_at(
        other.path(),
        &["get", &public_root, "-o", anyone.to_str().unwrap()],
    );
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(std::fs::read(&anyone).unwrap() == plain);
    let listed = net.ok(&["ls", "--local"]);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&public_root) && l.contains("public")),
        "{listed}"
    );
    assert!(
        listed.lines().any(|l| l.contains(&root) && l.contains("private")),
        "{listed}"
    );

    // key backup: export, lose the home, import into a fresh one
    let backup = net.home().join("key.backup");
    let export = Command::new(bin("crowd"))
        .args([
            "--home",
            net.home().to_str().unwrap(),
            "key",
            "export",
            "-o",
            backup.to_str().unwrap(),
        ])
        .env("CROWD_PASSPHRASE", "correct horse battery")
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let text = std::fs::read_to_string(&backup).unwrap();
    assert!(!text.contains(&root), "the backup is sealed");
    for lost in ["files", "identity.key", "config.toml"] {
        let path = net.home().join(lost);
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
    }
    let fresh = tempfile::tempdir().unwrap();
    let import = |pass: &str| {
        Command::new(bin("crowd"))
            .args([
                "--home",
                fresh.path().to_str().unwrap(),
                "key",
                "import",
                backup.to_str().unwrap(),
            ])
            .env("CROWD_PASSPHRASE", pass)
            .output()
            .unwrap()
    };
    assert_one_line_error(&import("wrong horse"), "passphrase");
    let ok = import("correct horse battery");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let restored = crowd_at(fresh.path(), &["ls", "--json"]);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let restored: Value = serde_json::from_slice(&restored.stdout).unwrap();
    let roots: Vec<&str> = restored
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["root"].as_str().unwrap())
        .collect();
    for r in [root.as_str(), root_of(&second).as_str(), public_root.as_str()] {
        assert!(roots.contains(&r), "{r} not restored: {restored}");
    }
    let again = fresh.path().join("again.bin");
    let ok = crowd_at(fresh.path(), &["get", &root, "-o", again.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(
        std::fs::read(&again).unwrap() == data,
        "the restored home got another file"
    );
}

/// `client/examples/roundtrip.rs` (built by `cargo test`) against a devnet.
#[test]
fn the_library_example_stores_and_retrieves_a_file() {
    let net = Devnet::up(6, "1");
    let example = bin("crowd").parent().unwrap().join("examples").join("roundtrip");
    assert!(example.is_file(), "{} is not built", example.display());
    let out = Command::new(&example)
        .arg(net.home())
        .arg("2MiB")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("got it back whole"), "{stdout}");
    // the library recorded it in the home like `crowd put` does
    assert!(net.ok(&["ls", "--local"]).contains("private"));
}

/// Manifest hijack: another client (funded, nothing more) registers a
/// manifest of its own under the root of the first client's file: an empty
/// file's manifest, which needs no deals. Before, the first registrant of a
/// root kept it, so this front-run blocked the owner and made every `get`
/// fail. Now the tracker keeps both (one per client); a `get` of the root by
/// the hijacker itself is offered its forged manifest first, finds that it
/// does not make the root, and falls back to the real one.
#[test]
fn a_manifest_claiming_another_files_root_sits_beside_it_and_get_still_returns_the_file() {
    use crowd_protocol::libp2p::identity::Keypair;
    use crowd_protocol::{Blob, Network, NetworkConfig, Request, Response, TrackerRequest, TrackerResponse};

    let net = Devnet::up(6, "1");
    let data = random_bytes(300_000, 41);
    // a public file: its root is what the network knows it by
    let root = root_of(&net.put("real", &data, &["--public"]));

    // mallory: a second client of this network, funded by a transfer
    let mallory = tempfile::tempdir().unwrap();
    std::fs::copy(net.home().join("config.toml"), mallory.path().join("config.toml")).unwrap();
    let key_bytes = {
        let _ = crowd_at(mallory.path(), &["balance"]); // creates its identity
        std::fs::read(mallory.path().join("identity.key")).unwrap()
    };
    let key = Keypair::from_protobuf_encoding(&key_bytes).unwrap();
    let peer = key.public().to_peer_id().to_string();
    net.ok(&["transfer", &peer, "1000000000"]);

    // an empty file's manifest, relabelled with the real file's root
    let (tracker, tracker_addr) = tracker_of(&net);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let real_root: crowd_chunker::Cid = root.parse().unwrap();
    rt.block_on(async {
        let (n, _inbound) = Network::start(key.clone(), NetworkConfig::default())
            .await
            .unwrap();
        n.dial(tracker, vec![tracker_addr.clone()]).await.unwrap();
        let ask = |r: TrackerRequest| {
            let n = n.clone();
            async move {
                match n.request(tracker, Request::Tracker(r)).await.unwrap() {
                    Response::Tracker(t) => t,
                    other => panic!("{other:?}"),
                }
            }
        };
        let bytes = empty_manifest(real_root);
        match ask(TrackerRequest::RegisterManifest {
            root: real_root.to_bytes(),
            manifest: bytes.clone(),
            file: None,
        })
        .await
        {
            TrackerResponse::ManifestStored(_) => {}
            other => panic!("the forged manifest was not registered: {other:?}"),
        }
        // both are kept, the asker's own first
        let TrackerResponse::Manifests(both) = ask(TrackerRequest::Manifest {
            root: real_root.to_bytes(),
        })
        .await
        else {
            panic!()
        };
        let shown: Vec<_> = both
            .iter()
            .map(|b| crowd_protocol::Manifest::decode(&b.0).map(|m| (m.root, m.size)))
            .collect();
        assert_eq!(both.len(), 2, "{shown:?}");
        assert_eq!(both[0], Blob(bytes));
    });

    // the hijacker's own get is offered its forged manifest first, and still gets the real file
    let out_path = mallory.path().join("got");
    let out = crowd_at(mallory.path(), &["get", &root, "-o", out_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        std::fs::read(&out_path).unwrap() == data,
        "the hijacker's get returned other bytes"
    );
    // a range of it too: two manifests claim the root, so the range is cut
    // from the whole file, checked against the root (the forgery, an empty
    // file, first said the range was beyond its end)
    let range_path = mallory.path().join("range");
    let out = crowd_at(
        mallory.path(),
        &[
            "get",
            &root,
            "--range",
            "1000-201000",
            "-o",
            range_path.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        std::fs::read(&range_path).unwrap() == data[1000..201000],
        "the hijacker's range get returned other bytes"
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        shown["fetched"],
        serde_json::json!([0, data.len()]),
        "a contested range is fetched whole: {shown}"
    );
    // and the owner's, as before
    assert!(net.get(&root, "owner-got") == data);
}

/// The devnet's tracker: peer id and configured address (from the client
/// home's config.toml).
fn tracker_of(net: &Devnet) -> (crowd_protocol::libp2p::PeerId, crowd_protocol::libp2p::Multiaddr) {
    let config = std::fs::read_to_string(net.home().join("config.toml")).unwrap();
    let addr: crowd_protocol::libp2p::Multiaddr = config
        .lines()
        .find_map(|l| l.strip_prefix("tracker_address = "))
        .unwrap()
        .trim_matches('"')
        .parse()
        .unwrap();
    let Some(crowd_protocol::libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() else {
        panic!("no tracker peer id in {addr}")
    };
    (peer, addr)
}

/// An empty file's manifest (no pieces) claiming `root`.
fn empty_manifest(root: crowd_chunker::Cid) -> Vec<u8> {
    let (layout, _) = crowd_erasure::Encoder::new(crowd_erasure::Params::new(4, 2, 1 << 20).unwrap())
        .unwrap()
        .encode_bytes(&[])
        .unwrap();
    crowd_protocol::Manifest {
        version: crowd_protocol::MANIFEST_VERSION,
        root,
        size: 0,
        chunking: crowd_protocol::Chunking {
            chunker: "fixed".into(),
            chunk_size: 1 << 20,
            max_links: 174,
            hash: "blake3".into(),
        },
        layout,
        pieces: vec![],
        encryption: None,
    }
    .encode()
    .unwrap()
}

/// What one attack round saw, and when it ran.
#[derive(Debug, Default)]
struct Round {
    started: Option<Instant>,
    ended: Option<Instant>,
    /// Attack requests the node refused (as it must).
    refused: u64,
    /// Attack requests the node accepted (must stay 0).
    accepted: Vec<String>,
    /// Attack requests with no answer (a timeout or a lost stream).
    unanswered: u64,
}

/// The adversary suite (#14): one node of a 6-node devnet is attacked in
/// every way at once, and an honest client's put and get, which need that
/// node (4+2 pieces on 6 providers), still succeed; the node stays up and
/// inside its memory and disk bounds.
///
/// First, 1,000 connections: 1,000 TCP sockets that never start a handshake
/// (all but `max_pending_incoming` closed at once), then 1,200 libp2p
/// connections from 100 keys, 12 each (at most `max_connections_per_peer`
/// per key and `max_incoming_connections` in all are kept). Then, in rounds
/// that go on during the put and the get (checked: a whole round ran
/// between the put's start and the get's end): 16 funded-nothing keys each
/// propose deals with admissions they signed themselves; a proposal signed
/// for another network; garbage and oversized control frames; idle
/// transfer streams without a header; a `StoreManifest` from a key with no
/// piece there; a flood of DHT announcements. Every one must be refused,
/// none accepted.
#[test]
fn an_honest_put_and_get_succeed_while_one_node_is_attacked_every_way_at_once() {
    use crowd_protocol::libp2p::multiaddr::Protocol;
    use crowd_protocol::libp2p::{Multiaddr, PeerId};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let net = Devnet::up(6, "1");
    let target = nodes(&net).remove(0);
    let peer: PeerId = target["peer_id"].as_str().unwrap().parse().unwrap();
    let addrs: Vec<Multiaddr> = target["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let mut m: Multiaddr = a.as_str().unwrap().parse().unwrap();
            if matches!(m.iter().last(), Some(Protocol::P2p(_))) {
                m.pop();
            }
            m
        })
        .collect();
    let tcp: Vec<Multiaddr> = addrs
        .iter()
        .filter(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))))
        .cloned()
        .collect();
    let port = tcp[0]
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();
    let pid = target["pid"].as_u64().unwrap();
    let (tracker, tracker_addr) = tracker_of(&net);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let network = rt.block_on(async {
        let (n, _in) = crowd_protocol::Network::start(
            crowd_protocol::libp2p::identity::Keypair::generate_ed25519(),
            crowd_protocol::NetworkConfig::default(),
        )
        .await
        .unwrap();
        n.dial(tracker, vec![tracker_addr.clone()]).await.unwrap();
        match n
            .request(
                tracker,
                crowd_protocol::Request::Tracker(crowd_protocol::TrackerRequest::Info),
            )
            .await
            .unwrap()
        {
            crowd_protocol::Response::Tracker(crowd_protocol::TrackerResponse::Info(i)) => i.network,
            other => panic!("{other:?}"),
        }
    });

    // 1,000 sockets that never handshake, from another loopback address
    // (127.0.0.2): beyond the per-address pending bound (32, half the
    // node's 64) the node closes them at once ...
    let (held, flood) = rt.block_on(adversary::handshake_flood("127.0.0.2", port, 1000));
    assert!(
        (1..=32).contains(&held),
        "{held} of 1000 handshake-less sockets from one address still open after 3 s (bound 32)"
    );
    // ... and while they are held, a newcomer from another address is
    // served (with only the node-wide bound the flood held all 64 slots and
    // this connection was denied)
    let newcomer = rt.block_on(adversary::connect_once(tcp.clone(), peer));
    assert!(
        newcomer.is_ok(),
        "a newcomer was refused while one address flooded the handshakes: {newcomer:?}"
    );
    let still = rt.block_on(adversary::still_open(&flood));
    assert_eq!(
        still, held,
        "the flood's sockets closed before the newcomer was tried"
    );
    drop(flood);
    // one key, 30 connections: at most max_connections_per_peer (8) kept
    let one = rt.block_on(adversary::connection_flood(tcp.clone(), peer, 1, 30));
    assert!(
        (1..=8).contains(&one),
        "one key kept {one} of 30 connections (bound 8)"
    );
    // 1,200 libp2p connections from 100 keys on one address, all at once
    // (the pending bounds refuse many handshakes; what completes stays
    // within the per-address bound, 256, half of max_incoming_connections)
    let kept = rt.block_on(adversary::connection_flood(tcp.clone(), peer, 100, 12));
    assert!(
        kept <= 256,
        "{kept} connections kept from one address, above max_incoming_per_address (256)"
    );
    assert!(kept > 0, "no attacking connection was established at all");

    // the rounds, in the background
    let stop = Arc::new(AtomicBool::new(false));
    let rounds: Arc<Mutex<Vec<Round>>> = Arc::default();
    let attacker = {
        let (stop, rounds, addrs) = (stop.clone(), rounds.clone(), addrs.clone());
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(adversary::rounds(peer, addrs, network, stop, rounds))
        })
    };
    let finished = |rounds: &Arc<Mutex<Vec<Round>>>| {
        rounds
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.ended.is_some())
            .count()
    };
    let start = Instant::now();
    while finished(&rounds) < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no attack round finished in 120 s"
        );
        assert!(!attacker.is_finished(), "the attacker stopped early");
        std::thread::sleep(Duration::from_millis(200));
    }

    let data = random_bytes(3 << 20, 77);
    let put_started = Instant::now();
    let put = net.put("honest", &data, &[]);
    let root = root_of(&put);
    let providers = providers_of(&net.status(&root));
    assert!(
        providers.contains(&peer.to_string()),
        "the attacked node holds no piece of the honest file: {providers:?}"
    );
    assert!(
        net.get(&root, "honest-got") == data,
        "the honest get returned other bytes"
    );
    // keep attacking until a whole round ran inside the put and the get
    let during = |rounds: &Arc<Mutex<Vec<Round>>>, end: Instant| {
        rounds
            .lock()
            .unwrap()
            .iter()
            .any(|r| matches!((r.started, r.ended), (Some(s), Some(e)) if s >= put_started && e <= end))
    };
    let get_ended = Instant::now();
    if !during(&rounds, get_ended) {
        // a second get, still under attack
        let wait = Instant::now();
        loop {
            assert!(net.get(&root, "honest-again") == data);
            if during(&rounds, Instant::now()) {
                break;
            }
            assert!(
                wait.elapsed() < Duration::from_secs(180),
                "no attack round ran during the honest gets"
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    attacker.join().unwrap();

    let rounds = rounds.lock().unwrap();
    let accepted: Vec<&String> = rounds.iter().flat_map(|r| &r.accepted).collect();
    assert!(accepted.is_empty(), "the node accepted attacks: {accepted:?}");
    let refused: u64 = rounds.iter().map(|r| r.refused).sum();
    let unanswered: u64 = rounds.iter().map(|r| r.unanswered).sum();
    assert!(refused > 0, "no attack was answered at all");
    eprintln!(
        "adversary: {} rounds, {refused} attack requests refused, {unanswered} unanswered; {held} handshake-less sockets held, one key kept {one} connections, 100 keys kept {kept}",
        rounds.len()
    );

    // the node is up, inside its bounds
    let target = net.process(&peer.to_string());
    assert_eq!(target["alive"], true, "the attacked node died");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        peak_kib < 512 * 1024,
        "the attacked node's peak RSS was {peak_kib} KiB (bound 512 MiB)"
    );
    let (on_disk, reported) = node_space(&target);
    assert_eq!(on_disk, reported, "space accounting");
    let config =
        std::fs::read_to_string(PathBuf::from(target["home"].as_str().unwrap()).join("config.toml")).unwrap();
    let capacity: u64 = config
        .lines()
        .find_map(|l| l.strip_prefix("capacity_bytes = "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(
        on_disk <= capacity,
        "{on_disk} bytes on disk, capacity {capacity}"
    );
    // only the honest file's piece is stored there: no attack left bytes
    let pieces = PathBuf::from(target["home"].as_str().unwrap()).join("pieces");
    let stored = std::fs::read_dir(pieces)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .map(|e| !e.file_name().to_string_lossy().ends_with(".outboard"))
                .unwrap_or(false)
        })
        .count();
    assert!(
        stored <= 1,
        "{stored} pieces on the attacked node, the honest file has one there"
    );
}

/// The attacker's side of the adversary suite: raw sockets and swarms of its
/// own, on loopback.
mod adversary {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use crowd_protocol::libp2p::identity::Keypair;
    use crowd_protocol::libp2p::{Multiaddr, PeerId};
    use crowd_protocol::network::{CONTROL_PROTOCOL, PIECE_PROTOCOL};
    use crowd_protocol::{
        Admission, DealProposal, Network, NetworkConfig, NetworkId, PieceId, Request, Response, Signed,
    };
    use futures::{AsyncReadExt, AsyncWriteExt};

    use super::Round;

    /// Opens `n` TCP connections from `from` (a loopback address) to
    /// 127.0.0.1:`port` that never send a byte, waits 2 s, and returns how
    /// many the node still holds open, with the sockets (kept open).
    pub async fn handshake_flood(from: &str, port: u16, n: usize) -> (usize, Vec<tokio::net::TcpStream>) {
        let from: std::net::IpAddr = from.parse().unwrap();
        let mut socks = Vec::new();
        for _ in 0..n {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind((from, 0).into()).unwrap();
            let connect = socket.connect(([127, 0, 0, 1], port).into());
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), connect).await {
                socks.push(s);
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        (still_open(&socks).await, socks)
    }

    /// How many of `socks` the node has not closed.
    pub async fn still_open(socks: &[tokio::net::TcpStream]) -> usize {
        let mut open = 0;
        let mut buf = [0u8; 64];
        for s in socks {
            match s.try_read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open += 1,
                _ => {}
            }
        }
        open
    }

    /// A swarm of a new key that only connects (TCP), keeping idle
    /// connections for 60 s.
    fn bare_swarm() -> crowd_protocol::libp2p::Swarm<crowd_protocol::libp2p::swarm::dummy::Behaviour> {
        use crowd_protocol::libp2p::{noise, swarm::dummy, tcp, yamux, SwarmBuilder};
        SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
            .unwrap()
            .with_behaviour(|_| dummy::Behaviour)
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build()
    }

    /// A new key's one TCP connection to the node: `Ok` once it is
    /// established (within 5 s), else why not.
    pub async fn connect_once(tcp: Vec<Multiaddr>, node: PeerId) -> Result<(), String> {
        use crowd_protocol::libp2p::swarm::SwarmEvent;
        use futures::StreamExt;
        let mut swarm = bare_swarm();
        let opts = crowd_protocol::libp2p::swarm::dial_opts::DialOpts::peer_id(node)
            .addresses(tcp)
            .build();
        swarm.dial(opts).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline.into(), swarm.next()).await {
                Err(_) => return Err("not established within 5 s".into()),
                Ok(None) => return Err("the swarm ended".into()),
                Ok(Some(SwarmEvent::ConnectionEstablished { .. })) => return Ok(()),
                Ok(Some(SwarmEvent::OutgoingConnectionError { error, .. })) => return Err(error.to_string()),
                Ok(Some(_)) => {}
            }
        }
    }

    /// `keys` swarms, each dialling the node `per_key` times over TCP (each
    /// dial a new connection); after 5 s, the connections still up in all.
    pub async fn connection_flood(tcp: Vec<Multiaddr>, node: PeerId, keys: usize, per_key: usize) -> usize {
        use crowd_protocol::libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
        use futures::StreamExt;
        let mut tasks = Vec::new();
        for _ in 0..keys {
            let tcp = tcp.clone();
            tasks.push(tokio::spawn(async move {
                let mut swarm = bare_swarm();
                for _ in 0..per_key {
                    let opts = DialOpts::peer_id(node)
                        .addresses(tcp.clone())
                        .condition(PeerCondition::Always)
                        .build();
                    let _ = swarm.dial(opts);
                }
                let settle = Instant::now() + Duration::from_secs(5);
                while let Ok(Some(_)) = tokio::time::timeout_at(settle.into(), swarm.next()).await {}
                let up = swarm.network_info().connection_counters().num_established() as usize;
                (up, swarm)
            }));
        }
        let mut kept = 0;
        let mut swarms = Vec::new();
        for t in tasks {
            let (up, swarm) = t.await.unwrap();
            assert!(
                up <= 8,
                "one key kept {up} connections (max_connections_per_peer 8)"
            );
            kept += up;
            swarms.push(swarm);
        }
        drop(swarms);
        kept
    }

    fn forged_proposal(key: &Keypair, node: PeerId, network: &NetworkId, nonce: u64) -> Request {
        let client = key.public().to_peer_id();
        let proposal = DealProposal {
            piece: PieceId(*blake3::hash(&nonce.to_le_bytes()).as_bytes()),
            piece_size: 1 << 20,
            client,
            provider: node,
            price_per_epoch: 1 << 40,
            start_epoch: 1_000,
            duration_epochs: 100,
            provider_collateral: 0,
            expiry_epoch: 999,
            nonce,
        };
        let signed = Signed::sign(key, network, &proposal).unwrap();
        // the attacker's own signature on its admission: not the tracker's
        let admission = Signed::sign(
            key,
            network,
            &Admission {
                proposal: signed.id(),
                client,
                escrow: 1 << 50,
                until_epoch: u64::MAX,
            },
        )
        .unwrap();
        Request::ProposeDeal {
            proposal: signed,
            admission,
        }
    }

    /// Counts `answer`: a refusal whose reason names `because` is what the
    /// node must answer; anything else it answered is recorded as accepted.
    fn judge(round: &mut Round, what: &str, because: &str, answer: Result<Response, String>) {
        match answer {
            Ok(Response::DealRejected { reason }) | Ok(Response::Error { message: reason })
                if reason.contains(because) =>
            {
                round.refused += 1
            }
            Ok(other) => round.accepted.push(format!("{what}: {other:?}")),
            Err(_) => round.unanswered += 1,
        }
    }

    /// Attack rounds until `stop`; each round is recorded with its times.
    pub async fn rounds(
        node: PeerId,
        addrs: Vec<Multiaddr>,
        network: NetworkId,
        stop: Arc<AtomicBool>,
        rounds: Arc<Mutex<Vec<Round>>>,
    ) {
        let keys: Vec<Keypair> = (0..16).map(|_| Keypair::generate_ed25519()).collect();
        let mut strangers = Vec::new();
        for key in &keys {
            let (net, _in) = Network::start(
                key.clone(),
                NetworkConfig {
                    request_timeout: Duration::from_secs(20),
                    ..NetworkConfig::default()
                },
            )
            .await
            .unwrap();
            net.dial(node, addrs.clone()).await.unwrap();
            strangers.push(net);
        }
        let manifest = super::empty_manifest(crowd_protocol::manifest_cid(b"no such file"));
        let mut nonce = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let mut round = Round {
                started: Some(Instant::now()),
                ..Round::default()
            };
            // idle transfer streams, no header, held for the round
            let mut control = strangers[0].streams();
            let mut idle = Vec::new();
            for _ in 0..8 {
                if let Ok(Ok(mut s)) =
                    tokio::time::timeout(Duration::from_secs(10), control.open_stream(node, PIECE_PROTOCOL))
                        .await
                {
                    let _ = s.flush().await;
                    idle.push(s);
                }
            }
            // proposals from keys with nothing locked, admissions self-signed
            let mut asks = Vec::new();
            for (net, key) in strangers.iter().zip(&keys) {
                for _ in 0..2 {
                    nonce += 1;
                    let req = forged_proposal(key, node, &network, nonce);
                    let net = net.clone();
                    asks.push(async move { net.request(node, req).await });
                }
            }
            for answer in futures::future::join_all(asks).await {
                judge(
                    &mut round,
                    "a self-signed admission",
                    "admission",
                    answer.map_err(|e| e.to_string()),
                );
            }
            // a signature from another network
            nonce += 1;
            let other = NetworkId([0xee; 32]);
            let req = forged_proposal(&keys[1], node, &other, nonce);
            let answer = strangers[1].request(node, req).await.map_err(|e| e.to_string());
            judge(&mut round, "another network's signature", "network", answer);
            // a manifest from a key with no piece here
            let answer = strangers[2]
                .request(node, Request::StoreManifest(manifest.clone()))
                .await
                .map_err(|e| e.to_string());
            judge(&mut round, "a stranger's manifest", "piece stored here", answer);
            // garbage, and a frame claiming 4 GiB
            for bytes in [
                &b"\x00\x00\x00\x05garbage"[..],
                &[0xff, 0xff, 0xff, 0xff, 1, 2, 3][..],
            ] {
                let answer = async {
                    let mut s = strangers[3]
                        .streams()
                        .open_stream(node, CONTROL_PROTOCOL)
                        .await
                        .map_err(|e| e.to_string())?;
                    s.write_all(bytes).await.map_err(|e| e.to_string())?;
                    s.close().await.map_err(|e| e.to_string())?;
                    let mut out = Vec::new();
                    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())?;
                    if out.len() < 4 {
                        return Err("stream closed without an answer".to_string());
                    }
                    crowd_protocol::wire::from_cbor::<Response>("response", &out[4..])
                        .map_err(|e| e.to_string())
                }
                .await;
                match answer {
                    Ok(r) => judge(&mut round, "a garbage frame", "", Ok(r)),
                    // dropping the stream is a refusal too
                    Err(_) => round.refused += 1,
                }
            }
            // a DHT flood
            let flood = (0..200u64).map(|i| {
                let net = strangers[4].clone();
                let key = blake3::hash(format!("{nonce}/{i}").as_bytes())
                    .as_bytes()
                    .to_vec();
                async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), net.provide(key)).await;
                }
            });
            futures::future::join_all(flood).await;
            drop(idle);
            round.ended = Some(Instant::now());
            rounds.lock().unwrap().push(round);
        }
    }
}

/// `GET path` at `addr` (HTTP/1.0): status code and body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The figures a dashboard shows, as its JSON API has them: `data-key` →
/// the exact value. Node: see `crowd_node::dashboard`; tracker:
/// `crowd_tracker::service::dashboard`.
fn node_figures(api: &Value) -> Vec<(String, String)> {
    let mut out = vec![
        ("epoch".to_string(), api["epoch"].to_string()),
        ("deals".into(), api["deals"].as_array().unwrap().len().to_string()),
        (
            "seals_queued".into(),
            api["sealing"]["queued"].as_array().unwrap().len().to_string(),
        ),
        ("seals_running".into(), api["sealing"]["running"].to_string()),
        ("seals_done".into(), api["sealing"]["sealed"].to_string()),
        ("seals_failed".into(), api["sealing"]["failed"].to_string()),
    ];
    for k in [
        "capacity_bytes",
        "used_bytes",
        "pieces_bytes",
        "replicas_bytes",
        "outboards_bytes",
        "reserved_bytes",
        "free_bytes",
    ] {
        out.push((k.into(), api["space"][k].to_string()));
    }
    for k in ["earned", "available", "locked_collateral", "staked"] {
        out.push((k.into(), api["earnings"][k].to_string()));
    }
    for (k, v) in [
        ("repairs_running", "running"),
        ("repairs_done", "done"),
        ("repairs_failed", "failed"),
    ] {
        out.push((k.into(), api["repairs"][v].to_string()));
    }
    for k in ["received_bytes", "served_bytes"] {
        out.push((k.into(), api["bandwidth"][k].to_string()));
    }
    for d in api["deals"].as_array().unwrap() {
        let id = d["id"].to_string();
        out.push((format!("deal.{id}.id"), id.clone()));
        out.push((format!("deal.{id}.piece_bytes"), d["piece_bytes"].to_string()));
        for k in ["proven_epochs", "faulted_epochs", "paid", "collateral"] {
            out.push((format!("deal.{id}.{k}"), d["ledger"][k].to_string()));
        }
    }
    out
}

fn tracker_figures(api: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = [
        "epoch",
        "epoch_millis",
        "log_len",
        "proven_epochs",
        "faulted_epochs",
        "terminated_deals",
        "archived_deals",
        "files",
    ]
    .iter()
    .map(|k| (k.to_string(), api[*k].to_string()))
    .collect();
    out.push(("proofs_proven".into(), api["proofs"]["proven"].to_string()));
    out.push((
        "proofs_challenged".into(),
        api["proofs"]["challenged"].to_string(),
    ));
    for k in [
        "minted",
        "available",
        "locked_escrow",
        "locked_collateral",
        "staked",
        "burned",
        "withdrawn",
    ] {
        out.push((k.into(), api["totals"][k].to_string()));
    }
    for k in ["queued", "running", "done", "failed"] {
        out.push((format!("repairs_{k}"), api["repairs"][k].to_string()));
    }
    let deals = api["deals"].as_object().unwrap();
    let live: u64 = ["published", "pre-committed", "active"]
        .iter()
        .filter_map(|s| deals.get(*s).and_then(Value::as_u64))
        .sum();
    out.push(("deals_live".into(), live.to_string()));
    out.push(("providers_total".into(), api["providers_total"].to_string()));
    for (state, n) in deals {
        out.push((format!("deals.{state}"), n.to_string()));
    }
    for p in api["providers"].as_array().unwrap() {
        let peer = p["peer"].as_str().unwrap();
        for k in [
            "capacity",
            "used",
            "price_per_gib_epoch",
            "collateral_per_gib",
            "staked",
            "live_deals",
            "proven_epochs",
            "faulted_epochs",
            "terminated_deals",
            "score",
        ] {
            out.push((format!("provider.{peer}.{k}"), p[k].to_string()));
        }
    }
    out
}

/// Every figure on the page is the API's, and the page shows no other but
/// the clock's (`clock`: uptime, time left in the epoch), which move between
/// the page and the API: those must be no later on the page.
fn assert_page_is_the_api(name: &str, page: &Value, expect: Vec<(String, String)>, clock: (&str, &Value)) {
    let shown = page["values"].as_object().unwrap();
    let (key, api_value) = clock;
    let on_page: u64 = shown[key].as_str().unwrap().parse().unwrap();
    let in_api = api_value.as_u64().unwrap();
    match key {
        "uptime_secs" => assert!(
            on_page <= in_api,
            "{name}: uptime {on_page} on the page, {in_api} after"
        ),
        _ => assert!(
            on_page >= in_api,
            "{name}: {key} {on_page} on the page, {in_api} after"
        ),
    }
    let mut expect = expect;
    expect.push((key.to_string(), on_page.to_string()));
    for (k, v) in &expect {
        assert_eq!(
            shown.get(k).and_then(Value::as_str),
            Some(v.as_str()),
            "{name}: figure {k} on the page differs from the API's {v}"
        );
    }
    let known: std::collections::HashSet<&str> = expect.iter().map(|(k, _)| k.as_str()).collect();
    let extra: Vec<&String> = shown.keys().filter(|k| !known.contains(k.as_str())).collect();
    assert!(
        extra.is_empty(),
        "{name}: figures on the page the API does not have: {extra:?}"
    );
}

/// Both dashboards on a devnet that stored a file, opened in Debian's
/// headless Chromium: no console errors; every figure equals the JSON API's
/// of the same moment; the node's deals equal the ledger's as the client
/// sees them, the network's supply equals the ledger replayed to the page's
/// log position; refresh works without a reload; a phone's width does not
/// scroll sideways; screenshots land under the target directory. The API
/// is also checked directly: bad paths get 404, bad queries 400, nothing
/// panics.
#[test]
fn dashboards_show_the_ledger_in_a_real_browser() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir() && Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Debian's chromium and tests/browser's npm packages: run scripts/setup"
    );
    let net = Devnet::up(6, "2");
    let put = net.put("dash.bin", &random_bytes(3 << 20, 17), &[]);
    let root = root_of(&put);
    let status = net.wait_status(&root, "every deal proven twice", Duration::from_secs(180), |s| {
        s.iter()
            .all(|p| p["state"] == "active" && u64_of(p, "proven_epochs") >= 2)
    });
    let procs = net.processes();
    let tracker = procs.iter().find(|p| p["role"] == "tracker").unwrap();
    let taddr = tracker["metrics"].as_str().unwrap();
    // the node holding piece 0
    let provider = status[0]["provider"].as_str().unwrap();
    let node = procs.iter().find(|p| p["peer_id"] == provider).unwrap();
    let naddr = node["metrics"].as_str().unwrap();
    assert_eq!(node["dashboard"], format!("http://{naddr}/"));

    // the API directly, and bad requests
    let (code, body) = http_get(naddr, "/api/v1/node");
    assert_eq!(code, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["peer_id"], provider);
    assert!(api["tracker_answered"].as_bool().unwrap());
    let (code, deals) = http_get(naddr, "/api/v1/deals");
    assert_eq!(code, 200);
    assert!(!serde_json::from_str::<Value>(&deals)
        .unwrap()
        .as_array()
        .unwrap()
        .is_empty());
    let (code, providers) = http_get(taddr, "/api/v1/providers");
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&providers)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        6
    );
    for addr in [naddr, taddr] {
        for path in ["/nope", "/api/v1/nope", "/api/v2/node", "/..%2f..%2fetc/passwd"] {
            let (code, body) = http_get(addr, path);
            assert_eq!((code, body.as_str()), (404, "not found\n"), "{addr}{path}");
        }
        for query in ["/?part=nope", "/?part=%ZZ%0a", "/?part=live&part=x"] {
            let (code, body) = http_get(addr, query);
            assert_eq!(code, 400, "{addr}{query}: {body}");
            assert_eq!(body.lines().count(), 1, "{body}");
        }
        assert!(http_get(addr, "/metrics").1.contains("# TYPE"));
    }

    // the browser
    let shots = bin("crowd").parent().unwrap().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .current_dir(&browser_dir)
        .arg("dashboards.mjs")
        .arg(&shots)
        .arg(format!("node=http://{naddr}/,/api/v1/node,epoch"))
        .arg(format!("network=http://{taddr}/,/api/v1/network,log_len"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "browser: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for name in ["node", "network"] {
        let page = &report[name];
        assert_eq!(
            page["consoleErrors"],
            serde_json::json!([]),
            "{name}: console errors"
        );
        assert!(
            page["matched"].as_bool().unwrap(),
            "{name}: page and API never of one moment: {page}"
        );
        assert!(
            page["refreshed"].as_bool().unwrap(),
            "{name}: refresh reloaded the page"
        );
        assert!(
            page["figuresAfterRefresh"].as_u64().unwrap() > 10,
            "{name}: refresh emptied the page"
        );
        assert_eq!(
            page["phoneOverflow"], false,
            "{name}: a phone's width scrolls sideways"
        );
        assert_eq!(
            page["unlabelledCharts"], 0,
            "{name}: a chart without a text alternative"
        );
        for file in [format!("{name}.png"), format!("{name}-phone.png")] {
            assert!(
                std::fs::metadata(shots.join(&file)).unwrap().len() > 10_000,
                "{file}"
            );
        }
    }
    let node_api: Value = serde_json::from_str(report["node"]["api"].as_str().unwrap()).unwrap();
    assert_page_is_the_api(
        "node",
        &report["node"],
        node_figures(&node_api),
        ("uptime_secs", &node_api["uptime_secs"]),
    );
    let net_api: Value = serde_json::from_str(report["network"]["api"].as_str().unwrap()).unwrap();
    assert_page_is_the_api(
        "network",
        &report["network"],
        tracker_figures(&net_api),
        ("epoch_ends_in_millis", &net_api["epoch_ends_in_millis"]),
    );

    // the node's deal for piece 0 is the ledger's, as the client sees it
    // (the client asks later: its figures can only have grown)
    let deal = node_api["deals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"].as_u64() == status[0]["deal_id"].as_u64())
        .unwrap_or_else(|| panic!("deal {} not on the node's page", status[0]["deal_id"]));
    let later = net.status(&root);
    let proven = |v: &Value| u64_of(v, "proven_epochs");
    assert!(proven(&deal["ledger"]) >= 2 && proven(&deal["ledger"]) <= proven(&later[0]));
    assert_eq!(
        deal["ledger"]["client"],
        net.json(&["balance", "--json"])["account"]
    );
    // the network's money is the ledger's at the page's log position
    let verify = Command::new(bin("crowd-tracker"))
        .args([
            "ledger",
            "verify",
            "--json",
            "--home",
            tracker["home"].as_str().unwrap(),
        ])
        .arg("--upto")
        .arg(net_api["log_len"].to_string())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let ledger: Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(
        ledger["totals"], net_api["totals"],
        "the page's supply is not the ledger's"
    );
    assert_eq!(ledger["head"], net_api["head"]);
    let t = &net_api["totals"];
    let sum: u128 = [
        "available",
        "locked_escrow",
        "locked_collateral",
        "staked",
        "burned",
        "withdrawn",
    ]
    .iter()
    .map(|k| u128_of(t, k))
    .sum();
    assert_eq!(sum, u128_of(t, "minted"), "supply not conserved on the page: {t}");
    assert!(u64_of(&net_api["proofs"], "challenged") >= 6 && u64_of(&net_api, "proven_epochs") >= 12);
}
