//! `crowd put FILE`: store a file with `k + m` providers.
//!
//! 1. Check the input, then ask the tracker for its clock, its providers and
//!    our balance: choose candidates ([`plan`]) and check the funds before
//!    anything is read or uploaded.
//! 2. Pass 1 streams the file twice at once: its root CID (chunker) and its
//!    erasure layout (piece hashes); no piece is kept.
//! 3. Rounds, until every piece is placed: propose signed deals for the
//!    pieces without a provider to the best remaining candidates, in
//!    parallel (a refusal moves on to the next candidate); then one encoding
//!    pass streams every accepted piece to its provider ([`stream`]). Each
//!    receipt is checked and its deal published at once. A piece whose
//!    provider failed goes to the next round, with a fresh proposal to a new
//!    candidate. The put fails only when the candidates run out.
//! 4. The manifest is recorded locally, stored with every provider and
//!    registered with the tracker; the root CID is printed.
//!
//! Memory is bounded whatever the file size: the encoder works on
//! [`SEGMENT`]-byte segments and each upload lane buffers a few MiB.

mod plan;
mod stream;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use crowd_chunker::{ChunkerKind, DagParams, DagRoot, HashAlg};
use crowd_erasure::{Encoder, Layout, Params};
use crowd_protocol::libp2p::PeerId;
use crowd_protocol::{
    Chunking, DealAcceptance, DealProposal, Manifest, ManifestPiece, PieceId, Request, Response, Signed,
    TrackerRequest, TrackerResponse, UploadResult, MANIFEST_VERSION,
};
use futures::future::join_all;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::config::ClientConfig;
use crate::records::{Record, RecordDeal};
use crate::session::Session;
use plan::{Candidate, Terms};

/// Erasure segment: memory per segment in flight, whatever the file size.
const SEGMENT: u64 = 16 << 20;

#[derive(Debug, Args)]
pub struct PutArgs {
    /// The file to store (a regular file: it is read more than once).
    pub file: PathBuf,
    /// Data shards k: any k of the k+m pieces rebuild the file [default: config data_shards, 4].
    #[arg(long, value_name = "K")]
    pub data_shards: Option<usize>,
    /// Parity shards m: the file survives losing any m providers [default: config parity_shards, 2].
    #[arg(long, value_name = "M")]
    pub parity_shards: Option<usize>,
    /// Deal length in epochs [default: config epochs].
    #[arg(long, value_name = "N")]
    pub epochs: Option<u64>,
    /// Highest price accepted, base units per GiB per epoch [default: config max_price_per_gib_epoch].
    #[arg(long, value_name = "P")]
    pub max_price: Option<u64>,
    /// Print {"root", "manifest", "size", "deals"} as JSON (and no progress bars).
    #[arg(long)]
    pub json: bool,
}

/// What `put` settled on before touching the network.
#[derive(Debug)]
struct Job {
    file: PathBuf,
    size: u64,
    k: usize,
    m: usize,
    epochs: u64,
    max_price: u128,
    json: bool,
}

impl Job {
    fn new(args: PutArgs, config: &ClientConfig) -> Result<Self> {
        let k = args.data_shards.unwrap_or(config.data_shards);
        let m = args.parity_shards.unwrap_or(config.parity_shards);
        if k == 0 {
            bail!("--data-shards must be at least 1");
        }
        if k + m > crowd_erasure::MAX_SHARDS {
            bail!(
                "k + m = {} is above the {}-piece limit",
                k + m,
                crowd_erasure::MAX_SHARDS
            );
        }
        let epochs = args.epochs.unwrap_or(config.epochs);
        if epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        let size = match crate::input::open(&args.file)? {
            crate::input::Input::Mapped(map) => map.len() as u64,
            crate::input::Input::Empty => 0,
            crate::input::Input::Stream(_) => bail!(
                "{}: put needs a regular file (it is read more than once)",
                args.file.display()
            ),
        };
        Ok(Self {
            file: args.file,
            size,
            k,
            m,
            epochs,
            max_price: u128::from(args.max_price.unwrap_or(config.max_price_per_gib_epoch)),
            json: args.json,
        })
    }

