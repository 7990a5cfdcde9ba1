//! The file manifest: what a client stores with every provider of a file and
//! with the tracker, and what `crowd get` starts from.
//!
//! It is dag-cbor (CIDs as tag-42 links), content-addressed by
//! [`crate::manifest_cid`] (CIDv1, dag-cbor, BLAKE3), at most
//! [`crate::MAX_MANIFEST`] bytes. It names the file's root CID and size, the
//! chunking parameters that reproduce the root CID, the erasure layout (piece
//! hashes and lengths) and, per piece, the provider holding it and its deal.
//! A manifest read from the network is untrusted: [`Manifest::decode`]
//! checks every field against the others, and the retrieved file is checked
//! against the root CID.

use cid::Cid;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;

/// The only manifest version.
pub const MANIFEST_VERSION: u64 = 1;

/// How the file was cut into its UnixFS DAG (enough to recompute the root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunking {
    /// "fixed" or "fastcdc".
    pub chunker: String,
    pub chunk_size: u64,
    pub max_links: u64,
    /// "blake3" or "sha2-256".
    pub hash: String,
}

/// Where one piece is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestPiece {
    /// Index in the layout: `0..k` data, `k..k+m` parity.
    pub index: u64,
    /// The piece CID (raw, BLAKE3) = comm_d.
    pub piece: Cid,
    /// The provider's peer id (text form).
    pub provider: String,
    /// The tracker's deal id.
    pub deal_id: u64,
}

/// How a private file was encrypted before it was stored (absent for a
/// public file). Everything here is readable by anyone who holds the
/// manifest; the secrets are inside [`Encryption::envelope`], which only the
/// owner opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// The only scheme: [`ENCRYPTION_SCHEME`].
    pub scheme: String,
    /// Plaintext bytes per STREAM segment ([`ENCRYPTION_SEGMENT`]).
    pub segment_size: u64,
    /// The STREAM nonce prefix (19 bytes; not secret).
    #[serde(with = "crate::wire::bytes")]
    pub nonce: Vec<u8>,
    /// A keyed hash committing to the file key (32 bytes): a capability's
    /// key is checked against it before anything is fetched.
    #[serde(with = "crate::wire::bytes")]
    pub key_check: Vec<u8>,
    /// The plaintext root CID, file key and name, encrypted to the owner
    /// (at most [`MAX_ENVELOPE`] bytes; opaque to everyone else).
    #[serde(with = "crate::wire::bytes")]
    pub envelope: Vec<u8>,
}

/// The encryption scheme private manifests name.
pub const ENCRYPTION_SCHEME: &str = "xchacha20poly1305-stream-be32";
/// Plaintext bytes per encrypted segment.
pub const ENCRYPTION_SEGMENT: u64 = 1 << 20;
/// Largest envelope in a manifest.
pub const MAX_ENVELOPE: usize = 4096;

/// Multicodec of a private file's network root, [`layout_cid`] (from the
/// multicodec table's private-use range): what it addresses is the
/// erasure layout, not a block.
pub const LAYOUT_CODEC: u64 = 0x30_0001;

/// A private file's network root: CIDv1 ([`LAYOUT_CODEC`], BLAKE3) of
/// `derive_key("crowdstore private layout v1", cbor(layout))`. The layout
/// names every piece by its hash, the pieces make the ciphertext, and the
/// AEAD checks every plaintext byte: a DAG over the ciphertext would check
/// nothing more, and hashing one cost a private put a pass over the file.
pub fn layout_cid(layout: &crowd_erasure::Layout) -> Cid {
    let digest = blake3::Hasher::new_derive_key("crowdstore private layout v1")
        .update(&crate::wire::to_cbor(layout))
        .finalize();
    match cid::multihash::Multihash::<64>::wrap(0x1e, digest.as_bytes()) {
        Ok(mh) => Cid::new_v1(LAYOUT_CODEC, mh),
        Err(_) => unreachable!("a 32-byte digest fits a 64-byte multihash"),
    }
}

/// A stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u64,
    /// The file's network root: its UnixFS root CID for a public file; for
    /// a private one [`layout_cid`] of its layout (manifests written before
    /// that name the UnixFS root of the ciphertext, checked as it streams).
    /// A private file's plaintext root is only inside the envelope.
    pub root: Cid,
    /// Bytes stored (the ciphertext's length for a private file).
    pub size: u64,
    pub chunking: Chunking,
    pub layout: crowd_erasure::Layout,
    /// One entry per piece; empty only for an empty file (nothing to store).
    pub pieces: Vec<ManifestPiece>,
    /// Present for a private file; public manifests leave it out (and keep
    /// the bytes, and so the CIDs, they always had).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

