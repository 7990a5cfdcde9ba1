//! Files in the ledger: registration, repair of a lost piece (paid from the
//! file's repair fund first), removal with refunds, renewal and expiry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{id, key, Terms, World};
use crowd_tracker::{DealState, Event, FileState, LedgerError};

/// Client 10, providers 11..=13 (registered, funded), one file of two
/// deals (pieces 0 and 1 on providers 11 and 12, k = 1), both active.
fn world_with_file(duration: u64) -> (World, u64, [u64; 2]) {
    let mut w = World::new();
    let client = key(10);
    w.mint(&client, 10_000);
    for p in 11..=13 {
        w.mint(&key(p), 5_000);
        w.register(&key(p), 100_000);
    }
    let terms = |piece| Terms {
        piece,
        price: 10,
        lead: 3,
        duration,
        collateral: 1_000,
    };
    let d0 = w.publish(&client, &key(11), terms(0));
    let d1 = w.publish(&client, &key(12), terms(1));
    let file = w.register_file(&client, &[d0, d1], 1);
    w.onboard(d0, &key(11));
    w.onboard(d1, &key(12));
    w.ledger.check_invariants().unwrap();
    (w, file, [d0, d1])
}

#[test]
fn a_registration_must_be_the_signers_live_unregistered_deals() {
    let (mut w, _, [d0, d1]) = world_with_file(6);
    // registered already
    let again = w.register_file_input(&key(10), &[d0, d1], 1);
    assert!(matches!(w.refuse(again), LedgerError::Duplicate { .. }));
    // someone else's deals
    let d2 = w.publish(&key(10), &key(13), Terms::default());
    let stranger = w.register_file_input(&key(99), &[d2], 1);
    assert!(matches!(w.refuse(stranger), LedgerError::InvalidFile(_)));
    // k above the pieces, a deal twice, an unknown deal
    assert!(matches!(
        w.refuse(w.register_file_input(&key(10), &[d2], 2)),
        LedgerError::InvalidFile(_)
    ));
    assert!(matches!(
        w.refuse(w.register_file_input(&key(10), &[d2, d2], 1)),
        LedgerError::InvalidFile(_)
    ));
    assert!(matches!(
        w.refuse(w.register_file_input(&key(10), &[d2, 77], 1)),
        LedgerError::UnknownDeal(77)
    ));
    w.assert_replays();
}

