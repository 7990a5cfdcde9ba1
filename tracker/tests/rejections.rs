//! One test per kind of bad input: each is refused with its typed error and
//! leaves the ledger unchanged ([`World::refuse`] checks that).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{id, key, Terms, World};
use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::{NetworkId, PieceId, PieceReceipt, SealCommitment, Signed};
use crowd_tracker::{
    replay, sign_epoch, DealId, Event, Input, Ledger, LedgerConfig, LedgerError, ProviderRegistration,
};

fn setup(w: &mut World) -> (Keypair, Keypair) {
    let (client, provider) = (key(1), key(2));
    w.mint(&client, 10_000);
    w.mint(&provider, 10_000);
    w.register(&provider, 1 << 20);
    (client, provider)
}

/// A published, pre-committed deal whose seed is drawn (epoch 1 is open).
fn seeded(w: &mut World) -> (Keypair, Keypair, DealId) {
    let (client, provider) = setup(w);
    let deal = w.publish(&client, &provider, Terms::default());
    let input = w.pre_commit_input(deal, &provider);
    w.apply(input).unwrap();
    w.end_epoch();
    (client, provider, deal)
}

fn flip_signature(input: &mut Input) {
    let flip = |v: &mut Vec<u8>| v[0] ^= 1;
    match input {
        Input::Withdraw(s) => flip(s.parts_mut().2),
        Input::RegisterProvider(s) => flip(s.parts_mut().2),
        Input::PublishDeal { proposal, .. } => flip(proposal.parts_mut().2),
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
        Input::PublishRepair { acceptance, .. } => flip(acceptance.parts_mut().2),
        Input::RetrievalFault(s) => flip(s.parts_mut().2),
        Input::Mint { .. } => {}
    }
}

#[test]
fn mint_needs_the_faucet_and_the_next_nonce() {
    let mut w = World::with_config(|c| c.faucet = false);
    let a = id(&key(1));
    let err = w.refuse(Input::Mint {
        account: a,
        amount: 5,
        nonce: 0,
    });
    assert!(matches!(err, LedgerError::FaucetDisabled));

    let mut w = World::new();
    w.mint(&key(1), 5);
    let replayed = Input::Mint {
        account: a,
        amount: 5,
        nonce: 0,
    };
    assert!(matches!(
        w.refuse(replayed),
        LedgerError::Duplicate { what: "mint" }
    ));
    let gap = Input::Mint {
        account: a,
        amount: 5,
        nonce: 7,
    };
    assert!(matches!(
        w.refuse(gap),
        LedgerError::NonceGap { expected: 1, got: 7 }
    ));
    let zero = Input::Mint {
        account: a,
        amount: 0,
        nonce: 1,
    };
    assert!(matches!(w.refuse(zero), LedgerError::ZeroAmount { .. }));
    let overflow = Input::Mint {
        account: a,
        amount: u128::MAX,
        nonce: 1,
    };
    assert!(matches!(w.refuse(overflow), LedgerError::Overflow { .. }));
}

/// Every signed input names its network (the genesis head): a valid
/// signature made for another network's ledger is refused.
#[test]
fn inputs_signed_for_another_network_are_refused() {
    let mut w = World::new();
    let (client, provider, _) = seeded(&mut w);
    let elsewhere = crowd_protocol::NetworkId([1; 32]);
    assert_ne!(w.ledger.network(), elsewhere);
    let reg = ProviderRegistration {
        capacity: 1,
        price_per_gib_epoch: 1,
        collateral_per_gib: 1,
        nonce: w.ledger.account(&id(&provider)).nonce,
    };
    let p = w.proposal(&client, &provider, Terms::default());
    let inputs = [
        Input::RegisterProvider(Signed::sign(&provider, &elsewhere, &reg).unwrap()),
        Input::AdmitProposal(Signed::sign(&client, &elsewhere, &p).unwrap()),
        Input::Withdraw(
            Signed::sign(
                &client,
                &elsewhere,
                &crowd_tracker::WithdrawRequest {
                    amount: 1,
                    nonce: w.ledger.account(&id(&client)).nonce,
                },
            )
            .unwrap(),
        ),
    ];
    for input in inputs {
        let err = w.refuse(input);
        assert!(matches!(err, LedgerError::WrongNetwork { .. }), "{err}");
        assert!(err.to_string().contains(&elsewhere.to_string()), "{err}");
    }
    // the same inputs signed for this network are taken
    let input = Input::RegisterProvider(Signed::sign(&provider, &w.ledger.network(), &reg).unwrap());
    w.apply(input).unwrap();
}

