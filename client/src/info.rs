//! `crowd ls` (local records), `crowd status CID` (per piece: deal, seal and
//! proving state from the tracker and the provider) and `crowd balance`.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
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

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The file's root CID (or its manifest CID).
    pub cid: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BalanceArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

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
}

impl From<&Record> for LsEntry {
    fn from(r: &Record) -> Self {
        Self {
            root: r.root.clone(),
            manifest: r.manifest.clone(),
            size: r.size,
            name: r.name.clone(),
            stored_at: r.stored_at,
            date: records::format_time(r.stored_at),
            deals: r.deals.len(),
        }
    }
}

fn ls_table(entries: &[LsEntry]) -> String {
    let width = entries.iter().map(|e| e.root.len()).max().unwrap_or(4).max(4);
    let mut out = format!(
        "{:<width$}  {:>10}  {:<16}  {:>5}  NAME\n",
        "ROOT", "SIZE", "STORED (UTC)", "DEALS"
    );
    for e in entries {
        out.push_str(&format!(
            "{:<width$}  {:>10}  {:<16}  {:>5}  {}\n",
            e.root, e.size, e.date, e.deals, e.name
        ));
    }
    out
}

pub fn ls(home: &Path, args: LsArgs) -> Result<()> {
    let entries: Vec<LsEntry> = records::list(home)?.iter().map(LsEntry::from).collect();
    if args.json {
        println!("{}", serde_json::to_string(&entries).context("encoding output")?);
    } else if entries.is_empty() {
        eprintln!("crowd: no files stored from {} yet", home.display());
    } else {
        print!("{}", ls_table(&entries));
    }
    Ok(())
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

fn status_table(s: &StatusOutput) -> String {
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
            .tracker(TrackerRequest::Manifest { root: cid.to_bytes() })
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
    Ok(status_of(&manifest, &manifest_cid, &deals, &seals))
}

pub fn status(home: &Path, args: StatusArgs) -> Result<()> {
    let given = args.cid.trim();
    let cid: Cid = given.parse().map_err(|_| anyhow!("'{given}' is not a CID"))?;
    let out = runtime()?.block_on(status_async(home, &cid, given))?;
    if args.json {
        println!("{}", serde_json::to_string(&out).context("encoding output")?);
    } else {
        print!("{}", status_table(&out));
    }
    Ok(())
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

pub fn balance(home: &Path, args: BalanceArgs) -> Result<()> {
    let out = runtime()?.block_on(async {
        let session = Session::connect(home).await?;
        let a = session.account(session.peer).await?;
        Ok::<_, anyhow::Error>(BalanceOutput {
            account: session.peer.to_string(),
            available: a.available,
            locked_escrow: a.locked_escrow,
            locked_collateral: a.locked_collateral,
        })
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&out).context("encoding output")?);
    } else {
        println!("account            {}", out.account);
        println!("available          {}", out.available);
        println!("locked escrow      {}", out.locked_escrow);
        println!("locked collateral  {}", out.locked_collateral);
    }
    Ok(())
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
            stored_at: 0,
            data_shards: 4,
            parity_shards: 2,
            deals: vec![],
        };
        let e = LsEntry::from(&r);
        assert_eq!(e.date, "1970-01-01 00:00");
        let table = ls_table(&[e]);
        assert!(table.lines().nth(1).unwrap().starts_with("bafyroot"), "{table}");
        assert_eq!(short("12D3KooWAbcdefghijklmnopqrstuvwxyz"), "12D3KooW…uvwxyz");
        assert_eq!(short("short"), "short");
    }
}
