//! `crowd ls` (local records, brought up to date with the tracker's file
//! records), `crowd status CID` (per piece index: current provider, deal,
//! seal and proving state from the tracker and the provider; repairs) and
//! `crowd balance`.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use crowd_chunker::Cid;
use crowd_protocol::libp2p::Multiaddr;
use crowd_protocol::libp2p::PeerId;
use crowd_protocol::{
    Amount, DealQuery, DealView, Epoch, FileView, Manifest, Request, Response, SealReport, TrackerRequest,
    TrackerResponse,
};
use serde::Serialize;

use crate::files::{choose_file, manifest_digest, Owner, EXPIRING_EPOCHS};
use crate::records::{self, Record};
use crate::session::Session;

/// How long `status` waits for a provider's seal report.
const SEAL_STATUS_TIMEOUT: Duration = Duration::from_secs(4);

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `12D3KooWAbcd…uvwxyz`
fn short(id: &str) -> String {
    if id.len() > 20 && id.is_ascii() {
        format!("{}…{}", &id[..8], &id[id.len() - 6..])
    } else {
        id.to_string()
    }
}

// ---------------------------------------------------------------- ls

/// One line of `crowd ls --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LsEntry {
    pub root: String,
    pub manifest: String,
    pub size: u64,
    pub name: String,
    /// Seconds since the Unix epoch.
    pub stored_at: u64,
    /// `YYYY-MM-DD HH:MM` UTC.
    pub date: String,
    pub deals: usize,
    /// Stored unencrypted.
    pub public: bool,
    /// The first epoch after the file's deals (`None`: unknown, or an
    /// empty file, which has no deals).
    pub end_epoch: Option<Epoch>,
    /// "live"; "expiring" (ending within [`EXPIRING_EPOCHS`] of the
    /// current epoch); "expired"; or, when the current epoch is not known
    /// (`ls --local`), the state last synced, else "unknown".
    pub state: String,
}

impl LsEntry {
    /// The entry for `r`, judged against the current epoch if known.
    pub fn new(r: &Record, epoch: Option<Epoch>) -> Self {
        let mut e = Self::from(r);
        e.state = ls_state(r, epoch);
        e
    }
}

/// A record's state in `ls` (see [`LsEntry::state`]).
fn ls_state(r: &Record, epoch: Option<Epoch>) -> String {
    if r.deals.is_empty() {
        // an empty file stores nothing that could expire
        return "live".into();
    }
    match (r.state.as_deref(), r.end_epoch, epoch) {
        (Some("expired"), _, _) => "expired".into(),
        (Some("removed"), _, _) => "removed".into(),
        (_, Some(end), Some(now)) if end <= now => "expired".into(),
        (_, Some(end), Some(now)) if end <= now.saturating_add(EXPIRING_EPOCHS) => "expiring".into(),
        (_, Some(_), Some(_)) => "live".into(),
        (state, _, _) => state.unwrap_or("unknown").into(),
    }
}

/// `ls`'s entries: every record but the removed ones.
pub(crate) fn ls_entries(records: &[Record], epoch: Option<Epoch>) -> Vec<LsEntry> {
    records
        .iter()
        .filter(|r| r.state.as_deref() != Some("removed"))
        .map(|r| LsEntry::new(r, epoch))
        .collect()
}

/// `record` brought up to date with the tracker's file records (`None`
/// if nothing changed, or the tracker has no file of its manifest: an
/// empty file, or one stored before files were registered).
fn synced(record: &Record, files: &[FileView]) -> Option<Record> {
    let digest = record
        .manifest
        .parse::<Cid>()
        .ok()
        .and_then(|c| manifest_digest(&c))?;
    // a live registration wins, else the latest
    let f = files
        .iter()
        .filter(|f| f.manifest == digest)
        .max_by_key(|f| (f.state == "live", f.id))?;
    let (end, state) = (Some(f.end_epoch), Some(f.state.clone()));
    (record.end_epoch != end || record.state != state).then(|| Record {
        end_epoch: end,
        state,
        ..record.clone()
    })
}

impl From<&Record> for LsEntry {
    fn from(r: &Record) -> Self {
        Self {
            root: r.root.clone(),
            manifest: r.manifest.clone(),
            size: r.size,
            name: r.name.clone(),
            stored_at: r.stored_at,
            date: if r.stored_at == 0 {
                "-".into()
            } else {
                records::format_time(r.stored_at)
            },
            deals: r.deals.len(),
            public: r.public,
            end_epoch: if r.deals.is_empty() { None } else { r.end_epoch },
            state: ls_state(r, None),
        }
    }
}

