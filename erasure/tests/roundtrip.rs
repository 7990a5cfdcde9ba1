//! Property and corruption tests of the public API: decode(encode(x)) == x
//! for every erasure pattern of at most m pieces, range decode == slicing,
//! repair reproduces lost pieces bit for bit, and corrupt bytes never reach
//! the output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Read, Write};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use crowd_erasure::{
    piece_cid_of, verify_piece, Decoder, Encoder, ErasureError, Layout, Lent, Params, PieceRange,
    PieceSource, Verification,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Fast deterministic pseudo-random bytes (xorshift64*).
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// `len` pseudo-random bytes from `seed`, their layout and pieces under `k+m`.
fn encoded(k: usize, m: usize, seg: u64, len: u64, seed: u64) -> (Vec<u8>, Layout, Vec<Vec<u8>>) {
    let data = bytes(len as usize, seed);
    let params = Params::new(k, m, seg).unwrap();
    let (layout, pieces) = Encoder::new(params).unwrap().encode_bytes(&data).unwrap();
    (data, layout, pieces)
}

/// The range between two arbitrary points within `0..=len`.
fn range_in(a: u64, b: u64, len: u64) -> Range<u64> {
    let (a, b) = (a % (len + 1), b % (len + 1));
    a.min(b)..a.max(b)
}

/// `range` of the file decoded from `pieces`, trusted as they are.
fn decode_trusted<S: PieceSource + Sync>(
    layout: &Layout,
    pieces: &[Option<S>],
    range: Range<u64>,
) -> Vec<u8> {
    let mut out = Vec::new();
    Decoder::new(layout)
        .unwrap()
        .with_verification(Verification::Trusted)
        .decode_range(pieces, range, &mut out)
        .unwrap();
    out
}

/// Every subset of `0..n` with at most `max` elements.
fn subsets(n: usize, max: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = vec![vec![]];
    for i in 0..n {
        let more: Vec<Vec<usize>> = out
            .iter()
            .filter(|s| s.len() < max)
            .map(|s| {
                let mut t = s.clone();
                t.push(i);
                t
            })
            .collect();
        out.extend(more);
    }
    out
}

fn present<'a>(pieces: &'a [Vec<u8>], lost: &[usize]) -> Vec<Option<&'a [u8]>> {
    pieces
        .iter()
        .enumerate()
        .map(|(i, p)| (!lost.contains(&i)).then_some(&p[..]))
        .collect()
}

fn decode_all<S: PieceSource + Sync>(
    layout: &Layout,
    pieces: &[Option<S>],
    v: Verification,
) -> Result<Vec<u8>, ErasureError> {
    let mut out = Vec::new();
    Decoder::new(layout)?
        .with_verification(v)
        .decode(pieces, &mut out)?;
    Ok(out)
}

/// Parameters and a file length that hits the edge cases: empty, one byte,
/// exact segment boundaries and their neighbours, many segments.
fn case() -> impl Strategy<Value = (usize, usize, u64, u64, u64)> {
    (1usize..=6, 0usize..=3, 1u64..=40, any::<u64>()).prop_flat_map(|(k, m, shard, seed)| {
        let seg = k as u64 * shard;
        let len = prop_oneof![
            Just(0u64),
            Just(1u64),
            (1u64..=5).prop_map(move |n| n * seg),
            (1u64..=5).prop_map(move |n| n * seg + 1),
            (1u64..=5).prop_map(move |n| n * seg - 1),
            0u64..=12 * seg,
        ];
        (Just(k), Just(m), Just(seg), len, Just(seed))
    })
}

