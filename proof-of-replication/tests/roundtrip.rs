//! End-to-end invariants over random piece lengths: unsealing gives the piece
//! back, honest seal and window proofs verify after an encode/decode trip,
//! and sealing, proving and unsealing one sector at a time give the same
//! bytes as doing it all in memory.

// Test helpers outside #[test] functions unwrap too: a broken fixture is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crowd_porep::graph::node_count;
use crowd_porep::proof::{prove_seal, prove_seal_sectors, prove_window, verify_seal, verify_window};
use crowd_porep::seal::{replica_id, seal, seal_sectors, unseal, unseal_to};
use crowd_porep::{
    Outboard, Parents, SealParams, SealProof, SealPublic, SectorWitness, WindowProof, WindowPublic,
};
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

    /// Sealing by sectors (512-node sectors, so these pieces span 1 to 7)
    /// equals sealing in memory: replica, every commitment and outboard, the
    /// seal proof byte for byte; and unsealing by sectors gives the piece.
    #[test]
    fn sectors_equal_memory_proptest(
        len in 1usize..(7 * 512 * 32),
        data_seed in any::<u64>(),
        seed in any::<[u8; 32]>(),
        production in any::<bool>(),
    ) {
        let preset = if production { SealParams::production() } else { SealParams::devnet() };
        let params = SealParams { seal_challenges: 8, sector_nodes: 512, ..preset };
        let mut piece = vec![0u8; len];
        blake3::Hasher::new().update(&data_seed.to_le_bytes()).finalize_xof().fill(&mut piece);
        let comm_d = *blake3::hash(&piece).as_bytes();
        let rid = replica_id(&[1; 32], &comm_d, 7, &[2; 32]);
        let parents = Parents::new(node_count(len as u64), &params).unwrap();
        let sealed = seal(&piece, &rid, &params, &parents).unwrap();
        let mut replica = Vec::new();
        let s = seal_sectors(piece.as_slice(), &rid, &params, &parents, &mut replica).unwrap();
        prop_assert_eq!(&replica, &sealed.replica);
        prop_assert_eq!(s.comm_r, sealed.commitments.comm_r);
        prop_assert_eq!(s.comm_c, sealed.commitments.comm_c);
        prop_assert_eq!(&s.column_outboard, &sealed.column_outboard);
        prop_assert_eq!(&s.replica_outboard, &sealed.replica_outboard);

        let data_outboard = Outboard::build(&piece);
        let witness = SectorWitness {
            replica_id: rid,
            piece: &piece.as_slice(),
            data_outboard: &data_outboard,
            replica: &replica.as_slice(),
            replica_outboard: &s.replica_outboard,
        };
        let by_sectors = prove_seal_sectors(&witness, &params, &parents, &seed).unwrap();
        let in_memory = prove_seal(&piece, &sealed, &params, &parents, &seed).unwrap();
        prop_assert_eq!(by_sectors.encode(), in_memory.encode());
        let public = SealPublic { piece_len: len as u64, comm_d, comm_r: s.comm_r, replica_id: rid, seed };
        prop_assert!(verify_seal(&public, &params, &by_sectors).is_ok());

        let mut back = Vec::new();
        unseal_to(replica.as_slice(), len as u64, &rid, &params, &parents, &mut back).unwrap();
        prop_assert_eq!(&back, &piece);
    }
}