#[test]
fn a_lost_piece_is_repaired_on_another_provider_paid_from_the_fund_first() {
    let (mut w, file, [d0, d1]) = world_with_file(8);
    let start = w.ledger.deal(d0).unwrap().proposal.start_epoch;
    w.run_to(start);
    // provider 12 stops proving: after repair_after_missed (2) windows its
    // deal is terminated and index 1 is lost
    let threshold = w.ledger.config().repair_threshold();
    assert!(threshold < w.ledger.config().fault_threshold);
    let mut events = Vec::new();
    for _ in 0..threshold {
        w.prove_window(d0, &key(11));
        events.extend(w.end_epoch());
    }
    let (compensation, refund) = events
        .iter()
        .find_map(|e| match e {
            Event::Terminated {
                deal_id,
                client_compensation,
                refund,
                ..
            } if *deal_id == d1 => Some((*client_compensation, *refund)),
            _ => None,
        })
        .expect("deal 1 terminated");
    // the unearned escrow and the client's share of the slashed collateral
    // stay locked in the file's repair fund
    assert_eq!(w.ledger.file(file).unwrap().repair_fund, compensation + refund);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::RepairNeeded { deal_id, file: Some((f, 1)), .. } if *deal_id == d1 && *f == file
    )));
    assert!(w.ledger.is_lost(file, 1) && !w.ledger.is_lost(file, 0));
    assert_eq!(w.ledger.lost_slots(), vec![(file, 1, 1)]);
    let fund = w.ledger.file(file).unwrap().repair_fund;
    assert!(
        fund > 0,
        "the terminated deal's escrow and compensation fund the repair"
    );
    w.ledger.check_invariants().unwrap();

    let tracker = w.tracker.clone();
    // a job not signed by the tracker, an acceptance by someone else, a
    // provider that already holds a live piece of the file, an index that
    // is not lost: all refused
    let forged = w.repair_input(file, 1, &key(13), 10, &key(99), &key(13)).unwrap();
    assert!(matches!(w.refuse(forged), LedgerError::WrongSigner { .. }));
    let wrong_acceptor = w.repair_input(file, 1, &key(13), 10, &tracker, &key(11)).unwrap();
    assert!(matches!(
        w.refuse(wrong_acceptor),
        LedgerError::WrongSigner { .. }
    ));
    let holder = w.repair_input(file, 1, &key(11), 10, &tracker, &key(11)).unwrap();
    assert!(matches!(w.refuse(holder), LedgerError::InvalidRepair(_)));
    let not_lost = w.repair_input(file, 0, &key(13), 10, &tracker, &key(13)).unwrap();
    assert!(matches!(w.refuse(not_lost), LedgerError::InvalidRepair(_)));

    let client_before = w.ledger.account(&id(&key(10)));
    let repair = w.repair_input(file, 1, &key(13), 10, &tracker, &key(13)).unwrap();
    let events = w.apply(repair.clone()).unwrap();
    let (new_deal, from_fund, from_balance) = events
        .iter()
        .find_map(|e| match e {
            Event::RepairPublished {
                deal_id,
                from_fund,
                from_balance,
                ..
            } => Some((*deal_id, *from_fund, *from_balance)),
            _ => None,
        })
        .unwrap();
    let d = w.ledger.deal(new_deal).unwrap().clone();
    let escrow = d.escrow;
    assert_eq!(from_fund, fund.min(escrow));
    assert_eq!(from_fund + from_balance, escrow);
    assert_eq!(
        w.ledger.account(&id(&key(10))).available,
        client_before.available - from_balance
    );
    assert_eq!(d.end_epoch(), w.ledger.file(file).unwrap().end_epoch);
    assert_eq!(w.ledger.file(file).unwrap().slots[1].deal, new_deal);
    assert_eq!(w.ledger.deal_file(new_deal), Some((file, 1)));
    assert!(!w.ledger.is_lost(file, 1));
    // the same repair again is a duplicate; a second repair of the index
    // (now held by a live deal) is refused: never two live deals per index
    assert!(matches!(w.refuse(repair), LedgerError::Duplicate { .. }));
    let second = w.repair_input(file, 1, &key(12), 10, &tracker, &key(12)).unwrap();
    assert!(matches!(w.refuse(second), LedgerError::InvalidRepair(_)));
    w.ledger.check_invariants().unwrap();

    // the repair deal is sealed, proven and paid like any other (deal 0
    // keeps proving meanwhile)
    let input = w.pre_commit_input(new_deal, &key(13));
    w.apply(input).unwrap();
    w.prove_window(d0, &key(11));
    w.end_epoch();
    let input = w.seal_proof_input(new_deal, &key(13), None);
    w.apply(input).unwrap();
    while w.ledger.epoch() < d.proposal.start_epoch {
        w.prove_window(d0, &key(11));
        w.end_epoch();
    }
    w.prove_window(new_deal, &key(13));
    w.prove_window(d0, &key(11));
    let events = w.end_epoch();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Paid { deal_id, .. } if *deal_id == new_deal)));
    assert_eq!(w.ledger.file(file).unwrap().repairs, 1);
    w.ledger.check_invariants().unwrap();
    w.assert_replays();
}

