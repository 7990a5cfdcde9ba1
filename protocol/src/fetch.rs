//! Verified retrieval: a byte range of a piece travels as whole 16 KiB chunk
//! groups, each with the BLAKE3 sibling path from the group to the root
//! (comm_d), so the receiver checks every byte before it uses it.
//!
//! Frame per group (CBOR, at most [`MAX_GROUP_FRAME`] bytes):
//! `{ index, bytes, siblings }`, siblings bottom-up. Groups come in order,
//! from the one holding `start` to the one holding `end - 1`. The server
//! reads [`BATCH_GROUPS`] groups at a time and writes their frames in one
//! write: over yamux every write is at least one frame of its own (of at most
//! 16 KiB), and every yamux frame one Noise message and one `write` call, so
//! a frame written on its own costs two of each.

use crowd_porep::tree::{verify_group_parts, GroupOpening, Outboard, GROUP_LEN};
use crowd_porep::ReadAt;
use crowd_porep::TreeKind;
use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use serde::{Deserialize, Serialize};

use crate::wire::{append_frame, read_frame_into};
use crate::ProtocolError;

/// Groups the server reads, frames and writes at once (256 KiB of piece
/// data, ~270 KiB of frames: the memory of one fetch being served).
pub const BATCH_GROUPS: u64 = 16;

/// Cap on one group frame: a group, 64 siblings and CBOR overhead.
pub const MAX_GROUP_FRAME: usize = GROUP_LEN + 64 * 40 + 256;

/// One verified chunk group on the wire (crowd-porep's [`GroupOpening`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupFrame {
    pub index: u64,
    #[serde(with = "crate::wire::bytes")]
    pub bytes: Vec<u8>,
    pub siblings: Vec<Sibling>,
}

/// A [`GroupFrame`] that borrows its bytes: the same CBOR.
#[derive(Serialize)]
struct GroupFrameRef<'a> {
    index: u64,
    #[serde(with = "crate::wire::bytes")]
    bytes: &'a [u8],
    siblings: Vec<Sibling>,
}

/// Most siblings a group frame may carry ([`MAX_GROUP_FRAME`]'s bound).
pub const MAX_SIBLINGS: u64 = 64;

/// A [`GroupFrame`] read in place from a frame's body: the group's bytes
/// borrowed from it, its siblings into a vector the receiver reuses. No
/// allocation or copy per group, where decoding a `GroupFrame` copied every
/// group into a new vector (issue #18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupFrameView<'a> {
    pub index: u64,
    pub bytes: &'a [u8],
}

impl<'a> GroupFrameView<'a> {
    /// Reads the CBOR every sender writes for a group ([`send_range`],
    /// serde's encoding of a [`GroupFrame`]): a map of `index`, `bytes` and
    /// `siblings` in that order, with definite lengths, each sibling a
    /// 32-byte string, nothing after it. Anything else is refused, so this
    /// accepts no more than ciborium's decoding of a `GroupFrame` would, and
    /// reads the same values from what it accepts (a property test and the
    /// fuzz target check both). `siblings` is cleared and filled.
    pub fn parse(body: &'a [u8], siblings: &mut Vec<[u8; 32]>) -> Result<Self, ProtocolError> {
        Self::parse_inner(body, siblings).map_err(|reason| ProtocolError::Malformed {
            what: "verified group",
            reason: reason.into(),
        })
    }

    fn parse_inner(body: &'a [u8], siblings: &mut Vec<[u8; 32]>) -> Result<Self, &'static str> {
        let mut c = Cbor(body);
        if c.head(MAP)? != 3 {
            return Err("a group frame is a map of three fields");
        }
        c.key("index")?;
        let index = c.head(UINT)?;
        c.key("bytes")?;
        let len = c.head(BYTES)?;
        let bytes = c.take(len)?;
        c.key("siblings")?;
        let count = c.head(ARRAY)?;
        if count > MAX_SIBLINGS {
            return Err("too many siblings");
        }
        siblings.clear();
        for _ in 0..count {
            if c.head(BYTES)? != 32 {
                return Err("a sibling is 32 bytes");
            }
            let mut s = [0u8; 32];
            s.copy_from_slice(c.take(32)?);
            siblings.push(s);
        }
        if !c.0.is_empty() {
            return Err("bytes after the group frame");
        }
        Ok(Self { index, bytes })
    }
}

/// CBOR major types the group frame uses.
const UINT: u8 = 0;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;

/// A cursor over untrusted CBOR: definite-length heads only.
struct Cbor<'a>(&'a [u8]);

