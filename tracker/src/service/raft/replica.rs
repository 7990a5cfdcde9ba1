//! One ledger replica: its RocksDB (log and snapshots), its libp2p swarm,
//! its Raft and the task serving Raft calls.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::{Multiaddr, PeerId};
use crowd_protocol::{Network, NetworkConfig};

use super::network::{self, InboundStats};
use super::store::{open_db, LedgerMachine, LogStore};
use super::{config, LedgerRaft, Replica, ReplicaId};
use crate::service::ServiceError;
use crate::types::LedgerConfig;
use crate::Hash32;

/// A running replica.
pub struct Running {
    pub id: ReplicaId,
    pub key: Keypair,
    pub dir: PathBuf,
    /// The address it listens on (TCP, loopback or not).
    pub addr: Multiaddr,
    pub net: Network,
    pub raft: LedgerRaft,
    pub machine: LedgerMachine,
    pub stats: Arc<InboundStats>,
    serving: tokio::task::JoinHandle<()>,
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

fn err(what: &str, e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Config(format!("replica: {what}: {e}"))
}

impl Running {
    /// Starts replica `id` with `key`, its Raft database in `dir` (created
    /// if missing), listening on `listen`; `set` are the peers of the
    /// replica set it starts with (the only ones whose Raft calls it takes
    /// before a membership is applied).
    pub async fn start(
        id: ReplicaId,
        key: Keypair,
        dir: &Path,
        listen: Multiaddr,
        genesis: &LedgerConfig,
        set: &HashSet<PeerId>,
    ) -> Result<Self, ServiceError> {
        // a previous run's database in this process may still be closing
        let mut opened = open_db(dir);
        for _ in 0..50 {
            if opened.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            opened = open_db(dir);
        }
        let db = opened.map_err(|e| err("opening its database", e))?;
        let machine = LedgerMachine::open(db.clone(), genesis.clone()).map_err(|e| err("its state", e))?;
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
        let raft = LedgerRaft::new(
            id,
            Arc::new(config),
            network::Factory::new(net.clone()),
            LogStore::new(db),
            machine.clone(),
        )
        .await
        .map_err(|e| err("starting raft", e))?;
        let stats = Arc::new(InboundStats::default());
        let serving = tokio::spawn({
            let (net, raft, set, stats) = (net.clone(), raft.clone(), set.clone(), stats.clone());
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
            machine,
            stats,
            serving,
        })
    }

    /// How the others reach it.
    pub fn replica(&self) -> Replica {
        Replica {
            peer: self.key.public().to_peer_id().to_string(),
            addrs: vec![self.addr.to_string()],
        }
    }

    /// (log length, head, mints) of its ledger as applied here.
    pub fn head(&self) -> Option<(u64, Hash32, u64)> {
        self.machine
            .read(|s| (s.ledger.log_len(), s.ledger.head(), s.ledger.mints()))
            .ok()
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
        Stopped {
            id: self.id,
            key: self.key,
            dir: self.dir,
            addr: self.addr,
        }
    }
}
