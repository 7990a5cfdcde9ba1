//! Files as the tracker's ledger knows them: registering a stored file's
//! deals (`put`), where each piece index is now (`get`, `status`), and the
//! owner's `rm` and `renew`.
//!
//! A manifest is immutable and names the providers a put chose; the
//! tracker's file record ([`FileView`]) names the *current* deal of every
//! piece index, which after a repair is another provider's. Readers trust
//! the manifest's layout (every byte is verified against its piece hashes)
//! and take only *where* to fetch from the tracker, and only for slots in a
//! live state whose piece is the layout's.
//!
//! **Resolving a root** (`rm`, `renew`): the CID the user gives is a file's
//! root as `crowd put` printed it (a private file's plaintext root, which
//! the network never sees), a network root (a public file's, or a private
//! file's layout CID) or a manifest CID. This home's records map the
//! first to the network roots of every put of that file ([`targets`]); the
//! tracker lists the files under each network root (`Files(Root)`), and the
//! ones acted on are this client's, live, and — for a manifest CID — that
//! manifest's. A home that has no record of the root is first restored from
//! the network (as `crowd ls` does).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use crowd_chunker::Cid;
use crowd_protocol::libp2p::{Multiaddr, PeerId};
use crowd_protocol::tracker::MAX_LIST;
use crowd_protocol::{
    Amount, Epoch, FileQuery, FileRegistration, FileView, Manifest, PieceId, RemoveRequest, RenewRequest,
    Response, Signed, TrackerRequest, TrackerResponse,
};
use serde::Serialize;

use crate::error::{strip, Error};
use crate::records::{self, Record};
use crate::session::Session;

/// Slot states in which the slot's provider holds the piece under a live
/// deal: a get fetches from it instead of the manifest's provider.
pub const LIVE_SLOT_STATES: [&str; 3] = ["published", "pre-committed", "active"];

/// A file ending within this many epochs of the current one is listed as
/// "expiring" by `crowd ls` (renew it with `crowd renew CID --epochs N`).
pub const EXPIRING_EPOCHS: u64 = 10;

/// Most pages of `Files(Own)` read in one listing.
const MAX_PAGES: usize = 4096;

/// The BLAKE3 digest inside a manifest CID (what the ledger records).
pub fn manifest_digest(cid: &Cid) -> Option<[u8; 32]> {
    cid.hash().digest().try_into().ok()
}

/// The registration of a stored file's deals, by piece index, for the
/// tracker (`bytes` is the manifest's dag-cbor, `m` decoded). `None` for an
/// empty file (no pieces, no deals). The manifest must list exactly one
/// piece for every index of its layout.
pub fn registration(m: &Manifest, bytes: &[u8]) -> Result<Option<FileRegistration>> {
    if m.pieces.is_empty() {
        return Ok(None);
    }
    let n = m.layout.params().total_shards();
    let mut deals: Vec<Option<u64>> = vec![None; n];
    for p in &m.pieces {
        let slot = usize::try_from(p.index)
            .ok()
            .and_then(|i| deals.get_mut(i))
            .ok_or_else(|| anyhow!("the manifest lists piece {} of {n}", p.index))?;
        if slot.replace(p.deal_id).is_some() {
            bail!("the manifest lists piece {} twice", p.index);
        }
    }
    let deals = deals
        .into_iter()
        .enumerate()
        .map(|(i, d)| d.ok_or_else(|| anyhow!("the manifest has no deal for piece {i}")))
        .collect::<Result<Vec<u64>>>()?;
    let digest = manifest_digest(&crowd_protocol::manifest_cid(bytes))
        .ok_or_else(|| anyhow!("a manifest CID without a 32-byte digest"))?;
    Ok(Some(FileRegistration {
        root: m.root.to_bytes(),
        manifest: digest,
        data_pieces: u32::try_from(m.layout.params().data_shards())
            .map_err(|_| anyhow!("too many data pieces"))?,
        deals,
    }))
}

/// Whose file records a reader follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Only this client's (the owner reading its private file).
    Only(PeerId),
    /// Anyone's, this client's first (a public file, a capability).
    Prefer(Option<PeerId>),
}