    fn params(&self) -> Result<Params> {
        let k = self.k as u64;
        Params::new(self.k, self.m, SEGMENT - SEGMENT % k).map_err(|e| anyhow!("erasure parameters: {e}"))
    }
}

/// One deal in the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PutDeal {
    pub deal_id: u64,
    pub provider: String,
    pub piece: String,
    pub piece_size: u64,
    pub index: u64,
}

/// What `crowd put --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PutOutput {
    pub root: String,
    pub manifest: String,
    pub size: u64,
    pub deals: Vec<PutDeal>,
}

pub fn put(home: &Path, args: PutArgs) -> Result<()> {
    let config = ClientConfig::load(home)?;
    let job = Job::new(args, &config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let out = runtime.block_on(run(home, &job))?;
    if job.json {
        println!("{}", serde_json::to_string(&out).context("encoding output")?);
    } else {
        println!("{}", out.root);
    }
    Ok(())
}

async fn run(home: &Path, job: &Job) -> Result<PutOutput> {
    let params = job.params()?;
    let encoder = Arc::new(Encoder::new(params).map_err(|e| anyhow!("erasure parameters: {e}"))?);
    let dag = DagParams::default();
    let session = Session::connect(home).await?;
    let n = params.total_shards();
    let piece_size = params.geometry(job.size).piece_len();

    // Providers and funds first: fail before reading or uploading anything.
    let mut queue = VecDeque::new();
    let mut lead = 0;
    if job.size > 0 {
        let info = session.info().await?;
        let providers = session.providers().await?;
        let collateral = u128::from(session.config.collateral_per_gib);
        let candidates = plan::candidates(&providers, &session.peer, piece_size, job.max_price, collateral);
        if candidates.len() < n {
            bail!(
                "only {} providers available, {n} needed ({}+{} pieces of {}, at most {} per GiB per epoch)",
                candidates.len(),
                job.k,
                job.m,
                human(piece_size),
                job.max_price
            );
        }
        let need = plan::total_cost(&candidates[..n], job.epochs);
        let account = session.account(session.peer).await?;
        if need > account.available {
            bail!(
                "funds too low: the deals need {need}, the balance is {}",
                account.available
            );
        }
        lead = plan::start_lead(piece_size, n, &info);
        queue = candidates.into();
    }

    // Pass 1: root CID and layout.
    let bar = crate::progress::bytes(job.size, "hashing", job.json);
    let (root, layout) = {
        let (file, enc, bar) = (job.file.clone(), encoder.clone(), bar.clone());
        tokio::task::spawn_blocking(move || stream::address_and_layout(&file, &dag, &enc, &bar))
            .await
            .map_err(|e| anyhow!("hashing stopped: {e}"))??
    };
    bar.finish_and_clear();
    if root.size != job.size || layout.file_len() != job.size {
        bail!("{} changed while it was being read", job.file.display());
    }

    let placed = if job.size == 0 {
        Vec::new()
    } else {
        let bar = crate::progress::bytes(piece_size * n as u64, "uploading", job.json);
        let placed = place_all(&session, job, &encoder, &layout, queue, lead, &bar).await?;
        bar.finish_and_clear();
        placed
    };

    let (manifest, bytes) = manifest(&root, &dag, &layout, &placed)?;
    let manifest_cid = crowd_protocol::manifest_cid(&bytes);
    let deals: Vec<PutDeal> = placed
        .iter()
        .map(|p| PutDeal {
            deal_id: p.deal_id,
            provider: p.provider.to_string(),
            piece: p.piece.cid().to_string(),
            piece_size,
            index: p.index as u64,
        })
        .collect();
    let record = Record {
        root: root.cid.to_string(),
        manifest: manifest_cid.to_string(),
        size: job.size,
        name: job
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        stored_at: crate::records::now_secs(),
        data_shards: job.k as u64,
        parity_shards: job.m as u64,
        deals: deals
            .iter()
            .map(|d| RecordDeal {
                index: d.index,
                deal_id: d.deal_id,
                provider: d.provider.clone(),
                piece: d.piece.clone(),
                piece_size: d.piece_size,
            })
            .collect(),
    };
    crate::records::save(home, &record, &bytes)?;
    distribute_manifest(&session, &manifest, &bytes, &placed).await?;
    Ok(PutOutput {
        root: record.root,
        manifest: record.manifest,
        size: job.size,
        deals,
    })
}

/// A piece stored and its deal published.
#[derive(Debug, Clone)]
struct Placed {
    index: usize,
    provider: PeerId,
    piece: PieceId,
    deal_id: u64,
}

/// A proposal a provider accepted.
#[derive(Debug)]
struct Offer {
    index: usize,
    candidate: Candidate,
    proposal: Signed<DealProposal>,
    acceptance: Signed<DealAcceptance>,
    piece: PieceId,
}

/// Why a candidate did not take a piece.
#[derive(Debug)]
struct Refusal {
    index: usize,
    provider: PeerId,
    reason: String,
}

fn piece_id(layout: &Layout, index: usize) -> Result<PieceId> {
    let info = layout
        .pieces()
        .get(index)
        .ok_or_else(|| anyhow!("piece {index} is not in the layout"))?;
    Ok(PieceId(*info.hash.as_bytes()))
}

/// Places every piece (rounds of proposals and one encoding pass each).
async fn place_all(
    session: &Session,
    job: &Job,
    encoder: &Arc<Encoder>,
    layout: &Layout,
    mut queue: VecDeque<Candidate>,
    lead: u64,
    bar: &ProgressBar,
) -> Result<Vec<Placed>> {
    let n = layout.pieces().len();
    let piece_size = layout.piece_len();
    let pieces = (0..n).map(|i| piece_id(layout, i)).collect::<Result<Vec<_>>>()?;
    let mut pending: Vec<usize> = (0..n).collect();
    let mut placed: Vec<Placed> = Vec::with_capacity(n);
    let mut last_refusal: Option<Refusal> = None;
    let note = |r: Refusal, last: &mut Option<Refusal>| {
        bar.suspend(|| {
            if !job.json {
                let reason: String = r.reason.chars().take(200).collect();
                eprintln!(
                    "crowd: piece {} with {}: {reason}; trying another provider",
                    r.index, r.provider
                );
            }
        });
        *last = Some(r);
    };
    while !pending.is_empty() {
        let info = session.info().await?;
        let terms = Terms::new(&info, lead, job.epochs);
        // proposals, until every pending piece has an accepted one
        let mut offers: Vec<Offer> = Vec::new();
        let mut want = std::mem::take(&mut pending);
        while !want.is_empty() {
            if queue.is_empty() {
                let have = placed.len() + offers.len();
                let why = last_refusal
                    .as_ref()
                    .map(|r| format!("; last refusal: {}: {}", r.provider, r.reason))
                    .unwrap_or_default();
                bail!("only {have} providers accepted and stored a piece, {n} needed{why}");
            }
            let batch: Vec<(usize, Candidate)> = want
                .drain(..)
                .zip(std::iter::from_fn(|| queue.pop_front()))
                .collect();
            let tries = batch.into_iter().map(|(index, candidate)| {
                propose(session, index, candidate, pieces[index], piece_size, terms)
            });
            for result in join_all(tries).await {
                match result {
                    Ok(offer) => offers.push(offer),
                    Err(refusal) => {
                        want.push(refusal.index);
                        note(refusal, &mut last_refusal);
                    }
                }
            }
        }
        // one encoding pass streams every accepted piece
        let (ok, failed) = store_round(session, job, encoder, layout, offers, bar).await?;
        placed.extend(ok);
        for refusal in failed {
            pending.push(refusal.index);
            note(refusal, &mut last_refusal);
        }
        bar.inc_length(piece_size * pending.len() as u64);
    }
    placed.sort_by_key(|p| p.index);
    Ok(placed)
}

/// Offers `candidate` a deal for piece `index`.
async fn propose(
    session: &Session,
    index: usize,
    candidate: Candidate,
    piece: PieceId,
    piece_size: u64,
    terms: Terms,
) -> Result<Offer, Refusal> {
    let provider = candidate.entry.peer;
    let refuse = |reason: String| Refusal {
        index,
        provider,
        reason,
    };
    let proposal = plan::proposal(&candidate, session.peer, piece, piece_size, terms, rand::random());
    let signed = Signed::sign(&session.key, &proposal).map_err(|e| refuse(e.to_string()))?;
    let id = signed.id();
    let timeout = Duration::from_secs(session.config.request_timeout_secs.max(1));
    match tokio::time::timeout(timeout, session.dial_provider(&candidate.entry)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) | Err(_) => return Err(refuse("not reachable at its listed addresses".into())),
    }
    let answer = session
        .net
        .request(provider, Request::ProposeDeal(signed.clone()))
        .await
        .map_err(|e| refuse(e.to_string()))?;
    match answer {
        Response::DealAccepted(acceptance) => {
            let (_, accepted) = acceptance
                .open(Some(&provider))
                .map_err(|e| refuse(format!("acceptance: {e}")))?;
            if accepted.proposal != id {
                return Err(refuse("accepted a different proposal".into()));
            }
            Ok(Offer {
                index,
                candidate,
                proposal: signed,
                acceptance,
                piece,
            })
        }
        Response::DealRejected { reason } => Err(refuse(format!("refused: {reason}"))),
        Response::Error { message } => Err(refuse(message)),
        other => Err(refuse(format!("unexpected answer {}", variant(&other)))),
    }
}

