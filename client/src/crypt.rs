//! Client-side encryption: what a private file becomes before it is
//! chunked, erasure-coded and handed to providers.
//!
//! **Construction.** A fresh random 256-bit file key and 19-byte nonce
//! prefix per file; XChaCha20-Poly1305 in the STREAM construction of Hoang,
//! Reyhanitabar, Rogaway and Vizár, exactly as RustCrypto's
//! `aead::stream::StreamBE32<XChaCha20Poly1305>` defines it (the 24-byte
//! nonce is the prefix, a 32-bit big-endian segment counter and a
//! last-segment flag byte).
//!
//! **Implementation.** XChaCha20-Poly1305 is ChaCha20-Poly1305 (RFC 8439)
//! under a subkey: HChaCha20 of the key and the nonce's first 16 bytes, with
//! the nonce's last 8 bytes as the inner nonce (draft-irtf-cfrg-xchacha).
//! Here the first 16 bytes are all prefix, so one subkey serves the whole
//! file. The subkey comes from RustCrypto's `chacha20::hchacha`; the bulk
//! ChaCha20-Poly1305 is `ring`'s (BoringSSL's assembly, already in the build
//! for QUIC), 3-4x the rate of the portable implementation on this
//! project's machines. A test checks every segment against RustCrypto's
//! `StreamBE32<XChaCha20Poly1305>`, byte for byte. The plaintext is
//! cut into [`SEGMENT`]-byte segments (the chunker's 1 MiB chunk size); each
//! becomes `SEGMENT + TAG` bytes of ciphertext, the last one shorter. Segment
//! position and the last flag are in every nonce, so a reordered, dropped,
//! repeated, truncated or spliced segment fails its tag. An empty file is one
//! empty last segment (16 bytes), so truncation to nothing is detected too.
//!
//! **Random access.** Segment `i` starts at ciphertext offset
//! `i * (SEGMENT + TAG)` and is opened on its own
//! (a segment's nonce is a function of its position alone), so a range get
//! fetches and decrypts only the segments the range touches
//! ([`cipher_range`], [`DecryptWriter`]).
//!
//! Pure: no I/O beyond the `Read`/`Write` adapters, randomness from the
//! caller (`FileKey::generate` takes an RNG).

use std::io::{self, Read, Write};
use std::ops::Range;

use crowd_chunker::{ChunkerKind, Cid, DagBuilder, DagParams, DagRoot, Discard, RAW};
use crowd_protocol::util::AlignedBuf;
use rayon::iter::{IndexedParallelIterator, IntoParallelRefMutIterator, ParallelIterator};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

/// Plaintext bytes per segment (the chunker's default chunk size).
pub const SEGMENT: usize = 1 << 20;
/// Poly1305 tag per segment.
pub const TAG: usize = 16;
/// Ciphertext bytes of a full segment.
pub const CIPHER_SEGMENT: usize = SEGMENT + TAG;
/// The scheme's name, as manifests record it.
pub const SCHEME: &str = "xchacha20poly1305-stream-be32";
/// Bytes of the STREAM nonce prefix (24 - 4 counter - 1 flag).
pub const NONCE_PREFIX: usize = 19;
/// Segments encrypted (by [`EncryptReader`]) or decrypted (by
/// [`DecryptWriter`]) at once, in parallel.
const BATCH: usize = 4;

/// Why ciphertext did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptError {
    /// A segment's tag did not verify: tampered, reordered, truncated, or the
    /// wrong key.
    #[error("ciphertext segment {segment} does not decrypt: tampered, truncated or the wrong key")]
    Tampered { segment: u64 },
    /// The ciphertext ended before its last segment.
    #[error("the ciphertext ends in the middle of segment {segment}")]
    Truncated { segment: u64 },
    /// A length that no plaintext encrypts to.
    #[error("{len} bytes is not the length of any ciphertext")]
    BadLength { len: u64 },
    /// The input changed length while it was encrypted.
    #[error("the input was {got} bytes, {want} expected (it changed while it was read)")]
    InputChanged { got: u64, want: u64 },
    #[error("encryption failed")]
    Seal,
}

/// A file's key: the secret and its nonce prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct FileKey {
    pub key: [u8; 32],
    pub nonce: [u8; NONCE_PREFIX],
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(..)")
    }
}

impl FileKey {
    /// A fresh key and nonce prefix.
    pub fn generate(rng: &mut impl rand::RngCore) -> Self {
        let mut key = [0u8; 32];
        let mut nonce = [0u8; NONCE_PREFIX];
        rng.fill_bytes(&mut key);
        rng.fill_bytes(&mut nonce);
        Self { key, nonce }
    }

    /// The ChaCha20-Poly1305 key every segment is sealed under: HChaCha20
    /// of the file key and the nonce's first 16 bytes (all prefix).
    fn segment_key(&self) -> Result<LessSafeKey, CryptError> {
        use chacha20::cipher::consts::U10;
        let sub = chacha20::hchacha::<U10>(&self.key.into(), self.nonce[..16].into());
        let key = UnboundKey::new(&CHACHA20_POLY1305, &sub).map_err(|_| CryptError::Seal)?;
        Ok(LessSafeKey::new(key))
    }

    /// Segment `index`'s inner nonce: four zero bytes, then the last 8
    /// bytes of its 24-byte STREAM nonce (prefix tail, counter, flag).
    fn segment_nonce(&self, index: u64, last: bool) -> Result<Nonce, CryptError> {
        let mut n = [0u8; 12];
        n[4..7].copy_from_slice(&self.nonce[16..]);
        n[7..11].copy_from_slice(&position(index)?.to_be_bytes());
        n[11] = u8::from(last);
        Ok(Nonce::assume_unique_for_key(n))
    }

