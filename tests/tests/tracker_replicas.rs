//! `crowd-tracker run` on a replica set (issue #15, in progress): three real
//! tracker processes, one Raft log. Writes go to the leader (a follower
//! answers with the leader's id), epochs are ended by the leader only; the
//! leader is SIGKILLed in the middle of an epoch (checked): a new leader is
//! elected, epochs go on, a write and a read issued during the failover
//! succeed; the killed replica restarts and catches up; every replica's
//! `ledger verify` passes with the same head at the same log position, and
//! supply is what was minted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crowd_protocol::{DealView, TrackerRequest, TrackerResponse};
use crowd_tests::{
    eventually, node_for_replicas, random_bytes, seeded_key, tracker_replicas, Client, Daemon, NodeOptions,
    Terms,
};

const WAIT: Duration = Duration::from_secs(60);
const EPOCH_SECS: f64 = 1.0;

/// Sends a write to each replica in turn until the leader commits it;
/// returns the leader's index and its answer.
async fn write(clients: &[Option<Client>], request: TrackerRequest) -> (usize, TrackerResponse) {
    eventually(WAIT, "a leader commits the write", || {
        let request = request.clone();
        async move {
            for (i, c) in clients.iter().enumerate() {
                let Some(c) = c else { continue };
                match c.ask(request.clone()).await {
                    Ok(r) => return Some((i, r)),
                    Err(e) if e.contains("not the leader") || e.contains("could not commit") => {}
                    Err(e) => panic!("replica {}: {e}", i + 1),
                }
            }
            None
        }
    })
    .await
}

