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
//! No piece of such a get runs more than a stage ahead of the decoder while
//! the decoder moves on ([`Pace`]): the fast pieces (and the spare) wait for
//! the slowest instead of running ahead into their files (on two shared
//! cores, whatever one piece gains another loses, and a spilled block is
//! written to the page cache and read back). When the decoder has not moved
//! on for [`HOLD`] (a data piece stalled or gone), they run free and blocks
//! spill to the files again until it does.
//!
//! A data piece's file is then sparse and is not trusted by a later run:
//! an interrupted get keeps the output, which holds what those bytes made,
//! and fetches the data pieces again from where it ends.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crowd_erasure::{Lent, PieceSource};

use super::store::PlannedPiece;

/// One data piece's staged blocks: compact offset and bytes, in offset
/// order, not overlapping (a block may be missing between two: it went to
/// the file).
#[derive(Debug)]
pub struct Stage {
    inner: Mutex<Inner>,
    cap: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// Shared: the decoder writes from a block it borrowed ([`Stage::lend`])
    /// without holding the lock.
    blocks: VecDeque<(u64, Arc<Vec<u8>>)>,
    bytes: usize,
    /// Buffers released by the decoder, for the fetch to fill again.
    spare: Vec<Vec<u8>>,
}

impl Inner {
    /// Compact bytes `at..end` in order: the staged parts (a block and the
    /// range of it) and the gaps between them (which went to the file).
    fn parts(&self, at: u64, end: u64) -> impl Iterator<Item = Part<'_>> {
        let first = self.blocks.partition_point(|(o, b)| o + b.len() as u64 <= at);
        let mut blocks = self.blocks.range(first..).peekable();
        let mut pos = at;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            match blocks.peek() {
                Some((o, b)) if *o <= pos => {
                    let from = (pos - o) as usize;
                    let n = (b.len() - from).min((end - pos) as usize);
                    pos += n as u64;
                    let part = Part::Staged(b, from..from + n);
                    blocks.next();
                    Some(part)
                }
                next => {
                    let upto = next.map_or(end, |(o, _)| (*o).min(end));
                    let gap = pos..upto;
                    pos = upto;
                    Some(Part::Gap(gap))
                }
            }
        })
    }
}

/// A part of a range of a stage's piece ([`Inner::parts`]).
enum Part<'a> {
    Staged(&'a Arc<Vec<u8>>, std::ops::Range<usize>),
    Gap(std::ops::Range<u64>),
}

/// A stage holds this much more than its piece may run ahead of the
/// decoder ([`Pace`]): the block being filled (a little over 1 MiB), one
/// straddling the decoder's position, and one more.
pub const STAGE_SLACK: usize = 3 << 20;

/// How long a piece is held back without the decoder moving on: longer
/// than the slowest piece's pauses (its first shard after the dial, a busy
/// provider), short against the providers' stall limits.
pub const HOLD: Duration = Duration::from_secs(1);

/// How far the pieces of a staged get may run ahead of the decoder, and
/// the wait that holds them there.
#[derive(Debug)]
pub struct Pace {
    inner: Mutex<PaceInner>,
    ahead: u64,
    /// Signalled when the decoder moves on.
    moved: tokio::sync::Notify,
}

#[derive(Debug)]
struct PaceInner {
    /// The decoder wrote every segment below this piece offset; when it
    /// last moved on (or when the pace was made).
    below: u64,
    moved_at: Instant,
    /// A wait ran out since then (or the decoder stopped): the pieces run
    /// free until it moves on.
    stuck: bool,
    stopped: bool,
}

impl Pace {
    /// Pieces at most `ahead` bytes ahead of the decoder.
    pub fn new(ahead: u64) -> Self {
        Self {
            inner: Mutex::new(PaceInner {
                below: 0,
                moved_at: Instant::now(),
                stuck: false,
                stopped: false,
            }),
            ahead,
            moved: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PaceInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a piece at `at` may take `len` more bytes now.
    fn free(&self, inner: &PaceInner, at: u64, len: u64) -> bool {
        inner.stuck || inner.stopped || at + len <= inner.below + self.ahead
    }

    /// The decoder has written everything below piece offset `below` (it
    /// starts there, or moved on to there).
    pub fn advance(&self, below: u64) {
        let mut inner = self.lock();
        if below > inner.below {
            inner.below = below;
            inner.moved_at = Instant::now();
            inner.stuck = false;
            drop(inner);
            self.moved.notify_waiters();
        }
    }

    /// The decoder is done (or gave up): nothing waits for it any more.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.moved.notify_waiters();
    }

    /// Returns once a piece at offset `at` may take `len` more bytes
    /// (`at + len` within `ahead` of the decoder), or at once when the
    /// decoder has been stuck (not moved on for [`HOLD`], within this wait
    /// or an earlier one since it last did) or stopped. A piece's fetch
    /// awaits it before taking more off the wire.
    pub async fn room(&self, at: u64, len: u64) {
        // the common case, checked without registering for a wake-up
        if self.free(&self.lock(), at, len) {
            return;
        }
        let waited_from = Instant::now();
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            // registered before the check: a move after it wakes us
            moved.as_mut().enable();
            let deadline = {
                let mut inner = self.lock();
                if self.free(&inner, at, len) {
                    return;
                }
                let deadline = inner.moved_at.max(waited_from) + HOLD;
                if deadline <= Instant::now() {
                    inner.stuck = true;
                    return;
                }
                deadline
            };
            let _ = tokio::time::timeout_at(deadline.into(), moved).await;
        }
    }
}