/// `crowd ls`'s table.
pub fn ls_table(entries: &[LsEntry]) -> String {
    let width = entries.iter().map(|e| e.root.len()).max().unwrap_or(4).max(4);
    let mut out = format!(
        "{:<width$}  {:>10}  {:<16}  {:>5}  {:<7}  {:>8}  {:<8}  NAME\n",
        "ROOT", "SIZE", "STORED (UTC)", "DEALS", "ACCESS", "ENDS", "STATE"
    );
    for e in entries {
        out.push_str(&format!(
            "{:<width$}  {:>10}  {:<16}  {:>5}  {:<7}  {:>8}  {:<8}  {}\n",
            e.root,
            e.size,
            e.date,
            e.deals,
            if e.public { "public" } else { "private" },
            e.end_epoch.map_or_else(|| "-".to_string(), |n| n.to_string()),
            e.state,
            crate::error::strip(&e.name)
        ));
    }
    out
}

/// Restores this home's records from the network: every manifest this
/// client registered with the tracker that has no local record becomes one
/// (a private file's from its envelope, opened with this client's key).
/// Returns the records it wrote.
pub(crate) async fn recover(home: &Path, session: &Session) -> Result<Vec<Record>> {
    let known: std::collections::HashSet<String> =
        records::list(home)?.into_iter().map(|r| r.manifest).collect();
    let mut restored = Vec::new();
    let mut after = None;
    // bounded: MAX_MANIFESTS_PER_CLIENT / page size pages at most, plus slack
    for _ in 0..1024 {
        let (manifests, next) = match session.tracker(TrackerRequest::OwnManifests { after }).await? {
            TrackerResponse::OwnManifests { manifests, next } => (manifests, next),
            other => bail!("tracker: unexpected answer {other:?}"),
        };
        for blob in manifests {
            let cid = crowd_protocol::manifest_cid(&blob.0).to_string();
            if known.contains(&cid) {
                continue;
            }
            let Ok(m) = Manifest::decode(&blob.0) else {
                continue;
            };
            let Some(record) = record_of(&session.key, &m, &cid) else {
                continue;
            };
            records::save(home, &record, &blob.0)?;
            restored.push(record);
        }
        match next {
            Some(n) => after = Some(n),
            None => return Ok(restored),
        }
    }
    bail!("tracker: the list of manifests does not end")
}

/// The record a manifest of this client's stands for (`None` if its
/// envelope does not open: then it is not ours to read).
fn record_of(
    identity: &crowd_protocol::libp2p::identity::Keypair,
    m: &Manifest,
    cid: &str,
) -> Option<Record> {
    let (root, size, name, stored_at, public) = match &m.encryption {
        None => (m.root.to_string(), m.size, String::new(), 0, true),
        Some(e) => {
            let c =
                crate::keys::open_envelope(&crate::keys::envelope_key(identity).ok()?, &m.root, &e.envelope)
                    .ok()?;
            (c.root, c.size, c.name, c.stored_at, false)
        }
    };
    let piece_size = m.layout.piece_len();
    Some(Record {
        root,
        manifest: cid.to_string(),
        size,
        name,
        stored_at,
        data_shards: m.layout.params().data_shards() as u64,
        parity_shards: m.layout.params().parity_shards() as u64,
        public,
        network_root: m.root.to_string(),
        deals: m
            .pieces
            .iter()
            .map(|p| records::RecordDeal {
                index: p.index,
                deal_id: p.deal_id,
                provider: p.provider.clone(),
                piece: p.piece.to_string(),
                piece_size,
            })
            .collect(),
        end_epoch: None,
        state: None,
    })
}

/// This home's files but the removed ones; with `sync`, first restored
/// from the network ([`recover`]: e.g. after `crowd key import` into a
/// fresh home) and updated from the tracker's records of this client's
/// files (`Files(Own)`: end epoch, removed, expired), judged against the
/// current epoch.
pub fn ls(home: &Path, sync: bool) -> Result<Vec<LsEntry>> {
    let epoch = if sync {
        Some(runtime()?.block_on(async {
            let session = Session::connect(home).await?;
            recover(home, &session).await?;
            let files = crate::files::own(&session).await?;
            for r in records::list(home)? {
                if let Some(updated) = synced(&r, &files) {
                    records::update(home, &updated)?;
                }
            }
            Ok::<_, anyhow::Error>(session.info().await?.epoch)
        })?)
    } else {
        None
    };
    Ok(ls_entries(&records::list(home)?, epoch))
}