/// The tracker's record of the file stored as manifest `digest`: among the
/// files `owner` admits, this client's first, then live ones, then the
/// first registered (a later registration of someone else's manifest
/// cannot displace the original).
pub fn choose_file<'a>(files: &'a [FileView], digest: &[u8; 32], owner: Owner) -> Option<&'a FileView> {
    let me = match owner {
        Owner::Only(me) => Some(me),
        Owner::Prefer(me) => me,
    };
    files
        .iter()
        .filter(|f| f.manifest == *digest)
        .filter(|f| !matches!(owner, Owner::Only(me) if f.client != me))
        .min_by_key(|f| (Some(f.client) != me, f.state != "live", f.id))
}

/// Points each piece of `m` whose slot in `file` is live at the slot's
/// current provider (and deal), adding the slot's addresses to `addrs`.
/// Slots that are lost or repairing, name another piece or an index
/// outside the layout change nothing. Returns the indexes that moved to
/// another provider.
pub fn follow_placement(
    m: &mut Manifest,
    addrs: &mut HashMap<PeerId, Vec<Multiaddr>>,
    file: &FileView,
) -> Vec<u64> {
    let mut moved = Vec::new();
    let layout_pieces = m.layout.pieces();
    for slot in &file.slots {
        if !LIVE_SLOT_STATES.contains(&slot.state.as_str()) {
            continue;
        }
        let Some(info) = usize::try_from(slot.index)
            .ok()
            .and_then(|i| layout_pieces.get(i))
        else {
            continue;
        };
        if slot.piece != PieceId(*info.hash.as_bytes()) {
            continue;
        }
        let Some(piece) = m.pieces.iter_mut().find(|p| p.index == slot.index) else {
            continue;
        };
        let provider = slot.provider.to_string();
        if piece.provider != provider {
            moved.push(slot.index);
        }
        piece.provider = provider;
        piece.deal_id = slot.deal_id;
        let known = addrs.entry(slot.provider).or_default();
        for a in slot.addrs.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
            if !known.contains(&a) {
                known.push(a);
            }
        }
    }
    moved
}

/// A tracker answer, with its refusal as [`Error::Network`] (one clean line).
async fn ask(session: &Session, request: TrackerRequest) -> Result<TrackerResponse> {
    match session
        .link
        .request(&session.net, request)
        .await
        .context("tracker")?
    {
        Response::Tracker(r) => Ok(r),
        Response::Error { message } => Err(Error::Network(strip(&format!("tracker: {message}"))).into()),
        other => bail!("tracker: unexpected answer {}", variant(&other)),
    }
}

fn variant<T: std::fmt::Debug>(r: &T) -> String {
    let s = format!("{r:?}");
    s.split(['(', ' ', '{']).next().unwrap_or("").to_string()
}

/// Every file the tracker has under network root `root`.
pub(crate) async fn by_root(session: &Session, root: &Cid) -> Result<Vec<FileView>> {
    match ask(session, TrackerRequest::Files(FileQuery::Root(root.to_bytes()))).await? {
        TrackerResponse::Files(files) => Ok(files),
        other => bail!("tracker: unexpected answer {}", variant(&other)),
    }
}

/// Every file this client registered, in id order (all pages).
pub(crate) async fn own(session: &Session) -> Result<Vec<FileView>> {
    let mut all: Vec<FileView> = Vec::new();
    let mut after = None;
    for _ in 0..MAX_PAGES {
        let page = match ask(session, TrackerRequest::Files(FileQuery::Own { after })).await? {
            TrackerResponse::Files(files) => files,
            other => bail!("tracker: unexpected answer {}", variant(&other)),
        };
        let last = page.iter().map(|f| f.id).max();
        let full = page.len() >= MAX_LIST;
        all.extend(page.into_iter().filter(|f| f.client == session.peer));
        match last {
            // ids only grow: a page that does not move on ends the list
            Some(id) if full && after.is_none_or(|a| id > a) => after = Some(id),
            _ => {
                all.sort_by_key(|f| f.id);
                all.dedup_by_key(|f| f.id);
                return Ok(all);
            }
        }
    }
    bail!("tracker: the list of files does not end")
}

