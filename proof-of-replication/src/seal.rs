//! Replica ids, SDR labelling, sealing and unsealing.

use rayon::prelude::*;

use crate::error::{PorepError, Result};
use crate::graph::{check_nodes, node_count, Parents};
use crate::params::{SealParams, LABEL_PREFIX_LEN};
use crate::tree::{Hash32, Outboard, ReadAt};

/// One 32-byte label.
pub type Label = Hash32;

const REPLICA_ID_CONTEXT: &str = "crowdstore porep v1 replica id";
const LABEL_CONTEXT: &str = "crowdstore porep v1 label";
const COLUMN_CONTEXT: &str = "crowdstore porep v1 column";
const COMM_R_CONTEXT: &str = "crowdstore porep v1 comm_r";

fn key(context: &str) -> [u8; 32] {
    blake3::derive_key(context, b"")
}

/// `replica_id = H(provider ‖ comm_d ‖ deal_id ‖ ticket)`, domain-separated.
pub fn replica_id(provider: &Hash32, comm_d: &Hash32, deal_id: u64, ticket: &Hash32) -> Hash32 {
    *blake3::Hasher::new_derive_key(REPLICA_ID_CONTEXT)
        .update(provider)
        .update(comm_d)
        .update(&deal_id.to_le_bytes())
        .update(ticket)
        .finalize()
        .as_bytes()
}

/// `comm_r = H(comm_c ‖ comm_r_last)`, domain-separated.
pub fn comm_r(comm_c: &Hash32, comm_r_last: &Hash32) -> Hash32 {
    let mut input = [0u8; 64];
    input[..32].copy_from_slice(comm_c);
    input[32..].copy_from_slice(comm_r_last);
    *blake3::keyed_hash(&key(COMM_R_CONTEXT), &input).as_bytes()
}

/// The hash of one column `label(1, i) ‖ … ‖ label(L, i)`.
pub fn column_hash(column: &[Label]) -> Hash32 {
    column_hash_keyed(&key(COLUMN_CONTEXT), column)
}

fn column_hash_keyed(key: &[u8; 32], column: &[Label]) -> Hash32 {
    let mut buf = [0u8; 32 * crate::params::MAX_LAYERS as usize];
    for (dst, label) in buf.chunks_exact_mut(32).zip(column) {
        dst.copy_from_slice(label);
    }
    *blake3::keyed_hash(key, &buf[..32 * column.len()]).as_bytes()
}

/// Computes single labels exactly as the sealing loop does; used by the verifier.
#[derive(Debug, Clone)]
pub struct LabelHasher {
    key: [u8; 32],
    replica_id: Hash32,
}

impl LabelHasher {
    /// A hasher for `replica_id`'s labels.
    pub fn new(replica_id: &Hash32) -> Self {
        Self {
            key: key(LABEL_CONTEXT),
            replica_id: *replica_id,
        }
    }

    /// `label(layer, node)` from its DRG parents' labels (same layer) and, for
    /// layers ≥ 2, its expander parents' labels (previous layer).
    pub fn label<'a>(
        &self,
        layer: u32,
        node: u64,
        drg: impl IntoIterator<Item = &'a Label>,
        exp: impl IntoIterator<Item = &'a Label>,
    ) -> Label {
        let mut buf = [0u8; blake3::CHUNK_LEN];
        buf[..32].copy_from_slice(&self.replica_id);
        buf[32..36].copy_from_slice(&layer.to_le_bytes());
        buf[36..44].copy_from_slice(&node.to_le_bytes());
        let mut end = LABEL_PREFIX_LEN;
        for label in drg.into_iter().chain(exp) {
            if end + 32 > buf.len() {
                break;
            }
            buf[end..end + 32].copy_from_slice(label);
            end += 32;
        }
        *blake3::keyed_hash(&self.key, &buf[..end]).as_bytes()
    }
}

