//! Inbound connection bounds per source address.
//!
//! `libp2p::connection_limits` bounds a node's inbound connections in total
//! and its handshakes in flight; on its own that lets one host take every
//! slot (a thousand sockets that never finish a handshake hold all the
//! pending ones for the upgrade timeout, and honest newcomers are refused
//! meanwhile). This behaviour bounds both *per source*: an IPv4 address, or
//! an IPv6 /64 (what one subscriber is handed, so the same "one host").
//!
//! The bookkeeping is [`AddressCounts`], a pure core the behaviour feeds
//! with the swarm's events; connections whose remote address names no IP
//! (a relay, memory transport) are not counted.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::{multiaddr::Protocol, Endpoint, Multiaddr};
use libp2p::swarm::{
    dummy, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::PeerId;

/// The bounds, per source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressBounds {
    /// Inbound connections from one source still in their handshake.
    pub pending: u32,
    /// Established inbound connections from one source.
    pub established: u32,
}

/// A source: an IPv4 address, or the /64 an IPv6 address is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    Self::V6Prefix(prefix)
                }
            },
        }
    }
}

impl Source {
    /// The source of a remote address, if it starts with an IP.
    pub fn of(addr: &Multiaddr) -> Option<Self> {
        match addr.iter().next()? {
            Protocol::Ip4(ip) => Some(IpAddr::V4(ip).into()),
            Protocol::Ip6(ip) => Some(IpAddr::V6(ip).into()),
            _ => None,
        }
    }
}

/// Which bound a connection hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub kind: &'static str,
    pub source: Source,
    pub limit: u32,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} inbound connections from {:?} at the per-address limit of {}",
            self.kind, self.source, self.limit
        )
    }
}

impl std::error::Error for Exceeded {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Pending,
    Established,
}

/// Per-source counts of inbound connections (the pure core).
#[derive(Debug, Default)]
pub struct AddressCounts {
    connections: HashMap<ConnectionId, (Source, Stage)>,
    pending: HashMap<Source, u32>,
    established: HashMap<Source, u32>,
}

impl AddressCounts {
    fn count(map: &HashMap<Source, u32>, source: Source) -> u32 {
        map.get(&source).copied().unwrap_or(0)
    }

    /// Connections from `source` in their handshake.
    pub fn pending(&self, source: Source) -> u32 {
        Self::count(&self.pending, source)
    }

    /// Established connections from `source`.
    pub fn established(&self, source: Source) -> u32 {
        Self::count(&self.established, source)
    }

    /// Sources with at least one counted connection.
    pub fn sources(&self) -> usize {
        let mut all: Vec<Source> = self
            .pending
            .keys()
            .chain(self.established.keys())
            .copied()
            .collect();
        all.sort();
        all.dedup();
        all.len()
    }

    /// A new inbound connection from `source` starts its handshake.
    pub fn start(&mut self, id: ConnectionId, source: Source, bounds: AddressBounds) -> Result<(), Exceeded> {
        if self.pending(source) >= bounds.pending {
            return Err(Exceeded {
                kind: "pending",
                source,
                limit: bounds.pending,
            });
        }
        self.forget(id);
        *self.pending.entry(source).or_default() += 1;
        self.connections.insert(id, (source, Stage::Pending));
        Ok(())
    }

    /// The handshake of `id` finished: it may stay if `source` is under its
    /// established bound. Its pending slot is given back either way.
    pub fn establish(
        &mut self,
        id: ConnectionId,
        source: Source,
        bounds: AddressBounds,
    ) -> Result<(), Exceeded> {
        self.forget(id);
        if self.established(source) >= bounds.established {
            return Err(Exceeded {
                kind: "established",
                source,
                limit: bounds.established,
            });
        }
        *self.established.entry(source).or_default() += 1;
        self.connections.insert(id, (source, Stage::Established));
        Ok(())
    }

    /// `id` is gone (closed, failed, or denied by another bound).
    pub fn forget(&mut self, id: ConnectionId) {
        let Some((source, stage)) = self.connections.remove(&id) else {
            return;
        };
        let map = match stage {
            Stage::Pending => &mut self.pending,
            Stage::Established => &mut self.established,
        };
        if let Some(n) = map.get_mut(&source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&source);
            }
        }
    }
}

/// The behaviour: denies an inbound connection whose source is at a bound.
#[derive(Debug)]
pub struct Behaviour {
    bounds: AddressBounds,
    counts: AddressCounts,
}

impl Behaviour {
    pub fn new(bounds: AddressBounds) -> Self {
        Self {
            bounds,
            counts: AddressCounts::default(),
        }
    }

