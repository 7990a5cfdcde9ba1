//! Prometheus metrics, served as text on `GET /metrics` beside the
//! dashboard ([`crate::dashboard`]).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::records::SealState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// Everything the node exports.
#[derive(Debug, Default)]
pub struct Metrics {
    pub bytes_stored: Gauge,
    pub pieces: Gauge,
    pub space_reserved: Gauge,
    pub streams_pending: Gauge,
    pub space_used: Gauge,
    pub repairs_running: Gauge,
    pub repairs_done: Counter,
    pub repairs_failed: Counter,
    pub gc_deals_removed: Counter,
    pub deals: Family<StateLabel, Gauge>,
    pub seals_queued: Gauge,
    pub seals_running: Gauge,
    pub window_proofs: Counter,
    pub window_proof_failures: Counter,
    pub uploads_rejected: Counter,
    pub requests_refused: Counter,
    pub requests_busy: Counter,
    pub bytes_served: Counter<u64, AtomicU64>,
    pub bytes_received: Counter<u64, AtomicU64>,
    pub dht_provide_failures: Counter,
    pub unseals: Counter,
    pub unseal_cache_hits: Counter,
    pub unseals_refused: Counter,
    pub dht_announced: Counter,
    pub dht_remote_refused: Counter<u64, AtomicU64>,
    pub dht_own_records: Gauge,
    pub dht_remote_records: Gauge,
}

impl Metrics {
    /// Copies the DHT store's counters into the exported metrics.
    pub fn sync_dht(&self, stats: &crowd_protocol::dht::DhtStats) {
        use std::sync::atomic::Ordering::Relaxed;
        let refused = stats.remote_refused.load(Relaxed);
        let seen = self.dht_remote_refused.get();
        if refused > seen {
            self.dht_remote_refused.inc_by(refused - seen);
        }
        self.dht_own_records
            .set(i64::try_from(stats.own_records.load(Relaxed)).unwrap_or(i64::MAX));
        self.dht_remote_records
            .set(i64::try_from(stats.remote_records.load(Relaxed)).unwrap_or(i64::MAX));
    }

    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("crowd_node");
        r.register(
            "bytes_stored",
            "Bytes of verified pieces held",
            self.bytes_stored.clone(),
        );
        r.register("pieces", "Verified pieces held", self.pieces.clone());
        r.register(
            "transfer_streams_pending",
            "Transfer streams waiting for their header (they hold no transfer slot)",
            self.streams_pending.clone(),
        );
        r.register(
            "space_reserved_bytes",
            "Bytes reserved by accepted deals",
            self.space_reserved.clone(),
        );
        r.register(
            "space_used_bytes",
            "Bytes kept for deals: unsealed pieces, replicas and their outboards",
            self.space_used.clone(),
        );
        r.register(
            "repairs_running",
            "Repair jobs in progress",
            self.repairs_running.clone(),
        );
        r.register(
            "repairs_done",
            "Repair jobs whose piece was stored",
            self.repairs_done.clone(),
        );
        r.register(
            "repairs_failed",
            "Repair jobs that gave up",
            self.repairs_failed.clone(),
        );
        r.register(
            "gc_deals_removed",
            "Ended deals whose bytes and records were deleted",
            self.gc_deals_removed.clone(),
        );
        r.register("deals", "Deals by seal state", self.deals.clone());
        r.register(
            "seals_queued",
            "Deals waiting to be sealed",
            self.seals_queued.clone(),
        );
        r.register("seals_running", "Seals in progress", self.seals_running.clone());
        r.register(
            "window_proofs",
            "Window proofs produced",
            self.window_proofs.clone(),
        );
        r.register(
            "window_proof_failures",
            "Window challenges this node could not answer",
            self.window_proof_failures.clone(),
        );
        r.register(
            "uploads_rejected",
            "Uploads rejected (bad bytes, unknown deal, stalls)",
            self.uploads_rejected.clone(),
        );
        r.register(
            "requests_refused",
            "Control requests answered with an error",
            self.requests_refused.clone(),
        );
        r.register(
            "unseals",
            "Pieces unsealed from a replica to serve a fetch",
            self.unseals.clone(),
        );
        r.register(
            "unseal_cache_hits",
            "Fetches of sealed-only pieces served from the unsealed cache",
            self.unseal_cache_hits.clone(),
        );
        r.register(
            "unseals_refused",
            "Fetches refused because the peer spent its unseal budget",
            self.unseals_refused.clone(),
        );
        r.register(
            "dht_provide_failures",
            "DHT announcements of what we hold that failed (store refused, or no peer took them)",
            self.dht_provide_failures.clone(),
        );
        r.register(
            "dht_announced",
            "DHT announcements of what we hold (at start, after each store)",
            self.dht_announced.clone(),
        );
        r.register(
            "dht_remote_refused",
            "Provider records other peers announced that our DHT store refused (full)",
            self.dht_remote_refused.clone(),
        );
        r.register(
            "dht_own_records",
            "Our own provider records in the DHT store (what we announce)",
            self.dht_own_records.clone(),
        );
        r.register(
            "dht_remote_records",
            "Other peers' provider records in our DHT store",
            self.dht_remote_records.clone(),
        );
        r.register(
            "requests_busy",
            "Control requests answered busy (beyond max_inbound_requests, in all or per peer)",
            self.requests_busy.clone(),
        );
        r.register(
            "bytes_served",
            "Piece bytes served to fetchers",
            self.bytes_served.clone(),
        );
        r.register(
            "bytes_received",
            "Piece bytes received in uploads",
            self.bytes_received.clone(),
        );
        r
    }

    /// Moves the per-state deal gauge.
    pub fn deal_state(&self, state: &SealState, delta: i64) {
        let name = match state {
            SealState::Queued => "queued",
            SealState::Sealed { .. } => "sealed",
            SealState::Failed(_) => "failed",
        };
        self.deals
            .get_or_create(&StateLabel { state: name.into() })
            .inc_by(delta);
    }
}
