//! `config.toml`: one documented struct, loaded in `main` and passed down.
//!
//! Ten fields are the ledger's **genesis** (`faucet`, `sealing_preset`,
//! `fault_threshold`, `fault_fee_bps`, `client_share_bps`,
//! `repair_after_missed`, `allocations`, `provider_stake`,
//! `stake_slash_bps`, `min_collateral_per_gib`): `crowd-tracker
//! init` fixes them in the store with the tracker's key, and `run` refuses a
//! config that disagrees with the stored genesis instead of silently running
//! another ledger.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crowd_porep::SealParams;
use crowd_protocol::libp2p::identity::PublicKey;
use serde::{Deserialize, Serialize};

use super::ServiceError;
use crate::{AccountId, LedgerConfig};
use crowd_protocol::libp2p::PeerId;
use crowd_protocol::Amount;

/// The `"PEER_ID=AMOUNT"` form of genesis allocations.
pub fn render_allocations(list: &[(AccountId, Amount)]) -> Vec<String> {
    list.iter().map(|(a, n)| format!("{a}={n}")).collect()
}

/// Shortest epoch accepted (tests run fast epochs; proofs need some time).
pub const MIN_EPOCH_SECS: f64 = 0.05;
/// Longest epoch accepted: one day.
pub const MAX_EPOCH_SECS: f64 = 86_400.0;

/// The tracker's settings. Every field has a default; `crowd-tracker init`
/// writes them all out with their documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackerConfig {
    /// libp2p listen addresses (TCP and QUIC). Port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Epoch length in seconds (fractions allowed); `run --epoch-secs` overrides it.
    #[serde(default = "default_epoch_secs")]
    pub epoch_secs: f64,
    /// Address of the HTTP server: the network's page at `/`, its JSON API under
    /// `/api/v1/` and the Prometheus text at `/metrics`; empty disables it.
    #[serde(default = "default_metrics")]
    pub metrics_address: String,
    /// Genesis: the faucet mints test funds (development networks only).
    #[serde(default)]
    pub faucet: bool,
    /// Most one faucet request mints, in base units.
    #[serde(default = "default_faucet_max")]
    pub faucet_max: u64,
    /// Genesis: consecutive faults that terminate a deal.
    #[serde(default = "default_fault_threshold")]
    pub fault_threshold: u32,
    /// Genesis: fee per fault, basis points of the deal's collateral (burned).
    #[serde(default = "default_fault_fee")]
    pub fault_fee_bps: u32,
    /// Genesis: share of a slashed collateral paid to the client, basis points.
    #[serde(default = "default_client_share")]
    pub client_share_bps: u32,
    /// Genesis: consecutive missed windows after which a stored file's
    /// piece is lost (its deal terminated) and repaired; at most
    /// `fault_threshold`, 0 = `fault_threshold`.
    #[serde(default = "default_repair_after_missed")]
    pub repair_after_missed: u32,
    /// Genesis: sealing parameters proofs are verified with, "devnet" or "production".
    #[serde(default = "default_preset")]
    pub sealing_preset: String,
    /// Genesis: the balances the ledger starts with, `"PEER_ID=AMOUNT"`
    /// (base units) — how money enters a network without the faucet.
    #[serde(default)]
    pub allocations: Vec<String>,
    /// Genesis: what registering as a provider locks (base units).
    #[serde(default = "default_stake")]
    pub provider_stake: u64,
    /// Genesis: share of the stake burned per terminated deal, basis points.
    #[serde(default = "default_stake_slash")]
    pub stake_slash_bps: u32,
    /// Genesis: least provider collateral a deal locks, per GiB (base units).
    #[serde(default = "default_min_collateral")]
    pub min_collateral_per_gib: u64,
    /// Seconds a request to a provider (seal ticket, status, seal proof,
    /// window challenge) may take.
    #[serde(default = "default_request_timeout")]
    pub provider_timeout_secs: u64,
    /// Requests to providers in flight at once.
    #[serde(default = "default_in_flight")]
    pub max_provider_requests: usize,
    /// Requests to one provider in flight at once: a provider that never
    /// answers holds at most this many of `max_provider_requests`.
    #[serde(default = "default_in_flight_per_provider")]
    pub max_requests_per_provider: usize,
    /// This tracker's id in its replica set (with `replicas`).
    #[serde(default)]
    pub replica_id: u64,
    /// The replica set, "ID PEER_ID MULTIADDR" each, this replica included
    /// (issue #15); empty: a single tracker.
    #[serde(default)]
    pub replicas: Vec<String>,
}

