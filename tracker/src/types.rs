//! Ledger inputs, events, configuration and state records.

use crowd_porep::SealParams;
use crowd_protocol::libp2p::identity::{Keypair, PublicKey};
use crowd_protocol::libp2p::PeerId;
use crowd_protocol::{
    Amount, DealAcceptance, DealProposal, Epoch, FileRegistration, PieceId, PieceReceipt, ProposalId,
    RemoveRequest, RenewRequest, RepairJob, SealCommitment, SealProofMsg, Signable, Signed, WindowProofMsg,
};
pub use crowd_protocol::{ProviderRegistration, TransferRequest, WithdrawRequest};
use serde::{Deserialize, Serialize};

use crate::error::LedgerError;

/// A 32-byte hash (heads, randomness, tickets, seeds, commitments).
pub type Hash32 = [u8; 32];
/// A deal's number, assigned by the ledger in publication order from 0.
pub type DealId = u64;
/// A file's number, assigned by the ledger in registration order from 0.
pub type FileId = u64;

/// Most pieces (deals) one file registers: Reed-Solomon over GF(2^8).
pub const MAX_FILE_PIECES: usize = 256;

/// Most epochs one renewal adds.
pub const MAX_RENEW_EPOCHS: u64 = 1_000_000;

/// Basis points: 10 000 = 100 %.
pub const BPS: u32 = 10_000;

/// Fewest epochs between publication and a deal's start epoch: the provider
/// pre-commits in the publication epoch at the earliest, the seal seed is the
/// next epoch's randomness, and the deal must be proven before it starts.
pub const MIN_START_LEAD: u64 = 2;

/// Latest start a published deal may have, in epochs after the current one:
/// a far-future start would lock collateral and escrow with no work due.
pub const MAX_START_LEAD: u64 = 1_000;

/// Escrow a client locked for a proposal before offering it (paid
/// admission); see [`Input::AdmitProposal`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionLock {
    pub client: AccountId,
    /// The deal's price × duration, held in the client's locked escrow.
    pub escrow: Amount,
    /// The last epoch the proposal can be published in
    /// ([`publish_deadline`]); when it is settled, the lock lapses.
    pub until_epoch: Epoch,
}

/// The last epoch a proposal can be published in: not after its expiry,
/// and at least [`MIN_START_LEAD`] before its start.
pub fn publish_deadline(p: &DealProposal) -> Epoch {
    p.expiry_epoch.min(p.start_epoch.saturating_sub(MIN_START_LEAD))
}

/// An account: a libp2p peer id (clients and providers alike).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AccountId(#[serde(with = "crowd_protocol::wire::peer")] pub PeerId);

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccountId({})", self.0)
    }
}

impl From<PeerId> for AccountId {
    fn from(p: PeerId) -> Self {
        Self(p)
    }
}

pub use crowd_protocol::provider_hash;

/// What the tracker signs to end `epoch`: `"crowd/1/tracker-epoch" ‖ 0 ‖
/// epoch:u64le ‖ head`, where `head` is the ledger head before the `EndEpoch`.
pub fn epoch_signing_input(epoch: Epoch, head: &Hash32) -> Vec<u8> {
    let mut msg = Vec::with_capacity(64);
    msg.extend_from_slice(b"crowd/1/tracker-epoch");
    msg.push(0);
    msg.extend_from_slice(&epoch.to_le_bytes());
    msg.extend_from_slice(head);
    msg
}

/// The randomness an epoch signature yields: `derive_key("crowdstore tracker
/// randomness v1", signature)`.
pub fn randomness_from_signature(signature: &[u8]) -> Hash32 {
    *blake3::Hasher::new_derive_key("crowdstore tracker randomness v1")
        .update(signature)
        .finalize()
        .as_bytes()
}

/// The tracker's side of ending an epoch: sign `(epoch, head)` with its key.
/// The service calls this with [`crate::Ledger::epoch`] and [`crate::Ledger::head`].
pub fn sign_epoch(key: &Keypair, epoch: Epoch, head: &Hash32) -> Result<Input, LedgerError> {
    let tracker_signature =
        key.sign(&epoch_signing_input(epoch, head))
            .map_err(|_| LedgerError::BadSignature {
                what: "tracker-epoch",
            })?;
    Ok(Input::EndEpoch {
        epoch,
        tracker_signature,
    })
}

