//! Fetching `k` pieces in parallel: start `k + 1` (cheapest first, data
//! before parity), start another whenever one fails, stalls, turns out
//! corrupt or falls far behind the others, and cancel the rest once `k` are
//! complete. Every byte written is verified in transit
//! ([`crowd_protocol::transfer::fetch`]); pieces stream into the resume
//! directory (data pieces behind a kept output into bounded in-memory
//! stages first), so memory is one write buffer per running fetch plus the
//! stages. [`Landed`] tells a decoder running alongside how far each piece
//! has landed in this run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::progress::Progress;
use anyhow::{anyhow, bail, Context, Result};
use crowd_protocol::libp2p::{Multiaddr, PeerId};
use crowd_protocol::{Manifest, Network, PieceId};
use tokio::task::JoinSet;

use super::plan::{piece_order, PieceRanges};
use super::stage::{Pace, Stage, STAGE_SLACK};
use super::store::ResumeDir;

/// A retrieval's network side, independent of how the manifest and the
/// provider addresses were found.
#[derive(Debug)]
pub struct FetchJob<'a> {
    pub manifest: &'a Manifest,
    pub plan: &'a PieceRanges,
    pub dir: &'a ResumeDir,
    /// Known addresses of providers (from the tracker); others are dialled
    /// with whatever the swarm knows.
    pub addrs: &'a HashMap<PeerId, Vec<Multiaddr>>,
    /// A transfer making no progress for this long is abandoned.
    pub stall: Duration,
    /// Whether the plan is whole pieces: resumed bytes are then re-checked
    /// against the piece hash once complete.
    pub whole: bool,
    pub progress: &'a Progress,
    /// Where to publish each piece's written length, for a decoder that
    /// runs while the fetch goes on.
    pub landed: Option<Landed>,
    /// `Some(c)`: the output is kept from run to run (see [`super::store`])
    /// and already holds what the data pieces' first `c` compact bytes
    /// make. Data pieces are then fetched from `c`, their files (sparse:
    /// bytes go to the decoder through [`Landed`]'s stages, and punched
    /// behind the output) are not trusted from run to run nor re-hashed;
    /// what they add is checked with the rest of the file (the root check,
    /// or every segment's tag).
    pub kept: Option<u64>,
}

impl FetchJob<'_> {
    /// Whether piece `i` is a data piece behind a kept output (see `kept`).
    fn kept_data(&self, i: usize) -> bool {
        self.kept.is_some() && i < self.manifest.layout.params().data_shards()
    }
}

/// Per piece, how many compact bytes were fetched and verified in this run
/// and landed (written to its file or handed to its stage, not just
/// buffered); and whether
/// the fetch is over. Pieces resumed from an earlier run are not published
/// (their bytes are re-checked only once complete) and stay at zero, except
/// data pieces behind a kept output (`FetchJob::kept`), which are not
/// re-hashed and are followed like the others. With stages, the data
/// pieces' bytes are handed to the decoder in memory ([`super::stage`]).
#[derive(Debug, Clone)]
pub struct Landed(Arc<LandedInner>);

#[derive(Debug)]
struct LandedInner {
    pieces: Vec<AtomicU64>,
    finished: std::sync::atomic::AtomicBool,
    /// One per data piece, or none.
    stages: Vec<Stage>,
    /// With stages: how far any piece may run ahead of the decoder.
    pace: Option<Pace>,
}

impl Landed {
    pub fn new(pieces: usize) -> Self {
        Self::staged(pieces, 0, 0)
    }

    /// As [`Landed::new`], with a [`Stage`] for each of the first `data`
    /// pieces, and every piece held within `ahead` bytes of the decoder
    /// ([`Pace`]).
    pub fn staged(pieces: usize, data: usize, ahead: usize) -> Self {
        Self(Arc::new(LandedInner {
            pieces: (0..pieces).map(|_| AtomicU64::new(0)).collect(),
            finished: false.into(),
            stages: (0..data).map(|_| Stage::new(ahead + STAGE_SLACK)).collect(),
            pace: (data > 0).then(|| Pace::new(ahead as u64)),
        }))
    }

