//! The libp2p side: one task owns the swarm; everything else talks to it
//! through a cloneable [`Network`] handle (bounded command channel, oneshot
//! replies) and receives inbound control requests on a bounded channel.
//!
//! Bulk bytes do not pass through the swarm task: piece uploads and fetches
//! run on `libp2p-stream` streams opened and accepted through
//! [`Network::streams`], with yamux flow control as backpressure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{AsyncRead, AsyncWrite, StreamExt};
use libp2p::core::ConnectedPoint;
use libp2p::identity::Keypair;
use libp2p::kad;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, ping, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::sync::{mpsc, oneshot};

use crate::dht::{BoundedStore, DhtBounds, DhtStats};
use crate::types::{Request, Response};
use crate::wire::{from_cbor, read_frame_bytes, to_cbor};
use crate::ProtocolError;

/// Control requests and responses (request-response, CBOR frames).
pub const CONTROL_PROTOCOL: StreamProtocol = StreamProtocol::new("/crowd/control/1");
/// Piece uploads (client → provider), raw bytes after a header frame.
pub const PIECE_PROTOCOL: StreamProtocol = StreamProtocol::new("/crowd/piece/1");
/// Piece and range retrieval with verified chunk groups.
pub const FETCH_PROTOCOL: StreamProtocol = StreamProtocol::new("/crowd/fetch/1");
/// Content routing: providers announce the pieces and manifests they hold.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/crowd/kad/1");
/// identify's protocol version string.
pub const IDENTIFY_VERSION: &str = "/crowd/id/1";

/// Largest control request frame.
pub const MAX_REQUEST: usize = 256 * 1024;
/// Largest control response frame (a seal proof can be a few MiB).
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// A control request as read off the wire: decoded, or why it could not be.
#[derive(Debug, Clone)]
pub enum WireRequest {
    Valid(Box<Request>),
    Invalid(String),
}

/// Length-prefixed CBOR frames for the control protocol. A request that is
/// too large or does not decode is delivered as [`WireRequest::Invalid`] so
/// the receiver can answer with an error instead of dropping the stream.
#[derive(Debug, Clone, Default)]
pub struct ControlCodec;

