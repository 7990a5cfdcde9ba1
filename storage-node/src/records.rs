//! What the node keeps in its metadata store, and under which keys.
//!
//! | key | value |
//! | --- | --- |
//! | `proposal/<id hex>` | [`ProposalRecord`]: the signed proposal, its state, the tracker's deal id |
//! | `piece/<comm_d hex>` | [`PieceRecord`]: size, whether the unsealed copy is on disk |
//! | `deal/<deal id, 20 digits>` | [`DealRecord`]: proposal, ticket, seal state and commitments |
//! | `piece-deal/<comm_d hex>/<deal id, 20 digits>` | empty: index of a piece's deals, written and deleted in the batch that writes or deletes the deal record (rebuilt at start), so a request about one piece reads its own deals, not all |
//! | `challenge/<deal id>/<epoch>` | proof bytes length, for history |
//! | `manifest/<cid hex>` | a client's manifest (dag-cbor, ≤ 64 KiB), announced on the DHT |
//! | `manifest-root/<root cid hex>` | the manifest CID (bytes) of the latest manifest naming that root |
//! | `manifest-count/<peer id>` | manifests kept for that client (at most 256; only clients with a stored piece) |
//! | `client-piece/<peer id>/<proposal or job id hex>` | empty: a proposal or repair job of that client whose piece is stored here, written in the batch that stores it (rebuilt at start; an entry whose record is gone is dropped when next read), so `StoreManifest` reads the asker's own entries, not every proposal |
//! | `repair/<job id hex>` | [`RepairRecord`]: a repair job whose rebuilt piece is stored (its id is the new deal's proposal id) |
//! | `space/used` | bytes on disk for deals: unsealed pieces, replicas and their outboards (updated in the same batch that indexes or drops them; recomputed from records and file sizes at every start) |

use crowd_protocol::{DealProposal, PieceId, PieceReceipt, ProposalId, RepairJob, SealCommitment, Signed};
use serde::{Deserialize, Serialize};

use crate::store::{MetaStore, StoreError};

pub const SPACE_USED: &[u8] = b"space/used";

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of [`hex`]'s text (as keys hold it); `None` if it is not hex.
pub fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    text.chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
        })
        .collect()
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
/// The deal id a [`deal_key`] names.
pub fn deal_id(key: &[u8]) -> Option<u64> {
    std::str::from_utf8(key.strip_prefix(b"deal/")?)
        .ok()?
        .parse()
        .ok()
}

/// Every deal record kept, in id order.
pub fn all_deals(store: &dyn MetaStore) -> Result<Vec<(u64, DealRecord)>, StoreError> {
    let mut out = Vec::new();
    for (k, v) in store.scan_prefix(b"deal/")? {
        let deal: DealRecord = crowd_protocol::wire::from_cbor("deal record", &v)
            .map_err(|e| StoreError(format!("{}: {e}", String::from_utf8_lossy(&k))))?;
        if let Some(id) = deal_id(&k) {
            out.push((id, deal));
        }
    }
    Ok(out)
}
pub fn piece_deal_prefix(piece: &PieceId) -> Vec<u8> {
    format!("piece-deal/{}/", hex(&piece.0)).into_bytes()
}
pub fn piece_deal_key(piece: &PieceId, deal: u64) -> Vec<u8> {
    let mut k = piece_deal_prefix(piece);
    k.extend_from_slice(format!("{deal:020}").as_bytes());
    k
}

/// The deal records of `piece`, through the `piece-deal/` index.
pub fn deals_of(store: &dyn MetaStore, piece: &PieceId) -> Result<Vec<(u64, DealRecord)>, StoreError> {
    let prefix = piece_deal_prefix(piece);
    let mut out = Vec::new();
    for (k, _) in store.scan_prefix(&prefix)? {
        let id = std::str::from_utf8(&k[prefix.len()..])
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(id) = id {
            if let Some(deal) = get::<DealRecord>(store, &deal_key(id))? {
                out.push((id, deal));
            }
        }
    }
    Ok(out)
}

pub fn manifest_key(cid: &[u8]) -> Vec<u8> {
    format!("manifest/{}", hex(cid)).into_bytes()
}
/// Every client's manifest for a root: `manifest-root/<root hex>/`.
pub fn manifest_root_prefix(root: &[u8]) -> Vec<u8> {
    format!("manifest-root/{}/", hex(root)).into_bytes()
}
/// One client's manifest (its CID) for a root.
pub fn manifest_root_key(root: &[u8], client: &crowd_protocol::libp2p::PeerId) -> Vec<u8> {
    let mut k = manifest_root_prefix(root);
    k.extend_from_slice(client.to_string().as_bytes());
    k
}
pub fn manifest_count_key(client: &crowd_protocol::libp2p::PeerId) -> Vec<u8> {
    format!("manifest-count/{client}").into_bytes()
}
pub fn challenge_key(deal: u64, epoch: u64) -> Vec<u8> {
    format!("challenge/{deal:020}/{epoch:020}").into_bytes()
}
/// The prefix of every challenge record of `deal`.
pub fn challenge_prefix(deal: u64) -> Vec<u8> {
    format!("challenge/{deal:020}/").into_bytes()
}
pub fn client_piece_prefix(client: &crowd_protocol::libp2p::PeerId) -> Vec<u8> {
    format!("client-piece/{client}/").into_bytes()
}
pub fn client_piece_key(client: &crowd_protocol::libp2p::PeerId, id: &ProposalId) -> Vec<u8> {
    let mut k = client_piece_prefix(client);
    k.extend_from_slice(hex(id).as_bytes());
    k
}
pub fn repair_key(job: &ProposalId) -> Vec<u8> {
    format!("repair/{}", hex(job)).into_bytes()
}

