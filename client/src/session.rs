//! A client's connection to the network: its identity, its swarm, and typed
//! calls to the tracker.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::{multiaddr::Protocol, Multiaddr, PeerId};
use crowd_protocol::{
    AccountView, DealQuery, DealView, Network, NetworkConfig, ProviderEntry, Response, TrackerInfo,
    TrackerRequest, TrackerResponse,
};

use crate::config::ClientConfig;

/// Most pages of providers a client reads (of `MAX_LIST` each).
pub const MAX_PROVIDER_PAGES: usize = 16;

/// A multiaddress ending in /p2p/<peer id>, split.
pub fn peer_addr(s: &str) -> Result<(PeerId, Multiaddr)> {
    let addr: Multiaddr = s
        .parse()
        .map_err(|e| anyhow!("'{s}' is not a multiaddress: {e}"))?;
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Ok((peer, addr)),
        _ => bail!("'{s}' does not end in /p2p/<peer id>"),
    }
}

/// An existing identity key file (libp2p protobuf encoding), e.g. a storage
/// node's `identity.key` for withdrawing its earnings; never created.
pub fn load_key_file(path: &Path) -> Result<Keypair> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Keypair::from_protobuf_encoding(&bytes)
        .map_err(|e| anyhow!("{}: not a valid identity key: {e}", path.display()))
}

/// `<home>/identity.key` (libp2p protobuf ed25519, mode 0600), created if missing.
pub fn load_or_create_key(home: &Path) -> Result<Keypair> {
    let path = home.join("identity.key");
    if path.exists() {
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        return Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| anyhow!("{}: not a valid identity key: {e}", path.display()));
    }
    std::fs::create_dir_all(home).with_context(|| format!("cannot create {}", home.display()))?;
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| anyhow!("encoding key: {e}"))?;
    crate::input::write_bytes(&path, &bytes, true)?;
    Ok(key)
}

/// The client's swarm and its tracker.
#[derive(Debug)]
pub struct Session {
    pub key: Keypair,
    pub peer: PeerId,
    pub net: Network,
    /// Where tracker requests go: the tracker, or its replicas' leader.
    pub link: crowd_protocol::tracker_link::TrackerLink,
    pub config: ClientConfig,
    /// The network signed messages name, asked of the tracker once.
    network: tokio::sync::OnceCell<crowd_protocol::NetworkId>,
}

impl Session {
    /// Loads the config and key from `home`, starts a swarm (no listener:
    /// clients only dial) and connects to the tracker.
    pub async fn connect(home: &Path) -> Result<Self> {
        Self::connect_as(home, load_or_create_key(home)?).await
    }

    /// [`Session::connect`] with another identity than the home's (the
    /// home's config names the tracker).
    pub async fn connect_as(home: &Path, key: Keypair) -> Result<Self> {
        let config = ClientConfig::load(home)?;
        let (tracker, tracker_addr) = peer_addr(&config.tracker_address)?;
        let net_config = NetworkConfig {
            // no bootstrap dial: the dial below connects and adds the tracker
            // to the DHT; a bootstrap dial in flight would make it fail
            bootstrap: Vec::new(),
            request_timeout: Duration::from_secs(config.request_timeout_secs.max(1)),
            ..NetworkConfig::default()
        };
        let (net, _inbound) = Network::start(key.clone(), net_config).await?;
        let peers = if config.tracker_replicas.is_empty() {
            vec![(tracker, vec![tracker_addr])]
        } else {
            config
                .tracker_replicas
                .iter()
                .map(|r| peer_addr(r).map(|(p, a)| (p, vec![a])))
                .collect::<Result<Vec<_>>>()?
        };
        let link = crowd_protocol::tracker_link::TrackerLink::new(peers);
        link.dial(&net)
            .await
            .with_context(|| format!("cannot reach the tracker at {}", config.tracker_address))?;
        Ok(Self {
            peer: key.public().to_peer_id(),
            key,
            net,
            link,
            config,
            network: tokio::sync::OnceCell::new(),
        })
    }

    /// The network this client signs for and checks signatures against:
    /// the tracker's genesis head (asked once).
    pub async fn network(&self) -> Result<crowd_protocol::NetworkId> {
        self.network
            .get_or_try_init(|| async { Ok(self.info().await?.network) })
            .await
            .copied()
    }

    /// Sends a request to the tracker; its errors become one-line errors.
    pub async fn tracker(&self, request: TrackerRequest) -> Result<TrackerResponse> {
        match self.link.request(&self.net, request).await.context("tracker")? {
            Response::Tracker(r) => Ok(r),
            Response::Error { message } => bail!("tracker: {message}"),
            other => bail!("tracker: unexpected answer {other:?}"),
        }
    }

    pub async fn info(&self) -> Result<TrackerInfo> {
        match self.tracker(TrackerRequest::Info).await? {
            TrackerResponse::Info(i) => Ok(i),
            other => bail!("tracker: unexpected answer {other:?}"),
        }
    }

    /// Every provider the tracker lists, page by page (at most
    /// [`MAX_PROVIDER_PAGES`] pages).
    pub async fn providers(&self) -> Result<Vec<ProviderEntry>> {
        let mut all: Vec<ProviderEntry> = Vec::new();
        let mut request = TrackerRequest::Providers;
        for _ in 0..MAX_PROVIDER_PAGES {
            let page = match self.tracker(request).await? {
                TrackerResponse::Providers(p) => p,
                other => bail!("tracker: unexpected answer {other:?}"),
            };
            let full = page.len() >= crowd_protocol::tracker::MAX_LIST;
            let last = page.last().map(|p| p.peer);
            // pages are in peer id order: a page that does not move on ends it
            let moved = match (all.last(), last) {
                (Some(prev), Some(l)) => l > prev.peer,
                _ => true,
            };
            all.extend(page);
            match (full && moved, last) {
                (true, Some(l)) => request = TrackerRequest::ProvidersAfter(l),
                _ => break,
            }
        }
        Ok(all)
    }

    pub async fn account(&self, peer: PeerId) -> Result<AccountView> {
        match self.tracker(TrackerRequest::Account(peer)).await? {
            TrackerResponse::Account(a) => Ok(a),
            other => bail!("tracker: unexpected answer {other:?}"),
        }
    }

    pub async fn deals(&self, query: DealQuery) -> Result<Vec<DealView>> {
        match self.tracker(TrackerRequest::Deals(query)).await? {
            TrackerResponse::Deals(d) => Ok(d),
            other => bail!("tracker: unexpected answer {other:?}"),
        }
    }

    /// Connects to a provider at the addresses the tracker lists for it.
    pub async fn dial_provider(&self, provider: &ProviderEntry) -> Result<()> {
        let addrs: Vec<Multiaddr> = provider.addrs.iter().filter_map(|a| a.parse().ok()).collect();
        self.net
            .dial(provider.peer, addrs)
            .await
            .with_context(|| format!("cannot reach provider {}", provider.peer))
    }
}
