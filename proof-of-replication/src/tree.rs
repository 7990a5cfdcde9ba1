//! BLAKE3's own tree: roots, outboards and 1 KiB chunk openings.
//!
//! The commitment to a byte string is its plain BLAKE3 hash, so `comm_d` is the
//! piece's content address. Openings are built and checked with
//! [`blake3::hazmat`]: a chunk's chaining value (`set_input_offset` +
//! `finalize_non_root`), then one `merge_subtrees_non_root` per level and a
//! final `merge_subtrees_root`. The tree shape is BLAKE3's: every left subtree
//! is the largest power-of-two number of chunks strictly smaller than its parent
//! ([`blake3::hazmat::left_subtree_len`]), so the shape follows from the total
//! length alone and a verifier needs nothing but `(root, len)`.
//!
//! ## Chunk groups and the outboard
//!
//! Chunks are gathered in groups of [`GROUP_CHUNKS`] (16 KiB). Group boundaries
//! are always subtree boundaries, so the tree above the groups is a tree over
//! group chaining values. The [`Outboard`] stores that upper tree: one 64-byte
//! entry (left CV ‖ right CV) per interior node, in pre-order, `(groups − 1) ×
//! 64` bytes ≈ 0.39 % of the data. Opening any chunk then reads one group from
//! the data plus `log2(groups)` outboard entries.

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use blake3::{Hasher, CHUNK_LEN};

use crate::error::{PorepError, Result, TreeKind};

/// A 32-byte hash: roots, labels, column hashes and ids.
pub type Hash32 = [u8; 32];

/// Chunks per group: 16 chunks fill AVX-512's 16 lanes.
pub const GROUP_CHUNKS: usize = 16;
/// Bytes per chunk group.
pub const GROUP_LEN: usize = GROUP_CHUNKS * CHUNK_LEN;
/// Upper bound on a path's length (BLAKE3 trees over `< 2^64` bytes are at most 54 deep).
pub const MAX_DEPTH: usize = 64;

/// Number of 1 KiB chunks in a BLAKE3 tree over `len` bytes (an empty input is one empty chunk).
pub fn chunk_count(len: u64) -> u64 {
    len.div_ceil(CHUNK_LEN as u64).max(1)
}

/// Number of chunk groups in a tree over `len` bytes.
pub fn group_count(len: u64) -> u64 {
    len.div_ceil(GROUP_LEN as u64).max(1)
}

/// The BLAKE3 root of `data`, hashed with rayon; equals `blake3::hash(data)`.
pub fn root(data: &[u8]) -> Hash32 {
    Outboard::build(data).root()
}

/// One chunk of a tree with the sibling chaining values on its path to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkOpening {
    /// Index of the chunk (byte offset / 1024).
    pub chunk_index: u64,
    /// The chunk's bytes: 1024 except for the last chunk.
    pub chunk: Vec<u8>,
    /// Siblings from the chunk's level up to the root's children.
    pub siblings: Vec<Hash32>,
}

impl ChunkOpening {
    /// The bytes of the 32-byte node `node` inside this chunk, zero-padded past the end.
    pub fn node_bytes(&self, node: u64) -> Hash32 {
        let mut out = [0u8; 32];
        let start = (node * 32).saturating_sub(self.chunk_index * CHUNK_LEN as u64) as usize;
        if start < self.chunk.len() {
            let end = (start + 32).min(self.chunk.len());
            out[..end - start].copy_from_slice(&self.chunk[start..end]);
        }
        out
    }

    /// Encoded size in bytes (see [`crate::codec`]).
    pub fn encoded_len(&self) -> usize {
        8 + 2 + self.chunk.len() + 1 + 32 * self.siblings.len()
    }
}

/// The chunk index that holds 32-byte node `node`.
pub fn chunk_of_node(node: u64) -> u64 {
    node * 32 / CHUNK_LEN as u64
}