#[test]
fn removal_refunds_the_unearned_escrow_and_stops_the_challenges() {
    let (mut w, file, [d0, d1]) = world_with_file(6);
    let start = w.ledger.deal(d0).unwrap().proposal.start_epoch;
    w.run_to(start);
    w.prove_window(d0, &key(11));
    w.prove_window(d1, &key(12));
    w.end_epoch(); // one epoch paid to each
    let stranger = w.remove_input(&key(99), file);
    assert!(matches!(w.refuse(stranger), LedgerError::NotOwner { .. }));
    let client_before = w.ledger.account(&id(&key(10)));
    let provider_before = w.ledger.account(&id(&key(11)));
    let escrow: u128 = [d0, d1].iter().map(|d| w.ledger.deal(*d).unwrap().escrow).sum();
    let input = w.remove_input(&key(10), file);
    let events = w.apply(input).unwrap();
    assert!(events.contains(&Event::FileRemoved {
        file_id: file,
        refund: escrow
    }));
    let client = w.ledger.account(&id(&key(10)));
    assert_eq!(client.available, client_before.available + escrow);
    assert_eq!(client.locked_escrow, client_before.locked_escrow - escrow);
    let provider = w.ledger.account(&id(&key(11)));
    assert_eq!(provider.locked_collateral, 0);
    assert_eq!(
        provider.available,
        provider_before.available + provider_before.locked_collateral
    );
    for d in [d0, d1] {
        assert_eq!(w.ledger.deal(d).unwrap().state, DealState::Removed);
    }
    assert_eq!(w.ledger.file(file).unwrap().state, FileState::Removed);
    // no more challenges: a proof for a removed deal is refused, nothing paid
    let proof = w.window_proof_input(d0, &key(11), w.ledger.epoch(), None);
    assert!(matches!(w.refuse(proof), LedgerError::WrongState { .. }));
    // removed once: removing or renewing again is refused
    let again = w.remove_input(&key(10), file);
    assert!(matches!(w.refuse(again), LedgerError::FileNotLive { .. }));
    let renew = w.renew_input(&key(10), file, 2);
    assert!(matches!(w.refuse(renew), LedgerError::FileNotLive { .. }));
    let events = w.end_epoch();
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::Paid { .. } | Event::Faulted { .. })));
    // settled: the file and its deals leave the state, as they were
    assert!(events.iter().any(|e| matches!(e, Event::Archived { deals, files }
        if files.len() == 1 && files[0].state == FileState::Removed
            && deals.len() == 2 && deals.iter().all(|d| d.state == DealState::Removed))));
    assert!(w.ledger.file(file).is_none());
    let again = w.remove_input(&key(10), file);
    assert!(matches!(w.refuse(again), LedgerError::UnknownFile(_)));
    w.ledger.check_invariants().unwrap();
    w.assert_replays();
}

#[test]
fn renewal_extends_the_deals_and_proofs_continue_past_the_old_end() {
    let (mut w, file, [d0, d1]) = world_with_file(3);
    let old_end = w.ledger.file(file).unwrap().end_epoch;
    let available = w.ledger.account(&id(&key(10))).available;
    // more than the client has is refused, with nothing changed
    let too_much = w.renew_input(&key(10), file, 1_000);
    assert!(matches!(
        w.refuse(too_much),
        LedgerError::InsufficientFunds { .. }
    ));
    let stranger = w.renew_input(&key(99), file, 2);
    assert!(matches!(w.refuse(stranger), LedgerError::NotOwner { .. }));
    let input = w.renew_input(&key(10), file, 2);
    let events = w.apply(input).unwrap();
    assert!(events.contains(&Event::FileRenewed {
        file_id: file,
        end_epoch: old_end + 2,
        locked: 2 * 2 * 10,
    }));
    assert_eq!(w.ledger.account(&id(&key(10))).available, available - 40);
    for d in [d0, d1] {
        assert_eq!(w.ledger.deal(d).unwrap().end_epoch(), old_end + 2);
    }
    // proven in the epochs after the old end, and paid
    let start = w.ledger.deal(d0).unwrap().proposal.start_epoch;
    w.run_to(start);
    let mut paid = 0;
    let mut last = Vec::new();
    while w.ledger.epoch() < old_end + 2 {
        let epoch = w.ledger.epoch();
        w.prove_window(d0, &key(11));
        w.prove_window(d1, &key(12));
        last = w.end_epoch();
        paid += last
            .iter()
            .filter(|e| matches!(e, Event::Paid { epoch: at, .. } if *at == epoch && epoch >= old_end))
            .count();
    }
    assert_eq!(paid, 4, "both deals paid in both added epochs");
    // completed and expired at the new end, then archived as such
    assert!(last.iter().any(|e| matches!(e, Event::Archived { deals, files }
        if files.len() == 1 && files[0].state == FileState::Expired
            && deals.len() == 2 && deals.iter().all(|d| d.state == DealState::Completed))));
    w.ledger.check_invariants().unwrap();
    w.assert_replays();
}

