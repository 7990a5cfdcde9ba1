//! The pure part of `put`: which providers, at what price, starting when.
//! No I/O: tracker answers in, choices out.

use crowd_protocol::libp2p::PeerId;
use crowd_protocol::{Amount, DealProposal, Epoch, PieceId, ProviderEntry, TrackerInfo};

/// Assumed aggregate upload rate of the client to all its providers.
const UPLOAD_BYTES_PER_SEC: u64 = 16_000_000;
/// Assumed sealing rate of one provider (a devnet node on a shared machine,
/// unoptimised build); every piece is sealed twice (seal, then re-seal to
/// prove).
const SEAL_BYTES_PER_SEC: u64 = 3_000_000;
/// Fixed time for publication, the seal ticket, pre-commit, the seed epoch
/// and the seal proof, whatever the size.
const BASE_MILLIS: u64 = 10_000;

pub use crowd_protocol::tracker::pro_rata;

/// A provider this put may use, with the terms it is offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub entry: ProviderEntry,
    pub price_per_epoch: Amount,
    pub collateral: Amount,
}

/// Providers eligible for pieces of `piece_size` bytes, best first.
///
/// Eligible: not the client itself, reachable (lists an address), staked at
/// least `stake` (the network's), asking at most `max_price` per GiB per
/// epoch, with `capacity − used ≥ piece_size`.
/// Order: [`ProviderEntry::rank_key`] — track record first (fewer
/// terminated deals, then a higher score: a newcomer never ranks above a
/// provider with a clean record), then price, then more free capacity; the
/// peer id breaks ties so the choice is deterministic.
pub fn candidates(
    providers: &[ProviderEntry],
    client: &PeerId,
    piece_size: u64,
    max_price: Amount,
    collateral_per_gib: Amount,
    stake: Amount,
) -> Vec<Candidate> {
    let mut eligible: Vec<&ProviderEntry> = providers
        .iter()
        .filter(|p| p.peer != *client)
        .filter(|p| !p.addrs.is_empty())
        .filter(|p| p.staked >= stake)
        .filter(|p| p.price_per_gib_epoch <= max_price)
        .filter(|p| p.capacity.saturating_sub(p.used) >= piece_size)
        .collect();
    eligible.sort_by_key(|p| p.rank_key());
    eligible.dedup_by_key(|p| p.peer);
    eligible
        .into_iter()
        .map(|p| Candidate {
            entry: p.clone(),
            price_per_epoch: pro_rata(p.price_per_gib_epoch, piece_size),
            collateral: pro_rata(collateral_per_gib.min(p.collateral_per_gib), piece_size),
        })
        .collect()
}

/// What the deals with `chosen` lock from the client's balance.
pub fn total_cost(chosen: &[Candidate], duration_epochs: u64) -> Amount {
    chosen.iter().fold(0u128, |sum, c| {
        sum.saturating_add(c.price_per_epoch.saturating_mul(u128::from(duration_epochs)))
    })
}

/// Epochs between proposing and the deals' start: enough to upload `pieces`
/// pieces of `piece_size` bytes, publish, seal each piece twice and prove,
/// with a margin; within the tracker's `[min_start_lead, max_start_lead]`.
pub fn start_lead(piece_size: u64, pieces: usize, info: &TrackerInfo) -> u64 {
    let total = piece_size.saturating_mul(pieces as u64);
    let upload = total.saturating_mul(1_000) / UPLOAD_BYTES_PER_SEC;
    let seal = piece_size.saturating_mul(2_000) / SEAL_BYTES_PER_SEC;
    let millis = BASE_MILLIS.saturating_add(upload).saturating_add(seal);
    let epochs = millis.div_ceil(info.epoch_millis.max(1));
    let lead = epochs.saturating_add(info.min_start_lead).saturating_add(2);
    lead.clamp(info.min_start_lead, info.max_start_lead.max(info.min_start_lead))
}

/// When a deal proposed now starts and until when it may be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub start_epoch: Epoch,
    pub duration_epochs: u64,
    /// The last epoch it can be published in (`start − min_start_lead`).
    pub expiry_epoch: Epoch,
}

impl Terms {
    pub fn new(info: &TrackerInfo, lead: u64, duration_epochs: u64) -> Self {
        let start_epoch = info.epoch.saturating_add(lead);
        Self {
            start_epoch,
            duration_epochs,
            expiry_epoch: start_epoch.saturating_sub(info.min_start_lead).max(info.epoch),
        }
    }
}

