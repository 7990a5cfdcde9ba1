//! The tracker service with real `crowd-tracker` and `crowd-node` processes
//! on loopback, fast epochs and small pieces. Every wait is bounded and
//! generous; no assertion depends on how long anything took.
//!
//! Build the binaries first: `cargo build --workspace --bins`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::collections::BTreeMap;
use std::time::Duration;

use crowd_protocol::libp2p::PeerId;
use crowd_protocol::{
    AccountView, DealView, ProviderRegistration, Request, Response, Signed, TrackerRequest,
};
use crowd_tests::TrackerOptions;
use crowd_tests::{eventually, node, random_bytes, seeded_key, tracker, Client, Daemon, NodeOptions, Terms};
use crowd_tracker::bps_of;

/// Funds minted to each party.
const FUNDS: u128 = 1_000_000_000;
const PRICE: u128 = 1_000;
const COLLATERAL: u128 = 1_000_000;
/// The stake a provider's registration locks, and the share of it each
/// termination burns (the service's genesis defaults).
const STAKE: u128 = 100_000_000;
const STAKE_SLASH_BPS: u32 = 1_000;
/// Devnet genesis: F, fault fee and the client's share of a slash.
const F: u64 = 3;
const FAULT_FEE_BPS: u32 = 1_000;
const CLIENT_SHARE_BPS: u32 = 5_000;
/// Epochs between the tracker's epoch when a deal is proposed and its start:
/// room to upload, publish, seal, pre-commit and prove the seal.
const LEAD: u64 = 8;
const PIECE: usize = 16 * 1024;
/// Bounds a wait for something that takes a few epochs.
const WAIT: Duration = Duration::from_secs(120);

/// Nodes accept collateral this large (per GiB) for small pieces.
/// `d`'s balances, asked as `d` (the tracker answers an account only to
/// itself); a stranger is refused.
async fn account_as(t: &Daemon, d: &Daemon) -> AccountView {
    let bytes = std::fs::read(d.home.path().join("identity.key")).unwrap();
    let key = crowd_protocol::libp2p::identity::Keypair::from_protobuf_encoding(&bytes).unwrap();
    let stranger = Client::start(t, seeded_key(250)).await;
    let refused = stranger
        .ask(crowd_protocol::TrackerRequest::Account(d.peer))
        .await;
    assert!(
        refused.is_err(),
        "a stranger read {}'s account: {refused:?}",
        d.peer
    );
    Client::start(t, key).await.account(d.peer).await
}

fn node_options(key_seed: Option<u8>) -> NodeOptions {
    NodeOptions {
        key_seed,
        config: "max_collateral_per_gib = 1000000000000000".into(),
    }
}

/// Funds the client and every node, and waits until every node registered.
async fn fund(client: &Client, nodes: &[&Daemon]) {
    client.faucet(client.peer(), FUNDS).await;
    for n in nodes {
        client.faucet(n.peer, FUNDS).await;
    }
    let want: Vec<PeerId> = nodes.iter().map(|n| n.peer).collect();
    eventually(WAIT, "every node registered with the tracker", || async {
        let listed: Vec<PeerId> = client.providers().await.iter().map(|p| p.peer).collect();
        want.iter().all(|p| listed.contains(p)).then_some(())
    })
    .await;
}

fn terms(start_epoch: u64, duration_epochs: u64, nonce: u64) -> Terms {
    Terms {
        price_per_epoch: PRICE,
        start_epoch,
        duration_epochs,
        provider_collateral: COLLATERAL,
        expiry_epoch: start_epoch,
        nonce,
    }
}

/// Stores a piece with `node` for `duration` epochs starting [`LEAD`] epochs from now.
async fn deal_with(client: &Client, node: &Daemon, duration: u64, seed: u64) -> u64 {
    let start = client.info().await.epoch + LEAD;
    let piece = random_bytes(PIECE, seed);
    client.store(node, &piece, terms(start, duration, seed)).await
}

/// Waits until `f` holds for the deal's view, and returns it.
async fn wait_deal(client: &Client, id: u64, what: &str, f: impl Fn(&DealView) -> bool) -> DealView {
    eventually(WAIT, what, || async {
        let d = client.deal(id).await;
        assert!(
            !matches!(d.state.as_str(), "cancelled"),
            "deal {id} was cancelled (not proven before its start): {d:?}"
        );
        f(&d).then_some(d)
    })
    .await
}

