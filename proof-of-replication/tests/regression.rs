//! Known-answer vectors for format version 1: a small fixed-seed seal.
//!
//! `tests/vectors/v1/` holds the commitments (`seal.json`, `commitments.bin`)
//! and one proof of each kind (`seal_proof.bin`, `window_proof.bin`). This test
//! re-verifies the stored proofs against the stored commitments, recomputes
//! the commitments from the fixed inputs and checks fresh proofs encode to the
//! same bytes. Any change to hashing, the graph, challenge derivation or the
//! encoding breaks it: such a change must bump `codec::FORMAT_VERSION` and add
//! a new vector directory. Regenerate with `CROWD_REGEN_VECTORS=1 cargo test
//! -p crowd-porep --test regression`.

// Test helpers outside #[test] functions unwrap too: a broken fixture is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use crowd_porep::codec::FORMAT_VERSION;
use crowd_porep::graph::node_count;
use crowd_porep::proof::{prove_seal, prove_window, verify_seal, verify_window};
use crowd_porep::seal::{replica_id, seal};
use crowd_porep::{
    Commitments, Hash32, Parents, SealParams, SealProof, SealPublic, WindowProof, WindowPublic,
};

const PIECE_LEN: usize = 64 * 1024 + 100;
const PIECE_SEED: &str = "crowdstore porep regression v1";
const PROVIDER: Hash32 = [0x11; 32];
const DEAL: u64 = 7;
const TICKET: Hash32 = [0x22; 32];
const SEED: Hash32 = [0x33; 32];
const RANDOMNESS: Hash32 = [0x44; 32];
const EPOCH: u64 = 1000;

fn params() -> SealParams {
    SealParams {
        seal_challenges: 4,
        window_challenges: 5,
        ..SealParams::devnet()
    }
}

fn dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()))
        .join("tests/vectors")
        .join(format!("v{FORMAT_VERSION}"))
}

/// The fixed piece: BLAKE3's XOF over the seed string.
fn piece() -> Vec<u8> {
    let mut v = vec![0u8; PIECE_LEN];
    blake3::Hasher::new()
        .update(PIECE_SEED.as_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}

struct Fresh {
    rid: Hash32,
    commitments: Commitments,
    seal_proof: SealProof,
    window_proof: WindowProof,
}

fn fresh() -> Fresh {
    let piece = piece();
    let p = params();
    let parents = Parents::new(node_count(PIECE_LEN as u64), &p).unwrap();
    let rid = replica_id(&PROVIDER, blake3::hash(&piece).as_bytes(), DEAL, &TICKET);
    let sealed = seal(&piece, &rid, &p, &parents).unwrap();
    let seal_proof = prove_seal(&piece, &sealed, &p, &parents, &SEED).unwrap();
    let window_proof = prove_window(
        sealed.replica.as_slice(),
        &sealed.replica_outboard,
        &sealed.commitments.comm_c,
        &p,
        DEAL,
        EPOCH,
        &RANDOMNESS,
    )
    .unwrap();
    Fresh {
        rid,
        commitments: sealed.commitments,
        seal_proof,
        window_proof,
    }
}

fn hex32(s: &serde_json::Value, key: &str) -> Hash32 {
    let text = s[key].as_str().unwrap_or_else(|| panic!("{key} missing"));
    let bytes = hex::decode(text).unwrap();
    bytes.try_into().unwrap()
}

fn regenerate(f: &Fresh) {
    let d = dir();
    std::fs::create_dir_all(&d).unwrap();
    let c = &f.commitments;
    let json = serde_json::json!({
        "format_version": FORMAT_VERSION,
        "description": "devnet seal of a fixed 64 KiB + 100 B piece; see tests/regression.rs",
        "params": params(),
        "piece_len": PIECE_LEN,
        "piece_seed": PIECE_SEED,
        "provider": hex::encode(PROVIDER),
        "deal_id": DEAL,
        "ticket": hex::encode(TICKET),
        "seed": hex::encode(SEED),
        "randomness": hex::encode(RANDOMNESS),
        "epoch": EPOCH,
        "replica_id": hex::encode(f.rid),
        "comm_d": hex::encode(c.comm_d),
        "comm_c": hex::encode(c.comm_c),
        "comm_r_last": hex::encode(c.comm_r_last),
        "comm_r": hex::encode(c.comm_r),
    });
    std::fs::write(
        d.join("seal.json"),
        serde_json::to_string_pretty(&json).unwrap() + "\n",
    )
    .unwrap();
    std::fs::write(d.join("commitments.bin"), c.encode()).unwrap();
    std::fs::write(d.join("seal_proof.bin"), f.seal_proof.encode()).unwrap();
    std::fs::write(d.join("window_proof.bin"), f.window_proof.encode()).unwrap();
}

#[test]
fn stored_vectors_reverify_and_match_a_fresh_seal() {
    let f = fresh();
    if std::env::var_os("CROWD_REGEN_VECTORS").is_some_and(|v| v == "1") {
        regenerate(&f);
    }
    let d = dir();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("seal.json")).unwrap()).unwrap();
    assert_eq!(json["format_version"], u64::from(FORMAT_VERSION));
    let stored_params: SealParams = serde_json::from_value(json["params"].clone()).unwrap();
    // The vectors predate sectors: their params decode as one sector per
    // piece, which for this piece (one sector at any sector size) is the
    // same graph as today's preset.
    assert_eq!(stored_params.sector_nodes, crowd_porep::graph::MAX_NODES);
    assert!(node_count(PIECE_LEN as u64) <= params().sector_nodes);
    assert_eq!(
        SealParams {
            sector_nodes: params().sector_nodes,
            ..stored_params
        },
        params()
    );
    let stored = Commitments::decode(&std::fs::read(d.join("commitments.bin")).unwrap()).unwrap();
    assert_eq!(stored.comm_d, hex32(&json, "comm_d"));
    assert_eq!(stored.comm_r, hex32(&json, "comm_r"));

    // 1. The stored proofs verify against the stored commitments alone.
    let seal_proof = SealProof::decode(&std::fs::read(d.join("seal_proof.bin")).unwrap()).unwrap();
    let public = SealPublic {
        piece_len: stored.piece_len,
        comm_d: stored.comm_d,
        comm_r: stored.comm_r,
        replica_id: hex32(&json, "replica_id"),
        seed: hex32(&json, "seed"),
    };
    verify_seal(&public, &stored_params, &seal_proof).unwrap();
    let window_proof = WindowProof::decode(&std::fs::read(d.join("window_proof.bin")).unwrap()).unwrap();
    let wpublic = WindowPublic {
        piece_len: stored.piece_len,
        comm_r: stored.comm_r,
        deal_id: json["deal_id"].as_u64().unwrap(),
        epoch: json["epoch"].as_u64().unwrap(),
        randomness: hex32(&json, "randomness"),
    };
    verify_window(&wpublic, &stored_params, &window_proof).unwrap();

    // 2. comm_d is the piece's plain BLAKE3 hash (an independent implementation).
    assert_eq!(stored.comm_d, *blake3::hash(&piece()).as_bytes());

    // 3. Sealing today gives the same commitments and byte-identical proofs.
    assert_eq!(f.rid, public.replica_id);
    assert_eq!(f.commitments, stored);
    assert_eq!(
        f.seal_proof.encode(),
        std::fs::read(d.join("seal_proof.bin")).unwrap()
    );
    assert_eq!(
        f.window_proof.encode(),
        std::fs::read(d.join("window_proof.bin")).unwrap()
    );
}
