//! UnixFS v1 file DAGs in the balanced layout of the IPIP-499
//! `unixfs-v1-2025` profile: CIDv1, raw leaves, at most `max_links` links per
//! node, a single-chunk file is its raw leaf.
//!
//! The layout matches the reference importer's: leaves are grouped in runs of
//! `max_links` under a parent, parents again in runs of `max_links`, until one
//! node remains. [`DagBuilder`] does this incrementally, holding at most
//! `max_links` links per level, so memory is O(max_links · depth).

use std::io::Read;

use cid::Cid;
use rayon::prelude::*;

use crate::chunk::{read_full, ChunkParams, ChunkerKind};
use crate::unixfs::{PbLink, PbNode, UnixFsData, UNIXFS_FILE, UNIXFS_RAW};
use crate::{ChunkerError, HashAlg, DAG_PB, RAW};

/// Default and profile value of links per node.
pub const DEFAULT_MAX_LINKS: usize = 1024;
/// Most links per node we build (dag-pb blocks stay well under 1 MiB).
pub const MAX_MAX_LINKS: usize = 1 << 16;
/// Bytes of chunks hashed together in parallel when streaming from a reader.
const STREAM_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// Everything that decides a file's root CID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DagParams {
    pub chunking: ChunkParams,
    pub max_links: usize,
    pub hash: HashAlg,
}

impl Default for DagParams {
    fn default() -> Self {
        Self {
            chunking: ChunkParams::default(),
            max_links: DEFAULT_MAX_LINKS,
            hash: HashAlg::Blake3,
        }
    }
}

impl DagParams {
    /// Checks `max_links` (the chunk size is checked by [`ChunkParams::new`]).
    pub fn new(chunking: ChunkParams, max_links: usize, hash: HashAlg) -> Result<Self, ChunkerError> {
        if !(2..=MAX_MAX_LINKS).contains(&max_links) {
            return Err(ChunkerError::InvalidParams(format!(
                "max links {max_links} is outside 2..={MAX_MAX_LINKS}"
            )));
        }
        Ok(Self {
            chunking,
            max_links,
            hash,
        })
    }
}

/// Receives every block of a DAG as it is made: leaves in file order, each
/// parent right after its last child.
pub trait BlockSink {
    fn put(&mut self, cid: &Cid, data: &[u8]) -> Result<(), ChunkerError>;
}

/// A sink that drops blocks: for computing a CID only.
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl BlockSink for Discard {
    fn put(&mut self, _: &Cid, _: &[u8]) -> Result<(), ChunkerError> {
        Ok(())
    }
}

/// Keeps only interior (dag-pb) blocks; leaves can be read back from the file.
#[derive(Debug, Default)]
pub struct InteriorBlocks(pub std::collections::HashMap<Cid, Vec<u8>>);

impl BlockSink for InteriorBlocks {
    fn put(&mut self, cid: &Cid, data: &[u8]) -> Result<(), ChunkerError> {
        if cid.codec() == DAG_PB {
            self.0.insert(*cid, data.to_vec());
        }
        Ok(())
    }
}

/// A built DAG's root and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DagRoot {
    pub cid: Cid,
    /// File length in bytes.
    pub size: u64,
    /// Number of leaves (chunks).
    pub leaves: u64,
    /// Number of blocks (leaves and interior nodes).
    pub blocks: u64,
}

#[derive(Debug, Clone)]
struct Child {
    cid: Cid,
    tsize: u64,
    filesize: u64,
}

/// Builds the balanced layout incrementally from leaves in file order.
#[derive(Debug)]
pub struct DagBuilder {
    params: DagParams,
    levels: Vec<Vec<Child>>,
    emitted: Vec<u64>,
    leaves: u64,
    size: u64,
    blocks: u64,
}

impl DagBuilder {
    pub fn new(params: DagParams) -> Self {
        Self {
            params,
            levels: vec![Vec::new()],
            emitted: vec![0],
            leaves: 0,
            size: 0,
            blocks: 0,
        }
    }

    /// The parameters it builds under.
    pub fn params(&self) -> &DagParams {
        &self.params
    }

    /// Bytes of all the leaves added so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds everything `reader` yields as the next fixed-size leaves (the
    /// chunk size of fixed chunking; content-defined chunking is refused),
    /// hashed in parallel batches through one reused buffer, and sinks
    /// them; returns the bytes read. Nothing is added for an empty reader.
    pub fn push_fixed_from_reader<R: Read>(
        &mut self,
        mut reader: R,
        sink: &mut dyn BlockSink,
    ) -> Result<u64, ChunkerError> {
        if self.params.chunking.kind() != ChunkerKind::Fixed {
            return Err(ChunkerError::InvalidParams(
                "leaves of fixed size need fixed-size chunking".into(),
            ));
        }
        let size = self.params.chunking.chunk_size();
        let mut buf = vec![0u8; (STREAM_BATCH_BYTES / size).max(1) * size];
        let mut offset = 0u64;
        loop {
            let filled = read_full(&mut reader, &mut buf, offset)?;
            if filled == 0 {
                break;
            }
            let chunks: Vec<&[u8]> = buf[..filled].chunks(size).collect();
            push_batch(self, &chunks, sink)?;
            offset += filled as u64;
            if filled < buf.len() {
                break;
            }
        }
        Ok(offset)
    }

