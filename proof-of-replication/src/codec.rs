//! Versioned, compact binary encoding of commitments and proofs.
//!
//! Every object starts with a 4-byte header: `b"CP"`, a kind byte (`b'C'`
//! commitments, `b'S'` seal proof, `b'W'` window proof) and the format version
//! ([`FORMAT_VERSION`]). Integers are little-endian; hashes are 32 raw bytes.
//!
//! ```text
//! chunk opening  = chunk_index u64 | chunk_len u16 (≤ 1024) | chunk | n u8 (≤ 64) | n × sibling
//! column         = n u8 (≤ 32 layers) | n × label | chunk opening
//! seal challenge = node u64 | data opening | replica opening | column
//!                  | d u8 (≤ 16) | d × column | e u8 (≤ 14) | e × column
//! seal proof     = header | replica_id | comm_c | comm_r_last | C u32 (≤ 512) | C × seal challenge
//! window proof   = header | deal_id u64 | epoch u64 | comm_c | comm_r_last | N u32 (≤ 1024) | N × chunk opening
//! commitments    = header | piece_len u64 | comm_d | comm_c | comm_r_last | comm_r
//! outboard       = header | len u64 | root | (groups(len) − 1) × (left CV | right CV)
//! ```
//!
//! The outboard (kind `b'O'`) is the provider's own file, capped at
//! [`MAX_OUTBOARD_LEN`]; decoding checks its entry count and that its top entry
//! hashes to the root. A corrupted deeper entry is caught when the window
//! proofs it produces fail verification; rebuild it from the replica.
//!
//! Decoding enforces every cap as it reads the length prefix (before any
//! allocation), rejects inputs above [`MAX_ENCODED_LEN`] up front, and rejects
//! trailing bytes, so each value has exactly one encoding.

use crate::error::{PorepError, Result};
use crate::params::{
    MAX_DRG_DEGREE, MAX_EXPANDER_DEGREE, MAX_LAYERS, MAX_SEAL_CHALLENGES, MAX_WINDOW_CHALLENGES,
};
use crate::proof::{ColumnOpening, SealChallengeProof, SealProof, WindowProof};
use crate::seal::Commitments;
use crate::tree::{group_count, ChunkOpening, Hash32, Outboard, MAX_DEPTH};

/// The format version written and read by this build.
pub const FORMAT_VERSION: u8 = 1;
/// Largest encoding accepted by any decoder.
pub const MAX_ENCODED_LEN: usize = 64 << 20;
/// Largest outboard accepted (that of a 256 GiB input).
pub const MAX_OUTBOARD_LEN: usize = 1 << 30;

const KIND_COMMITMENTS: u8 = b'C';
const KIND_SEAL: u8 = b'S';
const KIND_WINDOW: u8 = b'W';
const KIND_OUTBOARD: u8 = b'O';

fn header(kind: u8) -> [u8; 4] {
    [b'C', b'P', kind, FORMAT_VERSION]
}

struct Writer(Vec<u8>);

