//! Fetching `k` pieces in parallel: start `k + 1` (cheapest first, data
//! before parity), start another whenever one fails, stalls, turns out
//! corrupt or falls far behind the others, and cancel the rest once `k` are
//! complete. Every byte written is verified in transit
//! ([`crowd_protocol::transfer::fetch`]); pieces stream into the resume
//! directory, so memory is one write buffer per running fetch.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use crowd_protocol::libp2p::{Multiaddr, PeerId};
use crowd_protocol::{Manifest, Network, PieceId};
use indicatif::ProgressBar;
use tokio::task::JoinSet;

use super::plan::{piece_order, PieceRanges};
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
    pub progress: &'a ProgressBar,
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
/// No piece is judged slow before this.
const GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
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
        let held = job.plan.resume_at(job.dir.have(i));
        *slot = Some(Piece {
            provider,
            id,
            state: State::Waiting,
            attempts: 0,
            have: Arc::new(AtomicU64::new(held)),
            resumed: held > 0,
            started: None,
            start_have: held,
        });
    }
    let mut failures = Vec::new();
    // pieces already complete from an earlier run
    for (i, slot) in pieces.iter_mut().enumerate() {
        let Some(p) = slot else { continue };
        if p.have.load(Ordering::Relaxed) == total {
            if job.whole && !check_whole(job, i, piece_len)? {
                p.have.store(0, Ordering::Relaxed);
                p.resumed = false;
                p.start_have = 0;
                continue;
            }
            p.state = State::Done;
        }
    }
    let remaining: Vec<Option<u64>> = pieces
        .iter()
        .map(|p| p.as_ref().map(|p| total - p.have.load(Ordering::Relaxed)))
        .collect();
    let order = piece_order(k, &remaining);
    job.progress.set_length(total.saturating_mul(k as u64));

    let mut running: JoinSet<(usize, Result<()>)> = JoinSet::new();
    let mut spare = 1usize; // pieces running beyond what is needed
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
            // the file says what was kept (a failed attempt flushed its verified bytes)
            let held = job.plan.resume_at(job.dir.have(i));
            p.start_have = held;
            p.have.store(held, Ordering::Relaxed);
            let task = PieceTask {
                net: net.clone(),
                provider: p.provider,
                addrs: job.addrs.get(&p.provider).cloned().unwrap_or_default(),
                id: p.id,
                piece_len,
                ranges: job.plan.remaining(held),
                file: job.dir.append(i, held)?,
                stall: job.stall,
                have: p.have.clone(),
            };
            running.spawn(async move { (i, task.run().await) });
        }
        if active_now(&pieces) == 0 {
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
                let (i, result) = joined.map_err(|e| anyhow!("fetch task failed: {e}"))?;
                let Some(p) = pieces[i].as_mut() else { continue };
                match result {
                    Ok(()) if job.whole && p.resumed && !check_whole(job, i, piece_len)? => {
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
                spare = spare.max((1 + far_behind(&pieces)).min(n - k));
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

fn active_now(pieces: &[Option<Piece>]) -> usize {
    pieces
        .iter()
        .flatten()
        .filter(|p| p.state == State::Running)
        .count()
}

/// How many running pieces progress at under half the median rate (after a
/// grace period): as many more are started alongside them.
fn far_behind(pieces: &[Option<Piece>]) -> usize {
    let now = Instant::now();
    let mut rates: Vec<f64> = pieces
        .iter()
        .flatten()
        .filter(|p| p.state == State::Running)
        .filter_map(|p| {
            let t = now.duration_since(p.started?);
            (t >= GRACE)
                .then(|| p.have.load(Ordering::Relaxed).saturating_sub(p.start_have) as f64 / t.as_secs_f64())
        })
        .collect();
    if rates.len() < 2 {
        return 0;
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    rates.iter().filter(|&&r| r < median * BEHIND).count()
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

/// Retries of a dial refused because another dial to the peer is in flight.
const DIAL_RACE_RETRIES: u32 = 8;
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
    stall: Duration,
    have: Arc<AtomicU64>,
}

impl PieceTask {
    async fn run(self) -> Result<()> {
        let mut tries = 0;
        loop {
            let dial = tokio::time::timeout(self.stall, self.net.dial(self.provider, self.addrs.clone()))
                .await
                .map_err(|_| anyhow!("cannot reach the provider in {:?}", self.stall))?;
            match dial {
                Ok(()) => break,
                // The swarm refuses a dial while another one to the same peer
                // (the DHT's) is in flight; that one may well succeed.
                Err(e) if e.to_string().contains("PeerCondition") => {
                    if tries == DIAL_RACE_RETRIES {
                        bail!("cannot reach the provider: an earlier dial to it is still pending");
                    }
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(anyhow!(root_cause(&e)).context("cannot reach the provider")),
            }
        }
        let mut out = BufWriter::with_capacity(1 << 20, self.file);
        let mut streams = self.net.streams();
        let have = &self.have;
        let mut result = Ok(());
        for r in self.ranges {
            let fetched = crowd_protocol::transfer::fetch(
                &mut streams,
                self.provider,
                self.id,
                self.piece_len,
                r,
                self.stall,
                |bytes| {
                    out.write_all(bytes)?;
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
