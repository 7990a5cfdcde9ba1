//! Messages between clients or providers and the tracker, on
//! `/crowd/control/1` inside [`crate::Request::Tracker`] /
//! [`crate::Response::Tracker`].
//!
//! | request | sent by | answer |
//! | --- | --- | --- |
//! | [`TrackerRequest::Info`] | anyone | [`TrackerResponse::Info`]: epoch, randomness, head, rules |
//! | [`TrackerRequest::Register`] | a provider (signed registration + its addresses) | `Registered` |
//! | [`TrackerRequest::Providers`] | anyone | `Providers`: every registered provider with its track record |
//! | [`TrackerRequest::Publish`] | the client (proposal signed by it, acceptance by the provider, and the provider's receipt, which names the piece of a proposal that names none) | `Published { deal_id }` |
//! | [`TrackerRequest::Admit`] | the proposal's client | `Admitted`: a tracker-signed [`crate::Admission`]; the escrow is locked |
//! | [`TrackerRequest::Account`] | the account itself | `Account`: balances and next nonce |
//! | [`TrackerRequest::Transfer`], [`TrackerRequest::Withdraw`] | the account itself (signed, with its next nonce) | `Moved`: the free balance left |
//! | [`TrackerRequest::Faucet`] | anyone, devnet trackers only | `Minted` |
//! | [`TrackerRequest::RegisterManifest`] | a client with a published deal | `ManifestStored` |
//! | [`TrackerRequest::Manifest`] | anyone who names the root | `Manifests`: every client's manifest for that root CID (≤ 8), the asker's first |
//! | [`TrackerRequest::OwnManifests`] | a client | `OwnManifests`: the manifests it registered, paged |
//! | [`TrackerRequest::Head`] | anyone (bounded: one replay at a time) | `Head`: the answering peer's signed replay of its log |
//! | [`TrackerRequest::Deals`] | a deal's client or provider | `Deals`: state, payments and per-epoch proof history |
//! | [`TrackerRequest::RemoveFile`] | the file's owner (signed) | `FileRemoved`: deals ended, refund |
//! | [`TrackerRequest::RenewFile`] | the file's owner (signed) | `FileRenewed`: the new end epoch |
//! | [`TrackerRequest::Files`] | anyone who names the root; the owner for its list | `Files`: placement per piece index, repairs |
//!
//! Lists are capped: at most [`MAX_LIST`] entries per answer.
//!
//! "The account itself" means the request came on a connection whose peer
//! is that account: every libp2p connection is authenticated by the Noise
//! handshake, in which the peer signs its session key with its ed25519
//! identity, so a request is as good as signed by its sender. A private
//! file's manifest holds only ciphertext facts (sizes, piece hashes,
//! providers) and an envelope only its owner opens, so it is answered to
//! whoever names its root (a capability holder names it).

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::signed::{Signable, Signed};
use crate::types::{Amount, Blob, DealAcceptance, DealProposal, Epoch, PieceReceipt, ProposalId};

/// Most entries in one list answer (providers, deals, addresses).
pub const MAX_LIST: usize = 1024;
/// Most per-epoch records in one deal's history answer (the latest ones).
pub const MAX_HISTORY: usize = 256;
/// Manifests in one [`TrackerResponse::OwnManifests`] page (at most
/// `16 * MAX_MANIFEST` = 1 MiB, well inside a response).
pub const MAX_OWN_MANIFESTS: usize = 16;
/// Most ledger log entries in one [`TrackerResponse::Log`] page.
pub const MAX_LOG_PAGE: usize = 256;
/// A [`TrackerResponse::Log`] page holds entries up to this many bytes in
/// all, or one entry if that alone is more (a production seal proof, the
/// largest input, is ~5.3 MiB: a page stays inside a response).
pub const MAX_LOG_PAGE_BYTES: usize = 8 << 20;

/// A provider's registration (signed by the provider). Re-registering with
/// the next nonce updates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRegistration {
    /// Bytes of pieces the provider offers to hold under live deals.
    pub capacity: u64,
    /// Asking price per GiB per epoch (advertised to clients; the ledger
    /// enforces the price in each accepted proposal, not this one).
    pub price_per_gib_epoch: Amount,
    /// Most collateral per GiB the provider will lock for a deal.
    pub collateral_per_gib: Amount,
    /// The account's next nonce.
    pub nonce: u64,
}
impl Signable for ProviderRegistration {
    const DOMAIN: &'static str = "tracker-register";
}