/// Nodes per batch for rows of `width` parent labels: the hashing loop works
/// on one batch while the next is gathered; a batch's rows take about 256 KiB
/// so both buffers stay in L2.
fn batch_len(width: usize) -> usize {
    ((256 << 10) / (32 * width.max(1))).clamp(256, 4096)
}

const ZERO: Label = [0u8; 32];

/// Compute one layer in place: the hot loop of sealing.
///
/// Sequential by construction (DRG parents are earlier nodes of `cur`): one
/// BLAKE3 call per label over a stack buffer, no allocation per label. The
/// parents' labels are random reads over the layer (cache misses), so they
/// are gathered one batch ahead — expander parents from `prev`, DRG parents
/// that lie before the batch being hashed — by a second rayon task, and the
/// hashing loop reads only the gathered rows and the last ~2 batches of `cur`,
/// which are in cache (the split Filecoin's multicore SDR makes). With a
/// one-thread pool the two tasks simply run one after the other.
fn label_layer(
    hasher: &LabelHasher,
    parents: &Parents,
    layer: u32,
    prev: Option<&[Label]>,
    cur: &mut [Label],
) {
    let n = cur.len();
    let (d, e) = (parents.row(0).0.len(), parents.row(0).1.len());
    let width = d + if prev.is_some() { e } else { 0 };
    let batch_len = batch_len(width);
    let mut gathered = vec![ZERO; batch_len * width];
    let mut next = vec![ZERO; batch_len * width];
    let mut gathered_below = 0; // DRG parents below this were gathered
    gather(parents, prev, &[], 0, batch_len.min(n), width, &mut gathered);
    let mut start = 0;
    while start < n {
        let end = (start + batch_len).min(n);
        let next_end = (end + batch_len).min(n);
        let (done, rest) = cur.split_at_mut(start);
        let done: &[Label] = done;
        let (batch, after) = rest.split_at_mut(end - start);
        let next_out = &mut after[..next_end - end];
        let rows = &gathered;
        let next_rows = &mut next;
        rayon::join(
            || {
                let b = Batch {
                    start,
                    width,
                    gathered_below,
                    rows,
                    done,
                };
                hash_batch(hasher, parents, layer, &b, batch)
            },
            || {
                // First touch of the next batch's pages happens here, off the hashing thread.
                next_out.fill(ZERO);
                gather(parents, prev, done, end, next_end, width, next_rows)
            },
        );
        std::mem::swap(&mut gathered, &mut next);
        gathered_below = start;
        start = end;
    }
}

/// Copy the parents' labels of nodes `start..end` into `out` (`width` per
/// node): DRG parents below `done.len()` and, with `prev`, all expander parents.
fn gather(
    parents: &Parents,
    prev: Option<&[Label]>,
    done: &[Label],
    start: usize,
    end: usize,
    width: usize,
    out: &mut [Label],
) {
    for (j, row) in (start..end).zip(out.chunks_exact_mut(width)) {
        let (drg, exp) = parents.row(j);
        let (row_drg, row_exp) = row.split_at_mut(drg.len());
        for (slot, &p) in row_drg.iter_mut().zip(drg) {
            if let Some(label) = done.get(p as usize) {
                *slot = *label;
            }
        }
        if let Some(prev) = prev {
            for (slot, &p) in row_exp.iter_mut().zip(exp) {
                *slot = prev[p as usize];
            }
        }
    }
}

/// What the hashing loop of one batch reads.
struct Batch<'a> {
    start: usize,
    width: usize,
    gathered_below: usize,
    rows: &'a [Label],
    done: &'a [Label],
}

