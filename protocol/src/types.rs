//! Wire types: deals, receipts, sealing and proving messages, and the control
//! requests and responses that carry them.

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::signed::{Signable, Signed};

/// Money, in integer base units. Never a float.
pub type Amount = u128;
/// A tracker epoch number.
pub type Epoch = u64;

/// A piece's identity: its BLAKE3 hash, which is both its content address
/// (CIDv1, raw codec, BLAKE3 multihash) and its piece commitment comm_d.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PieceId(#[serde(with = "crate::wire::hash32")] pub [u8; 32]);

impl PieceId {
    /// In a [`DealProposal`]: the piece is named by the provider's
    /// [`PieceReceipt`] for the bytes it received, not up front. A client
    /// then uploads from the one pass that also lays the file out (no pass
    /// beforehand just to learn the hashes), and only the client may publish
    /// the deal, with that receipt, once its own encoding agrees (see
    /// [`DealProposal::named_by`]). No BLAKE3 output is all zeros in practice
    /// (a preimage of it), so no real piece is mistaken for this.
    pub const UNNAMED: PieceId = PieceId([0; 32]);

    /// The piece's CIDv1 (raw codec 0x55, BLAKE3 multihash 0x1e).
    pub fn cid(&self) -> cid::Cid {
        match cid::multihash::Multihash::<64>::wrap(0x1e, &self.0) {
            Ok(mh) => cid::Cid::new_v1(0x55, mh),
            Err(_) => unreachable!("a 32-byte digest fits a 64-byte multihash"),
        }
    }

    /// Parses a piece CID; only raw-codec BLAKE3 CIDs name pieces.
    pub fn from_cid(cid: &cid::Cid) -> Option<Self> {
        (cid.codec() == 0x55 && cid.hash().code() == 0x1e)
            .then(|| <[u8; 32]>::try_from(cid.hash().digest()).ok().map(Self))
            .flatten()
    }
}

impl std::fmt::Display for PieceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.cid())
    }
}

impl std::fmt::Debug for PieceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PieceId({})", self.cid())
    }
}

/// The 32-byte provider id that goes into replica ids:
/// `derive_key("crowdstore provider id v1", peer id bytes)`. Providers seal
/// with it and the tracker checks pre-commits with it.
pub fn provider_hash(peer: &PeerId) -> [u8; 32] {
    *blake3::Hasher::new_derive_key("crowdstore provider id v1")
        .update(&peer.to_bytes())
        .finalize()
        .as_bytes()
}

/// The id of a signed proposal ([`Signed::id`]): how a deal is named before
/// the tracker numbers it.
pub type ProposalId = [u8; 32];

/// A client's offer to a provider (signed by the client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealProposal {
    /// comm_d = the piece's BLAKE3 hash, or [`PieceId::UNNAMED`]: the
    /// provider's receipt names it ([`DealProposal::named_by`]).
    pub piece: PieceId,
    pub piece_size: u64,
    #[serde(with = "crate::wire::peer")]
    pub client: PeerId,
    #[serde(with = "crate::wire::peer")]
    pub provider: PeerId,
    pub price_per_epoch: Amount,
    pub start_epoch: Epoch,
    pub duration_epochs: u64,
    pub provider_collateral: Amount,
    /// The proposal is void if not published by this epoch.
    pub expiry_epoch: Epoch,
    /// Makes two otherwise equal proposals distinct deals.
    pub nonce: u64,
}
impl Signable for DealProposal {
    const DOMAIN: &'static str = "deal-proposal";
}

impl DealProposal {
    /// Whether the proposal names its piece (otherwise the receipt does:
    /// [`PieceId::UNNAMED`]).
    pub fn names_piece(&self) -> bool {
        self.piece != PieceId::UNNAMED
    }

    /// The proposal `id` is of, with its piece as `receipt` names it: the
    /// receipt must be for this proposal and size and name a piece, the one
    /// the proposal names if it names one.
    pub fn named_by(
        &self,
        id: &ProposalId,
        receipt: &PieceReceipt,
    ) -> Result<DealProposal, crate::ProtocolError> {
        if receipt.proposal != *id {
            return Err(crate::ProtocolError::ReceiptMismatch(
                "the receipt is for another proposal",
            ));
        }
        if receipt.piece_size != self.piece_size {
            return Err(crate::ProtocolError::ReceiptMismatch(
                "the receipt is for another piece size",
            ));
        }
        if receipt.piece == PieceId::UNNAMED {
            return Err(crate::ProtocolError::ReceiptMismatch(
                "the receipt names no piece",
            ));
        }
        if self.names_piece() && receipt.piece != self.piece {
            return Err(crate::ProtocolError::ReceiptMismatch(
                "the receipt names another piece than the proposal",
            ));
        }
        Ok(DealProposal {
            piece: receipt.piece,
            ..self.clone()
        })
    }
}

