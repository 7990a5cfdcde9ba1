//! One tracker replica in a directory: its tracker store (`db/`, as a
//! single tracker's, so `crowd-tracker ledger verify` reads it), its Raft
//! log (`raft/`), the owner thread applying commands, its libp2p swarm, its
//! Raft and the task serving Raft calls.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::{Multiaddr, PeerId};
use crowd_protocol::{Network, NetworkConfig};

use super::network::{self, InboundStats};
use super::store::{open_db, LogStore, TrackerMachine};
use super::{config, Replica, ReplicaId, TrackerRaft};
use crate::service::metrics::Metrics;
use crate::service::state::{init_store, stored_genesis, Clock};
use crate::service::{Owner, RocksStore, ServiceError, State};
use crate::types::LedgerConfig;
use crate::Hash32;
use crowd_protocol::Amount;

/// A running replica.
pub struct Running {
    pub id: ReplicaId,
    pub key: Keypair,
    pub dir: PathBuf,
    /// The address it listens on (TCP, loopback or not).
    pub addr: Multiaddr,
    pub net: Network,
    pub raft: TrackerRaft,
    /// Its tracker (reads are answered from it; writes go through Raft).
    pub owner: Owner,
    pub stats: Arc<InboundStats>,
    serving: tokio::task::JoinHandle<()>,
    thread: std::thread::JoinHandle<Result<(), ServiceError>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("id", &self.id)
            .field("dir", &self.dir)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// What a stopped replica keeps: enough to start it again on its disk.
#[derive(Debug, Clone)]
pub struct Stopped {
    pub id: ReplicaId,
    pub key: Keypair,
    pub dir: PathBuf,
    pub addr: Multiaddr,
}

/// What every replica of a set shares.
#[derive(Debug, Clone)]
pub struct Shared {
    pub genesis: LedgerConfig,
    /// The tracker's signing key (its public key is the genesis one).
    pub tracker_key: Keypair,
    /// The faucet's largest mint (devnets), as the single tracker's config.
    pub faucet_max: Amount,
    /// The peers of the replica set it starts with.
    pub set: HashSet<PeerId>,
}

fn err(what: &str, e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Config(format!("replica: {what}: {e}"))
}

impl Shared {
    /// A devnet genesis signed by `tracker_key`, for the replicas whose
    /// network keys are `keys`.
    pub fn devnet(tracker_key: Keypair, faucet_max: Amount, keys: &[Keypair]) -> Self {
        Self {
            genesis: LedgerConfig::devnet(&tracker_key.public()),
            tracker_key,
            faucet_max,
            set: keys.iter().map(|k| k.public().to_peer_id()).collect(),
        }
    }
}

/// Starts one replica per key on loopback (ids 1.., directories
/// `<dir>/r0` …) and starts the set from the first; returns them in id
/// order once they are running (not yet once a leader is elected).
pub async fn start_local_set(
    dir: &Path,
    keys: &[Keypair],
    shared: &Shared,
) -> Result<Vec<Running>, ServiceError> {
    let loopback: Multiaddr = "/ip4/127.0.0.1/tcp/0"
        .parse()
        .map_err(|e| err("loopback address", e))?;
    let mut replicas = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let home = dir.join(format!("r{i}"));
        replicas.push(Running::start(i as u64 + 1, key.clone(), &home, loopback.clone(), shared).await?);
    }
    let members: std::collections::BTreeMap<ReplicaId, Replica> =
        replicas.iter().map(|r| (r.id, r.replica())).collect();
    if let Some(first) = replicas.first() {
        first
            .raft
            .initialize(members)
            .await
            .map_err(|e| err("starting the set", e))?;
    }
    Ok(replicas)
}

impl Running {
    /// Starts replica `id` with network identity `key` in `dir` (its stores
    /// created if missing, the tracker's with `shared.genesis`), listening
    /// on `listen`.
    pub async fn start(
        id: ReplicaId,
        key: Keypair,
        dir: &Path,
        listen: Multiaddr,
        shared: &Shared,
    ) -> Result<Self, ServiceError> {
        let store = RocksStore::open(&dir.join("db"))?;
        match stored_genesis(&store)? {
            None => init_store(&store, &shared.genesis)?,
            Some(g) if g != shared.genesis => {
                return Err(err(
                    "its store",
                    "it holds another genesis than the replica set's",
                ))
            }
            Some(_) => {}
        }
        let state = State::open(
            store,
            shared.tracker_key.clone(),
            shared.faucet_max,
            Arc::new(Clock::new(Duration::from_secs(3600))),
            Arc::new(Metrics::default()),
        )?;
        let (owner, thread) = Owner::spawn(state)?;
        let db = open_db(&dir.join("raft")).map_err(|e| err("opening its raft log", e))?;
        let netconf = NetworkConfig {
            listen: vec![listen],
            request_timeout: Duration::from_secs(10),
            ..NetworkConfig::default()
        };
        let (net, _inbound) = Network::start(key.clone(), netconf)
            .await
            .map_err(|e| err("its network", e))?;
        let addr = net
            .listen_addrs()
            .await
            .map_err(|e| err("its address", e))?
            .into_iter()
            .next()
            .ok_or_else(|| err("its address", "not listening"))?;
        let config = config().validate().map_err(|e| err("raft config", e))?;
        let raft = TrackerRaft::new(
            id,
            Arc::new(config),
            network::Factory::new(net.clone()),
            LogStore::new(db),
            TrackerMachine::new(owner.clone()),
        )
        .await
        .map_err(|e| err("starting raft", e))?;
        let stats = Arc::new(InboundStats::default());
        let serving = tokio::spawn({
            let (net, raft, set, stats) = (net.clone(), raft.clone(), shared.set.clone(), stats.clone());
            async move {
                if let Err(e) = network::serve(net, raft, set, stats).await {
                    tracing::warn!("raft calls no longer served: {e}");
                }
            }
        });
        Ok(Self {
            id,
            key,
            dir: dir.to_path_buf(),
            addr,
            net,
            raft,
            owner,
            stats,
            serving,
            thread,
        })
    }

    /// How the others reach it.
    pub fn replica(&self) -> Replica {
        Replica {
            peer: self.key.public().to_peer_id().to_string(),
            addrs: vec![self.addr.to_string()],
        }
    }

    /// (log length, head) of its ledger as applied here.
    pub async fn head(&self) -> Option<(u64, Hash32)> {
        self.owner.head().await.ok()
    }

    /// The leader it knows of.
    pub fn leader(&self) -> Option<ReplicaId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Stops it as a crash would leave it: Raft stopped, no call served,
    /// its database closed once the last handle goes (only what was synced
    /// survives).
    pub async fn stop(self) -> Stopped {
        self.serving.abort();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft did not stop cleanly: {e}");
        }
        self.owner.stop().await;
        let thread = self.thread;
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(Ok(()))) => {}
            other => tracing::warn!("the replica's owner thread ended badly: {other:?}"),
        }
        Stopped {
            id: self.id,
            key: self.key,
            dir: self.dir,
            addr: self.addr,
        }
    }
}
