//! `<home>/config.toml`: the client's settings, one documented struct.
//!
//! `crowd devnet up` writes `tracker_address` and `tracker_peer_id`; every
//! other key has a default and may be left out.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The client's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The tracker's multiaddress, ending in /p2p/<peer id>.
    pub tracker_address: String,
    /// The tracker's peer id (must match the address, unless the tracker
    /// is a replica set: then it is the tracker's signing identity).
    pub tracker_peer_id: String,
    /// A tracker run as a replica set (issue #15): every replica's
    /// multiaddress with its own /p2p/ peer id; requests follow the leader.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracker_replicas: Vec<String>,
    /// Default data shards `k` for `put`.
    #[serde(default = "default_k")]
    pub data_shards: usize,
    /// Default parity shards `m` for `put` (the file survives losing any `m` providers).
    #[serde(default = "default_m")]
    pub parity_shards: usize,
    /// Default deal length in epochs.
    #[serde(default = "default_epochs")]
    pub epochs: u64,
    /// Highest price accepted, base units per GiB per epoch.
    #[serde(default = "default_max_price")]
    pub max_price_per_gib_epoch: u64,
    /// Provider collateral asked for each deal, base units per GiB (a
    /// provider refuses more than its own maximum).
    #[serde(default = "default_collateral")]
    pub collateral_per_gib: u64,
    /// Seconds a transfer may stall before it is abandoned.
    #[serde(default = "default_stall")]
    pub transfer_timeout_secs: u64,
    /// Seconds to wait for a control request (deal proposal, tracker query).
    #[serde(default = "default_request")]
    pub request_timeout_secs: u64,
}

fn default_k() -> usize {
    4
}
fn default_m() -> usize {
    2
}
fn default_epochs() -> u64 {
    1_000
}
fn default_max_price() -> u64 {
    10_000
}
fn default_collateral() -> u64 {
    100_000
}
fn default_stall() -> u64 {
    30
}
fn default_request() -> u64 {
    30
}

impl ClientConfig {
    /// Reads and checks `<home>/config.toml`.
    pub fn load(home: &Path) -> Result<Self> {
        let path = home.join("config.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no client config at {}: start a local network with `crowd devnet up`, or write it (see README)",
                path.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let config: Self =
            toml::from_str(&text).map_err(|e| anyhow!("{}: {}", path.display(), e.message().trim()))?;
        config.check().with_context(|| path.display().to_string())?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        let (peer, _) = crate::session::peer_addr(&self.tracker_address)?;
        for r in &self.tracker_replicas {
            crate::session::peer_addr(r).context("tracker_replicas")?;
        }
        if self.tracker_replicas.is_empty() && peer.to_string() != self.tracker_peer_id {
            bail!(
                "tracker_address names peer {peer}, but tracker_peer_id is {}",
                self.tracker_peer_id
            );
        }
        if self.data_shards == 0 {
            bail!("data_shards must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rendered_config_loads_with_defaults_and_typos_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let peer = crowd_protocol::libp2p::PeerId::random();
        let addr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}");
        std::fs::write(
            dir.path().join("config.toml"),
            format!("tracker_address = {addr:?}\ntracker_peer_id = \"{peer}\"\n"),
        )
        .unwrap();
        let c = ClientConfig::load(dir.path()).unwrap();
        assert_eq!((c.data_shards, c.parity_shards), (4, 2));
        std::fs::write(
            dir.path().join("config.toml"),
            format!("tracker_address = {addr:?}\ntracker_peer_id = \"{peer}\"\ndata_shard = 3\n"),
        )
        .unwrap();
        let e = ClientConfig::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("data_shard"), "{e}");
        let other = crowd_protocol::libp2p::PeerId::random();
        std::fs::write(
            dir.path().join("config.toml"),
            format!("tracker_address = {addr:?}\ntracker_peer_id = \"{other}\"\n"),
        )
        .unwrap();
        assert!(ClientConfig::load(dir.path()).is_err());
        let empty = tempfile::tempdir().unwrap();
        let e = ClientConfig::load(empty.path()).unwrap_err().to_string();
        assert!(e.contains("crowd devnet up"), "{e}");
    }
}
