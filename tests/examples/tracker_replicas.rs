//! Issue #15's benchmark on real processes: committed tracker requests per
//! second — a single `crowd-tracker` against three replicas on loopback,
//! in the same run, over the network as clients send them — and failover
//! time: the leader SIGKILLed to the next committed request, several times.
//!
//!   tracker_replicas [REQUESTS] [WRITERS] [FAILOVERS]
//!
//! Requests are signed transfers from WRITERS funded accounts: one at a
//! time, then all writers at once. Binaries: `crowd-tracker` next to this
//! example's target directory (./scripts/test's build).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::PeerId;
use crowd_protocol::{Signed, TrackerRequest, TransferRequest};
use crowd_tests::{tracker, tracker_replicas, Client, Daemon, TrackerOptions};

const EPOCH_SECS: f64 = 30.0;

/// Transfers from `client`'s account, nonces `from..from + n`.
fn transfers(client: &Client, from: u64, n: u64) -> Vec<TrackerRequest> {
    (from..from + n)
        .map(|nonce| {
            let req = TransferRequest {
                to: Keypair::generate_ed25519().public().to_peer_id(),
                amount: 1,
                nonce,
            };
            TrackerRequest::Transfer(Signed::sign(&client.key, &client.network, &req).unwrap())
        })
        .collect()
}

/// Sends `requests` one after another to `peer`; every one must commit.
async fn send_all(client: &Client, peer: PeerId, requests: Vec<TrackerRequest>) {
    for r in requests {
        let answer = client.ask_at(peer, r).await;
        assert!(answer.is_ok(), "{answer:?}");
    }
}

/// Sequential then concurrent rates (requests/s) against the tracker at `peer`.
async fn rates(clients: &[Client], peer: PeerId, per: u64) -> (f64, f64) {
    let half = per / 2;
    let t = Instant::now();
    for c in clients {
        send_all(c, peer, transfers(c, 0, half)).await;
    }
    let sequential = (half as usize * clients.len()) as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let jobs = clients
        .iter()
        .map(|c| send_all(c, peer, transfers(c, half, per - half)));
    futures::future::join_all(jobs).await;
    let concurrent = ((per - half) as usize * clients.len()) as f64 / t.elapsed().as_secs_f64();
    (sequential, concurrent)
}

async fn clients_of(d: &Daemon, writers: usize, all: &[Daemon]) -> Vec<Client> {
    let mut out = Vec::new();
    for _ in 0..writers {
        let c = Client::start(d, Keypair::generate_ed25519()).await;
        for other in all {
            c.connect(other).await;
        }
        out.push(c);
    }
    out
}

/// The replica that commits a write now (its index), trying each.
async fn leader(clients: &[Client], replicas: &[Daemon], alive: &[bool]) -> usize {
    let c = &clients[0];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (i, d) in replicas.iter().enumerate() {
            if !alive[i] {
                continue;
            }
            let r = c
                .ask_at(
                    d.peer,
                    TrackerRequest::Faucet {
                        account: c.peer(),
                        amount: 1,
                    },
                )
                .await;
            if r.is_ok() {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader within 60 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let requests: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(400);
    let writers: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(8).max(1);
    let failovers: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(3);
    let per = requests / writers as u64;
    println!(
        "machine: {} cores; {} transfers per tracker, {writers} writers; {EPOCH_SECS} s epochs",
        std::thread::available_parallelism().map_or(0, |p| p.get()),
        per * writers as u64
    );

    // --- one tracker process ---
    let single = tracker(TrackerOptions {
        epoch_secs: EPOCH_SECS,
        ..TrackerOptions::default()
    });
    let clients = clients_of(&single, writers, &[]).await;
    for c in &clients {
        c.faucet(c.peer(), 1 << 30).await;
    }
    let (s_seq, s_con) = rates(&clients, single.peer, per).await;
    println!("single tracker: one at a time {s_seq:.0}/s, {writers} at once {s_con:.0}/s");
    drop(clients);
    drop(single);

    // --- three replica processes ---
    let mut replicas = tracker_replicas(3, EPOCH_SECS);
    let clients = clients_of(&replicas[0], writers, &replicas).await;
    let mut alive = vec![true; 3];
    let l = leader(&clients, &replicas, &alive).await;
    let lead = replicas[l].peer;
    for c in &clients {
        let r = c
            .ask_at(
                lead,
                TrackerRequest::Faucet {
                    account: c.peer(),
                    amount: 1 << 30,
                },
            )
            .await;
        assert!(r.is_ok(), "{r:?}");
    }
    let (r_seq, r_con) = rates(&clients, lead, per).await;
    println!(
        "3 replicas: one at a time {r_seq:.0}/s ({:.2}x single), {writers} at once {r_con:.0}/s ({:.2}x single)",
        r_seq / s_seq,
        r_con / s_con
    );

    // --- failover: SIGKILL the leader, time the next committed request ---
    for round in 1..=failovers {
        let l = leader(&clients, &replicas, &alive).await;
        let t = Instant::now();
        replicas[l].kill();
        alive[l] = false;
        let next = leader(&clients, &replicas, &alive).await;
        let took = t.elapsed();
        println!(
            "failover {round}: replica {} SIGKILLed, replica {} committed the next request after {:.2} s",
            l + 1,
            next + 1,
            took.as_secs_f64()
        );
        replicas[l].start();
        for c in &clients {
            c.connect(&replicas[l]).await;
        }
        alive[l] = true;
        // let it catch up before the next round
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}
