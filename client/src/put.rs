//! `crowd put FILE`: store a file with `k + m` providers.
//!
//! 1. Check the input, then ask the tracker for its clock, its providers and
//!    our balance: choose candidates ([`plan`]) and check the funds before
//!    anything is read or uploaded.
//! 2. Rounds, until every piece is placed: propose signed deals for the
//!    pieces without a provider to the best remaining candidates, in
//!    parallel (a refusal moves on to the next candidate); then one encoding
//!    pass streams every accepted piece to its provider ([`stream`]) and
//!    hashes every piece (the erasure layout). The first round's proposals
//!    name no piece ([`PieceId::UNNAMED`]): nothing is known of the pieces
//!    before that pass, and no pass runs beforehand just to learn their
//!    hashes. Each provider's receipt names the piece it received; once the
//!    pass is done, a receipt that names this pass's piece is published with
//!    its deal (only the client may publish a proposal that names no piece).
//!    A piece whose provider failed goes to the next round, with a fresh
//!    proposal (naming the piece now) to a new candidate. The put fails only
//!    when the candidates run out. The first pass also hands every byte of
//!    the file it reads to the chunker, for the file's root CID.
//! 3. The manifest is recorded locally, stored with every provider and
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
use crowd_chunker::{ChunkerKind, DagParams, HashAlg};
use crowd_erasure::{Encoder, Layout, Params};
use crowd_protocol::libp2p::PeerId;
use crowd_protocol::{
    Chunking, DealAcceptance, DealProposal, Encryption, Manifest, ManifestPiece, PieceId, PieceReceipt,
    Request, Response, Signed, TrackerRequest, TrackerResponse, UploadResult, MANIFEST_VERSION,
};
use futures::future::join_all;
use serde::Serialize;

use crate::config::ClientConfig;
use crate::crypt::FileKey;
use crate::error::Error;
use crate::keys::{self, EnvelopeContents};
use crate::progress::{Callback, Progress, Stage};
use crate::records::{Record, RecordDeal};
use crate::session::Session;
use plan::{Candidate, Terms};

/// Erasure segment: memory per segment in flight, whatever the file size.
const SEGMENT: u64 = 16 << 20;

/// How to store a file ([`crate::Client::put_path`]); `None` takes the
/// client config's default.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Data shards k: any k of the k+m pieces rebuild the file.
    pub data_shards: Option<usize>,
    /// Parity shards m: the file survives losing any m providers.
    pub parity_shards: Option<usize>,
    /// Deal length in epochs.
    pub epochs: Option<u64>,
    /// Highest price accepted, base units per GiB per epoch.
    pub max_price: Option<u64>,
    /// Store the plain UnixFS DAG (IPFS-identical, readable by anyone who
    /// knows the root) instead of encrypting first.
    pub public: bool,
    /// The name recorded for `ls` (default: the file name).
    pub name: Option<String>,
}

/// What `put` settled on before touching the network.
#[derive(Debug)]
struct Job {
    file: PathBuf,
    name: String,
    /// The file's own size.
    plain_size: u64,
    /// Bytes stored: the file's, or its ciphertext's.
    size: u64,
    k: usize,
    m: usize,
    epochs: u64,
    max_price: u128,
    /// `None`: public.
    key: Option<FileKey>,
    /// How the file's own DAG (its root CID) is built.
    dag: DagParams,
}

