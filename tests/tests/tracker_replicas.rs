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

use crowd_protocol::{TrackerRequest, TrackerResponse};
use crowd_tests::{eventually, seeded_key, tracker_replicas, Client, Daemon};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_survives_its_leader_killed_mid_epoch() {
    let mut replicas = tracker_replicas(3, EPOCH_SECS);
    let key = seeded_key(90);
    let mut clients = Vec::new();
    for d in &replicas {
        clients.push(Some(Client::start(d, key.clone()).await));
    }
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

    // epochs advance under the leader
    let lead = clients[leader].as_ref().unwrap();
    let start = lead.info().await.epoch;
    eventually(WAIT, "two epochs settle", || async {
        (lead.info().await.epoch >= start + 2).then_some(())
    })
    .await;

    // SIGKILL the leader in the middle of an epoch (checked on its clock)
    let killed_in = eventually(WAIT, "the middle of an epoch", || async {
        let i = lead.info().await;
        let left = i.epoch_ends_in_millis as f64 / i.epoch_millis.max(1) as f64;
        (0.3..0.7).contains(&left).then_some(i.epoch)
    })
    .await;
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
    let caught_up_to = verify(&replicas[new_leader], None)["entries"].as_u64().unwrap();
    eventually(WAIT, "the restarted replica catches up", || async {
        (verify(&replicas[leader], None)["entries"].as_u64().unwrap() >= caught_up_to).then_some(())
    })
    .await;
    // every replica's ledger verifies, with the same head at that position
    let heads: Vec<serde_json::Value> = replicas.iter().map(|d| verify(d, Some(caught_up_to))).collect();
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
    let all = verify(&replicas[new_leader], None);
    assert!(all["entries"].as_u64().unwrap() >= caught_up_to);
}

/// The leader SIGSTOPped for 20 epochs (its sockets open, answering
/// nothing): the others elect a new leader and settle the epochs; resumed,
/// the old leader's stale term is refused, it follows, and it catches up to
/// the same head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_paused_for_20_epochs_catches_up_to_the_same_head() {
    let mut replicas = tracker_replicas(3, EPOCH_SECS);
    let key = seeded_key(91);
    let mut clients = Vec::new();
    for d in &replicas {
        clients.push(Some(Client::start(d, key.clone()).await));
    }
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
    let target = verify(&replicas[new_leader], None)["entries"].as_u64().unwrap();
    eventually(WAIT, "the resumed replica catches up", || async {
        (verify(&replicas[leader], None)["entries"].as_u64().unwrap() >= target).then_some(())
    })
    .await;
    let heads: Vec<serde_json::Value> = replicas.iter().map(|d| verify(d, Some(target))).collect();
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