    /// The decoder's pace, when the pieces follow it.
    pub fn pace(&self) -> Option<&Pace> {
        self.0.pace.as_ref()
    }

    /// Piece `i`'s stage, if it has one.
    pub fn stage(&self, i: usize) -> Option<&Stage> {
        self.0.stages.get(i)
    }

    /// Bytes of piece `i` landed (0 for an unknown piece).
    pub fn get(&self, i: usize) -> u64 {
        self.0.pieces.get(i).map_or(0, |a| a.load(Ordering::Acquire))
    }

    pub(super) fn set(&self, i: usize, len: u64) {
        if let Some(a) = self.0.pieces.get(i) {
            a.store(len, Ordering::Release);
        }
    }

    /// The fetch is over (done or failed): nothing more will land.
    pub fn finish(&self) {
        self.0.finished.store(true, Ordering::Release);
    }

    pub fn finished(&self) -> bool {
        self.0.finished.load(Ordering::Acquire)
    }
}

/// A piece that could not be fetched.
#[derive(Debug, Clone)]
pub struct Failure {
    pub piece: usize,
    pub provider: PeerId,
    pub error: String,
}

#[derive(Debug)]
pub struct Fetched {
    /// Complete pieces (at least `k`), in index order.
    pub complete: Vec<usize>,
    pub failures: Vec<Failure>,
}

/// Each piece is tried at most this often: a retry (once every piece was
/// tried) resumes a transfer that broke off, never a provider that sent
/// nothing.
const MAX_ATTEMPTS: u32 = 2;
/// A running piece is "far behind" below this share of the median progress.
const BEHIND: f64 = 0.5;
/// A piece held back by the decoder this share of its time is not behind:
/// the decoder (or the machine) is the bottleneck, not its provider.
const HELD_BUSY: f64 = 0.25;
/// No piece is judged slow before this.
const GRACE: Duration = Duration::from_secs(2);
/// Once every running piece has run this long and none is far behind, the
/// spare beyond `k` is dropped: the slowest, parity before data unless a
/// data piece is clearly slower (fetching it all would cost the providers
/// and this machine a piece's worth of bandwidth for nothing).
const DROP_AFTER: Duration = Duration::from_millis(750);
/// How much slower a data piece must be to be dropped instead of a parity
/// piece (decoding from data pieces is a copy, from parity a rebuild).
const DATA_PREFERENCE: f64 = 0.8;
/// The same, between pieces held to the decoder's pace: the data piece the
/// others wait for was held least, so its rate reads lower than theirs
/// even at the same speed.
const PACED_DATA_PREFERENCE: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    /// Cancelled as a spare; may be started again (resuming) if needed.
    Dropped,
    Done,
    Failed,
}

struct Piece {
    provider: PeerId,
    id: PieceId,
    state: State,
    attempts: u32,
    /// Compact bytes held (resumed + fetched), shared with the running task.
    have: Arc<AtomicU64>,
    /// Bytes held when this get started (need re-checking when whole).
    resumed: bool,
    started: Option<Instant>,
    start_have: u64,
    /// Nanoseconds its task spent held back by the decoder (a piece ahead
    /// of the others, [`Pace::room`]), in all and when it started: its pace
    /// is judged by the time it was let run.
    held: Arc<AtomicU64>,
    start_held: u64,
    /// The running (or dropped) task's handle.
    task: Option<tokio::task::AbortHandle>,
}

