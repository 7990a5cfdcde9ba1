//! `crowd devnet`: a tracker and storage nodes as local processes on loopback.
//!
//! Everything lives in `<client home>/devnet/`:
//!
//! | path | what |
//! | --- | --- |
//! | `devnet.json` | every process started: role, name, pid, peer id, addresses, home, log |
//! | `tracker/`, `node-1/` … `node-N/` | each process's home (`init`ed once, then reused) |
//! | `tracker.log`, `node-1.log` … | each process's stdout and stderr, appended |
//!
//! `up` starts the tracker (`crowd-tracker run --devnet`), waits for its
//! `tracker.json`, starts N `crowd-node`s configured for it (loopback,
//! ephemeral ports, devnet sealing), waits for every `node.json` and until the
//! tracker lists every node as a provider, then writes `tracker_address` and
//! `tracker_peer_id` into `<client home>/config.toml` and funds the client's
//! identity and every node (whose deals lock collateral) from the faucet. If anything fails it stops what it started.
//!
//! `down` sends SIGTERM, waits, and SIGKILLs stragglers. It keeps the homes,
//! logs and `devnet.json` (so `status` shows every process stopped, and a
//! later `up` resumes with the same identities, ledger and pieces); `down
//! --clean` deletes the whole `devnet/` directory instead.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

mod procs;
pub mod tracker;

pub use procs::{find_bin, signal};
use tracker::TrackerConn;

/// Base units the faucet mints for the client at every `up`.
pub const FUNDING: u128 = 1_000_000_000_000_000;

#[derive(Debug, Subcommand)]
pub enum DevnetCmd {
    /// Start a tracker and N storage nodes on loopback, configure and fund this client.
    Up(UpArgs),
    /// List every devnet process: role, pid, running or not, peer id, addresses, home.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop every devnet process (SIGTERM, then SIGKILL after a grace period).
    Down {
        /// Also delete the devnet directory (homes, pieces, ledger, logs).
        #[arg(long)]
        clean: bool,
    },
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Storage nodes to start.
    #[arg(long, default_value_t = 6, value_name = "N")]
    pub nodes: usize,
    /// Length of an epoch in seconds (fractions allowed).
    #[arg(long, default_value_t = 2.0, value_name = "S")]
    pub epoch_secs: f64,
    /// Tracker replicas: a replica set on one Raft log that nodes and this
    /// client follow (it survives the loss of one of three); 1 runs a
    /// single tracker.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub trackers: usize,
    /// Seconds to wait for each stage (tracker ready, nodes ready, nodes registered).
    #[arg(long, default_value_t = 60, value_name = "S")]
    pub timeout: u64,
}

/// `devnet.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevnetFile {
    pub epoch_secs: f64,
    pub processes: Vec<Proc>,
}

/// One process of the devnet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proc {
    /// "tracker" or "node".
    pub role: String,
    /// "tracker", "node-1", …
    pub name: String,
    pub pid: u32,
    /// Empty until the process is ready.
    pub peer_id: String,
    /// Listen multiaddresses, each ending in /p2p/<peer id>.
    pub addrs: Vec<String>,
    /// Prometheus endpoint (host:port), if any.
    #[serde(default)]
    pub metrics: String,
    pub home: PathBuf,
    pub log: PathBuf,
}

impl Proc {
    pub fn alive(&self) -> bool {
        procs::alive(self.pid, &self.home)
    }

    /// The first TCP address (what the client config and nodes dial), else the first.
    pub fn dial_addr(&self) -> Option<&str> {
        self.addrs
            .iter()
            .find(|a| a.contains("/tcp/"))
            .or(self.addrs.first())
            .map(String::as_str)
    }
}

impl DevnetFile {
    pub fn tracker(&self) -> Option<&Proc> {
        self.processes.iter().find(|p| p.role == "tracker")
    }
}

/// `<client home>/devnet`.
pub fn dir(home: &Path) -> PathBuf {
    home.join("devnet")
}

fn file_path(home: &Path) -> PathBuf {
    dir(home).join("devnet.json")
}

/// The devnet recorded in `home`, if any.
pub fn load(home: &Path) -> Result<Option<DevnetFile>> {
    let path = file_path(home);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow!("cannot read {}: {e}", path.display())),
    };
    let file = serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(Some(file))
}