// ---------------------------------------------------------------- status

/// One piece index in `crowd status`: where it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PieceStatus {
    pub index: u64,
    pub piece: String,
    /// The current provider: the tracker's slot (after a repair, the new
    /// provider), else the manifest's.
    pub provider: String,
    /// The current deal.
    pub deal_id: u64,
    /// The tracker's slot state ("active", "published", "pre-committed",
    /// "lost", "repairing", ...), else its deal state, or "unknown" if it
    /// has no such deal.
    pub state: String,
    /// "sealed", "queued", "unknown", "failed: …" or "unreachable".
    pub seal: String,
    pub proven_epochs: u64,
    pub faulted_epochs: u64,
    /// Consecutive missed windows of the current deal.
    pub consecutive_faults: u32,
    pub paid: Amount,
}

/// A file's repairs, as the tracker counts them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Repairs {
    /// Lost pieces waiting for a provider.
    pub queued: u64,
    /// Repair jobs running.
    pub running: u64,
    /// Repair deals published.
    pub done: u64,
    /// Jobs that failed (retried elsewhere).
    pub failed: u64,
    /// Escrow locked for repair deals so far.
    pub cost: Amount,
}

/// What `crowd status --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusOutput {
    pub root: String,
    pub manifest: String,
    pub size: u64,
    pub data_shards: u64,
    pub parity_shards: u64,
    /// The tracker's file number (`None`: no file record; the placement
    /// shown is the manifest's).
    pub file_id: Option<u64>,
    /// "live", "removed" or "expired" (`None`: no file record).
    pub file_state: Option<String>,
    /// The first epoch after the file's deals (`None`: no file record).
    pub end_epoch: Option<Epoch>,
    /// `None`: no file record.
    pub repairs: Option<Repairs>,
    pub pieces: Vec<PieceStatus>,
}

fn seal_word(report: &SealReport) -> String {
    match report {
        SealReport::Unknown => "unknown".into(),
        SealReport::Queued => "queued".into(),
        SealReport::Sealed(_) => "sealed".into(),
        SealReport::Failed { reason } => format!("failed: {reason}"),
    }
}

/// Where one piece index is: the manifest's entry, or the tracker's slot
/// for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    index: u64,
    piece: String,
    provider: String,
    deal_id: u64,
    /// The slot's state and consecutive faults, when the tracker has one.
    slot: Option<(String, u32)>,
    addrs: Vec<String>,
}

/// Per piece of `manifest`, in its order: the slot of `file` with its
/// index if there is one (whatever its state: status shows lost pieces
/// too), else the manifest's entry.
fn placement(manifest: &Manifest, file: Option<&FileView>) -> Vec<Place> {
    manifest
        .pieces
        .iter()
        .map(
            |p| match file.and_then(|f| f.slots.iter().find(|s| s.index == p.index)) {
                Some(s) => Place {
                    index: p.index,
                    piece: p.piece.to_string(),
                    provider: s.provider.to_string(),
                    deal_id: s.deal_id,
                    slot: Some((s.state.clone(), s.consecutive_faults)),
                    addrs: s.addrs.clone(),
                },
                None => Place {
                    index: p.index,
                    piece: p.piece.to_string(),
                    provider: p.provider.clone(),
                    deal_id: p.deal_id,
                    slot: None,
                    addrs: Vec::new(),
                },
            },
        )
        .collect()
}

/// Joins the placement with the tracker's deals and the providers' seal
/// words (`seals[i]` for `places[i]`).
fn status_of(
    manifest: &Manifest,
    manifest_cid: &str,
    file: Option<&FileView>,
    places: &[Place],
    deals: &[DealView],
    seals: &[String],
) -> StatusOutput {
    let pieces = places
        .iter()
        .zip(seals)
        .map(|(p, seal)| {
            let deal = deals.iter().find(|d| d.id == p.deal_id);
            let state = match (&p.slot, deal) {
                (Some((state, _)), _) => state.clone(),
                (None, Some(d)) => d.state.clone(),
                (None, None) => "unknown".to_string(),
            };
            PieceStatus {
                index: p.index,
                piece: p.piece.clone(),
                provider: p.provider.clone(),
                deal_id: p.deal_id,
                state,
                seal: seal.clone(),
                proven_epochs: deal.map_or(0, |d| d.proven_epochs),
                faulted_epochs: deal.map_or(0, |d| d.faulted_epochs),
                consecutive_faults: p
                    .slot
                    .as_ref()
                    .map(|s| s.1)
                    .or(deal.map(|d| d.consecutive_faults))
                    .unwrap_or(0),
                paid: deal.map_or(0, |d| d.paid),
            }
        })
        .collect();
    StatusOutput {
        root: manifest.root.to_string(),
        manifest: manifest_cid.to_string(),
        size: manifest.size,
        data_shards: manifest.layout.params().data_shards() as u64,
        parity_shards: manifest.layout.params().parity_shards() as u64,
        file_id: file.map(|f| f.id),
        file_state: file.map(|f| f.state.clone()),
        end_epoch: file.map(|f| f.end_epoch),
        repairs: file.map(|f| Repairs {
            queued: f.repairs.queued,
            running: f.repairs.running,
            done: f.repairs.done,
            failed: f.repairs.failed,
            cost: f.repairs.cost,
        }),
        pieces,
    }
}