/// A request to take free balance out of the ledger (signed by the owner):
/// a provider's earnings, a client's unused balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawRequest {
    pub amount: Amount,
    /// The account's next nonce.
    pub nonce: u64,
}
impl Signable for WithdrawRequest {
    const DOMAIN: &'static str = "tracker-withdraw";
}

/// A payment of free balance to another account (signed by the sender).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequest {
    #[serde(with = "crate::wire::peer")]
    pub to: PeerId,
    pub amount: Amount,
    /// The sender's next nonce.
    pub nonce: u64,
}
/// What a tracker states about its ledger: its stored log, replayed from
/// genesis, reaches `head` after `entries` entries, in `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadStatement {
    pub entries: u64,
    pub epoch: Epoch,
    #[serde(with = "crate::wire::hash32")]
    pub head: [u8; 32],
}
impl Signable for HeadStatement {
    const DOMAIN: &'static str = "tracker-head";
}

/// One page of a tracker's stored ledger log (`crowd ledger verify`
/// replays it). The entries and the genesis are the tracker crate's CBOR
/// (`LogEntry`, `LedgerConfig`); the reader decodes and checks them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPage {
    /// The ledger's genesis config.
    pub genesis: Blob,
    /// Entries in the answering tracker's log now.
    pub total: u64,
    /// Entries `from..`, in order, at most [`MAX_LOG_PAGE`].
    pub entries: Vec<Blob>,
}

/// One member of a tracker replica set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaView {
    pub id: u64,
    /// Its network identity and addresses (text).
    pub peer: String,
    pub addrs: Vec<String>,
    /// A voter (counts for elections and commits) or a learner (catching up).
    pub voter: bool,
    /// The last log index the leader knows it holds (the leader's answer only).
    pub matched: Option<u64>,
}

/// The replica set as the answering replica's Raft sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSetView {
    /// The replica that answered.
    pub id: u64,
    pub leader: Option<u64>,
    /// The answering replica's last log index.
    pub last_log: Option<u64>,
    /// The membership in force, as Raft's log id of it: a change must name
    /// it, so a signed change applies to the set it was made for, once.
    pub config: String,
    pub members: Vec<ReplicaView>,
}

/// A change of the replica set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaChange {
    /// Add a learner: it receives the log but does not vote yet.
    Learn {
        id: u64,
        peer: String,
        addrs: Vec<String>,
    },
    /// Make a learner that caught up a voter.
    Promote { id: u64 },
    /// Remove a replica (a dead one, or one being retired).
    Remove { id: u64 },
}

/// A replica set change, signed with the tracker key (the operator's
/// authority), naming the membership it changes ([`ReplicaSetView::config`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipChange {
    pub config: String,
    pub change: ReplicaChange,
}
impl Signable for MembershipChange {
    const DOMAIN: &'static str = "tracker-membership";
}

impl Signable for TransferRequest {
    const DOMAIN: &'static str = "tracker-transfer";
}