fn hash_batch(hasher: &LabelHasher, parents: &Parents, layer: u32, b: &Batch<'_>, out: &mut [Label]) {
    let mut buf = [0u8; blake3::CHUNK_LEN];
    buf[..32].copy_from_slice(&hasher.replica_id);
    buf[32..36].copy_from_slice(&layer.to_le_bytes());
    let d = parents.row(0).0.len();
    for k in 0..out.len() {
        let i = b.start + k;
        buf[36..44].copy_from_slice(&(i as u64).to_le_bytes());
        let row = &b.rows[k * b.width..(k + 1) * b.width];
        let mut end = LABEL_PREFIX_LEN;
        for (slot, &p) in parents.row(i).0.iter().enumerate() {
            let p = p as usize;
            let src = if p >= i {
                &ZERO
            } else if p < b.gathered_below {
                &row[slot]
            } else if p < b.start {
                &b.done[p]
            } else {
                &out[p - b.start]
            };
            buf[end..end + 32].copy_from_slice(src);
            end += 32;
        }
        for label in &row[d..] {
            buf[end..end + 32].copy_from_slice(label);
            end += 32;
        }
        out[k] = *blake3::keyed_hash(&hasher.key, &buf[..end]).as_bytes();
    }
}

fn check_graph(nodes: u64, params: &SealParams, parents: &Parents) -> Result<()> {
    check_nodes(nodes, params)?;
    if !parents.matches(nodes, params) {
        return Err(PorepError::SizeMismatch {
            what: "parent table nodes",
            expected: nodes,
            got: parents.nodes(),
        });
    }
    Ok(())
}

/// All `L` layers of labels of one replica, `L × n × 32` bytes in memory.
///
/// The seal proof opens whole columns, so a prover keeps every layer until it
/// has answered the seal challenge; a provider sealing sectors larger than RAM
/// would spill layers to disk (Filecoin keeps them on disk as "layer files").
#[derive(Clone, PartialEq, Eq)]
pub struct Labels {
    layers: Vec<Vec<Label>>,
}

impl std::fmt::Debug for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Labels")
            .field("layers", &self.layers.len())
            .field("nodes", &self.nodes())
            .finish()
    }
}

impl Labels {
    /// Label every layer for `replica_id` (single-threaded: each layer is sequential).
    ///
    /// `progress` is called after each layer with the layer number (1-based).
    pub fn generate(
        replica_id: &Hash32,
        nodes: u64,
        params: &SealParams,
        parents: &Parents,
        mut progress: impl FnMut(u32),
    ) -> Result<Self> {
        check_graph(nodes, params, parents)?;
        let hasher = LabelHasher::new(replica_id);
        let mut layers: Vec<Vec<Label>> = Vec::with_capacity(params.layers as usize);
        for layer in 1..=params.layers {
            let mut cur = vec![[0u8; 32]; nodes as usize];
            label_layer(
                &hasher,
                parents,
                layer,
                layers.last().map(Vec::as_slice),
                &mut cur,
            );
            layers.push(cur);
            progress(layer);
        }
        Ok(Self { layers })
    }

    /// Number of nodes per layer.
    pub fn nodes(&self) -> u64 {
        self.layers.first().map_or(0, |l| l.len() as u64)
    }

    /// Layer `layer` (1-based).
    pub fn layer(&self, layer: u32) -> Option<&[Label]> {
        let idx = (layer as usize).checked_sub(1)?;
        self.layers.get(idx).map(Vec::as_slice)
    }

    /// The column of node `i`: its label in every layer.
    pub fn column(&self, i: u64) -> Vec<Label> {
        self.layers.iter().map(|l| l[i as usize]).collect()
    }

    /// Memory held in bytes.
    pub fn size_bytes(&self) -> usize {
        self.layers.iter().map(|l| l.len() * 32).sum()
    }

    /// The column hash of node `i` with the column key `ckey`.
    fn column_hash_with(&self, ckey: &[u8; 32], i: usize) -> Hash32 {
        let mut col = [[0u8; 32]; crate::params::MAX_LAYERS as usize];
        for (c, layer) in col.iter_mut().zip(&self.layers) {
            *c = layer[i];
        }
        column_hash_keyed(ckey, &col[..self.layers.len()])
    }

