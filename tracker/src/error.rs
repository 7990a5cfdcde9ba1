//! The tracker crate's one error type.

use crowd_porep::PorepError;
use crowd_protocol::{Amount, Epoch, ProtocolError};

/// Why an input was refused (the ledger is then unchanged), or why a log does
/// not replay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The genesis configuration is unusable.
    #[error("invalid ledger config: {0}")]
    InvalidConfig(&'static str),
    /// A signature does not verify, or the signer's key is not ed25519.
    #[error("bad signature on {what}")]
    BadSignature { what: &'static str },
    /// Signed for another network (a replay from another tracker's).
    #[error("{what} is signed for network {network}, this ledger is network {expected}")]
    WrongNetwork {
        what: &'static str,
        network: String,
        expected: String,
    },
    /// A message is validly signed, but not by the party it must come from.
    #[error("{what} is signed by {signer}, expected {expected}")]
    WrongSigner {
        what: &'static str,
        signer: String,
        expected: String,
    },
    /// A signed body that does not decode, or is too large.
    #[error("malformed message: {0}")]
    Malformed(ProtocolError),
    /// The same message was already applied.
    #[error("duplicate {what}")]
    Duplicate { what: &'static str },
    /// The message is for an epoch that is already settled.
    #[error("stale {what}: epoch {epoch} is settled, the ledger is at epoch {current}")]
    Stale {
        what: &'static str,
        epoch: Epoch,
        current: Epoch,
    },
    /// The message is for an epoch that has not started.
    #[error("{what} for future epoch {epoch}, the ledger is at epoch {current}")]
    FutureEpoch {
        what: &'static str,
        epoch: Epoch,
        current: Epoch,
    },
    /// An account message skips ahead of the account's next nonce.
    #[error("nonce {got} is ahead of the account's next nonce {expected}")]
    NonceGap { expected: u64, got: u64 },
    /// `Mint` on a ledger created without the faucet.
    #[error("the faucet is disabled on this ledger")]
    FaucetDisabled,
    /// A zero amount where it would be a no-op.
    #[error("zero {what}")]
    ZeroAmount { what: &'static str },
    /// A provider whose stake is not (or no longer) the network's.
    #[error("provider {provider} has {staked} staked, the network requires {required}")]
    NotStaked {
        provider: String,
        staked: Amount,
        required: Amount,
    },
    /// A transfer to the sender itself.
    #[error("a transfer to oneself")]
    SelfTransfer,
    /// An account's free balance cannot cover a debit.
    #[error("account {account} has {have} available, needs {need}")]
    InsufficientFunds {
        account: String,
        need: Amount,
        have: Amount,
    },
    /// A sum that would not fit a `u128` (or an epoch a `u64`).
    #[error("arithmetic overflow in {what}")]
    Overflow { what: &'static str },
    /// The provider of a deal never registered.
    #[error("provider {0} is not registered")]
    NotRegistered(String),
    /// The provider's registered capacity cannot hold the piece.
    #[error("provider {provider} has {free} bytes of capacity free, the piece needs {need}")]
    CapacityExceeded { provider: String, free: u64, need: u64 },
    /// A deal proposal that is not acceptable whoever signed it.
    #[error("invalid proposal: {0}")]
    InvalidProposal(&'static str),
    /// The proposal's expiry epoch has passed.
    #[error("proposal expired at epoch {expiry}, the ledger is at epoch {current}")]
    Expired { expiry: Epoch, current: Epoch },
    /// The acceptance names another proposal.
    #[error("the acceptance is for another proposal")]
    AcceptanceMismatch,
    /// No deal has this id.
    #[error("unknown deal {0}")]
    UnknownDeal(u64),
    #[error("unknown file {0}")]
    UnknownFile(u64),
    #[error("file {file_id} is not the signer's")]
    NotOwner { file_id: u64 },
    #[error("file {file_id} is {state}")]
    FileNotLive { file_id: u64, state: &'static str },
    #[error("invalid file: {0}")]
    InvalidFile(&'static str),
    #[error("invalid repair: {0}")]
    InvalidRepair(&'static str),
    #[error("invalid retrieval fault: {0}")]
    InvalidFault(&'static str),
    /// The deal is not in the state the message needs.
    #[error("deal {deal_id} is {state}, expected {expected}")]
    WrongState {
        deal_id: u64,
        state: &'static str,
        expected: &'static str,
    },
    /// A seal commitment for another piece than the deal's.
    #[error("deal {deal_id}: the commitment names another piece")]
    PieceMismatch { deal_id: u64 },
    /// A seal commitment whose replica id is not the one the ledger derives.
    #[error("deal {deal_id}: replica id is not replica_id(provider, comm_d, deal, ticket)")]
    ReplicaIdMismatch { deal_id: u64 },
    /// The deal is not challenged in this epoch (before its start or after its end).
    #[error("deal {deal_id} is not challenged in epoch {epoch}")]
    NotChallenged { deal_id: u64, epoch: Epoch },
    /// A seal or window proof that does not decode or verify.
    #[error("deal {deal_id}: invalid {what}: {source}")]
    InvalidProof {
        deal_id: u64,
        what: &'static str,
        #[source]
        source: PorepError,
    },
    /// `EndEpoch` whose signature is not the tracker's over (epoch, head).
    #[error("end of epoch {epoch} is not signed by the tracker over the current head")]
    BadEpochSignature { epoch: Epoch },
    /// A log entry that does not follow from the ones before it.
    #[error("log entry {index}: {reason}")]
    BadLog { index: u64, reason: &'static str },
    /// A log entry whose input the ledger refuses on replay.
    #[error("log entry {index} is refused on replay: {source}")]
    Rejected {
        index: u64,
        #[source]
        source: Box<LedgerError>,
    },
    /// A replayed ledger differs from the stored one.
    #[error("replayed ledger differs from the stored one: {0}")]
    StateMismatch(String),
    /// A bookkeeping invariant does not hold (a bug, or a corrupt snapshot).
    #[error("ledger invariant violated: {0}")]
    InvariantViolated(String),
}

impl From<ProtocolError> for LedgerError {
    fn from(e: ProtocolError) -> Self {
        match e {
            ProtocolError::BadSignature { what } => Self::BadSignature { what },
            ProtocolError::WrongSigner {
                what,
                signer,
                expected,
            } => Self::WrongSigner {
                what,
                signer,
                expected,
            },
            ProtocolError::WrongNetwork {
                what,
                network,
                expected,
            } => Self::WrongNetwork {
                what,
                network,
                expected,
            },
            other => Self::Malformed(other),
        }
    }
}