fn variant(r: &Response) -> String {
    let s = format!("{r:?}");
    s.split(['(', ' ', '{']).next().unwrap_or("").to_string()
}

/// Streams the offered pieces from one encoding pass; returns the pieces
/// placed and the ones whose provider failed.
async fn store_round(
    session: &Session,
    job: &Job,
    encoder: &Arc<Encoder>,
    layout: &Layout,
    offers: Vec<Offer>,
    bar: &ProgressBar,
) -> Result<(Vec<Placed>, Vec<Refusal>)> {
    let piece_size = layout.piece_len();
    let stall = Duration::from_secs(session.config.transfer_timeout_secs.max(1));
    let mut lanes = Vec::with_capacity(offers.len());
    let mut uploads = Vec::with_capacity(offers.len());
    for offer in offers {
        let (lane, reader) = stream::lane(offer.index, bar.clone());
        lanes.push(lane);
        uploads.push(upload_and_publish(session, offer, reader, piece_size, stall));
    }
    let file =
        std::fs::File::open(&job.file).with_context(|| format!("cannot open {}", job.file.display()))?;
    let feeding = {
        let encoder = encoder.clone();
        tokio::task::spawn_blocking(move || stream::feed(&encoder, file, lanes))
    };
    let results = join_all(uploads).await;
    let fed = feeding
        .await
        .map_err(|e| anyhow!("erasure coding stopped: {e}"))??;
    if fed.as_ref().is_some_and(|l| l != layout) {
        bail!("{} changed while it was being stored", job.file.display());
    }
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(p) => ok.push(p),
            Err(e) => failed.push(e),
        }
    }
    Ok((ok, failed))
}