/// A reader that returns data in small irregular reads, to exercise the
/// encoder's segment assembly.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
    calls: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(5) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "try again"));
        }
        let n = buf.len().min(self.data.len()).min(1 + self.calls % self.step);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Failures are saved (relative to the package root, where `cargo test`
/// runs) and replayed first on every run; the file is committed.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/roundtrip.txt",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn roundtrip_proptest((k, m, seg, len, seed) in case()) {
        let data = bytes(len as usize, seed);
        let params = Params::new(k, m, seg).unwrap();
        let (layout, pieces) = Encoder::new(params).unwrap().encode_bytes(&data).unwrap();

        let g = params.geometry(len);
        prop_assert_eq!(layout.file_len(), len);
        prop_assert_eq!(pieces.len(), k + m);
        for (p, info) in pieces.iter().zip(layout.pieces()) {
            prop_assert_eq!(p.len() as u64, g.piece_len());
            prop_assert_eq!(info.len, g.piece_len());
            prop_assert_eq!(info.hash, blake3::hash(p));
            prop_assert_eq!(info.cid(), piece_cid_of(p));
        }
        // The last segment is not padded to a full segment.
        prop_assert!(g.piece_len() * (k as u64) < len + k as u64 || len == 0);

        for lost in subsets(k + m, m) {
            let have = present(&pieces, &lost);
            let out = decode_all(&layout, &have, Verification::Full).unwrap();
            prop_assert!(out == data, "lost {:?}", lost);
        }
        // One more loss than m is an error saying how many are usable.
        if len > 0 {
            let lost: Vec<usize> = (0..=m).collect();
            let have = present(&pieces, &lost);
            match decode_all(&layout, &have, Verification::Full) {
                Err(ErasureError::NotEnoughPieces { have, need }) => {
                    prop_assert_eq!(have, k - 1);
                    prop_assert_eq!(need, k);
                }
                other => prop_assert!(false, "expected NotEnoughPieces, got {:?}", other.map(|v| v.len())),
            }
        }
    }

    #[test]
    fn range_proptest(
        (k, m, seg, len, seed) in case(),
        a in any::<u64>(),
        b in any::<u64>(),
        lost_seed in any::<u64>(),
    ) {
        let (data, layout, pieces) = encoded(k, m, seg, len, seed);
        let range = range_in(a, b, len);
        let want = &data[range.start as usize..range.end as usize];

        // A random erasure pattern of at most m pieces, and none.
        let patterns = subsets(k + m, m);
        let lost = &patterns[(lost_seed % patterns.len() as u64) as usize];
        for lost in [&vec![], lost] {
            let have = present(&pieces, lost);
            let dec = Decoder::new(&layout).unwrap();
            let mut out = Vec::new();
            let n = dec.decode_range(&have, range.clone(), &mut out).unwrap();
            prop_assert_eq!(n, range.end - range.start);
            prop_assert!(out == want, "range {:?} lost {:?}", range, lost);
        }
    }

    /// Sources that lend the decoder their bytes in shared blocks (all of
    /// a part or none: then it is read) decode any range like slicing;
    /// with every data piece lending all it holds, nothing is read.
    #[test]
    fn lent_parts_decode_like_slicing_proptest(
        (k, m, seg, len, seed) in case(),
        a in any::<u64>(),
        b in any::<u64>(),
        block in 1usize..50,
        held_from in any::<u64>(),
    ) {
        let (data, layout, pieces) = encoded(k, m, seg, len, seed);
        let range = range_in(a, b, len);
        let piece_len = pieces[0].len() as u64;
        for held in [0..piece_len, held_from % (piece_len + 1)..piece_len] {
            let srcs: Vec<Option<Lending>> = pieces.iter().map(|p| Some(Lending::new(p, block, held.clone()))).collect();
            let out = decode_trusted(&layout, &srcs, range.clone());
            prop_assert!(out == data[range.start as usize..range.end as usize], "range {:?} held {:?}", range, held);
            if held.start == 0 {
                let read: usize = srcs.iter().flatten().map(|s| s.reads.lock().unwrap().len()).sum();
                prop_assert_eq!(read, 0, "read although lent");
            }
        }
    }

    #[test]
    fn repair_proptest((k, m, seg, len, seed) in case()) {
        let data = bytes(len as usize, seed);
        let params = Params::new(k, m, seg).unwrap();
        let (layout, pieces) = Encoder::new(params).unwrap().encode_bytes(&data).unwrap();
        let dec = Decoder::new(&layout).unwrap();
        for lost in subsets(k + m, m).into_iter().filter(|l| !l.is_empty()) {
            let have = present(&pieces, &lost);
            let mut out: Vec<Vec<u8>> = vec![Vec::new(); lost.len()];
            dec.repair(&have, &lost, &mut out).unwrap();
            for (o, &p) in out.iter().zip(&lost) {
                prop_assert!(*o == pieces[p], "piece {} lost {:?}", p, lost);
            }
        }
    }

    /// Flip any byte of any piece: verification names it, and no decode or
    /// repair ever lets the wrong byte through.
    #[test]
    fn corruption_proptest(
        (k, m, seg, len, seed) in case(),
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        lost_seed in any::<u64>(),
    ) {
        prop_assume!(len > 0);
        let data = bytes(len as usize, seed);
        let params = Params::new(k, m, seg).unwrap();
        let (layout, pieces) = Encoder::new(params).unwrap().encode_bytes(&data).unwrap();
        let c = which.index(k + m);
        let mut bad = pieces.clone();
        let i = at.index(bad[c].len());
        bad[c][i] ^= flip;
        let verified = verify_piece(&layout, c, &bad[c][..]);
        prop_assert!(
            matches!(verified, Err(ErasureError::CorruptPiece { piece }) if piece == c),
            "verify_piece: {:?}",
            verified
        );
        for (j, p) in bad.iter().enumerate().filter(|(j, _)| *j != c) {
            prop_assert!(verify_piece(&layout, j, &p[..]).is_ok());
        }

        // Lose up to m other pieces; the corrupt one stays offered.
        let patterns: Vec<Vec<usize>> = subsets(k + m, m)
            .into_iter()
            .filter(|l| !l.contains(&c))
            .collect();
        let lost = &patterns[(lost_seed % patterns.len() as u64) as usize];
        let have = present(&bad, lost);
        let good = k + m - lost.len() - 1;
        match decode_all(&layout, &have, Verification::Full) {
            // Success needs k good pieces, or only the data pieces that hold
            // file bytes (a short file's other data shards are padding).
            Ok(out) => prop_assert!(out == data),
            Err(ErasureError::NotEnoughPieces { have, need }) => {
                prop_assert!(good < k);
                prop_assert_eq!(have, good);
                prop_assert_eq!(need, k);
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
        let dec = Decoder::new(&layout).unwrap();
        let mut part = Vec::new();
        let r = (len / 3)..len;
        if dec.decode_range(&have, r.clone(), &mut part).is_ok() {
            prop_assert!(part == data[r.start as usize..]);
        }
        // Repairing the lost pieces never uses the corrupt one.
        if !lost.is_empty() {
            let mut out: Vec<Vec<u8>> = vec![Vec::new(); lost.len()];
            match dec.repair(&have, lost, &mut out) {
                Ok(()) => {
                    for (o, &p) in out.iter().zip(lost) {
                        prop_assert!(*o == pieces[p]);
                    }
                }
                Err(e) => prop_assert!(
                    matches!(e, ErasureError::NotEnoughPieces { .. }),
                    "unexpected {}",
                    e
                ),
            }
        }
    }

    /// A second pass that hashes only the check pieces agrees with the
    /// layout when the input is the same, and tells any one changed byte
    /// or a shorter input.
    #[test]
    fn a_checked_pass_tells_any_change_of_the_input(
        data in proptest::collection::vec(any::<u8>(), 1..20_000),
        k in 1usize..6,
        m in 0usize..3,
        seg_factor in 1u64..8,
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let enc = Encoder::new(Params::new(k, m, k as u64 * 512 * seg_factor).unwrap()).unwrap();
        let layout = enc.encode_with(&data[..], |_| Ok(())).unwrap();
        let same = enc.encode_checked(&data[..], |_| Ok(())).unwrap();
        prop_assert!(same.matches(&layout));
        prop_assert!(same.hashes.len() < k + m || m == 0);
        let mut changed = data.clone();
        let i = at.index(changed.len());
        changed[i] ^= flip;
        prop_assert!(!enc.encode_checked(&changed[..], |_| Ok(())).unwrap().matches(&layout));
        let shorter = &data[..data.len() - 1];
        prop_assert!(!enc.encode_checked(shorter, |_| Ok(())).unwrap().matches(&layout));
    }

    #[test]
    fn encode_reader_proptest((k, m, seg, len, seed) in case(), step in 1usize..50) {
        let data = bytes(len as usize, seed);
        let enc = Encoder::new(Params::new(k, m, seg).unwrap()).unwrap();
        let (layout, pieces) = enc.encode_bytes(&data).unwrap();

        // Irregular reads give the same pieces; shards arrive in segment
        // order at the right offsets, none longer than a full shard.
        let mut streamed: Vec<Vec<u8>> = vec![Vec::new(); k + m];
        let mut last = (0u64, 0usize);
        let reader = Trickle { data: &data, step, calls: 0 };
        let layout2 = enc.encode_with(reader, |s| {
            assert!((s.segment, s.piece) >= last);
            last = (s.segment, s.piece);
            assert_eq!(s.offset, s.segment * seg / k as u64);
            assert_eq!(s.offset, streamed[s.piece].len() as u64);
            assert!(s.bytes.len() as u64 <= seg / k as u64);
            streamed[s.piece].extend_from_slice(s.bytes);
            Ok(())
        }).unwrap();
        prop_assert_eq!(&layout2, &layout);
        prop_assert_eq!(&streamed, &pieces);
    }
}

proptest! {
    #![proptest_config(config(48))]

    /// Wide codes up to k + m = 256 with random erasure patterns of exactly
    /// m pieces (exhaustive patterns are for the small codes above).
    #[test]
    fn wide_params_proptest(
        k in 1usize..=200,
        m in 0usize..=56,
        shard in 1u64..=8,
        segs in 0u64..=3,
        extra in any::<u64>(),
        seed in any::<u64>(),
    ) {
        let seg = k as u64 * shard;
        let len = segs * seg + extra % seg;
        let data = bytes(len as usize, seed);
        let params = Params::new(k, m, seg).unwrap();
        let (layout, pieces) = Encoder::new(params).unwrap().encode_bytes(&data).unwrap();
        // Lose m pieces picked by the seed.
        let mut order: Vec<usize> = (0..k + m).collect();
        let mut x = seed | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let lost: Vec<usize> = order[..m].to_vec();
        let have = present(&pieces, &lost);
        prop_assert!(decode_all(&layout, &have, Verification::Full).unwrap() == data);
        let mut out: Vec<Vec<u8>> = vec![Vec::new(); lost.len()];
        Decoder::new(&layout).unwrap().repair(&have, &lost, &mut out).unwrap();
        for (o, &p) in out.iter().zip(&lost) {
            prop_assert!(*o == pieces[p]);
        }
    }
}

/// Every byte of every piece, every bit pattern class: one corrupt byte in
/// an otherwise complete set is detected and routed around.
#[test]
fn corruption_every_byte_detected() {
    let (k, m) = (3, 2);
    let data = bytes(100, 7);
    let params = Params::new(k, m, 24).unwrap();
    let (layout, pieces) = Encoder::new(params).unwrap().encode_bytes(&data).unwrap();
    for c in 0..k + m {
        for i in 0..pieces[c].len() {
            for flip in [1u8, 0x80, 0xff] {
                let mut bad = pieces.clone();
                bad[c][i] ^= flip;
                assert!(verify_piece(&layout, c, &bad[c][..]).is_err());
                // Keep only the corrupt piece and k - 1 others: not enough.
                let lost: Vec<usize> = (0..k + m).filter(|&j| j != c).take(m).collect();
                let have = present(&bad, &lost);
                assert!(matches!(
                    decode_all(&layout, &have, Verification::Full),
                    Err(ErasureError::NotEnoughPieces { have: 2, need: 3 })
                ));
                // With everything offered the corrupt piece is skipped.
                let have = present(&bad, &[]);
                assert_eq!(decode_all(&layout, &have, Verification::Full).unwrap(), data);
            }
        }
    }
    // Truncated and extended pieces are corrupt too.
    let mut short = pieces[1].clone();
    short.pop();
    assert!(verify_piece(&layout, 1, &short[..]).is_err());
    let mut long = pieces[1].clone();
    long.push(0);
    assert!(verify_piece(&layout, 1, &long[..]).is_err());
}

#[test]
fn trusted_mode_skips_hashing_and_uses_byte_ranges() {
    let (k, m) = (4, 2);
    let seg = 64;
    let data = bytes(1000, 3);
    let params = Params::new(k, m, seg).unwrap();
    let (layout, pieces) = Encoder::new(params).unwrap().encode_bytes(&data).unwrap();
    let g = layout.geometry();
    let range = 300u64..420;
    // Fetch only the covering segments' shards of pieces 1..5 (piece 0 lost).
    let segs = g.segments_covering(&range);
    let lo = g.piece_offset(segs.start) as usize;
    let hi = (g.piece_offset(segs.end - 1) + g.shard_len(segs.end - 1)) as usize;
    let have: Vec<Option<PieceRange<'_>>> = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (i != 0).then_some(PieceRange {
                offset: lo as u64,
                bytes: &p[lo..hi],
            })
        })
        .collect();
    let out = decode_trusted(&layout, &have, range.clone());
    assert_eq!(out, &data[300..420]);

    // Full verification cannot check a partial piece: it is treated as missing.
    let mut out = Vec::new();
    let e = Decoder::new(&layout)
        .unwrap()
        .decode_range(&have, range, &mut out)
        .unwrap_err();
    assert!(
        matches!(e, ErasureError::NotEnoughPieces { have: 0, need: 4 }),
        "{e:?}"
    );
    assert!(out.is_empty());
}

