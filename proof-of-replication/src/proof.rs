//! Seal proofs (interactive PoRep) and window proofs of storage.

use crate::error::{PorepError, Result, TreeKind};
use std::collections::BTreeMap;

use crate::graph::{node_count, node_parents, Parents, MAX_NODES};
use crate::params::SealParams;
use crate::seal::{column_hash, comm_r, Label, LabelHasher, Labels, Sealed};
use crate::tree::{
    chunk_of_node, hex32, verify_chunk, ChunkOpening, Hash32, Outboard, OutboardBuilder, ReadAt, GROUP_LEN,
};

const SEAL_CHALLENGE_CONTEXT: &str = "crowdstore porep v1 seal challenge";
const WINDOW_CHALLENGE_CONTEXT: &str = "crowdstore porep v1 window challenge";

fn challenge_node(hasher: &blake3::Hasher, index: u64, nodes: u64) -> u64 {
    let mut h = hasher.clone();
    h.update(&index.to_le_bytes());
    let mut w = [0u8; 8];
    h.finalize_xof().fill(&mut w);
    u64::from_le_bytes(w) % nodes
}

/// The `count` nodes challenged by a seal `seed` (drawn after `comm_r` is published).
pub fn seal_challenges(replica_id: &Hash32, seed: &Hash32, nodes: u64, count: u32) -> Vec<u64> {
    let mut h = blake3::Hasher::new_derive_key(SEAL_CHALLENGE_CONTEXT);
    h.update(replica_id).update(seed);
    (0..u64::from(count))
        .map(|k| challenge_node(&h, k, nodes.max(1)))
        .collect()
}

/// The `count` nodes challenged in a window: `H(randomness ‖ deal ‖ epoch ‖ k) mod n`.
pub fn window_challenges(randomness: &Hash32, deal_id: u64, epoch: u64, nodes: u64, count: u32) -> Vec<u64> {
    let mut h = blake3::Hasher::new_derive_key(WINDOW_CHALLENGE_CONTEXT);
    h.update(randomness)
        .update(&deal_id.to_le_bytes())
        .update(&epoch.to_le_bytes());
    (0..u64::from(count))
        .map(|k| challenge_node(&h, k, nodes.max(1)))
        .collect()
}

/// A column of labels with its column hash opened against `comm_c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnOpening {
    /// `label(1, i) … label(L, i)`.
    pub labels: Vec<Label>,
    /// The chunk of column hashes holding `H(labels)`, opened against `comm_c`.
    pub hash: ChunkOpening,
}

/// The answer to one seal challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealChallengeProof {
    /// The challenged node.
    pub node: u64,
    /// The data chunk holding the node, against `comm_d`.
    pub data: ChunkOpening,
    /// The replica chunk holding the node, against `comm_r_last`.
    pub replica: ChunkOpening,
    /// The node's own column.
    pub column: ColumnOpening,
    /// Columns of the DRG parents, in graph order.
    pub drg_parents: Vec<ColumnOpening>,
    /// Columns of the expander parents, in graph order.
    pub exp_parents: Vec<ColumnOpening>,
}

/// Interactive proof of replication for one sealed replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealProof {
    /// The replica id the proof claims (checked against the expected one).
    pub replica_id: Hash32,
    /// Root over the column hashes.
    pub comm_c: Hash32,
    /// Root of the replica.
    pub comm_r_last: Hash32,
    /// One answer per challenge, in challenge order.
    pub challenges: Vec<SealChallengeProof>,
}

/// What the verifier of a seal proof knows independently of the proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealPublic {
    /// Length of the piece in bytes.
    pub piece_len: u64,
    /// The piece's content address.
    pub comm_d: Hash32,
    /// The published replica commitment.
    pub comm_r: Hash32,
    /// `replica_id(provider, comm_d, deal, ticket)`, computed by the verifier.
    pub replica_id: Hash32,
    /// The seal seed, drawn after `comm_r` was published.
    pub seed: Hash32,
}

/// A window proof of storage: openings of the challenged replica nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowProof {
    /// The deal proven.
    pub deal_id: u64,
    /// The proving epoch.
    pub epoch: u64,
    /// Root over the column hashes (to recompute `comm_r`).
    pub comm_c: Hash32,
    /// Root of the replica.
    pub comm_r_last: Hash32,
    /// One replica chunk per challenge, against `comm_r_last`.
    pub openings: Vec<ChunkOpening>,
}

