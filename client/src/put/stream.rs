//! Streaming pieces out of the erasure encoder with bounded memory.
//!
//! One encoder pass runs on a blocking thread and feeds one bounded channel
//! per piece being uploaded; each channel is read as an `AsyncRead` by that
//! piece's upload. Memory: the encoder's segments (two of data, one of
//! parity) plus at most [`LANE_DEPTH`] + 2 chunks of [`CHUNK`] bytes per
//! lane, recycled (an upload hands each chunk back once sent, so no fresh
//! memory is zeroed per chunk). A
//! lane whose upload stopped is dropped and the others go on; the pass stops
//! early when every lane is gone.

use std::io::{self, Read};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::progress::Progress;
use anyhow::{anyhow, Result};
use crowd_erasure::{Encoder, Layout};
use futures::{AsyncBufRead, AsyncRead};
use tokio::sync::mpsc;

/// Bytes per message on a lane.
pub const CHUNK: usize = 1 << 20;
/// Messages buffered per lane.
pub const LANE_DEPTH: usize = 4;

const ALL_STOPPED: &str = "every upload stopped";

/// The sending side of one piece's lane.
#[derive(Debug)]
pub struct Lane {
    pub index: usize,
    pub tx: mpsc::Sender<Vec<u8>>,
    /// Chunks the upload is done with, to fill again.
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
}

/// A lane for piece `index` and the reader its upload consumes (advancing
/// `bar` as bytes are taken).
pub fn lane(index: usize, bar: Progress) -> (Lane, LaneReader) {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(LANE_DEPTH);
    let (spare_tx, spare) = std::sync::mpsc::channel();
    let reader = LaneReader {
        rx,
        spare: spare_tx,
        chunk: Vec::new(),
        at: 0,
        bar,
    };
    (Lane { index, tx, spare }, reader)
}

/// The receiving side of a lane, as the `AsyncRead` an upload consumes.
#[derive(Debug)]
pub struct LaneReader {
    rx: mpsc::Receiver<Vec<u8>>,
    spare: std::sync::mpsc::Sender<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
    bar: Progress,
}

/// An upload writes straight from the lane's chunks (`AsyncBufRead`).
impl AsyncBufRead for LaneReader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.at == this.chunk.len() {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(next)) => {
                    this.bar.inc(next.len() as u64);
                    let done = std::mem::replace(&mut this.chunk, next);
                    this.at = 0;
                    if done.capacity() > 0 {
                        // the feeder may be gone: then the chunk is just freed
                        let _ = this.spare.send(done);
                    }
                }
                Poll::Ready(None) => return Poll::Ready(Ok(&[])),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(&this.chunk[this.at..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.at = (this.at + amt).min(this.chunk.len());
    }
}

impl AsyncRead for LaneReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let available = match self.as_mut().poll_fill_buf(cx) {
            Poll::Ready(Ok(chunk)) => {
                let n = buf.len().min(chunk.len());
                buf[..n].copy_from_slice(&chunk[..n]);
                n
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        self.consume(available);
        Poll::Ready(Ok(available))
    }
}

/// Feeds every piece in `lanes` from one encode of `reader` (blocking: run
/// it on a blocking thread). Returns what tells whether the input was the
/// one pass 1 laid out (only the check pieces are hashed again: the nodes
/// hash every piece they receive) when the whole input was encoded, `None`
/// when every lane stopped first.
pub fn feed(
    encoder: &Encoder,
    reader: impl Read + Send,
    lanes: Vec<Lane>,
) -> Result<Option<crowd_erasure::Checked>> {
    let total = encoder.params().total_shards();
    let mut senders: Vec<Option<Lane>> = (0..total).map(|_| None).collect();
    for lane in lanes {
        let i = lane.index;
        if let Some(slot) = senders.get_mut(i) {
            *slot = Some(lane);
        }
    }
    let result = encoder.encode_checked(reader, |shard| {
        let mut stopped = false;
        if let Some(Some(lane)) = senders.get(shard.piece) {
            for chunk in shard.bytes.chunks(CHUNK) {
                let mut buf = lane
                    .spare
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
                buf.clear();
                buf.extend_from_slice(chunk);
                if lane.tx.blocking_send(buf).is_err() {
                    stopped = true;
                    break;
                }
            }
        }
        if stopped {
            senders[shard.piece] = None;
        }
        if senders.iter().all(Option::is_none) {
            return Err(io::Error::other(ALL_STOPPED));
        }
        Ok(())
    });
    match result {
        Ok(checked) => Ok(Some(checked)),
        Err(crowd_erasure::ErasureError::Io(e)) if e.to_string() == ALL_STOPPED => Ok(None),
        Err(e) => Err(anyhow!("erasure coding: {e}")),
    }
}

