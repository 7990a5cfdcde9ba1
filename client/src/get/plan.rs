//! What a get fetches, as pure arithmetic: which byte ranges of each piece,
//! where a resumed partial piece restarts, and in which order pieces are
//! tried.

use std::ops::Range;

use crowd_erasure::Geometry;

/// Bytes of a piece verified together in transit (one BLAKE3 chunk group);
/// a resumed piece restarts at such a boundary.
pub const GROUP_LEN: u64 = crowd_porep::tree::GROUP_LEN as u64;

/// The byte ranges wanted of every piece, in piece order, disjoint and
/// merged where adjacent. A partial piece file holds them back to back
/// ("compact" offsets), so its length says how far the fetch got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceRanges {
    ranges: Vec<Range<u64>>,
    /// Compact offset at which each range starts.
    starts: Vec<u64>,
    total: u64,
}

impl PieceRanges {
    /// What decoding file bytes `range` reads of each piece: for every
    /// segment covering it, the columns [`crowd_erasure::Decoder::decode_range`]
    /// reads (those of the one data shard holding the range, or the whole
    /// shard when the range spans several), so that any `k` pieces holding
    /// these ranges decode it. The whole file gives the whole piece.
    pub fn for_range(g: &Geometry, range: &Range<u64>) -> Self {
        let mut ranges: Vec<Range<u64>> = Vec::new();
        for s in g.segments_covering(range) {
            let seg = g.segment_range(s);
            let l = g.shard_len(s);
            if l == 0 {
                continue;
            }
            let start = range.start.max(seg.start) - seg.start;
            let end = range.end.min(seg.end) - seg.start;
            let (first, last) = (start / l, (end - 1) / l);
            let (c0, c1) = if first == last {
                (start - first * l, end - first * l)
            } else {
                (0, l)
            };
            let at = g.piece_offset(s);
            let r = at + c0..at + c1;
            match ranges.last_mut() {
                Some(prev) if prev.end == r.start => prev.end = r.end,
                _ => ranges.push(r),
            }
        }
        Self::new(ranges)
    }

    fn new(ranges: Vec<Range<u64>>) -> Self {
        let mut starts = Vec::with_capacity(ranges.len());
        let mut total = 0;
        for r in &ranges {
            starts.push(total);
            total += r.end - r.start;
        }
        Self {
            ranges,
            starts,
            total,
        }
    }

    /// Bytes wanted of each piece.
    pub fn total(&self) -> u64 {
        self.total
    }

    #[cfg(test)]
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// Where a partial piece file of `have` bytes resumes: `have` cut back to
    /// the start of its chunk group (in piece offsets) or of its range, and
    /// never beyond the total.
    pub fn resume_at(&self, have: u64) -> u64 {
        if have >= self.total {
            return self.total;
        }
        let i = self.starts.partition_point(|&s| s <= have) - 1;
        let r = &self.ranges[i];
        let piece_pos = r.start + (have - self.starts[i]);
        let cut = (piece_pos / GROUP_LEN * GROUP_LEN).max(r.start);
        self.starts[i] + (cut - r.start)
    }

    /// The piece ranges still to fetch once the first `done` compact bytes are
    /// held.
    pub fn remaining(&self, done: u64) -> Vec<Range<u64>> {
        self.ranges
            .iter()
            .zip(&self.starts)
            .filter_map(|(r, &s)| {
                let len = r.end - r.start;
                let skip = done.saturating_sub(s).min(len);
                (skip < len).then(|| r.start + skip..r.end)
            })
            .collect()
    }

    /// The compact offset of piece bytes `offset..offset + len`, if all of them
    /// lie within one wanted range.
    pub fn locate(&self, offset: u64, len: u64) -> Option<u64> {
        let i = self.ranges.partition_point(|r| r.end <= offset);
        let r = self.ranges.get(i)?;
        (r.start <= offset && offset.checked_add(len)? <= r.end).then(|| self.starts[i] + (offset - r.start))
    }
}

/// The order in which pieces are tried: the ones needing the fewest bytes
/// first (complete, then partly fetched ones), then data pieces before
/// parity (with `k` data pieces decoding is a copy), then by index.
/// `remaining[i]` is `None` for a piece no provider holds.
pub fn piece_order(k: usize, remaining: &[Option<u64>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..remaining.len()).filter(|&i| remaining[i].is_some()).collect();
    order.sort_by_key(|&i| (remaining[i], i >= k, i));
    order
}