/// `crowd status`'s table.
pub fn status_table(s: &StatusOutput) -> String {
    let mut out = format!(
        "root      {}\nmanifest  {}\nsize      {} bytes, {}+{} pieces\n",
        s.root, s.manifest, s.size, s.data_shards, s.parity_shards
    );
    if s.pieces.is_empty() {
        out.push_str("no pieces: an empty file needs no deals\n");
        return out;
    }
    match (s.file_id, &s.file_state, s.end_epoch) {
        (Some(id), Some(state), Some(end)) => out.push_str(&format!(
            "file      {id}, {}, ends at epoch {end}\n",
            crate::error::strip(state)
        )),
        _ => out.push_str("file      no tracker record: placement as in the manifest\n"),
    }
    out.push_str(&format!(
        "{:>5}  {:<21}  {:>6}  {:<13}  {:<12}  {:>6}  {:>7}  {:>10}\n",
        "PIECE", "PROVIDER", "DEAL", "STATE", "SEAL", "PROVEN", "FAULTED", "PAID"
    ));
    for p in &s.pieces {
        out.push_str(&format!(
            "{:>5}  {:<21}  {:>6}  {:<13}  {:<12}  {:>6}  {:>7}  {:>10}\n",
            p.index,
            short(&p.provider),
            p.deal_id,
            crate::error::strip(&p.state),
            crate::error::strip(&p.seal),
            p.proven_epochs,
            p.faulted_epochs,
            p.paid
        ));
    }
    if let Some(r) = &s.repairs {
        out.push_str(&format!(
            "repairs   queued {}, running {}, done {}, failed {}, cost {}\n",
            r.queued, r.running, r.done, r.failed, r.cost
        ));
    }
    out
}

/// A provider's seal report for a deal, as a word; "unreachable" when it
/// does not answer in time.
async fn seal_state(session: &Session, addrs: Vec<Multiaddr>, peer: PeerId, deal_id: u64) -> String {
    let ask = async {
        if !addrs.is_empty() {
            session.net.dial(peer, addrs).await.ok()?;
        }
        match session
            .net
            .request(peer, Request::SealStatus(deal_id))
            .await
            .ok()?
        {
            Response::SealStatus(report) => Some(seal_word(&report)),
            Response::Error { message } => Some(format!("error: {message}")),
            _ => None,
        }
    };
    tokio::time::timeout(SEAL_STATUS_TIMEOUT, ask)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| "unreachable".into())
}

