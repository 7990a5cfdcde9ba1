//! The Reed-Solomon codec, driven column-block by column-block on all cores.
//!
//! GF(2^8) Reed-Solomon works column by column: byte `c` of every parity
//! shard depends only on byte `c` of the data shards. So a segment's shards
//! are cut into column blocks that rayon spreads across cores, and each block
//! is coded in cache-sized chunks so the parity outputs stay in L1/L2 while
//! every data shard is multiplied into them.

use rayon::prelude::*;
use reed_solomon_erasure::galois_8::{self, ReedSolomon};

use crate::error::{ErasureError, Result};

/// Columns coded per codec call: small enough that `m` output chunks stay in
/// L1/L2 while `k` inputs stream through.
const CHUNK: usize = 16 << 10;

/// Columns per rayon job: enough work per job to amortise scheduling.
const BLOCK: usize = 256 << 10;

/// A `k + m` Reed-Solomon codec, built once and reused for every segment.
/// With `m = 0` there is no codec: nothing to compute, nothing to recover.
#[derive(Debug)]
pub(crate) struct Codec {
    k: usize,
    rs: Option<ReedSolomon>,
    /// Parity matrix rows: `parity_coef[p * k + d]` multiplies data shard
    /// `d` into parity shard `p`. Used by repair to build single parity
    /// shards without recomputing all of them.
    parity_coef: Vec<u8>,
}

impl Codec {
    pub(crate) fn new(k: usize, m: usize) -> Result<Self> {
        if m == 0 {
            return Ok(Self {
                k,
                rs: None,
                parity_coef: Vec::new(),
            });
        }
        let rs = ReedSolomon::new(k, m)?;
        // Column independence: encoding the k unit vectors e_d (one byte per
        // shard, all columns at once in a k-byte shard) yields the matrix.
        let data: Vec<Vec<u8>> = (0..k)
            .map(|d| (0..k).map(|c| u8::from(c == d)).collect())
            .collect();
        let mut parity = vec![vec![0u8; k]; m];
        rs.encode_sep(&data, &mut parity)?;
        let parity_coef = parity.concat();
        Ok(Self {
            k,
            rs: Some(rs),
            parity_coef,
        })
    }

    /// Compute the `m` parity shards from the `k` data shards (all the same
    /// length), using every core.
    pub(crate) fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<()> {
        let Some(rs) = &self.rs else {
            return Ok(());
        };
        let len = data.first().map_or(0, |d| d.len());
        if len == 0 {
            return Ok(());
        }
        let mut jobs = split_columns_mut(parity, BLOCK);
        jobs.par_iter_mut()
            .enumerate()
            .try_for_each(|(b, outs)| -> Result<()> {
                let base = b * BLOCK;
                let block_len = outs.first().map_or(0, |o| o.len());
                let mut ins: Vec<&[u8]> = Vec::with_capacity(self.k);
                let mut chunks: Vec<_> = outs.iter_mut().map(|o| o.chunks_mut(CHUNK)).collect();
                let mut start = 0;
                while start < block_len {
                    let end = (start + CHUNK).min(block_len);
                    ins.clear();
                    ins.extend(data.iter().map(|d| &d[base + start..base + end]));
                    let mut outs_c: Vec<&mut [u8]> = chunks.iter_mut().filter_map(Iterator::next).collect();
                    rs.encode_sep(&ins, &mut outs_c)?;
                    start = end;
                }
                Ok(())
            })
    }

    /// Rebuild the missing data shards. `slots` has `k + m` entries
    /// `(buffer, present)`; exactly `k` are present, every data slot has a
    /// buffer of the common length, parity slots that are not present may
    /// be empty. Parity is not rebuilt.
    pub(crate) fn reconstruct_data(&self, slots: &mut [(&mut [u8], bool)]) -> Result<()> {
        if slots.iter().take(self.k).all(|s| s.1) {
            return Ok(());
        }
        let Some(rs) = &self.rs else {
            // m = 0: a missing data shard cannot be rebuilt.
            let have = slots.iter().filter(|s| s.1).count();
            return Err(ErasureError::NotEnoughPieces { have, need: self.k });
        };
        let len = slots.iter().map(|s| s.0.len()).max().unwrap_or(0);
        if len == 0 {
            return Ok(());
        }
        let mut jobs: Vec<Vec<(&mut [u8], bool)>> = Vec::with_capacity(len.div_ceil(BLOCK));
        for _ in 0..len.div_ceil(BLOCK) {
            jobs.push(Vec::with_capacity(slots.len()));
        }
        for (buf, present) in slots.iter_mut() {
            if buf.is_empty() {
                for job in jobs.iter_mut() {
                    job.push((&mut [][..], *present));
                }
            } else {
                for (job, chunk) in jobs.iter_mut().zip(buf.chunks_mut(BLOCK)) {
                    job.push((chunk, *present));
                }
            }
        }
        jobs.par_iter_mut()
            .try_for_each(|job| rs.reconstruct_data(job).map_err(ErasureError::from))
    }