fn verify(d: &Daemon, upto: Option<u64>) -> serde_json::Value {
    let upto = upto.map(|n| n.to_string());
    let mut args = vec!["ledger", "verify", "--json"];
    if let Some(n) = &upto {
        args.extend(["--upto", n]);
    }
    let out = d.exec(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One client per replica, all with `key`'s identity.
async fn clients_for(replicas: &[Daemon], seed: u8) -> Vec<Option<Client>> {
    let key = seeded_key(seed);
    let mut clients = Vec::new();
    for d in replicas {
        clients.push(Some(Client::start(d, key.clone()).await));
    }
    clients
}

/// Waits until `lead`'s replica is in the middle of an epoch (on its clock)
/// and returns that epoch.
async fn mid_epoch(lead: &Client) -> u64 {
    eventually(WAIT, "the middle of an epoch", || async {
        let i = lead.info().await;
        let left = i.epoch_ends_in_millis as f64 / i.epoch_millis.max(1) as f64;
        (0.3..0.7).contains(&left).then_some(i.epoch)
    })
    .await
}

/// Waits until `restarted` has at least the entries `reference` has now,
/// and returns the replicas' `ledger verify` reports at that position.
async fn caught_up(replicas: &[Daemon], restarted: usize, reference: usize) -> Vec<serde_json::Value> {
    let target = verify(&replicas[reference], None)["entries"].as_u64().unwrap();
    eventually(WAIT, "the restarted replica catches up", || async {
        (verify(&replicas[restarted], None)["entries"].as_u64().unwrap() >= target).then_some(())
    })
    .await;
    replicas.iter().map(|d| verify(d, Some(target))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_survives_its_leader_killed_mid_epoch() {
    let mut replicas = tracker_replicas(3, EPOCH_SECS);
    let mut clients = clients_for(&replicas, 90).await;
    let me = clients[0].as_ref().unwrap().peer();
    let faucet = |amount| TrackerRequest::Faucet { account: me, amount };
    let (leader, r) = write(&clients, faucet(1_000)).await;
    assert!(matches!(r, TrackerResponse::Minted { .. }), "{r:?}");
    // a follower refuses writes, naming the leader
    let follower = (leader + 1) % 3;
    let refused = clients[follower]
        .as_ref()
        .unwrap()
        .ask(faucet(1))
        .await
        .unwrap_err();
    assert!(
        refused.contains(&format!("tracker replica {} leads", leader + 1)),
        "{refused}"
    );

    // balances are read on the leader (linearizable): a follower names it
    let read = clients[follower]
        .as_ref()
        .unwrap()
        .ask(TrackerRequest::Account(me))
        .await
        .unwrap_err();
    assert!(
        read.contains(&format!("tracker replica {} leads", leader + 1)),
        "{read}"
    );
    // epochs advance under the leader
    let lead = clients[leader].as_ref().unwrap();
    let start = lead.info().await.epoch;
    eventually(WAIT, "two epochs settle", || async {
        (lead.info().await.epoch >= start + 2).then_some(())
    })
    .await;

    // SIGKILL the leader in the middle of an epoch (checked on its clock)
    let killed_in = mid_epoch(lead).await;
    replicas[leader].kill();
    clients[leader] = None;

    // a write and a read issued during the failover succeed
    let (new_leader, r) = write(&clients, faucet(2_000)).await;
    assert_ne!(new_leader, leader);
    assert!(matches!(r, TrackerResponse::Minted { .. }), "{r:?}");
    let survivor = clients[new_leader].as_ref().unwrap();
    assert_eq!(survivor.account(me).await.available, 3_000);
    // epochs go on under the new leader
    eventually(WAIT, "epochs go on", || async {
        (survivor.info().await.epoch >= killed_in + 2).then_some(())
    })
    .await;

    // the killed replica restarts on its disk and catches up
    replicas[leader].start();
    // every replica's ledger verifies, with the same head at one position
    let heads = caught_up(&replicas, leader, new_leader).await;
    for h in &heads {
        assert_eq!(h["head"], heads[0]["head"], "{heads:?}");
        assert_eq!(h["epoch"], heads[0]["epoch"]);
        assert_eq!(h["totals"], heads[0]["totals"]);
    }
    // supply is what was minted, all of it in the one account
    assert_eq!(heads[0]["totals"]["minted"], serde_json::json!(3_000));
    assert_eq!(heads[0]["totals"]["available"], serde_json::json!(3_000));
    // no epoch skipped or settled twice: the ledger refuses both, and the
    // epoch at that position is one past the last settled
    assert!(heads[0]["epoch"].as_u64().unwrap() > killed_in);
}

/// The leader SIGSTOPped for 20 epochs (its sockets open, answering
/// nothing): the others elect a new leader and settle the epochs; resumed,
/// the old leader's stale term is refused, it follows, and it catches up to
/// the same head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_paused_for_20_epochs_catches_up_to_the_same_head() {
    let mut replicas = tracker_replicas(3, EPOCH_SECS);
    let mut clients = clients_for(&replicas, 91).await;
    let me = clients[0].as_ref().unwrap().peer();
    let (leader, _) = write(
        &clients,
        TrackerRequest::Faucet {
            account: me,
            amount: 5,
        },
    )
    .await;
    replicas[leader].pause();
    let paused = clients[leader].take();
    let (new_leader, _) = write(
        &clients,
        TrackerRequest::Faucet {
            account: me,
            amount: 7,
        },
    )
    .await;
    let survivor = clients[new_leader].as_ref().unwrap();
    let from = survivor.info().await.epoch;
    eventually(
        Duration::from_secs(120),
        "20 epochs settle without it",
        || async { (survivor.info().await.epoch >= from + 20).then_some(()) },
    )
    .await;
    replicas[leader].resume();
    let heads = caught_up(&replicas, leader, new_leader).await;
    for h in &heads {
        assert_eq!(h["head"], heads[0]["head"], "{heads:?}");
    }
    assert!(heads[0]["epoch"].as_u64().unwrap() >= from + 20);
    // it follows the new leader: a write sent to it is refused, naming that leader
    let paused = paused.unwrap();
    // (its connection may have timed out while it was stopped)
    paused.connect(&replicas[leader]).await;
    let refused = paused
        .ask(TrackerRequest::Faucet {
            account: me,
            amount: 1,
        })
        .await
        .unwrap_err();
    assert!(refused.contains("not the leader"), "{refused}");
}

const FUNDS: u128 = 1_000_000_000;
const PRICE: u128 = 1_000;
const COLLATERAL: u128 = 1_000_000;

/// Waits until `f` holds for the deal as `client`'s replica sees it.
async fn wait_deal(client: &Client, id: u64, what: &str, f: impl Fn(&DealView) -> bool) -> DealView {
    eventually(Duration::from_secs(120), what, || async {
        let d = client.deal(id).await;
        assert_ne!(d.state, "cancelled", "deal {id}: {d:?}");
        f(&d).then_some(d)
    })
    .await
}

/// A storage node configured with the replica set: it registers through
/// the leader, takes tickets, seeds and challenges from whichever replica
/// leads, and is paid every epoch of a deal across the leader's SIGKILL in
/// the middle of an epoch — no epoch skipped, none paid twice, no fault —
/// and every replica's ledger agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_is_paid_every_epoch_across_a_leader_killed_mid_deal() {
    let mut replicas = tracker_replicas(3, EPOCH_SECS);
    let n = node_for_replicas(
        &replicas,
        NodeOptions {
            key_seed: None,
            config: "max_collateral_per_gib = 1000000000000000".into(),
        },
    );
    let mut clients = clients_for(&replicas, 92).await;
    let me = clients[0].as_ref().unwrap().peer();
    let (leader, _) = write(
        &clients,
        TrackerRequest::Faucet {
            account: me,
            amount: FUNDS,
        },
    )
    .await;
    write(
        &clients,
        TrackerRequest::Faucet {
            account: n.peer,
            amount: FUNDS,
        },
    )
    .await;
    let lead = clients[leader].as_ref().unwrap();
    eventually(WAIT, "the node registered through the leader", || async {
        lead.providers()
            .await
            .iter()
            .any(|p| p.peer == n.peer)
            .then_some(())
    })
    .await;
    let duration = 6;
    let start = lead.info().await.epoch + 8;
    let terms = Terms {
        price_per_epoch: PRICE,
        start_epoch: start,
        duration_epochs: duration,
        provider_collateral: COLLATERAL,
        expiry_epoch: start,
        nonce: 1,
    };
    let id = lead.store(&n, &random_bytes(16 * 1024, 92), terms).await;
    wait_deal(lead, id, "proven twice", |d| d.proven_epochs >= 2).await;

    // SIGKILL the leader in the middle of an epoch of the deal
    mid_epoch(lead).await;
    replicas[leader].kill();
    clients[leader] = None;
    let (new_leader, _) = write(
        &clients,
        TrackerRequest::Faucet {
            account: me,
            amount: 1,
        },
    )
    .await;
    let survivor = clients[new_leader].as_ref().unwrap();

    let done = wait_deal(survivor, id, "deal completed", |d| d.state == "completed").await;
    assert_eq!(
        (done.proven_epochs, done.faulted_epochs),
        (duration, 0),
        "{done:?}"
    );
    for (i, r) in done.history.iter().enumerate() {
        assert_eq!(r.epoch, start + i as u64, "{:?}", done.history);
        assert!(r.proven, "{:?}", done.history);
    }
    assert_eq!(done.paid, PRICE * u128::from(duration));

    // the killed replica restarts and every replica's ledger agrees
    replicas[leader].start();
    let heads = caught_up(&replicas, leader, new_leader).await;
    for h in &heads {
        assert_eq!(
            (&h["head"], &h["totals"]),
            (&heads[0]["head"], &heads[0]["totals"]),
            "{heads:?}"
        );
    }
}

/// `crowd ledger verify` asks every replica to replay its log and sign its
/// head: all agree; then one replica's log is damaged on disk while it is
/// stopped (an early entry deleted: it still starts, from its snapshot, and
/// follows), and the audit names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_verify_names_a_replica_whose_log_was_tampered_with() {
    use crowd_tracker::service::store::{keys, Batch};
    use crowd_tracker::service::{RocksStore, Store};
    let mut replicas = tracker_replicas(3, 0.25);
    let clients = clients_for(&replicas, 93).await;
    let me = clients[0].as_ref().unwrap().peer();
    let (leader, _) = write(
        &clients,
        TrackerRequest::Faucet {
            account: me,
            amount: 9,
        },
    )
    .await;
    // past epoch 32: every replica has written a snapshot
    let lead = clients[leader].as_ref().unwrap();
    eventually(WAIT, "34 epochs", || async {
        (lead.info().await.epoch >= 34).then_some(())
    })
    .await;

    let home = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = replicas.iter().map(|r| r.tcp_addr().to_string()).collect();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "tracker_address = {:?}\ntracker_peer_id = \"{}\"\ntracker_replicas = {addrs:?}\n",
            addrs[0],
            crowd_tests::signing_peer(&replicas[0])
        ),
    )
    .unwrap();
    let audit = || {
        std::process::Command::new(crowd_tests::bin("crowd"))
            .arg("--home")
            .arg(home.path())
            .args(["ledger", "verify"])
            .output()
            .unwrap()
    };
    let out = audit();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("the same on 3 tracker replica(s)"), "{stdout}");
    // the log was also downloaded and replayed by the command itself
    assert!(stdout.contains("replayed here from 12D3"), "{stdout}");

    // damage a follower's log on disk while it is stopped
    let victim = (leader + 1) % 3;
    replicas[victim].kill();
    {
        let store = RocksStore::open(&replicas[victim].path("db")).unwrap();
        let mut batch = Batch::default();
        batch.delete(keys::log(1));
        store.write(batch).unwrap();
    }
    replicas[victim].start();
    let out = audit();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a tampered replica passed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let named = replicas[victim].peer.to_string();
    assert!(
        stderr.contains(&named) && stderr.contains("does not verify"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // the others are not named
    for (i, r) in replicas.iter().enumerate() {
        if i != victim {
            assert!(!stderr.contains(&r.peer.to_string()), "{stderr}");
        }
    }
}

/// `crowd-tracker replica list --json` from `d`'s home.
fn replica_set(d: &Daemon) -> crowd_protocol::ReplicaSetView {
    let out = d.exec(&["replica", "list", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn voters(view: &crowd_protocol::ReplicaSetView) -> Vec<u64> {
    view.members.iter().filter(|m| m.voter).map(|m| m.id).collect()
}

/// Membership changes are commands: a fourth replica is added to a running
/// set (it catches up, then votes), a dead one is removed, and then a write
/// commits with two of the three original replicas gone — only because the
/// new one counts. A change not signed with the tracker key, or made against
/// a membership no longer in force, is refused with one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_added_and_removed_by_command() {
    use crowd_protocol::{MembershipChange, ReplicaChange, Signed};
    use crowd_tests::{configure_replica, free_port, replica_home, replica_line};
    let mut replicas = tracker_replicas(3, EPOCH_SECS);
    let mut clients = clients_for(&replicas, 94).await;
    let me = clients[0].as_ref().unwrap().peer();
    let faucet = |amount| TrackerRequest::Faucet { account: me, amount };
    let (leader, _) = write(&clients, faucet(5)).await;
    let before = replica_set(&replicas[0]);
    assert_eq!(voters(&before), vec![1, 2, 3]);
    assert_eq!(before.leader, Some(leader as u64 + 1));

    // a fourth replica: the tracker key, its own identity, the set plus itself
    let tracker_key = crowd_protocol::libp2p::identity::Keypair::from_protobuf_encoding(
        &std::fs::read(replicas[0].path("identity.key")).unwrap(),
    )
    .unwrap();
    let (mut fourth, peer) = replica_home(&tracker_key, EPOCH_SECS);
    let port = free_port();
    let mut list: Vec<String> = replicas
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let port = r.tcp_addr().iter().find_map(|p| match p {
                crowd_protocol::libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
                _ => None,
            });
            replica_line(i as u64 + 1, &replicas[i].peer.to_string(), port.unwrap())
        })
        .collect();
    list.push(replica_line(4, &peer, port));
    configure_replica(&fourth, port, 4, &list);
    fourth.start();
    let addr = format!("/ip4/127.0.0.1/tcp/{port}");
    let out = replicas[0].exec(&["replica", "add", "4", &peer, &addr]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("replica 4 voter"), "{stdout}");
    let added = replica_set(&replicas[1]);
    assert_eq!(voters(&added), vec![1, 2, 3, 4]);
    // it holds the same ledger as the others
    let target = verify(&replicas[leader], None)["entries"].as_u64().unwrap();
    eventually(WAIT, "the new replica catches up", || async {
        (verify(&fourth, None)["entries"].as_u64().unwrap() >= target).then_some(())
    })
    .await;
    assert_eq!(
        verify(&fourth, Some(target))["head"],
        verify(&replicas[leader], Some(target))["head"]
    );

    // refused: a change signed with another key, and one against an old membership
    let network = clients[leader].as_ref().unwrap().info().await.network;
    let change = |config: &str| MembershipChange {
        config: config.into(),
        change: ReplicaChange::Remove { id: 4 },
    };
    let lead = clients[leader].as_ref().unwrap();
    let forged = Signed::sign(&seeded_key(95), &network, &change(&added.config)).unwrap();
    let e = lead
        .ask(TrackerRequest::ChangeReplicas(forged))
        .await
        .unwrap_err();
    assert!(
        e.contains("must be signed with the tracker key") && !e.contains('\n'),
        "{e}"
    );
    let stale = Signed::sign(&tracker_key, &network, &change(&before.config)).unwrap();
    let e = lead.ask(TrackerRequest::ChangeReplicas(stale)).await.unwrap_err();
    assert!(e.contains("the replica set changed") && !e.contains('\n'), "{e}");
    assert_eq!(voters(&replica_set(&replicas[leader])), vec![1, 2, 3, 4]);
    let _ = lead;

    // a follower dies and is removed
    let dead = (leader + 1) % 3;
    replicas[dead].kill();
    clients[dead] = None;
    let out = replicas[leader].exec(&["replica", "remove", &(dead as u64 + 1).to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after = replica_set(&replicas[leader]);
    let mut expect: Vec<u64> = vec![1, 2, 3, 4];
    expect.retain(|id| *id != dead as u64 + 1);
    assert_eq!(voters(&after), expect);
    assert!(after.members.iter().all(|m| m.id != dead as u64 + 1));

    // the other original follower stops too: the leader and the new replica
    // are two of three voters, so writes still commit
    let other = (leader + 2) % 3;
    replicas[other].kill();
    clients[other] = None;
    let (again, r) = write(&clients, faucet(7)).await;
    assert_eq!(again, leader);
    assert!(matches!(r, TrackerResponse::Minted { .. }), "{r:?}");
    let account = clients[leader].as_ref().unwrap().account(me).await;
    assert_eq!(account.available, 12, "{account:?}");
}

/// A tmpfs mounted over a directory (its contents kept), unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size_mib` on a new directory `dir`.
    fn new(dir: &std::path::Path, size_mib: u64) -> Self {
        std::fs::create_dir(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount: {} (this test mounts a tmpfs: it runs as root, as ./scripts/test does)",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system holding `path` with a file there, to the last byte.
fn fill(path: &std::path::Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0xa5u8; 1 << 16];
    let mut written = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    // the last partial block, byte by byte
    while let Ok(1) = f.write(&[0]) {
        written += 1;
    }
    let _ = f.sync_all();
    written
}

/// A follower whose disk fills up stops with one line naming the cause;
/// the other two go on committing (nothing acknowledged is lost); given
/// room again and restarted, it catches up to the same head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_disk_fills_stops_with_one_line_and_catches_up() {
    // replica 3 keeps its stores (the ledger's and the Raft log's) on a
    // file system of their own; its log lines stay on the roomy one
    let mut small = None;
    let mut replicas = crowd_tests::tracker_replicas_with(3, EPOCH_SECS, |i, d| {
        if i != 2 {
            return;
        }
        let stores = d.path("stores");
        let tmpfs = Tmpfs::new(&stores, 256);
        let moved = std::process::Command::new("cp")
            .arg("-a")
            .arg(d.path("db"))
            .arg(&stores)
            .status()
            .unwrap();
        assert!(moved.success());
        std::fs::remove_dir_all(d.path("db")).unwrap();
        std::fs::create_dir(stores.join("raft")).unwrap();
        std::os::unix::fs::symlink(stores.join("db"), d.path("db")).unwrap();
        std::os::unix::fs::symlink(stores.join("raft"), d.path("raft")).unwrap();
        small = Some((stores, tmpfs));
    });
    let (small, tmpfs) = small.unwrap();
    let mut clients = clients_for(&replicas, 96).await;
    let me = clients[0].as_ref().unwrap().peer();
    let faucet = |amount| TrackerRequest::Faucet { account: me, amount };
    let (mut leader, _) = write(&clients, faucet(1)).await;
    let mut minted = 1u128;
    if leader == 2 {
        // the full disk is to be a follower's: hand leadership on by a restart
        replicas[2].restart();
        clients[2] = Some(Client::start(&replicas[2], seeded_key(96)).await);
        leader = write(&clients, faucet(1)).await.0;
        minted += 1;
        assert_ne!(leader, 2, "replica 3 leads again");
    }
    let filled = fill(&small.join("filler"));
    assert!(filled > 0);

    // incompressible manifests, committed to every replica's Raft log,
    // until the full follower stops (bounded: 800 × 60 KiB = 47 MiB)
    let mut sent = 0u64;
    while replicas[2].is_running() && sent < 800 {
        let request = TrackerRequest::RegisterManifest {
            root: random_bytes(36, 1_000 + sent),
            manifest: random_bytes(60 << 10, 2_000 + sent),
            file: None,
        };
        let _ = clients[leader].as_ref().unwrap().ask(request).await;
        if sent % 25 == 0 {
            // a loaded machine may elect another leader meanwhile; the
            // full disk must stay a follower's
            let (l, _) = write(&clients, faucet(1)).await;
            assert_ne!(l, 2, "replica 3 leads");
            leader = l;
            minted += 1;
        }
        sent += 1;
    }
    // a follower of a loaded machine (the suite runs these tests side by
    // side) lags behind the majority that committed the writes: wait until
    // it has reached the entries that do not fit
    let deadline = std::time::Instant::now() + WAIT;
    while replicas[2].is_running() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !replicas[2].is_running(),
        "replica 3 kept running with a full disk after {sent} large writes"
    );
    let stderr = std::fs::read_to_string(replicas[2].path("stderr.log")).unwrap();
    let last = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("crowd-tracker:"))
        .unwrap_or_default();
    // the watcher on Raft's fatal state ended the process, naming the cause
    assert!(
        last.contains("replica 3 stopped: Raft stopped") && last.to_lowercase().contains("no space left"),
        "{stderr}"
    );
    eprintln!("replica 3 stopped after {sent} large writes: {last}");
    // the other two go on
    clients[2] = None;
    // (the balance is read on whichever replica leads now)
    let (leader, _) = write(&clients, faucet(5)).await;
    let account = clients[leader].as_ref().unwrap().account(me).await;
    assert_eq!(account.available, minted + 5, "every acknowledged mint is there");

    // room again: it restarts, catches up and agrees
    std::fs::remove_file(small.join("filler")).unwrap();
    replicas[2].restart();
    let reports = caught_up(&replicas, 2, leader).await;
    assert_eq!(reports[2]["head"], reports[leader]["head"]);
    assert_eq!(reports[2]["entries"], reports[leader]["entries"]);
    // unmounted before the homes are removed
    replicas[2].kill();
    drop(tmpfs);
}