/// What the verifier of a window proof knows independently of the proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowPublic {
    /// Length of the original piece in bytes (the replica is padded to 32).
    pub piece_len: u64,
    /// The published replica commitment.
    pub comm_r: Hash32,
    /// The deal being proven.
    pub deal_id: u64,
    /// The proving epoch.
    pub epoch: u64,
    /// The window's randomness.
    pub randomness: Hash32,
}

/// What a prover that keeps no labels opens to answer a seal challenge
/// ([`prove_seal_sectors`]), and the stored half of a [`SealWitness`]: the
/// piece and the replica, each with its outboard, read only where a
/// challenge lands.
pub struct SectorWitness<'a> {
    pub replica_id: Hash32,
    /// The piece (unpadded) and its outboard (`comm_d`).
    pub piece: &'a (dyn ReadAt + Sync),
    pub data_outboard: &'a Outboard,
    /// The replica and its outboard (`comm_r_last`).
    pub replica: &'a (dyn ReadAt + Sync),
    pub replica_outboard: &'a Outboard,
}

impl std::fmt::Debug for SectorWitness<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SectorWitness")
            .field("replica_id", &hex32(&self.replica_id))
            .finish_non_exhaustive()
    }
}

/// What a prover opens to answer a seal challenge. Every source is read
/// only where a challenge lands, so each may be in memory, a file, or
/// computed ([`crate::seal::Labels::replica_of`],
/// [`crate::seal::Labels::column_hashes`]).
pub struct SealWitness<'a> {
    /// The piece and the replica, with their outboards.
    pub stored: SectorWitness<'a>,
    /// Every layer of labels, the column hashes and their outboard (`comm_c`).
    pub labels: &'a Labels,
    pub column_hashes: &'a (dyn ReadAt + Sync),
    pub column_outboard: &'a Outboard,
}

impl std::fmt::Debug for SealWitness<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealWitness")
            .field("labels", self.labels)
            .finish_non_exhaustive()
    }
}

fn open_column(w: &SealWitness<'_>, node: u64) -> Result<ColumnOpening> {
    Ok(ColumnOpening {
        labels: w.labels.column(node).ok_or(PorepError::SizeMismatch {
            what: "labelled nodes",
            expected: node + 1,
            got: w.labels.range().end,
        })?,
        hash: w
            .column_outboard
            .open_from(w.column_hashes, chunk_of_node(node))?,
    })
}

/// A challenged node with its DRG and expander parents.
type Challenged = (u64, Vec<u64>, Vec<u64>);

/// The challenged nodes and the DRG and expander parents of each.
fn challenged(
    replica_id: &Hash32,
    seed: &Hash32,
    nodes: u64,
    params: &SealParams,
    parents: &Parents,
) -> Result<Vec<Challenged>> {
    seal_challenges(replica_id, seed, nodes, params.seal_challenges)
        .into_iter()
        .map(|node| {
            let (drg, exp) = parents.parents_of(node).ok_or(PorepError::SizeMismatch {
                what: "graph nodes",
                expected: node + 1,
                got: parents.nodes(),
            })?;
            Ok((node, drg, exp))
        })
        .collect()
}

/// Answer a seal challenge: `piece` and `sealed` are the prover's own data.
pub fn prove_seal(
    piece: &[u8],
    sealed: &Sealed,
    params: &SealParams,
    parents: &Parents,
    seed: &Hash32,
) -> Result<SealProof> {
    let witness = SealWitness {
        stored: SectorWitness {
            replica_id: sealed.replica_id,
            piece: &piece,
            data_outboard: &sealed.data_outboard,
            replica: &sealed.replica,
            replica_outboard: &sealed.replica_outboard,
        },
        labels: &sealed.labels,
        column_hashes: &sealed.column_hashes,
        column_outboard: &sealed.column_outboard,
    };
    prove_seal_with(&witness, params, parents, seed)
}