/// Directions from the root down to `chunk` in a tree over `len` bytes:
/// `true` = the path goes left. Its length is the path's depth.
fn path_dirs(len: u64, chunk: u64) -> Vec<bool> {
    let offset = chunk * CHUNK_LEN as u64;
    let (mut start, mut end) = (0u64, len);
    let mut dirs = Vec::new();
    while end - start > CHUNK_LEN as u64 {
        let mid = start + left_subtree_len(end - start);
        let left = offset < mid;
        dirs.push(left);
        if left {
            end = mid;
        } else {
            start = mid;
        }
    }
    dirs
}

fn chunk_cv(offset: u64, bytes: &[u8]) -> ChainingValue {
    Hasher::new()
        .set_input_offset(offset)
        .update(bytes)
        .finalize_non_root()
}

/// Check `opening` against the BLAKE3 root of a `len`-byte input.
///
/// The opening is untrusted: every length is checked before use.
pub fn verify_chunk(root: &Hash32, len: u64, tree: TreeKind, opening: &ChunkOpening) -> Result<()> {
    let chunk = opening.chunk_index;
    let last = chunk_count(len) - 1;
    if chunk > last {
        return Err(PorepError::ChunkOutOfRange { tree, chunk, last });
    }
    let start = chunk * CHUNK_LEN as u64;
    let expected_len = (len - start).min(CHUNK_LEN as u64) as usize;
    if opening.chunk.len() != expected_len {
        return Err(PorepError::ChunkLength {
            tree,
            chunk,
            expected: expected_len,
            got: opening.chunk.len(),
        });
    }
    let dirs = path_dirs(len, chunk);
    check_path(root, tree, chunk, start, &opening.chunk, &dirs, &opening.siblings)
}

/// Checks that `bytes` (a subtree starting at byte `start`) and its sibling
/// path lead to `root`; `chunk` names the place in errors.
fn check_path(
    root: &Hash32,
    tree: TreeKind,
    chunk: u64,
    start: u64,
    bytes: &[u8],
    dirs: &[bool],
    siblings: &[Hash32],
) -> Result<()> {
    if siblings.len() != dirs.len() {
        return Err(PorepError::PathLength {
            tree,
            chunk,
            expected: dirs.len(),
            got: siblings.len(),
        });
    }
    if root_from_path(start, bytes, dirs, siblings) == *root {
        Ok(())
    } else {
        Err(PorepError::RootMismatch { tree, chunk })
    }
}

/// The root hash implied by the subtree `bytes` (starting at byte `start`)
/// and its sibling path (bottom-up). `dirs` run from the root down (`true` =
/// the path goes left); the caller has checked `siblings.len() == dirs.len()`.
/// With no siblings the subtree is the whole input and its hash is the root.
fn root_from_path(start: u64, bytes: &[u8], dirs: &[bool], siblings: &[Hash32]) -> Hash32 {
    let Some((top, below)) = siblings.split_last() else {
        return *blake3::hash(bytes).as_bytes();
    };
    let depth = dirs.len();
    let mut cv = chunk_cv(start, bytes);
    for (j, sibling) in below.iter().enumerate() {
        let (l, r) = if dirs[depth - 1 - j] {
            (&cv, sibling)
        } else {
            (sibling, &cv)
        };
        cv = merge_subtrees_non_root(l, r, Mode::Hash);
    }
    let (l, r) = if dirs[0] { (&cv, top) } else { (top, &cv) };
    *merge_subtrees_root(l, r, Mode::Hash).as_bytes()
}

/// A whole 16 KiB chunk group with the sibling chaining values from the
/// group up to the root, bottom-up: the unit of verified retrieval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOpening {
    /// Index of the group (byte offset / [`GROUP_LEN`]).
    pub group_index: u64,
    /// The group's bytes: [`GROUP_LEN`] except for the last group.
    pub bytes: Vec<u8>,
    /// Siblings from the group's level up to the root's children.
    pub siblings: Vec<Hash32>,
}

