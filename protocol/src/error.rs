//! The protocol crate's one error type.

/// What can go wrong decoding, verifying or exchanging protocol messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame's declared length is above the cap for its kind.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge { len: u64, max: u64 },
    /// A frame's body is not the CBOR message expected.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// A signature does not verify, or the key is not an ed25519 key.
    #[error("bad signature on {what}")]
    BadSignature { what: &'static str },
    /// A message is validly signed, but not by the party it must come from.
    #[error("{what} is signed by {signer}, expected {expected}")]
    WrongSigner {
        what: &'static str,
        signer: String,
        expected: String,
    },
    /// A message signed for another network (a replay from elsewhere).
    #[error("{what} is signed for network {network}, this is network {expected}")]
    WrongNetwork {
        what: &'static str,
        network: String,
        expected: String,
    },
    /// A piece receipt does not complete its proposal
    /// ([`crate::DealProposal::named_by`]).
    #[error("{0}")]
    ReceiptMismatch(&'static str),
    /// The stream ended or failed.
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    /// The peer answered with an error.
    #[error("peer refused: {0}")]
    Remote(String),
    /// A request did not complete in time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The local network task is gone (shutting down).
    #[error("network task stopped")]
    Stopped,
}

impl ProtocolError {
    /// Whether a verified range transfer ([`crate::transfer::fetch`]) failed
    /// because what arrived is not the piece's bytes (a group that does not
    /// verify against the piece CID, or out of order): the sender served
    /// wrong bytes, as opposed to not answering, refusing or stalling.
    pub fn is_unverified_bytes(&self) -> bool {
        matches!(
            self,
            Self::Malformed {
                what: "verified group",
                ..
            }
        )
    }
}
