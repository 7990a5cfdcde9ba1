//! `crowd`: the crowdstore command-line client.
//!
//! Offline: content addresses (`cid`) and CAR archives (`car`, `car-extract`).
//! On the network: `put`, `get`, `export`, `ls`, `status`, `balance` (client
//! home in `--home` / `CROWD_HOME`, default `~/.crowd`), and a local network
//! of real processes with `devnet` and `demo`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use crowd_chunker::{
    build_from_reader, build_from_slice, extract_file, write_car, ChunkParams, ChunkerKind, DagParams,
    DagRoot, Discard, HashAlg,
};

mod config;
mod demo;
mod devnet;
mod get;
mod home;
mod info;
mod input;
mod netcmd;
mod progress;
mod put;
mod records;
mod session;

#[derive(Debug, Parser)]
#[command(
    name = "crowd",
    version,
    about = "crowdstore client: content-address, store and retrieve files"
)]
struct Cli {
    /// The client's home: config.toml, identity key, records of stored files.
    #[arg(long, global = true, env = "CROWD_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Print a file's root CID (UnixFS v1 DAG, CIDv1) and nothing else.
    Cid {
        /// The file to address; `-` reads standard input.
        file: PathBuf,
        #[command(flatten)]
        dag: DagArgs,
    },
    /// Write a file's DAG as a CAR v1 archive and print its root CID.
    Car {
        /// The file to archive.
        file: PathBuf,
        /// Where to write the CAR (written to a temporary file, then renamed).
        #[arg(short, long, value_name = "OUT.car")]
        output: PathBuf,
        #[command(flatten)]
        dag: DagArgs,
    },
    /// Verify every block of a CAR v1 archive and write the file it holds.
    CarExtract {
        /// The CAR to read.
        car: PathBuf,
        /// Where to write the file (written to a temporary file, then renamed).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Store a file on the network: k+m pieces with k+m providers; prints its root CID.
    Put(netcmd::PutArgs),
    /// Retrieve a file by root CID, verifying every byte.
    Get(netcmd::GetArgs),
    /// Retrieve a file's DAG as a CAR v1 archive.
    Export(netcmd::ExportArgs),
    /// List the files this client has stored.
    Ls(netcmd::LsArgs),
    /// Per-provider deal, seal and proving state of a stored file.
    Status(netcmd::StatusArgs),
    /// This client's balance with the tracker.
    Balance(netcmd::BalanceArgs),
    /// A local network (tracker + storage nodes) of real processes on loopback.
    #[command(subcommand)]
    Devnet(devnet::DevnetCmd),
    /// The whole story in one command: devnet, put, prove, lose providers, get back.
    Demo(demo::DemoArgs),
}

/// Parameters that decide a file's root CID.
#[derive(Debug, Args)]
struct DagArgs {
    /// Hash function for every CID: blake3 (multihash 0x1e) or sha2-256 (the IPFS default).
    #[arg(long, default_value = "blake3", value_name = "blake3|sha2-256")]
    hash: HashAlg,
    /// How to cut the file: fixed-size chunks, or content-defined (FastCDC) chunks.
    #[arg(long, default_value = "fixed", value_name = "fixed|fastcdc")]
    chunker: ChunkerKind,
    /// Chunk size in bytes (the average for fastcdc); 1..=8 MiB. Suffixes K, M, KiB, MiB accepted.
    #[arg(long, default_value = "1MiB", value_name = "BYTES", value_parser = parse_size)]
    chunk_size: usize,
    /// Most links per DAG node (at least 2).
    #[arg(long, default_value_t = crowd_chunker::DEFAULT_MAX_LINKS, value_name = "N")]
    max_links: usize,
}

impl DagArgs {
    fn params(&self) -> Result<DagParams> {
        let chunking = ChunkParams::new(self.chunker, self.chunk_size)?;
        Ok(DagParams::new(chunking, self.max_links, self.hash)?)
    }
}

/// Parses `1048576`, `1M`, `1MiB`, `256K`, `256KiB`.
fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("'{s}' is not a size in bytes"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        _ => return Err(format!("unknown size unit '{unit}' (use K, KiB, M or MiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large"))
}

fn cid(file: &Path, params: &DagParams) -> Result<DagRoot> {
    if file == Path::new("-") {
        return Ok(build_from_reader(std::io::stdin().lock(), params, &mut Discard)?);
    }
    match input::open(file)? {
        input::Input::Mapped(map) => Ok(build_from_slice(&map, params, &mut Discard)?),
        input::Input::Empty => Ok(build_from_slice(&[], params, &mut Discard)?),
        input::Input::Stream(f) => Ok(build_from_reader(f, params, &mut Discard)?),
    }
}

fn car(file: &Path, output: &Path, params: &DagParams) -> Result<DagRoot> {
    let root = input::write_atomically(output, |out| {
        let mut out = BufWriter::with_capacity(1 << 20, out);
        let root = match input::open(file)? {
            input::Input::Mapped(map) => write_car(&map, params, &mut out)?,
            input::Input::Empty => write_car(&[], params, &mut out)?,
            input::Input::Stream(_) => bail!(
                "{}: a CAR needs a regular file (it is read twice)",
                file.display()
            ),
        };
        out.flush().context("writing CAR")?;
        Ok(root)
    })?;
    Ok(root)
}

fn car_extract(car: &Path, output: &Path) -> Result<DagRoot> {
    let file = File::open(car).with_context(|| format!("cannot open {}", car.display()))?;
    input::write_atomically(output, |out| {
        let mut out = BufWriter::with_capacity(1 << 20, out);
        let root = extract_file(&file, &mut out).with_context(|| format!("{}", car.display()))?;
        out.flush().context("writing output")?;
        Ok(root)
    })
}

fn run(cli: Cli) -> Result<()> {
    let home = || home::resolve(cli.home.as_deref());
    let root = match cli.cmd {
        Cmd::Cid { file, dag } => cid(&file, &dag.params()?)?,
        Cmd::Car { file, output, dag } => car(&file, &output, &dag.params()?)?,
        Cmd::CarExtract { car, output } => car_extract(&car, &output)?,
        Cmd::Put(args) => return netcmd::put(&home()?, args),
        Cmd::Get(args) => return netcmd::get(&home()?, args),
        Cmd::Export(args) => return netcmd::export(&home()?, args),
        Cmd::Ls(args) => return netcmd::ls(&home()?, args),
        Cmd::Status(args) => return netcmd::status(&home()?, args),
        Cmd::Balance(args) => return netcmd::balance(&home()?, args),
        Cmd::Devnet(cmd) => return devnet::run(&home()?, cmd),
        Cmd::Demo(args) => return demo::run(cli.home.as_deref(), args),
    };
    println!("{}", root.cid);
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // one line, not clap's usage block
            let line = crowd_protocol::util::usage_error_line(&e.to_string());
            eprintln!("crowd: {line} (see --help)");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crowd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