/// Check a group opening against the BLAKE3 root of a `len`-byte input.
/// Untrusted input: every length is checked before use. Errors name the
/// group's first chunk.
pub fn verify_group(root: &Hash32, len: u64, tree: TreeKind, opening: &GroupOpening) -> Result<()> {
    verify_group_parts(
        root,
        len,
        tree,
        opening.group_index,
        &opening.bytes,
        &opening.siblings,
    )
}

/// [`verify_group`] of a group held in parts: its index, its bytes and its
/// siblings, borrowed (a receiver that reads them in place from a frame).
pub fn verify_group_parts(
    root: &Hash32,
    len: u64,
    tree: TreeKind,
    g: u64,
    bytes: &[u8],
    siblings: &[Hash32],
) -> Result<()> {
    let groups = group_count(len);
    let chunk = g.saturating_mul(GROUP_CHUNKS as u64);
    if g >= groups {
        return Err(PorepError::ChunkOutOfRange {
            tree,
            chunk,
            last: chunk_count(len) - 1,
        });
    }
    let start = g * GROUP_LEN as u64;
    let expected = (len - start).min(GROUP_LEN as u64) as usize;
    if bytes.len() != expected {
        return Err(PorepError::ChunkLength {
            tree,
            chunk,
            expected,
            got: bytes.len(),
        });
    }
    // directions from the root down to the group
    let mut dirs = Vec::new();
    let (mut s, mut e) = (0u64, groups);
    while e - s > 1 {
        let left = left_count((e - s) as usize) as u64;
        dirs.push(g < s + left);
        if g < s + left {
            e = s + left;
        } else {
            s += left;
        }
    }
    check_path(root, tree, chunk, start, bytes, &dirs, siblings)
}

/// Random access to stored bytes: a replica on disk or in memory.
pub trait ReadAt {
    /// Total length in bytes.
    fn len_bytes(&self) -> std::io::Result<u64>;
    /// Fill `buf` from `offset`; an error if fewer bytes are available.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl ReadAt for [u8] {
    fn len_bytes(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn len_bytes(&self) -> std::io::Result<u64> {
        self.as_slice().len_bytes()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.as_slice().read_at(offset, buf)
    }
}

impl ReadAt for std::fs::File {
    fn len_bytes(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn len_bytes(&self) -> std::io::Result<u64> {
        (**self).len_bytes()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        (**self).read_at(offset, buf)
    }
}

/// The interior of a BLAKE3 tree above the chunk-group level, plus its root.
#[derive(Clone, PartialEq, Eq)]
pub struct Outboard {
    len: u64,
    root: Hash32,
    /// Pre-order interior nodes of the tree over group CVs: `[left, right]`.
    parents: Vec<[Hash32; 2]>,
}

impl std::fmt::Debug for Outboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outboard")
            .field("len", &self.len)
            .field("root", &hex32(&self.root))
            .field("parents", &self.parents.len())
            .finish()
    }
}