/// Requests to the tracker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TrackerRequest {
    Info,
    /// The sender must be the registration's signer.
    Register {
        registration: Signed<ProviderRegistration>,
        /// Multiaddresses the provider listens on (text form).
        addrs: Vec<String>,
    },
    /// The first page of registered, staked providers (in peer id order,
    /// at most [`MAX_LIST`]); a full page means there may be more.
    Providers,
    /// The next page: providers after this peer id.
    ProvidersAfter(#[serde(with = "crate::wire::peer")] PeerId),
    /// Publish a deal; a proposal that names no piece
    /// ([`crate::PieceId::UNNAMED`]) is published by its client only, with
    /// the provider's receipt naming the piece.
    Publish {
        proposal: Signed<DealProposal>,
        acceptance: Signed<DealAcceptance>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        receipt: Option<Signed<PieceReceipt>>,
    },
    /// The proposal's client (the sender) locks its escrow before offering
    /// it to the provider; answered with the tracker-signed admission the
    /// provider asks for (again, for a proposal already admitted).
    Admit(Signed<DealProposal>),
    Account(#[serde(with = "crate::wire::peer")] PeerId),
    /// Pay free balance to another account (the sender must be the signer).
    Transfer(Signed<TransferRequest>),
    /// Take free balance out of the ledger (the sender must be the signer).
    Withdraw(Signed<WithdrawRequest>),
    /// Devnet only: mint `amount` into `account`.
    Faucet {
        #[serde(with = "crate::wire::peer")]
        account: PeerId,
        amount: Amount,
    },
    /// Root CID (bytes) → manifest (dag-cbor bytes, at most
    /// [`crate::MAX_MANIFEST`]); `file` (absent only for an empty file,
    /// which has no deals) registers the file's deals with the ledger, so
    /// the tracker repairs, renews and removes them as one file.
    RegisterManifest {
        #[serde(with = "crate::wire::bytes")]
        root: Vec<u8>,
        #[serde(with = "crate::wire::bytes")]
        manifest: Vec<u8>,
        file: Option<Signed<FileRegistration>>,
    },
    /// The manifest registered for a root CID (bytes).
    Manifest {
        #[serde(with = "crate::wire::bytes")]
        root: Vec<u8>,
    },
    Deals(DealQuery),
    /// The manifests the sender registered, in root order, after root
    /// `after` (bytes) if given.
    OwnManifests {
        after: Option<Blob>,
    },
    /// The answering tracker (a replica of a set: each answers for itself)
    /// replays its stored log from genesis to `upto` entries (all when
    /// absent) and signs the head it reaches (`crowd ledger verify`).
    Head {
        upto: Option<u64>,
    },
    /// The answering tracker's stored ledger log from entry `from` (each
    /// replica answers from its own store).
    Log {
        from: u64,
    },
    /// The replica set as the answering replica sees it.
    Replicas,
    /// Change the replica set (answered by the leader).
    ChangeReplicas(Signed<MembershipChange>),
    /// End every deal of a file now (`crowd rm`).
    RemoveFile(Signed<RemoveRequest>),
    /// Extend every live deal of a file (`crowd renew`).
    RenewFile(Signed<RenewRequest>),
    /// Files and where their pieces are now.
    Files(FileQuery),
}

/// A client's registration of a stored file with the ledger: the deals
/// that hold its pieces, by piece index. Signed by the client, who must
/// be every deal's client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRegistration {
    /// The stored bytes' root CID (the manifest's `root`, bytes).
    #[serde(with = "crate::wire::bytes")]
    pub root: Vec<u8>,
    /// The manifest's CID digest (BLAKE3 of its dag-cbor bytes).
    #[serde(with = "crate::wire::hash32")]
    pub manifest: [u8; 32],
    /// `k`: pieces any rebuild needs.
    pub data_pieces: u32,
    /// The deal of piece index `i` at `deals[i]`.
    pub deals: Vec<u64>,
}
impl Signable for FileRegistration {
    const DOMAIN: &'static str = "tracker-file";
}

/// The owner ends a file's deals early (signed; nonce = the account's next).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveRequest {
    pub file_id: u64,
    pub nonce: u64,
}
impl Signable for RemoveRequest {
    const DOMAIN: &'static str = "tracker-remove";
}

/// The owner extends a file's deals by `epochs` (signed; nonce = the
/// account's next).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequest {
    pub file_id: u64,
    pub epochs: u64,
    pub nonce: u64,
}
impl Signable for RenewRequest {
    const DOMAIN: &'static str = "tracker-renew";
}

/// Which files to describe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileQuery {
    /// Every file stored under this root CID (bytes), anyone may ask (as
    /// for its manifest).
    Root(#[serde(with = "crate::wire::bytes")] Vec<u8>),
    /// The sender's own files with ids above `after`, in id order (at most
    /// [`MAX_LIST`]).
    Own { after: Option<u64> },
}

/// Which deals to describe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DealQuery {
    /// These deal ids (at most [`MAX_LIST`]).
    Ids(Vec<u64>),
    /// Every deal of this client (the latest [`MAX_LIST`]).
    Client(#[serde(with = "crate::wire::peer")] PeerId),
}

