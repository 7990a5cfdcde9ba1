//! `crowd get` and `crowd export`: retrieve a file by root CID.
//!
//! 1. Find the manifest: the tracker first, else the DHT (providers announce
//!    the root CID); whichever answers, its root must be the CID asked for.
//!    Then follow placement: the tracker's file record of that manifest
//!    (`Files(Root)`, matched by manifest digest: the owner's own for a
//!    private file, anyone's — this client's first — otherwise) names the
//!    current provider of every piece index; each slot in a live state whose
//!    piece is the layout's replaces the manifest's provider (a repaired
//!    piece is fetched from its new provider). No answer or no record: the
//!    manifest's providers, as stored.
//! 2. Fetch pieces in parallel ([`engine`]): `k + 1` at first, data pieces
//!    before parity (then decoding is a copy); a piece whose provider is
//!    gone, stalls, lies or falls far behind is replaced by another, and once
//!    `k` are complete the rest are cancelled. Every 16 KiB group is checked
//!    against the piece hash (BLAKE3 Merkle path) before it is written.
//! 3. Pieces stream into `.<OUT>.crowd-get/` next to the output, so an
//!    interrupted get resumes: verified bytes are kept (cut back to a group
//!    boundary) and only the rest is fetched. A resumed whole piece is
//!    re-hashed once complete.
//! 4. Decode into `output` in that directory, rebuild the file's DAG with
//!    the manifest's chunking parameters and compare it with the root CID,
//!    then rename into place and remove the resume directory. What of the
//!    output reached the disk is kept by an interrupted whole-file get (and
//!    the data pieces' bytes that made it are freed as it goes): the next
//!    run checks it again and fetches only the rest (`get/store.rs`).
//!
//! `--range START-END` fetches only the piece ranges of the segments
//! covering it and decodes just those bytes: they are verified against the
//! piece hashes in transit, but not against the root CID (that needs the
//! whole file). When more than one manifest claims a public file's root
//! (someone registered a forgery beside it), the piece hashes cannot tell
//! which is the file: such a range is cut from the whole file, fetched and
//! checked against the root, trying each manifest in turn.
//!
//! Memory is bounded: a 1 MiB write buffer per running fetch, the decoder's
//! shard windows (at most two segments) and 32 MiB of chunks when hashing.

mod engine;
pub(crate) mod pipeline;
mod plan;
mod stage;
mod store;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use crowd_chunker::{
    build_from_reader, decode_file_node, verify_block, write_car, BlockSink, CarWriter, ChunkParams,
    ChunkerKind, Cid, DagBuilder, DagParams, DagRoot, Discard, FileNode, HashAlg, InteriorBlocks,
};
use crowd_erasure::{Decoder, Verification};
use crowd_protocol::libp2p::{Multiaddr, PeerId};
use crowd_protocol::util::AlignedBuf;
use crowd_protocol::{Manifest, Request, Response, TrackerRequest, TrackerResponse};

use crate::crypt::{DecryptWriter, FileKey, PlainSink};
use crate::error::Error;
use crate::files::Owner;
use crate::keys::{self, Capability};
use crate::progress::{Callback, Progress, Stage};
use crate::records;
use crate::session::Session;
pub use engine::{fetch_pieces, Failure, FetchJob};
pub use plan::{parse_range, PieceRanges};
use store::{OutputMap, ResumeDir};

/// What to retrieve.
#[derive(Debug, Clone)]
pub enum Target {
    /// A root CID: a public file, or one of this client's private files
    /// (its plaintext root, as `crowd put` printed it).
    Cid(Cid),
    /// Anyone's private file, by its read capability.
    Capability(Box<Capability>),
}

impl std::str::FromStr for Target {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        if keys::is_capability(s) {
            return Ok(Target::Capability(Box::new(s.parse()?)));
        }
        s.trim().parse::<Cid>().map(Target::Cid).map_err(|e| {
            Error::Input(format!(
                "'{}' is not a CID (nor a crowd: capability): {e}",
                s.trim()
            ))
        })
    }
}

/// How to retrieve ([`crate::Client::get`]).
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    /// Only bytes START..END of the file (end exclusive). A range is
    /// verified against the piece hashes as it streams (and, for a private
    /// file, by each segment's tag), but not against the root CID.
    pub range: Option<Range<u64>>,
}