/// Uploads one piece, checks the receipt and publishes the deal.
async fn upload_and_publish(
    session: &Session,
    offer: Offer,
    reader: impl futures::AsyncBufRead + Unpin,
    piece_size: u64,
    stall: Duration,
) -> Result<Placed, Refusal> {
    let provider = offer.candidate.entry.peer;
    let index = offer.index;
    let refuse = |reason: String| Refusal {
        index,
        provider,
        reason,
    };
    let id = offer.proposal.id();
    let mut streams = session.net.streams();
    let result = crowd_protocol::transfer::upload(&mut streams, provider, id, reader, piece_size, stall)
        .await
        .map_err(|e| refuse(format!("upload: {e}")))?;
    let receipt = match result {
        UploadResult::Stored(receipt) => receipt,
        UploadResult::Rejected { reason } => return Err(refuse(format!("upload rejected: {reason}"))),
    };
    let (_, receipt) = receipt
        .open(Some(&provider))
        .map_err(|e| refuse(format!("receipt: {e}")))?;
    if receipt.proposal != id || receipt.piece != offer.piece || receipt.piece_size != piece_size {
        return Err(refuse("the receipt names another piece".into()));
    }
    let published = session
        .tracker(TrackerRequest::Publish {
            proposal: offer.proposal,
            acceptance: offer.acceptance,
        })
        .await
        .map_err(|e| refuse(format!("publishing the deal: {e:#}")))?;
    match published {
        TrackerResponse::Published { deal_id } => Ok(Placed {
            index,
            provider,
            piece: offer.piece,
            deal_id,
        }),
        other => Err(refuse(format!(
            "publishing the deal: unexpected answer {other:?}"
        ))),
    }
}