fn default_listen() -> Vec<String> {
    vec!["/ip4/0.0.0.0/tcp/0".into(), "/ip4/0.0.0.0/udp/0/quic-v1".into()]
}
fn default_epoch_secs() -> f64 {
    30.0
}
fn default_metrics() -> String {
    "127.0.0.1:0".into()
}
fn default_faucet_max() -> u64 {
    1_000_000_000_000
}
fn default_fault_threshold() -> u32 {
    3
}
fn default_repair_after_missed() -> u32 {
    2
}
fn default_fault_fee() -> u32 {
    1_000
}
fn default_client_share() -> u32 {
    5_000
}
fn default_stake() -> u64 {
    100_000_000
}
fn default_stake_slash() -> u32 {
    1_000
}
fn default_min_collateral() -> u64 {
    10_000
}
fn default_preset() -> String {
    "devnet".into()
}
fn default_request_timeout() -> u64 {
    60
}
fn default_in_flight() -> usize {
    64
}
fn default_in_flight_per_provider() -> usize {
    4
}

impl Default for TrackerConfig {
    fn default() -> Self {
        // every field's serde default
        toml::from_str("").unwrap_or_else(|_| unreachable!("an empty config takes every default"))
    }
}

/// Sealing parameters by preset name.
pub fn seal_params(preset: &str) -> Option<SealParams> {
    match preset {
        "devnet" => Some(SealParams::devnet()),
        "production" => Some(SealParams::production()),
        _ => None,
    }
}

/// The preset name of sealing parameters ("custom" if neither).
pub fn preset_name(params: &SealParams) -> &'static str {
    if *params == SealParams::devnet() {
        "devnet"
    } else if *params == SealParams::production() {
        "production"
    } else {
        "custom"
    }
}

/// Parses the replica set, `"ID PEER_ID MULTIADDR"` each (ids at least 1,
/// each once); errors are one line naming the bad entry.
pub fn parse_replicas(
    list: &[String],
) -> Result<std::collections::BTreeMap<u64, super::raft::Replica>, ServiceError> {
    let mut out = std::collections::BTreeMap::new();
    for entry in list {
        let bad = |why: &str| ServiceError::Config(format!("replicas: {entry:?}: {why}"));
        let parts: Vec<&str> = entry.split_whitespace().collect();
        let [id, peer, addr] = parts.as_slice() else {
            return Err(bad("expected \"ID PEER_ID MULTIADDR\""));
        };
        let id: u64 = id.parse().map_err(|_| bad("the id is not a number"))?;
        if id == 0 {
            return Err(bad("ids start at 1"));
        }
        peer.parse::<crowd_protocol::libp2p::PeerId>()
            .map_err(|_| bad("not a peer id"))?;
        addr.parse::<crowd_protocol::libp2p::Multiaddr>()
            .map_err(|_| bad("not a multiaddress"))?;
        let replica = super::raft::Replica {
            peer: peer.to_string(),
            addrs: vec![addr.to_string()],
        };
        if out.insert(id, replica).is_some() {
            return Err(bad("this id is listed twice"));
        }
    }
    Ok(out)
}

/// Parses `"PEER_ID=AMOUNT"` allocations into the ledger's sorted form;
/// errors are one line naming the bad entry.
pub fn parse_allocations(list: &[String]) -> Result<Vec<(AccountId, Amount)>, ServiceError> {
    let mut out = std::collections::BTreeMap::new();
    for entry in list {
        let bad = |why: &str| ServiceError::Config(format!("allocations: '{entry}': {why}"));
        let (peer, amount) = entry
            .split_once('=')
            .ok_or_else(|| bad("expected PEER_ID=AMOUNT"))?;
        let peer: PeerId = peer.trim().parse().map_err(|_| bad("not a peer id"))?;
        let amount: Amount = amount
            .trim()
            .parse()
            .map_err(|_| bad("not an amount in base units"))?;
        if amount == 0 {
            return Err(bad("an allocation of 0"));
        }
        if out.insert(AccountId(peer), amount).is_some() {
            return Err(bad("this account is allocated twice"));
        }
    }
    Ok(out.into_iter().collect())
}

