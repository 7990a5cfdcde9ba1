//! `crowd-tracker`: run a crowdstore tracker (the deal and payment ledger).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crowd_tracker::service::{self, RunOptions};

#[derive(Debug, Parser)]
#[command(
    name = "crowd-tracker",
    version,
    about = "crowdstore deal and payment tracker"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create the identity key, a documented config.toml and the ledger (its genesis is fixed here).
    Init {
        /// The tracker's home directory.
        #[arg(long, env = "CROWD_TRACKER_HOME", default_value_os_t = default_home())]
        home: PathBuf,
        /// A development network: the faucet mints test funds.
        #[arg(long)]
        devnet: bool,
        /// Rewrite an existing config.toml (the identity and the ledger are never replaced).
        #[arg(long)]
        force: bool,
        /// Genesis money: start PEER_ID's account with AMOUNT base units
        /// (repeatable; for a new ledger only).
        #[arg(long, value_name = "PEER_ID=AMOUNT")]
        allocate: Vec<String>,
    },
    /// Run the tracker until SIGINT or SIGTERM.
    Run {
        /// The tracker's home directory.
        #[arg(long, env = "CROWD_TRACKER_HOME", default_value_os_t = default_home())]
        home: PathBuf,
        /// Epoch length in seconds (fractions allowed), instead of config.toml's.
        #[arg(long)]
        epoch_secs: Option<f64>,
        /// Initialise an empty home as a devnet first; refuse a ledger without the faucet.
        #[arg(long)]
        devnet: bool,
    },
    /// Inspect the ledger.
    Ledger {
        #[command(subcommand)]
        cmd: LedgerCmd,
    },
    /// Print this home's network identity as a tracker replica (creating
    /// replica.key if missing), for the replica set's `replicas` lists.
    ReplicaId {
        #[arg(long, env = "CROWD_TRACKER_HOME", default_value_os_t = default_home())]
        home: PathBuf,
    },
    /// The running replica set, from a replica's home (its config names the
    /// set; its tracker key signs changes): list it, add or remove a replica.
    Replica {
        #[command(subcommand)]
        cmd: ReplicaCmd,
    },
}

#[derive(Debug, Subcommand)]
enum ReplicaCmd {
    /// Every replica with its role (leader, voter, learner) and how far its log is known to match.
    List {
        #[arg(long, env = "CROWD_TRACKER_HOME", default_value_os_t = default_home())]
        home: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Add a running replica (a learner until it has caught up, then a voter).
    Add {
        #[arg(long, env = "CROWD_TRACKER_HOME", default_value_os_t = default_home())]
        home: PathBuf,
        /// Its replica id (not used by any member).
        id: u64,
        /// Its peer id (`crowd-tracker replica-id` in its home).
        peer: String,
        /// Its multiaddress(es).
        #[arg(required = true)]
        addrs: Vec<String>,
    },
    /// Remove a replica (a dead one, or one being retired).
    Remove {
        #[arg(long, env = "CROWD_TRACKER_HOME", default_value_os_t = default_home())]
        home: PathBuf,
        id: u64,
    },
}

/// `crowd-tracker replica …`.
async fn replica(cmd: ReplicaCmd) -> Result<(), service::ServiceError> {
    use service::admin::{describe, Admin};
    let home = match &cmd {
        ReplicaCmd::List { home, .. } | ReplicaCmd::Add { home, .. } | ReplicaCmd::Remove { home, .. } => {
            home
        }
    };
    let admin = Admin::connect(home).await?;
    let view = match cmd {
        ReplicaCmd::List { json: true, .. } => {
            let view = admin.view().await?;
            println!("{}", serde_json::to_string(&view).unwrap_or_default());
            return Ok(());
        }
        ReplicaCmd::List { .. } => admin.view().await?,
        ReplicaCmd::Add { id, peer, addrs, .. } => {
            let replica = service::raft::Replica { peer, addrs };
            let mut last = None;
            admin
                .add(id, replica, |matched, target| {
                    if last != Some(matched) {
                        eprintln!(
                            "replica {id}: log at {} of {target}",
                            matched.map(|m| m.to_string()).unwrap_or_else(|| "-".into())
                        );
                        last = Some(matched);
                    }
                })
                .await?
        }
        ReplicaCmd::Remove { id, .. } => admin.remove(id).await?,
    };
    print!("{}", describe(&view));
    Ok(())
}

#[derive(Debug, Subcommand)]
enum LedgerCmd {
    /// Replay the log from genesis and check it against the stored state (works while running).
    Verify {
        /// The tracker's home directory.
        #[arg(long, env = "CROWD_TRACKER_HOME", default_value_os_t = default_home())]
        home: PathBuf,
        /// Replay only the first N entries (the point a network page names as its log_len).
        #[arg(long, value_name = "N")]
        upto: Option<u64>,
        /// Print the report as JSON, with the supply and account totals at that point.
        #[arg(long)]
        json: bool,
    },
}

fn default_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".crowd-tracker")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let line = crowd_protocol::util::usage_error_line(&e.to_string());
            eprintln!("crowd-tracker: {line} (see --help)");
            return ExitCode::from(2);
        }
    };
    // the network page shows no log lines: the tracker's are its operator's
    let _recent = crowd_protocol::util::init_logging();
    let result: anyhow::Result<()> = match cli.cmd {
        Cmd::Init {
            home,
            devnet,
            force,
            allocate,
        } => service::init(&home, devnet, force, &allocate)
            .map(|r| {
                if r.config_written {
                    println!("wrote {}", r.config_path.display());
                } else {
                    println!(
                        "{} exists; kept (use --force to rewrite)",
                        r.config_path.display()
                    );
                }
                println!(
                    "ledger genesis {} ({})",
                    hex(&r.genesis_head),
                    if r.faucet {
                        "devnet: faucet on"
                    } else {
                        "no faucet"
                    }
                );
                println!("peer id {}", r.peer_id);
            })
            .map_err(Into::into),
        Cmd::ReplicaId { home } => service::replica_id(&home)
            .map(|id| println!("{id}"))
            .map_err(Into::into),
        Cmd::Run {
            home,
            epoch_secs,
            devnet,
        } => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt
                .block_on(service::run(&home, RunOptions { epoch_secs, devnet }))
                .map_err(Into::into),
            Err(e) => Err(e.into()),
        },
        Cmd::Replica { cmd } => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(replica(cmd)).map_err(Into::into),
            Err(e) => Err(e.into()),
        },
        Cmd::Ledger {
            cmd: LedgerCmd::Verify { home, upto, json },
        } => service::verify(&home, upto)
            .map(|r| {
                if json {
                    println!("{}", r.to_json());
                    return;
                }
                println!(
                    "ledger ok: {} entries, epoch {}, head {}",
                    r.entries,
                    r.epoch,
                    hex(&r.head)
                );
            })
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("crowd-tracker: {line}");
            ExitCode::FAILURE
        }
    }
}