/// Fetches at least `k` complete pieces into `job.dir`.
pub async fn fetch_pieces(net: &Network, job: &FetchJob<'_>) -> Result<Fetched> {
    let layout = &job.manifest.layout;
    let k = layout.params().data_shards();
    let n = layout.params().total_shards();
    let total = job.plan.total();
    let piece_len = layout.piece_len();
    let mut pieces: Vec<Option<Piece>> = (0..n).map(|_| None).collect();
    for p in &job.manifest.pieces {
        let i = usize::try_from(p.index).unwrap_or(usize::MAX);
        let (Some(slot), Ok(provider)) = (pieces.get_mut(i), p.provider.parse::<PeerId>()) else {
            continue;
        };
        let id = PieceId(*layout.pieces()[i].hash.as_bytes());
        let held = match job.kept {
            // what the file held is not trusted: fetched again from `c`
            Some(c) if i < k => {
                job.dir.append(i, c)?;
                if let Some(l) = &job.landed {
                    l.set(i, c);
                }
                c
            }
            _ => job.plan.resume_at(job.dir.have(i)),
        };
        *slot = Some(Piece {
            provider,
            id,
            state: State::Waiting,
            attempts: 0,
            have: Arc::new(AtomicU64::new(held)),
            resumed: held > 0,
            started: None,
            start_have: held,
            held: Arc::new(AtomicU64::new(0)),
            start_held: 0,
            task: None,
        });
    }
    let mut failures = Vec::new();
    // pieces already complete from an earlier run
    for (i, slot) in pieces.iter_mut().enumerate() {
        let Some(p) = slot else { continue };
        if p.have.load(Ordering::Relaxed) == total {
            if job.whole && !job.kept_data(i) && !check_whole(job, i, piece_len)? {
                p.have.store(0, Ordering::Relaxed);
                p.resumed = false;
                p.start_have = 0;
                continue;
            }
            p.state = State::Done;
        }
    }
    if let (true, Some(l)) = (job.kept.is_some(), &job.landed) {
        for (i, p) in pieces.iter().enumerate().take(k) {
            if p.as_ref().is_some_and(|p| p.state == State::Done) {
                l.set(i, total);
            }
        }
    }
    let remaining: Vec<Option<u64>> = pieces
        .iter()
        .map(|p| p.as_ref().map(|p| total - p.have.load(Ordering::Relaxed)))
        .collect();
    let order = piece_order(k, &remaining);
    job.progress.set_length(total.saturating_mul(k as u64));

    let mut running: JoinSet<(usize, Result<()>)> = JoinSet::new();
    // A spare piece runs from the start, unless the pieces follow the
    // decoder's pace: then every piece moves at the slowest data piece's
    // pace, a spare would only be held back with them, and one starts when
    // a piece falls far behind (judged by the time it was let run).
    let paced = job.landed.as_ref().is_some_and(|l| l.pace().is_some());
    let base_spare = usize::from(!paced);
    let mut spare = base_spare; // pieces running beyond what is needed
    let mut dropped = false; // the first spare was dropped
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        let done = pieces.iter().flatten().filter(|p| p.state == State::Done).count();
        if done >= k {
            break;
        }
        // start pieces until k (+ spares) are done or running
        while done + active_now(&pieces) < k + spare {
            let next = order
                .iter()
                .copied()
                .find(|&i| pieces[i].as_ref().is_some_and(|p| p.state == State::Waiting))
                .or_else(|| {
                    // a dropped spare resumes, once its old task is gone
                    order.iter().copied().find(|&i| {
                        pieces[i].as_ref().is_some_and(|p| {
                            p.state == State::Dropped && p.task.as_ref().is_none_or(|t| t.is_finished())
                        })
                    })
                })
                .or_else(|| {
                    // every piece tried: retry failed ones, which resume
                    order.iter().copied().find(|&i| {
                        pieces[i]
                            .as_ref()
                            .is_some_and(|p| p.state == State::Failed && p.attempts < MAX_ATTEMPTS)
                    })
                });
            let Some(i) = next else { break };
            let Some(p) = pieces[i].as_mut() else { break };
            p.state = State::Running;
            p.attempts += 1;
            p.started = Some(Instant::now());
            // a data piece behind a kept output goes on from what landed
            // (staged or written; bytes delivered again are skipped), any
            // other from what its file kept (a failed attempt flushed its
            // verified bytes)
            let kept_data = job.kept_data(i);
            let (held, skip_until, file) = match (&job.landed, job.kept) {
                (Some(l), Some(c)) if kept_data => {
                    let landed = l.get(i).max(c);
                    (job.plan.resume_at(landed), landed, job.dir.open_piece(i)?)
                }
                _ => {
                    let held = job.plan.resume_at(job.dir.have(i));
                    (held, held, job.dir.append(i, held)?)
                }
            };
            p.start_have = held;
            p.have.store(held, Ordering::Relaxed);
            p.start_held = p.held.load(Ordering::Relaxed);
            let landed = match &job.landed {
                // a resumed data piece behind a kept output is not
                // re-hashed (see `kept`), so the decoder may follow it too
                Some(l) if !p.resumed || kept_data => {
                    if !kept_data {
                        l.set(i, held);
                    }
                    Some((l.clone(), i))
                }
                _ => None,
            };
            let task = PieceTask {
                net: net.clone(),
                provider: p.provider,
                addrs: job.addrs.get(&p.provider).cloned().unwrap_or_default(),
                id: p.id,
                piece_len,
                ranges: job.plan.remaining(held),
                file,
                start: held,
                skip_until,
                landed,
                stall: job.stall,
                have: p.have.clone(),
                held: p.held.clone(),
            };
            p.task = Some(running.spawn(async move { (i, task.run().await) }));
        }
        let dropping = pieces
            .iter()
            .flatten()
            .any(|p| p.state == State::Dropped && p.task.as_ref().is_some_and(|t| !t.is_finished()));
        if active_now(&pieces) == 0 && !dropping {
            let first: Vec<String> = failures
                .iter()
                .take(2)
                .map(|f: &Failure| format!("piece {} from {}: {}", f.piece, f.provider, f.error))
                .collect();
            bail!(
                "only {done} of the {k} pieces needed could be fetched: {}",
                if first.is_empty() {
                    "no provider holds the others".to_string()
                } else {
                    first.join("; ")
                }
            );
        }
        tokio::select! {
            joined = running.join_next() => {
                let Some(joined) = joined else { continue };
                let (i, result) = match joined {
                    Ok(r) => r,
                    // a dropped spare: already accounted for
                    Err(e) if e.is_cancelled() => continue,
                    Err(e) => bail!("fetch task failed: {e}"),
                };
                let Some(p) = pieces[i].as_mut() else { continue };
                if p.state == State::Dropped {
                    // cancelled too late: it finished anyway
                    if result.is_ok() {
                        p.state = State::Done;
                    }
                    continue;
                }
                match result {
                    Ok(()) if job.whole && p.resumed && !job.kept_data(i) && !check_whole(job, i, piece_len)? => {
                        p.have.store(0, Ordering::Relaxed);
                        p.resumed = false;
                        p.state = State::Failed;
                        failures.push(Failure {
                            piece: i,
                            provider: p.provider,
                            error: "resumed bytes did not match the piece hash; dropped".into(),
                        });
                    }
                    Ok(()) => p.state = State::Done,
                    Err(e) => {
                        p.state = State::Failed;
                        // only a piece that was coming along is worth another try
                        if p.have.load(Ordering::Relaxed) <= p.start_have {
                            p.attempts = MAX_ATTEMPTS;
                        }
                        failures.push(Failure {
                            piece: i,
                            provider: p.provider,
                            error: shorten(&one_line(&format!("{e:#}"))),
                        });
                    }
                }
            }
            _ = tick.tick() => {
                let held: u64 = pieces.iter().flatten().map(|p| p.have.load(Ordering::Relaxed)).sum();
                job.progress.set_position(held.min(total.saturating_mul(k as u64)));
                let behind = far_behind(&pieces);
                spare = if dropped {
                    behind.min(n - k)
                } else {
                    spare.max((base_spare + behind).min(n - k))
                };
                if !dropped && behind == 0 && active_now(&pieces) > k {
                    if let Some(i) = spare_to_drop(&pieces, k, paced) {
                        if let Some(p) = pieces[i].as_mut() {
                            if let Some(t) = &p.task {
                                t.abort();
                            }
                            p.state = State::Dropped;
                            p.attempts = p.attempts.saturating_sub(1);
                        }
                        dropped = true;
                        spare = 0;
                    }
                }
            }
        }
    }
    running.abort_all();
    while running.join_next().await.is_some() {}
    let complete: Vec<usize> = (0..n)
        .filter(|&i| pieces[i].as_ref().is_some_and(|p| p.state == State::Done))
        .collect();
    job.progress.set_position(total.saturating_mul(k as u64));
    Ok(Fetched { complete, failures })
}