#[test]
fn an_unrenewed_file_expires_and_returns_its_repair_fund() {
    let (mut w, file, [d0, d1]) = world_with_file(4);
    let start = w.ledger.deal(d0).unwrap().proposal.start_epoch;
    w.run_to(start);
    let mut events = Vec::new();
    // d1 is lost and never repaired: its fund waits, then goes back
    while w.ledger.epoch() < start + 4 {
        w.prove_window(d0, &key(11));
        events.extend(w.end_epoch());
    }
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Terminated { deal_id, .. } if *deal_id == d1)));
    let refund = events
        .iter()
        .find_map(|e| match e {
            Event::FileExpired { file_id, refund } if *file_id == file => Some(*refund),
            _ => None,
        })
        .expect("the file expired");
    assert!(refund > 0);
    let archived = events
        .iter()
        .find_map(|e| match e {
            Event::Archived { files, .. } => files.iter().find(|f| f.id == file),
            _ => None,
        })
        .expect("the expired file was archived");
    assert_eq!(archived.repair_fund, 0);
    assert_eq!(archived.state, FileState::Expired);
    assert_eq!(w.ledger.account(&id(&key(10))).locked_escrow, 0);
    assert!(w.ledger.lost_slots().is_empty());
    w.ledger.check_invariants().unwrap();
    w.assert_replays();
}

/// A retrieval fault (the tracker saw the provider of an index serve bytes
/// that are not its piece's) faults the deal in the open epoch, once, and
/// that epoch is not paid even though its window proof verifies; forged,
/// stale or misdirected ones are refused.
#[test]
fn a_retrieval_fault_is_the_trackers_word_faults_once_and_that_epoch_is_not_paid() {
    let (mut w, file, [d0, d1]) = world_with_file(8);
    let start = w.ledger.deal(d0).unwrap().proposal.start_epoch;
    w.run_to(start);
    let tracker = w.tracker.clone();
    // signed by someone else than the tracker
    let forged = w.retrieval_fault_input(file, 0, &key(11)).unwrap();
    assert!(matches!(w.refuse(forged), LedgerError::WrongSigner { .. }));
    // an index out of range
    let Some(crowd_tracker::Input::RetrievalFault(mut s)) = w.retrieval_fault_input(file, 0, &tracker) else {
        unreachable!()
    };
    let (_, mut audit) = s.open(&w.ledger.network(), None).unwrap();
    audit.index = 5;
    s = crowd_protocol::Signed::sign(&tracker, &w.ledger.network(), &audit).unwrap();
    assert!(matches!(
        w.refuse(crowd_tracker::Input::RetrievalFault(s)),
        LedgerError::InvalidFault(_)
    ));
    // naming another provider than the index's
    audit.index = 0;
    audit.provider = id(&key(12));
    let wrong = crowd_protocol::Signed::sign(&tracker, &w.ledger.network(), &audit).unwrap();
    assert!(matches!(
        w.refuse(crowd_tracker::Input::RetrievalFault(wrong)),
        LedgerError::InvalidFault(_)
    ));

    let collateral = w.ledger.deal(d0).unwrap().collateral;
    let fault = w.retrieval_fault_input(file, 0, &tracker).unwrap();
    let events = w.apply(fault.clone()).unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::RetrievalFaulted { deal_id, .. } if *deal_id == d0)));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Faulted { deal_id, consecutive: 1, .. } if *deal_id == d0)));
    assert!(w.ledger.deal(d0).unwrap().collateral < collateral, "no fee taken");
    // once per deal and epoch
    assert!(matches!(
        w.refuse(w.retrieval_fault_input(file, 0, &tracker).unwrap()),
        LedgerError::Duplicate { .. }
    ));
    // both prove the window; only the honest one is paid for it
    let epoch = w.ledger.epoch();
    w.prove_window(d0, &key(11));
    w.prove_window(d1, &key(12));
    let settled = w.end_epoch();
    let paid = |d: u64| {
        settled
            .iter()
            .any(|e| matches!(e, Event::Paid { deal_id, epoch: e2, .. } if *deal_id == d && *e2 == epoch))
    };
    assert!(!paid(d0), "paid for an epoch it served wrong bytes in");
    assert!(paid(d1));
    // no second fault for that epoch at settlement; the next epoch is paid again
    assert!(!settled
        .iter()
        .any(|e| matches!(e, Event::Faulted { deal_id, .. } if *deal_id == d0)));
    // stale now: its epoch is settled
    assert!(matches!(w.refuse(fault), LedgerError::Stale { .. }));
    w.prove_window(d0, &key(11));
    let next = w.end_epoch();
    assert!(next
        .iter()
        .any(|e| matches!(e, Event::Paid { deal_id, .. } if *deal_id == d0)));
    assert_eq!(w.ledger.deal(d0).unwrap().consecutive_faults, 0);
    w.ledger.check_invariants().unwrap();
    w.assert_replays();
}

