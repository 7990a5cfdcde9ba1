//! The tracker replicated on openraft (issue #15, in progress): three
//! replicas, each with its own libp2p swarm on loopback, its own tracker
//! store and Raft log, elect a leader and apply the same requests in one
//! order; the leader stops and the other two go on under a new leader; the
//! old one restarts from its disk and catches up to the same head without
//! applying anything twice; every replica's store passes `ledger verify`
//! with that head; a peer outside the replica set is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::{Multiaddr, PeerId};
use crowd_protocol::wire::{read_frame, write_frame};
use crowd_protocol::{Network, NetworkConfig, Signed, TrackerRequest, TrackerResponse, TransferRequest};
use crowd_tracker::service::raft::network::{RaftAnswer, RaftCall, RAFT_PROTOCOL};
use crowd_tracker::service::raft::replica::{start_local_set, Running, Shared};
use crowd_tracker::service::raft::{ReplicaId, Replicated, ReplicatedResult};
use crowd_tracker::Hash32;

async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    secs: u64,
    mut f: impl FnMut() -> F,
) -> T {
    for _ in 0..secs * 10 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {secs} s");
}

/// Proposes a request from `peer` on `leader` and returns its answer.
async fn propose(leader: &Running, peer: PeerId, request: TrackerRequest) -> Result<TrackerResponse, String> {
    let written = leader
        .raft
        .client_write(Replicated::Request { peer, request })
        .await
        .unwrap();
    match written.data {
        ReplicatedResult::Response(r) => r,
        other => panic!("{other:?}"),
    }
}