/// Checks an epoch length in seconds.
pub fn epoch_duration(secs: f64) -> Result<Duration, ServiceError> {
    if !(MIN_EPOCH_SECS..=MAX_EPOCH_SECS).contains(&secs) {
        return Err(ServiceError::Config(format!(
            "epoch_secs {secs} is outside {MIN_EPOCH_SECS}..={MAX_EPOCH_SECS}"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl TrackerConfig {
    /// Reads and checks `config.toml`; errors are one line naming the field.
    pub fn load(path: &Path) -> Result<Self, ServiceError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServiceError::Config(format!("cannot read {}: {e}", path.display())))?;
        let config: Self = toml::from_str(&text).map_err(|e| {
            let line = crowd_protocol::util::parse_error_line(&e.to_string());
            ServiceError::Config(format!("{}: {line}", path.display()))
        })?;
        config.check()?;
        Ok(config)
    }

    /// Rejects values that cannot work, with the field named.
    pub fn check(&self) -> Result<(), ServiceError> {
        let bad = |s: String| Err(ServiceError::Config(s));
        if !self.replicas.is_empty() && !parse_replicas(&self.replicas)?.contains_key(&self.replica_id) {
            return bad(format!(
                "replicas: replica_id {} is not in the list",
                self.replica_id
            ));
        }
        if self.listen.is_empty() {
            return bad("listen: at least one address is needed".into());
        }
        for a in &self.listen {
            if let Err(e) = a.parse::<crowd_protocol::libp2p::Multiaddr>() {
                return bad(format!("listen: '{a}' is not a multiaddress: {e}"));
            }
        }
        epoch_duration(self.epoch_secs)?;
        if !self.metrics_address.is_empty() {
            if let Err(e) = self.metrics_address.parse::<SocketAddr>() {
                return bad(format!("metrics_address: '{}': {e}", self.metrics_address));
            }
        }
        if seal_params(&self.sealing_preset).is_none() {
            return bad(format!(
                "sealing_preset: '{}' (expected devnet or production)",
                self.sealing_preset
            ));
        }
        parse_allocations(&self.allocations)?;
        if self.provider_timeout_secs == 0
            || self.max_provider_requests == 0
            || self.max_requests_per_provider == 0
        {
            return bad(
                "provider_timeout_secs, max_provider_requests and max_requests_per_provider must be at least 1"
                    .into(),
            );
        }
        // the ledger's own checks (threshold, basis points)
        let key = crowd_protocol::libp2p::identity::Keypair::generate_ed25519();
        self.genesis(&key.public()).validate().map_err(|e| {
            ServiceError::Config(match e {
                crate::LedgerError::InvalidConfig(what) => what.to_string(),
                other => other.to_string(),
            })
        })
    }

    /// The genesis ledger configuration these settings describe for `tracker`.
    pub fn genesis(&self, tracker: &PublicKey) -> LedgerConfig {
        LedgerConfig {
            tracker_key: tracker.encode_protobuf(),
            faucet: self.faucet,
            params: seal_params(&self.sealing_preset).unwrap_or_else(SealParams::devnet),
            fault_threshold: self.fault_threshold,
            fault_fee_bps: self.fault_fee_bps,
            client_share_bps: self.client_share_bps,
            repair_after_missed: self.repair_after_missed,
            archive_ended: true,
            // checked by `check`; an unchecked bad list allocates nothing
            allocations: parse_allocations(&self.allocations).unwrap_or_default(),
            provider_stake: Amount::from(self.provider_stake),
            stake_slash_bps: self.stake_slash_bps,
            min_collateral_per_gib: Amount::from(self.min_collateral_per_gib),
        }
    }

    /// Takes the genesis fields from a stored genesis (for `init --force`
    /// over an existing ledger).
    pub fn with_genesis(mut self, genesis: &LedgerConfig) -> Self {
        self.faucet = genesis.faucet;
        self.fault_threshold = genesis.fault_threshold;
        self.fault_fee_bps = genesis.fault_fee_bps;
        self.client_share_bps = genesis.client_share_bps;
        self.repair_after_missed = genesis.repair_after_missed;
        self.sealing_preset = preset_name(&genesis.params).to_string();
        self.allocations = render_allocations(&genesis.allocations);
        // ledgers begun before stakes have none (and saturate at u64)
        self.provider_stake = u64::try_from(genesis.provider_stake).unwrap_or(u64::MAX);
        self.stake_slash_bps = genesis.stake_slash_bps;
        self.min_collateral_per_gib = u64::try_from(genesis.min_collateral_per_gib).unwrap_or(u64::MAX);
        self
    }

    /// Refuses settings that disagree with the stored genesis, naming the field.
    pub fn check_genesis(&self, stored: &LedgerConfig) -> Result<(), ServiceError> {
        let mismatch = |field: &str, here: String, there: String| {
            Err(ServiceError::Config(format!(
                "{field} = {here} in config.toml, but the ledger's genesis has {there}; \
                 the genesis cannot change (set it back, or start a new home)"
            )))
        };
        if self.faucet != stored.faucet {
            return mismatch("faucet", self.faucet.to_string(), stored.faucet.to_string());
        }
        if seal_params(&self.sealing_preset) != Some(stored.params) {
            return mismatch(
                "sealing_preset",
                format!("{:?}", self.sealing_preset),
                format!("{:?}", preset_name(&stored.params)),
            );
        }
        if self.fault_threshold != stored.fault_threshold {
            let (a, b) = (self.fault_threshold, stored.fault_threshold);
            return mismatch("fault_threshold", a.to_string(), b.to_string());
        }
        if self.fault_fee_bps != stored.fault_fee_bps {
            let (a, b) = (self.fault_fee_bps, stored.fault_fee_bps);
            return mismatch("fault_fee_bps", a.to_string(), b.to_string());
        }
        if self.client_share_bps != stored.client_share_bps {
            let (a, b) = (self.client_share_bps, stored.client_share_bps);
            return mismatch("client_share_bps", a.to_string(), b.to_string());
        }
        if self.repair_after_missed != stored.repair_after_missed {
            let (a, b) = (self.repair_after_missed, stored.repair_after_missed);
            return mismatch("repair_after_missed", a.to_string(), b.to_string());
        }
        if Amount::from(self.provider_stake) != stored.provider_stake {
            let (a, b) = (self.provider_stake, stored.provider_stake);
            return mismatch("provider_stake", a.to_string(), b.to_string());
        }
        if self.stake_slash_bps != stored.stake_slash_bps {
            let (a, b) = (self.stake_slash_bps, stored.stake_slash_bps);
            return mismatch("stake_slash_bps", a.to_string(), b.to_string());
        }
        if Amount::from(self.min_collateral_per_gib) != stored.min_collateral_per_gib {
            let (a, b) = (self.min_collateral_per_gib, stored.min_collateral_per_gib);
            return mismatch("min_collateral_per_gib", a.to_string(), b.to_string());
        }
        if parse_allocations(&self.allocations)? != stored.allocations {
            let (a, b) = (&self.allocations, render_allocations(&stored.allocations));
            return mismatch("allocations", format!("{a:?}"), format!("{b:?}"));
        }
        Ok(())
    }

    /// The documented `config.toml` that `crowd-tracker init` writes.
    pub fn render(&self) -> String {
        let list = |v: &[String]| {
            format!(
                "[{}]",
                v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
            )
        };
        format!(
            r#"# crowd-tracker configuration. Every field may be omitted (its default is used).
# Environment overrides: CROWD_TRACKER_HOME picks the home directory.

# libp2p listen addresses (TCP and QUIC). Port 0 picks a free port; a public
# tracker should use fixed ports, since its address names the network.
listen = {listen}

# Epoch length in seconds (fractions allowed). `run --epoch-secs` overrides it.
epoch_secs = {epoch:?}

# The network's page at http://<this>/ (docs/DASHBOARDS.md), its JSON API under
# /api/v1/ and Prometheus metrics at /metrics; port 0 picks a free one (printed
# at start and kept in the home's JSON info file); empty disables all three.
metrics_address = {metrics:?}

# Most one faucet request mints, in base units (devnet ledgers only).
faucet_max = {faucet_max}

# Seconds a request to a provider may take, how many run at once, and how
# many of those may wait on one provider (a silent provider holds no more).
provider_timeout_secs = {timeout}
max_provider_requests = {in_flight}
max_requests_per_provider = {per_provider}

# A replica set (issue #15, in progress): every replica's "ID PEER_ID
# MULTIADDR" (PEER_ID is the replica's network identity, replica.key, shown by
# `crowd-tracker replica-id`; all replicas share identity.key, the tracker's
# signing key, and the genesis) and this one's id. Empty: a single tracker.
replica_id = {replica_id}
replicas = {replicas}

# --- Genesis -------------------------------------------------------------
# These are fixed in the ledger by `crowd-tracker init`; `run` refuses a
# config.toml that disagrees with them.

# The faucet mints test funds (development networks only; `init --devnet`).
faucet = {faucet}

# Sealing parameters proofs are verified with: "devnet" or "production".
# Providers must seal with the same preset.
sealing_preset = {preset:?}

# F: this many consecutive faults terminate a deal and slash its collateral.
fault_threshold = {threshold}

# Fee per fault, basis points of the deal's collateral (burned).
fault_fee_bps = {fee}

# Share of a slashed collateral paid to the client, basis points (the rest is burned).
client_share_bps = {share}

# A stored file's piece is lost after this many consecutive missed windows:
# its deal is terminated (slashed as at F) and the tracker repairs the piece
# on another provider. At most fault_threshold; 0 means fault_threshold.
repair_after_missed = {repair}

# Sybil resistance: registering as a provider locks this stake (base units),
# returned when it leaves (registers with capacity 0) with no live deal; each
# terminated deal burns stake_slash_bps of it (basis points), and a provider
# must top it up (re-register) before new deals.
provider_stake = {stake}
stake_slash_bps = {stake_slash}

# Least provider collateral a deal must lock, per GiB (base units, pro rata).
min_collateral_per_gib = {min_collateral}

# Money in: the balances the ledger starts with, "PEER_ID=AMOUNT" in base
# units (`init --allocate PEER_ID=AMOUNT`). Without the faucet this is the
# only way money enters; `crowd transfer` moves it, `crowd withdraw` takes it out.
allocations = {allocations}
"#,
            listen = list(&self.listen),
            epoch = self.epoch_secs,
            metrics = self.metrics_address,
            faucet_max = self.faucet_max,
            timeout = self.provider_timeout_secs,
            in_flight = self.max_provider_requests,
            per_provider = self.max_requests_per_provider,
            replica_id = self.replica_id,
            replicas = list(&self.replicas),
            faucet = self.faucet,
            preset = self.sealing_preset,
            threshold = self.fault_threshold,
            fee = self.fault_fee_bps,
            share = self.client_share_bps,
            repair = self.repair_after_missed,
            allocations = list(&self.allocations),
            stake = self.provider_stake,
            stake_slash = self.stake_slash_bps,
            min_collateral = self.min_collateral_per_gib,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rendered_config_loads_back_identical() {
        let c = TrackerConfig {
            faucet: true,
            epoch_secs: 0.5,
            fault_threshold: 5,
            ..TrackerConfig::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, c.render()).unwrap();
        assert_eq!(TrackerConfig::load(&p).unwrap(), c);
    }

    #[test]
    fn bad_values_name_the_field_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        for (text, field) in [
            ("sealing_preset = \"fast\"", "sealing_preset"),
            ("listen = [\"not an addr\"]", "listen"),
            ("metrics_address = \"nope\"", "metrics_address"),
            ("epoch_secs = 0.0", "epoch_secs"),
            ("epoch_secs = nan", "epoch_secs"),
            ("fault_threshold = 0", "fault_threshold"),
            ("fault_fee_bps = 10001", "basis points"),
            ("epochs = 5", "epochs"),
        ] {
            std::fs::write(&p, text).unwrap();
            let err = TrackerConfig::load(&p).unwrap_err().to_string();
            assert!(err.contains(field), "{text}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }

    #[test]
    fn a_config_that_disagrees_with_the_genesis_is_refused() {
        let key = crowd_protocol::libp2p::identity::Keypair::generate_ed25519();
        let c = TrackerConfig::default();
        let genesis = c.genesis(&key.public());
        c.check_genesis(&genesis).unwrap();
        let edited = TrackerConfig {
            fault_threshold: 9,
            ..c.clone()
        };
        let err = edited.check_genesis(&genesis).unwrap_err().to_string();
        assert!(err.contains("fault_threshold"), "{err}");
        // `init --force` keeps the stored genesis
        edited.with_genesis(&genesis).check_genesis(&genesis).unwrap();
    }
}
