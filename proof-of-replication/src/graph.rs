//! The sealing graph: bucket-sampling DRG parents and expander parents.
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

/// Parents of a single node, as the verifier computes them.
pub fn node_parents(nodes: u64, params: &SealParams, node: u64) -> (Vec<u32>, Vec<u32>) {
    let mut drg = vec![0u32; params.drg_degree as usize];
    let mut exp = vec![0u32; params.expander_degree as usize];
    fill_parents(&graph_key(nodes, params), nodes, node, &mut drg, &mut exp);
    (drg, exp)
}

/// Number of 32-byte nodes of a piece of `len` bytes (the last node zero-padded).
pub fn node_count(len: u64) -> u64 {
    len.div_ceil(32)
}

/// The parent table of a graph, built once per `(nodes, d, e)` and shared by
/// sealing, unsealing and proving: `(d + e)` `u32`s per node.
#[derive(Clone, PartialEq, Eq)]
pub struct Parents {
    nodes: u64,
    drg_degree: usize,
    expander_degree: usize,
    table: Vec<u32>,
}

impl std::fmt::Debug for Parents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parents")
            .field("nodes", &self.nodes)
            .field("drg_degree", &self.drg_degree)
            .field("expander_degree", &self.expander_degree)
            .finish_non_exhaustive()
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

impl Parents {
    /// Build the table for `nodes` nodes (in parallel with rayon).
    pub fn new(nodes: u64, params: &SealParams) -> Result<Self> {
        check_nodes(nodes, params)?;
        let (d, e) = (params.drg_degree as usize, params.expander_degree as usize);
        let key = graph_key(nodes, params);
        let mut table = vec![0u32; nodes as usize * (d + e)];
        table.par_chunks_mut(d + e).enumerate().for_each(|(i, row)| {
            let (drg, exp) = row.split_at_mut(d);
            fill_parents(&key, nodes, i as u64, drg, exp);
        });
        Ok(Self {
            nodes,
            drg_degree: d,
            expander_degree: e,
            table,
        })
    }

    /// Number of nodes.
    pub fn nodes(&self) -> u64 {
        self.nodes
    }

    /// True if this table was built for `nodes` nodes and `params`' degrees.
    pub fn matches(&self, nodes: u64, params: &SealParams) -> bool {
        self.nodes == nodes
            && self.drg_degree == params.drg_degree as usize
            && self.expander_degree == params.expander_degree as usize
    }

    /// DRG then expander parents of node `i` (`i < nodes`).
    #[inline]
    pub fn row(&self, i: usize) -> (&[u32], &[u32]) {
        let w = self.drg_degree + self.expander_degree;
        self.table[i * w..(i + 1) * w].split_at(self.drg_degree)
    }

    /// Memory held by the table in bytes.
    pub fn size_bytes(&self) -> usize {
        self.table.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drg_parents_are_earlier_and_include_predecessor() {
        let p = SealParams::production();
        let g = Parents::new(5000, &p).unwrap();
        for i in 1..5000usize {
            let (drg, exp) = g.row(i);
            assert_eq!(drg.len(), 6);
            assert_eq!(exp.len(), 8);
            assert!(drg.iter().all(|&x| (x as usize) < i), "node {i}: {drg:?}");
            assert_eq!(drg[5] as usize, i - 1);
            assert!(exp.iter().all(|&x| x < 5000));
        }
    }

    #[test]
    fn table_matches_single_node_computation() {
        let p = SealParams::devnet();
        let g = Parents::new(777, &p).unwrap();
        for i in [0u64, 1, 2, 3, 100, 776] {
            let (drg, exp) = node_parents(777, &p, i);
            let (a, b) = g.row(i as usize);
            assert_eq!((a, b), (drg.as_slice(), exp.as_slice()));
        }
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
        let far = (1000..(1usize << 16))
            .filter(|&i| g.row(i).0.iter().any(|&x| i - x as usize > i / 4))
            .count();
        assert!(far > 1000, "only {far} nodes have a long edge");
    }
}