    /// A public commitment to the key (a keyed hash of a fixed string):
    /// lets a capability holder check its key before fetching anything, and
    /// says nothing about the key.
    pub fn check_value(&self) -> [u8; 32] {
        *blake3::keyed_hash(&self.key, b"crowd file key check v1").as_bytes()
    }
}

/// Segments of a plaintext of `len` bytes (at least one).
pub fn segments(plain_len: u64) -> u64 {
    plain_len.div_ceil(SEGMENT as u64).max(1)
}

/// Ciphertext length of a `plain_len`-byte plaintext.
pub fn cipher_len(plain_len: u64) -> u64 {
    plain_len + segments(plain_len) * TAG as u64
}

/// Plaintext length of a `cipher_len`-byte ciphertext.
pub fn plain_len(stored: u64) -> Result<u64, CryptError> {
    let full = stored / CIPHER_SEGMENT as u64;
    let rest = stored % CIPHER_SEGMENT as u64;
    let plain = match rest {
        0 if full > 0 => full * SEGMENT as u64,
        r if r >= TAG as u64 => full * SEGMENT as u64 + r - TAG as u64,
        _ => return Err(CryptError::BadLength { len: stored }),
    };
    if cipher_len(plain) == stored {
        Ok(plain)
    } else {
        Err(CryptError::BadLength { len: stored })
    }
}

/// The segments `plain` touches, as a range of segment indices (an empty
/// range of a non-empty file touches none).
pub fn segment_span(plain: &Range<u64>, plain_len: u64) -> Range<u64> {
    if plain.start >= plain.end {
        return 0..0;
    }
    let first = plain.start / SEGMENT as u64;
    let last = (plain.end - 1) / SEGMENT as u64;
    first..(last + 1).min(segments(plain_len))
}

/// The ciphertext bytes that hold plaintext `plain` (whole segments).
pub fn cipher_range(plain: &Range<u64>, plain_len: u64) -> Range<u64> {
    let span = segment_span(plain, plain_len);
    if span.is_empty() {
        return 0..0;
    }
    let start = span.start * CIPHER_SEGMENT as u64;
    let end = (span.end * CIPHER_SEGMENT as u64).min(cipher_len(plain_len));
    start..end
}

fn position(segment: u64) -> Result<u32, CryptError> {
    u32::try_from(segment).map_err(|_| CryptError::Seal)
}

/// Encrypts segment `index` in place (`buf` holds its plaintext; the tag is
/// appended).
pub fn seal_segment(key: &FileKey, index: u64, last: bool, buf: &mut Vec<u8>) -> Result<(), CryptError> {
    buf.resize(buf.len() + TAG, 0);
    seal_into(key, index, last, buf)
}

/// Encrypts segment `index` in place in `slot`: its plaintext, then
/// [`TAG`] bytes that receive the tag.
fn seal_into(key: &FileKey, index: u64, last: bool, slot: &mut [u8]) -> Result<(), CryptError> {
    let (plain, tag_space) = slot.split_at_mut(slot.len().saturating_sub(TAG));
    let nonce = key.segment_nonce(index, last)?;
    let tag = key
        .segment_key()?
        .seal_in_place_separate_tag(nonce, Aad::empty(), plain)
        .map_err(|_| CryptError::Seal)?;
    tag_space.copy_from_slice(tag.as_ref());
    Ok(())
}

/// Decrypts segment `index` in place (`buf` holds its ciphertext; the tag
/// is removed).
pub fn open_segment(key: &FileKey, index: u64, last: bool, buf: &mut Vec<u8>) -> Result<(), CryptError> {
    let plain = open_in(key, index, last, buf)?;
    buf.truncate(plain);
    Ok(())
}

/// Decrypts segment `index` in place in `slot` (its ciphertext and tag);
/// returns the plaintext's length, at its start.
fn open_in(key: &FileKey, index: u64, last: bool, slot: &mut [u8]) -> Result<usize, CryptError> {
    let nonce = key.segment_nonce(index, last)?;
    Ok(key
        .segment_key()?
        .open_in_place(nonce, Aad::empty(), slot)
        .map_err(|_| CryptError::Tampered { segment: index })?
        .len())
}

/// Encrypts a whole plaintext in memory (tests and small inputs).
pub fn encrypt_bytes(key: &FileKey, plain: &[u8]) -> Result<Vec<u8>, CryptError> {
    let mut out = Vec::with_capacity(cipher_len(plain.len() as u64) as usize);
    let mut r = EncryptReader::new(plain, key.clone(), plain.len() as u64);
    r.read_to_end(&mut out).map_err(|e| from_io(&e))?;
    Ok(out)
}

/// Decrypts a whole ciphertext in memory.
pub fn decrypt_bytes(key: &FileKey, cipher: &[u8]) -> Result<Vec<u8>, CryptError> {
    let plain_len = plain_len(cipher.len() as u64)?;
    let mut out = Vec::new();
    let mut w = DecryptWriter::new(&mut out, key.clone(), plain_len, 0..plain_len);
    w.write_all(cipher).map_err(|e| from_io(&e))?;
    w.finish().map_err(|e| from_io(&e))?;
    Ok(out)
}

/// The [`CryptError`] inside an I/O error from these adapters, if any.
pub fn crypt_error(e: &io::Error) -> Option<&CryptError> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<CryptError>())
}

fn from_io(e: &io::Error) -> CryptError {
    crypt_error(e).cloned().unwrap_or(CryptError::Seal)
}

