//! Parameters, shard geometry and the serialisable layout descriptor.
//!
//! Everything here is arithmetic: which bytes of the file land in which
//! shard of which segment, and how long each piece is. The encoder, decoder
//! and repair all ask these functions rather than recomputing offsets.

use std::ops::Range;

use cid::Cid;
use multihash::Multihash;
use serde::{Deserialize, Serialize};

use crate::error::{ErasureError, Result};

/// Most pieces a file can have: GF(2^8) has 256 elements.
pub const MAX_SHARDS: usize = 256;

/// Default segment size before rounding down to a multiple of `k`: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;

/// Largest accepted segment size: 1 GiB. Decoding holds up to two
/// segments' worth of shard buffers, so a layout read from a manifest must
/// not be able to ask for unbounded memory.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;

/// Multicodec code of the `raw` codec used in piece CIDs.
pub const RAW_CODEC: u64 = 0x55;

/// Multihash code of BLAKE3 (256-bit digest).
pub const BLAKE3_MULTIHASH: u64 = 0x1e;

/// Checked erasure parameters: `k` data shards, `m` parity shards and the
/// segment size in bytes.
///
/// Invariants (checked by [`Params::new`] and on every layout load):
/// `k ≥ 1`, `k + m ≤ 256`, `0 < segment_size ≤ MAX_SEGMENT_SIZE` and
/// `segment_size % k == 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Params {
    data_shards: usize,
    parity_shards: usize,
    segment_size: u64,
}

impl Params {
    /// Check and build parameters.
    pub fn new(data_shards: usize, parity_shards: usize, segment_size: u64) -> Result<Self> {
        if data_shards == 0 {
            return Err(ErasureError::NoDataShards);
        }
        if data_shards
            .checked_add(parity_shards)
            .is_none_or(|total| total > MAX_SHARDS)
        {
            return Err(ErasureError::TooManyShards {
                data: data_shards,
                parity: parity_shards,
            });
        }
        if segment_size == 0
            || segment_size > MAX_SEGMENT_SIZE
            || !segment_size.is_multiple_of(data_shards as u64)
        {
            return Err(ErasureError::BadSegmentSize {
                segment_size,
                data_shards,
                max: MAX_SEGMENT_SIZE,
            });
        }
        Ok(Self {
            data_shards,
            parity_shards,
            segment_size,
        })
    }

    /// `k + m` parameters with the default segment size: the largest
    /// multiple of `k` not above 64 MiB.
    pub fn with_default_segment(data_shards: usize, parity_shards: usize) -> Result<Self> {
        let k = data_shards.max(1) as u64;
        Self::new(
            data_shards,
            parity_shards,
            DEFAULT_SEGMENT_SIZE - DEFAULT_SEGMENT_SIZE % k,
        )
    }

    /// `k`, the number of data shards per segment.
    pub fn data_shards(&self) -> usize {
        self.data_shards
    }

    /// `m`, the number of parity shards per segment.
    pub fn parity_shards(&self) -> usize {
        self.parity_shards
    }

    /// `k + m`, the number of pieces.
    pub fn total_shards(&self) -> usize {
        self.data_shards + self.parity_shards
    }

    /// Bytes of file data in a full segment.
    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// Length of one shard of a full segment: `segment_size / k`.
    pub fn shard_size(&self) -> u64 {
        self.segment_size / self.data_shards as u64
    }

    /// Shard geometry of a file of `file_len` bytes under these parameters.
    pub fn geometry(&self, file_len: u64) -> Geometry {
        Geometry {
            params: *self,
            file_len,
        }
    }
}

/// Where the bytes of one file go, under one set of [`Params`].
///
/// Segment `j` covers file bytes `j·S .. min((j+1)·S, len)`. A full segment
/// has shards of `S/k` bytes; the last, partial segment of `r` bytes has
/// shards of `ceil(r/k)` bytes and is zero-padded to `k·ceil(r/k)`. Data
/// shard `i` of a segment is the contiguous slice `i·l .. (i+1)·l` of the
/// (padded) segment, `l` its shard length. Every piece holds shard `i` of
/// every segment in order, so the shard of segment `j` starts at piece
/// offset `j·S/k` and all pieces have the same length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    params: Params,
    file_len: u64,
}