impl Writer {
    fn new(kind: u8) -> Self {
        Self(header(kind).to_vec())
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    fn chunk(&mut self, o: &ChunkOpening) {
        self.u64(o.chunk_index);
        self.u16(o.chunk.len() as u16);
        self.bytes(&o.chunk);
        self.u8(o.siblings.len() as u8);
        for s in &o.siblings {
            self.bytes(s);
        }
    }
    fn column(&mut self, c: &ColumnOpening) {
        self.u8(c.labels.len() as u8);
        for l in &c.labels {
            self.bytes(l);
        }
        self.chunk(&c.hash);
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], kind: u8, what: &'static str) -> Result<Self> {
        Self::with_cap(buf, kind, what, MAX_ENCODED_LEN)
    }
    fn with_cap(buf: &'a [u8], kind: u8, what: &'static str, cap: usize) -> Result<Self> {
        if buf.len() > cap {
            return Err(PorepError::TooLarge {
                field: "encoding",
                len: buf.len() as u64,
                max: cap as u64,
            });
        }
        let mut r = Self { buf };
        let h = r.take(4, "header")?;
        if h[..3] != [b'C', b'P', kind] {
            return Err(PorepError::BadMagic {
                expected: what,
                got: h[..3].to_vec(),
            });
        }
        if h[3] != FORMAT_VERSION {
            return Err(PorepError::UnsupportedVersion {
                got: h[3],
                supported: FORMAT_VERSION,
            });
        }
        Ok(r)
    }
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(PorepError::Truncated {
                field,
                needed: n as u64,
                remaining: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8> {
        Ok(self.array::<1>(field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    fn hash(&mut self, field: &'static str) -> Result<Hash32> {
        self.array(field)
    }
    /// A count prefix, checked against `max` before anything is allocated.
    fn count(&mut self, len: u64, max: u64, field: &'static str) -> Result<usize> {
        if len > max {
            return Err(PorepError::TooLarge { field, len, max });
        }
        Ok(len as usize)
    }
    fn hashes(&mut self, n: usize, field: &'static str) -> Result<Vec<Hash32>> {
        let raw = self.take(32 * n, field)?;
        Ok(raw
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect())
    }
    fn chunk(&mut self) -> Result<ChunkOpening> {
        let chunk_index = self.u64("chunk index")?;
        let len = u64::from(self.u16("chunk length")?);
        let len = self.count(len, blake3::CHUNK_LEN as u64, "chunk length")?;
        let chunk = self.take(len, "chunk bytes")?.to_vec();
        let n = u64::from(self.u8("sibling count")?);
        let n = self.count(n, MAX_DEPTH as u64, "sibling count")?;
        let siblings = self.hashes(n, "siblings")?;
        Ok(ChunkOpening {
            chunk_index,
            chunk,
            siblings,
        })
    }
    fn column(&mut self) -> Result<ColumnOpening> {
        let n = u64::from(self.u8("column labels")?);
        let n = self.count(n, u64::from(MAX_LAYERS), "column labels")?;
        let labels = self.hashes(n, "labels")?;
        let hash = self.chunk()?;
        Ok(ColumnOpening { labels, hash })
    }
    fn columns(&mut self, max: u32, field: &'static str) -> Result<Vec<ColumnOpening>> {
        let n = u64::from(self.u8(field)?);
        let n = self.count(n, u64::from(max), field)?;
        (0..n).map(|_| self.column()).collect()
    }
    fn finish(self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(PorepError::TrailingBytes(self.buf.len()))
        }
    }
}

impl Commitments {
    /// Encode as `header | piece_len | comm_d | comm_c | comm_r_last | comm_r` (140 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(KIND_COMMITMENTS);
        w.u64(self.piece_len);
        for h in [&self.comm_d, &self.comm_c, &self.comm_r_last, &self.comm_r] {
            w.bytes(h);
        }
        w.0
    }

    /// Decode; rejects bad headers, truncation and trailing bytes.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let mut r = Reader::new(buf, KIND_COMMITMENTS, "commitments")?;
        let c = Self {
            piece_len: r.u64("piece length")?,
            comm_d: r.hash("comm_d")?,
            comm_c: r.hash("comm_c")?,
            comm_r_last: r.hash("comm_r_last")?,
            comm_r: r.hash("comm_r")?,
        };
        r.finish()?;
        Ok(c)
    }
}

impl Outboard {
    /// Encode for storage next to the replica.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(KIND_OUTBOARD);
        w.u64(self.len());
        w.bytes(&self.root());
        for [l, r] in self.parents() {
            w.bytes(l);
            w.bytes(r);
        }
        w.0
    }

    /// Decode a stored outboard, checking its size and top entry.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let mut r = Reader::with_cap(buf, KIND_OUTBOARD, "outboard", MAX_OUTBOARD_LEN)?;
        let len = r.u64("input length")?;
        let root = r.hash("root")?;
        let entries = group_count(len) - 1;
        let max = (MAX_OUTBOARD_LEN / 64) as u64;
        let entries = r.count(entries, max, "outboard entries")?;
        let raw = r.hashes(2 * entries, "outboard entries")?;
        r.finish()?;
        let parents = raw.chunks_exact(2).map(|p| [p[0], p[1]]).collect();
        Outboard::from_parts(len, root, parents)
    }
}

