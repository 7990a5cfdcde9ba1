//! Random sequences of valid, invalid, forged, replayed and duplicated inputs
//! (with real seal and window proofs), checking every invariant after every
//! step and that the log replays to the live ledger.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{key, Terms, World};
use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::{Amount, SealCommitment, Signed};
use crowd_tracker::{DealState, Event, Input};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// How a deal step goes wrong, if at all.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Honest,
    /// Signed by a stranger.
    Stranger,
    /// A wrong replica id / seed / randomness.
    BadProof,
    /// A window proof for the epoch before or after the open one.
    WrongEpoch(bool),
}

#[derive(Debug, Clone)]
enum Op {
    Mint {
        who: usize,
        amount: Amount,
    },
    Withdraw {
        who: usize,
        amount: Amount,
    },
    Transfer {
        from: usize,
        to: usize,
        amount: Amount,
    },
    Register {
        who: usize,
        capacity: u64,
    },
    Publish {
        client: usize,
        provider: usize,
        terms: (usize, Amount, u64, u64, Amount),
        /// 0: honest, 1: proposal by a stranger, 2: acceptance by a stranger.
        forge: u8,
    },
    /// The client locks a proposal's escrow (paid admission); `forge`:
    /// signed by a stranger.
    Admit {
        client: usize,
        provider: usize,
        terms: (usize, Amount, u64, u64, Amount),
        forge: bool,
    },
    /// Publish an earlier admitted proposal (with the provider's acceptance).
    PublishAdmitted {
        back: usize,
    },
    /// The next lifecycle step of a deal (pre-commit, seal proof, window proof).
    Step {
        deal: usize,
        fault: Fault,
    },
    EndEpoch {
        forge: bool,
    },
    /// The client registers its latest `n` unregistered live deals as a file.
    RegisterFile {
        client: usize,
        n: usize,
        k: u32,
    },
    /// Remove a file, by its owner or (`stranger`) someone else.
    Remove {
        file: usize,
        stranger: bool,
    },
    Renew {
        file: usize,
        epochs: u64,
        stranger: bool,
    },
    /// A repair deal for a file's piece: 0 honest, 1 job not signed by the
    /// tracker, 2 acceptance by someone else than the provider.
    Repair {
        file: usize,
        index: u32,
        provider: usize,
        price: Amount,
        forge: u8,
    },
    /// The tracker's retrieval fault on a file's piece (`forge`: signed by
    /// a stranger).
    RetrievalFault {
        file: usize,
        index: u32,
        forge: bool,
    },
    /// Apply an earlier accepted input again.
    Replay {
        back: usize,
    },
    /// Apply an earlier accepted input with a flipped signature bit.
    Tamper {
        back: usize,
    },
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        6 => Just(Fault::Honest),
        1 => Just(Fault::Stranger),
        1 => Just(Fault::BadProof),
        1 => any::<bool>().prop_map(Fault::WrongEpoch),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..4usize, 0..5_000u128).prop_map(|(who, amount)| Op::Mint { who, amount }),
        1 => (0..4usize, 0..3_000u128).prop_map(|(who, amount)| Op::Withdraw { who, amount }),
        1 => (0..4usize, 0..5usize, 0..3_000u128).prop_map(|(from, to, amount)| Op::Transfer { from, to, amount }),
        // capacity 0 is a provider leaving (its stake back if it has no live deal)
        1 => (0..4usize, prop_oneof![1 => Just(0u64), 3 => 1..20_000u64])
            .prop_map(|(who, capacity)| Op::Register { who, capacity }),
        4 => (0..4usize, 0..4usize, (0..2usize, 0..50u128, 1..6u64, 1..6u64, 0..400u128), 0..6u8)
            .prop_map(|(client, provider, terms, forge)| Op::Publish { client, provider, terms, forge }),
        2 => (0..4usize, 0..4usize, (0..2usize, 0..50u128, 1..6u64, 1..6u64, 0..400u128), 0..6u8)
            .prop_map(|(client, provider, terms, f)| Op::Admit { client, provider, terms, forge: f == 0 }),
        2 => any::<usize>().prop_map(|back| Op::PublishAdmitted { back }),
        8 => (any::<usize>(), fault()).prop_map(|(deal, fault)| Op::Step { deal, fault }),
        4 => (0..8u8).prop_map(|f| Op::EndEpoch { forge: f == 0 }),
        2 => (0..4usize, 1..4usize, 1..3u32).prop_map(|(client, n, k)| Op::RegisterFile { client, n, k }),
        1 => (any::<usize>(), 0..6u8).prop_map(|(file, s)| Op::Remove { file, stranger: s == 0 }),
        1 => (any::<usize>(), 1..4u64, 0..6u8)
            .prop_map(|(file, epochs, s)| Op::Renew { file, epochs, stranger: s == 0 }),
        3 => (any::<usize>(), 0..3u32, 0..4usize, 0..30u128, 0..8u8)
            .prop_map(|(file, index, provider, price, forge)| Op::Repair { file, index, provider, price, forge }),
        1 => (any::<usize>(), 0..3u32, 0..4u8)
            .prop_map(|(file, index, f)| Op::RetrievalFault { file, index, forge: f == 0 }),
        1 => any::<usize>().prop_map(|back| Op::Replay { back }),
        1 => any::<usize>().prop_map(|back| Op::Tamper { back }),
    ]
}

