//! criterion benches for the proof-of-replication kernels, each next to its
//! BLAKE3 bound: tree build vs `update_rayon`, labelling vs one label hash,
//! seal/window proof generation and verification.

// A bench whose fixed setup fails should stop loudly.
#![allow(clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crowd_porep::graph::node_count;
use crowd_porep::proof::{prove_seal, prove_window, verify_seal, verify_window};
use crowd_porep::seal::{replica_id, unseal};
use crowd_porep::{Labels, Outboard, Parents, SealParams, SealPublic, Sealed, WindowPublic};

fn piece(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"criterion porep piece")
        .finalize_xof()
        .fill(&mut v);
    v
}

fn commitments(c: &mut Criterion) {
    let data = piece(16 << 20);
    let mut g = c.benchmark_group("commitment");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(20);
    g.bench_function("outboard_build_16MiB", |b| {
        b.iter(|| Outboard::build(black_box(&data)))
    });
    g.bench_function("blake3_update_rayon_16MiB (bound)", |b| {
        b.iter(|| {
            *blake3::Hasher::new()
                .update_rayon(black_box(&data))
                .finalize()
                .as_bytes()
        })
    });
    g.finish();
}

fn labelling(c: &mut Criterion) {
    let mut g = c.benchmark_group("labelling");
    g.sample_size(10);
    for (name, params) in [
        ("devnet", SealParams::devnet()),
        ("production", SealParams::production()),
    ] {
        let len = 1usize << 20;
        let nodes = node_count(len as u64);
        let parents = Parents::new(nodes, &params).expect("valid params");
        let rid = [9u8; 32];
        g.throughput(Throughput::Bytes(len as u64 * u64::from(params.layers)));
        g.bench_function(BenchmarkId::new("labels_1MiB", name), |b| {
            b.iter(|| Labels::generate(&rid, nodes, &params, &parents, |_| {}).expect("labels"))
        });
        let key = blake3::derive_key("bench", b"");
        let input = vec![1u8; params.label_input_len()];
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(BenchmarkId::new("one_label_hash (bound)", name), |b| {
            b.iter(|| *blake3::keyed_hash(&key, black_box(&input)).as_bytes())
        });
    }
    g.finish();
}

fn seal_and_proofs(c: &mut Criterion) {
    let params = SealParams::devnet();
    let data = piece(4 << 20);
    let nodes = node_count(data.len() as u64);
    let parents = Parents::new(nodes, &params).expect("valid params");
    let comm_d = *blake3::hash(&data).as_bytes();
    let rid = replica_id(&[1; 32], &comm_d, 3, &[2; 32]);
    let labels = Labels::generate(&rid, nodes, &params, &parents, |_| {}).expect("labels");
    let sealed = Sealed::from_labels(&data, &rid, labels).expect("seal");

    let mut g = c.benchmark_group("seal_devnet_4MiB");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("unseal", |b| {
        b.iter(|| unseal(&sealed.replica, data.len() as u64, &rid, &params, &parents).expect("unseal"))
    });
    g.finish();

    let seed = [4u8; 32];
    let proof = prove_seal(&data, &sealed, &params, &parents, &seed).expect("prove");
    let public = SealPublic {
        piece_len: data.len() as u64,
        comm_d,
        comm_r: sealed.commitments.comm_r,
        replica_id: rid,
        seed,
    };
    let mut g = c.benchmark_group("seal_proof_devnet_4MiB");
    g.throughput(Throughput::Elements(u64::from(params.seal_challenges)));
    g.bench_function("prove", |b| {
        b.iter(|| prove_seal(&data, &sealed, &params, &parents, &seed).expect("prove"))
    });
    g.bench_function("verify", |b| {
        b.iter(|| verify_seal(&public, &params, black_box(&proof)).expect("verify"))
    });
    g.finish();

    let randomness = [5u8; 32];
    let window = prove_window(
        sealed.replica.as_slice(),
        &sealed.replica_outboard,
        &sealed.commitments.comm_c,
        &params,
        3,
        10,
        &randomness,
    )
    .expect("window");
    let wpublic = WindowPublic {
        piece_len: data.len() as u64,
        comm_r: sealed.commitments.comm_r,
        deal_id: 3,
        epoch: 10,
        randomness,
    };
    let mut g = c.benchmark_group("window_proof_devnet_4MiB");
    g.throughput(Throughput::Elements(u64::from(params.window_challenges)));
    g.bench_function("prove", |b| {
        b.iter(|| {
            prove_window(
                sealed.replica.as_slice(),
                &sealed.replica_outboard,
                &sealed.commitments.comm_c,
                &params,
                3,
                10,
                &randomness,
            )
            .expect("window")
        })
    });
    g.bench_function("verify", |b| {
        b.iter(|| verify_window(&wpublic, &params, black_box(&window)).expect("verify"))
    });
    g.finish();
}

criterion_group!(benches, commitments, labelling, seal_and_proofs);
criterion_main!(benches);