/// Ended deals and finished files leave the ledger's state: a removed file
/// and its deals go at once; a lost index keeps its terminated deal until a
/// repair replaces it, then that deal goes; ids never repeat; the log
/// replays to the same (smaller) state.
#[test]
fn ended_deals_and_finished_files_are_archived_and_a_lost_index_keeps_its_deal_until_repaired() {
    let (mut w, file, [d0, d1]) = world_with_file(20);
    let start = w.ledger.deal(d0).unwrap().proposal.start_epoch;
    w.run_to(start);
    // index 1 is lost (provider 12 stops proving)
    for _ in 0..w.ledger.config().repair_threshold() {
        w.prove_window(d0, &key(11));
        w.end_epoch();
    }
    assert_eq!(w.ledger.deal(d1).unwrap().state, DealState::Terminated);
    // a few epochs later it is still there: its slot names it
    for _ in 0..3 {
        w.prove_window(d0, &key(11));
        w.end_epoch();
    }
    assert!(w.ledger.deal(d1).is_some(), "a lost index's deal was archived");
    let tracker = w.tracker.clone();
    let repair = w.repair_input(file, 1, &key(13), 10, &tracker, &key(13)).unwrap();
    w.apply(repair).unwrap();
    let events = w.end_epoch();
    assert!(events.iter().any(
        |e| matches!(e, Event::Archived { deals, files } if files.is_empty() && deals.iter().any(|d| d.id == d1))
    ));
    assert!(w.ledger.deal(d1).is_none());
    assert_eq!(w.ledger.archived(), (1, 0));
    // removal: the file and its deals go once every one of them can
    let remove = w.remove_input(&key(10), file);
    w.apply(remove).unwrap();
    let mut archived_file = false;
    for _ in 0..4 {
        let events = w.end_epoch();
        archived_file |= events
            .iter()
            .any(|e| matches!(e, Event::Archived { files, .. } if files.iter().any(|f| f.id == file)));
        w.ledger.check_invariants().unwrap();
    }
    assert!(archived_file, "the removed file was never archived");
    assert!(w.ledger.file(file).is_none() && w.ledger.deal(d0).is_none());
    assert_eq!(w.ledger.files().count(), 0);
    assert_eq!(w.ledger.deals().count(), 0);
    let (deals, files) = w.ledger.archived();
    assert_eq!((deals, files), (3, 1));
    // a new deal still gets a fresh id
    let d3 = w.publish(&key(10), &key(13), Terms::default());
    assert_eq!(d3, 3);
    w.assert_replays();
}
