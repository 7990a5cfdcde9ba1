//! Data pieces' bytes held in memory for the decoder that follows the
//! fetch. A whole-file get that keeps its output (see [`super::store`])
//! hands each verified block of a data piece to its [`Stage`] instead of
//! its resume file; the decoder copies segments out of the stages and
//! releases what it wrote. A stage is bounded: when it is full (the decoder
//! waits for a slower piece) the block goes to the piece's file at its
//! offset, as before, and the decoder reads it from there. What is still
//! staged when the fetch ends is written to the files, for decoding from
//! parity. So in the common case the data pieces' bytes are written once,
//! to the output, instead of to a resume file, read back and written again.
//!
//! A full stage holds its piece's fetch back ([`Stage::room`]) while the
//! decoder keeps releasing: the fast pieces wait for the slowest instead of
//! running ahead into the file (on two shared cores, whatever one piece
//! gains another loses, and a spilled block is written to the page cache
//! and read back). When the decoder makes no progress for [`HOLD`] (a data
//! piece stalled or gone), blocks spill to the file again until it moves.
//!
//! A data piece's file is then sparse and is not trusted by a later run:
//! an interrupted get keeps the output, which holds what those bytes made,
//! and fetches the data pieces again from where it ends.

use std::collections::VecDeque;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crowd_erasure::PieceSource;

use super::store::PlannedPiece;

/// One data piece's staged blocks: compact offset and bytes, in offset
/// order, not overlapping (a block may be missing between two: it went to
/// the file).
#[derive(Debug)]
pub struct Stage {
    inner: Mutex<Inner>,
    cap: usize,
    /// Signalled when the decoder releases blocks.
    released: tokio::sync::Notify,
}

#[derive(Debug)]
struct Inner {
    blocks: VecDeque<(u64, Vec<u8>)>,
    bytes: usize,
    /// Buffers released by the decoder, for the fetch to fill again.
    spare: Vec<Vec<u8>>,
    /// What the decoder released below, and when it last moved on (or
    /// when the stage was made).
    below: u64,
    released_at: Instant,
    /// A wait for room ran out since then: the decoder is stuck, so the
    /// fetch does not wait again until it releases.
    stuck: bool,
}

/// How long a full stage holds its piece's fetch back without the decoder
/// moving on: longer than the slowest piece's pauses (its first shard after
/// the dial, a busy provider), short against the providers' stall limits.
pub const HOLD: Duration = Duration::from_secs(1);

/// Released buffers kept for reuse per stage.
const SPARE: usize = 4;