    /// The column hashes (the leaves of `comm_c`), computed when read.
    pub fn column_hashes(&self) -> ColumnHashes<'_> {
        ColumnHashes {
            labels: self,
            key: key(COLUMN_CONTEXT),
        }
    }

    /// The replica of the `piece_len`-byte piece in `piece`, computed from
    /// the last layer when read.
    pub fn replica_of<'a, R: ReadAt + ?Sized>(&'a self, piece: &'a R, piece_len: u64) -> ReplicaBytes<'a, R> {
        ReplicaBytes {
            piece,
            piece_len,
            last: self.layers.last().map_or(&[][..], Vec::as_slice),
        }
    }
}

/// Calls `f(node, within, dst)` for every node that `offset..offset +
/// buf.len()` of a `32·n`-byte array touches: `dst` is the part of `buf`
/// holding node bytes `within..within + dst.len()`.
fn per_node(
    offset: u64,
    buf: &mut [u8],
    nodes: usize,
    mut f: impl FnMut(usize, usize, &mut [u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let end = offset
        .checked_add(buf.len() as u64)
        .filter(|&e| e <= nodes as u64 * 32)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
    let mut pos = offset;
    let mut at = 0;
    while pos < end {
        let node = (pos / 32) as usize;
        let within = (pos % 32) as usize;
        let take = (32 - within).min((end - pos) as usize);
        f(node, within, &mut buf[at..at + take])?;
        at += take;
        pos += take as u64;
    }
    Ok(())
}

/// The column hashes of a set of labels as a [`ReadAt`] of `32·n` bytes:
/// what `comm_c` is built over, without an `n × 32`-byte buffer.
#[derive(Debug, Clone, Copy)]
pub struct ColumnHashes<'a> {
    labels: &'a Labels,
    key: [u8; 32],
}

impl ReadAt for ColumnHashes<'_> {
    fn len_bytes(&self) -> std::io::Result<u64> {
        Ok(self.labels.nodes() * 32)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        per_node(offset, buf, self.labels.nodes() as usize, |i, within, dst| {
            let h = self.labels.column_hash_with(&self.key, i);
            dst.copy_from_slice(&h[within..within + dst.len()]);
            Ok(())
        })
    }
}

/// A replica as a [`ReadAt`] of `32·n` bytes: the piece (zero-padded to
/// whole nodes) XOR the last layer, computed when read.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaBytes<'a, R: ?Sized> {
    piece: &'a R,
    piece_len: u64,
    last: &'a [Label],
}

impl<R: ReadAt + ?Sized> ReadAt for ReplicaBytes<'_, R> {
    fn len_bytes(&self) -> std::io::Result<u64> {
        Ok(self.last.len() as u64 * 32)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let data = (self.piece_len.saturating_sub(offset) as usize).min(buf.len());
        if data > 0 {
            self.piece.read_at(offset, &mut buf[..data])?;
        }
        buf[data..].fill(0);
        per_node(offset, buf, self.last.len(), |i, within, dst| {
            for (d, l) in dst.iter_mut().zip(&self.last[i][within..]) {
                *d ^= l;
            }
            Ok(())
        })
    }
}

/// The four commitments of a sealed replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commitments {
    /// Length of the original piece in bytes.
    pub piece_len: u64,
    /// BLAKE3 root of the piece = its content address.
    pub comm_d: Hash32,
    /// BLAKE3 root of the concatenated column hashes.
    pub comm_c: Hash32,
    /// BLAKE3 root of the replica bytes.
    pub comm_r_last: Hash32,
    /// `H(comm_c ‖ comm_r_last)`: what the provider publishes.
    pub comm_r: Hash32,
}