fn io_err(e: CryptError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Reads plaintext from `inner` (exactly `plain_len` bytes) and yields its
/// ciphertext. A read with room for whole segments gets them encrypted in
/// place: their plaintext is read straight into the caller's buffer and
/// sealed there, in parallel (the erasure encoder reads 16 MiB at a time,
/// so almost every byte goes this way, and is not copied again). Otherwise
/// segments are read into buffers kept from batch to batch (fresh ones cost
/// a page fault per 4 KiB: a third of the time in a profile), [`BATCH`] at
/// a time and encrypted in parallel — one at a time for the remainders of
/// in-place reads — and read out from there.
///
/// With [`EncryptReader::hashing_leaves`] it also hashes each segment's
/// plaintext as a leaf of the file's UnixFS DAG just before sealing it, on
/// the same threads and while it is in cache, so a put builds the file's
/// root without copying the plaintext to a second thread.
#[derive(Debug)]
pub struct EncryptReader<R> {
    inner: R,
    key: FileKey,
    plain_len: u64,
    /// Plaintext read so far.
    read: u64,
    /// Next segment to encrypt.
    next: u64,
    /// This batch's encrypted segments (buffers reused).
    bufs: Vec<Vec<u8>>,
    /// Segments of `bufs` in this batch.
    filled: usize,
    /// Where reading is: a segment of `bufs` and an offset in it.
    current: usize,
    at: usize,
    done: bool,
    /// The reader has taken whole segments in place: remainders are
    /// buffered one segment at a time.
    in_place: bool,
    /// The plaintext's DAG, leaf by leaf, when asked for.
    leaves: Option<Leaves>,
}

/// Where the root of a DAG built by an [`EncryptReader`] goes: called once,
/// after the last segment was sealed.
pub type OnRoot = Box<dyn FnOnce(DagRoot) + Send>;

/// An [`EncryptReader`]'s DAG and what to do with its root.
struct Leaves {
    dag: DagBuilder,
    on_root: OnRoot,
}

impl std::fmt::Debug for Leaves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaves")
            .field("dag", &self.dag)
            .finish_non_exhaustive()
    }
}

impl<R: Read> EncryptReader<R> {
    pub fn new(inner: R, key: FileKey, plain_len: u64) -> Self {
        Self {
            inner,
            key,
            plain_len,
            read: 0,
            next: 0,
            bufs: Vec::new(),
            filled: 0,
            current: 0,
            at: 0,
            done: false,
            in_place: false,
            leaves: None,
        }
    }

    /// Also builds the plaintext's DAG under `params` from the segments as
    /// they are sealed, and hands its root to `on_root` once the last one
    /// is (not called when reading stops before that, or fails). Possible
    /// when the DAG's chunks are fixed and [`SEGMENT`] bytes, and before
    /// anything was read.
    pub fn hashing_leaves(mut self, params: DagParams, on_root: OnRoot) -> Result<Self, LeafMismatch> {
        leaves_fit(&params, &(0..self.plain_len), self.plain_len)?;
        if self.read != 0 {
            return Err(LeafMismatch::Range);
        }
        self.leaves = Some(Leaves {
            dag: DagBuilder::new(params),
            on_root,
        });
        Ok(self)
    }

    /// With nothing buffered and room in `buf` for whole full-size
    /// segments: reads their plaintext into place and seals them there.
    /// `None`: not possible for this read.
    fn read_in_place(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        use rayon::prelude::*;
        let full = (self.plain_len / SEGMENT as u64).saturating_sub(self.next);
        let count = (buf.len() / CIPHER_SEGMENT).min(usize::try_from(full).unwrap_or(usize::MAX));
        if count == 0 {
            return Ok(None);
        }
        let out = &mut buf[..count * CIPHER_SEGMENT];
        for slot in out.chunks_mut(CIPHER_SEGMENT) {
            let got = fill(&mut self.inner, &mut slot[..SEGMENT])?;
            self.read += got as u64;
            if got != SEGMENT {
                return Err(io_err(CryptError::InputChanged {
                    got: self.read,
                    want: self.plain_len,
                }));
            }
        }
        let dag = self.leaves.as_mut().map(|l| &mut l.dag);
        seal_all(
            &self.key,
            self.next,
            segments(self.plain_len),
            dag,
            out.par_chunks_mut(CIPHER_SEGMENT),
        )?;
        self.next += count as u64;
        self.in_place = true;
        self.check_end()?;
        Ok(Some(count * CIPHER_SEGMENT))
    }

    /// After the last segment: the input must end where it was said to;
    /// then the DAG, when asked for, is complete.
    fn check_end(&mut self) -> io::Result<()> {
        if self.next == segments(self.plain_len) {
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? != 0 {
                return Err(io_err(CryptError::InputChanged {
                    got: self.read + 1,
                    want: self.plain_len,
                }));
            }
            self.done = true;
            if let Some(Leaves { dag, on_root }) = self.leaves.take() {
                on_root(dag.finish(&mut Discard).map_err(io::Error::other)?);
            }
        }
        Ok(())
    }

    fn refill(&mut self) -> io::Result<()> {
        let total = segments(self.plain_len);
        let batch = if self.in_place { 1 } else { BATCH as u64 };
        let count = (total - self.next).min(batch) as usize;
        while self.bufs.len() < count {
            self.bufs.push(Vec::with_capacity(CIPHER_SEGMENT));
        }
        for (i, buf) in self.bufs[..count].iter_mut().enumerate() {
            let start = (self.next + i as u64) * SEGMENT as u64;
            let len = (self.plain_len - start.min(self.plain_len)).min(SEGMENT as u64) as usize;
            buf.clear();
            (&mut self.inner).take(len as u64).read_to_end(buf)?;
            if buf.len() != len {
                return Err(io_err(CryptError::InputChanged {
                    got: self.read + buf.len() as u64,
                    want: self.plain_len,
                }));
            }
            self.read += len as u64;
        }
        for buf in &mut self.bufs[..count] {
            buf.resize(buf.len() + TAG, 0);
        }
        let slots = self.bufs[..count].par_iter_mut().map(|b| b.as_mut_slice());
        let dag = self.leaves.as_mut().map(|l| &mut l.dag);
        seal_all(&self.key, self.next, total, dag, slots)?;
        self.next += count as u64;
        self.filled = count;
        self.current = 0;
        self.at = 0;
        self.check_end()
    }
}

