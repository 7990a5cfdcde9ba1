//! Raft's RPCs on the crowdstore libp2p swarm: each call opens one stream
//! of [`RAFT_PROTOCOL`] to the target replica, writes one CBOR frame
//! ([`RaftCall`]) and reads one back ([`RaftAnswer`]), within the call's
//! time-to-live. The swarm stays owned by its one task; this module only
//! opens and accepts streams through the `Network` handle.
//!
//! Inbound calls are served by [`serve`]: a stream from a peer that is not
//! a member of the replica set (in Raft's current membership, or the set
//! the replica was started with) is closed unanswered, and counted; a frame
//! over [`MAX_RAFT_FRAME`] or one that does not decode gets an error
//! answer, never a panic.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crowd_protocol::libp2p::{Multiaddr, PeerId, StreamProtocol};
use crowd_protocol::wire::{read_frame, write_frame};
use crowd_protocol::Network;
use futures::{AsyncWriteExt, StreamExt};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::{Replica, ReplicaId, TrackerRaft, TypeConfig};

/// The Raft stream protocol.
pub const RAFT_PROTOCOL: StreamProtocol = StreamProtocol::new("/crowd/raft/1");
/// Largest Raft frame: a batch of entries (a production seal proof is
/// ~5.3 MiB) or a snapshot chunk.
pub const MAX_RAFT_FRAME: usize = 64 << 20;
/// Raft calls served at once; beyond this a stream is closed unanswered
/// (the caller retries, as after any network error).
pub const MAX_INBOUND_CALLS: usize = 64;

/// One Raft call.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftCall {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<ReplicaId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to a [`RaftCall`]; `Refused` when the call could not be taken
/// (malformed, or the replica is stopping).
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftAnswer {
    Append(Result<AppendEntriesResponse<ReplicaId>, RaftError<ReplicaId>>),
    Vote(Result<VoteResponse<ReplicaId>, RaftError<ReplicaId>>),
    Snapshot(Result<InstallSnapshotResponse<ReplicaId>, RaftError<ReplicaId, InstallSnapshotError>>),
    Refused(String),
}

/// The peer id and addresses of a replica, parsed.
pub fn parse_replica(node: &Replica) -> Result<(PeerId, Vec<Multiaddr>), String> {
    let peer: PeerId = node
        .peer
        .parse()
        .map_err(|e| format!("replica peer id {:?}: {e}", node.peer))?;
    let addrs = node
        .addrs
        .iter()
        .map(|a| a.parse().map_err(|e| format!("replica address {a:?}: {e}")))
        .collect::<Result<_, String>>()?;
    Ok((peer, addrs))
}

/// Makes Raft's connections to the other replicas.
#[derive(Debug, Clone)]
pub struct Factory {
    net: Network,
}

impl Factory {
    pub fn new(net: Network) -> Self {
        Self { net }
    }
}

impl RaftNetworkFactory<TypeConfig> for Factory {
    type Network = Connection;

    async fn new_client(&mut self, target: ReplicaId, node: &Replica) -> Connection {
        let peer = match parse_replica(node) {
            Ok((peer, addrs)) => {
                // a failed dial shows up as the first call's network error
                let _ = self.net.dial(peer, addrs).await;
                Ok(peer)
            }
            Err(e) => Err(e),
        };
        Connection {
            net: self.net.clone(),
            target,
            peer,
        }
    }
}

/// Raft's connection to one replica.
#[derive(Debug)]
pub struct Connection {
    net: Network,
    target: ReplicaId,
    peer: Result<PeerId, String>,
}

fn unreachable<E: std::error::Error>(why: impl std::fmt::Display) -> RPCError<ReplicaId, Replica, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(why.to_string())))
}

fn network<E: std::error::Error>(why: impl std::fmt::Display) -> RPCError<ReplicaId, Replica, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(why.to_string())))
}

impl Connection {
    async fn call<E: std::error::Error>(
        &mut self,
        call: RaftCall,
        ttl: Duration,
    ) -> Result<RaftAnswer, RPCError<ReplicaId, Replica, E>> {
        let peer = self.peer.clone().map_err(unreachable)?;
        let mut streams = self.net.streams();
        let exchange = async move {
            let mut stream = streams
                .open_stream(peer, RAFT_PROTOCOL)
                .await
                .map_err(|e| e.to_string())?;
            write_frame(&mut stream, &call).await.map_err(|e| e.to_string())?;
            let answer: RaftAnswer = read_frame(&mut stream, "raft answer", MAX_RAFT_FRAME)
                .await
                .map_err(|e| e.to_string())?;
            let _ = stream.close().await;
            Ok::<_, String>(answer)
        };
        match tokio::time::timeout(ttl, exchange).await {
            Err(_) => Err(network(format!(
                "replica {} did not answer within {ttl:?}",
                self.target
            ))),
            Ok(Err(e)) => Err(network(format!("replica {}: {e}", self.target))),
            Ok(Ok(RaftAnswer::Refused(why))) => {
                Err(network(format!("replica {} refused: {why}", self.target)))
            }
            Ok(Ok(answer)) => Ok(answer),
        }
    }
}