/// A provider's acceptance of a proposal (signed by the provider).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealAcceptance {
    #[serde(with = "crate::wire::hash32")]
    pub proposal: ProposalId,
}
impl Signable for DealAcceptance {
    const DOMAIN: &'static str = "deal-acceptance";
}

/// The tracker's word that a proposal's client escrow is locked (signed by
/// the tracker): a provider accepts a proposal, and later its bytes, only
/// with an admission for it (paid admission; see docs/SECURITY.md). The
/// lock lapses, and the escrow goes back to the client, after `until_epoch`,
/// the last epoch the proposal can still be published in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    #[serde(with = "crate::wire::hash32")]
    pub proposal: ProposalId,
    #[serde(with = "crate::wire::peer")]
    pub client: PeerId,
    /// What is locked: the deal's price × duration.
    pub escrow: Amount,
    pub until_epoch: Epoch,
}
impl Signable for Admission {
    const DOMAIN: &'static str = "deal-admission";
}

/// A provider's statement that it holds the complete, verified piece of a
/// proposal (signed by the provider).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceReceipt {
    #[serde(with = "crate::wire::hash32")]
    pub proposal: ProposalId,
    pub piece: PieceId,
    pub piece_size: u64,
}
impl Signable for PieceReceipt {
    const DOMAIN: &'static str = "piece-receipt";
}

/// The tracker's go-ahead to seal a published deal (signed by the tracker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealTicket {
    #[serde(with = "crate::wire::hash32")]
    pub proposal: ProposalId,
    pub deal_id: u64,
    #[serde(with = "crate::wire::hash32")]
    pub ticket: [u8; 32],
}
impl Signable for SealTicket {
    const DOMAIN: &'static str = "seal-ticket";
}

/// A provider's sealed commitments for a deal (signed by the provider).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealCommitment {
    pub deal_id: u64,
    pub piece: PieceId,
    #[serde(with = "crate::wire::hash32")]
    pub comm_r: [u8; 32],
    #[serde(with = "crate::wire::hash32")]
    pub replica_id: [u8; 32],
}
impl Signable for SealCommitment {
    const DOMAIN: &'static str = "seal-commitment";
}

/// The tracker's seed for the seal proof, drawn after comm_r was published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealSeed {
    pub deal_id: u64,
    #[serde(with = "crate::wire::hash32")]
    pub seed: [u8; 32],
}
impl Signable for SealSeed {
    const DOMAIN: &'static str = "seal-seed";
}

/// A provider's seal proof (crowd-porep encoding), signed by the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealProofMsg {
    pub deal_id: u64,
    #[serde(with = "crate::wire::bytes")]
    pub proof: Vec<u8>,
}
impl Signable for SealProofMsg {
    const DOMAIN: &'static str = "seal-proof";
    const MAX_BODY: usize = crate::network::MAX_RESPONSE;
}

/// The tracker's challenge for one deal in one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowChallenge {
    pub deal_id: u64,
    pub epoch: Epoch,
    #[serde(with = "crate::wire::hash32")]
    pub randomness: [u8; 32],
}
impl Signable for WindowChallenge {
    const DOMAIN: &'static str = "window-challenge";
}

/// A provider's window proof (crowd-porep encoding), signed by the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowProofMsg {
    pub deal_id: u64,
    pub epoch: Epoch,
    #[serde(with = "crate::wire::bytes")]
    pub proof: Vec<u8>,
}
impl Signable for WindowProofMsg {
    const DOMAIN: &'static str = "window-proof";
    const MAX_BODY: usize = 4 * 1024 * 1024;
}

/// One live piece a repair may rebuild from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairSource {
    /// Its index in the file's layout.
    pub index: u64,
    pub piece: PieceId,
    #[serde(with = "crate::wire::peer")]
    pub provider: PeerId,
    /// The provider's multiaddresses (text form), as registered.
    pub addrs: Vec<String>,
}