#[test]
fn forged_signatures_are_refused_for_every_signed_input() {
    let mut w = World::new();
    let (client, provider, deal) = seeded(&mut w);
    let p = w.proposal(&client, &provider, Terms::default());
    let mut inputs = vec![
        w.withdraw_input(&client, 1),
        w.register_input(&provider, 1),
        w.publish_input(&p, &client, &provider),
        w.pre_commit_input(deal, &provider),
        w.seal_proof_input(deal, &provider, None),
        w.end_epoch_input(),
    ];
    for input in &mut inputs {
        flip_signature(input);
        let err = w.refuse(input.clone());
        assert!(
            matches!(
                err,
                LedgerError::BadSignature { .. } | LedgerError::BadEpochSignature { .. }
            ),
            "{err}"
        );
    }
    // a body changed after signing
    let mut input = w.withdraw_input(&client, 1);
    if let Input::Withdraw(s) = &mut input {
        let body = s.parts_mut().0;
        let last = body.len() - 1;
        body[last] ^= 1;
    }
    assert!(matches!(w.refuse(input), LedgerError::BadSignature { .. }));
}

#[test]
fn messages_signed_by_the_wrong_party_are_refused() {
    let mut w = World::new();
    let (client, provider, deal) = seeded(&mut w);
    let stranger = key(9);
    // proposal signed by someone other than the client it names
    let p = w.proposal(&client, &provider, Terms::default());
    let err = w.refuse(w.publish_input(&p, &stranger, &provider));
    assert!(
        matches!(
            err,
            LedgerError::WrongSigner {
                what: "deal-proposal",
                ..
            }
        ),
        "{err}"
    );
    // acceptance signed by someone other than the provider
    let err = w.refuse(w.publish_input(&p, &client, &stranger));
    assert!(
        matches!(
            err,
            LedgerError::WrongSigner {
                what: "deal-acceptance",
                ..
            }
        ),
        "{err}"
    );
    // seal proof, pre-commit and window proof by a stranger
    let input = w.seal_proof_input(deal, &stranger, None);
    assert!(matches!(w.refuse(input), LedgerError::WrongSigner { .. }));
    let deal2 = w.publish(&client, &provider, Terms::default());
    let input = w.pre_commit_input(deal2, &stranger);
    assert!(matches!(w.refuse(input), LedgerError::WrongSigner { .. }));
    // the end of an epoch signed by a key other than the tracker's
    let input = sign_epoch(&stranger, w.ledger.epoch(), &w.ledger.head()).unwrap();
    assert!(matches!(w.refuse(input), LedgerError::BadEpochSignature { .. }));
}

#[test]
fn an_acceptance_of_another_proposal_is_refused() {
    let mut w = World::new();
    let (client, provider) = setup(&mut w);
    let p1 = w.proposal(&client, &provider, Terms::default());
    let p2 = w.proposal(&client, &provider, Terms::default());
    let Input::PublishDeal { acceptance, .. } = w.publish_input(&p2, &client, &provider) else {
        panic!()
    };
    let proposal = Signed::sign(&client, &w.ledger.network(), &p1).unwrap();
    let err = w.refuse(Input::PublishDeal {
        proposal,
        acceptance,
        receipt: None,
    });
    assert!(matches!(err, LedgerError::AcceptanceMismatch));
}

