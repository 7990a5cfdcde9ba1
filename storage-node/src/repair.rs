//! Repair jobs: the tracker asks this node to rebuild a lost piece of a file
//! from the file's other pieces, held by other providers, and to take over
//! the lost piece's deal.
//!
//! **Accepting** ([`Node::repair`], `Request::Repair` from the tracker only):
//! the job must be signed by the configured tracker and sent by it, name this
//! node as provider, not be past its expiry, come with the manifest whose
//! digest it names (and that decodes), name a piece index of that manifest
//! whose hash and length are the proposal's, be for a piece this node does
//! not hold, list at least `k` usable sources (other indexes of the same
//! layout, not this node) and fit the node's capacity (the piece and its
//! outboard are reserved like a proposal's while the job runs). Then the
//! answer is `RepairQueued` and the job runs in the background, at most
//! `max_concurrent_repairs` at once. Re-sending a job that is running or
//! done answers `RepairQueued` again and runs nothing; a failed job may be
//! sent again and runs again.
//!
//! **The epoch** a job's expiry is checked against is the tracker's open
//! epoch from `TrackerRequest::Info`, asked when the job arrives; when the
//! tracker does not answer, the latest epoch of a tracker-signed window
//! challenge this node answered (and if it has seen none, the job is
//! refused).
//!
//! **Rebuilding** streams segment by segment through
//! [`crowd_erasure::Decoder::repair`]: for each segment it reads that
//! segment's shard of `k` source pieces over `/crowd/fetch/1`
//! ([`crowd_protocol::transfer::fetch`], every 16 KiB group verified against
//! the source piece's CID before its bytes are used), regenerates only the
//! missing piece's shard and appends it to a file in `tmp/` while building
//! its outboard. A source that does not answer twice in a row, or whose
//! bytes fail verification once, is dropped and the next source of that index (or another
//! index) is used; sources whose bytes failed are reported in the job's
//! `bad_sources` with the offset of the 16 KiB group that failed, for the
//! tracker to check for itself (`RepairReport::Ready` and `Failed`). Peak memory: the decoder's shard buffers, at most `2k`
//! shards of one segment (`k` data and up to `k` chosen parity, the shard
//! being `segment_size / k`), plus one shard of scratch and 32 bytes per
//! 16 KiB of the piece for its outboard — about `(2k + 1) / k` segments,
//! independent of the piece size (for the client's 16 MiB segments and
//! k = 4: 36 MiB).
//!
//! **Storing**: the rebuilt bytes must hash to the proposal's piece (= its
//! CID = comm_d). Outboard and piece file are committed like an upload's
//! (tmp, fsync, rename, fsync dir), then one batch indexes the piece, a
//! [`RepairRecord`] under the job id (= the repair deal's proposal id, which
//! `StartSeal` names) and the new used space. A failure at any point removes
//! what the job wrote; after a crash `recover` removes unindexed files.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use crowd_erasure::{Decoder, Layout, PieceSource, Verification};
use crowd_protocol::libp2p::{Multiaddr, PeerId};
use crowd_protocol::{
    BadSource, Blob, DealAcceptance, Manifest, Network, PieceId, PieceReceipt, ProtocolError, RepairJob,
    RepairReport, Response, Signed, TrackerRequest, TrackerResponse,
};

use crate::files;
use crate::node::Node;
use crate::records::{self, PieceRecord, RepairRecord};
use crate::store::Batch;

/// Most repair jobs remembered in memory (running, ready, failed); failed
/// ones are forgotten first when it is full.
pub const MAX_REPAIR_JOBS: usize = 1024;

/// Where a job stands, in memory (a stored job is also in its record).
#[derive(Debug, Clone)]
enum JobState {
    Running,
    Ready {
        bad_sources: Vec<BadSource>,
    },
    Failed {
        reason: String,
        bad_sources: Vec<BadSource>,
    },
}

/// The node's repair jobs by id.
#[derive(Debug, Default)]
pub struct RepairJobs {
    jobs: Mutex<HashMap<[u8; 32], JobState>>,
}