/// The proposal offered to `candidate` for one piece.
pub fn proposal(
    candidate: &Candidate,
    client: PeerId,
    piece: PieceId,
    piece_size: u64,
    terms: Terms,
    nonce: u64,
) -> DealProposal {
    DealProposal {
        piece,
        piece_size,
        client,
        provider: candidate.entry.peer,
        price_per_epoch: candidate.price_per_epoch,
        start_epoch: terms.start_epoch,
        duration_epochs: terms.duration_epochs,
        provider_collateral: candidate.collateral,
        expiry_epoch: terms.expiry_epoch,
        nonce,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn provider(price: u128, capacity: u64, used: u64) -> ProviderEntry {
        ProviderEntry {
            peer: PeerId::random(),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
            capacity,
            used,
            price_per_gib_epoch: price,
            collateral_per_gib: 50,
            live_deals: 0,
            proven_epochs: 0,
            faulted_epochs: 0,
            terminated_deals: 0,
            staked: 10,
        }
    }

    fn info(epoch: u64, epoch_millis: u64) -> TrackerInfo {
        TrackerInfo {
            network: crowd_protocol::NetworkId([0; 32]),
            epoch,
            epoch_millis,
            epoch_ends_in_millis: 0,
            randomness: [0; 32],
            head: [0; 32],
            log_len: 0,
            faucet: true,
            fault_threshold: 3,
            min_start_lead: 2,
            max_start_lead: 1000,
            sealing: "devnet".into(),
            provider_stake: 0,
            min_collateral_per_gib: 0,
        }
    }

    #[test]
    fn pricing_rounds_up_like_the_node() {
        assert_eq!(pro_rata(0, 1 << 30), 0);
        assert_eq!(pro_rata(10, 1), 1);
        assert_eq!(pro_rata(10, 1 << 30), 10);
        assert_eq!(pro_rata(10, (1 << 30) + 1), 11);
        assert_eq!(pro_rata(1_000, 1 << 29), 500);
        assert_eq!(pro_rata(u128::MAX, u64::MAX), u128::MAX.div_ceil(1 << 30));
    }

    #[test]
    fn selection_filters_and_orders_by_record_then_price_then_space() {
        let me = PeerId::random();
        let cheap = provider(5, 1000, 0);
        let dear = provider(50, 1000, 0);
        let too_dear = provider(500, 1000, 0);
        let full = provider(1, 1000, 950);
        let mut faulty = provider(1, 1000, 0);
        faulty.proven_epochs = 90;
        faulty.faulted_epochs = 10;
        // a long clean record ranks above every newcomer, however dear it
        // asks; one fault in 50 epochs still does
        let mut veteran = provider(90, 1000, 0);
        veteran.proven_epochs = 500;
        let mut one_fault = provider(80, 1000, 0);
        one_fault.proven_epochs = 50;
        one_fault.faulted_epochs = 1;
        let mut terminated = provider(1, 1000, 0);
        terminated.terminated_deals = 1;
        let mut unreachable = provider(1, 1000, 0);
        unreachable.addrs.clear();
        let mut slashed = provider(1, 1000, 0);
        slashed.staked = 9;
        let mut myself = provider(1, 1000, 0);
        myself.peer = me;
        let roomy_cheap = provider(5, 5000, 0);
        let all = [
            cheap.clone(),
            dear.clone(),
            too_dear,
            full,
            faulty.clone(),
            terminated.clone(),
            unreachable,
            slashed,
            myself,
            roomy_cheap.clone(),
            one_fault.clone(),
            veteran.clone(),
        ];
        let chosen = candidates(&all, &me, 100, 100, 1_000, 10);
        let peers: Vec<PeerId> = chosen.iter().map(|c| c.entry.peer).collect();
        assert_eq!(
            peers,
            vec![
                veteran.peer,
                one_fault.peer,
                roomy_cheap.peer,
                cheap.peer,
                dear.peer,
                faulty.peer,
                terminated.peer
            ]
        );
        // collateral is the smaller of ours and the provider's, pro rata
        assert_eq!(chosen[2].collateral, pro_rata(50, 100));
        assert_eq!(chosen[4].price_per_epoch, pro_rata(50, 100));
        assert_eq!(total_cost(&chosen[2..4], 10), 20);
    }

    #[test]
    fn lead_grows_with_size_and_stays_within_the_tracker_bounds() {
        let i = info(40, 1000);
        let small = start_lead(1024, 6, &i);
        let big = start_lead(256 << 20, 6, &i);
        assert!(small >= i.min_start_lead + 10, "{small}");
        assert!(big > small + 100, "{big} vs {small}");
        assert_eq!(start_lead(u64::MAX, 6, &i), i.max_start_lead);
        // slower epochs, fewer of them
        assert!(start_lead(256 << 20, 6, &info(40, 2000)) < big);
        let t = Terms::new(&i, small, 100);
        assert_eq!(t.start_epoch, 40 + small);
        assert_eq!(t.expiry_epoch, 40 + small - 2);
        assert!(t.expiry_epoch >= i.epoch);
    }

    #[test]
    fn proposal_carries_the_terms() {
        let c = candidates(&[provider(7, 1 << 40, 0)], &PeerId::random(), 1 << 30, 10, 100, 0)
            .pop()
            .unwrap();
        let client = PeerId::random();
        let piece = PieceId([1; 32]);
        let t = Terms::new(&info(5, 1000), 20, 30);
        let p = proposal(&c, client, piece, 1 << 30, t, 9);
        assert_eq!((p.price_per_epoch, p.provider_collateral), (7, 50));
        assert_eq!((p.start_epoch, p.duration_epochs, p.expiry_epoch), (25, 30, 23));
        assert_eq!((p.client, p.provider, p.nonce), (client, c.entry.peer, 9));
    }
}
