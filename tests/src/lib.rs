//! # crowd-tests: a harness for service and end-to-end tests
//!
//! Real `crowd-tracker` and `crowd-node` processes on loopback, each in its
//! own temporary home with ephemeral ports, and an in-process test client
//! (its own libp2p swarm and key) that talks to them over the real protocol.
//!
//! * [`Daemon`]: one process — [`tracker`] / [`node`] create the home (with
//!   an optional seeded identity written before `init`), start it and wait
//!   for its `tracker.json` / `node.json`; [`Daemon::kill`] (SIGKILL),
//!   [`Daemon::stop`] (SIGTERM), [`Daemon::start`] again on the same home,
//!   paths under the home, its stderr log and metrics. Every child is killed
//!   when its `Daemon` drops.
//! * [`Client`]: faucet, propose a deal to a node, upload the piece, publish
//!   to the tracker, query deals, accounts, providers and the tracker's clock.
//! * [`eventually`]: poll until a condition holds, with a generous bound.
//!
//! Binaries are found next to the test executable (`target/<profile>/`):
//! build them first with `cargo build --workspace --bins`.
//!
//! This is test code: a failure is a panic that says what failed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::{Multiaddr, PeerId};
use crowd_protocol::{
    AccountView, DealAcceptance, DealProposal, DealQuery, DealView, PieceId, ProviderEntry, Request,
    Response, Signed, TrackerInfo, TrackerRequest, TrackerResponse, UploadResult,
};
use crowd_protocol::{Network, NetworkConfig};

/// How long a process may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A binary of the workspace, next to the running test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable has no target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A deterministic ed25519 identity.
pub fn seeded_key(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).expect("32 bytes make an ed25519 key")
}