impl RepairJobs {
    fn lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, HashMap<[u8; 32], JobState>>> {
        self.jobs.lock().map_err(|_| anyhow!("repair job table poisoned"))
    }

    fn get(&self, id: &[u8; 32]) -> anyhow::Result<Option<JobState>> {
        Ok(self.lock()?.get(id).cloned())
    }

    /// Marks `id` running unless it already runs or is done; returns
    /// whether it was marked (so the caller starts it).
    fn start(&self, id: [u8; 32]) -> anyhow::Result<bool> {
        let mut jobs = self.lock()?;
        if matches!(jobs.get(&id), Some(JobState::Running | JobState::Ready { .. })) {
            return Ok(false);
        }
        if jobs.len() >= MAX_REPAIR_JOBS {
            jobs.retain(|_, s| !matches!(s, JobState::Failed { .. }));
        }
        if jobs.len() >= MAX_REPAIR_JOBS && !jobs.contains_key(&id) {
            bail!("{MAX_REPAIR_JOBS} repair jobs are already known here");
        }
        jobs.insert(id, JobState::Running);
        Ok(true)
    }

    fn finish(&self, id: [u8; 32], state: JobState) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(id, state);
        }
    }
}

/// One usable source index of a job: the providers that hold it, best first.
struct Candidate {
    index: usize,
    piece: PieceId,
    providers: Vec<(PeerId, Vec<Multiaddr>)>,
}

/// What a job needs once accepted.
struct Accepted {
    id: [u8; 32],
    job: Signed<RepairJob>,
    body: RepairJob,
    layout: Layout,
    candidates: Vec<Candidate>,
}

impl Node {
    /// `Request::Repair` (the sender is already checked to be the tracker).
    pub(crate) async fn repair(
        self: &Arc<Self>,
        job: Signed<RepairJob>,
        manifest: Blob,
    ) -> anyhow::Result<Response> {
        let body = self.check_tracker(&job).context("repair job")?;
        let id = job.id();
        if self.repair_known(&id)? {
            return Ok(Response::RepairQueued);
        }
        let p = &body.proposal;
        if p.provider != self.peer_id {
            bail!("repair job is for provider {}, not this node", p.provider);
        }
        let epoch = self.current_epoch().await?;
        if p.expiry_epoch < epoch {
            bail!(
                "repair job expired at epoch {} (the tracker is at epoch {epoch})",
                p.expiry_epoch
            );
        }
        if blake3::hash(&manifest.0).as_bytes() != &body.manifest {
            bail!("manifest bytes do not hash to the job's manifest digest");
        }
        let manifest = Manifest::decode(&manifest.0)?;
        let layout = manifest.layout;
        let total = layout.pieces().len();
        let index = usize::try_from(body.index)
            .ok()
            .filter(|&i| i < total)
            .ok_or_else(|| {
                anyhow!(
                    "piece index {} is outside the layout's {total} pieces",
                    body.index
                )
            })?;
        let info = layout.pieces()[index];
        if PieceId(*info.hash.as_bytes()) != p.piece || info.len != p.piece_size {
            bail!(
                "the proposal's piece {} ({} bytes) is not piece {index} of the manifest",
                p.piece,
                p.piece_size
            );
        }
        if p.piece_size == 0 || p.piece_size > self.config.max_piece_bytes {
            bail!(
                "piece size {} is outside 1..={}",
                p.piece_size,
                self.config.max_piece_bytes
            );
        }
        let candidates = self.candidates(&body, &layout, index);
        let k = layout.params().data_shards();
        if candidates.len() < k {
            bail!(
                "{} usable sources for {k} pieces needed to rebuild piece {index}",
                candidates.len()
            );
        }
        let size = p.piece_size;
        let client = p.client;
        let piece = p.piece;
        {
            let _guard = self.write_lock.lock().await;
            if self.repair_known(&id)? {
                return Ok(Response::RepairQueued);
            }
            if records::get::<PieceRecord>(&*self.store, &records::piece_key(&piece))?.is_some() {
                bail!("piece {piece} is already held here");
            }
            let used = records::space_used(&*self.store)?;
            let reserved =
                self.reserve(id, client, size.saturating_add(records::outboard_len(size)), used)?;
            if !self.repairs.start(id)? {
                self.release(&id);
                return Ok(Response::RepairQueued);
            }
            self.metrics.space_reserved.set((used + reserved) as i64);
        }
        tracing::info!(job = %records::hex(&id), %piece, index, size, "repair job accepted");
        let node = self.clone();
        let accepted = Accepted {
            id,
            job,
            body,
            layout,
            candidates,
        };
        tokio::spawn(async move { node.run_repair(accepted).await });
        Ok(Response::RepairQueued)
    }