impl Geometry {
    /// The parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    /// File length in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Number of segments (zero for an empty file).
    pub fn segment_count(&self) -> u64 {
        self.file_len.div_ceil(self.params.segment_size)
    }

    /// File bytes covered by segment `segment`.
    pub fn segment_range(&self, segment: u64) -> Range<u64> {
        let start = segment.saturating_mul(self.params.segment_size);
        let end = start.saturating_add(self.params.segment_size).min(self.file_len);
        start.min(end)..end
    }

    /// Shard length of segment `segment`: `S/k` for full segments,
    /// `ceil(r/k)` for a last segment of `r` bytes.
    pub fn shard_len(&self, segment: u64) -> u64 {
        let r = self.segment_range(segment);
        (r.end - r.start).div_ceil(self.params.data_shards as u64)
    }

    /// Offset of segment `segment`'s shard within every piece.
    pub fn piece_offset(&self, segment: u64) -> u64 {
        segment.saturating_mul(self.params.shard_size())
    }

    /// Length of every piece.
    pub fn piece_len(&self) -> u64 {
        let full = self.file_len / self.params.segment_size;
        let rem = self.file_len % self.params.segment_size;
        full * self.params.shard_size() + rem.div_ceil(self.params.data_shards as u64)
    }

    /// The segments that hold any byte of `range` (empty for an empty range).
    pub fn segments_covering(&self, range: &Range<u64>) -> Range<u64> {
        if range.start >= range.end {
            return 0..0;
        }
        let s = self.params.segment_size;
        range.start / s..range.end.div_ceil(s)
    }
}

/// One piece as recorded in a [`Layout`]: its length and BLAKE3 hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceInfo {
    /// Length in bytes (the same for every piece of a file).
    pub len: u64,
    /// BLAKE3 hash of the whole piece; also its content address.
    #[serde(with = "hash_serde")]
    pub hash: blake3::Hash,
}

impl PieceInfo {
    /// The piece's content address: CIDv1, raw codec, BLAKE3 multihash.
    pub fn cid(&self) -> Cid {
        piece_cid(&self.hash)
    }
}

/// The layout descriptor: everything needed to decode a file from its
/// pieces. The manifest carries it.
///
/// A `Layout` is always valid: [`Layout::new`] checks it and so does
/// deserialisation (it is read from untrusted manifests), returning an
/// [`ErasureError`] for bad parameters, the wrong number of pieces or a
/// piece length that does not follow from the parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LayoutRepr", into = "LayoutRepr")]
pub struct Layout {
    params: Params,
    file_len: u64,
    pieces: Vec<PieceInfo>,
}

/// Wire form of [`Layout`]; validated by `TryFrom` on the way in.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LayoutRepr {
    data_shards: u64,
    parity_shards: u64,
    segment_size: u64,
    file_len: u64,
    pieces: Vec<PieceInfo>,
}

impl TryFrom<LayoutRepr> for Layout {
    type Error = ErasureError;

    fn try_from(r: LayoutRepr) -> Result<Self> {
        // Out-of-range counts fail the same checks as in-range bad ones.
        let k = usize::try_from(r.data_shards).unwrap_or(usize::MAX);
        let m = usize::try_from(r.parity_shards).unwrap_or(usize::MAX);
        let params = Params::new(k, m, r.segment_size)?;
        Layout::new(params, r.file_len, r.pieces)
    }
}

impl From<Layout> for LayoutRepr {
    fn from(l: Layout) -> Self {
        LayoutRepr {
            data_shards: l.params.data_shards as u64,
            parity_shards: l.params.parity_shards as u64,
            segment_size: l.params.segment_size,
            file_len: l.file_len,
            pieces: l.pieces,
        }
    }
}

