//! Each path of the deal lifecycle with real seal and window proofs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{id, key, Terms, World};
use crowd_tracker::{bps_of, DealState, Event, LedgerError};

/// Client 1, provider 2, both funded; the provider registered.
fn setup(
    w: &mut World,
) -> (
    crowd_protocol::libp2p::identity::Keypair,
    crowd_protocol::libp2p::identity::Keypair,
) {
    let (client, provider) = (key(1), key(2));
    w.mint(&client, 10_000);
    w.mint(&provider, 10_000);
    w.register(&provider, 1 << 20);
    (client, provider)
}

#[test]
fn honest_provider_is_paid_every_epoch_and_gets_collateral_back() {
    let mut w = World::new();
    let (client, provider) = setup(&mut w);
    let terms = Terms::default(); // price 10, 4 epochs, collateral 1000, starts at epoch 3
    let deal = w.publish(&client, &provider, terms);
    assert_eq!(w.ledger.account(&id(&client)).available, 10_000 - 40);
    assert_eq!(w.ledger.account(&id(&client)).locked_escrow, 40);
    assert_eq!(w.ledger.account(&id(&provider)).locked_collateral, 1_000);
    assert_eq!(w.ledger.provider(&id(&provider)).unwrap().used, 4096);

    w.onboard(deal, &provider);
    w.run_to(3);
    for epoch in 3..7 {
        assert_eq!(
            w.prove_window(deal, &provider),
            vec![Event::WindowProven { deal_id: deal, epoch }]
        );
        let events = w.end_epoch();
        assert!(
            events.contains(&Event::Paid {
                deal_id: deal,
                epoch,
                amount: 10
            }),
            "{events:?}"
        );
        w.ledger.check_invariants().unwrap();
    }
    let d = w.deal(deal);
    assert!(w.ledger.deal(deal).is_none(), "a completed deal was not archived");
    assert_eq!(d.state, DealState::Completed);
    assert_eq!(d.paid, 40);
    let c = w.ledger.account(&id(&client));
    let p = w.ledger.account(&id(&provider));
    assert_eq!((c.available, c.locked_escrow), (10_000 - 40, 0));
    assert_eq!((p.available, p.locked_collateral), (10_000 + 40, 0));
    assert_eq!(w.ledger.provider(&id(&provider)).unwrap().used, 0);
    assert_eq!(w.ledger.supply().burned, 0);
    w.assert_replays();
}

#[test]
fn completion_event_returns_collateral_and_unearned_escrow() {
    let mut w = World::new();
    let (client, provider) = setup(&mut w);
    let deal = w.publish(&client, &provider, Terms::default());
    w.onboard(deal, &provider);
    w.run_to(3);
    // epochs 3, 4 and 6 proven, epoch 5 faulted (10 % of 1000 burned)
    let mut events = Vec::new();
    for epoch in 3..7 {
        if epoch != 5 {
            w.prove_window(deal, &provider);
        }
        events.extend(w.end_epoch());
    }
    assert!(events.contains(&Event::Faulted {
        deal_id: deal,
        epoch: 5,
        fee: 100,
        consecutive: 1
    }));
    assert!(events.contains(&Event::Completed {
        deal_id: deal,
        collateral_returned: 900,
        refund: 10
    }));
    assert_eq!(w.ledger.account(&id(&client)).available, 10_000 - 30);
    assert_eq!(w.ledger.account(&id(&provider)).available, 10_000 - 100 + 30);
    assert_eq!(w.ledger.supply().burned, 100);
    w.ledger.check_invariants().unwrap();
    w.assert_replays();
}