    /// Whether job `id` is running or done here.
    fn repair_known(&self, id: &[u8; 32]) -> anyhow::Result<bool> {
        Ok(matches!(
            self.repairs.get(id)?,
            Some(JobState::Running | JobState::Ready { .. })
        ) || self.store.get(&records::repair_key(id))?.is_some())
    }

    /// `Request::RepairStatus` (the sender is already checked to be the tracker).
    pub(crate) fn repair_status(&self, id: &[u8; 32]) -> anyhow::Result<Response> {
        let state = self.repairs.get(id)?;
        let report = match state {
            Some(JobState::Running) => RepairReport::Running,
            Some(JobState::Failed { reason, bad_sources }) => RepairReport::Failed { reason, bad_sources },
            // ready, or done before a restart: the record is the truth
            Some(JobState::Ready { .. }) | None => {
                if self.store.get(&records::repair_key(id))?.is_some() {
                    let bad_sources = match state {
                        Some(JobState::Ready { bad_sources }) => bad_sources,
                        _ => Vec::new(),
                    };
                    RepairReport::Ready {
                        acceptance: Signed::sign(
                            &self.key,
                            &self.network()?,
                            &DealAcceptance { proposal: *id },
                        )?,
                        bad_sources,
                    }
                } else {
                    RepairReport::Unknown
                }
            }
        };
        Ok(Response::RepairStatus(report))
    }