fn save(home: &Path, file: &DevnetFile) -> Result<()> {
    let path = file_path(home);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(file)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn run(home: &Path, cmd: DevnetCmd) -> Result<()> {
    match cmd {
        DevnetCmd::Up(args) => {
            let opts = UpOptions {
                nodes: args.nodes,
                trackers: args.trackers,
                epoch_secs: args.epoch_secs,
                timeout: Duration::from_secs(args.timeout),
                detach: true,
                verbose: true,
            };
            let up = up(home, &opts)?;
            print_summary(&up);
            Ok(())
        }
        DevnetCmd::Status { json } => status(home, json),
        DevnetCmd::Down { clean } => {
            let report = down(home, clean)?;
            println!("{report}");
            Ok(())
        }
    }
}

/// How `up` runs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub nodes: usize,
    /// Tracker processes: 1, or a replica set.
    pub trackers: usize,
    pub epoch_secs: f64,
    /// Bound on each stage.
    pub timeout: Duration,
    /// Own process group per process (they outlive `crowd` and ignore the terminal's Ctrl-C).
    pub detach: bool,
    /// Progress lines on stderr.
    pub verbose: bool,
}

/// A running devnet, as `up` leaves it.
#[derive(Debug)]
pub struct Devnet {
    /// The client home (absolute).
    pub home: PathBuf,
    pub file: DevnetFile,
    /// `tracker_address` written to the client config.
    pub tracker_addr: String,
    /// Every tracker process's address (one, or each replica's).
    pub tracker_addrs: Vec<String>,
    pub client: crowd_protocol::libp2p::PeerId,
    pub funded: u128,
}

/// Starts the devnet in `home` and returns once every process is ready, every
/// node is registered, the client is configured and funded.
pub fn up(home: &Path, opts: &UpOptions) -> Result<Devnet> {
    if opts.nodes == 0 || opts.nodes > 64 {
        bail!("--nodes must be between 1 and 64 (got {})", opts.nodes);
    }
    if opts.trackers == 0 || opts.trackers > 7 {
        bail!("--trackers must be between 1 and 7 (got {})", opts.trackers);
    }
    if !(opts.epoch_secs.is_finite() && opts.epoch_secs >= 0.1 && opts.epoch_secs <= 3600.0) {
        bail!(
            "--epoch-secs must be between 0.1 and 3600 (got {})",
            opts.epoch_secs
        );
    }
    std::fs::create_dir_all(dir(home)).with_context(|| format!("cannot create {}", dir(home).display()))?;
    let home = home
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", home.display()))?;
    if let Some(old) = load(&home)? {
        let running = old.processes.iter().filter(|p| p.alive()).count();
        if running > 0 {
            bail!(
                "a devnet is already running in {} ({running} of {} processes); stop it with `crowd devnet down`",
                dir(&home).display(),
                old.processes.len()
            );
        }
    }
    let tracker_bin = find_bin("crowd-tracker")?;
    let node_bin = find_bin("crowd-node")?;
    let mut file = DevnetFile {
        epoch_secs: opts.epoch_secs,
        processes: Vec::new(),
    };
    match start(&home, opts, &tracker_bin, &node_bin, &mut file) {
        Ok(up) => Ok(up),
        Err(e) => {
            let started: Vec<_> = file.processes.iter().map(|p| (p.pid, p.home.clone())).collect();
            if opts.verbose && !started.is_empty() {
                eprintln!("devnet: stopping the {} processes started", started.len());
            }
            let _ = procs::stop_all(&started, Duration::from_secs(10));
            let _ = save(&home, &file);
            Err(e)
        }
    }
}