/// The manifest and its dag-cbor bytes.
fn manifest(
    root: &DagRoot,
    dag: &DagParams,
    layout: &Layout,
    placed: &[Placed],
) -> Result<(Manifest, Vec<u8>)> {
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        root: root.cid,
        size: root.size,
        chunking: Chunking {
            chunker: match dag.chunking.kind() {
                ChunkerKind::Fixed => "fixed",
                ChunkerKind::FastCdc => "fastcdc",
            }
            .into(),
            chunk_size: dag.chunking.chunk_size() as u64,
            max_links: dag.max_links as u64,
            hash: match dag.hash {
                HashAlg::Blake3 => "blake3",
                HashAlg::Sha2_256 => "sha2-256",
            }
            .into(),
        },
        layout: layout.clone(),
        pieces: placed
            .iter()
            .map(|p| ManifestPiece {
                index: p.index as u64,
                piece: p.piece.cid(),
                provider: p.provider.to_string(),
                deal_id: p.deal_id,
            })
            .collect(),
    };
    let bytes = manifest
        .encode()
        .map_err(|e| anyhow!("encoding the manifest: {e}"))?;
    // what every reader will check, checked here first
    Manifest::decode(&bytes).map_err(|e| anyhow!("the manifest does not check: {e}"))?;
    Ok((manifest, bytes))
}

/// Stores the manifest with every provider and registers it with the
/// tracker. Fails only if nobody kept it; other failures are warnings.
async fn distribute_manifest(
    session: &Session,
    manifest: &Manifest,
    bytes: &[u8],
    placed: &[Placed],
) -> Result<()> {
    let cid = crowd_protocol::manifest_cid(bytes).to_bytes();
    let with_providers = placed.iter().map(|p| {
        let cid = cid.clone();
        async move {
            let answer = session
                .net
                .request(p.provider, Request::StoreManifest(bytes.to_vec()))
                .await;
            match answer {
                Ok(Response::ManifestStored(c)) if c == cid => Ok(()),
                Ok(Response::ManifestStored(_)) => {
                    Err(format!("provider {} stored another manifest", p.provider))
                }
                Ok(Response::Error { message }) => Err(format!("provider {}: {message}", p.provider)),
                Ok(other) => Err(format!(
                    "provider {}: unexpected answer {}",
                    p.provider,
                    variant(&other)
                )),
                Err(e) => Err(format!("provider {}: {e}", p.provider)),
            }
        }
    });
    let with_tracker = async {
        match session
            .tracker(TrackerRequest::RegisterManifest {
                root: manifest.root.to_bytes(),
                manifest: bytes.to_vec(),
            })
            .await
        {
            Ok(TrackerResponse::ManifestStored(c)) if c == cid => Ok(()),
            Ok(other) => Err(format!("tracker: unexpected answer {other:?}")),
            Err(e) => Err(format!("{e:#}")),
        }
    };
    let (providers, tracker) = tokio::join!(join_all(with_providers), with_tracker);
    let kept = providers.iter().filter(|r| r.is_ok()).count() + usize::from(tracker.is_ok());
    let failures: Vec<String> = providers
        .into_iter()
        .chain(std::iter::once(tracker))
        .filter_map(Result::err)
        .collect();
    if kept == 0 {
        bail!(
            "nobody kept the manifest: {}",
            failures
                .first()
                .map(String::as_str)
                .unwrap_or("no provider and no tracker")
        );
    }
    for f in failures {
        eprintln!("crowd: warning: manifest not stored: {f}");
    }
    Ok(())
}

