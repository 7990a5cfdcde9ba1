//! `crowd ls` (local records), `crowd status CID` (per piece: deal, seal and
//! proving state from the tracker and the provider) and `crowd balance`.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use crowd_chunker::Cid;
use crowd_protocol::libp2p::PeerId;
use crowd_protocol::{
    Amount, DealQuery, DealView, Manifest, ProviderEntry, Request, Response, SealReport, TrackerRequest,
    TrackerResponse,
};
use serde::Serialize;

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
        }
    }
}

/// `crowd ls`'s table.
pub fn ls_table(entries: &[LsEntry]) -> String {
    let width = entries.iter().map(|e| e.root.len()).max().unwrap_or(4).max(4);
    let mut out = format!(
        "{:<width$}  {:>10}  {:<16}  {:>5}  {:<7}  NAME\n",
        "ROOT", "SIZE", "STORED (UTC)", "DEALS", "ACCESS"
    );
    for e in entries {
        out.push_str(&format!(
            "{:<width$}  {:>10}  {:<16}  {:>5}  {:<7}  {}\n",
            e.root,
            e.size,
            e.date,
            e.deals,
            if e.public { "public" } else { "private" },
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
    })
}

/// This home's files; with `sync`, first restored from the network
/// ([`recover`]: e.g. after `crowd key import` into a fresh home).
pub fn ls(home: &Path, sync: bool) -> Result<Vec<LsEntry>> {
    if sync {
        runtime()?.block_on(async {
            let session = Session::connect(home).await?;
            recover(home, &session).await
        })?;
    }
    Ok(records::list(home)?.iter().map(LsEntry::from).collect())
}

// ---------------------------------------------------------------- status

/// One piece in `crowd status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PieceStatus {
    pub index: u64,
    pub piece: String,
    pub provider: String,
    pub deal_id: u64,
    /// The tracker's deal state, or "unknown" if it has no such deal.
    pub state: String,
    /// "sealed", "queued", "unknown", "failed: …" or "unreachable".
    pub seal: String,
    pub proven_epochs: u64,
    pub faulted_epochs: u64,
    pub paid: Amount,
}

/// What `crowd status --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusOutput {
    pub root: String,
    pub manifest: String,
    pub size: u64,
    pub data_shards: u64,
    pub parity_shards: u64,
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

/// Joins a manifest with the tracker's deals and the providers' seal words.
fn status_of(manifest: &Manifest, manifest_cid: &str, deals: &[DealView], seals: &[String]) -> StatusOutput {
    let pieces = manifest
        .pieces
        .iter()
        .zip(seals)
        .map(|(p, seal)| {
            let deal = deals.iter().find(|d| d.id == p.deal_id);
            PieceStatus {
                index: p.index,
                piece: p.piece.to_string(),
                provider: p.provider.clone(),
                deal_id: p.deal_id,
                state: deal.map_or_else(|| "unknown".to_string(), |d| d.state.clone()),
                seal: seal.clone(),
                proven_epochs: deal.map_or(0, |d| d.proven_epochs),
                faulted_epochs: deal.map_or(0, |d| d.faulted_epochs),
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
            p.state,
            p.seal,
            p.proven_epochs,
            p.faulted_epochs,
            p.paid
        ));
    }
    out
}

/// A provider's seal report for a deal, as a word; "unreachable" when it
/// does not answer in time.
async fn seal_state(session: &Session, entry: Option<&ProviderEntry>, peer: PeerId, deal_id: u64) -> String {
    let ask = async {
        if let Some(entry) = entry {
            session.dial_provider(entry).await.ok()?;
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
            TrackerResponse::Manifest(Some(blob)) => blob.0,
            TrackerResponse::Manifest(None) => {
                bail!("{given}: no such file: not stored by this client and unknown to the tracker")
            }
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
    let manifest_cid = crowd_protocol::manifest_cid(&bytes).to_string();
    let ids: Vec<u64> = manifest.pieces.iter().map(|p| p.deal_id).collect();
    let (deals, providers) = if ids.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        tokio::try_join!(session.deals(DealQuery::Ids(ids)), session.providers())?
    };
    let seals = futures::future::join_all(manifest.pieces.iter().map(|p| {
        let providers = &providers;
        let session = &session;
        async move {
            match p.provider.parse::<PeerId>() {
                Ok(peer) => {
                    let entry = providers.iter().find(|e| e.peer == peer);
                    seal_state(session, entry, peer, p.deal_id).await
                }
                Err(_) => "unreachable".to_string(),
            }
        }
    }))
    .await;
    let mut out = status_of(&manifest, &manifest_cid, &deals, &seals);
    if let Some(r) = &local {
        // the file's own root (a private file's manifest names its ciphertext's)
        out.root = r.root.clone();
        out.size = r.size;
    }
    Ok(out)
}

/// Per piece: deal, seal and proving state of a stored file.
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
        })
    })
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
        let s = status_of(&m, "bafymanifest", &deals, &seals);
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
        assert_eq!(table.lines().count(), 3 + 1 + 3, "{table}");
        assert!(table.contains("unreachable"));
    }

    #[test]
    fn amounts_beyond_u64_print_as_numbers() {
        let b = BalanceOutput {
            account: "a".into(),
            available: u128::from(u64::MAX) + 1,
            locked_escrow: 0,
            locked_collateral: 0,
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
}