/// Parses `START-END` (byte offsets, end exclusive).
pub fn parse_range(s: &str) -> Result<Range<u64>, String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("'{s}' is not a range START-END"))?;
    let num = |t: &str| {
        t.trim()
            .parse::<u64>()
            .map_err(|_| format!("'{s}' is not a range START-END of byte offsets"))
    };
    let (a, b) = (num(a)?, num(b)?);
    if a > b {
        return Err(format!("range {s}: start is after end"));
    }
    Ok(a..b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    #![allow(clippy::single_range_in_vec_init)] // one-range plans are meant
    use super::*;
    use crowd_erasure::{Decoder, Encoder, Params, PieceSource, Verification};
    use proptest::prelude::*;

    /// Piece sources that hold only the planned ranges: any read outside
    /// them fails, so a decode that succeeds needed nothing else.
    struct Planned<'a> {
        piece: &'a [u8],
        plan: &'a PieceRanges,
    }

    impl PieceSource for Planned<'_> {
        fn len(&self) -> std::io::Result<u64> {
            Ok(self.piece.len() as u64)
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            self.plan
                .locate(offset, buf.len() as u64)
                .ok_or_else(|| std::io::Error::other("read outside the plan"))?;
            buf.copy_from_slice(&self.piece[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
    }

    #[test]
    fn whole_file_is_whole_pieces() {
        for (len, seg) in [
            (1u64, 8u64),
            (5, 8),
            (8, 8),
            (100, 8),
            (1 << 20, 4096),
            (12_345, 1000),
        ] {
            let g = Params::new(4, 2, seg).unwrap().geometry(len);
            let plan = PieceRanges::for_range(&g, &(0..len));
            assert_eq!(plan.ranges(), &[0..g.piece_len()], "{len} {seg}");
        }
        let g = Params::new(4, 2, 8).unwrap().geometry(0);
        assert_eq!(PieceRanges::for_range(&g, &(0..0)).total(), 0);
    }

    #[test]
    fn resume_cuts_back_to_a_group_or_range_start() {
        let g = GROUP_LEN;
        let whole = PieceRanges::new(vec![0..10 * g]);
        assert_eq!(whole.resume_at(0), 0);
        assert_eq!(whole.resume_at(g - 1), 0);
        assert_eq!(whole.resume_at(g), g);
        assert_eq!(whole.resume_at(3 * g + 17), 3 * g);
        assert_eq!(whole.resume_at(10 * g), 10 * g);
        assert_eq!(whole.resume_at(u64::MAX), 10 * g);
        // two ranges not on group boundaries
        let two = PieceRanges::new(vec![100..g + 50, 5 * g + 10..7 * g]);
        let first = g + 50 - 100;
        assert_eq!(two.resume_at(50), 0);
        assert_eq!(two.resume_at(g - 100), g - 100);
        assert_eq!(two.resume_at(first), first);
        assert_eq!(two.resume_at(first + 5), first);
        assert_eq!(two.resume_at(first + g), first + g - 10);
        assert_eq!(two.remaining(0), vec![100..g + 50, 5 * g + 10..7 * g]);
        assert_eq!(two.remaining(first + g - 10), vec![6 * g..7 * g]);
        assert_eq!(two.remaining(two.total()), vec![]);
    }

    #[test]
    fn order_is_cheapest_then_data_first() {
        let full = Some(1000);
        assert_eq!(piece_order(4, &[full; 6]), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(
            piece_order(4, &[full, None, full, full, Some(0), Some(400)]),
            vec![4, 5, 0, 2, 3]
        );
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("0-10"), Ok(0..10));
        assert_eq!(parse_range("7-7"), Ok(7..7));
        assert!(parse_range("10-3").is_err());
        assert!(parse_range("abc").is_err());
        assert!(parse_range("-3").is_err());
        assert!(parse_range("1-x").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any k pieces holding only the planned ranges decode the range,
        /// and resuming never skips a byte.
        #[test]
        fn planned_ranges_decode_proptest(
            len in 1usize..3000,
            k in 1usize..5,
            m in 0usize..3,
            seg_mult in 1u64..40,
            a in any::<u64>(),
            b in any::<u64>(),
            lost in any::<u64>(),
            have in any::<u64>(),
        ) {
            let file = data(len);
            let params = Params::new(k, m, seg_mult * k as u64).unwrap();
            let (layout, pieces) = Encoder::new(params).unwrap().encode_bytes(&file).unwrap();
            let (mut s, mut e) = (a % len as u64, b % (len as u64 + 1));
            if s > e { std::mem::swap(&mut s, &mut e); }
            let plan = PieceRanges::for_range(&layout.geometry(), &(s..e));
            let mut have_pieces: Vec<Option<Planned<'_>>> =
                pieces.iter().map(|p| Some(Planned { piece: p, plan: &plan })).collect();
            // lose up to m pieces
            for j in 0..m {
                let i = ((lost >> (8 * j)) as usize) % (k + m);
                have_pieces[i] = None;
            }
            let dec = Decoder::new(&layout).unwrap().with_verification(Verification::Trusted);
            let mut out = Vec::new();
            dec.decode_range(&have_pieces, s..e, &mut out).unwrap();
            prop_assert_eq!(&out[..], &file[s as usize..e as usize]);
            let at = plan.resume_at(have % (plan.total() + 1));
            prop_assert!(at <= have % (plan.total() + 1));
            let rest: u64 = plan.remaining(at).iter().map(|r| r.end - r.start).sum();
            prop_assert_eq!(at + rest, plan.total());
        }
    }
}
