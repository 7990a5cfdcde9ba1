//! The ledger replicated on openraft (issue #15, first part): three
//! replicas, each with its own libp2p swarm on loopback and its own RocksDB,
//! elect a leader and apply ledger inputs in one order; the leader is shut
//! down and the other two go on under a new leader; the old one restarts
//! from its disk and catches up to the same head; a peer outside the
//! replica set is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::{Multiaddr, PeerId};
use crowd_protocol::wire::{read_frame, write_frame};
use crowd_protocol::{Network, NetworkConfig};
use crowd_tracker::service::raft::network::{RaftAnswer, RaftCall, RAFT_PROTOCOL};
use crowd_tracker::service::raft::replica::Running;
use crowd_tracker::service::raft::{Replica, ReplicaId};
use crowd_tracker::{AccountId, Input, LedgerConfig};

async fn until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..secs * 10 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {secs} s");
}

async fn mint(leader: &Running, account: AccountId, nonce: u64) {
    let input = Input::Mint {
        account,
        amount: 1_000 + u128::from(nonce),
        nonce,
    };
    let written = leader.raft.client_write(input).await.unwrap();
    assert_eq!(written.data.error, None, "mint {nonce}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_agree_survive_the_leader_and_catch_up_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker_key = Keypair::generate_ed25519();
    let genesis = LedgerConfig::devnet(&tracker_key.public());
    let keys: Vec<Keypair> = (0..3).map(|_| Keypair::generate_ed25519()).collect();
    let set: HashSet<PeerId> = keys.iter().map(|k| k.public().to_peer_id()).collect();
    let loopback: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    let mut replicas = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let dir = tmp.path().join(format!("r{i}"));
        let r = Running::start(i as u64 + 1, key.clone(), &dir, loopback.clone(), &genesis, &set).await;
        replicas.push(r.unwrap());
    }
    let members: BTreeMap<ReplicaId, Replica> = replicas.iter().map(|r| (r.id, r.replica())).collect();
    replicas[0].raft.initialize(members).await.unwrap();
    let leader = until("a leader", 30, || replicas[0].leader()).await;

    let account = AccountId(Keypair::generate_ed25519().public().to_peer_id());
    let at = |id: ReplicaId| (id - 1) as usize;
    for nonce in 0..20 {
        mint(&replicas[at(leader)], account, nonce).await;
    }
    // every replica applies the same entries to the same head
    let want = replicas[at(leader)].head().unwrap();
    assert_eq!(want.2, 20);
    for r in &replicas {
        until("the same head everywhere", 30, || {
            (r.head() == Some(want)).then_some(())
        })
        .await;
    }

    // the leader stops; the two others elect a new one and go on
    let old = replicas.remove(at(leader)).stop().await;
    let old_id = old.id;
    let new_leader = until("a new leader", 30, || {
        replicas[0]
            .leader()
            .filter(|&l| l != old_id && replicas[1].leader() == Some(l))
    })
    .await;
    let new = replicas.iter().find(|r| r.id == new_leader).unwrap();
    for nonce in 20..30 {
        mint(new, account, nonce).await;
    }
    let want = new.head().unwrap();
    assert_eq!(want.2, 30);
    for r in &replicas {
        until("the survivors agree", 30, || {
            (r.head() == Some(want)).then_some(())
        })
        .await;
    }

    // the old leader restarts from its disk at the same address and catches up
    let back = Running::start(old.id, old.key, &old.dir, old.addr, &genesis, &set)
        .await
        .unwrap();
    until("the restarted replica catches up", 60, || {
        (back.head() == Some(want)).then_some(())
    })
    .await;
    assert_eq!(until("it follows", 30, || back.leader()).await, new_leader);

    // a peer outside the replica set is refused unanswered
    let outsider = Keypair::generate_ed25519();
    let (net, _inbound) = Network::start(
        outsider,
        NetworkConfig {
            listen: vec![loopback.clone()],
            ..NetworkConfig::default()
        },
    )
    .await
    .unwrap();
    let target = back.key.public().to_peer_id();
    net.dial(target, vec![back.addr.clone()]).await.unwrap();
    let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(99, 7), None);
    let mut stream = net.streams().open_stream(target, RAFT_PROTOCOL).await.unwrap();
    write_frame(&mut stream, &RaftCall::Vote(vote)).await.unwrap();
    let answer = read_frame::<_, RaftAnswer>(&mut stream, "raft answer", 1 << 20).await;
    assert!(answer.is_err(), "an outsider got an answer: {answer:?}");
    assert_eq!(back.stats.outsiders.load(Ordering::Relaxed), 1);
    // and its vote changed nothing
    assert_eq!(back.head(), Some(want));
    assert_eq!(until("still following", 10, || back.leader()).await, new_leader);

    for r in replicas {
        r.stop().await;
    }
    back.stop().await;
}