impl Piece {
    fn held_nanos(&self) -> u64 {
        self.held.load(Ordering::Relaxed).saturating_sub(self.start_held)
    }

    /// The share of the `ran` since it started that it was held back.
    fn held_share(&self, ran: Duration) -> f64 {
        self.held_nanos() as f64 / ran.as_nanos().max(1) as f64
    }

    /// Bytes per second fetched in the `ran` since it started, less the
    /// time it was held back.
    fn rate(&self, ran: Duration) -> f64 {
        let held = self.held_nanos();
        let active = ran
            .saturating_sub(Duration::from_nanos(held))
            .max(Duration::from_millis(1));
        self.have.load(Ordering::Relaxed).saturating_sub(self.start_have) as f64 / active.as_secs_f64()
    }
}

fn active_now(pieces: &[Option<Piece>]) -> usize {
    pieces
        .iter()
        .flatten()
        .filter(|p| p.state == State::Running)
        .count()
}

/// How many running pieces progress at under half the median rate (after a
/// grace period): as many more are started alongside them. A piece that
/// was held back by the decoder for a [`HELD_BUSY`] share of its time is
/// not one it waits for, whatever its rate.
fn far_behind(pieces: &[Option<Piece>]) -> usize {
    let now = Instant::now();
    let mut rates: Vec<(f64, f64)> = pieces
        .iter()
        .flatten()
        .filter(|p| p.state == State::Running)
        .filter_map(|p| {
            let t = now.duration_since(p.started?);
            (t >= GRACE).then(|| (p.rate(t), p.held_share(t)))
        })
        .collect();
    if rates.len() < 2 {
        return 0;
    }
    rates.sort_by(|a, b| a.0.total_cmp(&b.0));
    let median = rates[rates.len() / 2].0;
    rates
        .iter()
        .filter(|&&(r, held)| r < median * BEHIND && held < HELD_BUSY)
        .count()
}