impl<'a> Cbor<'a> {
    /// The argument of the next item's head, which must be of `major` type.
    fn head(&mut self, major: u8) -> Result<u64, &'static str> {
        let (&first, rest) = self.0.split_first().ok_or("truncated")?;
        if first >> 5 != major {
            return Err("unexpected CBOR item");
        }
        self.0 = rest;
        let width = match first & 0x1f {
            info @ 0..=23 => return Ok(u64::from(info)),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => return Err("indefinite or reserved CBOR length"),
        };
        let arg = self.take(width)?;
        Ok(arg.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], &'static str> {
        let n = usize::try_from(n).map_err(|_| "truncated")?;
        let (taken, rest) = self.0.split_at_checked(n).ok_or("truncated")?;
        self.0 = rest;
        Ok(taken)
    }

    fn key(&mut self, name: &str) -> Result<(), &'static str> {
        let len = self.head(TEXT)?;
        if self.take(len)? != name.as_bytes() {
            return Err("unexpected field");
        }
        Ok(())
    }
}

/// A sibling chaining value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling(#[serde(with = "crate::wire::hash32")] pub [u8; 32]);

impl From<GroupOpening> for GroupFrame {
    fn from(o: GroupOpening) -> Self {
        Self {
            index: o.group_index,
            bytes: o.bytes,
            siblings: o.siblings.into_iter().map(Sibling).collect(),
        }
    }
}

impl From<GroupFrame> for GroupOpening {
    fn from(f: GroupFrame) -> Self {
        Self {
            group_index: f.index,
            bytes: f.bytes,
            siblings: f.siblings.into_iter().map(|s| s.0).collect(),
        }
    }
}

/// Sends `[start, end)` of the piece in `source` (described by `outboard`) as
/// group frames, each written within `stall`. Returns the bytes of piece
/// data sent.
pub async fn send_range<W, R>(
    io: &mut W,
    source: &R,
    outboard: &Outboard,
    start: u64,
    end: u64,
    stall: std::time::Duration,
) -> Result<u64, ProtocolError>
where
    W: AsyncWrite + Unpin,
    R: ReadAt + ?Sized,
{
    if start >= end {
        return Ok(0);
    }
    let len = outboard.len();
    if end > len {
        return Err(ProtocolError::Malformed {
            what: "range",
            reason: format!("{start}..{end} beyond {len}"),
        });
    }
    let (first, last) = (start / GROUP_LEN as u64, (end - 1) / GROUP_LEN as u64);
    let mut sent = 0;
    let mut data = Vec::new();
    let mut frames = Vec::new();
    let mut g = first;
    while g <= last {
        let upto = (g + BATCH_GROUPS - 1).min(last);
        let a = g * GROUP_LEN as u64;
        let b = ((upto + 1) * GROUP_LEN as u64).min(len);
        data.resize((b - a) as usize, 0);
        source.read_at(a, &mut data)?;
        sent += b - a;
        frames.clear();
        for (h, bytes) in (g..=upto).zip(data.chunks(GROUP_LEN)) {
            let frame = GroupFrameRef {
                index: h,
                bytes,
                siblings: outboard.group_siblings(h).into_iter().map(Sibling).collect(),
            };
            append_frame(&mut frames, &frame)?;
        }
        // a peer that stops reading cannot hold the sender past `stall`
        let written = async {
            io.write_all(&frames).await?;
            io.flush().await
        };
        tokio::time::timeout(stall, written)
            .await
            .map_err(|_| ProtocolError::Timeout(stall))??;
        g = upto + 1;
    }
    Ok(sent)
}