/// Seals consecutive segments from `first` (of `total`) in parallel, each in
/// place in its slot (plaintext, then [`TAG`] bytes for the tag), hashing
/// each plaintext as a leaf of `dag` first when given one.
fn seal_all<'a>(
    key: &FileKey,
    first: u64,
    total: u64,
    dag: Option<&mut DagBuilder>,
    slots: impl IndexedParallelIterator<Item = &'a mut [u8]>,
) -> io::Result<()> {
    let hash = dag.as_ref().map(|d| d.params().hash);
    let leaves: Vec<Option<(Cid, u64)>> = slots
        .enumerate()
        .map(|(i, slot)| {
            let index = first + i as u64;
            let plain = slot.len().saturating_sub(TAG);
            let leaf = hash.map(|h| (h.cid(RAW, &slot[..plain]), plain as u64));
            seal_into(key, index, index + 1 == total, slot)?;
            Ok(leaf)
        })
        .collect::<Result<_, CryptError>>()
        .map_err(io_err)?;
    if let Some(dag) = dag {
        for (cid, len) in leaves.into_iter().flatten() {
            dag.push_leaf(cid, len, &mut Discard).map_err(io::Error::other)?;
        }
    }
    Ok(())
}

/// Reads into all of `buf` unless the input ends first: how much was read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl<R: Read> Read for EncryptReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(segment) = self.bufs[..self.filled].get(self.current) {
                if self.at < segment.len() {
                    let n = buf.len().min(segment.len() - self.at);
                    buf[..n].copy_from_slice(&segment[self.at..self.at + n]);
                    self.at += n;
                    return Ok(n);
                }
                self.current += 1;
                self.at = 0;
                continue;
            }
            if self.done {
                return Ok(0);
            }
            if let Some(n) = self.read_in_place(buf)? {
                return Ok(n);
            }
            self.refill()?;
        }
    }
}

/// Takes ciphertext starting at a segment boundary and writes the part of
/// the plaintext inside `want` to `inner`; a segment is written only once
/// its tag verified. Complete segments are decrypted [`BATCH`] at a time,
/// in parallel, and written in order. [`DecryptWriter::finish`] fails
/// unless every segment `want` touches was complete.
///
/// With [`DecryptWriter::hashing_leaves`] it also hashes each segment it
/// opens as a leaf of the plaintext's UnixFS DAG (a segment is a 1 MiB
/// chunk), on the same threads and while the plaintext is still in cache,
/// so a get checks the file's root without copying the plaintext to a
/// second thread and reading it again there.
#[derive(Debug)]
pub struct DecryptWriter<W: PlainSink> {
    inner: W,
    key: FileKey,
    plain_len: u64,
    want: Range<u64>,
    /// The segment being collected and its bytes so far.
    segment: u64,
    end_segment: u64,
    /// Aligned: a whole segment's plaintext may be handed on as it is
    /// ([`PlainSink::take_segment`]).
    buf: AlignedBuf,
    /// Complete segments not yet decrypted: index and ciphertext.
    full: Vec<(u64, AlignedBuf)>,
    /// Segment buffers to fill again.
    spare: Vec<AlignedBuf>,
    /// The plaintext's DAG, leaf by leaf, when asked for.
    leaves: Option<DagBuilder>,
}

/// Where a [`DecryptWriter`] writes plaintext: any writer. One that can
/// take a whole segment's buffer as it is, instead of copying the bytes (a
/// get's write-behind, which hands it to the thread writing the output),
/// overrides [`PlainSink::take_segment`].
pub trait PlainSink: Write {
    /// Takes `segment` (a whole segment's plaintext) and leaves an empty
    /// buffer of at least its capacity in its place: `true`; or leaves it
    /// as it is: `false`, and the bytes are written.
    fn take_segment(&mut self, _segment: &mut AlignedBuf) -> io::Result<bool> {
        Ok(false)
    }
}

impl PlainSink for Vec<u8> {}

impl<T: PlainSink + ?Sized> PlainSink for &mut T {
    fn take_segment(&mut self, segment: &mut AlignedBuf) -> io::Result<bool> {
        (**self).take_segment(segment)
    }
}

/// Whether a [`DecryptWriter`] writing plaintext `want` of a `plain_len`
/// file can hash its segments as the leaves of a DAG under `params`
/// ([`DecryptWriter::hashing_leaves`]).
pub fn leaves_fit(params: &DagParams, want: &Range<u64>, plain_len: u64) -> Result<(), LeafMismatch> {
    if params.chunking.kind() != ChunkerKind::Fixed || params.chunking.chunk_size() != SEGMENT {
        return Err(LeafMismatch::Chunking);
    }
    if !want.start.is_multiple_of(SEGMENT as u64) || want.end != plain_len {
        return Err(LeafMismatch::Range);
    }
    Ok(())
}

/// Why a [`DecryptWriter`] cannot hash its segments as the DAG's leaves
/// (the caller checks the root from a copy instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafMismatch {
    #[error("the DAG's chunks are not the cipher's {SEGMENT}-byte segments")]
    Chunking,
    #[error("the plaintext written is not whole segments to the end of the file")]
    Range,
}

/// A buffer for one segment's ciphertext.
fn segment_buf() -> AlignedBuf {
    AlignedBuf::with_capacity(CIPHER_SEGMENT)
}

impl<W: PlainSink> DecryptWriter<W> {
    /// `want` is the plaintext range; the ciphertext written must start at
    /// [`cipher_range`]`(want).start`.
    pub fn new(inner: W, key: FileKey, plain_len: u64, want: Range<u64>) -> Self {
        let span = segment_span(&want, plain_len);
        let span = if plain_len == 0 { 0..1 } else { span };
        Self {
            inner,
            key,
            plain_len,
            want,
            segment: span.start,
            end_segment: span.end,
            buf: segment_buf(),
            full: Vec::with_capacity(BATCH),
            spare: Vec::new(),
            leaves: None,
        }
    }