/// Whether `record` is of the manifest with this digest.
fn same_manifest(record: &Record, digest: &[u8; 32]) -> bool {
    record
        .manifest
        .parse::<Cid>()
        .ok()
        .and_then(|c| manifest_digest(&c))
        .is_some_and(|d| d == *digest)
}

/// What a root the user gave stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    /// Network roots to ask the tracker about.
    pub roots: Vec<Cid>,
    /// Only these manifests (when a manifest CID was given).
    pub manifests: Option<Vec<[u8; 32]>>,
    /// Whether this home has a record of it.
    pub recorded: bool,
}

/// The network roots and manifests `given` names among `records`: the
/// network root of every record whose root or manifest it is, and `given`
/// itself as a network root unless it is a manifest CID.
pub fn targets(records: &[Record], given: &Cid) -> Targets {
    let text = given.to_string();
    let by_manifest: Vec<&Record> = records.iter().filter(|r| r.manifest == text).collect();
    let by_root: Vec<&Record> = records.iter().filter(|r| r.root == text).collect();
    let mut roots: Vec<Cid> = Vec::new();
    let mut push = |c: Cid| {
        if !roots.contains(&c) {
            roots.push(c);
        }
    };
    let manifests = if by_manifest.is_empty() {
        push(*given);
        None
    } else {
        Some(manifest_digest(given).into_iter().collect())
    };
    for r in by_manifest.iter().chain(&by_root) {
        if let Ok(c) = r.network_root().parse::<Cid>() {
            push(c);
        }
    }
    Targets {
        roots,
        manifests,
        recorded: !(by_manifest.is_empty() && by_root.is_empty()),
    }
}

/// Of `files`, the ones `rm`/`renew` act on: `me`'s, live and (if given)
/// of the named manifests; or why there are none.
pub fn own_live(
    files: &[FileView],
    me: PeerId,
    manifests: Option<&[[u8; 32]]>,
    given: &str,
) -> Result<Vec<FileView>, Error> {
    let named: Vec<&FileView> = files
        .iter()
        .filter(|f| manifests.is_none_or(|m| m.contains(&f.manifest)))
        .collect();
    let mine: Vec<&FileView> = named.iter().copied().filter(|f| f.client == me).collect();
    let live: Vec<FileView> = mine
        .iter()
        .filter(|f| f.state == "live")
        .map(|f| (*f).clone())
        .collect();
    if !live.is_empty() {
        return Ok(live);
    }
    if named.is_empty() {
        return Err(Error::NotFound(format!(
            "{given}: no such file: the tracker has no file stored under it"
        )));
    }
    if mine.is_empty() {
        return Err(Error::NotOwner(format!(
            "{given}: not your file: it was stored by another client"
        )));
    }
    let states: Vec<&str> = mine.iter().map(|f| f.state.as_str()).collect();
    Err(Error::NotFound(format!(
        "{given}: no live file: it is {}",
        if states.iter().all(|s| *s == "removed") {
            "removed already"
        } else if states.iter().all(|s| *s == "expired") {
            "expired"
        } else {
            "removed or expired"
        }
    )))
}

/// `given` as a CID, or the one-line malformed-CID error.
fn parse_cid(given: &str) -> Result<Cid, Error> {
    given
        .parse()
        .map_err(|_| Error::Input(format!("'{given}' is not a CID")))
}

/// This client's live files that `given` names (see the module doc).
async fn resolve(home: &Path, session: &Session, given: &str) -> Result<Vec<FileView>> {
    let cid = parse_cid(given)?;
    let mut t = targets(&records::list(home)?, &cid);
    if !t.recorded {
        // perhaps stored before this home was restored
        crate::info::recover(home, session).await?;
        t = targets(&records::list(home)?, &cid);
    }
    let mut files: BTreeMap<u64, FileView> = BTreeMap::new();
    for root in &t.roots {
        for f in by_root(session, root).await? {
            files.insert(f.id, f);
        }
    }
    let files: Vec<FileView> = files.into_values().collect();
    Ok(own_live(&files, session.peer, t.manifests.as_deref(), given)?)
}

