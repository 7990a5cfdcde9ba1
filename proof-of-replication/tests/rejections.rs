//! The rejection table: every way a proof can be wrong gives its own typed
//! error, never a panic, plus window-proof I/O accounting and mutation fuzzing.

// Test helpers outside #[test] functions unwrap too: a broken fixture is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;

use crowd_porep::codec::{FORMAT_VERSION, MAX_ENCODED_LEN};
use crowd_porep::graph::node_count;
use crowd_porep::proof::{prove_seal, prove_window, verify_seal, verify_window};
use crowd_porep::seal::{replica_id, seal, Sealed};
use crowd_porep::tree::GROUP_LEN;
use crowd_porep::{
    Hash32, Parents, PorepError, ReadAt, SealParams, SealProof, SealPublic, TreeKind, WindowProof,
    WindowPublic,
};
use proptest::prelude::*;

const PROVIDER: Hash32 = [0xa1; 32];
const TICKET: Hash32 = [0xb2; 32];
const SEED: Hash32 = [0xc3; 32];
const RANDOMNESS: Hash32 = [0xd4; 32];
const DEAL: u64 = 77;
const EPOCH: u64 = 1234;

fn params() -> SealParams {
    SealParams {
        seal_challenges: 6,
        window_challenges: 8,
        ..SealParams::devnet()
    }
}

fn piece(len: usize, tag: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new().update(tag).finalize_xof().fill(&mut v);
    v
}

struct Fixture {
    piece: Vec<u8>,
    parents: Parents,
    sealed: Sealed,
    rid: Hash32,
}

impl Fixture {
    fn new(len: usize, tag: &[u8]) -> Self {
        let piece = piece(len, tag);
        let parents = Parents::new(node_count(len as u64), &params()).unwrap();
        let rid = replica_id(&PROVIDER, blake3::hash(&piece).as_bytes(), DEAL, &TICKET);
        let sealed = seal(&piece, &rid, &params(), &parents).unwrap();
        Self {
            piece,
            parents,
            sealed,
            rid,
        }
    }

    fn seal_public(&self) -> SealPublic {
        SealPublic {
            piece_len: self.piece.len() as u64,
            comm_d: self.sealed.commitments.comm_d,
            comm_r: self.sealed.commitments.comm_r,
            replica_id: self.rid,
            seed: SEED,
        }
    }

    fn seal_proof(&self) -> SealProof {
        prove_seal(&self.piece, &self.sealed, &params(), &self.parents, &SEED).unwrap()
    }

    fn window_public(&self) -> WindowPublic {
        WindowPublic {
            piece_len: self.piece.len() as u64,
            comm_r: self.sealed.commitments.comm_r,
            deal_id: DEAL,
            epoch: EPOCH,
            randomness: RANDOMNESS,
        }
    }

    fn window_proof_for(&self, deal: u64, epoch: u64, randomness: &Hash32) -> WindowProof {
        prove_window(
            self.sealed.replica.as_slice(),
            &self.sealed.replica_outboard,
            &self.sealed.commitments.comm_c,
            &params(),
            deal,
            epoch,
            randomness,
        )
        .unwrap()
    }

    fn window_proof(&self) -> WindowProof {
        self.window_proof_for(DEAL, EPOCH, &RANDOMNESS)
    }
}

fn fixture() -> Fixture {
    Fixture::new(100_000 + 13, b"rejection fixture")
}

fn verify_seal_of(f: &Fixture, p: &SealProof) -> Result<(), PorepError> {
    verify_seal(&f.seal_public(), &params(), p)
}

fn verify_window_of(f: &Fixture, p: &WindowProof) -> Result<(), PorepError> {
    verify_window(&f.window_public(), &params(), p)
}

// ---------------------------------------------------------------- honest path

#[test]
fn honest_seal_and_window_proofs_verify_after_encoding() {
    let f = fixture();
    let sp = SealProof::decode(&f.seal_proof().encode()).unwrap();
    verify_seal_of(&f, &sp).unwrap();
    let wp = WindowProof::decode(&f.window_proof().encode()).unwrap();
    verify_window_of(&f, &wp).unwrap();
}