    /// The tracker's open epoch (see the module doc).
    pub(crate) async fn current_epoch(&self) -> anyhow::Result<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.tracker.is_some() {
            let asked =
                tokio::time::timeout(Duration::from_secs(10), self.ask_tracker(TrackerRequest::Info)).await;
            match asked {
                Ok(Ok(Response::Tracker(TrackerResponse::Info(info)))) => {
                    self.last_epoch.fetch_max(info.epoch, Relaxed);
                    return Ok(info.epoch);
                }
                other => tracing::debug!("tracker epoch unknown: {other:?}"),
            }
        }
        match self.last_epoch.load(Relaxed) {
            0 => {
                bail!("cannot learn the current epoch: the tracker did not answer and no challenge was seen")
            }
            e => Ok(e),
        }
    }

    /// The job's usable sources, one per other index of the layout, in the
    /// order the tracker listed them (best first).
    fn candidates(&self, job: &RepairJob, layout: &Layout, index: usize) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = Vec::new();
        for s in &job.sources {
            let Some(i) = usize::try_from(s.index)
                .ok()
                .filter(|&i| i < layout.pieces().len())
            else {
                continue;
            };
            let info = layout.pieces()[i];
            if i == index || s.provider == self.peer_id || PieceId(*info.hash.as_bytes()) != s.piece {
                continue;
            }
            let addrs: Vec<Multiaddr> = s.addrs.iter().filter_map(|a| a.parse().ok()).take(16).collect();
            match out.iter().position(|c| c.index == i) {
                Some(at) => {
                    let c = &mut out[at];
                    if c.providers.len() < 8 && !c.providers.iter().any(|(p, _)| *p == s.provider) {
                        c.providers.push((s.provider, addrs));
                    }
                }
                None => out.push(Candidate {
                    index: i,
                    piece: s.piece,
                    providers: vec![(s.provider, addrs)],
                }),
            }
        }
        out
    }

    async fn run_repair(self: Arc<Self>, job: Accepted) {
        let id = job.id;
        let ctx = Arc::new(FetchCtx {
            net: self.net.clone(),
            rt: tokio::runtime::Handle::current(),
            stall: self.stall(),
            bad: Mutex::new(Vec::new()),
        });
        let result = match self.repair_slots.clone().acquire_owned().await {
            Ok(_permit) => {
                self.metrics.repairs_running.inc();
                let r = self.rebuild_and_store(&job, ctx.clone()).await;
                self.metrics.repairs_running.dec();
                r
            }
            Err(e) => Err(anyhow!("repair slots closed: {e}")),
        };
        self.release(&id);
        let bad_sources = ctx.bad.lock().map(|b| b.clone()).unwrap_or_default();
        match result {
            Ok(()) => {
                self.metrics.repairs_done.inc();
                tracing::info!(job = %records::hex(&id), ?bad_sources, "repair done");
                self.repairs.finish(id, JobState::Ready { bad_sources });
            }
            Err(e) => {
                self.metrics.repairs_failed.inc();
                let reason = format!("{e:#}").replace(['\n', '\r'], " ");
                tracing::warn!(job = %records::hex(&id), ?bad_sources, "repair failed: {reason}");
                self.repairs.finish(id, JobState::Failed { reason, bad_sources });
            }
        }
    }

    async fn rebuild_and_store(&self, job: &Accepted, ctx: Arc<FetchCtx>) -> anyhow::Result<()> {
        let p = &job.body.proposal;
        let index = usize::try_from(job.body.index)?;
        let total = job.layout.pieces().len();
        let mut sources: Vec<Option<NetSource>> = (0..total).map(|_| None).collect();
        for c in &job.candidates {
            sources[c.index] = Some(NetSource {
                index: c.index as u64,
                piece: c.piece,
                len: job.layout.piece_len(),
                providers: c.providers.clone(),
                next: AtomicUsize::new(0),
                ctx: ctx.clone(),
            });
        }
        let (tmp_path, tmp) = self.dirs.temp_file("repair-")?;
        let layout = job.layout.clone();
        let threads = layout.params().data_shards().clamp(1, 16);
        let rebuilt = tokio::task::spawn_blocking(
            move || -> anyhow::Result<(std::fs::File, crowd_porep::Outboard)> {
                // fetches block their thread: a pool of the job's own, so the
                // global rayon pool (sealing) is never held by network waits
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("repair-{i}"))
                    .build()?;
                let mut writer = [files::HashingWriter::new(std::io::BufWriter::with_capacity(
                    1 << 20,
                    tmp,
                ))];
                pool.install(|| {
                    Decoder::new(&layout)?
                        .with_verification(Verification::Trusted)
                        .repair(&sources, &[index], &mut writer)
                })?;
                let [w] = writer;
                Ok(w.finish()?)
            },
        )
        .await
        .map_err(|e| anyhow!("repair task: {e}"))
        .and_then(|r| r);
        let (file, outboard) = match rebuilt {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp_path);
                return Err(e.context(format!("rebuilding piece {index}")));
            }
        };
        if outboard.root() != p.piece.0 || outboard.len() != p.piece_size {
            let _ = std::fs::remove_file(&tmp_path);
            bail!("the rebuilt piece does not hash to {}; nothing kept", p.piece);
        }
        let stored = self.store_rebuilt(job, &tmp_path, file, outboard).await;
        if stored.is_err() {
            let _ = std::fs::remove_file(&tmp_path);
        }
        stored
    }

    /// Commits the rebuilt piece and its outboard and indexes them with the
    /// job's record, under the write lock.
    async fn store_rebuilt(
        &self,
        job: &Accepted,
        tmp_path: &std::path::Path,
        file: std::fs::File,
        outboard: crowd_porep::Outboard,
    ) -> anyhow::Result<()> {
        let p = &job.body.proposal;
        let receipt = Signed::sign(
            &self.key,
            &self.network()?,
            &PieceReceipt {
                proposal: job.id,
                piece: p.piece,
                piece_size: p.piece_size,
            },
        )?;
        let _guard = self.write_lock.lock().await;
        let key = records::piece_key(&p.piece);
        let mut batch = Batch::default();
        let mut new_bytes = 0;
        let held = records::get::<PieceRecord>(&*self.store, &key)?;
        if held.as_ref().is_some_and(|r| r.unsealed) {
            // the same bytes arrived by upload meanwhile: keep those, untouched
            let _ = std::fs::remove_file(tmp_path);
        } else {
            let outboard_bytes = outboard.encode();
            new_bytes = p.piece_size + outboard_bytes.len() as u64;
            let used = records::space_used(&*self.store)?;
            if used.saturating_add(new_bytes) > self.config.capacity_bytes {
                bail!(
                    "not enough space to keep the rebuilt piece: {used} of {} bytes used",
                    self.config.capacity_bytes
                );
            }
            let dirs = self.dirs.clone();
            let (piece_path, outboard_path) = (self.dirs.piece(&p.piece), self.dirs.piece_outboard(&p.piece));
            let tmp = tmp_path.to_path_buf();
            let (pp, op) = (piece_path.clone(), outboard_path.clone());
            let commit = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                files::write_atomic(&dirs, &op, &outboard_bytes)?;
                files::commit(&file, &tmp, &pp)?;
                Ok(())
            })
            .await
            .map_err(|e| anyhow!("commit task: {e}"))
            .and_then(|r| r);
            if let Err(e) = commit {
                let _ = std::fs::remove_file(&outboard_path);
                return Err(e.context("storing the rebuilt piece"));
            }
            batch.put(
                key,
                records::encode(&PieceRecord {
                    size: p.piece_size,
                    unsealed: true,
                }),
            );
            if let Err(e) = self.index_repair(job, receipt, new_bytes, batch) {
                let _ = std::fs::remove_file(&piece_path);
                let _ = std::fs::remove_file(&outboard_path);
                return Err(e);
            }
            self.metrics.pieces.inc();
            self.metrics.bytes_stored.inc_by(p.piece_size as i64);
            self.announce(p.piece);
            return Ok(());
        }
        self.index_repair(job, receipt, new_bytes, batch)
    }

    fn index_repair(
        &self,
        job: &Accepted,
        receipt: Signed<PieceReceipt>,
        new_bytes: u64,
        mut batch: Batch,
    ) -> anyhow::Result<()> {
        batch.put(
            records::client_piece_key(&job.body.proposal.client, &job.id),
            Vec::new(),
        );
        batch.put(
            records::repair_key(&job.id),
            records::encode(&RepairRecord {
                job: job.job.clone(),
                receipt,
            }),
        );
        let used = self.space_delta(&mut batch, new_bytes, 0)?;
        self.store.write(batch)?;
        self.metrics.space_used.set(used as i64);
        Ok(())
    }

    fn announce(&self, piece: PieceId) {
        self.announce_key(piece.cid().to_bytes());
    }
}