pub(crate) fn hex32(h: &Hash32) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Largest power of two strictly below `n` (`n ≥ 2`).
fn left_count(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// Hash the `len` bytes at `offset` of the input (group-aligned, more than
/// one group) as a subtree: write its pre-order interior entries to `out`
/// (`groups − 1` of them) and return its two children's chaining values.
/// A subtree of at most `leaf_max` bytes (a power-of-two number of groups)
/// is `leaf(offset, len, out)`'s to hash whole, its interior entries into
/// `out`. Subtrees are hashed in parallel with `rayon::join`, like
/// `update_rayon`.
fn build_children<F, E>(
    len: usize,
    offset: u64,
    leaf_max: usize,
    leaf: &F,
    out: &mut [[Hash32; 2]],
) -> std::result::Result<(ChainingValue, ChainingValue), E>
where
    F: Fn(u64, usize, &mut [[Hash32; 2]]) -> std::result::Result<ChainingValue, E> + Sync,
    E: Send,
{
    let groups = len.div_ceil(GROUP_LEN);
    let left_groups = left_count(groups);
    let l_len = left_groups * GROUP_LEN;
    let r_offset = offset + l_len as u64;
    let Some((head, rest)) = out.split_first_mut() else {
        // Unreachable for more than one group; fall back to hashing directly.
        return Ok((
            leaf(offset, l_len, &mut [])?,
            leaf(r_offset, len - l_len, &mut [])?,
        ));
    };
    let (l_out, r_out) = rest.split_at_mut(left_groups - 1);
    let (l, r) = if groups > 4 {
        rayon::join(
            || subtree_cv(l_len, offset, leaf_max, leaf, l_out),
            || subtree_cv(len - l_len, r_offset, leaf_max, leaf, r_out),
        )
    } else {
        (
            subtree_cv(l_len, offset, leaf_max, leaf, l_out),
            subtree_cv(len - l_len, r_offset, leaf_max, leaf, r_out),
        )
    };
    let (l, r) = (l?, r?);
    *head = [l, r];
    Ok((l, r))
}

fn subtree_cv<F, E>(
    len: usize,
    offset: u64,
    leaf_max: usize,
    leaf: &F,
    out: &mut [[Hash32; 2]],
) -> std::result::Result<ChainingValue, E>
where
    F: Fn(u64, usize, &mut [[Hash32; 2]]) -> std::result::Result<ChainingValue, E> + Sync,
    E: Send,
{
    if len <= leaf_max.max(GROUP_LEN) {
        return leaf(offset, len, out);
    }
    let (l, r) = build_children(len, offset, leaf_max, leaf, out)?;
    Ok(merge_subtrees_non_root(&l, &r, Mode::Hash))
}

/// The chaining value of the subtree over `data` (at byte `offset` of the
/// input), its interior entries written to `out`.
fn slice_subtree_cv(data: &[u8], offset: u64, out: &mut [[Hash32; 2]]) -> ChainingValue {
    let leaf = |o: u64,
                n: usize,
                _: &mut [[Hash32; 2]]|
     -> std::result::Result<ChainingValue, std::convert::Infallible> {
        let start = (o - offset) as usize;
        Ok(chunk_cv(o, &data[start..start + n]))
    };
    let Ok(cv) = subtree_cv(data.len(), offset, GROUP_LEN, &leaf, out);
    cv
}

/// The outboard of a `len`-byte input hashed by `leaf` (see
/// [`build_children`]); `small` hashes an input of one group or less.
fn build_with<F, E>(
    len: u64,
    leaf_max: usize,
    leaf: &F,
    small: impl FnOnce() -> std::result::Result<Hash32, E>,
) -> std::result::Result<Outboard, E>
where
    F: Fn(u64, usize, &mut [[Hash32; 2]]) -> std::result::Result<ChainingValue, E> + Sync,
    E: Send,
{
    let groups = len.div_ceil(GROUP_LEN as u64);
    if groups <= 1 {
        return Ok(Outboard {
            len,
            root: small()?,
            parents: Vec::new(),
        });
    }
    let mut parents = vec![[[0u8; 32]; 2]; groups as usize - 1];
    let (l, r) = build_children(len as usize, 0, leaf_max, leaf, &mut parents)?;
    Ok(Outboard {
        len,
        root: *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes(),
        parents,
    })
}

/// Builds an [`Outboard`] from bytes as they stream past (an upload): each
/// 16 KiB group is hashed once as it completes and only its chaining value
/// is kept (32 bytes per group), so the input is hashed exactly once and
/// never read back. Equal to [`Outboard::build`] on the concatenation.
#[derive(Debug, Clone, Default)]
pub struct OutboardBuilder {
    /// Byte offset of `group` in the input.
    offset: u64,
    /// The current group (a full one is hashed only once more bytes come:
    /// an input of exactly one group hashes as a root, not a subtree).
    group: Vec<u8>,
    cvs: Vec<ChainingValue>,
}

impl OutboardBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.group.len() == GROUP_LEN {
                self.cvs.push(chunk_cv(self.offset, &self.group));
                self.offset += GROUP_LEN as u64;
                self.group.clear();
            }
            let take = (GROUP_LEN - self.group.len()).min(bytes.len());
            self.group.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.offset + self.group.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn finalize(mut self) -> Outboard {
        let len = self.len();
        if self.cvs.is_empty() {
            return Outboard {
                len,
                root: *blake3::hash(&self.group).as_bytes(),
                parents: Vec::new(),
            };
        }
        self.cvs.push(chunk_cv(self.offset, &self.group));
        let cvs = self.cvs;
        let leaf = |offset: u64, _: usize, _: &mut [[Hash32; 2]]| {
            Ok::<_, std::convert::Infallible>(cvs[(offset / GROUP_LEN as u64) as usize])
        };
        // more than one group: `small` is never called
        let Ok(outboard) = build_with(len, GROUP_LEN, &leaf, || Ok([0u8; 32]));
        outboard
    }
}

