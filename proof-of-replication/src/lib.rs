//! # crowd-porep: proof of replication and proofs of storage for crowdstore
//!
//! A storage provider proves that it stores a *unique physical replica* of
//! each piece it is paid for (the **seal proof**, an interactive proof of
//! replication), and keeps proving, every proving window, that it still does
//! (the **window proof**). This crate is the pure core of both: no tokio, no
//! network, no clock. Parallel work uses rayon; every random value (tickets,
//! seeds, window randomness) comes in as an argument.
//!
//! It owns: commitments ([`tree`]), the sealing graph ([`graph`]), sealing and
//! unsealing ([`seal`]), proofs ([`proof`]) and their binary encoding
//! ([`codec`]). It does not own: where replicas live on disk, when windows
//! open, where randomness comes from, or who verifies (the tracker does).
//!
//! ## Commitments
//!
//! * `comm_d = blake3::hash(piece)`: BLAKE3's own tree, so the piece
//!   commitment *is* its content address and one root verifies both
//!   retrieval and challenges.
//! * Openings reveal one 1 KiB chunk with the sibling chaining values on its
//!   path, computed and checked with [`blake3::hazmat`] ([`tree`]).
//! * An [`Outboard`] holds the tree above 16 KiB chunk groups, pre-order,
//!   64 bytes per interior node (≈ 0.39 % of the data). Opening a chunk reads
//!   one group plus `log2(groups)` outboard entries.
//!
//! ## Sealing (SDR)
//!
//! The piece is cut into `n = ⌈len / 32⌉` 32-byte nodes; a last partial node
//! is padded with zeros (the replica is `32·n` bytes, `comm_d` stays the hash
//! of the unpadded piece). For layers `l = 1..=L`:
//!
//! ```text
//! label(l, i) = keyed_blake3(K_label, replica_id ‖ l:u32le ‖ i:u64le
//!                                     ‖ label(l, p) for the d DRG parents p of i
//!                                     ‖ label(l−1, q) for the e expander parents q of i   (l ≥ 2))
//! replica[i]  = data[i] ⊕ label(L, i)
//! replica_id  = derive_key("crowdstore porep v1 replica id")(provider ‖ comm_d ‖ deal_id:u64le ‖ ticket)
//! column(i)   = keyed_blake3(K_column, label(1, i) ‖ … ‖ label(L, i))
//! comm_c      = blake3::hash(column(0) ‖ … ‖ column(n−1))
//! comm_r_last = blake3::hash(replica)
//! comm_r      = keyed_blake3(K_comm_r, comm_c ‖ comm_r_last)
//! ```
//!
//! Each `K_x = blake3::derive_key("crowdstore porep v1 x", "")`, so no two
//! hash uses share a domain. DRG parents are earlier nodes of the same layer
//! (Filecoin's bucket-sampling graph plus `i − 1`); a DRG parent that is not
//! earlier than its child (only node 0, whose parents are all 0) contributes
//! 32 zero bytes. Expander parents are uniform in the previous layer
//! ([`graph`]). The parent table is built once per `(n, d, e)` as `u32`s
//! ([`Parents`]), so a piece has at most 2³² nodes (128 GiB). A label's input
//! is at most 1004 bytes, one BLAKE3 chunk.
//!
//! A layer is sequential: one thread hashes, while a second rayon task gathers
//! the next batch's parent labels (the random reads) into a small buffer, as
//! Filecoin's multicore SDR does.
//!
//! ## Sectors
//!
//! The graph is not one graph over the piece: the piece's nodes are cut into
//! sectors of [`SealParams::sector_nodes`] nodes (16 MiB at `devnet`, 8 MiB
//! at `production`; the last sector may be shorter), and each sector is
//! labelled over its own graph (built for the sector's length, parents local
//! to the sector, shifted to where it starts; a sector's first node has no
//! DRG parent). Labels still hash the piece's node index, so equal sectors
//! seal differently. Commitments and proofs are over the whole piece, as
//! above: only the parents changed. So sealing ([`seal::seal_sectors`]),
//! unsealing ([`seal::unseal_to`]) and seal proofs
//! ([`proof::prove_seal_sectors`]) hold one sector's `L` layers at a time —
//! `L × 32 · sector_nodes` bytes, and at most two sector parent tables —
//! whatever the piece size, with the replica written as it is computed. The
//! in-memory [`seal::seal`] (every layer of the piece, 704 MiB for a 64 MiB
//! piece at `production`) gives the same bytes and is what tests compare
//! against. A piece of at most one sector is sealed exactly as before
//! sectors existed.
//!
//! ## Proofs
//!
//! * **Seal proof.** After `comm_r` is published, a seed gives `C` challenged
//!   nodes `H_seal(replica_id ‖ seed ‖ k) mod n`. Each answer opens the data
//!   chunk against `comm_d`, the replica chunk against `comm_r_last`, and the
//!   columns of the node and of its `d + e` parents against `comm_c`. The
//!   verifier recomputes the parents, every label of the challenged column
//!   from the parents' columns, and checks `replica = data ⊕ label(L)`:
//!   `O(C · (L·(d+e) + (d+e)·log n))` hashes, never `O(n)`.
//! * **Window proof.** `N` nodes `H_window(randomness ‖ deal ‖ epoch ‖ k) mod
//!   n` are opened against `comm_r_last`; the proof carries `deal`, `epoch`,
//!   `comm_c` and `comm_r_last` so the verifier checks them and recomputes
//!   `comm_r`. Generation reads one chunk group per challenge plus the
//!   outboard ([`ReadAt`] is implemented for byte slices and files).
//! * Every `verify_*` and `decode` treats its input as untrusted and returns a
//!   typed [`PorepError`], never panics.
//!
//! ## Encoding
//!
//! [`codec`] describes the versioned binary format ([`codec::FORMAT_VERSION`]).
//! Known-answer vectors in `tests/vectors/` change only with that version.
//!
//! ## Parameters
//!
//! [`SealParams::devnet`] (L = 2, d = 3, e = 3, 30 seal / 10 window
//! challenges, 16 MiB sectors) and [`SealParams::production`] (L = 11, d = 6,
//! e = 8, 176 / 10, close to Filecoin's SDR, 8 MiB sectors).
//!
//! ## Example
//!
//! ```
//! use crowd_porep::{graph, proof, seal, Parents, SealParams};
//!
//! let params = SealParams::devnet();
//! let piece = vec![7u8; 10_000];
//! let comm_d = *blake3::hash(&piece).as_bytes();
//! let rid = seal::replica_id(&[1; 32], &comm_d, 42, &[2; 32]);
//! let parents = Parents::new(graph::node_count(piece.len() as u64), &params)?;
//! let sealed = seal::seal(&piece, &rid, &params, &parents)?;
//!
//! let seed = [3; 32]; // drawn after comm_r is published
//! let p = proof::prove_seal(&piece, &sealed, &params, &parents, &seed)?;
//! let public = proof::SealPublic {
//!     piece_len: piece.len() as u64,
//!     comm_d,
//!     comm_r: sealed.commitments.comm_r,
//!     replica_id: rid,
//!     seed,
//! };
//! proof::verify_seal(&public, &params, &proof::SealProof::decode(&p.encode())?)?;
//! assert_eq!(seal::unseal(&sealed.replica, 10_000, &rid, &params, &parents)?, piece);
//! # Ok::<(), crowd_porep::PorepError>(())
//! ```

pub mod codec;
pub mod error;
pub mod graph;
pub mod params;
pub mod proof;
pub mod seal;
pub mod tree;

pub use error::{PorepError, Result, TreeKind};
pub use graph::{Parents, Sector, SectorGraph};
pub use params::SealParams;
pub use proof::{SealProof, SealPublic, SectorWitness, WindowProof, WindowPublic};
pub use seal::{Commitments, Labels, Sealed, SectorSeal};
pub use tree::{ChunkOpening, GroupOpening, Hash32, Outboard, OutboardBuilder, ReadAt};
