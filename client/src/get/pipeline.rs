//! Decoding while fetching, and checking the root while decoding.
//!
//! A whole-file get starts with the `k` data pieces (see [`super::plan`]),
//! and a segment whose data shards have all landed is a plain copy. So a
//! decoder thread follows the fetch: whenever every data piece's file holds
//! the next segments ([`Landed`]), it copies them to the output. When the
//! fetch is over it stops, and whatever is left (all of it, when a data
//! piece was slow, gone or resumed from an earlier run) is decoded from the
//! `k` complete pieces the fetch settled on, rebuilding from parity as
//! needed. Every byte was verified against its piece hash in transit either
//! way, and the output is the same.
//!
//! [`RootCheck`] rebuilds the file's DAG on another thread from what is
//! written, so the root CID is checked without reading the output again.

use std::io::{Read, Write};
use std::ops::Range;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Duration;

use anyhow::{Context, Result};
use crowd_erasure::{Decoder, Verification};
use crowd_protocol::util::AlignedBuf;
use crowd_protocol::Network;
use tokio::runtime::Handle;

use super::engine::{fetch_pieces, FetchJob, Fetched, Landed};
use super::stage::StagedPiece;

/// How often the decoder looks whether more has landed.
const POLL: Duration = Duration::from_millis(10);
/// Bounds of a data piece's stage.
const STAGE_MIN: u64 = 2 << 20;
const STAGE_MAX: u64 = 32 << 20;

/// Fetches `job` on `rt` and writes file bytes `range` to `out`, decoding
/// whole-file gets while the pieces arrive.
pub fn retrieve<W: Write + Send + ?Sized>(
    rt: &Handle,
    net: &Network,
    mut job: FetchJob<'_>,
    range: &Range<u64>,
    out: &mut W,
) -> Result<Fetched> {
    let layout = &job.manifest.layout;
    let (n, k) = (layout.params().total_shards(), layout.params().data_shards());
    // behind a kept output the data pieces reach the decoder in memory,
    // and no piece runs more than four shards (within 2 to 32 MiB) ahead of it
    let landed = if job.whole && job.kept.is_some() {
        let cap = (4 * layout.geometry().shard_len(0)).clamp(STAGE_MIN, STAGE_MAX);
        Landed::staged(n, k, usize::try_from(cap).unwrap_or(STAGE_MAX as usize))
    } else {
        Landed::new(n)
    };
    if job.whole {
        job.landed = Some(landed.clone());
    } else {
        landed.finish();
    }
    let job = &job;
    let (fetched, followed) = std::thread::scope(|s| {
        let follower = s.spawn(|| {
            let followed = follow(job, &landed, &mut *out, range.start);
            // the pieces no longer wait for the decoder
            if let Some(pace) = landed.pace() {
                pace.stop();
            }
            followed
        });
        let fetched = rt.block_on(fetch_pieces(net, job));
        landed.finish();
        let followed = follower
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the decoder thread panicked")));
        (fetched, followed)
    });
    let fetched = fetched?;
    // what is still staged goes to the files, for decoding from them
    for i in 0..k {
        let Some(stage) = landed.stage(i) else { continue };
        let blocks = stage.drain();
        if blocks.is_empty() {
            continue;
        }
        use std::os::unix::fs::FileExt;
        let file = job.dir.open_piece(i)?;
        for (at, block) in blocks {
            file.write_all_at(&block, at)
                .with_context(|| format!("writing {}", job.dir.piece_path(i).display()))?;
        }
    }
    // `follow` wrote exactly the file up to `upto` (or failed); a range get
    // does not follow: it decodes from its start
    let upto = followed?.max(range.start);
    if upto < range.end {
        super::decode_into(
            job.manifest,
            job.dir,
            job.plan,
            &fetched.complete,
            &(upto..range.end),
            out,
        )?;
    }
    Ok(fetched)
}