fn terms_of((piece, price, lead, duration, collateral): (usize, Amount, u64, u64, Amount)) -> Terms {
    Terms {
        piece,
        price,
        lead,
        duration,
        collateral,
    }
}

fn actor(i: usize) -> Keypair {
    key(1 + i as u8)
}

fn stranger() -> Keypair {
    key(99)
}

fn flip_signature(input: &Input) -> Option<Input> {
    let mut input = input.clone();
    let flip = |v: &mut Vec<u8>| v[0] ^= 0x80;
    match &mut input {
        Input::Mint { .. } => return None,
        Input::Withdraw(s) => flip(s.parts_mut().2),
        Input::RegisterProvider(s) => flip(s.parts_mut().2),
        Input::PublishDeal { acceptance, .. } => flip(acceptance.parts_mut().2),
        Input::AdmitProposal(s) => flip(s.parts_mut().2),
        Input::Transfer(s) => flip(s.parts_mut().2),
        Input::PreCommit(s) => flip(s.parts_mut().2),
        Input::SealProof(s) => flip(s.parts_mut().2),
        Input::WindowProof(s) => flip(s.parts_mut().2),
        Input::EndEpoch {
            tracker_signature, ..
        } => flip(tracker_signature),
        Input::RegisterFile(s) => flip(s.parts_mut().2),
        Input::RemoveFile(s) => flip(s.parts_mut().2),
        Input::RenewFile(s) => flip(s.parts_mut().2),
        Input::PublishRepair { job, .. } => flip(job.parts_mut().2),
        Input::RetrievalFault(s) => flip(s.parts_mut().2),
    }
    Some(input)
}

/// Builds the next lifecycle input for a deal, honest or faulty.
fn step(w: &mut World, deal: u64, fault: Fault) -> Input {
    let d = w.ledger.deal(deal).unwrap().clone();
    let provider = (0..4)
        .map(actor)
        .find(|k| k.public().to_peer_id() == d.proposal.provider)
        .unwrap();
    let signer = match fault {
        Fault::Stranger => stranger(),
        _ => provider.clone(),
    };
    let epoch = w.ledger.epoch();
    match (&d.state, w.has_sealed(deal)) {
        (DealState::PreCommitted { .. }, true) => {
            let seed = matches!(fault, Fault::BadProof).then_some([5; 32]);
            w.seal_proof_input(deal, &signer, seed)
        }
        (DealState::Active { .. }, true) | (DealState::Completed | DealState::Terminated, true) => {
            let (epoch, randomness) = match fault {
                Fault::BadProof => (epoch, Some([9; 32])),
                Fault::WrongEpoch(true) => (epoch + 1, None),
                Fault::WrongEpoch(false) => (epoch.saturating_sub(1), None),
                _ => (epoch, None),
            };
            w.window_proof_input(deal, &signer, epoch, randomness)
        }
        _ => {
            let input = w.pre_commit_input(deal, &signer);
            if !matches!(fault, Fault::BadProof) {
                return input;
            }
            let Input::PreCommit(s) = &input else {
                unreachable!()
            };
            let (_, c) = s.open(&w.ledger.network(), None).unwrap();
            let c = SealCommitment {
                replica_id: [3; 32],
                ..c
            };
            Input::PreCommit(Signed::sign(&signer, &w.ledger.network(), &c).unwrap())
        }
    }
}

