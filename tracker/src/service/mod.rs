//! The tracker service around the ledger: home directory, store, request
//! handling, the epoch loop and metrics (see the crate documentation's
//! *Service* section). `crowd-tracker` (src/main.rs) is a thin CLI over
//! [`init`], [`run`] and [`verify`].

pub mod admin;
pub mod config;
pub mod dashboard;
pub mod epoch;
mod error;
pub mod metrics;
pub mod raft;
mod records;
pub mod repair;
pub mod state;
pub mod store;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::multiaddr::Protocol;
use crowd_protocol::libp2p::PeerId;
use crowd_protocol::{InboundRequest, Network, NetworkConfig, Request, Response};
use tokio::sync::Semaphore;

pub use config::TrackerConfig;
pub use error::ServiceError;
pub use state::{Owner, State};
pub use store::{MemStore, RocksStore, Store};

use crate::{replay, Hash32};

/// Tracker requests being answered at once; beyond this peers get "busy".
pub const MAX_INBOUND: usize = 256;

/// The files under a tracker's home.
#[derive(Debug, Clone)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("identity.key")
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    pub fn db(&self) -> PathBuf {
        self.dir.join("db")
    }
    /// Written when the tracker is ready, removed when it stops.
    pub fn info(&self) -> PathBuf {
        self.dir.join("tracker.json")
    }
    /// A replica's network identity (its tracker signing key is `key()`,
    /// shared by the replica set).
    pub fn replica_key(&self) -> PathBuf {
        self.dir.join("replica.key")
    }
    /// A replica's Raft log.
    pub fn raft(&self) -> PathBuf {
        self.dir.join("raft")
    }
    /// Whether `init` has run here.
    pub fn is_initialised(&self) -> bool {
        self.config().exists() && self.db().join("CURRENT").exists()
    }
}

/// What `init` did, for the CLI to print.
#[derive(Debug, Clone)]
pub struct InitReport {
    pub peer_id: String,
    pub config_written: bool,
    pub config_path: PathBuf,
    pub faucet: bool,
    pub genesis_head: Hash32,
}

/// `crowd-tracker init`: the identity key (kept if present), a documented
/// config.toml (kept unless `force`) and the ledger store with its genesis
/// fixed (never replaced). `devnet` turns the faucet on for a new ledger.
pub fn init(home: &Path, devnet: bool, force: bool, allocate: &[String]) -> Result<InitReport, ServiceError> {
    let home = Home::new(home);
    std::fs::create_dir_all(&home.dir)
        .map_err(|e| ServiceError::Config(format!("cannot create {}: {e}", home.dir.display())))?;
    let key = crowd_protocol::util::load_or_create_key(&home.key())?;
    let store = RocksStore::open(&home.db())?;
    let stored = state::stored_genesis(&store)?;
    if let Some(g) = &stored {
        if devnet && !g.faucet {
            return Err(ServiceError::Config(
                "--devnet: this ledger was created without the faucet, and its genesis cannot change".into(),
            ));
        }
    }
    let path = home.config();
    if !allocate.is_empty() {
        if stored.is_some() {
            return Err(ServiceError::Config(
                "--allocate: this ledger exists already, and its genesis cannot change".into(),
            ));
        }
        if path.exists() && !force {
            return Err(ServiceError::Config(format!(
                "--allocate: {} exists (use --force to rewrite it, or list the allocations in it)",
                path.display()
            )));
        }
    }
    let (config, written) = if path.exists() && !force {
        let config = TrackerConfig::load(&path)?;
        if devnet && !config.faucet {
            return Err(ServiceError::Config(format!(
                "--devnet: {} has faucet = false (use --force to rewrite it)",
                path.display()
            )));
        }
        (config, false)
    } else {
        let mut config = TrackerConfig {
            faucet: devnet,
            allocations: allocate.to_vec(),
            ..TrackerConfig::default()
        };
        config.check()?;
        if let Some(g) = &stored {
            config = config.with_genesis(g);
        }
        write_atomic(&path, config.render().as_bytes())?;
        (config, true)
    };
    let genesis = match stored {
        Some(g) => {
            config.check_genesis(&g)?;
            g
        }
        None => {
            let g = config.genesis(&key.public());
            state::init_store(&store, &g)?;
            g
        }
    };
    Ok(InitReport {
        peer_id: key.public().to_peer_id().to_string(),
        config_written: written,
        config_path: path,
        faucet: genesis.faucet,
        genesis_head: crate::genesis_head(&genesis),
    })
}