/// Copies the file from offset `from` to `out` as the data shards of its
/// segments land, until the fetch is over or a read fails; returns the file
/// offset decoded up to.
pub(super) fn follow<W: Write + ?Sized>(
    job: &FetchJob<'_>,
    landed: &Landed,
    out: &mut W,
    from: u64,
) -> Result<u64> {
    let mut out = Counting {
        inner: out,
        written: 0,
    };
    let layout = &job.manifest.layout;
    let g = layout.geometry();
    let k = layout.params().data_shards();
    let n = layout.params().total_shards();
    let count = g.segment_count();
    if from >= g.file_len() {
        return Ok(from);
    }
    let mut next = from / layout.params().segment_size();
    if let Some(pace) = landed.pace() {
        pace.advance(g.piece_offset(next));
    }
    // the part of segment `j` still to write
    let part = |j: u64| {
        let r = g.segment_range(j);
        r.start.max(from)..r.end
    };
    let mut sources: Option<Vec<Option<StagedPiece<'_, '_>>>> = None;
    let decoder = Decoder::new(layout)?.with_verification(Verification::Trusted);
    while job.whole && next < count {
        let low = (0..k).map(|i| landed.get(i)).min().unwrap_or(0);
        let mut upto = next;
        while upto < count && g.piece_offset(upto) + g.shard_len(upto) <= low {
            upto += 1;
        }
        if upto == next {
            if landed.finished() {
                break;
            }
            std::thread::sleep(POLL);
            continue;
        }
        if sources.is_none() {
            // every data piece has bytes on disk, so its file exists
            let mut v: Vec<Option<StagedPiece<'_, '_>>> = (0..n).map(|_| None).collect();
            for (i, slot) in v.iter_mut().enumerate().take(k) {
                *slot = Some(StagedPiece {
                    stage: landed.stage(i),
                    file: job.dir.source(i, job.plan, layout.piece_len())?,
                });
            }
            sources = Some(v);
        }
        let Some(src) = &sources else { break };
        while next < upto {
            let before = out.written;
            // a failed read writes nothing (then the rest is decoded after
            // the fetch); a failure after bytes went out is the output's
            // (a segment that does not decrypt, a full disk)
            if let Err(e) = decoder.decode_range(src, part(next), &mut out) {
                if out.written != before {
                    return Err(anyhow::Error::new(e).context("writing the output failed"));
                }
                return Ok(part(next).start);
            }
            next += 1;
            // written: what the data pieces held of it is no longer needed
            for i in 0..k {
                if let Some(stage) = landed.stage(i) {
                    stage.release(g.piece_offset(next));
                }
            }
            // then the pieces may go on (their stages have the room)
            if let Some(pace) = landed.pace() {
                pace.advance(g.piece_offset(next));
            }
        }
    }
    Ok(if next == count {
        g.file_len()
    } else {
        part(next).start
    })
}

/// Counts the bytes written through it.
struct Counting<'w, W: ?Sized> {
    inner: &'w mut W,
    written: u64,
}

