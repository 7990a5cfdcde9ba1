//! End-to-end invariants over random piece lengths: unsealing gives the piece
//! back, and honest seal and window proofs verify after an encode/decode trip.

// Test helpers outside #[test] functions unwrap too: a broken fixture is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crowd_porep::graph::node_count;
use crowd_porep::proof::{prove_seal, prove_window, verify_seal, verify_window};
use crowd_porep::seal::{replica_id, seal, unseal};
use crowd_porep::{Parents, SealParams, SealProof, SealPublic, WindowProof, WindowPublic};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn seal_roundtrip_proptest(
        len in 1usize..40_000,
        data_seed in any::<u64>(),
        provider in any::<[u8; 32]>(),
        deal in any::<u64>(),
        seed in any::<[u8; 32]>(),
        randomness in any::<[u8; 32]>(),
        epoch in any::<u64>(),
    ) {
        let params = SealParams { seal_challenges: 3, window_challenges: 4, ..SealParams::devnet() };
        let mut piece = vec![0u8; len];
        blake3::Hasher::new().update(&data_seed.to_le_bytes()).finalize_xof().fill(&mut piece);
        let comm_d = *blake3::hash(&piece).as_bytes();
        let rid = replica_id(&provider, &comm_d, deal, &[0; 32]);
        let parents = Parents::new(node_count(len as u64), &params).unwrap();
        let sealed = seal(&piece, &rid, &params, &parents).unwrap();
        prop_assert_eq!(sealed.commitments.comm_d, comm_d);
        prop_assert_eq!(sealed.replica.len(), len.div_ceil(32) * 32);
        let back = unseal(&sealed.replica, len as u64, &rid, &params, &parents).unwrap();
        prop_assert_eq!(&back, &piece);

        let proof = prove_seal(&piece, &sealed, &params, &parents, &seed).unwrap();
        let public = SealPublic { piece_len: len as u64, comm_d, comm_r: sealed.commitments.comm_r, replica_id: rid, seed };
        let decoded = SealProof::decode(&proof.encode()).unwrap();
        prop_assert!(verify_seal(&public, &params, &decoded).is_ok());

        let w = prove_window(
            sealed.replica.as_slice(), &sealed.replica_outboard, &sealed.commitments.comm_c,
            &params, deal, epoch, &randomness,
        ).unwrap();
        let wpublic = WindowPublic { piece_len: len as u64, comm_r: sealed.commitments.comm_r, deal_id: deal, epoch, randomness };
        let decoded = WindowProof::decode(&w.encode()).unwrap();
        prop_assert!(verify_window(&wpublic, &params, &decoded).is_ok());
    }
}