    /// Adds the next leaf, already stored under `cid` (a raw block of `len` bytes).
    pub fn push_leaf(&mut self, cid: Cid, len: u64, sink: &mut dyn BlockSink) -> Result<(), ChunkerError> {
        self.leaves += 1;
        self.blocks += 1;
        self.size += len;
        self.push(
            0,
            Child {
                cid,
                tsize: len,
                filesize: len,
            },
            sink,
        )
    }

    fn push(&mut self, level: usize, child: Child, sink: &mut dyn BlockSink) -> Result<(), ChunkerError> {
        self.levels[level].push(child);
        if self.levels[level].len() == self.params.max_links {
            self.flush(level, sink)?;
        }
        Ok(())
    }

    /// Turns the pending children of `level` into one parent at `level + 1`.
    fn flush(&mut self, level: usize, sink: &mut dyn BlockSink) -> Result<(), ChunkerError> {
        let children = std::mem::take(&mut self.levels[level]);
        // the reference importer drops empty leaves from parents
        let children: Vec<Child> = children.into_iter().filter(|c| c.filesize > 0).collect();
        let unixfs = UnixFsData::file(children.iter().map(|c| c.filesize).collect());
        let node = PbNode {
            links: children
                .iter()
                .map(|c| PbLink {
                    hash: c.cid,
                    name: String::new(),
                    tsize: c.tsize,
                })
                .collect(),
            data: Some(unixfs.encode()),
        };
        let bytes = node.encode();
        let cid = self.params.hash.cid(DAG_PB, &bytes);
        sink.put(&cid, &bytes)?;
        self.blocks += 1;
        let parent = Child {
            cid,
            tsize: bytes.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>(),
            filesize: unixfs.content_len(),
        };
        self.emitted[level] += 1;
        if self.levels.len() == level + 1 {
            self.levels.push(Vec::new());
            self.emitted.push(0);
        }
        self.push(level + 1, parent, sink)
    }

    /// Completes the tree and returns the root.
    pub fn finish(mut self, sink: &mut dyn BlockSink) -> Result<DagRoot, ChunkerError> {
        if self.leaves == 0 {
            return Err(ChunkerError::InvalidParams(
                "a DAG needs at least one leaf (an empty file is one empty leaf)".into(),
            ));
        }
        if self.leaves == 1 {
            // a single-chunk file is its raw leaf
            if let Some(leaf) = self.levels[0].first() {
                return Ok(self.root(leaf.cid));
            }
        }
        let mut level = 0;
        loop {
            let top = level + 1 == self.levels.len();
            if top && level > 0 && self.emitted[level] == 0 && self.levels[level].len() == 1 {
                let cid = self.levels[level][0].cid;
                return Ok(self.root(cid));
            }
            if !self.levels[level].is_empty() {
                self.flush(level, sink)?;
            }
            level += 1;
        }
    }

    fn root(&self, cid: Cid) -> DagRoot {
        DagRoot {
            cid,
            size: self.size,
            leaves: self.leaves,
            blocks: self.blocks,
        }
    }
}

/// Hashes leaves in parallel and feeds them to the builder in order.
fn push_batch(
    builder: &mut DagBuilder,
    chunks: &[&[u8]],
    sink: &mut dyn BlockSink,
) -> Result<(), ChunkerError> {
    let hash = builder.params.hash;
    let cids: Vec<Cid> = chunks.par_iter().map(|c| hash.cid(RAW, c)).collect();
    for (cid, chunk) in cids.into_iter().zip(chunks) {
        sink.put(&cid, chunk)?;
        builder.push_leaf(cid, chunk.len() as u64, sink)?;
    }
    Ok(())
}

/// Builds the DAG of an in-memory (or memory-mapped) file, hashing chunks in
/// parallel without copying them.
pub fn build_from_slice(
    data: &[u8],
    params: &DagParams,
    sink: &mut dyn BlockSink,
) -> Result<DagRoot, ChunkerError> {
    let mut builder = DagBuilder::new(*params);
    let mut ranges = params.chunking.ranges(data);
    // enough chunks per batch to keep every core busy, few enough to bound memory
    let per_batch = (STREAM_BATCH_BYTES / params.chunking.chunk_size()).clamp(64, 4096);
    let mut batch: Vec<&[u8]> = Vec::with_capacity(per_batch);
    loop {
        batch.clear();
        batch.extend(ranges.by_ref().take(per_batch).map(|r| &data[r]));
        if batch.is_empty() {
            break;
        }
        push_batch(&mut builder, &batch, sink)?;
    }
    builder.finish(sink)
}