/// Answer a seal challenge from a [`SealWitness`].
pub fn prove_seal_with(
    w: &SealWitness<'_>,
    params: &SealParams,
    parents: &Parents,
    seed: &Hash32,
) -> Result<SealProof> {
    params.validate()?;
    let nodes = node_count(w.stored.data_outboard.len());
    if !parents.matches(nodes, params) || w.labels.nodes() != nodes {
        return Err(PorepError::SizeMismatch {
            what: "sealed nodes",
            expected: nodes,
            got: w.labels.nodes(),
        });
    }
    let challenges = challenged(&w.stored.replica_id, seed, nodes, params, parents)?;
    answer(&w.stored, challenges, w.column_outboard, |node| {
        open_column(w, node)
    })
}

/// The proof answering `challenges`: data and replica opened from `stored`,
/// columns by `open_column`.
fn answer(
    stored: &SectorWitness<'_>,
    challenges: Vec<Challenged>,
    column_outboard: &Outboard,
    open_column: impl Fn(u64) -> Result<ColumnOpening>,
) -> Result<SealProof> {
    let challenges = challenges
        .into_iter()
        .map(|(node, drg, exp)| {
            let chunk = chunk_of_node(node);
            Ok(SealChallengeProof {
                node,
                data: stored.data_outboard.open_from(stored.piece, chunk)?,
                replica: stored.replica_outboard.open_from(stored.replica, chunk)?,
                column: open_column(node)?,
                drg_parents: drg.iter().map(|&p| open_column(p)).collect::<Result<_>>()?,
                exp_parents: exp.iter().map(|&p| open_column(p)).collect::<Result<_>>()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SealProof {
        replica_id: stored.replica_id,
        comm_c: column_outboard.root(),
        comm_r_last: stored.replica_outboard.root(),
        challenges,
    })
}

/// Answer a seal challenge regenerating the labels one sector at a time:
/// the same proof as [`prove_seal_with`] over every layer in memory, in one
/// sector's layers of memory plus the opened columns and their 16 KiB groups
/// of column hashes. Every sector is labelled once (`comm_c`'s tree needs
/// every column hash); the columns a challenge opens are kept from the
/// sector they lie in (no parent leaves its sector).
pub fn prove_seal_sectors(
    w: &SectorWitness<'_>,
    params: &SealParams,
    parents: &Parents,
    seed: &Hash32,
) -> Result<SealProof> {
    params.validate()?;
    let nodes = node_count(w.data_outboard.len());
    if !parents.matches(nodes, params) {
        return Err(PorepError::SizeMismatch {
            what: "graph nodes",
            expected: nodes,
            got: parents.nodes(),
        });
    }
    let challenges = challenged(&w.replica_id, seed, nodes, params, parents)?;
    let wanted: std::collections::BTreeSet<u64> = challenges
        .iter()
        .flat_map(|(node, drg, exp)| {
            std::iter::once(*node)
                .chain(drg.iter().copied())
                .chain(exp.iter().copied())
        })
        .collect();
    let group_of = |node: u64| node * 32 / GROUP_LEN as u64;
    let mut columns: BTreeMap<u64, Vec<Label>> = BTreeMap::new();
    let mut groups: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut builder = OutboardBuilder::new();
    let mut block = vec![0u8; 1 << 20];
    for sector in parents.sectors() {
        let labels = Labels::generate_sector(&w.replica_id, params, sector)?;
        // column hashes of the piece's byte offsets `a..` (within the sector)
        let hash =
            |a: u64, out: &mut [u8]| labels.write_column_hashes(((a - sector.start * 32) / 32) as usize, out);
        let range = sector.range();
        let end = range.end * 32;
        let mut at = range.start * 32;
        while at < end {
            let n = (end - at).min(block.len() as u64) as usize;
            hash(at, &mut block[..n]);
            builder.update(&block[..n]);
            at += n as u64;
        }
        for &node in wanted.range(range) {
            let column = labels
                .column(node)
                .ok_or(PorepError::InvalidParams("column outside its sector"))?;
            columns.insert(node, column);
            let g = group_of(node);
            if let std::collections::btree_map::Entry::Vacant(slot) = groups.entry(g) {
                let a = g * GROUP_LEN as u64;
                let mut bytes = vec![0u8; (end.min(a + GROUP_LEN as u64) - a) as usize];
                hash(a, &mut bytes);
                slot.insert(bytes);
            }
        }
    }
    let column_outboard = builder.finalize();
    let open_column = |node: u64| -> Result<ColumnOpening> {
        let missing = || PorepError::InvalidParams("a challenged column was not labelled");
        let labels = columns.get(&node).ok_or_else(missing)?.clone();
        let group = groups.get(&group_of(node)).ok_or_else(missing)?;
        Ok(ColumnOpening {
            labels,
            hash: column_outboard.open_in_group(chunk_of_node(node), group)?,
        })
    };
    answer(w, challenges, &column_outboard, open_column)
}

fn check_opening_chunk(tree: TreeKind, opening: &ChunkOpening, node: u64) -> Result<()> {
    let expected = chunk_of_node(node);
    if opening.chunk_index != expected {
        return Err(PorepError::WrongChunk {
            tree,
            expected,
            got: opening.chunk_index,
        });
    }
    Ok(())
}

/// Check one column opening for node `node` against `comm_c`.
fn verify_column(
    comm_c: &Hash32,
    nodes: u64,
    layers: usize,
    index: usize,
    node: u64,
    col: &ColumnOpening,
) -> Result<()> {
    if col.labels.len() != layers {
        return Err(PorepError::ShapeMismatch {
            index,
            what: "labels in a column",
            expected: layers,
            got: col.labels.len(),
        });
    }
    check_opening_chunk(TreeKind::Columns, &col.hash, node)?;
    verify_chunk(comm_c, nodes * 32, TreeKind::Columns, &col.hash)?;
    if col.hash.node_bytes(node) != column_hash(&col.labels) {
        return Err(PorepError::ColumnHashMismatch { node });
    }
    Ok(())
}

fn check_piece_len(piece_len: u64) -> Result<u64> {
    let nodes = node_count(piece_len);
    if nodes == 0 {
        return Err(PorepError::EmptyPiece);
    }
    if nodes > MAX_NODES {
        return Err(PorepError::PieceTooLarge {
            len: piece_len,
            max: MAX_NODES * 32,
        });
    }
    Ok(nodes)
}

/// Verify a seal proof. The proof is untrusted: every field is checked, every
/// failure is a typed error. Cost: `O(C · (L·(d+e) + (d+e)·log n))` hashes.
pub fn verify_seal(public: &SealPublic, params: &SealParams, proof: &SealProof) -> Result<()> {
    params.validate()?;
    let nodes = check_piece_len(public.piece_len)?;
    if proof.replica_id != public.replica_id {
        return Err(PorepError::ReplicaIdMismatch {
            expected: hex32(&public.replica_id),
            got: hex32(&proof.replica_id),
        });
    }
    if comm_r(&proof.comm_c, &proof.comm_r_last) != public.comm_r {
        return Err(PorepError::CommRMismatch);
    }
    let expected = seal_challenges(&public.replica_id, &public.seed, nodes, params.seal_challenges);
    if proof.challenges.len() != expected.len() {
        return Err(PorepError::ChallengeCount {
            expected: expected.len(),
            got: proof.challenges.len(),
        });
    }
    let layers = params.layers as usize;
    let hasher = LabelHasher::new(&public.replica_id);
    for (index, (c, &node)) in proof.challenges.iter().zip(&expected).enumerate() {
        if c.node != node {
            return Err(PorepError::WrongChallenge {
                index,
                expected: node,
                got: c.node,
            });
        }
        let (drg, exp) = node_parents(nodes, params, node);
        for (what, want, got) in [
            ("DRG parent columns", drg.len(), c.drg_parents.len()),
            ("expander parent columns", exp.len(), c.exp_parents.len()),
        ] {
            if want != got {
                return Err(PorepError::ShapeMismatch {
                    index,
                    what,
                    expected: want,
                    got,
                });
            }
        }
        // Openings: data against comm_d, replica against comm_r_last, columns against comm_c.
        check_opening_chunk(TreeKind::Data, &c.data, node)?;
        verify_chunk(&public.comm_d, public.piece_len, TreeKind::Data, &c.data)?;
        check_opening_chunk(TreeKind::Replica, &c.replica, node)?;
        verify_chunk(&proof.comm_r_last, nodes * 32, TreeKind::Replica, &c.replica)?;
        verify_column(&proof.comm_c, nodes, layers, index, node, &c.column)?;
        for (&p, col) in drg.iter().zip(&c.drg_parents) {
            verify_column(&proof.comm_c, nodes, layers, index, u64::from(p), col)?;
        }
        for (&p, col) in exp.iter().zip(&c.exp_parents) {
            verify_column(&proof.comm_c, nodes, layers, index, u64::from(p), col)?;
        }
        // Labels: every layer of the challenged column follows from its parents.
        const ZERO: Label = [0u8; 32];
        for l in 0..layers {
            let drg_labels = drg.iter().zip(&c.drg_parents).map(|(&p, col)| {
                if u64::from(p) < node {
                    &col.labels[l]
                } else {
                    &ZERO
                }
            });
            let exp_labels = c
                .exp_parents
                .iter()
                .filter(|_| l > 0)
                .map(|col| &col.labels[l.saturating_sub(1)]);
            let label = hasher.label(l as u32 + 1, node, drg_labels, exp_labels);
            if label != c.column.labels[l] {
                return Err(PorepError::LabelMismatch {
                    node,
                    layer: l as u32 + 1,
                });
            }
        }
        // Encoding: replica = data ⊕ last label.
        let data = c.data.node_bytes(node);
        let replica = c.replica.node_bytes(node);
        let last = &c.column.labels[layers - 1];
        if (0..32).any(|k| replica[k] != data[k] ^ last[k]) {
            return Err(PorepError::ReplicaMismatch { node });
        }
    }
    Ok(())
}

/// Prove storage for a window, reading only the challenged chunk groups of the
/// replica from `replica` plus `outboard` (the replica tree's outboard).
pub fn prove_window<R: ReadAt + ?Sized>(
    replica: &R,
    outboard: &Outboard,
    comm_c: &Hash32,
    params: &SealParams,
    deal_id: u64,
    epoch: u64,
    randomness: &Hash32,
) -> Result<WindowProof> {
    params.validate()?;
    let len = outboard.len();
    if len == 0 || !len.is_multiple_of(32) {
        return Err(PorepError::SizeMismatch {
            what: "replica length (a multiple of 32)",
            expected: len.div_ceil(32).max(1) * 32,
            got: len,
        });
    }
    let stored = replica
        .len_bytes()
        .map_err(|source| PorepError::Io { offset: 0, source })?;
    if stored != len {
        return Err(PorepError::SizeMismatch {
            what: "replica length",
            expected: len,
            got: stored,
        });
    }
    let nodes = len / 32;
    let openings = window_challenges(randomness, deal_id, epoch, nodes, params.window_challenges)
        .into_iter()
        .map(|node| outboard.open_from(replica, chunk_of_node(node)))
        .collect::<Result<Vec<_>>>()?;
    Ok(WindowProof {
        deal_id,
        epoch,
        comm_c: *comm_c,
        comm_r_last: outboard.root(),
        openings,
    })
}

/// Verify a window proof. The proof is untrusted. Cost: `O(N · log n)` hashes.
pub fn verify_window(public: &WindowPublic, params: &SealParams, proof: &WindowProof) -> Result<()> {
    params.validate()?;
    let nodes = check_piece_len(public.piece_len)?;
    if proof.deal_id != public.deal_id {
        return Err(PorepError::DealMismatch {
            expected: public.deal_id,
            got: proof.deal_id,
        });
    }
    if proof.epoch != public.epoch {
        return Err(PorepError::EpochMismatch {
            expected: public.epoch,
            got: proof.epoch,
        });
    }
    if comm_r(&proof.comm_c, &proof.comm_r_last) != public.comm_r {
        return Err(PorepError::CommRMismatch);
    }
    let expected = window_challenges(
        &public.randomness,
        public.deal_id,
        public.epoch,
        nodes,
        params.window_challenges,
    );
    if proof.openings.len() != expected.len() {
        return Err(PorepError::ChallengeCount {
            expected: expected.len(),
            got: proof.openings.len(),
        });
    }
    for (opening, &node) in proof.openings.iter().zip(&expected) {
        check_opening_chunk(TreeKind::Replica, opening, node)?;
        verify_chunk(&proof.comm_r_last, nodes * 32, TreeKind::Replica, opening)?;
    }
    Ok(())
}
