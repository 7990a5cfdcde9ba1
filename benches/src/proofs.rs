//! `crowd-bench proofs`: commitments, sealing, seal proofs and window proofs,
//! each next to the BLAKE3 bound it is limited by, measured in the same run.
//!
//! Bounds:
//! * commitment build (piece → BLAKE3 root + outboard) vs `Hasher::update_rayon`
//!   over the same piece on the same thread pool;
//! * labelling vs `labels × t_label`, where `t_label` is the time of one
//!   `blake3::keyed_hash` over one label's input size, measured in a tight loop
//!   (layer 1 has no expander parents and a shorter input);
//! * window-proof verification vs the target of 100,000 challenged nodes per
//!   second per core (verification runs on one thread);
//! * the production preset's seal rate vs Filecoin's PC1: a 32 GiB sector in
//!   about 3 hours on one core with SHA extensions (≈ 3.0 MiB/s).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use crowd_porep::graph::node_count;
use crowd_porep::proof::{prove_seal, prove_seal_sectors, prove_window, verify_seal, verify_window};
use crowd_porep::seal::{replica_id, seal_sectors, unseal, unseal_to};
use crowd_porep::{
    Labels, Outboard, Parents, SealParams, SealProof, SealPublic, Sealed, SectorWitness, WindowProof,
    WindowPublic,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::machine::Machine;

/// Sealing parameter presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// 2 layers, 3 + 3 parents: fast, for development networks.
    Devnet,
    /// 11 layers, 6 + 8 parents: close to Filecoin's SDR.
    Production,
}

