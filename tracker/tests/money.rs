//! Money in and out: genesis allocations, transfers and withdrawals, each
//! covered by the log replay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{id, key, World};
use crowd_tracker::{Event, Input, Ledger, LedgerError};

#[test]
fn a_genesis_allocation_is_the_money_of_a_ledger_without_a_faucet() {
    let (alice, bob) = (key(1), key(2));
    let mut allocations = vec![(id(&alice), 700), (id(&bob), 300)];
    allocations.sort();
    let mut w = World::with_config(|c| {
        c.faucet = false;
        c.allocations = allocations.clone();
    });
    assert_eq!(w.ledger.account(&id(&alice)).available, 700);
    assert_eq!(w.ledger.account(&id(&bob)).available, 300);
    assert_eq!(w.ledger.supply().minted, 1_000);
    w.ledger.check_invariants().unwrap();
    // no faucet: the allocation is the only money in
    let mint = w.refuse(Input::Mint {
        account: id(&alice),
        amount: 5,
        nonce: 0,
    });
    assert!(matches!(mint, LedgerError::FaucetDisabled), "{mint}");
    // the allocation is part of the genesis: another allocation is another ledger
    let other = World::with_config(|c| {
        c.faucet = false;
        c.allocations = vec![(id(&alice), 701)];
    });
    assert_ne!(w.ledger.head(), other.ledger.head());
    // and a ledger without allocations keeps the genesis it had before they existed
    let plain = World::new();
    let bytes = crowd_protocol::wire::to_cbor(plain.ledger.config());
    assert!(!bytes.windows(11).any(|w| w == b"allocations"));
    let with = crowd_protocol::wire::to_cbor(w.ledger.config());
    assert!(with.windows(11).any(|w| w == b"allocations"));
    w.assert_replays();
}

#[test]
fn bad_allocations_are_refused_at_genesis() {
    let (alice, bob) = (key(1), key(2));
    let mut pair = [id(&alice), id(&bob)];
    pair.sort();
    let tracker = key(200);
    for (allocations, why) in [
        (vec![(pair[0], 0)], "an allocation of 0"),
        (vec![(pair[0], 1), (pair[0], 2)], "each account once"),
        (vec![(pair[1], 1), (pair[0], 2)], "in account order"),
        (vec![(pair[0], u128::MAX), (pair[1], 1)], "overflow"),
    ] {
        let mut config = crowd_tracker::LedgerConfig::devnet(&tracker.public());
        config.allocations = allocations;
        match Ledger::new(config) {
            Err(LedgerError::InvalidConfig(what)) => assert!(what.contains(why), "{what} lacks {why}"),
            other => panic!("{why}: {other:?}"),
        }
    }
}

#[test]
fn transfers_move_free_balance_once_each_and_withdrawals_take_it_out() {
    let mut w = World::new();
    let (alice, bob, carol) = (key(1), key(2), key(3));
    w.mint(&alice, 1_000);
    let send = w.transfer_input(&alice, &bob, 400);
    let events = w.apply(send.clone()).unwrap();
    assert_eq!(
        events,
        vec![Event::Transferred {
            from: id(&alice),
            to: id(&bob),
            amount: 400
        }]
    );
    assert_eq!(w.ledger.account(&id(&alice)).available, 600);
    assert_eq!(w.ledger.account(&id(&bob)).available, 400);
    // the same signed transfer again is a replay
    assert!(matches!(w.refuse(send), LedgerError::Duplicate { .. }));
    // more than the free balance, nothing, or to oneself: refused
    let too_much = w.transfer_input(&alice, &carol, 601);
    assert!(matches!(
        w.refuse(too_much),
        LedgerError::InsufficientFunds { .. }
    ));
    let nothing = w.transfer_input(&alice, &carol, 0);
    assert!(matches!(w.refuse(nothing), LedgerError::ZeroAmount { .. }));
    let own = w.transfer_input(&alice, &alice, 1);
    assert!(matches!(w.refuse(own), LedgerError::SelfTransfer));
    // a signature that does not verify
    let mut forged = w.transfer_input(&bob, &carol, 1);
    if let Input::Transfer(s) = &mut forged {
        s.parts_mut().2[0] ^= 1;
    }
    assert!(matches!(w.refuse(forged), LedgerError::BadSignature { .. }));

    // bob takes 150 out: gone from the balances, counted as withdrawn
    let out = w.withdraw_input(&bob, 150);
    w.apply(out).unwrap();
    assert_eq!(w.ledger.account(&id(&bob)).available, 250);
    assert_eq!(w.ledger.supply().withdrawn, 150);
    let over = w.withdraw_input(&bob, 251);
    assert!(matches!(w.refuse(over), LedgerError::InsufficientFunds { .. }));
    w.ledger.check_invariants().unwrap();
    w.assert_replays();
}
