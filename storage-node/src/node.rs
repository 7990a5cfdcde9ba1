//! The provider: control requests, uploads, fetches, the sealing worker and
//! window proofs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use crowd_porep::proof::SectorWitness;
use crowd_porep::tree::Outboard;
use crowd_porep::{Parents, ReadAt, SealParams};
use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::{PeerId, Stream};
use crowd_protocol::network::{FETCH_PROTOCOL, PIECE_PROTOCOL};
use crowd_protocol::wire::{read_frame, write_frame};
use crowd_protocol::{
    Admission, DealAcceptance, DealProposal, FetchHeader, FetchRequest, Network, NetworkId, PieceId,
    PieceInfo, PieceReceipt, ProviderRegistration, Request, Response, SealCommitment, SealProofMsg,
    SealReport, SealSeed, SealTicket, Signed, TrackerRequest, TrackerResponse, UploadHeader, UploadResult,
    WindowChallenge, WindowProofMsg, MAX_STREAM_HEADER,
};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use tokio::sync::{mpsc, Semaphore};

use crate::config::NodeConfig;
use crate::files::{self, Dirs, FileAt};
use crate::limits::PeerLimits;
use crate::metrics::Metrics;
use crate::records::{self, DealRecord, PieceRecord, ProposalRecord, ProposalState, SealState};
use crate::store::{Batch, MetaStore};

const GIB: u128 = 1 << 30;
/// Bytes read from an upload stream at a time.
const UPLOAD_BUF: usize = 1 << 20;

/// Everything the node's tasks share.
pub struct Node {
    pub key: Keypair,
    pub peer_id: PeerId,
    pub config: NodeConfig,
    pub store: Arc<dyn MetaStore>,
    pub dirs: Dirs,
    pub net: Network,
    pub metrics: Arc<Metrics>,
    pub params: SealParams,
    pub(crate) tracker: Option<PeerId>,
    /// Where tracker requests go (the tracker, or its replicas) and whose
    /// connections may carry tracker messages.
    pub(crate) tracker_link: Option<crowd_protocol::tracker_link::TrackerLink>,
    transfers: Arc<Semaphore>,
    /// Transfer streams whose header has not arrived yet.
    pending_streams: Arc<PeerLimits>,
    /// Control requests in flight, bounded in all and per peer (the
    /// tracker's are not counted).
    inbound_requests: Arc<PeerLimits>,
    seal_tx: mpsc::Sender<u64>,
    /// Serialises read-modify-write updates of records and space accounting.
    pub(crate) write_lock: tokio::sync::Mutex<()>,
    /// Space promised to accepted proposals whose bytes have not arrived
    /// (and to repair jobs while they run): in memory only, per client
    /// bounded, expiring after [`RESERVATION_TTL`].
    pending: std::sync::Mutex<HashMap<[u8; 32], Reservation>>,
    /// Repair jobs by id (running, ready, failed): see [`crate::repair`].
    pub(crate) repairs: crate::repair::RepairJobs,
    /// Repair jobs running at once (config `max_concurrent_repairs`).
    pub(crate) repair_slots: Arc<Semaphore>,
    /// The latest tracker epoch this node has seen (from `Info` answers and
    /// tracker-signed window challenges); 0 before any.
    pub(crate) last_epoch: std::sync::atomic::AtomicU64,
    /// The network signed messages name (config `network_id`, else learnt
    /// from the tracker once and kept in the store).
    network: std::sync::OnceLock<NetworkId>,
    /// Unseal-on-demand jobs at once (each holds a piece in memory).
    unseals: Arc<Semaphore>,
    /// Sealing and seal proofs, which each regenerate a sector's layers:
    /// one at a time, so a node holds one sector's layers however many
    /// deals it seals and proves (without it, the proofs the tracker asks
    /// for ran alongside the next seal and each other).
    sector_work: Arc<Semaphore>,
    /// Recently unsealed pieces, and each peer's unseals in the window
    /// (see [`crate::unseal`]).
    unseal_cache: std::sync::Mutex<crate::unseal::UnsealCache>,
    unseal_budget: std::sync::Mutex<crate::unseal::UnsealBudget>,
    /// The parent graph for the last node count used, shared by sealing,
    /// seal proofs and unsealing: one table (≈ 0.75 × the piece size at
    /// devnet parameters) rather than one per job.
    parents: std::sync::Mutex<Option<Arc<Parents>>>,
}

/// Bytes of the files kept for deals, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpaceByKind {
    /// Unsealed pieces.
    pub pieces: u64,
    /// Sealed replicas.
    pub replicas: u64,
    /// The BLAKE3 outboards of both.
    pub outboards: u64,
}

#[derive(Debug, Clone, Copy)]
struct Reservation {
    client: PeerId,
    size: u64,
    since: std::time::Instant,
}

/// How long accepted-but-not-uploaded proposals hold space.
pub const RESERVATION_TTL: Duration = Duration::from_secs(3600);
/// Where the network joined is kept.
const NETWORK_KEY: &[u8] = b"meta/network";
/// Manifests one client may keep on this node.
pub const MAX_MANIFESTS_PER_CLIENT: u64 = 256;
/// Accepted-but-not-uploaded proposals one client may hold at once.
pub const MAX_PENDING_PER_CLIENT: usize = 16;

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("peer_id", &self.peer_id).finish()
    }
}

pub use crowd_protocol::provider_hash;

/// Smallest acceptable price per epoch for `size` bytes (rounded up).
pub fn min_price(price_per_gib_epoch: u128, size: u64) -> u128 {
    (price_per_gib_epoch * size as u128).div_ceil(GIB)
}