/// Shared by a job's sources: the network, the runtime to block on, and the
/// providers whose bytes failed verification.
struct FetchCtx {
    net: Network,
    rt: tokio::runtime::Handle,
    stall: Duration,
    /// Sources whose bytes failed verification, once per (index, provider).
    bad: Mutex<Vec<BadSource>>,
}

/// One piece of the file, read by range from the providers that hold it
/// (the first that answers with verified bytes). Reads block on the
/// runtime: they run on the repair's own rayon pool inside a blocking task.
struct NetSource {
    index: u64,
    piece: PieceId,
    len: u64,
    providers: Vec<(PeerId, Vec<Multiaddr>)>,
    /// The provider in use; earlier ones failed.
    next: AtomicUsize,
    ctx: Arc<FetchCtx>,
}

/// Pause before a source that did not answer is tried once more.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// How a range fetch failed.
#[derive(Debug, PartialEq, Eq)]
enum FetchFailure {
    /// Bytes arrived that do not verify against the piece CID.
    BadBytes,
    /// No answer, a refusal, a stall.
    NoAnswer,
}

fn classify(e: &ProtocolError) -> FetchFailure {
    if e.is_unverified_bytes() {
        FetchFailure::BadBytes
    } else {
        FetchFailure::NoAnswer
    }
}

