//! The epoch loop: a wall-clock timer that drives providers and settles
//! epochs. It asks the ledger owner what is due ([`Work`]), sends providers
//! signed tickets, seeds and challenges concurrently (bounded, each with a
//! timeout), feeds what they return back to the owner in batches, and at the
//! deadline settles the epoch. It never holds the ledger and never blocks
//! the swarm task.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::PeerId;
use crowd_protocol::{
    BadSource, Blob, Epoch, Network, RepairJob, RepairReport, Request, Response, SealReport, Signed,
};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use super::metrics::Metrics;
use super::repair::SlotKey;
use super::state::{dial_addrs, Clock, Job, RepairTask, RepairUpdate, Task};
use super::writer::Writer;
use super::ServiceError;
use crate::{AccountId, DealId, Event, Input, RetrievalAudit};

/// Provider results waiting to be applied.
const RESULTS_QUEUE: usize = 1024;
/// Retrieval audits (one 16 KiB verified fetch each) running at once;
/// accusations beyond it are dropped (logged), not queued.
const MAX_AUDITS: usize = 4;

/// The epoch loop's settings and handles.
#[derive(Debug, Clone)]
pub struct EpochLoop {
    /// The ledger (a single tracker's owner, or a replica's log: then the
    /// loop acts only while the replica leads).
    pub ledger: Writer,
    pub net: Network,
    /// Signs tickets, seeds and challenges (the ledger owner signs epochs).
    pub key: Keypair,
    /// The network those signatures are for (the genesis head).
    pub network: crowd_protocol::NetworkId,
    pub epoch: Duration,
    /// Longest a seal request may take (challenges end at the epoch deadline).
    pub provider_timeout: Duration,
    /// Requests to providers in flight at once.
    pub max_requests: usize,
    /// Requests to one provider in flight at once: a provider that never
    /// answers holds no more of `max_requests` than this.
    pub max_per_provider: usize,
    pub clock: Arc<Clock>,
    pub metrics: Arc<Metrics>,
}

/// What the loop remembers between ticks (in memory only: after a restart
/// tickets are sent again, which providers answer idempotently).
#[derive(Debug, Default)]
struct Progress {
    /// Deals whose provider acknowledged the seal ticket.
    queued: HashSet<DealId>,
    /// One request per deal at a time.
    in_flight: HashSet<DealId>,
    /// (deal, epoch) challenges sent.
    challenged: HashSet<(DealId, Epoch)>,
    /// One request per repair job at a time.
    repairs_in_flight: HashSet<SlotKey>,
    /// (file, index, epoch) audited: one audit per piece index per epoch.
    audited: HashSet<(u64, u64, Epoch)>,
    audits_running: usize,
    /// Requests in flight per provider (entries removed at zero).
    per_provider: HashMap<PeerId, usize>,
    /// The open epoch, as the loop last set it.
    epoch: Epoch,
}

impl Progress {
    /// Counts a request to `provider` if it has fewer than `bound` in flight.
    fn take_provider(&mut self, provider: PeerId, bound: usize) -> bool {
        let n = self.per_provider.entry(provider).or_insert(0);
        if *n >= bound {
            return false;
        }
        *n += 1;
        true
    }

    fn release_provider(&mut self, provider: &PeerId) {
        if let Some(n) = self.per_provider.get_mut(provider) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_provider.remove(provider);
            }
        }
    }
}

type Shared = Arc<Mutex<Progress>>;

fn lock(p: &Shared) -> std::sync::MutexGuard<'_, Progress> {
    // the critical sections cannot panic; recover the data if one did
    p.lock().unwrap_or_else(|e| e.into_inner())
}

