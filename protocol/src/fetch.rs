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

use crowd_porep::tree::{verify_group, GroupOpening, Outboard, GROUP_LEN};
use crowd_porep::ReadAt;
use crowd_porep::TreeKind;
use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use serde::{Deserialize, Serialize};

use crate::wire::{append_frame, from_cbor, read_frame_into};
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
    for g in first..=last {
        ready().await;
        // each group must arrive within `stall`: a silent provider cannot hold us
        tokio::time::timeout(stall, read_frame_into(io, MAX_GROUP_FRAME, &mut body))
            .await
            .map_err(|_| ProtocolError::Timeout(stall))??;
        let frame: GroupFrame = from_cbor("verified group", &body)?;
        if frame.index != g {
            return Err(ProtocolError::Malformed {
                what: "verified group",
                reason: format!("expected group {g}, got {}", frame.index),
            });
        }
        let opening = GroupOpening::from(frame);
        verify_group(root, len, TreeKind::Data, &opening).map_err(|e| ProtocolError::Malformed {
            what: "verified group",
            reason: e.to_string(),
        })?;
        let a = g * GROUP_LEN as u64;
        let from = start.saturating_sub(a) as usize;
        let to = ((end - a) as usize).min(opening.bytes.len());
        sink(&opening.bytes[from..to])?;
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
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
