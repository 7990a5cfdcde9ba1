//! Reaching the tracker: one peer, or a replica set (issue #15) whose leader
//! is followed. A follower refuses a write with "not the leader: tracker
//! replica N leads (PEER at ADDR)"; the link then asks that peer. A peer
//! that cannot be reached is skipped for the next one. Reads go to whichever
//! replica the link is on.
//!
//! A write whose answer was lost may be sent again to the next replica: the
//! ledger refuses a signed request whose nonce was used, so only unsigned
//! devnet faucet requests can apply twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

use crate::{Network, ProtocolError, Request, Response, TrackerRequest};

/// How a follower's refusal starts.
pub const NOT_LEADER: &str = "not the leader";
/// How long a request follows refusals and unreachable replicas (an
/// election takes a few seconds) before the last answer is returned.
pub const FOLLOW_FOR: Duration = Duration::from_secs(20);

/// Leaders a link learns from refusals, beyond its configured peers.
pub const MAX_LEARNED: usize = 8;

/// The tracker's peers and the one asked now.
#[derive(Debug)]
pub struct TrackerLink {
    /// The configured peers, then leaders learned from refusals (a replica
    /// added to the set after this link was configured). Only the first
    /// `configured` are trusted as the tracker ([`TrackerLink::contains`]);
    /// a learned one is only asked.
    peers: std::sync::RwLock<Vec<(PeerId, Vec<Multiaddr>)>>,
    configured: usize,
    current: AtomicUsize,
}

/// The leader's peer id a follower's refusal names ("… leads (PEER at …)").
pub fn leader_named(message: &str) -> Option<PeerId> {
    let rest = &message[message.find(" leads (")? + " leads (".len()..];
    rest.split([' ', ')']).next()?.parse().ok()
}

/// The leader's peer id and first address a follower's refusal names
/// ("… leads (PEER at ADDR, …)").
pub fn leader_address(message: &str) -> Option<(PeerId, Multiaddr)> {
    let peer = leader_named(message)?;
    let rest = &message[message.find(" at ")? + " at ".len()..];
    let addr = rest.split([',', ')', ' ']).next()?.parse().ok()?;
    Some((peer, addr))
}

impl TrackerLink {
    /// A link to `peers` (at least one; the first is asked first).
    pub fn new(peers: Vec<(PeerId, Vec<Multiaddr>)>) -> Self {
        Self {
            configured: peers.len(),
            peers: std::sync::RwLock::new(peers),
            current: AtomicUsize::new(0),
        }
    }

    /// The tracker's peers known now: the configured ones, then learned
    /// leaders.
    pub fn peers(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.peers.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// Whether `peer` is one of the tracker's configured peers: only those
    /// may send what only the tracker may (a leader learned from a refusal
    /// is asked, not trusted; list it in the config to trust it).
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.peers
            .read()
            .is_ok_and(|p| p[..self.configured.min(p.len())].iter().any(|(q, _)| q == peer))
    }

    /// The position of the leader a refusal names, learning it (to ask, at
    /// most [`MAX_LEARNED`] of them) if it is new: a replica added since this
    /// link was configured.
    fn follow(&self, message: &str) -> Option<usize> {
        let leader = leader_named(message)?;
        let (peer, addr) = match leader_address(message) {
            Some(pa) => pa,
            None => return self.peers().iter().position(|(p, _)| *p == leader),
        };
        let mut peers = self.peers.write().ok()?;
        if let Some(j) = peers.iter().position(|(p, _)| *p == leader) {
            return Some(j);
        }
        if peers.len() >= self.configured + MAX_LEARNED {
            return None;
        }
        peers.push((peer, vec![addr]));
        Some(peers.len() - 1)
    }

    /// Dials every peer; fine if at least one answers.
    pub async fn dial(&self, net: &Network) -> Result<(), ProtocolError> {
        let mut last = Ok(());
        let mut any = false;
        for (peer, addrs) in self.peers() {
            match net.dial(peer, addrs).await {
                Ok(()) => any = true,
                Err(e) => last = Err(e),
            }
        }
        if any {
            Ok(())
        } else {
            last
        }
    }

    /// Sends `request` to the tracker, following a replica set's leader.
    pub async fn request(&self, net: &Network, request: TrackerRequest) -> Result<Response, ProtocolError> {
        let deadline = Instant::now() + FOLLOW_FOR;
        loop {
            let peers = self.peers();
            let n = peers.len();
            if n == 0 {
                return Err(ProtocolError::Io(std::io::Error::other("no tracker configured")));
            }
            let i = self.current.load(Ordering::Relaxed) % n;
            let (peer, addrs) = &peers[i];
            let answer = net.request(*peer, Request::Tracker(request.clone())).await;
            let next = match &answer {
                Ok(Response::Error { message }) if message.starts_with(NOT_LEADER) => {
                    match self.follow(message) {
                        Some(j) if j >= n => {
                            // a leader this link did not know: reach it first
                            if let Some((p, a)) = self.peers().get(j) {
                                let _ = net.dial(*p, a.clone()).await;
                            }
                            Some((j, false))
                        }
                        Some(j) if j != i => Some((j, false)),
                        // no leader yet (an election): wait a little, ask another
                        _ => Some(((i + 1) % n, true)),
                    }
                }
                Err(_) if n > 1 => Some(((i + 1) % n, true)),
                _ => None,
            };
            let Some((j, pause)) = next else { return answer };
            if Instant::now() >= deadline {
                return answer;
            }
            self.current.store(j, Ordering::Relaxed);
            if answer.is_err() {
                // a replica restarted elsewhere, or our connection dropped
                let _ = net.dial(*peer, addrs.clone()).await;
            }
            if pause {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_is_read_from_a_refusal() {
        let p = PeerId::random();
        let m = format!("not the leader: tracker replica 2 leads ({p} at /ip4/127.0.0.1/tcp/4001)");
        assert_eq!(leader_named(&m), Some(p));
        assert_eq!(
            leader_named("not the leader: replica 1 knows of no leader yet, try again"),
            None
        );
        assert_eq!(
            leader_named("not the leader: tracker replica 2 leads (garbage at x)"),
            None
        );
        assert_eq!(leader_named(" leads ("), None);
    }

    #[test]
    fn a_leader_outside_the_configured_set_is_learned_once() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let link = TrackerLink::new(vec![(a, vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()])]);
        let m = format!(
            "not the leader: tracker replica 4 leads ({b} at /ip4/127.0.0.1/tcp/4004, /ip4/10.0.0.1/tcp/4)"
        );
        assert_eq!(
            leader_address(&m),
            Some((b, "/ip4/127.0.0.1/tcp/4004".parse().unwrap()))
        );
        assert!(!link.contains(&b));
        assert_eq!(link.follow(&m), Some(1));
        assert_eq!(link.follow(&m), Some(1), "learned once");
        assert_eq!(link.peers().len(), 2);
        // asked, not trusted as the tracker
        assert!(!link.contains(&b));
        assert!(link.contains(&a));
        // at most MAX_LEARNED learned
        for _ in 0..MAX_LEARNED + 3 {
            let p = PeerId::random();
            link.follow(&format!(
                "not the leader: tracker replica 9 leads ({p} at /ip4/127.0.0.1/tcp/9)"
            ));
        }
        assert_eq!(link.peers().len(), 1 + MAX_LEARNED);
        // a refusal naming a leader without an address teaches nothing
        let c = PeerId::random();
        assert_eq!(
            link.follow(&format!("not the leader: tracker replica 5 leads ({c})")),
            None
        );
        assert!(!link.contains(&c));
    }
}