impl Job {
    fn new(file: &Path, opts: &PutOptions, config: &ClientConfig) -> Result<Self> {
        let k = opts.data_shards.unwrap_or(config.data_shards);
        let m = opts.parity_shards.unwrap_or(config.parity_shards);
        let input = |s: String| anyhow::Error::from(Error::Input(s));
        if k == 0 {
            return Err(input("--data-shards must be at least 1".into()));
        }
        if k + m > crowd_erasure::MAX_SHARDS {
            return Err(input(format!(
                "k + m = {} is above the {}-piece limit",
                k + m,
                crowd_erasure::MAX_SHARDS
            )));
        }
        let epochs = opts.epochs.unwrap_or(config.epochs);
        if epochs == 0 {
            return Err(input("--epochs must be at least 1".into()));
        }
        let plain_size = match crate::input::open(file).map_err(|e| input(format!("{e:#}")))? {
            crate::input::Input::Mapped(map) => map.len() as u64,
            crate::input::Input::Empty => 0,
            crate::input::Input::Stream(_) => {
                return Err(input(format!(
                    "{}: put needs a regular file (it is read more than once)",
                    file.display()
                )))
            }
        };
        let key = (!opts.public).then(|| FileKey::generate(&mut rand::rngs::OsRng));
        let size = if key.is_some() {
            crate::crypt::cipher_len(plain_size)
        } else {
            plain_size
        };
        let name = opts.name.clone().unwrap_or_else(|| {
            file.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        Ok(Self {
            file: file.to_path_buf(),
            name,
            plain_size,
            size,
            k,
            m,
            epochs,
            max_price: u128::from(opts.max_price.unwrap_or(config.max_price_per_gib_epoch)),
            key,
            dag: DagParams::default(),
        })
    }

    fn params(&self) -> Result<Params> {
        let k = self.k as u64;
        Params::new(self.k, self.m, SEGMENT - SEGMENT % k).map_err(|e| anyhow!("erasure parameters: {e}"))
    }

    /// What the encoder reads: the file, or its ciphertext. With `rooted`,
    /// the file's DAG is built from the very bytes read, and its root
    /// answered once the pass ends: the root and the pieces come from the
    /// same bytes, read once. A private file's leaves are hashed where its
    /// segments are sealed when they are the DAG's chunks (the default);
    /// otherwise every byte read is also handed to a task that builds the
    /// DAG.
    fn source(&self, rooted: bool) -> Result<(Box<dyn std::io::Read + Send>, Option<stream::Rooting>)> {
        use crate::crypt::EncryptReader;
        let file = std::fs::File::open(&self.file)
            .with_context(|| format!("cannot open {}", self.file.display()))?;
        Ok(match &self.key {
            None if rooted => {
                let (tee, rooting) = stream::rooted(file, self.dag);
                (Box::new(tee), Some(rooting))
            }
            None => (Box::new(file), None),
            Some(key) if !rooted => (
                Box::new(EncryptReader::new(file, key.clone(), self.plain_size)),
                None,
            ),
            Some(key)
                if crate::crypt::leaves_fit(&self.dag, &(0..self.plain_size), self.plain_size).is_ok() =>
            {
                let reader = EncryptReader::new(file, key.clone(), self.plain_size);
                let (reader, rooting) = stream::leaf_rooted(reader, self.dag)?;
                (Box::new(reader), Some(rooting))
            }
            Some(key) => {
                let (tee, rooting) = stream::rooted(file, self.dag);
                (
                    Box::new(EncryptReader::new(tee, key.clone(), self.plain_size)),
                    Some(rooting),
                )
            }
        })
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

/// What a put stored (and `crowd put --json` prints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PutOutput {
    /// The file's root CID (what `crowd cid FILE` prints).
    pub root: String,
    pub manifest: String,
    /// The file's size.
    pub size: u64,
    /// Stored unencrypted.
    pub public: bool,
    pub deals: Vec<PutDeal>,
}

/// Stores `file` from `home`.
pub fn put(home: &Path, file: &Path, opts: &PutOptions, progress: Option<&Callback>) -> Result<PutOutput> {
    let config = ClientConfig::load(home)?;
    let job = Job::new(file, opts, &config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(home, &job, progress))
}

async fn run(home: &Path, job: &Job, progress: Option<&Callback>) -> Result<PutOutput> {
    let params = job.params()?;
    let encoder = Arc::new(Encoder::new(params).map_err(|e| anyhow!("erasure parameters: {e}"))?);
    let dag = job.dag;
    let session = Session::connect(home).await?;
    let n = params.total_shards();
    let piece_size = params.geometry(job.size).piece_len();

    // Providers and funds first: fail before reading or uploading anything.
    let mut queue = VecDeque::new();
    let mut lead = 0;
    if job.size > 0 {
        let info = session.info().await?;
        let providers = session.providers().await?;
        // the client's collateral preference, raised to the network's minimum
        let collateral = u128::from(session.config.collateral_per_gib).max(info.min_collateral_per_gib);
        let candidates = plan::candidates(
            &providers,
            &session.peer,
            piece_size,
            job.max_price,
            collateral,
            info.provider_stake,
        );
        if candidates.len() < n {
            return Err(Error::NoProviders(format!(
                "only {} providers available, {n} needed ({}+{} pieces of {}, at most {} per GiB per epoch)",
                candidates.len(),
                job.k,
                job.m,
                human(piece_size),
                job.max_price
            ))
            .into());
        }
        let need = plan::total_cost(&candidates[..n], job.epochs);
        let account = session.account(session.peer).await?;
        if need > account.available {
            return Err(Error::InsufficientFunds {
                need,
                available: account.available,
            }
            .into());
        }
        lead = plan::start_lead(piece_size, n, &info);
        queue = candidates.into();
    }

    // One pass: the pieces are encoded, hashed and uploaded, and the file's
    // own root CID built from the same bytes.
    let (
        placed,
        Laid {
            layout,
            root: plain_root,
        },
    ) = if job.size == 0 {
        let (source, rooting) = job.source(true)?;
        let layout = encoder
            .encode_with(source, |_| Ok(()))
            .map_err(|e| anyhow!("erasure coding: {e}"))?;
        let root = match rooting {
            Some(r) => r.root().await?,
            None => bail!("the file's root was not built"),
        };
        (Vec::new(), Laid { layout, root })
    } else {
        let bar = Progress::start(progress, Stage::Uploading, piece_size * n as u64);
        let placed = place_all(&session, job, &encoder, queue, lead, &bar).await?;
        bar.finish_and_clear();
        placed
    };
    if plain_root.size != job.plain_size || layout.file_len() != job.size {
        bail!("{} changed while it was being read", job.file.display());
    }
    // the network root: the file's own root, or a private file's layout CID
    let root = match job.key {
        None => plain_root.cid,
        Some(_) => crowd_protocol::layout_cid(&layout),
    };

    let stored_at = crate::records::now_secs();
    let encryption = match &job.key {
        None => None,
        Some(key) => {
            let contents = EnvelopeContents {
                root: plain_root.cid.to_string(),
                size: job.plain_size,
                key: hex::encode(key.key),
                nonce: hex::encode(key.nonce),
                name: job.name.clone(),
                stored_at,
            };
            let envelope = keys::seal_envelope(&keys::envelope_key(&session.key)?, &root, &contents)?;
            Some(Encryption {
                scheme: crowd_protocol::ENCRYPTION_SCHEME.into(),
                segment_size: crowd_protocol::ENCRYPTION_SEGMENT,
                nonce: key.nonce.to_vec(),
                key_check: key.check_value().to_vec(),
                envelope,
            })
        }
    };
    let (manifest, bytes) = manifest(root, &dag, &layout, &placed, encryption)?;
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
        root: plain_root.cid.to_string(),
        manifest: manifest_cid.to_string(),
        size: job.plain_size,
        name: job.name.clone(),
        stored_at,
        data_shards: job.k as u64,
        parity_shards: job.m as u64,
        public: job.key.is_none(),
        network_root: root.to_string(),
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
        // the deals of later rounds start (and end) later
        end_epoch: placed.iter().map(|p| p.end_epoch).max(),
        state: None,
    };
    crate::records::save(home, &record, &bytes)?;
    distribute_manifest(&session, &manifest, &bytes, &placed, progress).await?;
    Ok(PutOutput {
        root: record.root,
        manifest: record.manifest,
        size: job.plain_size,
        public: record.public,
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
    /// The first epoch after the deal.
    end_epoch: u64,
}

/// A proposal a provider accepted.
#[derive(Debug)]
struct Offer {
    index: usize,
    candidate: Candidate,
    proposal: Signed<DealProposal>,
    /// What `proposal` says (signed by this client).
    terms: DealProposal,
    acceptance: Signed<DealAcceptance>,
}

impl Offer {
    /// The first epoch after the deal.
    fn end_epoch(&self) -> u64 {
        self.terms.start_epoch.saturating_add(self.terms.duration_epochs)
    }
}

/// What the first pass to encode the whole file found: its layout and its
/// own root.
#[derive(Debug)]
struct Laid {
    layout: Layout,
    root: crowd_chunker::DagRoot,
}

/// An offer whose piece the provider received and signed for.
#[derive(Debug)]
struct Received {
    offer: Offer,
    receipt: Signed<PieceReceipt>,
    /// The piece the receipt names.
    piece: PieceId,
}

/// Why a candidate did not take a piece.
#[derive(Debug)]
struct Refusal {
    index: usize,
    provider: PeerId,
    reason: String,
    /// The accepted offer whose upload was cut by the network (not refused
    /// by the provider): it is uploaded again to the same provider, which
    /// still holds its space, up to [`UPLOAD_TRIES`] times in all. (A busy
    /// node may drop an inbound stream it has no room for: see
    /// `crowd_protocol::transfer::STREAM_TRIES`; an upload cannot simply be
    /// reopened, its bytes come from the one encoding pass.)
    retry: Option<Box<Offer>>,
}

/// Uploads of one accepted offer, the first included, before its piece goes
/// to another provider.
const UPLOAD_TRIES: u32 = 3;
/// The pause before uploading again after a cut (doubled each time, at most 4 s).
const UPLOAD_RETRY_PAUSE: Duration = Duration::from_millis(500);

fn piece_id(layout: &Layout, index: usize) -> Result<PieceId> {
    let info = layout
        .pieces()
        .get(index)
        .ok_or_else(|| anyhow!("piece {index} is not in the layout"))?;
    Ok(PieceId(*info.hash.as_bytes()))
}

/// Places every piece (rounds of proposals and one encoding pass each);
/// returns the pieces placed, the file's layout and its root.
async fn place_all(
    session: &Session,
    job: &Job,
    encoder: &Arc<Encoder>,
    mut queue: VecDeque<Candidate>,
    lead: u64,
    bar: &Progress,
) -> Result<(Vec<Placed>, Laid)> {
    let params = encoder.params();
    let n = params.total_shards();
    let piece_size = params.geometry(job.size).piece_len();
    // known once a pass has encoded the whole file
    let mut laid: Option<Laid> = None;
    let mut pending: Vec<usize> = (0..n).collect();
    let mut placed: Vec<Placed> = Vec::with_capacity(n);
    let mut last_refusal: Option<Refusal> = None;
    let note = |r: Refusal, last: &mut Option<Refusal>, next: &str| {
        let reason: String = crate::error::strip(&r.reason).chars().take(200).collect();
        bar.notice(format!("piece {} with {}: {reason}; {next}", r.index, r.provider));
        *last = Some(Refusal { retry: None, ..r });
    };
    // accepted offers to upload again (cut by the network), and uploads so
    // far of each piece index to its current provider
    let mut again: Vec<Offer> = Vec::new();
    let mut uploads = vec![0u32; n];
    let mut pause = UPLOAD_RETRY_PAUSE;
    while !pending.is_empty() || !again.is_empty() {
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
                let piece = match &laid {
                    Some(l) => piece_id(&l.layout, index),
                    None => Ok(PieceId::UNNAMED),
                };
                let piece = piece.map_err(|e| Refusal {
                    index,
                    provider: candidate.entry.peer,
                    reason: format!("{e:#}"),
                    retry: None,
                });
                async move { propose(session, index, candidate, piece?, piece_size, terms).await }
            });
            for result in join_all(tries).await {
                match result {
                    Ok(offer) => {
                        uploads[offer.index] = 0;
                        offers.push(offer)
                    }
                    Err(refusal) => {
                        want.push(refusal.index);
                        note(refusal, &mut last_refusal, "trying another provider");
                    }
                }
            }
        }
        if !again.is_empty() {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(4));
            offers.append(&mut again);
        }
        for offer in &offers {
            uploads[offer.index] += 1;
        }
        // one encoding pass streams every accepted piece
        let (ok, failed) = store_round(session, job, encoder, &mut laid, piece_size, offers, bar).await?;
        placed.extend(ok);
        let mut repeat = 0;
        for mut refusal in failed {
            match refusal.retry.take() {
                Some(offer) if uploads[refusal.index] < UPLOAD_TRIES => {
                    note(refusal, &mut last_refusal, "uploading it again");
                    again.push(*offer);
                    repeat += 1;
                }
                _ => {
                    pending.push(refusal.index);
                    note(refusal, &mut last_refusal, "trying another provider");
                }
            }
        }
        bar.inc_length(piece_size * (pending.len() + repeat) as u64);
    }
    placed.sort_by_key(|p| p.index);
    let laid = laid.ok_or_else(|| anyhow!("every piece placed, yet no pass encoded the whole file"))?;
    Ok((placed, laid))
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
        retry: None,
    };
    let proposal = plan::proposal(&candidate, session.peer, piece, piece_size, terms, rand::random());
    let network = session.network().await.map_err(|e| refuse(format!("{e:#}")))?;
    let signed = Signed::sign(&session.key, &network, &proposal).map_err(|e| refuse(e.to_string()))?;
    let id = signed.id();
    let timeout = Duration::from_secs(session.config.request_timeout_secs.max(1));
    match tokio::time::timeout(timeout, session.dial_provider(&candidate.entry)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) | Err(_) => return Err(refuse("not reachable at its listed addresses".into())),
    }
    // paid admission: the tracker locks this deal's escrow first, and the
    // provider accepts only a proposal the tracker admitted
    let admission = match session
        .tracker(TrackerRequest::Admit(signed.clone()))
        .await
        .map_err(|e| refuse(format!("admission: {e:#}")))?
    {
        TrackerResponse::Admitted(a) => a,
        other => {
            return Err(refuse(format!(
                "admission: unexpected answer {}",
                tracker_variant(&other)
            )))
        }
    };
    let answer = session
        .net
        .request(
            provider,
            Request::ProposeDeal {
                proposal: signed.clone(),
                admission,
            },
        )
        .await
        .map_err(|e| refuse(e.to_string()))?;
    match answer {
        Response::DealAccepted(acceptance) => {
            let (_, accepted) = acceptance
                .open(&network, Some(&provider))
                .map_err(|e| refuse(format!("acceptance: {e}")))?;
            if accepted.proposal != id {
                return Err(refuse("accepted a different proposal".into()));
            }
            Ok(Offer {
                index,
                candidate,
                proposal: signed,
                acceptance,
                terms: proposal,
            })
        }
        Response::DealRejected { reason } => Err(refuse(format!("refused: {reason}"))),
        Response::Error { message } => Err(refuse(message)),
        other => Err(refuse(format!("unexpected answer {}", variant(&other)))),
    }
}