impl<W: Write + ?Sized> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Blocks in flight to the root-check thread (each one decoder write, a
/// shard's part of a segment: at most a few MiB).
const HASH_QUEUE: usize = 4;

/// Writes to `out` and hands a copy of every byte to a thread that rebuilds
/// the DAG, to be compared with the root at the end. The copies' buffers
/// come back once read ([`ChannelReader`]) and are filled again.
pub struct RootCheck<W> {
    out: W,
    tx: Option<SyncSender<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
}

impl<W: Write> RootCheck<W> {
    /// `out` and the reading end for the checking thread.
    pub fn new(out: W) -> (Self, ChannelReader) {
        let (tx, rx) = sync_channel(HASH_QUEUE);
        let (spare_tx, spare) = sync_channel(HASH_QUEUE + 2);
        (
            Self {
                out,
                tx: Some(tx),
                spare,
            },
            ChannelReader {
                rx,
                spare: spare_tx,
                block: Vec::new(),
                at: 0,
            },
        )
    }
}

impl<W: Write> Write for RootCheck<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        if let Some(tx) = &self.tx {
            let mut copy = self.spare.try_recv().unwrap_or_default();
            copy.clear();
            copy.extend_from_slice(&buf[..n]);
            if tx.send(copy).is_err() {
                // the checker stopped (it reports why); keep writing
                self.tx = None;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Reads the blocks a [`RootCheck`] sends until it is dropped, and hands
/// each one back once read.
pub struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    spare: SyncSender<Vec<u8>>,
    block: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.block.len() {
            match self.rx.recv() {
                Ok(b) => {
                    let done = std::mem::replace(&mut self.block, b);
                    if done.capacity() > 0 {
                        // the writer may be gone, or have spares enough
                        let _ = self.spare.try_send(done);
                    }
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Runs `write` with a [`RootCheck`] around `out` and checks the root of
/// everything written once it returns.
pub fn with_root_check<W, T>(
    out: W,
    params: &crowd_chunker::DagParams,
    root: &crowd_chunker::Cid,
    write: impl FnOnce(&mut RootCheck<W>) -> Result<T>,
) -> Result<T>
where
    W: Write + Send,
{
    with_root_check_after(std::io::empty(), out, params, root, write)
}

/// [`with_root_check`] of a file whose first bytes, `prefix`, were written
/// before (by an interrupted get): they are read (on the checking thread)
/// ahead of what `write` writes.
pub fn with_root_check_after<W, T>(
    prefix: impl Read + Send,
    out: W,
    params: &crowd_chunker::DagParams,
    root: &crowd_chunker::Cid,
    write: impl FnOnce(&mut RootCheck<W>) -> Result<T>,
) -> Result<T>
where
    W: Write + Send,
{
    let (mut tee, copies) = RootCheck::new(out);
    std::thread::scope(|s| {
        let checker = s.spawn(move || {
            let mut whole = prefix.chain(copies);
            super::check_root(&mut whole, params, root)
        });
        let written = write(&mut tee);
        // the checker's stream ends here
        drop(tee);
        let checked = checker
            .join()
            .map_err(|_| anyhow::anyhow!("the root check panicked"))
            .context("checking the root")?;
        let value = written?;
        checked?;
        Ok(value)
    })
}

/// Passes on only the bytes at offsets `range` of everything written
/// through it (a range cut from a stream of the whole file).
pub struct Cut<W> {
    inner: W,
    at: u64,
    range: Range<u64>,
}

impl<W: Write> Cut<W> {
    pub fn new(inner: W, range: Range<u64>) -> Self {
        Self { inner, at: 0, range }
    }
}

impl<W: Write> Write for Cut<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let end = self.at + buf.len() as u64;
        let from = self.range.start.clamp(self.at, end);
        let to = self.range.end.clamp(from, end);
        if from < to {
            self.inner
                .write_all(&buf[(from - self.at) as usize..(to - self.at) as usize])?;
        }
        self.at = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Bytes handed to the output's writer thread at a time.
const WRITE_BLOCK: usize = 1 << 20;
/// Blocks queued for it: what is written and not yet on its way to the
/// file is at most this many blocks and one being filled.
const WRITE_QUEUE: usize = 4;

/// Writes to `out` on a thread of its own: writing a get's output
/// overlaps decoding and decrypting the next segments instead of following
/// them. Blocks are recycled and aligned ([`AlignedBuf`]): a [`Writeback`]
/// that bypasses the page cache writes them as they are. An error of `out`
/// is returned by the next write or flush; `flush` returns once everything
/// written so far is in `out` and `out` is flushed.
///
/// [`Writeback`]: crowd_protocol::util::Writeback
pub struct WriteBehind<'scope> {
    tx: Option<SyncSender<Block>>,
    spare: Receiver<AlignedBuf>,
    buf: AlignedBuf,
    writer: Option<std::thread::ScopedJoinHandle<'scope, std::io::Result<()>>>,
}

enum Block {
    Data(AlignedBuf),
    /// Flush `out` and answer.
    Flush(SyncSender<std::io::Result<()>>),
}

impl<'scope> WriteBehind<'scope> {
    pub fn new<'env, W: Write + Send + 'scope>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        mut out: W,
    ) -> Self {
        let (tx, rx) = sync_channel::<Block>(WRITE_QUEUE);
        let (spare_tx, spare) = sync_channel::<AlignedBuf>(WRITE_QUEUE + 1);
        let writer = scope.spawn(move || -> std::io::Result<()> {
            while let Ok(block) = rx.recv() {
                match block {
                    Block::Data(mut b) => {
                        out.write_all(b.as_slice())?;
                        b.clear();
                        let _ = spare_tx.try_send(b);
                    }
                    Block::Flush(answer) => {
                        let _ = answer.send(out.flush());
                    }
                }
            }
            Ok(())
        });
        Self {
            tx: Some(tx),
            spare,
            buf: AlignedBuf::with_capacity(WRITE_BLOCK),
            writer: Some(writer),
        }
    }

    fn send(&mut self, block: Block) -> std::io::Result<()> {
        match &self.tx {
            Some(tx) if tx.send(block).is_ok() => Ok(()),
            _ => Err(self.stopped()),
        }
    }

    /// The writer stopped (on an error of `out`): that error, once joined.
    fn stopped(&mut self) -> std::io::Error {
        self.tx = None;
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => std::io::Error::other("the output's writer thread panicked"),
            _ => std::io::Error::other("the output's writer stopped"),
        }
    }

    /// A recycled block holding at least `capacity` bytes, else a new one.
    fn spare_block(&mut self, capacity: usize) -> AlignedBuf {
        self.spare
            .try_recv()
            .ok()
            .filter(|b| b.capacity() >= capacity)
            .unwrap_or_else(|| AlignedBuf::with_capacity(capacity))
    }

    fn send_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self.spare_block(WRITE_BLOCK);
        let full = std::mem::replace(&mut self.buf, next);
        self.send(Block::Data(full))
    }

    /// Takes `block` (bytes to write after everything written so far) to
    /// the writer thread as it is, leaving an empty block of at least its
    /// capacity in its place: `true`. When bytes written before are still
    /// being gathered into a block, leaves it (`false`): then the caller
    /// writes it.
    pub fn take_block(&mut self, block: &mut AlignedBuf) -> std::io::Result<bool> {
        if !self.buf.is_empty() {
            return Ok(false);
        }
        let next = self.spare_block(block.capacity());
        let full = std::mem::replace(block, next);
        self.send(Block::Data(full))?;
        Ok(true)
    }
}

impl Write for WriteBehind<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // blocks of WRITE_BLOCK bytes (a taken block may have come back
        // larger)
        let room = WRITE_BLOCK.saturating_sub(self.buf.len());
        let n = self.buf.extend(&buf[..buf.len().min(room)]);
        if self.buf.len() >= WRITE_BLOCK {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buf()?;
        let (answer, flushed) = sync_channel(1);
        self.send(Block::Flush(answer))?;
        // no answer: the writer stopped on an error before it got there
        flushed.recv().unwrap_or_else(|_| Err(self.stopped()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Writes `data` to `w` in parts of the given sizes, in turn.
    pub(crate) fn write_in_parts(w: &mut impl Write, data: &[u8], sizes: &[usize]) {
        let mut rest = data;
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at((*size).min(rest.len()));
            w.write_all(now).unwrap();
            rest = later;
        }
    }

    /// A writer that fails once it holds `room` bytes.
    struct Full {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.got.len() + buf.len() > self.room {
                return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full"));
            }
            self.got.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_behind_reports_the_outputs_own_error() {
        let data = vec![7u8; 3 * WRITE_BLOCK + 5];
        let err = std::thread::scope(|s| {
            let mut w = WriteBehind::new(
                s,
                Full {
                    got: Vec::new(),
                    room: WRITE_BLOCK + 10,
                },
            );
            w.write_all(&data).and_then(|()| w.flush()).unwrap_err()
        });
        assert_eq!(err.kind(), std::io::ErrorKind::StorageFull, "{err}");
    }

    proptest! {
        /// Whatever the write sizes, what goes through a write-behind
        /// reaches its output whole and in order by the time flush returns.
        #[test]
        fn write_behind_passes_every_byte_in_order_proptest(
            len in 0usize..(3 * WRITE_BLOCK),
            sizes in proptest::collection::vec(1usize..(WRITE_BLOCK + 3000), 1..12),
        ) {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut out = Vec::new();
            std::thread::scope(|s| {
                let mut w = WriteBehind::new(s, &mut out);
                write_in_parts(&mut w, &data, &sizes);
                w.flush().unwrap();
            });
            prop_assert_eq!(out, data);
        }

        /// Writes and taken blocks, mixed in any order and of any sizes,
        /// reach the output whole and in order; a block is taken only when
        /// nothing written before it is still being gathered, and what is
        /// left in its place is empty and as large.
        #[test]
        fn write_behind_passes_taken_blocks_and_writes_in_order_proptest(
            ops in proptest::collection::vec((any::<bool>(), 1usize..(WRITE_BLOCK + 3000)), 1..12),
        ) {
            let mut want = Vec::new();
            let mut out = Vec::new();
            let mut taken = 0;
            std::thread::scope(|s| {
                let mut w = WriteBehind::new(s, &mut out);
                for (i, (take, len)) in ops.iter().enumerate() {
                    let data: Vec<u8> = (0..*len).map(|j| ((i * 7 + j) % 251) as u8).collect();
                    want.extend_from_slice(&data);
                    let mut block = AlignedBuf::with_capacity(len + 16);
                    block.extend(&data);
                    if *take && w.take_block(&mut block).unwrap() {
                        taken += 1;
                        assert!(block.is_empty() && block.capacity() >= len + 16);
                    } else {
                        w.write_all(&data).unwrap();
                    }
                }
                w.flush().unwrap();
            });
            prop_assert!(out == want, "{} bytes of {}", out.len(), want.len());
            let first_taken = ops[0].0;
            prop_assert!(!first_taken || taken > 0, "an empty write-behind refused a block");
        }

        /// Whatever the write sizes, a root check's output and its copies
        /// (in buffers handed back and filled again) are every byte, in order.
        #[test]
        fn root_check_copies_every_byte_in_order_proptest(
            len in 0usize..200_000,
            sizes in proptest::collection::vec(1usize..30_000, 1..12),
        ) {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 % 241) as u8).collect();
            let mut out = Vec::new();
            let (mut tee, mut copies) = RootCheck::new(&mut out);
            let copied = std::thread::scope(|s| {
                let reader = s.spawn(move || {
                    let mut back = Vec::new();
                    copies.read_to_end(&mut back).map(|_| back)
                });
                write_in_parts(&mut tee, &data, &sizes);
                drop(tee);
                reader.join().unwrap()
            });
            prop_assert_eq!(&copied.unwrap(), &data);
            prop_assert_eq!(&out, &data);
        }

        /// Whatever the write sizes, a cut passes on exactly the bytes of
        /// its range (none when the range lies beyond the end).
        #[test]
        fn a_cut_passes_exactly_its_range_proptest(
            data in proptest::collection::vec(any::<u8>(), 0..4096),
            a in 0u64..5000,
            b in 0u64..5000,
            sizes in proptest::collection::vec(1usize..700, 1..20),
        ) {
            let range = a.min(b)..a.max(b);
            let mut out = Vec::new();
            let mut cut = Cut::new(&mut out, range.clone());
            write_in_parts(&mut cut, &data, &sizes);
            let len = data.len() as u64;
            let want = &data[range.start.min(len) as usize..range.end.min(len) as usize];
            prop_assert_eq!(&out[..], want);
        }
    }
}