impl Node {
    pub fn new(
        key: Keypair,
        config: NodeConfig,
        store: Arc<dyn MetaStore>,
        dirs: Dirs,
        net: Network,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(Arc<Self>, mpsc::Receiver<u64>)> {
        let tracker = match config.tracker_peer_id.as_str() {
            "" => None,
            s => Some(
                s.parse::<PeerId>()
                    .map_err(|e| anyhow!("tracker_peer_id '{s}': {e}"))?,
            ),
        };
        let tracker_link = tracker_link(&config, tracker)?;
        let params = match config.sealing_preset.as_str() {
            "production" => SealParams::production(),
            _ => SealParams::devnet(),
        };
        let (seal_tx, seal_rx) = mpsc::channel(config.seal_queue);
        let node = Arc::new(Self {
            peer_id: key.public().to_peer_id(),
            key,
            transfers: Arc::new(Semaphore::new(config.max_concurrent_transfers)),
            pending_streams: Arc::new(PeerLimits::new(
                config.max_pending_streams,
                config.max_pending_streams_per_peer,
            )),
            inbound_requests: Arc::new(PeerLimits::new(
                config.max_inbound_requests,
                config.max_inbound_requests_per_peer,
            )),
            repair_slots: Arc::new(Semaphore::new(config.max_concurrent_repairs)),
            unseal_cache: std::sync::Mutex::new(crate::unseal::UnsealCache::new(config.unseal_cache_bytes)),
            unseal_budget: std::sync::Mutex::new(crate::unseal::UnsealBudget::new(
                config.max_unseals_per_peer,
                Duration::from_secs(config.unseal_window_secs),
            )),
            config,
            store,
            dirs,
            net,
            metrics,
            params,
            tracker,
            tracker_link,
            seal_tx,
            write_lock: tokio::sync::Mutex::new(()),
            pending: std::sync::Mutex::new(HashMap::new()),
            repairs: crate::repair::RepairJobs::default(),
            last_epoch: std::sync::atomic::AtomicU64::new(0),
            unseals: Arc::new(Semaphore::new(1)),
            sector_work: Arc::new(Semaphore::new(1)),
            network: std::sync::OnceLock::new(),
            parents: std::sync::Mutex::new(None),
        });
        let configured = match node.config.network_id.as_str() {
            "" => None,
            s => Some(s.parse::<NetworkId>().map_err(|e| anyhow!("network_id: {e}"))?),
        };
        let kept = node
            .store
            .get(NETWORK_KEY)?
            .map(|b| <[u8; 32]>::try_from(b.as_slice()).map(NetworkId));
        let kept = kept
            .transpose()
            .map_err(|_| anyhow!("the store's network id is not 32 bytes"))?;
        match (configured, kept) {
            (Some(c), Some(k)) if c != k => bail!(
                "network_id {} in config.toml, but this node's store belongs to network {}",
                c.to_hex(),
                k.to_hex()
            ),
            (Some(id), _) | (None, Some(id)) => node.join_network(id)?,
            (None, None) => {}
        }
        Ok((node, seal_rx))
    }

    /// The network this node signs for and checks signatures against.
    pub fn network(&self) -> anyhow::Result<NetworkId> {
        self.network.get().copied().ok_or_else(|| {
            anyhow!("this node has not joined a network yet: the tracker has not answered (or set network_id in config.toml)")
        })
    }

    /// Joins `id` (kept in the store), or checks it is the network joined.
    pub fn join_network(&self, id: NetworkId) -> anyhow::Result<()> {
        if let Some(joined) = self.network.get() {
            if *joined != id {
                bail!(
                    "the tracker names network {}, but this node belongs to network {}",
                    id.to_hex(),
                    joined.to_hex()
                );
            }
            return Ok(());
        }
        let mut batch = Batch::default();
        batch.put(NETWORK_KEY.to_vec(), id.0.to_vec());
        self.store.write(batch)?;
        let _ = self.network.set(id);
        tracing::info!(network = %id.to_hex(), "joined the network");
        Ok(())
    }

    /// Makes the `piece-deal/` index name exactly the deal records there are
    /// (stores written before it existed; it is kept in step after).
    fn rebuild_piece_deal_index(&self, deals: &[(Vec<u8>, Vec<u8>)]) -> anyhow::Result<()> {
        let mut want = std::collections::HashSet::new();
        for (k, v) in deals {
            let deal: DealRecord = crowd_protocol::wire::from_cbor("deal record", v)?;
            if let Some(id) = records::deal_id(k) {
                want.insert(records::piece_deal_key(&deal.piece, id));
            }
        }
        let mut batch = Batch::default();
        let mut changed = false;
        for (k, _) in self.store.scan_prefix(b"piece-deal/")? {
            if !want.remove(&k) {
                batch.delete(k);
                changed = true;
            }
        }
        for k in want {
            batch.put(k, Vec::new());
            changed = true;
        }
        if changed {
            self.store.write(batch)?;
        }
        Ok(())
    }

    /// Brings disk and index back to agreement after any stop, clean or not,
    /// and re-queues seals that were in flight. Returns what it removed.
    pub fn recover(&self) -> anyhow::Result<usize> {
        let mut removed = self.dirs.clear_tmp().context("clearing tmp/")?;
        let pieces = self.store.scan_prefix(b"piece/")?;
        // pieces whose unsealed copy is kept; any other file in pieces/ goes
        let known: std::collections::HashSet<String> = pieces
            .iter()
            .filter(|(_, v)| {
                crowd_protocol::wire::from_cbor::<PieceRecord>("piece record", v)
                    .map(|p| p.unsealed)
                    .unwrap_or(true)
            })
            .map(|(k, _)| String::from_utf8_lossy(&k[6..]).into_owned())
            .collect();
        for e in std::fs::read_dir(&self.dirs.pieces)? {
            let path = e?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let stem = name.trim_end_matches(".outboard");
            if !known.contains(stem) {
                // renamed into place but never indexed: the client got no receipt
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
        // a half-done garbage collection or an interrupted seal: replica
        // files of deals that are gone or not sealed (a queued deal is
        // sealed again from the start)
        let deals = self.store.scan_prefix(b"deal/")?;
        self.rebuild_piece_deal_index(&deals)?;
        self.rebuild_client_piece_index()?;
        let sealed: std::collections::HashSet<String> = deals
            .iter()
            .filter(|(_, v)| {
                crowd_protocol::wire::from_cbor::<DealRecord>("deal record", v)
                    .map(|d| matches!(d.seal, SealState::Sealed { .. }))
                    .unwrap_or(true)
            })
            .map(|(k, _)| String::from_utf8_lossy(&k[5..]).into_owned())
            .collect();
        for e in std::fs::read_dir(&self.dirs.replicas)? {
            let path = e?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let stem = name.split('.').next().unwrap_or_default();
            if !sealed.contains(stem) {
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
        let (mut bytes, mut count) = (0u64, 0u64);
        for (_, v) in &pieces {
            if let Ok(p) = crowd_protocol::wire::from_cbor::<PieceRecord>("piece record", v) {
                bytes += p.size;
                count += 1;
            }
        }
        self.metrics.bytes_stored.set(bytes as i64);
        self.metrics.pieces.set(count as i64);
        for (_, v) in &deals {
            let deal: DealRecord = crowd_protocol::wire::from_cbor("deal record", v)?;
            self.metrics.deal_state(&deal.seal, 1);
        }
        // used space from what is indexed and on disk, so it is right after
        // any stop (and after a version that counted only pieces)
        let used = self.space_on_disk()?;
        if used != records::space_used(&*self.store)? {
            let mut batch = Batch::default();
            batch.put(records::SPACE_USED, used.to_le_bytes().to_vec());
            self.store.write(batch)?;
        }
        self.metrics.space_used.set(used as i64);
        self.metrics.space_reserved.set(used as i64);
        Ok(removed)
    }

    /// Bytes on disk for indexed deals: each piece record's unsealed file
    /// and outboard, each sealed deal's replica and outboard.
    pub fn space_on_disk(&self) -> anyhow::Result<u64> {
        let s = self.space_by_kind()?;
        Ok(s.pieces + s.replicas + s.outboards)
    }

    /// The files kept for deals, by kind, as on disk.
    pub fn space_by_kind(&self) -> anyhow::Result<SpaceByKind> {
        self.space_of(&records::all_deals(&*self.store)?)
    }

    /// [`Node::space_by_kind`] with the deal records already read.
    pub fn space_of(&self, deals: &[(u64, DealRecord)]) -> anyhow::Result<SpaceByKind> {
        let mut used = SpaceByKind::default();
        for (k, v) in self.store.scan_prefix(b"piece/")? {
            let p: PieceRecord = crowd_protocol::wire::from_cbor("piece record", &v)?;
            if p.unsealed {
                let name = String::from_utf8_lossy(&k[6..]).into_owned();
                used.pieces += records::file_len(&self.dirs.pieces.join(&name));
                used.outboards += records::file_len(&self.dirs.pieces.join(format!("{name}.outboard")));
            }
        }
        for (id, deal) in deals {
            if let SealState::Sealed { .. } = &deal.seal {
                used.replicas += records::file_len(&self.dirs.replica(*id));
                used.outboards += records::file_len(&self.dirs.replica_outboard(*id));
            }
        }
        Ok(used)
    }

    /// Bytes promised to accepted proposals whose bytes have not arrived
    /// (and to running repairs).
    pub fn reserved_bytes(&self) -> u64 {
        self.pending
            .lock()
            .map(|p| p.values().map(|r| r.size).sum())
            .unwrap_or(0)
    }

    /// Puts `space/used + add - sub` into `batch` (saturating) and returns
    /// it. Call under the write lock, and write the batch before releasing it.
    pub(crate) fn space_delta(&self, batch: &mut Batch, add: u64, sub: u64) -> anyhow::Result<u64> {
        let used = records::space_used(&*self.store)?
            .saturating_add(add)
            .saturating_sub(sub);
        batch.put(records::SPACE_USED, used.to_le_bytes().to_vec());
        Ok(used)
    }

    /// Deal ids whose seal was queued when the node stopped.
    pub fn queued_seals(&self) -> anyhow::Result<Vec<u64>> {
        Ok(records::all_deals(&*self.store)?
            .into_iter()
            .filter(|(_, deal)| deal.seal == SealState::Queued)
            .map(|(id, _)| id)
            .collect())
    }

    /// Handles one inbound control request on its own task, within the
    /// inbound bounds: beyond them it is answered "busy" at once, without
    /// a task. The tracker's requests are not counted (its own
    /// `max_provider_requests` bounds them), so strangers cannot starve
    /// challenges and seal tickets.
    pub fn dispatch(self: &Arc<Self>, req: crowd_protocol::InboundRequest) {
        let place = match self.is_tracker_peer(&req.peer) {
            true => None,
            false => match PeerLimits::enter(&self.inbound_requests, req.peer) {
                Some(place) => Some(place),
                None => {
                    self.metrics.requests_busy.inc();
                    req.respond(Response::Error {
                        message: "busy: too many requests in flight".into(),
                    });
                    return;
                }
            },
        };
        let node = self.clone();
        tokio::spawn(async move {
            let _place = place;
            let response = node.handle(req.peer, req.request.clone()).await;
            req.respond(response);
        });
    }

    /// Answers one control request. Never panics on bad input.
    pub async fn handle(self: &Arc<Self>, peer: PeerId, request: Result<Request, String>) -> Response {
        let result = match request {
            Err(reason) => Err(anyhow!("malformed request: {reason}")),
            Ok(Request::ProposeDeal { proposal, admission }) => {
                return self.propose(peer, proposal, admission).await
            }
            // tracker requests: signed by the tracker *and* sent by it, so a
            // copy of a signed request replayed by someone else does nothing
            Ok(Request::StartSeal(t)) => match self.check_sender(peer) {
                Ok(()) => self.start_seal(t).await,
                Err(e) => Err(e),
            },
            Ok(Request::ProveSeal(s)) => match self.check_sender(peer) {
                Ok(()) => self.prove_seal(s).await,
                Err(e) => Err(e),
            },
            Ok(Request::Challenge(c)) => match self.check_sender(peer) {
                Ok(()) => self.challenge(c).await,
                Err(e) => Err(e),
            },
            Ok(Request::PieceStatus(p)) => self.piece_status(&p),
            Ok(Request::StoreManifest(bytes)) => self.store_manifest(peer, bytes).await,
            Ok(Request::GetManifest(cid)) => self.get_manifest(&cid),
            Ok(Request::SealStatus(deal_id)) => self.seal_status(deal_id),
            Ok(Request::Repair { job, manifest }) => match self.check_sender(peer) {
                Ok(()) => self.repair(job, manifest).await,
                Err(e) => Err(e),
            },
            Ok(Request::RepairStatus(id)) => match self.check_sender(peer) {
                Ok(()) => self.repair_status(&id),
                Err(e) => Err(e),
            },
            Ok(Request::Tracker(_)) => Err(anyhow!("this is a storage node, not a tracker")),
        };
        result.unwrap_or_else(|e| {
            self.metrics.requests_refused.inc();
            Response::Error {
                message: format!("{e:#}"),
            }
        })
    }

    async fn propose(
        &self,
        peer: PeerId,
        signed: Signed<DealProposal>,
        admission: Signed<Admission>,
    ) -> Response {
        match self.try_propose(peer, &signed, &admission).await {
            Ok(r) => r,
            Err(e) => {
                self.metrics.requests_refused.inc();
                Response::DealRejected {
                    reason: format!("{e:#}"),
                }
            }
        }
    }

    async fn try_propose(
        &self,
        peer: PeerId,
        signed: &Signed<DealProposal>,
        admission: &Signed<Admission>,
    ) -> anyhow::Result<Response> {
        let claimed = signed
            .claimed_signer()
            .ok_or_else(|| anyhow!("proposal signer key is not valid"))?;
        let (_, p) = signed.open(&self.network()?, Some(&claimed))?;
        if p.client != claimed {
            bail!("proposal is signed by {claimed}, not by its client {}", p.client);
        }
        if p.client != peer {
            bail!("proposal for client {} sent by {peer}", p.client);
        }
        if p.provider != self.peer_id {
            bail!("proposal is for provider {}, not this node", p.provider);
        }
        if p.piece_size == 0 || p.piece_size > self.config.max_piece_bytes {
            bail!(
                "piece size {} is outside 1..={}",
                p.piece_size,
                self.config.max_piece_bytes
            );
        }
        if p.duration_epochs == 0 {
            bail!("deal duration is zero");
        }
        let floor = min_price(self.config.price_per_gib_epoch as u128, p.piece_size);
        if p.price_per_epoch < floor {
            bail!(
                "price {} per epoch is below this node's {} for {} bytes",
                p.price_per_epoch,
                floor,
                p.piece_size
            );
        }
        let max_collateral =
            (self.config.max_collateral_per_gib as u128 * p.piece_size as u128).div_ceil(GIB);
        if p.provider_collateral > max_collateral {
            bail!(
                "collateral {} is above this node's {}",
                p.provider_collateral,
                max_collateral
            );
        }
        let id = signed.id();
        self.check_admission(&id, admission)?;
        let _guard = self.write_lock.lock().await;
        if records::get::<ProposalRecord>(&*self.store, &records::proposal_key(&id))?.is_none() {
            // space: what is stored plus live reservations; a reservation is
            // in memory only, bounded per client and expires, so proposals
            // that never upload cannot fill the node
            let used = records::space_used(&*self.store)?;
            let footprint = p.piece_size.saturating_add(records::outboard_len(p.piece_size));
            let reserved = self.reserve(id, p.client, footprint, used)?;
            let record = ProposalRecord {
                proposal: signed.clone(),
                state: ProposalState::Accepted,
            };
            let mut batch = Batch::default();
            batch.put(records::proposal_key(&id), records::encode(&record));
            if let Err(e) = self.store.write(batch) {
                self.release(&id);
                return Err(e.into());
            }
            self.metrics.space_reserved.set((used + reserved) as i64);
            let piece = if p.names_piece() {
                p.piece.to_string()
            } else {
                "named on receipt".into()
            };
            tracing::info!(proposal = %records::hex(&id), %piece, size = p.piece_size, "deal accepted");
        }
        Ok(Response::DealAccepted(Signed::sign(
            &self.key,
            &self.network()?,
            &DealAcceptance { proposal: id },
        )?))
    }

    /// Paid admission: the tracker's signed word that proposal `id`'s escrow
    /// is locked, and not lapsed as far as this node has seen epochs. A key
    /// with nothing locked gets no space here, however many keys it makes.
    fn check_admission(
        &self,
        id: &crowd_protocol::ProposalId,
        admission: &Signed<Admission>,
    ) -> anyhow::Result<()> {
        let tracker = self
            .tracker
            .ok_or_else(|| anyhow!("this node has no tracker to admit deals (tracker_peer_id is empty)"))?;
        let (_, a) = admission
            .open(&self.network()?, Some(&tracker))
            .map_err(|e| anyhow!("admission: {e}"))?;
        if a.proposal != *id {
            bail!("the admission is for another proposal");
        }
        let epoch = self.last_epoch.load(std::sync::atomic::Ordering::Relaxed);
        if a.until_epoch < epoch {
            bail!(
                "the admission lapsed after epoch {} (the tracker is at {epoch})",
                a.until_epoch
            );
        }
        Ok(())
    }

    /// Reserves `size` bytes for proposal `id` of `client`, given `used`
    /// bytes stored; returns the total now reserved.
    pub(crate) fn reserve(&self, id: [u8; 32], client: PeerId, size: u64, used: u64) -> anyhow::Result<u64> {
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| anyhow!("reservation table poisoned"))?;
        pending.retain(|_, r| r.since.elapsed() < RESERVATION_TTL);
        if pending.values().filter(|r| r.client == client).count() >= MAX_PENDING_PER_CLIENT {
            bail!("client {client} already has {MAX_PENDING_PER_CLIENT} deals waiting for their bytes");
        }
        let reserved: u64 = pending.values().map(|r| r.size).sum();
        if used.saturating_add(reserved).saturating_add(size) > self.config.capacity_bytes {
            bail!(
                "not enough space: {used} bytes stored and {reserved} reserved of {}",
                self.config.capacity_bytes
            );
        }
        pending.insert(
            id,
            Reservation {
                client,
                size,
                since: std::time::Instant::now(),
            },
        );
        Ok(reserved + size)
    }

    pub(crate) fn release(&self, id: &[u8; 32]) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(id);
        }
    }

    fn piece_status(&self, piece: &PieceId) -> anyhow::Result<Response> {
        let Some(record) = records::get::<PieceRecord>(&*self.store, &records::piece_key(piece))? else {
            return Ok(Response::Piece(None));
        };
        let mut sealed = None;
        for (_, deal) in records::deals_of(&*self.store, piece)? {
            if let SealState::Sealed { commitment, .. } = deal.seal {
                sealed = Some(commitment);
            }
        }
        Ok(Response::Piece(Some(PieceInfo {
            piece: *piece,
            size: record.size,
            sealed,
        })))
    }

    async fn store_manifest(&self, peer: PeerId, bytes: Vec<u8>) -> anyhow::Result<Response> {
        if bytes.len() > crowd_protocol::MAX_MANIFEST {
            bail!(
                "manifest of {} bytes is above the {}-byte limit",
                bytes.len(),
                crowd_protocol::MAX_MANIFEST
            );
        }
        let manifest = crowd_protocol::Manifest::decode(&bytes)?;
        let root = manifest.root.to_bytes();
        let cid = crowd_protocol::manifest_cid(&bytes).to_bytes();
        let _guard = self.write_lock.lock().await;
        // one manifest per (root, client): a manifest claiming another
        // client's root sits beside it, never replaces it
        let pointer = records::manifest_root_key(&root, &peer);
        let previous = self.store.get(&pointer)?;
        if previous.as_deref() != Some(cid.as_slice()) {
            let siblings = self.store.scan_prefix(&records::manifest_root_prefix(&root))?;
            let mut batch = Batch::default();
            if previous.is_none() {
                // only clients with a piece stored here, a bounded number
                // each, and a bounded number of clients per root
                let count_key = records::manifest_count_key(&peer);
                let count = records::get::<u64>(&*self.store, &count_key)?.unwrap_or(0);
                if count == 0 && !self.has_stored_piece_of(&peer)? {
                    bail!("manifests are kept only for clients with a piece stored here");
                }
                if count >= MAX_MANIFESTS_PER_CLIENT {
                    bail!("client {peer} already has {MAX_MANIFESTS_PER_CLIENT} manifests here");
                }
                if siblings.len() >= crowd_protocol::MAX_MANIFESTS_PER_ROOT {
                    bail!(
                        "this root already has {} manifests here, from other clients",
                        crowd_protocol::MAX_MANIFESTS_PER_ROOT
                    );
                }
                batch.put(count_key, records::encode(&(count + 1)));
            } else if let Some(old) = &previous {
                // the client's previous manifest goes unless another client's points at it too
                if !siblings.iter().any(|(k, v)| *k != pointer && v == old) {
                    batch.delete(records::manifest_key(old));
                }
            }
            batch
                .put(records::manifest_key(&cid), bytes)
                .put(pointer, cid.clone());
            self.store.write(batch)?;
        }
        drop(_guard);
        // announced under both the manifest CID and the file's root CID, so
        // `crowd get ROOT` finds it on the DHT without the tracker
        self.announce_key(cid.clone());
        self.announce_key(root);
        Ok(Response::ManifestStored(cid))
    }

    /// Announces on the DHT that we hold `key`, in the background (a query
    /// can take seconds); a failure is counted, never silent.
    pub(crate) fn announce_key(&self, key: Vec<u8>) {
        tokio::spawn(announce(self.net.clone(), self.metrics.clone(), key));
    }

    /// Announces every piece and manifest held (at start: the DHT store is
    /// in memory), a few at a time.
    pub async fn announce_held(self: Arc<Self>) {
        let keys = match self.held_keys() {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!("cannot list what to announce: {e:#}");
                return;
            }
        };
        let count = keys.len();
        futures::stream::iter(keys)
            .for_each_concurrent(8, |key| announce(self.net.clone(), self.metrics.clone(), key))
            .await;
        tracing::info!(count, "announced what we hold on the DHT");
    }

    /// DHT keys of everything held: piece CIDs, manifest CIDs and the root
    /// CIDs manifests are found by.
    fn held_keys(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        for (k, _) in self.store.scan_prefix(b"piece/")? {
            let piece = records::unhex(&k[b"piece/".len()..]).and_then(|b| <[u8; 32]>::try_from(b).ok());
            if let Some(bytes) = piece {
                keys.push(PieceId(bytes).cid().to_bytes());
            }
        }
        for (k, _) in self.store.scan_prefix(b"manifest/")? {
            keys.extend(records::unhex(&k[b"manifest/".len()..]));
        }
        // manifest-root/<root hex>/<client>: each root once
        let mut roots = std::collections::BTreeSet::new();
        for (k, _) in self.store.scan_prefix(b"manifest-root/")? {
            let rest = &k[b"manifest-root/".len()..];
            let end = rest.iter().position(|b| *b == b'/').unwrap_or(rest.len());
            roots.extend(records::unhex(&rest[..end]));
        }
        keys.extend(roots);
        Ok(keys)
    }

    fn has_stored_piece_of(&self, client: &PeerId) -> anyhow::Result<bool> {
        // the client's own index entries only; one whose record is gone
        // (collected since) is dropped here
        let mut stale = Batch::default();
        let mut any_stale = false;
        let mut found = false;
        for (k, _) in self.store.scan_prefix(&records::client_piece_prefix(client))? {
            let id = k
                .rsplit(|b| *b == b'/')
                .next()
                .and_then(records::unhex)
                .and_then(|v| <[u8; 32]>::try_from(v).ok());
            let live = match id {
                Some(id) => {
                    matches!(
                        records::get::<ProposalRecord>(&*self.store, &records::proposal_key(&id))?,
                        Some(ProposalRecord {
                            state: ProposalState::Stored(_),
                            ..
                        })
                    ) || self.store.get(&records::repair_key(&id))?.is_some()
                }
                None => false,
            };
            if live {
                found = true;
                break;
            }
            stale.delete(k);
            any_stale = true;
        }
        if any_stale {
            self.store.write(stale)?;
        }
        Ok(found)
    }

    /// Makes the `client-piece/` index name every stored proposal and repair
    /// job (stores written before it existed; entries are added in the
    /// batches that store pieces, and dropped lazily once their record goes).
    fn rebuild_client_piece_index(&self) -> anyhow::Result<()> {
        let mut batch = Batch::default();
        let mut changed = false;
        for (_, v) in self.store.scan_prefix(b"proposal/")? {
            let record: ProposalRecord = crowd_protocol::wire::from_cbor("proposal record", &v)?;
            if let (ProposalState::Stored(_), Some(client)) =
                (&record.state, record.proposal.claimed_signer())
            {
                let key = records::client_piece_key(&client, &record.proposal.id());
                if self.store.get(&key)?.is_none() {
                    batch.put(key, Vec::new());
                    changed = true;
                }
            }
        }
        for (_, v) in self.store.scan_prefix(b"repair/")? {
            let record: records::RepairRecord = crowd_protocol::wire::from_cbor("repair record", &v)?;
            let (_, job) = record.job.open(&self.network()?, None)?;
            let key = records::client_piece_key(&job.proposal.client, &record.job.id());
            if self.store.get(&key)?.is_none() {
                batch.put(key, Vec::new());
                changed = true;
            }
        }
        if changed {
            self.store.write(batch)?;
        }
        Ok(())
    }

    /// By manifest CID, or every client's for the root CID of the file it
    /// describes (at most [`crowd_protocol::MAX_MANIFESTS_PER_ROOT`]).
    fn get_manifest(&self, cid: &[u8]) -> anyhow::Result<Response> {
        if let Some(bytes) = self.store.get(&records::manifest_key(cid))? {
            return Ok(Response::Manifests(vec![crowd_protocol::Blob(bytes)]));
        }
        let mut found = Vec::new();
        let pointers = self.store.scan_prefix(&records::manifest_root_prefix(cid))?;
        for (_, manifest_cid) in pointers.into_iter().take(crowd_protocol::MAX_MANIFESTS_PER_ROOT) {
            if let Some(bytes) = self.store.get(&records::manifest_key(&manifest_cid))? {
                found.push(crowd_protocol::Blob(bytes));
            }
        }
        Ok(Response::Manifests(found))
    }

    fn seal_status(&self, deal_id: u64) -> anyhow::Result<Response> {
        let report = match records::get::<DealRecord>(&*self.store, &records::deal_key(deal_id))? {
            None => SealReport::Unknown,
            Some(deal) => match deal.seal {
                SealState::Queued => SealReport::Queued,
                SealState::Sealed { commitment, .. } => SealReport::Sealed(commitment),
                SealState::Failed(reason) => SealReport::Failed { reason },
            },
        };
        Ok(Response::SealStatus(report))
    }

    pub(crate) fn check_sender(&self, peer: PeerId) -> anyhow::Result<()> {
        match self.tracker {
            Some(_) if self.is_tracker_peer(&peer) => Ok(()),
            Some(t) => bail!("only the tracker {t} may send this, not {peer}"),
            None => bail!("this node has no tracker configured"),
        }
    }

    /// The tracker, or one of its replicas.
    pub(crate) fn is_tracker_peer(&self, peer: &PeerId) -> bool {
        self.tracker.as_ref() == Some(peer) || self.tracker_link.as_ref().is_some_and(|l| l.contains(peer))
    }

    /// A request to the tracker (following a replica set's leader).
    pub(crate) async fn ask_tracker(&self, request: TrackerRequest) -> anyhow::Result<Response> {
        let link = self
            .tracker_link
            .as_ref()
            .ok_or_else(|| anyhow!("this node has no tracker configured"))?;
        Ok(link.request(&self.net, request).await?)
    }

    pub(crate) fn check_tracker<T: crowd_protocol::Signable>(&self, signed: &Signed<T>) -> anyhow::Result<T> {
        let tracker = self
            .tracker
            .ok_or_else(|| anyhow!("this node has no tracker configured"))?;
        Ok(signed.open(&self.network()?, Some(&tracker))?.1)
    }

    async fn start_seal(&self, signed: Signed<SealTicket>) -> anyhow::Result<Response> {
        let t = self.check_tracker(&signed)?;
        let _guard = self.write_lock.lock().await;
        let p = self.stored_proposal(&t.proposal)?;
        let existing = records::get::<DealRecord>(&*self.store, &records::deal_key(t.deal_id))?;
        if let Some(existing) = &existing {
            if existing.proposal != t.proposal || existing.ticket != t.ticket {
                bail!("deal {} is already sealing another proposal or ticket", t.deal_id);
            }
            // a failed seal (e.g. a full disk) is retried; anything else stands
            if !matches!(existing.seal, SealState::Failed(_)) {
                return Ok(Response::SealQueued);
            }
            self.metrics.deal_state(&existing.seal, -1);
        }
        let deal = DealRecord {
            proposal: t.proposal,
            piece: p.piece,
            piece_size: p.piece_size,
            ticket: t.ticket,
            seal: SealState::Queued,
        };
        // reserve the queue slot first, so a full queue leaves nothing behind
        let permit = self
            .seal_tx
            .try_reserve()
            .map_err(|_| anyhow!("seal queue is full"))?;
        let mut batch = Batch::default();
        batch
            .put(records::deal_key(t.deal_id), records::encode(&deal))
            .put(records::piece_deal_key(&deal.piece, t.deal_id), Vec::new());
        self.store.write(batch)?;
        self.metrics.deal_state(&deal.seal, 1);
        self.metrics.seals_queued.inc();
        permit.send(t.deal_id);
        Ok(Response::SealQueued)
    }

    /// The proposal of a deal whose piece is stored here: an uploaded
    /// client proposal, or the proposal inside a finished repair job.
    pub(crate) fn stored_proposal(&self, id: &[u8; 32]) -> anyhow::Result<DealProposal> {
        if let Some(record) = records::get::<ProposalRecord>(&*self.store, &records::proposal_key(id))? {
            return record
                .stored(&self.network()?)?
                .ok_or_else(|| anyhow!("piece of proposal {} has not been uploaded", records::hex(id)));
        }
        if let Some(record) = records::get::<records::RepairRecord>(&*self.store, &records::repair_key(id))? {
            return Ok(record.job.open(&self.network()?, None)?.1.proposal);
        }
        bail!("unknown proposal {}", records::hex(id))
    }

    fn sealed_deal(&self, deal_id: u64) -> anyhow::Result<(DealRecord, [u8; 32], [u8; 32], [u8; 32])> {
        let deal: DealRecord = records::get(&*self.store, &records::deal_key(deal_id))?
            .ok_or_else(|| anyhow!("unknown deal {deal_id}"))?;
        let SealState::Sealed {
            commitment,
            comm_c,
            comm_r_last,
        } = &deal.seal
        else {
            bail!("deal {deal_id} is not sealed");
        };
        let (_, c) = commitment.open(&self.network()?, Some(&self.peer_id))?;
        Ok((deal.clone(), *comm_c, *comm_r_last, c.replica_id))
    }

    async fn prove_seal(self: &Arc<Self>, signed: Signed<SealSeed>) -> anyhow::Result<Response> {
        let s = self.check_tracker(&signed)?;
        let (deal, _, _, replica_id) = self.sealed_deal(s.deal_id)?;
        let params = self.params;
        let node = self.clone();
        let _permit = self.sector_work.clone().acquire_owned().await?;
        let proof = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
            // labels are not kept after sealing: they are regenerated one
            // sector at a time (deterministic); piece and replica are read
            // from disk where the challenges land
            let piece = node.piece_source(&deal.piece)?;
            let nodes = crowd_porep::graph::node_count(piece.len_bytes()?);
            let parents = node.parents(nodes)?;
            let data_outboard = Outboard::build_from(&*piece)?;
            let replica = FileAt(std::fs::File::open(node.dirs.replica(s.deal_id))?);
            let replica_outboard = files::read_outboard(&node.dirs.replica_outboard(s.deal_id))?;
            let witness = SectorWitness {
                replica_id,
                piece: &*piece,
                data_outboard: &data_outboard,
                replica: &replica,
                replica_outboard: &replica_outboard,
            };
            Ok(crowd_porep::proof::prove_seal_sectors(&witness, &params, &parents, &s.seed)?.encode())
        })
        .await??;
        Ok(Response::SealProof(Signed::sign(
            &self.key,
            &self.network()?,
            &SealProofMsg {
                deal_id: s.deal_id,
                proof,
            },
        )?))
    }

    async fn challenge(self: &Arc<Self>, signed: Signed<WindowChallenge>) -> anyhow::Result<Response> {
        let c = self.check_tracker(&signed)?;
        // a tracker-signed epoch: what repair jobs' expiry is checked against
        // when the tracker cannot be asked
        self.last_epoch
            .fetch_max(c.epoch, std::sync::atomic::Ordering::Relaxed);
        let (_, comm_c, _, _) = self.sealed_deal(c.deal_id)?;
        let node = self.clone();
        let result = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
            let outboard = files::read_outboard(&node.dirs.replica_outboard(c.deal_id))?;
            let replica = FileAt(std::fs::File::open(node.dirs.replica(c.deal_id))?);
            let proof = crowd_porep::proof::prove_window(
                &replica,
                &outboard,
                &comm_c,
                &node.params,
                c.deal_id,
                c.epoch,
                &c.randomness,
            )?;
            Ok(proof.encode())
        })
        .await?;
        match result {
            Ok(proof) => {
                self.metrics.window_proofs.inc();
                let mut batch = Batch::default();
                batch.put(
                    records::challenge_key(c.deal_id, c.epoch),
                    (proof.len() as u64).to_le_bytes().to_vec(),
                );
                self.store.write(batch)?;
                Ok(Response::WindowProof(Signed::sign(
                    &self.key,
                    &self.network()?,
                    &WindowProofMsg {
                        deal_id: c.deal_id,
                        epoch: c.epoch,
                        proof,
                    },
                )?))
            }
            Err(e) => {
                self.metrics.window_proof_failures.inc();
                Err(e.context(format!("window proof for deal {} epoch {}", c.deal_id, c.epoch)))
            }
        }
    }

    /// Registers with the configured tracker (capacity, price, collateral and
    /// these addresses), retrying with backoff until it answers.
    pub async fn register_with_tracker(self: Arc<Self>, addrs: Vec<String>) {
        let Some(tracker) = self.tracker else { return };
        let mut wait = Duration::from_millis(250);
        loop {
            match self.try_register(tracker, addrs.clone()).await {
                Ok(()) => {
                    tracing::info!(%tracker, "registered with the tracker");
                    return;
                }
                Err(e) => tracing::warn!(%tracker, "registering with the tracker: {e:#}"),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(15));
        }
    }

    async fn try_register(&self, tracker: PeerId, addrs: Vec<String>) -> anyhow::Result<()> {
        let _ = tracker;
        let ask = |request| self.ask_tracker(request);
        match ask(TrackerRequest::Info).await? {
            Response::Tracker(TrackerResponse::Info(info)) => self.join_network(info.network)?,
            other => bail!("unexpected answer to an info query: {other:?}"),
        }
        let nonce = match ask(TrackerRequest::Account(self.peer_id)).await? {
            Response::Tracker(TrackerResponse::Account(a)) => a.nonce,
            other => bail!("unexpected answer to an account query: {other:?}"),
        };
        let registration = Signed::sign(
            &self.key,
            &self.network()?,
            &ProviderRegistration {
                capacity: self.config.capacity_bytes,
                price_per_gib_epoch: u128::from(self.config.price_per_gib_epoch),
                collateral_per_gib: u128::from(self.config.max_collateral_per_gib),
                nonce,
            },
        )?;
        match ask(TrackerRequest::Register { registration, addrs }).await? {
            Response::Tracker(TrackerResponse::Registered) => Ok(()),
            Response::Error { message } => bail!("{message}"),
            other => bail!("unexpected answer to a registration: {other:?}"),
        }
    }

    /// Reads a new transfer stream's header: at most `max_pending_streams`
    /// wait at once, each for `header_timeout_secs`. Then a transfer slot
    /// is taken, so streams that never send a header hold no slot.
    async fn admit<H: serde::de::DeserializeOwned>(
        &self,
        peer: PeerId,
        stream: &mut Stream,
        what: &'static str,
    ) -> Result<(H, tokio::sync::OwnedSemaphorePermit), String> {
        let waiting = PeerLimits::enter(&self.pending_streams, peer)
            .ok_or_else(|| "busy: too many streams waiting for their header".to_string())?;
        let limit = Duration::from_secs(self.config.header_timeout_secs);
        self.metrics.streams_pending.inc();
        let header = tokio::time::timeout(limit, read_frame(stream, what, MAX_STREAM_HEADER)).await;
        self.metrics.streams_pending.dec();
        drop(waiting);
        let header = header
            .map_err(|_| format!("no {what} within {limit:?}"))?
            .map_err(|e| e.to_string())?;
        let slot = self
            .transfers
            .clone()
            .try_acquire_owned()
            .map_err(|_| "busy: too many transfers".to_string())?;
        Ok((header, slot))
    }

    /// Accepts upload streams until the network stops.
    pub async fn serve_uploads(self: Arc<Self>) -> anyhow::Result<()> {
        let mut incoming = self.net.streams().accept(PIECE_PROTOCOL)?;
        while let Some((peer, mut stream)) = incoming.next().await {
            let node = self.clone();
            tokio::spawn(async move {
                match node
                    .admit::<UploadHeader>(peer, &mut stream, "upload header")
                    .await
                {
                    Ok((header, slot)) => {
                        node.upload(peer, header, stream).await;
                        drop(slot);
                    }
                    Err(reason) => {
                        node.metrics.uploads_rejected.inc();
                        tracing::debug!(%peer, "upload refused: {reason}");
                        let _ = write_frame(&mut stream, &UploadResult::Rejected { reason }).await;
                        let _ = stream.close().await;
                    }
                }
            });
        }
        Ok(())
    }

    async fn upload(&self, peer: PeerId, header: UploadHeader, mut stream: Stream) {
        let result = match self.receive(peer, header, &mut stream).await {
            Ok(receipt) => UploadResult::Stored(receipt),
            Err(e) => {
                self.metrics.uploads_rejected.inc();
                tracing::info!(%peer, "upload rejected: {e:#}");
                UploadResult::Rejected {
                    reason: format!("{e:#}"),
                }
            }
        };
        let _ = write_frame(&mut stream, &result).await;
        let _ = stream.close().await;
    }

    pub(crate) fn stall(&self) -> Duration {
        Duration::from_secs(self.config.transfer_timeout_secs)
    }

    async fn receive(
        &self,
        peer: PeerId,
        header: UploadHeader,
        stream: &mut Stream,
    ) -> anyhow::Result<Signed<PieceReceipt>> {
        let record: ProposalRecord = records::get(&*self.store, &records::proposal_key(&header.proposal))?
            .ok_or_else(|| anyhow!("unknown proposal {}", records::hex(&header.proposal)))?;
        let (_, p) = record.proposal.open(&self.network()?, None)?;
        if p.client != peer {
            bail!("proposal belongs to client {}, not {peer}", p.client);
        }
        if let ProposalState::Stored(receipt) = &record.state {
            // already have it: same receipt, nothing to read
            return Ok(receipt.clone());
        }
        // bytes go to tmp/, their tree (outboard) built as they arrive
        let (tmp_path, mut tmp) = self.dirs.temp_file("upload-")?;
        let outcome = self.stream_to_file(stream, &mut tmp, p.piece_size).await;
        let outboard = match outcome {
            Ok(o) => o,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp_path);
                return Err(e);
            }
        };
        // a proposal that names no piece is for the bytes received: the
        // receipt names them, and the client publishes the deal with it
        if p.names_piece() && outboard.root() != p.piece.0 {
            let _ = std::fs::remove_file(&tmp_path);
            bail!(
                "piece bytes do not match {} (BLAKE3 mismatch); nothing kept",
                p.piece
            );
        }
        let p = DealProposal {
            piece: PieceId(outboard.root()),
            ..p
        };
        // files and index change together under the lock, so a concurrent
        // drop of the unsealed copy cannot interleave
        let guard = self.write_lock.lock().await;
        // two uploads of one proposal at once: the first to get here is
        // stored and signed for, once (a second receipt for other bytes of
        // an unnamed proposal would leave the first bytes without a user)
        let now: Option<ProposalRecord> =
            records::get(&*self.store, &records::proposal_key(&header.proposal))?;
        if let Some(ProposalRecord {
            state: ProposalState::Stored(receipt),
            ..
        }) = now
        {
            let _ = std::fs::remove_file(&tmp_path);
            return Ok(receipt);
        }
        let receipt = Signed::sign(
            &self.key,
            &self.network()?,
            &PieceReceipt {
                proposal: header.proposal,
                piece: p.piece,
                piece_size: p.piece_size,
            },
        )?;
        let known = records::get::<PieceRecord>(&*self.store, &records::piece_key(&p.piece))?;
        let outboard_bytes = outboard.encode();
        // a piece already held (unsealed) is replaced by the same bytes
        let new_bytes = match &known {
            Some(k) if k.unsealed => 0,
            _ => p.piece_size + outboard_bytes.len() as u64,
        };
        let used = records::space_used(&*self.store)?;
        if used.saturating_add(new_bytes) > self.config.capacity_bytes {
            let _ = std::fs::remove_file(&tmp_path);
            bail!(
                "not enough space to keep the piece: {used} of {} bytes used",
                self.config.capacity_bytes
            );
        }
        // the outboard for verified serving (built while receiving), then
        // the piece file, then the index
        let piece_path = self.dirs.piece(&p.piece);
        let outboard_path = self.dirs.piece_outboard(&p.piece);
        let dirs = self.dirs.clone();
        let tmp_for_ob = tmp_path.clone();
        let commit = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            files::write_atomic(&dirs, &outboard_path, &outboard_bytes)?;
            files::commit(&tmp, &tmp_for_ob, &piece_path)?;
            Ok(())
        })
        .await?;
        if let Err(e) = commit {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(e.context("storing the piece"));
        }
        let mut batch = Batch::default();
        batch
            .put(
                records::piece_key(&p.piece),
                records::encode(&PieceRecord {
                    size: p.piece_size,
                    unsealed: true,
                }),
            )
            .put(records::client_piece_key(&p.client, &header.proposal), Vec::new())
            .put(
                records::proposal_key(&header.proposal),
                records::encode(&ProposalRecord {
                    proposal: record.proposal,
                    state: ProposalState::Stored(receipt.clone()),
                }),
            )
            .put(records::SPACE_USED, (used + new_bytes).to_le_bytes().to_vec());
        self.store.write(batch)?;
        self.metrics.space_used.set((used + new_bytes) as i64);
        drop(guard);
        self.release(&header.proposal);
        if known.is_none() {
            self.metrics.pieces.inc();
            self.metrics.bytes_stored.inc_by(p.piece_size as i64);
        }
        tracing::info!(piece = %p.piece, size = p.piece_size, "piece stored");
        // announce outside the lock: a DHT query can take seconds
        self.announce_key(p.piece.cid().to_bytes());
        Ok(receipt)
    }

    /// Copies exactly `size` bytes from the stream into `file`, returning
    /// their outboard (root = BLAKE3 hash), built as they pass: each byte is
    /// hashed once and never read back. Memory: one 1 MiB buffer and 32
    /// bytes per 16 KiB group.
    async fn stream_to_file(
        &self,
        stream: &mut Stream,
        file: &mut std::fs::File,
        size: u64,
    ) -> anyhow::Result<Outboard> {
        use std::io::Write;
        let mut hasher = crowd_porep::OutboardBuilder::new();
        // written back while it arrives: the fsync before the receipt then
        // waits for the last few MiB, not for the whole piece
        let mut out = crowd_protocol::util::Writeback::new(file);
        let mut buf = vec![0u8; UPLOAD_BUF];
        let mut left = size;
        while left > 0 {
            let want = (left as usize).min(buf.len());
            let n = tokio::time::timeout(self.stall(), stream.read(&mut buf[..want]))
                .await
                .map_err(|_| anyhow!("upload stalled for {:?}", self.stall()))??;
            if n == 0 {
                bail!("upload ended after {} of {size} bytes", size - left);
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            self.metrics.bytes_received.inc_by(n as u64);
            left -= n as u64;
        }
        // what the writer still holds goes out before the caller's fsync
        out.flush()?;
        Ok(hasher.finalize())
    }

    /// Serves fetch streams until the network stops.
    pub async fn serve_fetches(self: Arc<Self>) -> anyhow::Result<()> {
        let mut incoming = self.net.streams().accept(FETCH_PROTOCOL)?;
        while let Some((peer, mut stream)) = incoming.next().await {
            let node = self.clone();
            tokio::spawn(async move {
                match node
                    .admit::<FetchRequest>(peer, &mut stream, "fetch request")
                    .await
                {
                    Ok((req, slot)) => {
                        if let Err(e) = node.fetch(peer, req, stream).await {
                            tracing::debug!(%peer, "fetch ended: {e:#}");
                        }
                        drop(slot);
                    }
                    Err(reason) => {
                        tracing::debug!(%peer, "fetch refused: {reason}");
                        let _ = write_frame(&mut stream, &FetchHeader::Refused { reason }).await;
                        let _ = stream.close().await;
                    }
                }
            });
        }
        Ok(())
    }

    async fn fetch(
        self: &Arc<Self>,
        peer: PeerId,
        req: FetchRequest,
        mut stream: Stream,
    ) -> anyhow::Result<()> {
        let record = records::get::<PieceRecord>(&*self.store, &records::piece_key(&req.piece))?;
        let Some(record) = record else {
            write_frame(&mut stream, &FetchHeader::NotFound).await?;
            return Ok(stream.close().await?);
        };
        if req.start > req.end || req.end > record.size {
            let reason = format!(
                "range {}..{} is outside the piece's {} bytes",
                req.start, req.end, record.size
            );
            write_frame(&mut stream, &FetchHeader::Refused { reason }).await?;
            return Ok(stream.close().await?);
        }
        let sent = if record.unsealed {
            let outboard = files::read_outboard(&self.dirs.piece_outboard(&req.piece))?;
            let file = std::fs::File::open(self.dirs.piece(&req.piece))?;
            write_frame(
                &mut stream,
                &FetchHeader::Ok {
                    piece_size: record.size,
                },
            )
            .await?;
            crowd_protocol::fetch::send_range(&mut stream, &file, &outboard, req.start, req.end, self.stall())
                .await?
        } else {
            // no unsealed copy kept: unsealed from the replica (bounded by
            // max_piece_bytes), at most once per peer budget and then cached
            let Some(unsealed) = self.unsealed(peer, req.piece).await? else {
                let reason = format!(
                    "unseal budget spent: this piece is kept sealed only, and one peer may cause at most {} unseals every {} s",
                    self.config.max_unseals_per_peer, self.config.unseal_window_secs
                );
                write_frame(&mut stream, &FetchHeader::Refused { reason }).await?;
                return Ok(stream.close().await?);
            };
            write_frame(
                &mut stream,
                &FetchHeader::Ok {
                    piece_size: record.size,
                },
            )
            .await?;
            crowd_protocol::fetch::send_range(
                &mut stream,
                &*unsealed.source,
                &unsealed.outboard,
                req.start,
                req.end,
                self.stall(),
            )
            .await?
        };
        self.metrics.bytes_served.inc_by(sent);
        Ok(stream.close().await?)
    }

    /// A sealed-only piece's bytes for `peer`: from the cache, else unsealed
    /// if the peer has budget left (`None` if not; the tracker is exempt).
    async fn unsealed(
        self: &Arc<Self>,
        peer: PeerId,
        piece: PieceId,
    ) -> anyhow::Result<Option<Arc<crate::unseal::Unsealed>>> {
        let cached = || {
            self.unseal_cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&piece)
        };
        if let Some(u) = cached() {
            self.metrics.unseal_cache_hits.inc();
            return Ok(Some(u));
        }
        if !self.is_tracker_peer(&peer) {
            let allowed = self
                .unseal_budget
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(peer, std::time::Instant::now());
            if !allowed {
                self.metrics.unseals_refused.inc();
                return Ok(None);
            }
        }
        // one unseal at a time: each holds a sector's labels in memory
        let _permit = self.unseals.clone().acquire_owned().await?;
        // unsealed by another fetch while this one waited
        if let Some(u) = cached() {
            self.metrics.unseal_cache_hits.inc();
            return Ok(Some(u));
        }
        let node = self.clone();
        let (file, outboard) = tokio::task::spawn_blocking(move || node.unseal_copy(&piece)).await??;
        let unsealed = Arc::new(crate::unseal::Unsealed {
            source: Box::new(FileAt(file)),
            outboard,
        });
        self.metrics.unseals.inc();
        self.unseal_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(piece, unsealed.clone());
        Ok(Some(unsealed))
    }
}