// ---------------------------------------------------------------- seal proofs

#[test]
fn seal_rejects_wrong_leaf() {
    let f = fixture();
    let mut p = f.seal_proof();
    p.challenges[0].data.chunk[3] ^= 0x40;
    assert!(matches!(
        verify_seal_of(&f, &p),
        Err(PorepError::RootMismatch {
            tree: TreeKind::Data,
            ..
        })
    ));
}

#[test]
fn seal_rejects_wrong_path() {
    let f = fixture();
    let mut p = f.seal_proof();
    p.challenges[1].replica.siblings[0][5] ^= 1;
    assert!(matches!(
        verify_seal_of(&f, &p),
        Err(PorepError::RootMismatch {
            tree: TreeKind::Replica,
            ..
        })
    ));
}

#[test]
fn seal_rejects_wrong_column_path() {
    let f = fixture();
    let mut p = f.seal_proof();
    let last = p.challenges[2].exp_parents[0].hash.siblings.len() - 1;
    p.challenges[2].exp_parents[0].hash.siblings[last][0] ^= 1;
    assert!(matches!(
        verify_seal_of(&f, &p),
        Err(PorepError::RootMismatch {
            tree: TreeKind::Columns,
            ..
        })
    ));
}

#[test]
fn seal_rejects_forged_column_label() {
    let f = fixture();
    let mut p = f.seal_proof();
    p.challenges[0].drg_parents[0].labels[0][0] ^= 1;
    assert!(matches!(
        verify_seal_of(&f, &p),
        Err(PorepError::ColumnHashMismatch { .. })
    ));
}

#[test]
fn seal_rejects_proof_for_another_piece() {
    let f = fixture();
    let other = Fixture::new(100_000 + 13, b"another piece");
    // Another piece's proof against this piece's commitments.
    assert!(matches!(
        verify_seal_of(&f, &other.seal_proof()),
        Err(PorepError::ReplicaIdMismatch { .. })
    ));
    // Same replica id claimed, other piece's commitments: comm_r does not match.
    let mut p = other.seal_proof();
    p.replica_id = f.rid;
    assert!(matches!(verify_seal_of(&f, &p), Err(PorepError::CommRMismatch)));
    // Right comm_r but another comm_d: the data openings fail.
    let mut public = f.seal_public();
    public.comm_d = other.sealed.commitments.comm_d;
    assert!(matches!(
        verify_seal(&public, &params(), &f.seal_proof()),
        Err(PorepError::RootMismatch {
            tree: TreeKind::Data,
            ..
        })
    ));
}

#[test]
fn seal_rejects_another_replica_id() {
    let f = fixture();
    let mut public = f.seal_public();
    public.replica_id = replica_id(&[0xee; 32], &public.comm_d, DEAL, &TICKET);
    assert!(matches!(
        verify_seal(&public, &params(), &f.seal_proof()),
        Err(PorepError::ReplicaIdMismatch { .. })
    ));
}

#[test]
fn seal_rejects_labels_made_for_another_replica_id() {
    // A cheater reuses labels sealed for replica id B while claiming id A.
    let f = fixture();
    let rid_b = replica_id(&[0x99; 32], &f.sealed.commitments.comm_d, DEAL, &TICKET);
    let sealed_b = seal(&f.piece, &rid_b, &params(), &f.parents).unwrap();
    let forged = Sealed {
        replica_id: f.rid,
        ..sealed_b
    };
    let p = prove_seal(&f.piece, &forged, &params(), &f.parents, &SEED).unwrap();
    let mut public = f.seal_public();
    public.comm_r = forged.commitments.comm_r;
    assert!(matches!(
        verify_seal(&public, &params(), &p),
        Err(PorepError::LabelMismatch { layer: 1, .. })
    ));
}

