//! CAR v1 (content-addressed archive): write a file's DAG with one root, read
//! one back verifying every block.
//!
//! Format: `varint(len) ‖ dag-cbor {roots: [CID], version: 1}`, then sections
//! `varint(len) ‖ CID bytes ‖ block bytes`. We write blocks depth-first in
//! pre-order (root first, leaves in file order), as `ipfs dag export` does, so
//! a reader can stream a file out; we read blocks in any order.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;

use cid::Cid;
use serde::{Deserialize, Serialize};

use crate::dag::{build_from_slice, decode_file_node, DagParams, DagRoot, FileNode, InteriorBlocks};
use crate::{verify_block, ChunkerError};

/// Largest CAR header accepted.
pub const MAX_HEADER_LEN: u64 = 64 * 1024;
/// Largest CAR section (CID + block) accepted.
pub const MAX_SECTION_LEN: u64 = 32 * 1024 * 1024;
/// Deepest DAG walked.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Serialize, Deserialize)]
struct CarHeader {
    roots: Vec<Cid>,
    version: u64,
}

fn write_varint(w: &mut impl Write, n: u64) -> std::io::Result<()> {
    let mut buf = unsigned_varint::encode::u64_buffer();
    w.write_all(unsigned_varint::encode::u64(n, &mut buf))
}

/// Writes CAR v1 sections to `W`.
#[derive(Debug)]
pub struct CarWriter<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> CarWriter<W> {
    /// Writes the header naming `root`.
    pub fn new(mut out: W, root: &Cid) -> Result<Self, ChunkerError> {
        let header = serde_ipld_dagcbor::to_vec(&CarHeader {
            roots: vec![*root],
            version: 1,
        })
        .map_err(|e| ChunkerError::InvalidParams(format!("encoding CAR header: {e}")))?;
        let mut buf = Vec::with_capacity(header.len() + 10);
        let _ = write_varint(&mut buf, header.len() as u64);
        buf.extend_from_slice(&header);
        out.write_all(&buf)
            .map_err(|e| ChunkerError::io("writing CAR", e))?;
        Ok(Self {
            out,
            written: buf.len() as u64,
        })
    }

