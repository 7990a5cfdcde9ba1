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

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::crypt::EncryptReader;
use crate::get::pipeline::RootCheck;
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
/// it on a blocking thread), hashing every piece as it goes. Returns the
/// input's erasure layout when the whole input was encoded, `None` when
/// every lane stopped first.
pub fn feed(encoder: &Encoder, reader: impl Read + Send, lanes: Vec<Lane>) -> Result<Option<Layout>> {
    let total = encoder.params().total_shards();
    let mut senders: Vec<Option<Lane>> = (0..total).map(|_| None).collect();
    for lane in lanes {
        let i = lane.index;
        if let Some(slot) = senders.get_mut(i) {
            *slot = Some(lane);
        }
    }
    let result = encoder.encode_with(reader, |shard| {
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
        Ok(layout) => Ok(Some(layout)),
        Err(crowd_erasure::ErasureError::Io(e)) if e.to_string() == ALL_STOPPED => Ok(None),
        Err(e) => Err(anyhow!("erasure coding: {e}")),
    }
}

/// Bytes per copy handed to the root's task (whatever the encoder reads
/// at a time): what is in flight to it stays a few MiB.
const ROOT_BLOCK: usize = 1 << 20;

/// Threads of the root task's own rayon pool ([`rooted`]).
const ROOT_THREADS: usize = 2;

/// Reads `inner` and hands a copy of every byte read to the task building
/// the file's DAG ([`rooted`]).
pub struct Tee<R> {
    inner: R,
    copy: RootCheck<io::Sink>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        for block in buf[..n].chunks(ROOT_BLOCK) {
            self.copy.write_all(block)?;
        }
        Ok(n)
    }
}

/// The root of a file's DAG once the pass over it ends: built from what a
/// [`Tee`] read, once it is dropped ([`rooted`]), or from the leaves an
/// [`EncryptReader`] hashed, once it sealed the last segment
/// ([`leaf_rooted`]).
#[derive(Debug)]
pub enum Rooting {
    Copied(tokio::task::JoinHandle<Result<crowd_chunker::DagRoot>>),
    Leaves(tokio::sync::oneshot::Receiver<crowd_chunker::DagRoot>),
}

impl Rooting {
    pub async fn root(self) -> Result<crowd_chunker::DagRoot> {
        match self {
            Rooting::Copied(task) => task
                .await
                .map_err(|e| anyhow!("building the file's root stopped: {e}"))?,
            Rooting::Leaves(root) => root
                .await
                .map_err(|_| anyhow!("the file's root was not built: the encryption stopped before its end")),
        }
    }
}

/// `reader` hashing the plaintext's leaves as it seals them, and its root
/// once it sealed the last segment: a private file's root CID from the
/// bytes its pieces are made of, read and hashed once, without a copy to
/// another task. `Err`: the DAG's chunks are not the cipher's segments
/// (then [`rooted`] does it).
pub fn leaf_rooted<R: Read>(
    reader: EncryptReader<R>,
    params: crowd_chunker::DagParams,
) -> Result<(EncryptReader<R>, Rooting), crate::crypt::LeafMismatch> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let reader = reader.hashing_leaves(
        params,
        Box::new(move |root| {
            // the receiver gone: the put stopped, nobody needs the root
            let _ = tx.send(root);
        }),
    )?;
    Ok((reader, Rooting::Leaves(rx)))
}