#[test]
fn seal_rejects_replica_of_other_data() {
    // Replica sealed from other bytes, openings from the deal's piece.
    let f = fixture();
    let other = piece(f.piece.len(), b"substituted data");
    let sealed = seal(&other, &f.rid, &params(), &f.parents).unwrap();
    let forged = Sealed {
        data_outboard: f.sealed.data_outboard.clone(),
        ..sealed
    };
    let p = prove_seal(&f.piece, &forged, &params(), &f.parents, &SEED).unwrap();
    let mut public = f.seal_public();
    public.comm_r = forged.commitments.comm_r;
    assert!(matches!(
        verify_seal(&public, &params(), &p),
        Err(PorepError::ReplicaMismatch { .. })
    ));
}

#[test]
fn seal_rejects_another_seed() {
    let f = fixture();
    let mut public = f.seal_public();
    public.seed = [0x01; 32];
    assert!(matches!(
        verify_seal(&public, &params(), &f.seal_proof()),
        Err(PorepError::WrongChallenge { index: 0, .. })
    ));
}

#[test]
fn seal_rejects_missing_challenge() {
    let f = fixture();
    let mut p = f.seal_proof();
    p.challenges.pop();
    assert!(matches!(
        verify_seal_of(&f, &p),
        Err(PorepError::ChallengeCount { expected: 6, got: 5 })
    ));
}

#[test]
fn seal_rejects_missing_parent_column() {
    let f = fixture();
    let mut p = f.seal_proof();
    p.challenges[0].exp_parents.pop();
    assert!(matches!(
        verify_seal_of(&f, &p),
        Err(PorepError::ShapeMismatch { index: 0, .. })
    ));
}

#[test]
fn seal_rejects_opening_of_a_neighbouring_chunk() {
    let f = fixture();
    let mut p = f.seal_proof();
    let c = &mut p.challenges[0];
    let chunk = if c.data.chunk_index == 0 {
        1
    } else {
        c.data.chunk_index - 1
    };
    c.data = f.sealed.data_outboard.open(&f.piece, chunk).unwrap();
    assert!(matches!(
        verify_seal_of(&f, &p),
        Err(PorepError::WrongChunk {
            tree: TreeKind::Data,
            ..
        })
    ));
}

// -------------------------------------------------------------- window proofs

#[test]
fn window_rejects_wrong_leaf() {
    let f = fixture();
    let mut p = f.window_proof();
    p.openings[3].chunk[100] ^= 0x80;
    assert!(matches!(
        verify_window_of(&f, &p),
        Err(PorepError::RootMismatch {
            tree: TreeKind::Replica,
            ..
        })
    ));
}

#[test]
fn window_rejects_wrong_path() {
    let f = fixture();
    let mut p = f.window_proof();
    p.openings[0].siblings.swap(0, 1);
    assert!(matches!(
        verify_window_of(&f, &p),
        Err(PorepError::RootMismatch {
            tree: TreeKind::Replica,
            ..
        })
    ));
}

#[test]
fn window_rejects_truncated_path() {
    let f = fixture();
    let mut p = f.window_proof();
    p.openings[0].siblings.pop();
    assert!(matches!(
        verify_window_of(&f, &p),
        Err(PorepError::PathLength { .. })
    ));
}

#[test]
fn window_rejects_proof_for_another_piece() {
    let f = fixture();
    let other = Fixture::new(100_000 + 13, b"another piece");
    assert!(matches!(
        verify_window_of(&f, &other.window_proof()),
        Err(PorepError::CommRMismatch)
    ));
}

#[test]
fn window_rejects_another_deal() {
    let f = fixture();
    let p = f.window_proof_for(DEAL + 1, EPOCH, &RANDOMNESS);
    assert!(matches!(
        verify_window_of(&f, &p),
        Err(PorepError::DealMismatch {
            expected: DEAL,
            got: 78
        })
    ));
    // Relabelled header: the openings answer the other deal's challenges.
    let mut relabelled = p;
    relabelled.deal_id = DEAL;
    assert!(matches!(
        verify_window_of(&f, &relabelled),
        Err(PorepError::WrongChunk { .. })
    ));
}