/// Bytes [`Outboard::build_from`] reads at a time (64 groups).
const READ_BLOCK: usize = 64 * GROUP_LEN;

impl Outboard {
    /// Hash `data` (groups in parallel with rayon) and keep the tree above the groups.
    pub fn build(data: &[u8]) -> Self {
        let leaf = |offset: u64, len: usize, _: &mut [[Hash32; 2]]| {
            let start = offset as usize;
            Ok::<_, std::convert::Infallible>(chunk_cv(offset, &data[start..start + len]))
        };
        let Ok(outboard) = build_with(data.len() as u64, GROUP_LEN, &leaf, || {
            Ok(*blake3::hash(data).as_bytes())
        });
        outboard
    }

    /// [`Outboard::build`] reading the input from `source` 1 MiB at a time
    /// (in parallel): memory is one block per thread, whatever the input
    /// size. The source may compute its bytes (a replica from its piece and
    /// labels, column hashes from labels) instead of holding them.
    pub fn build_from<R: ReadAt + Sync + ?Sized>(source: &R) -> Result<Self> {
        let len = source
            .len_bytes()
            .map_err(|e| PorepError::Io { offset: 0, source: e })?;
        let read = |offset: u64, buf: &mut [u8]| {
            source
                .read_at(offset, buf)
                .map_err(|e| PorepError::Io { offset, source: e })
        };
        let leaf = |offset: u64, len: usize, out: &mut [[Hash32; 2]]| -> Result<ChainingValue> {
            let mut block = vec![0u8; len];
            read(offset, &mut block)?;
            Ok(slice_subtree_cv(&block, offset, out))
        };
        build_with(len, READ_BLOCK, &leaf, || {
            let mut all = [0u8; GROUP_LEN];
            let all = &mut all[..len as usize];
            read(0, all)?;
            Ok(*blake3::hash(all).as_bytes())
        })
    }

    /// Rebuild from stored parts, checking the entry count and that the entries hash to `root`.
    pub fn from_parts(len: u64, root: Hash32, parents: Vec<[Hash32; 2]>) -> Result<Self> {
        let expected = group_count(len) - 1;
        if parents.len() as u64 != expected {
            return Err(PorepError::SizeMismatch {
                what: "outboard entries",
                expected,
                got: parents.len() as u64,
            });
        }
        let ob = Self { len, root, parents };
        if !ob.parents.is_empty() {
            let [l, r] = ob.parents[0];
            if *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes() != root {
                return Err(PorepError::RootMismatch {
                    tree: TreeKind::Data,
                    chunk: 0,
                });
            }
        }
        Ok(ob)
    }

    /// Length of the input this outboard describes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an outboard of an empty input.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The BLAKE3 root (= `blake3::hash` of the input).
    pub fn root(&self) -> Hash32 {
        self.root
    }

    /// Pre-order interior entries `[left CV, right CV]` above the group level.
    pub fn parents(&self) -> &[[Hash32; 2]] {
        &self.parents
    }

    /// Size of the outboard in bytes (64 per interior node).
    pub fn size_bytes(&self) -> usize {
        self.parents.len() * 64
    }

    /// Byte range of the group holding `chunk`.
    pub fn group_range(&self, chunk: u64) -> (u64, u64) {
        let g = chunk / GROUP_CHUNKS as u64;
        let start = g * GROUP_LEN as u64;
        (start, (start + GROUP_LEN as u64).min(self.len))
    }

