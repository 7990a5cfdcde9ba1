//! The append-only, hash-chained log of accepted inputs, and its replay.

use serde::{Deserialize, Serialize};

use crate::error::LedgerError;
use crate::ledger::Ledger;
use crate::types::{Event, Hash32, Input, LedgerConfig};

/// CBOR encoding of our own plain-data types (cannot fail into a `Vec`).
pub(crate) fn cbor<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    crowd_protocol::wire::to_cbor(value)
}

/// One accepted input. `head = derive_key("crowdstore tracker log v1",
/// prev_head ‖ cbor(entry))`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Position in the log, from 0.
    pub index: u64,
    /// The head before this entry (the genesis head for entry 0).
    #[serde(with = "crowd_protocol::wire::hash32")]
    pub prev_head: Hash32,
    /// The input as applied.
    pub input: Input,
    /// [`events_hash`] of what applying it emitted.
    #[serde(with = "crowd_protocol::wire::hash32")]
    pub events_hash: Hash32,
}

impl LogEntry {
    /// The head after this entry.
    pub fn head(&self) -> Hash32 {
        *blake3::Hasher::new_derive_key("crowdstore tracker log v1")
            .update(&self.prev_head)
            .update(&cbor(self))
            .finalize()
            .as_bytes()
    }
}

/// The head of an empty log: `derive_key("crowdstore tracker genesis v1", cbor(config))`.
pub fn genesis_head(config: &LedgerConfig) -> Hash32 {
    *blake3::Hasher::new_derive_key("crowdstore tracker genesis v1")
        .update(&cbor(config))
        .finalize()
        .as_bytes()
}

/// `derive_key("crowdstore tracker events v1", cbor(events))`.
pub fn events_hash(events: &[Event]) -> Hash32 {
    *blake3::Hasher::new_derive_key("crowdstore tracker events v1")
        .update(&cbor(events))
        .finalize()
        .as_bytes()
}

/// Rebuilds the ledger from genesis by re-applying every entry, checking that
/// each entry is the next index, chains onto the head before it and emits the
/// events it recorded; then checks every invariant. The log is untrusted:
/// every failure is a typed error naming the entry.
pub fn replay<'a>(
    config: LedgerConfig,
    entries: impl IntoIterator<Item = &'a LogEntry>,
) -> Result<Ledger, LedgerError> {
    let mut replayer = Replayer::new(config)?;
    for entry in entries {
        replayer.push(entry)?;
    }
    replayer.finish()
}

/// [`replay`] one entry at a time, for a log read in pages (`crowd ledger
/// verify` replays a tracker's log as it downloads it).
#[derive(Debug)]
pub struct Replayer {
    ledger: Ledger,
}

impl Replayer {
    /// An empty ledger at `config`'s genesis.
    pub fn new(config: LedgerConfig) -> Result<Self, LedgerError> {
        Ok(Self {
            ledger: Ledger::new(config)?,
        })
    }

    /// The ledger so far.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Re-applies the next entry, checked as [`replay`] checks it.
    pub fn push(&mut self, entry: &LogEntry) -> Result<(), LedgerError> {
        let index = entry.index;
        if index != self.ledger.log_len() {
            return Err(LedgerError::BadLog {
                index,
                reason: "index out of sequence",
            });
        }
        if entry.prev_head != self.ledger.head() {
            return Err(LedgerError::BadLog {
                index,
                reason: "prev_head is not the head before it",
            });
        }
        let (again, _) =
            self.ledger
                .apply_logged(entry.input.clone())
                .map_err(|source| LedgerError::Rejected {
                    index,
                    source: Box::new(source),
                })?;
        if again.events_hash != entry.events_hash {
            return Err(LedgerError::BadLog {
                index,
                reason: "events differ from the recorded ones",
            });
        }
        Ok(())
    }

    /// The ledger, once every invariant holds.
    pub fn finish(self) -> Result<Ledger, LedgerError> {
        self.ledger.check_invariants()?;
        Ok(self.ledger)
    }
}
