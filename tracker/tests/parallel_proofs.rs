//! `Ledger::apply_proofs_logged` (proofs verified in parallel, committed in
//! order) gives exactly what sequential `apply_logged` gives: the same
//! results, state and head, for any mix of valid, invalid, duplicate,
//! misdirected and stale proofs and other inputs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{id, key, Terms, World};
use crowd_tracker::{Input, Ledger};
use proptest::prelude::*;

/// Two active deals (pieces 0 and 1) of provider 2, challenged in the open
/// epoch, plus some inputs built against that state.
fn world() -> (World, Vec<Input>) {
    let mut w = World::new();
    let (client, provider) = (key(1), key(2));
    w.mint(&client, 10_000);
    w.mint(&provider, 10_000);
    w.register(&provider, 1 << 20);
    let terms = |piece| Terms {
        piece,
        lead: 3,
        duration: 6,
        ..Terms::default()
    };
    let a = w.publish(&client, &provider, terms(0));
    let b = w.publish(&client, &provider, terms(1));
    w.onboard(a, &provider);
    w.onboard(b, &provider);
    let start = w.ledger.deal(a).unwrap().proposal.start_epoch;
    w.run_to(start);
    let e = w.ledger.epoch();
    let mut flipped = w.window_proof_input(b, &provider, e, None);
    if let Input::WindowProof(s) = &mut flipped {
        s.parts_mut().2[3] ^= 1;
    }
    let inputs = vec![
        w.window_proof_input(a, &provider, e, None),
        w.window_proof_input(b, &provider, e, None),
        // wrong randomness: does not verify
        w.window_proof_input(a, &provider, e, Some([9; 32])),
        // signed by the client, not the provider
        w.window_proof_input(b, &client, e, None),
        // for the next epoch
        w.window_proof_input(a, &provider, e + 1, None),
        flipped,
        w.end_epoch_input(),
        Input::Mint {
            account: id(&client),
            amount: 5,
            nonce: w.ledger.mints(),
        },
    ];
    (w, inputs)
}

fn outcome(
    r: &Result<(crowd_tracker::LogEntry, Vec<crowd_tracker::Event>), crowd_tracker::LedgerError>,
) -> String {
    match r {
        Ok((entry, events)) => format!("ok {entry:?} {events:?}"),
        Err(e) => format!("err {e}"),
    }
}

fn check(base: &Ledger, inputs: Vec<Input>) -> Result<(), TestCaseError> {
    let mut sequential = base.clone();
    let expected: Vec<String> = inputs
        .iter()
        .map(|i| outcome(&sequential.apply_logged(i.clone())))
        .collect();
    let mut parallel = base.clone();
    let got: Vec<String> = parallel.apply_proofs_logged(inputs).iter().map(outcome).collect();
    prop_assert_eq!(got, expected);
    prop_assert_eq!(parallel.head(), sequential.head());
    prop_assert_eq!(parallel, sequential);
    Ok(())
}

#[test]
fn a_batch_with_duplicates_and_other_inputs_equals_sequential_application() {
    let (w, inputs) = world();
    let [a, b, bad, _, _, _, end, mint] = <[Input; 8]>::try_from(inputs).unwrap();
    let outcomes = |batch: Vec<Input>| -> Vec<bool> {
        let mut l = w.ledger.clone();
        l.apply_proofs_logged(batch).iter().map(Result::is_ok).collect()
    };
    // a, its duplicate, an invalid one, b, a mint (re-plans the rest), b and a again
    let batch = vec![a.clone(), a.clone(), bad, b.clone(), mint, b.clone(), a.clone()];
    assert_eq!(
        outcomes(batch.clone()),
        vec![true, false, false, true, true, false, false]
    );
    check(&w.ledger, batch).unwrap();
    // the epoch ends first: both proofs are then stale
    let batch = vec![end, a, b];
    assert_eq!(outcomes(batch.clone()), vec![true, false, false]);
    check(&w.ledger, batch).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn parallel_proofs_equal_sequential_proptest(picks in proptest::collection::vec(0usize..8, 0..12)) {
        let (w, inputs) = world();
        let batch = picks.into_iter().map(|i| inputs[i].clone()).collect();
        check(&w.ledger, batch)?;
    }
}