/// The genesis configuration; part of the genesis head, so a log only
/// replays under the configuration it was written with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerConfig {
    /// The tracker's ed25519 public key (libp2p protobuf encoding); it signs epochs.
    #[serde(with = "crowd_protocol::wire::bytes")]
    pub tracker_key: Vec<u8>,
    /// Accept `Mint` (development networks only).
    pub faucet: bool,
    /// Sealing parameters seal and window proofs are verified with.
    pub params: SealParams,
    /// `F`: this many consecutive faults terminate a deal.
    pub fault_threshold: u32,
    /// Fee per fault, in basis points of the deal's provider collateral
    /// (capped at what is still locked); burned.
    pub fault_fee_bps: u32,
    /// Share of the collateral slashed at termination paid to the client, in
    /// basis points; the rest is burned.
    pub client_share_bps: u32,
    /// A deal that holds a registered file's piece is terminated (and the
    /// piece repaired) after this many consecutive missed windows; 0 means
    /// `fault_threshold`. At most `fault_threshold`.
    #[serde(default)]
    pub repair_after_missed: u32,
    /// Ended deals and finished files leave the ledger's state at the end
    /// of the epoch they become archivable (see the crate documentation,
    /// "Archive"); the log keeps their history. Every new genesis sets it;
    /// ledgers begun before the rule existed replay without it.
    #[serde(default)]
    pub archive_ended: bool,
    /// Money in: balances the ledger starts with (minted at genesis), in
    /// account order, each account once. Not serialised when empty, so
    /// ledgers begun without allocations keep their genesis head.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocations: Vec<(AccountId, Amount)>,
    /// Sybil resistance: what registering as a provider locks from its
    /// free balance (its stake), returned when it leaves with no live deal.
    /// 0 (ledgers begun before stakes): free registration.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub provider_stake: Amount,
    /// Share of `provider_stake` burned from a provider's stake at each
    /// termination of one of its deals, in basis points.
    #[serde(default, skip_serializing_if = "is_zero_bps")]
    pub stake_slash_bps: u32,
    /// Least provider collateral per GiB a deal must lock (pro rata,
    /// rounded up), so no deal is free to abandon.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_collateral_per_gib: Amount,
}

fn is_zero(a: &Amount) -> bool {
    *a == 0
}

fn is_zero_bps(a: &u32) -> bool {
    *a == 0
}

impl LedgerConfig {
    /// Devnet defaults: faucet on, devnet sealing, F = 3, 10 % fault fee, half
    /// of a slashed collateral to the client.
    pub fn devnet(tracker: &PublicKey) -> Self {
        Self {
            tracker_key: tracker.encode_protobuf(),
            faucet: true,
            params: SealParams::devnet(),
            fault_threshold: 3,
            fault_fee_bps: 1_000,
            client_share_bps: 5_000,
            repair_after_missed: 2,
            archive_ended: true,
            allocations: Vec::new(),
            provider_stake: 0,
            stake_slash_bps: 0,
            min_collateral_per_gib: 0,
        }
    }

    /// Consecutive faults that terminate a deal holding a file's piece.
    pub fn repair_threshold(&self) -> u32 {
        match self.repair_after_missed {
            0 => self.fault_threshold,
            n => n.min(self.fault_threshold),
        }
    }

    /// Checks every field; the tracker key must be an ed25519 key.
    pub fn validate(&self) -> Result<(), LedgerError> {
        self.tracker_public_key()?;
        self.params
            .validate()
            .map_err(|_| LedgerError::InvalidConfig("sealing parameters"))?;
        if self.fault_threshold == 0 {
            return Err(LedgerError::InvalidConfig("fault_threshold must be at least 1"));
        }
        if self.fault_fee_bps > BPS || self.client_share_bps > BPS || self.stake_slash_bps > BPS {
            return Err(LedgerError::InvalidConfig("basis points above 10000"));
        }
        if self.repair_after_missed > self.fault_threshold {
            return Err(LedgerError::InvalidConfig(
                "repair_after_missed must not exceed fault_threshold",
            ));
        }
        if self.allocations.iter().any(|(_, amount)| *amount == 0) {
            return Err(LedgerError::InvalidConfig("an allocation of 0"));
        }
        if self.allocations.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(LedgerError::InvalidConfig(
                "allocations must name each account once, in account order",
            ));
        }
        self.allocations
            .iter()
            .try_fold(0 as Amount, |sum, (_, a)| sum.checked_add(*a))
            .ok_or(LedgerError::InvalidConfig("allocations overflow the supply"))?;
        Ok(())
    }

    /// The decoded tracker key.
    pub fn tracker_public_key(&self) -> Result<PublicKey, LedgerError> {
        let key = PublicKey::try_decode_protobuf(&self.tracker_key)
            .map_err(|_| LedgerError::InvalidConfig("tracker_key does not decode"))?;
        if key.clone().try_into_ed25519().is_err() {
            return Err(LedgerError::InvalidConfig("tracker_key is not ed25519"));
        }
        Ok(key)
    }
}

