//! The ledger owner: the [`Ledger`], the store and the side tables, owned by
//! one thread that takes [`Command`]s from a bounded channel and answers on
//! oneshot channels. Nothing else touches the ledger, so there are no locks,
//! and nothing here waits on the network.
//!
//! Every accepted input is written (log entry and the side records it
//! changes, plus the snapshot when an epoch is settled) in one synced batch
//! *before* it is acknowledged. If a write fails, the in-memory state is
//! rebuilt from the store, so it never runs ahead of what is durable.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::{multiaddr::Protocol, Multiaddr, PeerId};
use crowd_protocol::tracker::{MAX_HISTORY, MAX_LIST};
use crowd_protocol::wire::{from_cbor, to_cbor};
use crowd_protocol::{
    AccountView, Amount, Blob, DealAcceptance, DealProposal, DealQuery, DealView, Epoch, EpochRecord,
    FileQuery, FileRegistration, FileView, PieceReceipt, ProviderEntry, ProviderRegistration, RepairJob,
    RepairStats, SealSeed, SealTicket, Signed, SlotView, TrackerInfo, TrackerRequest, TrackerResponse,
    WindowChallenge,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::config::preset_name;
use super::metrics::Metrics;
use super::records::{self, HotRecords};
use super::repair::{self, SlotKey};
use super::store::{keys, Batch, Store};
use super::ServiceError;
use crate::{
    sign_epoch, AccountId, Deal, DealId, DealState, Event, File, FileId, FileState, Input, Ledger,
    LedgerConfig, LedgerError, LogEntry, MAX_START_LEAD, MIN_START_LEAD,
};

/// Most addresses a provider may register, and longest address text.
pub const MAX_ADDRS: usize = 16;
pub const MAX_ADDR_LEN: usize = 256;
/// Manifests one client may register.
pub const MAX_MANIFESTS_PER_CLIENT: u64 = 256;
/// Longest root CID accepted (bytes).
pub const MAX_ROOT_LEN: usize = 128;
/// Log entries read per store scan while recovering.
const SCAN_CHUNK: usize = 4096;
/// Log entries read at once for a `Log` page (each may be megabytes).
const LOG_SCAN_BATCH: usize = 4;

/// The open epoch's wall clock, set by the epoch loop and read for `Info`.
#[derive(Debug, Default)]
pub struct Clock {
    epoch_ms: AtomicU64,
    ends_at_unix_ms: AtomicU64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Clock {
    pub fn new(epoch: Duration) -> Self {
        let c = Self::default();
        c.epoch_ms.store(epoch.as_millis() as u64, Ordering::Relaxed);
        c
    }
    /// The open epoch ends `left` from now.
    pub fn set_remaining(&self, left: Duration) {
        self.ends_at_unix_ms.store(
            unix_ms().saturating_add(left.as_millis() as u64),
            Ordering::Relaxed,
        );
    }
    pub fn epoch_millis(&self) -> u64 {
        self.epoch_ms.load(Ordering::Relaxed)
    }
    pub fn remaining_millis(&self) -> u64 {
        self.ends_at_unix_ms
            .load(Ordering::Relaxed)
            .saturating_sub(unix_ms())
    }
}

/// Proven and faulted epochs of one deal (the side table behind
/// [`DealView`]'s counters and the providers' track records).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealStats {
    pub proven: u64,
    pub faulted: u64,
}

/// An archived deal as stored (`adeal/`): the ledger's last version of it
/// and its counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ArchivedDeal {
    deal: Deal,
    stats: DealStats,
}

/// What a provider's archived deals add to its track record (`precord/`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRecord {
    pub deals: u64,
    pub terminated: u64,
    pub proven: u64,
    pub faulted: u64,
}

/// A manifest and the client that registered it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestRecord {
    #[serde(with = "crowd_protocol::wire::peer")]
    owner: PeerId,
    #[serde(with = "crowd_protocol::wire::bytes")]
    bytes: Vec<u8>,
}

/// What the epoch loop should ask a provider for one deal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Published: send the ticket until the provider queued it, then poll its
    /// seal status for the signed commitment.
    Seal(SealTicket),
    /// Pre-committed and seeded: ask for the seal proof.
    ProveSeal(SealSeed),
    /// Active, challenged in the open epoch and not yet proven for it.
    Prove(WindowChallenge),
}

/// One deal's next step with its provider.
#[derive(Debug, Clone)]
pub struct Task {
    pub deal_id: DealId,
    pub provider: PeerId,
    pub addrs: Vec<Multiaddr>,
    pub job: Job,
}

/// A repair job to send to its provider (`sent == false`) or to poll.
#[derive(Debug, Clone)]
pub struct RepairTask {
    pub slot: SlotKey,
    pub job: Signed<RepairJob>,
    /// The file's manifest (dag-cbor), sent with the job (empty once sent).
    pub manifest: Vec<u8>,
    pub provider: PeerId,
    pub addrs: Vec<Multiaddr>,
    pub sent: bool,
}

/// What the epoch loop reports of a repair job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairUpdate {
    /// The provider took the job.
    Sent,
    /// The provider refused, failed, lost the job or did not answer.
    Failed(String),
}

/// A repair job the owner planned (memory only: after a restart lost
/// pieces are simply planned again).
#[derive(Debug, Clone)]
struct RepairRun {
    job: Signed<RepairJob>,
    provider: PeerId,
    expiry: Epoch,
    sent: bool,
}

/// Everything the epoch loop has to do with providers right now.
#[derive(Debug, Clone)]
pub struct Work {
    pub epoch: Epoch,
    pub tasks: Vec<Task>,
    pub repairs: Vec<RepairTask>,
}

/// What the store holds beyond the genesis, loaded at start.
struct Loaded {
    ledger: Ledger,
    addrs: BTreeMap<PeerId, Vec<String>>,
    stats: BTreeMap<DealId, DealStats>,
    manifest_counts: BTreeMap<PeerId, u64>,
    provider_records: BTreeMap<PeerId, ProviderRecord>,
}

/// The ledger, its store and the side tables.
pub struct State<S: Store> {
    key: Keypair,
    store: S,
    ledger: Ledger,
    addrs: BTreeMap<PeerId, Vec<String>>,
    stats: BTreeMap<DealId, DealStats>,
    manifest_counts: BTreeMap<PeerId, u64>,
    /// Archived deals' part of each provider's track record.
    provider_records: BTreeMap<PeerId, ProviderRecord>,
    /// Hot deals' part of each provider's track record, as counters.
    hot_records: HotRecords,
    /// Root CID bytes → the files stored under it (from the ledger).
    files_by_root: BTreeMap<Vec<u8>, Vec<FileId>>,
    repairs: BTreeMap<SlotKey, RepairRun>,
    /// Providers that failed an index's repair (not asked again for it).
    repair_excluded: BTreeMap<SlotKey, Vec<PeerId>>,
    /// Failed repair jobs per file since the tracker started.
    repair_failed: BTreeMap<FileId, u64>,
    /// Makes every planned job unique.
    repair_nonce: u64,
    faucet_max: Amount,
    clock: Arc<Clock>,
    metrics: Arc<Metrics>,
    /// While a replicated command is applied: its Raft log id (and the
    /// membership it sets), written in the batch of whatever it writes.
    raft_mark: Option<(Vec<u8>, Option<Vec<u8>>)>,
    /// The mark was written for the command being applied.
    raft_marked: bool,
}

impl<S: Store> std::fmt::Debug for State<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("epoch", &self.ledger.epoch())
            .field("log_len", &self.ledger.log_len())
            .finish()
    }
}