impl SealProof {
    /// Encode in the versioned binary format.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(KIND_SEAL);
        w.bytes(&self.replica_id);
        w.bytes(&self.comm_c);
        w.bytes(&self.comm_r_last);
        w.u32(self.challenges.len() as u32);
        for c in &self.challenges {
            w.u64(c.node);
            w.chunk(&c.data);
            w.chunk(&c.replica);
            w.column(&c.column);
            for group in [&c.drg_parents, &c.exp_parents] {
                w.u8(group.len() as u8);
                for col in group {
                    w.column(col);
                }
            }
        }
        w.0
    }

    /// Decode untrusted bytes, enforcing every cap while reading.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let mut r = Reader::new(buf, KIND_SEAL, "seal proof")?;
        let replica_id = r.hash("replica_id")?;
        let comm_c = r.hash("comm_c")?;
        let comm_r_last = r.hash("comm_r_last")?;
        let n = u64::from(r.u32("challenge count")?);
        let n = r.count(n, u64::from(MAX_SEAL_CHALLENGES), "challenge count")?;
        let challenges = (0..n)
            .map(|_| {
                Ok(SealChallengeProof {
                    node: r.u64("node")?,
                    data: r.chunk()?,
                    replica: r.chunk()?,
                    column: r.column()?,
                    drg_parents: r.columns(MAX_DRG_DEGREE, "DRG parent count")?,
                    exp_parents: r.columns(MAX_EXPANDER_DEGREE, "expander parent count")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        r.finish()?;
        Ok(Self {
            replica_id,
            comm_c,
            comm_r_last,
            challenges,
        })
    }
}

impl WindowProof {
    /// Encode in the versioned binary format.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(KIND_WINDOW);
        w.u64(self.deal_id);
        w.u64(self.epoch);
        w.bytes(&self.comm_c);
        w.bytes(&self.comm_r_last);
        w.u32(self.openings.len() as u32);
        for o in &self.openings {
            w.chunk(o);
        }
        w.0
    }

    /// Decode untrusted bytes, enforcing every cap while reading.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let mut r = Reader::new(buf, KIND_WINDOW, "window proof")?;
        let deal_id = r.u64("deal id")?;
        let epoch = r.u64("epoch")?;
        let comm_c = r.hash("comm_c")?;
        let comm_r_last = r.hash("comm_r_last")?;
        let n = u64::from(r.u32("opening count")?);
        let n = r.count(n, u64::from(MAX_WINDOW_CHALLENGES), "opening count")?;
        let openings = (0..n).map(|_| r.chunk()).collect::<Result<Vec<_>>>()?;
        r.finish()?;
        Ok(Self {
            deal_id,
            epoch,
            comm_c,
            comm_r_last,
            openings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opening() -> impl Strategy<Value = ChunkOpening> {
        (
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..=1024),
            proptest::collection::vec(any::<[u8; 32]>(), 0..=MAX_DEPTH),
        )
            .prop_map(|(chunk_index, chunk, siblings)| ChunkOpening {
                chunk_index,
                chunk,
                siblings,
            })
    }

    fn column() -> impl Strategy<Value = ColumnOpening> {
        (proptest::collection::vec(any::<[u8; 32]>(), 0..=4), opening())
            .prop_map(|(labels, hash)| ColumnOpening { labels, hash })
    }

    fn seal_proof() -> impl Strategy<Value = SealProof> {
        let challenge = (
            any::<u64>(),
            opening(),
            opening(),
            column(),
            proptest::collection::vec(column(), 0..3),
            proptest::collection::vec(column(), 0..3),
        )
            .prop_map(
                |(node, data, replica, column, drg_parents, exp_parents)| SealChallengeProof {
                    node,
                    data,
                    replica,
                    column,
                    drg_parents,
                    exp_parents,
                },
            );
        (
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            proptest::collection::vec(challenge, 0..3),
        )
            .prop_map(|(replica_id, comm_c, comm_r_last, challenges)| SealProof {
                replica_id,
                comm_c,
                comm_r_last,
                challenges,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn seal_proof_codec_proptest(p in seal_proof()) {
            let bytes = p.encode();
            prop_assert_eq!(SealProof::decode(&bytes).unwrap(), p);
            // every strict prefix is rejected as truncated, never a panic
            let cut = bytes.len() / 2;
            let truncated = matches!(SealProof::decode(&bytes[..cut]), Err(PorepError::Truncated { .. }));
            prop_assert!(truncated);
        }

        #[test]
        fn window_proof_codec_proptest(
            deal_id in any::<u64>(), epoch in any::<u64>(),
            comm_c in any::<[u8; 32]>(), comm_r_last in any::<[u8; 32]>(),
            openings in proptest::collection::vec(opening(), 0..5),
        ) {
            let p = WindowProof { deal_id, epoch, comm_c, comm_r_last, openings };
            let bytes = p.encode();
            prop_assert_eq!(WindowProof::decode(&bytes).unwrap(), p);
            let mut longer = bytes.clone();
            longer.push(0);
            let trailing = matches!(WindowProof::decode(&longer), Err(PorepError::TrailingBytes(1)));
            prop_assert!(trailing);
        }

        #[test]
        fn commitments_codec_proptest(piece_len in any::<u64>(), h in any::<[[u8; 32]; 4]>()) {
            let c = Commitments { piece_len, comm_d: h[0], comm_c: h[1], comm_r_last: h[2], comm_r: h[3] };
            let bytes = c.encode();
            prop_assert_eq!(bytes.len(), 4 + 8 + 4 * 32);
            prop_assert_eq!(Commitments::decode(&bytes).unwrap(), c);
        }

        #[test]
        fn garbage_decode_proptest(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            // arbitrary bytes decode to an error or a value, never a panic
            let _ = SealProof::decode(&bytes);
            let _ = WindowProof::decode(&bytes);
            let _ = Commitments::decode(&bytes);
        }
    }

    #[test]
    fn outboard_round_trips_and_rejects_damage() {
        let mut data = vec![0u8; 40 * crate::tree::GROUP_LEN + 5];
        blake3::Hasher::new().finalize_xof().fill(&mut data);
        let ob = Outboard::build(&data);
        let bytes = ob.encode();
        assert_eq!(bytes.len(), 4 + 8 + 32 + ob.size_bytes());
        assert_eq!(Outboard::decode(&bytes).unwrap(), ob);
        let mut top = bytes.clone();
        top[4 + 8 + 32] ^= 1;
        assert!(matches!(
            Outboard::decode(&top),
            Err(PorepError::RootMismatch { .. })
        ));
        assert!(matches!(
            Outboard::decode(&bytes[..bytes.len() - 64]),
            Err(PorepError::Truncated { .. })
        ));
        let mut huge = bytes.clone();
        huge[4..12].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            Outboard::decode(&huge),
            Err(PorepError::TooLarge { .. })
        ));
    }

    #[test]
    fn kinds_are_not_interchangeable() {
        let w = WindowProof {
            deal_id: 1,
            epoch: 2,
            comm_c: [0; 32],
            comm_r_last: [0; 32],
            openings: vec![],
        };
        assert!(matches!(
            SealProof::decode(&w.encode()),
            Err(PorepError::BadMagic { .. })
        ));
    }
}