/// `crowd-tracker replica-id`: the network identity this home runs with as
/// a replica (`replica.key`, created if missing), for the replica set's
/// `replicas` lists.
pub fn replica_id(home: &Path) -> Result<String, ServiceError> {
    let home = Home::new(home);
    std::fs::create_dir_all(&home.dir)?;
    let key = crowd_protocol::util::load_or_create_key(&home.replica_key())?;
    Ok(key.public().to_peer_id().to_string())
}

/// Writes a file crash-consistently: a temporary file, fsync, rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ServiceError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Options of `crowd-tracker run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Overrides `epoch_secs` from config.toml.
    pub epoch_secs: Option<f64>,
    /// Initialise an empty home as a devnet; refuse a ledger without the faucet.
    pub devnet: bool,
}

/// `crowd-tracker run`: serves until SIGINT or SIGTERM, or until the ledger
/// owner stops on a store failure (an error).
pub async fn run(home: &Path, options: RunOptions) -> Result<(), ServiceError> {
    let home = Home::new(home);
    if options.devnet && !home.is_initialised() {
        let report = init(&home.dir, true, false, &[])?;
        tracing::info!(peer_id = %report.peer_id, "initialised a devnet tracker home");
    }
    if !home.is_initialised() {
        return Err(ServiceError::Config(format!(
            "{} is not initialised: run `crowd-tracker init --home {}` first",
            home.dir.display(),
            home.dir.display()
        )));
    }
    let mut config = TrackerConfig::load(&home.config())?;
    if let Some(secs) = options.epoch_secs {
        config.epoch_secs = secs;
    }
    let epoch = config::epoch_duration(config.epoch_secs)?;
    let key = read_key(&home.key())?;
    let store = RocksStore::open(&home.db())?;
    let genesis = state::stored_genesis(&store)?
        .ok_or_else(|| ServiceError::Config("no ledger genesis: run `crowd-tracker init` first".into()))?;
    config.check_genesis(&genesis)?;
    if options.devnet && !genesis.faucet {
        return Err(ServiceError::Config(
            "--devnet: this ledger was created without the faucet".into(),
        ));
    }
    let clock = Arc::new(state::Clock::new(epoch));
    let metrics = Arc::new(metrics::Metrics::default());
    let state = State::open(
        store,
        key.clone(),
        u128::from(config.faucet_max),
        clock.clone(),
        metrics.clone(),
    )?;
    let network = state.ledger().network();
    tracing::info!(
        epoch = state.ledger().epoch(),
        log = state.ledger().log_len(),
        network = %network.to_hex(),
        "ledger opened"
    );

    let listen = config
        .listen
        .iter()
        .map(|a| a.parse())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServiceError::Config(format!("listen: {e}")))?;
    let provider_timeout = Duration::from_secs(config.provider_timeout_secs);
    let net_config = NetworkConfig {
        listen,
        request_timeout: provider_timeout,
        ..NetworkConfig::default()
    };
    let replicas = config::parse_replicas(&config.replicas)?;
    // a replica has a network identity of its own; the tracker key signs
    let net_key = if replicas.is_empty() {
        key.clone()
    } else {
        crowd_protocol::util::load_or_create_key(&home.replica_key())?
    };
    let (net, inbound) = Network::start(net_key.clone(), net_config).await?;
    let (owner, owner_thread) = Owner::spawn(state)?;
    let (raft_stopped_tx, raft_stopped) = tokio::sync::oneshot::channel::<String>();
    let writer = if replicas.is_empty() {
        metrics.leads.set(1);
        drop(raft_stopped_tx);
        writer::Writer::Single(owner.clone())
    } else {
        start_replica(
            &home,
            config.replica_id,
            &replicas,
            &net,
            &owner,
            &metrics,
            raft_stopped_tx,
        )
        .await?
    };
    let (owner_done_tx, owner_done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ledger-watch".into())
        .spawn(move || {
            let result = owner_thread
                .join()
                .unwrap_or_else(|_| Err(ServiceError::Corrupt("the ledger owner panicked".into())));
            let _ = owner_done_tx.send(result);
        })?;

    let audit = Audit {
        home: home.dir.clone(),
        key: net_key.clone(),
        tracker: key.public().to_peer_id(),
        network,
        slot: Arc::new(Semaphore::new(1)),
    };
    let serving = tokio::spawn(serve_requests(writer.clone(), audit, inbound, metrics.clone()));
    let epochs = tokio::spawn(
        epoch::EpochLoop {
            ledger: writer.clone(),
            net: net.clone(),
            key: key.clone(),
            network,
            epoch,
            provider_timeout,
            max_requests: config.max_provider_requests,
            max_per_provider: config.max_requests_per_provider,
            clock,
            metrics: metrics.clone(),
        }
        .run(),
    );
    let mut metrics_addr = String::new();
    if !config.metrics_address.is_empty() {
        let listener = tokio::net::TcpListener::bind(&config.metrics_address)
            .await
            .map_err(|e| ServiceError::Config(format!("metrics_address {}: {e}", config.metrics_address)))?;
        metrics_addr = listener.local_addr()?.to_string();
        let registry = Arc::new(metrics.registry());
        let owner = owner.clone();
        tokio::spawn(async move {
            if let Err(e) = dashboard::serve(listener, owner, registry).await {
                tracing::warn!("the network page stopped: {e}");
            }
        });
    }
    let peer_id = net_key.public().to_peer_id();
    let addrs = net.listen_addrs().await?;
    // before announcing readiness: a SIGTERM from then on stops us cleanly
    let shutdown = crowd_protocol::util::shutdown_signal();
    let info = serde_json::json!({
        "peer_id": peer_id.to_string(),
        "listen": addrs.iter().map(|a| a.clone().with(Protocol::P2p(peer_id)).to_string()).collect::<Vec<_>>(),
        "metrics": metrics_addr,
        "pid": std::process::id(),
        "replica_id": (!replicas.is_empty()).then_some(config.replica_id),
    });
    let info_bytes = serde_json::to_vec_pretty(&info).map_err(|e| ServiceError::Io(e.into()))?;
    write_atomic(&home.info(), &info_bytes)?;
    println!("crowd-tracker {peer_id} ready");
    for a in &addrs {
        println!("listening on {}", a.clone().with(Protocol::P2p(peer_id)));
    }
    if !metrics_addr.is_empty() {
        println!("network page on http://{metrics_addr}/ (metrics on http://{metrics_addr}/metrics)");
    }

    let mut owner_done = owner_done;
    let mut owner_ended = false;
    let result = tokio::select! {
        _ = shutdown => {
            tracing::info!("shutting down");
            Ok(())
        }
        r = &mut owner_done => {
            owner_ended = true;
            match r {
                Ok(Err(e)) => Err(e),
                _ => Err(ServiceError::Stopped),
            }
        }
        r = epochs => match r {
            Ok(Err(e)) => Err(e),
            _ => Err(ServiceError::Stopped),
        },
        Ok(why) = raft_stopped => Err(ServiceError::Store(why)),
    };
    let _ = std::fs::remove_file(home.info());
    serving.abort();
    if let writer::Writer::Replica { raft, .. } = &writer {
        if let Err(e) = raft.shutdown().await {
            tracing::warn!("raft did not stop cleanly: {e}");
        }
    }
    // the owner finishes the commands before this one and closes the store;
    // wait for that: exiting while RocksDB is still closing aborted the
    // process ("pthread lock: Invalid argument", SIGABRT on a SIGTERM)
    owner.stop().await;
    if !owner_ended {
        let _ = owner_done.await;
    }
    result
}