/// The history is consecutive epochs from the deal's start.
fn assert_consecutive(d: &DealView) {
    for (i, r) in d.history.iter().enumerate() {
        assert_eq!(r.epoch, d.proposal.start_epoch + i as u64, "{:?}", d.history);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_provider_is_paid_every_epoch() {
    let t = tracker(TrackerOptions::default());
    let n = node(&t, node_options(None));
    let client = Client::start(&t, seeded_key(1)).await;
    fund(&client, &[&n]).await;
    let duration = 4;
    let id = deal_with(&client, &n, duration, 1).await;

    // while it runs: every settled epoch is proven and paid, escrow shrinks by the price
    let active = wait_deal(&client, id, "deal active and paid once", |d| d.proven_epochs >= 1).await;
    assert_eq!(active.paid, PRICE * u128::from(active.proven_epochs));
    assert_eq!(active.escrow + active.paid, PRICE * u128::from(duration));
    assert!(active.comm_r.is_some());

    let done = wait_deal(&client, id, "deal completed", |d| d.state == "completed").await;
    assert_eq!(done.proven_epochs, duration, "{done:?}");
    assert_eq!(done.faulted_epochs, 0);
    assert_eq!(done.history.len() as u64, duration);
    assert!(done.history.iter().all(|r| r.proven), "{:?}", done.history);
    assert_consecutive(&done);
    assert_eq!(done.paid, PRICE * u128::from(duration));
    assert_eq!((done.escrow, done.collateral), (0, 0));

    let earned = PRICE * u128::from(duration);
    let provider = account_as(&t, &n).await;
    assert_eq!(
        (provider.available, provider.locked_collateral, provider.staked),
        (FUNDS - STAKE + earned, 0, STAKE)
    );
    let me = client.account(client.peer()).await;
    assert_eq!((me.available, me.locked_escrow), (FUNDS - earned, 0));
    let entry = client
        .providers()
        .await
        .into_iter()
        .find(|p| p.peer == n.peer)
        .unwrap();
    assert_eq!((entry.proven_epochs, entry.live_deals), (duration, 0));
    assert!(!entry.addrs.is_empty());

    assert!(t.metric("crowd_tracker_payments_total").unwrap() >= duration as f64);
    assert!(t.metric("crowd_tracker_epoch").unwrap() > done.proposal.start_epoch as f64);

    // over the wire: node requests and a registration sent by someone else are refused
    let r = client.net.request(t.peer, Request::SealStatus(id)).await.unwrap();
    assert!(
        matches!(&r, Response::Error { message } if message.contains("tracker")),
        "{r:?}"
    );
    let registration = Signed::sign(
        &seeded_key(77),
        &client.network,
        &ProviderRegistration {
            capacity: 1,
            price_per_gib_epoch: 1,
            collateral_per_gib: 1,
            nonce: 0,
        },
    )
    .unwrap();
    let r = client
        .ask(TrackerRequest::Register {
            registration,
            addrs: vec![],
        })
        .await;
    assert!(matches!(&r, Err(m) if m.contains("must be sent by it")), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_provider_faults_and_is_terminated_slashed_and_the_client_refunded() {
    let t = tracker(TrackerOptions::default());
    let mut n = node(&t, node_options(None));
    let client = Client::start(&t, seeded_key(2)).await;
    fund(&client, &[&n]).await;
    let duration = 20;
    let id = deal_with(&client, &n, duration, 2).await;
    wait_deal(&client, id, "deal proven once", |d| d.proven_epochs >= 1).await;
    n.kill();

    let d = wait_deal(&client, id, "deal terminated", |d| d.state == "terminated").await;
    let proven = d.proven_epochs;
    assert_eq!(d.faulted_epochs, F, "{d:?}");
    assert_eq!(u64::from(d.consecutive_faults), F);
    // proven epochs from the start, then F faults in a row
    assert_consecutive(&d);
    let flags: Vec<bool> = d.history.iter().map(|r| r.proven).collect();
    let mut expect = vec![true; proven as usize];
    expect.extend([false; F as usize]);
    assert_eq!(flags, expect);

    // the ledger's rules: a fee per fault burned, the rest slashed, a share to the client
    let fee = bps_of(COLLATERAL, FAULT_FEE_BPS);
    let slashed = COLLATERAL - fee * u128::from(F);
    let compensation = bps_of(slashed, CLIENT_SHARE_BPS);
    let earned = PRICE * u128::from(proven);
    assert_eq!(d.paid, earned);
    assert_eq!((d.escrow, d.collateral), (0, 0));
    let me = client.account(client.peer()).await;
    // escrow came back except what was earned, plus the compensation
    assert_eq!(
        (me.available, me.locked_escrow),
        (FUNDS - earned + compensation, 0)
    );
    let provider = account_as(&t, &n).await;
    // the termination also burned a share of the stake
    assert_eq!(
        (provider.available, provider.locked_collateral, provider.staked),
        (
            FUNDS - STAKE - COLLATERAL + earned,
            0,
            STAKE - bps_of(STAKE, STAKE_SLASH_BPS)
        )
    );
    let entry = client
        .providers()
        .await
        .into_iter()
        .find(|p| p.peer == n.peer)
        .unwrap();
    assert_eq!((entry.terminated_deals, entry.faulted_epochs), (1, F));
    assert_eq!(t.metric("crowd_tracker_slashed_total"), Some(slashed as f64));
    assert_eq!(t.metric("crowd_tracker_terminations_total"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_replica_fails_its_next_window_and_faults() {
    let t = tracker(TrackerOptions::default());
    let n = node(&t, node_options(None));
    let client = Client::start(&t, seeded_key(3)).await;
    fund(&client, &[&n]).await;
    let id = deal_with(&client, &n, 20, 3).await;
    wait_deal(&client, id, "deal proven once", |d| d.proven_epochs >= 1).await;

    // every byte of the replica changes on disk
    let replica = n.path(&format!("replicas/{id:020}.replica"));
    let mut bytes = std::fs::read(&replica).unwrap();
    for b in bytes.iter_mut() {
        *b ^= 0x5a;
    }
    std::fs::write(&replica, &bytes).unwrap();
    // the open epoch may have been proven before the change; the next cannot be
    let next = client.info().await.epoch + 1;

    let d = wait_deal(&client, id, "the epoch after the corruption settled", |d| {
        d.history.iter().any(|r| r.epoch == next)
    })
    .await;
    let record = d.history.iter().find(|r| r.epoch == next).unwrap();
    assert!(!record.proven, "{:?}", d.history);
    assert!(d.history.iter().filter(|r| r.epoch >= next).all(|r| !r.proven));
    assert!(d.faulted_epochs >= 1 && d.consecutive_faults >= 1, "{d:?}");
    let fee = bps_of(COLLATERAL, FAULT_FEE_BPS);
    if d.state == "active" {
        assert_eq!(d.collateral, COLLATERAL - fee * u128::from(d.faulted_epochs));
    }
    assert!(t.metric("crowd_tracker_faults_total").unwrap() >= 1.0);
}

/// One run of a fixed scenario: seeded tracker, node and client keys, one
/// deal with a fixed start; optionally the tracker is SIGKILLed mid-epoch
/// while the deal is being proven and restarted. Returns every account and
/// the deal once it completed.
async fn scenario(kill: bool) -> (BTreeMap<PeerId, AccountView>, DealView, Daemon) {
    let mut t = tracker(TrackerOptions {
        key_seed: Some(60),
        ..TrackerOptions::default()
    });
    let n = node(&t, node_options(Some(61)));
    let client = Client::start(&t, seeded_key(62)).await;
    fund(&client, &[&n]).await;
    let start = 14;
    assert!(
        client.info().await.epoch + 4 < start,
        "setup took longer than the fixed start allows"
    );
    let id = client
        .store(&n, &random_bytes(PIECE, 60), terms(start, 4, 60))
        .await;
    if kill {
        let d = wait_deal(&client, id, "deal proven once", |d| d.proven_epochs >= 1).await;
        // into the next epoch, then half of it
        let settled = d.history.last().unwrap().epoch;
        eventually(WAIT, "the next epoch settled", || async {
            (client.info().await.epoch > settled + 1).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        t.kill();
        t.start();
        client.connect(&t).await;
    }
    let d = wait_deal(&client, id, "deal completed", |d| d.state == "completed").await;
    let mut accounts = BTreeMap::new();
    accounts.insert(client.peer(), client.account(client.peer()).await);
    // (the tracker's own account is not asked: a swarm cannot dial its own peer id)
    accounts.insert(n.peer, account_as(&t, &n).await);
    (accounts, d, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_killed_mid_epoch_keeps_every_balance_and_its_ledger_verifies() {
    let (undisturbed, deal_a, a) = scenario(false).await;
    drop(a);
    let (killed, deal_b, t) = scenario(true).await;
    assert_eq!(killed, undisturbed);
    assert_eq!(deal_b.history, deal_a.history);
    assert_eq!(
        (deal_b.paid, deal_b.proven_epochs, deal_b.faulted_epochs),
        (deal_a.paid, 4, 0)
    );

    // the restarted tracker's ledger replays from genesis, while it runs
    let out = t.exec(&["ledger", "verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("ledger ok: "), "{stdout}");
    assert_eq!(stdout.lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_command_lines_and_homes_are_one_line_errors() {
    let t = tracker(TrackerOptions {
        devnet: false,
        ..TrackerOptions::default()
    });
    let client = Client::start(&t, seeded_key(4)).await;
    let r = client
        .ask(TrackerRequest::Faucet {
            account: client.peer(),
            amount: 1,
        })
        .await;
    assert!(matches!(&r, Err(m) if m.contains("faucet is disabled")), "{r:?}");
    // SIGTERM stops it cleanly
    let mut t = t;
    let status = t.stop().unwrap();
    assert!(status.success(), "{status}: {}", t.log());
    assert!(!t.path("tracker.json").exists());
    let cases: [&[&str]; 4] = [
        &["run", "--devnet"],
        &["run", "--epoch-secs", "0"],
        &["run", "--epoch-secs", "x"],
        &["ledger", "nope"],
    ];
    for args in cases {
        let out = t.exec(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // verify on a home with no ledger
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crowd_tests::bin("crowd-tracker"))
        .args(["ledger", "verify", "--home"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1);
}

/// `crowd ARGS` on a client home; (success, stdout, stderr).
fn crowd(home: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(crowd_tests::bin("crowd"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("CROWD_HOME")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_enters_at_genesis_moves_by_transfer_and_leaves_by_withdrawal() {
    // a network without a faucet: the genesis allocation is all the money
    let alice = seeded_key(70);
    let provider = seeded_key(71);
    let (alice_id, provider_id) = (alice.public().to_peer_id(), provider.public().to_peer_id());
    let mut t = tracker(TrackerOptions {
        devnet: false,
        allocate: vec![format!("{alice_id}=1000000")],
        ..TrackerOptions::default()
    });
    // alice's client home, and a provider's key file (as in a node's home)
    let home = tempfile::tempdir().unwrap();
    crowd_tests::write_key(&home.path().join("identity.key"), &alice);
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "tracker_address = \"{}\"\ntracker_peer_id = \"{}\"\n",
            t.tcp_addr(),
            t.peer
        ),
    )
    .unwrap();
    let node_home = tempfile::tempdir().unwrap();
    let node_key = node_home.path().join("identity.key");
    crowd_tests::write_key(&node_key, &provider);

    let (ok, out, err) = crowd(home.path(), &["balance", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["available"], 1_000_000);

    // alice pays the provider; the same command twice pays twice (a fresh nonce each)
    for left in [700_000, 400_000] {
        let (ok, out, err) = crowd(
            home.path(),
            &["transfer", &provider_id.to_string(), "300000", "--json"],
        );
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["available"], left, "{out}");
    }
    // the provider takes its earnings out with its node's key
    let (ok, out, err) = crowd(
        home.path(),
        &["withdraw", "250000", "--identity", node_key.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        format!("withdrew 250000 from {provider_id}; available 350000")
    );
    let client = Client::start(&t, provider.clone()).await;
    assert_eq!(client.account(provider_id).await.available, 350_000);

    // bad input: one line each, nothing moves
    let missing = node_home.path().join("nope.key");
    for (args, needle) in [
        (vec!["transfer", "not-a-peer", "5"], "not a peer id"),
        (vec!["transfer", &provider_id.to_string(), "400001"], "available"),
        (vec!["transfer", &alice_id.to_string(), "5"], "oneself"),
        (vec!["withdraw", "0"], "zero"),
        (
            vec!["withdraw", "1", "--identity", missing.to_str().unwrap()],
            "cannot read",
        ),
    ] {
        let (ok, _, err) = crowd(home.path(), &args);
        assert!(!ok, "{args:?} succeeded");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let (_, out, _) = crowd(home.path(), &["balance", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["available"], 400_000);

    // every move is a signed ledger input: the log replays to the state,
    // with the genesis allocation, after a restart too
    let out = t.exec(&["ledger", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    t.stop().unwrap();
    t.start();
    let out = t.exec(&["ledger", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let client = Client::start(&t, provider).await;
    assert_eq!(client.account(provider_id).await.available, 350_000);
}

/// A provider that goes silent (SIGSTOP: its connections stay open, nothing
/// answers) with more deals than the tracker has request slots cannot starve
/// an honest provider's challenges: at most `max_requests_per_provider` of
/// the `max_provider_requests` slots wait on one provider. With the per-
/// provider bound at the total, the silent deals (lower ids, dispatched
/// first) take every slot until each epoch's deadline and the honest deal
/// faults in the same epochs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_provider_with_many_deals_does_not_starve_an_honest_providers_challenges() {
    let t = tracker(TrackerOptions {
        config: "max_provider_requests = 2\nmax_requests_per_provider = 1".into(),
        ..TrackerOptions::default()
    });
    let mut silent = node(&t, node_options(None));
    let honest = node(&t, node_options(None));
    let client = Client::start(&t, seeded_key(3)).await;
    fund(&client, &[&silent, &honest]).await;
    let start = client.info().await.epoch + LEAD + 2;
    let mut silent_deals = Vec::new();
    for seed in 10..14 {
        let piece = random_bytes(PIECE, seed);
        silent_deals.push(client.store(&silent, &piece, terms(start, 20, seed)).await);
    }
    let honest_deal = client
        .store(&honest, &random_bytes(PIECE, 20), terms(start, 12, 20))
        .await;
    assert!(
        silent_deals.iter().all(|d| *d < honest_deal),
        "the silent deals must come first in dispatch order"
    );
    for id in silent_deals.iter().chain([&honest_deal]) {
        wait_deal(&client, *id, "every deal proven once", |d| d.proven_epochs >= 1).await;
    }
    silent.pause();

    // the silent deals fault until they are terminated ...
    let mut silent_epochs = std::collections::BTreeSet::new();
    for id in &silent_deals {
        let d = wait_deal(&client, *id, "silent deal terminated", |d| {
            d.state == "terminated"
        })
        .await;
        assert_eq!(d.faulted_epochs, F, "{d:?}");
        silent_epochs.extend(d.history.iter().filter(|r| !r.proven).map(|r| r.epoch));
    }
    let last = *silent_epochs.last().unwrap();
    // ... and in those very epochs the honest deal was challenged and proven
    // (or ended: a starved deal is terminated after F faults)
    let h = wait_deal(
        &client,
        honest_deal,
        "honest deal settled past the silent faults",
        |d| d.history.last().is_some_and(|r| r.epoch >= last) || d.state != "active",
    )
    .await;
    for e in &silent_epochs {
        let r = h.history.iter().find(|r| r.epoch == *e);
        assert!(
            r.is_some_and(|r| r.proven),
            "honest deal not proven in epoch {e}, while the silent provider held requests: {:?}",
            h.history
        );
    }
    assert_eq!(h.faulted_epochs, 0, "{h:?}");
    // the bound was what let it through: requests to the silent provider were held back
    assert!(
        t.metric("crowd_tracker_provider_requests_deferred_total")
            .unwrap()
            > 0.0,
        "no request was deferred"
    );
    silent.resume();
}