impl request_response::Codec for ControlCodec {
    type Protocol = StreamProtocol;
    type Request = WireRequest;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<WireRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_frame_bytes(io, MAX_REQUEST).await {
            Ok(body) => Ok(match from_cbor::<Request>("control request", &body) {
                Ok(r) => WireRequest::Valid(Box::new(r)),
                Err(e) => WireRequest::Invalid(e.to_string()),
            }),
            Err(ProtocolError::Io(e)) => Err(e),
            Err(e) => Ok(WireRequest::Invalid(e.to_string())),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame_bytes(io, MAX_RESPONSE)
            .await
            .map_err(std::io::Error::other)?;
        from_cbor("control response", &body).map_err(std::io::Error::other)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: WireRequest,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match req {
            WireRequest::Valid(r) => write_raw(io, &to_cbor(&*r)).await,
            WireRequest::Invalid(_) => Err(std::io::Error::other("refusing to send an invalid request")),
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_raw(io, &to_cbor(&res)).await
    }
}

async fn write_raw<T: AsyncWrite + Unpin>(io: &mut T, body: &[u8]) -> std::io::Result<()> {
    use futures::AsyncWriteExt;
    let len = u32::try_from(body.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(body).await?;
    io.close().await
}

/// All behaviours of a crowdstore peer.
#[allow(missing_debug_implementations)] // the derive generates the event type
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    limits: libp2p::connection_limits::Behaviour,
    per_address: crate::address_limits::Behaviour,
    memory: libp2p::swarm::behaviour::toggle::Toggle<libp2p::memory_connection_limits::Behaviour>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<BoundedStore>,
    control: request_response::Behaviour<ControlCodec>,
    stream: libp2p_stream::Behaviour,
}

/// Network settings, all bounded.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Addresses to listen on (TCP and/or QUIC multiaddrs).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial and add to the DHT at start.
    pub bootstrap: Vec<(PeerId, Multiaddr)>,
    /// Give up on a control request after this long.
    pub request_timeout: Duration,
    /// Concurrent control streams per connection.
    pub max_concurrent_streams: usize,
    /// Inbound control requests waiting for the application; beyond this the
    /// peer gets a "busy" error at once.
    pub inbound_queue: usize,
    /// Close connections idle for this long.
    pub idle_timeout: Duration,
    /// Established connections with one peer, either direction; beyond it
    /// the peer's *oldest* connections are closed, not the new one refused:
    /// a peer that restarted or exited without closing (a killed process,
    /// a CLI run again with the same key) leaves connections that look
    /// established until they are found dead, and the new one is the live
    /// one. A peer may hold a TCP and a QUIC one, and a simultaneous dial
    /// briefly makes two.
    pub max_connections_per_peer: u32,
    /// Established inbound connections in total; beyond it a new one is
    /// denied (closed at once).
    pub max_incoming_connections: u32,
    /// Inbound connections still in their handshake.
    pub max_pending_incoming: u32,
    /// Inbound connections from one source (an IPv4 address or an IPv6 /64)
    /// still in their handshake, and established (see
    /// [`crate::address_limits`]): by default half of the two bounds above,
    /// so one host cannot take every slot.
    pub max_pending_incoming_per_address: u32,
    pub max_incoming_per_address: u32,
    /// No new connection, either way, while this process uses more memory
    /// than this many bytes; 0: no such limit.
    pub max_memory_for_new_connections: u64,
    /// Every connection is pinged this often; a ping not answered within
    /// `ping_timeout` closes that connection (its peer died or vanished
    /// without closing it, which QUIC would otherwise notice only after its
    /// idle timeout).
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// The DHT record store's bounds (see [`crate::dht`]).
    pub dht: DhtBounds,
    /// Our provider records are re-announced this often (and live four
    /// times as long on other peers).
    pub provider_republish: Duration,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            request_timeout: Duration::from_secs(60),
            max_concurrent_streams: 64,
            inbound_queue: 256,
            idle_timeout: Duration::from_secs(120),
            max_connections_per_peer: 8,
            max_incoming_connections: 512,
            max_pending_incoming: 64,
            max_pending_incoming_per_address: 32,
            max_incoming_per_address: 256,
            max_memory_for_new_connections: 0,
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(20),
            dht: DhtBounds::default(),
            provider_republish: Duration::from_secs(3600),
        }
    }
}

/// A control request from a peer, to answer with [`InboundRequest::respond`].
#[derive(Debug)]
pub struct InboundRequest {
    pub peer: PeerId,
    /// `Err(reason)` when the frame was oversized or malformed.
    pub request: Result<Request, String>,
    reply: oneshot::Sender<Response>,
}

impl InboundRequest {
    pub fn respond(self, response: Response) {
        let _ = self.reply.send(response);
    }
}

enum Command {
    Dial(PeerId, Vec<Multiaddr>, oneshot::Sender<Result<(), ProtocolError>>),
    Request(
        PeerId,
        Box<Request>,
        oneshot::Sender<Result<Response, ProtocolError>>,
    ),
    Provide(kad::RecordKey, oneshot::Sender<Result<(), ProtocolError>>),
    FindProviders(kad::RecordKey, oneshot::Sender<Vec<PeerId>>),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
}

/// Cloneable handle to the swarm task.
#[derive(Clone)]
pub struct Network {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    streams: libp2p_stream::Control,
    request_timeout: Duration,
    dht_stats: Arc<DhtStats>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network").field("peer_id", &self.peer_id).finish()
    }
}

/// A QUIC connection silent this long is dropped (see [`Network::start`]).
pub const QUIC_IDLE_TIMEOUT_MS: u32 = 60_000;