/// Starts this home's replica: its Raft log, Raft over the swarm, the task
/// serving Raft calls; the lowest id starts the set (once: a set already
/// started refuses, harmlessly).
async fn start_replica(
    home: &Home,
    id: raft::ReplicaId,
    replicas: &std::collections::BTreeMap<raft::ReplicaId, raft::Replica>,
    net: &Network,
    owner: &Owner,
    metrics: &Arc<metrics::Metrics>,
    stopped: tokio::sync::oneshot::Sender<String>,
) -> Result<writer::Writer, ServiceError> {
    let db = raft::store::open_db(&home.raft()).map_err(|e| {
        ServiceError::Store(format!("raft log {}: {}", home.raft().display(), e.into_string()))
    })?;
    let config = raft::config()
        .validate()
        .map_err(|e| ServiceError::Config(format!("raft: {e}")))?;
    let raft = raft::TrackerRaft::new(
        id,
        Arc::new(config),
        raft::network::Factory::new(net.clone()),
        raft::store::LogStore::new(db),
        raft::store::TrackerMachine::new(owner.clone()),
    )
    .await
    .map_err(|e| ServiceError::Config(format!("raft: {e}")))?;
    let set = replicas
        .values()
        .filter_map(|r| r.peer.parse().ok())
        .collect::<std::collections::HashSet<_>>();
    let stats = Arc::new(raft::network::InboundStats::default());
    tokio::spawn({
        let (net, raft) = (net.clone(), raft.clone());
        async move {
            if let Err(e) = raft::network::serve(net, raft, set, stats).await {
                tracing::warn!("raft calls no longer served: {e}");
            }
        }
    });
    if replicas.keys().next() == Some(&id) {
        match raft.initialize(replicas.clone()).await {
            Ok(()) => tracing::info!(replicas = replicas.len(), "started the replica set"),
            Err(e) => tracing::debug!("the replica set was started before: {e}"),
        }
    }
    // the `leads` gauge follows Raft's view of the leader; a Raft stopped by
    // a fatal error (its storage failed: a full disk, a dying one) stops
    // the process with one line: what it acknowledged is on disk and the
    // others go on; restarted with room, it catches up
    tokio::spawn({
        let (mut watch, metrics) = (raft.metrics(), metrics.clone());
        async move {
            loop {
                let (leads, fatal) = {
                    let m = watch.borrow();
                    // `Stopped` is a shutdown this process asked for
                    let fatal = m
                        .running_state
                        .clone()
                        .err()
                        .filter(|f| !matches!(f, openraft::error::Fatal::Stopped));
                    (m.current_leader == Some(id), fatal)
                };
                metrics.leads.set(i64::from(leads && fatal.is_none()));
                if let Some(fatal) = fatal {
                    let line = format!("replica {id} stopped: Raft stopped on its own error: {fatal}");
                    tracing::error!("{line}");
                    let _ = stopped.send(line.replace('\n', " "));
                    break;
                }
                if watch.changed().await.is_err() {
                    break;
                }
            }
        }
    });
    tracing::info!(id, "running as a tracker replica");
    Ok(writer::Writer::Replica {
        owner: owner.clone(),
        raft,
        id,
    })
}

