//! A blocking handle on the tracker for the devnet and the demo: an
//! in-process libp2p swarm on loopback with its own small runtime.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::{multiaddr::Protocol, Multiaddr, PeerId};
use crowd_protocol::{
    AccountView, DealQuery, DealView, Network, NetworkConfig, ProviderEntry, Response, TrackerInfo,
    TrackerRequest, TrackerResponse,
};

/// A connection to the tracker that answers one request at a time.
#[derive(Debug)]
pub struct TrackerConn {
    rt: tokio::runtime::Runtime,
    net: Network,
    link: crowd_protocol::tracker_link::TrackerLink,
}

impl TrackerConn {
    /// Starts a swarm with `key` on loopback and dials the tracker at
    /// `addrs` (multiaddresses ending in /p2p/<peer id>: one tracker, or
    /// every replica of a set, whose leader requests follow).
    pub fn connect(key: Keypair, addrs: &[String]) -> Result<Self> {
        let peers = addrs
            .iter()
            .map(|a| {
                crowd_client::peer_addr(a)
                    .map(|(p, m)| (p, vec![m]))
                    .map_err(anyhow::Error::from)
            })
            .collect::<Result<Vec<_>>>()?;
        let link = crowd_protocol::tracker_link::TrackerLink::new(peers);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("cannot start a runtime")?;
        let net = rt.block_on(async {
            let config = NetworkConfig {
                listen: vec![Multiaddr::empty()
                    .with(Protocol::Ip4([127, 0, 0, 1].into()))
                    .with(Protocol::Tcp(0))],
                request_timeout: Duration::from_secs(15),
                ..NetworkConfig::default()
            };
            let (net, _inbound) = Network::start(key, config).await?;
            link.dial(&net).await?;
            anyhow::Ok(net)
        });
        let net = net.with_context(|| format!("cannot reach the tracker at {}", addrs.join(", ")))?;
        Ok(Self { rt, net, link })
    }

    pub fn ask(&self, request: TrackerRequest) -> Result<TrackerResponse> {
        match self
            .rt
            .block_on(self.link.request(&self.net, request))
            .context("tracker request")?
        {
            Response::Tracker(r) => Ok(r),
            Response::Error { message } => bail!("the tracker answered: {message}"),
            other => bail!("unexpected answer from the tracker: {other:?}"),
        }
    }

    /// `request` sent to every peer of the tracker (each replica of a set
    /// answers for itself), in the configured order.
    pub fn ask_each(&self, request: &TrackerRequest) -> Vec<(PeerId, Result<TrackerResponse>)> {
        self.link
            .peers()
            .iter()
            .map(|(peer, _)| (*peer, self.ask_peer(*peer, request.clone())))
            .collect()
    }

    /// `request` sent to `peer` (one replica, answering for itself).
    pub fn ask_peer(&self, peer: PeerId, request: TrackerRequest) -> Result<TrackerResponse> {
        match self
            .rt
            .block_on(self.net.request(peer, crowd_protocol::Request::Tracker(request)))
        {
            Ok(Response::Tracker(r)) => Ok(r),
            Ok(Response::Error { message }) => Err(anyhow::anyhow!("{message}")),
            Ok(other) => Err(anyhow::anyhow!("unexpected answer {other:?}")),
            Err(e) => Err(anyhow::anyhow!("{e}")),
        }
    }

    pub fn info(&self) -> Result<TrackerInfo> {
        match self.ask(TrackerRequest::Info)? {
            TrackerResponse::Info(i) => Ok(i),
            other => bail!("unexpected answer to Info: {other:?}"),
        }
    }

    pub fn providers(&self) -> Result<Vec<ProviderEntry>> {
        match self.ask(TrackerRequest::Providers)? {
            TrackerResponse::Providers(p) => Ok(p),
            other => bail!("unexpected answer to Providers: {other:?}"),
        }
    }

    /// Devnet trackers only: mints `amount` into `account`.
    pub fn faucet(&self, account: PeerId, amount: u128) -> Result<u128> {
        match self.ask(TrackerRequest::Faucet { account, amount })? {
            TrackerResponse::Minted { amount } => Ok(amount),
            other => bail!("unexpected answer to Faucet: {other:?}"),
        }
    }

    pub fn account(&self, account: PeerId) -> Result<AccountView> {
        match self.ask(TrackerRequest::Account(account))? {
            TrackerResponse::Account(a) => Ok(a),
            other => bail!("unexpected answer to Account: {other:?}"),
        }
    }

    pub fn deals(&self, ids: Vec<u64>) -> Result<Vec<DealView>> {
        match self.ask(TrackerRequest::Deals(DealQuery::Ids(ids)))? {
            TrackerResponse::Deals(d) => Ok(d),
            other => bail!("unexpected answer to Deals: {other:?}"),
        }
    }
}
