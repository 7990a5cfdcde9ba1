//! Garbage collection: the bytes and records of deals that have ended.
//!
//! Every `gc_interval_secs` the node asks the tracker about every deal it
//! keeps (`TrackerRequest::Deals(DealQuery::Ids(..))`, at most
//! [`MAX_LIST`] ids per request; the tracker answers a deal's provider).
//! A deal the tracker reports as completed, terminated, cancelled or
//! removed, with this node as provider and the proposal id the node
//! recorded, is deleted: its replica and replica outboard, its deal,
//! challenge and proposal (or repair) records, and — unless another
//! proposal or repair record on this node still names the same piece (the
//! piece file is shared by reference) — the piece record, piece file and
//! piece outboard. A deal the tracker does not mention is kept. A piece
//! stored for a proposal (or repair job) that never got a seal ticket is
//! deleted once the tracker's epoch reaches the proposal's start: a deal
//! not proven by its start is cancelled, so nothing can ask for those
//! bytes again. With paid admission this bounds upload-and-never-publish:
//! the bytes stay at most until the start the tracker admitted (at most
//! `MAX_START_LEAD` epochs after the admission), while the client's escrow
//! is locked for them.
//!
//! **Crash consistency.** Records go first, in one synced RocksDB batch
//! (which also lowers `space/used` by the bytes about to be freed), and the
//! files after it, all under the node's write lock. So a record never names
//! a file that is gone: fetches, seal proofs and challenges find no record
//! rather than a missing file. A crash between the batch and the file
//! removals leaves files that no record names, and the next start
//! (`Node::recover`) deletes them — pieces without a piece record, replicas
//! without a sealed deal record — and recomputes `space/used` from the
//! records and file sizes, finishing the deletion.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use crowd_protocol::tracker::{DealQuery, MAX_LIST};
use crowd_protocol::{PieceId, ProposalId, Response, TrackerRequest, TrackerResponse};

use crate::node::Node;
use crate::records::{self, DealRecord, PieceRecord, ProposalRecord, RepairRecord, SealState};
use crate::store::Batch;

/// Deal states after which nothing of a deal needs to be kept.
pub const ENDED_STATES: [&str; 4] = ["completed", "terminated", "cancelled", "removed"];

