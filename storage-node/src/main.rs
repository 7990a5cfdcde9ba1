//! `crowd-node`: run a crowdstore storage provider.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use crowd_node::config::NodeConfig;
use crowd_node::files::Dirs;
use crowd_node::metrics::Metrics;
use crowd_node::node::{seal_worker, Node};
use crowd_node::store::RocksStore;
use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::{multiaddr::Protocol, Multiaddr, PeerId};
use crowd_protocol::{Network, NetworkConfig};

#[derive(Debug, Parser)]
#[command(name = "crowd-node", version, about = "crowdstore storage provider")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create the identity key and a documented config.toml in the home directory.
    Init {
        /// The node's home directory.
        #[arg(long, env = "CROWD_NODE_HOME", default_value_os_t = default_home())]
        home: PathBuf,
        /// Overwrite an existing config.toml (the identity is never replaced).
        #[arg(long)]
        force: bool,
    },
    /// Run the node until SIGINT or SIGTERM.
    Run {
        /// The node's home directory (created by `init`).
        #[arg(long, env = "CROWD_NODE_HOME", default_value_os_t = default_home())]
        home: PathBuf,
    },
}

fn default_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".crowd-node")
}

fn load_or_create_key(path: &Path) -> Result<Keypair> {
    Ok(crowd_protocol::util::load_or_create_key(path)?)
}

fn init(home: &Path, force: bool) -> Result<()> {
    std::fs::create_dir_all(home).with_context(|| format!("cannot create {}", home.display()))?;
    let key = load_or_create_key(&home.join("identity.key"))?;
    let config = home.join("config.toml");
    if config.exists() && !force {
        println!("{} exists; kept (use --force to rewrite)", config.display());
    } else {
        std::fs::write(&config, NodeConfig::default().render())
            .with_context(|| format!("cannot write {}", config.display()))?;
        println!("wrote {}", config.display());
    }
    println!("peer id {}", key.public().to_peer_id());
    Ok(())
}

/// A multiaddress ending in /p2p/<peer id>, split.
fn peer_addr(s: &str) -> Result<(PeerId, Multiaddr)> {
    let addr: Multiaddr = s
        .parse()
        .map_err(|e| anyhow!("'{s}' is not a multiaddress: {e}"))?;
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Ok((peer, addr)),
        _ => Err(anyhow!("'{s}' does not end in /p2p/<peer id>")),
    }
}

