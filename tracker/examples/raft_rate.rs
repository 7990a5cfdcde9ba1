//! Committed ledger inputs per second: the single-process tracker's owner
//! (one synced RocksDB batch per input) against three Raft replicas on
//! loopback (leader and a follower fsync each entry, one network round
//! trip), in the same run; then the failover time: the leader stopped to the
//! next committed entry. Issue #15's benchmark (docs/BENCHMARKS.md).
//!
//!   raft_rate [INPUTS] [WRITERS]
//!
//! Inputs are transfers between funded accounts: sequential (one in flight),
//! then WRITERS concurrent senders (each its own account and nonces), so
//! Raft can batch appends. Prints one line per figure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::{Multiaddr, PeerId};
use crowd_protocol::{Signed, TransferRequest};
use crowd_tracker::service::raft::replica::Running;
use crowd_tracker::service::raft::{Replica, ReplicaId};
use crowd_tracker::service::state::{init_store, Clock};
use crowd_tracker::service::{metrics::Metrics, Owner, RocksStore, State};
use crowd_tracker::{AccountId, Input, LedgerConfig};

fn transfers(genesis: &LedgerConfig, senders: &[Keypair], per_sender: u64) -> Vec<Vec<Input>> {
    let net = genesis_network(genesis);
    senders
        .iter()
        .map(|k| {
            (0..per_sender)
                .map(|nonce| {
                    let req = TransferRequest {
                        to: Keypair::generate_ed25519().public().to_peer_id(),
                        amount: 1,
                        nonce,
                    };
                    Input::Transfer(Signed::sign(k, &net, &req).unwrap())
                })
                .collect()
        })
        .collect()
}

fn genesis_network(genesis: &LedgerConfig) -> crowd_protocol::NetworkId {
    crowd_tracker::Ledger::new(genesis.clone()).unwrap().network()
}

fn mints(senders: &[Keypair]) -> Vec<Input> {
    senders
        .iter()
        .enumerate()
        .map(|(i, k)| Input::Mint {
            account: AccountId(k.public().to_peer_id()),
            amount: 1 << 40,
            nonce: i as u64,
        })
        .collect()
}

fn rate(n: usize, t: Duration) -> f64 {
    n as f64 / t.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let inputs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(400);
    let writers: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(8);
    let tmp = tempfile::tempdir().unwrap();
    let tracker_key = Keypair::generate_ed25519();
    let genesis = LedgerConfig::devnet(&tracker_key.public());
    let senders: Vec<Keypair> = (0..writers.max(1)).map(|_| Keypair::generate_ed25519()).collect();
    let per = (inputs / senders.len()) as u64;
    let n = per as usize * senders.len();
    println!(
        "machine: {} cores; {n} transfers, {} writers",
        std::thread::available_parallelism().map_or(0, |p| p.get()),
        senders.len()
    );

    // --- the single-process tracker: its owner thread, its RocksDB ---
    let store = RocksStore::open(&tmp.path().join("single")).unwrap();
    init_store(&store, &genesis).unwrap();
    let state = State::open(
        store,
        tracker_key.clone(),
        0,
        Arc::new(Clock::new(Duration::from_secs(3600))),
        Arc::new(Metrics::default()),
    )
    .unwrap();
    let (owner, _thread) = Owner::spawn(state).unwrap();
    for m in mints(&senders) {
        assert!(owner.apply(vec![m]).await.unwrap()[0].is_ok());
    }
    let batches = transfers(&genesis, &senders, per);
    let t = Instant::now();
    for input in batches.iter().flatten().take(n / 2) {
        // one input per owner command: one synced batch each, as requests are
        let r = owner.apply(vec![input.clone()]).await.unwrap();
        assert!(r[0].is_ok(), "{r:?}");
    }
    let single = rate(n / 2, t.elapsed());
    println!("single-process tracker, one input at a time: {single:.0} inputs/s");
    owner.stop().await;

    // --- three replicas on loopback ---
    let keys: Vec<Keypair> = (0..3).map(|_| Keypair::generate_ed25519()).collect();
    let set: HashSet<PeerId> = keys.iter().map(|k| k.public().to_peer_id()).collect();
    let loopback: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    let mut replicas = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let dir = tmp.path().join(format!("r{i}"));
        replicas.push(
            Running::start(i as u64 + 1, key.clone(), &dir, loopback.clone(), &genesis, &set)
                .await
                .unwrap(),
        );
    }
    let members: BTreeMap<ReplicaId, Replica> = replicas.iter().map(|r| (r.id, r.replica())).collect();
    replicas[0].raft.initialize(members).await.unwrap();
    let leader = loop {
        if let Some(l) = replicas[0].leader() {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let raft = replicas[(leader - 1) as usize].raft.clone();
    for m in mints(&senders) {
        assert_eq!(raft.client_write(m).await.unwrap().data.error, None);
    }
    let batches = transfers(&genesis, &senders, per);
    // sequential: the first half of every sender's transfers, one at a time
    let half = (per / 2) as usize;
    let t = Instant::now();
    for b in &batches {
        for input in &b[..half] {
            assert_eq!(raft.client_write(input.clone()).await.unwrap().data.error, None);
        }
    }
    let sequential = rate(half * batches.len(), t.elapsed());
    println!(
        "3 replicas, one input at a time: {sequential:.0} inputs/s ({:.2}x single)",
        sequential / single
    );
    // concurrent: the rest, one task per sender
    let t = Instant::now();
    let tasks: Vec<_> = batches
        .iter()
        .map(|b| {
            let (raft, rest) = (raft.clone(), b[half..].to_vec());
            tokio::spawn(async move {
                for input in rest {
                    assert_eq!(raft.client_write(input).await.unwrap().data.error, None);
                }
            })
        })
        .collect();
    let count: usize = batches.iter().map(|b| b.len() - half).sum();
    for task in tasks {
        task.await.unwrap();
    }
    let concurrent = rate(count, t.elapsed());
    println!(
        "3 replicas, {} writers at once: {concurrent:.0} inputs/s ({:.2}x single)",
        batches.len(),
        concurrent / single
    );

    // --- failover: stop the leader, time the next committed entry ---
    let old = replicas.remove((leader - 1) as usize);
    let t = Instant::now();
    old.stop().await;
    let mut nonce = senders.len() as u64;
    let failover = loop {
        let next = replicas
            .iter()
            .find(|r| r.leader().is_some_and(|l| l != leader) && r.leader() == Some(r.id));
        if let Some(r) = next {
            let mint = Input::Mint {
                account: AccountId(keys[0].public().to_peer_id()),
                amount: 1,
                nonce,
            };
            if let Ok(w) = r.raft.client_write(mint).await {
                assert_eq!(w.data.error, None);
                nonce += 1;
                break t.elapsed();
            }
        }
        if t.elapsed() > Duration::from_secs(60) {
            panic!("no entry committed within 60 s of stopping the leader");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let _ = nonce;
    println!(
        "failover: leader stopped to the next committed entry in {:.2} s (election timeout 1-2 s, heartbeat 250 ms)",
        failover.as_secs_f64()
    );
    for r in replicas {
        r.stop().await;
    }
}
