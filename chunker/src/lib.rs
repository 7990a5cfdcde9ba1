//! Content addressing for crowdstore.
//!
//! This crate owns how a file becomes a content address: cutting it into
//! chunks (fixed-size or FastCDC), building a UnixFS v1 (dag-pb) file DAG over
//! them in the balanced layout of the IPIP-499 `unixfs-v1-2025` profile
//! (CIDv1, raw leaves, at most 1024 links per node, 1 MiB chunks by default),
//! and reading and writing that DAG as a CAR v1 archive. CIDs use BLAKE3
//! (multihash 0x1e) by default; with SHA2-256 the blocks and root are
//! byte-identical to the IPFS reference importers' for the same parameters.
//!
//! It does not own erasure coding, storage, or networking, and does no async
//! I/O: inputs are slices (e.g. a memory-mapped file, hashed in parallel with
//! rayon without copying) or any `std::io::Read` (streamed with bounded memory).
//!
//! ```
//! use crowd_chunker::{build_from_slice, DagParams, Discard};
//! let root = build_from_slice(b"hello", &DagParams::default(), &mut Discard).unwrap();
//! // a single-chunk file is its raw leaf: BLAKE3 of the bytes, raw codec
//! assert_eq!(root.cid.codec(), crowd_chunker::RAW);
//! assert_eq!(root.cid.hash().digest(), blake3::hash(b"hello").as_bytes());
//! ```

mod car;
mod chunk;
mod dag;
mod error;
mod hash;
pub mod unixfs;

pub use car::{extract_file, write_car, CarIndex, CarWriter, MAX_HEADER_LEN, MAX_SECTION_LEN};
pub use chunk::{ChunkParams, ChunkStream, ChunkerKind, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE};
pub use cid::Cid;
pub use dag::{
    build_from_reader, build_from_slice, decode_file_node, BlockSink, DagBuilder, DagParams, DagRoot,
    Discard, FileNode, InteriorBlocks, DEFAULT_MAX_LINKS, MAX_MAX_LINKS,
};
pub use error::ChunkerError;
pub use hash::{verify_block, HashAlg, BLAKE3, DAG_PB, RAW, SHA2_256};
