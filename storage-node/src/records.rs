//! What the node keeps in its metadata store, and under which keys.
//!
//! | key | value |
//! | --- | --- |
//! | `proposal/<id hex>` | [`ProposalRecord`]: the signed proposal, its state, the tracker's deal id |
//! | `piece/<comm_d hex>` | [`PieceRecord`]: size, whether the unsealed copy is on disk |
//! | `deal/<deal id, 20 digits>` | [`DealRecord`]: proposal, ticket, seal state and commitments |
//! | `challenge/<deal id>/<epoch>` | proof bytes length, for history |
//! | `manifest/<cid hex>` | a client's manifest (dag-cbor, ≤ 64 KiB), announced on the DHT |
//! | `manifest-root/<root cid hex>` | the manifest CID (bytes) of the latest manifest naming that root |
//! | `manifest-count/<peer id>` | manifests kept for that client (at most 256; only clients with a stored piece) |
//! | `space/used` | bytes reserved by accepted proposals (kept up to date incrementally) |

use crowd_protocol::{DealProposal, PieceId, PieceReceipt, ProposalId, SealCommitment, Signed};
use serde::{Deserialize, Serialize};

use crate::store::{MetaStore, StoreError};

pub const SPACE_USED: &[u8] = b"space/used";

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn proposal_key(id: &ProposalId) -> Vec<u8> {
    format!("proposal/{}", hex(id)).into_bytes()
}
pub fn piece_key(piece: &PieceId) -> Vec<u8> {
    format!("piece/{}", hex(&piece.0)).into_bytes()
}
pub fn deal_key(deal: u64) -> Vec<u8> {
    format!("deal/{deal:020}").into_bytes()
}
pub fn manifest_key(cid: &[u8]) -> Vec<u8> {
    format!("manifest/{}", hex(cid)).into_bytes()
}
pub fn manifest_root_key(root: &[u8]) -> Vec<u8> {
    format!("manifest-root/{}", hex(root)).into_bytes()
}
pub fn manifest_count_key(client: &crowd_protocol::libp2p::PeerId) -> Vec<u8> {
    format!("manifest-count/{client}").into_bytes()
}
pub fn challenge_key(deal: u64, epoch: u64) -> Vec<u8> {
    format!("challenge/{deal:020}/{epoch:020}").into_bytes()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProposalState {
    /// Accepted; space reserved; waiting for the bytes.
    Accepted,
    /// Bytes stored and verified; receipt issued.
    Stored(Signed<PieceReceipt>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalRecord {
    pub proposal: Signed<DealProposal>,
    pub state: ProposalState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceRecord {
    pub size: u64,
    /// Whether `pieces/<comm_d hex>` (and its outboard) are on disk.
    pub unsealed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SealState {
    Queued,
    Sealed {
        commitment: Signed<SealCommitment>,
        #[serde(with = "crowd_protocol::wire::hash32")]
        comm_c: [u8; 32],
        #[serde(with = "crowd_protocol::wire::hash32")]
        comm_r_last: [u8; 32],
    },
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DealRecord {
    #[serde(with = "crowd_protocol::wire::hash32")]
    pub proposal: ProposalId,
    pub piece: PieceId,
    pub piece_size: u64,
    #[serde(with = "crowd_protocol::wire::hash32")]
    pub ticket: [u8; 32],
    pub seal: SealState,
}

/// Reads and decodes one record.
pub fn get<T: serde::de::DeserializeOwned>(
    store: &dyn MetaStore,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    match store.get(key)? {
        None => Ok(None),
        Some(bytes) => crowd_protocol::wire::from_cbor("stored record", &bytes)
            .map(Some)
            .map_err(|e| StoreError(format!("{}: {e}", String::from_utf8_lossy(key)))),
    }
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    crowd_protocol::wire::to_cbor(value)
}

pub fn space_used(store: &dyn MetaStore) -> Result<u64, StoreError> {
    Ok(store
        .get(SPACE_USED)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0))
}
