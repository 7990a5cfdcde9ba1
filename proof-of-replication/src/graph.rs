//! The sealing graph: bucket-sampling DRG parents and expander parents,
//! within each sector of a piece.
//!
//! A piece's nodes are cut into sectors of [`SealParams::sector_nodes`]
//! nodes; everything below describes the graph of one sector of `n` nodes
//! (local indices `0..n`), which is shifted to where the sector starts.
//! Every full sector has the same graph; a shorter last sector has its own.
//!
//! Every node `i` has `d` DRG parents in its own layer, all earlier than `i`
//! (Filecoin's `BucketGraph`: `d − 1` parents drawn by bucket sampling on the
//! metagraph of `i·(d − 1)` nodes, plus `i − 1`), and `e` expander parents in
//! the previous layer drawn uniformly from `0..n`. Nodes 0 and 1 have all DRG
//! parents equal to 0; a DRG parent that is not earlier than its child (only
//! for node 0) contributes a zero label.
//!
//! Randomness per node is the BLAKE3 XOF keyed by
//! `derive_key("crowdstore porep v1 graph", n ‖ d ‖ e)` over the node index,
//! so parents are deterministic, independent per node (built in parallel) and
//! any single node's parents can be computed alone — which is what the
//! verifier does, in `O(d + e)` work.

use rayon::prelude::*;

use crate::error::{PorepError, Result};
use crate::params::SealParams;

const GRAPH_CONTEXT: &str = "crowdstore porep v1 graph";

/// Most nodes a piece may have: parent indices are `u32`.
pub const MAX_NODES: u64 = 1 << 32;

fn graph_key(nodes: u64, params: &SealParams) -> [u8; 32] {
    let mut material = [0u8; 16];
    material[..8].copy_from_slice(&nodes.to_le_bytes());
    material[8..12].copy_from_slice(&params.drg_degree.to_le_bytes());
    material[12..].copy_from_slice(&params.expander_degree.to_le_bytes());
    blake3::derive_key(GRAPH_CONTEXT, &material)
}

/// ⌈log2 x⌉ for `x ≥ 2`.
fn ceil_log2(x: u64) -> u64 {
    u64::from(64 - (x - 1).leading_zeros())
}

/// Parents of `node` in a graph of `nodes` nodes, written to `drg` (`d`
/// entries) and `exp` (`e` entries). `key` is the graph key.
fn fill_parents(key: &[u8; 32], nodes: u64, node: u64, drg: &mut [u32], exp: &mut [u32]) {
    let m = drg.len();
    let words = 2 * m + exp.len();
    let mut rand = [0u8; 8 * (2 * crate::params::MAX_DRG_DEGREE as usize + 16)];
    blake3::Hasher::new_keyed(key)
        .update(&node.to_le_bytes())
        .finalize_xof()
        .fill(&mut rand[..8 * words]);
    let mut next = rand[..8 * words].chunks_exact(8).map(|c| {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        u64::from_le_bytes(w)
    });
    let mut draw = || next.next().unwrap_or(0);
    if node < 2 {
        drg.fill(0);
    } else {
        let m_prime = (m - 1) as u64;
        if m_prime > 0 {
            let meta = node * m_prime;
            let buckets = ceil_log2(meta);
            for slot in drg.iter_mut().take(m - 1) {
                let bucket = draw() % buckets + 1;
                let largest = meta.min(1 << bucket);
                let smallest = (largest >> 1).max(2);
                let distance = smallest + draw() % (largest - smallest + 1);
                let parent = (meta - distance) / m_prime;
                *slot = if parent >= node { node - 1 } else { parent } as u32;
            }
        }
        drg[m - 1] = (node - 1) as u32;
    }
    for slot in exp.iter_mut() {
        *slot = (draw() % nodes) as u32;
    }
}

/// The sector holding `node` in a piece of `nodes` nodes: its first node
/// and its length.
pub fn sector_of(nodes: u64, params: &SealParams, node: u64) -> (u64, u64) {
    let start = node - node % params.sector_nodes;
    (start, params.sector_nodes.min(nodes - start))
}

/// Parents of a single node (global indices), as the verifier computes them:
/// the node's sector graph, shifted to where the sector starts.
pub fn node_parents(nodes: u64, params: &SealParams, node: u64) -> (Vec<u32>, Vec<u32>) {
    let (start, len) = sector_of(nodes, params, node);
    let mut drg = vec![0u32; params.drg_degree as usize];
    let mut exp = vec![0u32; params.expander_degree as usize];
    fill_parents(&graph_key(len, params), len, node - start, &mut drg, &mut exp);
    for p in drg.iter_mut().chain(exp.iter_mut()) {
        *p += start as u32;
    }
    (drg, exp)
}

/// Number of 32-byte nodes of a piece of `len` bytes (the last node zero-padded).
pub fn node_count(len: u64) -> u64 {
    len.div_ceil(32)
}

