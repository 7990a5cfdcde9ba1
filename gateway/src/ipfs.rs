//! The IPFS trustless gateway: `GET`/`HEAD /ipfs/{cid}` as a raw block, a
//! CAR v1 or the file's bytes, for files stored with `--public`. A DAG is
//! fetched from the network once (every piece verified, the root CID
//! rebuilt) into the [`DagCache`]; every block is verified against its CID
//! again as it is read for a response.

use std::ops::Range;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use crowd_chunker::Cid;

use crate::cache::{CachedDag, DagCache, Piece};
use crate::error::GatewayError;
use crate::request::{self, parse_range_header, CarOptions, DagScope, Format, RangeAsk};

/// Immutable content: cached for a year (the specification's figure).
const IMMUTABLE: &str = "public, max-age=29030400, immutable";
/// Responses in flight hold at most this many chunks of at most one block.
const STREAM_DEPTH: usize = 4;

/// What the IPFS side needs: the client home to fetch with and the cache.
#[derive(Debug)]
pub struct Ipfs {
    client: crowd_client::Client,
    cache: DagCache,
    /// Fetches at once (each may be a whole file).
    fetches: tokio::sync::Semaphore,
    /// One fetch per root at a time; the others wait for its result.
    inflight: tokio::sync::Mutex<std::collections::HashMap<Cid, Arc<tokio::sync::Mutex<()>>>>,
    /// The gateway's transfers with the network (shared with the S3 side).
    transfers: Arc<tokio::sync::Semaphore>,
}

/// Fetches at once.
pub const MAX_FETCHES: usize = 4;

impl Ipfs {
    pub fn new(
        client: crowd_client::Client,
        cache: DagCache,
        transfers: Arc<tokio::sync::Semaphore>,
    ) -> Self {
        Self {
            client,
            cache,
            fetches: tokio::sync::Semaphore::new(MAX_FETCHES),
            inflight: Default::default(),
            transfers,
        }
    }

    /// The cached DAG holding `cid` (a root or any block of a cached DAG),
    /// else the public file whose root is `cid`, fetched from the network.
    pub async fn dag(&self, cid: &Cid) -> Result<Arc<CachedDag>, GatewayError> {
        if let Some(dag) = self.cache.find(cid) {
            return Ok(dag);
        }
        let turn = self.inflight.lock().await.entry(*cid).or_default().clone();
        let _mine = turn.lock().await;
        let result = self.fetch(cid).await;
        self.inflight.lock().await.remove(cid);
        result
    }

    async fn fetch(&self, cid: &Cid) -> Result<Arc<CachedDag>, GatewayError> {
        // another request may have fetched it while this one waited
        if let Some(dag) = self.cache.find(cid) {
            return Ok(dag);
        }
        let _slot = self.fetches.try_acquire().map_err(|_| {
            GatewayError::Busy(format!(
                "{MAX_FETCHES} files are being fetched already; try again"
            ))
        })?;
        let _transfer = self
            .transfers
            .acquire()
            .await
            .map_err(|_| GatewayError::Io("the gateway is stopping".into()))?;
        let path = self.cache.path_for(cid);
        let client = self.client.clone();
        let text = cid.to_string();
        let root = *cid;
        let dag = tokio::task::spawn_blocking(move || {
            client
                .export(&text, &path)
                .map_err(|e| GatewayError::from_client(&text, e))?;
            CachedDag::open(&path, root).inspect_err(|_| {
                let _ = std::fs::remove_file(&path);
            })
        })
        .await
        .map_err(|e| GatewayError::Io(format!("the fetch task failed: {e}")))??;
        Ok(self.cache.insert(dag))
    }
}

/// `/ipfs/` with nothing after it.
pub async fn no_cid() -> Response {
    GatewayError::BadRequest("no CID after /ipfs/".into()).into_response()
}

