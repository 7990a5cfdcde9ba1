//! The library's one error type.

use crate::crypt::CryptError;

/// Everything `crowd_client` can fail with. Every variant prints as one
/// line; strings that came from peers are stripped of control characters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client home's config or identity is missing or invalid.
    #[error("{0}")]
    Config(String),
    /// An argument or input file the caller gave is unusable.
    #[error("{0}")]
    Input(String),
    /// No such file on the network or in this home (or, for `rm` and
    /// `renew`, no live one: removed or expired).
    #[error("{0}")]
    NotFound(String),
    /// A file (of `crowd rm`, `crowd renew`) that another client stored:
    /// only its owner may end or extend it.
    #[error("{0}")]
    NotOwner(String),
    /// A private file asked for by CID from a home that does not own it.
    #[error("{0}")]
    NeedsCapability(String),
    /// A private file where only public ones are served (`export`: its
    /// DAG exists only in plaintext, which is never written as a CAR).
    #[error("{0}")]
    Private(String),
    /// The account cannot pay for the deals.
    #[error("funds too low: the deals need {need}, the balance is {available}")]
    InsufficientFunds { need: u128, available: u128 },
    /// Too few providers would take the pieces.
    #[error("{0}")]
    NoProviders(String),
    /// A malformed, truncated or mismatched read capability.
    #[error("{0}")]
    Capability(String),
    /// A manifest envelope that does not open with this client's key.
    #[error("the manifest's envelope: {0}")]
    Envelope(String),
    /// Ciphertext that does not decrypt (tampered, truncated, wrong key).
    #[error(transparent)]
    Crypt(#[from] CryptError),
    /// Retrieved bytes that do not match what the manifest promises.
    #[error("{0}")]
    Verification(String),
    /// Key material: backup files, identities.
    #[error("{0}")]
    Key(String),
    /// A key backup that the passphrase does not open.
    #[error("wrong passphrase (or the key backup was altered)")]
    Passphrase,
    /// The tracker or providers failed or refused (a refusal carries the
    /// tracker's reason, e.g. how much a renewal needs).
    #[error("{0}")]
    Network(String),
    /// Local I/O.
    #[error("{0}")]
    Io(String),
    /// Anything else, as one line.
    #[error("{0}")]
    Other(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The typed error inside an internal `anyhow` chain, else its one-line
/// message as [`Error::Io`] or [`Error::Other`].
pub(crate) fn from_anyhow(e: anyhow::Error) -> Error {
    if let Some(c) = crypt_error_in(&e) {
        return Error::Crypt(c.clone());
    }
    let line = strip(&format!("{e:#}"));
    match e.downcast::<Error>() {
        Ok(typed) => typed,
        Err(e) if e.chain().any(|c| c.is::<std::io::Error>()) => Error::Io(line),
        Err(_) => Error::Other(line),
    }
}

/// The [`CryptError`] anywhere in an `anyhow` chain (also inside an I/O
/// error from the crypt adapters).
pub(crate) fn crypt_error_in(e: &anyhow::Error) -> Option<&CryptError> {
    e.chain().find_map(|cause| {
        cause.downcast_ref::<CryptError>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(crate::crypt::crypt_error)
        })
    })
}

/// Control characters out (a remote error string must not drive the terminal).
pub fn strip(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn typed_errors_survive_anyhow_and_strings_are_one_clean_line() {
        let e = anyhow::Error::from(Error::Passphrase).context("key import");
        assert!(matches!(from_anyhow(e), Error::Passphrase));
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            CryptError::Tampered { segment: 3 },
        );
        let e = anyhow::Error::from(io).context("writing");
        assert!(matches!(
            from_anyhow(e),
            Error::Crypt(CryptError::Tampered { segment: 3 })
        ));
        let e = from_anyhow(anyhow::anyhow!("peer said \x1b[31mred\x1b[0m\nsecond"));
        let s = e.to_string();
        assert!(!s.contains('\x1b') && !s.contains('\n'), "{s:?}");
    }
}