/// Where tracker requests go: the replicas listed in `tracker_replicas`, or
/// else the tracker at `tracker_address` (or reached through the DHT).
fn tracker_link(
    config: &NodeConfig,
    tracker: Option<PeerId>,
) -> anyhow::Result<Option<crowd_protocol::tracker_link::TrackerLink>> {
    let parse = |s: &str| -> anyhow::Result<(PeerId, Vec<crowd_protocol::libp2p::Multiaddr>)> {
        let addr: crowd_protocol::libp2p::Multiaddr = s.parse().map_err(|e| anyhow!("'{s}': {e}"))?;
        match addr.iter().last() {
            Some(crowd_protocol::libp2p::multiaddr::Protocol::P2p(peer)) => Ok((peer, vec![addr])),
            _ => bail!("'{s}' does not end in /p2p/<peer id>"),
        }
    };
    let peers = if !config.tracker_replicas.is_empty() {
        config
            .tracker_replicas
            .iter()
            .map(|s| parse(s).map_err(|e| anyhow!("tracker_replicas: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?
    } else if let Some(t) = tracker {
        match config.tracker_address.as_str() {
            "" => vec![(t, Vec::new())],
            a => vec![(t, parse(a)?.1)],
        }
    } else {
        return Ok(None);
    };
    Ok(Some(crowd_protocol::tracker_link::TrackerLink::new(peers)))
}

/// One DHT announcement of what we hold; a failure is counted, never silent.
async fn announce(net: Network, metrics: Arc<Metrics>, key: Vec<u8>) {
    metrics.dht_announced.inc();
    if let Err(e) = net.provide(key).await {
        metrics.dht_provide_failures.inc();
        tracing::debug!("DHT announcement failed: {e}");
    }
}

/// The sealing worker: one deal at a time on a blocking thread, so sealing
/// never stalls the network. The parent graph is shared ([`Node::parents`]).
pub fn seal_worker(node: Arc<Node>, mut jobs: mpsc::Receiver<u64>) {
    while let Some(deal_id) = jobs.blocking_recv() {
        node.metrics.seals_queued.dec();
        node.metrics.seals_running.inc();
        let result = match futures::executor::block_on(node.sector_work.clone().acquire_owned()) {
            Ok(_permit) => seal_one(&node, deal_id),
            Err(e) => Err(anyhow!("sealing stopped: {e}")),
        };
        node.metrics.seals_running.dec();
        let state = match result {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(deal_id, "seal failed: {e:#}");
                SealState::Failed(format!("{e:#}"))
            }
        };
        let key = records::deal_key(deal_id);
        // under the write lock: space accounting is read-modify-write, and
        // garbage collection deletes deals under it too
        let guard = node.write_lock.blocking_lock();
        match records::get::<DealRecord>(&*node.store, &key) {
            Ok(Some(mut deal)) => {
                let was_sealed = matches!(deal.seal, SealState::Sealed { .. });
                node.metrics.deal_state(&deal.seal, -1);
                deal.seal = state;
                node.metrics.deal_state(&deal.seal, 1);
                let mut batch = Batch::default();
                batch.put(key, records::encode(&deal));
                let sealed = matches!(deal.seal, SealState::Sealed { .. });
                let replica_bytes = if sealed && !was_sealed {
                    records::file_len(&node.dirs.replica(deal_id))
                        + records::file_len(&node.dirs.replica_outboard(deal_id))
                } else {
                    0
                };
                let written = node.space_delta(&mut batch, replica_bytes, 0).and_then(|used| {
                    node.store.write(batch)?;
                    Ok(used)
                });
                drop(guard);
                match written {
                    Err(e) => tracing::error!(deal_id, "recording seal: {e:#}"),
                    Ok(used) => {
                        node.metrics.space_used.set(used as i64);
                        if sealed && !node.config.keep_unsealed {
                            if let Err(e) = node.drop_unsealed(&deal.piece) {
                                tracing::warn!(deal_id, "dropping the unsealed copy: {e:#}");
                            }
                        }
                    }
                }
            }
            other => {
                // ended and collected while it was sealing: its replica goes too
                let _ = std::fs::remove_file(node.dirs.replica(deal_id));
                let _ = std::fs::remove_file(node.dirs.replica_outboard(deal_id));
                drop(guard);
                tracing::warn!(deal_id, "deal vanished while sealing: {other:?}");
            }
        }
    }
}

fn seal_one(node: &Node, deal_id: u64) -> anyhow::Result<SealState> {
    let deal: DealRecord = records::get(&*node.store, &records::deal_key(deal_id))?
        .ok_or_else(|| anyhow!("unknown deal {deal_id}"))?;
    // the piece is read from its file where needed, never held whole (unless
    // it must be unsealed from another replica first)
    let piece = node.piece_source(&deal.piece)?;
    let piece_len = piece.len_bytes()?;
    if Outboard::build_from(&*piece)?.root() != deal.piece.0 {
        bail!("the stored copy of {} does not hash to it", deal.piece);
    }
    let parents = node.parents(crowd_porep::graph::node_count(piece_len))?;
    let replica_id = crowd_porep::seal::replica_id(
        &provider_hash(&node.peer_id),
        &deal.piece.0,
        deal_id,
        &deal.ticket,
    );
    // one sector at a time, the replica written as it is computed
    let c = files::write_atomic_with(&node.dirs, &node.dirs.replica(deal_id), |out| {
        Ok(crowd_porep::seal::seal_sectors(
            &*piece,
            &replica_id,
            &node.params,
            &parents,
            out,
        )?)
    })?;
    files::write_atomic(
        &node.dirs,
        &node.dirs.replica_outboard(deal_id),
        &c.replica_outboard.encode(),
    )?;
    let commitment = Signed::sign(
        &node.key,
        &node.network()?,
        &SealCommitment {
            deal_id,
            piece: deal.piece,
            comm_r: c.comm_r,
            replica_id,
        },
    )?;
    tracing::info!(deal_id, comm_r = %records::hex(&c.comm_r), "sealed");
    Ok(SealState::Sealed {
        commitment,
        comm_c: c.comm_c,
        comm_r_last: c.comm_r_last,
    })
}

impl Node {
    /// The piece as a source for sealing and seal proofs: its unsealed file,
    /// read where needed; without one, unsealed from a replica into a
    /// temporary file ([`Node::unseal_copy`]).
    pub fn piece_source(&self, piece: &PieceId) -> anyhow::Result<Box<dyn ReadAt + Send + Sync>> {
        match std::fs::File::open(self.dirs.piece(piece)) {
            Ok(f) => Ok(Box::new(FileAt(f))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Box::new(FileAt(self.unseal_copy(piece)?.0)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The parent graph for `nodes` nodes: the shared one if it matches,
    /// else a new one that replaces it (the old one is let go first, so two
    /// tables are held only while a job still uses the old one).
    pub fn parents(&self, nodes: u64) -> anyhow::Result<Arc<Parents>> {
        let mut shared = self
            .parents
            .lock()
            .map_err(|_| anyhow!("the parent graph cache is poisoned"))?;
        if let Some(p) = shared.as_ref().filter(|p| p.matches(nodes, &self.params)) {
            return Ok(p.clone());
        }
        *shared = None;
        let p = Arc::new(Parents::new(nodes, &self.params)?);
        *shared = Some(p.clone());
        Ok(p)
    }

    /// The piece unsealed from one of this node's replicas, one sealing
    /// sector at a time, into an unlinked file in `tmp/` (gone when the
    /// handle is dropped), checked against the piece id as it is written;
    /// with the piece's outboard. Memory: one sector's two layers of labels.
    pub fn unseal_copy(&self, piece: &PieceId) -> anyhow::Result<(std::fs::File, Outboard)> {
        for (_, deal) in records::deals_of(&*self.store, piece)? {
            let SealState::Sealed { commitment, .. } = &deal.seal else {
                continue;
            };
            let (_, c) = commitment.open(&self.network()?, Some(&self.peer_id))?;
            let replica = FileAt(std::fs::File::open(self.dirs.replica(c.deal_id))?);
            let parents = self.parents(crowd_porep::graph::node_count(deal.piece_size))?;
            let (path, file) = self.dirs.temp_file("unseal-")?;
            // unlinked at once: a crash or an error leaves nothing behind
            std::fs::remove_file(&path)?;
            let mut out = files::HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
            crowd_porep::seal::unseal_to(
                &replica,
                deal.piece_size,
                &c.replica_id,
                &self.params,
                &parents,
                &mut out,
            )?;
            let (file, outboard) = out.finish()?;
            if outboard.root() != piece.0 {
                bail!(
                    "unsealing the replica of deal {} did not give back {piece}",
                    c.deal_id
                );
            }
            return Ok((file, outboard));
        }
        bail!("no copy of {piece} on this node")
    }

    /// After a seal, drops the unsealed copy when the config says so, unless
    /// another deal of the same piece still waits to be sealed. Runs on the
    /// sealer thread, under the write lock (uploads commit under it too).
    fn drop_unsealed(&self, piece: &PieceId) -> anyhow::Result<()> {
        let _guard = self.write_lock.blocking_lock();
        for (_, deal) in records::deals_of(&*self.store, piece)? {
            if deal.seal == SealState::Queued {
                return Ok(());
            }
        }
        let key = records::piece_key(piece);
        if let Some(mut record) = records::get::<PieceRecord>(&*self.store, &key)? {
            if record.unsealed {
                record.unsealed = false;
                let mut batch = Batch::default();
                batch.put(key, records::encode(&record));
                let freed = records::file_len(&self.dirs.piece(piece))
                    + records::file_len(&self.dirs.piece_outboard(piece));
                let used = self.space_delta(&mut batch, 0, freed)?;
                self.store.write(batch)?;
                self.metrics.space_used.set(used as i64);
            }
        }
        // index first, files after: a crash in between leaves files that
        // `recover` removes
        let _ = std::fs::remove_file(self.dirs.piece(piece));
        let _ = std::fs::remove_file(self.dirs.piece_outboard(piece));
        Ok(())
    }

    /// Puts a queued deal back on the seal queue (at start).
    pub fn requeue(&self, deal_id: u64) -> anyhow::Result<()> {
        self.seal_tx
            .try_send(deal_id)
            .map_err(|_| anyhow!("seal queue is full"))?;
        self.metrics.seals_queued.inc();
        Ok(())
    }

    /// Waits up to `limit` for transfers in flight to finish.
    pub async fn drain(&self, limit: Duration) {
        let all = self.config.max_concurrent_transfers as u32;
        let _ = tokio::time::timeout(limit, self.transfers.acquire_many(all)).await;
    }
}