/// Answers from the tracker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TrackerResponse {
    Info(TrackerInfo),
    Registered,
    Providers(Vec<ProviderEntry>),
    Published {
        deal_id: u64,
    },
    Admitted(Signed<crate::Admission>),
    Account(AccountView),
    Minted {
        amount: Amount,
    },
    /// A transfer or withdrawal went through; the sender's free balance now.
    Moved {
        available: Amount,
    },
    /// The manifest was stored under this CID (bytes).
    ManifestStored(#[serde(with = "crate::wire::bytes")] Vec<u8>),
    /// Every manifest registered for the root asked (one per client, at
    /// most [`crate::MAX_MANIFESTS_PER_ROOT`]), the asker's own first.
    Manifests(Vec<Blob>),
    Deals(Vec<DealView>),
    /// A page of the sender's manifests; `next` is the root to continue
    /// after, `None` on the last page.
    OwnManifests {
        manifests: Vec<Blob>,
        next: Option<Blob>,
    },
    /// A [`TrackerRequest::Head`] answer, signed by the answering peer.
    Head(Signed<HeadStatement>),
    Log(LogPage),
    Replicas(ReplicaSetView),
    /// A replica set change was committed; the set now.
    ReplicasChanged(ReplicaSetView),
    /// The file's deals ended; `refund` went back to the owner's balance.
    FileRemoved {
        refund: Amount,
    },
    /// The file's deals now end at `end_epoch`; `locked` more escrow.
    FileRenewed {
        end_epoch: Epoch,
        locked: Amount,
    },
    Files(Vec<FileView>),
}

/// A stored file as the tracker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileView {
    pub id: u64,
    #[serde(with = "crate::wire::peer")]
    pub client: PeerId,
    #[serde(with = "crate::wire::bytes")]
    pub root: Vec<u8>,
    #[serde(with = "crate::wire::hash32")]
    pub manifest: [u8; 32],
    pub data_pieces: u32,
    /// The first epoch after the file's deals.
    pub end_epoch: Epoch,
    /// "live", "removed" or "expired".
    pub state: String,
    /// One per piece index, in index order.
    pub slots: Vec<SlotView>,
    pub repairs: RepairStats,
}

/// Where one piece index of a file is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotView {
    pub index: u64,
    pub piece: crate::PieceId,
    pub piece_size: u64,
    /// The index's current deal (the last one, if it is lost).
    pub deal_id: u64,
    #[serde(with = "crate::wire::peer")]
    pub provider: PeerId,
    pub addrs: Vec<String>,
    /// The current deal's state ("active", "published", ...), or "lost"
    /// while no live deal holds the index, "repairing" while a repair job
    /// for it runs.
    pub state: String,
    /// Consecutive missed windows of the current deal ("suspect" above 0).
    pub consecutive_faults: u32,
}

/// A file's repairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairStats {
    /// Lost indexes waiting for a provider.
    pub queued: u64,
    /// Jobs sent and not yet published or failed.
    pub running: u64,
    /// Repair deals published.
    pub done: u64,
    /// Jobs that failed (retried with other providers).
    pub failed: u64,
    /// Escrow locked for repair deals so far.
    pub cost: Amount,
}

/// The tracker's clock and rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerInfo {
    /// The network every signed message must name: the genesis head.
    pub network: crate::NetworkId,
    /// The open (unsettled) epoch.
    pub epoch: Epoch,
    /// Target epoch length.
    pub epoch_millis: u64,
    /// Milliseconds until the open epoch is settled (approximate).
    pub epoch_ends_in_millis: u64,
    #[serde(with = "crate::wire::hash32")]
    pub randomness: [u8; 32],
    #[serde(with = "crate::wire::hash32")]
    pub head: [u8; 32],
    pub log_len: u64,
    pub faucet: bool,
    /// Consecutive faults that terminate a deal.
    pub fault_threshold: u32,
    /// A deal published in epoch `e` must start in `[e + min, e + max]`.
    pub min_start_lead: u64,
    pub max_start_lead: u64,
    /// The sealing preset proofs are verified with ("devnet", "production").
    pub sealing: String,
    /// What registering as a provider locks (its stake).
    #[serde(default)]
    pub provider_stake: Amount,
    /// Least provider collateral per GiB a deal must lock.
    #[serde(default)]
    pub min_collateral_per_gib: Amount,
}

/// A registered provider, as clients choose among them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEntry {
    #[serde(with = "crate::wire::peer")]
    pub peer: PeerId,
    pub addrs: Vec<String>,
    pub capacity: u64,
    /// Bytes under live deals.
    pub used: u64,
    pub price_per_gib_epoch: Amount,
    pub collateral_per_gib: Amount,
    pub live_deals: u64,
    /// Track record over all its deals.
    pub proven_epochs: u64,
    pub faulted_epochs: u64,
    pub terminated_deals: u64,
    /// Its stake: below [`TrackerInfo::provider_stake`] (after a slash) it
    /// takes no new deal until it re-registers.
    #[serde(default)]
    pub staked: Amount,
}