/// What answers `Head`: this home's ledger, replayed by `verify` (one at a
/// time: a replay reads the whole log), signed with this process's network
/// key (a replica speaks for itself).
#[derive(Clone)]
struct Audit {
    home: PathBuf,
    key: Keypair,
    /// The tracker key's peer id (it signs replica set changes).
    tracker: PeerId,
    network: crowd_protocol::NetworkId,
    slot: Arc<Semaphore>,
}

impl Audit {
    async fn head(&self, upto: Option<u64>) -> Response {
        let Ok(_one) = self.slot.clone().try_acquire_owned() else {
            return Response::Error {
                message: "busy: a ledger replay is running, try again".into(),
            };
        };
        let home = self.home.clone();
        let replayed = tokio::task::spawn_blocking(move || verify(&home, upto)).await;
        let report = match replayed {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Response::Error {
                    message: format!("this tracker's ledger does not verify: {e}"),
                }
            }
            Err(e) => {
                return Response::Error {
                    message: format!("the replay stopped: {e}"),
                }
            }
        };
        let statement = crowd_protocol::HeadStatement {
            entries: report.entries,
            epoch: report.epoch,
            head: report.head,
        };
        match crowd_protocol::Signed::sign(&self.key, &self.network, &statement) {
            Ok(s) => Response::Tracker(crowd_protocol::TrackerResponse::Head(s)),
            Err(e) => Response::Error {
                message: format!("cannot sign: {e}"),
            },
        }
    }
}