/// What a get retrieved (and `crowd get --json` prints).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GetOutput {
    /// The root CID asked for (the ciphertext's for a capability get).
    pub root: String,
    /// The file's size.
    pub size: u64,
    pub out: String,
    /// Stored unencrypted.
    pub public: bool,
    pub pieces_used: Vec<usize>,
    pub providers_failed: Vec<String>,
    /// The byte range written, if one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<[u64; 2]>,
    /// The range of stored bytes fetched (whole encrypted segments).
    pub fetched: [u64; 2],
}

/// How the stored bytes become the file.
#[derive(Debug, Clone)]
enum Access {
    /// Stored as is; checked against the manifest's root.
    Public,
    /// Encrypted. `plain_root` is known to the owner (checked against the
    /// decrypted file), not to a capability holder (who relies on the
    /// manifest's CID, the piece hashes and every segment's tag; an older
    /// manifest's ciphertext root is checked too).
    Private {
        key: FileKey,
        plain_len: u64,
        plain_root: Option<Cid>,
    },
}

impl Access {
    fn file_len(&self, m: &Manifest) -> u64 {
        match self {
            Access::Public => m.size,
            Access::Private { plain_len, .. } => *plain_len,
        }
    }

    /// The stored bytes that hold `range` of the file.
    fn stored_range(&self, m: &Manifest, range: &Range<u64>) -> Range<u64> {
        match self {
            Access::Public => range.clone(),
            // an empty file is still one authenticated segment
            Access::Private { plain_len: 0, .. } => 0..m.size,
            Access::Private { plain_len, .. } => crate::crypt::cipher_range(range, *plain_len),
        }
    }
}

pub fn get(
    home: &Path,
    target: &Target,
    opts: &GetOptions,
    output: &Path,
    progress: Option<&Callback>,
) -> Result<GetOutput> {
    let (rt, mut found) = start(home, target, output)?;
    loop {
        match get_from(&rt, &found, opts, Sink::Path(output), progress) {
            // verified pieces that do not make the root: another client's
            // manifest claiming it (a hijack); try the next one
            Err(e) if e.downcast_ref::<WrongRoot>().is_some() && !found.alternatives.is_empty() => {
                let (manifest, access, manifest_cid) = found.alternatives.remove(0);
                found.manifest = manifest;
                found.access = access;
                let owner = Owner::Prefer(Some(found.session.peer));
                let Found {
                    session,
                    manifest,
                    addrs,
                    ..
                } = &mut found;
                rt.block_on(follow(session, manifest, &manifest_cid, addrs, owner));
            }
            other => return other,
        }
    }
}

/// [`get`] into `file` (an open, empty file the caller reads as it grows):
/// bytes are written in order, each only once verified (a private file's
/// segments by their tags, a public file's pieces by their hashes), with no
/// fsync and no rename; the resume directory is made beside `scratch` (a
/// path in a directory of the caller's). A root that does not check at the
/// end is an error after the bytes were written; other manifests claiming
/// the root are not tried.
pub fn get_into_file(
    home: &Path,
    target: &Target,
    opts: &GetOptions,
    file: &File,
    scratch: &Path,
    progress: Option<&Callback>,
) -> Result<GetOutput> {
    let (rt, found) = start(home, target, scratch)?;
    get_from(&rt, &found, opts, Sink::File { file, scratch }, progress)
}

/// Where a get writes.
#[derive(Clone, Copy)]
enum Sink<'a> {
    /// A path, written atomically (temporary file, fsync, rename).
    Path(&'a Path),
    /// An open file, written in order as bytes are verified; `scratch`
    /// places the resume directory.
    File { file: &'a File, scratch: &'a Path },
}

impl Sink<'_> {
    fn path(&self) -> &Path {
        match self {
            Sink::Path(p) => p,
            Sink::File { scratch, .. } => scratch,
        }
    }
}

