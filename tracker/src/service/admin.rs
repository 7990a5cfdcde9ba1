//! `crowd-tracker replica list | add | remove`: the operator's view and
//! changes of a running replica set (issue #15), from a replica's home (its
//! config names the set; its `identity.key`, the tracker key, signs the
//! change). The command is a short-lived libp2p peer of its own (it only
//! dials out), like `crowd`: it asks whichever replica answers and follows
//! the leader.
//!
//! Adding is two committed changes: the new replica joins as a learner and
//! receives the log; once the leader has replicated everything it had when
//! the replica joined, the replica becomes a voter.

use std::path::Path;
use std::time::{Duration, Instant};

use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::Multiaddr;
use crowd_protocol::tracker_link::TrackerLink;
use crowd_protocol::{
    MembershipChange, Network, NetworkConfig, NetworkId, ReplicaChange, ReplicaSetView, Response, Signed,
    TrackerRequest, TrackerResponse,
};

use super::config::{parse_replicas, TrackerConfig};
use super::raft::network::parse_replica;
use super::raft::Replica;
use super::{read_key, Home, ServiceError};

/// How long `add` waits for a new replica to catch up before giving up
/// (it stays a learner; `add` again promotes it).
pub const CATCH_UP_FOR: Duration = Duration::from_secs(600);

/// A connection to a replica set, with the tracker key to sign changes.
#[derive(Debug)]
pub struct Admin {
    net: Network,
    link: TrackerLink,
    key: Keypair,
    network: NetworkId,
}

fn config_err(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Config(e.to_string())
}

impl Admin {
    /// Reaches the replica set `home`'s config lists.
    pub async fn connect(home: &Path) -> Result<Self, ServiceError> {
        let home = Home::new(home);
        let config = TrackerConfig::load(&home.config())?;
        let set = parse_replicas(&config.replicas)?;
        if set.is_empty() {
            return Err(config_err(format!(
                "{}: no replica set is configured (replicas = [...])",
                home.config().display()
            )));
        }
        let key = read_key(&home.key())?;
        let peers = set
            .values()
            .map(|r| parse_replica(r).map_err(config_err))
            .collect::<Result<Vec<_>, _>>()?;
        let link = TrackerLink::new(peers);
        let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().map_err(config_err)?;
        let (net, _inbound) = Network::start(
            Keypair::generate_ed25519(),
            NetworkConfig {
                listen: vec![listen],
                request_timeout: Duration::from_secs(15),
                ..NetworkConfig::default()
            },
        )
        .await?;
        link.dial(&net).await?;
        let mut admin = Self {
            net,
            link,
            key,
            network: NetworkId([0; 32]),
        };
        admin.network = match admin.ask(TrackerRequest::Info).await? {
            TrackerResponse::Info(i) => i.network,
            other => return Err(config_err(format!("unexpected answer to Info: {other:?}"))),
        };
        Ok(admin)
    }

    async fn ask(&self, request: TrackerRequest) -> Result<TrackerResponse, ServiceError> {
        match self.link.request(&self.net, request).await? {
            Response::Tracker(r) => Ok(r),
            Response::Error { message } => {
                Err(ServiceError::Config(format!("the tracker answered: {message}")))
            }
            other => Err(config_err(format!("unexpected answer: {other:?}"))),
        }
    }

    /// The replica set as its leader sees it (with how far each replica's
    /// log is known to match).
    pub async fn view(&self) -> Result<ReplicaSetView, ServiceError> {
        let deadline = Instant::now() + crowd_protocol::tracker_link::FOLLOW_FOR;
        loop {
            let view = match self.ask(TrackerRequest::Replicas).await? {
                TrackerResponse::Replicas(v) => v,
                other => return Err(config_err(format!("unexpected answer to Replicas: {other:?}"))),
            };
            if view.leader == Some(view.id) {
                return Ok(view);
            }
            let leader = view.leader.and_then(|l| view.members.iter().find(|m| m.id == l));
            if let Some(l) = leader {
                let (peer, addrs) = parse_replica(&Replica {
                    peer: l.peer.clone(),
                    addrs: l.addrs.clone(),
                })
                .map_err(config_err)?;
                let _ = self.net.dial(peer, addrs).await;
                let answer = self
                    .net
                    .request(peer, crowd_protocol::Request::Tracker(TrackerRequest::Replicas))
                    .await;
                if let Ok(Response::Tracker(TrackerResponse::Replicas(v))) = answer {
                    if v.leader == Some(v.id) {
                        return Ok(v);
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(config_err(
                    "no replica leads the set: too few replicas are running",
                ));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Signs `change` against the membership in force and has the leader
    /// commit it.
    pub async fn change(&self, change: ReplicaChange) -> Result<ReplicaSetView, ServiceError> {
        let now = self.view().await?;
        let request = MembershipChange {
            config: now.config,
            change,
        };
        let signed = Signed::sign(&self.key, &self.network, &request)?;
        match self.ask(TrackerRequest::ChangeReplicas(signed)).await? {
            TrackerResponse::ReplicasChanged(v) => Ok(v),
            other => Err(config_err(format!(
                "unexpected answer to ChangeReplicas: {other:?}"
            ))),
        }
    }

    /// Adds replica `id` (a learner first; a voter once it has caught up).
    /// `progress` hears (its matched index, the index it must reach).
    pub async fn add(
        &self,
        id: u64,
        replica: Replica,
        mut progress: impl FnMut(Option<u64>, u64),
    ) -> Result<ReplicaSetView, ServiceError> {
        parse_replica(&replica).map_err(config_err)?;
        let now = self.view().await?;
        match now.members.iter().find(|m| m.id == id) {
            Some(m) if m.voter => {
                return Err(config_err(format!("replica {id} is already a voter of the set")))
            }
            Some(m) if m.peer != replica.peer => {
                return Err(config_err(format!(
                    "replica {id} is a learner with another peer id ({})",
                    m.peer
                )))
            }
            Some(_) => {} // a learner from an earlier `add`: promote it
            None => {
                self.change(ReplicaChange::Learn {
                    id,
                    peer: replica.peer.clone(),
                    addrs: replica.addrs.clone(),
                })
                .await?;
            }
        }
        let target = self.view().await?.last_log.unwrap_or(0);
        let deadline = Instant::now() + CATCH_UP_FOR;
        loop {
            let v = self.view().await?;
            let matched = v.members.iter().find(|m| m.id == id).and_then(|m| m.matched);
            progress(matched, target);
            if matched.is_some_and(|m| m >= target) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(config_err(format!(
                    "replica {id} has not caught up within {CATCH_UP_FOR:?} (it stays a learner; is it running at {}?)",
                    replica.addrs.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.change(ReplicaChange::Promote { id }).await
    }

    /// Removes replica `id` from the set.
    pub async fn remove(&self, id: u64) -> Result<ReplicaSetView, ServiceError> {
        self.change(ReplicaChange::Remove { id }).await
    }
}

/// The set as lines for an operator: one per replica.
pub fn describe(view: &ReplicaSetView) -> String {
    let mut out = format!("membership {} (answered by replica {})\n", view.config, view.id);
    for m in &view.members {
        let role = if view.leader == Some(m.id) {
            "leader"
        } else if m.voter {
            "voter"
        } else {
            "learner"
        };
        let matched = m.matched.map(|i| format!(", log to {i}")).unwrap_or_default();
        out.push_str(&format!(
            "replica {} {role}: {} at {}{matched}\n",
            m.id,
            m.peer,
            m.addrs.join(", ")
        ));
    }
    out
}