/// `GET` and `HEAD /ipfs/{*path}`.
pub async fn handle(
    State(ipfs): State<Arc<Ipfs>>,
    method: Method,
    Path(path): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match answer(&ipfs, &method, &path, &uri, &headers).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn answer(
    ipfs: &Ipfs,
    method: &Method,
    path: &str,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, GatewayError> {
    let accept = header_text(headers, header::ACCEPT)?;
    let req = request::parse(path, uri.query(), accept)?;
    let dag = ipfs.dag(&req.cid).await?;
    let cid = req.cid;
    let head = method == Method::HEAD;
    match req.format {
        Format::Raw => {
            let block = dag.block(&cid)?;
            let etag = format!("\"{cid}.raw\"");
            if not_modified(headers, &etag) {
                return Ok(not_modified_response(&etag, &cid));
            }
            let mut r = Response::new(if head {
                Body::empty()
            } else {
                Body::from(block.clone())
            });
            let h = r.headers_mut();
            common(h, &cid, &etag);
            set(h, header::CONTENT_TYPE, "application/vnd.ipld.raw");
            set(
                h,
                header::CONTENT_DISPOSITION,
                &format!("attachment; filename=\"{cid}.bin\""),
            );
            set(h, header::CONTENT_LENGTH, &block.len().to_string());
            Ok(r)
        }
        Format::Car(opts) => {
            if dag.root != cid {
                // a CAR is of a file's DAG; a block inside one is asked for raw
                return Err(GatewayError::NotFound(format!(
                    "{cid} is a block inside {}, not a file: ask for it with format=raw",
                    dag.root
                )));
            }
            let range = match &opts.bytes {
                Some(b) => b.resolve(dag.size)?,
                None => None,
            };
            let opts = match (&opts.bytes, &range) {
                // an empty range is answered as dag-scope=block
                (Some(_), None) => CarOptions {
                    scope: DagScope::Block,
                    ..opts
                },
                _ => opts,
            };
            let etag = car_etag(&cid, &opts, range.as_ref());
            if not_modified(headers, &etag) {
                return Ok(not_modified_response(&etag, &cid));
            }
            let blocks = dag.car_blocks(&opts, range.as_ref())?;
            let mut r = Response::new(if head {
                Body::empty()
            } else {
                car_body(dag, blocks)
            });
            let h = r.headers_mut();
            common(h, &cid, &etag);
            let dups = if opts.dups { "y" } else { "n" };
            set(
                h,
                header::CONTENT_TYPE,
                &format!("application/vnd.ipld.car; version=1; order=dfs; dups={dups}"),
            );
            set(
                h,
                header::CONTENT_DISPOSITION,
                &format!("attachment; filename=\"{cid}.car\""),
            );
            Ok(r)
        }
        Format::File => {
            if dag.root != cid {
                return Err(GatewayError::NotFound(format!(
                    "{cid} is a block inside {}, not a file: ask for it with format=raw",
                    dag.root
                )));
            }
            let etag = format!("\"{cid}\"");
            if not_modified(headers, &etag) {
                return Ok(not_modified_response(&etag, &cid));
            }
            let ask = match header_text(headers, header::RANGE)? {
                Some(v) => parse_range_header(v, dag.size),
                None => RangeAsk::Whole,
            };
            let (status, range) = match ask {
                RangeAsk::Whole => (StatusCode::OK, 0..dag.size),
                RangeAsk::Part(r) => (StatusCode::PARTIAL_CONTENT, r),
                RangeAsk::Unsatisfiable => return Err(GatewayError::Unsatisfiable { size: dag.size }),
            };
            let pieces = dag.file_pieces(&range)?;
            let len = range.end - range.start;
            let mut r = Response::new(if head {
                Body::empty()
            } else {
                file_body(dag.clone(), pieces)
            });
            *r.status_mut() = status;
            let h = r.headers_mut();
            common(h, &cid, &etag);
            set(h, header::CONTENT_TYPE, "application/octet-stream");
            set(h, header::ACCEPT_RANGES, "bytes");
            set(h, header::CONTENT_LENGTH, &len.to_string());
            if status == StatusCode::PARTIAL_CONTENT {
                set(
                    h,
                    header::CONTENT_RANGE,
                    &format!("bytes {}-{}/{}", range.start, range.end - 1, dag.size),
                );
            }
            Ok(r)
        }
    }
}

/// A header's value as text; a value that is not text is a bad request.
fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<&str>, GatewayError> {
    headers
        .get(&name)
        .map(|v| {
            v.to_str()
                .map_err(|_| GatewayError::BadRequest(format!("the {name} header is not text")))
        })
        .transpose()
}

fn set(h: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn common(h: &mut HeaderMap, cid: &Cid, etag: &str) {
    set(h, header::ETAG, etag);
    set(h, header::CACHE_CONTROL, IMMUTABLE);
    set(
        h,
        header::HeaderName::from_static("x-ipfs-roots"),
        &cid.to_string(),
    );
    set(
        h,
        header::HeaderName::from_static("x-ipfs-path"),
        &format!("/ipfs/{cid}"),
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
}

fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

fn not_modified_response(etag: &str, cid: &Cid) -> Response {
    let mut r = StatusCode::NOT_MODIFIED.into_response();
    common(r.headers_mut(), cid, etag);
    r
}

/// A CAR's Etag: the CID and a digest of what selected its blocks.
pub fn car_etag(cid: &Cid, opts: &CarOptions, range: Option<&Range<u64>>) -> String {
    let what = format!("{:?}|{range:?}|{}|dfs|v1", opts.scope, opts.dups);
    let tag = blake3::hash(what.as_bytes());
    format!("\"{cid}.car.{}\"", &tag.to_hex()[..16])
}

/// Streams a CAR v1 of `blocks` from `dag`, each verified as it is read,
/// through a channel of [`STREAM_DEPTH`] blocks: a client that stops
/// reading stops the reader, one that goes away ends it.
fn car_body(dag: Arc<CachedDag>, blocks: Vec<Cid>) -> Body {
    stream_body(move |tx| {
        let io = |e: crowd_chunker::ChunkerError| GatewayError::Io(e.to_string());
        let mut car = crowd_chunker::CarWriter::new(ChannelWriter(tx), &dag.root).map_err(io)?;
        for cid in blocks {
            car.put(&cid, &dag.block(&cid)?).map_err(io)?;
        }
        car.finish().map(|_| ()).map_err(io)
    })
}

/// Writes into a response's channel (each write one chunk).
struct ChannelWriter<'a>(&'a Tx);

impl std::io::Write for ChannelWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::other("the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Streams the file bytes `pieces` select, each leaf verified as it is read.
fn file_body(dag: Arc<CachedDag>, pieces: Vec<Piece>) -> Body {
    stream_body(move |tx| {
        for p in pieces {
            let block = Bytes::from(dag.block(&p.cid)?);
            send(tx, block.slice(p.within.start as usize..p.within.end as usize))?;
        }
        Ok(())
    })
}

type Tx = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

fn send(tx: &Tx, bytes: Bytes) -> Result<(), GatewayError> {
    tx.blocking_send(Ok(bytes))
        .map_err(|_| GatewayError::Io("the client went away".into()))
}

/// A body filled by `produce` on a blocking thread. An error after the
/// status was sent ends the body early (the client sees a cut response,
/// never unverified bytes).
fn stream_body(produce: impl FnOnce(&Tx) -> Result<(), GatewayError> + Send + 'static) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_DEPTH);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = produce(&tx) {
            if !tx.is_closed() {
                tracing::warn!("a response was cut: {e}");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let mut rx = rx;
    Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}
