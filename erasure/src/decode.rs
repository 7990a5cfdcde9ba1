//! Streaming decoder and repair: any `k` good pieces in, file bytes (or the
//! missing pieces) out, one segment at a time.

use std::io::Write;
use std::ops::Range;
use std::sync::Mutex;

use rayon::prelude::*;

use crate::codec::Codec;
use crate::error::{ErasureError, Result};
use crate::layout::{Geometry, Layout};
use crate::source::{hash_source, hash_update, PieceSource};

use crate::encode::to_usize;

/// How the decoder establishes that a piece's bytes are the right ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Verification {
    /// Before the first byte of a piece is used, hash the whole piece and
    /// compare its length and BLAKE3 hash with the layout. A piece that does
    /// not match, or cannot be read, is treated as missing and another is
    /// picked. Only the pieces actually used are hashed.
    #[default]
    Full,
    /// Use the bytes as given: the caller has already verified them, for
    /// example with BLAKE3 verified streaming of exactly the ranges read.
    /// Needed for sources that hold only byte ranges of pieces
    /// ([`crate::PieceRange`]). Unreadable pieces are still skipped, but a
    /// wrong byte goes into the output undetected.
    Trusted,
}

/// Decodes (whole files or byte ranges) and repairs pieces of one file.
/// Builds the Reed-Solomon codec once; reuse it for many range reads.
#[derive(Debug)]
pub struct Decoder<'l> {
    layout: &'l Layout,
    codec: Codec,
    verification: Verification,
    /// Shard buffers kept between calls (many range reads of one file).
    spare: Mutex<Vec<Vec<u8>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not given, excluded (being repaired), or failed verification/reads.
    Unusable,
    /// Given, not verified yet.
    Unchecked,
    /// Verified (or trusted).
    Good,
}

/// Which pieces may be used, verified lazily in batches.
struct Selector<'a, S> {
    sources: &'a [Option<S>],
    layout: &'a Layout,
    verification: Verification,
    state: Vec<State>,
}

impl<'a, S: PieceSource + Sync> Selector<'a, S> {
    fn new(
        sources: &'a [Option<S>],
        layout: &'a Layout,
        verification: Verification,
        excluded: &[usize],
    ) -> Result<Self> {
        let total = layout.params().total_shards();
        if sources.len() != total {
            return Err(ErasureError::PieceCount {
                expected: total,
                found: sources.len(),
            });
        }
        let state = sources
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                Some(_) if !excluded.contains(&i) => State::Unchecked,
                _ => State::Unusable,
            })
            .collect();
        Ok(Self {
            sources,
            layout,
            verification,
            state,
        })
    }

    fn source(&self, i: usize) -> Option<&'a S> {
        self.sources.get(i).and_then(Option::as_ref)
    }

    fn mark_bad(&mut self, i: usize) {
        self.state[i] = State::Unusable;
    }

    /// Verify every unchecked piece in `idx`, in parallel.
    fn verify(&mut self, idx: &[usize]) {
        let todo: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| self.state[i] == State::Unchecked)
            .collect();
        if self.verification == Verification::Trusted {
            for i in todo {
                self.state[i] = State::Good;
            }
            return;
        }
        let pieces = self.layout.pieces();
        let results: Vec<(usize, bool)> = todo
            .par_iter()
            .map(|&i| {
                let ok = match self.source(i) {
                    Some(s) => matches!(
                        hash_source(s, pieces[i].len),
                        Ok(Some(h)) if h == pieces[i].hash
                    ),
                    None => false,
                };
                (i, ok)
            })
            .collect();
        for (i, ok) in results {
            self.state[i] = if ok { State::Good } else { State::Unusable };
        }
    }

    /// Are data pieces `want` all usable (verifying them if needed)?
    fn data_present(&mut self, want: Range<usize>) -> bool {
        if want.clone().any(|i| self.state[i] == State::Unusable) {
            return false;
        }
        let idx: Vec<usize> = want.clone().collect();
        self.verify(&idx);
        want.clone().all(|i| self.state[i] == State::Good)
    }

    /// `k` good pieces, data pieces first, in index order.
    fn pick_k(&mut self) -> Result<Vec<usize>> {
        let k = self.layout.params().data_shards();
        loop {
            let candidates: Vec<usize> = (0..self.state.len())
                .filter(|&i| self.state[i] != State::Unusable)
                .take(k)
                .collect();
            if candidates.len() < k {
                // Report how many are really usable, not merely offered.
                self.verify(&candidates);
                let have = self.state.iter().filter(|&&s| s == State::Good).count();
                return Err(ErasureError::NotEnoughPieces { have, need: k });
            }
            self.verify(&candidates);
            if candidates.iter().all(|&i| self.state[i] == State::Good) {
                return Ok(candidates);
            }
        }
    }
}