fn remote<T, E: std::error::Error>(
    target: ReplicaId,
    answer: Result<T, RaftError<ReplicaId, E>>,
) -> Result<T, RPCError<ReplicaId, Replica, RaftError<ReplicaId, E>>> {
    answer.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
}

fn mismatched<E: std::error::Error>(target: ReplicaId) -> RPCError<ReplicaId, Replica, E> {
    network(format!("replica {target} answered another call"))
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<ReplicaId>, RPCError<ReplicaId, Replica, RaftError<ReplicaId>>> {
        match self.call(RaftCall::Append(rpc), option.hard_ttl()).await? {
            RaftAnswer::Append(answer) => remote(self.target, answer),
            _ => Err(mismatched(self.target)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<ReplicaId>,
        RPCError<ReplicaId, Replica, RaftError<ReplicaId, InstallSnapshotError>>,
    > {
        match self.call(RaftCall::Snapshot(rpc), option.hard_ttl()).await? {
            RaftAnswer::Snapshot(answer) => remote(self.target, answer),
            _ => Err(mismatched(self.target)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<ReplicaId>,
        option: RPCOption,
    ) -> Result<VoteResponse<ReplicaId>, RPCError<ReplicaId, Replica, RaftError<ReplicaId>>> {
        match self.call(RaftCall::Vote(rpc), option.hard_ttl()).await? {
            RaftAnswer::Vote(answer) => remote(self.target, answer),
            _ => Err(mismatched(self.target)),
        }
    }
}

/// Counters of inbound Raft calls.
#[derive(Debug, Default)]
pub struct InboundStats {
    pub served: AtomicU64,
    /// Streams from peers outside the replica set, closed unanswered.
    pub outsiders: AtomicU64,
    /// Streams closed unanswered because [`MAX_INBOUND_CALLS`] were running.
    pub busy: AtomicU64,
}

/// True if `peer` is a member of `raft`'s current membership.
fn is_member(raft: &TrackerRaft, peer: &PeerId) -> bool {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    let text = peer.to_string();
    let found = metrics
        .membership_config
        .membership()
        .nodes()
        .any(|(_, node)| node.peer == text);
    found
}

/// Serves inbound Raft calls for `raft` until the network stops. `initial`
/// are the peers of the replica set the replica was started with (members
/// before any membership entry is applied).
pub async fn serve(
    net: Network,
    raft: TrackerRaft,
    initial: HashSet<PeerId>,
    stats: Arc<InboundStats>,
) -> Result<(), crowd_protocol::ProtocolError> {
    let mut incoming = net
        .streams()
        .accept(RAFT_PROTOCOL)
        .map_err(|e| crowd_protocol::ProtocolError::Io(std::io::Error::other(e.to_string())))?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_INBOUND_CALLS));
    while let Some((peer, mut stream)) = incoming.next().await {
        if !initial.contains(&peer) && !is_member(&raft, &peer) {
            stats.outsiders.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, "raft call from a peer outside the replica set: refused");
            let _ = stream.close().await;
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.busy.fetch_add(1, Ordering::Relaxed);
            let _ = stream.close().await;
            continue;
        };
        let (raft, stats) = (raft.clone(), stats.clone());
        tokio::spawn(async move {
            let answer = match read_frame::<_, RaftCall>(&mut stream, "raft call", MAX_RAFT_FRAME).await {
                Err(e) => RaftAnswer::Refused(e.to_string()),
                Ok(RaftCall::Append(rpc)) => RaftAnswer::Append(raft.append_entries(rpc).await),
                Ok(RaftCall::Vote(rpc)) => RaftAnswer::Vote(raft.vote(rpc).await),
                Ok(RaftCall::Snapshot(rpc)) => RaftAnswer::Snapshot(raft.install_snapshot(rpc).await),
            };
            stats.served.fetch_add(1, Ordering::Relaxed);
            let _ = write_frame(&mut stream, &answer).await;
            let _ = stream.close().await;
            drop(slot);
        });
    }
    Ok(())
}