async fn status_async(home: &Path, cid: &Cid, given: &str) -> Result<StatusOutput> {
    let local = records::find(home, given)?.or(records::find(home, &cid.to_string())?);
    let local_bytes = match &local {
        Some(r) => records::manifest_bytes(home, r)?,
        None => None,
    };
    let session = Session::connect(home).await?;
    let bytes = match local_bytes {
        Some(b) => b,
        None => match session
            .tracker(TrackerRequest::Manifest {
                root: match &local {
                    Some(r) => r
                        .network_root()
                        .parse::<Cid>()
                        .map_err(|_| anyhow!("{given}: bad record"))?
                        .to_bytes(),
                    None => cid.to_bytes(),
                },
            })
            .await?
        {
            // this client's own first, else the first registered
            TrackerResponse::Manifests(blobs) => match blobs.into_iter().next() {
                Some(blob) => blob.0,
                None => bail!("{given}: no such file: not stored by this client and unknown to the tracker"),
            },
            other => bail!("tracker: unexpected answer {other:?}"),
        },
    };
    let manifest = Manifest::decode(&bytes).map_err(|e| anyhow!("{given}: {e}"))?;
    if local.is_none() && manifest.root != *cid {
        bail!(
            "{given}: the tracker answered with the manifest of {}",
            manifest.root
        );
    }
    let manifest_cid = crowd_protocol::manifest_cid(&bytes);
    // the tracker's file record, if it has one (else the manifest's placement)
    let files = if manifest.pieces.is_empty() {
        Vec::new()
    } else {
        crate::files::by_root(&session, &manifest.root)
            .await
            .unwrap_or_default()
    };
    let file = manifest_digest(&manifest_cid)
        .and_then(|d| choose_file(&files, &d, Owner::Prefer(Some(session.peer))));
    let places = placement(&manifest, file);
    let ids: Vec<u64> = places.iter().map(|p| p.deal_id).collect();
    let (deals, providers) = if ids.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        tokio::try_join!(session.deals(DealQuery::Ids(ids)), session.providers())?
    };
    let seals = futures::future::join_all(places.iter().map(|p| {
        let providers = &providers;
        let session = &session;
        async move {
            match p.provider.parse::<PeerId>() {
                Ok(peer) => {
                    let listed = providers.iter().find(|e| e.peer == peer).map(|e| &e.addrs);
                    let addrs: Vec<Multiaddr> = p
                        .addrs
                        .iter()
                        .chain(listed.into_iter().flatten())
                        .filter_map(|a| a.parse().ok())
                        .collect();
                    seal_state(session, addrs, peer, p.deal_id).await
                }
                Err(_) => "unreachable".to_string(),
            }
        }
    }))
    .await;
    let mut out = status_of(
        &manifest,
        &manifest_cid.to_string(),
        file,
        &places,
        &deals,
        &seals,
    );
    if let Some(r) = &local {
        // the file's own root (a private file's manifest names its ciphertext's)
        out.root = r.root.clone();
        out.size = r.size;
    }
    Ok(out)
}

/// Per piece index: current provider, deal, seal and proving state of a
/// stored file, and its repairs.
pub fn status(home: &Path, given: &str) -> Result<StatusOutput> {
    let given = given.trim();
    let cid: Cid = given
        .parse()
        .map_err(|_| crate::error::Error::Input(format!("'{given}' is not a CID")))?;
    runtime()?.block_on(status_async(home, &cid, given))
}

/// A read capability for one of this client's private files.
pub fn share(home: &Path, given: &str) -> Result<crate::keys::Capability> {
    let given = given.trim();
    let record = records::find(home, given)?.ok_or_else(|| {
        crate::error::Error::NotFound(format!(
            "{given}: not a file of this home (`crowd ls` lists them, restoring them from the network)"
        ))
    })?;
    if record.public {
        return Err(crate::error::Error::Input(format!(
            "{given} is public: anyone reads it by its root CID, no capability needed"
        ))
        .into());
    }
    let bytes = records::manifest_bytes(home, &record)?.ok_or_else(|| {
        anyhow!(
            "{given}: the record's manifest is missing from {}",
            home.display()
        )
    })?;
    let m = Manifest::decode(&bytes).map_err(|e| anyhow!("{given}: {e}"))?;
    let identity = crate::session::load_or_create_key(home)?;
    let key = crate::get::owner_key(&identity, &m)?
        .ok_or_else(|| anyhow!("{given}: its manifest is not encrypted"))?;
    Ok(crate::keys::Capability {
        key,
        manifest: crowd_protocol::manifest_cid(&bytes),
        network_root: m.root,
    })
}

// ---------------------------------------------------------------- balance

/// What `crowd balance --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalanceOutput {
    pub account: String,
    pub available: Amount,
    pub locked_escrow: Amount,
    pub locked_collateral: Amount,
    /// A provider's stake (a client's is 0).
    pub staked: Amount,
}

/// This client's account.
pub fn balance(home: &Path) -> Result<BalanceOutput> {
    runtime()?.block_on(async {
        let session = Session::connect(home).await?;
        let a = session.account(session.peer).await?;
        Ok::<_, anyhow::Error>(BalanceOutput {
            account: session.peer.to_string(),
            available: a.available,
            locked_escrow: a.locked_escrow,
            locked_collateral: a.locked_collateral,
            staked: a.staked,
        })
    })
}

// ---------------------------------------------------------------- money

/// What `crowd transfer --json` and `crowd withdraw --json` print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MoveOutput {
    /// The account money left.
    pub account: String,
    pub amount: Amount,
    /// Its free balance afterwards.
    pub available: Amount,
}

