//! The ledger replicated on openraft (issue #15, first part): the pure
//! [`crate::Ledger`] is the state machine, every ledger [`Input`] a Raft
//! entry applied in log order on every replica.
//!
//! - [`store`]: the Raft log, vote and committed index in RocksDB (synced
//!   writes: an entry is acknowledged only once durable), and the state
//!   machine: the ledger in memory, rebuilt at start from the last snapshot
//!   plus the committed entries after it; a snapshot is the CBOR of the
//!   ledger with the last applied log id and membership.
//! - [`network`]: Raft's RPCs on the crowdstore libp2p swarm, one stream
//!   of protocol [`network::RAFT_PROTOCOL`] per call, CBOR frames; inbound
//!   calls from a peer outside the replica set are refused.
//! - [`replica`]: one replica started on its own swarm and database.
//!
//! An input the ledger refuses is still committed (every replica refuses it
//! the same way, changing nothing): its [`Applied`] carries the error.
//!
//! Not here yet (issue #15 stays open): the service's requests and epoch
//! loop proposing through Raft, signed committed heads, the CLI and devnet
//! replica set, and clients following the leader.

// openraft's error types are large by design; they are what its traits return
#![allow(clippy::result_large_err)]

pub mod network;
pub mod replica;
pub mod store;

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::types::Input;
use crate::Hash32;

/// A replica's Raft id.
pub type ReplicaId = u64;

/// Where a replica is reached: its libp2p peer id and addresses (text).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub peer: String,
    pub addrs: Vec<String>,
}

impl fmt::Display for Replica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.peer, self.addrs.join(", "))
    }
}

/// What applying one entry did, the same on every replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The ledger's log length after the entry.
    pub log_len: u64,
    /// The ledger's head hash after the entry.
    #[serde(with = "crowd_protocol::wire::hash32")]
    pub head: Hash32,
    /// Why the ledger refused the input (nothing changed), if it did.
    pub error: Option<String>,
}

openraft::declare_raft_types!(
    /// The tracker's Raft types: ledger inputs in, [`Applied`] out.
    pub TypeConfig:
        D = Input,
        R = Applied,
        NodeId = ReplicaId,
        Node = Replica,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime
);

/// A tracker replica's Raft handle.
pub type LedgerRaft = openraft::Raft<TypeConfig>;

/// Timing for a replica set on one machine or a LAN: a heartbeat every
/// 250 ms, an election after 1–2 s without one.
pub fn config() -> openraft::Config {
    openraft::Config {
        cluster_name: "crowd-tracker".into(),
        heartbeat_interval: 250,
        election_timeout_min: 1_000,
        election_timeout_max: 2_000,
        ..openraft::Config::default()
    }
}
