//! Cutting a byte stream into chunks: fixed-size or content-defined (FastCDC).
//!
//! Chunking over a slice yields ranges (no copies); chunking over a `Read`
//! yields owned chunks and holds at most one maximum-size chunk of look-ahead.

use std::io::Read;
use std::ops::Range;

use crate::ChunkerError;

/// Largest chunk (block) size accepted: 8 MiB.
pub const MAX_CHUNK_SIZE: usize = 8 * 1024 * 1024;
/// Default chunk size: 1 MiB, as in the IPIP-499 `unixfs-v1-2025` profile.
pub const DEFAULT_CHUNK_SIZE: usize = 1024 * 1024;

/// How chunk boundaries are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChunkerKind {
    /// Every chunk is `chunk_size` bytes, the last one shorter.
    #[default]
    Fixed,
    /// FastCDC (2020, normalisation level 1) with `chunk_size` as the average
    /// (even, 256 B..=4 MiB), a quarter of it as the minimum and four times it
    /// (at most 8 MiB) as the maximum: edits shift only the chunks around them.
    FastCdc,
}

impl std::str::FromStr for ChunkerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fixed" => Ok(Self::Fixed),
            "fastcdc" => Ok(Self::FastCdc),
            other => Err(format!("unknown chunker '{other}' (expected fixed or fastcdc)")),
        }
    }
}

/// Validated chunking parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkParams {
    kind: ChunkerKind,
    chunk_size: usize,
}

impl Default for ChunkParams {
    fn default() -> Self {
        Self {
            kind: ChunkerKind::Fixed,
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

impl ChunkParams {
    /// Checks the size against the chunker's limits.
    pub fn new(kind: ChunkerKind, chunk_size: usize) -> Result<Self, ChunkerError> {
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(ChunkerError::InvalidParams(format!(
                "chunk size {chunk_size} is outside 1..={MAX_CHUNK_SIZE} bytes"
            )));
        }
        if kind == ChunkerKind::FastCdc
            && !(fastcdc::v2020::AVERAGE_MIN..=fastcdc::v2020::AVERAGE_MAX).contains(&chunk_size)
        {
            return Err(ChunkerError::InvalidParams(format!(
                "fastcdc average chunk size {chunk_size} is outside {}..={} bytes",
                fastcdc::v2020::AVERAGE_MIN,
                fastcdc::v2020::AVERAGE_MAX
            )));
        }
        if kind == ChunkerKind::FastCdc && !chunk_size.is_multiple_of(2) {
            // FastCDC scans candidate cut points in pairs
            return Err(ChunkerError::InvalidParams(format!(
                "fastcdc average chunk size {chunk_size} must be even"
            )));
        }
        Ok(Self { kind, chunk_size })
    }

    pub fn kind(&self) -> ChunkerKind {
        self.kind
    }

    /// The fixed size, or FastCDC's average.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// The largest chunk this chunker can emit.
    pub fn max_chunk(&self) -> usize {
        match self.kind {
            ChunkerKind::Fixed => self.chunk_size,
            ChunkerKind::FastCdc => self.cdc_bounds().2,
        }
    }

    /// (min, avg, max) for FastCDC, all within the fastcdc crate's limits.
    fn cdc_bounds(&self) -> (usize, usize, usize) {
        use fastcdc::v2020::{MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN};
        let avg = self.chunk_size;
        let min = (avg / 4).clamp(MINIMUM_MIN, MINIMUM_MAX) & !1;
        let max = (avg * 4).clamp(MAXIMUM_MIN, MAX_CHUNK_SIZE);
        (min, avg, max)
    }

    /// The chunk boundaries of an in-memory buffer, in order. An empty buffer
    /// has one empty chunk (an empty file is one empty raw block).
    pub fn ranges<'a>(&self, data: &'a [u8]) -> Box<dyn Iterator<Item = Range<usize>> + Send + 'a> {
        if data.is_empty() {
            return Box::new(std::iter::once(0..0));
        }
        match self.kind {
            ChunkerKind::Fixed => {
                let size = self.chunk_size;
                let len = data.len();
                Box::new((0..len.div_ceil(size)).map(move |i| i * size..((i + 1) * size).min(len)))
            }
            ChunkerKind::FastCdc => {
                let (min, avg, max) = self.cdc_bounds();
                Box::new(
                    fastcdc::v2020::FastCDC::new(data, min, avg, max).map(|c| c.offset..c.offset + c.length),
                )
            }
        }
    }

    /// Chunks of a reader, owned, in order; one empty chunk for empty input.
    pub fn stream<R: Read>(&self, reader: R) -> ChunkStream<R> {
        let inner = match self.kind {
            ChunkerKind::Fixed => StreamInner::Fixed {
                reader,
                size: self.chunk_size,
            },
            ChunkerKind::FastCdc => {
                let (min, avg, max) = self.cdc_bounds();
                StreamInner::Cdc(Box::new(fastcdc::v2020::StreamCDC::new(reader, min, avg, max)))
            }
        };
        ChunkStream {
            inner,
            emitted: false,
            done: false,
            offset: 0,
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
/// `offset` (of `buf[0]` in the input) names the position in errors.
pub(crate) fn read_full<R: Read>(reader: &mut R, buf: &mut [u8], offset: u64) -> Result<usize, ChunkerError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(ChunkerError::io(
                    format!("reading input at offset {}", offset + filled as u64),
                    e,
                ))
            }
        }
    }
    Ok(filled)
}

/// Owned chunks of a reader; see [`ChunkParams::stream`].
pub struct ChunkStream<R: Read> {
    inner: StreamInner<R>,
    emitted: bool,
    done: bool,
    offset: u64,
}

impl<R: Read> std::fmt::Debug for ChunkStream<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStream")
            .field("offset", &self.offset)
            .finish()
    }
}

enum StreamInner<R: Read> {
    Fixed { reader: R, size: usize },
    Cdc(Box<fastcdc::v2020::StreamCDC<R>>),
}

impl<R: Read> ChunkStream<R> {
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ChunkerError> {
        let offset = self.offset;
        let chunk = match &mut self.inner {
            StreamInner::Fixed { reader, size } => {
                let mut buf = vec![0u8; *size];
                let filled = read_full(reader, &mut buf, offset)?;
                buf.truncate(filled);
                (filled > 0).then_some(buf)
            }
            StreamInner::Cdc(cdc) => match cdc.next() {
                None => None,
                Some(Ok(c)) => Some(c.data),
                Some(Err(fastcdc::v2020::Error::IoError(e))) => {
                    return Err(ChunkerError::io(format!("reading input at offset {offset}"), e))
                }
                Some(Err(e)) => {
                    return Err(ChunkerError::io(
                        format!("reading input at offset {offset}"),
                        std::io::Error::other(e.to_string()),
                    ))
                }
            },
        };
        Ok(chunk)
    }
}

impl<R: Read> Iterator for ChunkStream<R> {
    type Item = Result<Vec<u8>, ChunkerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_chunk() {
            Ok(Some(chunk)) => {
                self.emitted = true;
                self.offset += chunk.len() as u64;
                Some(Ok(chunk))
            }
            Ok(None) => {
                self.done = true;
                // an empty input is one empty chunk
                (!self.emitted).then(|| {
                    self.emitted = true;
                    Ok(Vec::new())
                })
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
