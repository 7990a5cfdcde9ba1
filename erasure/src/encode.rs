//! Streaming encoder: any `Read` in, `k + m` pieces out, one segment at a
//! time.

use std::io::{self, Read, Write};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::codec::Codec;
use crate::error::{ErasureError, Result};
use crate::layout::{Layout, Params, PieceInfo};
use crate::source::hash_update;

/// First allocation of the segment buffer; it grows to the segment size
/// only if the input is longer, so a small file does not cost a full
/// segment of memory.
const INITIAL_BUF: usize = 1 << 20;

/// One shard as it leaves the encoder: bytes `offset..offset + bytes.len()`
/// of piece `piece`, which is shard `piece` of segment `segment`.
#[derive(Debug, Clone, Copy)]
pub struct ShardRef<'a> {
    /// Piece (provider) index: `0..k` data, `k..k+m` parity.
    pub piece: usize,
    /// Segment index.
    pub segment: u64,
    /// Offset of these bytes within the piece.
    pub offset: u64,
    /// The shard.
    pub bytes: &'a [u8],
}

/// Erasure-codes files with fixed [`Params`]; the Reed-Solomon matrices are
/// built once and reused for every segment and every file.
#[derive(Debug)]
pub struct Encoder {
    params: Params,
    codec: Codec,
    /// Segment buffers kept between calls: fresh memory costs a page fault
    /// and zeroing per page, as much as coding it. Freed with the encoder.
    spare: Mutex<Buffers>,
}

/// The encoder's working memory: two segments of data and one of parity.
#[derive(Debug, Default)]
struct Buffers {
    data: Vec<u8>,
    next: Vec<u8>,
    parity: Vec<u8>,
}

impl Encoder {
    /// Build an encoder (and its codec) for `params`.
    pub fn new(params: Params) -> Result<Self> {
        Ok(Self {
            codec: Codec::new(params.data_shards(), params.parity_shards())?,
            params,
            spare: Mutex::new(Buffers::default()),
        })
    }