/// [`get`] with one manifest.
fn get_from(
    rt: &tokio::runtime::Runtime,
    found: &Found,
    opts: &GetOptions,
    sink: Sink<'_>,
    progress: Option<&Callback>,
) -> Result<GetOutput> {
    let output = sink.path();
    let m = &found.manifest;
    let file_len = found.access.file_len(m);
    let range = opts.range.clone().unwrap_or(0..file_len);
    // several manifests claim this public file's root, and only the whole
    // file's hash shows which is right: the range is cut from the whole,
    // checked (its size too is the manifest's word until then)
    let cut = found.contested && matches!(found.access, Access::Public) && range != (0..file_len);
    let beyond_end = || -> anyhow::Error {
        Error::Input(format!(
            "range {}-{} is beyond the end of the file ({file_len} bytes)",
            range.start, range.end,
        ))
        .into()
    };
    if range.start > range.end || (range.end > file_len && !cut) {
        return Err(beyond_end());
    }
    let params = dag_params(m)?;
    let whole = range == (0..file_len);
    let stored = if cut {
        0..m.size
    } else {
        found.access.stored_range(m, &range)
    };
    if stored.is_empty() {
        // nothing to fetch; an empty public file is still checked against its root
        if m.size == 0 {
            check_root(&mut std::io::empty(), &params, &m.root)?;
        }
        if let Sink::Path(output) = sink {
            crate::input::write_atomically(output, |_| Ok(()))?;
        }
        return Ok(Report::default().output(found, file_len, output, opts.range.as_ref(), &stored));
    }
    let target = format!("get {} {}-{}\n", m.root, stored.start, stored.end);
    let dir = ResumeDir::open(output, &target)?;
    let stored_whole = stored == (0..m.size);
    let plan = PieceRanges::for_range(&m.layout.geometry(), &stored);
    // a whole file into a path is written inside the resume directory:
    // what reached the disk is kept if the get is interrupted, and the
    // data pieces' bytes that made it are freed as it goes (store.rs)
    let map = match (sink, &found.access) {
        (Sink::File { .. }, _) => None,
        _ if !(whole && stored_whole) => None,
        (_, Access::Public) => Some(OutputMap::new(m.layout.geometry(), false)),
        // checked as ciphertext (an older manifest's root): not kept
        (_, Access::Private { plain_root: None, .. }) if m.root.codec() != crowd_protocol::LAYOUT_CODEC => {
            None
        }
        (_, Access::Private { .. }) => Some(OutputMap::new(m.layout.geometry(), true)),
    };
    let mut durable = map.map_or(0, |_| dir.frontier());
    if durable > std::fs::metadata(dir.output_path()).map_or(0, |o| o.len()) {
        // the recorded output is not there: start afresh
        dir.clear_pieces()?;
        durable = 0;
    }
    // the output bytes kept, and the stored bytes still to fetch
    let (kept, from) = map.map_or((0, stored.start), |map| map.resume_point(durable));
    let fetching = from..stored.end;
    // the plaintext still to write (a kept output's rest)
    let plain = range.start.max(kept)..range.end;
    let bar = Progress::start(progress, Stage::Fetching, 0);
    // writes the verified bytes into `w`
    let retrieve_into = |mut w: &mut dyn WriteSend| -> Result<engine::Fetched> {
        let mut job = fetch_job(found, &dir, &plan, stored_whole, &bar);
        job.kept = map.map(|map| map.consumed(from));
        let retrieve = |out: &mut dyn WriteSend| {
            pipeline::retrieve(rt.handle(), &found.session.net, job, &fetching, out)
        };
        // what an interrupted get kept is read again for the root check
        let kept_bytes = || -> Result<Box<dyn Read + Send>> {
            if kept == 0 {
                return Ok(Box::new(std::io::empty()));
            }
            let path = dir.output_path();
            let f = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            Ok(Box::new(f.take(kept)))
        };
        let fetched = match (&found.access, whole) {
            (Access::Public, true) => {
                pipeline::with_root_check_after(kept_bytes()?, &mut w, &params, &m.root, |out| retrieve(out))
            }
            (Access::Public, false) if cut => {
                let mut w = pipeline::Cut::new(&mut w, range.clone());
                let fetched = pipeline::with_root_check(&mut w, &params, &m.root, |out| retrieve(out))?;
                if range.end > file_len {
                    return Err(beyond_end());
                }
                Ok(fetched)
            }
            (Access::Public, false) => retrieve(&mut w),
            (
                Access::Private {
                    key,
                    plain_len,
                    plain_root,
                },
                _,
            ) => {
                match (plain_root, whole) {
                    // the owner checks the decrypted file against its root:
                    // each segment is hashed as a leaf as it is decrypted
                    // (a segment is a chunk), or, when the chunks are not
                    // the segments, from a copy of what is written
                    (Some(root), true) => {
                        if crate::crypt::leaves_fit(&params, &plain, *plain_len).is_ok() {
                            let kept = kept_dag(&dir.output_path(), kept, &params)?;
                            let mut d = decrypt_to(&mut w, key, *plain_len, &plain).hashing_leaves(kept)?;
                            let fetched = retrieve(&mut d)?;
                            let (_, dag) = d.finish_with_dag()?;
                            root_built(dag.as_ref(), root)?;
                            Ok(fetched)
                        } else {
                            pipeline::with_root_check_after(kept_bytes()?, &mut w, &params, root, |out| {
                                let mut d = decrypt_to(out, key, *plain_len, &plain);
                                let fetched = retrieve(&mut d)?;
                                d.finish()?;
                                Ok(fetched)
                            })
                        }
                    }
                    // an older private manifest names the ciphertext's
                    // UnixFS root: a capability holder checks it as it
                    // streams. One named by its layout needs no more:
                    // the manifest (whose CID the capability names)
                    // decoded with its root equal to its layout's CID,
                    // each piece is checked against the layout as it
                    // arrives, and the AEAD checks every plaintext byte
                    (None, true) if m.root.codec() != crowd_protocol::LAYOUT_CODEC => {
                        let mut d = decrypt_to(&mut w, key, *plain_len, &plain);
                        let fetched =
                            pipeline::with_root_check(&mut d, &params, &m.root, |out| retrieve(out))?;
                        d.finish()?;
                        Ok(fetched)
                    }
                    _ => {
                        let mut d = decrypt_to(&mut w, key, *plain_len, &plain);
                        let fetched = retrieve(&mut d)?;
                        d.finish()?;
                        Ok(fetched)
                    }
                }
            }
        }?;
        w.flush().context("writing output")?;
        Ok(fetched)
    };
    let written = match sink {
        Sink::Path(output) => write_output(&dir, kept, map, output, retrieve_into),
        Sink::File { file, .. } => {
            let mut w = BufWriter::with_capacity(1 << 20, file);
            retrieve_into(&mut w)
        }
    };
    bar.finish_and_clear();
    let fetched = match written {
        Err(e) if e.downcast_ref::<WrongRoot>().is_some() || crate::error::crypt_error_in(&e).is_some() => {
            // verified pieces that do not make the file: start afresh next time
            let _ = std::fs::remove_dir_all(dir.path());
            return Err(e);
        }
        other => other?,
    };
    let report = Report {
        pieces_used: fetched.complete,
        failures: fetched.failures,
    };
    dir.remove()?;
    Ok(report.output(found, file_len, output, opts.range.as_ref(), &fetching))
}

