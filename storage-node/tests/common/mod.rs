//! Real `crowd-node` processes on loopback, and an in-process client swarm.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::{Multiaddr, PeerId};
use crowd_protocol::{
    Admission, DealProposal, Network, NetworkConfig, NetworkId, PieceId, Request, Response, Signed,
};

/// The network of every test here: nodes are configured with it
/// (`network_id`), the fake tracker names it, test messages are signed for it.
pub const NET: NetworkId = NetworkId([9; 32]);

/// The tracker identity of every test here (the fake tracker's, and the one
/// nodes started with [`TestNode::start`] are usually given): fixed, so
/// test clients can sign the admissions nodes ask for.
pub fn tracker_key() -> Keypair {
    Keypair::ed25519_from_bytes([7u8; 32]).unwrap()
}

/// The tracker's admission of `proposal` (paid admission), signed by
/// `tracker`, valid until the proposal's expiry (for a proposal that does
/// not open — the bad-input tests send forged ones — until forever).
pub fn admission(tracker: &Keypair, proposal: &Signed<DealProposal>) -> Signed<Admission> {
    let (client, escrow, until_epoch) = match proposal.open(&NET, None) {
        Ok((_, p)) => (
            p.client,
            p.price_per_epoch * u128::from(p.duration_epochs),
            p.expiry_epoch,
        ),
        Err(_) => (tracker.public().to_peer_id(), 0, u64::MAX),
    };
    Signed::sign(
        tracker,
        &NET,
        &Admission {
            proposal: proposal.id(),
            client,
            escrow,
            until_epoch,
        },
    )
    .unwrap()
}

/// `ProposeDeal` with the tracker's admission.
pub fn propose(proposal: Signed<DealProposal>) -> Request {
    Request::ProposeDeal {
        admission: admission(&tracker_key(), &proposal),
        proposal,
    }
}

pub struct TestNode {
    pub home: tempfile::TempDir,
    pub child: Option<Child>,
    pub peer: PeerId,
    pub addrs: Vec<Multiaddr>,
    pub metrics: String,
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_crowd-node")
}