    /// Also builds the plaintext's DAG, continuing `dag` (which holds the
    /// leaves before `want`: a resumed get's kept output), from the
    /// segments as they open. Possible when the DAG's chunks are fixed and
    /// [`SEGMENT`] bytes, and `want` starts at a segment and runs to the
    /// end of the file; [`Self::finish_with_dag`] returns the DAG's root.
    pub fn hashing_leaves(mut self, dag: DagBuilder) -> Result<Self, LeafMismatch> {
        leaves_fit(dag.params(), &self.want, self.plain_len)?;
        if dag.size() != self.want.start {
            return Err(LeafMismatch::Range);
        }
        self.leaves = Some(dag);
        Ok(self)
    }

    fn segment_cipher_len(&self, index: u64) -> usize {
        let start = index * SEGMENT as u64;
        let plain = (self.plain_len - start.min(self.plain_len)).min(SEGMENT as u64) as usize;
        plain + TAG
    }

    /// Decrypts the complete segments (in parallel) and writes, in order,
    /// those that verified up to the first that did not.
    fn open_full(&mut self) -> io::Result<()> {
        use rayon::prelude::*;
        let total = segments(self.plain_len);
        let key = &self.key;
        let hash = self.leaves.as_ref().map(|dag| dag.params().hash);
        // each segment opened and, when asked, hashed as a leaf right away
        let opened: Vec<Result<Option<Cid>, CryptError>> = self
            .full
            .par_iter_mut()
            .map(|(index, buf)| {
                let plain = open_in(key, *index, *index + 1 == total, buf.as_mut_slice())?;
                buf.truncate(plain);
                Ok(hash.map(|h| h.cid(RAW, buf.as_slice())))
            })
            .collect();
        let mut failed = None;
        for ((index, mut buf), opened) in self.full.drain(..).zip(opened) {
            if failed.is_none() {
                match opened {
                    Ok(leaf) => {
                        let start = index * SEGMENT as u64;
                        let len = buf.len();
                        let lo = self.want.start.max(start) - start;
                        let hi = self.want.end.min(start + len as u64).saturating_sub(start);
                        // `hashing_leaves` made sure each segment is written whole
                        if let (Some(cid), Some(dag)) = (leaf, &mut self.leaves) {
                            dag.push_leaf(cid, len as u64, &mut Discard)
                                .map_err(io::Error::other)?;
                        }
                        let whole = lo == 0 && hi == len as u64 && len > 0;
                        if lo < hi && !(whole && self.inner.take_segment(&mut buf)?) {
                            self.inner.write_all(&buf.as_slice()[lo as usize..hi as usize])?;
                        }
                    }
                    Err(e) => failed = Some(e),
                }
            }
            buf.clear();
            self.spare.push(buf);
        }
        failed.map_or(Ok(()), |e| Err(io_err(e)))
    }

    /// Checks that every segment arrived and flushes `inner`.
    pub fn finish(self) -> io::Result<W> {
        self.finish_with_dag().map(|(inner, _)| inner)
    }

    /// [`Self::finish`], and the root of the plaintext's DAG when
    /// [`Self::hashing_leaves`] asked for it.
    pub fn finish_with_dag(mut self) -> io::Result<(W, Option<DagRoot>)> {
        self.open_full()?;
        if self.segment < self.end_segment {
            return Err(io_err(CryptError::Truncated {
                segment: self.segment,
            }));
        }
        self.inner.flush()?;
        let root = match self.leaves {
            Some(dag) => Some(dag.finish(&mut Discard).map_err(io::Error::other)?),
            None => None,
        };
        Ok((self.inner, root))
    }
}