/// Decrypts into `out` the segments holding `range`.
fn decrypt_to<'w>(
    out: &'w mut dyn WriteSend,
    key: &FileKey,
    plain_len: u64,
    range: &Range<u64>,
) -> DecryptWriter<&'w mut dyn WriteSend> {
    DecryptWriter::new(out, key.clone(), plain_len, range.clone())
}

/// Writes a get's output inside its resume directory from byte `kept` on
/// (what an interrupted get kept stays), through a writer thread and
/// background syncs; with `map`, each sync advances the recorded frontier
/// and frees the data pieces' bytes it made redundant. Then syncs the
/// output and renames it to `dest` while the pieces are removed.
fn write_output(
    dir: &ResumeDir,
    kept: u64,
    map: Option<OutputMap>,
    dest: &Path,
    write: impl FnOnce(&mut dyn WriteSend) -> Result<engine::Fetched>,
) -> Result<engine::Fetched> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.output_path();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.set_len(kept)
        .and_then(|()| f.seek(std::io::SeekFrom::Start(kept)))
        .with_context(|| format!("cannot write {}", path.display()))?;
    let fetched = std::thread::scope(|s| {
        let synced = match map {
            Some(map) => {
                crowd_protocol::util::Writeback::reporting(&f, advance_frontier(dir.clone(), map, kept))
            }
            None => crowd_protocol::util::Writeback::new(&f),
        };
        let mut w = pipeline::WriteBehind::new(s, synced);
        write(&mut w)
    })?;
    // every thread is joined: the frontier no longer moves
    let pieces = dir.clone();
    let cleanup = std::thread::spawn(move || pieces.clear_pieces());
    f.sync_all()
        .with_context(|| format!("writing {}", dest.display()))?;
    std::fs::rename(&path, dest).with_context(|| format!("cannot write {}", dest.display()))?;
    let _ = cleanup.join();
    Ok(fetched)
}