/// `reader`, every byte of which also goes to a blocking task that builds
/// its UnixFS DAG under `params` (no block kept): the file's root CID comes
/// from the very bytes its pieces are made of, read once.
///
/// The task hashes on a rayon pool of its own. The erasure encoder reads
/// its input on the global pool, so a [`Tee`] read waiting for room in the
/// channel holds a global worker: were the chunker's hashing queued behind
/// it on the same (two-thread) pool, neither would ever move.
pub fn rooted<R: Read>(reader: R, params: crowd_chunker::DagParams) -> (Tee<R>, Rooting) {
    let (copy, copies) = RootCheck::new(io::sink());
    let task = tokio::task::spawn_blocking(move || {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(ROOT_THREADS)
            .thread_name(|i| format!("crowd-root-{i}"))
            .build()
            .map_err(|e| anyhow!("starting the root's threads: {e}"))?;
        pool.install(|| crowd_chunker::build_from_reader(copies, &params, &mut crowd_chunker::Discard))
            .map_err(|e| anyhow!("building the file's root: {e}"))
    });
    (Tee { inner: reader, copy }, Rooting::Copied(task))
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
        let layout = feeding.await.unwrap().unwrap().unwrap();
        assert_eq!(layout, expect_layout);
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

    /// A private file's pass, its root built either way (leaves hashed
    /// where they are sealed, or a copy of the plaintext read): the layout
    /// fed is the ciphertext's, and the root, built from the same reads,
    /// the plaintext's.
    #[tokio::test]
    async fn a_private_pass_lays_out_the_ciphertext_and_roots_the_plaintext() {
        let data: Vec<u8> = (0..(2 << 20) + 333u32).map(|i| (i % 249) as u8).collect();
        let params = crowd_chunker::DagParams::default();
        let key = crate::crypt::FileKey::generate(&mut rand::thread_rng());
        let c = crate::crypt::encrypt_bytes(&key, &data).unwrap();
        let (expect, pieces) = encoder().encode_bytes(&c).unwrap();
        let want = crowd_chunker::build_from_slice(&data, &params, &mut crowd_chunker::Discard).unwrap();
        for leaves in [true, false] {
            let input = std::io::Cursor::new(data.clone());
            let len = data.len() as u64;
            let (reader, rooting): (Box<dyn Read + Send>, _) = if leaves {
                let (r, rooting) = leaf_rooted(EncryptReader::new(input, key.clone(), len), params).unwrap();
                (Box::new(r), rooting)
            } else {
                let (tee, rooting) = rooted(input, params);
                (Box::new(EncryptReader::new(tee, key.clone(), len)), rooting)
            };
            let (l1, mut r1) = lane(1, Progress::hidden());
            let feeding = tokio::task::spawn_blocking(move || feed(&encoder(), reader, vec![l1]));
            let mut p1 = Vec::new();
            r1.read_to_end(&mut p1).await.unwrap();
            let layout = feeding.await.unwrap().unwrap().unwrap();
            assert_eq!(layout, expect);
            assert_eq!(p1, pieces[1]);
            assert_eq!(rooting.root().await.unwrap(), want, "leaves: {leaves}");
        }
    }

    /// A private put's whole pass of ten 16 MiB segments (4+2, the leaves
    /// hashed where they are sealed, as a put does it) ends with the layout
    /// and root of its bytes. A 1 GiB put hung at its start when the
    /// chunker hashed on the global rayon pool behind the tee (see
    /// [`rooted`]); this test did not hang in four runs of that code (the
    /// hang needs a timing it does not force), so it guards the pass's
    /// results, and turns a hang, should one come, into a failure.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rooted_private_pass_of_big_segments_ends() {
        let data: Vec<u8> = (0..(160u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let params = crowd_chunker::DagParams::default();
        let key = crate::crypt::FileKey::generate(&mut rand::thread_rng());
        let reader = EncryptReader::new(std::io::Cursor::new(data.clone()), key, data.len() as u64);
        let (reader, rooting) = leaf_rooted(reader, params).unwrap();
        let encoder = Encoder::new(crowd_erasure::Params::new(4, 2, 16 << 20).unwrap()).unwrap();
        let (lanes, readers): (Vec<_>, Vec<_>) = (0..6).map(|i| lane(i, Progress::hidden())).unzip();
        let feeding = tokio::task::spawn_blocking(move || feed(&encoder, reader, lanes));
        let drain = readers.into_iter().map(|mut r| async move {
            let mut sink = Vec::new();
            r.read_to_end(&mut sink).await.map(|_| sink.len())
        });
        let whole = async {
            let lens = futures::future::join_all(drain).await;
            let layout = feeding.await.unwrap().unwrap().unwrap();
            (lens, layout, rooting.root().await.unwrap())
        };
        let (lens, layout, root) = tokio::time::timeout(std::time::Duration::from_secs(300), whole)
            .await
            .expect("the rooted pass hung");
        assert!(lens
            .iter()
            .all(|l| *l.as_ref().unwrap() as u64 == layout.piece_len()));
        assert_eq!(layout.file_len(), crate::crypt::cipher_len(data.len() as u64));
        assert_eq!(
            root,
            crowd_chunker::build_from_slice(&data, &params, &mut crowd_chunker::Discard).unwrap()
        );
    }

    /// A pass cut short (every lane gone) ends the root's task too, with
    /// the root of what was read: a put then takes neither.
    #[tokio::test]
    async fn a_pass_cut_short_ends_the_roots_task() {
        let data = vec![5u8; 3 << 20];
        let params = crowd_chunker::DagParams::default();
        let (tee, rooting) = rooted(std::io::Cursor::new(data.clone()), params);
        let (l0, r0) = lane(0, Progress::hidden());
        drop(r0);
        let fed = tokio::task::spawn_blocking(move || feed(&encoder(), tee, vec![l0]));
        assert_eq!(fed.await.unwrap().unwrap(), None);
        let root = rooting.root().await.unwrap();
        assert!(root.size < data.len() as u64, "{root:?}");

        // hashing leaves where they are sealed, no root at all (more than
        // the reader's first batch of segments, which the first read seals)
        let data = vec![5u8; 12 << 20];
        let key = crate::crypt::FileKey::generate(&mut rand::thread_rng());
        let reader = EncryptReader::new(std::io::Cursor::new(data.clone()), key, data.len() as u64);
        let (reader, rooting) = leaf_rooted(reader, params).unwrap();
        let (l0, r0) = lane(0, Progress::hidden());
        drop(r0);
        let fed = tokio::task::spawn_blocking(move || feed(&encoder(), reader, vec![l0]));
        assert_eq!(fed.await.unwrap().unwrap(), None);
        let err = rooting.root().await.unwrap_err().to_string();
        assert!(err.contains("not built"), "{err}");
    }
}