/// The running piece to cancel as a spare, once all have run for
/// [`DROP_AFTER`]: the slowest, a data piece only when clearly slower than
/// the slowest parity piece (by [`DATA_PREFERENCE`], or
/// [`PACED_DATA_PREFERENCE`] when the pieces follow the decoder's pace).
fn spare_to_drop(pieces: &[Option<Piece>], k: usize, paced: bool) -> Option<usize> {
    let preference = if paced {
        PACED_DATA_PREFERENCE
    } else {
        DATA_PREFERENCE
    };
    let now = Instant::now();
    let mut rates = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        let Some(p) = p.as_ref().filter(|p| p.state == State::Running) else {
            continue;
        };
        let t = now.duration_since(p.started?);
        if t < DROP_AFTER {
            return None;
        }
        let rate = p.rate(t);
        let weighted = if i < k { rate } else { rate * preference };
        rates.push((weighted, i));
    }
    rates
        .into_iter()
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, i)| i)
}

/// Re-hashes a complete piece resumed from an earlier run; a mismatch
/// drops its file.
fn check_whole(job: &FetchJob<'_>, i: usize, piece_len: u64) -> Result<bool> {
    let source = job.dir.source(i, job.plan, piece_len)?;
    if crowd_erasure::verify_piece(&job.manifest.layout, i, &source).is_ok() {
        return Ok(true);
    }
    job.dir.reset(i)?;
    Ok(false)
}

pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Longest description of one failure in an error line.
const MAX_FAILURE_TEXT: usize = 200;

/// The innermost error's text, shortened: libp2p dial errors repeat
/// themselves per address and per layer.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    shorten(&one_line(&inner.to_string()))
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(MAX_FAILURE_TEXT) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// One piece's fetch: dial, then stream the remaining ranges into its file.
struct PieceTask {
    net: Network,
    provider: PeerId,
    addrs: Vec<Multiaddr>,
    id: PieceId,
    piece_len: u64,
    ranges: Vec<std::ops::Range<u64>>,
    file: std::fs::File,
    /// Compact offset the fetch starts at.
    start: u64,
    /// Bytes before this offset already landed: skipped.
    skip_until: u64,
    /// Where to publish the written length, and this piece's index.
    landed: Option<(Landed, usize)>,
    stall: Duration,
    have: Arc<AtomicU64>,
    held: Arc<AtomicU64>,
}

/// Bytes buffered per running fetch before they are written.
const WRITE_BUF: usize = 1 << 20;

/// A piece's writer: buffers, hands full buffers to the piece's stage (if
/// it has one and there is room) or writes them to its file at their
/// offset, and publishes what landed.
struct PieceWriter {
    file: std::fs::File,
    buf: Vec<u8>,
    /// Compact offset of `buf`'s first byte.
    written: u64,
    skip_until: u64,
    landed: Option<(Landed, usize)>,
}

