//! Random-access piece sources for the decoder and repair.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::error::{ErasureError, Result};
use crate::layout::Layout;

/// Where the decoder reads a piece from: memory, a file, or a byte range of
/// a piece fetched from the network.
///
/// Reads must be repeatable: the decoder may hash a source first and read
/// it again to decode, so the bytes must not change during a call.
pub trait PieceSource {
    /// Number of bytes readable from offset 0. For a complete piece this is
    /// the piece length; a source that holds a range ending at `e` reports
    /// `e`.
    fn len(&self) -> io::Result<u64>;

    /// Whether [`len`](Self::len) is zero.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Fill all of `buf` with the bytes at `offset..offset + buf.len()`.
    /// Bytes the source does not hold are an error (for example
    /// [`io::ErrorKind::UnexpectedEof`]), and the piece is then treated as
    /// missing.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// The whole piece, if it is in memory: lets the decoder hash and copy
    /// without an intermediate buffer.
    fn as_bytes(&self) -> Option<&[u8]> {
        None
    }

    /// The `len` bytes at `offset`, if the source holds them all in memory
    /// in shared blocks: lets the decoder write them out without copying
    /// them to a buffer first. `None` (the default): read them with
    /// [`read_at`](Self::read_at).
    fn lend(&self, _offset: u64, _len: usize) -> Option<Lent> {
        None
    }
}

/// Bytes a [`PieceSource`] lends the decoder: parts of shared blocks, in
/// order.
#[derive(Debug, Default, Clone)]
pub struct Lent {
    parts: Vec<(Arc<Vec<u8>>, Range<usize>)>,
    len: usize,
}

impl Lent {
    /// Appends `block[range]`; `false` (and nothing appended) when the
    /// range is not inside the block.
    pub fn push(&mut self, block: Arc<Vec<u8>>, range: Range<usize>) -> bool {
        if range.start > range.end || range.end > block.len() {
            return false;
        }
        self.len += range.len();
        self.parts.push((block, range));
        true
    }

    /// Bytes lent in all.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes, part by part.
    pub fn slices(&self) -> impl Iterator<Item = &[u8]> {
        self.parts.iter().map(|(b, r)| &b[r.clone()])
    }
}

fn slice_read_at(bytes: &[u8], offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let src = usize::try_from(offset)
        .ok()
        .and_then(|o| bytes.get(o..o.checked_add(buf.len())?))
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past end of piece"))?;
    buf.copy_from_slice(src);
    Ok(())
}

impl PieceSource for [u8] {
    fn len(&self) -> io::Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        slice_read_at(self, offset, buf)
    }
    fn as_bytes(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl PieceSource for Vec<u8> {
    fn len(&self) -> io::Result<u64> {
        Ok(Vec::len(self) as u64)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        slice_read_at(self, offset, buf)
    }
    fn as_bytes(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl PieceSource for File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }
}

impl<T: PieceSource + ?Sized> PieceSource for &T {
    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn as_bytes(&self) -> Option<&[u8]> {
        (**self).as_bytes()
    }
    fn lend(&self, offset: u64, len: usize) -> Option<Lent> {
        (**self).lend(offset, len)
    }
}

impl<T: PieceSource + ?Sized> PieceSource for Box<T> {
    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn as_bytes(&self) -> Option<&[u8]> {
        (**self).as_bytes()
    }
    fn lend(&self, offset: u64, len: usize) -> Option<Lent> {
        (**self).lend(offset, len)
    }
}

/// A byte range `offset..offset + bytes.len()` of a piece, held in memory:
/// what a range fetch from a provider returns. It cannot be checked against
/// the whole-piece hash, so decode with [`crate::Verification::Trusted`]
/// after verifying the bytes in transit. Reads outside the range fail and
/// the piece is treated as missing.
#[derive(Debug, Clone, Copy)]
pub struct PieceRange<'a> {
    /// Offset of `bytes` within the piece.
    pub offset: u64,
    /// The bytes held.
    pub bytes: &'a [u8],
}

impl PieceSource for PieceRange<'_> {
    fn len(&self) -> io::Result<u64> {
        Ok(self.offset + self.bytes.len() as u64)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let rel = offset
            .checked_sub(self.offset)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "read before the held range"))?;
        slice_read_at(self.bytes, rel, buf)
    }
}

/// Buffer size for hashing sources that are not in memory.
const HASH_BUF: usize = 4 << 20;

/// Inputs at least this long are hashed with BLAKE3's multi-threaded mode.
pub(crate) const RAYON_HASH_MIN: usize = 128 << 10;

pub(crate) fn hash_update(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    if bytes.len() >= RAYON_HASH_MIN {
        hasher.update_rayon(bytes);
    } else {
        hasher.update(bytes);
    }
}

/// Length and BLAKE3 hash of everything a source holds, read `expected_len`
/// bytes at most (a longer source is reported by its length, unhashed).
pub(crate) fn hash_source<S: PieceSource + ?Sized>(
    source: &S,
    expected_len: u64,
) -> io::Result<Option<blake3::Hash>> {
    if source.len()? != expected_len {
        return Ok(None);
    }
    let mut hasher = blake3::Hasher::new();
    if let Some(bytes) = source.as_bytes() {
        hash_update(&mut hasher, bytes);
        return Ok(Some(hasher.finalize()));
    }
    let buf_len = usize::try_from(expected_len).map_or(HASH_BUF, |l| l.min(HASH_BUF));
    let mut buf = vec![0u8; buf_len];
    let mut offset = 0u64;
    while offset < expected_len {
        let n = usize::try_from(expected_len - offset).map_or(buf_len, |r| r.min(buf_len));
        source.read_at(offset, &mut buf[..n])?;
        hash_update(&mut hasher, &buf[..n]);
        offset += n as u64;
    }
    Ok(Some(hasher.finalize()))
}

/// Check that `source` holds exactly piece `piece` of `layout`: its length
/// and BLAKE3 hash. Returns [`ErasureError::CorruptPiece`] on a mismatch.
pub fn verify_piece<S: PieceSource + ?Sized>(layout: &Layout, piece: usize, source: &S) -> Result<()> {
    let info = layout.pieces().get(piece).ok_or(ErasureError::PieceIndex {
        index: piece,
        total: layout.pieces().len(),
    })?;
    match hash_source(source, info.len)? {
        Some(h) if h == info.hash => Ok(()),
        _ => Err(ErasureError::CorruptPiece { piece }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn sources_read_the_same_bytes() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let range = PieceRange {
            offset: 100,
            bytes: &data[100..600],
        };
        let mut a = [0u8; 50];
        let mut b = [0u8; 50];
        let mut c = [0u8; 50];
        data.read_at(200, &mut a).unwrap();
        PieceSource::read_at(&f, 200, &mut b).unwrap();
        range.read_at(200, &mut c).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(&a[..], &data[200..250]);
        assert!(range.read_at(50, &mut c).is_err());
        assert!(range.read_at(580, &mut c).is_err());
        assert!(data.read_at(9_990, &mut a).is_err());
        assert!(PieceSource::read_at(&f, 9_990, &mut a).is_err());
        assert!(data.read_at(u64::MAX, &mut a).is_err());
        assert_eq!(PieceSource::len(&f).unwrap(), 10_000);
        assert_eq!(hash_source(&f, 10_000).unwrap(), Some(blake3::hash(&data)));
        assert_eq!(hash_source(&f, 9_999).unwrap(), None);
    }
}
