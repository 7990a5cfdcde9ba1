//! `crowd get` and `crowd export`: retrieve a file by root CID.
//!
//! 1. Find the manifest: the tracker first, else the DHT (providers announce
//!    the root CID); whichever answers, its root must be the CID asked for.
//! 2. Fetch pieces in parallel ([`engine`]): `k + 1` at first, data pieces
//!    before parity (then decoding is a copy); a piece whose provider is
//!    gone, stalls, lies or falls far behind is replaced by another, and once
//!    `k` are complete the rest are cancelled. Every 16 KiB group is checked
//!    against the piece hash (BLAKE3 Merkle path) before it is written.
//! 3. Pieces stream into `.<OUT>.crowd-get/` next to the output, so an
//!    interrupted get resumes: verified bytes are kept (cut back to a group
//!    boundary) and only the rest is fetched. A resumed whole piece is
//!    re-hashed once complete.
//! 4. Decode into a temporary file next to OUT, rebuild the file's DAG with
//!    the manifest's chunking parameters and compare it with the root CID,
//!    then rename into place and remove the resume directory.
//!
//! `--range START-END` fetches only the piece ranges of the segments
//! covering it and decodes just those bytes: they are verified against the
//! piece hashes in transit, but not against the root CID (that needs the
//! whole file).
//!
//! Memory is bounded: a 1 MiB write buffer per running fetch, the decoder's
//! shard windows (at most two segments) and 32 MiB of chunks when hashing.

mod engine;
mod pipeline;
mod plan;
mod store;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use crowd_chunker::{
    build_from_reader, decode_file_node, verify_block, write_car, BlockSink, CarWriter, ChunkParams,
    ChunkerKind, Cid, DagParams, DagRoot, Discard, FileNode, HashAlg, InteriorBlocks,
};
use crowd_erasure::{Decoder, Verification};
use crowd_protocol::libp2p::{Multiaddr, PeerId};
use crowd_protocol::{Manifest, Request, Response, TrackerRequest, TrackerResponse};
use indicatif::ProgressBar;

use crate::session::Session;
pub use engine::{fetch_pieces, Failure, FetchJob};
pub use plan::PieceRanges;
use store::ResumeDir;

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The file's root CID (as `crowd put` printed it).
    pub cid: String,
    /// Where to write the file (a temporary file next to it, then renamed).
    /// Partial pieces are kept in `.OUT.crowd-get/` so an interrupted get
    /// resumes.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Only bytes START..END (end exclusive). A range is verified against
    /// the piece hashes as it streams, but not against the root CID.
    #[arg(long, value_name = "START-END", value_parser = plan::parse_range)]
    pub range: Option<Range<u64>>,
    /// Print `{"root","size","out","pieces_used","providers_failed"}` and no
    /// progress bar.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The file's root CID.
    pub cid: String,
    /// Where to write the CAR v1 (a temporary file next to it, then renamed).
    #[arg(short, long, value_name = "OUT.car")]
    pub output: PathBuf,
    /// Print `{"root","size","out","pieces_used","providers_failed"}` and no
    /// progress bar.
    #[arg(long)]
    pub json: bool,
}

pub fn get(home: &Path, args: GetArgs) -> Result<()> {
    let (root, rt, found) = start(home, &args.cid, &args.output)?;
    let m = &found.manifest;
    let range = args.range.clone().unwrap_or(0..m.size);
    if range.end > m.size {
        bail!(
            "range {}-{} is beyond the end of the file ({} bytes)",
            range.start,
            range.end,
            m.size
        );
    }
    let params = dag_params(m)?;
    let whole = range == (0..m.size);
    let mut report = Report::default();
    if range.is_empty() {
        // nothing to fetch; an empty file is still checked against its root
        if m.size == 0 {
            check_root(&mut std::io::empty(), &params, &root)?;
        }
        crate::input::write_atomically(&args.output, |_| Ok(()))?;
    } else {
        let target = format!("get {root} {}-{}\n", range.start, range.end);
        let dir = ResumeDir::open(&args.output, &target)?;
        let plan = PieceRanges::for_range(&m.layout.geometry(), &range);
        let bar = progress_bar(args.json);
        let mut cleanup = None;
        let written = crate::input::write_atomically(&args.output, |f| {
            let mut w = BufWriter::with_capacity(1 << 20, pipeline::Writeback::new(f));
            let job = fetch_job(&found, &dir, &plan, whole, &bar);
            let fetched = if whole {
                pipeline::with_root_check(&mut w, &params, &root, |out| {
                    pipeline::retrieve(rt.handle(), &found.session.net, job, &range, out)
                })
            } else {
                pipeline::retrieve(rt.handle(), &found.session.net, job, &range, &mut w)
            };
            let fetched = match fetched {
                Err(e) if e.downcast_ref::<WrongRoot>().is_some() => {
                    // verified pieces that do not make the root: start afresh next time
                    let _ = std::fs::remove_dir_all(dir.path());
                    return Err(e);
                }
                other => other?,
            };
            w.flush().context("writing output")?;
            // every byte is written and checked: the pieces go while the
            // output is synced and renamed
            let path = dir.path().to_path_buf();
            cleanup = Some(std::thread::spawn(move || std::fs::remove_dir_all(path)));
            Ok(fetched)
        });
        bar.finish_and_clear();
        let removed = cleanup.map(std::thread::JoinHandle::join);
        let fetched = written?;
        report = Report {
            pieces_used: fetched.complete,
            failures: fetched.failures,
        };
        match removed {
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => {
                return Err(e).with_context(|| format!("cannot remove {}", dir.path().display()))
            }
            _ => dir.remove()?,
        }
    }
    if args.json {
        println!(
            "{}",
            report.json(&root, m.size, &args.output, args.range.as_ref())
        );
    }
    Ok(())
}