/// The tracker's own finding that the provider holding piece `index` of a
/// file served bytes that fail verification against the piece's CID: a
/// repair named it (`accuser`, the repairing provider), and the tracker then
/// fetched the 16 KiB group at `offset` from it and that group failed too.
/// Signed by the tracker; applied in `epoch` only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrievalAudit {
    pub file_id: FileId,
    pub index: u32,
    pub provider: AccountId,
    pub epoch: Epoch,
    pub offset: u64,
    pub accuser: AccountId,
}
impl Signable for RetrievalAudit {
    const DOMAIN: &'static str = "retrieval-audit";
}

/// Everything that changes the ledger. Each accepted input is logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// Devnet faucet: create `amount` in `account`. `nonce` must equal
    /// [`crate::Ledger::mints`], so a repeated mint is a duplicate.
    Mint {
        account: AccountId,
        amount: Amount,
        nonce: u64,
    },
    /// Take free balance out of the ledger.
    Withdraw(Signed<WithdrawRequest>),
    /// Pay free balance to another account.
    Transfer(Signed<TransferRequest>),
    /// Register or update a provider.
    RegisterProvider(Signed<ProviderRegistration>),
    /// The client locks a proposal's escrow before offering it to the
    /// provider (paid admission): until the proposal can no longer be
    /// published; publishing it uses the lock.
    AdmitProposal(Signed<DealProposal>),
    /// Publish a deal both parties signed; the provider's receipt names the
    /// piece of a proposal that names none.
    PublishDeal {
        proposal: Signed<DealProposal>,
        acceptance: Signed<DealAcceptance>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        receipt: Option<Signed<PieceReceipt>>,
    },
    /// The provider's comm_r for a published deal.
    PreCommit(Signed<SealCommitment>),
    /// The provider's seal proof for a pre-committed deal.
    SealProof(Signed<SealProofMsg>),
    /// The provider's window proof for an active deal in the current epoch.
    WindowProof(Signed<WindowProofMsg>),
    /// The client registers a stored file: its deals by piece index.
    RegisterFile(Signed<FileRegistration>),
    /// The owner ends a file's deals now.
    RemoveFile(Signed<RemoveRequest>),
    /// The owner extends a file's deals.
    RenewFile(Signed<RenewRequest>),
    /// A new deal for a lost piece of a file: the job signed by the tracker,
    /// accepted (over the job's id) by the new provider after it rebuilt
    /// and stored the piece.
    PublishRepair {
        job: Signed<RepairJob>,
        acceptance: Signed<DealAcceptance>,
    },
    /// The tracker saw a provider serve a piece's bytes that fail
    /// verification: the deal faults for the epoch (and is not paid for it).
    RetrievalFault(Signed<RetrievalAudit>),
    /// The tracker ends (settles) `epoch`; see [`sign_epoch`].
    EndEpoch {
        epoch: Epoch,
        #[serde(with = "crowd_protocol::wire::bytes")]
        tracker_signature: Vec<u8>,
    },
}