    /// Appends one block.
    pub fn put(&mut self, cid: &Cid, data: &[u8]) -> Result<(), ChunkerError> {
        let cid_bytes = cid.to_bytes();
        let mut section = Vec::with_capacity(10 + cid_bytes.len());
        let _ = write_varint(&mut section, (cid_bytes.len() + data.len()) as u64);
        section.extend_from_slice(&cid_bytes);
        self.out
            .write_all(&section)
            .map_err(|e| ChunkerError::io("writing CAR", e))?;
        self.out
            .write_all(data)
            .map_err(|e| ChunkerError::io("writing CAR", e))?;
        self.written += (section.len() + data.len()) as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes and gives back the writer.
    pub fn finish(mut self) -> Result<W, ChunkerError> {
        self.out.flush().map_err(|e| ChunkerError::io("writing CAR", e))?;
        Ok(self.out)
    }
}

/// Builds the DAG of `data` and writes it as a CAR to `out`: one pass to hash
/// (the root goes in the header), one to write blocks in pre-order. Leaves are
/// re-hashed on the second pass so a file that changed in between is an error,
/// never a corrupt CAR.
pub fn write_car(data: &[u8], params: &DagParams, out: impl Write) -> Result<DagRoot, ChunkerError> {
    let mut interior = InteriorBlocks::default();
    let root = build_from_slice(data, params, &mut interior)?;
    let mut car = CarWriter::new(out, &root.cid)?;
    write_subtree(&mut car, &interior.0, data, &root.cid, 0, root.size, 0)?;
    car.finish()?;
    Ok(root)
}

fn write_subtree<W: Write>(
    car: &mut CarWriter<W>,
    interior: &HashMap<Cid, Vec<u8>>,
    data: &[u8],
    cid: &Cid,
    offset: u64,
    size: u64,
    depth: usize,
) -> Result<(), ChunkerError> {
    if depth > MAX_DEPTH {
        return Err(ChunkerError::MalformedNode {
            cid: *cid,
            reason: "DAG deeper than 64 levels".into(),
        });
    }
    if let Some(bytes) = interior.get(cid) {
        car.put(cid, bytes)?;
        if let FileNode::Branch { children, .. } = decode_file_node(cid, bytes)? {
            let mut at = offset;
            for (child, len) in children {
                write_subtree(car, interior, data, &child, at, len, depth + 1)?;
                at += len;
            }
        }
        return Ok(());
    }
    let leaf = usize::try_from(offset)
        .ok()
        .zip(usize::try_from(offset + size).ok())
        .and_then(|(a, b)| data.get(a..b))
        .ok_or(ChunkerError::MissingBlock { cid: *cid })?;
    verify_block(cid, leaf, offset).map_err(|_| {
        ChunkerError::io(
            format!("input changed while writing the CAR (chunk at offset {offset})"),
            std::io::Error::other("content no longer matches the first pass"),
        )
    })?;
    car.put(cid, leaf)
}

/// Where each block of a CAR lives, after every block was verified.
#[derive(Debug)]
pub struct CarIndex {
    pub roots: Vec<Cid>,
    /// CID → (offset of the block's bytes, length).
    pub blocks: HashMap<Cid, (u64, u64)>,
}

/// Reads an unsigned varint; `Ok(None)` at a clean end of input.
fn read_varint(
    r: &mut impl Read,
    offset: u64,
    what: &'static str,
) -> Result<Option<(u64, u64)>, ChunkerError> {
    let mut buf = [0u8; 10];
    for i in 0..buf.len() {
        let mut byte = [0u8; 1];
        let n = loop {
            match r.read(&mut byte) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other.map_err(|e| ChunkerError::io("reading CAR", e))?,
            }
        };
        if n == 0 {
            if i == 0 {
                return Ok(None);
            }
            return Err(ChunkerError::TruncatedCar {
                what,
                offset,
                needed: i as u64 + 1,
                available: i as u64,
            });
        }
        buf[i] = byte[0];
        if unsigned_varint::decode::is_last(byte[0]) {
            let (v, _) =
                unsigned_varint::decode::u64(&buf[..=i]).map_err(|e| ChunkerError::MalformedCar {
                    offset,
                    reason: format!("bad {what} varint: {e}"),
                })?;
            return Ok(Some((v, i as u64 + 1)));
        }
    }
    Err(ChunkerError::MalformedCar {
        offset,
        reason: format!("{what} varint longer than 10 bytes"),
    })
}

fn read_exact_at_offset(
    r: &mut impl Read,
    buf: &mut [u8],
    offset: u64,
    what: &'static str,
) -> Result<(), ChunkerError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(ChunkerError::TruncatedCar {
                    what,
                    offset,
                    needed: buf.len() as u64,
                    available: filled as u64,
                })
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ChunkerError::io("reading CAR", e)),
        }
    }
    Ok(())
}

