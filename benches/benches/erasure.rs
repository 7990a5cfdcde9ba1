//! criterion: the erasure kernels `crowd-bench erasure` reports, in-process
//! on 64 MiB of pseudo-random data, each with `Throughput::Bytes` of file
//! data: raw reed-solomon-erasure encode/reconstruct (one call, one
//! thread), BLAKE3 (1 thread and rayon), and crowd-erasure's streaming
//! encode (with piece hashes) and decode (all data present; m lost).
//!
//! `cargo bench -p crowd-bench --bench erasure`

// A benchmark's inputs are generated here, not read from outside: a failed
// encode or decode is a bug to stop on, not an input error to report.
#![allow(clippy::expect_used)]

use std::io;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crowd_erasure::{Decoder, Encoder, Params, Verification};
use reed_solomon_erasure::galois_8::ReedSolomon;

const SIZE: usize = 64 << 20;
const CODES: [(usize, usize); 2] = [(4, 2), (10, 4)];

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

fn raw(c: &mut Criterion) {
    let data = pseudo_random(SIZE);
    let mut g = c.benchmark_group("erasure/raw");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sample_size(10);
    for (k, m) in CODES {
        let rs = ReedSolomon::new(k, m).expect("valid code");
        let sl = SIZE.div_ceil(k);
        let mut shards: Vec<Vec<u8>> = data.chunks(sl).map(<[u8]>::to_vec).collect();
        shards.iter_mut().for_each(|s| s.resize(sl, 0));
        shards.extend(std::iter::repeat_n(vec![0u8; sl], m));
        g.bench_function(BenchmarkId::new("rs_encode", format!("{k}+{m}")), |b| {
            b.iter(|| rs.encode(&mut shards).expect("encode"))
        });
        g.bench_function(BenchmarkId::new("rs_reconstruct_m", format!("{k}+{m}")), |b| {
            b.iter(|| {
                let mut slots: Vec<(&mut [u8], bool)> = shards
                    .iter_mut()
                    .enumerate()
                    .map(|(i, s)| (&mut s[..], i >= m))
                    .collect();
                rs.reconstruct_data(&mut slots).expect("reconstruct")
            })
        });
    }
    g.bench_function("blake3_1t", |b| b.iter(|| blake3::hash(&data)));
    g.bench_function("blake3_rayon", |b| {
        b.iter(|| blake3::Hasher::new().update_rayon(&data).finalize())
    });
    g.finish();
}

fn streaming(c: &mut Criterion) {
    let data = pseudo_random(SIZE);
    let mut g = c.benchmark_group("erasure/stream");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sample_size(10);
    for (k, m) in CODES {
        let id = format!("{k}+{m}");
        let enc = Encoder::new(Params::with_default_segment(k, m).expect("params")).expect("encoder");
        g.bench_function(BenchmarkId::new("encode_hash", &id), |b| {
            b.iter(|| {
                let mut sinks: Vec<io::Sink> = (0..k + m).map(|_| io::sink()).collect();
                enc.encode_to_writers(&data[..], &mut sinks).expect("encode")
            })
        });
        let (layout, pieces) = enc.encode_bytes(&data).expect("encode");
        let all: Vec<Option<&[u8]>> = pieces.iter().map(|p| Some(&p[..])).collect();
        let mut lost = all.clone();
        lost.iter_mut().take(m).for_each(|p| *p = None);
        let mut out = Vec::with_capacity(SIZE);
        for (name, have, v) in [
            ("decode_all_data", &all, Verification::Full),
            ("decode_all_data_trusted", &all, Verification::Trusted),
            ("decode_m_lost", &lost, Verification::Full),
        ] {
            let dec = Decoder::new(&layout).expect("decoder").with_verification(v);
            g.bench_function(BenchmarkId::new(name, &id), |b| {
                b.iter(|| {
                    out.clear();
                    dec.decode(have, &mut out).expect("decode")
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, raw, streaming);
criterion_main!(benches);
