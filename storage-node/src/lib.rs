//! # crowd-node: the crowdstore storage provider
//!
//! Owns what a provider does with pieces: accepting deals under its pricing
//! and capacity policy, receiving and verifying piece bytes, keeping them
//! crash-consistently on disk with a RocksDB index, sealing them into
//! replicas (crowd-porep) on a background worker, serving pieces and ranges
//! with BLAKE3-verified streaming, and answering the tracker's seal and window
//! challenges; rebuilding lost pieces of a file from other providers when
//! the tracker sends a repair job ([`repair`]), and deleting the bytes and
//! records of deals that have ended ([`gc`]). It does not own money (the
//! tracker) or the wire format (crowd-protocol).
//!
//! Storage layout under the node's home:
//!
//! | path | what |
//! | --- | --- |
//! | `identity.key` | the libp2p ed25519 key (protobuf encoding), mode 0600 |
//! | `config.toml` | [`config::NodeConfig`], documented |
//! | `db/` | RocksDB: proposals, repair jobs, pieces, deals, challenge history, space accounting |
//! | `pieces/<comm_d>` + `.outboard` | unsealed piece bytes and their BLAKE3 outboard |
//! | `replicas/<deal>.replica` + `.outboard` | sealed replicas and their outboard |
//! | `tmp/` | uploads and writes in flight; emptied at every start |
//!
//! Why files and not RocksDB blobs: pieces are large (up to GiBs) and read by
//! range (one 16 KiB chunk group per challenge or fetch frame); plain files
//! give `pread` of exactly those bytes and no compaction rewriting them. Every
//! file is written to `tmp/`, fsynced, renamed into place and its directory
//! fsynced *before* RocksDB indexes it (a synced write batch), and at start
//! anything the index does not know is deleted, so after a crash the node
//! holds only complete, verifying, indexed pieces.

pub mod config;
pub mod dashboard;
pub mod files;
pub mod gc;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod records;
pub mod repair;
pub mod store;
pub mod unseal;
