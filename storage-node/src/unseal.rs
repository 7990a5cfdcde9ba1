//! Bounds on unsealing for retrieval (pure; the node calls them).
//!
//! Without an unsealed copy (`keep_unsealed = false`) a fetch of any range,
//! even one byte, needs the whole piece unsealed (and checked against the
//! piece id, which needs every byte). Unsealing runs one sealing sector at
//! a time into an unlinked file in `tmp/`, so its memory is bounded by the
//! sector, not the piece (Filecoin unseals whole sectors too). What can be
//! bounded is how often a stranger makes the node do it:
//! - [`UnsealCache`]: the most recently unsealed pieces (their files, with
//!   their outboards) are kept, up to `unseal_cache_bytes` of disk, so
//!   repeated small fetches of the same piece cost one unseal;
//! - [`UnsealBudget`]: each peer may cause at most `max_unseals_per_peer`
//!   unseals (cache misses) per `unseal_window_secs`; beyond that its fetch
//!   is refused with the reason. The tracker (retrieval audits) is exempt.
//!   The budget tracks at most [`MAX_TRACKED_PEERS`] peers; when that many
//!   have spent budget in the window, new peers are refused too.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crowd_porep::Outboard;
use crowd_protocol::libp2p::PeerId;
use crowd_protocol::PieceId;

/// Most peers an [`UnsealBudget`] remembers at once.
pub const MAX_TRACKED_PEERS: usize = 4096;

/// An unsealed piece (its bytes where fetches read them: an unlinked file
/// on disk, which goes when the last holder lets go) and its tree.
pub struct Unsealed {
    pub source: Box<dyn crowd_porep::ReadAt + Send + Sync>,
    pub outboard: Outboard,
}

impl std::fmt::Debug for Unsealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsealed")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Unsealed {
    /// Bytes of the piece.
    pub fn len(&self) -> u64 {
        self.outboard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Recently unsealed pieces, least recently used first out, bounded in bytes.
#[derive(Debug)]
pub struct UnsealCache {
    max_bytes: u64,
    bytes: u64,
    /// Most recently used last.
    entries: VecDeque<(PieceId, Arc<Unsealed>)>,
}

impl UnsealCache {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            bytes: 0,
            entries: VecDeque::new(),
        }
    }

    /// The piece if held (and marks it used).
    pub fn get(&mut self, piece: &PieceId) -> Option<Arc<Unsealed>> {
        let i = self.entries.iter().position(|(p, _)| p == piece)?;
        let entry = self.entries.remove(i)?;
        let found = entry.1.clone();
        self.entries.push_back(entry);
        Some(found)
    }

    /// Keeps `piece`, evicting the least recently used until it fits; a
    /// piece larger than the whole cache is not kept.
    pub fn insert(&mut self, piece: PieceId, unsealed: Arc<Unsealed>) {
        let len = unsealed.len();
        if len > self.max_bytes {
            return;
        }
        if let Some(i) = self.entries.iter().position(|(p, _)| *p == piece) {
            if let Some((_, old)) = self.entries.remove(i) {
                self.bytes -= old.len();
            }
        }
        while self.bytes + len > self.max_bytes {
            match self.entries.pop_front() {
                Some((_, old)) => self.bytes -= old.len(),
                None => break,
            }
        }
        self.bytes += len;
        self.entries.push_back((piece, unsealed));
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Unseals per peer per window.
#[derive(Debug)]
pub struct UnsealBudget {
    per_peer: usize,
    window: Duration,
    used: HashMap<PeerId, VecDeque<Instant>>,
}

impl UnsealBudget {
    pub fn new(per_peer: usize, window: Duration) -> Self {
        Self {
            per_peer,
            window,
            used: HashMap::new(),
        }
    }

    /// Spends one unseal of `peer`'s budget at `now`, if it has one left.
    pub fn take(&mut self, peer: PeerId, now: Instant) -> bool {
        let window = self.window;
        let fresh = |t: &Instant| now.saturating_duration_since(*t) < window;
        if !self.used.contains_key(&peer) && self.used.len() >= MAX_TRACKED_PEERS {
            self.used.retain(|_, times| {
                times.retain(fresh);
                !times.is_empty()
            });
            if self.used.len() >= MAX_TRACKED_PEERS {
                return false;
            }
        }
        let times = self.used.entry(peer).or_default();
        times.retain(fresh);
        if times.len() >= self.per_peer {
            return false;
        }
        times.push_back(now);
        true
    }

    /// Peers remembered now.
    pub fn tracked(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn unsealed(len: usize) -> Arc<Unsealed> {
        let bytes = vec![7u8; len];
        let outboard = Outboard::build(&bytes);
        Arc::new(Unsealed {
            source: Box::new(bytes),
            outboard,
        })
    }

    fn piece(n: u8) -> PieceId {
        PieceId([n; 32])
    }

    #[test]
    fn the_cache_keeps_the_most_recently_used_within_its_bytes() {
        let mut c = UnsealCache::new(250);
        c.insert(piece(1), unsealed(100));
        c.insert(piece(2), unsealed(100));
        assert!(c.get(&piece(1)).is_some()); // 1 is now the most recent
        c.insert(piece(3), unsealed(100)); // evicts 2
        assert!(c.get(&piece(2)).is_none());
        assert!(c.get(&piece(1)).is_some() && c.get(&piece(3)).is_some());
        assert_eq!(c.bytes(), 200);
        c.insert(piece(4), unsealed(300)); // larger than the cache: not kept
        assert!(c.get(&piece(4)).is_none());
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn a_peer_gets_its_budget_per_window_and_others_their_own() {
        let mut b = UnsealBudget::new(2, Duration::from_secs(60));
        let (a, other) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        assert!(b.take(a, t0));
        assert!(b.take(a, t0 + Duration::from_secs(1)));
        assert!(!b.take(a, t0 + Duration::from_secs(2)));
        assert!(b.take(other, t0 + Duration::from_secs(2)));
        // the first unseal leaves the window: one more
        assert!(b.take(a, t0 + Duration::from_secs(60)));
        assert!(!b.take(a, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn the_budget_remembers_a_bounded_number_of_peers() {
        let mut b = UnsealBudget::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..MAX_TRACKED_PEERS {
            assert!(b.take(PeerId::random(), t0));
        }
        assert!(
            !b.take(PeerId::random(), t0),
            "a peer beyond the bound while all are fresh"
        );
        // once the window passed, old peers are forgotten and new ones served
        assert!(b.take(PeerId::random(), t0 + Duration::from_secs(61)));
        assert_eq!(b.tracked(), 1);
    }

    proptest! {
        /// The cache never holds more than its bound, and its byte count is exact.
        #[test]
        fn cache_bytes_are_exact_and_bounded_proptest(ops in proptest::collection::vec((0u8..6, 0usize..120), 0..60)) {
            let mut c = UnsealCache::new(200);
            for (p, len) in ops {
                if len % 3 == 0 {
                    let _ = c.get(&piece(p));
                } else {
                    c.insert(piece(p), unsealed(len));
                }
                let sum: u64 = c.entries.iter().map(|(_, u)| u.len()).sum();
                prop_assert_eq!(sum, c.bytes());
                prop_assert!(c.bytes() <= 200);
                let mut ids: Vec<_> = c.entries.iter().map(|(p, _)| p.0).collect();
                ids.sort();
                ids.dedup();
                prop_assert_eq!(ids.len(), c.len());
            }
        }
    }
}