impl Layout {
    /// Build a layout, checking that there are `k + m` pieces and that each
    /// has the length the parameters imply for `file_len`.
    pub fn new(params: Params, file_len: u64, pieces: Vec<PieceInfo>) -> Result<Self> {
        if pieces.len() != params.total_shards() {
            return Err(ErasureError::PieceCount {
                expected: params.total_shards(),
                found: pieces.len(),
            });
        }
        let expected = params.geometry(file_len).piece_len();
        if let Some((piece, p)) = pieces.iter().enumerate().find(|(_, p)| p.len != expected) {
            return Err(ErasureError::PieceLength {
                piece,
                expected,
                found: p.len,
            });
        }
        Ok(Self {
            params,
            file_len,
            pieces,
        })
    }

    /// The erasure parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    /// Length of the original file.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Per-piece length and hash, indexed by piece number (`0..k` data,
    /// `k..k+m` parity).
    pub fn pieces(&self) -> &[PieceInfo] {
        &self.pieces
    }

    /// Length of every piece.
    pub fn piece_len(&self) -> u64 {
        self.geometry().piece_len()
    }

    /// Shard geometry of this file.
    pub fn geometry(&self) -> Geometry {
        self.params.geometry(self.file_len)
    }

    /// Content address of piece `piece`.
    pub fn piece_cid(&self, piece: usize) -> Result<Cid> {
        self.pieces
            .get(piece)
            .map(PieceInfo::cid)
            .ok_or(ErasureError::PieceIndex {
                index: piece,
                total: self.pieces.len(),
            })
    }
}

/// CIDv1 (raw codec `0x55`, BLAKE3 multihash `0x1e`) for a piece hash.
pub fn piece_cid(hash: &blake3::Hash) -> Cid {
    #[allow(clippy::expect_used)] // a 32-byte digest always fits a 64-byte multihash
    let mh = Multihash::<64>::wrap(BLAKE3_MULTIHASH, hash.as_bytes())
        .expect("32-byte digest fits in a 64-byte multihash");
    Cid::new_v1(RAW_CODEC, mh)
}

/// CIDv1 of a piece held in memory.
pub fn piece_cid_of(bytes: &[u8]) -> Cid {
    piece_cid(&blake3::hash(bytes))
}

/// Hashes as hex strings in human-readable formats (JSON) and as 32 raw
/// bytes in binary ones (dag-cbor).
mod hash_serde {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(h: &blake3::Hash, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(h.to_hex().as_str())
        } else {
            s.serialize_bytes(h.as_bytes())
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<blake3::Hash, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = blake3::Hash;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a BLAKE3 hash: 32 bytes or 64 hex digits")
            }

            fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
                blake3::Hash::from_hex(v).map_err(E::custom)
            }

            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                let arr: [u8; 32] = v.try_into().map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(blake3::Hash::from_bytes(arr))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut arr = [0u8; 32];
                for (i, b) in arr.iter_mut().enumerate() {
                    *b = seq
                        .next_element()?
                        .ok_or_else(|| A::Error::invalid_length(i, &self))?;
                }
                if seq.next_element::<u8>()?.is_some() {
                    return Err(A::Error::invalid_length(33, &self));
                }
                Ok(blake3::Hash::from_bytes(arr))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(V)
        } else {
            d.deserialize_bytes(V)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_checks() {
        assert!(matches!(Params::new(0, 2, 8), Err(ErasureError::NoDataShards)));
        assert!(matches!(
            Params::new(200, 57, 200),
            Err(ErasureError::TooManyShards {
                data: 200,
                parity: 57
            })
        ));
        assert!(Params::new(200, 56, 200).is_ok());
        assert!(Params::new(usize::MAX, 1, 8).is_err());
        assert!(matches!(
            Params::new(3, 1, 0),
            Err(ErasureError::BadSegmentSize { .. })
        ));
        assert!(matches!(
            Params::new(3, 1, 10),
            Err(ErasureError::BadSegmentSize { .. })
        ));
        assert!(matches!(
            Params::new(1, 0, MAX_SEGMENT_SIZE + 1),
            Err(ErasureError::BadSegmentSize { .. })
        ));
        assert!(Params::new(1, 0, 1).is_ok());
        let d = Params::with_default_segment(10, 4).unwrap();
        assert_eq!(d.segment_size() % 10, 0);
        assert!(d.segment_size() <= DEFAULT_SEGMENT_SIZE);
        assert!(d.segment_size() > DEFAULT_SEGMENT_SIZE - 10);
    }

    #[test]
    fn geometry_small_last_segment() {
        let p = Params::new(4, 2, 64).unwrap();
        // 1-byte file: one segment, shards of one byte, not 16.
        let g = p.geometry(1);
        assert_eq!(g.segment_count(), 1);
        assert_eq!(g.shard_len(0), 1);
        assert_eq!(g.piece_len(), 1);
        // Empty file: no segments, empty pieces.
        let g = p.geometry(0);
        assert_eq!(g.segment_count(), 0);
        assert_eq!(g.piece_len(), 0);
        // Two full segments and 5 bytes: last shards are ceil(5/4) = 2.
        let g = p.geometry(133);
        assert_eq!(g.segment_count(), 3);
        assert_eq!(g.shard_len(1), 16);
        assert_eq!(g.shard_len(2), 2);
        assert_eq!(g.piece_offset(2), 32);
        assert_eq!(g.piece_len(), 34);
        assert_eq!(g.segment_range(2), 128..133);
        assert_eq!(g.segments_covering(&(63..65)), 0..2);
        assert_eq!(g.segments_covering(&(64..64)), 0..0);
    }

    fn sample_layout() -> Layout {
        let p = Params::new(2, 1, 8).unwrap();
        let len = p.geometry(13).piece_len();
        let pieces = (0u8..3)
            .map(|i| PieceInfo {
                len,
                hash: blake3::hash(&[i]),
            })
            .collect();
        Layout::new(p, 13, pieces).unwrap()
    }

    #[test]
    fn layout_roundtrips_json_and_cbor() {
        let l = sample_layout();
        let json = serde_json::to_string(&l).unwrap();
        assert!(json.contains(&blake3::hash(&[1]).to_hex().to_string()));
        assert_eq!(serde_json::from_str::<Layout>(&json).unwrap(), l);
        let cbor = serde_ipld_dagcbor::to_vec(&l).unwrap();
        assert_eq!(serde_ipld_dagcbor::from_slice::<Layout>(&cbor).unwrap(), l);
    }

    #[test]
    fn layout_load_is_validated() {
        let l = sample_layout();
        let mut v: serde_json::Value = serde_json::to_value(&l).unwrap();
        v["pieces"][1]["len"] = 99.into();
        let e = serde_json::from_value::<Layout>(v.clone()).unwrap_err();
        assert!(e.to_string().contains("piece 1 has length 99"), "{e}");

        let mut v2: serde_json::Value = serde_json::to_value(&l).unwrap();
        v2["segment_size"] = 7.into();
        let e = serde_json::from_value::<Layout>(v2).unwrap_err();
        assert!(e.to_string().contains("multiple of k"), "{e}");

        let mut v3: serde_json::Value = serde_json::to_value(&l).unwrap();
        v3["pieces"].as_array_mut().unwrap().pop();
        let e = serde_json::from_value::<Layout>(v3).unwrap_err();
        assert!(e.to_string().contains("2 pieces listed"), "{e}");

        let mut v4: serde_json::Value = serde_json::to_value(&l).unwrap();
        v4["pieces"][0]["hash"] = "zz".into();
        assert!(serde_json::from_value::<Layout>(v4).is_err());

        let mut v5: serde_json::Value = serde_json::to_value(&l).unwrap();
        v5["data_shards"] = u64::MAX.into();
        assert!(serde_json::from_value::<Layout>(v5).is_err());
    }

    #[test]
    fn piece_cid_is_raw_blake3() {
        let cid = piece_cid_of(b"hello");
        assert_eq!(cid.version(), cid::Version::V1);
        assert_eq!(cid.codec(), RAW_CODEC);
        assert_eq!(cid.hash().code(), BLAKE3_MULTIHASH);
        assert_eq!(cid.hash().digest(), blake3::hash(b"hello").as_bytes());
        let l = sample_layout();
        assert_eq!(l.piece_cid(2).unwrap(), piece_cid(&blake3::hash(&[2])));
        assert!(matches!(
            l.piece_cid(3),
            Err(ErasureError::PieceIndex { index: 3, total: 3 })
        ));
    }
}