impl TestNode {
    /// `crowd-node init`, then a config for loopback and `tracker`, then `run`.
    pub fn start(tracker: &PeerId, extra: &str) -> Self {
        let home = tempfile::tempdir().unwrap();
        let out = Command::new(bin())
            .args(["init", "--home"])
            .arg(home.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let config = format!(
            "listen = [\"/ip4/127.0.0.1/tcp/0\", \"/ip4/127.0.0.1/udp/0/quic-v1\"]\nmetrics_address = \"127.0.0.1:0\"\ntracker_peer_id = \"{tracker}\"\ntransfer_timeout_secs = 20\n{network}{extra}\n",
            // (a test may name another network, or none, in `extra`)
            network = if extra.contains("network_id") {
                String::new()
            } else {
                format!("network_id = \"{}\"\n", NET.to_hex())
            }
        );
        std::fs::write(home.path().join("config.toml"), config).unwrap();
        let mut node = Self {
            home,
            child: None,
            peer: PeerId::random(),
            addrs: vec![],
            metrics: String::new(),
        };
        node.run();
        node
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.home.path().join(p)
    }

    /// Starts the process and waits for its node.json.
    pub fn run(&mut self) {
        let info = self.path("node.json");
        let _ = std::fs::remove_file(&info);
        let child = Command::new(bin())
            .args(["run", "--home"])
            .arg(self.home.path())
            .env("RUST_LOG", "info,libp2p=warn,libp2p_kad=error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&info) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    self.peer = v["peer_id"].as_str().unwrap().parse().unwrap();
                    self.addrs = v["listen"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_str().unwrap().parse().unwrap())
                        .collect();
                    self.metrics = v["metrics"].as_str().unwrap().to_string();
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("crowd-node exited early: {status}");
            }
            assert!(Instant::now() < deadline, "crowd-node did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn files_in(&self, dir: &str) -> Vec<String> {
        std::fs::read_dir(self.path(dir))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The body of GET /metrics.
    pub fn scrape(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.metrics).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct TestClient {
    pub key: Keypair,
    pub net: Network,
}

impl TestClient {
    pub async fn start() -> Self {
        Self::with_key(Keypair::generate_ed25519()).await
    }

    /// A client swarm with a given identity (e.g. the tracker's).
    pub async fn with_key(key: Keypair) -> Self {
        let config = NetworkConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            request_timeout: Duration::from_secs(30),
            ..NetworkConfig::default()
        };
        let (net, _inbound) = Network::start(key.clone(), config).await.unwrap();
        Self { key, net }
    }

    pub async fn connect(&self, node: &TestNode) {
        self.net.dial(node.peer, node.addrs.clone()).await.unwrap();
    }

    pub fn peer(&self) -> PeerId {
        self.key.public().to_peer_id()
    }

    pub fn proposal(&self, node: &TestNode, piece: &[u8], nonce: u64) -> DealProposal {
        DealProposal {
            piece: PieceId(*blake3::hash(piece).as_bytes()),
            piece_size: piece.len() as u64,
            client: self.peer(),
            provider: node.peer,
            price_per_epoch: 1_000_000,
            // the fake tracker starts at epoch 1; a stored piece whose deal
            // never comes is deleted at its start
            start_epoch: 20,
            duration_epochs: 100,
            provider_collateral: 0,
            expiry_epoch: 18,
            nonce,
        }
    }

    /// Proposes and expects acceptance; returns the proposal id.
    pub async fn deal(&self, node: &TestNode, piece: &[u8], nonce: u64) -> [u8; 32] {
        self.deal_with(node, self.proposal(node, piece, nonce)).await
    }

    /// Proposes `proposal` and expects acceptance; returns its id.
    pub async fn deal_with(&self, node: &TestNode, proposal: DealProposal) -> [u8; 32] {
        let signed = Signed::sign(&self.key, &NET, &proposal).unwrap();
        let ask = || self.net.request(node.peer, propose(signed.clone()));
        // a proposal is idempotent: sent again after a connection lost while
        // the two swarms settle on one connection (seen under load on 2 cores)
        let answer = match ask().await {
            Err(e) if e.to_string().contains("connection lost") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                ask().await
            }
            other => other,
        };
        match answer.unwrap() {
            Response::DealAccepted(a) => {
                let (_, acc) = a.open(&NET, Some(&node.peer)).unwrap();
                assert_eq!(acc.proposal, signed.id());
                signed.id()
            }
            other => panic!("deal not accepted: {other:?}"),
        }
    }

    pub async fn upload(
        &self,
        node: &TestNode,
        proposal: [u8; 32],
        bytes: &[u8],
    ) -> crowd_protocol::UploadResult {
        let mut streams = self.net.streams();
        crowd_protocol::transfer::upload(
            &mut streams,
            node.peer,
            proposal,
            bytes,
            bytes.len() as u64,
            Duration::from_secs(20),
        )
        .await
        .unwrap()
    }

    pub async fn fetch(
        &self,
        node: &TestNode,
        piece: &[u8],
        start: u64,
        end: u64,
    ) -> Result<Vec<u8>, crowd_protocol::ProtocolError> {
        let mut streams = self.net.streams();
        let mut out = Vec::new();
        crowd_protocol::transfer::fetch(
            &mut streams,
            node.peer,
            PieceId(*blake3::hash(piece).as_bytes()),
            piece.len() as u64,
            start..end,
            Duration::from_secs(20),
            |b| {
                out.extend_from_slice(b);
                Ok(())
            },
        )
        .await?;
        Ok(out)
    }
}

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}

/// Polls `f` until it returns Some, for at most `secs`.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    secs: u64,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not reached in {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An in-process stand-in for the tracker: a swarm with the tracker's key
/// that answers `Info` (with `epoch`), `Deals` by id (from `deals`),
/// `Account` and `Register`, and can send tracker requests to nodes.
pub struct FakeTracker {
    pub key: Keypair,
    pub net: Network,
    /// `/ip4/127.0.0.1/tcp/<port>/p2p/<peer id>`.
    pub addr: String,
    pub state: std::sync::Arc<std::sync::Mutex<TrackerState>>,
}

#[derive(Debug, Default)]
pub struct TrackerState {
    pub epoch: u64,
    pub deals: std::collections::HashMap<u64, crowd_protocol::tracker::DealView>,
    /// `Deals` queries answered so far.
    pub deal_queries: u64,
}

impl FakeTracker {
    pub async fn start() -> Self {
        use crowd_protocol::tracker::{AccountView, DealQuery, TrackerInfo};
        use crowd_protocol::{TrackerRequest, TrackerResponse};
        let key = tracker_key();
        let config = NetworkConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            request_timeout: Duration::from_secs(30),
            ..NetworkConfig::default()
        };
        let (net, mut inbound) = Network::start(key.clone(), config).await.unwrap();
        let state = std::sync::Arc::new(std::sync::Mutex::new(TrackerState {
            epoch: 1,
            ..TrackerState::default()
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Some(req) = inbound.recv().await {
                let response = {
                    let mut s = shared.lock().unwrap();
                    match &req.request {
                        Ok(Request::Tracker(TrackerRequest::Info)) => {
                            Response::Tracker(TrackerResponse::Info(TrackerInfo {
                                network: NET,
                                epoch: s.epoch,
                                epoch_millis: 1000,
                                epoch_ends_in_millis: 1000,
                                randomness: [0; 32],
                                head: [0; 32],
                                log_len: 0,
                                faucet: false,
                                fault_threshold: 3,
                                min_start_lead: 1,
                                max_start_lead: 100,
                                sealing: "devnet".into(),
                                provider_stake: 0,
                                min_collateral_per_gib: 0,
                            }))
                        }
                        Ok(Request::Tracker(TrackerRequest::Deals(DealQuery::Ids(ids)))) => {
                            s.deal_queries += 1;
                            let views = ids.iter().filter_map(|i| s.deals.get(i).cloned()).collect();
                            Response::Tracker(TrackerResponse::Deals(views))
                        }
                        Ok(Request::Tracker(TrackerRequest::Account(_))) => {
                            Response::Tracker(TrackerResponse::Account(AccountView::default()))
                        }
                        Ok(Request::Tracker(TrackerRequest::Register { .. })) => {
                            Response::Tracker(TrackerResponse::Registered)
                        }
                        other => Response::Error {
                            message: format!("fake tracker does not answer {other:?}"),
                        },
                    }
                };
                req.respond(response);
            }
        });
        let listen = net.listen_addrs().await.unwrap();
        let tcp = listen
            .iter()
            .find(|a| a.to_string().contains("/tcp/"))
            .expect("a TCP listener")
            .clone();
        let addr = format!("{tcp}/p2p/{}", key.public().to_peer_id());
        Self {
            key,
            net,
            addr,
            state,
        }
    }