fn corrupt(what: impl std::fmt::Display) -> ServiceError {
    ServiceError::Corrupt(what.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, ServiceError> {
    from_cbor(what, bytes).map_err(corrupt)
}

fn peer_from_key(prefix: &[u8], key: &[u8]) -> Result<PeerId, ServiceError> {
    PeerId::from_bytes(&key[prefix.len()..]).map_err(|e| corrupt(format!("peer id in a key: {e}")))
}

fn u64_suffix(key: &[u8]) -> Result<u64, ServiceError> {
    key.len()
        .checked_sub(8)
        .and_then(|at| <[u8; 8]>::try_from(&key[at..]).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt("short key"))
}

/// The genesis stored by `init`, if any.
pub fn stored_genesis(store: &dyn Store) -> Result<Option<LedgerConfig>, ServiceError> {
    store
        .get(keys::GENESIS)?
        .map(|b| decode("genesis", &b))
        .transpose()
}

/// Fixes the genesis in a new store; an existing equal genesis is kept, a
/// different one is an error.
pub fn init_store(store: &dyn Store, genesis: &LedgerConfig) -> Result<(), ServiceError> {
    genesis.validate()?;
    match stored_genesis(store)? {
        Some(g) if g == *genesis => Ok(()),
        Some(_) => Err(ServiceError::Config(
            "the ledger already exists with another genesis".into(),
        )),
        None => {
            let mut b = Batch::default();
            b.put(keys::GENESIS, to_cbor(genesis));
            store.write(b)
        }
    }
}

/// Every stored log entry, in order (for `ledger verify`).
pub fn stored_log(store: &dyn Store) -> Result<Vec<LogEntry>, ServiceError> {
    let mut out: Vec<LogEntry> = Vec::new();
    loop {
        let from = keys::log(out.len() as u64);
        let chunk = store.scan(keys::LOG, &from, SCAN_CHUNK)?;
        if chunk.is_empty() {
            return Ok(out);
        }
        for (k, v) in chunk {
            let entry: LogEntry = decode("log entry", &v)?;
            if u64_suffix(&k)? != out.len() as u64 || entry.index != out.len() as u64 {
                return Err(corrupt(format!("log entry {} is missing", out.len())));
            }
            out.push(entry);
        }
    }
}

/// Epochs between two snapshots of the whole ledger: the snapshot is
/// O(ledger) bytes, so it is not rewritten every epoch; a restart replays at
/// most this many epochs of log after the last one.
pub const SNAPSHOT_EVERY: u64 = 32;

/// The stored snapshot, if a snapshot epoch was ever settled.
pub fn stored_snapshot(store: &dyn Store) -> Result<Option<Ledger>, ServiceError> {
    store
        .get(keys::SNAPSHOT)?
        .map(|b| decode("snapshot", &b))
        .transpose()
}

fn load(store: &dyn Store, genesis: LedgerConfig) -> Result<Loaded, ServiceError> {
    // the last snapshot, then the log after it
    let mut ledger = match stored_snapshot(store)? {
        Some(l) => {
            if *l.config() != genesis {
                return Err(corrupt("the snapshot was taken under another genesis"));
            }
            l.check_invariants()?;
            l
        }
        None => Ledger::new(genesis)?,
    };
    loop {
        let chunk = store.scan(keys::LOG, &keys::log(ledger.log_len()), SCAN_CHUNK)?;
        if chunk.is_empty() {
            break;
        }
        for (_, v) in chunk {
            let entry: LogEntry = decode("log entry", &v)?;
            let index = entry.index;
            if index != ledger.log_len() || entry.prev_head != ledger.head() {
                return Err(corrupt(format!(
                    "log entry {index} does not follow the one before"
                )));
            }
            let (again, _) = ledger
                .apply_logged(entry.input.clone())
                .map_err(|e| corrupt(format!("log entry {index} is refused on replay: {e}")))?;
            if again != entry {
                return Err(corrupt(format!("log entry {index} replays differently")));
            }
        }
    }
    let mut addrs = BTreeMap::new();
    for (k, v) in store.scan(keys::ADDRS, keys::ADDRS, usize::MAX)? {
        addrs.insert(peer_from_key(keys::ADDRS, &k)?, decode("addresses", &v)?);
    }
    let mut stats = BTreeMap::new();
    for (k, v) in store.scan(keys::DEAL_STATS, keys::DEAL_STATS, usize::MAX)? {
        stats.insert(u64_suffix(&k)?, decode("deal stats", &v)?);
    }
    let mut manifest_counts = BTreeMap::new();
    for (k, v) in store.scan(keys::MANIFEST_COUNT, keys::MANIFEST_COUNT, usize::MAX)? {
        let n = <[u8; 8]>::try_from(v.as_slice()).map_err(|_| corrupt("manifest count"))?;
        manifest_counts.insert(peer_from_key(keys::MANIFEST_COUNT, &k)?, u64::from_le_bytes(n));
    }
    let mut provider_records = BTreeMap::new();
    for (k, v) in store.scan(keys::PROVIDER_RECORD, keys::PROVIDER_RECORD, usize::MAX)? {
        provider_records.insert(
            peer_from_key(keys::PROVIDER_RECORD, &k)?,
            decode("provider record", &v)?,
        );
    }
    Ok(Loaded {
        ledger,
        addrs,
        stats,
        manifest_counts,
        provider_records,
    })
}

/// Root CID bytes → file ids, from the ledger's files.
fn index_roots(ledger: &Ledger) -> BTreeMap<Vec<u8>, Vec<FileId>> {
    let mut index: BTreeMap<Vec<u8>, Vec<FileId>> = BTreeMap::new();
    for f in ledger.files() {
        index.entry(f.root.clone()).or_default().push(f.id);
    }
    index
}

/// Parses registered address text for dialling (addresses that do not parse
/// were refused at registration; a trailing `/p2p/<id>` is dropped).
pub(super) fn dial_addrs(addrs: &[String]) -> Vec<Multiaddr> {
    addrs
        .iter()
        .filter_map(|a| a.parse::<Multiaddr>().ok())
        .map(|mut a| {
            if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
                a.pop();
            }
            a
        })
        .collect()
}

impl<S: Store> State<S> {
    /// Opens the ledger in `store`: the genesis `init` wrote, the last
    /// snapshot and the log after it. `key` must be the genesis tracker key.
    pub fn open(
        store: S,
        key: Keypair,
        faucet_max: Amount,
        clock: Arc<Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServiceError> {
        let genesis = stored_genesis(&store)?
            .ok_or_else(|| ServiceError::Config("no ledger here: run `crowd-tracker init` first".into()))?;
        if genesis.tracker_key != key.public().encode_protobuf() {
            return Err(ServiceError::Config(
                "identity.key is not the key this ledger was created with".into(),
            ));
        }
        let loaded = load(&store, genesis)?;
        let files_by_root = index_roots(&loaded.ledger);
        let hot_records = HotRecords::build(&loaded.ledger, &loaded.stats);
        let state = Self {
            key,
            store,
            ledger: loaded.ledger,
            addrs: loaded.addrs,
            stats: loaded.stats,
            manifest_counts: loaded.manifest_counts,
            provider_records: loaded.provider_records,
            hot_records,
            files_by_root,
            repairs: BTreeMap::new(),
            repair_excluded: BTreeMap::new(),
            repair_failed: BTreeMap::new(),
            repair_nonce: 0,
            faucet_max,
            clock,
            metrics,
            raft_mark: None,
            raft_marked: false,
        };
        state.metrics.gauges(&state.ledger);
        Ok(state)
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Rebuilds the in-memory state from the store (after a failed write).
    fn reload(&mut self) -> Result<(), ServiceError> {
        let loaded = load(&self.store, self.ledger.config().clone())?;
        self.ledger = loaded.ledger;
        self.addrs = loaded.addrs;
        self.stats = loaded.stats;
        self.manifest_counts = loaded.manifest_counts;
        self.provider_records = loaded.provider_records;
        self.files_by_root = index_roots(&self.ledger);
        self.hot_records = HotRecords::build(&self.ledger, &self.stats);
        Ok(())
    }

    /// Writes accepted entries with the side records their events change,
    /// and `extra`, in one synced batch; settling an epoch that is a
    /// multiple of [`SNAPSHOT_EVERY`] adds the snapshot.
    fn persist(
        &mut self,
        accepted: &[&(LogEntry, Vec<Event>)],
        mut batch: Batch,
    ) -> Result<(), ServiceError> {
        let mut stats: BTreeMap<DealId, DealStats> = BTreeMap::new();
        let mut settled = false;
        let mut snapshot = false;
        let mut archived: Vec<(&[Deal], &[File])> = Vec::new();
        for (entry, events) in accepted {
            batch.put(keys::log(entry.index), to_cbor(entry));
            for event in events {
                let (deal_id, epoch, proven) = match event {
                    Event::Archived { deals, files } => {
                        archived.push((deals.as_slice(), files.as_slice()));
                        continue;
                    }
                    Event::Paid { deal_id, epoch, .. } => (*deal_id, *epoch, true),
                    Event::Faulted { deal_id, epoch, .. } => (*deal_id, *epoch, false),
                    Event::EpochEnded { epoch, .. } => {
                        settled = true;
                        snapshot |= epoch % SNAPSHOT_EVERY == 0;
                        continue;
                    }
                    _ => continue,
                };
                batch.put(keys::history(deal_id, epoch), vec![u8::from(proven)]);
                let s = stats.entry(deal_id).or_insert_with(|| self.stats_of(deal_id));
                if proven {
                    s.proven = s.proven.saturating_add(1);
                } else {
                    s.faulted = s.faulted.saturating_add(1);
                }
            }
        }
        // archived deals and files move to their cold records
        let mut records: BTreeMap<PeerId, ProviderRecord> = BTreeMap::new();
        for (deals, files) in &archived {
            for d in deals.iter() {
                let s = stats
                    .remove(&d.id)
                    .or_else(|| self.stats.get(&d.id).copied())
                    .unwrap_or_default();
                let provider = d.proposal.provider;
                let r = records
                    .entry(provider)
                    .or_insert_with(|| self.provider_records.get(&provider).copied().unwrap_or_default());
                r.deals = r.deals.saturating_add(1);
                r.terminated = r
                    .terminated
                    .saturating_add(u64::from(d.state == DealState::Terminated));
                r.proven = r.proven.saturating_add(s.proven);
                r.faulted = r.faulted.saturating_add(s.faulted);
                let record = ArchivedDeal {
                    deal: d.clone(),
                    stats: s,
                };
                batch.put(keys::archived_deal(d.id), to_cbor(&record));
                batch.delete(keys::deal_stats(d.id));
            }
            for f in files.iter() {
                batch.put(keys::archived_file(f.id), to_cbor(f));
                batch.put(keys::archived_root(&f.root, f.id), Vec::new());
                batch.put(keys::archived_own(&f.client.0, f.id), Vec::new());
            }
        }
        for (peer, r) in &records {
            batch.put(keys::provider_record(peer), to_cbor(r));
        }
        for (deal_id, s) in &stats {
            batch.put(keys::deal_stats(*deal_id), to_cbor(s));
        }
        if snapshot {
            batch.put(keys::SNAPSHOT, to_cbor(&self.ledger));
        }
        if let Err(e) = self.write_store(batch) {
            tracing::error!("store write failed, reloading the ledger from the store: {e}");
            self.reload()?;
            return Err(e);
        }
        self.stats.extend(stats);
        self.provider_records.extend(records);
        for (deals, files) in &archived {
            for d in deals.iter() {
                self.stats.remove(&d.id);
            }
            for f in files.iter() {
                if let Some(ids) = self.files_by_root.get_mut(&f.root) {
                    ids.retain(|id| *id != f.id);
                    if ids.is_empty() {
                        self.files_by_root.remove(&f.root);
                    }
                }
            }
        }
        for (_, events) in accepted {
            self.metrics.events(events);
            for e in events.iter() {
                let changed: Vec<DealId> = match e {
                    Event::Archived { deals, .. } => deals.iter().map(|d| d.id).collect(),
                    e => records::deal_of(e).into_iter().collect(),
                };
                for id in changed {
                    self.hot_records.refresh(id, &self.ledger, &self.stats);
                }
                if let Event::FileRegistered { file_id, .. } = e {
                    if let Some(f) = self.ledger.file(*file_id) {
                        self.files_by_root.entry(f.root.clone()).or_default().push(f.id);
                    }
                }
            }
        }
        self.metrics.gauges_cheap(&self.ledger);
        if settled {
            self.metrics.gauges(&self.ledger);
        }
        Ok(())
    }

    /// Writes `batch` (synced), with the Raft mark of the replicated command
    /// being applied, if any.
    fn write_store(&mut self, mut batch: Batch) -> Result<(), ServiceError> {
        if let Some((applied, membership)) = &self.raft_mark {
            batch.put(keys::RAFT_APPLIED, applied.clone());
            if let Some(m) = membership {
                batch.put(keys::RAFT_MEMBERSHIP, m.clone());
            }
        }
        self.store.write(batch)?;
        self.raft_marked |= self.raft_mark.is_some();
        Ok(())
    }

    /// Applies a command committed in the replicas' Raft log at `applied`
    /// (the log id, CBOR; `membership` when the entry set one, `cmd` when it
    /// carries a command): exactly as the single tracker handles it, with
    /// the log id written in the same batch as the command's effects (or
    /// alone, when it wrote nothing), so a restart resumes after the last
    /// command applied, never applying one twice. A refusal is an answer
    /// (`Ok`); `Err` is a store failure: the replica must stop applying.
    pub fn apply_replicated(
        &mut self,
        applied: Vec<u8>,
        membership: Option<Vec<u8>>,
        cmd: Option<super::raft::Replicated>,
    ) -> Result<super::raft::ReplicatedResult, ServiceError> {
        use super::raft::{Replicated, ReplicatedResult};
        self.raft_mark = Some((applied, membership));
        self.raft_marked = false;
        let fatal = |e: ServiceError| match e {
            ServiceError::Ledger(_) | ServiceError::Config(_) | ServiceError::Protocol(_) => {
                Ok(e.to_string())
            }
            e => Err(e),
        };
        let result = (|| {
            Ok(match cmd {
                None => ReplicatedResult::Nothing,
                Some(Replicated::Request { peer, request }) => match self.handle(peer, request) {
                    Ok(r) => ReplicatedResult::Response(Ok(r)),
                    Err(e) => ReplicatedResult::Response(Err(fatal(e)?)),
                },
                Some(Replicated::Apply(inputs)) => {
                    ReplicatedResult::Applied(self.apply_batch_durably(inputs)?)
                }
                Some(Replicated::EndEpoch { epoch }) => match self.end_epoch(epoch) {
                    Ok(events) => ReplicatedResult::Settled(Ok(events)),
                    Err(e) => ReplicatedResult::Settled(Err(fatal(e)?)),
                },
            })
        })();
        let marked = match &result {
            Ok(_) if !self.raft_marked => self.write_store(Batch::default()),
            _ => Ok(()),
        };
        self.raft_mark = None;
        marked?;
        result
    }

    /// The Raft log id of the last command applied here and the last
    /// membership (CBOR, as [`State::apply_replicated`] wrote them).
    pub fn raft_applied(&self) -> Result<RaftMarks, ServiceError> {
        Ok((
            self.store.get(keys::RAFT_APPLIED)?,
            self.store.get(keys::RAFT_MEMBERSHIP)?,
        ))
    }

    /// Applies one input and makes it durable with `extra`.
    fn apply(&mut self, input: Input, extra: Batch) -> Result<Vec<Event>, ServiceError> {
        let applied = self.ledger.apply_logged(input)?;
        self.persist(&[&applied], extra)?;
        Ok(applied.1)
    }

    /// Applies inputs that arrived together (provider results), verifying
    /// their proofs in parallel, and makes the accepted ones durable in one
    /// batch. One result per input.
    pub fn apply_batch(&mut self, inputs: Vec<Input>) -> Vec<Result<Vec<Event>, String>> {
        let n = inputs.len();
        match self.apply_batch_durably(inputs) {
            Ok(results) => results,
            Err(e) => {
                let msg = format!("not recorded: {e}");
                (0..n).map(|_| Err(msg.clone())).collect()
            }
        }
    }

    /// [`State::apply_batch`], with a failed write as the error.
    fn apply_batch_durably(
        &mut self,
        inputs: Vec<Input>,
    ) -> Result<Vec<Result<Vec<Event>, String>>, ServiceError> {
        let results = self.ledger.apply_proofs_logged(inputs);
        for r in &results {
            if let Err(LedgerError::InvalidProof { .. }) = r {
                self.metrics.proofs_invalid.inc();
            }
        }
        let accepted: Vec<&(LogEntry, Vec<Event>)> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        if !accepted.is_empty() {
            self.persist(&accepted, Batch::default())?;
        }
        Ok(results
            .into_iter()
            .map(|r| r.map(|(_, events)| events).map_err(|e| e.to_string()))
            .collect())
    }

    /// Settles the open epoch `epoch`: signs (epoch, head) and applies it.
    pub fn end_epoch(&mut self, epoch: Epoch) -> Result<Vec<Event>, ServiceError> {
        let input = sign_epoch(&self.key, epoch, &self.ledger.head())?;
        self.apply(input, Batch::default())
    }

    /// What to ask providers now: tickets for published deals, seal proofs
    /// for seeded ones, window proofs for active deals challenged in the open
    /// epoch and not proven for it yet.
    pub fn work(&mut self) -> Work {
        let repairs = self.repair_work();
        let epoch = self.ledger.epoch();
        let randomness = self.ledger.randomness();
        let mut tasks = Vec::new();
        for d in self.ledger.deals().filter(|d| d.state.is_live()) {
            let job = match &d.state {
                DealState::Published => Job::Seal(SealTicket {
                    proposal: d.proposal_id,
                    deal_id: d.id,
                    ticket: d.ticket,
                }),
                DealState::PreCommitted { seed: Some(seed), .. } => Job::ProveSeal(SealSeed {
                    deal_id: d.id,
                    seed: *seed,
                }),
                DealState::Active { proven_epoch, .. }
                    if d.proposal.start_epoch <= epoch
                        && epoch < d.end_epoch()
                        && *proven_epoch != Some(epoch) =>
                {
                    Job::Prove(WindowChallenge {
                        deal_id: d.id,
                        epoch,
                        randomness,
                    })
                }
                _ => continue,
            };
            let provider = d.proposal.provider;
            tasks.push(Task {
                deal_id: d.id,
                provider,
                addrs: self
                    .addrs
                    .get(&provider)
                    .map(|a| dial_addrs(a))
                    .unwrap_or_default(),
                job,
            });
        }
        Work {
            epoch,
            tasks,
            repairs,
        }
    }

    /// Repairs to send or poll: finishes runs whose index is no longer
    /// lost (published, or the file ended) or whose job expired (a
    /// failure), then plans a job for each lost index without one, fewest
    /// healthy pieces first, at most [`repair::MAX_RUNNING`] at once.
    fn repair_work(&mut self) -> Vec<RepairTask> {
        let epoch = self.ledger.epoch();
        let runs = std::mem::take(&mut self.repairs);
        for (slot, run) in runs {
            if !self.ledger.is_lost(slot.0, slot.1) {
                self.repair_excluded.remove(&slot);
                continue;
            }
            if epoch > run.expiry {
                self.repair_failure(slot, run.provider, "the job expired unpublished");
                continue;
            }
            self.repairs.insert(slot, run);
        }
        let lost = self.ledger.lost_slots();
        let mut providers: Option<Vec<ProviderEntry>> = None;
        for (file_id, index, _healthy) in lost {
            if self.repairs.len() >= repair::MAX_RUNNING {
                break;
            }
            let slot = (file_id, index);
            if self.repairs.contains_key(&slot) {
                continue;
            }
            let Some(file) = self.ledger.file(file_id) else {
                continue;
            };
            let providers = providers.get_or_insert_with(|| {
                // only providers that can take a deal now
                let stake = self.ledger.config().provider_stake;
                let mut all = self.providers(None, usize::MAX);
                all.retain(|p| p.staked >= stake);
                all
            });
            let excluded = self.repair_excluded.get(&slot).cloned().unwrap_or_default();
            self.repair_nonce = self.repair_nonce.wrapping_add(1);
            let nonce = (epoch << 20) ^ self.repair_nonce;
            let job = match repair::plan(&self.ledger, file, index, providers, &excluded, nonce) {
                Ok(job) => job,
                Err(repair::Blocked::NoProvider) if !excluded.is_empty() => {
                    // every candidate failed once: let them try again
                    self.repair_excluded.remove(&slot);
                    continue;
                }
                Err(why) => {
                    tracing::debug!(file_id, index, ?why, "repair blocked");
                    continue;
                }
            };
            let provider = job.proposal.provider;
            let expiry = job.proposal.expiry_epoch;
            match Signed::sign(&self.key, &self.ledger.network(), &job) {
                Ok(job) => {
                    tracing::info!(file_id, index, %provider, "repair planned");
                    self.repairs.insert(
                        slot,
                        RepairRun {
                            job,
                            provider,
                            expiry,
                            sent: false,
                        },
                    );
                }
                Err(e) => tracing::warn!("signing a repair job: {e}"),
            }
        }
        self.metrics.repairs_running.set(self.repairs.len() as i64);
        let mut tasks = Vec::with_capacity(self.repairs.len());
        for (slot, run) in &self.repairs {
            let Some(file) = self.ledger.file(slot.0) else {
                continue;
            };
            // only a job still to be sent carries the manifest (a poll does not)
            let manifest = if run.sent {
                Vec::new()
            } else {
                match self.store.get(&keys::file_manifest(&file.manifest)) {
                    Ok(Some(m)) => m,
                    _ => {
                        tracing::warn!(file_id = slot.0, "no stored manifest: cannot repair");
                        continue;
                    }
                }
            };
            tasks.push(RepairTask {
                slot: *slot,
                job: run.job.clone(),
                manifest,
                provider: run.provider,
                addrs: self
                    .addrs
                    .get(&run.provider)
                    .map(|a| dial_addrs(a))
                    .unwrap_or_default(),
                sent: run.sent,
            });
        }
        tasks
    }

    /// A repair job failed: its provider is not asked for this index again
    /// (until every candidate failed), and the index is planned anew.
    fn repair_failure(&mut self, slot: SlotKey, provider: PeerId, why: &str) {
        tracing::warn!(file_id = slot.0, index = slot.1, %provider, "repair failed: {why}");
        self.metrics.repairs_failed.inc();
        *self.repair_failed.entry(slot.0).or_default() += 1;
        self.repair_excluded.entry(slot).or_default().push(provider);
        self.repairs.remove(&slot);
    }

    /// What the epoch loop learnt of a repair job (`job` is its id; an
    /// update for a job that is no longer the index's run is ignored).
    pub fn repair_update(&mut self, slot: SlotKey, job: [u8; 32], update: RepairUpdate) {
        let Some(run) = self.repairs.get_mut(&slot).filter(|r| r.job.id() == job) else {
            return;
        };
        match update {
            RepairUpdate::Sent => run.sent = true,
            RepairUpdate::Failed(why) => {
                let provider = run.provider;
                self.repair_failure(slot, provider, &why);
            }
        }
    }

    /// Answers one tracker request; refusals are one-line errors.
    pub fn handle(&mut self, peer: PeerId, request: TrackerRequest) -> Result<TrackerResponse, ServiceError> {
        match request {
            TrackerRequest::Info => Ok(TrackerResponse::Info(self.info())),
            TrackerRequest::Register { registration, addrs } => self.register(peer, registration, addrs),
            TrackerRequest::Providers => Ok(TrackerResponse::Providers(self.providers(None, MAX_LIST))),
            TrackerRequest::ProvidersAfter(after) => {
                Ok(TrackerResponse::Providers(self.providers(Some(after), MAX_LIST)))
            }
            TrackerRequest::Publish {
                proposal,
                acceptance,
                receipt,
            } => self.publish(peer, proposal, acceptance, receipt),
            TrackerRequest::Admit(proposal) => self.admit(peer, proposal),
            TrackerRequest::Account(who) => {
                if who != peer {
                    return Err(ServiceError::Config(format!(
                        "the account of {who} is answered only to {who} itself"
                    )));
                }
                let a = self.ledger.account(&AccountId(who));
                Ok(TrackerResponse::Account(AccountView {
                    available: a.available,
                    locked_escrow: a.locked_escrow,
                    locked_collateral: a.locked_collateral,
                    nonce: a.nonce,
                    staked: a.staked,
                }))
            }
            TrackerRequest::Faucet { account, amount } => self.faucet(account, amount),
            TrackerRequest::Transfer(signed) => {
                self.expect_sender(peer, signed.claimed_signer(), "transfer")?;
                self.apply(Input::Transfer(signed), Batch::default())?;
                Ok(self.moved(peer))
            }
            TrackerRequest::Withdraw(signed) => {
                self.expect_sender(peer, signed.claimed_signer(), "withdrawal")?;
                self.apply(Input::Withdraw(signed), Batch::default())?;
                tracing::info!(account = %peer, "withdrawal");
                Ok(self.moved(peer))
            }
            TrackerRequest::RegisterManifest { root, manifest, file } => {
                self.register_manifest(peer, root, manifest, file)
            }
            TrackerRequest::RemoveFile(signed) => {
                self.expect_sender(peer, signed.claimed_signer(), "removal")?;
                let events = self.apply(Input::RemoveFile(signed), Batch::default())?;
                let refund = events
                    .iter()
                    .find_map(|e| match e {
                        Event::FileRemoved { refund, .. } => Some(*refund),
                        _ => None,
                    })
                    .ok_or_else(|| corrupt("a removal emitted no FileRemoved event"))?;
                Ok(TrackerResponse::FileRemoved { refund })
            }
            TrackerRequest::RenewFile(signed) => {
                self.expect_sender(peer, signed.claimed_signer(), "renewal")?;
                let events = self.apply(Input::RenewFile(signed), Batch::default())?;
                events
                    .iter()
                    .find_map(|e| match e {
                        Event::FileRenewed {
                            end_epoch, locked, ..
                        } => Some(TrackerResponse::FileRenewed {
                            end_epoch: *end_epoch,
                            locked: *locked,
                        }),
                        _ => None,
                    })
                    .ok_or_else(|| corrupt("a renewal emitted no FileRenewed event"))
            }
            TrackerRequest::Files(query) => self.files(peer, query),
            TrackerRequest::Manifest { root } => {
                if root.len() > MAX_ROOT_LEN {
                    return Err(ServiceError::Config(format!("root CID of {} bytes", root.len())));
                }
                let prefix = keys::manifests_of(&root);
                let mut records = Vec::new();
                for (_, b) in self
                    .store
                    .scan(&prefix, &prefix, crowd_protocol::MAX_MANIFESTS_PER_ROOT)?
                {
                    records.push(decode::<ManifestRecord>("manifest record", &b)?);
                }
                // the asker's own first; the rest as stored
                records.sort_by_key(|r| r.owner != peer);
                Ok(TrackerResponse::Manifests(
                    records.into_iter().map(|r| Blob(r.bytes)).collect(),
                ))
            }
            TrackerRequest::Deals(query) => self.deals(peer, query),
            TrackerRequest::OwnManifests { after } => self.own_manifests(peer, after),
            TrackerRequest::Log { from } => self.log_page(from),
            TrackerRequest::Head { .. } | TrackerRequest::Replicas | TrackerRequest::ChangeReplicas(_) => {
                Err(ServiceError::Config(
                    "this is answered by the tracker service, not the ledger owner".into(),
                ))
            }
        }
    }

    /// Stored log entries from `from` (as stored: the reader checks them),
    /// at most [`crowd_protocol::tracker::MAX_LOG_PAGE`] and, past the first,
    /// at most [`crowd_protocol::tracker::MAX_LOG_PAGE_BYTES`] in all. Read
    /// [`LOG_SCAN_BATCH`] at a time: an entry may be megabytes (a seal proof),
    /// and anyone may ask.
    fn log_page(&self, from: u64) -> Result<TrackerResponse, ServiceError> {
        use crowd_protocol::tracker::{MAX_LOG_PAGE, MAX_LOG_PAGE_BYTES};
        let genesis = stored_genesis(&self.store)?.ok_or_else(|| corrupt("the store has no genesis"))?;
        let total = self.ledger.log_len();
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut next = from;
        'page: loop {
            let batch = self.store.scan(keys::LOG, &keys::log(next), LOG_SCAN_BATCH)?;
            if batch.is_empty() {
                break;
            }
            for (k, v) in batch {
                let full = entries.len() >= MAX_LOG_PAGE
                    || (!entries.is_empty() && bytes + v.len() > MAX_LOG_PAGE_BYTES);
                if u64_suffix(&k)? != next || full {
                    break 'page;
                }
                bytes += v.len();
                entries.push(Blob(v));
                next += 1;
            }
        }
        Ok(TrackerResponse::Log(crowd_protocol::LogPage {
            genesis: Blob(to_cbor(&genesis)),
            total,
            entries,
        }))
    }

    /// A signed request must come from its signer.
    fn expect_sender(&self, peer: PeerId, signer: Option<PeerId>, what: &str) -> Result<(), ServiceError> {
        match signer {
            Some(s) if s == peer => Ok(()),
            Some(s) => Err(ServiceError::Config(format!(
                "a {what} signed by {s} must be sent by it, not {peer}"
            ))),
            None => Err(ServiceError::Config(format!(
                "the {what}'s signer key does not decode"
            ))),
        }
    }

    /// Files by root (anyone who names it) or the sender's own, paged; in
    /// file id order, those in the ledger's state and the archived ones.
    fn files(&self, peer: PeerId, query: FileQuery) -> Result<TrackerResponse, ServiceError> {
        let (hot, prefix, from): (Vec<Cow<'_, File>>, Vec<u8>, Vec<u8>) = match query {
            FileQuery::Root(root) => {
                let hot = self
                    .files_by_root
                    .get(&root)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| self.ledger.file(*id))
                    .take(MAX_LIST)
                    .map(Cow::Borrowed)
                    .collect();
                let prefix = keys::archived_root_prefix(&root);
                (hot, prefix.clone(), prefix)
            }
            FileQuery::Own { after } => {
                let hot = self
                    .ledger
                    .files()
                    .filter(|f| f.client.0 == peer && after.is_none_or(|a| f.id > a))
                    .take(MAX_LIST)
                    .map(Cow::Borrowed)
                    .collect();
                let prefix = keys::archived_own_prefix(&peer);
                let from = match after.and_then(|a| a.checked_add(1)) {
                    Some(next) => keys::archived_own(&peer, next),
                    None if after.is_some() => return Ok(TrackerResponse::Files(Vec::new())),
                    None => prefix.clone(),
                };
                (hot, prefix, from)
            }
        };
        let mut files = hot;
        for (k, _) in self.store.scan(&prefix, &from, MAX_LIST)? {
            let id = u64_suffix(&k)?;
            let bytes = self
                .store
                .get(&keys::archived_file(id))?
                .ok_or_else(|| corrupt(format!("archived file {id} is indexed but missing")))?;
            files.push(Cow::Owned(decode("archived file", &bytes)?));
        }
        files.sort_by_key(|f| f.id);
        files.truncate(MAX_LIST);
        let views = files
            .iter()
            .map(|f| self.file_view(f))
            .collect::<Result<_, _>>()?;
        Ok(TrackerResponse::Files(views))
    }

    /// The counters of a deal in the ledger's state.
    fn stats_of(&self, id: DealId) -> DealStats {
        self.stats.get(&id).copied().unwrap_or_default()
    }

    /// A deal in the ledger's state or the archive, with its counters.
    fn any_deal(&self, id: DealId) -> Result<Option<(Cow<'_, Deal>, DealStats)>, ServiceError> {
        if let Some(d) = self.ledger.deal(id) {
            return Ok(Some((Cow::Borrowed(d), self.stats_of(id))));
        }
        match self.store.get(&keys::archived_deal(id))? {
            Some(bytes) => {
                let a: ArchivedDeal = decode("archived deal", &bytes)?;
                Ok(Some((Cow::Owned(a.deal), a.stats)))
            }
            None => Ok(None),
        }
    }

    fn file_view(&self, f: &File) -> Result<FileView, ServiceError> {
        let mut repairs = RepairStats {
            done: f.repairs,
            cost: f.repair_cost,
            failed: self.repair_failed.get(&f.id).copied().unwrap_or(0),
            ..RepairStats::default()
        };
        let slots = f
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let deal = self.any_deal(s.deal)?.map(|(d, _)| d);
                let deal = deal.as_deref();
                let running = self.repairs.contains_key(&(f.id, i as u32));
                let live = deal.is_some_and(|d| d.state.is_live());
                let state = match deal {
                    _ if f.state == FileState::Live && !live && running => "repairing",
                    _ if f.state == FileState::Live && !live => "lost",
                    Some(d) => d.state.name(),
                    None => "unknown",
                };
                if f.state == FileState::Live && !live {
                    if running {
                        repairs.running += 1;
                    } else {
                        repairs.queued += 1;
                    }
                }
                let provider = deal.map_or(f.client.0, |d| d.proposal.provider);
                Ok(SlotView {
                    index: i as u64,
                    piece: s.piece,
                    piece_size: s.piece_size,
                    deal_id: s.deal,
                    provider,
                    addrs: self.addrs.get(&provider).cloned().unwrap_or_default(),
                    state: state.to_string(),
                    consecutive_faults: deal.map_or(0, |d| d.consecutive_faults),
                })
            })
            .collect::<Result<_, ServiceError>>()?;
        Ok(FileView {
            id: f.id,
            client: f.client.0,
            root: f.root.clone(),
            manifest: f.manifest,
            data_pieces: f.data_pieces,
            end_epoch: f.end_epoch,
            state: f.state.name().to_string(),
            slots,
            repairs,
        })
    }

    /// The manifests `peer` registered, a page at a time, in root order.
    fn own_manifests(&self, peer: PeerId, after: Option<Blob>) -> Result<TrackerResponse, ServiceError> {
        let prefix = keys::owned_prefix(&peer);
        let from = match &after {
            // just past `after`
            Some(Blob(root)) => {
                let mut k = keys::owned(&peer, root);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let page = crowd_protocol::tracker::MAX_OWN_MANIFESTS;
        let entries = self.store.scan(&prefix, &from, page + 1)?;
        let more = entries.len() > page;
        let mut manifests = Vec::with_capacity(page);
        let mut last = None;
        for (k, _) in entries.into_iter().take(page) {
            let root = k[prefix.len()..].to_vec();
            if let Some(b) = self.store.get(&keys::manifest(&root, &peer))? {
                let record: ManifestRecord = decode("manifest record", &b)?;
                manifests.push(Blob(record.bytes));
            }
            last = Some(root);
        }
        Ok(TrackerResponse::OwnManifests {
            manifests,
            next: if more { last.map(Blob) } else { None },
        })
    }

    fn info(&self) -> TrackerInfo {
        let c = self.ledger.config();
        TrackerInfo {
            network: self.ledger.network(),
            epoch: self.ledger.epoch(),
            epoch_millis: self.clock.epoch_millis(),
            epoch_ends_in_millis: self.clock.remaining_millis(),
            randomness: self.ledger.randomness(),
            head: self.ledger.head(),
            log_len: self.ledger.log_len(),
            faucet: c.faucet,
            fault_threshold: c.fault_threshold,
            min_start_lead: MIN_START_LEAD,
            max_start_lead: MAX_START_LEAD,
            sealing: preset_name(&c.params).to_string(),
            provider_stake: c.provider_stake,
            min_collateral_per_gib: c.min_collateral_per_gib,
        }
    }

    fn register(
        &mut self,
        peer: PeerId,
        registration: Signed<ProviderRegistration>,
        addrs: Vec<String>,
    ) -> Result<TrackerResponse, ServiceError> {
        let refuse = |s: String| Err(ServiceError::Config(s));
        match registration.claimed_signer() {
            Some(signer) if signer == peer => {}
            Some(signer) => {
                return refuse(format!(
                    "a registration signed by {signer} must be sent by it, not {peer}"
                ))
            }
            None => return refuse("the registration's signer key does not decode".into()),
        }
        if addrs.len() > MAX_ADDRS {
            return refuse(format!("{} addresses, at most {MAX_ADDRS}", addrs.len()));
        }
        for a in &addrs {
            if a.len() > MAX_ADDR_LEN {
                return refuse(format!("an address is longer than {MAX_ADDR_LEN} bytes"));
            }
            let parsed: Multiaddr = a
                .parse()
                .map_err(|e| ServiceError::Config(format!("'{a}' is not a multiaddress: {e}")))?;
            if parsed
                .iter()
                .any(|p| matches!(p, Protocol::P2p(id) if id != peer))
            {
                return refuse(format!("'{a}' names another peer"));
            }
        }
        let mut extra = Batch::default();
        extra.put(keys::addrs(&peer), to_cbor(&addrs));
        self.apply(Input::RegisterProvider(registration), extra)?;
        tracing::info!(provider = %peer, ?addrs, "provider registered");
        self.addrs.insert(peer, addrs);
        Ok(TrackerResponse::Registered)
    }

    /// Publishes a deal, sent by its client or its provider only: a
    /// stranger holding an abandoned proposal and its acceptance cannot
    /// lock the client's escrow for it. A proposal that names no piece is
    /// published by its client only: sending the provider's receipt is the
    /// client's word that the piece it names is the client's (a provider
    /// cannot make the client pay for bytes of its own choosing).
    fn publish(
        &mut self,
        peer: PeerId,
        proposal: Signed<DealProposal>,
        acceptance: Signed<DealAcceptance>,
        receipt: Option<Signed<PieceReceipt>>,
    ) -> Result<TrackerResponse, ServiceError> {
        let (_, p) = proposal
            .open(&self.ledger.network(), None)
            .map_err(LedgerError::from)?;
        if peer != p.client && peer != p.provider {
            return Err(ServiceError::Config(format!(
                "a deal is published by its client or provider, not {peer}"
            )));
        }
        if !p.names_piece() && peer != p.client {
            return Err(ServiceError::Config(format!(
                "a deal whose proposal names no piece is published by its client, not {peer}"
            )));
        }
        // a client retrying after a lost answer gets the same deal
        if let Some(d) = self.ledger.deal_by_proposal(&proposal.id()) {
            return Ok(TrackerResponse::Published { deal_id: d.id });
        }
        let events = self.apply(
            Input::PublishDeal {
                proposal,
                acceptance,
                receipt,
            },
            Batch::default(),
        )?;
        match events.iter().find_map(|e| match e {
            Event::DealPublished { deal_id, .. } => Some(*deal_id),
            _ => None,
        }) {
            Some(deal_id) => {
                tracing::info!(deal_id, "deal published");
                Ok(TrackerResponse::Published { deal_id })
            }
            None => Err(corrupt("a published deal emitted no DealPublished event")),
        }
    }

    /// Locks a proposal's escrow (paid admission) for its client, the
    /// sender, and answers the tracker-signed admission a provider asks
    /// for; a proposal admitted already gets its admission again.
    fn admit(
        &mut self,
        peer: PeerId,
        proposal: Signed<DealProposal>,
    ) -> Result<TrackerResponse, ServiceError> {
        let (_, p) = proposal
            .open(&self.ledger.network(), None)
            .map_err(LedgerError::from)?;
        if peer != p.client {
            return Err(ServiceError::Config(format!(
                "a proposal is admitted for its client, not for {peer}"
            )));
        }
        let id = proposal.id();
        if self.ledger.admission(&id).is_none() {
            self.apply(Input::AdmitProposal(proposal), Batch::default())?;
        }
        let lock = self
            .ledger
            .admission(&id)
            .ok_or_else(|| corrupt("an admitted proposal has no lock"))?;
        let admission = crowd_protocol::Admission {
            proposal: id,
            client: lock.client.0,
            escrow: lock.escrow,
            until_epoch: lock.until_epoch,
        };
        Ok(TrackerResponse::Admitted(Signed::sign(
            &self.key,
            &self.ledger.network(),
            &admission,
        )?))
    }

    /// The answer to a transfer or withdrawal: the sender's free balance.
    fn moved(&self, peer: PeerId) -> TrackerResponse {
        TrackerResponse::Moved {
            available: self.ledger.account(&AccountId(peer)).available,
        }
    }

    fn faucet(&mut self, account: PeerId, amount: Amount) -> Result<TrackerResponse, ServiceError> {
        if !self.ledger.config().faucet {
            return Err(LedgerError::FaucetDisabled.into());
        }
        if amount == 0 || amount > self.faucet_max {
            return Err(ServiceError::Config(format!(
                "faucet amount {amount} is outside 1..={}",
                self.faucet_max
            )));
        }
        let nonce = self.ledger.mints();
        self.apply(
            Input::Mint {
                account: AccountId(account),
                amount,
                nonce,
            },
            Batch::default(),
        )?;
        Ok(TrackerResponse::Minted { amount })
    }

    fn register_manifest(
        &mut self,
        peer: PeerId,
        root: Vec<u8>,
        manifest: Vec<u8>,
        file: Option<Signed<FileRegistration>>,
    ) -> Result<TrackerResponse, ServiceError> {
        let refuse = |s: String| Err(ServiceError::Config(s));
        if manifest.len() > crowd_protocol::MAX_MANIFEST {
            return refuse(format!(
                "manifest of {} bytes is above the {}-byte limit",
                manifest.len(),
                crowd_protocol::MAX_MANIFEST
            ));
        }
        if root.is_empty() || root.len() > MAX_ROOT_LEN {
            return refuse(format!("root CID of {} bytes", root.len()));
        }
        let parsed =
            crowd_protocol::Manifest::decode(&manifest).map_err(|e| ServiceError::Config(format!("{e}")))?;
        if parsed.root.to_bytes() != root {
            return refuse(format!("the manifest describes {}, not this root", parsed.root));
        }
        // only accounts with money in the ledger (an empty file has no
        // deals), each with a bounded number of manifests (below)
        let funded = self.ledger.account(&AccountId(peer)).total().unwrap_or(0) > 0;
        if !funded && !self.ledger.deals().any(|d| d.proposal.client == peer) {
            return refuse("manifests are kept only for clients with funds or a published deal".into());
        }
        // one manifest per (root, client): a manifest claiming another
        // client's root sits beside it, never replaces it; `get` tries each
        let key = keys::manifest(&root, &peer);
        let mut batch = Batch::default();
        let count = self.manifest_counts.get(&peer).copied().unwrap_or(0);
        let new_count = match self.store.get(&key)? {
            Some(_) => count,
            None if count >= MAX_MANIFESTS_PER_CLIENT => {
                return refuse(format!(
                    "client {peer} already has {MAX_MANIFESTS_PER_CLIENT} manifests"
                ));
            }
            None => {
                let prefix = keys::manifests_of(&root);
                let per_root = crowd_protocol::MAX_MANIFESTS_PER_ROOT;
                if self.store.scan(&prefix, &prefix, per_root)?.len() >= per_root {
                    return refuse(format!(
                        "this root already has {per_root} manifests, from other clients"
                    ));
                }
                count + 1
            }
        };
        let cid = crowd_protocol::manifest_cid(&manifest);
        let digest: [u8; 32] = cid
            .hash()
            .digest()
            .try_into()
            .map_err(|_| corrupt("a manifest CID digest is not 32 bytes"))?;
        let register = match file {
            Some(signed) => self.check_file_registration(peer, &signed, &root, &digest, &parsed)?,
            None if !parsed.pieces.is_empty() => {
                return refuse("a file with pieces must be registered with its deals".into())
            }
            None => None,
        };
        if register.is_some() {
            batch.put(keys::file_manifest(&digest), manifest.clone());
        }
        batch.put(
            key,
            to_cbor(&ManifestRecord {
                owner: peer,
                bytes: manifest,
            }),
        );
        batch.put(keys::manifest_count(&peer), new_count.to_le_bytes().to_vec());
        batch.put(keys::owned(&peer, &root), Vec::new());
        match register {
            // the ledger entry and the manifest land in one batch
            Some(signed) => {
                self.apply(Input::RegisterFile(signed), batch)?;
            }
            None => self.write_store(batch)?,
        }
        self.manifest_counts.insert(peer, new_count);
        Ok(TrackerResponse::ManifestStored(cid.to_bytes()))
    }

    /// Checks a file registration against the manifest it comes with:
    /// `Some` to apply, `None` when these deals are already registered as
    /// this file (a retry).
    fn check_file_registration(
        &self,
        peer: PeerId,
        signed: &Signed<FileRegistration>,
        root: &[u8],
        digest: &[u8; 32],
        manifest: &crowd_protocol::Manifest,
    ) -> Result<Option<Signed<FileRegistration>>, ServiceError> {
        let refuse = |s: &str| Err(ServiceError::Config(format!("file registration: {s}")));
        self.expect_sender(peer, signed.claimed_signer(), "file registration")?;
        let (_, reg) = signed
            .open(&self.ledger.network(), Some(&peer))
            .map_err(|e| ServiceError::Config(e.to_string()))?;
        if reg.root != root || reg.manifest != *digest {
            return refuse("it names another root or manifest");
        }
        let deals: Vec<u64> = manifest.pieces.iter().map(|p| p.deal_id).collect();
        let ordered = manifest
            .pieces
            .iter()
            .enumerate()
            .all(|(i, p)| p.index == i as u64);
        if reg.deals != deals || !ordered {
            return refuse("its deals are not the manifest's, by piece index");
        }
        if reg.data_pieces as usize != manifest.layout.params().data_shards() {
            return refuse("its data pieces are not the layout's");
        }
        let registered = reg.deals.first().and_then(|d| self.ledger.deal_file(*d));
        match registered.and_then(|(id, _)| self.ledger.file(id)) {
            Some(f) if f.manifest == *digest && f.slots.len() == reg.deals.len() => Ok(None),
            _ => Ok(Some(signed.clone())),
        }
    }

    /// Deals are described only to their client and provider.
    fn deals(&self, peer: PeerId, query: DealQuery) -> Result<TrackerResponse, ServiceError> {
        let deals: Vec<(Cow<'_, Deal>, DealStats)> = match query {
            DealQuery::Ids(ids) => {
                if ids.len() > MAX_LIST {
                    return Err(ServiceError::Config(format!(
                        "{} deal ids asked, at most {MAX_LIST}",
                        ids.len()
                    )));
                }
                let mut found = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some((d, s)) = self.any_deal(id)? {
                        if d.proposal.client == peer || d.proposal.provider == peer {
                            found.push((d, s));
                        }
                    }
                }
                found
            }
            DealQuery::Client(client) => {
                if client != peer {
                    return Err(ServiceError::Config(format!(
                        "the deals of {client} are answered only to {client} itself"
                    )));
                }
                // the ledger's state only (archived deals are asked by id)
                let mut v: Vec<(Cow<'_, Deal>, DealStats)> = self
                    .ledger
                    .deals()
                    .filter(|d| d.proposal.client == client)
                    .map(|d| (Cow::Borrowed(d), self.stats_of(d.id)))
                    .collect();
                // the latest MAX_LIST, oldest first
                v.split_off(v.len().saturating_sub(MAX_LIST))
            }
        };
        let views = deals
            .into_iter()
            .map(|(d, stats)| self.deal_view(&d, stats))
            .collect::<Result<_, _>>()?;
        Ok(TrackerResponse::Deals(views))
    }

    fn deal_view(&self, d: &Deal, stats: DealStats) -> Result<DealView, ServiceError> {
        let history = self
            .store
            .scan_last(&keys::history_of(d.id), MAX_HISTORY)?
            .into_iter()
            .map(|(k, v)| {
                Ok(EpochRecord {
                    epoch: u64_suffix(&k)?,
                    proven: v.first() == Some(&1),
                })
            })
            .collect::<Result<_, ServiceError>>()?;
        let comm_r = match &d.state {
            DealState::PreCommitted { comm_r, .. } | DealState::Active { comm_r, .. } => Some(*comm_r),
            _ => None,
        };
        Ok(DealView {
            id: d.id,
            proposal_id: d.proposal_id,
            proposal: d.proposal.clone(),
            published_epoch: d.published_epoch,
            end_epoch: d.end_epoch(),
            state: d.state.name().to_string(),
            comm_r,
            escrow: d.escrow,
            collateral: d.collateral,
            paid: d.paid,
            proven_epochs: stats.proven,
            faulted_epochs: stats.faulted,
            consecutive_faults: d.consecutive_faults,
            history,
        })
    }

    /// A page of providers offering space — capacity above 0 (which only a
    /// staked registration has), willing to lock the network's minimum
    /// collateral — in peer id order after `after`, at most `limit` (a
    /// request's page: [`MAX_LIST`]). A provider slashed below the stake is
    /// listed with its `staked`, so its record stays visible; it takes no
    /// deal until it tops the stake up.
    /// The network's page ([`super::dashboard`]): a snapshot of the
    /// ledger and the tracker's counters, at one log position.
    pub fn network_view(&self) -> super::dashboard::NetworkView {
        use super::dashboard::{NetworkView, Proofs, Repairs, Totals};
        let epoch = self.ledger.epoch();
        let totals = Totals::of(&self.ledger);
        let mut proofs = Proofs::default();
        let mut deals = BTreeMap::<String, u64>::new();
        for d in self.ledger.deals() {
            *deals.entry(d.state.name().to_string()).or_default() += 1;
            if let DealState::Active { proven_epoch, .. } = d.state {
                if d.proposal.start_epoch <= epoch && epoch < d.end_epoch() {
                    proofs.challenged += 1;
                    if proven_epoch == Some(epoch) {
                        proofs.proven += 1;
                    }
                }
            }
        }
        let (archived, _) = self.ledger.archived();
        let lost = self.ledger.lost_slots();
        let running = lost
            .iter()
            .filter(|(f, i, _)| self.repairs.contains_key(&(*f, *i)))
            .count() as u64;
        let repairs = Repairs {
            queued: lost.len() as u64 - running,
            running,
            done: self.ledger.files().map(|f| f.repairs).sum(),
            failed: self.repair_failed.values().sum(),
        };
        let providers = self.providers(None, usize::MAX);
        NetworkView {
            tracker: self.key.public().to_peer_id().to_string(),
            network: self.ledger.network().to_hex(),
            epoch,
            epoch_millis: self.clock.epoch_millis(),
            epoch_ends_in_millis: self.clock.remaining_millis(),
            log_len: self.ledger.log_len(),
            head: self.ledger.head().iter().map(|b| format!("{b:02x}")).collect(),
            proofs,
            proven_epochs: providers.iter().map(|p| p.proven_epochs).sum(),
            faulted_epochs: providers.iter().map(|p| p.faulted_epochs).sum(),
            terminated_deals: providers.iter().map(|p| p.terminated_deals).sum(),
            totals,
            deals,
            archived_deals: archived,
            files: self.ledger.files().count() as u64,
            repairs,
            providers_total: providers.len() as u64,
            // the page and its API list at most MAX_LIST (totals above are over all)
            providers: providers.into_iter().take(MAX_LIST).map(Into::into).collect(),
        }
    }

    fn providers(&self, after: Option<PeerId>, limit: usize) -> Vec<ProviderEntry> {
        let c = self.ledger.config();
        self.ledger
            .providers()
            .filter(|(id, _)| after.is_none_or(|a| id.0 > a))
            .filter(|(_, p)| p.capacity > 0 && p.collateral_per_gib >= c.min_collateral_per_gib)
            .take(limit)
            .map(|(id, p)| {
                let r = self.hot_records.of(&id.0);
                let a = self.provider_records.get(&id.0).copied().unwrap_or_default();
                ProviderEntry {
                    peer: id.0,
                    addrs: self.addrs.get(&id.0).cloned().unwrap_or_default(),
                    capacity: p.capacity,
                    used: p.used,
                    price_per_gib_epoch: p.price_per_gib_epoch,
                    collateral_per_gib: p.collateral_per_gib,
                    live_deals: r.live,
                    proven_epochs: r.proven.saturating_add(a.proven),
                    faulted_epochs: r.faulted.saturating_add(a.faulted),
                    terminated_deals: r.terminated.saturating_add(a.terminated),
                    staked: self.ledger.account(id).staked,
                }
            })
            .collect()
    }
}

/// A request to the ledger owner.
#[derive(Debug)]
pub enum Command {
    /// A tracker request from `peer`.
    Request {
        peer: PeerId,
        request: TrackerRequest,
        reply: oneshot::Sender<Result<TrackerResponse, String>>,
    },
    /// Provider results (pre-commits, seal and window proofs) to apply together.
    Apply {
        inputs: Vec<Input>,
        reply: oneshot::Sender<Vec<Result<Vec<Event>, String>>>,
    },
    /// Settle the open epoch, which must be `epoch`.
    EndEpoch {
        epoch: Epoch,
        reply: oneshot::Sender<Result<Vec<Event>, String>>,
    },
    /// What to ask providers now.
    Work { reply: oneshot::Sender<Work> },
    /// A snapshot for the network's page.
    Dashboard {
        reply: oneshot::Sender<super::dashboard::NetworkView>,
    },
    /// What became of a repair job (`job` is its id).
    Repair {
        slot: SlotKey,
        job: [u8; 32],
        update: RepairUpdate,
    },
    /// Apply a command committed in the replicas' Raft log.
    Replicated {
        applied: Vec<u8>,
        membership: Option<Vec<u8>>,
        cmd: Option<super::raft::Replicated>,
        reply: oneshot::Sender<Result<super::raft::ReplicatedResult, String>>,
    },
    /// The Raft log id and membership last applied here.
    RaftApplied {
        reply: oneshot::Sender<Result<RaftMarks, String>>,
    },
    /// The ledger's log length and head.
    Head {
        reply: oneshot::Sender<(u64, crate::Hash32)>,
    },
    /// Stop after the commands before this one.
    Stop,
}

/// The Raft log id and membership last applied on a replica (CBOR).
pub type RaftMarks = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Commands waiting for the owner; senders wait (async) when it is full.
pub const OWNER_QUEUE: usize = 256;

/// Cloneable handle to the ledger owner thread.
#[derive(Debug, Clone)]
pub struct Owner {
    tx: mpsc::Sender<Command>,
}

impl Owner {
    /// Starts the owner thread. It ends on [`Owner::stop`], when every handle
    /// is dropped, or on a store failure it cannot recover from (its result).
    pub fn spawn<S: Store>(
        mut state: State<S>,
    ) -> Result<(Self, std::thread::JoinHandle<Result<(), ServiceError>>), ServiceError> {
        let (tx, mut rx) = mpsc::channel(OWNER_QUEUE);
        let thread = std::thread::Builder::new().name("ledger".into()).spawn(move || {
            while let Some(cmd) = rx.blocking_recv() {
                if !state.command(cmd)? {
                    break;
                }
            }
            Ok(())
        })?;
        Ok((Self { tx }, thread))
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, ServiceError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| ServiceError::Stopped)?;
        rx.await.map_err(|_| ServiceError::Stopped)
    }

    pub async fn request(&self, peer: PeerId, request: TrackerRequest) -> Result<TrackerResponse, String> {
        match self.call(|reply| Command::Request { peer, request, reply }).await {
            Ok(r) => r,
            Err(e) => Err(e.to_string()),
        }
    }

    pub async fn apply(&self, inputs: Vec<Input>) -> Result<Vec<Result<Vec<Event>, String>>, ServiceError> {
        self.call(|reply| Command::Apply { inputs, reply }).await
    }

    pub async fn end_epoch(&self, epoch: Epoch) -> Result<Result<Vec<Event>, String>, ServiceError> {
        self.call(|reply| Command::EndEpoch { epoch, reply }).await
    }

    pub async fn work(&self) -> Result<Work, ServiceError> {
        self.call(|reply| Command::Work { reply }).await
    }

    /// A snapshot for the network's page.
    pub async fn dashboard(&self) -> Result<super::dashboard::NetworkView, ServiceError> {
        self.call(|reply| Command::Dashboard { reply }).await
    }

    pub async fn repair_update(&self, slot: SlotKey, job: [u8; 32], update: RepairUpdate) {
        let _ = self.tx.send(Command::Repair { slot, job, update }).await;
    }

    pub async fn stop(&self) {
        let _ = self.tx.send(Command::Stop).await;
    }

    /// Applies a command committed in the replicas' Raft log
    /// ([`State::apply_replicated`]); `Err` is a store failure.
    pub async fn apply_replicated(
        &self,
        applied: Vec<u8>,
        membership: Option<Vec<u8>>,
        cmd: Option<super::raft::Replicated>,
    ) -> Result<super::raft::ReplicatedResult, String> {
        match self
            .call(|reply| Command::Replicated {
                applied,
                membership,
                cmd,
                reply,
            })
            .await
        {
            Ok(r) => r,
            Err(e) => Err(e.to_string()),
        }
    }

    /// The Raft log id and membership last applied (CBOR).
    pub async fn raft_applied(&self) -> Result<RaftMarks, String> {
        match self.call(|reply| Command::RaftApplied { reply }).await {
            Ok(r) => r,
            Err(e) => Err(e.to_string()),
        }
    }

    /// The ledger's log length and head.
    pub async fn head(&self) -> Result<(u64, crate::Hash32), ServiceError> {
        self.call(|reply| Command::Head { reply }).await
    }
}