#[test]
fn window_rejects_another_epoch() {
    let f = fixture();
    let p = f.window_proof_for(DEAL, EPOCH - 1, &RANDOMNESS);
    assert!(matches!(
        verify_window_of(&f, &p),
        Err(PorepError::EpochMismatch {
            expected: EPOCH,
            got: 1233
        })
    ));
    let mut relabelled = p;
    relabelled.epoch = EPOCH;
    assert!(matches!(
        verify_window_of(&f, &relabelled),
        Err(PorepError::WrongChunk { .. })
    ));
}

#[test]
fn window_rejects_another_randomness() {
    let f = fixture();
    let p = f.window_proof_for(DEAL, EPOCH, &[0x55; 32]);
    assert!(matches!(
        verify_window_of(&f, &p),
        Err(PorepError::WrongChunk { .. })
    ));
}

#[test]
fn window_rejects_missing_opening() {
    let f = fixture();
    let mut p = f.window_proof();
    p.openings.truncate(2);
    assert!(matches!(
        verify_window_of(&f, &p),
        Err(PorepError::ChallengeCount { expected: 8, got: 2 })
    ));
}

// --------------------------------------------------------------------- codec

#[test]
fn decode_rejects_truncated_encoding() {
    let f = fixture();
    let bytes = f.seal_proof().encode();
    for cut in [0, 3, 50, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            matches!(
                SealProof::decode(&bytes[..cut]),
                Err(PorepError::Truncated { .. })
            ),
            "cut at {cut}"
        );
    }
    let w = f.window_proof().encode();
    assert!(matches!(
        WindowProof::decode(&w[..w.len() - 1]),
        Err(PorepError::Truncated { .. })
    ));
}

#[test]
fn decode_rejects_oversized_length_prefix() {
    let f = fixture();
    let mut w = f.window_proof().encode();
    // opening count sits after header(4) + deal(8) + epoch(8) + comm_c + comm_r_last
    w[84..88].copy_from_slice(&5000u32.to_le_bytes());
    assert!(matches!(
        WindowProof::decode(&w),
        Err(PorepError::TooLarge {
            field: "opening count",
            len: 5000,
            ..
        })
    ));
    let mut s = f.seal_proof().encode();
    s[100..104].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        SealProof::decode(&s),
        Err(PorepError::TooLarge {
            field: "challenge count",
            ..
        })
    ));
    // a chunk longer than 1 KiB: first opening's length at 88 + 8
    let mut w = f.window_proof().encode();
    w[96..98].copy_from_slice(&1025u16.to_le_bytes());
    assert!(matches!(
        WindowProof::decode(&w),
        Err(PorepError::TooLarge {
            field: "chunk length",
            ..
        })
    ));
}

#[test]
fn decode_rejects_oversized_encoding() {
    let mut big = f_header(b'W');
    big.resize(MAX_ENCODED_LEN + 1, 0);
    assert!(matches!(
        WindowProof::decode(&big),
        Err(PorepError::TooLarge {
            field: "encoding",
            ..
        })
    ));
}

fn f_header(kind: u8) -> Vec<u8> {
    vec![b'C', b'P', kind, FORMAT_VERSION]
}

#[test]
fn decode_rejects_trailing_bytes() {
    let f = fixture();
    let mut s = f.seal_proof().encode();
    s.extend_from_slice(&[0, 0, 0]);
    assert!(matches!(SealProof::decode(&s), Err(PorepError::TrailingBytes(3))));
}

#[test]
fn decode_rejects_garbage() {
    let garbage = piece(4096, b"garbage");
    assert!(matches!(
        SealProof::decode(&garbage),
        Err(PorepError::BadMagic { .. })
    ));
    assert!(matches!(
        WindowProof::decode(&garbage),
        Err(PorepError::BadMagic { .. })
    ));
}

#[test]
fn decode_rejects_wrong_version() {
    let f = fixture();
    let mut w = f.window_proof().encode();
    w[3] = FORMAT_VERSION + 1;
    assert!(matches!(
        WindowProof::decode(&w),
        Err(PorepError::UnsupportedVersion { got: 2, supported: 1 })
    ));
}

