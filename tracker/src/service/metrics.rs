//! Prometheus metrics of the tracker, served as text on `GET /metrics`
//! (beside the network page, [`super::dashboard`]).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::{Event, Ledger};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// Everything the tracker exports. Amounts are in base units, saturated at
/// `u64::MAX` (metrics are for dashboards, the ledger is the record).
#[derive(Debug, Default)]
pub struct Metrics {
    pub epoch: Gauge,
    pub log_len: Gauge,
    pub deals: Family<StateLabel, Gauge>,
    pub providers: Gauge,
    pub proofs_verified: Counter,
    pub proofs_invalid: Counter,
    pub proofs_missing: Counter,
    pub seal_proofs_verified: Counter,
    pub payments: Counter,
    pub paid: Counter<u64, AtomicU64>,
    pub faults: Counter,
    pub terminations: Counter,
    pub slashed: Counter<u64, AtomicU64>,
    pub minted: Counter<u64, AtomicU64>,
    pub requests_served: Counter,
    pub requests_refused: Counter,
    pub provider_requests_failed: Counter,
    pub provider_requests_deferred: Counter,
    pub repairs_running: Gauge,
    pub repairs_done: Counter,
    pub repairs_failed: Counter,
    pub repair_cost: Counter<u64, AtomicU64>,
    pub files_removed: Counter,
    pub files_renewed: Counter,
    pub retrieval_faults: Counter,
    pub archived_deals: Gauge,
    pub archived_files: Gauge,
    pub admissions: Counter,
    pub admissions_lapsed: Counter,
    /// 1 while this tracker acts for the network (a single tracker always;
    /// a replica while it leads its set).
    pub leads: Gauge,
}

fn saturate(a: u128) -> u64 {
    u64::try_from(a).unwrap_or(u64::MAX)
}