impl PieceWriter {
    fn push(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        if self.buf.is_empty() && self.written < self.skip_until {
            let skip = usize::try_from(self.skip_until - self.written)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            bytes = &bytes[skip..];
            self.written += skip as u64;
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= WRITE_BUF {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.buf.is_empty() {
            return Ok(());
        }
        let len = self.buf.len() as u64;
        match self.landed.as_ref().and_then(|(l, i)| l.stage(*i)) {
            Some(stage) => {
                let full = std::mem::replace(&mut self.buf, stage.buffer(WRITE_BUF));
                if let Err(back) = stage.offer(self.written, full) {
                    // the stage is full: this block goes to the file
                    self.file.write_all_at(&back, self.written)?;
                }
            }
            None => {
                self.file.write_all_at(&self.buf, self.written)?;
                self.buf.clear();
            }
        }
        self.written += len;
        if let Some((l, i)) = &self.landed {
            l.set(*i, self.written);
        }
        Ok(())
    }
}

impl PieceTask {
    async fn run(self) -> Result<()> {
        let dial = tokio::time::timeout(self.stall, self.net.dial(self.provider, self.addrs.clone()))
            .await
            .map_err(|_| anyhow!("cannot reach the provider in {:?}", self.stall))?;
        dial.map_err(|e| anyhow!(root_cause(&e)).context("cannot reach the provider"))?;
        let mut out = PieceWriter {
            file: self.file,
            buf: Vec::with_capacity(WRITE_BUF),
            written: self.start,
            skip_until: self.skip_until,
            landed: self.landed.clone(),
        };
        let mut streams = self.net.streams();
        let have = &self.have;
        // a piece ahead of the decoder waits for it
        let landed = self.landed;
        let held = &self.held;
        let room = || {
            let pace = landed.as_ref().and_then(|(l, _)| l.pace());
            async move {
                if let Some(pace) = pace {
                    let from = Instant::now();
                    pace.room(have.load(Ordering::Relaxed), WRITE_BUF as u64).await;
                    let waited = u64::try_from(from.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    held.fetch_add(waited, Ordering::Relaxed);
                }
            }
        };
        let mut result = Ok(());
        for r in self.ranges {
            let fetched = crowd_protocol::transfer::fetch_paced(
                &mut streams,
                self.provider,
                self.id,
                self.piece_len,
                r,
                self.stall,
                room,
                |bytes| {
                    out.push(bytes)?;
                    have.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    Ok(())
                },
            )
            .await;
            if let Err(e) = fetched {
                // its Display already holds its source: no `{:#}` repetition
                result = Err(anyhow!("{e}"));
                break;
            }
        }
        // keep every verified byte, even after an error
        out.flush().context("writing a piece file")?;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(have: u64, ran: Duration) -> Option<Piece> {
        Some(Piece {
            provider: PeerId::random(),
            id: PieceId([0; 32]),
            state: State::Running,
            attempts: 1,
            have: Arc::new(AtomicU64::new(have)),
            resumed: false,
            started: Instant::now().checked_sub(ran),
            start_have: 0,
            held: Arc::new(AtomicU64::new(0)),
            start_held: 0,
            task: None,
        })
    }

    #[test]
    fn the_spare_dropped_is_the_slowest_parity_unless_a_data_piece_lags_clearly() {
        let s = Duration::from_secs(1);
        // k = 2: data 0 and 1, parity 2 and 3 (3 not running)
        let even = [running(100, s), running(100, s), running(100, s), None];
        assert_eq!(
            spare_to_drop(&even, 2, false),
            Some(2),
            "same pace: the parity piece"
        );
        let data_a_bit_slower = [running(90, s), running(100, s), running(100, s), None];
        assert_eq!(spare_to_drop(&data_a_bit_slower, 2, false), Some(2));
        let data_far_slower = [running(50, s), running(100, s), running(100, s), None];
        assert_eq!(spare_to_drop(&data_far_slower, 2, false), Some(0));
        // not before every running piece had its time
        let young = [
            running(100, s),
            running(100, s),
            running(100, Duration::from_millis(10)),
            None,
        ];
        assert_eq!(spare_to_drop(&young, 2, false), None);
        // done and failed pieces are not candidates
        let mut with_done = [running(100, s), running(100, s), running(10, s), running(100, s)];
        if let Some(p) = with_done[2].as_mut() {
            p.state = State::Done;
        }
        assert_eq!(spare_to_drop(&with_done, 2, false), Some(3));
        // a data piece held back by the decoder half its time is judged by
        // the other half: not slow, and not dropped or doubled up
        let held = [running(50, s), running(100, s), running(100, s), None];
        if let Some(p) = held[0].as_ref() {
            p.held.store(500_000_000, Ordering::Relaxed);
        }
        assert_eq!(spare_to_drop(&held, 2, false), Some(2));
        // between paced pieces a data piece must be twice as slow
        let data_slower = [running(60, s), running(100, s), running(100, s), None];
        assert_eq!(spare_to_drop(&data_slower, 2, false), Some(0));
        assert_eq!(spare_to_drop(&data_slower, 2, true), Some(2));
        let data_twice_slower = [running(45, s), running(100, s), running(100, s), None];
        assert_eq!(spare_to_drop(&data_twice_slower, 2, true), Some(0));
        let s3 = Duration::from_secs(3);
        let slow = [running(120, s3), running(300, s3), running(300, s3), None];
        assert_eq!(far_behind(&slow), 1);
        if let Some(p) = slow[0].as_ref() {
            p.held.store(1_500_000_000, Ordering::Relaxed);
        }
        assert_eq!(far_behind(&slow), 0, "held back, it keeps pace");
        // everyone held back most of the time: the decoder is the
        // bottleneck, and the least held piece is not behind
        let decoder_bound = [running(300, s3), running(300, s3), running(300, s3), None];
        for (p, held_ms) in decoder_bound.iter().flatten().zip([900u64, 2400, 2500]) {
            p.held.store(held_ms * 1_000_000, Ordering::Relaxed);
        }
        assert_eq!(far_behind(&decoder_bound), 0);
        if let Some(p) = decoder_bound[0].as_ref() {
            p.held.store(0, Ordering::Relaxed);
        }
        assert_eq!(
            far_behind(&decoder_bound),
            1,
            "never held: the one the others wait for"
        );
    }
}