impl Network {
    /// Builds the swarm, starts listening and spawns the task that owns it.
    /// Returns the handle and the stream of inbound control requests.
    pub async fn start(
        key: Keypair,
        config: NetworkConfig,
    ) -> Result<(Self, mpsc::Receiver<InboundRequest>), ProtocolError> {
        let peer_id = key.public().to_peer_id();
        let rr_config = request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(config.max_concurrent_streams);
        let idle = config.idle_timeout;
        let limits = libp2p::connection_limits::ConnectionLimits::default()
            .with_max_established_incoming(Some(config.max_incoming_connections))
            .with_max_pending_incoming(Some(config.max_pending_incoming));
        let ping_config = ping::Config::new()
            .with_interval(config.ping_interval)
            .with_timeout(config.ping_timeout);
        let dht_stats = Arc::new(DhtStats::default());
        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config
            .set_provider_publication_interval(Some(config.provider_republish))
            .set_provider_record_ttl(Some(config.provider_republish * 4));
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| ProtocolError::Io(std::io::Error::other(e.to_string())))?
            // QUIC drops a connection that hears nothing for its idle
            // timeout (10 s by default); a process whose runtime is starved
            // for a while (two cores, sealing and proving next to it) lost
            // connections mid-request that way. Keep-alives still go every 5 s.
            .with_quic_config(|mut c| {
                c.max_idle_timeout = QUIC_IDLE_TIMEOUT_MS;
                c
            })
            .with_behaviour(|key| Behaviour {
                limits: libp2p::connection_limits::Behaviour::new(limits),
                per_address: crate::address_limits::Behaviour::new(crate::address_limits::AddressBounds {
                    pending: config.max_pending_incoming_per_address,
                    established: config.max_incoming_per_address,
                }),
                memory: usize::try_from(config.max_memory_for_new_connections)
                    .ok()
                    .filter(|bytes| *bytes > 0)
                    .map(libp2p::memory_connection_limits::Behaviour::with_max_bytes)
                    .into(),
                identify: identify::Behaviour::new(identify::Config::new(
                    IDENTIFY_VERSION.into(),
                    key.public(),
                )),
                ping: ping::Behaviour::new(ping_config),
                kad: kad::Behaviour::with_config(
                    key.public().to_peer_id(),
                    BoundedStore::new(key.public().to_peer_id(), config.dht, dht_stats.clone()),
                    kad_config,
                ),
                control: request_response::Behaviour::new(
                    [(CONTROL_PROTOCOL, ProtocolSupport::Full)],
                    rr_config,
                ),
                stream: libp2p_stream::Behaviour::new(),
            })
            .map_err(|e| ProtocolError::Io(std::io::Error::other(e.to_string())))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build();
        // Local networks (loopback devnets) have no confirmed external address;
        // serve the DHT anyway.
        swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| ProtocolError::Io(std::io::Error::other(format!("listen on {addr}: {e}"))))?;
        }
        for (peer, addr) in &config.bootstrap {
            swarm.behaviour_mut().kad.add_address(peer, addr.clone());
            let _ = swarm.dial(addr.clone());
        }
        let streams = swarm.behaviour().stream.new_control();
        let (commands, rx) = mpsc::channel(64);
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_queue);
        let mut task = SwarmTask {
            swarm,
            commands: rx,
            inbound: inbound_tx,
            pending_requests: HashMap::new(),
            pending_dials: HashMap::new(),
            pending_provides: HashMap::new(),
            pending_finds: HashMap::new(),
            replies: FuturesUnordered::new(),
            listen_addrs: Vec::new(),
            listen_waiters: Vec::new(),
            expected_listeners: config.listen.len(),
            replacing: HashMap::new(),
            by_peer: HashMap::new(),
            closing: HashMap::new(),
            max_per_peer: config.max_connections_per_peer.max(1) as usize,
        };
        tokio::spawn(async move { task.run().await });
        Ok((
            Self {
                peer_id,
                commands,
                streams,
                request_timeout: config.request_timeout,
                dht_stats,
            },
            inbound_rx,
        ))
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The DHT store's counters (for metrics).
    pub fn dht_stats(&self) -> Arc<DhtStats> {
        self.dht_stats.clone()
    }

    /// Opens and accepts bulk streams (uploads, fetches).
    pub fn streams(&self) -> libp2p_stream::Control {
        self.streams.clone()
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, ProtocolError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| ProtocolError::Stopped)?;
        rx.await.map_err(|_| ProtocolError::Stopped)
    }

    /// The addresses we listen on, once every listener is up.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, ProtocolError> {
        self.call(Command::ListenAddrs).await
    }

    /// Connects to `peer` at `addrs` and remembers them for the DHT.
    pub async fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), ProtocolError> {
        self.call(|tx| Command::Dial(peer, addrs, tx)).await?
    }

    /// Sends a control request and waits for the answer (bounded by the
    /// configured request timeout).
    pub async fn request(&self, peer: PeerId, request: Request) -> Result<Response, ProtocolError> {
        let timeout = self.request_timeout + Duration::from_secs(1);
        match tokio::time::timeout(
            timeout,
            self.call(|tx| Command::Request(peer, Box::new(request), tx)),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => Err(ProtocolError::Timeout(timeout)),
        }
    }

    /// Announces on the DHT that we hold `key` (a piece or manifest CID's bytes).
    pub async fn provide(&self, key: Vec<u8>) -> Result<(), ProtocolError> {
        self.call(|tx| Command::Provide(kad::RecordKey::new(&key), tx))
            .await?
    }

    /// Peers the DHT says hold `key`.
    pub async fn find_providers(&self, key: Vec<u8>) -> Result<Vec<PeerId>, ProtocolError> {
        self.call(|tx| Command::FindProviders(kad::RecordKey::new(&key), tx))
            .await
    }
}

type ReplyFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = (request_response::ResponseChannel<Response>, Response)> + Send>,
>;

struct SwarmTask {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    inbound: mpsc::Sender<InboundRequest>,
    pending_requests:
        HashMap<request_response::OutboundRequestId, oneshot::Sender<Result<Response, ProtocolError>>>,
    pending_dials: HashMap<PeerId, Vec<oneshot::Sender<Result<(), ProtocolError>>>>,
    pending_provides: HashMap<kad::QueryId, oneshot::Sender<Result<(), ProtocolError>>>,
    pending_finds: HashMap<kad::QueryId, (Vec<PeerId>, oneshot::Sender<Vec<PeerId>>)>,
    replies: FuturesUnordered<ReplyFuture>,
    listen_addrs: Vec<Multiaddr>,
    listen_waiters: Vec<oneshot::Sender<Vec<Multiaddr>>>,
    expected_listeners: usize,
    /// Peers dialled again at addresses none of our connections to them
    /// uses: once a new connection is up, those to other addresses close.
    replacing: HashMap<PeerId, Vec<Multiaddr>>,
    /// Every established connection, per peer, oldest first, with the
    /// address we dialled for the ones we dialled.
    by_peer: HashMap<PeerId, std::collections::VecDeque<(ConnectionId, Option<Multiaddr>)>>,
    max_per_peer: usize,
    /// Replaced connections still closing, per peer, and the dials that
    /// are answered once they are gone.
    #[allow(clippy::type_complexity)]
    closing: HashMap<PeerId, (Vec<ConnectionId>, Vec<oneshot::Sender<Result<(), ProtocolError>>>)>,
}

/// How [`Network::dial`] dials `peer` at `addrs`: one address at a time,
/// TCP first, QUIC only if no TCP address answers (dialled all at once, the
/// first to connect won, often QUIC, and then carried the transfers: over
/// loopback its ~1.4 KB datagrams cost both sides more CPU than TCP,
/// docs/BENCHMARKS.md); each TCP dial from a new local port (reusing the
/// listen port, libp2p's default, makes every connection to one peer share
/// the local half of its 4-tuple, so a redial soon after a close can fail
/// "address in use" against the old connection's TIME_WAIT).
fn dial_opts(
    peer: PeerId,
    mut addrs: Vec<Multiaddr>,
    condition: libp2p::swarm::dial_opts::PeerCondition,
) -> libp2p::swarm::dial_opts::DialOpts {
    addrs.sort_by_key(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1 | Protocol::Quic)));
    libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
        .condition(condition)
        .addresses(addrs)
        .override_dial_concurrency_factor(std::num::NonZeroU8::MIN)
        .allocate_new_port()
        .build()
}