/// A source that records which bytes were read.
struct Recording<'a> {
    bytes: &'a [u8],
    reads: Mutex<Vec<Range<u64>>>,
}

/// A piece in shared blocks of `block` bytes, lending what lies in `held`
/// (and reading the rest).
struct Lending {
    blocks: Vec<Arc<Vec<u8>>>,
    block: usize,
    held: Range<u64>,
    len: u64,
    reads: Mutex<Vec<Range<u64>>>,
}

impl Lending {
    fn new(piece: &[u8], block: usize, held: Range<u64>) -> Self {
        Self {
            blocks: piece.chunks(block).map(|c| Arc::new(c.to_vec())).collect(),
            block,
            held,
            len: piece.len() as u64,
            reads: Mutex::new(Vec::new()),
        }
    }
}

impl PieceSource for Lending {
    fn len(&self) -> io::Result<u64> {
        Ok(self.len)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.reads
            .lock()
            .expect("reads")
            .push(offset..offset + buf.len() as u64);
        for (i, b) in buf.iter_mut().enumerate() {
            let at = offset as usize + i;
            *b = *self
                .blocks
                .get(at / self.block)
                .and_then(|blk| blk.get(at % self.block))
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "past the end"))?;
        }
        Ok(())
    }
    fn lend(&self, offset: u64, len: usize) -> Option<Lent> {
        let end = offset + len as u64;
        if offset < self.held.start || end > self.held.end {
            return None;
        }
        let mut lent = Lent::default();
        let mut at = offset as usize;
        while at < end as usize {
            let (i, from) = (at / self.block, at % self.block);
            let n = (self.block - from).min(end as usize - at);
            assert!(lent.push(self.blocks[i].clone(), from..from + n));
            at += n;
        }
        Some(lent)
    }
}