/// Why one segment's attempt failed.
enum SegError {
    /// These pieces could not be read: mark them unusable and retry.
    Sources(Vec<usize>),
    /// Anything else: give up.
    Fatal(ErasureError),
}

impl From<ErasureError> for SegError {
    fn from(e: ErasureError) -> Self {
        SegError::Fatal(e)
    }
}

impl From<std::io::Error> for SegError {
    fn from(e: std::io::Error) -> Self {
        SegError::Fatal(e.into())
    }
}

/// The part of one segment a decode needs.
struct SegmentSpan {
    /// Offset of this segment's shards within the pieces.
    piece_offset: u64,
    /// Shard length of this segment.
    shard_len: usize,
    /// Wanted bytes, relative to the segment start.
    start: usize,
    end: usize,
}

impl SegmentSpan {
    fn new(g: &Geometry, segment: u64, range: &Range<u64>) -> Result<Self> {
        let seg = g.segment_range(segment);
        let start = range.start.max(seg.start) - seg.start;
        let end = range.end.min(seg.end) - seg.start;
        Ok(Self {
            piece_offset: g.piece_offset(segment),
            shard_len: to_usize(g.shard_len(segment))?,
            start: to_usize(start)?,
            end: to_usize(end)?,
        })
    }

    /// Data shards holding wanted bytes.
    fn shards(&self) -> Range<usize> {
        self.start / self.shard_len..(self.end - 1) / self.shard_len + 1
    }

    /// Wanted columns `lo..hi` of data shard `i`.
    fn cols(&self, i: usize) -> (usize, usize) {
        let base = i * self.shard_len;
        (
            self.start.max(base) - base,
            self.end.min(base + self.shard_len) - base,
        )
    }

    /// Columns to decode so that every wanted byte is covered.
    fn window(&self) -> (usize, usize) {
        let r = self.shards();
        if r.len() == 1 {
            self.cols(r.start)
        } else {
            (0, self.shard_len)
        }
    }
}

impl<'l> Decoder<'l> {
    /// A decoder for the file described by `layout`, verifying pieces
    /// ([`Verification::Full`]).
    pub fn new(layout: &'l Layout) -> Result<Self> {
        let p = layout.params();
        Ok(Self {
            layout,
            codec: Codec::new(p.data_shards(), p.parity_shards())?,
            verification: Verification::Full,
            spare: Mutex::new(Vec::new()),
        })
    }

    /// Choose how pieces are verified.
    pub fn with_verification(mut self, verification: Verification) -> Self {
        self.verification = verification;
        self
    }

    /// The kept shard buffers (or empty ones if another call has them).
    fn take_buffers(&self, total: usize) -> Vec<Vec<u8>> {
        let mut bufs = self
            .spare
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default();
        bufs.resize(total, Vec::new());
        bufs
    }

    fn keep_buffers(&self, bufs: Vec<Vec<u8>>) {
        if let Ok(mut spare) = self.spare.lock() {
            *spare = bufs;
        }
    }

    /// The layout being decoded.
    pub fn layout(&self) -> &Layout {
        self.layout
    }

    /// Write the whole file to `out`. `pieces[i]` is piece `i` or `None`;
    /// there must be `k + m` entries. Returns the number of bytes written.
    pub fn decode<S, W>(&self, pieces: &[Option<S>], out: W) -> Result<u64>
    where
        S: PieceSource + Sync,
        W: Write,
    {
        self.decode_range(pieces, 0..self.layout.file_len(), out)
    }