/// After each background sync of the output (`written` bytes after the
/// `kept` ones): records the new frontier, then punches the data pieces'
/// bytes the output now holds for good. A failure only keeps more.
fn advance_frontier(dir: ResumeDir, map: OutputMap, kept: u64) -> impl FnMut(u64) + Send + 'static {
    let data_pieces = map.data_shards();
    let mut freed = 0;
    move |written| {
        let durable = kept + written;
        if dir.set_frontier(durable).is_err() {
            return;
        }
        let upto = map.consumed(map.resume_point(durable).1);
        if upto > freed {
            for i in 0..data_pieces {
                let _ = dir.punch(i, freed..upto);
            }
            freed = upto;
        }
    }
}

/// A writer the retrieval can hand to its decoder thread (and that a
/// decrypting writer writes into: only a get's write-behind takes whole
/// segments' buffers as they are).
pub(crate) trait WriteSend: PlainSink + Send {}
impl<W: PlainSink + Send> WriteSend for W {}

impl PlainSink for pipeline::WriteBehind<'_> {
    fn take_segment(&mut self, segment: &mut AlignedBuf) -> std::io::Result<bool> {
        self.take_block(segment)
    }
}
impl<W: Write> PlainSink for BufWriter<W> {}
impl<W: Write> PlainSink for pipeline::RootCheck<W> {}
impl<W: Write> PlainSink for pipeline::Cut<W> {}
impl<W: PlainSink> PlainSink for DecryptWriter<W> {}