/// `1.5 MiB`-style sizes for messages.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{v:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn json_output_has_the_documented_shape() {
        let out = PutOutput {
            root: "bafyroot".into(),
            manifest: "bafymanifest".into(),
            size: 6,
            deals: vec![PutDeal {
                deal_id: 3,
                provider: "12D3KooWx".into(),
                piece: "bafkpiece".into(),
                piece_size: 2,
                index: 0,
            }],
        };
        let v: serde_json::Value = serde_json::to_value(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "root": "bafyroot", "manifest": "bafymanifest", "size": 6,
                "deals": [{"deal_id": 3, "provider": "12D3KooWx", "piece": "bafkpiece",
                           "piece_size": 2, "index": 0}]
            })
        );
    }

    #[test]
    fn bad_input_is_refused_before_any_network() {
        let dir = tempfile::tempdir().unwrap();
        let peer = PeerId::random();
        let addr = format!("/ip4/127.0.0.1/tcp/9/p2p/{peer}");
        let config: ClientConfig = toml::from_str(&format!(
            "tracker_address = {addr:?}\ntracker_peer_id = \"{peer}\"\n"
        ))
        .unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"hello").unwrap();
        let args = |file: &Path, k: Option<usize>, epochs: Option<u64>| PutArgs {
            file: file.to_path_buf(),
            data_shards: k,
            parity_shards: None,
            epochs,
            max_price: None,
            json: false,
        };
        let e = Job::new(args(&dir.path().join("missing"), None, None), &config).unwrap_err();
        assert!(format!("{e:#}").contains("cannot open"), "{e:#}");
        let e = Job::new(args(&file, Some(0), None), &config).unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
        let e = Job::new(args(&file, None, Some(0)), &config).unwrap_err();
        assert!(e.to_string().contains("epochs"), "{e}");
        let e = Job::new(args(dir.path(), None, None), &config).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
        let job = Job::new(args(&file, Some(3), None), &config).unwrap();
        assert_eq!((job.size, job.k, job.m, job.epochs), (5, 3, 2, config.epochs));
        assert_eq!(job.params().unwrap().segment_size() % 3, 0);
        assert!(job.params().unwrap().segment_size() <= SEGMENT);
    }

    #[test]
    fn manifest_lists_pieces_and_checks() {
        let data = vec![9u8; 10_000];
        let dag = DagParams::default();
        let root = crowd_chunker::build_from_slice(&data, &dag, &mut crowd_chunker::Discard).unwrap();
        let (layout, _) = Encoder::new(Params::new(2, 1, 4096).unwrap())
            .unwrap()
            .encode_bytes(&data)
            .unwrap();
        let placed: Vec<Placed> = (0..3)
            .map(|i| Placed {
                index: i,
                provider: PeerId::random(),
                piece: piece_id(&layout, i).unwrap(),
                deal_id: 40 + i as u64,
            })
            .collect();
        let (m, bytes) = manifest(&root, &dag, &layout, &placed).unwrap();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        assert_eq!(m.pieces.len(), 3);
        assert_eq!(m.chunking.chunker, "fixed");
        // an empty file: no pieces, still a valid manifest
        let empty_root = crowd_chunker::build_from_slice(&[], &dag, &mut crowd_chunker::Discard).unwrap();
        let (empty_layout, _) = Encoder::new(Params::new(2, 1, 4096).unwrap())
            .unwrap()
            .encode_bytes(&[])
            .unwrap();
        let (m, _) = manifest(&empty_root, &dag, &empty_layout, &[]).unwrap();
        assert!(m.pieces.is_empty());
        assert_eq!(human(1536), "1.5 KiB");
    }
}