impl PieceSource for Recording<'_> {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes.len() as u64)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if let Ok(mut reads) = self.reads.lock() {
            reads.push(offset..offset + buf.len() as u64);
        }
        self.bytes.read_at(offset, buf)
    }
}

#[test]
fn range_decode_reads_only_covering_segments() {
    let (k, m) = (3, 2);
    let seg = 30;
    let data = bytes(1000, 11);
    let params = Params::new(k, m, seg).unwrap();
    let (layout, pieces) = Encoder::new(params).unwrap().encode_bytes(&data).unwrap();
    let g = layout.geometry();
    for lost in [vec![], vec![1], vec![0, 2]] {
        for range in [0u64..1, 95..205, 999..1000, 450..451] {
            let srcs: Vec<Option<Recording<'_>>> = pieces
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    (!lost.contains(&i)).then(|| Recording {
                        bytes: p,
                        reads: Mutex::new(Vec::new()),
                    })
                })
                .collect();
            let out = decode_trusted(&layout, &srcs, range.clone());
            assert_eq!(out, &data[range.start as usize..range.end as usize]);
            let segs = g.segments_covering(&range);
            let lo = g.piece_offset(segs.start);
            let hi = g.piece_offset(segs.end - 1) + g.shard_len(segs.end - 1);
            let mut total = 0;
            for s in srcs.iter().flatten() {
                for r in s.reads.lock().unwrap().iter() {
                    assert!(lo <= r.start && r.end <= hi, "{r:?} outside {lo}..{hi}");
                    total += r.end - r.start;
                }
            }
            if lost.is_empty() {
                // All data present: exactly the wanted bytes are read.
                assert_eq!(total, range.end - range.start);
            }
        }
    }
}

