//! The one error type of this crate.
//!
//! Every verify and decode function returns one of these variants for a bad
//! proof or a bad encoding; none of them panics on untrusted input.

/// Which BLAKE3 tree an opening was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeKind {
    /// The piece tree (root `comm_d`).
    Data,
    /// The replica tree (root `comm_r_last`).
    Replica,
    /// The tree over the column hashes (root `comm_c`).
    Columns,
}

impl std::fmt::Display for TreeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TreeKind::Data => "data (comm_d)",
            TreeKind::Replica => "replica (comm_r_last)",
            TreeKind::Columns => "columns (comm_c)",
        })
    }
}

/// Everything that can go wrong in `crowd-porep`.
#[derive(Debug, thiserror::Error)]
pub enum PorepError {
    // ---- inputs from the local caller ----
    /// A piece of zero bytes cannot be sealed.
    #[error("cannot seal an empty piece")]
    EmptyPiece,
    /// The piece has more nodes than `u32` parent indices can address.
    #[error("piece of {len} bytes is larger than the maximum {max} bytes")]
    PieceTooLarge { len: u64, max: u64 },
    /// Sealing parameters out of range.
    #[error("invalid sealing parameters: {0}")]
    InvalidParams(&'static str),
    /// A parent cache, replica or outboard built for a different size.
    #[error("{what}: expected {expected}, got {got}")]
    SizeMismatch {
        what: &'static str,
        expected: u64,
        got: u64,
    },
    /// Reading the replica source failed.
    #[error("reading replica at offset {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: std::io::Error,
    },

    // ---- untrusted proofs ----
    /// A chunk index beyond the end of the tree.
    #[error("{tree} opening: chunk {chunk} is beyond the last chunk {last}")]
    ChunkOutOfRange { tree: TreeKind, chunk: u64, last: u64 },
    /// The opened chunk does not have the length its position implies.
    #[error("{tree} opening of chunk {chunk}: {got} bytes, expected {expected}")]
    ChunkLength {
        tree: TreeKind,
        chunk: u64,
        expected: usize,
        got: usize,
    },
    /// The sibling path does not have the tree's depth at that chunk.
    #[error("{tree} opening of chunk {chunk}: {got} siblings, expected {expected}")]
    PathLength {
        tree: TreeKind,
        chunk: u64,
        expected: usize,
        got: usize,
    },
    /// Chunk and path hash to a different root: wrong leaf, wrong path or another tree.
    #[error("{tree} opening of chunk {chunk} does not hash to the committed root")]
    RootMismatch { tree: TreeKind, chunk: u64 },
    /// The opening is valid but for a chunk other than the challenged one.
    #[error("{tree} opening is for chunk {got}, the challenge is in chunk {expected}")]
    WrongChunk { tree: TreeKind, expected: u64, got: u64 },
    /// `comm_r` is not `H(comm_c ‖ comm_r_last)` for the proof's comm_c and comm_r_last.
    #[error("comm_r does not commit to the proof's comm_c and comm_r_last")]
    CommRMismatch,
    /// The proof was made for another replica.
    #[error("proof is for replica id {got}, expected {expected}")]
    ReplicaIdMismatch { expected: String, got: String },
    /// The window proof was made for another deal.
    #[error("proof is for deal {got}, expected deal {expected}")]
    DealMismatch { expected: u64, got: u64 },
    /// The window proof was made for another epoch.
    #[error("proof is for epoch {got}, expected epoch {expected}")]
    EpochMismatch { expected: u64, got: u64 },
    /// Wrong number of challenge responses.
    #[error("proof answers {got} challenges, expected {expected}")]
    ChallengeCount { expected: usize, got: usize },
    /// A response is for a node other than the derived challenge.
    #[error("challenge {index}: proof opens node {got}, the challenge is node {expected}")]
    WrongChallenge { index: usize, expected: u64, got: u64 },
    /// A column has the wrong number of labels or parents.
    #[error("challenge {index}: {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        index: usize,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A column's labels do not hash to the column hash opened against comm_c.
    #[error("column of node {node} does not match its column hash in comm_c")]
    ColumnHashMismatch { node: u64 },
    /// A label recomputed from the opened parents differs from the column's label.
    #[error("label of node {node} in layer {layer} does not follow from its parents")]
    LabelMismatch { node: u64, layer: u32 },
    /// The replica node is not the data node XOR the last layer's label.
    #[error("replica node {node} is not data XOR last label")]
    ReplicaMismatch { node: u64 },

    // ---- encoding ----
    /// The input ended before a field did.
    #[error("truncated encoding: {field} needs {needed} bytes, {remaining} remain")]
    Truncated {
        field: &'static str,
        needed: u64,
        remaining: usize,
    },
    /// A length prefix or the whole encoding is above its cap.
    #[error("encoding too large: {field} is {len}, the cap is {max}")]
    TooLarge { field: &'static str, len: u64, max: u64 },
    /// Bytes after the end of a complete object.
    #[error("{0} trailing bytes after the encoded object")]
    TrailingBytes(usize),
    /// Not a crowd-porep encoding, or not this object.
    #[error("bad header: expected {expected:?}, got {got:02x?}")]
    BadMagic { expected: &'static str, got: Vec<u8> },
    /// A format version this build does not read.
    #[error("unsupported format version {got} (this build reads version {supported})")]
    UnsupportedVersion { got: u8, supported: u8 },
}

/// Result alias for this crate.
pub type Result<T, E = PorepError> = std::result::Result<T, E>;
