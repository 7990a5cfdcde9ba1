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

fn main() -> std::process::ExitCode {
    let args = Args::parse();
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