impl EpochLoop {
    /// Runs until the owner stops (an error) or the task is dropped.
    pub async fn run(self) -> Result<(), ServiceError> {
        let tick = (self.epoch / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let (results_tx, mut results_rx) = mpsc::channel::<Input>(RESULTS_QUEUE);
        let progress: Shared = Arc::default();
        let limit = Arc::new(Semaphore::new(self.max_requests));
        loop {
            if !self.ledger.leads() {
                // a replica that does not lead waits; results in flight are dropped
                while results_rx.try_recv().is_ok() {}
                tokio::time::sleep(tick).await;
                continue;
            }
            let deadline = Instant::now() + self.epoch;
            self.clock.set_remaining(self.epoch);
            let epoch = self.ledger.work().await?.epoch;
            lock(&progress).epoch = epoch;
            let mut ticker = tokio::time::interval(tick);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = ticker.tick() => self.dispatch(&progress, &limit, &results_tx, deadline).await?,
                    Some(first) = results_rx.recv() => self.apply(first, &mut results_rx).await?,
                }
            }
            // what arrived by the deadline still counts
            if let Ok(first) = results_rx.try_recv() {
                self.apply(first, &mut results_rx).await?;
            }
            match self.ledger.end_epoch(epoch).await? {
                Ok(events) => summarise(epoch, &events),
                Err(e) => tracing::warn!(epoch, "could not settle the epoch: {e}"),
            }
            {
                let mut p = lock(&progress);
                p.challenged.retain(|(_, e)| *e > epoch);
                p.audited.retain(|(_, _, e)| *e > epoch);
            }
        }
    }

    /// Starts a request for every task that has none in flight.
    async fn dispatch(
        &self,
        progress: &Shared,
        limit: &Arc<Semaphore>,
        results: &mpsc::Sender<Input>,
        deadline: Instant,
    ) -> Result<(), ServiceError> {
        if !self.ledger.leads() {
            return Ok(());
        }
        let work = self.ledger.work().await?;
        for repair in work.repairs {
            let provider = repair.provider;
            let permit = {
                let mut p = lock(progress);
                if p.repairs_in_flight.contains(&repair.slot) {
                    continue;
                }
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    break;
                };
                if !p.take_provider(provider, self.max_per_provider) {
                    self.metrics.provider_requests_deferred.inc();
                    continue;
                }
                p.repairs_in_flight.insert(repair.slot);
                permit
            };
            let this = self.clone();
            let progress = progress.clone();
            let results = results.clone();
            tokio::spawn(async move {
                let slot = repair.slot;
                let timeout = this.provider_timeout;
                let asked = this.ask_repair(repair, &results, &progress);
                let outcome = tokio::time::timeout(timeout, asked).await;
                if outcome.is_err() {
                    this.metrics.provider_requests_failed.inc();
                    tracing::info!(?slot, "repair request: no answer within {timeout:?}");
                }
                {
                    let mut p = lock(&progress);
                    p.repairs_in_flight.remove(&slot);
                    p.release_provider(&provider);
                }
                drop(permit);
            });
        }
        for task in work.tasks {
            let queued = {
                let mut p = lock(progress);
                if p.in_flight.contains(&task.deal_id) {
                    continue;
                }
                if let Job::Prove(c) = &task.job {
                    if p.challenged.contains(&(c.deal_id, c.epoch)) {
                        continue;
                    }
                }
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    // the rest wait for the next tick
                    return Ok(());
                };
                if !p.take_provider(task.provider, self.max_per_provider) {
                    // this provider is busy (or silent): others go first
                    self.metrics.provider_requests_deferred.inc();
                    continue;
                }
                p.in_flight.insert(task.deal_id);
                if let Job::Prove(c) = &task.job {
                    p.challenged.insert((c.deal_id, c.epoch));
                }
                (p.queued.contains(&task.deal_id), permit)
            };
            let (queued, permit) = queued;
            let this = self.clone();
            let progress = progress.clone();
            let results = results.clone();
            tokio::spawn(async move {
                let (deal_id, provider) = (task.deal_id, task.provider);
                let timeout = match task.job {
                    Job::Prove(_) => deadline.saturating_duration_since(Instant::now()),
                    _ => this.provider_timeout,
                };
                let outcome = tokio::time::timeout(timeout, this.ask(task, queued)).await;
                let outcome = outcome.unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
                let input = {
                    let mut p = lock(&progress);
                    p.in_flight.remove(&deal_id);
                    p.release_provider(&provider);
                    match outcome {
                        Ok(Outcome::Input(input)) => Some(input),
                        Ok(Outcome::Queued) => {
                            p.queued.insert(deal_id);
                            None
                        }
                        Ok(Outcome::Unqueued) => {
                            p.queued.remove(&deal_id);
                            None
                        }
                        Ok(Outcome::Nothing) => None,
                        Err(e) => {
                            this.metrics.provider_requests_failed.inc();
                            tracing::info!(deal_id, "provider request: {e}");
                            None
                        }
                    }
                };
                if let Some(input) = input {
                    let _ = results.send(input).await;
                }
                drop(permit);
            });
        }
        Ok(())
    }

    /// One request to a deal's provider.
    async fn ask(&self, task: Task, queued: bool) -> Result<Outcome, String> {
        if !task.addrs.is_empty() {
            if let Err(e) = self.net.dial(task.provider, task.addrs.clone()).await {
                tracing::debug!(provider = %task.provider, "dial: {e}");
            }
        }
        let sign = |e: crowd_protocol::ProtocolError| format!("signing: {e}");
        let request = match &task.job {
            Job::Seal(_) if queued => Request::SealStatus(task.deal_id),
            Job::Seal(ticket) => {
                Request::StartSeal(Signed::sign(&self.key, &self.network, ticket).map_err(sign)?)
            }
            Job::ProveSeal(seed) => {
                Request::ProveSeal(Signed::sign(&self.key, &self.network, seed).map_err(sign)?)
            }
            Job::Prove(challenge) => {
                Request::Challenge(Signed::sign(&self.key, &self.network, challenge).map_err(sign)?)
            }
        };
        let response = self
            .net
            .request(task.provider, request)
            .await
            .map_err(|e| e.to_string())?;
        Ok(match response {
            Response::SealQueued => Outcome::Queued,
            Response::SealStatus(SealReport::Sealed(c)) => Outcome::Input(Input::PreCommit(c)),
            Response::SealStatus(SealReport::Queued) => Outcome::Nothing,
            Response::SealStatus(SealReport::Unknown) => Outcome::Unqueued,
            Response::SealStatus(SealReport::Failed { reason }) => {
                tracing::warn!(deal_id = task.deal_id, "provider failed to seal: {reason}");
                Outcome::Unqueued
            }
            Response::SealProof(p) => Outcome::Input(Input::SealProof(p)),
            Response::WindowProof(p) => Outcome::Input(Input::WindowProof(p)),
            Response::Error { message } => return Err(message),
            other => return Err(format!("unexpected answer {other:?}")),
        })
    }

    /// Sends a repair job, or polls it; a ready job's acceptance goes to the
    /// ledger as `PublishRepair`, a failure back to the owner (who plans
    /// the index again with another provider).
    async fn ask_repair(&self, mut task: RepairTask, results: &mpsc::Sender<Input>, progress: &Shared) {
        let (slot, job_id) = (task.slot, task.job.id());
        if !task.addrs.is_empty() {
            if let Err(e) = self.net.dial(task.provider, task.addrs.clone()).await {
                tracing::debug!(provider = %task.provider, "dial: {e}");
            }
        }
        let request = if task.sent {
            Request::RepairStatus(job_id)
        } else {
            Request::Repair {
                job: task.job.clone(),
                manifest: Blob(std::mem::take(&mut task.manifest)),
            }
        };
        let update = match self.net.request(task.provider, request).await {
            Ok(Response::RepairQueued) => Some(RepairUpdate::Sent),
            Ok(Response::RepairStatus(RepairReport::Running)) => None,
            Ok(Response::RepairStatus(RepairReport::Ready {
                acceptance,
                bad_sources,
            })) => {
                self.audit(&task, bad_sources, progress, results);
                let _ = results
                    .send(Input::PublishRepair {
                        job: task.job,
                        acceptance,
                    })
                    .await;
                None
            }
            Ok(Response::RepairStatus(RepairReport::Unknown)) => {
                Some(RepairUpdate::Failed("the provider does not know the job".into()))
            }
            Ok(Response::RepairStatus(RepairReport::Failed { reason, bad_sources })) => {
                self.audit(&task, bad_sources, progress, results);
                Some(RepairUpdate::Failed(reason))
            }
            Ok(Response::Error { message }) => Some(RepairUpdate::Failed(message)),
            Ok(other) => Some(RepairUpdate::Failed(format!("unexpected answer {other:?}"))),
            Err(e) => {
                // unreachable now: the job stays, polled again (it expires)
                self.metrics.provider_requests_failed.inc();
                tracing::info!(?slot, "repair request: {e}");
                None
            }
        };
        if let Some(update) = update {
            self.ledger.repair_update(slot, job_id, update).await;
        }
    }

    /// Checks the repairing provider's accusations for itself: for each
    /// named source of the job (at most one audit per piece index per epoch,
    /// [`MAX_AUDITS`] at once) it fetches the one 16 KiB group named, verified
    /// against the source's piece CID; only if that fails too is a
    /// `RetrievalFault` signed and applied. An accusation alone costs the
    /// accused nothing, and a source that does not answer is left to its
    /// window challenges.
    fn audit(
        &self,
        task: &RepairTask,
        bad_sources: Vec<BadSource>,
        progress: &Shared,
        results: &mpsc::Sender<Input>,
    ) {
        if bad_sources.is_empty() {
            return;
        }
        let Ok((_, job)) = task.job.open(&self.network, None) else {
            return; // we signed it
        };
        for bad in bad_sources.into_iter().take(job.sources.len()) {
            let Some(source) = job
                .sources
                .iter()
                .find(|s| s.index == bad.index && s.provider == bad.provider)
                .cloned()
            else {
                tracing::info!(?bad, "a repair names a source its job did not list");
                continue;
            };
            {
                let mut p = lock(progress);
                let epoch = p.epoch;
                if p.audits_running >= MAX_AUDITS || !p.audited.insert((job.file_id, bad.index, epoch)) {
                    tracing::info!(
                        ?bad,
                        "retrieval audit skipped (one per index per epoch, {MAX_AUDITS} at once)"
                    );
                    continue;
                }
                p.audits_running += 1;
            }
            let (this, progress, results, job) =
                (self.clone(), progress.clone(), results.clone(), job.clone());
            let accuser = task.provider;
            tokio::spawn(async move {
                let input = this
                    .audit_one(&job, &source, bad.offset, accuser, &progress)
                    .await;
                lock(&progress).audits_running -= 1;
                if let Some(input) = input {
                    let _ = results.send(input).await;
                }
            });
        }
    }

    /// One audit (see [`EpochLoop::audit`]): the fault to apply, if the
    /// group fails verification.
    async fn audit_one(
        &self,
        job: &RepairJob,
        source: &crowd_protocol::RepairSource,
        offset: u64,
        accuser: PeerId,
        progress: &Shared,
    ) -> Option<Input> {
        let size = job.proposal.piece_size; // every piece of a layout has one size
        let group = crowd_porep::tree::GROUP_LEN as u64;
        if offset % group != 0 || offset >= size {
            tracing::info!(offset, size, "a repair names a group outside the piece");
            return None;
        }
        let addrs = dial_addrs(&source.addrs);
        if !addrs.is_empty() {
            let _ = tokio::time::timeout(self.provider_timeout, self.net.dial(source.provider, addrs)).await;
        }
        let end = (offset + group).min(size);
        let fetched = crowd_protocol::transfer::fetch(
            &mut self.net.streams(),
            source.provider,
            source.piece,
            size,
            offset..end,
            self.provider_timeout,
            |_| Ok(()),
        )
        .await;
        let who = source.provider;
        match fetched {
            Ok(_) => {
                tracing::info!(provider = %who, offset, "retrieval audit: the group verifies; accusation by {accuser} not confirmed");
                None
            }
            Err(e) if e.is_unverified_bytes() => {
                tracing::warn!(provider = %who, index = source.index, offset, "retrieval audit: the provider serves bytes that are not its piece's: {e}");
                // the epoch open now: the loop applies it before settling
                let audit = RetrievalAudit {
                    file_id: job.file_id,
                    index: u32::try_from(source.index).ok()?,
                    provider: AccountId(who),
                    epoch: lock(progress).epoch,
                    offset,
                    accuser: AccountId(accuser),
                };
                match Signed::sign(&self.key, &self.network, &audit) {
                    Ok(signed) => Some(Input::RetrievalFault(signed)),
                    Err(e) => {
                        tracing::warn!("signing a retrieval fault: {e}");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::info!(provider = %who, offset, "retrieval audit: no verified answer ({e}); left to its challenges");
                None
            }
        }
    }

    /// Applies `first` and whatever else is already waiting, as one batch.
    async fn apply(&self, first: Input, rx: &mut mpsc::Receiver<Input>) -> Result<(), ServiceError> {
        let mut inputs = vec![first];
        while let Ok(more) = rx.try_recv() {
            inputs.push(more);
        }
        for result in self.ledger.apply(inputs).await? {
            match result {
                Ok(events) => {
                    for e in events {
                        tracing::debug!(?e, "recorded");
                    }
                }
                Err(e) => tracing::info!("provider result refused: {e}"),
            }
        }
        Ok(())
    }
}

/// What a provider's answer means for the loop.
#[derive(Debug)]
enum Outcome {
    Input(Input),
    Queued,
    /// The provider lost or failed the seal: send the ticket again.
    Unqueued,
    Nothing,
}

fn summarise(epoch: Epoch, events: &[Event]) {
    let (mut paid, mut faulted) = (0, 0);
    for e in events {
        match e {
            Event::Paid { .. } => paid += 1,
            Event::Faulted {
                deal_id, consecutive, ..
            } => {
                faulted += 1;
                tracing::info!(epoch, deal_id, consecutive, "fault");
            }
            Event::Terminated { deal_id, .. } => tracing::warn!(epoch, deal_id, "deal terminated"),
            Event::Cancelled { deal_id, .. } => tracing::info!(epoch, deal_id, "deal cancelled"),
            Event::Completed { deal_id, .. } => tracing::info!(epoch, deal_id, "deal completed"),
            Event::RepairNeeded {
                deal_id,
                file: Some((file_id, index)),
                ..
            } => tracing::warn!(epoch, deal_id, file_id, index, "piece lost: repair queued"),
            Event::FileExpired { file_id, .. } => tracing::info!(epoch, file_id, "file expired"),
            Event::Archived { deals, files } => {
                tracing::debug!(epoch, deals = deals.len(), files = files.len(), "archived")
            }
            _ => {}
        }
    }
    tracing::info!(epoch, paid, faulted, "epoch settled");
}