#[test]
fn all_data_present_never_reads_parity() {
    let params = Params::new(4, 2, 64).unwrap();
    let data = bytes(1000, 5);
    let (layout, pieces) = Encoder::new(params).unwrap().encode_bytes(&data).unwrap();
    // Trusted garbage parity: if the codec ran on it, the output would be wrong.
    let garbage = vec![0xA5u8; pieces[4].len()];
    let have: Vec<Option<&[u8]>> = pieces[..4]
        .iter()
        .map(|p| Some(&p[..]))
        .chain([Some(&garbage[..]), Some(&garbage[..])])
        .collect();
    assert_eq!(decode_all(&layout, &have, Verification::Trusted).unwrap(), data);
}

#[test]
fn files_as_pieces() {
    let params = Params::new(3, 2, 3 * 1000).unwrap();
    let data = bytes(10_001, 9);
    let enc = Encoder::new(params).unwrap();
    let mut files: Vec<std::fs::File> = (0..5).map(|_| tempfile::tempfile().unwrap()).collect();
    let layout = enc.encode_to_writers(&data[..], &mut files).unwrap();
    for f in &mut files {
        f.flush().unwrap();
    }
    let mut have: Vec<Option<&std::fs::File>> = files.iter().map(Some).collect();
    have[1] = None;
    assert_eq!(decode_all(&layout, &have, Verification::Full).unwrap(), data);
    let mut rebuilt = vec![Vec::new()];
    Decoder::new(&layout)
        .unwrap()
        .repair(&have, &[1], &mut rebuilt)
        .unwrap();
    assert!(verify_piece(&layout, 1, &rebuilt[0][..]).is_ok());
}