#[test]
fn consecutive_faults_terminate_slash_compensate_and_ask_for_repair() {
    let mut w = World::new(); // F = 3, fee 10 %, client share 50 %
    let (client, provider) = setup(&mut w);
    let terms = Terms {
        duration: 10,
        ..Terms::default()
    };
    let deal = w.publish(&client, &provider, terms);
    w.onboard(deal, &provider);
    w.run_to(3);
    w.prove_window(deal, &provider);
    assert!(w.end_epoch().contains(&Event::Paid {
        deal_id: deal,
        epoch: 3,
        amount: 10
    }));
    // three epochs without proofs
    let mut events = Vec::new();
    for _ in 0..3 {
        events.extend(w.end_epoch());
    }
    let faults: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Faulted { fee, consecutive, .. } => Some((*fee, *consecutive)),
            _ => None,
        })
        .collect();
    assert_eq!(faults, vec![(100, 1), (100, 2), (100, 3)]);
    // remaining collateral 700: 350 to the client, 350 burned; 9 unearned epochs refunded
    assert!(events.contains(&Event::Terminated {
        deal_id: deal,
        client_compensation: 350,
        burned: 350,
        refund: 90
    }));
    let d = w.deal(deal);
    assert!(events.contains(&Event::RepairNeeded {
        deal_id: deal,
        piece: d.proposal.piece,
        piece_size: 4096,
        client: id(&client),
        file: None,
    }));
    assert_eq!(d.state, DealState::Terminated);
    let c = w.ledger.account(&id(&client));
    let p = w.ledger.account(&id(&provider));
    assert_eq!((c.available, c.locked_escrow), (10_000 - 10 + 350, 0));
    assert_eq!((p.available, p.locked_collateral), (10_000 - 1_000 + 10, 0));
    assert_eq!(w.ledger.supply().burned, 300 + 350);
    assert_eq!(w.ledger.provider(&id(&provider)).unwrap().used, 0);
    // a terminated deal is no longer challenged or paid (it left the
    // ledger's state at the settlement: unknown now)
    assert!(w.ledger.deal(deal).is_none());
    let input = w.window_proof_input(deal, &provider, w.ledger.epoch(), None);
    assert!(matches!(w.refuse(input), LedgerError::UnknownDeal(_)));
    assert!(!w
        .end_epoch()
        .iter()
        .any(|e| matches!(e, Event::Paid { .. } | Event::Faulted { .. })));
    w.ledger.check_invariants().unwrap();
    w.assert_replays();
}

#[test]
fn a_valid_proof_resets_the_fault_streak() {
    let mut w = World::new();
    let (client, provider) = setup(&mut w);
    let terms = Terms {
        duration: 6,
        ..Terms::default()
    };
    let deal = w.publish(&client, &provider, terms);
    w.onboard(deal, &provider);
    w.run_to(3);
    // fault, fault, proof, fault, fault, proof: never 3 in a row
    for (epoch, prove) in (3..9).zip([false, false, true, false, false, true]) {
        if prove {
            w.prove_window(deal, &provider);
        }
        let _ = epoch;
        w.end_epoch();
    }
    let d = w.deal(deal);
    assert_eq!(d.state, DealState::Completed);
    assert_eq!((d.total_faults, d.paid), (4, 20));
    assert_eq!(w.ledger.supply().burned, 400);
    w.assert_replays();
}

#[test]
fn unproven_deal_is_cancelled_at_its_start_and_everything_is_returned() {
    let mut w = World::new();
    let (client, provider) = setup(&mut w);
    let before_c = w.ledger.account(&id(&client));
    let before_p = w.ledger.account(&id(&provider));
    let never = w.publish(&client, &provider, Terms::default()); // starts at 3
    let unproven = w.publish(
        &client,
        &provider,
        Terms {
            piece: 1,
            ..Terms::default()
        },
    );
    let input = w.pre_commit_input(unproven, &provider);
    w.apply(input).unwrap();
    // still pending while epoch 1 ends (start 3 > 1 + 1)
    let events = w.run_to(2);
    assert!(!events.iter().any(|e| matches!(e, Event::Cancelled { .. })));
    let events = w.end_epoch(); // epoch 2 ends: not active before epoch 3
    for deal in [never, unproven] {
        assert!(events.contains(&Event::Cancelled {
            deal_id: deal,
            escrow_returned: 40,
            collateral_returned: 1_000
        }));
        assert_eq!(w.deal(deal).state, DealState::Cancelled);
    }
    assert_eq!(w.ledger.account(&id(&client)), before_c);
    assert_eq!(w.ledger.account(&id(&provider)), before_p);
    assert_eq!(w.ledger.provider(&id(&provider)).unwrap().used, 0);
    // too late to prove now (cancelled and archived: unknown)
    let input = w.seal_proof_input(unproven, &provider, None);
    assert!(matches!(w.refuse(input), LedgerError::UnknownDeal(_)));
    w.assert_replays();
}