pub fn export(home: &Path, args: ExportArgs) -> Result<()> {
    let (root, rt, found) = start(home, &args.cid, &args.output)?;
    let m = &found.manifest;
    let params = dag_params(m)?;
    let mut report = Report::default();
    if m.size == 0 {
        let written = crate::input::write_atomically(&args.output, |f| {
            let mut w = BufWriter::new(&mut *f);
            let dag = write_car(&[], &params, &mut w)?;
            w.flush().context("writing CAR")?;
            Ok(dag.cid)
        })?;
        if written != root {
            bail!("the empty file's root is {written}, not {root}: the manifest is wrong");
        }
    } else {
        let target = format!("export {root}\n");
        let dir = ResumeDir::open(&args.output, &target)?;
        let plan = PieceRanges::for_range(&m.layout.geometry(), &(0..m.size));
        let bar = progress_bar(args.json);
        report = rt.block_on(fetch(&found, &dir, &plan, true, &bar))?;
        bar.finish_and_clear();
        // the file, in the resume directory; then its DAG as a CAR
        let file_path = dir.path().join("file");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&file_path)
            .with_context(|| format!("cannot create {}", file_path.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, &mut file);
        decode_into(m, &dir, &plan, &report.pieces_used, &(0..m.size), &mut w)?;
        w.flush().context("writing the retrieved file")?;
        drop(w);
        file.rewind()?;
        let mut interior = InteriorBlocks::default();
        let dag = build_from_reader(BufReader::with_capacity(1 << 20, &file), &params, &mut interior)?;
        if dag.cid != root {
            // verified pieces that do not make the root: a wrong manifest
            let _ = std::fs::remove_dir_all(dir.path());
            bail!(
                "the retrieved file's root is {}, not {root}: the manifest is wrong",
                dag.cid
            );
        }
        write_car_from(&file, &interior, &dag, &args.output)?;
        drop(file);
        dir.remove()?;
    }
    if args.json {
        println!("{}", report.json(&root, m.size, &args.output, None));
    }
    Ok(())
}

/// Writes the DAG `dag` of `file` as a CAR v1 to `out` (atomically): interior
/// nodes from `interior`, leaves read back from the file and checked against
/// their CIDs. Memory: the interior nodes and one leaf.
fn write_car_from(file: &File, interior: &InteriorBlocks, dag: &DagRoot, out: &Path) -> Result<()> {
    crate::input::write_atomically(out, |f| {
        let mut car = CarWriter::new(BufWriter::with_capacity(1 << 20, &mut *f), &dag.cid)?;
        write_subtree(&mut car, interior, file, &dag.cid, 0, dag.size, 0)?;
        car.finish()?.flush().context("writing CAR")?;
        Ok(())
    })
}

/// Writes the blocks under `cid` in pre-order (as [`write_car`] does),
/// reading leaves from `file` and checking each against its CID.
fn write_subtree<W: Write>(
    car: &mut CarWriter<W>,
    interior: &InteriorBlocks,
    file: &File,
    cid: &Cid,
    offset: u64,
    size: u64,
    depth: usize,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    if depth > 64 {
        bail!("the file's DAG is deeper than 64 levels");
    }
    if let Some(bytes) = interior.0.get(cid) {
        car.put(cid, bytes)?;
        if let FileNode::Branch { children, .. } = decode_file_node(cid, bytes)? {
            let mut at = offset;
            for (child, len) in children {
                write_subtree(car, interior, file, &child, at, len, depth + 1)?;
                at += len;
            }
        }
        return Ok(());
    }
    let len = usize::try_from(size).map_err(|_| anyhow!("a {size}-byte leaf"))?;
    let mut leaf = vec![0u8; len];
    file.read_exact_at(&mut leaf, offset)
        .context("reading the retrieved file")?;
    verify_block(cid, &leaf, offset).context("the retrieved file changed while writing the CAR")?;
    car.put(cid, &leaf)?;
    Ok(())
}