/// A repair job whose rebuilt piece is stored here: the tracker's signed
/// job (its [`Signed::id`] is the repair deal's proposal id) and the
/// provider's receipt for the piece.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepairRecord {
    pub job: Signed<RepairJob>,
    pub receipt: Signed<PieceReceipt>,
}

/// Bytes of the encoded outboard of a `len`-byte piece, rounded up: 64 per
/// interior node of the tree over 16 KiB groups plus at most 64 of header.
/// Used to reserve space before the outboard exists.
pub fn outboard_len(len: u64) -> u64 {
    64 + 64 * crowd_porep::tree::group_count(len).saturating_sub(1)
}

/// Length of the file at `path`, 0 if there is none.
pub fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
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

impl ProposalRecord {
    /// The proposal of a stored piece, naming the piece held: a proposal
    /// that names none ([`crowd_protocol::PieceId::UNNAMED`]) takes it from
    /// this node's receipt. `None` while the bytes have not come.
    pub fn stored(&self, network: &crowd_protocol::NetworkId) -> anyhow::Result<Option<DealProposal>> {
        let ProposalState::Stored(receipt) = &self.state else {
            return Ok(None);
        };
        let (_, p) = self.proposal.open(network, None)?;
        let (_, r) = receipt.open(network, None)?;
        Ok(Some(p.named_by(&self.proposal.id(), &r)?))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crowd_protocol::libp2p::identity::Keypair;
    use crowd_protocol::{RepairSource, Signable};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// A repair record decodes to what was encoded, and the job inside
        /// still opens with the tracker's signature and keeps its id.
        #[test]
        fn repair_record_roundtrip_proptest(
            file_id in any::<u64>(), index in any::<u64>(), manifest in any::<[u8; 32]>(),
            piece in any::<[u8; 32]>(), size in any::<u64>(), expiry in any::<u64>(), nonce in any::<u64>(),
            sources in proptest::collection::vec((any::<u64>(), any::<[u8; 32]>(), 0usize..3), 0..6),
        ) {
            let tracker = Keypair::generate_ed25519();
            let node = Keypair::generate_ed25519();
            let proposal = DealProposal {
                piece: PieceId(piece),
                piece_size: size,
                client: crowd_protocol::libp2p::PeerId::random(),
                provider: node.public().to_peer_id(),
                price_per_epoch: u128::from(nonce) << 64,
                start_epoch: 1,
                duration_epochs: 10,
                provider_collateral: 0,
                expiry_epoch: expiry,
                nonce,
            };
            let sources = sources
                .into_iter()
                .map(|(i, p, n)| RepairSource {
                    index: i,
                    piece: PieceId(p),
                    provider: crowd_protocol::libp2p::PeerId::random(),
                    addrs: (0..n).map(|j| format!("/ip4/127.0.0.1/tcp/{j}")).collect(),
                })
                .collect();
            let body = RepairJob { file_id, index, manifest, proposal, sources };
            let net = crowd_protocol::NetworkId([5; 32]);
            let job = Signed::sign(&tracker, &net, &body).unwrap();
            let receipt = Signed::sign(&node, &net, &PieceReceipt { proposal: job.id(), piece: PieceId(piece), piece_size: size }).unwrap();
            let record = RepairRecord { job: job.clone(), receipt };
            let back: RepairRecord = crowd_protocol::wire::from_cbor("repair record", &encode(&record)).unwrap();
            prop_assert_eq!(&back, &record);
            prop_assert_eq!(back.job.id(), job.id());
            let (_, opened) = back.job.open(&net, Some(&tracker.public().to_peer_id())).unwrap();
            prop_assert_eq!(opened, body);
            prop_assert_eq!(RepairJob::DOMAIN, "repair-job");
        }

        /// The reservation estimate is never below an outboard's real size.
        #[test]
        fn outboard_len_bounds_proptest(len in 1usize..600_000) {
            let ob = crowd_porep::OutboardBuilder::new();
            let mut ob = ob;
            ob.update(&vec![7u8; len]);
            let real = ob.finalize().encode().len() as u64;
            prop_assert!(outboard_len(len as u64) >= real, "{} < {real}", outboard_len(len as u64));
            prop_assert!(outboard_len(len as u64) <= real + 64);
        }
    }

    #[test]
    fn key_prefixes_do_not_overlap() {
        assert!(challenge_key(7, 3).starts_with(&challenge_prefix(7)));
        assert!(!challenge_key(70, 3).starts_with(&challenge_prefix(7)));
        assert!(repair_key(&[1; 32]).starts_with(b"repair/"));
    }
}