    pub fn counts(&self) -> &AddressCounts {
        &self.counts
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        match Source::of(remote) {
            Some(source) => self
                .counts
                .start(id, source, self.bounds)
                .map_err(ConnectionDenied::new),
            None => Ok(()),
        }
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        match Source::of(remote) {
            Some(source) => self
                .counts
                .establish(id, source, self.bounds)
                .map_err(ConnectionDenied::new)?,
            None => self.counts.forget(id),
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            // (a connection we accepted that a later behaviour denied is
            // reported as a ListenFailure too)
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => self.counts.forget(connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOUNDS: AddressBounds = AddressBounds {
        pending: 3,
        established: 5,
    };

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_64s() {
        let a: Multiaddr = "/ip4/10.0.0.1/tcp/1".parse().unwrap();
        let b: Multiaddr = "/ip4/10.0.0.1/udp/9/quic-v1".parse().unwrap();
        let c: Multiaddr = "/ip4/10.0.0.2/tcp/1".parse().unwrap();
        assert_eq!(Source::of(&a), Source::of(&b));
        assert_ne!(Source::of(&a), Source::of(&c));
        let d: Multiaddr = "/ip6/2001:db8:1:2::1/tcp/1".parse().unwrap();
        let e: Multiaddr = "/ip6/2001:db8:1:2:ffff::9/tcp/1".parse().unwrap();
        let f: Multiaddr = "/ip6/2001:db8:1:3::1/tcp/1".parse().unwrap();
        assert_eq!(Source::of(&d), Source::of(&e), "one /64 is one source");
        assert_ne!(Source::of(&d), Source::of(&f));
        let mapped: Multiaddr = "/ip6/::ffff:10.0.0.1/tcp/1".parse().unwrap();
        assert_eq!(Source::of(&mapped), Source::of(&a));
        let memory: Multiaddr = "/memory/5".parse().unwrap();
        assert_eq!(Source::of(&memory), None);
    }

    #[test]
    fn one_source_at_its_bounds_does_not_block_another() {
        let mut c = AddressCounts::default();
        let flood = Source::V4([127, 0, 0, 2]);
        let honest = Source::V4([127, 0, 0, 1]);
        for i in 0..3 {
            c.start(ConnectionId::new_unchecked(i), flood, BOUNDS).unwrap();
        }
        let e = c
            .start(ConnectionId::new_unchecked(3), flood, BOUNDS)
            .unwrap_err();
        assert_eq!((e.kind, e.limit), ("pending", 3));
        c.start(ConnectionId::new_unchecked(10), honest, BOUNDS).unwrap();
        c.establish(ConnectionId::new_unchecked(10), honest, BOUNDS)
            .unwrap();
        assert_eq!((c.pending(honest), c.established(honest)), (0, 1));
        // a finished handshake frees its pending slot
        c.establish(ConnectionId::new_unchecked(0), flood, BOUNDS)
            .unwrap();
        c.start(ConnectionId::new_unchecked(4), flood, BOUNDS).unwrap();
        assert_eq!((c.pending(flood), c.established(flood)), (3, 1));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Start(u8, u8),
        Establish(u8),
        Forget(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..16, 0u8..3).prop_map(|(c, s)| Op::Start(c, s)),
            (0u8..16).prop_map(Op::Establish),
            (0u8..16).prop_map(Op::Forget),
        ]
    }

    proptest! {
        /// Whatever the order of events, no source ever holds more than its
        /// bounds, the counts equal the connections that are in each stage,
        /// and forgetting every connection leaves nothing counted.
        #[test]
        fn counts_stay_within_bounds_and_match_the_connections_proptest(ops in proptest::collection::vec(op(), 0..200)) {
            let mut c = AddressCounts::default();
            let source = |s: u8| Source::V4([10, 0, 0, s]);
            let mut model: HashMap<u8, (u8, Stage)> = HashMap::new();
            for op in ops {
                match op {
                    Op::Start(id, s) => {
                        if c.start(ConnectionId::new_unchecked(id.into()), source(s), BOUNDS).is_ok() {
                            model.insert(id, (s, Stage::Pending));
                        }
                    }
                    Op::Establish(id) => {
                        if let Some((s, _)) = model.get(&id).copied() {
                            let ok = c.establish(ConnectionId::new_unchecked(id.into()), source(s), BOUNDS).is_ok();
                            if ok { model.insert(id, (s, Stage::Established)); } else { model.remove(&id); }
                        }
                    }
                    Op::Forget(id) => {
                        c.forget(ConnectionId::new_unchecked(id.into()));
                        model.remove(&id);
                    }
                }
                for s in 0..3u8 {
                    let count = |stage| model.values().filter(|(m, st)| *m == s && *st == stage).count() as u32;
                    prop_assert_eq!(c.pending(source(s)), count(Stage::Pending));
                    prop_assert_eq!(c.established(source(s)), count(Stage::Established));
                    prop_assert!(c.pending(source(s)) <= BOUNDS.pending);
                    prop_assert!(c.established(source(s)) <= BOUNDS.established);
                }
            }
            for id in 0..16u8 {
                c.forget(ConnectionId::new_unchecked(id.into()));
            }
            prop_assert_eq!(c.sources(), 0);
        }
    }
}
