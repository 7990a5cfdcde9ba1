//! Membership of the replica set: what a replica reports of it
//! ([`view`]) and the operator's changes ([`change`]), committed through
//! Raft by the leader.
//!
//! A change is signed with the tracker key (whoever holds it operates the
//! network) and names the membership it was made against (Raft's log id of
//! it): a change applies once, to the set it was written for; replayed
//! later, or raced by another change, it is refused. Adding a replica is two
//! changes (`crowd-tracker replica add` makes both): it joins as a learner
//! and receives the log, then, once it has caught up, becomes a voter —
//! so a new, empty replica never counts toward a commit it cannot hold.

use std::collections::BTreeSet;

use crowd_protocol::libp2p::PeerId;
use crowd_protocol::{MembershipChange, NetworkId, ReplicaChange, ReplicaSetView, ReplicaView, Signed};
use openraft::ChangeMembers;

use super::network::parse_replica;
use super::{Replica, ReplicaId, TrackerRaft};

/// The replica set as `raft` (replica `id`) sees it now.
pub fn view(raft: &TrackerRaft, id: ReplicaId) -> ReplicaSetView {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<ReplicaId> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(rid, node)| ReplicaView {
            id: *rid,
            peer: node.peer.clone(),
            addrs: node.addrs.clone(),
            voter: voters.contains(rid),
            matched: match &m.replication {
                Some(r) => r.get(rid).and_then(|l| l.as_ref().map(|l| l.index)),
                None if *rid == id => m.last_log_index,
                None => None,
            },
        })
        .collect();
    ReplicaSetView {
        id,
        leader: m.current_leader,
        last_log: m.last_log_index,
        config: config_id(&m.membership_config),
        members,
    }
}

fn config_id(stored: &openraft::StoredMembership<ReplicaId, Replica>) -> String {
    match stored.log_id() {
        Some(l) => l.to_string(),
        None => "none".into(),
    }
}

/// Applies an operator's signed change on the leader `raft` (replica
/// `id`); `tracker` is the tracker key's peer id. Returns the set after it.
pub async fn change(
    raft: &TrackerRaft,
    id: ReplicaId,
    network: &NetworkId,
    tracker: &PeerId,
    signed: &Signed<MembershipChange>,
) -> Result<ReplicaSetView, String> {
    let (_, request) = signed
        .open(network, Some(tracker))
        .map_err(|e| format!("a replica set change must be signed with the tracker key: {e}"))?;
    let now = view(raft, id);
    if now.leader != Some(id) {
        let leader = now.leader.and_then(|l| {
            let m = raft.metrics();
            let node = m.borrow().membership_config.membership().get_node(&l).cloned();
            node.map(|n| (l, n))
        });
        return Err(super::not_the_leader(id, leader.as_ref().map(|(l, n)| (*l, n))));
    }
    if request.config != now.config {
        return Err(format!(
            "the replica set changed since this change was made (it names membership {}, now {}): read it again",
            request.config, now.config
        ));
    }
    let member = |rid: u64| now.members.iter().find(|m| m.id == rid);
    let result = match request.change {
        ReplicaChange::Learn { id: new, peer, addrs } => {
            let node = Replica { peer, addrs };
            parse_replica(&node)?;
            if let Some(m) = member(new) {
                return Err(format!(
                    "replica {new} is already a member ({} at {})",
                    m.peer,
                    m.addrs.join(", ")
                ));
            }
            if now.members.iter().any(|m| m.peer == node.peer) {
                return Err(format!("peer {} is already a member under another id", node.peer));
            }
            raft.add_learner(new, node, false).await
        }
        ReplicaChange::Promote { id: rid } => {
            match member(rid) {
                None => return Err(format!("replica {rid} is not a member: add it first")),
                Some(m) if m.voter => return Err(format!("replica {rid} is already a voter")),
                Some(_) => {}
            }
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([rid])), false)
                .await
        }
        ReplicaChange::Remove { id: rid } => {
            let Some(m) = member(rid) else {
                return Err(format!("replica {rid} is not a member"));
            };
            if m.voter {
                let voters = now.members.iter().filter(|m| m.voter).count();
                if voters <= 1 {
                    return Err("the last voter cannot be removed".into());
                }
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([rid])), false)
                    .await
            } else {
                raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([rid])), false)
                    .await
            }
        }
    };
    result.map_err(|e| format!("replica {id} could not change the replica set: {e}"))?;
    Ok(view(raft, id))
}