impl CarIndex {
    /// Reads a whole CAR v1 stream, verifying every block against its CID.
    pub fn scan(reader: impl Read) -> Result<Self, ChunkerError> {
        let mut r = BufReader::with_capacity(1 << 20, reader);
        let (hlen, n) = read_varint(&mut r, 0, "header length")?.ok_or(ChunkerError::TruncatedCar {
            what: "header length",
            offset: 0,
            needed: 1,
            available: 0,
        })?;
        if hlen == 0 || hlen > MAX_HEADER_LEN {
            return Err(ChunkerError::MalformedCar {
                offset: 0,
                reason: format!("header length {hlen} is outside 1..={MAX_HEADER_LEN}"),
            });
        }
        let mut header = vec![0u8; hlen as usize];
        read_exact_at_offset(&mut r, &mut header, n, "header")?;
        let header: CarHeader =
            serde_ipld_dagcbor::from_slice(&header).map_err(|e| ChunkerError::MalformedCar {
                offset: n,
                reason: format!("header is not a CAR v1 header: {e}"),
            })?;
        if header.version != 1 {
            return Err(ChunkerError::MalformedCar {
                offset: n,
                reason: format!("CAR version {} (only version 1 is supported)", header.version),
            });
        }
        let mut offset = n + hlen;
        let mut blocks = HashMap::new();
        let mut section = Vec::new();
        while let Some((len, n)) = read_varint(&mut r, offset, "section length")? {
            if len == 0 || len > MAX_SECTION_LEN {
                return Err(ChunkerError::MalformedCar {
                    offset,
                    reason: format!("section length {len} is outside 1..={MAX_SECTION_LEN}"),
                });
            }
            let body = offset + n;
            section.resize(len as usize, 0);
            read_exact_at_offset(&mut r, &mut section, body, "section")?;
            let mut cursor = std::io::Cursor::new(&section[..]);
            let cid = Cid::read_bytes(&mut cursor).map_err(|e| ChunkerError::MalformedCar {
                offset: body,
                reason: format!("bad CID: {e}"),
            })?;
            let cid_len = cursor.position();
            let data = &section[cid_len as usize..];
            verify_block(&cid, data, body)?;
            blocks.insert(cid, (body + cid_len, data.len() as u64));
            offset = body + len;
        }
        Ok(Self {
            roots: header.roots,
            blocks,
        })
    }
}

/// Extracts the single-root file DAG in the CAR at `car` into `out`,
/// verifying every block (once while indexing, again as it is read back).
pub fn extract_file(car: &File, out: &mut impl Write) -> Result<DagRoot, ChunkerError> {
    let index = CarIndex::scan(car)?;
    let root = match index.roots.as_slice() {
        [root] => *root,
        roots => {
            return Err(ChunkerError::MalformedCar {
                offset: 0,
                reason: format!("expected one root, found {}", roots.len()),
            })
        }
    };
    let mut stats = DagRoot {
        cid: root,
        size: 0,
        leaves: 0,
        blocks: 0,
    };
    extract_node(car, &index, &root, None, 0, out, &mut stats)?;
    Ok(stats)
}

fn extract_node(
    car: &File,
    index: &CarIndex,
    cid: &Cid,
    expect: Option<u64>,
    depth: usize,
    out: &mut impl Write,
    stats: &mut DagRoot,
) -> Result<(), ChunkerError> {
    if depth > MAX_DEPTH {
        return Err(ChunkerError::MalformedNode {
            cid: *cid,
            reason: "DAG deeper than 64 levels".into(),
        });
    }
    let &(offset, len) = index
        .blocks
        .get(cid)
        .ok_or(ChunkerError::MissingBlock { cid: *cid })?;
    let mut bytes = vec![0u8; len as usize];
    car.read_exact_at(&mut bytes, offset)
        .map_err(|e| ChunkerError::io("reading CAR", e))?;
    verify_block(cid, &bytes, offset)?;
    stats.blocks += 1;
    let node = decode_file_node(cid, &bytes)?;
    let size = match &node {
        FileNode::Raw => len,
        FileNode::Branch { filesize, .. } => *filesize,
    };
    if let Some(expect) = expect {
        if expect != size {
            return Err(ChunkerError::MalformedNode {
                cid: *cid,
                reason: format!("parent says {expect} bytes, node holds {size}"),
            });
        }
    }
    let write = |out: &mut dyn Write, b: &[u8]| {
        out.write_all(b)
            .map_err(|e| ChunkerError::io("writing output", e))
    };
    match node {
        FileNode::Raw => {
            write(out, &bytes)?;
            stats.leaves += 1;
            stats.size += len;
        }
        FileNode::Branch { inline, children, .. } => {
            write(out, &inline)?;
            stats.size += inline.len() as u64;
            drop(bytes);
            for (child, size) in children {
                extract_node(car, index, &child, Some(size), depth + 1, out, stats)?;
            }
        }
    }
    Ok(())
}