/// Released buffers kept for reuse per stage.
const SPARE: usize = 4;

impl Stage {
    /// A stage holding at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            cap,
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
        inner.blocks.push_back((at, Arc::new(block)));
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
        let mut dst = 0;
        for part in inner.parts(at, at + buf.len() as u64) {
            match part {
                Part::Staged(block, range) => {
                    buf[dst..dst + range.len()].copy_from_slice(&block[range.clone()]);
                    dst += range.len();
                }
                Part::Gap(gap) => {
                    let n = (gap.end - gap.start) as usize;
                    from_file(gap.start, &mut buf[dst..dst + n])?;
                    dst += n;
                }
            }
        }
        Ok(())
    }

    /// Compact bytes `at..at + len`, when every one of them is staged:
    /// the blocks holding them, shared, for the decoder to write out
    /// without holding the stage.
    pub fn lend(&self, at: u64, len: usize) -> Option<Lent> {
        let end = at.checked_add(len as u64)?;
        let inner = self.lock();
        let mut lent = Lent::default();
        for part in inner.parts(at, end) {
            let pushed = match part {
                Part::Staged(block, range) => lent.push(block.clone(), range),
                // a gap: that part went to the file
                Part::Gap(_) => false,
            };
            if !pushed {
                return None;
            }
        }
        Some(lent)
    }

    /// Drops the blocks wholly below compact offset `below` (written to the
    /// output).
    pub fn release(&self, below: u64) {
        let mut inner = self.lock();
        while let Some((o, b)) = inner.blocks.front() {
            if o + b.len() as u64 > below {
                break;
            }
            if let Some((_, b)) = inner.blocks.pop_front() {
                inner.bytes -= b.len();
                // a block the decoder still borrows is not reused
                if let (true, Ok(b)) = (inner.spare.len() < SPARE, Arc::try_unwrap(b)) {
                    inner.spare.push(b);
                }
            }
        }
    }

    /// Takes every staged block (to write to the file).
    pub fn drain(&self) -> Vec<(u64, Vec<u8>)> {
        let mut inner = self.lock();
        inner.bytes = 0;
        inner
            .blocks
            .drain(..)
            .map(|(o, b)| (o, Arc::unwrap_or_clone(b)))
            .collect()
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

    fn lend(&self, offset: u64, len: usize) -> Option<Lent> {
        self.stage?.lend(offset, len)
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
                // lent only when all of it is staged, then the same bytes
                let staged = |o: u64| stage.lock().blocks.iter().any(|(at, b)| (*at..*at + b.len() as u64).contains(&o));
                match stage.lend(start, len) {
                    Some(lent) => {
                        let bytes: Vec<u8> = lent.slices().flatten().copied().collect();
                        prop_assert_eq!(&bytes[..], &piece[start as usize..start as usize + len]);
                    }
                    None => prop_assert!((start..start + len as u64).any(|o| !staged(o)), "staged but not lent"),
                }
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

    /// A piece ahead of the decoder waits until the decoder moves on; a
    /// decoder that does not move for HOLD lets every piece run free until
    /// it moves again.
    #[test]
    fn a_piece_ahead_waits_for_the_decoder() {
        use futures::FutureExt;
        rt().block_on(async {
            let pace = std::sync::Arc::new(Pace::new(3000));
            pace.room(0, 1000).now_or_never().expect("room at the start");
            pace.room(2000, 1000).now_or_never().expect("room up to `ahead`");
            let waiting = tokio::spawn({
                let pace = pace.clone();
                async move { pace.room(2500, 1000).await }
            });
            // it waits (a current-thread runtime: it ran up to its wait)
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished(), "a piece ahead went on");
            // the decoder does not move: after HOLD the wait gives up
            waiting.await.unwrap();
            assert!(
                pace.room(9000, 1000).now_or_never().is_some(),
                "once stuck, pieces run free without waiting again"
            );
            // the decoder moves on: a piece ahead waits again
            pace.advance(1000);
            assert!(
                pace.room(4000, 1000).now_or_never().is_none(),
                "a moving decoder is waited for"
            );
            pace.room(3000, 1000).now_or_never().expect("room after the move");
            // once the decoder stops, nothing waits
            pace.stop();
            pace.room(1 << 40, 1000).now_or_never().expect("stopped");
        });
    }

    /// A wait ends when the decoder moves on, not when the hold runs out.
    #[test]
    fn a_move_on_another_thread_ends_the_wait() {
        let pace = std::sync::Arc::new(Pace::new(2000));
        let (tx, rx) = std::sync::mpsc::channel();
        let decoder = std::thread::spawn({
            let pace = pace.clone();
            move || {
                // moves on once the fetch side is waiting
                rx.recv().unwrap();
                pace.advance(2000);
            }
        });
        let stuck = rt().block_on(async {
            let wait = pace.room(2000, 1000);
            tokio::pin!(wait);
            assert!(futures::poll!(wait.as_mut()).is_pending());
            tx.send(()).unwrap();
            wait.await;
            pace.lock().stuck
        });
        decoder.join().unwrap();
        assert!(!stuck, "the wait ended by the move, not by giving up");
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
