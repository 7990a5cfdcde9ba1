//! Sybil resistance on the ledger: a provider's stake, slashed at each
//! termination and returned when it leaves; a minimum collateral per deal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{id, key, Terms, World};
use crowd_tracker::{Event, Input, LedgerError};

const STAKE: u128 = 2_000;

/// A world whose genesis asks a stake of 2 000 (10 % of it burned per
/// termination) and at least 1 000 collateral per GiB.
fn staked_world() -> World {
    World::with_config(|c| {
        c.provider_stake = STAKE;
        c.stake_slash_bps = 1_000;
        c.min_collateral_per_gib = 1_000;
    })
}

#[test]
fn registering_locks_the_stake_and_a_fresh_key_without_it_cannot_register() {
    let mut w = staked_world();
    // a zero-stake provider: a fresh key holds nothing
    let sybil = key(40);
    let input = w.register_input(&sybil, 1 << 20);
    let e = w.refuse(input);
    assert!(matches!(e, LedgerError::InsufficientFunds { .. }), "{e}");
    assert!(w.ledger.provider(&id(&sybil)).is_none());

    let provider = key(2);
    w.mint(&provider, 10_000);
    let input = w.register_input(&provider, 1 << 20);
    let events = w.apply(input).unwrap();
    assert!(events.contains(&Event::Staked {
        provider: id(&provider),
        amount: STAKE
    }));
    let a = w.ledger.account(&id(&provider));
    assert_eq!((a.available, a.staked), (8_000, STAKE));
    // registering again (new price, say) locks nothing more
    w.register(&provider, 1 << 21);
    assert_eq!(w.ledger.account(&id(&provider)).available, 8_000);
    w.ledger.check_invariants().unwrap();
    w.assert_replays();
}

#[test]
fn a_termination_burns_part_of_the_stake_and_new_deals_wait_for_a_top_up() {
    let mut w = staked_world();
    let (client, provider) = (key(1), key(2));
    w.mint(&client, 10_000);
    w.mint(&provider, 10_000);
    w.register(&provider, 1 << 20);
    let terms = Terms {
        duration: 10,
        ..Terms::default()
    };
    let deal = w.publish(&client, &provider, terms);
    w.onboard(deal, &provider);
    w.run_to(3);
    // F = 3 epochs without proofs: terminated, and 10 % of the stake burned
    let burned_before = w.ledger.supply().burned;
    let mut events = Vec::new();
    for _ in 0..3 {
        events.extend(w.end_epoch());
    }
    assert!(
        events.contains(&Event::StakeSlashed {
            provider: id(&provider),
            deal_id: deal,
            amount: 200
        }),
        "{events:?}"
    );
    assert_eq!(w.ledger.account(&id(&provider)).staked, STAKE - 200);
    assert!(w.ledger.supply().burned >= burned_before + 200);
    w.ledger.check_invariants().unwrap();

    // below the stake: no new deal until the provider tops it up
    let p = w.proposal(&client, &provider, Terms::default());
    let e = w.refuse(w.publish_input(&p, &client, &provider));
    assert!(matches!(e, LedgerError::NotStaked { .. }), "{e}");
    let input = w.register_input(&provider, 1 << 20);
    let events = w.apply(input).unwrap();
    assert!(events.contains(&Event::Staked {
        provider: id(&provider),
        amount: 200
    }));
    w.apply(w.publish_input(&p, &client, &provider)).unwrap();
    w.ledger.check_invariants().unwrap();
    w.assert_replays();
}

#[test]
fn the_stake_comes_back_only_when_the_provider_leaves_with_no_live_deal() {
    let mut w = staked_world();
    let (client, provider) = (key(1), key(2));
    w.mint(&client, 10_000);
    w.mint(&provider, 10_000);
    w.register(&provider, 1 << 20);
    let deal = w.publish(&client, &provider, Terms::default());
    // leaving with a live deal: the stake stays
    let input = w.register_input(&provider, 0);
    let events = w.apply(input).unwrap();
    assert!(!events.iter().any(|e| matches!(e, Event::StakeReturned { .. })));
    assert_eq!(w.ledger.account(&id(&provider)).staked, STAKE);
    // the deal is never sealed: cancelled at its start, then the stake can go
    let events = w.run_to(w.deal(deal).proposal.start_epoch);
    assert!(events.iter().any(|e| matches!(e, Event::Cancelled { .. })));
    let input = w.register_input(&provider, 0);
    let events = w.apply(input).unwrap();
    assert!(events.contains(&Event::StakeReturned {
        provider: id(&provider),
        amount: STAKE
    }));
    let a = w.ledger.account(&id(&provider));
    assert_eq!((a.staked, a.available), (0, 10_000));
    w.ledger.check_invariants().unwrap();
    w.assert_replays();
}

#[test]
fn a_deal_below_the_minimum_collateral_is_neither_admitted_nor_published() {
    let mut w = staked_world();
    let (client, provider) = (key(1), key(2));
    w.mint(&client, 10_000);
    w.mint(&provider, 10_000);
    w.register(&provider, 1 << 20);
    // piece 0 is small: 1 000 per GiB pro rata rounds up to 1
    let free = w.proposal(
        &client,
        &provider,
        Terms {
            collateral: 0,
            ..Terms::default()
        },
    );
    for input in [
        w.publish_input(&free, &client, &provider),
        Input::AdmitProposal(crowd_protocol::Signed::sign(&client, &w.ledger.network(), &free).unwrap()),
    ] {
        let e = w.refuse(input);
        assert!(
            matches!(e, LedgerError::InvalidProposal(why) if why.contains("collateral")),
            "{e}"
        );
    }
    let enough = w.proposal(
        &client,
        &provider,
        Terms {
            collateral: 1,
            ..Terms::default()
        },
    );
    w.apply(w.publish_input(&enough, &client, &provider)).unwrap();
    w.assert_replays();
}