/// Pays `amount` of this client's free balance to `to`.
pub fn transfer(home: &Path, to: PeerId, amount: Amount) -> Result<MoveOutput> {
    runtime()?.block_on(async {
        let session = Session::connect(home).await?;
        let nonce = session.account(session.peer).await?.nonce;
        let req = crowd_protocol::TransferRequest { to, amount, nonce };
        let signed = crowd_protocol::Signed::sign(&session.key, &session.network().await?, &req)?;
        moved(&session, amount, TrackerRequest::Transfer(signed)).await
    })
}

/// Takes `amount` of free balance out of the ledger, from this client's
/// account or from the account of `identity` (a key file, e.g. a storage
/// node's `identity.key`: a provider's earnings).
pub fn withdraw(home: &Path, amount: Amount, identity: Option<&Path>) -> Result<MoveOutput> {
    runtime()?.block_on(async {
        let session = match identity {
            Some(path) => Session::connect_as(home, crate::session::load_key_file(path)?).await?,
            None => Session::connect(home).await?,
        };
        let nonce = session.account(session.peer).await?.nonce;
        let req = crowd_protocol::WithdrawRequest { amount, nonce };
        let signed = crowd_protocol::Signed::sign(&session.key, &session.network().await?, &req)?;
        moved(&session, amount, TrackerRequest::Withdraw(signed)).await
    })
}

