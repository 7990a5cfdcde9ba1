//! `config.toml`: one documented struct, loaded in `main` and passed down.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The node's settings. Every field has a default; `crowd-node init` writes
/// them all out with their documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// libp2p listen addresses (TCP and QUIC). Port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Bytes this node will keep for its deals: every unsealed piece, every
    /// sealed replica and their outboards count (see `keep_unsealed`). A
    /// proposal or repair job is accepted only if its piece and outboard fit
    /// next to what is kept and reserved.
    #[serde(default = "default_capacity")]
    pub capacity_bytes: u64,
    /// Smallest price accepted, in base units per GiB per epoch (pro rata for
    /// smaller pieces, rounded up).
    #[serde(default = "default_price")]
    pub price_per_gib_epoch: u64,
    /// Largest provider collateral a proposal may ask of us, in base units
    /// per GiB.
    #[serde(default = "default_collateral")]
    pub max_collateral_per_gib: u64,
    /// Largest piece accepted, in bytes.
    #[serde(default = "default_max_piece")]
    pub max_piece_bytes: u64,
    /// The tracker's libp2p peer id: only it may send seal tickets, seeds and
    /// challenges. Empty: none accepted (the node stores and serves only).
    #[serde(default)]
    pub tracker_peer_id: String,
    /// The tracker's multiaddress (with /p2p/<peer id>), dialled at start.
    #[serde(default)]
    pub tracker_address: String,
    /// A tracker run as a replica set (issue #15): every replica's
    /// multiaddress with its own /p2p/<peer id>. Requests follow the
    /// leader; tracker messages (signed by `tracker_peer_id`'s key) are
    /// taken from any of them. Empty: the one tracker at `tracker_address`.
    #[serde(default)]
    pub tracker_replicas: Vec<String>,
    /// The network (64 hex digits: the tracker's genesis head) every signed
    /// message must name. Empty: learnt from the tracker at first start and
    /// kept; a tracker that later names another network is refused.
    #[serde(default)]
    pub network_id: String,
    /// Peers to connect to at start, as multiaddresses ending in /p2p/<peer id>.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Sealing parameters: "devnet" (fast) or "production" (Filecoin-like).
    #[serde(default = "default_preset")]
    pub sealing_preset: String,
    /// Deals waiting to be sealed; beyond this new seal requests are refused.
    #[serde(default = "default_seal_queue")]
    pub seal_queue: usize,
    /// Keep an unsealed copy of each piece for fast retrieval; otherwise it
    /// is deleted once sealed and unsealed on demand.
    #[serde(default = "default_true")]
    pub keep_unsealed: bool,
    /// Address of the HTTP server: the dashboard at `/`, its JSON API under
    /// `/api/v1/` and the Prometheus text at `/metrics`; empty disables it.
    #[serde(default = "default_metrics")]
    pub metrics_address: String,
    /// Concurrent piece uploads and fetches served at once.
    #[serde(default = "default_streams")]
    pub max_concurrent_transfers: usize,
    /// Seconds a transfer may stall before it is dropped.
    #[serde(default = "default_stall")]
    pub transfer_timeout_secs: u64,
    /// Transfer streams whose header (upload header, fetch request) has not
    /// arrived yet; beyond this a new stream is answered "busy". A transfer
    /// slot (`max_concurrent_transfers`) is taken only once the header is in.
    #[serde(default = "default_pending_streams")]
    pub max_pending_streams: usize,
    /// Of those, at most this many from one peer.
    #[serde(default = "default_pending_per_peer")]
    pub max_pending_streams_per_peer: usize,
    /// Control requests (proposals, status, manifests, …) handled at once;
    /// beyond this a request is answered "busy" at once. The tracker's own
    /// requests (seal tickets, challenges, repairs) are not counted, so
    /// strangers cannot starve them.
    #[serde(default = "default_inbound_requests")]
    pub max_inbound_requests: usize,
    /// Of those, at most this many from one peer.
    #[serde(default = "default_inbound_per_peer")]
    pub max_inbound_requests_per_peer: usize,
    /// Keys with provider records announced to us by other peers (the DHT
    /// store); beyond this new ones are refused. Our own records are kept
    /// apart and never crowded out.
    #[serde(default = "default_dht_remote_keys")]
    pub dht_max_remote_keys: usize,
    /// Seconds between re-announcements of what we hold (also done at start).
    #[serde(default = "default_dht_republish")]
    pub dht_republish_secs: u64,
    /// Bytes of recently unsealed pieces kept for retrieval, as unlinked
    /// files in `tmp/` (disk, not memory; without `keep_unsealed` any fetch
    /// needs the whole piece unsealed).
    #[serde(default = "default_unseal_cache")]
    pub unseal_cache_bytes: u64,
    /// Unseals one peer may cause (fetches of pieces not in the cache) per
    /// `unseal_window_secs`; beyond that its fetches are refused. The
    /// tracker is exempt.
    #[serde(default = "default_unseals_per_peer")]
    pub max_unseals_per_peer: usize,
    #[serde(default = "default_unseal_window")]
    pub unseal_window_secs: u64,
    /// Seconds a new transfer stream may take to send its header.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
    /// Established libp2p connections with one peer (beyond it the peer's
    /// oldest are closed: a client run again with the same key leaves
    /// connections its earlier runs never closed), inbound connections in
    /// total, and inbound connections still in their handshake (beyond
    /// these two a new connection is denied).
    #[serde(default = "default_connections_per_peer")]
    pub max_connections_per_peer: u32,
    #[serde(default = "default_incoming_connections")]
    pub max_incoming_connections: u32,
    #[serde(default = "default_pending_incoming")]
    pub max_pending_incoming: u32,
    /// The same two inbound bounds per source (an IPv4 address or an IPv6
    /// /64), so that one host cannot take every slot.
    #[serde(default = "default_pending_per_address")]
    pub max_pending_incoming_per_address: u32,
    #[serde(default = "default_incoming_per_address")]
    pub max_incoming_per_address: u32,
    /// No new connection is accepted while this process uses more memory
    /// than this (MiB); 0 disables.
    #[serde(default = "default_connection_memory")]
    pub max_memory_for_new_connections_mib: u64,
    /// Repair jobs (rebuilding a lost piece from other providers) run at
    /// once; further accepted jobs wait for a slot. Each holds at most about
    /// `2k + 1` shards of one segment in memory.
    #[serde(default = "default_repairs")]
    pub max_concurrent_repairs: usize,
    /// Seconds between garbage-collection rounds: the tracker is asked about
    /// every deal kept here, and the bytes and records of ended deals
    /// (completed, terminated, cancelled, removed) are deleted. 0 disables.
    #[serde(default = "default_gc_interval")]
    pub gc_interval_secs: u64,
}