#[test]
fn replayed_messages_are_duplicates() {
    let mut w = World::new();
    let (client, provider) = setup(&mut w);
    // deal publication
    let p = w.proposal(&client, &provider, Terms::default());
    let publish = w.publish_input(&p, &client, &provider);
    w.apply(publish.clone()).unwrap();
    assert!(matches!(
        w.refuse(publish),
        LedgerError::Duplicate { what: "deal" }
    ));
    // account messages
    let withdraw = w.withdraw_input(&client, 1);
    w.apply(withdraw.clone()).unwrap();
    assert!(matches!(w.refuse(withdraw), LedgerError::Duplicate { .. }));
    let register = w.register_input(&provider, 1 << 20);
    w.apply(register.clone()).unwrap();
    assert!(matches!(w.refuse(register), LedgerError::Duplicate { .. }));
    // pre-commit, seal proof, window proof
    let deal: DealId = 0;
    let pre = w.pre_commit_input(deal, &provider);
    w.apply(pre.clone()).unwrap();
    assert!(matches!(w.refuse(pre), LedgerError::Duplicate { .. }));
    w.end_epoch();
    let seal = w.seal_proof_input(deal, &provider, None);
    w.apply(seal.clone()).unwrap();
    assert!(matches!(w.refuse(seal), LedgerError::Duplicate { .. }));
    w.run_to(3);
    let window = w.window_proof_input(deal, &provider, 3, None);
    w.apply(window.clone()).unwrap();
    assert!(matches!(w.refuse(window), LedgerError::Duplicate { .. }));
    // the same epoch twice
    let end = w.end_epoch_input();
    w.apply(end.clone()).unwrap();
    assert!(matches!(
        w.refuse(end),
        LedgerError::Stale {
            epoch: 3,
            current: 4,
            ..
        }
    ));
}

#[test]
fn a_nonce_gap_is_refused() {
    let mut w = World::new();
    let (client, _) = setup(&mut w);
    let input = Input::Withdraw(
        Signed::sign(
            &client,
            &w.ledger.network(),
            &crowd_tracker::WithdrawRequest { amount: 1, nonce: 5 },
        )
        .unwrap(),
    );
    assert!(matches!(
        w.refuse(input),
        LedgerError::NonceGap { expected: 0, got: 5 }
    ));
}

#[test]
fn bad_deal_terms_are_refused() {
    let mut w = World::new();
    let (client, provider) = setup(&mut w);
    type Tweak = Box<dyn Fn(&mut crowd_protocol::DealProposal)>;
    let cases: Vec<(Tweak, &str)> = vec![
        (Box::new(|p| p.duration_epochs = 0), "zero duration"),
        (Box::new(|p| p.start_epoch = 1), "too soon"),
        (Box::new(|p| p.piece_size = 0), "empty"),
        (Box::new(|p| p.price_per_epoch = u128::MAX), "overflow"),
        (Box::new(|p| p.start_epoch = u64::MAX), "end overflow"),
        (
            Box::new(|p| p.start_epoch = crowd_tracker::MAX_START_LEAD + 1),
            "far future",
        ),
    ];
    for (tweak, name) in cases {
        let mut p = w.proposal(&client, &provider, Terms::default());
        tweak(&mut p);
        let err = w.refuse(w.publish_input(&p, &client, &provider));
        assert!(
            matches!(
                err,
                LedgerError::InvalidProposal(_) | LedgerError::Overflow { .. }
            ),
            "{name}: {err}"
        );
    }
    // expired
    w.run_to(2);
    let mut p = w.proposal(&client, &provider, Terms::default());
    p.expiry_epoch = 1;
    let err = w.refuse(w.publish_input(&p, &client, &provider));
    assert!(matches!(
        err,
        LedgerError::Expired {
            expiry: 1,
            current: 2
        }
    ));
}