impl ProviderEntry {
    /// Faulted share of the provider's settled epochs, in whole per cent.
    pub fn fault_percent(&self) -> u64 {
        match self.proven_epochs.saturating_add(self.faulted_epochs) {
            0 => 0,
            n => (u128::from(self.faulted_epochs) * 100 / u128::from(n)) as u64,
        }
    }

    /// The provider's standing: proven epochs, less [`FAULT_WEIGHT`] per
    /// faulted epoch and [`TERMINATION_WEIGHT`] per terminated deal. A
    /// newcomer stands at 0: below any provider with a clean record, above
    /// one that faults more than one epoch in [`FAULT_WEIGHT`] + 1.
    pub fn score(&self) -> i128 {
        i128::from(self.proven_epochs)
            - FAULT_WEIGHT * i128::from(self.faulted_epochs)
            - TERMINATION_WEIGHT * i128::from(self.terminated_deals)
    }

    /// The order providers are chosen in, best first — by `crowd put` and
    /// by the tracker's repairs alike: fewer terminated deals, then a higher
    /// [`score`](Self::score) up to [`ESTABLISHED_SCORE`] (beyond it
    /// providers compete on terms alone), then a lower price, more free
    /// space; the peer id breaks ties so the choice is deterministic. So an
    /// unproven newcomer (a Sybil's fresh key) never ranks above a provider
    /// with a clean record, however cheap it asks.
    pub fn rank_key(
        &self,
    ) -> (
        u64,
        std::cmp::Reverse<i128>,
        Amount,
        std::cmp::Reverse<u64>,
        Vec<u8>,
    ) {
        (
            self.terminated_deals,
            std::cmp::Reverse(self.score().min(ESTABLISHED_SCORE)),
            self.price_per_gib_epoch,
            std::cmp::Reverse(self.capacity.saturating_sub(self.used)),
            self.peer.to_bytes(),
        )
    }
}

/// Score lost per faulted epoch ([`ProviderEntry::score`]).
pub const FAULT_WEIGHT: i128 = 10;
/// Score lost per terminated deal.
pub const TERMINATION_WEIGHT: i128 = 100;
/// Score at which a provider counts as established: above it, ranking is by
/// price and space only.
pub const ESTABLISHED_SCORE: i128 = 100;

/// `ceil(per_gib × size / GiB)`: what a provider charges (or locks) for
/// `size` bytes, rounded up as providers round.
pub fn pro_rata(per_gib: Amount, size: u64) -> Amount {
    per_gib.saturating_mul(u128::from(size)).div_ceil(1 << 30)
}

/// An account's money.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub available: Amount,
    pub locked_escrow: Amount,
    pub locked_collateral: Amount,
    /// The next nonce for the account's own messages (registration).
    pub nonce: u64,
    /// A provider's stake (locked by its registration).
    #[serde(default)]
    pub staked: Amount,
}

/// One settled epoch of a deal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: Epoch,
    /// Proven and paid, or faulted.
    pub proven: bool,
}

/// A deal as the tracker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealView {
    pub id: u64,
    #[serde(with = "crate::wire::hash32")]
    pub proposal_id: ProposalId,
    pub proposal: DealProposal,
    pub published_epoch: Epoch,
    /// The first epoch after the deal (its start plus its duration and any
    /// renewals).
    pub end_epoch: Epoch,
    /// "published", "pre-committed", "active", "completed", "terminated",
    /// "cancelled", "removed".
    pub state: String,
    #[serde(with = "crate::wire::opt_hash32")]
    pub comm_r: Option<[u8; 32]>,
    /// Escrow still locked, collateral still locked, paid so far.
    pub escrow: Amount,
    pub collateral: Amount,
    pub paid: Amount,
    pub proven_epochs: u64,
    pub faulted_epochs: u64,
    pub consecutive_faults: u32,
    /// The latest settled epochs (at most [`MAX_HISTORY`]), oldest first.
    pub history: Vec<EpochRecord>,
}

/// What a provider reports of a deal's sealing ([`crate::Request::SealStatus`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SealReport {
    /// The provider has no such deal (no `StartSeal` yet).
    Unknown,
    Queued,
    Sealed(Signed<crate::types::SealCommitment>),
    Failed {
        reason: String,
    },
}
