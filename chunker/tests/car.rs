//! CAR round trips and what a corrupt, truncated or incomplete CAR gives.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod common {
    include!("common/xorshift.rs");
}

use std::io::{Seek, Write};

use crowd_chunker::{extract_file, write_car, ChunkParams, ChunkerError, ChunkerKind, DagParams, HashAlg};
use proptest::prelude::*;

fn small_params(hash: HashAlg) -> DagParams {
    DagParams::new(ChunkParams::new(ChunkerKind::Fixed, 512).unwrap(), 3, hash).unwrap()
}

fn car_of(data: &[u8], p: &DagParams) -> Vec<u8> {
    let mut car = Vec::new();
    write_car(data, p, &mut car).unwrap();
    car
}

fn extract(car: &[u8]) -> Result<Vec<u8>, ChunkerError> {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(car).unwrap();
    f.rewind().unwrap();
    let mut out = Vec::new();
    extract_file(&f, &mut out).map(|_| out)
}

/// Byte ranges of each block's data in a CAR written by us (header, then sections).
fn block_ranges(car: &[u8]) -> Vec<std::ops::Range<usize>> {
    let (hlen, rest) = unsigned_varint::decode::u64(car).unwrap();
    let mut at = car.len() - rest.len() + hlen as usize;
    let mut out = Vec::new();
    while at < car.len() {
        let (len, rest) = unsigned_varint::decode::u64(&car[at..]).unwrap();
        let body = car.len() - rest.len();
        let cid = cid::Cid::read_bytes(&car[body..]).unwrap();
        out.push(body + cid.encoded_len()..body + len as usize);
        at = body + len as usize;
    }
    out
}

#[test]
fn roundtrip_both_hashes() {
    for hash in [HashAlg::Blake3, HashAlg::Sha2_256] {
        for size in [0, 1, 511, 512, 513, 5000, 20_000] {
            let data = common::test_data(size, 7);
            let car = car_of(&data, &small_params(hash));
            assert_eq!(extract(&car).unwrap(), data, "size {size} {hash}");
        }
    }
}

#[test]
fn every_corrupt_block_is_named() {
    let data = common::test_data(5000, 9);
    let car = car_of(&data, &small_params(HashAlg::Blake3));
    let ranges = block_ranges(&car);
    assert!(ranges.len() > 10);
    for r in ranges {
        let mut bad = car.clone();
        bad[r.start + (r.end - r.start) / 2] ^= 0x40;
        match extract(&bad) {
            Err(ChunkerError::HashMismatch { offset, .. }) => {
                assert_eq!(offset as usize, r.start - cid_len(&car, &r))
            }
            other => panic!("expected a hash mismatch, got {other:?}"),
        }
    }
}

fn cid_len(car: &[u8], r: &std::ops::Range<usize>) -> usize {
    // the CID sits just before the block data; find where it starts
    (1..=64)
        .find(|n| {
            cid::Cid::read_bytes(&car[r.start - n..])
                .map(|c| c.encoded_len() == *n)
                .unwrap_or(false)
        })
        .unwrap()
}

#[test]
fn every_truncation_is_an_error() {
    let data = common::test_data(3000, 11);
    let car = car_of(&data, &small_params(HashAlg::Sha2_256));
    let mut ends: std::collections::HashSet<usize> = block_ranges(&car).iter().map(|r| r.end).collect();
    let (hlen, rest) = unsigned_varint::decode::u64(&car).unwrap();
    ends.insert(car.len() - rest.len() + hlen as usize); // header only
    for cut in 0..car.len() {
        let result = extract(&car[..cut]);
        // cutting exactly between sections leaves a valid CAR missing blocks
        if ends.contains(&cut) {
            assert!(
                matches!(result, Err(ChunkerError::MissingBlock { .. })),
                "cut {cut}: {result:?}"
            );
        } else {
            assert!(
                matches!(
                    result,
                    Err(ChunkerError::TruncatedCar { .. } | ChunkerError::MalformedCar { .. })
                ),
                "cut {cut}: {result:?}"
            );
        }
    }
}

#[test]
fn malformed_headers_and_sections() {
    let data = common::test_data(2000, 3);
    let car = car_of(&data, &small_params(HashAlg::Blake3));
    // not a CAR at all
    assert!(matches!(
        extract(b"hello world, not a car"),
        Err(ChunkerError::TruncatedCar { .. })
    ));
    assert!(matches!(
        extract(&[5, 1, 2, 3, 4, 5]),
        Err(ChunkerError::MalformedCar { .. })
    ));
    // a header length beyond the cap
    assert!(matches!(
        extract(&[0xff, 0xff, 0x7f]),
        Err(ChunkerError::MalformedCar { .. })
    ));
    // a section length beyond the cap
    let (hlen, rest) = unsigned_varint::decode::u64(&car).unwrap();
    let body = car.len() - rest.len() + hlen as usize;
    let mut bad = car[..body].to_vec();
    bad.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
    let err = extract(&bad).unwrap_err();
    assert!(err.to_string().contains("section length"), "{err}");
}

#[test]
fn missing_block_is_named() {
    let data = common::test_data(2000, 5);
    let car = car_of(&data, &small_params(HashAlg::Blake3));
    let ranges = block_ranges(&car);
    // drop the last section (a leaf)
    let last = ranges.last().unwrap();
    let start = last.start - cid_len(&car, last) - 2; // 2-byte varint for a 512-byte section
    let err = extract(&car[..start]).unwrap_err();
    assert!(matches!(err, ChunkerError::MissingBlock { .. }), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Any single-byte change either leaves the file intact or is an error,
    /// never a panic and never different bytes.
    #[test]
    fn car_mutation_proptest(pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let data = common::test_data(3000, 13);
        let mut car = car_of(&data, &small_params(HashAlg::Blake3));
        let i = pos.index(car.len());
        car[i] ^= xor;
        if let Ok(out) = extract(&car) {
            prop_assert_eq!(out, data);
        }
    }
}