/// `crowd export`: a public file's DAG as a CAR v1.
pub fn export(home: &Path, cid: &Cid, output: &Path, progress: Option<&Callback>) -> Result<GetOutput> {
    let (rt, found) = start(home, &Target::Cid(*cid), output)?;
    if !matches!(found.access, Access::Public) {
        return Err(Error::Private(format!(
            "{cid} is a private file: its DAG exists only in plaintext, which export does not write; use get"
        ))
        .into());
    }
    let root = found.manifest.root;
    let m = &found.manifest;
    let params = dag_params(m)?;
    let mut report = Report::default();
    if m.size == 0 {
        let written = crate::input::write_atomically(output, |f| {
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
        let dir = ResumeDir::open(output, &target)?;
        let plan = PieceRanges::for_range(&m.layout.geometry(), &(0..m.size));
        let bar = Progress::start(progress, Stage::Fetching, 0);
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
        write_car_from(&file, &interior, &dag, output)?;
        drop(file);
        dir.remove()?;
    }
    Ok(report.output(&found, m.size, output, None, &(0..m.size)))
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
    fn output(
        &self,
        found: &Found,
        size: u64,
        out: &Path,
        range: Option<&Range<u64>>,
        stored: &Range<u64>,
    ) -> GetOutput {
        let mut failed: Vec<String> = self.failures.iter().map(|f| f.provider.to_string()).collect();
        failed.sort();
        failed.dedup();
        GetOutput {
            root: found.shown_root.to_string(),
            size,
            out: out.display().to_string(),
            public: matches!(found.access, Access::Public),
            pieces_used: self.pieces_used.clone(),
            providers_failed: failed,
            range: range.map(|r| [r.start, r.end]),
            fetched: [stored.start, stored.end],
        }
    }
}

/// Checks the output (before the network), then finds the manifest, its
/// providers and how to read it.
fn start(home: &Path, target: &Target, out: &Path) -> Result<(tokio::runtime::Runtime, Found)> {
    check_output(out)?;
    let rt = runtime()?;
    let found = rt.block_on(find(home, target))?;
    Ok((rt, found))
}

fn check_output(out: &Path) -> Result<()> {
    if out.is_dir() {
        return Err(Error::Input(format!("{} is a directory", out.display())).into());
    }
    if out.file_name().is_none() {
        return Err(Error::Input(format!("{} is not a file name", out.display())).into());
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")
}

/// The manifest, where its providers are, and how to read it.
#[derive(Debug)]
struct Found {
    session: Session,
    manifest: Manifest,
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    access: Access,
    /// The root reported back (the one asked for).
    shown_root: Cid,
    /// Other manifests claiming the same root, tried in turn when this
    /// one's bytes do not make the root (a manifest hijack).
    alternatives: Vec<Candidate>,
    /// More than one manifest claimed the root (`alternatives` was not
    /// empty at first).
    contested: bool,
}

async fn find(home: &Path, target: &Target) -> Result<Found> {
    let session = Session::connect(home).await?;
    let mut addrs: HashMap<PeerId, Vec<Multiaddr>> = session
        .providers()
        .await?
        .into_iter()
        .map(|p| (p.peer, p.addrs.iter().filter_map(|a| a.parse().ok()).collect()))
        .collect();
    let (mut manifest, access, shown_root, manifest_cid, alternatives) = match target {
        Target::Capability(cap) => {
            // the capability names its manifest: others claiming the root are ignored
            let candidates = find_manifests(&session, &addrs, &cap.network_root).await?;
            if candidates.is_empty() {
                return Err(Error::NotFound(format!(
                    "no manifest found for the capability's file {}",
                    cap.network_root
                ))
                .into());
            }
            let Some((m, cid)) = candidates.into_iter().find(|(_, cid)| *cid == cap.manifest) else {
                return Err(Error::Capability(format!(
                    "the capability is for manifest {}, which is not among its root's manifests",
                    cap.manifest
                ))
                .into());
            };
            let access = holder_access(&m, &cap.key)?;
            (m, access, cap.network_root, cid, Vec::new())
        }
        Target::Cid(cid) => {
            let ((m, access, manifest_cid), alternatives) = find_by_cid(home, &session, &addrs, cid).await?;
            (m, access, *cid, manifest_cid, alternatives)
        }
    };
    let owner = match &access {
        // the owner's private file: only its own record
        Access::Private {
            plain_root: Some(_), ..
        } => Owner::Only(session.peer),
        _ => Owner::Prefer(Some(session.peer)),
    };
    follow(&session, &mut manifest, &manifest_cid, &mut addrs, owner).await;
    Ok(Found {
        session,
        manifest,
        addrs,
        access,
        shown_root,
        contested: !alternatives.is_empty(),
        alternatives,
    })
}

/// Points `m`'s pieces at their current providers, from the tracker's file
/// record of manifest `manifest_cid` ([`crate::files::follow_placement`]).
/// Best effort: a tracker that does not answer, or has no record, leaves
/// the manifest's placement.
async fn follow(
    session: &Session,
    m: &mut Manifest,
    manifest_cid: &Cid,
    addrs: &mut HashMap<PeerId, Vec<Multiaddr>>,
    owner: Owner,
) {
    let Some(digest) = crate::files::manifest_digest(manifest_cid) else {
        return;
    };
    if m.pieces.is_empty() {
        return;
    }
    let Ok(files) = crate::files::by_root(session, &m.root).await else {
        return;
    };
    if let Some(file) = crate::files::choose_file(&files, &digest, owner) {
        crate::files::follow_placement(m, addrs, file);
    }
}

/// How a capability's key reads `m`: checked against the manifest's key
/// commitment before anything is fetched.
fn holder_access(m: &Manifest, key: &FileKey) -> Result<Access> {
    let Some(e) = &m.encryption else {
        return Err(Error::Capability("the capability names a public file's manifest".into()).into());
    };
    if e.key_check != key.check_value() || e.nonce != key.nonce {
        return Err(Error::Capability(
            "the capability's key does not open this file (another file's capability?)".into(),
        )
        .into());
    }
    Ok(Access::Private {
        key: key.clone(),
        plain_len: crate::crypt::plain_len(m.size)?,
        plain_root: None,
    })
}

/// The file key of the owner's private `m`.
pub(crate) fn owner_key(
    identity: &crowd_protocol::libp2p::identity::Keypair,
    m: &Manifest,
) -> Result<Option<FileKey>> {
    Ok(match owner_access(identity, m)?.0 {
        Access::Public => None,
        Access::Private { key, .. } => Some(key),
    })
}

/// How the owner reads its private `m`: the envelope opened with this
/// client's key.
fn owner_access(identity: &crowd_protocol::libp2p::identity::Keypair, m: &Manifest) -> Result<(Access, Cid)> {
    let Some(e) = &m.encryption else {
        return Ok((Access::Public, m.root));
    };
    let contents = keys::open_envelope(&keys::envelope_key(identity)?, &m.root, &e.envelope)?;
    let key = contents.file_key()?;
    let plain_len = crate::crypt::plain_len(m.size)?;
    if contents.size != plain_len || key.check_value() != e.key_check.as_slice() {
        return Err(Error::Envelope("it does not match its manifest".into()).into());
    }
    let root = contents.plain_root()?;
    Ok((
        Access::Private {
            key,
            plain_len,
            plain_root: Some(root),
        },
        root,
    ))
}

/// A file by root CID: this home's record of it, else the network's
/// manifest for that root, else this client's manifests on the network (a
/// private file is known to the network only by its layout CID).
/// One way to read a file: a manifest, how to read it, and its CID.
type Candidate = (Manifest, Access, Cid);

/// The file's manifest, then any other manifests claiming the same root
/// (tried in turn if the first's bytes do not make the root).
async fn find_by_cid(
    home: &Path,
    session: &Session,
    addrs: &HashMap<PeerId, Vec<Multiaddr>>,
    cid: &Cid,
) -> Result<(Candidate, Vec<Candidate>)> {
    if let Some(record) = records::find(home, &cid.to_string())? {
        let network_root: Cid = record
            .network_root()
            .parse()
            .map_err(|_| anyhow!("the record of {cid} names a bad root"))?;
        let local = records::manifest_bytes(home, &record)?.and_then(|b| {
            check_manifest(&b, &network_root)
                .ok()
                .map(|m| (m, crowd_protocol::manifest_cid(&b)))
        });
        let (m, manifest_cid) = match local {
            Some(found) => found,
            None => find_manifest(session, addrs, &network_root)
                .await?
                .ok_or_else(|| {
                    Error::NotFound(format!("no manifest found for {cid} (recorded in this home)"))
                })?,
        };
        let (access, root) = owner_access(&session.key, &m)?;
        if root != *cid && m.root != *cid {
            return Err(Error::Envelope(format!("it names {root}, not {cid}")).into());
        }
        return Ok(((m, access, manifest_cid), Vec::new()));
    }
    let candidates = find_manifests(session, addrs, cid).await?;
    if !candidates.is_empty() {
        // this client's own private file first, then public manifests in
        // the tracker's order (this client's own first)
        let (mut own, mut public, mut others_private) = (Vec::new(), Vec::new(), false);
        for (m, manifest_cid) in candidates {
            if m.encryption.is_none() {
                public.push((m, Access::Public, manifest_cid));
            } else {
                match owner_access(&session.key, &m) {
                    Ok((access, _)) => own.push((m, access, manifest_cid)),
                    Err(_) => others_private = true,
                }
            }
        }
        own.extend(public);
        let mut usable = own.into_iter();
        return match usable.next() {
            Some(first) => Ok((first, usable.collect())),
            None if others_private => Err(Error::NeedsCapability(format!(
                "{cid} is a private file of another client: it is read with its capability (crowd share)"
            ))
            .into()),
            None => Err(Error::NotFound(format!("no usable manifest for {cid}")).into()),
        };
    }
    // not in this home: perhaps stored before this home was restored
    for record in crate::info::recover(home, session).await? {
        if record.root == cid.to_string() {
            return Box::pin(find_by_cid(home, session, addrs, cid)).await;
        }
    }
    Err(Error::NotFound(format!(
        "no file {cid}: unknown to the network and to this client (a private file of another client is read with its capability)"
    ))
    .into())
}

/// Most DHT providers asked for a manifest.
const MAX_DHT_PEERS: usize = 8;
/// How long a DHT provider may take to answer a dial.
const DHT_DIAL: Duration = Duration::from_secs(5);

/// The manifest for `root` and its CID (the first of [`find_manifests`]).
async fn find_manifest(
    s: &Session,
    addrs: &HashMap<PeerId, Vec<Multiaddr>>,
    root: &Cid,
) -> Result<Option<(Manifest, Cid)>> {
    Ok(find_manifests(s, addrs, root).await?.into_iter().next())
}

/// Every manifest for `root` with its CID: from the tracker (one per
/// client that registered one, this client's first), else from providers
/// the DHT names; empty if nobody has one. Untrusted either way: each is
/// decoded with its checks and its root must be the one asked for, and a
/// manifest claiming someone else's root can sit beside the real one, so
/// callers choose (their own, the capability's) or try each in turn.
async fn find_manifests(
    s: &Session,
    addrs: &HashMap<PeerId, Vec<Multiaddr>>,
    root: &Cid,
) -> Result<Vec<(Manifest, Cid)>> {
    let key = root.to_bytes();
    let mut problems: Vec<String> = Vec::new();
    let mut found = Vec::new();
    match s.tracker(TrackerRequest::Manifest { root: key.clone() }).await {
        Ok(TrackerResponse::Manifests(blobs)) => {
            for blob in blobs {
                match check_manifest(&blob.0, root) {
                    Ok(m) => found.push((m, crowd_protocol::manifest_cid(&blob.0))),
                    Err(e) => problems.push(format!("tracker: {e:#}")),
                }
            }
        }
        Ok(other) => problems.push(format!("tracker: unexpected answer {other:?}")),
        Err(e) => problems.push(format!("{e:#}")),
    }
    if found.is_empty() {
        let wait = Duration::from_secs(s.config.request_timeout_secs.max(1));
        found = manifests_from_dht(&s.net, addrs, root, wait, &mut problems).await;
    }
    let mut seen = std::collections::HashSet::new();
    found.retain(|(_, cid)| seen.insert(*cid));
    match (found.is_empty(), problems.first()) {
        (true, Some(p)) => bail!(
            "no manifest found for {root}: {}",
            engine::one_line(&crate::error::strip(p))
        ),
        _ => Ok(found),
    }
}

/// The manifests for `root` from the first provider the DHT names that has
/// any (waiting up to `wait` for the lookup); what went wrong with each is
/// added to `problems`.
async fn manifests_from_dht(
    net: &crowd_protocol::Network,
    addrs: &HashMap<PeerId, Vec<Multiaddr>>,
    root: &Cid,
    wait: Duration,
    problems: &mut Vec<String>,
) -> Vec<(Manifest, Cid)> {
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
            Ok(Response::Manifests(blobs)) => {
                let mut found = Vec::new();
                for blob in blobs.into_iter().take(crowd_protocol::MAX_MANIFESTS_PER_ROOT) {
                    match check_manifest(&blob.0, root) {
                        Ok(m) => found.push((m, crowd_protocol::manifest_cid(&blob.0))),
                        Err(e) => problems.push(format!("{peer}: {e:#}")),
                    }
                }
                if !found.is_empty() {
                    return found;
                }
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("{peer}: {e}")),
        }
    }
    Vec::new()
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
    bar: &'a Progress,
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
        kept: None,
    }
}

