//! Public files the IPFS side has fetched: each as a CAR on disk (written
//! by `crowd_client`'s export, which rebuilds the root CID from the
//! verified pieces), indexed, with every block verified against its CID
//! again whenever it is read. Bounded in bytes; least recently used
//! first out.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crowd_chunker::{decode_file_node, verify_block, CarIndex, Cid, FileNode};

use crate::error::GatewayError;
use crate::request::{CarOptions, DagScope};

/// Deepest DAG walked (the chunker's own bound).
const MAX_DEPTH: usize = 64;

/// One fetched DAG: its CAR file and where each block sits in it.
#[derive(Debug)]
pub struct CachedDag {
    pub root: Cid,
    /// The file's size (from the root block).
    pub size: u64,
    car: File,
    car_len: u64,
    blocks: HashMap<Cid, (u64, u64)>,
}

/// A block of a CAR response or a slice of a file response, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub cid: Cid,
    /// For file responses: which bytes of the block (all for CARs).
    pub within: Range<u64>,
}

impl CachedDag {
    /// Indexes the CAR at `path` (verifying every block) and checks it holds
    /// the DAG of `root`.
    pub fn open(path: &Path, root: Cid) -> Result<Self, GatewayError> {
        let car =
            File::open(path).map_err(|e| GatewayError::Io(format!("cannot open {}: {e}", path.display())))?;
        let car_len = car
            .metadata()
            .map_err(|e| GatewayError::Io(format!("cannot stat {}: {e}", path.display())))?
            .len();
        let index = CarIndex::scan(&car)
            .map_err(|e| GatewayError::Upstream(format!("the fetched DAG of {root}: {e}")))?;
        if index.roots != [root] {
            return Err(GatewayError::Upstream(format!(
                "the fetched DAG's root is not {root}"
            )));
        }
        let mut dag = Self {
            root,
            size: 0,
            car,
            car_len,
            blocks: index.blocks,
        };
        let root_block = dag.block(&root)?;
        dag.size =
            match decode_file_node(&root, &root_block).map_err(|e| GatewayError::Upstream(e.to_string()))? {
                FileNode::Raw => root_block.len() as u64,
                FileNode::Branch { filesize, .. } => filesize,
            };
        Ok(dag)
    }

    /// Bytes the CAR takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.car_len
    }

    /// Whether `cid` is a block of this DAG.
    pub fn has(&self, cid: &Cid) -> bool {
        self.blocks.contains_key(cid)
    }

    /// Every block CID of this DAG.
    pub fn cids(&self) -> impl Iterator<Item = &Cid> {
        self.blocks.keys()
    }

    /// One block's bytes, verified against its CID as they are read.
    pub fn block(&self, cid: &Cid) -> Result<Vec<u8>, GatewayError> {
        let &(offset, len) = self
            .blocks
            .get(cid)
            .ok_or_else(|| GatewayError::NotFound(format!("no block {cid} here")))?;
        let mut buf = vec![0u8; len as usize];
        self.car
            .read_exact_at(&mut buf, offset)
            .map_err(|e| GatewayError::Io(format!("reading the cached block {cid}: {e}")))?;
        verify_block(cid, &buf, offset)
            .map_err(|e| GatewayError::Io(format!("the cached block {cid} no longer verifies: {e}")))?;
        Ok(buf)
    }

    /// The blocks of a CAR response, in depth-first pre-order: the root
    /// only (`block`), every block, or (with a byte range) the ones needed
    /// to verify that range. Without `dups`, each block once.
    pub fn car_blocks(
        &self,
        opts: &CarOptions,
        range: Option<&Range<u64>>,
    ) -> Result<Vec<Cid>, GatewayError> {
        let mut out = Vec::new();
        if opts.scope == DagScope::Block {
            out.push(self.root);
            return Ok(out);
        }
        let mut seen = HashSet::new();
        self.walk(&self.root, 0, self.size, range, 0, &mut |cid, _, _| {
            if opts.dups || seen.insert(*cid) {
                out.push(*cid);
            }
        })?;
        Ok(out)
    }

    /// The leaves covering `range` of the file, each with the part of it
    /// inside the range.
    pub fn file_pieces(&self, range: &Range<u64>) -> Result<Vec<Piece>, GatewayError> {
        let mut out = Vec::new();
        if range.is_empty() {
            return Ok(out);
        }
        self.walk(
            &self.root,
            0,
            self.size,
            Some(range),
            0,
            &mut |cid, start, len| {
                if cid.codec() == crowd_chunker::RAW {
                    let from = range.start.max(start) - start;
                    let to = range.end.min(start + len) - start;
                    out.push(Piece {
                        cid: *cid,
                        within: from..to,
                    });
                }
            },
        )?;
        Ok(out)
    }

    /// Calls `visit(cid, file offset, length)` for every block under `cid`
    /// (at `offset`, `len` bytes of the file) in pre-order, skipping
    /// subtrees outside `range`.
    fn walk(
        &self,
        cid: &Cid,
        offset: u64,
        len: u64,
        range: Option<&Range<u64>>,
        depth: usize,
        visit: &mut dyn FnMut(&Cid, u64, u64),
    ) -> Result<(), GatewayError> {
        if depth > MAX_DEPTH {
            return Err(GatewayError::Upstream(format!(
                "the DAG of {} is deeper than 64",
                self.root
            )));
        }
        visit(cid, offset, len);
        if cid.codec() != crowd_chunker::DAG_PB {
            return Ok(());
        }
        let bytes = self.block(cid)?;
        let FileNode::Branch { inline, children, .. } =
            decode_file_node(cid, &bytes).map_err(|e| GatewayError::Upstream(e.to_string()))?
        else {
            return Ok(());
        };
        let mut at = offset + inline.len() as u64;
        for (child, child_len) in children {
            let inside = range.is_none_or(|r| at < r.end && r.start < at + child_len);
            if inside {
                self.walk(&child, at, child_len, range, depth + 1, visit)?;
            }
            at += child_len;
        }
        Ok(())
    }
}