fn start(
    home: &Path,
    opts: &UpOptions,
    tracker_bin: &Path,
    node_bin: &Path,
    file: &mut DevnetFile,
) -> Result<Devnet> {
    let note = |s: &str| {
        if opts.verbose {
            eprintln!("devnet: {s}");
        }
    };
    let dir = dir(home);

    // the tracker, or its replicas
    let (signing_peer, tracker_addr, replicas) = if opts.trackers > 1 {
        start_replicas(home, opts, tracker_bin, file)?
    } else {
        // the tracker
        let t_home = dir.join("tracker");
        let t_log = dir.join("tracker.log");
        log_header(&t_log)?;
        if !t_home.join("config.toml").exists() {
            procs::run_to_end(
                tracker_bin,
                &[
                    OsStr::new("init"),
                    OsStr::new("--home"),
                    t_home.as_os_str(),
                    OsStr::new("--devnet"),
                ],
                &t_log,
            )?;
            loopback_tracker_config(&t_home.join("config.toml"))?;
        }
        let _ = std::fs::remove_file(t_home.join("tracker.json"));
        let epoch = format!("{}", opts.epoch_secs);
        note(&format!(
            "starting the tracker ({}-second epochs)",
            opts.epoch_secs
        ));
        let pid = procs::spawn(
            tracker_bin,
            &[
                OsStr::new("run"),
                OsStr::new("--home"),
                t_home.as_os_str(),
                OsStr::new("--epoch-secs"),
                OsStr::new(&epoch),
                OsStr::new("--devnet"),
            ],
            &t_log,
            opts.detach,
        )?;
        file.processes.push(Proc {
            role: "tracker".into(),
            name: "tracker".into(),
            pid,
            peer_id: String::new(),
            addrs: Vec::new(),
            metrics: String::new(),
            home: t_home,
            log: t_log,
        });
        save(home, file)?;
        wait_ready(file, "tracker.json", opts.timeout)?;
        save(home, file)?;
        let tracker = file.processes[0].clone();
        // keep the tracker's ports from now on: nodes and the client dial it
        // there, also after it is restarted
        pin_tracker_listen(&tracker.home.join("config.toml"), &tracker.addrs)?;
        let tracker_addr = tracker
            .dial_addr()
            .ok_or_else(|| anyhow!("the tracker reported no listen address"))?
            .to_string();

        (tracker.peer_id.clone(), tracker_addr, Vec::new())
    };

    // the nodes
    note(&format!("starting {} storage nodes", opts.nodes));
    for i in 1..=opts.nodes {
        let name = format!("node-{i}");
        let n_home = dir.join(&name);
        let n_log = dir.join(format!("{name}.log"));
        log_header(&n_log)?;
        if !n_home.join("identity.key").exists() {
            procs::run_to_end(
                node_bin,
                &[OsStr::new("init"), OsStr::new("--home"), n_home.as_os_str()],
                &n_log,
            )?;
        }
        write_node_config(
            &n_home.join("config.toml"),
            &signing_peer,
            &tracker_addr,
            &replicas,
        )?;
        let _ = std::fs::remove_file(n_home.join("node.json"));
        let pid = procs::spawn(
            node_bin,
            &[OsStr::new("run"), OsStr::new("--home"), n_home.as_os_str()],
            &n_log,
            opts.detach,
        )?;
        file.processes.push(Proc {
            role: "node".into(),
            name,
            pid,
            peer_id: String::new(),
            addrs: Vec::new(),
            metrics: String::new(),
            home: n_home,
            log: n_log,
        });
    }
    save(home, file)?;
    wait_ready(file, "node.json", opts.timeout)?;
    save(home, file)?;

    // the client: identity, connection, registrations, config, funds
    let key = crowd_client::identity(home)?;
    let client = key.public().to_peer_id();
    let conn = if replicas.is_empty() {
        TrackerConn::connect(key, std::slice::from_ref(&tracker_addr))?
    } else {
        TrackerConn::connect(key, &replicas)?
    };
    write_client_config(&home.join("config.toml"), &signing_peer, &tracker_addr, &replicas)?;
    let funded = conn
        .faucet(client, FUNDING)
        .context("funding the client from the devnet faucet")?;
    // providers lock a stake to register and collateral for their deals:
    // fund them before waiting for their registrations
    for p in file.processes.iter().filter(|p| p.role == "node") {
        let peer = p
            .peer_id
            .parse()
            .map_err(|e| anyhow!("{} reported peer id '{}': {e}", p.name, p.peer_id))?;
        conn.faucet(peer, FUNDING)
            .with_context(|| format!("funding {} from the devnet faucet", p.name))?;
    }
    note("waiting until the tracker lists every node");
    wait_registered(&conn, file, opts.timeout)?;
    Ok(Devnet {
        home: home.to_path_buf(),
        file: file.clone(),
        tracker_addrs: if replicas.is_empty() {
            vec![tracker_addr.clone()]
        } else {
            replicas
        },
        tracker_addr,
        client,
        funded,
    })
}