    /// Open `chunk` given the bytes of its group (`group_range(chunk)`).
    pub fn open_in_group(&self, chunk: u64, group: &[u8]) -> Result<ChunkOpening> {
        let last = chunk_count(self.len) - 1;
        if chunk > last {
            return Err(PorepError::ChunkOutOfRange {
                tree: TreeKind::Data,
                chunk,
                last,
            });
        }
        let (gstart, gend) = self.group_range(chunk);
        if group.len() as u64 != gend - gstart {
            return Err(PorepError::SizeMismatch {
                what: "chunk group length",
                expected: gend - gstart,
                got: group.len() as u64,
            });
        }
        let mut top_down: Vec<Hash32> = Vec::new();
        // Inside the group: hash the sibling subtrees from the group's bytes.
        let offset = chunk * CHUNK_LEN as u64;
        let (mut s, mut e) = (gstart, gend);
        while e - s > CHUNK_LEN as u64 {
            let mid = s + left_subtree_len(e - s);
            let slice = |a: u64, b: u64| &group[(a - gstart) as usize..(b - gstart) as usize];
            if offset < mid {
                top_down.push(chunk_cv(mid, slice(mid, e)));
                e = mid;
            } else {
                top_down.push(chunk_cv(s, slice(s, mid)));
                s = mid;
            }
        }
        // bottom-up: inside the group, then above it (from the outboard)
        top_down.reverse();
        top_down.extend(self.group_siblings(chunk / GROUP_CHUNKS as u64));
        let cstart = (offset - gstart) as usize;
        let cend = ((offset + CHUNK_LEN as u64).min(gend) - gstart) as usize;
        Ok(ChunkOpening {
            chunk_index: chunk,
            chunk: group[cstart..cend].to_vec(),
            siblings: top_down,
        })
    }

    /// Sibling chaining values of chunk group `g`, bottom-up from the group
    /// to the root's children, read from the outboard (no data needed).
    /// Empty for a single-group input; `g` past the end gives the last group's.
    pub fn group_siblings(&self, g: u64) -> Vec<Hash32> {
        let g = g.min(group_count(self.len) - 1) as usize;
        let mut top_down = Vec::new();
        let (mut s, mut e, mut pos) = (0usize, group_count(self.len) as usize, 0usize);
        while e - s > 1 {
            let left = left_count(e - s);
            let [l, r] = self.parents[pos];
            if g < s + left {
                top_down.push(r);
                e = s + left;
                pos += 1;
            } else {
                top_down.push(l);
                s += left;
                pos += left;
            }
        }
        top_down.reverse();
        top_down
    }

    /// Open whole chunk group `g` given its bytes: what verified retrieval
    /// sends, one sibling per level above the group.
    pub fn open_group(&self, g: u64, bytes: Vec<u8>) -> Result<GroupOpening> {
        let groups = group_count(self.len);
        if g >= groups {
            return Err(PorepError::ChunkOutOfRange {
                tree: TreeKind::Data,
                chunk: g * GROUP_CHUNKS as u64,
                last: chunk_count(self.len) - 1,
            });
        }
        let (a, b) = self.group_range(g * GROUP_CHUNKS as u64);
        if bytes.len() as u64 != b - a {
            return Err(PorepError::SizeMismatch {
                what: "chunk group length",
                expected: b - a,
                got: bytes.len() as u64,
            });
        }
        Ok(GroupOpening {
            group_index: g,
            bytes,
            siblings: self.group_siblings(g),
        })
    }

    /// Open `chunk` of `data` (the bytes this outboard was built from).
    pub fn open(&self, data: &[u8], chunk: u64) -> Result<ChunkOpening> {
        if data.len() as u64 != self.len {
            return Err(PorepError::SizeMismatch {
                what: "data length",
                expected: self.len,
                got: data.len() as u64,
            });
        }
        let (a, b) = self.group_range(chunk.min(chunk_count(self.len) - 1));
        self.open_in_group(chunk, &data[a as usize..b as usize])
    }