/// What applying an input did; the service turns these into messages
/// (signed tickets and seeds, repair jobs) and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Minted {
        account: AccountId,
        amount: Amount,
    },
    Withdrawn {
        account: AccountId,
        amount: Amount,
    },
    Transferred {
        from: AccountId,
        to: AccountId,
        amount: Amount,
    },
    /// A registration locked `amount` more of the provider's stake.
    Staked {
        provider: AccountId,
        amount: Amount,
    },
    /// A provider that left (registered with no capacity and no live deal)
    /// got its stake back.
    StakeReturned {
        provider: AccountId,
        amount: Amount,
    },
    /// A termination burned `amount` of the provider's stake.
    StakeSlashed {
        provider: AccountId,
        deal_id: DealId,
        amount: Amount,
    },
    ProviderRegistered {
        provider: AccountId,
        capacity: u64,
        price_per_gib_epoch: Amount,
        collateral_per_gib: Amount,
    },
    /// Escrow and collateral are locked; the provider seals with `ticket`.
    /// A proposal's escrow is locked until `until_epoch` (its last
    /// publishable epoch).
    Admitted {
        #[serde(with = "crowd_protocol::wire::hash32")]
        proposal: ProposalId,
        client: AccountId,
        escrow: Amount,
        until_epoch: Epoch,
    },
    /// An admitted proposal was not published by its last epoch: its escrow
    /// went back to the client.
    AdmissionLapsed {
        #[serde(with = "crowd_protocol::wire::hash32")]
        proposal: ProposalId,
        client: AccountId,
        refund: Amount,
    },
    DealPublished {
        deal_id: DealId,
        #[serde(with = "crowd_protocol::wire::hash32")]
        proposal: ProposalId,
        #[serde(with = "crowd_protocol::wire::hash32")]
        ticket: Hash32,
    },
    PreCommitted {
        deal_id: DealId,
        #[serde(with = "crowd_protocol::wire::hash32")]
        comm_r: Hash32,
    },
    /// The seal seed, drawn when the pre-commit epoch ended.
    SealSeed {
        deal_id: DealId,
        #[serde(with = "crowd_protocol::wire::hash32")]
        seed: Hash32,
    },
    /// The seal proof verified; the deal is active.
    Proven {
        deal_id: DealId,
    },
    /// A window proof verified; the epoch will be paid when it is settled.
    WindowProven {
        deal_id: DealId,
        epoch: Epoch,
    },
    /// One epoch's price moved from the client's escrow to the provider.
    Paid {
        deal_id: DealId,
        epoch: Epoch,
        amount: Amount,
    },
    /// No valid proof for `epoch`: `fee` of collateral burned, no payment.
    Faulted {
        deal_id: DealId,
        epoch: Epoch,
        fee: Amount,
        consecutive: u32,
    },
    /// The tracker verified for itself that the deal's provider served bytes
    /// of its piece that are not the piece's (a `Faulted` follows).
    RetrievalFaulted {
        deal_id: DealId,
        epoch: Epoch,
        offset: u64,
        accuser: AccountId,
    },
    /// `F` consecutive faults: the remaining collateral is slashed
    /// (`client_compensation` to the client, `burned` burned) and the
    /// unearned escrow (`refund`) goes back to the client.
    Terminated {
        deal_id: DealId,
        client_compensation: Amount,
        burned: Amount,
        refund: Amount,
    },
    /// The piece of a terminated deal needs a new replica elsewhere; `file`
    /// names the registered file and piece index it held, if any.
    RepairNeeded {
        deal_id: DealId,
        piece: PieceId,
        piece_size: u64,
        client: AccountId,
        file: Option<(FileId, u32)>,
    },
    FileRegistered {
        file_id: FileId,
        client: AccountId,
    },
    /// A repair deal holds `index` of `file_id` now; its escrow came
    /// `from_fund` (the file's repair fund) and `from_balance` (the
    /// client's free balance).
    RepairPublished {
        file_id: FileId,
        index: u32,
        deal_id: DealId,
        from_fund: Amount,
        from_balance: Amount,
    },
    /// The owner ended a deal early: `refund` escrow to the client,
    /// `collateral_returned` to the provider.
    Removed {
        deal_id: DealId,
        refund: Amount,
        collateral_returned: Amount,
    },
    /// The owner removed a file; `refund` in all (deals and repair fund).
    FileRemoved {
        file_id: FileId,
        refund: Amount,
    },
    FileRenewed {
        file_id: FileId,
        end_epoch: Epoch,
        locked: Amount,
    },
    /// A file's term is over; its unused repair fund (`refund`) is back.
    FileExpired {
        file_id: FileId,
        refund: Amount,
    },
    /// The deal ran its course: collateral back, unearned escrow back.
    Completed {
        deal_id: DealId,
        collateral_returned: Amount,
        refund: Amount,
    },
    /// Not proven before its start epoch: everything locked is returned.
    Cancelled {
        deal_id: DealId,
        escrow_returned: Amount,
        collateral_returned: Amount,
    },
    /// Ended deals and finished files that left the ledger's state, as
    /// they were last (the service keeps them in its archive).
    Archived {
        deals: Vec<Deal>,
        files: Vec<File>,
    },
    /// `epoch` is settled; `randomness` is epoch `epoch + 1`'s.
    EpochEnded {
        epoch: Epoch,
        #[serde(with = "crowd_protocol::wire::hash32")]
        randomness: Hash32,
    },
}