/// Runs `ops`, checking every step; returns every event emitted.
fn run(ops: Vec<Op>) -> Result<Vec<Event>, TestCaseError> {
    // a genesis with stakes and a collateral floor, so registrations,
    // terminations and leaving move stake too
    let mut w = World::with_config(|c| {
        c.provider_stake = 500;
        c.stake_slash_bps = 2_000;
        c.min_collateral_per_gib = 1_000;
    });
    // Genesis setup shared by every case: everyone funded, two providers
    // registered, so random sequences reach deals; random ops add to it.
    for who in 0..4 {
        w.mint(&actor(who), 5_000);
    }
    for who in [2, 3] {
        w.register(&actor(who), 40_000);
    }
    let mut accepted: Vec<Input> = Vec::new();
    let mut paid = BTreeSet::new();
    let mut proven = BTreeSet::new();
    let mut served_wrong = BTreeSet::new();
    let mut minted: Amount = w.ledger.supply().minted;
    let mut all = Vec::new();
    // admitted proposals (with their parties), and what became of them
    let mut admitted: Vec<(crowd_protocol::DealProposal, usize, usize)> = Vec::new();
    let (mut admitted_ids, mut lapsed, mut published) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for op in ops {
        let mut admitting = None;
        let input = match op {
            Op::Admit {
                client,
                provider,
                terms,
                forge,
            } => {
                let p = w.proposal(&actor(client), &actor(provider), terms_of(terms));
                let signer = if forge { stranger() } else { actor(client) };
                admitting = Some((p.clone(), client, provider));
                Input::AdmitProposal(Signed::sign(&signer, &w.ledger.network(), &p).unwrap())
            }
            Op::PublishAdmitted { back } => {
                if admitted.is_empty() {
                    continue;
                }
                let (p, c, pr) = &admitted[back % admitted.len()];
                w.publish_input(p, &actor(*c), &actor(*pr))
            }
            Op::Mint { who, amount } => Input::Mint {
                account: common::id(&actor(who)),
                amount,
                nonce: w.ledger.mints(),
            },
            Op::Withdraw { who, amount } => w.withdraw_input(&actor(who), amount),
            // `to` 4 is an account nobody holds a key of yet
            Op::Transfer { from, to, amount } => w.transfer_input(&actor(from), &actor(to), amount),
            Op::Register { who, capacity } => w.register_input(&actor(who), capacity),
            Op::Publish {
                client,
                provider,
                terms,
                forge,
            } => {
                let (c, p) = (actor(client), actor(provider));
                let proposal = w.proposal(&c, &p, terms_of(terms));
                match forge {
                    1 => w.publish_input(&proposal, &stranger(), &p),
                    2 => w.publish_input(&proposal, &c, &stranger()),
                    _ => w.publish_input(&proposal, &c, &p),
                }
            }
            Op::Step { deal, fault } => {
                // a deal by id (archived ones are gone: nothing to step)
                let ever = w.ledger.deals().count() as u64 + w.ledger.archived().0;
                if ever == 0 {
                    continue;
                }
                let id = deal as u64 % ever;
                if w.ledger.deal(id).is_none() {
                    continue;
                }
                step(&mut w, id, fault)
            }
            Op::EndEpoch { forge } => {
                if forge {
                    crowd_tracker::sign_epoch(&stranger(), w.ledger.epoch(), &w.ledger.head()).unwrap()
                } else {
                    w.end_epoch_input()
                }
            }
            Op::RegisterFile { client, n, k } => {
                let c = actor(client);
                let mut deals: Vec<u64> = w
                    .ledger
                    .deals()
                    .filter(|d| d.client() == common::id(&c) && d.state.is_live())
                    .filter(|d| w.ledger.deal_file(d.id).is_none())
                    .map(|d| d.id)
                    .collect();
                deals = deals.split_off(deals.len().saturating_sub(n));
                if deals.is_empty() {
                    continue;
                }
                w.register_file_input(&c, &deals, k)
            }
            Op::Remove { file, stranger: s }
            | Op::Renew {
                file, stranger: s, ..
            } => {
                let files = w.ledger.files().count();
                if files == 0 {
                    continue;
                }
                let f = w.ledger.files().nth(file % files).unwrap().clone();
                let signer = if s {
                    stranger()
                } else {
                    (0..4).map(actor).find(|k| common::id(k) == f.client).unwrap()
                };
                match op {
                    Op::Renew { epochs, .. } => w.renew_input(&signer, f.id, epochs),
                    _ => w.remove_input(&signer, f.id),
                }
            }
            Op::Repair {
                file,
                index,
                provider,
                price,
                forge,
            } => {
                let files = w.ledger.files().count();
                if files == 0 {
                    continue;
                }
                let id = w.ledger.files().nth(file % files).unwrap().id;
                let p = actor(provider);
                let tracker = w.tracker.clone();
                let (job_signer, acceptor) = match forge {
                    1 => (stranger(), p.clone()),
                    2 => (tracker, stranger()),
                    _ => (tracker, p.clone()),
                };
                match w.repair_input(id, index, &p, price, &job_signer, &acceptor) {
                    Some(input) => input,
                    None => continue,
                }
            }
            Op::RetrievalFault { file, index, forge } => {
                let files = w.ledger.files().count();
                if files == 0 {
                    continue;
                }
                let id = w.ledger.files().nth(file % files).unwrap().id;
                let signer = if forge { stranger() } else { w.tracker.clone() };
                match w.retrieval_fault_input(id, index, &signer) {
                    Some(input) => input,
                    None => continue,
                }
            }
            Op::Replay { back } | Op::Tamper { back } if accepted.is_empty() => {
                let _ = back;
                continue;
            }
            Op::Replay { back } => {
                // an input accepted once is never accepted again
                let input = accepted[back % accepted.len()].clone();
                w.refuse(input);
                continue;
            }
            Op::Tamper { back } => {
                if let Some(input) = flip_signature(&accepted[back % accepted.len()]) {
                    w.refuse(input);
                }
                continue;
            }
        };

        let before = w.ledger.clone();
        let log_len = w.log.len();
        match w.apply(input.clone()) {
            Err(_) => {
                prop_assert_eq!(&w.ledger, &before);
                prop_assert_eq!(w.log.len(), log_len);
            }
            Ok(events) => {
                if let Err(e) = w.ledger.check_invariants() {
                    return Err(TestCaseError::fail(format!("{e} after {input:?}")));
                }
                admitted.extend(admitting.take());
                for e in &events {
                    match e {
                        Event::Admitted { proposal, .. } => {
                            prop_assert!(admitted_ids.insert(*proposal), "admitted twice: {e:?}");
                        }
                        Event::AdmissionLapsed { proposal, .. } => {
                            prop_assert!(admitted_ids.contains(proposal), "lapsed unadmitted: {e:?}");
                            prop_assert!(
                                !published.contains(proposal),
                                "a published admission lapsed: {e:?}"
                            );
                            prop_assert!(lapsed.insert(*proposal), "lapsed twice: {e:?}");
                        }
                        Event::DealPublished { proposal, .. } => {
                            prop_assert!(!lapsed.contains(proposal), "a lapsed admission published: {e:?}");
                            published.insert(*proposal);
                        }
                        Event::WindowProven { deal_id, epoch } => {
                            proven.insert((*deal_id, *epoch));
                        }
                        Event::Paid { deal_id, epoch, .. } => {
                            prop_assert!(paid.insert((*deal_id, *epoch)), "paid twice: {e:?}");
                            prop_assert!(
                                proven.contains(&(*deal_id, *epoch)),
                                "paid without a proof: {e:?}"
                            );
                            prop_assert!(
                                !served_wrong.contains(&(*deal_id, *epoch)),
                                "paid for an epoch it served wrong bytes in: {e:?}"
                            );
                        }
                        Event::RetrievalFaulted { deal_id, epoch, .. } => {
                            prop_assert!(
                                !paid.contains(&(*deal_id, *epoch)),
                                "a settled epoch faulted: {e:?}"
                            );
                            served_wrong.insert((*deal_id, *epoch));
                        }
                        Event::Archived { deals, files } => {
                            // gone from the state, and nothing live among them
                            for d in deals {
                                prop_assert!(!d.state.is_live(), "a live deal archived: {d:?}");
                                prop_assert!(w.ledger.deal(d.id).is_none());
                            }
                            for f in files {
                                prop_assert!(w.ledger.file(f.id).is_none());
                            }
                        }
                        Event::Minted { amount, .. } => minted += amount,
                        _ => {}
                    }
                }
                prop_assert_eq!(w.ledger.supply().minted, minted);
                // the same input again is refused and changes nothing
                w.refuse(input.clone());
                accepted.push(input);
                all.extend(events);
            }
        }
    }
    w.assert_replays();
    Ok(all)
}