fn variant(r: &Response) -> String {
    first_word(format!("{r:?}"))
}

fn tracker_variant(r: &TrackerResponse) -> String {
    first_word(format!("{r:?}"))
}

fn first_word(s: String) -> String {
    s.split(['(', ' ', '{']).next().unwrap_or("").to_string()
}

/// Streams the offered pieces from one encoding pass, which also lays the
/// file out and builds its root (`laid`: set by the first pass to encode
/// the whole file; a later pass must give the same layout); then publishes
/// every deal whose receipt names its piece of that layout. Returns the
/// pieces placed and the ones whose provider failed.
async fn store_round(
    session: &Session,
    job: &Job,
    encoder: &Arc<Encoder>,
    laid: &mut Option<Laid>,
    piece_size: u64,
    offers: Vec<Offer>,
    bar: &Progress,
) -> Result<(Vec<Placed>, Vec<Refusal>)> {
    let stall = Duration::from_secs(session.config.transfer_timeout_secs.max(1));
    let mut lanes = Vec::with_capacity(offers.len());
    let mut uploads = Vec::with_capacity(offers.len());
    for offer in offers {
        let (lane, reader) = stream::lane(offer.index, bar.clone());
        lanes.push(lane);
        uploads.push(upload(session, offer, reader, piece_size, stall));
    }
    let (file, rooting) = job.source(laid.is_none())?;
    let feeding = {
        let encoder = encoder.clone();
        tokio::task::spawn_blocking(move || stream::feed(&encoder, file, lanes))
    };
    let results = join_all(uploads).await;
    // the reader is dropped when the pass ends: then the root is done too
    let fed = feeding.await.map_err(|e| anyhow!("erasure coding stopped: {e}"));
    let root = match rooting {
        Some(r) => Some(r.root().await),
        None => None,
    };
    match (fed??, laid.as_ref()) {
        (Some(fed), Some(known)) if fed != known.layout => {
            bail!("{} changed while it was being stored", job.file.display())
        }
        (Some(layout), None) => {
            let root = root.ok_or_else(|| anyhow!("the file's root was not built"))??;
            *laid = Some(Laid { layout, root });
        }
        _ => {}
    }
    let mut failed = Vec::new();
    let mut publish = Vec::new();
    for r in results {
        match r {
            Ok(received) => match laid.as_ref().map(|l| piece_id(&l.layout, received.offer.index)) {
                Some(Ok(piece)) if piece == received.piece => publish.push(publish_deal(session, received)),
                Some(Ok(_)) => {
                    failed.push(received.refuse("the receipt names a piece this file does not have"))
                }
                Some(Err(e)) => failed.push(received.refuse(format!("{e:#}"))),
                // every lane stopped before the end: no receipt can be for
                // the whole piece, and none is published
                None => failed.push(received.refuse("the encoding stopped before the piece was sent")),
            },
            Err(e) => failed.push(e),
        }
    }
    let mut ok = Vec::new();
    for r in join_all(publish).await {
        match r {
            Ok(p) => ok.push(p),
            Err(e) => failed.push(e),
        }
    }
    Ok((ok, failed))
}