/// tracker → provider: rebuild piece `index` of a file from other providers'
/// pieces, store it, and accept `proposal` as the new deal for that index.
///
/// Signed by the tracker; its [`Signed::id`] is the new deal's proposal id
/// (the provider's [`DealAcceptance`] names it, the seal ticket names it).
/// `proposal.client` is the file's owner, who does not sign: the ledger
/// accepts a repair deal only from the tracker, only for an index whose
/// deal has ended early, and pays it by the documented repair rule.
/// `proposal.expiry_epoch` is the job's expiry: past it the provider
/// refuses the job and the ledger refuses its publication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairJob {
    /// The ledger's file number.
    pub file_id: u64,
    /// The piece index to rebuild (`0..k` data, `k..k+m` parity).
    pub index: u64,
    /// The manifest's CID digest (BLAKE3 of its bytes): the layout the
    /// piece is rebuilt with. Sent alongside, checked against this.
    #[serde(with = "crate::wire::hash32")]
    pub manifest: [u8; 32],
    /// The new deal (piece and size are the lost piece's).
    pub proposal: DealProposal,
    /// The file's live pieces, at least `k` of them, best first.
    pub sources: Vec<RepairSource>,
}
impl Signable for RepairJob {
    const DOMAIN: &'static str = "repair-job";
}

/// A repair source whose bytes failed verification against its piece CID:
/// the piece index it was asked for, its provider, and the piece offset of
/// the 16 KiB group that failed (a multiple of the group size). The tracker
/// fetches that group from the provider itself before it faults anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadSource {
    pub index: u64,
    #[serde(with = "crate::wire::peer")]
    pub provider: PeerId,
    pub offset: u64,
}

/// A provider's progress on a repair job ([`Request::RepairStatus`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RepairReport {
    /// No such job here.
    Unknown,
    /// Fetching and rebuilding.
    Running,
    /// The piece is rebuilt, checked against its CID and stored: the
    /// acceptance of the job's proposal (proposal id = the job's id), and
    /// the sources skipped because their bytes failed verification (kept
    /// in memory: empty after the node restarts).
    Ready {
        acceptance: Signed<DealAcceptance>,
        bad_sources: Vec<BadSource>,
    },
    /// Gave up: `reason` in one line, and the sources that served bytes
    /// which failed verification.
    Failed {
        reason: String,
        bad_sources: Vec<BadSource>,
    },
}