fn default_listen() -> Vec<String> {
    vec!["/ip4/0.0.0.0/tcp/0".into(), "/ip4/0.0.0.0/udp/0/quic-v1".into()]
}
fn default_capacity() -> u64 {
    64 << 30
}
fn default_price() -> u64 {
    1_000
}
fn default_collateral() -> u64 {
    1_000_000
}
fn default_max_piece() -> u64 {
    1 << 30
}
fn default_preset() -> String {
    "devnet".into()
}
fn default_seal_queue() -> usize {
    16
}
fn default_true() -> bool {
    true
}
fn default_metrics() -> String {
    "127.0.0.1:0".into()
}
fn default_streams() -> usize {
    32
}
fn default_stall() -> u64 {
    60
}
fn default_pending_streams() -> usize {
    256
}
fn default_connections_per_peer() -> u32 {
    8
}
fn default_incoming_connections() -> u32 {
    512
}
fn default_pending_incoming() -> u32 {
    64
}
fn default_pending_per_address() -> u32 {
    32
}
fn default_incoming_per_address() -> u32 {
    256
}
fn default_connection_memory() -> u64 {
    2048
}
fn default_pending_per_peer() -> usize {
    8
}
fn default_inbound_requests() -> usize {
    64
}
fn default_dht_remote_keys() -> usize {
    16 * 1024
}
fn default_dht_republish() -> u64 {
    3600
}
fn default_unseal_cache() -> u64 {
    256 << 20
}
fn default_unseals_per_peer() -> usize {
    4
}
fn default_unseal_window() -> u64 {
    3600
}
fn default_inbound_per_peer() -> usize {
    8
}
fn default_header_timeout() -> u64 {
    10
}
fn default_repairs() -> usize {
    2
}
fn default_gc_interval() -> u64 {
    10
}

impl Default for NodeConfig {
    fn default() -> Self {
        // every field's serde default
        toml::from_str("").unwrap_or_else(|_| unreachable!("an empty config takes every default"))
    }
}

