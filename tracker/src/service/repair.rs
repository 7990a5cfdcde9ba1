//! Repair planning, pure: which provider rebuilds a lost piece, from which
//! sources, on what terms. The owner ([`super::state::State`]) calls it
//! from `work()`, signs the job and remembers the run; the epoch loop
//! sends it and polls it ([`super::epoch`]).
//!
//! * **Detection** is the ledger's: a deal holding a registered file's piece
//!   that misses `repair_after_missed` windows in a row is terminated (or a
//!   deal that was never proven is cancelled at its start), and the index
//!   is *lost* ([`Ledger::lost_slots`], fewest healthy pieces first). A
//!   file is repaired as soon as one piece is lost.
//! * **Provider**: the same rule as `crowd put` ([`rank`]: fewer terminated
//!   deals, lower fault rate, lower price, more free space), among
//!   registered providers with an address and room for the piece that hold
//!   no live piece of the file, did not lose this index, and have not
//!   failed this index's repair before.
//! * **Terms**: the provider's asking price pro rata, at most
//!   [`MAX_PRICE_FACTOR`] × the lost deal's price per epoch; collateral the
//!   smaller of the lost deal's and the provider's (pro rata). The deal
//!   starts [`START_LEAD`] epochs after the job is planned and runs to the
//!   file's end; the job expires (must be published) [`MIN_START_LEAD`]
//!   epochs before that start, so the provider can still seal and prove.
//! * **Sources**: every live piece of the file, active (proven) ones first.

use crowd_protocol::libp2p::PeerId;
use crowd_protocol::{DealProposal, Epoch, ProviderEntry, RepairJob, RepairSource};

use crate::{DealState, File, FileId, Ledger, MIN_START_LEAD};

/// A repair deal starts this many epochs after its job is planned: time to
/// fetch and rebuild (until the job's expiry), then [`MIN_START_LEAD`] to
/// seal and prove.
pub const START_LEAD: u64 = MIN_START_LEAD + 2;

/// A repair may cost at most this many times the lost deal's price per
/// epoch.
pub const MAX_PRICE_FACTOR: u128 = 2;

/// Most repair jobs running at once (network-wide).
pub const MAX_RUNNING: usize = 16;

pub use crowd_protocol::tracker::pro_rata;

/// Orders providers best first, by [`ProviderEntry::rank_key`] (as
/// `crowd put` does).
pub fn rank(providers: &mut [&ProviderEntry]) {
    providers.sort_by_key(|p| p.rank_key());
}

/// Why a lost index cannot be repaired now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// Fewer than `k` live pieces: the file cannot be rebuilt.
    TooFewSources { live: usize, needed: u32 },
    /// No eligible provider.
    NoProvider,
    /// The file ends too soon for a new deal.
    TooLate,
    /// The index is not lost (or the file is not live).
    NotLost,
}

/// Plans the repair of `index` of `file`: the job to sign, or why not.
/// `excluded` are providers that already failed this index; `nonce`
/// makes the job (and so the deal's proposal id) unique.
pub fn plan(
    ledger: &Ledger,
    file: &File,
    index: u32,
    providers: &[ProviderEntry],
    excluded: &[PeerId],
    nonce: u64,
) -> Result<RepairJob, Blocked> {
    if !ledger.is_lost(file.id, index) {
        return Err(Blocked::NotLost);
    }
    let slot = &file.slots[index as usize]; // is_lost checked the index
    let lost = ledger.deal(slot.deal).ok_or(Blocked::NotLost)?;
    let epoch = ledger.epoch();
    let start = epoch.saturating_add(START_LEAD);
    let duration = file.end_epoch.saturating_sub(start);
    if duration == 0 {
        return Err(Blocked::TooLate);
    }
    // live pieces, active first, then by index
    let mut sources: Vec<(bool, u64, RepairSource)> = Vec::new();
    let mut holders: Vec<PeerId> = vec![lost.proposal.provider];
    for (i, s) in file.slots.iter().enumerate() {
        let Some(d) = ledger.deal(s.deal).filter(|d| d.state.is_live()) else {
            continue;
        };
        holders.push(d.proposal.provider);
        let addrs = providers
            .iter()
            .find(|p| p.peer == d.proposal.provider)
            .map(|p| p.addrs.clone())
            .unwrap_or_default();
        let active = matches!(d.state, DealState::Active { .. });
        sources.push((
            !active,
            i as u64,
            RepairSource {
                index: i as u64,
                piece: s.piece,
                provider: d.proposal.provider,
                addrs,
            },
        ));
    }
    if sources.len() < file.data_pieces as usize {
        return Err(Blocked::TooFewSources {
            live: sources.len(),
            needed: file.data_pieces,
        });
    }
    sources.sort_by_key(|(inactive, i, _)| (*inactive, *i));
    let max_price = lost.proposal.price_per_epoch.saturating_mul(MAX_PRICE_FACTOR);
    let mut eligible: Vec<&ProviderEntry> = providers
        .iter()
        .filter(|p| p.peer != file.client.0)
        .filter(|p| !p.addrs.is_empty())
        .filter(|p| p.capacity.saturating_sub(p.used) >= slot.piece_size)
        .filter(|p| !holders.contains(&p.peer) && !excluded.contains(&p.peer))
        .filter(|p| pro_rata(p.price_per_gib_epoch, slot.piece_size) <= max_price)
        .collect();
    rank(&mut eligible);
    let chosen = eligible.first().ok_or(Blocked::NoProvider)?;
    Ok(RepairJob {
        file_id: file.id,
        index: u64::from(index),
        manifest: file.manifest,
        proposal: DealProposal {
            piece: slot.piece,
            piece_size: slot.piece_size,
            client: file.client.0,
            provider: chosen.peer,
            price_per_epoch: pro_rata(chosen.price_per_gib_epoch, slot.piece_size),
            start_epoch: start,
            duration_epochs: duration,
            provider_collateral: lost
                .proposal
                .provider_collateral
                .min(pro_rata(chosen.collateral_per_gib, slot.piece_size)),
            expiry_epoch: expiry(epoch),
            nonce,
        },
        sources: sources.into_iter().map(|(_, _, s)| s).collect(),
    })
}

/// The last epoch a job planned in `epoch` may be published in.
pub fn expiry(epoch: Epoch) -> Epoch {
    epoch.saturating_add(START_LEAD - MIN_START_LEAD)
}

/// `(file, index)` of a lost piece.
pub type SlotKey = (FileId, u32);