async fn moved(session: &Session, amount: Amount, request: TrackerRequest) -> Result<MoveOutput> {
    match session.tracker(request).await? {
        TrackerResponse::Moved { available } => Ok(MoveOutput {
            account: session.peer.to_string(),
            amount,
            available,
        }),
        other => bail!("tracker: unexpected answer {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crowd_protocol::{Chunking, DealProposal, ManifestPiece, PieceId, MANIFEST_VERSION};

    fn manifest() -> Manifest {
        let data = vec![1u8; 5000];
        let enc = crowd_erasure::Encoder::new(crowd_erasure::Params::new(2, 1, 4096).unwrap()).unwrap();
        let (layout, _) = enc.encode_bytes(&data).unwrap();
        let root = crowd_chunker::build_from_slice(
            &data,
            &crowd_chunker::DagParams::default(),
            &mut crowd_chunker::Discard,
        )
        .unwrap()
        .cid;
        Manifest {
            version: MANIFEST_VERSION,
            root,
            size: 5000,
            chunking: Chunking {
                chunker: "fixed".into(),
                chunk_size: 1 << 20,
                max_links: 1024,
                hash: "blake3".into(),
            },
            pieces: (0..3)
                .map(|i| ManifestPiece {
                    index: i,
                    piece: layout.piece_cid(i as usize).unwrap(),
                    provider: PeerId::random().to_string(),
                    deal_id: 10 + i,
                })
                .collect(),
            layout,
            encryption: None,
        }
    }

    fn deal(id: u64, state: &str, proven: u64, paid: Amount) -> DealView {
        DealView {
            id,
            proposal_id: [0; 32],
            proposal: DealProposal {
                piece: PieceId([0; 32]),
                piece_size: 1,
                client: PeerId::random(),
                provider: PeerId::random(),
                price_per_epoch: 1,
                start_epoch: 1,
                duration_epochs: 1,
                provider_collateral: 0,
                expiry_epoch: 1,
                nonce: 0,
            },
            published_epoch: 0,
            end_epoch: 2,
            state: state.into(),
            comm_r: None,
            escrow: 0,
            collateral: 0,
            paid,
            proven_epochs: proven,
            faulted_epochs: 1,
            consecutive_faults: 0,
            history: vec![],
        }
    }

    #[test]
    fn status_joins_deals_and_seals_per_piece() {
        let m = manifest();
        let deals = [deal(11, "active", 5, 50), deal(10, "published", 0, 0)];
        let seals = ["queued".to_string(), "sealed".into(), "unreachable".into()];
        let places = placement(&m, None);
        let s = status_of(&m, "bafymanifest", None, &places, &deals, &seals);
        assert_eq!((s.file_id, s.end_epoch, s.repairs.clone()), (None, None, None));
        assert_eq!((s.data_shards, s.parity_shards, s.size), (2, 1, 5000));
        let states: Vec<(&str, &str, u64, Amount)> = s
            .pieces
            .iter()
            .map(|p| (p.state.as_str(), p.seal.as_str(), p.proven_epochs, p.paid))
            .collect();
        assert_eq!(
            states,
            vec![
                ("published", "queued", 0, 0),
                ("active", "sealed", 5, 50),
                ("unknown", "unreachable", 0, 0)
            ]
        );
        let v: serde_json::Value = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        for key in ["root", "manifest", "size", "pieces"] {
            assert!(v.get(key).is_some(), "{key}");
        }
        for key in [
            "index",
            "provider",
            "deal_id",
            "state",
            "seal",
            "proven_epochs",
            "faulted_epochs",
            "paid",
        ] {
            assert!(v["pieces"][0].get(key).is_some(), "{key}");
        }
        let table = status_table(&s);
        assert_eq!(table.lines().count(), 4 + 1 + 3, "{table}");
        assert!(table.contains("unreachable"));
        assert!(table.contains("no tracker record"), "{table}");
        assert!(!table.contains("repairs"), "{table}");
    }

    #[test]
    fn status_shows_the_current_provider_of_each_index_and_the_repairs() {
        let m = manifest();
        let repaired = PeerId::random();
        let mut file = FileView {
            id: 7,
            client: PeerId::random(),
            root: m.root.to_bytes(),
            manifest: [0; 32],
            data_pieces: 2,
            end_epoch: 120,
            state: "live".into(),
            slots: m
                .pieces
                .iter()
                .map(|p| crowd_protocol::SlotView {
                    index: p.index,
                    piece: PieceId(*m.layout.pieces()[p.index as usize].hash.as_bytes()),
                    piece_size: m.layout.piece_len(),
                    deal_id: p.deal_id,
                    provider: p.provider.parse().unwrap(),
                    addrs: vec![],
                    state: "active".into(),
                    consecutive_faults: 0,
                })
                // index 2 has no slot: the manifest's entry stands
                .filter(|s| s.index != 2)
                .collect(),
            repairs: crowd_protocol::RepairStats {
                queued: 0,
                running: 1,
                done: 2,
                failed: 3,
                cost: 40,
            },
        };
        // index 0 was repaired to a new provider and deal; index 1 is lost
        file.slots[0].provider = repaired;
        file.slots[0].deal_id = 99;
        file.slots[0].state = "pre-committed".into();
        file.slots[1].state = "lost".into();
        file.slots[1].consecutive_faults = 4;
        let places = placement(&m, Some(&file));
        assert_eq!(places[0].provider, repaired.to_string());
        assert_eq!(places[2].provider, m.pieces[2].provider);
        let deals = [deal(99, "pre-committed", 0, 0), deal(11, "terminated", 5, 50)];
        let seals = ["queued".to_string(), "unreachable".into(), "sealed".into()];
        let s = status_of(&m, "bafym", Some(&file), &places, &deals, &seals);
        let rows: Vec<(u64, &str, u64, &str, u32)> = s
            .pieces
            .iter()
            .map(|p| {
                (
                    p.index,
                    p.provider.as_str(),
                    p.deal_id,
                    p.state.as_str(),
                    p.consecutive_faults,
                )
            })
            .collect();
        let (p1, p2) = (m.pieces[1].provider.as_str(), m.pieces[2].provider.as_str());
        let r = repaired.to_string();
        assert_eq!(
            rows,
            vec![
                (0, r.as_str(), 99, "pre-committed", 0),
                (1, p1, 11, "lost", 4),
                (2, p2, 12, "unknown", 0)
            ]
        );
        assert_eq!((s.file_id, s.end_epoch), (Some(7), Some(120)));
        let table = status_table(&s);
        assert!(table.contains("file      7, live, ends at epoch 120"), "{table}");
        assert!(
            table.ends_with("repairs   queued 0, running 1, done 2, failed 3, cost 40\n"),
            "{table}"
        );
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["repairs"]["done"], 2);
        assert_eq!(v["end_epoch"], 120);
        assert_eq!(v["pieces"][1]["state"], "lost");
    }

    #[test]
    fn amounts_beyond_u64_print_as_numbers() {
        let b = BalanceOutput {
            account: "a".into(),
            available: u128::from(u64::MAX) + 1,
            locked_escrow: 0,
            locked_collateral: 0,
            staked: 0,
        };
        let text = serde_json::to_string(&b).unwrap();
        assert!(text.contains("\"available\":18446744073709551616"), "{text}");
    }

    #[test]
    fn ls_lists_records() {
        let r = Record {
            root: "bafyroot".into(),
            manifest: "bafym".into(),
            size: 42,
            name: "x.bin".into(),
            stored_at: 60,
            data_shards: 4,
            parity_shards: 2,
            public: false,
            network_root: "bafycipher".into(),
            deals: vec![],
            end_epoch: None,
            state: None,
        };
        let e = LsEntry::from(&r);
        assert_eq!(e.date, "1970-01-01 00:01");
        let table = ls_table(&[e]);
        let line = table.lines().nth(1).unwrap();
        assert!(
            line.starts_with("bafyroot") && line.contains("private"),
            "{table}"
        );
        // a record restored from a public manifest has no time
        let restored = Record {
            stored_at: 0,
            public: true,
            ..r
        };
        let e = LsEntry::from(&restored);
        assert_eq!(e.date, "-");
        assert!(ls_table(&[e]).contains("public"));
        assert_eq!(short("12D3KooWAbcdefghijklmnopqrstuvwxyz"), "12D3KooW…uvwxyz");
        assert_eq!(short("short"), "short");
    }

    fn stored(manifest: &str, end: Option<u64>, state: Option<&str>) -> Record {
        Record {
            root: "bafyroot".into(),
            manifest: manifest.into(),
            size: 42,
            name: "x.bin".into(),
            stored_at: 60,
            data_shards: 2,
            parity_shards: 1,
            public: false,
            network_root: "bafycipher".into(),
            deals: vec![records::RecordDeal {
                index: 0,
                deal_id: 1,
                provider: "p".into(),
                piece: "bafk".into(),
                piece_size: 1,
            }],
            end_epoch: end,
            state: state.map(String::from),
        }
    }

    #[test]
    fn ls_marks_files_ending_soon_as_expiring_and_hides_removed_ones() {
        let now = 100;
        let states = |epoch: Option<u64>| -> Vec<String> {
            let records = [
                stored("m1", Some(now + EXPIRING_EPOCHS + 1), None),
                stored("m2", Some(now + EXPIRING_EPOCHS), Some("live")),
                stored("m3", Some(now), Some("live")),
                stored("m4", Some(500), Some("expired")),
                stored("m5", Some(500), Some("removed")),
                stored("m6", None, None),
            ];
            ls_entries(&records, epoch).into_iter().map(|e| e.state).collect()
        };
        assert_eq!(
            states(Some(now)),
            vec!["live", "expiring", "expired", "expired", "unknown"]
        );
        // without the current epoch (ls --local): what was last synced
        assert_eq!(
            states(None),
            vec!["unknown", "live", "live", "expired", "unknown"]
        );
        let e = LsEntry::new(&stored("m2", Some(now + 3), Some("live")), Some(now));
        let table = ls_table(std::slice::from_ref(&e));
        let line = table.lines().nth(1).unwrap();
        assert!(line.contains("     103  expiring"), "{table}");
        assert!(table.lines().next().unwrap().contains("ENDS  STATE"), "{table}");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            (v["end_epoch"].as_u64(), v["state"].as_str()),
            (Some(103), Some("expiring"))
        );
        // an empty file has no deals, so nothing ends
        let mut empty = stored("m7", None, None);
        empty.deals.clear();
        assert_eq!(LsEntry::new(&empty, Some(now)).state, "live");
    }

    #[test]
    fn ls_sync_takes_the_trackers_end_epoch_and_state() {
        let bytes = b"manifest bytes";
        let cid = crowd_protocol::manifest_cid(bytes);
        let digest = manifest_digest(&cid).unwrap();
        let record = stored(&cid.to_string(), Some(40), None);
        let file = |id: u64, end: u64, state: &str| FileView {
            id,
            client: PeerId::random(),
            root: vec![],
            manifest: digest,
            data_pieces: 2,
            end_epoch: end,
            state: state.into(),
            slots: vec![],
            repairs: Default::default(),
        };
        let mut other = file(1, 999, "live");
        other.manifest = [1; 32];
        assert_eq!(synced(&record, &[other.clone()]), None);
        let got = synced(&record, &[other, file(2, 80, "live"), file(3, 90, "removed")]).unwrap();
        assert_eq!((got.end_epoch, got.state.as_deref()), (Some(80), Some("live")));
        assert_eq!(
            synced(&got, &[file(2, 80, "live")]),
            None,
            "unchanged: no rewrite"
        );
        let gone = synced(&got, &[file(3, 90, "removed")]).unwrap();
        assert_eq!(gone.state.as_deref(), Some("removed"));
        assert!(ls_entries(&[gone], Some(10)).is_empty());
    }
}