/// Receives `[start, end)` of a piece whose hash is `root` and length `len`,
/// verifying every group before handing its bytes (trimmed to the range) to
/// `sink`. A frame that fails verification ends the transfer with an error.
/// `ready()` is awaited before each frame is read: a receiver with nowhere
/// to put more holds the sender back (flow control), for as long as it
/// keeps that wait shorter than the sender's stall limit.
#[allow(clippy::too_many_arguments)]
pub async fn receive_range<R, F>(
    io: &mut R,
    root: &[u8; 32],
    len: u64,
    start: u64,
    end: u64,
    stall: std::time::Duration,
    mut ready: impl FnMut() -> F,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<u64, ProtocolError>
where
    R: AsyncRead + Unpin,
    F: std::future::Future<Output = ()>,
{
    if start >= end {
        return Ok(0);
    }
    if end > len {
        return Err(ProtocolError::Malformed {
            what: "range",
            reason: format!("{start}..{end} beyond {len}"),
        });
    }
    let (first, last) = (start / GROUP_LEN as u64, (end - 1) / GROUP_LEN as u64);
    let mut received = 0;
    let mut body = Vec::new();
    let mut siblings = Vec::new();
    for g in first..=last {
        ready().await;
        // each group must arrive within `stall`: a silent provider cannot hold us
        tokio::time::timeout(stall, read_frame_into(io, MAX_GROUP_FRAME, &mut body))
            .await
            .map_err(|_| ProtocolError::Timeout(stall))??;
        let frame = GroupFrameView::parse(&body, &mut siblings)?;
        if frame.index != g {
            return Err(ProtocolError::Malformed {
                what: "verified group",
                reason: format!("expected group {g}, got {}", frame.index),
            });
        }
        verify_group_parts(root, len, TreeKind::Data, g, frame.bytes, &siblings).map_err(|e| {
            ProtocolError::Malformed {
                what: "verified group",
                reason: e.to_string(),
            }
        })?;
        let a = g * GROUP_LEN as u64;
        let from = start.saturating_sub(a) as usize;
        let to = ((end - a) as usize).min(frame.bytes.len());
        sink(&frame.bytes[from..to])?;
        received += (to - from) as u64;
    }
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        blake3::Hasher::new()
            .update(&(len as u64).to_le_bytes())
            .finalize_xof()
            .fill(&mut v);
        v
    }

    const STALL: std::time::Duration = std::time::Duration::from_secs(5);

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    fn frames(piece: &[u8], start: u64, end: u64) -> Vec<u8> {
        let ob = Outboard::build(piece);
        let mut out = futures::io::Cursor::new(Vec::new());
        rt().block_on(send_range(&mut out, piece, &ob, start, end, STALL))
            .unwrap();
        out.into_inner()
    }

    fn group_frame() -> impl Strategy<Value = GroupFrame> {
        (
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..=GROUP_LEN),
            prop::collection::vec(any::<[u8; 32]>(), 0..=MAX_SIBLINGS as usize),
        )
            .prop_map(|(index, bytes, siblings)| GroupFrame {
                index,
                bytes,
                siblings: siblings.into_iter().map(Sibling).collect(),
            })
    }

    /// The view's reading, as a `GroupFrame`.
    fn viewed(body: &[u8]) -> Result<GroupFrame, ProtocolError> {
        let mut siblings = vec![[9u8; 32]; 3];
        let v = GroupFrameView::parse(body, &mut siblings)?;
        Ok(GroupFrame {
            index: v.index,
            bytes: v.bytes.to_vec(),
            siblings: siblings.into_iter().map(Sibling).collect(),
        })
    }

    #[test]
    fn group_frame_view_refuses_what_no_sender_writes() {
        let good = crate::wire::to_cbor(&GroupFrame {
            index: 3,
            bytes: vec![1, 2, 3],
            siblings: vec![Sibling([7; 32])],
        });
        assert_eq!(viewed(&good).unwrap().index, 3);
        let mut extra = good.clone();
        extra.push(0);
        let mut four_fields = good.clone();
        four_fields[0] = 0xa4;
        let mut indefinite_bytes = good.clone();
        let at = good.iter().position(|&b| b == 0x43).unwrap();
        indefinite_bytes[at] = 0x5f;
        let mut short_sibling = good.clone();
        let at = good.iter().position(|&b| b == 0x58).unwrap();
        short_sibling[at + 1] = 31;
        let too_many = crate::wire::to_cbor(&GroupFrame {
            index: 0,
            bytes: vec![],
            siblings: vec![Sibling([0; 32]); MAX_SIBLINGS as usize + 1],
        });
        let reordered = crate::wire::to_cbor(&std::collections::BTreeMap::from([
            ("bytes", ciborium::Value::Bytes(vec![1])),
            ("index", ciborium::Value::Integer(0.into())),
            ("siblings", ciborium::Value::Array(vec![])),
        ]));
        for (name, body) in [
            ("empty", &[][..]),
            ("truncated", &good[..good.len() - 1]),
            ("trailing byte", &extra),
            ("four fields", &four_fields),
            ("indefinite bytes", &indefinite_bytes),
            ("short sibling", &short_sibling),
            ("too many siblings", &too_many),
            ("fields out of order", &reordered),
            ("garbage", &[0xff; 40][..]),
        ] {
            let err = viewed(body).expect_err(name).to_string();
            assert!(
                err.contains("verified group") && !err.contains('\n'),
                "{name}: {err}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The view reads every frame a sender writes as ciborium does.
        #[test]
        fn group_frame_view_reads_what_senders_write_proptest(frame in group_frame()) {
            let body = crate::wire::to_cbor(&frame);
            prop_assert_eq!(viewed(&body).unwrap(), frame);
        }

        /// Whatever the view accepts, ciborium reads the same: a frame
        /// cut, extended or with a byte changed is either refused or read
        /// alike.
        #[test]
        fn group_frame_view_accepts_no_more_than_ciborium_proptest(
            frame in group_frame(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            how in 0u8..4,
        ) {
            let mut body = crate::wire::to_cbor(&frame);
            let i = at.index(body.len());
            match how {
                0 => body[i] = byte,
                1 => body.truncate(i),
                2 => body.insert(i, byte),
                _ => body[i] ^= 0x20,
            }
            if let Ok(v) = viewed(&body) {
                let c: GroupFrame = crate::wire::from_cbor("verified group", &body).unwrap();
                prop_assert_eq!(v, c);
            }
        }

        /// Any range of any piece arrives verified and equal to the slice.
        #[test]
        fn range_roundtrip_proptest(len in 1usize..600_000, a in any::<u64>(), b in any::<u64>()) {
            let piece = data(len);
            let (mut s, mut e) = (a % len as u64, b % (len as u64 + 1));
            if s > e { std::mem::swap(&mut s, &mut e); }
            let wire = frames(&piece, s, e);
            let root = *blake3::hash(&piece).as_bytes();
            let mut got = Vec::new();
            let n = rt().block_on(receive_range(&mut futures::io::Cursor::new(wire), &root, len as u64, s, e, STALL, || async {}, |b| { got.extend_from_slice(b); Ok(()) })).unwrap();
            prop_assert_eq!(n, e - s);
            prop_assert_eq!(&got[..], &piece[s as usize..e as usize]);
        }

        /// Batched, the sender still writes exactly one frame per group, the
        /// bytes a group sent on its own would make, across batch edges.
        #[test]
        fn batches_are_one_frame_per_group_proptest(len in 1usize..600_000, a in any::<u64>(), b in any::<u64>()) {
            let piece = data(len);
            let (mut s, mut e) = (a % len as u64, b % (len as u64 + 1));
            if s > e { std::mem::swap(&mut s, &mut e); }
            let ob = Outboard::build(&piece);
            let mut want = Vec::new();
            if s < e {
                for g in s / GROUP_LEN as u64..=(e - 1) / GROUP_LEN as u64 {
                    let at = g as usize * GROUP_LEN;
                    let bytes = piece[at..(at + GROUP_LEN).min(len)].to_vec();
                    let frame = GroupFrame::from(ob.open_group(g, bytes).unwrap());
                    crate::wire::append_frame(&mut want, &frame).unwrap();
                }
            }
            prop_assert_eq!(frames(&piece, s, e), want);
        }

        /// Flipping any byte of the stream is caught before bad bytes reach the sink.
        #[test]
        fn tampered_range_proptest(len in 16_385usize..100_000, pos in any::<prop::sample::Index>()) {
            let piece = data(len);
            let mut wire = frames(&piece, 0, len as u64);
            let i = pos.index(wire.len());
            wire[i] ^= 0x01;
            let root = *blake3::hash(&piece).as_bytes();
            let mut got = Vec::new();
            let r = rt().block_on(receive_range(&mut futures::io::Cursor::new(wire), &root, len as u64, 0, len as u64, STALL, || async {}, |b| { got.extend_from_slice(b); Ok(()) }));
            prop_assert!(r.is_err());
            prop_assert!(piece.starts_with(&got), "unverified bytes reached the sink");
        }
    }
}
