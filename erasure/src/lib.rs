//! Reed-Solomon `k + m` erasure coding of files into pieces.
//!
//! Clients erasure-code a file before it leaves their machine, so that it
//! survives the loss of any `m` of its `k + m` storage providers. This crate
//! is the only place that knows the shard layout. It is pure: no tokio, no
//! network, no clock; readers and writers in, bytes out.
//!
//! It owns: the [`Params`] (`k`, `m`, segment size) and their checks, the
//! shard [`Geometry`], the serialisable [`Layout`] descriptor the manifest
//! carries, the streaming [`Encoder`], the streaming [`Decoder`] (whole
//! file or byte range) and piece repair. It does not own where pieces are
//! stored, how they are fetched, or the manifest itself.
//!
//! # Layout
//!
//! The file is cut into segments of `S` bytes (default 64 MiB rounded down
//! to a multiple of `k`). Segment `j` is split into `k` equal, contiguous
//! data shards and `m` parity shards are computed from them with
//! `reed-solomon-erasure` (GF(2^8), SIMD). Provider `i` receives shard `i`
//! of every segment; their concatenation is its **piece**, the unit a deal
//! covers and that is sealed, challenged and paid for.
//!
//! - Full segments have shards of `S/k` bytes. The last segment, of `r < S`
//!   bytes, has shards of `ceil(r/k)` bytes and is zero-padded only up to
//!   `k·ceil(r/k)`: a 1-byte file gives `k + m` one-byte pieces, not
//!   segments' worth of zeros. An empty file has no segments and `k + m`
//!   empty pieces.
//! - So every piece has length `⌊len/S⌋·S/k + ceil((len mod S)/k)` and the
//!   shard of segment `j` starts at piece offset `j·S/k`. The layout still
//!   records each piece's length, and loading checks it.
//! - A piece's BLAKE3 hash is its content address: CIDv1, raw codec
//!   (`0x55`), BLAKE3 multihash (`0x1e`); see [`piece_cid`].
//!
//! # Integrity
//!
//! A piece whose bytes do not match its hash is treated as missing and never
//! decoded into output. Decoding takes pieces as random-access
//! [`PieceSource`]s (slices, `Vec`s, files, byte ranges). With
//! [`Verification::Full`] (the default) each piece is hashed in full, and
//! compared with the layout, before any of its bytes are used; pieces that
//! fail, or cannot be read, are skipped and another is picked. Callers that
//! verified bytes in transit (BLAKE3 verified streaming in the network
//! layer) can skip re-hashing with [`Verification::Trusted`]; that is the
//! only way to decode from partial pieces. Sources must not change during a
//! call: a piece is hashed, then read again to decode. Because the layout
//! holds whole-piece hashes only, a verified range decode still hashes each
//! piece it uses in full (once per call); it reads for decoding only the
//! segments covering the range.
//!
//! Decoding a file needs `k` good pieces, except that when every data shard
//! holding wanted bytes is good, only those are used (parity is never
//! read). Fewer usable pieces give [`ErasureError::NotEnoughPieces`] with
//! how many were found and how many are needed.
//!
//! # Memory and speed
//!
//! The encoder holds two segments of data (the one being coded and the next
//! one being read) plus one segment's parity; the decoder holds at most
//! `2k` shard windows (≤ 2 segments). Both are independent of the file
//! size. The codec is built once per [`Encoder`]/[`Decoder`], no buffer is
//! allocated per segment, and the buffers are kept between calls (fresh
//! memory costs a page fault and zeroing per page, as much as coding it);
//! drop the encoder or decoder to free them.
//!
//! Encoding pipelines on all cores with rayon: segment `j+1` is read while
//! segment `j` is coded and hashed. Parity is computed in column blocks
//! spread over all cores, 16 KiB of columns per codec call so the outputs
//! stay in cache, while the data shards are hashed; then the parity shards
//! are hashed (BLAKE3's multi-threaded mode on large shards). Decoding copies when every wanted data shard is
//! present and runs the codec only on segments (and columns) where one is
//! missing; a range decode reads only the segments covering the range.
//! `crowd-bench erasure` measures all of this against the raw codec and
//! BLAKE3.
//!
//! # Example
//!
//! ```
//! use crowd_erasure::{Decoder, Encoder, Params};
//!
//! let params = Params::new(4, 2, 4096)?;
//! let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
//! let (layout, pieces) = Encoder::new(params)?.encode_bytes(&data)?;
//!
//! // Lose any two pieces.
//! let mut have: Vec<Option<&[u8]>> = pieces.iter().map(|p| Some(&p[..])).collect();
//! have[0] = None;
//! have[5] = None;
//!
//! let decoder = Decoder::new(&layout)?;
//! let mut out = Vec::new();
//! decoder.decode(&have, &mut out)?;
//! assert_eq!(out, data);
//!
//! let mut part = Vec::new();
//! decoder.decode_range(&have, 4000..4100, &mut part)?;
//! assert_eq!(part, &data[4000..4100]);
//!
//! // Regenerate the lost pieces bit for bit.
//! let mut rebuilt = vec![Vec::new(), Vec::new()];
//! decoder.repair(&have, &[0, 5], &mut rebuilt)?;
//! assert_eq!(rebuilt[0], pieces[0]);
//! assert_eq!(rebuilt[1], pieces[5]);
//! # Ok::<(), crowd_erasure::ErasureError>(())
//! ```

mod codec;
mod decode;
mod encode;
mod error;
mod layout;
mod source;

pub use decode::{Decoder, Verification};
pub use encode::{Checked, Encoder, ShardRef};
pub use error::{ErasureError, Result};
pub use layout::{
    piece_cid, piece_cid_of, Geometry, Layout, Params, PieceInfo, BLAKE3_MULTIHASH, DEFAULT_SEGMENT_SIZE,
    MAX_SEGMENT_SIZE, MAX_SHARDS, RAW_CODEC,
};
pub use source::{verify_piece, Lent, PieceRange, PieceSource};