impl<W: PlainSink> Write for DecryptWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let given = data.len();
        while !data.is_empty() {
            if self.segment >= self.end_segment {
                return Err(io_err(CryptError::BadLength {
                    len: self.segment * CIPHER_SEGMENT as u64 + data.len() as u64,
                }));
            }
            let need = self.segment_cipher_len(self.segment) - self.buf.len();
            let take = need.min(data.len());
            self.buf.extend(&data[..take]);
            data = &data[take..];
            if take == need {
                let next = self
                    .spare
                    .pop()
                    .filter(|b| b.capacity() >= CIPHER_SEGMENT)
                    .unwrap_or_else(segment_buf);
                let full = std::mem::replace(&mut self.buf, next);
                self.full.push((self.segment, full));
                self.segment += 1;
                if self.full.len() == BATCH || self.segment == self.end_segment {
                    self.open_full()?;
                }
            }
        }
        Ok(given)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crowd_chunker::HashAlg;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn key(seed: u64) -> FileKey {
        FileKey::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 131 % 251) as u8).collect()
    }

    /// The same STREAM as RustCrypto's `StreamBE32<XChaCha20Poly1305>`, in
    /// every segment: first, middle and last, short and empty.
    #[test]
    fn segments_equal_rustcrypto_stream_be32_xchacha20poly1305() {
        use chacha20poly1305::aead::stream::{NewStream, StreamBE32, StreamPrimitive};
        use chacha20poly1305::aead::KeyInit;
        use chacha20poly1305::XChaCha20Poly1305;
        for (seed, len) in [
            (1, 0),
            (2, 1),
            (3, SEGMENT),
            (4, 2 * SEGMENT + 77),
            (5, 3 * SEGMENT),
        ] {
            let k = key(seed);
            let plain = data(len);
            let stream = StreamBE32::from_aead(XChaCha20Poly1305::new(&k.key.into()), (&k.nonce).into());
            let total = segments(len as u64);
            let mut expect = Vec::new();
            for i in 0..total {
                let start = (i as usize * SEGMENT).min(len);
                let mut seg = plain[start..(start + SEGMENT).min(len)].to_vec();
                stream
                    .encrypt_in_place(i as u32, i + 1 == total, b"", &mut seg)
                    .unwrap();
                expect.extend_from_slice(&seg);
            }
            assert_eq!(encrypt_bytes(&k, &plain).unwrap(), expect, "{len} bytes");
            assert_eq!(decrypt_bytes(&k, &expect).unwrap(), plain, "{len} bytes");
        }
    }

    #[test]
    fn lengths_roundtrip_and_impossible_lengths_are_refused() {
        for plain in [
            0u64,
            1,
            15,
            16,
            SEGMENT as u64 - 1,
            SEGMENT as u64,
            SEGMENT as u64 + 1,
            5 << 20,
        ] {
            assert_eq!(plain_len(cipher_len(plain)).unwrap(), plain, "{plain}");
        }
        assert_eq!(cipher_len(0), 16);
        for bad in [0u64, 1, 15, CIPHER_SEGMENT as u64 + 3] {
            assert!(plain_len(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn segments_are_bound_to_their_position_and_the_last_flag() {
        let k = key(1);
        let plain = data(3 * SEGMENT + 100);
        let c = encrypt_bytes(&k, &plain).unwrap();
        assert_eq!(c.len() as u64, cipher_len(plain.len() as u64));
        assert_eq!(decrypt_bytes(&k, &c).unwrap(), plain);
        // swap segments 0 and 1
        let mut swapped = c.clone();
        let (a, b) = swapped.split_at_mut(CIPHER_SEGMENT);
        a.swap_with_slice(&mut b[..CIPHER_SEGMENT]);
        assert_eq!(
            decrypt_bytes(&k, &swapped),
            Err(CryptError::Tampered { segment: 0 })
        );
        // truncate to whole segments: segment 2 was not the last
        let cut = &c[..3 * CIPHER_SEGMENT];
        assert_eq!(decrypt_bytes(&k, cut), Err(CryptError::Tampered { segment: 2 }));
        // one flipped bit
        let mut flipped = c.clone();
        flipped[CIPHER_SEGMENT + 7] ^= 1;
        assert_eq!(
            decrypt_bytes(&k, &flipped),
            Err(CryptError::Tampered { segment: 1 })
        );
        // another key
        assert_eq!(
            decrypt_bytes(&key(2), &c),
            Err(CryptError::Tampered { segment: 0 })
        );
        // splicing another file's segment (same key, other nonce prefix)
        let mut other = key(1);
        other.nonce[0] ^= 1;
        let c2 = encrypt_bytes(&other, &plain).unwrap();
        let mut spliced = c.clone();
        spliced[..CIPHER_SEGMENT].copy_from_slice(&c2[..CIPHER_SEGMENT]);
        assert_eq!(
            decrypt_bytes(&k, &spliced),
            Err(CryptError::Tampered { segment: 0 })
        );
        // an empty file is one authenticated segment
        let empty = encrypt_bytes(&k, &[]).unwrap();
        assert_eq!(empty.len(), TAG);
        assert_eq!(decrypt_bytes(&k, &empty).unwrap(), Vec::<u8>::new());
        assert!(decrypt_bytes(&k, &[]).is_err());
    }

    #[test]
    fn nothing_unverified_is_written_and_a_short_stream_fails_finish() {
        let k = key(3);
        let plain = data(2 * SEGMENT + 5);
        let mut c = encrypt_bytes(&k, &plain).unwrap();
        c[2 * CIPHER_SEGMENT + 1] ^= 0x80;
        let mut out = Vec::new();
        let mut w = DecryptWriter::new(&mut out, k.clone(), plain.len() as u64, 0..plain.len() as u64);
        let e = w.write_all(&c).unwrap_err();
        assert_eq!(crypt_error(&e), Some(&CryptError::Tampered { segment: 2 }));
        drop(w);
        assert_eq!(out, plain[..2 * SEGMENT]);
        // across batches: a bad segment in the second batch stops the
        // output at it, after every verified segment before it
        let long = data(9 * SEGMENT + 3);
        let mut c = encrypt_bytes(&k, &long).unwrap();
        c[6 * CIPHER_SEGMENT + 7] ^= 1;
        let mut out = Vec::new();
        let mut w = DecryptWriter::new(&mut out, k.clone(), long.len() as u64, 0..long.len() as u64);
        let e = w.write_all(&c).unwrap_err();
        assert_eq!(crypt_error(&e), Some(&CryptError::Tampered { segment: 6 }));
        drop(w);
        assert!(out == long[..6 * SEGMENT]);
        let c = encrypt_bytes(&k, &plain).unwrap();
        let mut out = Vec::new();
        let mut w = DecryptWriter::new(&mut out, k, plain.len() as u64, 0..plain.len() as u64);
        w.write_all(&c[..CIPHER_SEGMENT + 10]).unwrap();
        let e = w.finish().unwrap_err();
        assert_eq!(crypt_error(&e), Some(&CryptError::Truncated { segment: 1 }));
    }

    #[test]
    fn an_input_that_changes_length_is_refused() {
        let k = key(4);
        let plain = data(1000);
        let mut out = Vec::new();
        let e = EncryptReader::new(&plain[..], k.clone(), 999)
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(
            matches!(crypt_error(&e), Some(CryptError::InputChanged { .. })),
            "{e}"
        );
        let e = EncryptReader::new(&plain[..], k, 1001)
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(
            matches!(crypt_error(&e), Some(CryptError::InputChanged { .. })),
            "{e}"
        );
        // the same when whole segments are read in place
        let long = data(3 * SEGMENT);
        for said in [3 * SEGMENT as u64 - 5, 3 * SEGMENT as u64 + 5, 4 * SEGMENT as u64] {
            let mut out = Vec::with_capacity(5 * CIPHER_SEGMENT);
            let e = EncryptReader::new(&long[..], key(5), said)
                .read_to_end(&mut out)
                .unwrap_err();
            assert!(
                matches!(crypt_error(&e), Some(CryptError::InputChanged { .. })),
                "{said}: {e}"
            );
        }
    }

    /// Sizes of reads or writes: small ones, and ones of a segment or more.
    fn write_sizes() -> impl Strategy<Value = Vec<usize>> {
        proptest::collection::vec(
            prop_oneof![1usize..70_000, (CIPHER_SEGMENT - 1)..(3 * CIPHER_SEGMENT + 5)],
            1..6,
        )
    }

    /// Everything `r` gives, read into buffers of `sizes` in turn.
    fn read_in_sizes(r: &mut impl Read, sizes: &[usize]) -> Vec<u8> {
        let mut got = Vec::new();
        for size in sizes.iter().cycle() {
            let mut b = vec![0u8; *size];
            let n = r.read(&mut b).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&b[..n]);
        }
        got
    }

    /// A key, `len` bytes of plaintext, fixed-segment DAG parameters and
    /// the chunker's DAG of that plaintext under them.
    fn leaf_case(len: usize, max_links: usize, seed: u64) -> (FileKey, Vec<u8>, DagParams, DagRoot) {
        let plain = data(len);
        let params = leaf_params(max_links);
        let want = crowd_chunker::build_from_reader(&plain[..], &params, &mut Discard).unwrap();
        (key(seed), plain, params, want)
    }

    /// Fixed 1 MiB chunks (the segments), `max_links` per parent.
    fn leaf_params(max_links: usize) -> DagParams {
        let chunking = crowd_chunker::ChunkParams::new(ChunkerKind::Fixed, SEGMENT).unwrap();
        DagParams::new(chunking, max_links, HashAlg::Blake3).unwrap()
    }

    /// Segments are leaves only when they are the DAG's chunks and the
    /// writer gets whole segments to the end of the file; a segment that
    /// does not open still fails the writer.
    #[test]
    fn leaves_are_hashed_only_from_whole_segments_of_the_chunk_size() {
        let k = key(9);
        let len = 3 * SEGMENT as u64 + 10;
        let dag = || DagBuilder::new(leaf_params(174));
        let writer = |want: Range<u64>| DecryptWriter::new(Vec::new(), k.clone(), len, want);
        let rabin = crowd_chunker::ChunkParams::new(ChunkerKind::FastCdc, SEGMENT).unwrap();
        let other = [
            DagParams::new(rabin, 174, HashAlg::Blake3).unwrap(),
            DagParams::new(
                crowd_chunker::ChunkParams::new(ChunkerKind::Fixed, 1 << 18).unwrap(),
                174,
                HashAlg::Blake3,
            )
            .unwrap(),
        ];
        for params in &other {
            assert_eq!(
                writer(0..len)
                    .hashing_leaves(DagBuilder::new(*params))
                    .unwrap_err(),
                LeafMismatch::Chunking
            );
        }
        // a DAG of other than the bytes before `want`
        let seg = SEGMENT as u64;
        assert_eq!(
            writer(seg..len).hashing_leaves(dag()).unwrap_err(),
            LeafMismatch::Range
        );
        for want in [1..len, 0..len - 1, SEGMENT as u64 + 1..len] {
            assert_eq!(
                writer(want.clone()).hashing_leaves(dag()).unwrap_err(),
                LeafMismatch::Range,
                "{want:?}"
            );
        }
        let mut c = encrypt_bytes(&k, &data(len as usize)).unwrap();
        c[CIPHER_SEGMENT + 5] ^= 1;
        let mut w = writer(0..len).hashing_leaves(dag()).unwrap();
        let err = w
            .write_all(&c)
            .and_then(|()| w.flush())
            .err()
            .or_else(|| w.finish_with_dag().err());
        assert_eq!(from_io(&err.unwrap()), CryptError::Tampered { segment: 1 });
    }

    /// A reader hashes its segments as leaves only when they are the DAG's
    /// chunks and before it read anything; a root is handed on only once
    /// the last segment is sealed, and not when the input is not the length
    /// it was said to be.
    #[test]
    fn a_reader_hashes_leaves_of_the_chunk_size_and_roots_only_a_whole_input() {
        let k = key(4);
        let len = 2 * SEGMENT + 3;
        let plain = data(len);
        let rooted = || -> (OnRoot, std::sync::mpsc::Receiver<DagRoot>) {
            let (tx, rx) = std::sync::mpsc::channel();
            (Box::new(move |root| tx.send(root).unwrap()), rx)
        };
        let reader = |n: usize| EncryptReader::new(&plain[..n], k.clone(), len as u64);
        let small = crowd_chunker::ChunkParams::new(ChunkerKind::Fixed, 1 << 18).unwrap();
        let other = DagParams::new(small, 174, HashAlg::Blake3).unwrap();
        assert_eq!(
            reader(len).hashing_leaves(other, rooted().0).unwrap_err(),
            LeafMismatch::Chunking
        );
        let mut started = reader(len);
        started.read_exact(&mut [0u8; 10]).unwrap();
        assert_eq!(
            started.hashing_leaves(leaf_params(174), rooted().0).unwrap_err(),
            LeafMismatch::Range
        );
        // a read that stops short of the end: no root yet
        let (on_root, roots) = rooted();
        let mut r = reader(len).hashing_leaves(leaf_params(174), on_root).unwrap();
        r.read_exact(&mut vec![0u8; CIPHER_SEGMENT]).unwrap();
        assert!(roots.try_recv().is_err());
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        let want = crowd_chunker::build_from_slice(&plain, &leaf_params(174), &mut Discard).unwrap();
        assert_eq!(roots.try_recv().unwrap(), want);
        // an input shorter than said, or longer: an error and no root
        for (n, extra) in [(len - 1, 0), (len, 1)] {
            let (on_root, roots) = rooted();
            let mut longer = plain.clone();
            longer.extend(std::iter::repeat_n(0, extra));
            let r = EncryptReader::new(&longer[..n + extra], k.clone(), len as u64);
            let mut r = r.hashing_leaves(leaf_params(174), on_root).unwrap();
            let err = r.read_to_end(&mut Vec::new()).unwrap_err();
            assert!(matches!(from_io(&err), CryptError::InputChanged { .. }), "{err}");
            assert!(roots.try_recv().is_err());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Any range decrypts from just the segments `cipher_range` names.
        #[test]
        fn range_decrypt_proptest(len in 0usize..(3 * SEGMENT + 77), a in 0usize..4_000_000, b in 0usize..4_000_000, seed: u64) {
            let k = key(seed);
            let plain = data(len);
            let c = encrypt_bytes(&k, &plain).unwrap();
            let (lo, hi) = (a.min(b).min(len), a.max(b).min(len));
            let want = lo as u64..hi as u64;
            let cr = cipher_range(&want, len as u64);
            let mut out = Vec::new();
            let mut w = DecryptWriter::new(&mut out, k.clone(), len as u64, want.clone());
            w.write_all(&c[cr.start as usize..cr.end as usize]).unwrap();
            w.finish().unwrap();
            prop_assert_eq!(&out[..], &plain[lo..hi]);
        }

        /// Reads of any sizes — whole segments encrypted in place, the
        /// rest through the buffers — yield the ciphertext of sealing each
        /// segment on its own (which the RustCrypto test above pins).
        #[test]
        fn reads_of_any_size_yield_the_same_ciphertext(
            len in prop_oneof![0usize..(5 * SEGMENT + 99), Just(3 * SEGMENT), Just(SEGMENT)],
            sizes in write_sizes(),
            seed: u64,
        ) {
            let k = key(seed);
            let plain = data(len);
            let total = segments(len as u64);
            let mut want = Vec::new();
            for i in 0..total {
                let at = i as usize * SEGMENT;
                let mut segment = plain[at.min(len)..(at + SEGMENT).min(len)].to_vec();
                seal_segment(&k, i, i + 1 == total, &mut segment).unwrap();
                want.extend_from_slice(&segment);
            }
            let mut r = EncryptReader::new(&plain[..], k, len as u64);
            let got = read_in_sizes(&mut r, &sizes);
            prop_assert!(got == want, "{} bytes of {}", got.len(), want.len());
        }

        /// A reader hashing its segments' plaintext as leaves while it
        /// seals them builds the DAG the chunker builds from the plaintext,
        /// whatever the read sizes, and yields the same ciphertext as
        /// without hashing.
        #[test]
        fn leaves_hashed_while_encrypting_make_the_chunkers_root_proptest(
            len in prop_oneof![0usize..(5 * SEGMENT + 99), Just(3 * SEGMENT), Just(SEGMENT), Just(0)],
            max_links in 2usize..5,
            sizes in write_sizes(),
            seed: u64,
        ) {
            let (k, plain, params, want) = leaf_case(len, max_links, seed);
            let (tx, roots) = std::sync::mpsc::channel();
            let mut r = EncryptReader::new(&plain[..], k.clone(), len as u64)
                .hashing_leaves(params, Box::new(move |root| tx.send(root).unwrap()))
                .unwrap();
            let got = read_in_sizes(&mut r, &sizes);
            prop_assert_eq!(roots.try_recv().ok().map(|d| d.cid), Some(want.cid));
            prop_assert!(got == encrypt_bytes(&k, &plain).unwrap(), "{} bytes", got.len());
        }

        /// A writer hashing its segments as leaves, after the leaves of a
        /// kept prefix of whole segments, builds the DAG the chunker builds
        /// from the whole plaintext, whatever the write sizes; and writes
        /// the same bytes as without hashing.
        #[test]
        fn leaves_hashed_while_decrypting_make_the_chunkers_root_proptest(
            len in prop_oneof![0usize..(6 * SEGMENT + 99), Just(4 * SEGMENT), Just(SEGMENT), Just(0)],
            kept_segments in 0usize..4,
            max_links in 2usize..5,
            sizes in write_sizes(),
            seed: u64,
        ) {
            let (k, plain, params, want) = leaf_case(len, max_links, seed);
            let kept = (kept_segments * SEGMENT).min(len / SEGMENT * SEGMENT);
            let mut dag = DagBuilder::new(params);
            dag.push_fixed_from_reader(&plain[..kept], &mut Discard).unwrap();
            let c = encrypt_bytes(&k, &plain).unwrap();
            let range = kept as u64..len as u64;
            // an empty file is one empty segment: its tag
            let cr = if len == 0 { 0..c.len() as u64 } else { cipher_range(&range, len as u64) };
            let mut out = Vec::new();
            let mut w = DecryptWriter::new(&mut out, k.clone(), len as u64, range)
                .hashing_leaves(dag)
                .unwrap();
            crate::get::pipeline::tests::write_in_parts(&mut w, &c[cr.start as usize..cr.end as usize], &sizes);
            let (_, got) = w.finish_with_dag().unwrap();
            prop_assert_eq!(got.map(|d| d.cid), Some(want.cid));
            prop_assert!(out == plain[kept..], "{} bytes of {}", out.len(), len - kept);
        }

        #[test]
        fn roundtrip_proptest(plain in proptest::collection::vec(any::<u8>(), 0..5000), seed: u64) {
            let k = key(seed);
            let c = encrypt_bytes(&k, &plain).unwrap();
            prop_assert_eq!(c.len() as u64, cipher_len(plain.len() as u64));
            prop_assert_eq!(decrypt_bytes(&k, &c).unwrap(), plain);
        }
    }
}