    /// The parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    /// Encode everything `reader` yields. For every segment, in order,
    /// `emit` receives the shards of pieces `0..k+m` in order; piece hashes
    /// are computed on the way and returned in the [`Layout`].
    ///
    /// The next segment is read (on another core) while the current one is
    /// coded and hashed, so memory is two segments of data plus one
    /// segment's `m` parity shards, whatever the input size. `emit` runs on
    /// the calling thread. An error from `emit` stops the encode and is
    /// returned as [`ErasureError::Io`].
    pub fn encode_with<R, F>(&self, reader: R, emit: F) -> Result<Layout>
    where
        R: Read + Send,
        F: FnMut(ShardRef<'_>) -> io::Result<()>,
    {
        let all: Vec<usize> = (0..self.params.total_shards()).collect();
        let (file_len, piece_len, hashes) = self.encode_hashing(reader, &all, emit)?;
        // every piece was hashed (a missing one would fail the count)
        let pieces = hashes
            .into_iter()
            .flatten()
            .map(|hash| PieceInfo { len: piece_len, hash })
            .collect();
        Layout::new(self.params, file_len, pieces)
    }

    /// As [`Encoder::encode_with`], hashing only the pieces a change of the
    /// input would show in ([`Encoder::check_pieces`]): for a second pass
    /// over an input whose layout is known, to tell whether it changed at
    /// a fraction of the hashing. Returns the input's length and those
    /// pieces' hashes.
    pub fn encode_checked<R, F>(&self, reader: R, emit: F) -> Result<Checked>
    where
        R: Read + Send,
        F: FnMut(ShardRef<'_>) -> io::Result<()>,
    {
        let check = self.check_pieces();
        let (file_len, _, hashes) = self.encode_hashing(reader, &check, emit)?;
        Ok(Checked {
            file_len,
            hashes: check
                .into_iter()
                .filter_map(|i| hashes.get(i).copied().flatten().map(|h| (i, h)))
                .collect(),
        })
    }

    /// The pieces every input byte reaches: the first parity piece (each
    /// parity shard is a combination of all `k` data shards with nonzero
    /// coefficients, an MDS code's property), or every data piece when
    /// there is no parity.
    pub fn check_pieces(&self) -> Vec<usize> {
        let k = self.params.data_shards();
        if self.params.parity_shards() > 0 {
            vec![k]
        } else {
            (0..k).collect()
        }
    }

    /// The encode, hashing the pieces in `hashed`: input length, piece
    /// length, and per piece its hash if it was hashed.
    fn encode_hashing<R, F>(
        &self,
        mut reader: R,
        hashed: &[usize],
        mut emit: F,
    ) -> Result<(u64, u64, Vec<Option<blake3::Hash>>)>
    where
        R: Read + Send,
        F: FnMut(ShardRef<'_>) -> io::Result<()>,
    {
        let k = self.params.data_shards();
        let m = self.params.parity_shards();
        let seg_size = to_usize(self.params.segment_size())?;
        let shard_size = seg_size / k;
        // Concurrent calls each get their own buffers (the second, fresh ones).
        let Buffers {
            mut data,
            mut next,
            mut parity,
        } = self
            .spare
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default();
        let mut hashers: Vec<Option<blake3::Hasher>> = (0..k + m)
            .map(|i| hashed.contains(&i).then(blake3::Hasher::new))
            .collect();
        let mut file_len = 0u64;
        let mut piece_len = 0u64;

        let mut filled = read_segment(&mut reader, &mut data, seg_size)?;
        let mut segment = 0u64;
        while filled > 0 {
            file_len += filled as u64;
            let last = filled < seg_size;
            // Last (short) segment: shards of ceil(r/k), zero-padded.
            let sl = filled.div_ceil(k);
            let padded = sl * k;
            if data.len() < padded {
                data.resize(padded, 0);
            }
            data[filled..padded].fill(0);
            if parity.len() < sl * m {
                parity.resize(sl * m, 0);
            }

            // Read the next segment while this one is coded and hashed.
            let (coded, read) = rayon::join(
                || self.code_segment(&data[..padded], &mut parity[..sl * m], sl, &mut hashers),
                || match last {
                    true => Ok(0),
                    false => read_segment(&mut reader, &mut next, seg_size),
                },
            );
            coded?;
            let next_filled = read?;

            let offset = piece_len;
            debug_assert_eq!(offset, segment * shard_size as u64);
            let shards = data[..padded].chunks(sl).chain(parity[..sl * m].chunks(sl));
            for (piece, bytes) in shards.enumerate() {
                emit(ShardRef {
                    piece,
                    segment,
                    offset,
                    bytes,
                })?;
            }
            piece_len += sl as u64;
            segment += 1;
            std::mem::swap(&mut data, &mut next);
            filled = next_filled;
        }

        let hashes = hashers
            .iter()
            .map(|h| h.as_ref().map(blake3::Hasher::finalize))
            .collect();
        if let Ok(mut spare) = self.spare.lock() {
            *spare = Buffers { data, next, parity };
        }
        Ok((file_len, piece_len, hashes))
    }

    /// Compute the parity of one segment (`k` shards of `sl` bytes in
    /// `data`, `m` in `parity`) and feed every shard to its piece hasher.
    fn code_segment(
        &self,
        data: &[u8],
        parity: &mut [u8],
        sl: usize,
        hashers: &mut [Option<blake3::Hasher>],
    ) -> Result<()> {
        let k = self.params.data_shards();
        let data_shards: Vec<&[u8]> = data.chunks(sl).collect();
        let mut parity_shards: Vec<&mut [u8]> = parity.chunks_mut(sl).collect();
        let (data_hashers, parity_hashers) = hashers.split_at_mut(k);
        // Hash the data shards while the parity is computed, then hash the
        // parity: rayon spreads both over every core.
        let (encoded, ()) = rayon::join(
            || self.codec.encode(&data_shards, &mut parity_shards),
            || hash_all(data_hashers, &data_shards),
        );
        encoded?;
        let parity_ro: Vec<&[u8]> = parity_shards.iter().map(|p| &**p).collect();
        hash_all(parity_hashers, &parity_ro);
        Ok(())
    }

    /// Encode `reader` into `k + m` writers, writer `i` receiving piece `i`.
    pub fn encode_to_writers<R: Read + Send, W: Write>(
        &self,
        reader: R,
        writers: &mut [W],
    ) -> Result<Layout> {
        let total = self.params.total_shards();
        if writers.len() != total {
            return Err(ErasureError::WriterCount {
                expected: total,
                found: writers.len(),
            });
        }
        self.encode_with(reader, |s| writers[s.piece].write_all(s.bytes))
    }

    /// Encode an in-memory file into `k + m` in-memory pieces.
    pub fn encode_bytes(&self, data: &[u8]) -> Result<(Layout, Vec<Vec<u8>>)> {
        let piece_len = to_usize(self.params.geometry(data.len() as u64).piece_len())?;
        let mut pieces: Vec<Vec<u8>> = (0..self.params.total_shards())
            .map(|_| Vec::with_capacity(piece_len))
            .collect();
        let layout = self.encode_to_writers(data, &mut pieces)?;
        Ok((layout, pieces))
    }
}

/// Feed shard `i` into hasher `i`, all shards in parallel.
fn hash_all(hashers: &mut [Option<blake3::Hasher>], shards: &[&[u8]]) {
    hashers.par_iter_mut().zip(shards.par_iter()).for_each(|(h, s)| {
        if let Some(h) = h {
            hash_update(h, s);
        }
    });
}

/// What [`Encoder::encode_checked`] saw: the input's length and the
/// checked pieces' hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub file_len: u64,
    pub hashes: Vec<(usize, blake3::Hash)>,
}

impl Checked {
    /// Whether the input was the one `layout` describes.
    pub fn matches(&self, layout: &Layout) -> bool {
        self.file_len == layout.file_len()
            && self
                .hashes
                .iter()
                .all(|(i, h)| layout.pieces().get(*i).is_some_and(|p| p.hash == *h))
    }
}

/// Read up to `seg_size` bytes into `buf`, growing it as needed; returns how
/// many bytes were read (fewer than `seg_size` only at end of input).
fn read_segment<R: Read>(reader: &mut R, buf: &mut Vec<u8>, seg_size: usize) -> Result<usize> {
    let mut filled = 0;
    while filled < seg_size {
        if filled == buf.len() {
            // Small inputs stay small; once a first MiB is full, go straight
            // to a whole segment (no doubling: no repeated copies).
            let grow = if buf.len() < INITIAL_BUF {
                INITIAL_BUF.min(seg_size)
            } else {
                seg_size
            };
            buf.resize(grow, 0);
        }
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(filled)
}

pub(crate) fn to_usize(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| {
        ErasureError::Io(io::Error::new(
            io::ErrorKind::OutOfMemory,
            "size does not fit in memory on this platform",
        ))
    })
}