#[derive(Debug, clap::Args)]
pub struct ProofsArgs {
    /// Piece size in bytes.
    #[arg(long, default_value_t = 64 << 20, env = "CROWD_BENCH_PIECE_SIZE")]
    pub piece_size: u64,
    /// Sealing parameter preset.
    #[arg(long, value_enum, default_value_t = Preset::Devnet, env = "CROWD_BENCH_PRESET")]
    pub preset: Preset,
    /// Override the preset's number of layers.
    #[arg(long)]
    pub layers: Option<u32>,
    /// Override the preset's number of seal-proof challenges.
    #[arg(long)]
    pub challenges: Option<u32>,
    /// Threads in the rayon pool (default: all logical cores).
    #[arg(long, env = "CROWD_BENCH_THREADS")]
    pub threads: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A measured figure next to its bound.
#[derive(Debug, Serialize)]
struct Figure {
    name: &'static str,
    value: f64,
    unit: &'static str,
    bound: Option<f64>,
    /// `value / bound` (for rates) — 1.0 means at the bound.
    fraction: Option<f64>,
    target: Option<&'static str>,
    met: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    preset: Preset,
    params: SealParams,
    piece_size: u64,
    nodes: u64,
    threads: usize,
    label_input_bytes: usize,
    blake3: Blake3Rates,
    seal_proof_bytes: usize,
    window_proof_bytes: usize,
    outboard_bytes: usize,
    label_memory_bytes: usize,
    /// Labels held by the sector path (sealing, unsealing, seal proofs): one
    /// sector's `L` layers.
    sector_label_memory_bytes: u64,
    parent_table_bytes: usize,
    parent_table_secs: f64,
    figures: Vec<Figure>,
}

#[derive(Debug, Serialize)]
struct Blake3Rates {
    /// `Hasher::update_rayon` over the piece, GB/s.
    multi_thread_gbps: f64,
    /// `blake3::hash` over the piece on one thread, GB/s.
    single_thread_gbps: f64,
    /// One `keyed_hash` of a layer ≥ 2 label input, ns.
    label_ns: f64,
    /// One `keyed_hash` of a layer-1 label input, ns.
    label_layer1_ns: f64,
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let t = Instant::now();
    let mut out = f();
    let mut best = t.elapsed();
    for _ in 1..runs {
        let t = Instant::now();
        out = f();
        best = best.min(t.elapsed());
    }
    (best, out)
}

/// Nanoseconds per `keyed_hash` over `len` bytes, best of 5 batches.
fn label_hash_ns(len: usize) -> f64 {
    let key = blake3::derive_key("crowd-bench label bound", b"");
    let mut buf = vec![0x5au8; len];
    let iters = 200_000u64;
    let (t, _) = best_of(5, || {
        let mut acc = [0u8; 32];
        for i in 0..iters {
            buf[..8].copy_from_slice(&i.to_le_bytes());
            buf[8..40].copy_from_slice(&acc);
            acc = *blake3::keyed_hash(&key, &buf).as_bytes();
        }
        std::hint::black_box(acc)
    });
    t.as_nanos() as f64 / iters as f64
}

fn figure(
    name: &'static str,
    value: f64,
    unit: &'static str,
    bound: Option<f64>,
    target: Option<(&'static str, f64)>,
) -> Figure {
    let fraction = bound.map(|b| value / b);
    Figure {
        name,
        value,
        unit,
        bound,
        fraction,
        target: target.map(|t| t.0),
        met: target.and_then(|(_, min)| fraction.map(|f| f >= min)),
    }
}

pub fn run(args: ProofsArgs) -> anyhow::Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("building the rayon pool")?;
    let report = pool.install(|| measure(&args, threads))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn measure(args: &ProofsArgs, threads: usize) -> anyhow::Result<Report> {
    let mut params = match args.preset {
        Preset::Devnet => SealParams::devnet(),
        Preset::Production => SealParams::production(),
    };
    if let Some(l) = args.layers {
        params.layers = l;
    }
    if let Some(c) = args.challenges {
        params.seal_challenges = c;
    }
    params.validate()?;
    if args.piece_size == 0 {
        bail!("--piece-size must be at least 1 byte");
    }
    let size = usize::try_from(args.piece_size).context("--piece-size does not fit memory")?;
    let nodes = node_count(args.piece_size);

    let steps = 9 + u64::from(params.layers);
    let bar = if args.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(steps)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let step = |msg: &'static str| {
        bar.set_message(msg);
        bar.inc(1);
    };

    bar.set_message("generating piece");
    let mut piece = vec![0u8; size];
    blake3::Hasher::new()
        .update(b"crowd-bench proofs piece")
        .finalize_xof()
        .fill(&mut piece);

    // --- BLAKE3 bounds ---
    let (mt, _) = best_of(3, || {
        *blake3::Hasher::new().update_rayon(&piece).finalize().as_bytes()
    });
    let (st, _) = best_of(3, || *blake3::hash(&piece).as_bytes());
    let label_ns = label_hash_ns(params.label_input_len());
    let label1_ns = label_hash_ns(crowd_porep::params::LABEL_PREFIX_LEN + 32 * params.drg_degree as usize);
    let gb = |d: Duration| args.piece_size as f64 / d.as_secs_f64() / 1e9;
    let mb = |d: Duration| args.piece_size as f64 / d.as_secs_f64() / 1e6;
    let blake3 = Blake3Rates {
        multi_thread_gbps: gb(mt),
        single_thread_gbps: gb(st),
        label_ns,
        label_layer1_ns: label1_ns,
    };
    step("commitment build");

    // --- commitment build: root + outboard ---
    let (commit_t, outboard) = best_of(3, || Outboard::build(&piece));
    if outboard.root() != *blake3::hash(&piece).as_bytes() {
        bail!("comm_d differs from blake3::hash: the tree is broken");
    }
    let comm_d = outboard.root();
    step("parent table");

    let (parents_t, parents) = best_of(1, || Parents::new(nodes, &params));
    let parents = parents?;
    step("labelling");

    // --- seal: labelling (sequential) then encoding + commitments (rayon) ---
    let rid = replica_id(&[0xb0; 32], &comm_d, 1, &[0x71; 32]);
    let t = Instant::now();
    let labels = Labels::generate(&rid, nodes, &params, &parents, |_| step("labelling"))?;
    let label_t = t.elapsed();
    let label_memory = labels.size_bytes();
    let t = Instant::now();
    let sealed = Sealed::from_labels(&piece, &rid, labels)?;
    let finish_t = t.elapsed();
    let seal_t = label_t + finish_t;
    step("unseal");

    let t = Instant::now();
    let back = unseal(&sealed.replica, args.piece_size, &rid, &params, &parents)?;
    let unseal_t = t.elapsed();
    if back != piece {
        bail!("unsealing did not give back the piece");
    }
    drop(back);
    step("seal by sectors");

    // --- the node's path: one sector's labels at a time, the replica
    // streamed out (to nowhere here: compute only) ---
    let t = Instant::now();
    let by_sectors = seal_sectors(piece.as_slice(), &rid, &params, &parents, &mut std::io::sink())?;
    let sectors_t = t.elapsed();
    if by_sectors.comm_r != sealed.commitments.comm_r {
        bail!("sealing by sectors gave another comm_r than sealing in memory");
    }
    step("unseal by sectors");
    let t = Instant::now();
    let mut back = Vec::with_capacity(piece.len());
    unseal_to(
        sealed.replica.as_slice(),
        args.piece_size,
        &rid,
        &params,
        &parents,
        &mut back,
    )?;
    let unseal_sectors_t = t.elapsed();
    if back != piece {
        bail!("unsealing by sectors did not give back the piece");
    }
    drop(back);
    step("seal proof");

    // --- seal proof ---
    let seed = [0x5e; 32];
    let (prove_t, proof) = best_of(3, || prove_seal(&piece, &sealed, &params, &parents, &seed));
    let proof = proof?;
    let encoded = proof.encode();
    let public = SealPublic {
        piece_len: args.piece_size,
        comm_d,
        comm_r: sealed.commitments.comm_r,
        replica_id: rid,
        seed,
    };
    let (verify_t, ok) = best_of(5, || {
        SealProof::decode(&encoded).and_then(|p| verify_seal(&public, &params, &p))
    });
    ok?;
    step("seal proof by sectors");
    let stored = SectorWitness {
        replica_id: rid,
        piece: &piece.as_slice(),
        data_outboard: &outboard,
        replica: &sealed.replica.as_slice(),
        replica_outboard: &sealed.replica_outboard,
    };
    let t = Instant::now();
    let by_sectors = prove_seal_sectors(&stored, &params, &parents, &seed)?;
    let prove_sectors_t = t.elapsed();
    if by_sectors != proof {
        bail!("the seal proof by sectors differs from the one in memory");
    }
    step("window proofs");

    // --- window proofs ---
    let randomness = [0xaa; 32];
    let window = |epoch: u64| {
        prove_window(
            sealed.replica.as_slice(),
            &sealed.replica_outboard,
            &sealed.commitments.comm_c,
            &params,
            1,
            epoch,
            &randomness,
        )
    };
    let wprove_n = 500u64;
    let t = Instant::now();
    let mut wproofs = Vec::with_capacity(wprove_n as usize);
    for epoch in 0..wprove_n {
        wproofs.push(window(epoch)?.encode());
    }
    let wprove_t = t.elapsed();
    let wbytes = wproofs.first().map_or(0, Vec::len);
    step("window verify");
    // Verification on one thread (this one): decode + verify, rotating epochs.
    let wverify_n = 5_000u64;
    let t = Instant::now();
    for k in 0..wverify_n {
        let epoch = k % wprove_n;
        let public = WindowPublic {
            piece_len: args.piece_size,
            comm_r: sealed.commitments.comm_r,
            deal_id: 1,
            epoch,
            randomness,
        };
        WindowProof::decode(&wproofs[epoch as usize]).and_then(|p| verify_window(&public, &params, &p))?;
    }
    let wverify_t = t.elapsed();
    step("done");
    bar.finish_and_clear();

    let labels_total = params.labels_for(nodes) as f64;
    let label_bound_secs = nodes as f64 * (label1_ns + (f64::from(params.layers) - 1.0) * label_ns) / 1e9;
    let n_window = f64::from(params.window_challenges);
    let wverify_per_sec = wverify_n as f64 / wverify_t.as_secs_f64();
    let filecoin_pc1_mbps = 32.0 * 1024.0 * 1024.0 * 1024.0 / (3.0 * 3600.0) / 1e6;

    let mut figures = vec![
        figure(
            "commitment build",
            gb(commit_t),
            "GB/s",
            Some(blake3.multi_thread_gbps),
            Some((">= 80% of BLAKE3 multi-threaded", 0.8)),
        ),
        figure(
            "labelling",
            labels_total / label_t.as_secs_f64() / 1e6,
            "Mlabels/s",
            Some(labels_total / label_bound_secs / 1e6),
            Some((">= 80% of labels x t_label", 0.8)),
        ),
        figure(
            "seal (labels + encode + commit)",
            mb(seal_t),
            "MB/s",
            Some(args.piece_size as f64 / label_bound_secs / 1e6),
            None,
        ),
        figure(
            "unseal",
            mb(unseal_t),
            "MB/s",
            Some(args.piece_size as f64 / label_bound_secs / 1e6),
            None,
        ),
        figure(
            "seal by sectors (the node's path)",
            mb(sectors_t),
            "MB/s",
            Some(args.piece_size as f64 / label_bound_secs / 1e6),
            None,
        ),
        figure(
            "unseal by sectors",
            mb(unseal_sectors_t),
            "MB/s",
            Some(args.piece_size as f64 / label_bound_secs / 1e6),
            None,
        ),
        figure(
            "seal proof generate",
            prove_t.as_secs_f64() * 1e3,
            "ms",
            None,
            None,
        ),
        figure(
            "seal proof generate by sectors (labels again)",
            prove_sectors_t.as_secs_f64() * 1e3,
            "ms",
            None,
            None,
        ),
        figure(
            "seal proof verify",
            verify_t.as_secs_f64() * 1e3,
            "ms",
            None,
            None,
        ),
        figure(
            "seal proof size",
            encoded.len() as f64 / 1024.0,
            "KiB",
            None,
            None,
        ),
        figure(
            "window proof generate",
            wprove_n as f64 / wprove_t.as_secs_f64(),
            "proofs/s",
            None,
            None,
        ),
        figure(
            "window proof verify (1 thread)",
            wverify_per_sec,
            "proofs/s",
            None,
            None,
        ),
        figure(
            "window verify, challenged nodes",
            wverify_per_sec * n_window,
            "nodes/s/core",
            Some(100_000.0),
            Some((">= 100,000 nodes/s/core", 1.0)),
        ),
        figure("window proof size", wbytes as f64 / 1024.0, "KiB", None, None),
    ];
    if args.preset == Preset::Production {
        figures.push(figure(
            "seal vs Filecoin PC1 (32 GiB / 3 h, 1 core)",
            mb(seal_t),
            "MB/s",
            Some(filecoin_pc1_mbps),
            None,
        ));
    }

    Ok(Report {
        machine: Machine::detect(),
        preset: args.preset,
        params,
        piece_size: args.piece_size,
        nodes,
        threads,
        label_input_bytes: params.label_input_len(),
        blake3,
        seal_proof_bytes: encoded.len(),
        window_proof_bytes: wbytes,
        outboard_bytes: outboard.size_bytes(),
        label_memory_bytes: label_memory,
        sector_label_memory_bytes: u64::from(params.layers)
            * params.sector_bytes().min(args.piece_size.div_ceil(32) * 32),
        parent_table_bytes: parents.size_bytes(),
        parent_table_secs: parents_t.as_secs_f64(),
        figures,
    })
}

fn print_table(r: &Report) {
    println!("crowd-bench proofs · {}", r.machine.summary());
    println!(
        "preset {:?}: L={} d={} e={} · seal challenges {} · window challenges {} · piece {} B ({} nodes) · {} threads",
        r.preset,
        r.params.layers,
        r.params.drg_degree,
        r.params.expander_degree,
        r.params.seal_challenges,
        r.params.window_challenges,
        r.piece_size,
        r.nodes,
        r.threads
    );
    println!(
        "BLAKE3 on this machine: {:.2} GB/s multi-threaded, {:.2} GB/s one thread, {:.0} ns per {}-byte label ({:.0} ns layer 1)",
        r.blake3.multi_thread_gbps,
        r.blake3.single_thread_gbps,
        r.blake3.label_ns,
        r.label_input_bytes,
        r.blake3.label_layer1_ns
    );
    println!(
        "memory: labels {} MiB in memory, {} MiB by sectors ({} nodes each), parent tables {} MiB (built in {:.2} s), outboard {} KiB",
        r.label_memory_bytes >> 20,
        r.sector_label_memory_bytes >> 20,
        r.params.sector_nodes,
        r.parent_table_bytes >> 20,
        r.parent_table_secs,
        r.outboard_bytes >> 10
    );
    println!();
    println!(
        "{:<44} {:>12} {:<12} {:>12} {:>9}  target",
        "figure", "value", "unit", "bound", "of bound"
    );
    for f in &r.figures {
        let bound = f.bound.map_or(String::from("-"), |b| format!("{b:.2}"));
        let frac = f
            .fraction
            .map_or(String::from("-"), |x| format!("{:.0}%", x * 100.0));
        let target = match (f.target, f.met) {
            (Some(t), Some(true)) => format!("{t}: met"),
            (Some(t), _) => format!("{t}: MISSED"),
            _ => String::new(),
        };
        println!(
            "{:<44} {:>12.2} {:<12} {:>12} {:>9}  {}",
            f.name, f.value, f.unit, bound, frac, target
        );
    }
}