#[test]
fn funds_registration_and_capacity_are_checked() {
    let mut w = World::new();
    let (client, provider) = setup(&mut w);
    // unregistered provider
    let other = key(3);
    w.mint(&other, 10_000);
    let p = w.proposal(&client, &other, Terms::default());
    let err = w.refuse(w.publish_input(&p, &client, &other));
    assert!(matches!(err, LedgerError::NotRegistered(_)));
    // not enough escrow
    let terms = Terms {
        price: 5_000,
        ..Terms::default()
    };
    let p = w.proposal(&client, &provider, terms);
    let err = w.refuse(w.publish_input(&p, &client, &provider));
    assert!(
        matches!(err, LedgerError::InsufficientFunds { need: 20_000, .. }),
        "{err}"
    );
    // not enough collateral
    let terms = Terms {
        collateral: 10_001,
        ..Terms::default()
    };
    let p = w.proposal(&client, &provider, terms);
    let err = w.refuse(w.publish_input(&p, &client, &provider));
    assert!(
        matches!(err, LedgerError::InsufficientFunds { need: 10_001, .. }),
        "{err}"
    );
    // capacity
    w.register(&other, 4_000);
    let p = w.proposal(&client, &other, Terms::default());
    let err = w.refuse(w.publish_input(&p, &client, &other));
    assert!(matches!(
        err,
        LedgerError::CapacityExceeded {
            free: 4_000,
            need: 4096,
            ..
        }
    ));
    // withdrawing more than is free
    let input = w.withdraw_input(&client, 10_001);
    assert!(matches!(w.refuse(input), LedgerError::InsufficientFunds { .. }));
    // a registration with a stale nonce
    let reg = ProviderRegistration {
        capacity: 1,
        price_per_gib_epoch: 1,
        collateral_per_gib: 1,
        nonce: 0,
    };
    let input = Input::RegisterProvider(Signed::sign(&provider, &w.ledger.network(), &reg).unwrap());
    assert!(matches!(w.refuse(input), LedgerError::Duplicate { .. }));
}

#[test]
fn pre_commits_must_match_piece_and_replica_id() {
    let mut w = World::new();
    let (client, provider) = setup(&mut w);
    let deal = w.publish(&client, &provider, Terms::default());
    let good = w.pre_commit_input(deal, &provider);
    let Input::PreCommit(signed) = &good else { panic!() };
    let (_, c) = signed.open(&w.ledger.network(), None).unwrap();
    let wrong_rid = SealCommitment {
        replica_id: [7; 32],
        ..c.clone()
    };
    let input = Input::PreCommit(Signed::sign(&provider, &w.ledger.network(), &wrong_rid).unwrap());
    assert!(matches!(w.refuse(input), LedgerError::ReplicaIdMismatch { .. }));
    let wrong_piece = SealCommitment {
        piece: crowd_protocol::PieceId([1; 32]),
        ..c.clone()
    };
    let input = Input::PreCommit(Signed::sign(&provider, &w.ledger.network(), &wrong_piece).unwrap());
    assert!(matches!(w.refuse(input), LedgerError::PieceMismatch { .. }));
    let unknown = SealCommitment { deal_id: 99, ..c };
    let input = Input::PreCommit(Signed::sign(&provider, &w.ledger.network(), &unknown).unwrap());
    assert!(matches!(w.refuse(input), LedgerError::UnknownDeal(99)));
    // a seal proof before any pre-commit
    w.apply(good).unwrap();
    let input = w.seal_proof_input(deal, &provider, None);
    assert!(matches!(
        w.refuse(input),
        LedgerError::FutureEpoch {
            epoch: 1,
            current: 0,
            ..
        }
    ));
}

#[test]
fn seal_proofs_must_verify_against_the_drawn_seed() {
    let mut w = World::new();
    let (_, provider, deal) = seeded(&mut w);
    // an honest proof for another seed (e.g. one the provider guessed early)
    let input = w.seal_proof_input(deal, &provider, Some([5; 32]));
    assert!(matches!(
        w.refuse(input),
        LedgerError::InvalidProof {
            what: "seal proof",
            ..
        }
    ));
    // garbage
    let msg = crowd_protocol::SealProofMsg {
        deal_id: deal,
        proof: vec![0xff; 100],
    };
    let input = Input::SealProof(Signed::sign(&provider, &w.ledger.network(), &msg).unwrap());
    assert!(matches!(w.refuse(input), LedgerError::InvalidProof { .. }));
    // the real one still works
    let input = w.seal_proof_input(deal, &provider, None);
    w.apply(input).unwrap();
}

