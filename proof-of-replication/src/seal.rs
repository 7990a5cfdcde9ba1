//! Replica ids, SDR labelling, sealing and unsealing.

use rayon::prelude::*;

use crate::error::{PorepError, Result};
use crate::graph::{check_nodes, node_count, Parents, Sector, SectorGraph};
use crate::params::{SealParams, LABEL_PREFIX_LEN};
use crate::tree::{Hash32, Outboard, OutboardBuilder, ReadAt};

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
///
/// `cur` and `prev` are one sector's layers; `base` is the sector's first
/// node in the piece (labels hash the piece's node index, so no two sectors
/// share labels).
fn label_layer(
    hasher: &LabelHasher,
    parents: &SectorGraph,
    base: u64,
    layer: u32,
    prev: Option<&[Label]>,
    cur: &mut [Label],
) {
    let n = cur.len();
    let (d, e) = parents.degrees();
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
                    base,
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
    parents: &SectorGraph,
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
    base: u64,
    start: usize,
    width: usize,
    gathered_below: usize,
    rows: &'a [Label],
    done: &'a [Label],
}

fn hash_batch(hasher: &LabelHasher, parents: &SectorGraph, layer: u32, b: &Batch<'_>, out: &mut [Label]) {
    let mut buf = [0u8; blake3::CHUNK_LEN];
    buf[..32].copy_from_slice(&hasher.replica_id);
    buf[32..36].copy_from_slice(&layer.to_le_bytes());
    let d = parents.degrees().0;
    for k in 0..out.len() {
        let i = b.start + k;
        buf[36..44].copy_from_slice(&(b.base + i as u64).to_le_bytes());
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

/// All `L` layers of labels of a run of nodes — a whole piece
/// ([`Labels::generate`], `L × n × 32` bytes) or one sector
/// ([`Labels::generate_sector`], `L` × the sector size) — starting at node
/// `base` of the piece. Every node index taken or read is the piece's.
///
/// The seal proof opens whole columns, so a column needs every layer; a
/// sector's layers are all a column of that sector needs, since no parent
/// leaves its sector.
#[derive(Clone, PartialEq, Eq)]
pub struct Labels {
    base: u64,
    layers: Vec<Vec<Label>>,
}

impl std::fmt::Debug for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Labels")
            .field("base", &self.base)
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
            for sector in parents.sectors() {
                let r = sector.range();
                let (a, b) = (r.start as usize, r.end as usize);
                let prev = layers.last().map(|l| &l[a..b]);
                label_layer(&hasher, sector.graph, sector.start, layer, prev, &mut cur[a..b]);
            }
            layers.push(cur);
            progress(layer);
        }
        Ok(Self { base: 0, layers })
    }

    /// Label every layer of one sector of the piece `parents` was built for:
    /// the same labels as [`Labels::generate`] gives those nodes, in `L` ×
    /// the sector's size of memory.
    pub fn generate_sector(replica_id: &Hash32, params: &SealParams, sector: Sector<'_>) -> Result<Self> {
        params.validate()?;
        let hasher = LabelHasher::new(replica_id);
        let n = sector.nodes() as usize;
        let mut layers: Vec<Vec<Label>> = Vec::with_capacity(params.layers as usize);
        for layer in 1..=params.layers {
            let mut cur = vec![[0u8; 32]; n];
            let prev = layers.last().map(Vec::as_slice);
            label_layer(&hasher, sector.graph, sector.start, layer, prev, &mut cur);
            layers.push(cur);
        }
        Ok(Self {
            base: sector.start,
            layers,
        })
    }

    /// Number of nodes per layer.
    pub fn nodes(&self) -> u64 {
        self.layers.first().map_or(0, |l| l.len() as u64)
    }

    /// The piece's nodes these labels cover.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.base..self.base + self.nodes()
    }

    /// Layer `layer` (1-based), from node `base`.
    pub fn layer(&self, layer: u32) -> Option<&[Label]> {
        let idx = (layer as usize).checked_sub(1)?;
        self.layers.get(idx).map(Vec::as_slice)
    }

    /// The column of the piece's node `i`: its label in every layer (`None`
    /// outside these labels).
    pub fn column(&self, i: u64) -> Option<Vec<Label>> {
        let at = usize::try_from(i.checked_sub(self.base)?).ok()?;
        self.layers.iter().map(|l| l.get(at).copied()).collect()
    }

    /// Memory held in bytes.
    pub fn size_bytes(&self) -> usize {
        self.layers.iter().map(|l| l.len() * 32).sum()
    }

    /// The column hash of node `base + i` with the column key `ckey`.
    fn column_hash_with(&self, ckey: &[u8; 32], i: usize) -> Hash32 {
        let mut col = [[0u8; 32]; crate::params::MAX_LAYERS as usize];
        for (c, layer) in col.iter_mut().zip(&self.layers) {
            *c = layer[i];
        }
        column_hash_keyed(ckey, &col[..self.layers.len()])
    }

    /// The column hashes (the leaves of `comm_c`), computed when read, at
    /// the piece's offsets (`32 · base` onwards).
    pub fn column_hashes(&self) -> ColumnHashes<'_> {
        ColumnHashes {
            labels: self,
            key: key(COLUMN_CONTEXT),
        }
    }

    /// Column hashes of this run's nodes from `first` (relative to `base`)
    /// into `out` (32 bytes each), in parallel.
    pub(crate) fn write_column_hashes(&self, first: usize, out: &mut [u8]) {
        let ckey = key(COLUMN_CONTEXT);
        out.par_chunks_mut(32)
            .enumerate()
            .for_each(|(k, dst)| dst.copy_from_slice(&self.column_hash_with(&ckey, first + k)));
    }

    /// The replica of the `piece_len`-byte piece in `piece`, computed from
    /// the last layer when read, at the piece's offsets (`32 · base`
    /// onwards; `piece` is the whole piece).
    pub fn replica_of<'a, R: ReadAt + ?Sized>(&'a self, piece: &'a R, piece_len: u64) -> ReplicaBytes<'a, R> {
        ReplicaBytes {
            piece,
            piece_len,
            base: self.base,
            last: self.layers.last().map_or(&[][..], Vec::as_slice),
        }
    }
}