impl Received {
    fn refuse(self, reason: impl Into<String>) -> Refusal {
        Refusal {
            index: self.offer.index,
            provider: self.offer.candidate.entry.peer,
            reason: reason.into(),
            retry: None,
        }
    }
}

/// Uploads one piece and checks the provider's receipt: for this proposal
/// and size, naming the piece the proposal names, if it names one.
async fn upload(
    session: &Session,
    offer: Offer,
    reader: impl futures::AsyncBufRead + Unpin,
    piece_size: u64,
    stall: Duration,
) -> Result<Received, Refusal> {
    let provider = offer.candidate.entry.peer;
    let index = offer.index;
    let refuse = |reason: String| Refusal {
        index,
        provider,
        reason,
        retry: None,
    };
    let id = offer.proposal.id();
    let mut streams = session.net.streams();
    let result =
        match crowd_protocol::transfer::upload(&mut streams, provider, id, reader, piece_size, stall).await {
            Ok(r) => r,
            // the network cut it: the provider still holds the offer's space
            Err(e) => {
                return Err(Refusal {
                    retry: Some(Box::new(offer)),
                    ..refuse(format!("upload: {e}"))
                })
            }
        };
    let receipt = match result {
        UploadResult::Stored(receipt) => receipt,
        UploadResult::Rejected { reason } => return Err(refuse(format!("upload rejected: {reason}"))),
    };
    let network = session.network().await.map_err(|e| refuse(format!("{e:#}")))?;
    let (_, opened) = receipt
        .open(&network, Some(&provider))
        .map_err(|e| refuse(format!("receipt: {e}")))?;
    let named = offer
        .terms
        .named_by(&id, &opened)
        .map_err(|e| refuse(format!("receipt: {e}")))?;
    Ok(Received {
        offer,
        receipt,
        piece: named.piece,
    })
}

