//! Chunk + hash throughput of the UnixFS DAG builder, beside BLAKE3's own
//! multi-threaded rate on the same bytes (the bound).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is a failure

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crowd_chunker::{
    build_from_reader, build_from_slice, ChunkParams, ChunkerKind, DagParams, Discard, HashAlg,
};

fn data(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let input = data(64 << 20);
    let mut g = c.benchmark_group("chunk+hash 64MiB");
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.sample_size(10);
    g.bench_function("blake3 update_rayon (bound)", |b| {
        b.iter(|| {
            let mut h = blake3::Hasher::new();
            h.update_rayon(&input);
            h.finalize()
        })
    });
    let cases = [
        (
            "fixed 1MiB blake3 slice",
            ChunkerKind::Fixed,
            1 << 20,
            HashAlg::Blake3,
        ),
        (
            "fixed 1MiB sha2-256 slice",
            ChunkerKind::Fixed,
            1 << 20,
            HashAlg::Sha2_256,
        ),
        (
            "fastcdc 1MiB blake3 slice",
            ChunkerKind::FastCdc,
            1 << 20,
            HashAlg::Blake3,
        ),
        (
            "fixed 256KiB blake3 slice",
            ChunkerKind::Fixed,
            256 << 10,
            HashAlg::Blake3,
        ),
    ];
    for (name, kind, size, hash) in cases {
        let p = DagParams::new(ChunkParams::new(kind, size).unwrap(), 1024, hash).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| build_from_slice(&input, &p, &mut Discard).unwrap())
        });
    }
    let p = DagParams::default();
    g.bench_function("fixed 1MiB blake3 reader", |b| {
        b.iter(|| build_from_reader(&input[..], &p, &mut Discard).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
