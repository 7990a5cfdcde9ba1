//! Paid admission: a client locks a proposal's escrow before it offers it
//! to a provider; the lock is used by the publication or lapses back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{id, key, Terms, World};
use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::{DealProposal, Signed};
use crowd_tracker::{publish_deadline, Event, Input, LedgerError};

fn admit_input(net: &crowd_protocol::NetworkId, signer: &Keypair, p: &DealProposal) -> Input {
    Input::AdmitProposal(Signed::sign(signer, net, p).unwrap())
}

/// A funded client, a registered provider, and a world at epoch 0.
fn world() -> (World, Keypair, Keypair) {
    let mut w = World::new();
    let (client, provider) = (key(1), key(2));
    w.mint(&client, 1_000);
    w.mint(&provider, 5_000);
    w.register(&provider, 1 << 20);
    (w, client, provider)
}

#[test]
fn an_admission_locks_the_escrow_and_publishing_uses_that_lock() {
    let (mut w, client, provider) = world();
    let p = w.proposal(&client, &provider, Terms::default());
    let escrow = p.price_per_epoch * u128::from(p.duration_epochs);
    let signed = Signed::sign(&client, &w.ledger.network(), &p).unwrap();
    let events = w.apply(Input::AdmitProposal(signed.clone())).unwrap();
    let until = publish_deadline(&p);
    assert_eq!(until, p.expiry_epoch.min(p.start_epoch - 2));
    assert_eq!(
        events,
        vec![Event::Admitted {
            proposal: signed.id(),
            client: id(&client),
            escrow,
            until_epoch: until,
        }]
    );
    let a = w.ledger.account(&id(&client));
    assert_eq!((a.available, a.locked_escrow), (1_000 - escrow, escrow));
    assert_eq!(w.ledger.admission(&signed.id()).unwrap().escrow, escrow);
    w.ledger.check_invariants().unwrap();

    // admitted once only, and never for a stranger
    let again = w.refuse(Input::AdmitProposal(signed.clone()));
    assert!(matches!(again, LedgerError::Duplicate { .. }), "{again}");
    let mallory = key(9);
    w.mint(&mallory, 1_000);
    let forged = w.refuse(admit_input(&w.ledger.network(), &mallory, &p));
    assert!(matches!(forged, LedgerError::WrongSigner { .. }), "{forged}");

    // publishing takes the locked escrow, not a second one
    let deal = w.apply(w.publish_input(&p, &client, &provider)).unwrap();
    assert!(
        matches!(deal.as_slice(), [Event::DealPublished { .. }]),
        "{deal:?}"
    );
    let a = w.ledger.account(&id(&client));
    assert_eq!((a.available, a.locked_escrow), (1_000 - escrow, escrow));
    assert!(w.ledger.admission(&signed.id()).is_none());
    assert_eq!(w.ledger.admissions(), 0);
    w.ledger.check_invariants().unwrap();
    // and a published proposal is not admitted again
    let after = w.refuse(Input::AdmitProposal(signed));
    assert!(matches!(after, LedgerError::Duplicate { .. }), "{after}");
    w.assert_replays();
}

#[test]
fn a_key_with_nothing_locked_is_not_admitted_however_many_keys_there_are() {
    let (mut w, client, provider) = world();
    // fresh keys cost nothing, but hold nothing: no admission, no space
    for seed in 50..60 {
        let fresh = key(seed);
        let p = w.proposal(&fresh, &provider, Terms::default());
        let e = w.refuse(admit_input(&w.ledger.network(), &fresh, &p));
        assert!(matches!(e, LedgerError::InsufficientFunds { .. }), "{e}");
    }
    // a funded client's pending admissions are bounded by its balance:
    // 1 000 at 40 each is 25 admissions, the 26th is refused
    let mut n = 0;
    loop {
        let p = w.proposal(&client, &provider, Terms::default());
        match w.apply(admit_input(&w.ledger.network(), &client, &p)) {
            Ok(_) => n += 1,
            Err(LedgerError::InsufficientFunds { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(n, 25);
    assert_eq!(w.ledger.admissions(), 25);
    // free proposals, unregistered providers and unpublishable terms are
    // refused too
    let (rich, nobody) = (key(3), key(4));
    w.mint(&rich, 1_000);
    let free = w.proposal(
        &rich,
        &provider,
        Terms {
            price: 0,
            ..Terms::default()
        },
    );
    assert!(matches!(
        w.refuse(admit_input(&w.ledger.network(), &rich, &free)),
        LedgerError::ZeroAmount { .. }
    ));
    let unregistered = w.proposal(&rich, &nobody, Terms::default());
    assert!(matches!(
        w.refuse(admit_input(&w.ledger.network(), &rich, &unregistered)),
        LedgerError::NotRegistered(_)
    ));
    let soon = w.proposal(
        &rich,
        &provider,
        Terms {
            lead: 1,
            ..Terms::default()
        },
    );
    assert!(matches!(
        w.refuse(admit_input(&w.ledger.network(), &rich, &soon)),
        LedgerError::InvalidProposal(_)
    ));
    w.ledger.check_invariants().unwrap();
    w.assert_replays();
}

#[test]
fn an_unpublished_admission_lapses_after_its_last_epoch_and_the_escrow_comes_back() {
    let (mut w, client, provider) = world();
    let p = w.proposal(
        &client,
        &provider,
        Terms {
            lead: 5,
            ..Terms::default()
        },
    );
    let signed = Signed::sign(&client, &w.ledger.network(), &p).unwrap();
    w.apply(Input::AdmitProposal(signed.clone())).unwrap();
    let until = publish_deadline(&p);
    assert_eq!(until, 3);
    // kept through the settlement of every epoch before `until`
    while w.ledger.epoch() < until {
        let events = w.end_epoch();
        assert!(
            !events.iter().any(|e| matches!(e, Event::AdmissionLapsed { .. })),
            "{events:?}"
        );
        assert!(w.ledger.admission(&signed.id()).is_some());
        w.ledger.check_invariants().unwrap();
    }
    // settling `until` gives the escrow back
    let events = w.end_epoch();
    assert!(
        events.contains(&Event::AdmissionLapsed {
            proposal: signed.id(),
            client: id(&client),
            refund: 40,
        }),
        "{events:?}"
    );
    let a = w.ledger.account(&id(&client));
    assert_eq!((a.available, a.locked_escrow), (1_000, 0));
    assert!(w.ledger.admission(&signed.id()).is_none());
    // and it can neither be published nor admitted again
    w.refuse(w.publish_input(&p, &client, &provider));
    w.refuse(Input::AdmitProposal(signed));
    w.ledger.check_invariants().unwrap();
    w.assert_replays();
}