/// The cache: fetched DAGs by root, and which root each block belongs to.
#[derive(Debug)]
pub struct DagCache {
    dir: PathBuf,
    limit: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    dags: HashMap<Cid, (Arc<CachedDag>, u64)>,
    /// block → the root of a cached DAG holding it.
    owners: HashMap<Cid, Cid>,
    bytes: u64,
    clock: u64,
}

impl DagCache {
    /// A cache in `dir` (emptied: the index lives in memory) of at most
    /// `limit` bytes of CARs.
    pub fn new(dir: PathBuf, limit: u64) -> Result<Self, GatewayError> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| GatewayError::Io(format!("cannot empty {}: {e}", dir.display())))?;
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| GatewayError::Io(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Self {
            dir,
            limit,
            state: Mutex::new(State::default()),
        })
    }

    /// Where the CAR of `root` is written.
    pub fn path_for(&self, root: &Cid) -> PathBuf {
        self.dir.join(format!("{root}.car"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached DAG whose root is `cid`, or which holds block `cid`.
    pub fn find(&self, cid: &Cid) -> Option<Arc<CachedDag>> {
        let mut s = self.lock();
        let root = if s.dags.contains_key(cid) {
            *cid
        } else {
            *s.owners.get(cid)?
        };
        s.clock += 1;
        let now = s.clock;
        let entry = s.dags.get_mut(&root)?;
        entry.1 = now;
        Some(entry.0.clone())
    }

    /// Adds a DAG, then drops the least recently used ones (never the new
    /// one) until the cache fits its limit. A CAR dropped while a response
    /// still reads it stays readable through that response's open file.
    pub fn insert(&self, dag: CachedDag) -> Arc<CachedDag> {
        let dag = Arc::new(dag);
        let mut s = self.lock();
        s.clock += 1;
        let now = s.clock;
        for cid in dag.cids() {
            s.owners.entry(*cid).or_insert(dag.root);
        }
        s.bytes += dag.disk_bytes();
        if let Some((old, _)) = s.dags.insert(dag.root, (dag.clone(), now)) {
            s.bytes -= old.disk_bytes();
        }
        while s.bytes > self.limit && s.dags.len() > 1 {
            let Some(victim) = s
                .dags
                .iter()
                .filter(|(root, _)| **root != dag.root)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(root, _)| *root)
            else {
                break;
            };
            if let Some((gone, _)) = s.dags.remove(&victim) {
                s.bytes -= gone.disk_bytes();
                s.owners.retain(|_, root| *root != victim);
                let _ = std::fs::remove_file(self.path_for(&victim));
            }
        }
        dag
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowd_chunker::{write_car, ChunkParams, ChunkerKind, DagParams, HashAlg};

    fn dag_of(data: &[u8], dir: &Path) -> CachedDag {
        let params = DagParams::new(
            ChunkParams::new(ChunkerKind::Fixed, 1024).unwrap(),
            4,
            HashAlg::Sha2_256,
        )
        .unwrap();
        let mut car = Vec::new();
        let root = write_car(data, &params, &mut car).unwrap();
        let path = dir.join(format!("{}.car", root.cid));
        std::fs::write(&path, &car).unwrap();
        CachedDag::open(&path, root.cid).unwrap()
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn file_pieces_cover_exactly_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = data(20_000);
        let dag = dag_of(&bytes, dir.path());
        assert_eq!(dag.size, 20_000);
        for range in [0..1, 0..20_000, 1023..1025, 5000..17_001, 19_999..20_000] {
            let mut got = Vec::new();
            for p in dag.file_pieces(&range).unwrap() {
                let block = dag.block(&p.cid).unwrap();
                got.extend_from_slice(&block[p.within.start as usize..p.within.end as usize]);
            }
            assert_eq!(got, &bytes[range.start as usize..range.end as usize], "{range:?}");
        }
    }

    #[test]
    fn car_blocks_by_scope_range_and_dups() {
        let dir = tempfile::tempdir().unwrap();
        // zeros: every leaf is the same block
        let dag = dag_of(&vec![0u8; 10 * 1024], dir.path());
        let opts = |scope, dups| CarOptions {
            scope,
            bytes: None,
            dups,
        };
        let all_dups = dag.car_blocks(&opts(DagScope::All, true), None).unwrap();
        let all = dag.car_blocks(&opts(DagScope::All, false), None).unwrap();
        assert_eq!(
            all_dups
                .iter()
                .filter(|c| c.codec() == crowd_chunker::RAW)
                .count(),
            10
        );
        assert_eq!(all.iter().filter(|c| c.codec() == crowd_chunker::RAW).count(), 1);
        assert_eq!(all[0], dag.root);
        assert_eq!(
            dag.car_blocks(&opts(DagScope::Block, false), None).unwrap(),
            vec![dag.root]
        );
        // a range needs the path to its leaves and nothing else
        let ranged = dag
            .car_blocks(&opts(DagScope::Entity, true), Some(&(5000..5001)))
            .unwrap();
        assert_eq!(
            ranged.iter().filter(|c| c.codec() == crowd_chunker::RAW).count(),
            1
        );
        assert!(ranged.len() < all_dups.len());
    }

    #[test]
    fn a_tampered_cache_file_is_caught_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let dag = dag_of(&data(5000), dir.path());
        let path = dir.path().join(format!("{}.car", dag.root));
        let mut car = std::fs::read(&path).unwrap();
        let last = car.len() - 1;
        car[last] ^= 1;
        std::fs::write(&path, &car).unwrap();
        let leaf = dag.file_pieces(&(4999..5000)).unwrap()[0].cid;
        assert!(matches!(dag.block(&leaf), Err(GatewayError::Io(_))));
    }

    #[test]
    fn the_cache_keeps_to_its_limit_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DagCache::new(dir.path().join("c"), 25_000).unwrap();
        let a = cache.insert(dag_of(&data(10_000), &cache.dir));
        let b = cache.insert(dag_of(&data(11_000), &cache.dir));
        assert!(cache.find(&a.root).is_some()); // a is now the more recent
        let c = cache.insert(dag_of(&data(12_000), &cache.dir));
        assert!(cache.find(&b.root).is_none());
        assert!(cache.find(&a.root).is_some() && cache.find(&c.root).is_some());
        // a leaf finds its root
        let leaf = c.file_pieces(&(11_999..12_000)).unwrap()[0].cid;
        assert_eq!(cache.find(&leaf).unwrap().root, c.root);
    }
}