/// An account's money. Free balance can be withdrawn or locked; locked
/// amounts belong to live deals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Free balance.
    pub available: Amount,
    /// Escrow locked for live deals this account is the client of.
    pub locked_escrow: Amount,
    /// Collateral locked for live deals this account is the provider of.
    pub locked_collateral: Amount,
    /// Next nonce for this account's own messages (register, withdraw).
    pub nonce: u64,
    /// A provider's stake, locked by its registration (see
    /// [`LedgerConfig::provider_stake`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub staked: Amount,
}

impl Account {
    /// Everything the account owns, free or locked.
    pub fn total(&self) -> Option<Amount> {
        self.available
            .checked_add(self.locked_escrow)?
            .checked_add(self.locked_collateral)?
            .checked_add(self.staked)
    }
}

/// A registered provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    pub capacity: u64,
    pub price_per_gib_epoch: Amount,
    pub collateral_per_gib: Amount,
    /// Bytes of pieces under live deals.
    pub used: u64,
}

/// Where a deal is in its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DealState {
    /// Locked and ticketed; waiting for the provider's comm_r.
    Published,
    /// comm_r published in `epoch`; the seed is epoch `epoch + 1`'s randomness,
    /// `Some` once `epoch` has ended.
    PreCommitted {
        #[serde(with = "crowd_protocol::wire::hash32")]
        comm_r: Hash32,
        #[serde(with = "crowd_protocol::wire::hash32")]
        replica_id: Hash32,
        epoch: Epoch,
        seed: Option<Hash32>,
    },
    /// Seal proven: challenged every epoch of `[start, start + duration)`.
    Active {
        #[serde(with = "crowd_protocol::wire::hash32")]
        comm_r: Hash32,
        /// The epoch of the last valid window proof.
        proven_epoch: Option<Epoch>,
    },
    Completed,
    Terminated,
    Cancelled,
    /// Ended early by the file's owner (`RemoveFile`).
    Removed,
}

impl DealState {
    /// A short name for errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Published => "published",
            Self::PreCommitted { .. } => "pre-committed",
            Self::Active { .. } => "active",
            Self::Completed => "completed",
            Self::Terminated => "terminated",
            Self::Cancelled => "cancelled",
            Self::Removed => "removed",
        }
    }

    /// Whether the deal still holds locked money.
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            Self::Published | Self::PreCommitted { .. } | Self::Active { .. }
        )
    }
}

/// A published deal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deal {
    pub id: DealId,
    #[serde(with = "crowd_protocol::wire::hash32")]
    pub proposal_id: ProposalId,
    pub proposal: DealProposal,
    pub published_epoch: Epoch,
    #[serde(with = "crowd_protocol::wire::hash32")]
    pub ticket: Hash32,
    pub state: DealState,
    /// Escrow still locked for this deal (unearned so far).
    pub escrow: Amount,
    /// Collateral still locked for this deal.
    pub collateral: Amount,
    /// Paid to the provider so far.
    pub paid: Amount,
    /// The last epoch paid; payments are strictly increasing in epoch.
    pub last_paid_epoch: Option<Epoch>,
    pub consecutive_faults: u32,
    pub total_faults: u64,
    /// Epochs added by renewals after `start + duration`.
    #[serde(default)]
    pub extension_epochs: u64,
    /// The epoch a retrieval fault was recorded in, if any (at most one per
    /// epoch; that epoch is not paid).
    #[serde(default)]
    pub retrieval_fault_epoch: Option<Epoch>,
}

impl Deal {
    pub fn client(&self) -> AccountId {
        AccountId(self.proposal.client)
    }