/// What `--json` reports.
#[derive(Debug, Default)]
struct Report {
    pieces_used: Vec<usize>,
    failures: Vec<Failure>,
}

impl Report {
    fn json(&self, root: &Cid, size: u64, out: &Path, range: Option<&Range<u64>>) -> serde_json::Value {
        let mut failed: Vec<String> = self.failures.iter().map(|f| f.provider.to_string()).collect();
        failed.sort();
        failed.dedup();
        let mut v = serde_json::json!({
            "root": root.to_string(),
            "size": size,
            "out": out.display().to_string(),
            "pieces_used": self.pieces_used,
            "providers_failed": failed,
        });
        if let Some(r) = range {
            v["range"] = serde_json::json!([r.start, r.end]);
        }
        v
    }
}

/// Checks the CID and the output (before the network), then finds the
/// manifest and its providers.
fn start(home: &Path, cid: &str, out: &Path) -> Result<(Cid, tokio::runtime::Runtime, Found)> {
    let root = parse_cid(cid)?;
    check_output(out)?;
    let rt = runtime()?;
    let found = rt.block_on(find(home, &root))?;
    Ok((root, rt, found))
}

fn parse_cid(s: &str) -> Result<Cid> {
    s.trim()
        .parse::<Cid>()
        .map_err(|e| anyhow!("'{s}' is not a CID: {e}"))
}

fn check_output(out: &Path) -> Result<()> {
    if out.is_dir() {
        bail!("{} is a directory", out.display());
    }
    if out.file_name().is_none() {
        bail!("{} is not a file name", out.display());
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")
}

/// Bytes fetched; the fetch sets the length (`k` pieces' worth).
fn progress_bar(json: bool) -> ProgressBar {
    crate::progress::bytes(0, "fetching", json)
}

/// The manifest and where its providers are.
#[derive(Debug)]
struct Found {
    session: Session,
    manifest: Manifest,
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
}

async fn find(home: &Path, root: &Cid) -> Result<Found> {
    let session = Session::connect(home).await?;
    let addrs: HashMap<PeerId, Vec<Multiaddr>> = session
        .providers()
        .await?
        .into_iter()
        .map(|p| (p.peer, p.addrs.iter().filter_map(|a| a.parse().ok()).collect()))
        .collect();
    let manifest = find_manifest(&session, &addrs, root).await?;
    Ok(Found {
        session,
        manifest,
        addrs,
    })
}

/// Most DHT providers asked for a manifest.
const MAX_DHT_PEERS: usize = 8;
/// How long a DHT provider may take to answer a dial.
const DHT_DIAL: Duration = Duration::from_secs(5);

/// The manifest for `root`: from the tracker, else from a provider the DHT
/// names. Untrusted either way: decoded with its checks, and its root must
/// be the one asked for.
async fn find_manifest(s: &Session, addrs: &HashMap<PeerId, Vec<Multiaddr>>, root: &Cid) -> Result<Manifest> {
    let key = root.to_bytes();
    let mut problems: Vec<String> = Vec::new();
    match s.tracker(TrackerRequest::Manifest { root: key.clone() }).await {
        Ok(TrackerResponse::Manifest(Some(blob))) => match check_manifest(&blob.0, root) {
            Ok(m) => return Ok(m),
            Err(e) => problems.push(format!("tracker: {e:#}")),
        },
        Ok(TrackerResponse::Manifest(None)) => {}
        Ok(other) => problems.push(format!("tracker: unexpected answer {other:?}")),
        Err(e) => problems.push(format!("{e:#}")),
    }
    let wait = Duration::from_secs(s.config.request_timeout_secs.max(1));
    match manifest_from_dht(&s.net, addrs, root, wait, &mut problems).await {
        Some(m) => Ok(m),
        None => match problems.first() {
            None => bail!("no manifest found for {root} (unknown CID)"),
            Some(p) => bail!("no manifest found for {root}: {}", engine::one_line(p)),
        },
    }
}

/// The manifest for `root` from a provider the DHT names (waiting up to
/// `wait` for the lookup); what went wrong with each is added to `problems`.
async fn manifest_from_dht(
    net: &crowd_protocol::Network,
    addrs: &HashMap<PeerId, Vec<Multiaddr>>,
    root: &Cid,
    wait: Duration,
    problems: &mut Vec<String>,
) -> Option<Manifest> {
    let key = root.to_bytes();
    let peers = tokio::time::timeout(wait, net.find_providers(key.clone()))
        .await
        .unwrap_or(Ok(Vec::new()))
        .unwrap_or_default();
    for peer in peers
        .into_iter()
        .filter(|p| *p != net.peer_id())
        .take(MAX_DHT_PEERS)
    {
        let known = addrs.get(&peer).cloned().unwrap_or_default();
        match tokio::time::timeout(DHT_DIAL, net.dial(peer, known)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                problems.push(format!("{peer}: {e}"));
                continue;
            }
            Err(_) => {
                problems.push(format!("{peer}: no answer to a dial in {DHT_DIAL:?}"));
                continue;
            }
        }
        match net.request(peer, Request::GetManifest(key.clone())).await {
            Ok(Response::Manifest(Some(blob))) => match check_manifest(&blob.0, root) {
                Ok(m) => return Some(m),
                Err(e) => problems.push(format!("{peer}: {e:#}")),
            },
            Ok(_) => {}
            Err(e) => problems.push(format!("{peer}: {e}")),
        }
    }
    None
}