impl Stage {
    /// A stage holding at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                blocks: VecDeque::new(),
                bytes: 0,
                spare: Vec::new(),
                below: 0,
                released_at: Instant::now(),
                stuck: false,
            }),
            cap,
            released: tokio::sync::Notify::new(),
        }
    }

    /// Returns once a block of `len` bytes fits, or at once when the
    /// decoder has been stuck (not moved on for [`HOLD`], within this wait
    /// or an earlier one since it last did): then the block goes to the
    /// file. The fetch awaits it before taking more bytes off the wire, so
    /// a piece ahead of the decoder waits for the slowest one.
    pub async fn room(&self, len: usize) {
        let waited_from = Instant::now();
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // registered before the check: a release after it wakes us
            released.as_mut().enable();
            let deadline = {
                let mut inner = self.lock();
                if inner.stuck || inner.bytes + len <= self.cap {
                    return;
                }
                let deadline = inner.released_at.max(waited_from) + HOLD;
                if deadline <= Instant::now() {
                    inner.stuck = true;
                    return;
                }
                deadline
            };
            let _ = tokio::time::timeout_at(deadline.into(), released).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // a panic elsewhere leaves consistent data: blocks are whole
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `block` (compact bytes from `at`, after every block offered
    /// before), or hands it back when full: the caller writes it to the
    /// file.
    pub fn offer(&self, at: u64, block: Vec<u8>) -> Result<(), Vec<u8>> {
        let mut inner = self.lock();
        if inner.bytes + block.len() > self.cap || block.is_empty() {
            return Err(block);
        }
        inner.bytes += block.len();
        inner.blocks.push_back((at, block));
        Ok(())
    }

    /// An empty buffer to fill (a released one when there is one).
    pub fn buffer(&self, capacity: usize) -> Vec<u8> {
        let mut b = self.lock().spare.pop().unwrap_or_default();
        b.clear();
        b.reserve(capacity);
        b
    }

    /// Reads compact bytes `at..at + buf.len()`: the staged parts from the
    /// stage, the rest with `from_file`.
    pub fn read_at(
        &self,
        at: u64,
        buf: &mut [u8],
        mut from_file: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let inner = self.lock();
        let mut pos = at;
        let end = at + buf.len() as u64;
        // the first block that may overlap
        let first = inner.blocks.partition_point(|(o, b)| o + b.len() as u64 <= at);
        let mut blocks = inner.blocks.range(first..).peekable();
        while pos < end {
            match blocks.peek() {
                Some((o, b)) if *o <= pos => {
                    let from = (pos - o) as usize;
                    let n = (b.len() - from).min((end - pos) as usize);
                    let dst = (pos - at) as usize;
                    buf[dst..dst + n].copy_from_slice(&b[from..from + n]);
                    pos += n as u64;
                    blocks.next();
                }
                next => {
                    let upto = next.map_or(end, |(o, _)| (*o).min(end));
                    let dst = (pos - at) as usize;
                    from_file(pos, &mut buf[dst..dst + (upto - pos) as usize])?;
                    pos = upto;
                }
            }
        }
        Ok(())
    }

    /// Drops the blocks wholly below compact offset `below` (written to the
    /// output): the decoder moved on to `below`, which ends a wait for room.
    pub fn release(&self, below: u64) {
        let mut inner = self.lock();
        while let Some((o, b)) = inner.blocks.front() {
            if o + b.len() as u64 > below {
                break;
            }
            if let Some((_, b)) = inner.blocks.pop_front() {
                inner.bytes -= b.len();
                if inner.spare.len() < SPARE {
                    inner.spare.push(b);
                }
            }
        }
        // the decoder moved on (whether or not this stage held what it
        // wrote: a piece that ran ahead holds later blocks)
        if below > inner.below {
            inner.below = below;
            inner.released_at = Instant::now();
            inner.stuck = false;
            drop(inner);
            self.released.notify_waiters();
        }
    }

    /// Takes every staged block (to write to the file).
    pub fn drain(&self) -> Vec<(u64, Vec<u8>)> {
        let mut inner = self.lock();
        inner.bytes = 0;
        inner.blocks.drain(..).collect()
    }
}

/// A data piece as the decoder reads it: staged bytes from its stage, the
/// rest from its file. (Only for whole-file plans, where compact offsets
/// are piece offsets.)
#[derive(Debug)]
pub struct StagedPiece<'s, 'p> {
    pub stage: Option<&'s Stage>,
    pub file: PlannedPiece<'p>,
}

impl PieceSource for StagedPiece<'_, '_> {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self.stage {
            Some(stage) => stage.read_at(offset, buf, |at, part| self.file.read_at(at, part)),
            None => self.file.read_at(offset, buf),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever goes to the stage and whatever is handed back (and so
        /// written to the file), any range below what was offered reads the
        /// piece's bytes, before and after releasing the blocks below it.
        #[test]
        fn staged_and_spilled_blocks_read_back_as_the_piece_proptest(
            sizes in proptest::collection::vec(1usize..5000, 1..40),
            cap in 1usize..20_000,
            reads in proptest::collection::vec((0.0f64..1.0, 0usize..6000), 1..20),
        ) {
            let total: usize = sizes.iter().sum();
            let piece: Vec<u8> = (0..total).map(|i| (i * 7 % 253) as u8).collect();
            let stage = Stage::new(cap);
            let mut file = vec![0u8; total];
            let mut at = 0usize;
            for s in &sizes {
                let mut b = stage.buffer(*s);
                b.extend_from_slice(&piece[at..at + s]);
                if let Err(back) = stage.offer(at as u64, b) {
                    file[at..at + s].copy_from_slice(&back);
                }
                at += s;
            }
            let read_file = |file: &[u8], o: u64, buf: &mut [u8]| -> io::Result<()> {
                buf.copy_from_slice(&file[o as usize..o as usize + buf.len()]);
                Ok(())
            };
            let mut released = 0u64;
            for (share, len) in reads {
                let start = released + ((total as u64 - released) as f64 * share) as u64;
                let len = len.min(total - start as usize);
                let mut buf = vec![0u8; len];
                stage.read_at(start, &mut buf, |o, b| read_file(&file, o, b)).unwrap();
                prop_assert_eq!(&buf[..], &piece[start as usize..start as usize + len]);
                // the decoder moves on: what lies below `start` is released
                stage.release(start);
                released = start;
            }
            // the rest goes to the file: the file then holds every byte
            // from the last release on
            for (o, b) in stage.drain() {
                file[o as usize..o as usize + b.len()].copy_from_slice(&b);
            }
            let from = stage_floor(&sizes, released);
            prop_assert_eq!(&file[from..], &piece[from..]);
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    /// A full stage holds the fetch until the decoder releases a block.
    #[test]
    fn a_full_stage_waits_for_a_release() {
        use futures::FutureExt;
        rt().block_on(async {
            let stage = Stage::new(3000);
            stage.room(1000).now_or_never().expect("room while empty");
            for at in [0u64, 1000, 2000] {
                stage.offer(at, vec![1u8; 1000]).unwrap();
            }
            let waiting = tokio::spawn({
                let stage = std::sync::Arc::new(stage);
                let s2 = stage.clone();
                async move {
                    s2.room(1000).await;
                    stage
                }
            });
            // it waits (a current-thread runtime: it ran up to its wait)
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished(), "a full stage let the fetch go on");
            // no release: the decoder is stuck; after HOLD the wait gives up
            let stage = waiting.await.unwrap();
            assert!(
                stage.room(1000).now_or_never().is_some(),
                "once stuck, the fetch spills without waiting again"
            );
            // the decoder moves on: the next full stage waits again
            stage.release(1000);
            stage.offer(3000, vec![1u8; 1000]).unwrap();
            assert!(
                stage.room(1000).now_or_never().is_none(),
                "a moving decoder is waited for"
            );
            stage.release(2000);
            stage.room(1000).now_or_never().expect("room after a release");
            // a piece that ran ahead: its stage holds only later blocks, and
            // the decoder moving on below them still counts as progress
            let ahead = Stage::new(2000);
            ahead.offer(50_000, vec![1u8; 2000]).unwrap();
            let _ = tokio::time::timeout(HOLD * 2, ahead.room(1000)).await;
            assert!(ahead.room(1000).now_or_never().is_some(), "stuck");
            ahead.release(10_000);
            assert!(
                ahead.room(1000).now_or_never().is_none(),
                "progress below the stage is progress"
            );
        });
    }

    /// A wait ends at the release, not at the hold's end.
    #[test]
    fn a_release_on_another_thread_ends_the_wait() {
        let stage = std::sync::Arc::new(Stage::new(2000));
        stage.offer(0, vec![1u8; 2000]).unwrap();
        let rt = rt();
        let (tx, rx) = std::sync::mpsc::channel();
        let decoder = std::thread::spawn({
            let stage = stage.clone();
            move || {
                // releases once the fetch side is waiting
                rx.recv().unwrap();
                stage.release(2000);
            }
        });
        let waited = rt.block_on(async {
            let wait = stage.room(1000);
            tokio::pin!(wait);
            assert!(futures::poll!(wait.as_mut()).is_pending());
            tx.send(()).unwrap();
            wait.await;
            stage.lock().stuck
        });
        decoder.join().unwrap();
        assert!(!waited, "the wait ended by the release, not by giving up");
    }

    /// The start of the block holding `released` (blocks straddling it
    /// were kept, so the file holds everything from there once drained).
    fn stage_floor(sizes: &[usize], released: u64) -> usize {
        let mut at = 0usize;
        for s in sizes {
            if (at + s) as u64 > released {
                return at;
            }
            at += s;
        }
        at
    }
}