impl NodeConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let config: Self = toml::from_str(&text).map_err(|e| {
            let line = crowd_protocol::util::parse_error_line(&e.to_string());
            anyhow::anyhow!("{}: {line}", path.display())
        })?;
        config.check()?;
        Ok(config)
    }

    /// Rejects values that cannot work, with the field named.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.listen.is_empty() {
            anyhow::bail!("listen: at least one address is needed");
        }
        for a in &self.listen {
            a.parse::<libp2p::Multiaddr>()
                .map_err(|e| anyhow::anyhow!("listen: '{a}' is not a multiaddress: {e}"))?;
        }
        if !matches!(self.sealing_preset.as_str(), "devnet" | "production") {
            anyhow::bail!(
                "sealing_preset: '{}' (expected devnet or production)",
                self.sealing_preset
            );
        }
        if !self.metrics_address.is_empty() {
            self.metrics_address
                .parse::<SocketAddr>()
                .map_err(|e| anyhow::anyhow!("metrics_address: '{}': {e}", self.metrics_address))?;
        }
        if self.max_concurrent_transfers == 0
            || self.seal_queue == 0
            || self.max_pending_streams == 0
            || self.max_pending_streams_per_peer == 0
            || self.max_inbound_requests == 0
            || self.max_inbound_requests_per_peer == 0
            || self.dht_max_remote_keys == 0
            || self.dht_republish_secs == 0
            || self.max_unseals_per_peer == 0
            || self.unseal_window_secs == 0
        {
            anyhow::bail!(
                "max_concurrent_transfers, max_pending_streams(_per_peer), max_inbound_requests(_per_peer), dht_max_remote_keys, dht_republish_secs, max_unseals_per_peer, unseal_window_secs and seal_queue must be at least 1"
            );
        }
        if self.header_timeout_secs == 0 {
            anyhow::bail!("header_timeout_secs must be at least 1");
        }
        if self.max_connections_per_peer == 0
            || self.max_incoming_connections == 0
            || self.max_pending_incoming == 0
            || self.max_pending_incoming_per_address == 0
            || self.max_incoming_per_address == 0
        {
            anyhow::bail!(
                "max_connections_per_peer, max_incoming_connections, max_pending_incoming and their _per_address bounds must be at least 1"
            );
        }
        if self.max_concurrent_repairs == 0 {
            anyhow::bail!("max_concurrent_repairs must be at least 1");
        }
        Ok(())
    }

    /// The documented `config.toml` that `crowd-node init` writes.
    pub fn render(&self) -> String {
        let list = |v: &[String]| {
            format!(
                "[{}]",
                v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
            )
        };
        format!(
            r#"# crowd-node configuration. Every field may be omitted (its default is used).
# Environment overrides: CROWD_NODE_HOME picks the home directory.

# libp2p listen addresses (TCP and QUIC). Port 0 picks a free port.
listen = {listen}

# Bytes kept for deals: unsealed pieces, replicas and their outboards all count.
capacity_bytes = {capacity}

# Smallest price accepted, base units per GiB per epoch (pro rata, rounded up).
price_per_gib_epoch = {price}

# Largest provider collateral a deal may ask of us, base units per GiB.
max_collateral_per_gib = {collateral}

# Largest piece accepted, bytes.
max_piece_bytes = {max_piece}

# The tracker: only this peer may send seal tickets, seeds and challenges.
# Empty: the node stores and serves pieces but never seals or proves.
tracker_peer_id = {tracker:?}
tracker_address = {tracker_addr:?}
# A tracker run as a replica set: every replica's multiaddress with its own
# /p2p/ peer id. Requests follow its leader; its messages (signed by
# tracker_peer_id's key) are taken from any replica. Empty: tracker_address.
tracker_replicas = {tracker_replicas}

# The network (64 hex digits, `crowd-tracker` prints it at start) every
# signed message must name. Empty: learnt from the tracker at first start.
network_id = {network:?}

# Peers to connect to at start (multiaddresses ending in /p2p/<peer id>).
bootstrap = {bootstrap}

# Sealing parameters: "devnet" (fast) or "production" (Filecoin-like: 11 layers).
sealing_preset = {preset:?}

# Deals waiting to be sealed; beyond this, seal requests are refused.
seal_queue = {seal_queue}

# Keep an unsealed copy of each piece for fast retrieval (else unseal on demand).
keep_unsealed = {keep}

# The dashboard at http://<this>/ (docs/DASHBOARDS.md), its JSON API under
# /api/v1/ and Prometheus metrics at /metrics; port 0 picks a free one (printed
# at start and kept in the home's JSON info file); empty disables all three.
metrics_address = {metrics:?}

# Piece uploads and fetches served at once, and seconds one may stall.
max_concurrent_transfers = {streams}
transfer_timeout_secs = {stall}

# New transfer streams still waiting for their header, and seconds each may
# wait; a transfer slot above is taken only once its header has arrived.
max_pending_streams = {pending}
max_pending_streams_per_peer = {pending_peer}
header_timeout_secs = {header}

# libp2p connections: with one peer (beyond it its oldest are closed), inbound
# in total and inbound still in their handshake (beyond these a new one is
# denied), the same two from one source address (an IPv4 address or an IPv6
# /64); and no new connection while this process uses more memory than
# max_memory_for_new_connections_mib (0: no such limit).
max_connections_per_peer = {conn_peer}
max_incoming_connections = {conn_in}
max_pending_incoming = {conn_pending}
max_incoming_per_address = {conn_in_addr}
max_pending_incoming_per_address = {conn_pending_addr}
max_memory_for_new_connections_mib = {conn_memory}

# Control requests handled at once, in all and from one peer; beyond them a
# request is answered "busy" at once. The tracker's requests are not counted.
max_inbound_requests = {inbound}
max_inbound_requests_per_peer = {inbound_peer}

# DHT: keys other peers may announce into our store (ours are kept apart,
# never crowded out), and seconds between re-announcing what we hold (also
# done at every start).
dht_max_remote_keys = {dht_remote}
dht_republish_secs = {dht_republish}

# Without keep_unsealed a fetch of any range needs the whole piece unsealed:
# recently unsealed pieces are kept (bytes of disk in tmp/), and one peer may cause
# at most max_unseals_per_peer unseals every unseal_window_secs (the tracker
# is exempt).
unseal_cache_bytes = {unseal_cache}
max_unseals_per_peer = {unseals_peer}
unseal_window_secs = {unseal_window}

# Repair jobs (rebuilding a lost piece for the tracker) run at once.
max_concurrent_repairs = {repairs}

# Seconds between garbage collection of ended deals' bytes and records; 0 disables.
gc_interval_secs = {gc}
"#,
            listen = list(&self.listen),
            capacity = self.capacity_bytes,
            price = self.price_per_gib_epoch,
            collateral = self.max_collateral_per_gib,
            max_piece = self.max_piece_bytes,
            tracker = self.tracker_peer_id,
            network = self.network_id,
            tracker_addr = self.tracker_address,
            tracker_replicas = list(&self.tracker_replicas),
            bootstrap = list(&self.bootstrap),
            preset = self.sealing_preset,
            seal_queue = self.seal_queue,
            keep = self.keep_unsealed,
            metrics = self.metrics_address,
            streams = self.max_concurrent_transfers,
            stall = self.transfer_timeout_secs,
            pending = self.max_pending_streams,
            pending_peer = self.max_pending_streams_per_peer,
            inbound = self.max_inbound_requests,
            inbound_peer = self.max_inbound_requests_per_peer,
            dht_remote = self.dht_max_remote_keys,
            dht_republish = self.dht_republish_secs,
            unseal_cache = self.unseal_cache_bytes,
            unseals_peer = self.max_unseals_per_peer,
            unseal_window = self.unseal_window_secs,
            header = self.header_timeout_secs,
            conn_peer = self.max_connections_per_peer,
            conn_in = self.max_incoming_connections,
            conn_pending = self.max_pending_incoming,
            conn_in_addr = self.max_incoming_per_address,
            conn_pending_addr = self.max_pending_incoming_per_address,
            conn_memory = self.max_memory_for_new_connections_mib,
            repairs = self.max_concurrent_repairs,
            gc = self.gc_interval_secs,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_config_loads_back_identical() {
        let mut c = NodeConfig::default();
        c.bootstrap =
            vec!["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into()];
        c.capacity_bytes = 12345;
        c.max_concurrent_repairs = 3;
        c.gc_interval_secs = 0;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, c.render()).unwrap();
        assert_eq!(NodeConfig::load(&p).unwrap(), c);
    }

    #[test]
    fn bad_values_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        for (text, field) in [
            ("sealing_preset = \"fast\"", "sealing_preset"),
            ("listen = [\"not an addr\"]", "listen"),
            ("metrics_address = \"nope\"", "metrics_address"),
            ("capacity = 5", "capacity"),
            ("max_concurrent_repairs = 0", "max_concurrent_repairs"),
        ] {
            std::fs::write(&p, text).unwrap();
            let err = NodeConfig::load(&p).unwrap_err().to_string();
            assert!(err.contains(field), "{text}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}