/// Builds the DAG of a stream with bounded memory: at most about 32 MiB of
/// chunks (or one maximum chunk) are held and hashed together.
pub fn build_from_reader<R: Read>(
    reader: R,
    params: &DagParams,
    sink: &mut dyn BlockSink,
) -> Result<DagRoot, ChunkerError> {
    if params.chunking.kind() == ChunkerKind::Fixed {
        return build_fixed_from_reader(reader, params, sink);
    }
    let mut builder = DagBuilder::new(*params);
    let mut stream = params.chunking.stream(reader);
    let mut batch: Vec<Vec<u8>> = Vec::new();
    loop {
        batch.clear();
        let mut bytes = 0;
        while bytes < STREAM_BATCH_BYTES {
            match stream.next() {
                Some(chunk) => {
                    let chunk = chunk?;
                    bytes += chunk.len().max(1);
                    batch.push(chunk);
                }
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        push_batch(&mut builder, &refs, sink)?;
    }
    builder.finish(sink)
}

/// Fixed-size chunks from a reader through one reused batch buffer (no
/// allocation per chunk).
fn build_fixed_from_reader<R: Read>(
    mut reader: R,
    params: &DagParams,
    sink: &mut dyn BlockSink,
) -> Result<DagRoot, ChunkerError> {
    let mut builder = DagBuilder::new(*params);
    if builder.push_fixed_from_reader(&mut reader, sink)? == 0 {
        // an empty input is one empty leaf
        push_batch(&mut builder, &[&[]], sink)?;
    }
    builder.finish(sink)
}

/// What a block of a file DAG is, once verified and decoded.
#[derive(Debug)]
pub enum FileNode {
    /// A raw leaf: all of its bytes are file content.
    Raw,
    /// A dag-pb UnixFS file node: inline data, then children of these sizes.
    Branch {
        inline: Vec<u8>,
        children: Vec<(Cid, u64)>,
        filesize: u64,
    },
}

/// Decodes a verified block of a UnixFS file DAG and checks it is consistent
/// (a file or raw node, one size per link, sizes adding up).
pub fn decode_file_node(cid: &Cid, bytes: &[u8]) -> Result<FileNode, ChunkerError> {
    let malformed = |reason: String| ChunkerError::MalformedNode { cid: *cid, reason };
    match cid.codec() {
        RAW => Ok(FileNode::Raw),
        DAG_PB => {
            let node = PbNode::decode(bytes).map_err(&malformed)?;
            let data = node
                .data
                .ok_or_else(|| malformed("dag-pb node without UnixFS data".into()))?;
            let fs = UnixFsData::decode(&data).map_err(&malformed)?;
            if fs.data_type != UNIXFS_FILE && fs.data_type != UNIXFS_RAW {
                return Err(malformed(format!("UnixFS type {} is not a file", fs.data_type)));
            }
            if fs.blocksizes.len() != node.links.len() {
                return Err(malformed(format!(
                    "{} links but {} block sizes",
                    node.links.len(),
                    fs.blocksizes.len()
                )));
            }
            let inline = fs.data.clone().unwrap_or_default();
            let filesize = inline.len() as u64
                + fs.blocksizes
                    .iter()
                    .try_fold(0u64, |a, b| a.checked_add(*b))
                    .ok_or_else(|| malformed("block sizes overflow".into()))?;
            if let Some(declared) = fs.filesize {
                if declared != filesize {
                    return Err(malformed(format!(
                        "declares {declared} bytes but its parts add up to {filesize}"
                    )));
                }
            }
            let children = node.links.iter().map(|l| l.hash).zip(fs.blocksizes).collect();
            Ok(FileNode::Branch {
                inline,
                children,
                filesize,
            })
        }
        codec => Err(ChunkerError::UnsupportedCodec { cid: *cid, codec }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkerKind;
    use proptest::prelude::*;

    fn params(kind: ChunkerKind, chunk: usize, links: usize, hash: HashAlg) -> DagParams {
        DagParams::new(ChunkParams::new(kind, chunk).unwrap(), links, hash).unwrap()
    }

    /// Reassembles a file from a DAG held in memory, checking every block.
    fn reassemble(root: &Cid, blocks: &std::collections::HashMap<Cid, Vec<u8>>, out: &mut Vec<u8>) {
        let bytes = &blocks[root];
        crate::verify_block(root, bytes, 0).unwrap();
        match decode_file_node(root, bytes).unwrap() {
            FileNode::Raw => out.extend_from_slice(bytes),
            FileNode::Branch { inline, children, .. } => {
                out.extend_from_slice(&inline);
                for (cid, size) in children {
                    let before = out.len();
                    reassemble(&cid, blocks, out);
                    assert_eq!((out.len() - before) as u64, size);
                }
            }
        }
    }

    #[derive(Default)]
    struct All(std::collections::HashMap<Cid, Vec<u8>>);
    impl BlockSink for All {
        fn put(&mut self, cid: &Cid, data: &[u8]) -> Result<(), ChunkerError> {
            self.0.insert(*cid, data.to_vec());
            Ok(())
        }
    }

    proptest! {
        /// A DAG continued from a prefix of whole chunks (a resumed get's
        /// kept output, then the leaves that follow, here read in turn) is
        /// the DAG of the whole input.
        #[test]
        fn fixed_leaves_pushed_in_parts_make_the_whole_dag_proptest(
            data in proptest::collection::vec(any::<u8>(), 1..20_000),
            chunk in 256usize..4096,
            links in 2usize..6,
            at in any::<prop::sample::Index>(),
        ) {
            let p = params(ChunkerKind::Fixed, chunk, links, HashAlg::Blake3);
            let want = build_from_reader(&data[..], &p, &mut Discard).unwrap();
            let prefix = at.index(data.len() / chunk + 1) * chunk;
            let mut dag = DagBuilder::new(p);
            prop_assert_eq!(dag.push_fixed_from_reader(&data[..prefix], &mut Discard).unwrap(), prefix as u64);
            prop_assert_eq!(dag.size(), prefix as u64);
            dag.push_fixed_from_reader(&data[prefix..], &mut Discard).unwrap();
            prop_assert_eq!(dag.finish(&mut Discard).unwrap().cid, want.cid);
            let mut cdc = DagBuilder::new(params(ChunkerKind::FastCdc, chunk & !1, links, HashAlg::Blake3));
            prop_assert!(cdc.push_fixed_from_reader(&data[..], &mut Discard).is_err());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Slice and stream builders agree, every block verifies, the DAG
        /// reassembles to the input, and no node exceeds max_links.
        #[test]
        fn dag_roundtrip_proptest(len in 0usize..20_000, chunk in 1usize..2048, links in 2usize..9,
                                  cdc in any::<bool>(), sha in any::<bool>(), seed in any::<u8>()) {
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            let kind = if cdc { ChunkerKind::FastCdc } else { ChunkerKind::Fixed };
            let chunk = if cdc { chunk.max(256) & !1 } else { chunk };
            let hash = if sha { HashAlg::Sha2_256 } else { HashAlg::Blake3 };
            let p = params(kind, chunk, links, hash);
            let mut a = All::default();
            let root = build_from_slice(&data, &p, &mut a).unwrap();
            let mut b = All::default();
            let root2 = build_from_reader(&data[..], &p, &mut b).unwrap();
            prop_assert_eq!(root, root2);
            prop_assert_eq!(&a.0, &b.0);
            prop_assert_eq!(root.size, len as u64);
            let mut out = Vec::new();
            reassemble(&root.cid, &a.0, &mut out);
            prop_assert_eq!(out, data);
            for (cid, bytes) in &a.0 {
                if let FileNode::Branch { children, .. } = decode_file_node(cid, bytes).unwrap() {
                    prop_assert!(children.len() <= links);
                }
            }
        }
    }

    #[test]
    fn rejects_bad_params() {
        assert!(ChunkParams::new(ChunkerKind::Fixed, 0).is_err());
        assert!(ChunkParams::new(ChunkerKind::Fixed, crate::MAX_CHUNK_SIZE + 1).is_err());
        assert!(ChunkParams::new(ChunkerKind::FastCdc, 100).is_err());
        assert!(ChunkParams::new(ChunkerKind::FastCdc, 1001).is_err());
        assert!(DagParams::new(ChunkParams::default(), 1, HashAlg::Blake3).is_err());
    }

    #[test]
    fn inconsistent_node_is_rejected() {
        let node = PbNode {
            links: vec![PbLink {
                hash: HashAlg::Blake3.cid(RAW, b"x"),
                name: String::new(),
                tsize: 1,
            }],
            data: Some(UnixFsData::file(vec![1, 2]).encode()),
        };
        let bytes = node.encode();
        let cid = HashAlg::Blake3.cid(DAG_PB, &bytes);
        let err = decode_file_node(&cid, &bytes).unwrap_err();
        assert!(err.to_string().contains("1 links but 2 block sizes"), "{err}");
    }
}