    pub fn peer(&self) -> PeerId {
        self.key.public().to_peer_id()
    }

    /// Config lines for a node that uses this tracker (add to `extra`).
    pub fn config(&self) -> String {
        format!("tracker_address = \"{}\"\n", self.addr)
    }

    /// Starts a node configured for this tracker and connects to it.
    pub async fn node(&self, extra: &str) -> TestNode {
        let node = TestNode::start(&self.peer(), &format!("{}{extra}", self.config()));
        self.net.dial(node.peer, node.addrs.clone()).await.unwrap();
        node
    }

    pub fn set_epoch(&self, epoch: u64) {
        self.state.lock().unwrap().epoch = epoch;
    }

    /// Records (or replaces) the tracker's view of a deal.
    pub fn set_deal(&self, id: u64, proposal_id: [u8; 32], proposal: DealProposal, state: &str) {
        let view = crowd_protocol::tracker::DealView {
            id,
            proposal_id,
            proposal,
            published_epoch: 1,
            end_epoch: 1000,
            state: state.into(),
            comm_r: None,
            escrow: 0,
            collateral: 0,
            paid: 0,
            proven_epochs: 0,
            faulted_epochs: 0,
            consecutive_faults: 0,
            history: vec![],
        };
        self.state.lock().unwrap().deals.insert(id, view);
    }

    pub fn deal_queries(&self) -> u64 {
        self.state.lock().unwrap().deal_queries
    }

    pub async fn ask(&self, node: &TestNode, request: Request) -> Response {
        self.net.request(node.peer, request).await.unwrap()
    }
}

/// The value of a metric line `name value` (0 when absent).
pub fn metric(text: &str, name: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