/// Marks this home's records of `file` with its state and end epoch.
fn note(home: &Path, file: &FileView, state: &str, end_epoch: Option<Epoch>) -> Result<()> {
    for mut r in records::list(home)?
        .into_iter()
        .filter(|r| same_manifest(r, &file.manifest))
    {
        r.state = Some(state.to_string());
        if end_epoch.is_some() {
            r.end_epoch = end_epoch;
        }
        records::update(home, &r)?;
    }
    Ok(())
}

/// A CIDv1 of `codec` (below 0x80) over a BLAKE3 `digest`.
fn blake3_cid(codec: u8, digest: &[u8; 32]) -> Option<Cid> {
    let mut bytes = vec![0x01, codec, 0x1e, 0x20];
    bytes.extend_from_slice(digest);
    Cid::try_from(bytes.as_slice()).ok()
}

/// The manifest CID (text) of a file record (dag-cbor, BLAKE3).
fn manifest_text(file: &FileView) -> String {
    blake3_cid(0x71, &file.manifest).map_or_else(|| hex::encode(file.manifest), |c| c.to_string())
}

async fn next_nonce(session: &Session) -> Result<u64> {
    Ok(session.account(session.peer).await?.nonce)
}

/// One file `crowd rm` ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovedFile {
    /// The tracker's file number.
    pub file_id: u64,
    /// The file's manifest CID.
    pub manifest: String,
    /// Unearned escrow (and repair fund) back in the balance.
    pub refund: Amount,
}

/// What [`crate::Client::remove`] did (and `crowd rm --json` prints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoveOutcome {
    /// The CID given.
    pub root: String,
    pub files: Vec<RemovedFile>,
    /// The sum of the refunds.
    pub refund: Amount,
}

/// One file `crowd renew` extended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenewedFile {
    pub file_id: u64,
    /// The file's manifest CID.
    pub manifest: String,
    /// The first epoch after the file's deals now.
    pub end_epoch: Epoch,
    /// Escrow the renewal locked.
    pub locked: Amount,
}

/// What [`crate::Client::renew`] did (and `crowd renew --json` prints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenewOutcome {
    /// The CID given.
    pub root: String,
    pub files: Vec<RenewedFile>,
    /// The sum of what the renewals locked.
    pub locked: Amount,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `crowd rm`: ends every live file of this client's that `given` names.
/// Files are removed one by one (each with a fresh nonce); if one fails,
/// the error is returned and the ones before it stay removed.
pub fn remove(home: &Path, given: &str) -> Result<RemoveOutcome> {
    let given = given.trim();
    parse_cid(given)?;
    runtime()?.block_on(async {
        let session = Session::connect(home).await?;
        let mut out = RemoveOutcome {
            root: given.to_string(),
            files: Vec::new(),
            refund: 0,
        };
        for file in resolve(home, &session, given).await? {
            let request = RemoveRequest {
                file_id: file.id,
                nonce: next_nonce(&session).await?,
            };
            let signed = Signed::sign(&session.key, &session.network().await?, &request)
                .map_err(|e| anyhow!("signing: {e}"))?;
            let refund = match ask(&session, TrackerRequest::RemoveFile(signed)).await? {
                TrackerResponse::FileRemoved { refund } => refund,
                other => bail!("tracker: unexpected answer {}", variant(&other)),
            };
            note(home, &file, "removed", None)?;
            out.refund = out.refund.saturating_add(refund);
            out.files.push(RemovedFile {
                file_id: file.id,
                manifest: manifest_text(&file),
                refund,
            });
        }
        Ok(out)
    })
}