/// Publishes the deal of a piece received (with its receipt, which names
/// the piece of a proposal that names none).
async fn publish_deal(session: &Session, received: Received) -> Result<Placed, Refusal> {
    let Received {
        offer,
        receipt,
        piece,
    } = received;
    let (index, provider, end_epoch) = (offer.index, offer.candidate.entry.peer, offer.end_epoch());
    let refuse = |reason: String| Refusal {
        index,
        provider,
        reason,
        retry: None,
    };
    let published = session
        .tracker(TrackerRequest::Publish {
            proposal: offer.proposal,
            acceptance: offer.acceptance,
            receipt: Some(receipt),
        })
        .await
        .map_err(|e| refuse(format!("publishing the deal: {e:#}")))?;
    match published {
        TrackerResponse::Published { deal_id } => Ok(Placed {
            index,
            provider,
            piece,
            deal_id,
            end_epoch,
        }),
        other => Err(refuse(format!(
            "publishing the deal: unexpected answer {other:?}"
        ))),
    }
}

/// The manifest and its dag-cbor bytes.
fn manifest(
    root: crowd_chunker::Cid,
    dag: &DagParams,
    layout: &Layout,
    placed: &[Placed],
    encryption: Option<Encryption>,
) -> Result<(Manifest, Vec<u8>)> {
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        root,
        size: layout.file_len(),
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
        encryption,
    };
    let bytes = manifest
        .encode()
        .map_err(|e| anyhow!("encoding the manifest: {e}"))?;
    // what every reader will check, checked here first
    Manifest::decode(&bytes).map_err(|e| anyhow!("the manifest does not check: {e}"))?;
    Ok((manifest, bytes))
}