impl<S: Store> State<S> {
    /// Runs one command; `Ok(false)` stops the owner, `Err` is fatal (the
    /// store failed and the state could not be rebuilt from it).
    fn command(&mut self, cmd: Command) -> Result<bool, ServiceError> {
        match cmd {
            Command::Request { peer, request, reply } => {
                let result = self.handle(peer, request);
                match &result {
                    Ok(_) => self.metrics.requests_served.inc(),
                    Err(_) => self.metrics.requests_refused.inc(),
                };
                self.fatal(&result)?;
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
            Command::Apply { inputs, reply } => {
                let results = self.apply_batch(inputs);
                let _ = reply.send(results);
            }
            Command::EndEpoch { epoch, reply } => {
                let result = self.end_epoch(epoch);
                self.fatal(&result)?;
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
            Command::Work { reply } => {
                let _ = reply.send(self.work());
            }
            Command::Repair { slot, job, update } => self.repair_update(slot, job, update),
            Command::Dashboard { reply } => {
                let _ = reply.send(self.network_view());
            }
            Command::Replicated {
                applied,
                membership,
                cmd,
                reply,
            } => {
                let result = self.apply_replicated(applied, membership, cmd);
                self.fatal(&result)?;
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
            Command::RaftApplied { reply } => {
                let _ = reply.send(self.raft_applied().map_err(|e| e.to_string()));
            }
            Command::Head { reply } => {
                let _ = reply.send((self.ledger.log_len(), self.ledger.head()));
            }
            Command::Stop => return Ok(false),
        }
        Ok(true)
    }

    /// A store that cannot even be read back is fatal.
    fn fatal<T>(&self, result: &Result<T, ServiceError>) -> Result<(), ServiceError> {
        match result {
            Err(ServiceError::Corrupt(e)) => Err(ServiceError::Corrupt(e.clone())),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The proposal inside a publish request.
    fn publish_proposal(r: &TrackerRequest) -> DealProposal {
        let TrackerRequest::Publish { proposal, .. } = r else {
            panic!("not a publish request")
        };
        proposal.open(&proposal.network(), None).unwrap().1
    }

    /// A valid manifest of an empty file: (root CID bytes, dag-cbor bytes).
    fn sample_manifest() -> (Vec<u8>, Vec<u8>) {
        let (layout, _) = crowd_erasure::Encoder::new(crowd_erasure::Params::new(2, 1, 4096).unwrap())
            .unwrap()
            .encode_bytes(&[])
            .unwrap();
        let root = crowd_protocol::manifest_cid(b"some file root");
        let m = crowd_protocol::Manifest {
            version: crowd_protocol::MANIFEST_VERSION,
            root,
            size: 0,
            chunking: crowd_protocol::Chunking {
                chunker: "fixed".into(),
                chunk_size: 1 << 20,
                max_links: 174,
                hash: "blake3".into(),
            },
            layout,
            pieces: vec![],
            encryption: None,
        };
        (root.to_bytes(), m.encode().unwrap())
    }
    use crate::service::store::{MemStore, RocksStore};
    use crowd_protocol::{NetworkId, PieceId, ProviderRegistration};

    fn key(seed: u8) -> Keypair {
        Keypair::ed25519_from_bytes([seed; 32]).unwrap()
    }

    fn open<S: Store>(store: S, tracker: &Keypair) -> State<S> {
        State::open(
            store,
            tracker.clone(),
            1_000_000,
            Arc::new(Clock::new(Duration::from_secs(1))),
            Arc::new(Metrics::default()),
        )
        .unwrap()
    }

    fn new_state<S: Store>(store: S, faucet: bool) -> (Keypair, State<S>) {
        let tracker = key(100);
        let mut genesis = LedgerConfig::devnet(&tracker.public());
        genesis.faucet = faucet;
        init_store(&store, &genesis).unwrap();
        let state = open(store, &tracker);
        (tracker, state)
    }

    fn registration(net: &NetworkId, provider: &Keypair, nonce: u64) -> Signed<ProviderRegistration> {
        Signed::sign(
            provider,
            net,
            &ProviderRegistration {
                capacity: 1 << 30,
                price_per_gib_epoch: 1,
                collateral_per_gib: 1,
                nonce,
            },
        )
        .unwrap()
    }

    fn peer(k: &Keypair) -> PeerId {
        k.public().to_peer_id()
    }

    /// Faucet, registration, a published deal and a settled epoch, then
    /// more inputs after the snapshot.
    fn populate<S: Store>(state: &mut State<S>) -> (Keypair, Keypair) {
        let (client, provider) = (key(1), key(2));
        for who in [&client, &provider] {
            state
                .handle(
                    peer(who),
                    TrackerRequest::Faucet {
                        account: peer(who),
                        amount: 500_000,
                    },
                )
                .unwrap();
        }
        let r = state.handle(
            peer(&provider),
            TrackerRequest::Register {
                registration: registration(&state.ledger().network(), &provider, 0),
                addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            },
        );
        assert_eq!(r.unwrap(), TrackerResponse::Registered);
        let net = state.ledger().network();
        let proposal = Signed::sign(
            &client,
            &net,
            &DealProposal {
                piece: PieceId([7; 32]),
                piece_size: 4096,
                client: peer(&client),
                provider: peer(&provider),
                price_per_epoch: 10,
                start_epoch: 5,
                duration_epochs: 4,
                provider_collateral: 1000,
                expiry_epoch: 10,
                nonce: 1,
            },
        )
        .unwrap();
        let acceptance = Signed::sign(
            &provider,
            &net,
            &DealAcceptance {
                proposal: proposal.id(),
            },
        )
        .unwrap();
        let publish = TrackerRequest::Publish {
            proposal,
            acceptance,
            receipt: None,
        };
        // not by a stranger who holds both halves
        let len = state.ledger().log_len();
        let refused = state
            .handle(peer(&key(9)), publish.clone())
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("published by its client or provider"),
            "{refused}"
        );
        assert_eq!(state.ledger().log_len(), len);
        // a proposal that names no piece: not by its provider, even with
        // its own receipt (it would choose the bytes the client pays for)
        let unnamed = Signed::sign(
            &client,
            &net,
            &DealProposal {
                piece: PieceId::UNNAMED,
                nonce: 2,
                ..publish_proposal(&publish)
            },
        )
        .unwrap();
        let by_provider = TrackerRequest::Publish {
            acceptance: Signed::sign(
                &provider,
                &net,
                &DealAcceptance {
                    proposal: unnamed.id(),
                },
            )
            .unwrap(),
            receipt: Some(
                Signed::sign(
                    &provider,
                    &net,
                    &PieceReceipt {
                        proposal: unnamed.id(),
                        piece: PieceId([8; 32]),
                        piece_size: 4096,
                    },
                )
                .unwrap(),
            ),
            proposal: unnamed,
        };
        let refused = state
            .handle(peer(&provider), by_provider)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("published by its client"), "{refused}");
        assert_eq!(state.ledger().log_len(), len);
        let r = state.handle(peer(&client), publish.clone()).unwrap();
        assert_eq!(r, TrackerResponse::Published { deal_id: 0 });
        // a retry gets the same deal, and changes nothing
        let len = state.ledger().log_len();
        assert_eq!(state.handle(peer(&client), publish).unwrap(), r);
        assert_eq!(state.ledger().log_len(), len);
        state.end_epoch(0).unwrap();
        // after the snapshot: another mint and a manifest
        state
            .handle(
                peer(&client),
                TrackerRequest::Faucet {
                    account: peer(&client),
                    amount: 7,
                },
            )
            .unwrap();
        let (root, manifest) = sample_manifest();
        let r = state
            .handle(
                peer(&client),
                TrackerRequest::RegisterManifest {
                    root: root.clone(),
                    manifest: manifest.clone(),
                    file: None,
                },
            )
            .unwrap();
        assert_eq!(
            r,
            TrackerResponse::ManifestStored(crowd_protocol::manifest_cid(&manifest).to_bytes())
        );
        (client, provider)
    }

    fn assert_same<A: Store, B: Store>(a: &State<A>, b: &State<B>) {
        assert_eq!(a.ledger(), b.ledger());
        assert_eq!(a.addrs, b.addrs);
        assert_eq!(a.stats, b.stats);
        assert_eq!(a.manifest_counts, b.manifest_counts);
        assert_eq!(a.provider_records, b.provider_records);
        // the counters kept from events equal a walk over the reopened deals
        assert_eq!(a.hot_records, b.hot_records);
    }

    /// More providers than one page (`MAX_LIST`): every one is listed once,
    /// in peer-id order, across pages, and the page after the last is empty.
    #[test]
    fn more_providers_than_a_page_are_all_listed_across_pages() {
        let (_, mut state) = new_state(MemStore::default(), true);
        let net = state.ledger().network();
        let n = MAX_LIST + 76;
        let mut want = Vec::new();
        for _ in 0..n {
            let k = Keypair::generate_ed25519();
            let faucet = TrackerRequest::Faucet {
                account: peer(&k),
                amount: 500_000,
            };
            state.handle(peer(&k), faucet).unwrap();
            let register = TrackerRequest::Register {
                registration: registration(&net, &k, 0),
                addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            };
            assert_eq!(
                state.handle(peer(&k), register).unwrap(),
                TrackerResponse::Registered
            );
            want.push(peer(&k));
        }
        want.sort();
        let mut page = |r| match state.handle(peer(&key(9)), r).unwrap() {
            TrackerResponse::Providers(p) => p,
            other => panic!("{other:?}"),
        };
        let first = page(TrackerRequest::Providers);
        assert_eq!(first.len(), MAX_LIST);
        let second = page(TrackerRequest::ProvidersAfter(first[MAX_LIST - 1].peer));
        assert_eq!(second.len(), n - MAX_LIST);
        assert!(page(TrackerRequest::ProvidersAfter(second[second.len() - 1].peer)).is_empty());
        let got: Vec<PeerId> = first.iter().chain(&second).map(|p| p.peer).collect();
        assert_eq!(got, want);
        // the network's page stays bounded and still counts them all
        let view = state.network_view();
        assert_eq!(view.providers_total, n as u64);
        assert_eq!(view.providers.len(), MAX_LIST);
        assert_eq!(view.providers[0].peer, want[0].to_string());
        let html = super::super::dashboard::render(&view).into_string();
        assert_eq!(
            html.matches("<tr>").count(),
            MAX_LIST + 1,
            "one header row and a row per listed provider"
        );
        assert!(html.contains(&format!("the first {MAX_LIST} by peer id are listed")));
    }

    #[test]
    fn an_ended_deal_leaves_the_hot_state_and_is_still_answered_by_id_after_a_restart() {
        let store = MemStore::default();
        let (tracker, mut state) = new_state(store.clone(), true);
        let (client, provider) = populate(&mut state);
        let ask = |state: &mut State<MemStore>, who: &Keypair| match state
            .handle(peer(who), TrackerRequest::Deals(DealQuery::Ids(vec![0])))
            .unwrap()
        {
            TrackerResponse::Deals(d) => d,
            other => panic!("{other:?}"),
        };
        assert_eq!(ask(&mut state, &client)[0].state, "published");
        // never sealed: cancelled when epoch 4 settles (its start is 5), and
        // archived in the same settlement
        for epoch in 1..4 {
            state.end_epoch(epoch).unwrap();
        }
        assert!(state.ledger().deal(0).is_some());
        let events = state.end_epoch(4).unwrap();
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::Cancelled { deal_id: 0, .. })));
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::Archived { deals, .. } if deals.len() == 1 && deals[0].id == 0)));
        assert!(state.ledger().deal(0).is_none(), "still in the hot state");
        assert_eq!(state.ledger().archived(), (1, 0));
        assert!(!state.stats.contains_key(&0));
        state.ledger().check_invariants().unwrap();
        // by id, to its parties only, from the archive
        let view = ask(&mut state, &client);
        assert_eq!(
            (view.len(), view[0].state.as_str(), view[0].id),
            (1, "cancelled", 0)
        );
        assert_eq!(ask(&mut state, &provider).len(), 1);
        assert!(ask(&mut state, &key(9)).is_empty());
        assert_eq!(state.provider_records[&peer(&provider)].deals, 1);
        // a restart keeps all of it
        let mut again = open(store.clone(), &tracker);
        assert_same(&state, &again);
        assert_eq!(ask(&mut again, &client)[0].state, "cancelled");
        let log = stored_log(again.store()).unwrap();
        crate::replay(state.ledger().config().clone(), &log)
            .unwrap()
            .verify_against(state.ledger())
            .unwrap();
    }

    #[test]
    fn the_snapshot_is_taken_every_snapshot_every_epochs_and_reopening_replays_the_rest() {
        let store = MemStore::default();
        let (tracker, mut state) = new_state(store.clone(), true);
        populate(&mut state); // settles epoch 0: a snapshot
        let first = stored_snapshot(&store).unwrap().unwrap().log_len();
        for epoch in 1..SNAPSHOT_EVERY {
            state.end_epoch(epoch).unwrap();
        }
        assert_eq!(stored_snapshot(&store).unwrap().unwrap().log_len(), first);
        // between snapshots, reopening replays the log after the last one
        assert_same(&state, &open(store.clone(), &tracker));
        state.end_epoch(SNAPSHOT_EVERY).unwrap();
        let second = stored_snapshot(&store).unwrap().unwrap();
        assert_eq!(second.log_len(), state.ledger().log_len());
        assert_eq!(&second, state.ledger());
        assert_same(&state, &open(store.clone(), &tracker));
    }

    #[test]
    fn a_reopened_store_has_the_same_state_mem_and_rocks() {
        let store = MemStore::default();
        let (tracker, mut state) = new_state(store.clone(), true);
        populate(&mut state);
        assert!(stored_snapshot(&store).unwrap().is_some());
        let again = open(store.clone(), &tracker);
        assert_same(&state, &again);

        let dir = tempfile::tempdir().unwrap();
        let (tracker, mut state) = new_state(RocksStore::open(&dir.path().join("db")).unwrap(), true);
        let (client, _) = populate(&mut state);
        let before = state.ledger().clone();
        drop(state);
        let mut again = open(RocksStore::open(&dir.path().join("db")).unwrap(), &tracker);
        assert_eq!(*again.ledger(), before);
        assert_eq!(
            again
                .handle(
                    peer(&client),
                    TrackerRequest::Manifest {
                        root: sample_manifest().0
                    }
                )
                .unwrap(),
            TrackerResponse::Manifests(vec![Blob(sample_manifest().1)])
        );
        // the whole log replays to the live state
        let log = stored_log(again.store()).unwrap();
        let replayed = crate::replay(before.config().clone(), &log).unwrap();
        replayed.verify_against(&before).unwrap();
    }

    #[test]
    fn a_failed_write_is_not_acknowledged_and_leaves_no_trace() {
        let store = MemStore::default();
        let (tracker, mut state) = new_state(store.clone(), true);
        populate(&mut state);
        let before = state.ledger().clone();
        store.fail_writes(true);
        let who = peer(&key(9));
        let r = state.handle(
            who,
            TrackerRequest::Faucet {
                account: who,
                amount: 5,
            },
        );
        assert!(r.is_err(), "{r:?}");
        assert_eq!(*state.ledger(), before, "the refused write left the ledger ahead");
        let r = state.end_epoch(1);
        assert!(r.is_err());
        assert_eq!(*state.ledger(), before);
        store.fail_writes(false);
        state.end_epoch(1).unwrap();
        assert_same(&state, &open(store, &tracker));
    }

    /// A replicated command writes its Raft mark in the batch of its
    /// effects; a refused one (or an entry without a command) writes the
    /// mark alone; a failed write leaves neither mark nor effect and is an
    /// error, not an answer.
    #[test]
    fn replicated_commands_write_their_raft_mark_with_their_effects() {
        use crate::service::raft::{Replicated, ReplicatedResult};
        let store = MemStore::default();
        let (_, mut state) = new_state(store.clone(), true);
        let who = peer(&key(9));
        let faucet = |amount| Replicated::Request {
            peer: who,
            request: TrackerRequest::Faucet { account: who, amount },
        };
        let r = state
            .apply_replicated(b"m1".to_vec(), None, Some(faucet(5)))
            .unwrap();
        assert!(matches!(r, ReplicatedResult::Response(Ok(_))), "{r:?}");
        assert_eq!(state.raft_applied().unwrap(), (Some(b"m1".to_vec()), None));
        assert_eq!(state.ledger().log_len(), 1);
        // refused: the mark moves, the ledger does not
        let r = state
            .apply_replicated(b"m2".to_vec(), None, Some(faucet(0)))
            .unwrap();
        assert!(matches!(r, ReplicatedResult::Response(Err(_))), "{r:?}");
        assert_eq!(state.raft_applied().unwrap().0, Some(b"m2".to_vec()));
        assert_eq!(state.ledger().log_len(), 1);
        // a membership entry
        let r = state
            .apply_replicated(b"m3".to_vec(), Some(b"members".to_vec()), None)
            .unwrap();
        assert_eq!(r, ReplicatedResult::Nothing);
        assert_eq!(
            state.raft_applied().unwrap(),
            (Some(b"m3".to_vec()), Some(b"members".to_vec()))
        );
        // the epoch ends by a command, signed as it is applied
        let r = state
            .apply_replicated(b"m4".to_vec(), None, Some(Replicated::EndEpoch { epoch: 0 }))
            .unwrap();
        assert!(matches!(r, ReplicatedResult::Settled(Ok(_))), "{r:?}");
        assert_eq!(state.ledger().epoch(), 1);
        // a failed write: an error, and neither the mark nor the mint
        store.fail_writes(true);
        assert!(state
            .apply_replicated(b"m5".to_vec(), None, Some(faucet(7)))
            .is_err());
        store.fail_writes(false);
        assert_eq!(state.raft_applied().unwrap().0, Some(b"m4".to_vec()));
        assert_eq!(state.ledger().log_len(), 2);
    }

    #[test]
    fn bad_requests_get_one_line_errors_and_change_nothing() {
        let (_, mut state) = new_state(MemStore::default(), true);
        let provider = key(2);
        let stranger = key(3);
        let before = state.ledger().clone();
        let register = |registration, addrs: Vec<&str>| TrackerRequest::Register {
            registration,
            addrs: addrs.into_iter().map(String::from).collect(),
        };
        // forged: signature bytes changed
        let mut forged = registration(&state.ledger().network(), &provider, 0);
        forged.parts_mut().2[0] ^= 1;
        // unsigned: no valid signer key at all
        let mut unsigned = registration(&state.ledger().network(), &provider, 0);
        unsigned.parts_mut().1.clear();
        unsigned.parts_mut().2.clear();
        let cases = [
            (peer(&provider), register(forged, vec![]), "bad signature"),
            (peer(&provider), register(unsigned, vec![]), "does not decode"),
            (
                peer(&stranger),
                register(registration(&state.ledger().network(), &provider, 0), vec![]),
                "must be sent by it",
            ),
            (
                peer(&provider),
                register(registration(&state.ledger().network(), &provider, 5), vec![]),
                "nonce",
            ),
            (
                peer(&provider),
                register(
                    registration(&state.ledger().network(), &provider, 0),
                    vec!["not an address"],
                ),
                "multiaddress",
            ),
            (
                peer(&stranger),
                TrackerRequest::Faucet {
                    account: peer(&stranger),
                    amount: 1_000_001,
                },
                "outside",
            ),
            (
                peer(&stranger),
                TrackerRequest::RegisterManifest {
                    root: sample_manifest().0,
                    manifest: sample_manifest().1,
                    file: None,
                },
                "published deal",
            ),
            (
                peer(&stranger),
                TrackerRequest::Deals(DealQuery::Ids(vec![0; MAX_LIST + 1])),
                "at most",
            ),
        ];
        for (from, request, expect) in cases {
            let err = state.handle(from, request).unwrap_err().to_string();
            assert!(err.contains(expect), "expected '{expect}' in: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        assert_eq!(*state.ledger(), before);

        // a ledger created without the faucet never mints
        let (_, mut state) = new_state(MemStore::default(), false);
        let err = state
            .handle(
                peer(&stranger),
                TrackerRequest::Faucet {
                    account: peer(&stranger),
                    amount: 1,
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("faucet is disabled"), "{err}");
        assert_eq!(state.ledger().log_len(), 0);
    }

    /// Accounts, deals and manifest lists are answered only to their owner
    /// (the connection's authenticated peer); a manifest by root to anyone.
    #[test]
    fn accounts_deals_and_manifest_lists_are_answered_only_to_their_owner() {
        let (_, mut state) = new_state(MemStore::default(), true);
        let (client, provider) = populate(&mut state);
        let stranger = peer(&key(7));
        let (c, p) = (peer(&client), peer(&provider));
        for (from, who, ok) in [(c, c, true), (p, p, true), (stranger, c, false), (c, p, false)] {
            let r = state.handle(from, TrackerRequest::Account(who));
            assert_eq!(r.is_ok(), ok, "{from} asking for {who}: {r:?}");
        }
        assert!(state
            .handle(stranger, TrackerRequest::Deals(DealQuery::Client(c)))
            .is_err());
        let mut deals = |from| match state.handle(from, TrackerRequest::Deals(DealQuery::Ids(vec![0]))) {
            Ok(TrackerResponse::Deals(d)) => d.len(),
            other => panic!("{other:?}"),
        };
        assert_eq!((deals(c), deals(p), deals(stranger)), (1, 1, 0));
        // the client's manifest: listed to it, not to the stranger; by root to anyone
        let (root, manifest) = sample_manifest();
        state
            .handle(
                c,
                TrackerRequest::RegisterManifest {
                    root: root.clone(),
                    manifest: manifest.clone(),
                    file: None,
                },
            )
            .unwrap();
        let mut own = |from| match state.handle(from, TrackerRequest::OwnManifests { after: None }) {
            Ok(TrackerResponse::OwnManifests { manifests, next }) => {
                assert_eq!(next, None);
                manifests
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(own(c), vec![Blob(manifest.clone())]);
        assert!(own(stranger).is_empty() && own(p).is_empty());
        assert_eq!(
            state
                .handle(stranger, TrackerRequest::Manifest { root: root.clone() })
                .unwrap(),
            TrackerResponse::Manifests(vec![Blob(manifest.clone())])
        );

        // manifest hijack: another client claiming the same root sits beside
        // the first, never replaces it; each asker sees its own first
        let m = peer(&key(41));
        state
            .handle(
                m,
                TrackerRequest::Faucet {
                    account: m,
                    amount: 10,
                },
            )
            .unwrap();
        let mut forged = crowd_protocol::Manifest::decode(&manifest).unwrap();
        forged.chunking.chunk_size = 1 << 19;
        let forged = forged.encode().unwrap();
        assert_ne!(forged, manifest);
        state
            .handle(
                m,
                TrackerRequest::RegisterManifest {
                    root: root.clone(),
                    manifest: forged.clone(),
                    file: None,
                },
            )
            .unwrap();
        fn manifests<S: Store>(state: &mut State<S>, from: PeerId, root: &[u8]) -> Vec<Blob> {
            match state.handle(from, TrackerRequest::Manifest { root: root.to_vec() }) {
                Ok(TrackerResponse::Manifests(v)) => v,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            manifests(&mut state, c, &root),
            vec![Blob(manifest.clone()), Blob(forged.clone())]
        );
        assert_eq!(
            manifests(&mut state, m, &root),
            vec![Blob(forged.clone()), Blob(manifest.clone())]
        );
        assert_eq!(manifests(&mut state, stranger, &root).len(), 2);
        // and the first client still updates its own
        state
            .handle(
                c,
                TrackerRequest::RegisterManifest {
                    root: root.clone(),
                    manifest: manifest.clone(),
                    file: None,
                },
            )
            .unwrap();
        assert_eq!(manifests(&mut state, stranger, &root).len(), 2);
        // at most MAX_MANIFESTS_PER_ROOT clients per root
        for i in 0..crowd_protocol::MAX_MANIFESTS_PER_ROOT as u8 {
            let k = peer(&key(60 + i));
            state
                .handle(
                    k,
                    TrackerRequest::Faucet {
                        account: k,
                        amount: 10,
                    },
                )
                .unwrap();
            let r = state.handle(
                k,
                TrackerRequest::RegisterManifest {
                    root: root.clone(),
                    manifest: forged.clone(),
                    file: None,
                },
            );
            if usize::from(i) + 2 < crowd_protocol::MAX_MANIFESTS_PER_ROOT {
                r.unwrap();
            } else {
                let e = r.unwrap_err().to_string();
                assert!(e.contains("already has"), "{e}");
            }
        }
        assert_eq!(
            manifests(&mut state, stranger, &root).len(),
            crowd_protocol::MAX_MANIFESTS_PER_ROOT
        );
    }

    #[test]
    fn the_wrong_key_or_an_uninitialised_store_is_refused() {
        let store = MemStore::default();
        let err = State::open(
            store.clone(),
            key(1),
            1,
            Arc::new(Clock::default()),
            Arc::new(Metrics::default()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("run `crowd-tracker init`"), "{err}");
        init_store(&store, &LedgerConfig::devnet(&key(1).public())).unwrap();
        let err = State::open(store.clone(), key(2), 1, Arc::default(), Arc::default()).unwrap_err();
        assert!(err.to_string().contains("identity.key"), "{err}");
        let err = init_store(&store, &LedgerConfig::devnet(&key(2).public())).unwrap_err();
        assert!(err.to_string().contains("another genesis"), "{err}");
    }

    #[test]
    fn work_lists_a_ticket_for_a_published_deal() {
        let (_, mut state) = new_state(MemStore::default(), true);
        let (_, provider) = populate(&mut state);
        let work = state.work();
        assert_eq!(work.epoch, 1);
        assert_eq!(work.tasks.len(), 1);
        let task = &work.tasks[0];
        assert_eq!(task.provider, peer(&provider));
        assert_eq!(
            task.addrs,
            vec!["/ip4/127.0.0.1/tcp/4001".parse::<Multiaddr>().unwrap()]
        );
        assert!(matches!(&task.job, Job::Seal(t) if t.deal_id == 0), "{task:?}");
    }
}