/// Everything a sealing produces; the prover keeps it until the seal proof is sent.
pub struct Sealed {
    /// The replica: `n × 32` bytes, node `i` = data node `i` ⊕ `label(L, i)`.
    pub replica: Vec<u8>,
    /// All layers of labels.
    pub labels: Labels,
    /// `n × 32` bytes of column hashes (the leaves of `comm_c`).
    pub column_hashes: Vec<u8>,
    /// The commitments.
    pub commitments: Commitments,
    /// The replica id sealed for.
    pub replica_id: Hash32,
    /// Outboard of the piece tree (`comm_d`).
    pub data_outboard: Outboard,
    /// Outboard of the replica tree (`comm_r_last`): keep it for window proofs.
    pub replica_outboard: Outboard,
    /// Outboard of the column-hash tree (`comm_c`).
    pub column_outboard: Outboard,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("replica_len", &self.replica.len())
            .field("labels", &self.labels)
            .field("commitments", &self.commitments)
            .finish_non_exhaustive()
    }
}

/// XOR `data` (zero-padded) with the last layer into a replica or back.
fn xor_last_layer(data: &[u8], last: &[Label], out: &mut [u8]) {
    out.par_chunks_mut(32)
        .zip(last.par_iter())
        .enumerate()
        .for_each(|(i, (dst, label))| {
            let start = (i * 32).min(data.len());
            let end = (start + 32).min(data.len());
            let src = &data[start..end];
            for (k, d) in dst.iter_mut().enumerate() {
                *d = src.get(k).copied().unwrap_or(0) ^ label[k];
            }
        });
}

/// Seal `piece` for `replica_id`: label all layers and finish with [`Sealed::from_labels`].
pub fn seal(piece: &[u8], replica_id: &Hash32, params: &SealParams, parents: &Parents) -> Result<Sealed> {
    let nodes = node_count(piece.len() as u64);
    let labels = Labels::generate(replica_id, nodes, params, parents, |_| {})?;
    Sealed::from_labels(piece, replica_id, labels)
}

/// A sealing that keeps only the labels and the trees' outboards in memory:
/// the piece stays where it is (a file), and the replica and the column
/// hashes are computed from the labels when read ([`Labels::replica_of`],
/// [`Labels::column_hashes`]). Memory: the `L` layers, against `L + 3`
/// piece sizes for [`Sealed`]. Same commitments, same replica.
#[derive(Debug)]
pub struct LeanSeal {
    pub labels: Labels,
    pub replica_id: Hash32,
    /// Outboard of the column-hash tree (`comm_c`).
    pub column_outboard: Outboard,
    /// Outboard of the replica tree (`comm_r_last`): keep it for window proofs.
    pub replica_outboard: Outboard,
    pub comm_c: Hash32,
    pub comm_r_last: Hash32,
    pub comm_r: Hash32,
}

/// Seal the piece in `piece` for `replica_id` the lean way ([`LeanSeal`]);
/// write the replica with `lean.labels.replica_of(piece, len)`.
pub fn seal_lean<R: ReadAt + Sync + ?Sized>(
    piece: &R,
    replica_id: &Hash32,
    params: &SealParams,
    parents: &Parents,
) -> Result<LeanSeal> {
    let piece_len = piece
        .len_bytes()
        .map_err(|e| PorepError::Io { offset: 0, source: e })?;
    let nodes = node_count(piece_len);
    if nodes == 0 {
        return Err(PorepError::EmptyPiece);
    }
    let labels = Labels::generate(replica_id, nodes, params, parents, |_| {})?;
    let (column_outboard, replica_outboard) = rayon::join(
        || Outboard::build_from(&labels.column_hashes()),
        || Outboard::build_from(&labels.replica_of(piece, piece_len)),
    );
    let (column_outboard, replica_outboard) = (column_outboard?, replica_outboard?);
    let (comm_c, comm_r_last) = (column_outboard.root(), replica_outboard.root());
    Ok(LeanSeal {
        labels,
        replica_id: *replica_id,
        column_outboard,
        replica_outboard,
        comm_c,
        comm_r_last,
        comm_r: comm_r(&comm_c, &comm_r_last),
    })
}

