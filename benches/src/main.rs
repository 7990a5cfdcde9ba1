//! `crowd-bench`: the harness operators run to size hardware for crowdstore.
//!
//! Each subcommand measures one layer in a single run, together with the raw
//! bound it is compared with (BLAKE3's rate, the raw Reed-Solomon codec), so
//! every figure reads as a fraction of what the machine can do.

use clap::{Parser, Subcommand};

mod erasure;
mod machine;
mod proofs;

#[derive(Debug, Parser)]
#[command(
    name = "crowd-bench",
    version,
    about = "Measure crowdstore throughput on this machine"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Reed-Solomon erasure coding: raw codec vs streaming encode/decode.
    Erasure(erasure::ErasureArgs),
    /// Proof of replication: commitments, sealing, seal and window proofs.
    Proofs(proofs::ProofsArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Erasure(args) => erasure::run(args),
        Cmd::Proofs(args) => proofs::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crowd-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
