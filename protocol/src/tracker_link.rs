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

/// The tracker's peers and the one asked now.
#[derive(Debug)]
pub struct TrackerLink {
    peers: Vec<(PeerId, Vec<Multiaddr>)>,
    current: AtomicUsize,
}

/// The leader's peer id a follower's refusal names ("… leads (PEER at …)").
pub fn leader_named(message: &str) -> Option<PeerId> {
    let rest = &message[message.find(" leads (")? + " leads (".len()..];
    rest.split([' ', ')']).next()?.parse().ok()
}

impl TrackerLink {
    /// A link to `peers` (at least one; the first is asked first).
    pub fn new(peers: Vec<(PeerId, Vec<Multiaddr>)>) -> Self {
        Self {
            peers,
            current: AtomicUsize::new(0),
        }
    }

    pub fn peers(&self) -> &[(PeerId, Vec<Multiaddr>)] {
        &self.peers
    }

    /// Whether `peer` is one of the tracker's.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.peers.iter().any(|(p, _)| p == peer)
    }

    /// Dials every peer; fine if at least one answers.
    pub async fn dial(&self, net: &Network) -> Result<(), ProtocolError> {
        let mut last = Ok(());
        let mut any = false;
        for (peer, addrs) in &self.peers {
            match net.dial(*peer, addrs.clone()).await {
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
        let n = self.peers.len();
        if n == 0 {
            return Err(ProtocolError::Io(std::io::Error::other("no tracker configured")));
        }
        let deadline = Instant::now() + FOLLOW_FOR;
        loop {
            let i = self.current.load(Ordering::Relaxed) % n;
            let (peer, addrs) = &self.peers[i];
            let answer = net.request(*peer, Request::Tracker(request.clone())).await;
            let next = match &answer {
                Ok(Response::Error { message }) if n > 1 && message.starts_with(NOT_LEADER) => {
                    match leader_named(message).and_then(|l| self.peers.iter().position(|(p, _)| *p == l)) {
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
}