/// `offset` (a piece offset) as an offset into a run of nodes from `base`.
fn within_run(offset: u64, base: u64) -> std::io::Result<u64> {
    offset
        .checked_sub(base * 32)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
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

/// The column hashes of a set of labels as a [`ReadAt`] of the piece's
/// column-hash bytes (`32 · (base + n)` long, readable from `32 · base`):
/// what `comm_c` is built over, without an `n × 32`-byte buffer.
#[derive(Debug, Clone, Copy)]
pub struct ColumnHashes<'a> {
    labels: &'a Labels,
    key: [u8; 32],
}

impl ReadAt for ColumnHashes<'_> {
    fn len_bytes(&self) -> std::io::Result<u64> {
        Ok((self.labels.base + self.labels.nodes()) * 32)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let offset = within_run(offset, self.labels.base)?;
        per_node(offset, buf, self.labels.nodes() as usize, |i, within, dst| {
            let h = self.labels.column_hash_with(&self.key, i);
            dst.copy_from_slice(&h[within..within + dst.len()]);
            Ok(())
        })
    }
}

/// A replica as a [`ReadAt`] of the piece's replica bytes (`32 · (base +
/// n)` long, readable from `32 · base`): the piece (zero-padded to whole
/// nodes) XOR the last layer, computed when read.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaBytes<'a, R: ?Sized> {
    piece: &'a R,
    piece_len: u64,
    base: u64,
    last: &'a [Label],
}