#[test]
fn a_window_proof_after_settlement_is_stale_and_the_epoch_is_faulted() {
    let mut w = World::new();
    let (client, provider) = setup(&mut w);
    let deal = w.publish(&client, &provider, Terms::default());
    w.onboard(deal, &provider);
    w.run_to(3);
    let late = w.window_proof_input(deal, &provider, 3, None);
    let events = w.end_epoch();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Faulted { epoch: 3, .. })));
    assert!(matches!(
        w.refuse(late),
        LedgerError::Stale {
            epoch: 3,
            current: 4,
            ..
        }
    ));
}

#[test]
fn an_invalid_window_proof_is_refused_and_does_not_pay() {
    let mut w = World::new();
    let (client, provider) = setup(&mut w);
    let deal = w.publish(&client, &provider, Terms::default());
    w.onboard(deal, &provider);
    w.run_to(3);
    // proven with the wrong randomness
    let wrong = w.window_proof_input(deal, &provider, 3, Some([9; 32]));
    assert!(matches!(w.refuse(wrong), LedgerError::InvalidProof { .. }));
    // garbage bytes
    let msg = crowd_protocol::WindowProofMsg {
        deal_id: deal,
        epoch: 3,
        proof: vec![1, 2, 3],
    };
    let garbage = crowd_tracker::Input::WindowProof(
        crowd_protocol::Signed::sign(&provider, &w.ledger.network(), &msg).unwrap(),
    );
    assert!(matches!(w.refuse(garbage), LedgerError::InvalidProof { .. }));
    let events = w.end_epoch();
    assert!(!events.iter().any(|e| matches!(e, Event::Paid { .. })));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Faulted { epoch: 3, .. })));
}

#[test]
fn every_epoch_randomness_is_the_hash_of_the_tracker_signature() {
    let mut w = World::new();
    let (client, _) = setup(&mut w);
    w.mint(&client, 5);
    let input = w.end_epoch_input();
    let crowd_tracker::Input::EndEpoch {
        tracker_signature, ..
    } = &input
    else {
        panic!()
    };
    let expected = crowd_tracker::randomness_from_signature(tracker_signature);
    let events = w.apply(input.clone()).unwrap();
    assert_eq!(
        events,
        vec![Event::EpochEnded {
            epoch: 0,
            randomness: expected
        }]
    );
    assert_eq!(w.ledger.randomness(), expected);
    // anyone can check it with the tracker's public key
    let key = w.ledger.config().tracker_public_key().unwrap();
    assert!(key.verify(
        &crowd_tracker::epoch_signing_input(0, &w.log[w.log.len() - 1].prev_head),
        tracker_signature
    ));
}

#[test]
fn withdraw_moves_free_balance_out_of_the_ledger() {
    let mut w = World::new();
    let (client, _) = setup(&mut w);
    let input = w.withdraw_input(&client, 2_500);
    assert_eq!(
        w.apply(input).unwrap(),
        vec![Event::Withdrawn {
            account: id(&client),
            amount: 2_500
        }]
    );
    assert_eq!(w.ledger.account(&id(&client)).available, 7_500);
    assert_eq!(w.ledger.supply().withdrawn, 2_500);
    w.ledger.check_invariants().unwrap();
    w.assert_replays();
}

#[test]
fn bps_of_is_exact_and_never_overflows() {
    assert_eq!(bps_of(1_000, 1_000), 100);
    assert_eq!(bps_of(9_999, 5_000), 4_999);
    assert_eq!(bps_of(u128::MAX, 10_000), u128::MAX);
    assert_eq!(bps_of(u128::MAX, 0), 0);
}
