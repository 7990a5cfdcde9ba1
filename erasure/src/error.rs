//! The crate's one error type.

use std::io;

/// Everything that can go wrong while encoding, decoding or repairing.
///
/// Parameter and layout variants come from untrusted input (a manifest, a
/// command line) and say exactly which rule was broken; none of them is a
/// panic in disguise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErasureError {
    /// `k` was zero: at least one data shard is needed.
    #[error("invalid erasure parameters: k (data shards) must be at least 1")]
    NoDataShards,

    /// `k + m` is above what GF(2^8) Reed-Solomon supports.
    #[error("invalid erasure parameters: k + m = {data} + {parity} exceeds 256 pieces")]
    TooManyShards {
        /// k
        data: usize,
        /// m
        parity: usize,
    },

    /// The segment size is zero, not a multiple of `k`, or above the cap.
    #[error(
        "invalid erasure parameters: segment size {segment_size} must be a positive multiple \
         of k = {data_shards} and at most {max} bytes"
    )]
    BadSegmentSize {
        /// The rejected segment size.
        segment_size: u64,
        /// k
        data_shards: usize,
        /// [`crate::MAX_SEGMENT_SIZE`]
        max: u64,
    },

    /// A layout lists, or a call passes, the wrong number of pieces for
    /// `k + m`.
    #[error("{found} pieces listed, but k + m = {expected}")]
    PieceCount {
        /// k + m
        expected: usize,
        /// What the layout listed.
        found: usize,
    },

    /// A layout records a piece length that does not follow from its
    /// parameters and file length.
    #[error("invalid layout: piece {piece} has length {found}, the layout implies {expected}")]
    PieceLength {
        /// Piece index.
        piece: usize,
        /// Length implied by k, segment size and file length.
        expected: u64,
        /// Length recorded.
        found: u64,
    },

    /// Fewer than `k` pieces were present, readable and matching their hash.
    #[error("not enough usable pieces: found {have}, need {need}")]
    NotEnoughPieces {
        /// Usable pieces found.
        have: usize,
        /// k
        need: usize,
    },

    /// A piece's bytes do not match the hash the layout records for it
    /// (returned by [`crate::verify_piece`] and by repair's self-check).
    #[error("piece {piece} does not match its BLAKE3 hash")]
    CorruptPiece {
        /// Piece index.
        piece: usize,
    },

    /// A piece index outside `0..k+m`.
    #[error("piece index {index} out of range: the layout has {total} pieces")]
    PieceIndex {
        /// The rejected index.
        index: usize,
        /// k + m
        total: usize,
    },

    /// A byte range outside the file, or reversed.
    #[error("byte range {start}..{end} is not within the file of {file_len} bytes")]
    Range {
        /// Range start.
        start: u64,
        /// Range end (exclusive).
        end: u64,
        /// File length.
        file_len: u64,
    },

    /// The number of writers does not match what the call produces.
    #[error("expected {expected} writers, got {found}")]
    WriterCount {
        /// Writers needed.
        expected: usize,
        /// Writers given.
        found: usize,
    },

    /// Reading the input or writing an output failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),

    /// The Reed-Solomon codec refused its input. Our shard geometry is
    /// checked before every call, so this indicates a bug in this crate.
    #[error("reed-solomon codec error: {0:?}")]
    Codec(reed_solomon_erasure::Error),
}

impl From<reed_solomon_erasure::Error> for ErasureError {
    fn from(e: reed_solomon_erasure::Error) -> Self {
        ErasureError::Codec(e)
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = ErasureError> = std::result::Result<T, E>;