async fn same_head(r: &Running, want: (u64, Hash32), what: &str) {
    until(what, 30, || async {
        (r.head().await == Some(want)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_agree_survive_the_leader_and_catch_up_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker_key = Keypair::generate_ed25519();
    let keys: Vec<Keypair> = (0..3).map(|_| Keypair::generate_ed25519()).collect();
    let shared = Shared::devnet(tracker_key, 1 << 60, &keys);
    let mut replicas = start_local_set(tmp.path(), &keys, &shared).await.unwrap();
    let loopback: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    let leader = until("a leader", 30, || async { replicas[0].leader() }).await;
    let at = |id: ReplicaId| (id - 1) as usize;

    let alice = Keypair::generate_ed25519();
    let a = alice.public().to_peer_id();
    for _ in 0..10 {
        let r = propose(
            &replicas[at(leader)],
            a,
            TrackerRequest::Faucet {
                account: a,
                amount: 1_000,
            },
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
    }
    // a refused request is committed and refused the same way everywhere
    let net = replicas[0].owner.request(a, TrackerRequest::Info).await.unwrap();
    let TrackerResponse::Info(info) = net else {
        panic!("{net:?}")
    };
    let transfer = |nonce| {
        let req = TransferRequest {
            to: Keypair::generate_ed25519().public().to_peer_id(),
            amount: 10,
            nonce,
        };
        TrackerRequest::Transfer(Signed::sign(&alice, &info.network, &req).unwrap())
    };
    assert!(
        propose(&replicas[at(leader)], a, transfer(5)).await.is_err(),
        "a transfer out of nonce order"
    );
    assert!(propose(&replicas[at(leader)], a, transfer(0)).await.is_ok());
    let want = replicas[at(leader)].head().await.unwrap();
    assert_eq!(want.0, 11, "10 mints and a transfer");
    for r in &replicas {
        same_head(r, want, "the same head everywhere").await;
    }

    // the leader stops; the two others elect a new one and go on
    let old = replicas.remove(at(leader)).stop().await;
    let new_leader = until("a new leader", 30, || async {
        replicas[0]
            .leader()
            .filter(|&l| l != old.id && replicas[1].leader() == Some(l))
    })
    .await;
    let new = replicas.iter().find(|r| r.id == new_leader).unwrap();
    for nonce in 1..6 {
        assert!(propose(new, a, transfer(nonce)).await.is_ok());
    }
    let want = new.head().await.unwrap();
    assert_eq!(want.0, 16);
    for r in &replicas {
        same_head(r, want, "the survivors agree").await;
    }

    // the old leader restarts from its disk at the same address and catches
    // up: the same head, so no command was applied twice
    let back = Running::start(old.id, old.key, &old.dir, old.addr, &shared)
        .await
        .unwrap();
    same_head(&back, want, "the restarted replica catches up").await;
    assert_eq!(
        until("it follows", 30, || async { back.leader() }).await,
        new_leader
    );

    // a peer outside the replica set is refused unanswered
    let (outsider, _inbound) = Network::start(
        Keypair::generate_ed25519(),
        NetworkConfig {
            listen: vec![loopback.clone()],
            ..NetworkConfig::default()
        },
    )
    .await
    .unwrap();
    let target = back.key.public().to_peer_id();
    outsider.dial(target, vec![back.addr.clone()]).await.unwrap();
    let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(99, 7), None);
    let mut stream = outsider
        .streams()
        .open_stream(target, RAFT_PROTOCOL)
        .await
        .unwrap();
    write_frame(&mut stream, &RaftCall::Vote(vote)).await.unwrap();
    let answer = read_frame::<_, RaftAnswer>(&mut stream, "raft answer", 1 << 20).await;
    assert!(answer.is_err(), "an outsider got an answer: {answer:?}");
    assert_eq!(back.stats.outsiders.load(Ordering::Relaxed), 1);
    assert_eq!(back.head().await, Some(want));
    assert_eq!(
        until("still following", 10, || async { back.leader() }).await,
        new_leader
    );

    // every replica's store replays to that head
    let mut dirs = Vec::new();
    for r in replicas {
        dirs.push(r.stop().await.dir);
    }
    dirs.push(back.stop().await.dir);
    for dir in dirs {
        let report = crowd_tracker::service::verify(&dir, None).unwrap();
        assert_eq!((report.entries, report.head), want, "{}", dir.display());
    }
}

/// A replica whose Raft log was damaged on disk while it was stopped (an
/// entry that no longer decodes, as a torn or corrupt write leaves it) does
/// not start: one line naming the log entry, no panic, and the store it
/// had is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_raft_log_is_refused_at_start_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker_key = Keypair::generate_ed25519();
    let key = Keypair::generate_ed25519();
    let shared = Shared::devnet(tracker_key, 1 << 60, std::slice::from_ref(&key));
    let loopback: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    let dir = tmp.path().join("r1");
    let r = Running::start(1, key.clone(), &dir, loopback.clone(), &shared)
        .await
        .unwrap();
    r.raft
        .initialize(BTreeMap::from([(1, r.replica())]))
        .await
        .unwrap();
    until("it leads", 30, || async { r.leader() }).await;
    let me = key.public().to_peer_id();
    for _ in 0..3 {
        let answer = propose(
            &r,
            me,
            TrackerRequest::Faucet {
                account: me,
                amount: 1,
            },
        )
        .await;
        assert!(answer.is_ok(), "{answer:?}");
    }
    let before = r.head().await.unwrap();
    let stopped = r.stop().await;

    // overwrite the last log entry with bytes that are not an entry
    {
        let db = crowd_tracker::service::raft::store::open_db(&dir.join("raft")).unwrap();
        let logs = db.cf_handle("raft_logs").unwrap();
        let (last, _) = db
            .iterator_cf(logs, rocksdb::IteratorMode::End)
            .next()
            .unwrap()
            .unwrap();
        db.put_cf(logs, last, b"\xff\x00 torn write").unwrap();
    }
    let err = Running::start(1, stopped.key.clone(), &dir, loopback, &shared)
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("raft log entry"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // the tracker store is as it was
    let report = crowd_tracker::service::verify(&dir, None).unwrap();
    assert_eq!((report.entries, report.head), before);
}