    /// Compute parity shard `p` (0-based among parity) from all `k` data
    /// shards into `out`.
    pub(crate) fn parity_shard(&self, p: usize, data: &[&[u8]], out: &mut [u8]) {
        let coef = &self.parity_coef[p * self.k..(p + 1) * self.k];
        out.par_chunks_mut(BLOCK).enumerate().for_each(|(b, out)| {
            let base = b * BLOCK;
            for (d, (&c, input)) in coef.iter().zip(data).enumerate() {
                let input = &input[base..base + out.len()];
                if d == 0 {
                    galois_8::mul_slice(c, input, out);
                } else {
                    galois_8::mul_slice_xor(c, input, out);
                }
            }
        });
    }
}

/// Cut each output shard into `block`-column pieces and regroup them per
/// block: `result[b]` holds block `b` of every shard.
fn split_columns_mut<'a>(shards: &'a mut [&mut [u8]], block: usize) -> Vec<Vec<&'a mut [u8]>> {
    let len = shards.first().map_or(0, |s| s.len());
    let mut jobs: Vec<Vec<&mut [u8]>> = (0..len.div_ceil(block))
        .map(|_| Vec::with_capacity(shards.len()))
        .collect();
    for shard in shards.iter_mut() {
        for (job, chunk) in jobs.iter_mut().zip(shard.chunks_mut(block)) {
            job.push(chunk);
        }
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
            .collect()
    }

    #[test]
    fn chunked_encode_matches_plain_library() {
        let (k, m) = (5, 3);
        let len = BLOCK * 2 + 1234;
        let data: Vec<Vec<u8>> = (0..k).map(|i| pseudo(len, i as u8)).collect();
        let mut expect = vec![vec![0u8; len]; m];
        ReedSolomon::new(k, m)
            .unwrap()
            .encode_sep(&data, &mut expect)
            .unwrap();

        let codec = Codec::new(k, m).unwrap();
        let mut got = vec![vec![0xAAu8; len]; m];
        let ins: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
        let mut outs: Vec<&mut [u8]> = got.iter_mut().map(|o| &mut o[..]).collect();
        codec.encode(&ins, &mut outs).unwrap();
        assert_eq!(got, expect);

        for (p, want) in expect.iter().enumerate() {
            let mut one = vec![0x55u8; len];
            codec.parity_shard(p, &ins, &mut one);
            assert_eq!(&one, want, "parity {p}");
        }

        // Lose data shards 0 and 3 and parity 1; rebuild from the rest.
        let mut bufs: Vec<Vec<u8>> = data.iter().chain(expect.iter()).cloned().collect();
        let lost = [0usize, 3];
        for &l in &lost {
            bufs[l].fill(0);
        }
        let mut slots: Vec<(&mut [u8], bool)> = bufs
            .iter_mut()
            .enumerate()
            .map(|(i, b)| (&mut b[..], !lost.contains(&i) && i != k + 1))
            .collect();
        // k present: data 1, 2, 4 and parity 0, 2.
        codec.reconstruct_data(&mut slots).unwrap();
        for &l in &lost {
            assert_eq!(bufs[l], data[l]);
        }
    }

    #[test]
    fn no_parity_codec() {
        let codec = Codec::new(3, 0).unwrap();
        let mut a = [1u8; 4];
        let mut b = [0u8; 4];
        let mut c = [3u8; 4];
        let mut slots = vec![(&mut a[..], true), (&mut b[..], false), (&mut c[..], true)];
        assert!(matches!(
            codec.reconstruct_data(&mut slots),
            Err(ErasureError::NotEnoughPieces { have: 2, need: 3 })
        ));
    }
}