/// Writes `key` where `init` would create one (protobuf encoding, mode 0600).
pub fn write_key(path: &Path, key: &Keypair) {
    std::fs::write(path, key.to_protobuf_encoding().unwrap()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `len` pseudo-random bytes from `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}

/// Polls `f` every 100 ms until it returns `Some`; panics naming `what`
/// after `timeout` (keep it generous: it bounds a hang, it is no benchmark).
pub async fn eventually<T, F>(timeout: Duration, what: &str, mut f: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "not reached within {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `crowd-tracker` or `crowd-node` process with its home.
#[derive(Debug)]
pub struct Daemon {
    /// The binary's name.
    pub name: &'static str,
    pub home: tempfile::TempDir,
    /// `run` and its arguments after `--home DIR`.
    run_args: Vec<String>,
    /// The file it writes when ready.
    info_file: &'static str,
    child: Option<Child>,
    pub peer: PeerId,
    /// Listen addresses ending in `/p2p/<peer id>`.
    pub addrs: Vec<Multiaddr>,
    /// host:port of `/metrics` (empty if disabled).
    pub metrics: String,
}

impl Daemon {
    fn new(name: &'static str, info_file: &'static str, run_args: Vec<String>, key_seed: Option<u8>) -> Self {
        let home = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .unwrap();
        if let Some(seed) = key_seed {
            write_key(&home.path().join("identity.key"), &seeded_key(seed));
        }
        Self {
            name,
            home,
            run_args,
            info_file,
            child: None,
            peer: PeerId::random(),
            addrs: Vec::new(),
            metrics: String::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.home.path().join(rel)
    }

    /// Runs the binary to completion with `args` then `--home DIR`.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin(self.name))
            .args(args)
            .arg("--home")
            .arg(self.home.path())
            .output()
            .unwrap()
    }

    fn init(&self, extra: &[&str]) {
        let mut args = vec!["init"];
        args.extend_from_slice(extra);
        let out = self.exec(&args);
        assert!(
            out.status.success(),
            "{} init: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Replaces config.toml.
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.path("config.toml"), text).unwrap();
    }

    /// Starts the process on its home and waits until it is ready. Its
    /// stderr goes to `stderr.log` in the home (appended across restarts).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let info = self.path(self.info_file);
        let _ = std::fs::remove_file(&info);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("stderr.log"))
            .unwrap();
        let child = Command::new(bin(self.name))
            .arg(&self.run_args[0])
            .arg("--home")
            .arg(self.home.path())
            .args(&self.run_args[1..])
            .env("RUST_LOG", "info,libp2p=warn,libp2p_kad=error")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&info) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    if v["pid"].as_u64() == Some(u64::from(pid)) {
                        self.peer = v["peer_id"].as_str().unwrap().parse().unwrap();
                        self.addrs = v["listen"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|a| a.as_str().unwrap().parse().unwrap())
                            .collect();
                        self.metrics = v["metrics"].as_str().unwrap_or("").to_string();
                        return;
                    }
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "{} exited before it was ready ({status}): {}",
                    self.name,
                    self.log()
                );
            }
            assert!(Instant::now() < deadline, "{} did not become ready", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process stays, its sockets stay open, it answers
    /// nothing (a silent peer) until [`Daemon::resume`].
    pub fn pause(&mut self) {
        let c = self.child.as_ref().expect("running");
        let ok = Command::new("kill")
            .args(["-STOP", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -STOP failed");
    }

    /// SIGCONT after [`Daemon::pause`].
    pub fn resume(&mut self) {
        let c = self.child.as_ref().expect("running");
        let ok = Command::new("kill")
            .args(["-CONT", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -CONT failed");
    }

    /// SIGTERM, then waits (at most 30 s, then SIGKILL) for the exit.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = c.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    /// SIGKILL and start again on the same home.
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    /// The first TCP listen address (with `/p2p/<id>`).
    pub fn tcp_addr(&self) -> Multiaddr {
        self.addrs
            .iter()
            .find(|a| a.to_string().contains("/tcp/"))
            .cloned()
            .expect("a TCP listen address")
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("stderr.log")).unwrap_or_default()
    }

    /// The body of `GET /metrics`.
    pub fn scrape(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.metrics).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// One metric's value (the first sample whose name and labels start with `name`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.scrape()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Files in a directory under the home.
    pub fn files_in(&self, dir: &str) -> Vec<String> {
        std::fs::read_dir(self.path(dir))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How to start a tracker.
#[derive(Debug, Clone)]
pub struct TrackerOptions {
    /// A fixed identity (seeded) instead of a fresh one.
    pub key_seed: Option<u8>,
    pub epoch_secs: f64,
    /// A devnet ledger (faucet on).
    pub devnet: bool,
    /// More config.toml lines (not listen, metrics_address, faucet or allocations).
    pub config: String,
    /// Genesis allocations, `PEER_ID=AMOUNT` (`init --allocate`).
    pub allocate: Vec<String>,
}

impl Default for TrackerOptions {
    fn default() -> Self {
        Self {
            key_seed: None,
            epoch_secs: 1.0,
            devnet: true,
            config: String::new(),
            allocate: Vec::new(),
        }
    }
}

/// Initialises a tracker home on loopback and starts it.
pub fn tracker(options: TrackerOptions) -> Daemon {
    let run = vec![
        "run".to_string(),
        "--epoch-secs".to_string(),
        options.epoch_secs.to_string(),
    ];
    let mut d = Daemon::new("crowd-tracker", "tracker.json", run, options.key_seed);
    let mut init: Vec<&str> = if options.devnet { vec!["--devnet"] } else { vec![] };
    for a in &options.allocate {
        init.extend(["--allocate", a]);
    }
    d.init(&init);
    d.write_config(&format!(
        "listen = [\"/ip4/127.0.0.1/tcp/0\", \"/ip4/127.0.0.1/udp/0/quic-v1\"]\nmetrics_address = \"127.0.0.1:0\"\nfaucet = {}\nallocations = {:?}\n{}\n",
        options.devnet, options.allocate, options.config
    ));
    d.start();
    d
}

/// A free TCP port on loopback (bound, then let go: the replica set's list
/// names ports before the processes start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `n` tracker replicas on loopback: homes initialised as devnets with one
/// shared tracker key (so one genesis), each with its own network identity
/// (`crowd-tracker replica-id`) on a fixed TCP port, all listed in every
/// config.toml; started in id order (ids 1..=n).
pub fn tracker_replicas(n: usize, epoch_secs: f64) -> Vec<Daemon> {
    tracker_replicas_with(n, epoch_secs, |_, _| {})
}

/// [`tracker_replicas`], with `prepare(i, home)` called on each configured
/// home just before it starts.
pub fn tracker_replicas_with(
    n: usize,
    epoch_secs: f64,
    mut prepare: impl FnMut(usize, &Daemon),
) -> Vec<Daemon> {
    let key = Keypair::generate_ed25519();
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let homes: Vec<(Daemon, String)> = (0..n).map(|_| replica_home(&key, epoch_secs)).collect();
    let list: Vec<String> = homes
        .iter()
        .zip(&ports)
        .enumerate()
        .map(|(i, ((_, peer), port))| replica_line(i as u64 + 1, peer, *port))
        .collect();
    let mut out = Vec::new();
    for (i, (mut d, _)) in homes.into_iter().enumerate() {
        configure_replica(&d, ports[i], i as u64 + 1, &list);
        prepare(i, &d);
        d.start();
        out.push(d);
    }
    out
}

/// A tracker replica's home sharing the tracker `key` (so the devnet
/// genesis), not yet configured, and its replica peer id.
pub fn replica_home(key: &Keypair, epoch_secs: f64) -> (Daemon, String) {
    let run = vec![
        "run".to_string(),
        "--epoch-secs".to_string(),
        epoch_secs.to_string(),
    ];
    let d = Daemon::new("crowd-tracker", "tracker.json", run, None);
    write_key(&d.path("identity.key"), key);
    d.init(&["--devnet"]);
    let out = d.exec(&["replica-id"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let peer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (d, peer)
}

/// A replica set entry: "ID PEER /ip4/127.0.0.1/tcp/PORT".
pub fn replica_line(id: u64, peer: &str, port: u16) -> String {
    format!("{id} {peer} /ip4/127.0.0.1/tcp/{port}")
}

/// Configures replica `id` of the set `list`, listening on `port`.
pub fn configure_replica(d: &Daemon, port: u16, id: u64, list: &[String]) {
    d.write_config(&format!(
        "listen = [\"/ip4/127.0.0.1/tcp/{port}\"]\nmetrics_address = \"127.0.0.1:0\"\nfaucet = true\nreplica_id = {id}\nreplicas = {list:?}\n",
    ));
}

/// How to start a storage node.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    pub key_seed: Option<u8>,
    /// More config.toml lines (not listen, metrics_address or the tracker's).
    pub config: String,
}

/// Initialises a node home on loopback, pointed at `tracker`, and starts it.
pub fn node(tracker: &Daemon, options: NodeOptions) -> Daemon {
    let mut d = Daemon::new("crowd-node", "node.json", vec!["run".into()], options.key_seed);
    d.init(&[]);
    d.write_config(&format!(
        "listen = [\"/ip4/127.0.0.1/tcp/0\", \"/ip4/127.0.0.1/udp/0/quic-v1\"]\nmetrics_address = \"127.0.0.1:0\"\ntracker_peer_id = \"{}\"\ntracker_address = \"{}\"\ntransfer_timeout_secs = 20\n{}\n",
        tracker.peer,
        tracker.tcp_addr(),
        options.config
    ));
    d.start();
    d
}

/// The tracker's signing identity in a home (its `identity.key`): for a
/// replica set, the peer id nodes check tracker messages against.
pub fn signing_peer(d: &Daemon) -> PeerId {
    let bytes = std::fs::read(d.path("identity.key")).unwrap();
    Keypair::from_protobuf_encoding(&bytes)
        .unwrap()
        .public()
        .to_peer_id()
}

/// Initialises a node home on loopback for a tracker replica set (its
/// signing identity, every replica's address) and starts it.
pub fn node_for_replicas(replicas: &[Daemon], options: NodeOptions) -> Daemon {
    let mut d = Daemon::new("crowd-node", "node.json", vec!["run".into()], options.key_seed);
    d.init(&[]);
    let addrs: Vec<String> = replicas.iter().map(|r| r.tcp_addr().to_string()).collect();
    d.write_config(&format!(
        "listen = [\"/ip4/127.0.0.1/tcp/0\", \"/ip4/127.0.0.1/udp/0/quic-v1\"]\nmetrics_address = \"127.0.0.1:0\"\ntracker_peer_id = \"{}\"\ntracker_address = \"{}\"\ntracker_replicas = {:?}\ntransfer_timeout_secs = 20\n{}\n",
        signing_peer(&replicas[0]),
        addrs[0],
        addrs,
        options.config
    ));
    d.start();
    d
}

/// A deal's terms for [`Client::proposal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub price_per_epoch: u128,
    pub start_epoch: u64,
    pub duration_epochs: u64,
    pub provider_collateral: u128,
    pub expiry_epoch: u64,
    pub nonce: u64,
}

/// An in-process client: its own swarm and key, connected to a tracker.
#[derive(Debug)]
pub struct Client {
    pub key: Keypair,
    pub net: Network,
    pub tracker: PeerId,
    /// The tracker's network (asked at start).
    pub network: crowd_protocol::NetworkId,
}

impl Client {
    /// A swarm on loopback with `key`, connected to `tracker`.
    pub async fn start(tracker: &Daemon, key: Keypair) -> Self {
        let config = NetworkConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            request_timeout: Duration::from_secs(30),
            ..NetworkConfig::default()
        };
        let (net, _inbound) = Network::start(key.clone(), config).await.unwrap();
        let mut client = Self {
            key,
            net,
            tracker: tracker.peer,
            network: crowd_protocol::NetworkId([0; 32]),
        };
        client.connect(tracker).await;
        client.network = client.info().await.network;
        client
    }

    pub fn peer(&self) -> PeerId {
        self.key.public().to_peer_id()
    }

    /// Dials a process at its current TCP address (after a restart too),
    /// as `crowd` and the nodes reach the tracker (its configured TCP
    /// address). Not QUIC: a QUIC connection to a SIGKILLed process gets no
    /// close and lingers until its idle timeout, and requests that
    /// request-response spreads over it meanwhile time out (seen as the
    /// "Timeout while waiting for a response" flake after a tracker restart).
    pub async fn connect(&self, d: &Daemon) {
        self.net
            .dial(d.peer, vec![strip_p2p(d.tcp_addr())])
            .await
            .unwrap();
    }

    /// One tracker request; an error answer is `Err(message)`.
    pub async fn ask(&self, request: TrackerRequest) -> Result<TrackerResponse, String> {
        self.ask_at(self.tracker, request).await
    }

    /// One tracker request to `peer` (a replica of a set).
    pub async fn ask_at(&self, peer: PeerId, request: TrackerRequest) -> Result<TrackerResponse, String> {
        match self.net.request(peer, Request::Tracker(request)).await {
            Ok(Response::Tracker(r)) => Ok(r),
            Ok(Response::Error { message }) => Err(message),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    pub async fn info(&self) -> TrackerInfo {
        match self.ask(TrackerRequest::Info).await {
            Ok(TrackerResponse::Info(i)) => i,
            other => panic!("info: {other:?}"),
        }
    }

    pub async fn faucet(&self, account: PeerId, amount: u128) {
        match self.ask(TrackerRequest::Faucet { account, amount }).await {
            Ok(TrackerResponse::Minted { amount: a }) => assert_eq!(a, amount),
            other => panic!("faucet: {other:?}"),
        }
    }

    pub async fn account(&self, who: PeerId) -> AccountView {
        match self.ask(TrackerRequest::Account(who)).await {
            Ok(TrackerResponse::Account(a)) => a,
            other => panic!("account: {other:?}"),
        }
    }

    pub async fn providers(&self) -> Vec<ProviderEntry> {
        match self.ask(TrackerRequest::Providers).await {
            Ok(TrackerResponse::Providers(p)) => p,
            other => panic!("providers: {other:?}"),
        }
    }

    pub async fn deal(&self, id: u64) -> DealView {
        match self.ask(TrackerRequest::Deals(DealQuery::Ids(vec![id]))).await {
            Ok(TrackerResponse::Deals(mut d)) if d.len() == 1 => d.remove(0),
            other => panic!("deal {id}: {other:?}"),
        }
    }

    /// A proposal of `piece` to `node` on `terms`.
    pub fn proposal(&self, node: &Daemon, piece: &[u8], terms: Terms) -> DealProposal {
        DealProposal {
            piece: PieceId(*blake3::hash(piece).as_bytes()),
            piece_size: piece.len() as u64,
            client: self.peer(),
            provider: node.peer,
            price_per_epoch: terms.price_per_epoch,
            start_epoch: terms.start_epoch,
            duration_epochs: terms.duration_epochs,
            provider_collateral: terms.provider_collateral,
            expiry_epoch: terms.expiry_epoch,
            nonce: terms.nonce,
        }
    }

    /// Proposes to the node; returns the signed proposal and its acceptance.
    pub async fn propose(
        &self,
        node: &Daemon,
        proposal: &DealProposal,
    ) -> (Signed<DealProposal>, Signed<DealAcceptance>) {
        let signed = Signed::sign(&self.key, &self.network, proposal).unwrap();
        let admission = match self.ask(TrackerRequest::Admit(signed.clone())).await {
            Ok(TrackerResponse::Admitted(a)) => a,
            other => panic!("proposal not admitted: {other:?}"),
        };
        match self
            .net
            .request(
                node.peer,
                Request::ProposeDeal {
                    proposal: signed.clone(),
                    admission,
                },
            )
            .await
            .unwrap()
        {
            Response::DealAccepted(a) => (signed, a),
            other => panic!("deal not accepted: {other:?}"),
        }
    }

    /// Uploads the piece of an accepted proposal.
    pub async fn upload(&self, node: &Daemon, proposal: [u8; 32], bytes: &[u8]) -> UploadResult {
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

    pub async fn publish(
        &self,
        proposal: Signed<DealProposal>,
        acceptance: Signed<DealAcceptance>,
    ) -> Result<u64, String> {
        match self
            .ask(TrackerRequest::Publish {
                proposal,
                acceptance,
                receipt: None,
            })
            .await?
        {
            TrackerResponse::Published { deal_id } => Ok(deal_id),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Propose, upload, publish: returns the deal id.
    pub async fn store(&self, node: &Daemon, piece: &[u8], terms: Terms) -> u64 {
        self.connect(node).await;
        let proposal = self.proposal(node, piece, terms);
        let (signed, acceptance) = self.propose(node, &proposal).await;
        match self.upload(node, signed.id(), piece).await {
            UploadResult::Stored(_) => {}
            UploadResult::Rejected { reason } => panic!("upload rejected: {reason}"),
        }
        self.publish(signed, acceptance).await.unwrap()
    }
}

fn strip_p2p(mut a: Multiaddr) -> Multiaddr {
    if matches!(
        a.iter().last(),
        Some(crowd_protocol::libp2p::multiaddr::Protocol::P2p(_))
    ) {
        a.pop();
    }
    a
}
