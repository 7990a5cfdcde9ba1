//! Bounds in total and per peer, held by guards: transfer streams waiting
//! for their header (so neither one peer nor many idle streams can keep
//! honest transfers out; a transfer slot is taken only once the header is
//! in), and control requests in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crowd_protocol::libp2p::PeerId;

/// The counts behind [`Place`] guards.
#[derive(Debug)]
pub struct PeerLimits {
    total: usize,
    per_peer: usize,
    counts: Mutex<Counts>,
}

/// Streams waiting now: in all, and by peer (peers with none are absent).
#[derive(Debug, Default)]
struct Counts {
    all: usize,
    by_peer: HashMap<PeerId, usize>,
}

/// One stream's place among the pending; freed when dropped.
#[derive(Debug)]
pub struct Place {
    set: Arc<PeerLimits>,
    peer: PeerId,
}

impl PeerLimits {
    pub fn new(total: usize, per_peer: usize) -> Self {
        Self {
            total,
            per_peer,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// A place for one more stream from `peer`, if both bounds allow it.
    pub fn enter(set: &Arc<Self>, peer: PeerId) -> Option<Place> {
        let mut c = set.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mine = c.by_peer.get(&peer).copied().unwrap_or(0);
        if c.all >= set.total || mine >= set.per_peer {
            return None;
        }
        c.all += 1;
        c.by_peer.insert(peer, mine + 1);
        Some(Place {
            set: set.clone(),
            peer,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut c = self.set.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = c.by_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                c.by_peer.remove(&self.peer);
            }
            c.all -= 1; // this guard's place was counted in both
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any sequence of enters and drops keeps both bounds and frees
        /// every place it took.
        #[test]
        fn bounds_hold_and_places_come_back_proptest(
            ops in proptest::collection::vec((0..4usize, any::<bool>()), 0..200),
            total in 1..10usize,
            per_peer in 1..5usize,
        ) {
            let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
            let set = Arc::new(PeerLimits::new(total, per_peer));
            let mut held: Vec<Place> = Vec::new();
            for (p, enter) in ops {
                if enter {
                    let mine = held.iter().filter(|w| w.peer == peers[p]).count();
                    let got = PeerLimits::enter(&set, peers[p]);
                    prop_assert_eq!(got.is_some(), held.len() < total && mine < per_peer);
                    held.extend(got);
                } else if !held.is_empty() {
                    held.remove(p % held.len());
                }
            }
            drop(held);
            let c = set.counts.lock().unwrap();
            prop_assert!(c.by_peer.is_empty() && c.all == 0);
        }
    }
}