#[test]
fn window_proofs_are_only_for_the_open_challenged_epoch() {
    let mut w = World::new();
    let (client, provider) = setup(&mut w);
    let deal = w.publish(&client, &provider, Terms::default());
    // before the deal is active
    let input = Input::WindowProof(
        Signed::sign(
            &provider,
            &w.ledger.network(),
            &crowd_protocol::WindowProofMsg {
                deal_id: deal,
                epoch: 0,
                proof: vec![],
            },
        )
        .unwrap(),
    );
    assert!(matches!(w.refuse(input), LedgerError::WrongState { .. }));
    w.onboard(deal, &provider); // epoch 1 open, deal starts at 3
    let input = w.window_proof_input(deal, &provider, 1, None);
    assert!(matches!(
        w.refuse(input),
        LedgerError::NotChallenged { epoch: 1, .. }
    ));
    let input = w.window_proof_input(deal, &provider, 2, None);
    assert!(matches!(
        w.refuse(input),
        LedgerError::FutureEpoch {
            epoch: 2,
            current: 1,
            ..
        }
    ));
    w.run_to(3);
    let input = w.window_proof_input(deal, &provider, 2, None);
    assert!(matches!(w.refuse(input), LedgerError::Stale { epoch: 2, .. }));
}

#[test]
fn end_epoch_must_be_the_open_epoch_over_the_current_head() {
    let mut w = World::new();
    let (client, _) = setup(&mut w);
    let early = w.end_epoch_input();
    w.mint(&client, 1); // the head moves on
    assert!(matches!(
        w.refuse(early),
        LedgerError::BadEpochSignature { epoch: 0 }
    ));
    let future = sign_epoch(&w.tracker, 5, &w.ledger.head()).unwrap();
    assert!(matches!(
        w.refuse(future),
        LedgerError::FutureEpoch { epoch: 5, .. }
    ));
}

#[test]
fn a_tampered_or_reordered_log_does_not_replay() {
    let mut w = World::new();
    let (client, provider) = setup(&mut w);
    let deal = w.publish(&client, &provider, Terms::default());
    w.onboard(deal, &provider);
    w.end_epoch();
    w.assert_replays();
    let config = w.ledger.config().clone();

    let mut swapped = w.log.clone();
    swapped.swap(1, 2);
    assert!(matches!(
        replay(config.clone(), &swapped),
        Err(LedgerError::BadLog { index: 2, .. })
    ));

    let mut dropped = w.log.clone();
    dropped.remove(3);
    assert!(matches!(
        replay(config.clone(), &dropped),
        Err(LedgerError::BadLog { .. })
    ));

    let mut edited = w.log.clone();
    edited[1].input = Input::Mint {
        account: id(&provider),
        amount: 99_999,
        nonce: 1,
    };
    let replayed = replay(config.clone(), &edited).map(|l| l.head());
    assert!(
        matches!(
            replayed,
            Err(LedgerError::BadLog { index: 1, .. }) | Err(LedgerError::BadLog { index: 2, .. })
        ),
        "{replayed:?}"
    );

    let mut events = w.log.clone();
    events[0].events_hash = [0; 32];
    assert!(matches!(
        replay(config.clone(), &events),
        Err(LedgerError::BadLog { index: 0, .. })
    ));

    // a log from another genesis config
    let other = LedgerConfig {
        fault_threshold: 5,
        ..config
    };
    assert!(matches!(
        replay(other, &w.log),
        Err(LedgerError::BadLog { index: 0, .. })
    ));

    // a stored ledger that differs is named
    let replayed = replay(w.ledger.config().clone(), &w.log).unwrap();
    let mut stored = w.ledger.clone();
    stored
        .apply(Input::Mint {
            account: id(&client),
            amount: 1,
            nonce: stored.mints(),
        })
        .unwrap();
    assert!(matches!(
        replayed.verify_against(&stored),
        Err(LedgerError::StateMismatch(_))
    ));
}

#[test]
fn bad_configs_are_refused() {
    let tracker = key(200);
    let mut c = LedgerConfig::devnet(&tracker.public());
    c.tracker_key = vec![1, 2, 3];
    assert!(matches!(Ledger::new(c), Err(LedgerError::InvalidConfig(_))));
    let mut c = LedgerConfig::devnet(&tracker.public());
    c.fault_threshold = 0;
    assert!(matches!(Ledger::new(c), Err(LedgerError::InvalidConfig(_))));
    let mut c = LedgerConfig::devnet(&tracker.public());
    c.client_share_bps = 10_001;
    assert!(matches!(Ledger::new(c), Err(LedgerError::InvalidConfig(_))));
}