/// Starts `opts.trackers` tracker replicas (`tracker-1` …): homes
/// initialised once with one shared tracker key (so one genesis), each with
/// its network identity (`replica-id`) on a loopback TCP port fixed at that
/// first `up` (the replica set's membership keeps the addresses). Returns
/// the tracker's signing peer id, the first replica's address and every
/// replica's.
fn start_replicas(
    home: &Path,
    opts: &UpOptions,
    tracker_bin: &Path,
    file: &mut DevnetFile,
) -> Result<(String, String, Vec<String>)> {
    let dir = dir(home);
    let homes: Vec<PathBuf> = (1..=opts.trackers)
        .map(|i| dir.join(format!("tracker-{i}")))
        .collect();
    let logs: Vec<PathBuf> = (1..=opts.trackers)
        .map(|i| dir.join(format!("tracker-{i}.log")))
        .collect();
    let fresh = !homes.iter().all(|h| h.join("config.toml").exists());
    if fresh {
        let mut list = Vec::new();
        for (i, (h, log)) in homes.iter().zip(&logs).enumerate() {
            log_header(log)?;
            if i > 0 {
                std::fs::create_dir_all(h).with_context(|| format!("cannot create {}", h.display()))?;
                std::fs::copy(homes[0].join("identity.key"), h.join("identity.key"))
                    .context("sharing the tracker key among the replicas")?;
            }
            let init = [
                OsStr::new("init"),
                OsStr::new("--home"),
                h.as_os_str(),
                OsStr::new("--devnet"),
            ];
            procs::run_to_end(tracker_bin, &init, log)?;
            let id = [OsStr::new("replica-id"), OsStr::new("--home"), h.as_os_str()];
            procs::run_to_end(tracker_bin, &id, log)?;
            let peer = key_peer(&h.join("replica.key"))?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .context("cannot find a free port")?
                .port();
            list.push((peer, port));
        }
        let replicas: Vec<String> = list
            .iter()
            .enumerate()
            .map(|(i, (peer, port))| format!("{} {peer} /ip4/127.0.0.1/tcp/{port}", i + 1))
            .collect();
        for (i, h) in homes.iter().enumerate() {
            let path = h.join("config.toml");
            loopback_tracker_config(&path)?;
            edit_config(&path, "loopback, faucet_max and the replica set", |table| {
                let listen = format!("/ip4/127.0.0.1/tcp/{}", list[i].1);
                table.insert("listen".into(), toml::Value::Array(vec![listen.into()]));
                table.insert("replica_id".into(), toml::Value::Integer(i as i64 + 1));
                let set = replicas.iter().map(|r| toml::Value::from(r.as_str())).collect();
                table.insert("replicas".into(), toml::Value::Array(set));
                true
            })?;
        }
    } else {
        for log in &logs {
            log_header(log)?;
        }
    }
    let epoch = format!("{}", opts.epoch_secs);
    if opts.verbose {
        eprintln!(
            "devnet: starting {} tracker replicas ({}-second epochs)",
            opts.trackers, opts.epoch_secs
        );
    }
    for (i, (h, log)) in homes.iter().zip(&logs).enumerate() {
        let _ = std::fs::remove_file(h.join("tracker.json"));
        let args = [
            OsStr::new("run"),
            OsStr::new("--home"),
            h.as_os_str(),
            OsStr::new("--epoch-secs"),
            OsStr::new(&epoch),
            OsStr::new("--devnet"),
        ];
        let pid = procs::spawn(tracker_bin, &args, log, opts.detach)?;
        file.processes.push(Proc {
            role: "tracker".into(),
            name: format!("tracker-{}", i + 1),
            pid,
            peer_id: String::new(),
            addrs: Vec::new(),
            metrics: String::new(),
            home: h.clone(),
            log: log.clone(),
        });
    }
    save(home, file)?;
    wait_ready(file, "tracker.json", opts.timeout)?;
    save(home, file)?;
    let addrs: Vec<String> = file
        .processes
        .iter()
        .filter(|p| p.role == "tracker")
        .map(|p| {
            p.dial_addr()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("{} reported no listen address", p.name))
        })
        .collect::<Result<_>>()?;
    let signing = key_peer(&homes[0].join("identity.key"))?.to_string();
    Ok((signing, addrs[0].clone(), addrs))
}