impl<R: ReadAt + ?Sized> ReadAt for ReplicaBytes<'_, R> {
    fn len_bytes(&self) -> std::io::Result<u64> {
        Ok((self.base + self.last.len() as u64) * 32)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let run = within_run(offset, self.base)?;
        let data = (self.piece_len.saturating_sub(offset) as usize).min(buf.len());
        if data > 0 {
            self.piece.read_at(offset, &mut buf[..data])?;
        }
        buf[data..].fill(0);
        per_node(run, buf, self.last.len(), |i, within, dst| {
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

/// A sealing done one sector at a time ([`seal_sectors`]): the replica was
/// written out as it was computed, and only the trees' outboards are kept.
/// Same commitments, same replica as [`seal`].
#[derive(Debug)]
pub struct SectorSeal {
    pub replica_id: Hash32,
    /// Outboard of the column-hash tree (`comm_c`).
    pub column_outboard: Outboard,
    /// Outboard of the replica tree (`comm_r_last`): keep it for window proofs.
    pub replica_outboard: Outboard,
    pub comm_c: Hash32,
    pub comm_r_last: Hash32,
    pub comm_r: Hash32,
}

/// Bytes of column hashes and of replica computed at a time while sealing
/// or unsealing a sector.
const BLOCK: usize = 1 << 20;

/// Seal the piece in `piece` for `replica_id` one sector at a time, writing
/// the replica to `replica` as it is computed. Memory: one sector's `L`
/// layers, two 1 MiB blocks and the outboards (≈ 0.4 % of the piece each),
/// whatever the piece size; the piece is read once, in order.
pub fn seal_sectors<R: ReadAt + Sync + ?Sized>(
    piece: &R,
    replica_id: &Hash32,
    params: &SealParams,
    parents: &Parents,
    replica: &mut dyn std::io::Write,
) -> Result<SectorSeal> {
    let piece_len = piece
        .len_bytes()
        .map_err(|e| PorepError::Io { offset: 0, source: e })?;
    let nodes = node_count(piece_len);
    check_graph(nodes, params, parents)?;
    let (mut columns, mut replicas) = (OutboardBuilder::new(), OutboardBuilder::new());
    let (mut col_block, mut rep_block) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    for sector in parents.sectors() {
        let labels = Labels::generate_sector(replica_id, params, sector)?;
        let bytes = labels.replica_of(piece, piece_len);
        let (start, end) = (sector.start * 32, sector.range().end * 32);
        let mut at = start;
        while at < end {
            let n = (end - at).min(BLOCK as u64) as usize;
            let (col, rep) = (&mut col_block[..n], &mut rep_block[..n]);
            let (_, read) = rayon::join(
                || labels.write_column_hashes(((at - start) / 32) as usize, col),
                || bytes.read_at(at, rep),
            );
            read.map_err(|source| PorepError::Io { offset: at, source })?;
            rayon::join(|| columns.update(col), || replicas.update(rep));
            replica
                .write_all(rep)
                .map_err(|source| PorepError::Io { offset: at, source })?;
            at += n as u64;
        }
    }
    let (column_outboard, replica_outboard) = (columns.finalize(), replicas.finalize());
    let (comm_c, comm_r_last) = (column_outboard.root(), replica_outboard.root());
    Ok(SectorSeal {
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
/// labels, into memory ([`unseal_to`] for the bounded way).
pub fn unseal(
    replica: &[u8],
    piece_len: u64,
    replica_id: &Hash32,
    params: &SealParams,
    parents: &Parents,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(piece_len as usize);
    unseal_to(replica, piece_len, replica_id, params, parents, &mut out)?;
    Ok(out)
}

/// Recover the original `piece_len` bytes from `replica` and write them to
/// `out`, one sector at a time: memory is two layers of one sector and two
/// 1 MiB blocks, whatever the piece size.
pub fn unseal_to<R: ReadAt + ?Sized>(
    replica: &R,
    piece_len: u64,
    replica_id: &Hash32,
    params: &SealParams,
    parents: &Parents,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let nodes = node_count(piece_len);
    check_graph(nodes, params, parents)?;
    let stored = replica
        .len_bytes()
        .map_err(|source| PorepError::Io { offset: 0, source })?;
    if stored != nodes * 32 {
        return Err(PorepError::SizeMismatch {
            what: "replica length",
            expected: nodes * 32,
            got: stored,
        });
    }
    let hasher = LabelHasher::new(replica_id);
    let size = params.sector_nodes.min(nodes) as usize;
    let mut prev: Vec<Label> = vec![[0u8; 32]; size];
    let mut cur: Vec<Label> = vec![[0u8; 32]; size];
    let mut block = vec![0u8; BLOCK];
    for sector in parents.sectors() {
        let n = sector.nodes() as usize;
        for layer in 1..=params.layers {
            let below = (layer > 1).then_some(&prev[..n]);
            label_layer(&hasher, sector.graph, sector.start, layer, below, &mut cur[..n]);
            std::mem::swap(&mut prev, &mut cur);
        }
        // the last layer is in `prev`
        let end = sector.range().end * 32;
        let mut at = sector.start * 32;
        while at < end.min(piece_len) {
            let len = (end - at).min(BLOCK as u64) as usize;
            let buf = &mut block[..len];
            replica
                .read_at(at, buf)
                .map_err(|source| PorepError::Io { offset: at, source })?;
            let first = ((at - sector.start * 32) / 32) as usize;
            for (node, label) in buf.chunks_mut(32).zip(&prev[first..]) {
                for (b, l) in node.iter_mut().zip(label) {
                    *b ^= l;
                }
            }
            let keep = (piece_len - at).min(len as u64) as usize;
            out.write_all(&buf[..keep])
                .map_err(|source| PorepError::Io { offset: at, source })?;
            at += len as u64;
        }
    }
    Ok(())
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

    /// Small sectors, so that small pieces span several.
    fn sectored(p: SealParams) -> SealParams {
        SealParams {
            sector_nodes: crate::params::MIN_SECTOR_NODES,
            ..p
        }
    }

    /// The sector path (one sector's labels at a time; piece read from a
    /// source; replica written as computed; seal proof regenerating sectors)
    /// gives the same commitments, replica, outboards and seal proof as
    /// sealing in memory, and unseals back, for ragged sizes over one and
    /// several sectors.
    #[test]
    fn sealing_by_sectors_matches_sealing_in_memory() {
        for (len, p) in [
            (40_000 + 7, sectored(SealParams::devnet())),
            (16 * 1024, sectored(SealParams::devnet())),
            (100, SealParams::devnet()),
            (16 * 1024 * 3, sectored(SealParams::devnet())),
            (70_001, sectored(SealParams::production())),
            (70_001, SealParams::production()),
        ] {
            let data = piece(len);
            let nodes = node_count(len as u64);
            let g = Parents::new(nodes, &p).unwrap();
            let rid = replica_id(&[3; 32], blake3::hash(&data).as_bytes(), 4, &[5; 32]);
            let full = seal(&data, &rid, &p, &g).unwrap();
            let mut replica = Vec::new();
            let sectors = seal_sectors(data.as_slice(), &rid, &p, &g, &mut replica).unwrap();
            assert_eq!(replica, full.replica, "{len}");
            assert_eq!(sectors.comm_c, full.commitments.comm_c, "{len}");
            assert_eq!(sectors.comm_r_last, full.commitments.comm_r_last, "{len}");
            assert_eq!(sectors.comm_r, full.commitments.comm_r, "{len}");
            assert_eq!(sectors.replica_outboard, full.replica_outboard, "{len}");
            assert_eq!(sectors.column_outboard, full.column_outboard, "{len}");

            // each sector's labels are the whole piece's labels of its nodes
            for sector in g.sectors() {
                let one = Labels::generate_sector(&rid, &p, sector).unwrap();
                for i in [
                    sector.start,
                    sector.range().end - 1,
                    sector.start + sector.nodes() / 2,
                ] {
                    assert_eq!(one.column(i), full.labels.column(i), "{len} node {i}");
                }
                assert_eq!(one.column(sector.range().end), None);
            }

            let seed = [9u8; 32];
            let data_outboard = Outboard::build(&data);
            let witness = crate::proof::SectorWitness {
                replica_id: rid,
                piece: &data.as_slice(),
                data_outboard: &data_outboard,
                replica: &replica.as_slice(),
                replica_outboard: &sectors.replica_outboard,
            };
            let a = crate::proof::prove_seal_sectors(&witness, &p, &g, &seed).unwrap();
            let b = crate::proof::prove_seal(&data, &full, &p, &g, &seed).unwrap();
            assert_eq!(a.encode(), b.encode(), "{len}");
            let public = crate::proof::SealPublic {
                piece_len: len as u64,
                comm_d: full.commitments.comm_d,
                comm_r: sectors.comm_r,
                replica_id: rid,
                seed,
            };
            crate::proof::verify_seal(&public, &p, &a).unwrap();

            let mut back = Vec::new();
            unseal_to(replica.as_slice(), len as u64, &rid, &p, &g, &mut back).unwrap();
            assert_eq!(back, data, "{len}");
        }
    }

    /// A sector's labels depend on where it is in the piece: two sectors of
    /// identical data seal to different replica bytes.
    #[test]
    fn equal_sectors_seal_differently() {
        let p = sectored(SealParams::devnet());
        let data = vec![0u8; 2 * 512 * 32];
        let g = Parents::new(1024, &p).unwrap();
        let sealed = seal(&data, &[1; 32], &p, &g).unwrap();
        let (a, b) = sealed.replica.split_at(512 * 32);
        assert_ne!(a, b);
    }

    /// Reading a sector's replica or column hashes before the sector is an
    /// error, not another sector's bytes.
    #[test]
    fn sector_sources_refuse_offsets_outside_their_sector() {
        let p = sectored(SealParams::devnet());
        let data = piece(3 * 512 * 32);
        let g = Parents::new(3 * 512, &p).unwrap();
        let one = Labels::generate_sector(&[1; 32], &p, g.sector(1).unwrap()).unwrap();
        let mut buf = [0u8; 64];
        let src = data.as_slice();
        assert!(one.column_hashes().read_at(512 * 32 - 32, &mut buf).is_err());
        assert!(one
            .replica_of(&src, data.len() as u64)
            .read_at(0, &mut buf)
            .is_err());
        assert!(one.column_hashes().read_at(1024 * 32 - 32, &mut buf).is_err());
        assert!(one.column_hashes().read_at(512 * 32, &mut buf).is_ok());
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
            let (drg, exp) = g.parents_of(i).unwrap();
            let cur = labels.layer(layer).unwrap();
            let zero = [0u8; 32];
            let drg_labels: Vec<&Label> = drg
                .iter()
                .map(|&x| if x < i { &cur[x as usize] } else { &zero })
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
            let (drg, exp) = g.parents_of(i as u64).unwrap();
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
            let graph = g.sector(0).unwrap().graph;
            let h = LabelHasher::new(&[3u8; 32]);
            let mut l1 = vec![[0u8; 32]; n];
            label_layer(&h, graph, 0, 1, None, &mut l1);
            assert_eq!(l1, reference_layer(&h, &g, 1, None));
            let mut l2 = vec![[0u8; 32]; n];
            label_layer(&h, graph, 0, 2, Some(&l1), &mut l2);
            assert_eq!(l2, reference_layer(&h, &g, 2, Some(&l1)));
        }
    }

    /// Over several sectors (the last one short), every layer still follows
    /// the plain definition with each node's (sector-local) parents.
    #[test]
    fn labels_over_sectors_follow_the_reference_definition() {
        let p = sectored(SealParams::production());
        let n = 3 * 512 + 100;
        let g = Parents::new(n, &p).unwrap();
        let h = LabelHasher::new(&[4u8; 32]);
        let labels = Labels::generate(&[4u8; 32], n, &p, &g, |_| {}).unwrap();
        let mut prev: Option<Vec<Label>> = None;
        for layer in 1..=p.layers {
            let want = reference_layer(&h, &g, layer, prev.as_deref());
            assert_eq!(labels.layer(layer).unwrap(), want.as_slice(), "layer {layer}");
            prev = Some(want);
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