/// Answers control requests: tracker requests go to the ledger (at most
/// [`MAX_INBOUND`] at once), anything else is refused at once.
async fn serve_requests(
    writer: writer::Writer,
    audit: Audit,
    mut inbound: tokio::sync::mpsc::Receiver<InboundRequest>,
    metrics: Arc<metrics::Metrics>,
) {
    let limit = Arc::new(Semaphore::new(MAX_INBOUND));
    while let Some(req) = inbound.recv().await {
        let request = match &req.request {
            Ok(Request::Tracker(t)) => t.clone(),
            Ok(_) => {
                metrics.requests_refused.inc();
                req.respond(Response::Error {
                    message: "this is a tracker, not a storage node".into(),
                });
                continue;
            }
            Err(reason) => {
                metrics.requests_refused.inc();
                let message = format!("malformed request: {reason}");
                req.respond(Response::Error { message });
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics.requests_refused.inc();
            req.respond(Response::Error {
                message: "busy: too many requests in flight".into(),
            });
            continue;
        };
        let (writer, audit) = (writer.clone(), audit.clone());
        tokio::spawn(async move {
            let answer = match request {
                crowd_protocol::TrackerRequest::Head { upto } => {
                    req.respond(audit.head(upto).await);
                    drop(permit);
                    return;
                }
                crowd_protocol::TrackerRequest::Replicas => writer.replicas(),
                crowd_protocol::TrackerRequest::ChangeReplicas(signed) => {
                    writer
                        .change_replicas(&audit.network, &audit.tracker, &signed)
                        .await
                }
                request => writer.request(req.peer, request).await,
            };
            let response = match answer {
                Ok(r) => Response::Tracker(r),
                Err(message) => Response::Error { message },
            };
            req.respond(response);
            drop(permit);
        });
    }
}

/// What `ledger verify` found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub entries: u64,
    pub epoch: crowd_protocol::Epoch,
    pub head: Hash32,
    /// Supply and balances at that point, as the network page sums them.
    pub totals: dashboard::Totals,
}

impl VerifyReport {
    /// The report as JSON (`ledger verify --json`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "entries": self.entries,
            "epoch": self.epoch,
            "head": self.head.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "totals": self.totals,
        })
    }
}

/// `crowd-tracker ledger verify`: replays the stored log from genesis,
/// checks that the stored snapshot is exactly the state the log reaches at
/// its point, and that the whole log replays (heads, events, invariants).
/// Reads a consistent view even while the tracker runs (RocksDB secondary).
pub fn verify(home: &Path, upto: Option<u64>) -> Result<VerifyReport, ServiceError> {
    let home = Home::new(home);
    let scratch = tempfile::tempdir()?;
    let store = RocksStore::open_secondary(&home.db(), scratch.path())?;
    let genesis = state::stored_genesis(&store)?
        .ok_or_else(|| ServiceError::Corrupt("the store has no genesis".into()))?;
    let log = state::stored_log(&store)?;
    if let Some(snapshot) = state::stored_snapshot(&store)? {
        let at = usize::try_from(snapshot.log_len()).unwrap_or(usize::MAX);
        if at > log.len() {
            return Err(ServiceError::Corrupt(format!(
                "the snapshot is at entry {at}, the log has {}",
                log.len()
            )));
        }
        replay(genesis.clone(), &log[..at])?.verify_against(&snapshot)?;
    }
    let end = match upto {
        Some(n) if n > log.len() as u64 => {
            return Err(ServiceError::Config(format!(
                "--upto {n}: the log has {} entries",
                log.len()
            )))
        }
        Some(n) => n as usize,
        None => log.len(),
    };
    let ledger = replay(genesis, &log[..end])?;
    Ok(VerifyReport {
        entries: ledger.log_len(),
        epoch: ledger.epoch(),
        head: ledger.head(),
        totals: dashboard::Totals::of(&ledger),
    })
}

/// Reads a key file that must exist (for tools that must not create one).
pub fn read_key(path: &Path) -> Result<Keypair, ServiceError> {
    if !path.exists() {
        return Err(ServiceError::Config(format!("{} is missing", path.display())));
    }
    Ok(crowd_protocol::util::load_or_create_key(path)?)
}