/// `crowd renew`: extends every live file of this client's that `given`
/// names by `epochs` (at least 1).
pub fn renew(home: &Path, given: &str, epochs: u64) -> Result<RenewOutcome> {
    let given = given.trim();
    parse_cid(given)?;
    if epochs == 0 {
        return Err(Error::Input("--epochs must be at least 1".into()).into());
    }
    runtime()?.block_on(async {
        let session = Session::connect(home).await?;
        let mut out = RenewOutcome {
            root: given.to_string(),
            files: Vec::new(),
            locked: 0,
        };
        for file in resolve(home, &session, given).await? {
            let request = RenewRequest {
                file_id: file.id,
                epochs,
                nonce: next_nonce(&session).await?,
            };
            let signed = Signed::sign(&session.key, &session.network().await?, &request)
                .map_err(|e| anyhow!("signing: {e}"))?;
            let (end_epoch, locked) = match ask(&session, TrackerRequest::RenewFile(signed)).await? {
                TrackerResponse::FileRenewed { end_epoch, locked } => (end_epoch, locked),
                other => bail!("tracker: unexpected answer {}", variant(&other)),
            };
            note(home, &file, "live", Some(end_epoch))?;
            out.locked = out.locked.saturating_add(locked);
            out.files.push(RenewedFile {
                file_id: file.id,
                manifest: manifest_text(&file),
                end_epoch,
                locked,
            });
        }
        Ok(out)
    })
}

/// `crowd rm`'s lines.
pub fn remove_lines(o: &RemoveOutcome) -> String {
    o.files
        .iter()
        .map(|f| {
            format!(
                "removed {} (file {}, manifest {}): refund {}\n",
                o.root, f.file_id, f.manifest, f.refund
            )
        })
        .collect()
}