    /// Write file bytes `range` to `out`, reading only the segments that
    /// cover it (and, when the wanted data shards are all present, only the
    /// wanted bytes of them). Returns the number of bytes written.
    ///
    /// With [`Verification::Full`], each piece used is hashed in full once
    /// per call before its bytes are used.
    pub fn decode_range<S, W>(&self, pieces: &[Option<S>], range: Range<u64>, mut out: W) -> Result<u64>
    where
        S: PieceSource + Sync,
        W: Write,
    {
        let file_len = self.layout.file_len();
        if range.start > range.end || range.end > file_len {
            return Err(ErasureError::Range {
                start: range.start,
                end: range.end,
                file_len,
            });
        }
        let mut sel = Selector::new(pieces, self.layout, self.verification, &[])?;
        if range.is_empty() {
            return Ok(0);
        }
        let g = self.layout.geometry();
        let total = self.layout.params().total_shards();
        let mut bufs = self.take_buffers(total);
        for segment in g.segments_covering(&range) {
            let span = SegmentSpan::new(&g, segment, &range)?;
            loop {
                let attempt = if sel.data_present(span.shards()) {
                    self.copy_segment(&sel, &span, &mut bufs, &mut out)
                } else {
                    let chosen = sel.pick_k()?;
                    self.codec_segment(&sel, &chosen, &span, &mut bufs, &mut out)
                };
                match attempt {
                    Ok(()) => break,
                    Err(SegError::Sources(bad)) => bad.into_iter().for_each(|i| sel.mark_bad(i)),
                    Err(SegError::Fatal(e)) => return Err(e),
                }
            }
        }
        self.keep_buffers(bufs);
        Ok(range.end - range.start)
    }

    /// All wanted data shards are present: copy their bytes.
    fn copy_segment<S: PieceSource + Sync, W: Write>(
        &self,
        sel: &Selector<'_, S>,
        span: &SegmentSpan,
        bufs: &mut [Vec<u8>],
        out: &mut W,
    ) -> Result<(), SegError> {
        let shards = span.shards();
        // In-memory sources (whole, or lending the part): write straight
        // from them, after checking that every part is there (nothing is
        // written for a failed segment).
        enum Part<'a> {
            Whole(&'a [u8]),
            Lent(crate::Lent),
        }
        let mut parts: Vec<Part<'_>> = Vec::with_capacity(shards.len());
        for i in shards.clone() {
            let Some(source) = sel.source(i) else { break };
            let (lo, hi) = span.cols(i);
            if let Some(bytes) = source.as_bytes() {
                let off = to_usize(span.piece_offset)? + lo;
                match bytes.get(off..off + (hi - lo)) {
                    Some(p) => parts.push(Part::Whole(p)),
                    None => return Err(SegError::Sources(vec![i])),
                }
                continue;
            }
            match source.lend(span.piece_offset + lo as u64, hi - lo) {
                Some(lent) if lent.len() == hi - lo => parts.push(Part::Lent(lent)),
                _ => break,
            }
        }
        if parts.len() == shards.len() {
            for p in &parts {
                match p {
                    Part::Whole(p) => out.write_all(p)?,
                    Part::Lent(lent) => {
                        for s in lent.slices() {
                            out.write_all(s)?;
                        }
                    }
                }
            }
            return Ok(());
        }
        // Otherwise read every part into its shard's buffer (in parallel),
        // then write them.
        let failed: Vec<usize> = bufs[shards.clone()]
            .par_iter_mut()
            .zip(shards.clone().into_par_iter())
            .filter_map(|(b, i)| {
                let (lo, hi) = span.cols(i);
                if b.len() < hi - lo {
                    b.resize(hi - lo, 0);
                }
                match sel.source(i) {
                    Some(s)
                        if s.read_at(span.piece_offset + lo as u64, &mut b[..hi - lo])
                            .is_ok() =>
                    {
                        None
                    }
                    _ => Some(i),
                }
            })
            .collect();
        if !failed.is_empty() {
            return Err(SegError::Sources(failed));
        }
        for i in shards {
            let (lo, hi) = span.cols(i);
            out.write_all(&bufs[i][..hi - lo])?;
        }
        Ok(())
    }

    /// Some wanted data shard is missing: read the needed columns of `k`
    /// good pieces, rebuild, and write the wanted bytes.
    fn codec_segment<S: PieceSource + Sync, W: Write>(
        &self,
        sel: &Selector<'_, S>,
        chosen: &[usize],
        span: &SegmentSpan,
        bufs: &mut [Vec<u8>],
        out: &mut W,
    ) -> Result<(), SegError> {
        let (c0, c1) = span.window();
        self.read_and_rebuild(sel, chosen, span.piece_offset + c0 as u64, c1 - c0, bufs)?;
        for i in span.shards() {
            let (lo, hi) = span.cols(i);
            out.write_all(&bufs[i][lo - c0..hi - c0])?;
        }
        Ok(())
    }

