//! Where the service's changes go: straight to the owner thread of a single
//! tracker, or, on a replica, through the replica set's Raft log (and then
//! to every replica's owner). Reads of balances, deals and files on a
//! replica are linearizable (answered by the leader after Raft's read-index);
//! other reads are answered by the local owner.

use crowd_protocol::libp2p::PeerId;
use crowd_protocol::{Epoch, TrackerRequest, TrackerResponse};
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};

use super::raft::{ReplicaId, Replicated, ReplicatedResult, TrackerRaft};
use super::repair::SlotKey;
use super::state::{Owner, RepairUpdate, Work};
use super::ServiceError;
use crate::{Event, Input};

/// The ledger as the service writes to it.
#[derive(Clone)]
pub enum Writer {
    Single(Owner),
    Replica {
        owner: Owner,
        raft: TrackerRaft,
        id: ReplicaId,
    },
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(_) => f.write_str("Writer::Single"),
            Self::Replica { id, .. } => write!(f, "Writer::Replica({id})"),
        }
    }
}

/// A follower's refusal, naming the leader when it knows it (clients
/// follow it: `crowd_protocol::tracker_link`).
fn forward(id: ReplicaId, f: ForwardToLeader<ReplicaId, super::raft::Replica>) -> String {
    super::raft::not_the_leader(id, f.leader_id.zip(f.leader_node.as_ref()))
}

/// Why a replica did not commit: not the leader, or Raft stopped.
fn not_committed(
    id: ReplicaId,
    e: RaftError<ReplicaId, ClientWriteError<ReplicaId, super::raft::Replica>>,
) -> String {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => forward(id, f),
        e => format!("replica {id} could not commit: {e}"),
    }
}

/// Reads of balances, deals and files: answered by the leader once its
/// state has applied everything committed when the read arrived (Raft's
/// read-index), so a read never sees less than a write it follows.
fn linearizable(request: &TrackerRequest) -> bool {
    matches!(
        request,
        TrackerRequest::Account(_) | TrackerRequest::Deals(_) | TrackerRequest::Files(_)
    )
}

impl Writer {
    /// The local owner (reads, work, repairs).
    pub fn owner(&self) -> &Owner {
        match self {
            Self::Single(owner) | Self::Replica { owner, .. } => owner,
        }
    }

    /// Whether this tracker may act for the network now (sign tickets and
    /// challenges, end epochs): a single tracker always, a replica while it
    /// leads.
    pub fn leads(&self) -> bool {
        match self {
            Self::Single(_) => true,
            Self::Replica { raft, id, .. } => raft.metrics().borrow().current_leader == Some(*id),
        }
    }

    async fn commit(&self, cmd: Replicated) -> Result<ReplicatedResult, String> {
        match self {
            Self::Single(_) => Err("a single tracker has no replica log".into()),
            Self::Replica { raft, id, .. } => match raft.client_write(cmd).await {
                Ok(w) => Ok(w.data),
                Err(e) => Err(not_committed(*id, e)),
            },
        }
    }

    /// A tracker request from `peer`: a change goes through the log; a
    /// read of balances, deals or files is linearizable (on the leader).
    pub async fn request(&self, peer: PeerId, request: TrackerRequest) -> Result<TrackerResponse, String> {
        match self {
            Self::Replica { .. } if Replicated::changes(&request) => {
                match self.commit(Replicated::Request { peer, request }).await? {
                    ReplicatedResult::Response(r) => r,
                    other => Err(format!("unexpected result {other:?}")),
                }
            }
            Self::Replica { raft, id, owner } if linearizable(&request) => {
                match raft.ensure_linearizable().await {
                    Ok(_) => owner.request(peer, request).await,
                    Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => Err(forward(*id, f)),
                    Err(e) => Err(format!("replica {id} could not confirm it leads: {e}")),
                }
            }
            _ => self.owner().request(peer, request).await,
        }
    }

    /// Provider results applied together (one result each).
    pub async fn apply(&self, inputs: Vec<Input>) -> Result<Vec<Result<Vec<Event>, String>>, ServiceError> {
        match self {
            Self::Single(owner) => owner.apply(inputs).await,
            Self::Replica { .. } => {
                let n = inputs.len();
                Ok(match self.commit(Replicated::Apply(inputs)).await {
                    Ok(ReplicatedResult::Applied(results)) => results,
                    Ok(other) => vec![Err(format!("unexpected result {other:?}")); n],
                    Err(e) => vec![Err(e); n],
                })
            }
        }
    }

    /// Settles the open epoch `epoch`.
    pub async fn end_epoch(&self, epoch: Epoch) -> Result<Result<Vec<Event>, String>, ServiceError> {
        match self {
            Self::Single(owner) => owner.end_epoch(epoch).await,
            Self::Replica { .. } => Ok(match self.commit(Replicated::EndEpoch { epoch }).await {
                Ok(ReplicatedResult::Settled(r)) => r,
                Ok(other) => Err(format!("unexpected result {other:?}")),
                Err(e) => Err(e),
            }),
        }
    }

    /// The replica set (a single tracker has none).
    pub fn replicas(&self) -> Result<TrackerResponse, String> {
        match self {
            Self::Single(_) => Err("a single tracker has no replica set".into()),
            Self::Replica { raft, id, .. } => {
                Ok(TrackerResponse::Replicas(super::raft::members::view(raft, *id)))
            }
        }
    }

    /// An operator's signed change of the replica set (on the leader).
    pub async fn change_replicas(
        &self,
        network: &crowd_protocol::NetworkId,
        tracker: &PeerId,
        signed: &crowd_protocol::Signed<crowd_protocol::MembershipChange>,
    ) -> Result<TrackerResponse, String> {
        match self {
            Self::Single(_) => Err("a single tracker has no replica set".into()),
            Self::Replica { raft, id, .. } => {
                super::raft::members::change(raft, *id, network, tracker, signed)
                    .await
                    .map(TrackerResponse::ReplicasChanged)
            }
        }
    }

    pub async fn work(&self) -> Result<Work, ServiceError> {
        self.owner().work().await
    }

    pub async fn repair_update(&self, slot: SlotKey, job: [u8; 32], update: RepairUpdate) {
        self.owner().repair_update(slot, job, update).await
    }
}