impl Sealed {
    /// Encode `piece` with precomputed labels and build all commitments (rayon).
    pub fn from_labels(piece: &[u8], replica_id: &Hash32, labels: Labels) -> Result<Self> {
        let nodes = node_count(piece.len() as u64);
        if nodes == 0 {
            return Err(PorepError::EmptyPiece);
        }
        if labels.nodes() != nodes {
            return Err(PorepError::SizeMismatch {
                what: "label nodes",
                expected: nodes,
                got: labels.nodes(),
            });
        }
        let last = labels
            .layers
            .last()
            .ok_or(PorepError::InvalidParams("no layers"))?;
        let mut replica = vec![0u8; nodes as usize * 32];
        xor_last_layer(piece, last, &mut replica);

        let ckey = key(COLUMN_CONTEXT);
        let mut column_hashes = vec![0u8; nodes as usize * 32];
        column_hashes
            .par_chunks_mut(32)
            .enumerate()
            .for_each(|(i, dst)| dst.copy_from_slice(&labels.column_hash_with(&ckey, i)));

        let (data_outboard, (replica_outboard, column_outboard)) = rayon::join(
            || Outboard::build(piece),
            || rayon::join(|| Outboard::build(&replica), || Outboard::build(&column_hashes)),
        );
        let comm_c = column_outboard.root();
        let comm_r_last = replica_outboard.root();
        let commitments = Commitments {
            piece_len: piece.len() as u64,
            comm_d: data_outboard.root(),
            comm_c,
            comm_r_last,
            comm_r: comm_r(&comm_c, &comm_r_last),
        };
        Ok(Self {
            replica,
            labels,
            column_hashes,
            commitments,
            replica_id: *replica_id,
            data_outboard,
            replica_outboard,
            column_outboard,
        })
    }
}

