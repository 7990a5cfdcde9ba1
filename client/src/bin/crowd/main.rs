//! `crowd`: the crowdstore command-line client, a clap layer over the
//! `crowd_client` library.
//!
//! Offline: content addresses (`cid`) and CAR archives (`car`, `car-extract`).
//! On the network: `put`, `get`, `export`, `ls`, `status`, `rm`, `renew`,
//! `balance`, `share`, `key export|import` (client home in `--home` / `CROWD_HOME`,
//! default `~/.crowd`). Only in this binary: a local network of real
//! processes with `devnet` and `demo` (`devnet.rs`, `demo.rs`).

use std::io::IsTerminal;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use crowd_chunker::{ChunkParams, ChunkerKind, DagParams, HashAlg};
use crowd_client::{Callback, Client, Event, GetOptions, PutOptions, Target};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

mod demo;
mod devnet;
mod ledger;

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
    /// Store a file on the network (encrypted unless --public): k+m pieces with k+m providers; prints its root CID.
    Put(PutArgs),
    /// Retrieve a file by root CID or read capability, verifying every byte.
    Get(GetArgs),
    /// Retrieve a public file's DAG as a CAR v1 archive.
    Export(ExportArgs),
    /// List the files this client has stored, with the epoch their deals end
    /// (restored from the network if this home lost them).
    ///
    /// Columns: ROOT, SIZE, STORED (UTC), DEALS, ACCESS, ENDS (the first
    /// epoch after the file's deals, "-" if unknown) and STATE: "live";
    /// "expiring" when it ends within 10 epochs of the current one (renew
    /// it with `crowd renew`); "expired"; with --local (no network, so no
    /// current epoch) the state last synced, or "unknown". Files removed
    /// with `crowd rm` are not listed.
    Ls(LsArgs),
    /// Per piece index: current provider (after a repair, the new one), deal, seal and proving state; repairs.
    Status(StatusArgs),
    /// End a stored file now: its deals end and the unearned escrow is refunded.
    ///
    /// Every live file of this client's under CID is removed (a file put
    /// twice, twice); a manifest CID removes that put only. Prints one line
    /// per file: `removed CID (file ID, manifest MCID): refund AMOUNT`.
    Rm(RmArgs),
    /// Extend a stored file's deals by N epochs, locking their price from the balance.
    ///
    /// Prints one line per file: `renewed CID (file ID, manifest MCID):
    /// ends at epoch E, locked AMOUNT`. A balance too low fails with the
    /// tracker's reason (what the renewal needs).
    Renew(RenewArgs),
    /// This client's balance with the tracker.
    Balance(JsonArg),
    /// Pay AMOUNT (base units) of this client's free balance to another account.
    ///
    /// Prints `sent AMOUNT to PEER_ID; available BALANCE`.
    Transfer {
        /// The receiving account's peer id.
        to: String,
        amount: u128,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Take AMOUNT (base units) of free balance out of the ledger.
    ///
    /// A provider withdraws its earnings with `--identity NODE_HOME/identity.key`.
    /// Prints `withdrew AMOUNT from PEER_ID; available BALANCE`.
    Withdraw {
        amount: u128,
        /// Withdraw from the account of this identity key file instead of this client's.
        #[arg(long, value_name = "KEY_FILE")]
        identity: Option<PathBuf>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Print a read capability (`crowd:…`) for one of this client's private files.
    Share {
        /// The file's root CID (as `crowd put` printed it).
        cid: String,
    },
    /// Back up or restore this client's identity key.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Audit the tracker's ledger across its replicas.
    #[command(subcommand)]
    Ledger(LedgerCmd),
    /// A local network (tracker + storage nodes) of real processes on loopback.
    #[command(subcommand)]
    Devnet(devnet::DevnetCmd),
    /// The whole story in one command: devnet, put, prove, lose providers, get back.
    Demo(demo::DemoArgs),
    /// Serve this home's account over S3 (private objects) and the IPFS
    /// trustless gateway protocol (public files): runs `crowd-gateway`,
    /// installed next to `crowd` (`crowd gateway --help` for its options).
    #[command(disable_help_flag = true)]
    Gateway {
        /// Passed to crowd-gateway: [--listen ADDR] [--home DIR].
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Args)]
struct PutArgs {
    /// The file to store (a regular file: it is read more than once); `-` reads standard input.
    file: PathBuf,
    /// Data shards k: any k of the k+m pieces rebuild the file [default: config data_shards, 4].
    #[arg(long, value_name = "K")]
    data_shards: Option<usize>,
    /// Parity shards m: the file survives losing any m providers [default: config parity_shards, 2].
    #[arg(long, value_name = "M")]
    parity_shards: Option<usize>,
    /// Deal length in epochs [default: config epochs].
    #[arg(long, value_name = "N")]
    epochs: Option<u64>,
    /// Highest price accepted, base units per GiB per epoch [default: config max_price_per_gib_epoch].
    #[arg(long, value_name = "P")]
    max_price: Option<u64>,
    /// Store the plain UnixFS DAG (IPFS-identical; anyone who knows the root can read it) instead of encrypting.
    #[arg(long)]
    public: bool,
    /// Print {"root", "manifest", "size", "public", "deals"} as JSON (and no progress bars).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct GetArgs {
    /// The file's root CID (as `crowd put` printed it), or a `crowd:…` read capability.
    target: String,
    /// Where to write the file (a temporary file next to it, then renamed).
    /// Partial pieces are kept in `.OUT.crowd-get/` so an interrupted get
    /// resumes.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Only bytes START..END (end exclusive). A range is verified against
    /// the piece hashes as it streams (and by its segments' tags if
    /// private), but not against the root CID.
    #[arg(long, value_name = "START-END", value_parser = crowd_client::parse_range)]
    range: Option<Range<u64>>,
    /// Print `{"root","size","out","public","pieces_used","providers_failed","fetched"}` and no progress bar.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// The file's root CID.
    cid: String,
    /// Where to write the CAR v1 (a temporary file next to it, then renamed).
    #[arg(short, long, value_name = "OUT.car")]
    output: PathBuf,
    /// Print JSON and no progress bar.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct LsArgs {
    /// Only this home's records: do not ask the network for this client's manifests.
    #[arg(long)]
    local: bool,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The file's root CID (or its manifest CID).
    cid: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RmArgs {
    /// The file's root CID (as `crowd put` printed it), or its manifest CID.
    cid: String,
    /// Print {"root", "files": [{"file_id", "manifest", "refund"}], "refund"} as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RenewArgs {
    /// The file's root CID (as `crowd put` printed it), or its manifest CID.
    cid: String,
    /// Epochs to add (at least 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    epochs: u64,
    /// Print {"root", "files": [{"file_id", "manifest", "end_epoch", "locked"}], "locked"} as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct JsonArg {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum LedgerCmd {
    /// Every tracker replica replays its ledger log and signs its head; the
    /// heads must agree. Names a replica that disagrees or does not verify.
    Verify {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCmd {
    /// Write the identity key (and config.toml) sealed with a passphrase
    /// (prompted for, or `CROWD_PASSPHRASE`).
    Export {
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Restore a key backup into this (fresh) home; `crowd ls` then lists
    /// the files stored before, from the network.
    Import {
        /// The backup `crowd key export` wrote.
        file: PathBuf,
    },
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
    #[arg(long, default_value = "1MiB", value_name = "BYTES", value_parser = crowd_client::parse_size)]
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

/// Progress events as indicatif bars on stderr (none when stderr is not a
/// terminal or with `--json`); notices as `crowd: …` lines either way
/// (not with `--json`).
fn bars(json: bool) -> Option<Callback> {
    if json {
        return None;
    }
    let draw = std::io::stderr().is_terminal();
    let bar: Arc<Mutex<Option<ProgressBar>>> = Arc::default();
    Some(Arc::new(move |event: &Event| {
        let Ok(mut slot) = bar.lock() else { return };
        match event {
            Event::Started { stage, total } if draw => {
                let b = ProgressBar::with_draw_target(Some(*total), ProgressDrawTarget::stderr());
                if let Ok(style) = ProgressStyle::with_template(
                    "{msg:>10} [{bar:32}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} eta {eta}",
                ) {
                    b.set_style(style.progress_chars("=> "));
                }
                b.set_message(stage.label());
                *slot = Some(b);
            }
            Event::Advanced { done, total, .. } => {
                if let Some(b) = slot.as_ref() {
                    b.set_length(*total);
                    b.set_position(*done);
                }
            }
            Event::Finished { .. } => {
                if let Some(b) = slot.take() {
                    b.finish_and_clear();
                }
            }
            Event::Notice(line) => match slot.as_ref() {
                Some(b) => b.suspend(|| eprintln!("crowd: {line}")),
                None => eprintln!("crowd: {line}"),
            },
            _ => {}
        }
    }))
}

fn client(home: Option<&Path>, json: bool) -> Result<Client> {
    let c = Client::open_default(home)?;
    Ok(match bars(json) {
        Some(cb) => c.with_progress(cb),
        None => c,
    })
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(v).context("encoding output")?);
    Ok(())
}

/// The passphrase: `CROWD_PASSPHRASE`, else asked on the terminal (twice
/// when choosing one).
fn passphrase(confirm: bool) -> Result<String> {
    if let Ok(p) = std::env::var("CROWD_PASSPHRASE") {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no passphrase: set CROWD_PASSPHRASE or run on a terminal");
    }
    let p = rpassword::prompt_password("passphrase: ").context("reading the passphrase")?;
    if confirm && rpassword::prompt_password("again: ").context("reading the passphrase")? != p {
        bail!("the passphrases differ");
    }
    Ok(p)
}

/// `crowd gateway ARGS`: replaces this process with `crowd-gateway ARGS`
/// (next to this executable, else on `PATH`), passing `--home` on.
fn gateway(home: Option<&std::path::Path>, args: Vec<std::ffi::OsString>) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("cannot find the crowd executable")?;
    let beside = exe.with_file_name("crowd-gateway");
    let program = if beside.is_file() {
        beside
    } else {
        "crowd-gateway".into()
    };
    let mut cmd = std::process::Command::new(&program);
    if let Some(h) = home {
        cmd.arg("--home").arg(h);
    }
    let e = cmd.args(args).exec();
    bail!("cannot run {}: {e}", program.display())
}

fn run(cli: Cli) -> Result<()> {
    let home = cli.home.as_deref();
    match cli.cmd {
        Cmd::Cid { file, dag } => println!("{}", crowd_client::offline::cid(&file, &dag.params()?)?.cid),
        Cmd::Car { file, output, dag } => {
            println!(
                "{}",
                crowd_client::offline::car(&file, &output, &dag.params()?)?.cid
            )
        }
        Cmd::CarExtract { car, output } => {
            println!("{}", crowd_client::offline::car_extract(&car, &output)?.cid)
        }
        Cmd::Put(a) => {
            let opts = PutOptions {
                data_shards: a.data_shards,
                parity_shards: a.parity_shards,
                epochs: a.epochs,
                max_price: a.max_price,
                public: a.public,
                name: None,
            };
            let c = client(home, a.json)?;
            let out = if a.file == Path::new("-") {
                c.put_reader(std::io::stdin().lock(), &opts)?
            } else {
                c.put_path(&a.file, &opts)?
            };
            if a.json {
                print_json(&out)?;
            } else {
                println!("{}", out.root);
            }
        }
        Cmd::Get(a) => {
            let target: Target = a.target.parse()?;
            let out = client(home, a.json)?.get(&target, &GetOptions { range: a.range }, &a.output)?;
            if a.json {
                print_json(&out)?;
            }
        }
        Cmd::Export(a) => {
            let out = client(home, a.json)?.export(&a.cid, &a.output)?;
            if a.json {
                print_json(&out)?;
            }
        }
        Cmd::Ls(a) => {
            let entries = client(home, a.json)?.ls(!a.local)?;
            if a.json {
                print_json(&entries)?;
            } else if entries.is_empty() {
                eprintln!("crowd: no files stored by this client yet");
            } else {
                print!("{}", crowd_client::ls_table(&entries));
            }
        }
        Cmd::Status(a) => {
            let out = client(home, a.json)?.status(&a.cid)?;
            if a.json {
                print_json(&out)?;
            } else {
                print!("{}", crowd_client::status_table(&out));
            }
        }
        Cmd::Rm(a) => {
            let out = client(home, a.json)?.remove(&a.cid)?;
            if a.json {
                print_json(&out)?;
            } else {
                print!("{}", crowd_client::remove_lines(&out));
            }
        }
        Cmd::Renew(a) => {
            let out = client(home, a.json)?.renew(&a.cid, a.epochs)?;
            if a.json {
                print_json(&out)?;
            } else {
                print!("{}", crowd_client::renew_lines(&out));
            }
        }
        Cmd::Balance(a) => {
            let out = client(home, a.json)?.balance()?;
            if a.json {
                print_json(&out)?;
            } else {
                println!("account            {}", out.account);
                println!("available          {}", out.available);
                println!("locked escrow      {}", out.locked_escrow);
                println!("locked collateral  {}", out.locked_collateral);
                println!("staked             {}", out.staked);
            }
        }
        Cmd::Transfer { to, amount, json } => {
            let to: crowd_protocol::libp2p::PeerId = to
                .parse()
                .map_err(|_| anyhow::anyhow!("'{to}' is not a peer id"))?;
            let out = client(home, true)?.transfer(to, amount)?;
            if json.json {
                print_json(&out)?;
            } else {
                println!("sent {} to {to}; available {}", out.amount, out.available);
            }
        }
        Cmd::Withdraw {
            amount,
            identity,
            json,
        } => {
            let out = client(home, true)?.withdraw(amount, identity.as_deref())?;
            if json.json {
                print_json(&out)?;
            } else {
                println!(
                    "withdrew {} from {}; available {}",
                    out.amount, out.account, out.available
                );
            }
        }
        Cmd::Share { cid } => println!("{}", client(home, true)?.share(&cid)?),
        Cmd::Key(KeyCmd::Export { output }) => {
            let c = client(home, true)?;
            let bytes = c.export_key(&passphrase(true)?)?;
            crowd_client::write_private_file(&output, &bytes)?;
            eprintln!("crowd: key of {} written to {}", c.peer_id()?, output.display());
        }
        Cmd::Key(KeyCmd::Import { file }) => {
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let c = client(home, true)?;
            let peer = c.import_key(&bytes, &passphrase(false)?)?;
            eprintln!("crowd: identity {peer} restored into {}", c.home().display());
        }
        Cmd::Ledger(LedgerCmd::Verify { json }) => {
            return ledger::verify(crowd_client::Client::open_default(home)?.home(), json)
        }
        Cmd::Devnet(cmd) => return devnet::run(crowd_client::Client::open_default(home)?.home(), cmd),
        Cmd::Demo(args) => return demo::run(home, args),
        Cmd::Gateway { args } => return gateway(home, args),
    }
    Ok(())
}

fn main() -> ExitCode {
    // quiet by default (the output is the answer); RUST_LOG turns on the
    // daemons' log format on stderr, to debug a transfer
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = crowd_protocol::util::init_logging();
    }
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
            eprintln!("crowd: {}", crowd_client::error::strip(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn renew_needs_at_least_one_epoch_and_rm_a_cid() {
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("crowd").chain(args.iter().copied()));
        let e = parse(&["renew", "bafyx", "--epochs", "0"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{e}");
        assert!(parse(&["renew", "bafyx"]).is_err(), "--epochs is required");
        assert!(parse(&["renew", "bafyx", "--epochs", "-3"]).is_err());
        match parse(&["renew", "bafyx", "--epochs", "5", "--json"]).unwrap().cmd {
            Cmd::Renew(a) => assert_eq!((a.cid.as_str(), a.epochs, a.json), ("bafyx", 5, true)),
            other => panic!("{other:?}"),
        }
        match parse(&["rm", "bafyx"]).unwrap().cmd {
            Cmd::Rm(a) => assert_eq!((a.cid.as_str(), a.json), ("bafyx", false)),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["rm"]).is_err());
    }
}