/// Failures are saved relative to the package root (where `cargo test`
/// runs) and replayed first on every run; commit the file.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 48,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/ledger_proptest.txt",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ledger_sequence_proptest(ops in proptest::collection::vec(op(), 10..120)) {
        run(ops)?;
    }
}

fn count(events: &[Event], f: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

/// Fixed sequences through the same driver, so the property above is known
/// to reach payments, completions, faults, terminations and cancellations
/// (not left to chance).
#[test]
fn the_driver_reaches_every_lifecycle_outcome() {
    let mut ops = vec![
        Op::Mint {
            who: 0,
            amount: 4_000,
        },
        Op::Mint {
            who: 1,
            amount: 4_000,
        },
        Op::Register {
            who: 1,
            capacity: 20_000,
        },
    ];
    // deal 0 honest, deal 1 stops proving, deal 2 is never sealed
    for (lead, duration) in [(2, 3), (3, 6), (4, 2)] {
        ops.push(Op::Publish {
            client: 0,
            provider: 1,
            terms: (0, 10, lead, duration, 300),
            forge: 0,
        });
    }
    for round in 0..10 {
        ops.push(Op::Step {
            deal: 0,
            fault: Fault::Honest,
        });
        let fault = if round < 4 { Fault::Honest } else { Fault::BadProof };
        ops.push(Op::Step { deal: 1, fault });
        if round == 2 {
            ops.push(Op::EndEpoch { forge: true });
        }
        ops.push(Op::EndEpoch { forge: false });
        ops.push(Op::Replay { back: round * 3 });
        ops.push(Op::Tamper { back: round * 5 });
    }
    let events = run(ops).unwrap();
    assert_eq!(count(&events, |e| matches!(e, Event::Paid { deal_id: 0, .. })), 3);
    assert_eq!(
        count(&events, |e| matches!(e, Event::Completed { deal_id: 0, .. })),
        1
    );
    assert!(count(&events, |e| matches!(e, Event::Paid { deal_id: 1, .. })) >= 1);
    assert_eq!(
        count(&events, |e| matches!(e, Event::Faulted { deal_id: 1, .. })),
        3
    );
    assert_eq!(
        count(&events, |e| matches!(e, Event::Terminated { deal_id: 1, .. })),
        1
    );
    assert_eq!(
        count(&events, |e| matches!(e, Event::RepairNeeded { deal_id: 1, .. })),
        1
    );
    assert_eq!(
        count(&events, |e| matches!(e, Event::Cancelled { deal_id: 2, .. })),
        1
    );
}

/// The random walk above does reach files, repairs, renewals, removals,
/// retrieval faults and archiving
/// (counted over a fixed-seed sample of sequences, so this cannot pass by
/// luck one day and fail the next).
#[test]
fn the_random_walk_reaches_repairs_renewals_and_removals() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let strategy = proptest::collection::vec(op(), 60..200);
    let mut all = Vec::new();
    for _ in 0..64 {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        all.extend(run(ops).unwrap());
    }
    for (what, n) in [
        (
            "FileRegistered",
            count(&all, |e| matches!(e, Event::FileRegistered { .. })),
        ),
        (
            "RepairPublished",
            count(&all, |e| matches!(e, Event::RepairPublished { .. })),
        ),
        (
            "FileRenewed",
            count(&all, |e| matches!(e, Event::FileRenewed { .. })),
        ),
        (
            "FileRemoved",
            count(&all, |e| matches!(e, Event::FileRemoved { .. })),
        ),
        (
            "FileExpired",
            count(&all, |e| matches!(e, Event::FileExpired { .. })),
        ),
        ("Admitted", count(&all, |e| matches!(e, Event::Admitted { .. }))),
        (
            "Transferred",
            count(&all, |e| matches!(e, Event::Transferred { .. })),
        ),
        (
            "StakeSlashed",
            count(&all, |e| matches!(e, Event::StakeSlashed { .. })),
        ),
        (
            "StakeReturned",
            count(&all, |e| matches!(e, Event::StakeReturned { .. })),
        ),
        (
            "AdmissionLapsed",
            count(&all, |e| matches!(e, Event::AdmissionLapsed { .. })),
        ),
        (
            "RetrievalFaulted",
            count(&all, |e| matches!(e, Event::RetrievalFaulted { .. })),
        ),
        (
            "Archived (a file)",
            count(
                &all,
                |e| matches!(e, Event::Archived { files, .. } if !files.is_empty()),
            ),
        ),
        (
            "Archived (a terminated deal)",
            count(
                &all,
                |e| matches!(e, Event::Archived { deals, .. } if deals.iter().any(|d| d.state == DealState::Terminated)),
            ),
        ),
    ] {
        assert!(n > 0, "the random walk never reached {what}");
    }
}