/// `crowd renew`'s lines.
pub fn renew_lines(o: &RenewOutcome) -> String {
    o.files
        .iter()
        .map(|f| {
            format!(
                "renewed {} (file {}, manifest {}): ends at epoch {}, locked {}\n",
                o.root, f.file_id, f.manifest, f.end_epoch, f.locked
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crowd_protocol::{Chunking, ManifestPiece, RepairStats, SlotView, MANIFEST_VERSION};

    fn manifest() -> (Manifest, Vec<u8>) {
        let data = vec![7u8; 9000];
        let enc = crowd_erasure::Encoder::new(crowd_erasure::Params::new(2, 1, 4096).unwrap()).unwrap();
        let (layout, _) = enc.encode_bytes(&data).unwrap();
        let root = crowd_chunker::build_from_slice(
            &data,
            &crowd_chunker::DagParams::default(),
            &mut crowd_chunker::Discard,
        )
        .unwrap()
        .cid;
        let m = Manifest {
            version: MANIFEST_VERSION,
            root,
            size: 9000,
            chunking: Chunking {
                chunker: "fixed".into(),
                chunk_size: 1 << 20,
                max_links: 1024,
                hash: "blake3".into(),
            },
            // listed out of order on purpose
            pieces: [2u64, 0, 1]
                .into_iter()
                .map(|i| ManifestPiece {
                    index: i,
                    piece: layout.piece_cid(i as usize).unwrap(),
                    provider: PeerId::random().to_string(),
                    deal_id: 100 + i,
                })
                .collect(),
            layout,
            encryption: None,
        };
        let bytes = m.encode().unwrap();
        (m, bytes)
    }

    fn view(m: &Manifest, bytes: &[u8], id: u64, client: PeerId, state: &str) -> FileView {
        FileView {
            id,
            client,
            root: m.root.to_bytes(),
            manifest: manifest_digest(&crowd_protocol::manifest_cid(bytes)).unwrap(),
            data_pieces: 2,
            end_epoch: 50,
            state: state.into(),
            slots: (0..3)
                .map(|i| SlotView {
                    index: i,
                    piece: PieceId(*m.layout.pieces()[i as usize].hash.as_bytes()),
                    piece_size: m.layout.piece_len(),
                    deal_id: 100 + i,
                    provider: m
                        .pieces
                        .iter()
                        .find(|p| p.index == i)
                        .unwrap()
                        .provider
                        .parse()
                        .unwrap(),
                    addrs: vec![],
                    state: "active".into(),
                    consecutive_faults: 0,
                })
                .collect(),
            repairs: RepairStats::default(),
        }
    }

    #[test]
    fn registration_lists_deals_by_piece_index_and_the_manifest_digest() {
        let (m, bytes) = manifest();
        let r = registration(&m, &bytes).unwrap().unwrap();
        assert_eq!(r.deals, vec![100, 101, 102]);
        assert_eq!(r.data_pieces, 2);
        assert_eq!(r.root, m.root.to_bytes());
        assert_eq!(r.manifest, *blake3::hash(&bytes).as_bytes());
        // an empty file registers no deals
        let mut empty = m.clone();
        empty.pieces.clear();
        assert_eq!(registration(&empty, &bytes).unwrap(), None);
        // a manifest missing or repeating an index is refused, not guessed
        let mut gap = m.clone();
        gap.pieces.retain(|p| p.index != 1);
        assert!(format!("{:#}", registration(&gap, &bytes).unwrap_err()).contains("piece 1"));
        let mut twice = m.clone();
        twice.pieces[0].index = 0;
        assert!(format!("{:#}", registration(&twice, &bytes).unwrap_err()).contains("twice"));
        let mut beyond = m;
        beyond.pieces[0].index = 9;
        assert!(registration(&beyond, &bytes).is_err());
    }

    #[test]
    fn placement_follows_live_slots_with_the_layouts_piece_only() {
        let (m, bytes) = manifest();
        let mut file = view(&m, &bytes, 1, PeerId::random(), "live");
        let repaired = PeerId::random();
        file.slots[1].provider = repaired;
        file.slots[1].deal_id = 555;
        file.slots[1].addrs = vec!["/ip4/127.0.0.1/tcp/4001".into(), "not an address".into()];
        // a lost slot names the last (gone) provider: keep the manifest's
        file.slots[0].provider = PeerId::random();
        file.slots[0].state = "lost".into();
        // a slot claiming another piece is ignored
        file.slots[2].provider = PeerId::random();
        file.slots[2].piece = PieceId([9; 32]);
        let mut followed = m.clone();
        let mut addrs = HashMap::new();
        let moved = follow_placement(&mut followed, &mut addrs, &file);
        assert_eq!(moved, vec![1]);
        let p1 = followed.pieces.iter().find(|p| p.index == 1).unwrap();
        assert_eq!((p1.provider.clone(), p1.deal_id), (repaired.to_string(), 555));
        assert_eq!(
            addrs[&repaired],
            vec!["/ip4/127.0.0.1/tcp/4001".parse::<Multiaddr>().unwrap()]
        );
        for i in [0, 2] {
            let before = m.pieces.iter().find(|p| p.index == i).unwrap();
            let after = followed.pieces.iter().find(|p| p.index == i).unwrap();
            assert_eq!(before, after, "piece {i}");
        }
        assert_eq!(addrs.len(), 1);
        // following again changes nothing more
        assert!(follow_placement(&mut followed, &mut addrs, &file).is_empty());
        assert_eq!(addrs[&repaired].len(), 1);
    }

    #[test]
    fn the_file_chosen_is_the_manifests_own_first_then_live_then_oldest() {
        let (m, bytes) = manifest();
        let (me, other) = (PeerId::random(), PeerId::random());
        let digest = manifest_digest(&crowd_protocol::manifest_cid(&bytes)).unwrap();
        let mut another = view(&m, &bytes, 0, other, "live");
        another.manifest = [1; 32];
        let files = vec![
            another,
            view(&m, &bytes, 3, other, "live"),
            view(&m, &bytes, 2, other, "removed"),
            view(&m, &bytes, 5, me, "live"),
            view(&m, &bytes, 4, other, "live"),
        ];
        assert_eq!(
            choose_file(&files, &digest, Owner::Prefer(Some(me))).unwrap().id,
            5
        );
        assert_eq!(choose_file(&files, &digest, Owner::Only(me)).unwrap().id, 5);
        assert_eq!(choose_file(&files, &digest, Owner::Prefer(None)).unwrap().id, 3);
        assert!(choose_file(&files, &digest, Owner::Only(PeerId::random())).is_none());
        assert!(choose_file(&files, &[2; 32], Owner::Prefer(None)).is_none());
    }

    fn record(root: &str, manifest: &str, network_root: &str) -> Record {
        Record {
            root: root.into(),
            manifest: manifest.into(),
            size: 1,
            name: String::new(),
            stored_at: 1,
            data_shards: 2,
            parity_shards: 1,
            public: false,
            network_root: network_root.into(),
            deals: vec![],
            end_epoch: None,
            state: None,
        }
    }

    fn cid(seed: u8, codec: u8) -> Cid {
        blake3_cid(codec, &[seed; 32]).unwrap()
    }

    #[test]
    fn a_root_resolves_to_every_put_of_it_and_a_manifest_to_itself() {
        let plain = cid(1, 0x55);
        let (c1, c2) = (cid(2, 0x55), cid(3, 0x55));
        let (m1, m2) = (cid(4, 0x71), cid(5, 0x71));
        let records = vec![
            record(&plain.to_string(), &m1.to_string(), &c1.to_string()),
            record(&plain.to_string(), &m2.to_string(), &c2.to_string()),
        ];
        // a plaintext root: both network roots (and itself, for a public put)
        let t = targets(&records, &plain);
        assert_eq!(t.roots, vec![plain, c1, c2]);
        assert_eq!((t.manifests, t.recorded), (None, true));
        // a manifest CID: that put only
        let t = targets(&records, &m2);
        assert_eq!(t.roots, vec![c2]);
        assert_eq!(t.manifests, Some(vec![[5; 32]]));
        // unknown here: only itself, as a network root
        let t = targets(&records, &c1);
        assert_eq!((t.roots, t.recorded), (vec![c1], false));
        let t = targets(&[], &plain);
        assert_eq!((t.roots, t.recorded), (vec![plain], false));
        assert!(matches!(parse_cid("not-a-cid"), Err(Error::Input(m)) if m == "'not-a-cid' is not a CID"));
    }

    #[test]
    fn only_own_live_files_are_acted_on_and_otherwise_one_line_says_why() {
        let (m, bytes) = manifest();
        let (me, other) = (PeerId::random(), PeerId::random());
        let digest = manifest_digest(&crowd_protocol::manifest_cid(&bytes)).unwrap();
        let files = vec![
            view(&m, &bytes, 1, other, "live"),
            view(&m, &bytes, 2, me, "removed"),
            view(&m, &bytes, 3, me, "live"),
        ];
        let got = own_live(&files, me, None, "bafyx").unwrap();
        assert_eq!(got.iter().map(|f| f.id).collect::<Vec<_>>(), vec![3]);
        assert_eq!(own_live(&files, me, Some(&[digest]), "x").unwrap().len(), 1);
        let e = own_live(&files, me, Some(&[[0; 32]]), "bafyx").unwrap_err();
        assert!(
            matches!(&e, Error::NotFound(s) if s.contains("no such file")),
            "{e}"
        );
        let e = own_live(&files[..1], me, None, "bafyx").unwrap_err();
        assert!(
            matches!(&e, Error::NotOwner(s) if s.contains("not your file")),
            "{e}"
        );
        let e = own_live(&files[..2], me, None, "bafyx").unwrap_err();
        assert!(e.to_string().contains("removed already"), "{e}");
        let e = own_live(&[], me, None, "bafyx").unwrap_err();
        assert!(matches!(e, Error::NotFound(_)));
        for e in [
            own_live(&[], me, None, "bafyx").unwrap_err(),
            own_live(&files[..1], me, None, "bafyx").unwrap_err(),
        ] {
            assert_eq!(e.to_string().lines().count(), 1);
        }
    }

    #[test]
    fn outcomes_print_one_line_per_file() {
        let o = RemoveOutcome {
            root: "bafyroot".into(),
            files: vec![RemovedFile {
                file_id: 3,
                manifest: "bafym".into(),
                refund: 120,
            }],
            refund: 120,
        };
        assert_eq!(
            remove_lines(&o),
            "removed bafyroot (file 3, manifest bafym): refund 120\n"
        );
        let o = RenewOutcome {
            root: "bafyroot".into(),
            files: vec![RenewedFile {
                file_id: 3,
                manifest: "bafym".into(),
                end_epoch: 90,
                locked: 40,
            }],
            locked: 40,
        };
        assert_eq!(
            renew_lines(&o),
            "renewed bafyroot (file 3, manifest bafym): ends at epoch 90, locked 40\n"
        );
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["files"][0]["end_epoch"], 90);
        // a file record names its manifest by the CID put printed
        let (m, bytes) = manifest();
        assert_eq!(
            manifest_text(&view(&m, &bytes, 0, PeerId::random(), "live")),
            crowd_protocol::manifest_cid(&bytes).to_string()
        );
    }
}
