//! The service's error type: one line each, never a panic.

use crate::LedgerError;

/// What can stop the service or fail a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The store refused a read or a write.
    #[error("store: {0}")]
    Store(String),
    /// The store holds something that does not decode or does not follow.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The ledger refused an input.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A bad setting in config.toml or on the command line.
    #[error("config: {0}")]
    Config(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] crowd_protocol::ProtocolError),
    /// The ledger owner stopped (shutting down, or a fatal store error).
    #[error("the ledger owner stopped")]
    Stopped,
}