/// The peer id of the identity key in `path`.
fn key_peer(path: &Path) -> Result<crowd_protocol::libp2p::PeerId> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let key = crowd_protocol::libp2p::identity::Keypair::from_protobuf_encoding(&bytes)
        .map_err(|e| anyhow!("{}: not an identity key: {e}", path.display()))?;
    Ok(key.public().to_peer_id())
}

fn log_header(log: &Path) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    writeln!(f, "--- crowd devnet up (unix time {secs}) ---")?;
    Ok(())
}

/// Points a freshly `init`ed tracker config at loopback with ephemeral ports,
/// touching only keys the file already has.
fn loopback_tracker_config(path: &Path) -> Result<()> {
    edit_config(path, "loopback and faucet_max", |table| {
        let mut changed = false;
        if table.contains_key("listen") {
            table.insert("listen".into(), loopback_listen());
            changed = true;
        }
        if table.contains_key("metrics_address") {
            table.insert("metrics_address".into(), "127.0.0.1:0".into());
            changed = true;
        }
        if table.contains_key("faucet_max") {
            // one faucet request funds a whole devnet account
            let most = i64::try_from(FUNDING).unwrap_or(i64::MAX);
            table.insert("faucet_max".into(), most.into());
            changed = true;
        }
        changed
    })
}

/// Rewrites a tracker's `config.toml` through `edit` (which says whether it
/// changed anything; nothing is written if not), headed by a line saying
/// `crowd devnet up` set `what`.
fn edit_config(path: &Path, what: &str, edit: impl FnOnce(&mut toml::Table) -> bool) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| anyhow!("{}: {}", path.display(), e.message()))?;
    if !edit(&mut table) {
        return Ok(());
    }
    let text = format!(
        "# `crowd-tracker init --devnet`, then {what} set by `crowd devnet up`.\n{}",
        toml::to_string(&table)?
    );
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Replaces ephemeral (port 0) listen addresses in the tracker's config with
/// the ones it actually bound (`addrs` end in /p2p/<id>, which is dropped).
fn pin_tracker_listen(path: &Path, addrs: &[String]) -> Result<()> {
    edit_config(path, "loopback, faucet_max and the bound ports", |table| {
        let ephemeral = match table.get("listen") {
            Some(toml::Value::Array(a)) => a.iter().any(|v| {
                v.as_str()
                    .is_some_and(|s| s.contains("/tcp/0") || s.contains("/udp/0/"))
            }),
            _ => false,
        };
        if !ephemeral || addrs.is_empty() {
            return false;
        }
        let bound: Vec<toml::Value> = addrs
            .iter()
            .map(|a| a.split("/p2p/").next().unwrap_or(a).to_string().into())
            .collect();
        table.insert("listen".into(), toml::Value::Array(bound));
        true
    })
}

fn loopback_listen() -> toml::Value {
    toml::Value::Array(vec![
        "/ip4/127.0.0.1/tcp/0".into(),
        "/ip4/127.0.0.1/udp/0/quic-v1".into(),
    ])
}