async fn fetch(
    found: &Found,
    dir: &ResumeDir,
    plan: &PieceRanges,
    whole: bool,
    bar: &Progress,
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

/// The DAG's first leaves: the `kept` bytes of an interrupted get's
/// output at `path` as fixed-size chunks, hashed in parallel batches before
/// the fetch goes on (the chunking is checked by the caller,
/// [`crate::crypt::leaves_fit`]).
fn kept_dag(path: &Path, kept: u64, params: &DagParams) -> Result<DagBuilder> {
    let mut dag = DagBuilder::new(*params);
    if kept == 0 {
        return Ok(dag);
    }
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let read = dag
        .push_fixed_from_reader(f.take(kept), &mut Discard)
        .with_context(|| format!("reading {}", path.display()))?;
    if read != kept {
        bail!("{} holds {read} bytes, not the {kept} recorded", path.display());
    }
    Ok(dag)
}

/// Rebuilds the DAG of `data` and compares its root with `root`.
fn check_root(data: &mut dyn Read, params: &DagParams, root: &Cid) -> Result<()> {
    let mut sink: Box<dyn BlockSink> = Box::new(Discard);
    let dag = build_from_reader(BufReader::with_capacity(1 << 20, data), params, &mut *sink)?;
    root_built(Some(&dag), root)
}

/// Whether the DAG built from what was written is `root`'s ([`WrongRoot`]
/// if not, or if none was built).
fn root_built(dag: Option<&DagRoot>, root: &Cid) -> Result<()> {
    match dag {
        Some(dag) if dag.cid == *root => Ok(()),
        _ => Err(WrongRoot {
            got: dag.map_or_else(|| "not built".to_owned(), |d| d.cid.to_string()),
            want: *root,
        }
        .into()),
    }
}

/// Verified pieces that do not make the root: the manifest is wrong.
#[derive(Debug)]
struct WrongRoot {
    got: String,
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