/// Stores the manifest with every provider and registers it with the
/// tracker, together with the file's deals by piece index (signed
/// [`FileRegistration`](crowd_protocol::FileRegistration); none for an
/// empty file), which is what lets the tracker repair, renew and remove the
/// file. Fails only if nobody kept the manifest; other failures are
/// warnings.
async fn distribute_manifest(
    session: &Session,
    manifest: &Manifest,
    bytes: &[u8],
    placed: &[Placed],
    progress: Option<&Callback>,
) -> Result<()> {
    let cid = crowd_protocol::manifest_cid(bytes).to_bytes();
    let network = session.network().await?;
    let file = crate::files::registration(manifest, bytes)?
        .map(|r| Signed::sign(&session.key, &network, &r))
        .transpose()
        .map_err(|e| anyhow!("signing the file registration: {e}"))?;
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
                file,
            })
            .await
        {
            Ok(TrackerResponse::ManifestStored(c)) if c == cid => Ok(()),
            Ok(other) => Err(format!("tracker: unexpected answer {other:?}")),
            // without the registration the tracker neither repairs the file
            // nor renews or removes it: say so
            Err(e) => Err(format!(
                "{e:#} (the file is stored, but not registered: no repair, renew or rm)"
            )),
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
        if let Some(cb) = progress {
            cb(&crate::progress::Event::Notice(format!(
                "warning: manifest not stored: {}",
                crate::error::strip(&f)
            )));
        }
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
            public: true,
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
                "root": "bafyroot", "manifest": "bafymanifest", "size": 6, "public": true,
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
        let args = |file: &Path, k: Option<usize>, epochs: Option<u64>| {
            let opts = PutOptions {
                data_shards: k,
                epochs,
                ..PutOptions::default()
            };
            (file.to_path_buf(), opts)
        };
        let e = Job::new(
            &args(&dir.path().join("missing"), None, None).0,
            &args(&dir.path().join("missing"), None, None).1,
            &config,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("cannot open"), "{e:#}");
        let e = Job::new(
            &args(&file, Some(0), None).0,
            &args(&file, Some(0), None).1,
            &config,
        )
        .unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
        let e = Job::new(
            &args(&file, None, Some(0)).0,
            &args(&file, None, Some(0)).1,
            &config,
        )
        .unwrap_err();
        assert!(e.to_string().contains("epochs"), "{e}");
        let e = Job::new(
            &args(dir.path(), None, None).0,
            &args(dir.path(), None, None).1,
            &config,
        )
        .unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
        let job = Job::new(
            &args(&file, Some(3), None).0,
            &args(&file, Some(3), None).1,
            &config,
        )
        .unwrap();
        // private by default: the stored bytes are the ciphertext's
        assert_eq!(
            (job.plain_size, job.k, job.m, job.epochs),
            (5, 3, 2, config.epochs)
        );
        assert_eq!(job.size, crate::crypt::cipher_len(5));
        assert!(job.key.is_some());
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
                end_epoch: 90,
            })
            .collect();
        let (m, bytes) = manifest(root.cid, &dag, &layout, &placed, None).unwrap();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        assert_eq!(m.pieces.len(), 3);
        assert_eq!(m.chunking.chunker, "fixed");
        // what put registers with the tracker: the deals by piece index
        let r = crate::files::registration(&m, &bytes).unwrap().unwrap();
        assert_eq!(r.deals, vec![40, 41, 42]);
        assert_eq!(r.data_pieces, 2);
        // an empty file: no pieces, still a valid manifest
        let empty_root = crowd_chunker::build_from_slice(&[], &dag, &mut crowd_chunker::Discard).unwrap();
        let (empty_layout, _) = Encoder::new(Params::new(2, 1, 4096).unwrap())
            .unwrap()
            .encode_bytes(&[])
            .unwrap();
        let (m, bytes) = manifest(empty_root.cid, &dag, &empty_layout, &[], None).unwrap();
        assert!(m.pieces.is_empty());
        assert_eq!(crate::files::registration(&m, &bytes).unwrap(), None);
        assert_eq!(human(1536), "1.5 KiB");
    }
}
