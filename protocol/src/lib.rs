//! # crowd-protocol: the crowdstore wire protocol
//!
//! This crate owns what crosses the network between clients, storage
//! providers and the tracker: the message types, their CBOR encoding and size
//! caps, signed envelopes, and the libp2p behaviour every peer runs. It does
//! not own policy (what a node accepts, what a tracker pays).
//!
//! ## Transport
//!
//! libp2p over TCP (Noise + Yamux) and QUIC; identify (`/crowd/id/1`), ping,
//! Kademlia (`/crowd/kad/1`) for content routing — a provider announces each
//! piece and manifest it holds, never individual blocks.
//!
//! ## Protocols
//!
//! | protocol | shape | carries |
//! | --- | --- | --- |
//! | `/crowd/control/1` | request-response, one frame each way | [`Request`] / [`Response`] |
//! | `/crowd/piece/1` | stream: header frame, raw bytes, result frame | piece uploads |
//! | `/crowd/fetch/1` | stream: request frame, header frame, verified groups | piece and range retrieval |
//!
//! A frame is a `u32` big-endian length and a CBOR body. Every reader checks
//! the length against a cap before reading the body: 256 KiB for control
//! requests, 16 MiB for control responses, 4 KiB for stream headers. A
//! control request that is oversized or does not decode is answered with
//! [`Response::Error`]; the node goes on serving others.
//!
//! ## Signatures
//!
//! Everything that moves money or state is a [`Signed<T>`]: the network it
//! is for ([`NetworkId`], the tracker's genesis head), the CBOR body, the
//! signer's libp2p ed25519 public key and a signature over
//! `"crowd/2/" ‖ kind ‖ 0 ‖ network ‖ body`. The receiver checks the
//! network, the signature *and* that the signer is the party the message
//! must come from:
//!
//! | message | signed by | checked by |
//! | --- | --- | --- |
//! | [`DealProposal`] | the client named in it | provider, tracker |
//! | [`DealAcceptance`] | the provider named in the proposal | client, tracker |
//! | [`PieceReceipt`] | the provider | client, tracker |
//! | [`SealTicket`], [`SealSeed`], [`WindowChallenge`] | the tracker (its peer id is in the node's config; it must also be the sender) | provider |
//! | [`Admission`] | the tracker (brought by the client) | provider |
//! | [`SealCommitment`], [`SealProofMsg`], [`WindowProofMsg`] | the provider | tracker |
//!
//! ## Message flow
//!
//! 1. The client asks the tracker for providers ([`tracker`] lists every
//!    request to the tracker).
//! 2. client → tracker `Admit(Signed<DealProposal>)`: the tracker locks the
//!    deal's escrow from the client's balance until the proposal can no
//!    longer be published, and answers a tracker-signed [`Admission`].
//! 3. client → provider `ProposeDeal { proposal, admission }`; the provider
//!    checks the client's signature, the tracker's admission for this very
//!    proposal, that it is the provider named, and its capacity, price and
//!    collateral policy; it answers `DealAccepted` (its signature over the
//!    proposal id) or `DealRejected { reason }`.
//! 4. client → provider on `/crowd/piece/1`: [`UploadHeader`] naming the
//!    accepted proposal, then exactly `piece_size` bytes. The provider hashes
//!    as bytes arrive, writes them to a temporary file, and only if the BLAKE3
//!    hash equals the proposal's comm_d fsyncs, renames and indexes the piece,
//!    then answers [`UploadResult::Stored`] with a signed [`PieceReceipt`].
//!    Anything else is `Rejected` and nothing of the upload is kept. A
//!    proposal may name no piece ([`PieceId::UNNAMED`]): it is then for the
//!    bytes received, and the receipt names their hash. A client uploads
//!    from the one pass that also hashes the pieces, without a pass
//!    beforehand just to learn them.
//! 5. The client publishes the doubly signed deal to the tracker with the
//!    receipt (`Publish { proposal, acceptance, receipt }`; for a proposal
//!    that names no piece, only the client may, and only with the receipt,
//!    whose piece the deal is then for: [`DealProposal::named_by`]); the
//!    tracker numbers it and sends the provider `StartSeal(Signed<SealTicket>)`.
//! 6. The provider seals (crowd-porep) in a background worker; the tracker
//!    polls `SealStatus(deal_id)` and records the signed [`SealCommitment`]
//!    (comm_r) it returns; after the pre-commit epoch ends it sends
//!    `ProveSeal(Signed<SealSeed>)` and gets a signed seal proof.
//! 7. Every epoch the tracker sends `Challenge(Signed<WindowChallenge>)`; the
//!    provider answers with a signed window proof from its outboard.
//! 8. Retrieval: `/crowd/fetch/1` with a [`FetchRequest`] for `[start, end)`
//!    of a piece; the provider answers [`FetchHeader`] then the range as
//!    16 KiB chunk groups, each with the BLAKE3 sibling path that proves it
//!    against comm_d, so the receiver verifies every byte before using it.
//!
//! ```
//! use crowd_protocol::{DealProposal, NetworkId, PieceId, Signed};
//! use libp2p::identity::Keypair;
//! let client = Keypair::generate_ed25519();
//! let provider = Keypair::generate_ed25519().public().to_peer_id();
//! let proposal = DealProposal {
//!     piece: PieceId(*blake3::hash(b"piece").as_bytes()), piece_size: 5,
//!     client: client.public().to_peer_id(), provider,
//!     price_per_epoch: 10, start_epoch: 1, duration_epochs: 100,
//!     provider_collateral: 1000, expiry_epoch: 50, nonce: 7,
//! };
//! // the network: the tracker's genesis head (`TrackerInfo::network`)
//! let network = NetworkId([7; 32]);
//! let signed = Signed::sign(&client, &network, &proposal).unwrap();
//! // the provider checks the network and who signed it
//! let (signer, opened) = signed.open(&network, Some(&client.public().to_peer_id())).unwrap();
//! assert_eq!(opened, proposal);
//! // a signature by anyone else is refused, and so is one from another network
//! assert!(signed.open(&network, Some(&provider)).is_err());
//! assert!(signed.open(&NetworkId([8; 32]), None).is_err());
//! ```

pub mod address_limits;
pub mod dht;
mod error;
pub mod fetch;
pub mod manifest;
pub mod network;
mod signed;
pub mod tracker;
pub mod tracker_link;
pub mod transfer;
mod types;
pub mod util;
pub mod wire;

pub use error::ProtocolError;
pub use libp2p;
pub use manifest::{
    layout_cid, Chunking, Encryption, Manifest, ManifestPiece, ENCRYPTION_SCHEME, ENCRYPTION_SEGMENT,
    LAYOUT_CODEC, MANIFEST_VERSION, MAX_ENVELOPE,
};
pub use network::{InboundRequest, Network, NetworkConfig};
pub use signed::{NetworkId, Signable, Signed, MAX_SIGNED_BODY};
pub use tracker::{
    AccountView, DealQuery, DealView, EpochRecord, FileQuery, FileRegistration, FileView, HeadStatement,
    LogPage, MembershipChange, ProviderEntry, ProviderRegistration, RemoveRequest, RenewRequest, RepairStats,
    ReplicaChange, ReplicaSetView, ReplicaView, SealReport, SlotView, TrackerInfo, TrackerRequest,
    TrackerResponse, TransferRequest, WithdrawRequest,
};
pub use types::*;

/// Largest header frame on the piece and fetch streams.
pub const MAX_STREAM_HEADER: usize = 4 * 1024;
