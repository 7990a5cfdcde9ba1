//! `crowd demo`: the whole story in one command.
//!
//! 1. a devnet (tracker + storage nodes, real processes on loopback) in a
//!    fresh temporary client home (or `--home`);
//! 2. a sample file of seeded random bytes;
//! 3. `crowd put` with 4 data + 2 parity pieces;
//! 4. wait until every deal is sealed and has proven at least two epochs
//!    (read from the tracker, the authority on deals);
//! 5. SIGKILL two providers that hold pieces;
//! 6. `crowd get` the file back and compare BLAKE3 hashes with the original;
//! 7. let the tracker settle more epochs, then show what each provider earned
//!    and the faults of the killed ones;
//! 8. with spare nodes (8 by default), wait for the network to heal: the
//!    tracker repairs the killed providers' pieces onto two other providers
//!    (no client command), and show where every piece is now;
//! 9. with tracker replicas (3 by default), SIGKILL the tracker leader: the
//!    others elect a new one, epochs go on, and `crowd get` still returns
//!    the file;
//!
//! and the devnet is stopped at the end, also on failure. The network
//! commands run as subprocesses of this executable, exactly as a user would
//! type them.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use crowd_protocol::libp2p::PeerId;
use crowd_protocol::DealView;

use crate::devnet::{self, tracker::TrackerConn};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Size of the sample file (suffixes K, KiB, M, MiB accepted).
    #[arg(long, default_value = "6MiB", value_name = "BYTES", value_parser = crowd_client::parse_size)]
    pub size: usize,
    /// Seed of the sample file's random bytes.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,
    /// Storage nodes in the devnet (at least 6: 4 data + 2 parity pieces;
    /// with 8 or more the demo also shows the lost pieces repaired).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub nodes: usize,
    /// Length of an epoch in seconds.
    #[arg(long, default_value_t = 2.0, value_name = "S")]
    pub epoch_secs: f64,
    /// Tracker replicas (1 skips the last step, losing the tracker leader).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub trackers: usize,
    /// Keep the demo's home directory (sample file, logs, node data) afterwards.
    #[arg(long)]
    pub keep: bool,
}

const DATA: usize = 4;
const PARITY: usize = 2;
/// Epochs every deal must have proven before providers are killed.
const PROVEN_BEFORE_KILL: u64 = 2;

