//! The ledger replicated on openraft (issue #15, first part): three
//! replicas, each with its own libp2p swarm on loopback and its own RocksDB,
//! elect a leader and apply ledger inputs in one order; the leader is shut
//! down and the other two go on under a new leader; the old one restarts
//! from its disk and catches up to the same head; a peer outside the
//! replica set is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::{Multiaddr, PeerId};
use crowd_protocol::wire::{read_frame, write_frame};
use crowd_protocol::{Network, NetworkConfig};
use crowd_tracker::service::raft::network::{self, InboundStats, RaftAnswer, RaftCall, RAFT_PROTOCOL};
use crowd_tracker::service::raft::store::{open_db, LedgerMachine, LogStore};
use crowd_tracker::service::raft::{config, LedgerRaft, Replica, ReplicaId};
use crowd_tracker::Hash32;
use crowd_tracker::{AccountId, Input, LedgerConfig};

struct Running {
    id: ReplicaId,
    key: Keypair,
    dir: PathBuf,
    addr: Multiaddr,
    raft: LedgerRaft,
    machine: LedgerMachine,
    stats: Arc<InboundStats>,
    serving: tokio::task::JoinHandle<()>,
}

async fn start(
    id: ReplicaId,
    key: Keypair,
    dir: &Path,
    listen: Multiaddr,
    genesis: &LedgerConfig,
    set: &HashSet<PeerId>,
) -> Running {
    // the previous run's database may still be closing: retry the open briefly
    let mut db = None;
    for _ in 0..100 {
        match open_db(dir) {
            Ok(d) => {
                db = Some(d);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let db = db.expect("the raft database opens");
    let machine = LedgerMachine::open(db.clone(), genesis.clone()).unwrap();
    let netconf = NetworkConfig {
        listen: vec![listen],
        request_timeout: Duration::from_secs(10),
        ..NetworkConfig::default()
    };
    let (net, _inbound) = Network::start(key.clone(), netconf).await.unwrap();
    let addr = net.listen_addrs().await.unwrap().remove(0);
    let raft = LedgerRaft::new(
        id,
        Arc::new(config().validate().unwrap()),
        network::Factory::new(net.clone()),
        LogStore::new(db),
        machine.clone(),
    )
    .await
    .unwrap();
    let stats = Arc::new(InboundStats::default());
    let serving = tokio::spawn({
        let (net, raft, set, stats) = (net.clone(), raft.clone(), set.clone(), stats.clone());
        async move {
            let _ = network::serve(net, raft, set, stats).await;
        }
    });
    Running {
        id,
        key,
        dir: dir.to_path_buf(),
        addr,
        raft,
        machine,
        stats,
        serving,
    }
}

impl Running {
    fn replica(&self) -> Replica {
        Replica {
            peer: self.key.public().to_peer_id().to_string(),
            addrs: vec![self.addr.to_string()],
        }
    }

    fn head(&self) -> (u64, Hash32, u64) {
        self.machine
            .read(|s| (s.ledger.log_len(), s.ledger.head(), s.ledger.mints()))
            .unwrap()
    }

    fn leader(&self) -> Option<ReplicaId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Stops the replica as a crash would leave it: Raft stopped, nothing
    /// served, its database closed (only what was synced survives).
    async fn stop(self) -> (ReplicaId, Keypair, PathBuf, Multiaddr) {
        self.serving.abort();
        self.raft.shutdown().await.unwrap();
        let Running {
            id, key, dir, addr, ..
        } = self;
        (id, key, dir, addr)
    }
}

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
        replicas.push(start(i as u64 + 1, key.clone(), &dir, loopback.clone(), &genesis, &set).await);
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
    let want = replicas[at(leader)].head();
    assert_eq!(want.2, 20);
    for r in &replicas {
        until("the same head everywhere", 30, || {
            (r.head() == want).then_some(())
        })
        .await;
    }

    // the leader stops; the two others elect a new one and go on
    let old = replicas.remove(at(leader));
    let (old_id, old_key, old_dir, old_addr) = old.stop().await;
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
    let want = new.head();
    assert_eq!(want.2, 30);
    for r in &replicas {
        until("the survivors agree", 30, || (r.head() == want).then_some(())).await;
    }

    // the old leader restarts from its disk at the same address and catches up
    let back = start(old_id, old_key, &old_dir, old_addr, &genesis, &set).await;
    until("the restarted replica catches up", 60, || {
        (back.head() == want).then_some(())
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
    assert_eq!(back.head(), want);
    assert_eq!(until("still following", 10, || back.leader()).await, new_leader);

    for r in replicas {
        r.stop().await;
    }
    back.stop().await;
}
