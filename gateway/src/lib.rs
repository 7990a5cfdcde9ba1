//! `crowd gateway`: the network for software that speaks S3 or IPFS.
//!
//! One HTTP server (axum) with two faces, both served from the network
//! through `crowd_client` with every byte verified before it leaves:
//!
//! - **IPFS trustless gateway** ([`ipfs`]): `GET`/`HEAD /ipfs/{cid}` of a
//!   file stored with `--public`, as a raw block, a CAR v1 (`dag-scope`,
//!   `entity-bytes`, `dups`) or the file's bytes (with `Range`). Private
//!   files are refused (403): their DAG exists only in plaintext.
//! - **S3-compatible API** ([`s3`], on `s3s`): buckets and keys kept in
//!   RocksDB ([`meta`]), each object a private file put through the
//!   gateway's client home, AWS Signature V4 with the keys in
//!   `gateway.toml` ([`config`]).
//!
//! Bounds: 256 connections, each cut after 5 minutes without a byte moving;
//! one transfer with the network at a time ([`MAX_TRANSFERS`]), at most 4
//! IPFS fetches waiting for it; bodies are spooled to disk and responses
//! read from disk in 1 MiB chunks through 4-deep channels.

pub mod cache;
pub mod config;
pub mod error;
pub mod ipfs;
pub mod meta;
pub mod request;
pub mod s3;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;

pub use config::GatewayConfig;
pub use error::GatewayError;

/// Connections at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Puts and gets with the network at once (each already spreads over its
/// k+m providers in parallel). One put of any size peaks near 150 MiB in
/// this process (a 64 MiB object: 148 MiB), so one at a time is what keeps
/// the gateway under 256 MiB; the others wait, their bodies on disk.
pub const MAX_TRANSFERS: usize = 1;
/// A connection that moves no byte for this long is cut. It must cover a
/// PutObject's put after its body arrived (no byte moves meanwhile): S3
/// caps a PutObject at 5 GiB ([`s3::MAX_OBJECT_PUT`]), about 40 s of put
/// on the reference machine; longer uploads are multipart, whose completion
/// s3s keeps alive with whitespace.
pub const IDLE: Duration = Duration::from_secs(300);

/// How to start.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The client home (default `$CROWD_HOME`, else `~/.crowd`).
    pub home: Option<PathBuf>,
    /// Overrides the config's `listen`.
    pub listen: Option<String>,
}

/// What `crowd gateway` prints once it serves.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ready {
    pub http: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
}

/// A gateway ready to serve: its listener bound, its stores open.
#[derive(Debug)]
pub struct Gateway {
    listener: tokio::net::TcpListener,
    router: Router,
    pub ready: Ready,
}

impl Gateway {
    /// Opens the home, its gateway config (created on first start) and
    /// stores, and binds the listener.
    pub async fn start(opts: Options) -> Result<Self, GatewayError> {
        let client = crowd_client::Client::open_default(opts.home.as_deref())
            .map_err(|e| GatewayError::Config(e.to_string()))?;
        let home = client.home().to_path_buf();
        crowd_client::config::ClientConfig::load(&home)
            .map_err(|e| GatewayError::Config(format!("{e:#}")))?;
        client
            .peer_id()
            .map_err(|e| GatewayError::Config(e.to_string()))?;
        let config = GatewayConfig::load_or_create(&home)?;
        let work = home.join("gateway");
        let meta = meta::Meta::open(&work.join("meta"))?;
        let cache = cache::DagCache::new(work.join("ipfs-cache"), config.cache_bytes)?;
        let transfers = Arc::new(tokio::sync::Semaphore::new(MAX_TRANSFERS));
        let ipfs = Arc::new(ipfs::Ipfs::new(client.clone(), cache, transfers.clone()));
        let s3 = s3::S3Gateway::new(client, meta, &work, transfers)?;

        let mut builder = s3s::service::S3ServiceBuilder::new(s3);
        builder.set_auth(s3::Auth {
            access_key: config.access_key.clone(),
            secret_key: config.secret_key.clone(),
        });
        let mut s3_config = s3s::config::S3Config::default();
        // a CompleteMultipartUpload of 10,000 parts is ~1 MB of XML
        s3_config.xml_max_body_size = 2 << 20;
        builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
            s3_config,
        ))));
        let service = builder.build();

        let ipfs_routes = Router::new()
            .route("/ipfs", get(ipfs::no_cid))
            .route("/ipfs/", get(ipfs::no_cid))
            .route("/ipfs/{*path}", get(ipfs::handle))
            .with_state(ipfs);
        let router = ipfs_routes.fallback_service(axum::error_handling::HandleError::new(service, s3_failed));

        let listen = opts.listen.unwrap_or(config.listen.clone());
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| GatewayError::Config(format!("cannot listen on {listen}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| GatewayError::Io(format!("the listener's address: {e}")))?;
        Ok(Self {
            listener,
            router,
            ready: Ready {
                http: format!("http://{addr}"),
                s3_access_key: config.access_key,
                s3_secret_key: config.secret_key,
            },
        })
    }

    /// Serves until the process ends.
    pub async fn serve(self) -> Result<(), GatewayError> {
        crowd_web::serve_idle_bounded(self.listener, self.router, MAX_CONNECTIONS, IDLE)
            .await
            .map_err(|e| GatewayError::Io(format!("serving: {e}")))
    }
}

/// An internal failure of the S3 service (not an S3 error: those are
/// already XML responses).
async fn s3_failed(e: s3s::HttpError) -> axum::response::Response {
    tracing::warn!("S3 request failed: {e:?}");
    crowd_web::error(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}