/// Pass 1 for a regular file: its root CID and its erasure layout, computed
/// at once on two threads that each stream the file (no piece is kept);
/// `bar` follows the layout pass.
pub fn address_and_layout(
    path: &Path,
    params: &crowd_chunker::DagParams,
    encoder: &Encoder,
    bar: &Progress,
) -> Result<(crowd_chunker::DagRoot, Layout)> {
    let open = || std::fs::File::open(path).map_err(|e| anyhow!("cannot open {}: {e}", path.display()));
    let (for_dag, for_layout) = (open()?, open()?);
    std::thread::scope(|s| {
        let dag = s.spawn(|| crowd_chunker::build_from_reader(for_dag, params, &mut crowd_chunker::Discard));
        let layout = encoder.encode_with(crate::progress::Reader::new(for_layout, bar.clone()), |_| Ok(()));
        let root = dag
            .join()
            .map_err(|_| anyhow!("hashing {} failed", path.display()))?
            .map_err(|e| anyhow!("hashing {}: {e}", path.display()))?;
        let layout = layout.map_err(|e| anyhow!("erasure coding {}: {e}", path.display()))?;
        Ok((root, layout))
    })
}

/// Pass 1 for a private file: the plaintext's root CID and the erasure
/// layout of its ciphertext (whose [`crowd_protocol::layout_cid`] is the
/// file's network root). The file is read and encrypted once for the
/// layout, and read once more, on another thread, for the plaintext root.
pub fn address_and_layout_private(
    path: &Path,
    params: &crowd_chunker::DagParams,
    encoder: &Encoder,
    key: &crate::crypt::FileKey,
    size: u64,
    bar: &Progress,
) -> Result<(crowd_chunker::DagRoot, Layout)> {
    let open = || std::fs::File::open(path).map_err(|e| anyhow!("cannot open {}: {e}", path.display()));
    let (for_plain, for_cipher) = (open()?, open()?);
    std::thread::scope(|s| {
        let plain =
            s.spawn(|| crowd_chunker::build_from_reader(for_plain, params, &mut crowd_chunker::Discard));
        let encrypted = crate::crypt::EncryptReader::new(
            crate::progress::Reader::new(for_cipher, bar.clone()),
            key.clone(),
            size,
        );
        let layout = encoder.encode_with(encrypted, |_| Ok(()));
        let plain_root = joined(plain, "plaintext", path)?;
        let layout = layout.map_err(|e| anyhow!("encrypting and erasure coding {}: {e}", path.display()))?;
        Ok((plain_root, layout))
    })
}