impl NetSource {
    async fn fetch_into(
        &self,
        peer: PeerId,
        addrs: &[Multiaddr],
        offset: u64,
        buf: &mut [u8],
        at: &mut usize,
    ) -> Result<(), ProtocolError> {
        if !addrs.is_empty() {
            // best effort: an existing connection or the DHT may still do
            let _ = tokio::time::timeout(self.ctx.stall, self.ctx.net.dial(peer, addrs.to_vec())).await;
        }
        let mut streams = self.ctx.net.streams();
        *at = 0;
        let end = offset + buf.len() as u64;
        crowd_protocol::transfer::fetch(
            &mut streams,
            peer,
            self.piece,
            self.len,
            offset..end,
            self.ctx.stall,
            |b| {
                let to = *at + b.len();
                let slot = buf
                    .get_mut(*at..to)
                    .ok_or_else(|| std::io::Error::other("more bytes than asked for"))?;
                slot.copy_from_slice(b);
                *at = to;
                Ok(())
            },
        )
        .await?;
        if *at != buf.len() {
            return Err(ProtocolError::Remote(format!(
                "{} of {} bytes arrived",
                at,
                buf.len()
            )));
        }
        Ok(())
    }
}

impl PieceSource for NetSource {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.len)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        // a provider that did not answer gets one more try (a stream that
        // failed to open on a fresh connection is common and transient);
        // one whose bytes failed verification gets none
        let mut retried = usize::MAX;
        loop {
            let i = self.next.load(Ordering::Acquire);
            let Some((peer, addrs)) = self.providers.get(i) else {
                return Err(std::io::Error::other(format!(
                    "no provider of {} left",
                    self.piece
                )));
            };
            let mut at = 0;
            match self
                .ctx
                .rt
                .block_on(self.fetch_into(*peer, addrs, offset, buf, &mut at))
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let failure = classify(&e);
                    if failure == FetchFailure::NoAnswer && retried != i {
                        retried = i;
                        tracing::debug!(%peer, piece = %self.piece, "repair source did not answer, once more: {e}");
                        std::thread::sleep(RETRY_PAUSE);
                        continue;
                    }
                    tracing::info!(%peer, piece = %self.piece, ?failure, "repair source dropped: {e}");
                    if failure == FetchFailure::BadBytes {
                        // groups arrive in order: the first byte not delivered
                        // lies in the group that failed
                        let group = crowd_porep::tree::GROUP_LEN as u64;
                        let failed = BadSource {
                            index: self.index,
                            provider: *peer,
                            offset: (offset + at as u64) / group * group,
                        };
                        if let Ok(mut bad) = self.ctx.bad.lock() {
                            if !bad
                                .iter()
                                .any(|b| (b.index, b.provider) == (failed.index, failed.provider))
                            {
                                bad.push(failed);
                            }
                        }
                    }
                    self.next.fetch_max(i + 1, Ordering::AcqRel);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unverified_groups_mark_a_source_bad() {
        let bad = ProtocolError::Malformed {
            what: "verified group",
            reason: "x".into(),
        };
        assert_eq!(classify(&bad), FetchFailure::BadBytes);
        assert_eq!(
            classify(&ProtocolError::Timeout(Duration::from_secs(1))),
            FetchFailure::NoAnswer
        );
        assert_eq!(
            classify(&ProtocolError::Remote("no".into())),
            FetchFailure::NoAnswer
        );
    }

    #[test]
    fn a_running_or_ready_job_is_not_started_twice() {
        let jobs = RepairJobs::default();
        let id = [1u8; 32];
        assert!(jobs.start(id).unwrap());
        assert!(!jobs.start(id).unwrap());
        jobs.finish(id, JobState::Ready { bad_sources: vec![] });
        assert!(!jobs.start(id).unwrap());
        jobs.finish(
            id,
            JobState::Failed {
                reason: "x".into(),
                bad_sources: vec![],
            },
        );
        // a failed job may run again
        assert!(jobs.start(id).unwrap());
    }
}