/// The parent table of one sector graph of `nodes` nodes: `(d + e)` `u32`s
/// per node, indices local to the sector. Every full sector of every piece
/// has the same graph; only a shorter last sector has its own.
#[derive(Clone, PartialEq, Eq)]
pub struct SectorGraph {
    nodes: u64,
    drg_degree: usize,
    expander_degree: usize,
    table: Vec<u32>,
}

impl std::fmt::Debug for SectorGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SectorGraph")
            .field("nodes", &self.nodes)
            .field("drg_degree", &self.drg_degree)
            .field("expander_degree", &self.expander_degree)
            .finish_non_exhaustive()
    }
}

impl SectorGraph {
    /// Build the table for a sector of `nodes` nodes (in parallel with rayon).
    fn new(nodes: u64, params: &SealParams) -> Self {
        let (d, e) = (params.drg_degree as usize, params.expander_degree as usize);
        let key = graph_key(nodes, params);
        let mut table = vec![0u32; nodes as usize * (d + e)];
        table.par_chunks_mut(d + e).enumerate().for_each(|(i, row)| {
            let (drg, exp) = row.split_at_mut(d);
            fill_parents(&key, nodes, i as u64, drg, exp);
        });
        Self {
            nodes,
            drg_degree: d,
            expander_degree: e,
            table,
        }
    }

    /// Number of nodes.
    pub fn nodes(&self) -> u64 {
        self.nodes
    }

    /// DRG then expander parents of local node `i` (`i < nodes`), local indices.
    #[inline]
    pub fn row(&self, i: usize) -> (&[u32], &[u32]) {
        let w = self.drg_degree + self.expander_degree;
        self.table[i * w..(i + 1) * w].split_at(self.drg_degree)
    }

    /// DRG and expander degrees.
    pub fn degrees(&self) -> (usize, usize) {
        (self.drg_degree, self.expander_degree)
    }
}

/// Checks that `params` are valid and `nodes` is a sealable node count
/// (1..=[`MAX_NODES`]).
pub(crate) fn check_nodes(nodes: u64, params: &SealParams) -> Result<()> {
    params.validate()?;
    if nodes == 0 {
        return Err(PorepError::EmptyPiece);
    }
    if nodes > MAX_NODES {
        return Err(PorepError::PieceTooLarge {
            len: nodes * 32,
            max: MAX_NODES * 32,
        });
    }
    Ok(())
}

/// One sector of a piece: where it starts and its graph.
#[derive(Debug, Clone, Copy)]
pub struct Sector<'a> {
    /// Its first node in the piece.
    pub start: u64,
    /// Its graph (and so its length).
    pub graph: &'a SectorGraph,
}

impl Sector<'_> {
    /// Number of nodes.
    pub fn nodes(&self) -> u64 {
        self.graph.nodes
    }

    /// The piece's nodes this sector covers.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.start..self.start + self.graph.nodes
    }
}

/// The sealing graph of a piece of `nodes` nodes, built once per `(nodes,
/// params)` and shared by sealing, unsealing and proving: the table of a
/// full sector (shared by every full sector) and of a shorter last sector,
/// so at most two sector tables whatever the piece size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parents {
    nodes: u64,
    sector_nodes: u64,
    full: Option<SectorGraph>,
    tail: Option<SectorGraph>,
}

impl Parents {
    /// Build the tables for a piece of `nodes` nodes.
    pub fn new(nodes: u64, params: &SealParams) -> Result<Self> {
        check_nodes(nodes, params)?;
        let size = params.sector_nodes;
        let full = (nodes >= size).then(|| SectorGraph::new(size, params));
        let rest = nodes % size;
        let tail = (rest > 0).then(|| SectorGraph::new(rest, params));
        Ok(Self {
            nodes,
            sector_nodes: size,
            full,
            tail,
        })
    }

    /// Number of nodes of the piece.
    pub fn nodes(&self) -> u64 {
        self.nodes
    }

    /// True if these tables were built for `nodes` nodes and `params`'
    /// degrees and sector size.
    pub fn matches(&self, nodes: u64, params: &SealParams) -> bool {
        let any = self.full.as_ref().or(self.tail.as_ref());
        self.nodes == nodes
            && self.sector_nodes == params.sector_nodes
            && any.is_some_and(|g| {
                g.drg_degree == params.drg_degree as usize
                    && g.expander_degree == params.expander_degree as usize
            })
    }

    /// Number of sectors.
    pub fn sector_count(&self) -> u64 {
        self.nodes.div_ceil(self.sector_nodes)
    }