#[test]
fn ledger_and_log_survive_cbor() {
    let mut w = World::new();
    let (client, provider) = setup(&mut w);
    let deal = w.publish(&client, &provider, Terms::default());
    w.onboard(deal, &provider);
    let bytes = crowd_protocol::wire::to_cbor(&w.ledger);
    let back: Ledger = crowd_protocol::wire::from_cbor("ledger", &bytes).unwrap();
    assert_eq!(back, w.ledger);
    assert_eq!(back.state_hash(), w.ledger.state_hash());
    let bytes = crowd_protocol::wire::to_cbor(&w.log);
    let back: Vec<crowd_tracker::LogEntry> = crowd_protocol::wire::from_cbor("log", &bytes).unwrap();
    assert_eq!(back, w.log);
}

/// A receipt for `piece_size` bytes of `piece` under `proposal`, signed by `signer`.
fn piece_receipt(
    signer: &Keypair,
    net: &NetworkId,
    proposal: [u8; 32],
    piece: PieceId,
    piece_size: u64,
) -> Signed<PieceReceipt> {
    Signed::sign(
        signer,
        net,
        &PieceReceipt {
            proposal,
            piece,
            piece_size,
        },
    )
    .unwrap()
}

/// A proposal that names no piece (`PieceId::UNNAMED`): published with its
/// provider's receipt, the deal is for the piece the receipt names, and it
/// seals like any other; a missing, forged or mismatched receipt is refused.
#[test]
fn a_proposal_naming_no_piece_takes_the_receipts() {
    let mut w = World::new();
    let (client, provider) = setup(&mut w);
    let stranger = key(9);
    let net = w.ledger.network();
    let mut p = w.proposal(&client, &provider, Terms::default());
    let piece = p.piece;
    p.piece = PieceId::UNNAMED;
    assert!(!p.names_piece());
    let Input::PublishDeal {
        proposal, acceptance, ..
    } = w.publish_input(&p, &client, &provider)
    else {
        panic!()
    };
    let receipt =
        |signer: &Keypair, proposal, piece, size| piece_receipt(signer, &net, proposal, piece, size);
    let input = |receipt: Option<Signed<PieceReceipt>>| Input::PublishDeal {
        proposal: proposal.clone(),
        acceptance: acceptance.clone(),
        receipt,
    };
    let id = proposal.id();
    let size = p.piece_size;
    // no receipt
    let err = w.refuse(input(None));
    assert!(matches!(err, LedgerError::InvalidProposal(_)), "{err}");
    // a receipt by someone other than the provider
    let err = w.refuse(input(Some(receipt(&stranger, id, piece, size))));
    assert!(matches!(err, LedgerError::WrongSigner { .. }), "{err}");
    // for another proposal, another size, or naming no piece either
    for bad in [
        receipt(&provider, [7; 32], piece, size),
        receipt(&provider, id, piece, size + 1),
        receipt(&provider, id, PieceId::UNNAMED, size),
    ] {
        let err = w.refuse(input(Some(bad)));
        assert!(matches!(err, LedgerError::InvalidProposal(_)), "{err}");
    }
    // the provider's receipt names the piece: the deal is for it and seals
    let events = w.apply(input(Some(receipt(&provider, id, piece, size)))).unwrap();
    let [Event::DealPublished { deal_id, .. }] = events.as_slice() else {
        panic!("unexpected events {events:?}")
    };
    assert_eq!(w.deal(*deal_id).proposal.piece, piece);
    let pre_commit = w.pre_commit_input(*deal_id, &provider);
    w.apply(pre_commit).unwrap();
}

/// A proposal that names its piece, published with a receipt naming
/// another, is refused: the receipt cannot rename a piece.
#[test]
fn a_receipt_cannot_rename_a_named_piece() {
    let mut w = World::new();
    let (client, provider) = setup(&mut w);
    let p = w.proposal(&client, &provider, Terms::default());
    let Input::PublishDeal {
        proposal, acceptance, ..
    } = w.publish_input(&p, &client, &provider)
    else {
        panic!()
    };
    let receipt = piece_receipt(
        &provider,
        &w.ledger.network(),
        proposal.id(),
        PieceId([5; 32]),
        p.piece_size,
    );
    let err = w.refuse(Input::PublishDeal {
        proposal,
        acceptance,
        receipt: Some(receipt),
    });
    assert!(matches!(err, LedgerError::InvalidProposal(_)), "{err}");
}
