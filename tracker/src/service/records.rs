//! Providers' track records over the deals in the ledger's hot state, kept
//! as counters.
//!
//! A `Providers` request is answered to anyone, so it must not cost a walk
//! over every deal (it once did, on the ledger's single thread). The counts
//! are built by one walk when the state is opened and then changed only for
//! the deals an applied entry names: every change to a deal's state or to
//! its proven and faulted epochs comes with an event carrying its id (see
//! [`deal_of`]), and the archive hands over the deals that leave.

use std::collections::BTreeMap;

use crowd_protocol::libp2p::PeerId;

use super::state::DealStats;
use crate::{Deal, DealId, DealState, Event, Ledger};

/// One provider's counts over its deals in the hot state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub live: u64,
    pub terminated: u64,
    pub proven: u64,
    pub faulted: u64,
}

impl Tally {
    fn of(deal: &Deal, stats: DealStats) -> Self {
        Self {
            live: u64::from(deal.state.is_live()),
            terminated: u64::from(deal.state == DealState::Terminated),
            proven: stats.proven,
            faulted: stats.faulted,
        }
    }

    fn add(&mut self, other: Self) {
        self.live = self.live.saturating_add(other.live);
        self.terminated = self.terminated.saturating_add(other.terminated);
        self.proven = self.proven.saturating_add(other.proven);
        self.faulted = self.faulted.saturating_add(other.faulted);
    }

    fn sub(&mut self, other: Self) {
        self.live = self.live.saturating_sub(other.live);
        self.terminated = self.terminated.saturating_sub(other.terminated);
        self.proven = self.proven.saturating_sub(other.proven);
        self.faulted = self.faulted.saturating_sub(other.faulted);
    }
}

/// The deal an event changes, if any.
pub fn deal_of(event: &Event) -> Option<DealId> {
    match event {
        Event::DealPublished { deal_id, .. }
        | Event::PreCommitted { deal_id, .. }
        | Event::SealSeed { deal_id, .. }
        | Event::Proven { deal_id }
        | Event::WindowProven { deal_id, .. }
        | Event::Paid { deal_id, .. }
        | Event::Faulted { deal_id, .. }
        | Event::RetrievalFaulted { deal_id, .. }
        | Event::Terminated { deal_id, .. }
        | Event::RepairNeeded { deal_id, .. }
        | Event::RepairPublished { deal_id, .. }
        | Event::Removed { deal_id, .. }
        | Event::Completed { deal_id, .. }
        | Event::Cancelled { deal_id, .. }
        | Event::StakeSlashed { deal_id, .. } => Some(*deal_id),
        _ => None,
    }
}

/// Every provider's [`Tally`], and what each hot deal adds to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HotRecords {
    by_deal: BTreeMap<DealId, (PeerId, Tally)>,
    by_provider: BTreeMap<PeerId, Tally>,
}

impl HotRecords {
    /// One walk over the hot deals (at open and after a reload).
    pub fn build(ledger: &Ledger, stats: &BTreeMap<DealId, DealStats>) -> Self {
        let mut records = Self::default();
        for d in ledger.deals() {
            records.refresh(d.id, ledger, stats);
        }
        records
    }

    /// Counts deal `id` as it is now in `ledger` (with its counters in
    /// `stats`), or no more if it left the hot state.
    pub fn refresh(&mut self, id: DealId, ledger: &Ledger, stats: &BTreeMap<DealId, DealStats>) {
        if let Some((provider, old)) = self.by_deal.remove(&id) {
            self.change(provider, |t| t.sub(old));
        }
        if let Some(d) = ledger.deal(id) {
            let tally = Tally::of(d, stats.get(&id).copied().unwrap_or_default());
            let provider = d.proposal.provider;
            self.change(provider, |t| t.add(tally));
            self.by_deal.insert(id, (provider, tally));
        }
    }

    /// Changes a provider's tally; an all-zero tally is not kept.
    fn change(&mut self, provider: PeerId, f: impl FnOnce(&mut Tally)) {
        let t = self.by_provider.entry(provider).or_default();
        f(t);
        if *t == Tally::default() {
            self.by_provider.remove(&provider);
        }
    }

    pub fn of(&self, provider: &PeerId) -> Tally {
        self.by_provider.get(provider).copied().unwrap_or_default()
    }
}