    /// Sector `j` (`j < sector_count()`).
    pub fn sector(&self, j: u64) -> Option<Sector<'_>> {
        let start = j.checked_mul(self.sector_nodes).filter(|&s| s < self.nodes)?;
        let graph = if self.nodes - start >= self.sector_nodes {
            self.full.as_ref()?
        } else {
            self.tail.as_ref()?
        };
        Some(Sector { start, graph })
    }

    /// Every sector, in order.
    pub fn sectors(&self) -> impl Iterator<Item = Sector<'_>> {
        (0..self.sector_count()).filter_map(|j| self.sector(j))
    }

    /// The sector holding `node` (`None` past the piece).
    pub fn sector_of(&self, node: u64) -> Option<Sector<'_>> {
        if node >= self.nodes {
            return None;
        }
        self.sector(node / self.sector_nodes)
    }

    /// DRG then expander parents of `node`, as piece (global) indices.
    pub fn parents_of(&self, node: u64) -> Option<(Vec<u64>, Vec<u64>)> {
        let s = self.sector_of(node)?;
        let (drg, exp) = s.graph.row((node - s.start) as usize);
        let global = |v: &[u32]| v.iter().map(|&p| s.start + u64::from(p)).collect();
        Some((global(drg), global(exp)))
    }

    /// Memory held by the tables in bytes.
    pub fn size_bytes(&self) -> usize {
        [&self.full, &self.tail]
            .into_iter()
            .flatten()
            .map(|g| g.table.len() * 4)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(g: &Parents, i: u64) -> (Vec<u64>, Vec<u64>) {
        g.parents_of(i).unwrap()
    }

    #[test]
    fn drg_parents_are_earlier_and_include_predecessor() {
        let p = SealParams::production();
        let g = Parents::new(5000, &p).unwrap();
        for i in 1..5000u64 {
            let (drg, exp) = row(&g, i);
            assert_eq!(drg.len(), 6);
            assert_eq!(exp.len(), 8);
            assert!(drg.iter().all(|&x| x < i), "node {i}: {drg:?}");
            assert_eq!(drg[5], i - 1);
            assert!(exp.iter().all(|&x| x < 5000));
        }
    }

    #[test]
    fn table_matches_single_node_computation() {
        let p = SealParams::devnet();
        let g = Parents::new(777, &p).unwrap();
        for i in [0u64, 1, 2, 3, 100, 776] {
            let (drg, exp) = node_parents(777, &p, i);
            let widen = |v: Vec<u32>| v.into_iter().map(u64::from).collect::<Vec<_>>();
            assert_eq!(row(&g, i), (widen(drg), widen(exp)));
        }
    }

    /// Parents never leave their sector: a node's DRG parents are earlier
    /// nodes of its sector (the sector's first node has none: all point at
    /// itself and count as zero labels), expander parents are anywhere in
    /// it; every full sector has the same graph, shifted; and the tables
    /// agree with the verifier's single-node computation.
    #[test]
    fn parents_stay_within_their_sector() {
        let p = SealParams {
            sector_nodes: 512,
            ..SealParams::production()
        };
        let nodes = 3 * 512 + 77;
        let g = Parents::new(nodes, &p).unwrap();
        assert_eq!(g.sector_count(), 4);
        assert_eq!(
            g.sectors().map(|s| (s.start, s.nodes())).collect::<Vec<_>>(),
            vec![(0, 512), (512, 512), (1024, 512), (1536, 77)]
        );
        for i in 0..nodes {
            let (drg, exp) = row(&g, i);
            let (start, len) = sector_of(nodes, &p, i);
            let inside = |x: &u64| (start..start + len).contains(x);
            assert!(drg.iter().chain(&exp).all(inside), "node {i}");
            if i == start {
                assert!(drg.iter().all(|&x| x == i), "node {i}: {drg:?}");
            } else {
                assert!(drg.iter().all(|&x| x < i) && drg[5] == i - 1, "node {i}: {drg:?}");
            }
            let (a, b) = node_parents(nodes, &p, i);
            let widen = |v: Vec<u32>| v.into_iter().map(u64::from).collect::<Vec<_>>();
            assert_eq!((drg.clone(), exp.clone()), (widen(a), widen(b)), "node {i}");
            if (512..1024).contains(&i) {
                let (d0, e0) = row(&g, i - 512);
                let shift = |v: Vec<u64>| v.into_iter().map(|x| x + 512).collect::<Vec<_>>();
                assert_eq!((drg, exp), (shift(d0), shift(e0)));
            }
        }
        assert!(g.sector(4).is_none() && g.parents_of(nodes).is_none());
        // a piece of one sector or less is one graph over the whole piece
        let small = Parents::new(300, &p).unwrap();
        assert_eq!(small.sector_count(), 1);
        assert_eq!(small.size_bytes(), 300 * 14 * 4);
        assert_eq!(g.size_bytes(), (512 + 77) * 14 * 4);
    }

    #[test]
    fn graph_depends_on_size_and_degrees() {
        let p = SealParams::devnet();
        let a = node_parents(10_000, &p, 5000);
        let b = node_parents(10_001, &p, 5000);
        assert_ne!(a, b);
        let q = SealParams { drg_degree: 4, ..p };
        assert_ne!(a.0, node_parents(10_000, &q, 5000).0[..3].to_vec());
    }

    #[test]
    fn bucket_sampling_reaches_far_back() {
        // A DRG needs long edges: some parents must be far from their child.
        let p = SealParams::production();
        let g = Parents::new(1 << 16, &p).unwrap();
        let far = (1000..(1u64 << 16))
            .filter(|&i| row(&g, i).0.iter().any(|&x| i - x > i / 4))
            .count();
        assert!(far > 1000, "only {far} nodes have a long edge");
    }
}