// ------------------------------------------------ window proof reads little

/// A replica source that counts the bytes read.
struct Counting<'a> {
    inner: &'a [u8],
    read: Cell<u64>,
}

impl ReadAt for Counting<'_> {
    fn len_bytes(&self) -> std::io::Result<u64> {
        Ok(self.inner.len() as u64)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.read.set(self.read.get() + buf.len() as u64);
        self.inner.read_at(offset, buf)
    }
}

#[test]
fn window_proof_reads_only_challenged_groups() {
    let f = Fixture::new(1 << 20, b"one mebibyte");
    let src = Counting {
        inner: &f.sealed.replica,
        read: Cell::new(0),
    };
    let p = prove_window(
        &src,
        &f.sealed.replica_outboard,
        &f.sealed.commitments.comm_c,
        &params(),
        DEAL,
        EPOCH,
        &RANDOMNESS,
    )
    .unwrap();
    verify_window_of(&f, &p).unwrap();
    let n = u64::from(params().window_challenges);
    assert_eq!(src.read.get(), n * GROUP_LEN as u64);
    assert!(src.read.get() * 4 < f.sealed.replica.len() as u64);
}

#[test]
fn window_proof_from_a_file_matches_memory() {
    let f = fixture();
    let path = std::env::temp_dir().join(format!("crowd-porep-replica-{}", std::process::id()));
    std::fs::write(&path, &f.sealed.replica).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let from_file = prove_window(
        &file,
        &f.sealed.replica_outboard,
        &f.sealed.commitments.comm_c,
        &params(),
        DEAL,
        EPOCH,
        &RANDOMNESS,
    )
    .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(from_file, f.window_proof());
}

#[test]
fn window_proof_from_a_short_replica_is_a_size_error() {
    let f = fixture();
    let short = &f.sealed.replica[..1000];
    assert!(matches!(
        prove_window(
            short,
            &f.sealed.replica_outboard,
            &f.sealed.commitments.comm_c,
            &params(),
            DEAL,
            EPOCH,
            &RANDOMNESS,
        ),
        Err(PorepError::SizeMismatch { .. })
    ));
}

/// A replica whose reads fail, like a dying disk.
struct Failing(u64);

impl ReadAt for Failing {
    fn len_bytes(&self) -> std::io::Result<u64> {
        Ok(self.0)
    }
    fn read_at(&self, _offset: u64, _buf: &mut [u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("disk gone"))
    }
}

#[test]
fn window_proof_from_a_failing_disk_is_an_io_error() {
    let f = fixture();
    let src = Failing(f.sealed.replica.len() as u64);
    assert!(matches!(
        prove_window(
            &src,
            &f.sealed.replica_outboard,
            &f.sealed.commitments.comm_c,
            &params(),
            DEAL,
            EPOCH,
            &RANDOMNESS,
        ),
        Err(PorepError::Io { .. })
    ));
}

// ------------------------------------------------------------ mutation fuzz

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn seal_proof_mutation_proptest(pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let f = small_fixture();
        let mut bytes = f.seal_proof().encode();
        let i = pos.index(bytes.len());
        bytes[i] ^= flip;
        let rejected = SealProof::decode(&bytes).and_then(|p| verify_seal_of(f, &p)).is_err();
        prop_assert!(rejected, "mutating byte {} by {:#x} still verified", i, flip);
    }

    #[test]
    fn window_proof_mutation_proptest(pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let f = small_fixture();
        let mut bytes = f.window_proof().encode();
        let i = pos.index(bytes.len());
        bytes[i] ^= flip;
        let rejected = WindowProof::decode(&bytes).and_then(|p| verify_window_of(f, &p)).is_err();
        prop_assert!(rejected, "mutating byte {} by {:#x} still verified", i, flip);
    }
}

fn small_fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(|| Fixture::new(20_000 + 5, b"mutation fixture"))
}