fn check_manifest(bytes: &[u8], root: &Cid) -> Result<Manifest> {
    let m = Manifest::decode(bytes)?;
    if m.root != *root {
        bail!("it is the manifest of {}, not {root}", m.root);
    }
    Ok(m)
}

/// The DAG parameters a manifest records.
fn dag_params(m: &Manifest) -> Result<DagParams> {
    let c = &m.chunking;
    let bad = |e: String| anyhow!("the manifest's chunking parameters are invalid: {e}");
    let kind: ChunkerKind = c.chunker.parse().map_err(bad)?;
    let hash: HashAlg = c.hash.parse().map_err(bad)?;
    let size = usize::try_from(c.chunk_size).map_err(|e| bad(e.to_string()))?;
    let links = usize::try_from(c.max_links).map_err(|e| bad(e.to_string()))?;
    let chunking = ChunkParams::new(kind, size).map_err(|e| bad(e.to_string()))?;
    DagParams::new(chunking, links, hash).map_err(|e| bad(e.to_string()))
}

fn fetch_job<'a>(
    found: &'a Found,
    dir: &'a ResumeDir,
    plan: &'a PieceRanges,
    whole: bool,
    bar: &'a ProgressBar,
) -> FetchJob<'a> {
    FetchJob {
        manifest: &found.manifest,
        plan,
        dir,
        addrs: &found.addrs,
        stall: Duration::from_secs(found.session.config.transfer_timeout_secs.max(1)),
        whole,
        progress: bar,
        landed: None,
    }
}

async fn fetch(
    found: &Found,
    dir: &ResumeDir,
    plan: &PieceRanges,
    whole: bool,
    bar: &ProgressBar,
) -> Result<Report> {
    let fetched = fetch_pieces(&found.session.net, &fetch_job(found, dir, plan, whole, bar)).await?;
    Ok(Report {
        pieces_used: fetched.complete,
        failures: fetched.failures,
    })
}

/// Decodes `range` of the file from the complete pieces in `dir`.
pub fn decode_into(
    m: &Manifest,
    dir: &ResumeDir,
    plan: &PieceRanges,
    complete: &[usize],
    range: &Range<u64>,
    out: impl Write,
) -> Result<u64> {
    let layout = &m.layout;
    let mut sources: Vec<Option<store::PlannedPiece<'_>>> =
        (0..layout.params().total_shards()).map(|_| None).collect();
    for &i in complete {
        if let Some(slot) = sources.get_mut(i) {
            *slot = Some(dir.source(i, plan, layout.piece_len())?);
        }
    }
    // every byte was verified against its piece hash in transit
    let decoder = Decoder::new(layout)?.with_verification(Verification::Trusted);
    decoder
        .decode_range(&sources, range.clone(), out)
        .context("decoding the file")
}

/// Rebuilds the DAG of `data` and compares its root with `root`.
fn check_root(data: &mut dyn Read, params: &DagParams, root: &Cid) -> Result<()> {
    let mut sink: Box<dyn BlockSink> = Box::new(Discard);
    let dag = build_from_reader(BufReader::with_capacity(1 << 20, data), params, &mut *sink)?;
    if dag.cid != *root {
        return Err(WrongRoot {
            got: dag.cid,
            want: *root,
        }
        .into());
    }
    Ok(())
}

/// Verified pieces that do not make the root: the manifest is wrong.
#[derive(Debug)]
struct WrongRoot {
    got: Cid,
    want: Cid,
}

impl std::fmt::Display for WrongRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the retrieved file's root is {}, not {}: the manifest is wrong",
            self.got, self.want
        )
    }
}

impl std::error::Error for WrongRoot {}