/// `addr` without a trailing `/p2p/…`, for comparing dialled addresses.
fn bare(addr: &Multiaddr) -> Multiaddr {
    let mut a = addr.clone();
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    a
}

impl SwarmTask {
    async fn run(&mut self) {
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    // every handle dropped: shut down
                    None => return,
                },
                event = self.swarm.select_next_some() => self.on_event(event),
                Some((channel, response)) = self.replies.next(), if !self.replies.is_empty() => {
                    let _ = self.swarm.behaviour_mut().control.send_response(channel, response);
                }
            }
        }
    }

    /// Whether `peer`, to which we hold connections, gives only addresses
    /// that none of the connections we dialled to it uses (inbound ones
    /// tell nothing: they come from the peer's ephemeral ports).
    fn moved(&self, peer: &PeerId, addrs: &[Multiaddr]) -> bool {
        let given: Vec<Multiaddr> = addrs.iter().map(bare).collect();
        let mut dialled = self
            .by_peer
            .get(peer)
            .into_iter()
            .flatten()
            .filter_map(|(_, a)| a.as_ref())
            .peekable();
        !given.is_empty() && dialled.peek().is_some() && dialled.all(|a| !given.contains(a))
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial(peer, addrs, tx) => {
                // remember the addresses even when connected: a peer that
                // restarted on new ports is found again once the old
                // connection is noticed dead
                for a in &addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer, a.clone());
                }
                if self.swarm.is_connected(&peer) {
                    if !self.moved(&peer, &addrs) {
                        let _ = tx.send(Ok(()));
                        return;
                    }
                    // Every connection we dialled to this peer goes to an
                    // address it no longer gives: it restarted elsewhere, and
                    // a connection to its old process (QUIC hears no close
                    // from a killed peer) would take a share of our requests
                    // and streams until it timed out. Dial the new addresses;
                    // once connected, the old connections close.
                    tracing::debug!(%peer, "peer moved to new addresses: dialling them");
                    self.replacing.insert(peer, addrs.iter().map(bare).collect());
                    let opts = dial_opts(peer, addrs, libp2p::swarm::dial_opts::PeerCondition::Always);
                    match self.swarm.dial(opts) {
                        Ok(()) => self.pending_dials.entry(peer).or_default().push(tx),
                        // still connected the old way: no worse than before
                        Err(_) => {
                            self.replacing.remove(&peer);
                            let _ = tx.send(Ok(()));
                        }
                    }
                    return;
                }
                // one of ours is in flight: its outcome answers this one too
                if let Some(waiting) = self.pending_dials.get_mut(&peer) {
                    waiting.push(tx);
                    return;
                }
                let opts = dial_opts(peer, addrs, Default::default());
                match self.swarm.dial(opts) {
                    Ok(()) => self.pending_dials.entry(peer).or_default().push(tx),
                    // someone else's dial (the DHT's) is in flight: the swarm
                    // reports its outcome for the peer like one of ours
                    Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {
                        self.pending_dials.entry(peer).or_default().push(tx)
                    }
                    Err(e) => {
                        let _ = tx.send(Err(ProtocolError::Io(std::io::Error::other(format!(
                            "dial {peer}: {e}"
                        )))));
                    }
                }
            }
            Command::Request(peer, req, tx) => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .control
                    .send_request(&peer, WireRequest::Valid(req));
                self.pending_requests.insert(id, tx);
            }
            Command::Provide(key, tx) => match self.swarm.behaviour_mut().kad.start_providing(key) {
                Ok(id) => {
                    self.pending_provides.insert(id, tx);
                }
                Err(e) => {
                    let _ = tx.send(Err(ProtocolError::Io(std::io::Error::other(e.to_string()))));
                }
            },
            Command::FindProviders(key, tx) => {
                let id = self.swarm.behaviour_mut().kad.get_providers(key);
                self.pending_finds.insert(id, (Vec::new(), tx));
            }
            Command::ListenAddrs(tx) => {
                if self.listen_addrs.len() >= self.expected_listeners {
                    let _ = tx.send(self.listen_addrs.clone());
                } else {
                    self.listen_waiters.push(tx);
                }
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.listen_addrs.push(address);
                if self.listen_addrs.len() >= self.expected_listeners {
                    for w in self.listen_waiters.drain(..) {
                        let _ = w.send(self.listen_addrs.clone());
                    }
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                // newest wins: beyond the per-peer bound the oldest go
                let dialled = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => Some(bare(address)),
                    ConnectedPoint::Listener { .. } => None,
                };
                let ours = self.by_peer.entry(peer_id).or_default();
                ours.push_back((connection_id, dialled));
                let excess = ours.len().saturating_sub(self.max_per_peer);
                let oldest: Vec<ConnectionId> = ours.drain(..excess).map(|(id, _)| id).collect();
                for id in oldest {
                    tracing::debug!(peer = %peer_id, "over the per-peer connection bound: closing the oldest");
                    self.swarm.close_connection(id);
                }
                if let Some(fresh) = self.replacing.remove(&peer_id) {
                    let stale: Vec<ConnectionId> = self
                        .by_peer
                        .get(&peer_id)
                        .into_iter()
                        .flatten()
                        .filter(|(id, a)| {
                            *id != connection_id && a.as_ref().is_some_and(|a| !fresh.contains(a))
                        })
                        .map(|(id, _)| *id)
                        .collect();
                    for id in &stale {
                        tracing::debug!(peer = %peer_id, "closing a connection to an old address");
                        self.swarm.close_connection(*id);
                    }
                    // the dial is answered once the old connections are gone:
                    // until then a request could still be given to one
                    if !stale.is_empty() {
                        let waiting = self.pending_dials.remove(&peer_id).unwrap_or_default();
                        self.closing.insert(peer_id, (stale, waiting));
                        return;
                    }
                }
                for tx in self.pending_dials.remove(&peer_id).unwrap_or_default() {
                    let _ = tx.send(Ok(()));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => {
                if let Some((left, _)) = self.closing.get_mut(&peer_id) {
                    left.retain(|id| *id != connection_id);
                    if left.is_empty() {
                        if let Some((_, waiting)) = self.closing.remove(&peer_id) {
                            for tx in waiting {
                                let _ = tx.send(Ok(()));
                            }
                        }
                    }
                }
                if let Some(list) = self.by_peer.get_mut(&peer_id) {
                    list.retain(|(id, _)| *id != connection_id);
                    if list.is_empty() {
                        self.by_peer.remove(&peer_id);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(error @ (ping::Failure::Timeout | ping::Failure::Other { .. })),
            })) => {
                // libp2p's ping reports, it does not close: a connection
                // that cannot answer a ping in time is dead to us (a peer
                // that does not speak ping is not, so `Unsupported` stays)
                tracing::debug!(%peer, %error, "ping failed: closing the connection");
                self.swarm.close_connection(connection);
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                self.replacing.remove(&peer);
                for tx in self.pending_dials.remove(&peer).unwrap_or_default() {
                    let _ = tx.send(Err(ProtocolError::Io(std::io::Error::other(format!(
                        "dial {peer}: {error}"
                    )))));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                // learn where peers listen, for the DHT
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Control(event)) => self.on_control(event),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad(event),
            _ => {}
        }
    }

    fn on_control(&mut self, event: request_response::Event<WireRequest, Response>) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message: Message::Request { request, channel, .. },
                ..
            } => {
                let request = match request {
                    WireRequest::Valid(r) => Ok(*r),
                    WireRequest::Invalid(reason) => Err(reason),
                };
                let (reply, rx) = oneshot::channel();
                let inbound = InboundRequest { peer, request, reply };
                match self.inbound.try_send(inbound) {
                    Ok(()) => self.replies.push(Box::pin(async move {
                        let response = rx.await.unwrap_or(Response::Error {
                            message: "request dropped".into(),
                        });
                        (channel, response)
                    })),
                    Err(_) => {
                        let busy = Response::Error {
                            message: "busy: too many requests in flight".into(),
                        };
                        let _ = self.swarm.behaviour_mut().control.send_response(channel, busy);
                    }
                }
            }
            Event::Message {
                message: Message::Response { request_id, response },
                ..
            } => {
                if let Some(tx) = self.pending_requests.remove(&request_id) {
                    let _ = tx.send(Ok(response));
                }
            }
            Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                if let Some(tx) = self.pending_requests.remove(&request_id) {
                    let _ = tx.send(Err(ProtocolError::Io(std::io::Error::other(format!(
                        "request to {peer} failed: {error}"
                    )))));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound control request failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        if let kad::Event::OutboundQueryProgressed { id, result, step, .. } = event {
            match result {
                kad::QueryResult::StartProviding(r) => {
                    if let Some(tx) = self.pending_provides.remove(&id) {
                        // With no other peer to store the record on, the
                        // local record still serves queries that reach us.
                        let _ = tx.send(match r {
                            Ok(_) | Err(kad::AddProviderError::Timeout { .. }) => Ok(()),
                        });
                    }
                }
                kad::QueryResult::GetProviders(r) => {
                    if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = r {
                        if let Some((found, _)) = self.pending_finds.get_mut(&id) {
                            found.extend(providers);
                        }
                    }
                    if step.last {
                        if let Some((mut found, tx)) = self.pending_finds.remove(&id) {
                            found.sort();
                            found.dedup();
                            let _ = tx.send(found);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Dials to a peer while another to it is in flight wait for that one's
    /// outcome instead of failing on the swarm's "already dialing" condition.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_dials_to_one_peer_all_succeed() {
        let config = || NetworkConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            ..NetworkConfig::default()
        };
        let (a, _a_in) = Network::start(Keypair::generate_ed25519(), config())
            .await
            .unwrap();
        let b_key = Keypair::generate_ed25519();
        let b_peer = b_key.public().to_peer_id();
        let (b, _b_in) = Network::start(b_key, config()).await.unwrap();
        let addrs = b.listen_addrs().await.unwrap();
        let dials = futures::future::join_all((0..8).map(|_| a.dial(b_peer, addrs.clone()))).await;
        for d in dials {
            d.unwrap();
        }
        // a dial to a peer that is not there still fails, for every caller
        let gone = Keypair::generate_ed25519().public().to_peer_id();
        let nowhere: Vec<Multiaddr> = vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()];
        let dials = futures::future::join_all((0..3).map(|_| a.dial(gone, nowhere.clone()))).await;
        assert!(dials.iter().all(Result::is_err), "{dials:?}");
    }

    /// Past `max_incoming_connections` a new peer's connection is denied
    /// (it cannot get a request answered), while the peers already
    /// connected are served as before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inbound_connections_beyond_the_limit_are_denied_and_the_others_still_served() {
        let config = |incoming| NetworkConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            request_timeout: Duration::from_secs(5),
            max_incoming_connections: incoming,
            ..NetworkConfig::default()
        };
        let server_key = Keypair::generate_ed25519();
        let server = server_key.public().to_peer_id();
        let (s, mut inbound) = Network::start(server_key, config(2)).await.unwrap();
        let addrs = s.listen_addrs().await.unwrap();
        tokio::spawn(async move {
            while let Some(r) = inbound.recv().await {
                r.respond(Response::Error {
                    message: "pong".into(),
                });
            }
        });
        let ping = || Request::PieceStatus(crate::PieceId([0; 32]));
        let mut clients = Vec::new();
        for _ in 0..2 {
            let (c, _c_in) = Network::start(Keypair::generate_ed25519(), config(8))
                .await
                .unwrap();
            c.dial(server, addrs.clone()).await.unwrap();
            assert!(c.request(server, ping()).await.is_ok());
            clients.push((c, _c_in));
        }
        // the third inbound connection is over the limit
        let (late, _late_in) = Network::start(Keypair::generate_ed25519(), config(8))
            .await
            .unwrap();
        let _ = late.dial(server, addrs.clone()).await;
        let answer = late.request(server, ping()).await;
        assert!(
            answer.is_err(),
            "a connection past the limit was served: {answer:?}"
        );
        for (c, _) in &clients {
            assert!(
                c.request(server, ping()).await.is_ok(),
                "a connected peer lost service"
            );
        }
    }
}