impl Node {
    /// Runs garbage collection every `gc_interval_secs` (0: never).
    pub async fn gc_loop(self: Arc<Self>) {
        if self.config.gc_interval_secs == 0 || self.tracker.is_none() {
            return;
        }
        let every = Duration::from_secs(self.config.gc_interval_secs);
        loop {
            tokio::time::sleep(every).await;
            match self.collect_garbage().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deals = n, "garbage collected ended deals"),
                Err(e) => tracing::debug!("garbage collection: {e:#}"),
            }
        }
    }

    /// One round: asks the tracker about every deal kept here and deletes
    /// the ended ones. Returns how many deals were deleted.
    pub async fn collect_garbage(&self) -> anyhow::Result<usize> {
        if self.tracker.is_none() {
            return Ok(0);
        }
        let mut ids = Vec::new();
        for (k, _) in self.store.scan_prefix(b"deal/")? {
            if let Some(id) = records::deal_id(&k) {
                ids.push(id);
            }
        }
        let mut removed = 0;
        for chunk in ids.chunks(MAX_LIST) {
            let query = TrackerRequest::Deals(DealQuery::Ids(chunk.to_vec()));
            let views = match self.ask_tracker(query).await? {
                Response::Tracker(TrackerResponse::Deals(views)) => views,
                Response::Error { message } => bail!("tracker: {message}"),
                other => bail!("unexpected answer to a deal query: {other:?}"),
            };
            for v in views {
                if !chunk.contains(&v.id)
                    || v.proposal.provider != self.peer_id
                    || !ENDED_STATES.contains(&v.state.as_str())
                {
                    continue;
                }
                if self.remove_deal(v.id, &v.proposal_id).await? {
                    removed += 1;
                }
            }
        }
        if let Ok(epoch) = self.current_epoch().await {
            removed += self.remove_orphans(epoch).await?;
        }
        Ok(removed)
    }

    /// Stored pieces of proposals (and repair jobs) that never became a
    /// deal here — no seal ticket ever came — once `epoch` reached their
    /// start (`start_epoch <= epoch`): a deal published but not proven by
    /// its start is cancelled, so nothing can ever ask for them again.
    /// Returns how many were deleted.
    async fn remove_orphans(&self, epoch: u64) -> anyhow::Result<usize> {
        let _guard = self.write_lock.lock().await;
        let mut with_deal = std::collections::HashSet::new();
        for (_, v) in self.store.scan_prefix(b"deal/")? {
            let d: DealRecord = crowd_protocol::wire::from_cbor("deal record", &v)?;
            with_deal.insert(d.proposal);
        }
        let mut orphans = Vec::new();
        for (k, v) in self.store.scan_prefix(b"proposal/")? {
            let r: ProposalRecord = crowd_protocol::wire::from_cbor("proposal record", &v)?;
            if !with_deal.contains(&r.proposal.id()) {
                if let Some(p) = r.stored(&self.network()?)? {
                    orphans.push((k, r.proposal.id(), p));
                }
            }
        }
        for (k, v) in self.store.scan_prefix(b"repair/")? {
            let r: RepairRecord = crowd_protocol::wire::from_cbor("repair record", &v)?;
            if !with_deal.contains(&r.job.id()) {
                orphans.push((k, r.job.id(), r.job.open(&self.network()?, None)?.1.proposal));
            }
        }
        let mut removed = 0;
        for (key, id, p) in orphans {
            if p.start_epoch > epoch {
                continue;
            }
            let mut batch = Batch::default();
            batch.delete(key);
            let piece = self.unused_piece(&p.piece, &id, &mut batch)?;
            self.finish_removal(batch, None, piece.as_ref().map(|r| (&p.piece, r)))?;
            tracing::info!(proposal = %records::hex(&id), piece = %p.piece, "deleted a piece whose deal never came");
            removed += 1;
        }
        Ok(removed)
    }

    /// Deletes deal `deal_id` (if its recorded proposal is `proposal`) and
    /// what only it used; see the module doc for the order. Returns whether
    /// it deleted anything.
    pub async fn remove_deal(&self, deal_id: u64, proposal: &ProposalId) -> anyhow::Result<bool> {
        let _guard = self.write_lock.lock().await;
        let key = records::deal_key(deal_id);
        let Some(deal) = records::get::<DealRecord>(&*self.store, &key)? else {
            return Ok(false);
        };
        if deal.proposal != *proposal {
            tracing::warn!(deal_id, "the tracker's deal names another proposal; kept");
            return Ok(false);
        }
        let mut batch = Batch::default();
        batch
            .delete(key)
            .delete(records::piece_deal_key(&deal.piece, deal_id))
            .delete(records::proposal_key(&deal.proposal))
            .delete(records::repair_key(&deal.proposal));
        for (k, _) in self.store.scan_prefix(&records::challenge_prefix(deal_id))? {
            batch.delete(k);
        }
        let sealed = matches!(deal.seal, SealState::Sealed { .. });
        let piece = self.unused_piece(&deal.piece, &deal.proposal, &mut batch)?;
        self.finish_removal(
            batch,
            Some((deal_id, sealed)),
            piece.as_ref().map(|r| (&deal.piece, r)),
        )?;
        self.metrics.deal_state(&deal.seal, -1);
        self.metrics.gc_deals_removed.inc();
        tracing::info!(deal_id, piece = %deal.piece, "ended deal deleted");
        Ok(true)
    }

    /// The piece's record, deleted in `batch`, if nothing but `except`
    /// uses it; `None` (and nothing added) while another user remains.
    fn unused_piece(
        &self,
        piece: &PieceId,
        except: &ProposalId,
        batch: &mut Batch,
    ) -> anyhow::Result<Option<PieceRecord>> {
        if self.piece_users(piece, except)? > 0 {
            return Ok(None);
        }
        let key = records::piece_key(piece);
        let record = records::get::<PieceRecord>(&*self.store, &key)?;
        if record.is_some() {
            batch.delete(key);
        }
        Ok(record)
    }

    /// Lowers `space/used` by what is about to be deleted, writes `batch`
    /// (records first), then deletes the files: the deal's replica (if
    /// `deal` is given; its bytes counted if it was sealed) and the piece's
    /// file and outboard (if `piece` is given). Under the write lock.
    fn finish_removal(
        &self,
        mut batch: Batch,
        deal: Option<(u64, bool)>,
        piece: Option<(&PieceId, &PieceRecord)>,
    ) -> anyhow::Result<()> {
        let mut freed = 0;
        if let Some((id, true)) = deal {
            freed += records::file_len(&self.dirs.replica(id));
            freed += records::file_len(&self.dirs.replica_outboard(id));
        }
        if let Some((id, record)) = piece {
            if record.unsealed {
                freed += records::file_len(&self.dirs.piece(id));
                freed += records::file_len(&self.dirs.piece_outboard(id));
            }
        }
        let used = self.space_delta(&mut batch, 0, freed)?;
        // records first (one synced batch), files after
        self.store.write(batch)?;
        self.metrics.space_used.set(used as i64);
        if let Some((id, _)) = deal {
            remove_if_present(&self.dirs.replica(id))?;
            remove_if_present(&self.dirs.replica_outboard(id))?;
        }
        if let Some((id, record)) = piece {
            remove_if_present(&self.dirs.piece(id))?;
            remove_if_present(&self.dirs.piece_outboard(id))?;
            self.metrics.pieces.dec();
            self.metrics.bytes_stored.dec_by(record.size as i64);
        }
        Ok(())
    }

    /// Proposals and repair jobs other than `except` whose piece is stored
    /// here and is `piece`: the piece file's other users.
    fn piece_users(&self, piece: &PieceId, except: &ProposalId) -> anyhow::Result<usize> {
        let mut n = 0;
        for (k, v) in self.store.scan_prefix(b"proposal/")? {
            if k == records::proposal_key(except) {
                continue;
            }
            let r: ProposalRecord = crowd_protocol::wire::from_cbor("proposal record", &v)?;
            if r.stored(&self.network()?)?.is_some_and(|p| p.piece == *piece) {
                n += 1;
            }
        }
        for (k, v) in self.store.scan_prefix(b"repair/")? {
            if k == records::repair_key(except) {
                continue;
            }
            let r: RepairRecord = crowd_protocol::wire::from_cbor("repair record", &v)?;
            if r.job.open(&self.network()?, None)?.1.proposal.piece == *piece {
                n += 1;
            }
        }
        Ok(n)
    }
}

fn remove_if_present(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