fn write_node_config(path: &Path, tracker: &str, tracker_addr: &str, replicas: &[String]) -> Result<()> {
    let text = format!(
        "# Written by `crowd devnet up`; every other field takes its default\n\
         # (`crowd-node init` documents them all).\n\
         listen = [\"/ip4/127.0.0.1/tcp/0\", \"/ip4/127.0.0.1/udp/0/quic-v1\"]\n\
         metrics_address = \"127.0.0.1:0\"\n\
         tracker_peer_id = \"{tracker}\"\n\
         tracker_address = \"{tracker_addr}\"\n\
         tracker_replicas = {replicas:?}\n\
         sealing_preset = \"devnet\"\n\
         capacity_bytes = {}\n",
        16u64 << 30
    );
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Sets `tracker_address` and `tracker_peer_id` in the client's config.toml,
/// keeping every other key.
fn write_client_config(path: &Path, tracker: &str, tracker_addr: &str, replicas: &[String]) -> Result<()> {
    let mut table = match std::fs::read_to_string(path) {
        Ok(text) => text
            .parse::<toml::Table>()
            .map_err(|e| anyhow!("{}: {} (fix or delete it)", path.display(), e.message()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => return Err(anyhow!("cannot read {}: {e}", path.display())),
    };
    table.insert("tracker_address".into(), tracker_addr.into());
    table.insert("tracker_peer_id".into(), tracker.into());
    if replicas.is_empty() {
        table.remove("tracker_replicas");
    } else {
        let list = replicas.iter().map(|r| toml::Value::from(r.as_str())).collect();
        table.insert("tracker_replicas".into(), toml::Value::Array(list));
    }
    let text = format!(
        "# crowd client configuration; tracker_* written by `crowd devnet up`.\n{}",
        toml::to_string(&table)?
    );
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The JSON a process writes once it is ready (`tracker.json`, `node.json`).
#[derive(Debug, Deserialize)]
struct ReadyInfo {
    peer_id: String,
    listen: Vec<String>,
    #[serde(default)]
    metrics: String,
    pid: u32,
}

/// Waits until every process in `file` without a peer id has written its
/// ready file; fills in peer id and addresses. Names the first that exits or
/// times out, with the end of its log on stderr.
fn wait_ready(file: &mut DevnetFile, ready_file: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut waiting = 0;
        for p in file.processes.iter_mut().filter(|p| p.peer_id.is_empty()) {
            let info = std::fs::read_to_string(p.home.join(ready_file))
                .ok()
                .and_then(|t| serde_json::from_str::<ReadyInfo>(&t).ok())
                .filter(|i| i.pid == p.pid);
            if let Some(info) = info {
                if info.peer_id.is_empty() || info.listen.is_empty() {
                    return Err(failed(p, "reported no peer id or no listen address"));
                }
                p.peer_id = info.peer_id;
                p.addrs = info.listen;
                p.metrics = info.metrics;
                continue;
            }
            if !p.alive() {
                return Err(failed(p, "exited before it was ready"));
            }
            if Instant::now() > deadline {
                return Err(failed(
                    p,
                    &format!("was not ready within {} s", timeout.as_secs()),
                ));
            }
            waiting += 1;
        }
        if waiting == 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn failed(p: &Proc, what: &str) -> anyhow::Error {
    let tail = procs::tail(&p.log, 12);
    if !tail.is_empty() {
        eprintln!("devnet: last lines of {}:", p.log.display());
        for line in tail.lines() {
            eprintln!("  {line}");
        }
    }
    anyhow!("{} (pid {}) {what}; see {}", p.name, p.pid, p.log.display())
}

fn wait_registered(conn: &TrackerConn, file: &DevnetFile, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let listed: Vec<String> = conn
            .providers()
            .context("listing providers")?
            .iter()
            .map(|p| p.peer.to_string())
            .collect();
        let missing: Vec<&Proc> = file
            .processes
            .iter()
            .filter(|p| p.role == "node" && !listed.contains(&p.peer_id))
            .collect();
        let Some(first) = missing.first() else {
            return Ok(());
        };
        if let Some(dead) = file.processes.iter().find(|p| !p.alive()) {
            return Err(failed(dead, "exited"));
        }
        if Instant::now() > deadline {
            return Err(failed(
                first,
                &format!(
                    "was not registered with the tracker within {} s ({} of {} nodes missing)",
                    timeout.as_secs(),
                    missing.len(),
                    file.processes.len() - 1
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn print_summary(up: &Devnet) {
    let trackers = up.file.processes.iter().filter(|p| p.role == "tracker").count();
    let nodes = up.file.processes.len() - trackers;
    let tracker = match trackers {
        1 => "a tracker".to_string(),
        n => format!("{n} tracker replicas"),
    };
    println!(
        "devnet up in {}: {tracker} and {nodes} storage nodes, {}-second epochs",
        dir(&up.home).display(),
        up.file.epoch_secs
    );
    if let Some(t) = up.file.tracker() {
        println!("tracker {} at {}", t.peer_id, up.tracker_addr);
    }
    println!(
        "client  {} funded with {} (config {})",
        up.client,
        up.funded,
        up.home.join("config.toml").display()
    );
    println!("next: crowd put FILE; crowd devnet status; crowd devnet down");
}

/// Stops every process of the devnet in `home`; with `clean` deletes the
/// devnet directory. Returns a one-line report.
pub fn down(home: &Path, clean: bool) -> Result<String> {
    let dir = dir(home);
    let Some(file) = load(home)? else {
        if clean && dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
            return Ok(format!("no devnet was running; removed {}", dir.display()));
        }
        return Ok(format!("no devnet in {}", dir.display()));
    };
    let running: Vec<_> = file
        .processes
        .iter()
        .filter(|p| p.alive())
        .map(|p| (p.pid, p.home.clone()))
        .collect();
    let killed = procs::stop_all(&running, Duration::from_secs(15))?;
    let mut report = match (running.len(), killed) {
        (0, _) => format!("no devnet process was running in {}", dir.display()),
        (n, 0) => format!("devnet down: stopped {n} processes"),
        (n, k) => format!("devnet down: stopped {n} processes ({k} killed after 15 s)"),
    };
    if clean {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        report.push_str(&format!("; removed {}", dir.display()));
    } else {
        report.push_str(&format!("; homes and logs kept in {}", dir.display()));
    }
    Ok(report)
}

/// Whether a tracker process acts for the network now (its `leads` gauge:
/// a replica set's leader, or a single tracker); `None` for a node or a
/// tracker that does not answer.
pub fn leads(p: &Proc) -> Option<bool> {
    use std::io::{Read, Write};
    if p.role != "tracker" || p.metrics.is_empty() || !p.alive() {
        return None;
    }
    let addr: std::net::SocketAddr = p.metrics.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", p.metrics).ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("crowd_tracker_leads "))
        .map(|v| v.trim() == "1")
}

fn status(home: &Path, json: bool) -> Result<()> {
    let dir = dir(home);
    let file = load(home)?;
    if json {
        let processes: Vec<serde_json::Value> = file
            .iter()
            .flat_map(|f| &f.processes)
            .map(|p| {
                serde_json::json!({
                    "role": p.role,
                    "name": p.name,
                    "pid": p.pid,
                    "alive": p.alive(),
                    "leads": leads(p),
                    "peer_id": p.peer_id,
                    "addrs": p.addrs,
                    "metrics": p.metrics,
                    "dashboard": (!p.metrics.is_empty()).then(|| format!("http://{}/", p.metrics)),
                    "home": p.home,
                    "log": p.log,
                })
            })
            .collect();
        let out = serde_json::json!({
            "dir": dir,
            "epoch_secs": file.as_ref().map(|f| f.epoch_secs),
            "processes": processes,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let Some(file) = file else {
        println!(
            "no devnet in {} (start one with `crowd devnet up`)",
            dir.display()
        );
        return Ok(());
    };
    let alive = file.processes.iter().filter(|p| p.alive()).count();
    println!(
        "devnet in {}: {alive} of {} processes running, {}-second epochs",
        dir.display(),
        file.processes.len(),
        file.epoch_secs
    );
    for p in &file.processes {
        let state = if p.alive() { "running" } else { "stopped" };
        let peer = if p.peer_id.is_empty() { "-" } else { &p.peer_id };
        let lead = match leads(p) {
            Some(true) if file.processes.iter().filter(|q| q.role == "tracker").count() > 1 => "  (leader)",
            _ => "",
        };
        println!(
            "{:<9} {:<7} pid {:<7} {:<7} {peer}{lead}",
            p.name, p.role, p.pid, state
        );
        println!("         home {}  log {}", p.home.display(), p.log.display());
        if !p.metrics.is_empty() {
            println!("         dashboard http://{}/", p.metrics);
        }
        for a in &p.addrs {
            println!("         {a}");
        }
    }
    Ok(())
}