    pub fn provider(&self) -> AccountId {
        AccountId(self.proposal.provider)
    }

    /// The first epoch after the deal: it is challenged in `[start, end)`.
    /// Checked at publication and renewal not to overflow.
    pub fn end_epoch(&self) -> Epoch {
        self.proposal
            .start_epoch
            .saturating_add(self.proposal.duration_epochs)
            .saturating_add(self.extension_epochs)
    }

    /// Epochs the deal is paid for: its duration plus its renewals.
    pub fn term_epochs(&self) -> u64 {
        self.proposal
            .duration_epochs
            .saturating_add(self.extension_epochs)
    }
}

/// Where a registered file is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileState {
    /// Stored: challenged, repaired, renewable.
    Live,
    /// Ended early by its owner.
    Removed,
    /// Its term is over.
    Expired,
}

impl FileState {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Removed => "removed",
            Self::Expired => "expired",
        }
    }
}

/// One piece index of a file and the deal that holds it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub piece: PieceId,
    pub piece_size: u64,
    /// The index's current deal: the original one, or its latest repair.
    /// The index is *lost* while this deal is not live.
    pub deal: DealId,
}

/// A registered file: what repair, renewal and removal act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    pub id: FileId,
    pub client: AccountId,
    /// The stored bytes' root CID (bytes).
    #[serde(with = "crowd_protocol::wire::bytes")]
    pub root: Vec<u8>,
    /// The manifest's CID digest.
    #[serde(with = "crowd_protocol::wire::hash32")]
    pub manifest: Hash32,
    /// `k`: pieces a rebuild needs.
    pub data_pieces: u32,
    /// By piece index.
    pub slots: Vec<Slot>,
    /// The first epoch after the file's term (repairs run to it, renewals
    /// move it).
    pub end_epoch: Epoch,
    pub state: FileState,
    /// Escrow locked for this file's repairs (part of the client's locked
    /// escrow): the unearned escrow of its deals that ended early plus the
    /// client's share of their slashed collateral. Repairs draw on it
    /// first, then on the client's free balance; what is left goes back to
    /// the client when the file ends.
    pub repair_fund: Amount,
    /// Repair deals published for it.
    pub repairs: u64,
    /// Escrow those repair deals locked.
    pub repair_cost: Amount,
}

/// Supply counters. Conservation: the sum over accounts of
/// [`Account::total`] plus `burned` plus `withdrawn` equals `minted`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supply {
    pub minted: Amount,
    pub burned: Amount,
    pub withdrawn: Amount,
}

#[cfg(test)]
mod tests {
    // Test code: a broken fixture is a failed test.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crowd_protocol::wire::{from_cbor, to_cbor};
    use proptest::prelude::*;

    fn peer(seed: u8) -> PeerId {
        Keypair::ed25519_from_bytes([seed; 32])
            .unwrap()
            .public()
            .to_peer_id()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn input_cbor_proptest(
            seed in any::<u8>(),
            amount in any::<u128>(),
            nonce in any::<u64>(),
            epoch in any::<u64>(),
            sig in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let key = Keypair::ed25519_from_bytes([seed; 32]).unwrap();
            let inputs = [
                Input::Mint { account: AccountId(peer(seed)), amount, nonce },
                Input::EndEpoch { epoch, tracker_signature: sig },
                Input::Withdraw(Signed::sign(&key, &crowd_protocol::NetworkId([seed; 32]), &WithdrawRequest { amount, nonce }).unwrap()),
            ];
            for input in inputs {
                let back: Input = from_cbor("input", &to_cbor(&input)).unwrap();
                prop_assert_eq!(back, input);
            }
        }

        /// Untrusted bytes never decode to a panic.
        #[test]
        fn input_garbage_proptest(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = from_cbor::<Input>("input", &bytes);
            let _ = from_cbor::<crate::LogEntry>("log entry", &bytes);
        }
    }

    #[test]
    fn epoch_signing_input_binds_epoch_and_head() {
        let a = epoch_signing_input(1, &[0; 32]);
        assert_ne!(a, epoch_signing_input(2, &[0; 32]));
        assert_ne!(a, epoch_signing_input(1, &[1; 32]));
        assert!(a.starts_with(b"crowd/1/tracker-epoch\0"));
    }
}