#[test]
fn argument_errors() {
    let params = Params::new(2, 1, 8).unwrap();
    let enc = Encoder::new(params).unwrap();
    let (layout, pieces) = enc.encode_bytes(&bytes(20, 1)).unwrap();
    let dec = Decoder::new(&layout).unwrap();
    let have = present(&pieces, &[]);
    assert!(matches!(
        dec.decode_range(&have, 5..21, Vec::new()),
        Err(ErasureError::Range {
            start: 5,
            end: 21,
            file_len: 20
        })
    ));
    assert!(matches!(
        dec.decode(&have[..2], Vec::new()),
        Err(ErasureError::PieceCount {
            expected: 3,
            found: 2
        })
    ));
    let mut w = vec![Vec::new()];
    assert!(matches!(
        dec.repair(&have, &[3], &mut w),
        Err(ErasureError::PieceIndex { index: 3, total: 3 })
    ));
    assert!(matches!(
        dec.repair(&have, &[0, 1], &mut w),
        Err(ErasureError::WriterCount {
            expected: 2,
            found: 1
        })
    ));
    let mut two = vec![Vec::new(), Vec::new()];
    assert!(matches!(
        enc.encode_to_writers(&b"x"[..], &mut two),
        Err(ErasureError::WriterCount {
            expected: 3,
            found: 2
        })
    ));
    // Repairing two of three pieces with k = 2 is impossible.
    assert!(matches!(
        dec.repair(&have, &[0, 2], &mut two),
        Err(ErasureError::NotEnoughPieces { have: 1, need: 2 })
    ));
    let e = ErasureError::NotEnoughPieces { have: 1, need: 2 };
    assert_eq!(e.to_string(), "not enough usable pieces: found 1, need 2");
}

#[test]
fn empty_and_one_byte_files() {
    let params = Params::with_default_segment(10, 4).unwrap();
    let enc = Encoder::new(params).unwrap();
    let (layout, pieces) = enc.encode_bytes(&[]).unwrap();
    assert!(pieces.iter().all(Vec::is_empty));
    assert_eq!(layout.pieces()[0].hash, blake3::hash(b""));
    assert_eq!(
        decode_all(&layout, &present(&pieces, &[]), Verification::Full).unwrap(),
        b""
    );

    let (layout, pieces) = enc.encode_bytes(&[42]).unwrap();
    assert!(
        pieces.iter().all(|p| p.len() == 1),
        "a 1-byte file gives 1-byte pieces"
    );
    let have = present(&pieces, &[0, 1, 2, 3]);
    assert_eq!(decode_all(&layout, &have, Verification::Full).unwrap(), [42]);
}

/// Writing fails part-way: the error is returned, not swallowed.
#[test]
fn writer_errors_propagate() {
    struct Fail;
    impl Write for Fail {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let params = Params::new(2, 1, 8).unwrap();
    let enc = Encoder::new(params).unwrap();
    let (layout, pieces) = enc.encode_bytes(&bytes(20, 1)).unwrap();
    let e = Decoder::new(&layout)
        .unwrap()
        .decode(&present(&pieces, &[]), Fail)
        .unwrap_err();
    assert!(matches!(e, ErasureError::Io(_)), "{e}");
    let e = enc
        .encode_to_writers(&bytes(20, 1)[..], &mut [Fail, Fail, Fail])
        .unwrap_err();
    assert!(matches!(e, ErasureError::Io(_)), "{e}");
}