/// Recover the original `piece_len` bytes from a replica by regenerating the
/// labels (two layers in memory at a time).
pub fn unseal(
    replica: &[u8],
    piece_len: u64,
    replica_id: &Hash32,
    params: &SealParams,
    parents: &Parents,
) -> Result<Vec<u8>> {
    let nodes = node_count(piece_len);
    check_graph(nodes, params, parents)?;
    if replica.len() as u64 != nodes * 32 {
        return Err(PorepError::SizeMismatch {
            what: "replica length",
            expected: nodes * 32,
            got: replica.len() as u64,
        });
    }
    let hasher = LabelHasher::new(replica_id);
    let mut prev: Vec<Label> = vec![[0u8; 32]; nodes as usize];
    let mut cur: Vec<Label> = vec![[0u8; 32]; nodes as usize];
    for layer in 1..=params.layers {
        let below = (layer > 1).then_some(prev.as_slice());
        label_layer(&hasher, parents, layer, below, &mut cur);
        std::mem::swap(&mut prev, &mut cur);
    }
    let mut out = vec![0u8; nodes as usize * 32];
    xor_last_layer(replica, &prev, &mut out);
    out.truncate(piece_len as usize);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        blake3::Hasher::new()
            .update(b"seal test piece")
            .finalize_xof()
            .fill(&mut v);
        v
    }

    #[test]
    fn seal_then_unseal_round_trips_ragged_piece() {
        let p = SealParams::devnet();
        let data = piece(40_000 + 7);
        let nodes = node_count(data.len() as u64);
        let g = Parents::new(nodes, &p).unwrap();
        let rid = replica_id(&[1; 32], blake3::hash(&data).as_bytes(), 9, &[2; 32]);
        let sealed = seal(&data, &rid, &p, &g).unwrap();
        assert_eq!(sealed.commitments.comm_d, *blake3::hash(&data).as_bytes());
        assert_eq!(
            sealed.commitments.comm_r_last,
            *blake3::hash(&sealed.replica).as_bytes()
        );
        assert_ne!(&sealed.replica[..data.len()], &data[..]);
        let back = unseal(&sealed.replica, data.len() as u64, &rid, &p, &g).unwrap();
        assert_eq!(back, data);
    }

    /// The lean path (labels in memory; piece read from a source; replica and
    /// column hashes computed when read) gives the same commitments, replica,
    /// column hashes and seal proof as sealing in memory, for ragged sizes.
    #[test]
    fn lean_sealing_matches_sealing_in_memory() {
        for (len, p) in [
            (40_000 + 7, SealParams::devnet()),
            (16 * 1024, SealParams::devnet()),
            (100, SealParams::devnet()),
            (70_001, SealParams::production()),
        ] {
            let data = piece(len);
            let nodes = node_count(len as u64);
            let g = Parents::new(nodes, &p).unwrap();
            let rid = replica_id(&[3; 32], blake3::hash(&data).as_bytes(), 4, &[5; 32]);
            let full = seal(&data, &rid, &p, &g).unwrap();
            let lean = seal_lean(data.as_slice(), &rid, &p, &g).unwrap();
            assert_eq!(lean.comm_c, full.commitments.comm_c, "{len}");
            assert_eq!(lean.comm_r_last, full.commitments.comm_r_last, "{len}");
            assert_eq!(lean.comm_r, full.commitments.comm_r, "{len}");
            assert_eq!(lean.replica_outboard, full.replica_outboard, "{len}");
            assert_eq!(lean.column_outboard, full.column_outboard, "{len}");

            // read back whole and at odd offsets and lengths
            let replica = lean.labels.replica_of(data.as_slice(), len as u64);
            let columns = lean.labels.column_hashes();
            let n = full.replica.len();
            assert_eq!(replica.len_bytes().unwrap(), n as u64);
            let mut all = vec![0u8; n];
            replica.read_at(0, &mut all).unwrap();
            assert_eq!(all, full.replica);
            columns.read_at(0, &mut all).unwrap();
            assert_eq!(all, full.column_hashes);
            let spans = [(1usize, 31usize), (33, 90), (n - 5, 5), (n / 2 + 3, n / 2 - 3)];
            for (at, l) in spans.into_iter().filter(|&(at, l)| at + l <= n) {
                let mut part = vec![0u8; l];
                replica.read_at(at as u64, &mut part).unwrap();
                assert_eq!(part, &full.replica[at..at + l], "{len} {at}");
                columns.read_at(at as u64, &mut part).unwrap();
                assert_eq!(part, &full.column_hashes[at..at + l], "{len} {at}");
            }
            let mut past = [0u8; 2];
            assert!(replica.read_at(n as u64 - 1, &mut past).is_err());
            assert!(columns.read_at(n as u64 - 1, &mut past).is_err());

            let seed = [9u8; 32];
            let data_outboard = Outboard::build(&data);
            let piece_src = data.as_slice();
            let witness = crate::proof::SealWitness {
                replica_id: rid,
                piece: &piece_src,
                data_outboard: &data_outboard,
                replica: &replica,
                replica_outboard: &lean.replica_outboard,
                labels: &lean.labels,
                column_hashes: &columns,
                column_outboard: &lean.column_outboard,
            };
            let a = crate::proof::prove_seal_with(&witness, &p, &g, &seed).unwrap();
            let b = crate::proof::prove_seal(&data, &full, &p, &g, &seed).unwrap();
            assert_eq!(a.encode(), b.encode(), "{len}");
            let public = crate::proof::SealPublic {
                piece_len: len as u64,
                comm_d: full.commitments.comm_d,
                comm_r: lean.comm_r,
                replica_id: rid,
                seed,
            };
            crate::proof::verify_seal(&public, &p, &a).unwrap();
        }
    }

    #[test]
    fn two_replicas_of_the_same_data_differ() {
        let p = SealParams::devnet();
        let data = piece(8192);
        let g = Parents::new(256, &p).unwrap();
        let comm_d = *blake3::hash(&data).as_bytes();
        let a = seal(&data, &replica_id(&[1; 32], &comm_d, 1, &[0; 32]), &p, &g).unwrap();
        let b = seal(&data, &replica_id(&[2; 32], &comm_d, 1, &[0; 32]), &p, &g).unwrap();
        let c = seal(&data, &replica_id(&[1; 32], &comm_d, 2, &[0; 32]), &p, &g).unwrap();
        assert_ne!(a.replica, b.replica);
        assert_ne!(a.replica, c.replica);
        assert_ne!(a.commitments.comm_r, b.commitments.comm_r);
        assert_eq!(a.commitments.comm_d, b.commitments.comm_d);
    }

    #[test]
    fn labels_follow_the_single_label_hasher() {
        let p = SealParams::production();
        let g = Parents::new(300, &p).unwrap();
        let rid = [7u8; 32];
        let labels = Labels::generate(&rid, 300, &p, &g, |_| {}).unwrap();
        let h = LabelHasher::new(&rid);
        for (layer, i) in [(1u32, 0u64), (1, 1), (1, 299), (2, 5), (11, 150)] {
            let (drg, exp) = g.row(i as usize);
            let cur = labels.layer(layer).unwrap();
            let zero = [0u8; 32];
            let drg_labels: Vec<&Label> = drg
                .iter()
                .map(|&x| if x < i as u32 { &cur[x as usize] } else { &zero })
                .collect();
            let exp_labels: Vec<&Label> = match labels.layer(layer - 1) {
                Some(prev) if layer > 1 => exp.iter().map(|&x| &prev[x as usize]).collect(),
                _ => Vec::new(),
            };
            assert_eq!(h.label(layer, i, drg_labels, exp_labels), cur[i as usize]);
        }
    }

    /// The plain definition, one node after another, for comparison.
    fn reference_layer(h: &LabelHasher, g: &Parents, layer: u32, prev: Option<&[Label]>) -> Vec<Label> {
        let mut cur: Vec<Label> = Vec::new();
        for i in 0..g.nodes() as usize {
            let (drg, exp) = g.row(i);
            let zero = [0u8; 32];
            let drg: Vec<&Label> = drg
                .iter()
                .map(|&p| cur.get(p as usize).unwrap_or(&zero))
                .collect();
            let exp: Vec<&Label> = match prev {
                Some(prev) => exp.iter().map(|&p| &prev[p as usize]).collect(),
                None => Vec::new(),
            };
            cur.push(h.label(layer, i as u64, drg, exp));
        }
        cur
    }

    #[test]
    fn batched_layers_equal_the_reference_definition() {
        for p in [SealParams::production(), SealParams::devnet()] {
            let n = 3 * batch_len(p.drg_degree as usize) + 5;
            let g = Parents::new(n as u64, &p).unwrap();
            let h = LabelHasher::new(&[3u8; 32]);
            let mut l1 = vec![[0u8; 32]; n];
            label_layer(&h, &g, 1, None, &mut l1);
            assert_eq!(l1, reference_layer(&h, &g, 1, None));
            let mut l2 = vec![[0u8; 32]; n];
            label_layer(&h, &g, 2, Some(&l1), &mut l2);
            assert_eq!(l2, reference_layer(&h, &g, 2, Some(&l1)));
        }
    }

    #[test]
    fn mismatched_parent_table_is_rejected() {
        let p = SealParams::devnet();
        let g = Parents::new(100, &p).unwrap();
        assert!(matches!(
            seal(&piece(64 * 32), &[0; 32], &p, &g),
            Err(PorepError::SizeMismatch { .. })
        ));
        assert!(matches!(seal(&[], &[0; 32], &p, &g), Err(PorepError::EmptyPiece)));
    }
}
