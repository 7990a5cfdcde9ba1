//! The chunker's one error type.

use cid::Cid;

/// Everything that can go wrong while chunking, building, reading or
/// verifying a DAG or a CAR. Every variant renders as one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkerError {
    /// A parameter is outside what the format or the chunker allows.
    #[error("invalid parameter: {0}")]
    InvalidParams(String),
    /// Reading the input or writing the output failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A CID uses a hash function this implementation does not verify.
    #[error("unsupported multihash code {code:#x} in {cid}")]
    UnsupportedHash { cid: Cid, code: u64 },
    /// A CID uses a codec that is not part of a UnixFS file DAG.
    #[error("unsupported codec {codec:#x} in {cid}")]
    UnsupportedCodec { cid: Cid, codec: u64 },
    /// A block's bytes do not hash to its CID.
    #[error("block {cid} at offset {offset} does not match its CID")]
    HashMismatch { cid: Cid, offset: u64 },
    /// A dag-pb or UnixFS node could not be decoded or is inconsistent.
    #[error("malformed node {cid}: {reason}")]
    MalformedNode { cid: Cid, reason: String },
    /// The CAR stream is malformed at a byte offset.
    #[error("malformed CAR at offset {offset}: {reason}")]
    MalformedCar { offset: u64, reason: String },
    /// The CAR ends in the middle of a section.
    #[error("truncated CAR: {what} at offset {offset} needs {needed} bytes, {available} remain")]
    TruncatedCar {
        what: &'static str,
        offset: u64,
        needed: u64,
        available: u64,
    },
    /// A block the DAG links to is not in the CAR.
    #[error("block {cid} is missing from the CAR")]
    MissingBlock { cid: Cid },
}

impl ChunkerError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
