//! The tracker replicated on openraft (issue #15): every
//! replica runs the single tracker's [`State`](super::State) — ledger, store
//! and side records — and applies the same commands in Raft's log order.
//!
//! - A command ([`Replicated`]) is what changes a tracker: a mutating
//!   request with its sender, a batch of provider results, or the end of an
//!   epoch. Each replica applies it with the single tracker's code
//!   ([`State::apply_replicated`](super::State::apply_replicated)), writing
//!   the Raft log id in the same synced batch as the command's effects, so
//!   a restart resumes after the last command applied and never applies one
//!   twice. An input the ledger refuses is still committed: every replica
//!   refuses it the same way, changing nothing but the mark.
//! - Epochs end by a command, not a signature: each replica signs the
//!   epoch's (epoch, head) with the tracker key when it applies it. Ed25519
//!   signatures are deterministic, so every replica derives the same
//!   randomness; the replicas share the tracker (signing) key, and each has
//!   its own network identity. A leader can bias the randomness only by the
//!   order and choice of the commands it puts before the epoch's end.
//! - [`store`]: the Raft log, vote and committed log id in a RocksDB of
//!   their own (synced writes: an entry is acknowledged only once durable);
//!   the state machine is the replica's tracker store.
//! - [`network`]: Raft's RPCs on the crowdstore libp2p swarm, one stream
//!   of protocol [`network::RAFT_PROTOCOL`] per call, CBOR frames; inbound
//!   calls from a peer outside the replica set are refused.
//! - [`replica`]: one replica (tracker store, Raft log, swarm, owner
//!   thread) started in a directory.
//! - [`members`]: the replica set as a replica sees it, and the operator's
//!   signed changes to it (`crowd-tracker replica add | remove`).
//!
//! Around it (docs/ARCHITECTURE.md, "Tracker replicas"): `crowd-tracker
//! run` on a replica set (`service::writer`), nodes and clients following
//! the leader (`crowd_protocol::tracker_link`), `crowd devnet up --trackers
//! N`, and signed heads audited by `crowd ledger verify`. Not yet:
//! snapshots (the log is kept whole, so a replica catches up from it
//! however far behind).

// openraft's error types are large by design; they are what its traits return
#![allow(clippy::result_large_err)]

pub mod members;
pub mod network;
pub mod replica;
pub mod store;

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crowd_protocol::libp2p::PeerId;
use crowd_protocol::{Epoch, TrackerRequest, TrackerResponse};

use crate::types::{Event, Input};

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

/// A follower's refusal of replica `id`, naming the leader it knows of
/// (clients follow it: `crowd_protocol::tracker_link` reads this form).
pub fn not_the_leader(id: ReplicaId, leader: Option<(ReplicaId, &Replica)>) -> String {
    match leader {
        Some((l, node)) => format!("not the leader: tracker replica {l} leads ({node})"),
        None => format!("not the leader: replica {id} knows of no leader yet, try again"),
    }
}

/// A command committed in the replicas' log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // a wire type, as `TrackerRequest` itself
pub enum Replicated {
    /// A request that changes the tracker, from `peer` (answered by the
    /// replica that proposed it with what applying it gave).
    Request {
        #[serde(with = "crowd_protocol::wire::peer")]
        peer: PeerId,
        request: TrackerRequest,
    },
    /// Provider results (pre-commits, seal and window proofs) applied together.
    Apply(Vec<Input>),
    /// Settle the open epoch, which must be `epoch`.
    EndEpoch { epoch: Epoch },
}

impl Replicated {
    /// Whether a request changes the tracker (and so goes through the log);
    /// the others are answered by a replica from its own state.
    pub fn changes(request: &TrackerRequest) -> bool {
        matches!(
            request,
            TrackerRequest::Register { .. }
                | TrackerRequest::Publish { .. }
                | TrackerRequest::Admit(_)
                | TrackerRequest::Faucet { .. }
                | TrackerRequest::Transfer(_)
                | TrackerRequest::Withdraw(_)
                | TrackerRequest::RegisterManifest { .. }
                | TrackerRequest::RemoveFile(_)
                | TrackerRequest::RenewFile(_)
        )
    }
}

/// What applying a command gave, the same on every replica.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub enum ReplicatedResult {
    /// A blank or membership entry.
    #[default]
    Nothing,
    Response(Result<TrackerResponse, String>),
    Applied(Vec<Result<Vec<Event>, String>>),
    Settled(Result<Vec<Event>, String>),
}

openraft::declare_raft_types!(
    /// The tracker's Raft types: commands in, their results out.
    pub TypeConfig:
        D = Replicated,
        R = ReplicatedResult,
        NodeId = ReplicaId,
        Node = Replica,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime
);

/// A tracker replica's Raft handle.
pub type TrackerRaft = openraft::Raft<TypeConfig>;

/// Timing for a replica set on one machine or a LAN: a heartbeat every
/// 250 ms, an election after 1–2 s without one. No snapshots yet: the log
/// is kept whole.
pub fn config() -> openraft::Config {
    openraft::Config {
        cluster_name: "crowd-tracker".into(),
        heartbeat_interval: 250,
        election_timeout_min: 1_000,
        election_timeout_max: 2_000,
        snapshot_policy: openraft::SnapshotPolicy::Never,
        ..openraft::Config::default()
    }
}