    /// Read `len` bytes at `offset` of each chosen piece into its buffer
    /// (in parallel), then rebuild the data shards that are not chosen.
    fn read_and_rebuild<S: PieceSource + Sync>(
        &self,
        sel: &Selector<'_, S>,
        chosen: &[usize],
        offset: u64,
        len: usize,
        bufs: &mut [Vec<u8>],
    ) -> Result<(), SegError> {
        let k = self.layout.params().data_shards();
        for (i, b) in bufs.iter_mut().enumerate() {
            if (i < k || chosen.contains(&i)) && b.len() < len {
                b.resize(len, 0);
            }
        }
        let failed: Vec<usize> = bufs
            .par_iter_mut()
            .enumerate()
            .filter(|(i, _)| chosen.contains(i))
            .filter_map(|(i, b)| match sel.source(i) {
                Some(s) if s.read_at(offset, &mut b[..len]).is_ok() => None,
                _ => Some(i),
            })
            .collect();
        if !failed.is_empty() {
            return Err(SegError::Sources(failed));
        }
        let mut slots: Vec<(&mut [u8], bool)> = bufs
            .iter_mut()
            .enumerate()
            .map(|(i, b)| {
                let present = chosen.contains(&i);
                if i < k || present {
                    (&mut b[..len], present)
                } else {
                    (&mut [][..], false)
                }
            })
            .collect();
        self.codec.reconstruct_data(&mut slots)?;
        Ok(())
    }

    /// Regenerate pieces `wanted` from any `k` good others, writing piece
    /// `wanted[j]` to `writers[j]`. Pieces listed in `wanted` are never used
    /// as sources, even if given.
    ///
    /// The regenerated pieces are hashed as they are written and checked
    /// against the layout; on [`ErasureError::CorruptPiece`] (possible only
    /// with [`Verification::Trusted`] sources that were in fact wrong) the
    /// written output must be discarded.
    pub fn repair<S, W>(&self, pieces: &[Option<S>], wanted: &[usize], writers: &mut [W]) -> Result<()>
    where
        S: PieceSource + Sync,
        W: Write,
    {
        let total = self.layout.params().total_shards();
        if let Some(&index) = wanted.iter().find(|&&w| w >= total) {
            return Err(ErasureError::PieceIndex { index, total });
        }
        if writers.len() != wanted.len() {
            return Err(ErasureError::WriterCount {
                expected: wanted.len(),
                found: writers.len(),
            });
        }
        let mut sel = Selector::new(pieces, self.layout, self.verification, wanted)?;
        if wanted.is_empty() {
            return Ok(());
        }
        let k = self.layout.params().data_shards();
        let g = self.layout.geometry();
        let mut bufs = self.take_buffers(total);
        let mut scratch: Vec<u8> = Vec::new();
        let mut hashers = vec![blake3::Hasher::new(); wanted.len()];
        for segment in 0..g.segment_count() {
            let sl = to_usize(g.shard_len(segment))?;
            let offset = g.piece_offset(segment);
            loop {
                let chosen = sel.pick_k()?;
                match self.read_and_rebuild(&sel, &chosen, offset, sl, &mut bufs) {
                    Ok(()) => break,
                    Err(SegError::Sources(bad)) => bad.into_iter().for_each(|i| sel.mark_bad(i)),
                    Err(SegError::Fatal(e)) => return Err(e),
                }
            }
            if scratch.len() < sl {
                scratch.resize(sl, 0);
            }
            let data: Vec<&[u8]> = bufs[..k].iter().map(|b| &b[..sl]).collect();
            for ((&p, w), h) in wanted.iter().zip(writers.iter_mut()).zip(&mut hashers) {
                let bytes = if p < k {
                    data[p]
                } else {
                    self.codec.parity_shard(p - k, &data, &mut scratch[..sl]);
                    &scratch[..sl]
                };
                hash_update(h, bytes);
                w.write_all(bytes)?;
            }
        }
        for (&p, h) in wanted.iter().zip(&hashers) {
            if h.finalize() != self.layout.pieces()[p].hash {
                return Err(ErasureError::CorruptPiece { piece: p });
            }
        }
        self.keep_buffers(bufs);
        Ok(())
    }
}