/// Requests on `/crowd/control/1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// client → provider: accept this deal? `admission` is the tracker's
    /// word that the proposal's escrow is locked.
    ProposeDeal {
        proposal: Signed<DealProposal>,
        admission: Signed<Admission>,
    },
    /// tracker → provider: seal this deal with this ticket.
    StartSeal(Signed<SealTicket>),
    /// tracker → provider: prove the seal with this seed.
    ProveSeal(Signed<SealSeed>),
    /// tracker → provider: prove this deal's replica for this epoch.
    Challenge(Signed<WindowChallenge>),
    /// anyone → provider: what do you know of this piece?
    PieceStatus(PieceId),
    /// client → provider: keep this manifest (dag-cbor bytes, at most
    /// [`MAX_MANIFEST`]) and announce it on the DHT.
    StoreManifest(#[serde(with = "crate::wire::bytes")] Vec<u8>),
    /// anyone → provider: the manifest with this CID, or for this root CID
    /// (bytes), if held.
    GetManifest(#[serde(with = "crate::wire::bytes")] Vec<u8>),
    /// anyone → provider: how far is sealing this deal?
    SealStatus(u64),
    /// anyone → tracker (a node answers with an error).
    Tracker(crate::tracker::TrackerRequest),
    /// tracker → provider: run this repair job; `manifest` is the file's
    /// manifest (dag-cbor, its digest is `job.manifest`).
    Repair { job: Signed<RepairJob>, manifest: Blob },
    /// tracker → provider: how far is the repair job with this id?
    RepairStatus(#[serde(with = "crate::wire::hash32")] ProposalId),
}

/// Opaque bytes, CBOR-encoded as a byte string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob(#[serde(with = "crate::wire::bytes")] pub Vec<u8>);

/// Largest manifest a provider keeps.
pub const MAX_MANIFEST: usize = 64 * 1024;
/// Manifests kept for one root, one per registering client (trackers and
/// nodes alike): a manifest claiming someone else's root sits beside the
/// real one instead of replacing it, and `get` tries each.
pub const MAX_MANIFESTS_PER_ROOT: usize = 8;

/// Multicodec of dag-cbor, the manifest's codec.
pub const DAG_CBOR: u64 = 0x71;

/// The CIDv1 (dag-cbor, BLAKE3) of manifest bytes.
pub fn manifest_cid(bytes: &[u8]) -> cid::Cid {
    match cid::multihash::Multihash::<64>::wrap(0x1e, blake3::hash(bytes).as_bytes()) {
        Ok(mh) => cid::Cid::new_v1(DAG_CBOR, mh),
        Err(_) => unreachable!("a 32-byte digest fits a 64-byte multihash"),
    }
}

/// What a provider knows of a piece.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceInfo {
    pub piece: PieceId,
    pub size: u64,
    /// `None` until sealed.
    pub sealed: Option<Signed<SealCommitment>>,
}

/// Responses on `/crowd/control/1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    DealAccepted(Signed<DealAcceptance>),
    DealRejected {
        reason: String,
    },
    SealQueued,
    SealProof(Signed<SealProofMsg>),
    WindowProof(Signed<WindowProofMsg>),
    Piece(Option<PieceInfo>),
    /// The manifest was stored under this CID (bytes).
    ManifestStored(#[serde(with = "crate::wire::bytes")] Vec<u8>),
    /// The manifests held: the one with the CID asked, or every one held
    /// for the root CID asked (one per client, at most
    /// [`MAX_MANIFESTS_PER_ROOT`]); empty if none.
    Manifests(Vec<Blob>),
    SealStatus(crate::tracker::SealReport),
    Tracker(crate::tracker::TrackerResponse),
    /// The repair job is accepted and running (poll [`Request::RepairStatus`]).
    RepairQueued,
    RepairStatus(RepairReport),
    /// The request was malformed, unauthorised or failed; one line.
    Error {
        message: String,
    },
}

/// The first frame on `/crowd/piece/1` (client → provider), followed by
/// exactly `piece_size` raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadHeader {
    #[serde(with = "crate::wire::hash32")]
    pub proposal: ProposalId,
}

/// The provider's answer on `/crowd/piece/1`, after the last byte.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UploadResult {
    Stored(Signed<PieceReceipt>),
    Rejected { reason: String },
}

/// The request frame on `/crowd/fetch/1`: bytes `[start, end)` of a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    pub piece: PieceId,
    pub start: u64,
    pub end: u64,
}

/// The provider's first answer frame on `/crowd/fetch/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FetchHeader {
    /// The range follows as verified chunk groups (see [`crate::fetch`]).
    Ok {
        piece_size: u64,
    },
    NotFound,
    Refused {
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn proposal(piece: PieceId) -> DealProposal {
        DealProposal {
            piece,
            piece_size: 100,
            client: PeerId::random(),
            provider: PeerId::random(),
            price_per_epoch: 1,
            start_epoch: 5,
            duration_epochs: 4,
            provider_collateral: 0,
            expiry_epoch: 4,
            nonce: 1,
        }
    }

    fn receipt(proposal: ProposalId, piece: PieceId, piece_size: u64) -> PieceReceipt {
        PieceReceipt {
            proposal,
            piece,
            piece_size,
        }
    }

    #[test]
    fn a_receipt_names_an_unnamed_piece_and_only_confirms_a_named_one() {
        let (id, a, b) = ([1; 32], PieceId([2; 32]), PieceId([3; 32]));
        let unnamed = proposal(PieceId::UNNAMED);
        assert!(!unnamed.names_piece());
        assert_eq!(unnamed.named_by(&id, &receipt(id, a, 100)).unwrap().piece, a);
        let named = proposal(a);
        assert!(named.names_piece());
        assert_eq!(named.named_by(&id, &receipt(id, a, 100)).unwrap(), named);
        for (p, r) in [
            (&named, receipt(id, b, 100)),
            (&unnamed, receipt([9; 32], a, 100)),
            (&unnamed, receipt(id, a, 101)),
            (&unnamed, receipt(id, PieceId::UNNAMED, 100)),
        ] {
            assert!(matches!(
                p.named_by(&id, &r),
                Err(crate::ProtocolError::ReceiptMismatch(_))
            ));
        }
    }
}