impl Metrics {
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("crowd_tracker");
        r.register("epoch", "The open (unsettled) epoch", self.epoch.clone());
        r.register(
            "leads",
            "1 while this tracker acts for the network: a single tracker always, a replica while it leads its replica set",
            self.leads.clone(),
        );
        r.register("log_entries", "Entries in the ledger log", self.log_len.clone());
        r.register(
            "deals",
            "Deals in the ledger's state, by state (archived ones are counted by archived_deals)",
            self.deals.clone(),
        );
        r.register("providers", "Registered providers", self.providers.clone());
        r.register(
            "window_proofs_verified",
            "Window proofs verified and recorded",
            self.proofs_verified.clone(),
        );
        r.register(
            "proofs_invalid",
            "Seal and window proofs refused as invalid",
            self.proofs_invalid.clone(),
        );
        r.register(
            "window_proofs_missing",
            "Challenged deal-epochs settled without a valid proof (faults)",
            self.proofs_missing.clone(),
        );
        r.register(
            "seal_proofs_verified",
            "Seal proofs verified (deals activated)",
            self.seal_proofs_verified.clone(),
        );
        r.register("payments", "Epoch payments to providers", self.payments.clone());
        r.register("paid", "Base units paid to providers", self.paid.clone());
        r.register("faults", "Faults recorded", self.faults.clone());
        r.register(
            "terminations",
            "Deals terminated by faults",
            self.terminations.clone(),
        );
        r.register(
            "slashed",
            "Base units of collateral slashed at termination",
            self.slashed.clone(),
        );
        r.register("minted", "Base units minted by the faucet", self.minted.clone());
        r.register(
            "requests_served",
            "Tracker requests answered",
            self.requests_served.clone(),
        );
        r.register(
            "requests_refused",
            "Tracker requests answered with an error",
            self.requests_refused.clone(),
        );
        r.register(
            "repairs_running",
            "Repair jobs planned, sent or polled and not yet published",
            self.repairs_running.clone(),
        );
        r.register(
            "repairs_done",
            "Repair deals published (a lost piece rebuilt on a new provider)",
            self.repairs_done.clone(),
        );
        r.register(
            "repairs_failed",
            "Repair jobs that failed, expired or were refused (retried elsewhere)",
            self.repairs_failed.clone(),
        );
        r.register(
            "repair_cost",
            "Base units of escrow locked for repair deals",
            self.repair_cost.clone(),
        );
        r.register(
            "files_removed",
            "Files removed by their owner",
            self.files_removed.clone(),
        );
        r.register("files_renewed", "File renewals", self.files_renewed.clone());
        r.register(
            "retrieval_faults",
            "Faults for serving bytes that are not the piece's (seen by the tracker's own audit)",
            self.retrieval_faults.clone(),
        );
        r.register(
            "archived_deals",
            "Ended deals moved out of the ledger's state into the archive",
            self.archived_deals.clone(),
        );
        r.register(
            "archived_files",
            "Finished files moved out of the ledger's state into the archive",
            self.archived_files.clone(),
        );
        r.register(
            "admissions",
            "Proposals admitted (their escrow locked before they were offered)",
            self.admissions.clone(),
        );
        r.register(
            "admissions_lapsed",
            "Admitted proposals never published: the lock lapsed and the escrow went back",
            self.admissions_lapsed.clone(),
        );
        r.register(
            "provider_requests_failed",
            "Requests to providers that failed or timed out",
            self.provider_requests_failed.clone(),
        );
        r.register(
            "provider_requests_deferred",
            "Requests held back a tick because their provider already had max_requests_per_provider in flight",
            self.provider_requests_deferred.clone(),
        );
        r
    }

    /// Counts what the ledger emitted.
    pub fn events(&self, events: &[Event]) {
        let mut retrieval = Vec::new();
        for e in events {
            match e {
                Event::RetrievalFaulted { deal_id, .. } => {
                    self.retrieval_faults.inc();
                    retrieval.push(*deal_id);
                }
                Event::WindowProven { .. } => {
                    self.proofs_verified.inc();
                }
                Event::Proven { .. } => {
                    self.seal_proofs_verified.inc();
                }
                Event::Paid { amount, .. } => {
                    self.payments.inc();
                    self.paid.inc_by(saturate(*amount));
                }
                Event::Faulted { deal_id, .. } => {
                    self.faults.inc();
                    // a retrieval fault is a fault, not a missing proof
                    if !retrieval.contains(deal_id) {
                        self.proofs_missing.inc();
                    }
                }
                Event::Terminated {
                    client_compensation,
                    burned,
                    ..
                } => {
                    self.terminations.inc();
                    self.slashed
                        .inc_by(saturate(client_compensation.saturating_add(*burned)));
                }
                Event::Minted { amount, .. } => {
                    self.minted.inc_by(saturate(*amount));
                }
                Event::RepairPublished {
                    from_fund,
                    from_balance,
                    ..
                } => {
                    self.repairs_done.inc();
                    self.repair_cost
                        .inc_by(saturate(from_fund.saturating_add(*from_balance)));
                }
                Event::Admitted { .. } => {
                    self.admissions.inc();
                }
                Event::AdmissionLapsed { .. } => {
                    self.admissions_lapsed.inc();
                }
                Event::FileRemoved { .. } => {
                    self.files_removed.inc();
                }
                Event::FileRenewed { .. } => {
                    self.files_renewed.inc();
                }
                _ => {}
            }
        }
    }

    /// Sets the gauges that cost nothing to read (after every write).
    pub fn gauges_cheap(&self, ledger: &Ledger) {
        self.epoch.set(ledger.epoch() as i64);
        self.log_len.set(ledger.log_len() as i64);
        let (deals, files) = ledger.archived();
        self.archived_deals.set(deals as i64);
        self.archived_files.set(files as i64);
    }

    /// Sets every gauge from the ledger, visiting every deal (at start and
    /// after each settled epoch).
    pub fn gauges(&self, ledger: &Ledger) {
        self.epoch.set(ledger.epoch() as i64);
        self.log_len.set(ledger.log_len() as i64);
        self.providers.set(ledger.providers().count() as i64);
        let mut by_state: std::collections::BTreeMap<&'static str, i64> = [
            "published",
            "pre-committed",
            "active",
            "completed",
            "terminated",
            "cancelled",
            "removed",
        ]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
        for d in ledger.deals() {
            *by_state.entry(d.state.name()).or_default() += 1;
        }
        for (state, n) in by_state {
            self.deals
                .get_or_create(&StateLabel { state: state.into() })
                .set(n);
        }
    }
}