    /// Open `chunk` reading only its group from `source`.
    pub fn open_from<R: ReadAt + ?Sized>(&self, source: &R, chunk: u64) -> Result<ChunkOpening> {
        let (a, b) = self.group_range(chunk.min(chunk_count(self.len) - 1));
        let mut group = vec![0u8; (b - a) as usize];
        source
            .read_at(a, &mut group)
            .map_err(|source| PorepError::Io { offset: a, source })?;
        self.open_in_group(chunk, &group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        let mut v = vec![0u8; len];
        let mut x = blake3::Hasher::new();
        x.update(&[seed]);
        x.finalize_xof().fill(&mut v);
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Streaming in pieces of any size builds the same outboard.
        #[test]
        fn a_streamed_outboard_is_built_outboard(
            len in prop_oneof![0usize..40_000, 40_000usize..400_000],
            cuts in proptest::collection::vec(1usize..50_000, 0..12),
            seed: u8,
        ) {
            let data = bytes(len, seed);
            let mut b = OutboardBuilder::new();
            let mut at = 0;
            for c in cuts {
                let end = (at + c).min(len);
                b.update(&data[at..end]);
                at = end;
            }
            b.update(&data[at..]);
            prop_assert_eq!(b.len(), len as u64);
            prop_assert_eq!(b.finalize(), Outboard::build(&data));
        }
    }

    /// Exactly one group, and exactly two: the root cases.
    #[test]
    fn streamed_outboards_of_one_and_two_groups() {
        for len in [GROUP_LEN - 1, GROUP_LEN, GROUP_LEN + 1, 2 * GROUP_LEN] {
            let data = bytes(len, 3);
            let mut b = OutboardBuilder::new();
            b.update(&data);
            assert_eq!(b.finalize(), Outboard::build(&data), "{len}");
        }
    }

    /// Inputs of several read blocks, on and off block boundaries.
    #[test]
    fn build_from_spans_read_blocks() {
        for len in [
            READ_BLOCK,
            READ_BLOCK + 1,
            3 * READ_BLOCK + READ_BLOCK / 2 + 17,
            4 * READ_BLOCK,
        ] {
            let data = bytes(len, 7);
            assert_eq!(
                Outboard::build_from(data.as_slice()).unwrap(),
                Outboard::build(&data),
                "{len}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Building from a source reads the same tree as building from a slice.
        #[test]
        fn build_from_a_source_is_build(len in prop_oneof![0usize..40_000, 40_000usize..300_000], seed: u8) {
            let data = bytes(len, seed);
            let from = Outboard::build_from(data.as_slice()).unwrap();
            prop_assert_eq!(&from, &Outboard::build(&data));
            prop_assert_eq!(from.root(), *blake3::hash(&data).as_bytes());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Every group of every input opens and verifies; a flipped byte or a
        /// wrong index does not.
        #[test]
        fn group_opening_proptest(len in 1usize..300_000, seed in any::<u8>(), flip in any::<prop::sample::Index>()) {
            let data = bytes(len, seed);
            let ob = Outboard::build(&data);
            let root = *blake3::hash(&data).as_bytes();
            for g in 0..group_count(len as u64) {
                let (a, b) = ob.group_range(g * GROUP_CHUNKS as u64);
                let opening = ob.open_group(g, data[a as usize..b as usize].to_vec()).unwrap();
                prop_assert!(verify_group(&root, len as u64, TreeKind::Data, &opening).is_ok());
                let mut bad = opening.clone();
                let i = flip.index(bad.bytes.len());
                bad.bytes[i] ^= 1;
                prop_assert!(verify_group(&root, len as u64, TreeKind::Data, &bad).is_err());
                if group_count(len as u64) > 1 {
                    let moved = GroupOpening { group_index: (g + 1) % group_count(len as u64), ..opening };
                    prop_assert!(verify_group(&root, len as u64, TreeKind::Data, &moved).is_err());
                }
            }
        }
    }

    #[test]
    fn left_count_is_largest_power_below() {
        for n in 2..300usize {
            let want = (0..).map(|k| 1usize << k).take_while(|p| *p < n).last().unwrap();
            assert_eq!(left_count(n), want, "n={n}");
        }
    }

    #[test]
    fn root_matches_official_hash_at_boundaries() {
        for len in [
            0,
            1,
            1023,
            1024,
            1025,
            GROUP_LEN - 1,
            GROUP_LEN,
            GROUP_LEN + 1,
            3 * GROUP_LEN + 5,
            17 * GROUP_LEN,
        ] {
            let d = bytes(len, 1);
            assert_eq!(root(&d), *blake3::hash(&d).as_bytes(), "len {len}");
        }
    }

    #[test]
    fn outboard_is_below_one_percent() {
        let d = bytes(64 * GROUP_LEN, 2);
        let ob = Outboard::build(&d);
        assert!(ob.size_bytes() * 100 <= d.len());
        let rebuilt = Outboard::from_parts(ob.len(), ob.root(), ob.parents().to_vec()).unwrap();
        assert_eq!(rebuilt, ob);
    }

    #[test]
    fn wrong_leaf_and_wrong_path_are_rejected() {
        let d = bytes(5 * GROUP_LEN + 77, 3);
        let ob = Outboard::build(&d);
        let root = ob.root();
        let op = ob.open(&d, 41).unwrap();
        verify_chunk(&root, d.len() as u64, TreeKind::Data, &op).unwrap();
        let mut leaf = op.clone();
        leaf.chunk[7] ^= 1;
        assert!(matches!(
            verify_chunk(&root, d.len() as u64, TreeKind::Data, &leaf),
            Err(PorepError::RootMismatch { chunk: 41, .. })
        ));
        let mut path = op.clone();
        path.siblings[2][0] ^= 1;
        assert!(matches!(
            verify_chunk(&root, d.len() as u64, TreeKind::Data, &path),
            Err(PorepError::RootMismatch { .. })
        ));
        let mut short = op.clone();
        short.siblings.pop();
        assert!(matches!(
            verify_chunk(&root, d.len() as u64, TreeKind::Data, &short),
            Err(PorepError::PathLength { .. })
        ));
        let mut moved = op;
        moved.chunk_index = 40;
        assert!(matches!(
            verify_chunk(&root, d.len() as u64, TreeKind::Data, &moved),
            Err(PorepError::RootMismatch { .. })
        ));
        let mut far = ob.open(&d, 0).unwrap();
        far.chunk_index = 10_000;
        assert!(matches!(
            verify_chunk(&root, d.len() as u64, TreeKind::Data, &far),
            Err(PorepError::ChunkOutOfRange { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn tree_root_proptest(len in 0usize..200_000, seed in any::<u8>()) {
            let d = bytes(len, seed);
            prop_assert_eq!(Outboard::build(&d).root(), *blake3::hash(&d).as_bytes());
        }

        #[test]
        fn chunk_opening_proptest(len in 0usize..120_000, seed in any::<u8>(), pick in any::<u64>()) {
            let d = bytes(len, seed);
            let ob = Outboard::build(&d);
            let n = chunk_count(len as u64);
            // one random chunk, plus the first and last
            for chunk in [pick % n, 0, n - 1] {
                let op = ob.open(&d, chunk).unwrap();
                prop_assert!(verify_chunk(&ob.root(), len as u64, TreeKind::Data, &op).is_ok());
                let from_src = ob.open_from(d.as_slice(), chunk).unwrap();
                prop_assert_eq!(&from_src, &op);
            }
        }
    }

    #[test]
    fn every_chunk_of_a_ragged_input_verifies() {
        let d = bytes(7 * GROUP_LEN + 3 * CHUNK_LEN + 9, 9);
        let ob = Outboard::build(&d);
        for chunk in 0..chunk_count(d.len() as u64) {
            let op = ob.open(&d, chunk).unwrap();
            verify_chunk(&ob.root(), d.len() as u64, TreeKind::Data, &op).unwrap();
        }
    }
}