pub fn run(home: Option<&Path>, args: DemoArgs) -> Result<()> {
    if args.nodes < DATA + PARITY {
        bail!(
            "--nodes must be at least {} ({DATA} data + {PARITY} parity pieces)",
            DATA + PARITY
        );
    }
    let (home, temp) = match home {
        Some(h) => (h.to_path_buf(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("crowd-demo-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    std::fs::create_dir_all(&home).with_context(|| format!("cannot create {}", home.display()))?;
    let result = story(&home, &args);
    match (temp, args.keep) {
        (Some(t), true) => {
            let kept = t.keep();
            println!("kept {}", kept.display());
        }
        (Some(t), false) => drop(t),
        (None, _) => {}
    }
    result
}

/// Stops the devnet when dropped, whatever happened.
struct DevnetGuard<'a> {
    home: &'a Path,
}

impl Drop for DevnetGuard<'_> {
    fn drop(&mut self) {
        match devnet::down(self.home, false) {
            Ok(_) => println!("devnet stopped"),
            Err(e) => eprintln!("crowd demo: stopping the devnet: {e:#}"),
        }
    }
}

fn story(home: &Path, args: &DemoArgs) -> Result<()> {
    let total = DATA + PARITY;
    println!(
        "crowd demo: store a file with {total} independent providers, lose {PARITY} of them, get it back."
    );

    // 1. devnet
    println!(
        "[1/9] starting a devnet: {} and {} storage nodes on loopback, {}-second epochs (home {})",
        match args.trackers {
            1 => "a tracker".to_string(),
            n => format!("{n} tracker replicas"),
        },
        args.nodes,
        args.epoch_secs,
        home.display()
    );
    let opts = devnet::UpOptions {
        nodes: args.nodes,
        trackers: args.trackers,
        epoch_secs: args.epoch_secs,
        timeout: Duration::from_secs(90),
        detach: false,
        verbose: false,
    };
    let net = devnet::up(home, &opts)?;
    let _guard = DevnetGuard { home: &net.home };
    let home = net.home.as_path();
    println!(
        "      tracker {}; {} nodes registered; client {} funded with {}",
        short(&net.file.tracker().map(|t| t.peer_id.clone()).unwrap_or_default()),
        args.nodes,
        short(&net.client.to_string()),
        net.funded
    );
    for p in net.file.processes.iter().filter(|p| !p.metrics.is_empty()) {
        let what = if p.role == "tracker" {
            "the network's page"
        } else {
            "dashboard"
        };
        println!("      {:<8} {what}: http://{}/", p.name, p.metrics);
    }

    // 2. sample file
    let sample = home.join("sample.bin");
    let bytes = sample_bytes(args.size, args.seed);
    let original = blake3::hash(&bytes);
    std::fs::write(&sample, &bytes).with_context(|| format!("cannot write {}", sample.display()))?;
    drop(bytes);
    println!(
        "[2/9] sample file: {} of random bytes (seed {}), BLAKE3 {}",
        human(args.size as u64),
        args.seed,
        &original.to_hex()[..16]
    );

    // 3. put
    println!("[3/9] crowd put --data-shards {DATA} --parity-shards {PARITY}");
    let put = crowd(
        home,
        &[
            "put".as_ref(),
            sample.as_os_str(),
            "--data-shards".as_ref(),
            DATA.to_string().as_ref(),
            "--parity-shards".as_ref(),
            PARITY.to_string().as_ref(),
            "--json".as_ref(),
        ],
    )?;
    let put: PutOutput = serde_json::from_str(&put).map_err(|e| anyhow!("`crowd put --json` printed {e}"))?;
    if put.deals.len() != total {
        bail!("`crowd put` made {} deals, expected {total}", put.deals.len());
    }
    let ids: Vec<u64> = put.deals.iter().map(|d| d.deal_id).collect();
    println!(
        "      root {}: {total} pieces with {total} providers, deals {}",
        put.root,
        ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    );

    // 4. sealed and proven
    // as the client: the tracker describes deals and accounts only to their owners
    let conn = TrackerConn::connect(crowd_client::identity(home)?, &net.tracker_addrs)?;
    let epoch = Duration::from_secs_f64(args.epoch_secs);
    println!("[4/9] waiting until every deal is sealed and has proven {PROVEN_BEFORE_KILL} epochs");
    let deals = wait_deals(&conn, &ids, bound(epoch, 30), "sealed and proven", |d| {
        d.state == "active" && d.proven_epochs >= PROVEN_BEFORE_KILL
    })?;
    let info = conn.info()?;
    println!(
        "      epoch {}: all {total} deals active, proven epochs {}",
        info.epoch,
        deals
            .iter()
            .map(|d| d.proven_epochs.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );

    // 5. kill m providers holding pieces (the first pieces: data, so get must decode)
    let mut killed: Vec<(PeerId, String)> = Vec::new();
    for d in put.deals.iter().take(PARITY) {
        let proc = net
            .file
            .processes
            .iter()
            .find(|p| p.peer_id == d.provider)
            .ok_or_else(|| {
                anyhow!(
                    "provider {} of deal {} is not a devnet node",
                    d.provider,
                    d.deal_id
                )
            })?;
        devnet::signal(proc.pid, &proc.home, "KILL")?;
        let peer: PeerId = d
            .provider
            .parse()
            .map_err(|e| anyhow!("`crowd put` named provider '{}': {e}", d.provider))?;
        killed.push((peer, proc.name.clone()));
    }
    println!(
        "[5/9] SIGKILL {PARITY} providers holding pieces: {}",
        killed
            .iter()
            .map(|(p, n)| format!("{} ({n})", short(&p.to_string())))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // 6. get
    let back = home.join("sample.back");
    println!("[6/9] crowd get {} -o {}", put.root, back.display());
    crowd(
        home,
        &["get".as_ref(), put.root.as_ref(), "-o".as_ref(), back.as_os_str()],
    )?;
    let got = hash_file(&back)?;
    if got != original {
        bail!(
            "the file came back different: BLAKE3 {} instead of {}",
            got.to_hex(),
            original.to_hex()
        );
    }
    println!(
        "      {} back, BLAKE3 {}: byte-identical, with {PARITY} of {total} providers gone",
        human(std::fs::metadata(&back).map(|m| m.len()).unwrap_or(0)),
        &got.to_hex()[..16]
    );

    // 7. earnings and faults
    println!("[7/9] waiting for the tracker to record the killed providers' faults");
    let dead: Vec<PeerId> = killed.iter().map(|(p, _)| *p).collect();
    let deals = wait_deals(&conn, &ids, bound(epoch, 20), "faulted or proven again", |d| {
        if dead.contains(&d.proposal.provider) {
            d.faulted_epochs >= 1 || d.state == "terminated"
        } else {
            d.proven_epochs > PROVEN_BEFORE_KILL
        }
    })?;
    let info = conn.info()?;
    println!("      epoch {}:", info.epoch);
    println!(
        "      {:<8} {:<14} {:<11} {:>6} {:>7} {:>14}",
        "node", "provider", "state", "proven", "faulted", "paid"
    );
    for d in &deals {
        let peer = d.proposal.provider.to_string();
        let name = net
            .file
            .processes
            .iter()
            .find(|p| p.peer_id == peer)
            .map(|p| p.name.as_str())
            .unwrap_or("?");
        let mark = if dead.contains(&d.proposal.provider) {
            "  (killed)"
        } else {
            ""
        };
        println!(
            "      {name:<8} {:<14} {:<11} {:>6} {:>7} {:>14}{mark}",
            short(&peer),
            d.state,
            d.proven_epochs,
            d.faulted_epochs,
            d.paid
        );
    }
    let account = conn.account(net.client)?;
    println!(
        "      client: {} available, {} in escrow (`crowd status {}` and `crowd balance` show the same)",
        account.available, account.locked_escrow, put.root
    );
    if args.nodes < DATA + 2 * PARITY {
        println!("the file survived the loss of {PARITY} providers (too few spare nodes to show a repair).");
        return Ok(());
    }

    // 8. the network heals itself
    println!("[8/9] waiting for the network to heal: the tracker repairs the lost pieces on other providers");
    let dead_text: Vec<String> = dead.iter().map(PeerId::to_string).collect();
    let limit = bound(epoch, 40);
    let start = Instant::now();
    let status = loop {
        let text = crowd(home, &["status".as_ref(), put.root.as_ref(), "--json".as_ref()])?;
        let status: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| anyhow!("`crowd status --json` printed {e}"))?;
        let pieces = status["pieces"].as_array().cloned().unwrap_or_default();
        let mut providers: Vec<&str> = pieces.iter().filter_map(|p| p["provider"].as_str()).collect();
        let healed = pieces.len() == total
            && pieces.iter().all(|p| p["state"] == "active")
            && !providers.iter().any(|p| dead_text.iter().any(|d| d == p));
        providers.sort_unstable();
        providers.dedup();
        if healed && providers.len() == total {
            break status;
        }
        if start.elapsed() > limit {
            bail!("the network did not repair the lost pieces within {limit:?}: {status}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let info = conn.info()?;
    println!("      epoch {}: every piece active again", info.epoch);
    println!(
        "      {:<6} {:<8} {:<14} {:<8}",
        "piece", "node", "provider", "state"
    );
    for p in status["pieces"].as_array().into_iter().flatten() {
        let peer = p["provider"].as_str().unwrap_or("?");
        let name = net
            .file
            .processes
            .iter()
            .find(|q| q.peer_id == peer)
            .map(|q| q.name.as_str())
            .unwrap_or("?");
        let index = p["index"].as_u64().unwrap_or(0);
        let original = put.deals.iter().find(|d| d.index == index);
        let mark = if original.is_some_and(|d| d.provider != peer) {
            "  (repaired: a new provider)"
        } else {
            ""
        };
        println!(
            "      {:<6} {name:<8} {:<14} {:<8}{mark}",
            index,
            short(peer),
            p["state"].as_str().unwrap_or("?")
        );
    }
    let repairs = &status["repairs"];
    println!(
        "      repairs done {}, cost {} (paid from the killed providers' slashed collateral and unearned escrow first)",
        repairs["done"], repairs["cost"]
    );
    println!("the file survived the loss of {PARITY} providers, and the network repaired it with no client command.");

    // 9. the tracker leader is lost
    if args.trackers < 2 {
        println!("[9/9] one tracker: run with --trackers 3 to see the ledger survive the loss of its leader");
        return Ok(());
    }
    let leader = net
        .file
        .processes
        .iter()
        .find(|p| p.role == "tracker" && devnet::leads(p) == Some(true))
        .ok_or_else(|| anyhow!("no tracker replica says it leads"))?
        .clone();
    let before = conn.info()?.epoch;
    println!(
        "[9/9] SIGKILL the tracker leader, {} ({}): the other replicas elect a new one and go on",
        leader.name,
        short(&leader.peer_id)
    );
    devnet::signal(leader.pid, &leader.home, "KILL")?;
    let start = Instant::now();
    let limit = bound(epoch, 10);
    let (next, after) = loop {
        let next = net
            .file
            .processes
            .iter()
            .find(|p| p.role == "tracker" && p.pid != leader.pid && devnet::leads(p) == Some(true));
        if let (Some(next), Ok(info)) = (next, conn.info()) {
            if info.epoch >= before + 2 {
                break (next.clone(), info.epoch);
            }
        }
        if start.elapsed() > limit {
            bail!("no new tracker leader settled two epochs within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    println!(
        "      {} leads now; epochs {before}..{after} settled without {}",
        next.name, leader.name
    );
    let again = home.join("sample.again");
    crowd(
        home,
        &[
            "get".as_ref(),
            put.root.as_ref(),
            "-o".as_ref(),
            again.as_os_str(),
        ],
    )?;
    if hash_file(&again)? != original {
        bail!("after the tracker leader's loss the file came back different");
    }
    println!("      crowd get: byte-identical; the ledger survived the loss of its leader.");
    Ok(())
}

/// What the demo reads of `crowd put --json`.
#[derive(Debug, serde::Deserialize)]
struct PutOutput {
    root: String,
    deals: Vec<PutDeal>,
}

#[derive(Debug, serde::Deserialize)]
struct PutDeal {
    deal_id: u64,
    provider: String,
    index: u64,
}

/// Runs `crowd --home HOME args…` (this executable); returns its stdout, or
/// fails with its last stderr line.
fn crowd(home: &Path, args: &[&std::ffi::OsStr]) -> Result<String> {
    let exe = std::env::current_exe().context("cannot find the crowd executable")?;
    let out = Command::new(&exe)
        .arg("--home")
        .arg(home)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let name = args.first().map(|a| a.to_string_lossy()).unwrap_or_default();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message");
        bail!("`crowd {name}` failed ({}): {last}", out.status);
    }
    String::from_utf8(out.stdout).map_err(|_| anyhow!("`crowd {name}` printed non-UTF-8 output"))
}

/// Polls the tracker until `done` holds for every deal, at most `limit`.
fn wait_deals(
    conn: &TrackerConn,
    ids: &[u64],
    limit: Duration,
    what: &str,
    done: impl Fn(&DealView) -> bool,
) -> Result<Vec<DealView>> {
    let deadline = Instant::now() + limit;
    loop {
        let deals = conn.deals(ids.to_vec())?;
        if deals.len() != ids.len() {
            bail!("the tracker knows {} of the {} deals", deals.len(), ids.len());
        }
        if let Some(d) = deals
            .iter()
            .find(|d| matches!(d.state.as_str(), "cancelled") || (d.state == "terminated" && !done(d)))
        {
            bail!("deal {} was {} before it was {what}", d.id, d.state);
        }
        if deals.iter().all(&done) {
            return Ok(deals);
        }
        if Instant::now() > deadline {
            let d = deals.iter().find(|d| !done(d)).unwrap_or(&deals[0]);
            bail!(
                "deals not {what} within {} s (deal {}: {}, {} proven, {} faulted)",
                limit.as_secs(),
                d.id,
                d.state,
                d.proven_epochs,
                d.faulted_epochs
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `epochs` epochs plus a minute of slack for sealing and slow machines.
fn bound(epoch: Duration, epochs: u32) -> Duration {
    epoch * epochs + Duration::from_secs(60)
}

fn sample_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new_derive_key("crowd demo sample file")
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}

fn hash_file(path: &Path) -> Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    std::io::copy(&mut f, &mut h).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(h.finalize())
}

fn short(peer: &str) -> String {
    if peer.is_ascii() && peer.len() > 14 {
        format!("{}…{}", &peer[..8], &peer[peer.len() - 5..])
    } else {
        peer.to_string()
    }
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} bytes")
    }
}