async fn run(home: &Path, recent: crowd_protocol::util::RecentErrors) -> Result<()> {
    let config_path = home.join("config.toml");
    if !config_path.exists() {
        return Err(anyhow!(
            "{} does not exist: run `crowd-node init --home {}` first",
            config_path.display(),
            home.display()
        ));
    }
    let config = NodeConfig::load(&config_path)?;
    let key = load_or_create_key(&home.join("identity.key"))?;
    let dirs = Dirs::new(home);
    dirs.create()
        .with_context(|| format!("cannot create directories in {}", home.display()))?;
    let store = Arc::new(RocksStore::open(&dirs.db)?);

    let mut bootstrap = Vec::new();
    for b in config
        .bootstrap
        .iter()
        .chain(Some(&config.tracker_address).filter(|s| !s.is_empty()))
        .chain(&config.tracker_replicas)
    {
        bootstrap.push(peer_addr(b)?);
    }
    let net_config = NetworkConfig {
        listen: config
            .listen
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?,
        bootstrap,
        request_timeout: Duration::from_secs(config.transfer_timeout_secs.max(10)),
        dht: crowd_protocol::dht::DhtBounds {
            max_remote_keys: config.dht_max_remote_keys,
            ..Default::default()
        },
        provider_republish: Duration::from_secs(config.dht_republish_secs),
        max_connections_per_peer: config.max_connections_per_peer,
        max_incoming_connections: config.max_incoming_connections,
        max_pending_incoming: config.max_pending_incoming,
        max_pending_incoming_per_address: config.max_pending_incoming_per_address,
        max_incoming_per_address: config.max_incoming_per_address,
        max_memory_for_new_connections: config.max_memory_for_new_connections_mib * 1024 * 1024,
        ..NetworkConfig::default()
    };
    let (net, mut inbound) = Network::start(key.clone(), net_config).await?;
    let metrics = Arc::new(Metrics::default());
    let (node, seal_rx) = Node::new(key, config.clone(), store, dirs, net.clone(), metrics.clone())?;
    let removed = node.recover()?;
    if removed > 0 {
        tracing::info!(removed, "removed unfinished files from before the last stop");
    }
    let requeue = node.queued_seals()?;
    {
        let node = node.clone();
        std::thread::Builder::new()
            .name("sealer".into())
            .spawn(move || seal_worker(node, seal_rx))?;
    }
    for deal in requeue {
        // the queue was sized for this; a refusal here is logged, not fatal
        if let Err(e) = node.requeue(deal) {
            tracing::warn!(deal, "could not requeue seal: {e:#}");
        }
    }
    tokio::spawn(node.clone().serve_uploads());
    tokio::spawn(node.clone().serve_fetches());
    tokio::spawn(node.clone().gc_loop());
    // what we held before the restart goes back on the DHT (Kademlia
    // re-announces it on its timer from then on)
    tokio::spawn(node.clone().announce_held());
    {
        let (metrics, stats) = (metrics.clone(), net.dht_stats());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                metrics.sync_dht(&stats);
            }
        });
    }
    {
        let node = node.clone();
        tokio::spawn(async move {
            while let Some(req) = inbound.recv().await {
                node.dispatch(req);
            }
        });
    }
    let mut metrics_addr = String::new();
    if !config.metrics_address.is_empty() {
        let listener = tokio::net::TcpListener::bind(&config.metrics_address)
            .await
            .with_context(|| format!("metrics_address {}", config.metrics_address))?;
        metrics_addr = listener.local_addr()?.to_string();
        let (node, recent) = (node.clone(), recent.clone());
        tokio::spawn(async move {
            if let Err(e) = crowd_node::dashboard::serve(listener, node, recent).await {
                tracing::warn!("the dashboard stopped: {e}");
            }
        });
    }
    let addrs = net.listen_addrs().await?;
    let info = serde_json::json!({
        "peer_id": node.peer_id.to_string(),
        "listen": addrs.iter().map(|a| a.clone().with(Protocol::P2p(node.peer_id)).to_string()).collect::<Vec<_>>(),
        "metrics": metrics_addr,
        "pid": std::process::id(),
    });
    tokio::spawn(
        node.clone()
            .register_with_tracker(addrs.iter().map(|a| a.to_string()).collect()),
    );
    // before announcing readiness: a SIGTERM from then on stops us cleanly
    let shutdown = crowd_protocol::util::shutdown_signal();
    let info_path = home.join("node.json");
    std::fs::write(&info_path, serde_json::to_vec_pretty(&info)?)?;
    println!("crowd-node {} ready", node.peer_id);
    for a in &addrs {
        println!("listening on {}", a.clone().with(Protocol::P2p(node.peer_id)));
    }
    if !metrics_addr.is_empty() {
        println!("dashboard on http://{metrics_addr}/ (metrics on http://{metrics_addr}/metrics)");
    }

    shutdown.await;
    tracing::info!("shutting down");
    let _ = std::fs::remove_file(&info_path);
    // let transfers in flight finish for a moment; anything cut off is an
    // unacknowledged upload in tmp/, removed at the next start
    node.drain(Duration::from_secs(5)).await;
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let line = crowd_protocol::util::usage_error_line(&e.to_string());
            eprintln!("crowd-node: {line} (see --help)");
            return ExitCode::from(2);
        }
    };
    let recent = crowd_protocol::util::init_logging();
    let result = match cli.cmd {
        Cmd::Init { home, force } => init(&home, force),
        Cmd::Run { home } => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(run(&home, recent)),
            Err(e) => Err(e.into()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crowd-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}