impl Manifest {
    /// dag-cbor bytes.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        serde_ipld_dagcbor::to_vec(self).map_err(|e| ProtocolError::Malformed {
            what: "manifest",
            reason: e.to_string(),
        })
    }

    /// Parses and checks untrusted manifest bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let bad = |reason: String| ProtocolError::Malformed {
            what: "manifest",
            reason,
        };
        if bytes.len() > crate::MAX_MANIFEST {
            return Err(bad(format!(
                "{} bytes is above the {}-byte limit",
                bytes.len(),
                crate::MAX_MANIFEST
            )));
        }
        let m: Manifest = serde_ipld_dagcbor::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if m.version != MANIFEST_VERSION {
            return Err(bad(format!("unknown version {}", m.version)));
        }
        if m.size != m.layout.file_len() {
            return Err(bad(format!(
                "size {} differs from the layout's {}",
                m.size,
                m.layout.file_len()
            )));
        }
        let total = m.layout.pieces().len();
        if !(m.pieces.len() == total || (m.size == 0 && m.pieces.is_empty())) {
            return Err(bad(format!(
                "{} pieces listed, the layout has {total}",
                m.pieces.len()
            )));
        }
        if let Some(e) = &m.encryption {
            if e.scheme != ENCRYPTION_SCHEME {
                return Err(bad(format!("unknown encryption scheme '{}'", e.scheme)));
            }
            if e.segment_size != ENCRYPTION_SEGMENT {
                return Err(bad(format!("encryption segment of {} bytes", e.segment_size)));
            }
            if e.nonce.len() != 19 || e.key_check.len() != 32 {
                return Err(bad("encryption nonce or key check of the wrong length".into()));
            }
            if e.envelope.is_empty() || e.envelope.len() > MAX_ENVELOPE {
                return Err(bad(format!("envelope of {} bytes", e.envelope.len())));
            }
            if m.root.codec() == LAYOUT_CODEC && m.root != layout_cid(&m.layout) {
                return Err(bad("its root is not its layout's CID".into()));
            }
            // every ciphertext has at least its last segment's tag
            let seg = ENCRYPTION_SEGMENT + 16;
            let rest = m.size % seg;
            if m.size == 0 || (rest != 0 && rest < 16) {
                return Err(bad(format!("{} bytes is not the length of a ciphertext", m.size)));
            }
        }
        if m.encryption.is_none() && m.root.codec() == LAYOUT_CODEC {
            return Err(bad("a public file's root names a layout, not a UnixFS DAG".into()));
        }
        let mut seen = vec![false; total];
        for p in &m.pieces {
            let i = usize::try_from(p.index).unwrap_or(usize::MAX);
            if i >= total || seen[i] {
                return Err(bad(format!("piece index {} repeated or out of range", p.index)));
            }
            seen[i] = true;
            if m.layout.piece_cid(i).ok() != Some(p.piece) {
                return Err(bad(format!("piece {i} CID differs from the layout")));
            }
            p.provider
                .parse::<PeerId>()
                .map_err(|_| bad(format!("piece {i} provider '{}' is not a peer id", p.provider)))?;
        }
        Ok(m)
    }

    /// Its content address.
    pub fn cid(bytes: &[u8]) -> Cid {
        crate::manifest_cid(bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn sample(len: usize) -> Manifest {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let enc = crowd_erasure::Encoder::new(crowd_erasure::Params::new(2, 1, 4096).unwrap()).unwrap();
        let (layout, _) = enc.encode_bytes(&data).unwrap();
        let provider = PeerId::random().to_string();
        let pieces = if len == 0 {
            vec![]
        } else {
            (0..3)
                .map(|i| ManifestPiece {
                    index: i,
                    piece: layout.piece_cid(i as usize).unwrap(),
                    provider: provider.clone(),
                    deal_id: 10 + i,
                })
                .collect()
        };
        Manifest {
            version: MANIFEST_VERSION,
            root: layout.piece_cid(0).unwrap(),
            size: len as u64,
            chunking: Chunking {
                chunker: "fixed".into(),
                chunk_size: 1 << 20,
                max_links: 174,
                hash: "blake3".into(),
            },
            layout,
            pieces,
            encryption: None,
        }
    }

    fn private(len: usize) -> Manifest {
        let mut m = sample(len);
        m.encryption = Some(Encryption {
            scheme: ENCRYPTION_SCHEME.into(),
            segment_size: ENCRYPTION_SEGMENT,
            nonce: vec![7; 19],
            key_check: vec![8; 32],
            envelope: vec![9; 100],
        });
        m
    }

    #[test]
    fn private_manifests_roundtrip_and_public_ones_keep_their_bytes() {
        let m = private(5000);
        assert_eq!(Manifest::decode(&m.encode().unwrap()).unwrap(), m);
        // no `encryption` key at all in a public manifest
        let public = sample(5000).encode().unwrap();
        assert!(!public.windows(10).any(|w| w == b"encryption"));
        let mut bad = vec![];
        for f in [
            |e: &mut Encryption| e.scheme = "rot13".into(),
            |e: &mut Encryption| e.segment_size = 4096,
            |e: &mut Encryption| e.nonce.pop().map(drop).unwrap_or(()),
            |e: &mut Encryption| e.key_check = vec![],
            |e: &mut Encryption| e.envelope = vec![],
            |e: &mut Encryption| e.envelope = vec![0; MAX_ENVELOPE + 1],
        ] {
            let mut m = private(5000);
            f(m.encryption.as_mut().unwrap());
            bad.push(m);
        }
        // 5 bytes cannot be a ciphertext (every one ends in a 16-byte tag)
        bad.push(private(5));
        for m in bad {
            assert!(Manifest::decode(&m.encode().unwrap()).is_err(), "{m:?}");
        }
    }

    #[test]
    fn a_private_manifest_named_by_its_layout_must_name_its_own() {
        let mut m = private(5000);
        m.root = layout_cid(&m.layout);
        assert_eq!(m.root.codec(), LAYOUT_CODEC);
        assert_eq!(Manifest::decode(&m.encode().unwrap()).unwrap(), m);
        // another layout's CID (the layout of other bytes)
        let mut other = m.clone();
        other.root = layout_cid(&sample(6000).layout);
        let e = Manifest::decode(&other.encode().unwrap()).unwrap_err();
        assert!(e.to_string().contains("not its layout's CID"), "{e}");
        // a public manifest cannot name a layout
        let mut public = sample(5000);
        public.root = layout_cid(&public.layout);
        let e = Manifest::decode(&public.encode().unwrap()).unwrap_err();
        assert!(e.to_string().contains("public file's root names a layout"), "{e}");
        // the CID is a function of the layout alone
        assert_eq!(layout_cid(&sample(5000).layout), m.root);
        assert_ne!(layout_cid(&sample(5001).layout), m.root);
    }

    #[test]
    fn manifest_roundtrips_and_is_dag_cbor_with_links() {
        for len in [0, 1, 5000, 20_000] {
            let m = sample(len);
            let bytes = m.encode().unwrap();
            assert_eq!(Manifest::decode(&bytes).unwrap(), m);
            // the root is a tag-42 link
            assert!(bytes.windows(2).any(|w| w == [0xd8, 0x2a]));
        }
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let m = sample(5000);
        let mut wrong_size = m.clone();
        wrong_size.size += 1;
        let mut dup = m.clone();
        dup.pieces[1].index = 0;
        let mut swapped = m.clone();
        swapped.pieces[0].piece = m.pieces[1].piece;
        let mut bad_peer = m.clone();
        bad_peer.pieces[2].provider = "nobody".into();
        let mut missing = m.clone();
        missing.pieces.pop();
        let mut version = m;
        version.version = 2;
        for bad in [wrong_size, dup, swapped, bad_peer, missing, version] {
            assert!(Manifest::decode(&bad.encode().unwrap()).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn manifest_garbage_proptest(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Manifest::decode(&bytes);
        }

        #[test]
        fn manifest_bitflip_proptest(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let bytes = sample(5000).encode().unwrap();
            let mut flipped = bytes.clone();
            let i = pos.index(flipped.len());
            flipped[i] ^= 1 << bit;
            // never a panic; if it still decodes, it is self-consistent
            if let Ok(m) = Manifest::decode(&flipped) {
                prop_assert_eq!(m.size, m.layout.file_len());
            }
        }
    }
}