/// A hashing thread's result.
fn joined<T, E: std::fmt::Display>(
    h: std::thread::ScopedJoinHandle<'_, Result<T, E>>,
    what: &str,
    path: &Path,
) -> Result<T> {
    h.join()
        .map_err(|_| anyhow!("hashing the {what} of {} failed", path.display()))?
        .map_err(|e| anyhow!("hashing the {what} of {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use futures::AsyncReadExt;

    fn encoder() -> Encoder {
        Encoder::new(crowd_erasure::Params::new(2, 1, 4096).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn lanes_carry_exactly_the_pieces() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let (expect_layout, pieces) = encoder().encode_bytes(&data).unwrap();
        let (l0, mut r0) = lane(0, Progress::hidden());
        let (l2, mut r2) = lane(2, Progress::hidden());
        let input = data.clone();
        let feeding = tokio::task::spawn_blocking(move || feed(&encoder(), &input[..], vec![l0, l2]));
        let (mut p0, mut p2) = (Vec::new(), Vec::new());
        let (a, b) = tokio::join!(r0.read_to_end(&mut p0), r2.read_to_end(&mut p2));
        a.unwrap();
        b.unwrap();
        let checked = feeding.await.unwrap().unwrap().unwrap();
        assert!(checked.matches(&expect_layout));
        assert_eq!(p0, pieces[0]);
        assert_eq!(p2, pieces[2]);
    }

    /// Uploads take bytes straight from the lane's chunks: partial consumes
    /// across chunk boundaries see every byte once, in order.
    #[tokio::test]
    async fn a_lane_read_as_a_buffer_yields_the_piece() {
        use futures::AsyncBufReadExt;
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (_, pieces) = encoder().encode_bytes(&data).unwrap();
        let (l1, mut r1) = lane(1, Progress::hidden());
        let input = data.clone();
        let feeding = tokio::task::spawn_blocking(move || feed(&encoder(), &input[..], vec![l1]));
        let mut got = Vec::new();
        loop {
            let chunk = r1.fill_buf().await.unwrap();
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len().min(777);
            got.extend_from_slice(&chunk[..n]);
            r1.consume_unpin(n);
        }
        assert!(feeding.await.unwrap().unwrap().is_some());
        assert_eq!(got, pieces[1]);
    }

    #[tokio::test]
    async fn a_stopped_lane_does_not_stop_the_others_and_all_stopped_ends_early() {
        let data = vec![7u8; 200_000];
        let (_, pieces) = encoder().encode_bytes(&data).unwrap();
        let (l0, r0) = lane(0, Progress::hidden());
        let (l1, mut r1) = lane(1, Progress::hidden());
        drop(r0);
        let input = data.clone();
        let feeding = tokio::task::spawn_blocking(move || feed(&encoder(), &input[..], vec![l0, l1]));
        let mut p1 = Vec::new();
        r1.read_to_end(&mut p1).await.unwrap();
        assert!(feeding.await.unwrap().unwrap().is_some());
        assert_eq!(p1, pieces[1]);

        let (l0, r0) = lane(0, Progress::hidden());
        drop(r0);
        let input = data.clone();
        let stopped = tokio::task::spawn_blocking(move || feed(&encoder(), &input[..], vec![l0]));
        assert_eq!(stopped.await.unwrap().unwrap(), None);
    }

    #[test]
    fn pass_one_matches_the_in_memory_encoding_and_the_cid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let params = crowd_chunker::DagParams::default();
        let (root, layout) = address_and_layout(&path, &params, &encoder(), &Progress::hidden()).unwrap();
        let expect = crowd_chunker::build_from_slice(&data, &params, &mut crowd_chunker::Discard).unwrap();
        assert_eq!(root, expect);
        assert_eq!(layout, encoder().encode_bytes(&data).unwrap().0);
    }

    #[test]
    fn private_pass_one_addresses_the_plaintext_and_lays_out_the_ciphertext() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(2 << 20) + 333u32).map(|i| (i % 249) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let params = crowd_chunker::DagParams::default();
        let key = crate::crypt::FileKey::generate(&mut rand::thread_rng());
        let (plain, layout) = address_and_layout_private(
            &path,
            &params,
            &encoder(),
            &key,
            data.len() as u64,
            &Progress::hidden(),
        )
        .unwrap();
        let c = crate::crypt::encrypt_bytes(&key, &data).unwrap();
        let b = |d: &[u8]| crowd_chunker::build_from_slice(d, &params, &mut crowd_chunker::Discard).unwrap();
        assert_eq!(plain, b(&data));
        assert_eq!(layout, encoder().encode_bytes(&c).unwrap().0);
        // a size that is not the file's is an error, not a wrong layout
        assert!(
            address_and_layout_private(&path, &params, &encoder(), &key, 5, &Progress::hidden()).is_err()
        );
    }
}
