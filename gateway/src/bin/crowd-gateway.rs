//! `crowd-gateway` (run as `crowd gateway`): serves the network over S3 and
//! the IPFS trustless gateway protocol. Prints one JSON line on stdout once
//! it serves: `{"http":…,"s3_access_key":…,"s3_secret_key":…}`.

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "crowd gateway",
    version,
    about = "An S3-compatible API and an IPFS trustless gateway over the crowd"
)]
struct Args {
    /// Address to listen on (default: gateway.toml's `listen`, 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// The client home whose account stores the S3 objects.
    #[arg(long, env = "CROWD_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
}

/// glibc gives threads their own malloc arenas (up to 8 per core), and
/// memory freed in one arena is not reused by another. Every put and get
/// of the client library runs on fresh threads, so the gateway's peak RSS
/// grew with each 1 GiB put (204, then 301 MiB over two); with two arenas it
/// stays near 160 MiB. glibc reads `MALLOC_ARENA_MAX` when a process starts,
/// so the gateway starts itself again with it set, unless the caller chose
/// a value. (`exec` keeps the pid.)
fn bound_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let e = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("MALLOC_ARENA_MAX", "2")
        .exec();
    eprintln!("warning: could not restart with MALLOC_ARENA_MAX=2 ({e}); memory may grow with each transfer");
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    bound_malloc_arenas();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let gateway = crowd_gateway::Gateway::start(crowd_gateway::Options {
            home: args.home,
            listen: args.listen,
        })
        .await?;
        let line = serde_json::to_string(&gateway.ready)
            .map_err(|e| crowd_gateway::GatewayError::Io(e.to_string()))?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|_| out.flush());
        drop(out);
        gateway.serve().await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
