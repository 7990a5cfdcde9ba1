//! Committed tracker requests per second: the single tracker's owner (one
//! synced RocksDB batch per request) against three replicas on loopback
//! (the leader and a follower fsync each log entry, one network round trip,
//! then every replica applies it with the same code and its own synced
//! batch), in the same run; then the failover time: the leader stopped to
//! the next committed request. Issue #15's benchmark (docs/BENCHMARKS.md).
//!
//!   raft_rate [REQUESTS] [WRITERS]
//!
//! Requests are transfers between funded accounts: one at a time, then
//! WRITERS senders at once (each its own account and nonces), so Raft can
//! batch appends. Prints one line per figure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::PeerId;
use crowd_protocol::{NetworkId, Signed, TrackerRequest, TransferRequest};
use crowd_tracker::service::raft::replica::{start_local_set, Shared};
use crowd_tracker::service::raft::{Replicated, ReplicatedResult, TrackerRaft};
use crowd_tracker::service::state::{init_store, Clock};
use crowd_tracker::service::{metrics::Metrics, Owner, RocksStore, State};
use crowd_tracker::{Ledger, LedgerConfig};

/// `per` signed transfers from each sender, in nonce order.
fn transfers(net: &NetworkId, senders: &[Keypair], per: u64) -> Vec<Vec<(PeerId, TrackerRequest)>> {
    senders
        .iter()
        .map(|k| {
            (0..per)
                .map(|nonce| {
                    let req = TransferRequest {
                        to: Keypair::generate_ed25519().public().to_peer_id(),
                        amount: 1,
                        nonce,
                    };
                    let signed = Signed::sign(k, net, &req).unwrap();
                    (k.public().to_peer_id(), TrackerRequest::Transfer(signed))
                })
                .collect()
        })
        .collect()
}

fn faucets(senders: &[Keypair]) -> Vec<(PeerId, TrackerRequest)> {
    senders
        .iter()
        .map(|k| {
            let p = k.public().to_peer_id();
            (
                p,
                TrackerRequest::Faucet {
                    account: p,
                    amount: 1 << 40,
                },
            )
        })
        .collect()
}

async fn commit(raft: &TrackerRaft, peer: PeerId, request: TrackerRequest) {
    let w = raft
        .client_write(Replicated::Request { peer, request })
        .await
        .unwrap();
    assert!(
        matches!(w.data, ReplicatedResult::Response(Ok(_))),
        "{:?}",
        w.data
    );
}

fn rate(n: usize, t: Duration) -> f64 {
    n as f64 / t.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let requests: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(400);
    let writers: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(8).max(1);
    let tmp = tempfile::tempdir().unwrap();
    let tracker_key = Keypair::generate_ed25519();
    let genesis = LedgerConfig::devnet(&tracker_key.public());
    let net = Ledger::new(genesis.clone()).unwrap().network();
    let senders: Vec<Keypair> = (0..writers).map(|_| Keypair::generate_ed25519()).collect();
    let per = (requests / writers) as u64;
    let half = (per / 2) as usize;
    let cores = std::thread::available_parallelism().map_or(0, |p| p.get());
    println!(
        "machine: {cores} cores; {} transfers per run, {writers} writers",
        per as usize * writers
    );

    // --- the single tracker: its owner thread and RocksDB ---
    let store = RocksStore::open(&tmp.path().join("single")).unwrap();
    init_store(&store, &genesis).unwrap();
    let clock = Arc::new(Clock::new(Duration::from_secs(3600)));
    let state = State::open(
        store,
        tracker_key.clone(),
        1 << 60,
        clock,
        Arc::new(Metrics::default()),
    )
    .unwrap();
    let (owner, _thread) = Owner::spawn(state).unwrap();
    for (peer, request) in faucets(&senders) {
        owner.request(peer, request).await.unwrap();
    }
    let batches = transfers(&net, &senders, per);
    let t = Instant::now();
    for (peer, request) in batches.iter().flat_map(|b| b[..half].iter()) {
        owner.request(*peer, request.clone()).await.unwrap();
    }
    let single = rate(half * writers, t.elapsed());
    println!("single tracker, one request at a time: {single:.0} requests/s");
    owner.stop().await;

    // --- three replicas on loopback ---
    let keys: Vec<Keypair> = (0..3).map(|_| Keypair::generate_ed25519()).collect();
    let shared = Shared::devnet(tracker_key, 1 << 60, &keys);
    let mut replicas = start_local_set(&tmp.path().join("set"), &keys, &shared)
        .await
        .unwrap();
    let leader = loop {
        if let Some(l) = replicas[0].leader() {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let raft = replicas[(leader - 1) as usize].raft.clone();
    for (peer, request) in faucets(&senders) {
        commit(&raft, peer, request).await;
    }
    let batches = transfers(&net, &senders, per);
    let t = Instant::now();
    for (peer, request) in batches.iter().flat_map(|b| b[..half].iter()) {
        commit(&raft, *peer, request.clone()).await;
    }
    let sequential = rate(half * writers, t.elapsed());
    println!(
        "3 replicas, one request at a time: {sequential:.0} requests/s ({:.2}x the single tracker)",
        sequential / single
    );
    let t = Instant::now();
    let tasks: Vec<_> = batches
        .iter()
        .map(|b| {
            let (raft, rest) = (raft.clone(), b[half..].to_vec());
            tokio::spawn(async move {
                for (peer, request) in rest {
                    commit(&raft, peer, request).await;
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
        "3 replicas, {writers} writers at once: {concurrent:.0} requests/s ({:.2}x the single tracker)",
        concurrent / single
    );

    // --- failover: stop the leader, time the next committed request ---
    let old = replicas.remove((leader - 1) as usize);
    let t = Instant::now();
    old.stop().await;
    let stopping = t.elapsed();
    let p = senders[0].public().to_peer_id();
    let failover = loop {
        let next = replicas
            .iter()
            .find(|r| r.leader() == Some(r.id) && r.id != leader);
        if let Some(r) = next {
            let request = TrackerRequest::Faucet {
                account: p,
                amount: 1,
            };
            if let Ok(w) = r
                .raft
                .client_write(Replicated::Request { peer: p, request })
                .await
            {
                assert!(matches!(w.data, ReplicatedResult::Response(Ok(_))));
                break t.elapsed();
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "nothing committed within 60 s of stopping the leader"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!(
        "failover: leader stopped to the next committed request in {:.2} s, {:.2} s of it stopping the leader (election timeout 1-2 s, heartbeat 250 ms)",
        failover.as_secs_f64(),
        stopping.as_secs_f64()
    );
    for r in replicas {
        r.stop().await;
    }
}
