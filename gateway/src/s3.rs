//! The S3-compatible API (on `s3s`): buckets and keys in the gateway's
//! records ([`Meta`]), each object's bytes a private file stored through the
//! gateway's client home (encrypted as every `crowd put` is). Bodies are
//! spooled to disk as they arrive (MD5 and `Content-MD5` checked there),
//! then put; reads are retrieved and verified to disk, then streamed.
//! Memory stays bounded in both directions whatever the object's size.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use s3s::crypto::{Checksum, Md5};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::meta::{BucketMeta, Meta, ObjectMeta, PartMeta, Stored, UploadMeta};

/// S3's smallest part but the last.
pub const MIN_PART: u64 = 5 << 20;
/// S3's largest PutObject and UploadPart body (`EntityTooLarge` beyond;
/// larger objects are multipart).
pub const MAX_OBJECT_PUT: u64 = 5 << 30;
/// S3's highest part number.
pub const MAX_PART_NUMBER: i32 = 10_000;
/// Keys longer than this (S3's limit) are refused.
pub const MAX_KEY_LEN: usize = 1024;
/// Bytes per chunk of a streamed response.
const READ_CHUNK: usize = 1 << 20;
/// Chunks of a request body in flight to the hasher and the writer.
const PIPELINE_DEPTH: usize = 64;

/// The S3 side's state.
#[derive(Debug, Clone)]
pub struct S3Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: crowd_client::Client,
    meta: Meta,
    /// Bodies being received, before they are put.
    spool: PathBuf,
    /// Multipart uploads' parts: `<uploads>/<upload id>/<part number>`.
    uploads: PathBuf,
    /// The gateway's transfers with the network (shared with the IPFS side).
    transfers: Arc<tokio::sync::Semaphore>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

fn internal(e: impl std::fmt::Display) -> S3Error {
    let mut err = S3Error::new(S3ErrorCode::InternalError);
    err.set_message(e.to_string());
    err
}

/// A client library error as an S3 error.
fn from_client(e: crowd_client::Error) -> S3Error {
    use crowd_client::Error as E;
    let code = match &e {
        E::NotFound(_) => S3ErrorCode::NoSuchKey,
        E::InsufficientFunds { .. } | E::NoProviders(_) => S3ErrorCode::ServiceUnavailable,
        E::Network(_) => S3ErrorCode::ServiceUnavailable,
        _ => S3ErrorCode::InternalError,
    };
    let mut err = S3Error::new(code);
    err.set_message(e.to_string());
    err
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, S3Error> + Send + 'static) -> S3Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(internal)?
}

impl S3Gateway {
    pub fn new(
        client: crowd_client::Client,
        meta: Meta,
        work: &Path,
        transfers: Arc<tokio::sync::Semaphore>,
    ) -> Result<Self, crate::GatewayError> {
        let spool = work.join("spool");
        let uploads = work.join("uploads");
        // half-received bodies of a previous run are of no use
        let _ = std::fs::remove_dir_all(&spool);
        for d in [&spool, &uploads] {
            std::fs::create_dir_all(d)
                .map_err(|e| crate::GatewayError::Io(format!("cannot create {}: {e}", d.display())))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                meta,
                spool,
                uploads,
                transfers,
            }),
        })
    }

    fn meta(&self) -> &Meta {
        &self.inner.meta
    }

    /// A turn to transfer with the network (waits for one).
    async fn transfer(&self) -> S3Result<tokio::sync::SemaphorePermit<'_>> {
        self.inner
            .transfers
            .acquire()
            .await
            .map_err(|_| internal("the gateway is stopping"))
    }

    fn need_bucket(&self, bucket: &str) -> S3Result<()> {
        match self.meta().bucket(bucket).map_err(internal)? {
            Some(_) => Ok(()),
            None => Err(s3_error!(
                NoSuchBucket,
                "no bucket '{}'",
                crate::request::printable(bucket)
            )),
        }
    }

    fn check_key(key: &str) -> S3Result<()> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(s3_error!(KeyTooLongError, "keys are 1 to {MAX_KEY_LEN} bytes"));
        }
        if key.contains('\0') {
            return Err(s3_error!(InvalidArgument, "a key may not hold a NUL character"));
        }
        Ok(())
    }

    /// Receives `body` into a new spool file in `dir` (written on a thread
    /// of its own while this task receives the next chunks), checking the
    /// declared length; with `hash`, its MD5 is computed on another thread
    /// alongside. Returns the file, its size and the MD5.
    async fn spool(
        &self,
        body: Option<StreamingBlob>,
        content_length: Option<i64>,
        dir: &Path,
        hash: bool,
    ) -> S3Result<(tempfile::TempPath, u64, Option<[u8; 16]>)> {
        let too_large = || {
            s3_error!(
                EntityTooLarge,
                "a single upload is at most 5 GiB: use a multipart upload"
            )
        };
        if content_length.is_some_and(|l| l > 0 && l as u64 > MAX_OBJECT_PUT) {
            return Err(too_large());
        }
        let file = tempfile::NamedTempFile::new_in(dir).map_err(internal)?;
        let (std_file, path) = file.into_parts();
        let (to_writer, mut writer_rx) = tokio::sync::mpsc::channel::<Bytes>(PIPELINE_DEPTH);
        let writer = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std_file);
            while let Some(chunk) = writer_rx.blocking_recv() {
                out.write_all(&chunk)?;
            }
            out.flush()
        });
        let (to_hasher, hasher) = if hash {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(PIPELINE_DEPTH);
            let task = tokio::task::spawn_blocking(move || {
                let mut md5 = Md5::new();
                while let Some(chunk) = rx.blocking_recv() {
                    md5.update(&chunk);
                }
                md5.finalize()
            });
            (Some(tx), Some(task))
        } else {
            (None, None)
        };
        let mut size = 0u64;
        let mut received: S3Result<()> = Ok(());
        if let Some(mut body) = body {
            while let Some(chunk) = body.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        let mut err = S3Error::new(S3ErrorCode::IncompleteBody);
                        err.set_message(format!("the request body: {e}"));
                        received = Err(err);
                        break;
                    }
                };
                size += chunk.len() as u64;
                if size > MAX_OBJECT_PUT {
                    received = Err(too_large());
                    break;
                }
                if let Some(tx) = &to_hasher {
                    if tx.send(chunk.clone()).await.is_err() {
                        break;
                    }
                }
                if to_writer.send(chunk).await.is_err() {
                    break;
                }
            }
        }
        drop((to_hasher, to_writer));
        let md5 = match hasher {
            Some(task) => Some(task.await.map_err(internal)?),
            None => None,
        };
        writer.await.map_err(internal)?.map_err(internal)?;
        received?;
        if let Some(len) = content_length {
            if len >= 0 && len as u64 != size {
                return Err(s3_error!(
                    IncompleteBody,
                    "received {size} bytes, Content-Length said {len}"
                ));
            }
        }
        Ok((path, size, md5))
    }

    /// Stores the spooled file `path` as the object `bucket/key`: put as a
    /// private file (nothing for an empty one), recorded, and the object it
    /// replaces, if any, removed from the network.
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        bucket: &str,
        key: &str,
        path: tempfile::TempPath,
        size: u64,
        etag: String,
        content_type: Option<String>,
        metadata: BTreeMap<String, String>,
    ) -> S3Result<()> {
        let stored = self.store(bucket, key, path, size).await?;
        self.record(
            bucket,
            key,
            ObjectMeta {
                stored,
                size,
                etag,
                content_type,
                metadata,
                modified_ms: now_ms(),
            },
        )
        .await
    }

    /// Puts the spooled file `path` as a private file named after
    /// `bucket/key` (nothing for an empty one).
    async fn store(
        &self,
        bucket: &str,
        key: &str,
        path: tempfile::TempPath,
        size: u64,
    ) -> S3Result<Option<Stored>> {
        if size == 0 {
            return Ok(None);
        }
        let _transfer = self.transfer().await?;
        let client = self.inner.client.clone();
        let name = format!("s3://{bucket}/{key}");
        let put = blocking(move || {
            let opts = crowd_client::PutOptions {
                name: Some(name),
                ..Default::default()
            };
            let out = client.put_path(&path, &opts).map_err(from_client);
            drop(path);
            out
        })
        .await?;
        Ok(Some(Stored {
            root: put.root,
            manifest: put.manifest,
        }))
    }

    /// Records `meta` as the object `bucket/key` (a synced write), then ends
    /// the deals of the object it replaces. If the bucket went away while
    /// the body was put, the new file's deals are ended instead.
    async fn record(&self, bucket: &str, key: &str, meta: ObjectMeta) -> S3Result<()> {
        if let Err(e) = self.need_bucket(bucket) {
            self.forget(meta).await;
            return Err(e);
        }
        let old = self.meta().object(bucket, key).map_err(internal)?;
        self.meta().put_object(bucket, key, &meta).map_err(internal)?;
        if let Some(old) = old {
            self.forget(old).await;
        }
        Ok(())
    }

    /// Ends the deals of a replaced or deleted object's file (best effort:
    /// the object is already gone from the records; a failure is logged and
    /// the deals run out on their own).
    async fn forget(&self, old: ObjectMeta) {
        if let Some(stored) = old.stored {
            self.forget_stored(stored).await;
        }
    }

    /// Ends the deals of one stored file (best effort, logged).
    async fn forget_stored(&self, stored: Stored) {
        let client = self.inner.client.clone();
        let result = tokio::task::spawn_blocking(move || client.remove(&stored.manifest)).await;
        match result {
            Ok(Ok(_)) | Ok(Err(crowd_client::Error::NotFound(_))) => {}
            Ok(Err(e)) => tracing::warn!("could not end the deals of a file no object holds: {e}"),
            Err(e) => tracing::warn!("the removal task failed: {e}"),
        }
    }

    /// Streams `range` of the object as it is retrieved: the client
    /// library writes each verified segment, in order, into a spool file
    /// ([`crowd_client::Client::get_into_file`]) and the response reads that
    /// file as it grows. The retrieval never waits for the reader (a client
    /// that stops reading holds no transfer slot); a failure before the
    /// first byte is an S3 error, one after it cuts the response.
    async fn body_of(&self, meta: &ObjectMeta, range: &std::ops::Range<u64>) -> S3Result<StreamingBlob> {
        let Some(stored) = meta.stored.clone() else {
            return Ok(StreamingBlob::from(s3s::Body::from(Bytes::new())));
        };
        let permit = self
            .inner
            .transfers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| internal("the gateway is stopping"))?;
        let target: crowd_client::Target = stored.root.parse().map_err(from_client)?;
        let opts = crowd_client::GetOptions {
            range: (*range != (0..meta.size)).then(|| range.clone()),
        };
        let scratch = tempfile::tempdir_in(&self.inner.spool).map_err(internal)?;
        let path = scratch.path().join("object");
        let file = std::fs::File::create(&path).map_err(internal)?;
        let reader = std::fs::File::open(&path).map_err(internal)?;
        let (done_tx, mut done_rx) = tokio::sync::watch::channel(None::<Result<(), (S3ErrorCode, String)>>);
        let client = self.inner.client.clone();
        let started = std::time::Instant::now();
        let bytes = range.end - range.start;
        tokio::task::spawn_blocking(move || {
            let result = client
                .get_into_file(&target, &opts, &file, &scratch.path().join("resume"))
                .map(|_| ())
                .map_err(|e| {
                    let e = from_client(e);
                    (e.code().clone(), e.message().unwrap_or("").to_string())
                });
            tracing::debug!(
                bytes,
                fetched_ms = started.elapsed().as_millis() as u64,
                ok = result.is_ok(),
                "GetObject: retrieved"
            );
            drop((permit, scratch));
            let _ = done_tx.send(Some(result));
        });
        // answer with an S3 error if the retrieval fails before any byte
        loop {
            if let Some(done) = done_rx.borrow().clone() {
                match done {
                    Err((code, message)) => return Err(S3Error::with_message(code, message)),
                    Ok(()) => break,
                }
            }
            if reader.metadata().map_err(internal)?.len() > 0 {
                break;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_millis(5), done_rx.changed()).await;
        }
        Ok(StreamingBlob::wrap(growing_file_stream(reader, bytes, done_rx)))
    }
}

/// Reads `file` while it grows to `len` bytes, as the retrieval writing it
/// reports on `done`: chunks of up to 1 MiB through a channel 4 deep (a
/// client that stops reading stops the reader, not the retrieval). Ends with
/// an error if the retrieval fails or the file stops short.
fn growing_file_stream(
    file: std::fs::File,
    len: u64,
    done: tokio::sync::watch::Receiver<Option<Result<(), (S3ErrorCode, String)>>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = file;
        let mut sent = 0u64;
        let fail = |message: String| {
            let _ = tx.blocking_send(Err(std::io::Error::other(message)));
        };
        loop {
            let mut buf = vec![0u8; READ_CHUNK];
            let n = match file.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return fail(format!("reading the retrieved object: {e}")),
            };
            if n > 0 {
                buf.truncate(n);
                sent += n as u64;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return; // the client went away
                }
                continue;
            }
            // at the end of what is written so far
            let finished = done.borrow().clone();
            match finished {
                None => std::thread::sleep(std::time::Duration::from_millis(2)),
                Some(Err((_, message))) => return fail(format!("the retrieval failed: {message}")),
                Some(Ok(())) => {
                    // the last bytes may have landed after the read above
                    match file.read(&mut buf) {
                        Ok(0) if sent == len => return,
                        Ok(0) => return fail(format!("the retrieved object is {sent} bytes, not {len}")),
                        Ok(n) => {
                            buf.truncate(n);
                            sent += n as u64;
                            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                                return;
                            }
                        }
                        Err(e) => return fail(format!("reading the retrieved object: {e}")),
                    }
                }
            }
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The 16 bytes a `Content-MD5` header carries (`InvalidDigest` if it does not).
fn content_md5(header: Option<&str>) -> S3Result<Option<[u8; 16]>> {
    let Some(text) = header else { return Ok(None) };
    data_encoding::BASE64
        .decode(text.trim().as_bytes())
        .ok()
        .and_then(|d| <[u8; 16]>::try_from(d).ok())
        .map(Some)
        .ok_or_else(|| s3_error!(InvalidDigest, "Content-MD5 is not the base64 of 16 bytes"))
}

/// `BadDigest` unless the body's MD5 is the `Content-MD5` sent.
fn check_md5(expected: Option<[u8; 16]>, got: &[u8; 16]) -> S3Result<()> {
    match expected {
        Some(e) if &e != got => Err(s3_error!(BadDigest, "the body's MD5 is not its Content-MD5")),
        _ => Ok(()),
    }
}

/// The MD5 of a whole file, read in 1 MiB chunks.
fn md5_of_file(mut file: std::fs::File) -> std::io::Result<[u8; 16]> {
    use std::io::Read;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(md5.finalize()),
            Ok(n) => md5.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The quoted ETag stored for an object, as s3s wants it (unquoted).
fn etag_of(meta: &ObjectMeta) -> ETag {
    ETag::Strong(meta.etag.trim_matches('"').to_string())
}

/// How a listing writes keys: as they are, or percent-encoded when the
/// request asked for `encoding-type=url`.
fn encoder(encoding: Option<&EncodingType>) -> impl Fn(String) -> String + Copy {
    let url = encoding.is_some_and(|e| e.as_str() == EncodingType::URL);
    move |s| if url { url_encode(&s) } else { s }
}

/// A page of records as S3 lists it: objects, common prefixes, and where
/// the next page starts.
fn listed(
    listing: crate::meta::Listing,
    enc: &impl Fn(String) -> String,
) -> (Vec<Object>, Vec<CommonPrefix>, Option<(String, bool)>) {
    let contents = listing
        .objects
        .into_iter()
        .map(|(key, m)| Object {
            e_tag: Some(etag_of(&m)),
            key: Some(enc(key)),
            size: Some(m.size as i64),
            last_modified: Some(timestamp(m.modified_ms)),
            storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
            ..Default::default()
        })
        .collect();
    let common = listing
        .common_prefixes
        .into_iter()
        .map(|p| CommonPrefix { prefix: Some(enc(p)) })
        .collect();
    (contents, common, listing.next)
}

/// Percent-encodes a key for `encoding-type=url` listings (RFC 3986
/// unreserved characters and `/` kept).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// S3's conditional GET/HEAD: `If-Match` (412), `If-None-Match` (304).
fn preconditions(
    meta: &ObjectMeta,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<()> {
    let current = etag_of(meta);
    let matches = |c: &ETagCondition| match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == current.value(),
    };
    if let Some(c) = if_match {
        if !matches(c) {
            return Err(s3_error!(PreconditionFailed));
        }
    }
    if let Some(c) = if_none_match {
        if matches(c) {
            return Err(s3_error!(NotModified));
        }
    }
    Ok(())
}

fn metadata_of(m: Option<Metadata>) -> BTreeMap<String, String> {
    m.map(|m| m.into_iter().collect()).unwrap_or_default()
}

#[async_trait::async_trait]
impl s3s::S3 for S3Gateway {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket;
        if self.meta().bucket(&bucket).map_err(internal)?.is_some() {
            return Err(s3_error!(
                BucketAlreadyOwnedByYou,
                "you already own bucket '{bucket}'"
            ));
        }
        self.meta()
            .put_bucket(
                &bucket,
                &BucketMeta {
                    created: now_ms() / 1000,
                },
            )
            .map_err(internal)?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
            ..Default::default()
        }))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.need_bucket(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.need_bucket(&req.input.bucket)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self
            .meta()
            .buckets()
            .map_err(internal)?
            .into_iter()
            .map(|(name, b)| Bucket {
                name: Some(name),
                creation_date: Some(timestamp(b.created * 1000)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some("crowd".into()),
                id: Some(self.inner.client.peer_id().map_err(from_client)?.to_string()),
            }),
            ..Default::default()
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = req.input.bucket;
        self.need_bucket(&bucket)?;
        if !self.meta().bucket_is_empty(&bucket).map_err(internal)? {
            return Err(s3_error!(BucketNotEmpty, "bucket '{bucket}' is not empty"));
        }
        for (id, _) in self.meta().uploads(&bucket).map_err(internal)? {
            let _ = std::fs::remove_dir_all(self.inner.uploads.join(&id));
            self.meta().delete_upload(&id).map_err(internal)?;
        }
        self.meta().delete_bucket(&bucket).map_err(internal)?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        self.need_bucket(&input.bucket)?;
        Self::check_key(&input.key)?;
        if let Some(ETagCondition::Any) = input.if_none_match {
            if self
                .meta()
                .object(&input.bucket, &input.key)
                .map_err(internal)?
                .is_some()
            {
                return Err(s3_error!(PreconditionFailed, "the object exists"));
            }
        }
        let expected = content_md5(input.content_md5.as_deref())?;
        let started = std::time::Instant::now();
        let (path, size, _) = self
            .spool(input.body, input.content_length, &self.inner.spool, false)
            .await?;
        let received = started.elapsed();
        // the MD5 (~1.5 s of one core per GiB) is computed while the file
        // is put, not before: the put leaves the CPU idle at times (waiting
        // for providers), where the hash fits
        let for_hash = std::fs::File::open(&path).map_err(internal)?;
        let hashing = tokio::task::spawn_blocking(move || md5_of_file(for_hash));
        let stored = self.store(&input.bucket, &input.key, path, size).await;
        let md5 = hashing.await.map_err(internal)?.map_err(internal)?;
        let stored = stored?;
        if let Err(e) = check_md5(expected, &md5) {
            // never acknowledged: its deals end at once
            if let Some(s) = stored {
                self.forget_stored(s).await;
            }
            return Err(e);
        }
        let etag = hex::encode(md5);
        self.record(
            &input.bucket,
            &input.key,
            ObjectMeta {
                stored,
                size,
                etag: format!("\"{etag}\""),
                content_type: input.content_type,
                metadata: metadata_of(input.metadata),
                modified_ms: now_ms(),
            },
        )
        .await?;
        tracing::debug!(
            bucket = %input.bucket,
            key = %input.key,
            size,
            received_ms = received.as_millis() as u64,
            stored_ms = (started.elapsed() - received).as_millis() as u64,
            "PutObject"
        );
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(etag)),
            size: Some(size as i64),
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        self.need_bucket(&input.bucket)?;
        let meta = self
            .meta()
            .object(&input.bucket, &input.key)
            .map_err(internal)?
            .ok_or_else(|| s3_error!(NoSuchKey, "no key '{}'", crate::request::printable(&input.key)))?;
        preconditions(&meta, input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let (range, content_range) = match input.range {
            Some(r) => {
                let r = r.check(meta.size)?;
                let text = format!("bytes {}-{}/{}", r.start, r.end - 1, meta.size);
                (r, Some(text))
            }
            None => (0..meta.size, None),
        };
        let body = self.body_of(&meta, &range).await?;
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: Some((range.end - range.start) as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            content_type: Some(
                meta.content_type
                    .clone()
                    .unwrap_or_else(|| "binary/octet-stream".into()),
            ),
            e_tag: Some(etag_of(&meta)),
            last_modified: Some(timestamp(meta.modified_ms)),
            metadata: Some(meta.metadata.clone().into_iter().collect()),
            ..Default::default()
        }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        self.need_bucket(&input.bucket)?;
        let meta = self
            .meta()
            .object(&input.bucket, &input.key)
            .map_err(internal)?
            .ok_or_else(|| s3_error!(NoSuchKey))?;
        preconditions(&meta, input.if_match.as_ref(), input.if_none_match.as_ref())?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(meta.size as i64),
            accept_ranges: Some("bytes".into()),
            content_type: Some(
                meta.content_type
                    .clone()
                    .unwrap_or_else(|| "binary/octet-stream".into()),
            ),
            e_tag: Some(etag_of(&meta)),
            last_modified: Some(timestamp(meta.modified_ms)),
            metadata: Some(meta.metadata.clone().into_iter().collect()),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        self.need_bucket(&input.bucket)?;
        self.delete_key(&input.bucket, &input.key).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        self.need_bucket(&input.bucket)?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for object in input.delete.objects {
            match self.delete_key(&input.bucket, &object.key).await {
                Ok(()) => {
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(object.key),
                            ..Default::default()
                        })
                    }
                }
                Err(e) => errors.push(Error {
                    key: Some(object.key),
                    code: Some(e.code().as_str().to_string()),
                    message: e.message().map(str::to_string),
                    ..Default::default()
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        self.need_bucket(&input.bucket)?;
        let max = input.max_keys.unwrap_or(1000);
        if max < 0 {
            return Err(s3_error!(InvalidArgument, "max-keys must not be negative"));
        }
        let after = match &input.continuation_token {
            Some(t) => Some(decode_token(t)?),
            None => input.start_after.clone().map(|a| (a, false)),
        };
        let prefix = input.prefix.clone().unwrap_or_default();
        let listing = self
            .meta()
            .list(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                after.as_ref().map(|(a, p)| (a.as_str(), *p)),
                max.min(1000) as usize,
            )
            .map_err(internal)?;
        let enc = encoder(input.encoding_type.as_ref());
        let key_count = (listing.objects.len() + listing.common_prefixes.len()) as i32;
        let (contents, common, next) = listed(listing, &enc);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc(prefix)),
            delimiter: input.delimiter.map(enc),
            max_keys: Some(max),
            key_count: Some(key_count),
            is_truncated: Some(next.is_some()),
            continuation_token: input.continuation_token,
            next_continuation_token: next.as_ref().map(|(a, p)| encode_token(a, *p)),
            start_after: input.start_after.map(enc),
            encoding_type: input.encoding_type,
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!common.is_empty()).then_some(common),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        self.need_bucket(&input.bucket)?;
        let max = input.max_keys.unwrap_or(1000).clamp(0, 1000);
        let prefix = input.prefix.clone().unwrap_or_default();
        let listing = self
            .meta()
            .list(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                input.marker.as_deref().map(|m| (m, false)),
                max as usize,
            )
            .map_err(internal)?;
        let enc = encoder(input.encoding_type.as_ref());
        let (contents, common, next) = listed(listing, &enc);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(prefix)),
            delimiter: input.delimiter.map(enc),
            marker: input.marker.map(enc),
            max_keys: Some(max),
            is_truncated: Some(next.is_some()),
            next_marker: next.map(|(a, _)| enc(a)),
            encoding_type: input.encoding_type,
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!common.is_empty()).then_some(common),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        self.need_bucket(&input.bucket)?;
        Self::check_key(&input.key)?;
        let id = hex::encode(rand::random::<[u8; 16]>());
        std::fs::create_dir_all(self.inner.uploads.join(&id)).map_err(internal)?;
        self.meta()
            .put_upload(
                &id,
                &UploadMeta {
                    bucket: input.bucket.clone(),
                    key: input.key.clone(),
                    content_type: input.content_type,
                    metadata: metadata_of(input.metadata),
                    created_ms: now_ms(),
                },
            )
            .map_err(internal)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        let upload = self.upload(&input.upload_id, &input.bucket, &input.key)?;
        if !(1..=MAX_PART_NUMBER).contains(&input.part_number) {
            return Err(s3_error!(
                InvalidArgument,
                "part numbers are 1 to {MAX_PART_NUMBER}"
            ));
        }
        let dir = self.inner.uploads.join(&input.upload_id);
        let expected = content_md5(input.content_md5.as_deref())?;
        let (path, size, md5) = self.spool(input.body, input.content_length, &dir, true).await?;
        let md5 = md5.ok_or_else(|| internal("the part was not hashed"))?;
        check_md5(expected, &md5)?;
        // the upload may have been completed or aborted meanwhile
        self.upload(&input.upload_id, &upload.bucket, &upload.key)?;
        path.persist(dir.join(input.part_number.to_string()))
            .map_err(internal)?;
        let etag = hex::encode(md5);
        self.meta()
            .put_part(
                &input.upload_id,
                input.part_number as u32,
                &PartMeta {
                    size,
                    md5: etag.clone(),
                    modified_ms: now_ms(),
                },
            )
            .map_err(internal)?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        self.upload(&input.upload_id, &input.bucket, &input.key)?;
        let max = input.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
        let marker = input.part_number_marker.unwrap_or(0);
        let all: Vec<_> = self
            .meta()
            .parts(&input.upload_id)
            .map_err(internal)?
            .into_iter()
            .filter(|(n, _)| *n as i32 > marker)
            .collect();
        let truncated = all.len() > max;
        let page: Vec<Part> = all
            .into_iter()
            .take(max)
            .map(|(n, p)| Part {
                part_number: Some(n as i32),
                e_tag: Some(ETag::Strong(p.md5)),
                size: Some(p.size as i64),
                last_modified: Some(timestamp(p.modified_ms)),
                ..Default::default()
            })
            .collect();
        let next = page.last().and_then(|p| p.part_number);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max as i32),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: if truncated { next } else { None },
            is_truncated: Some(truncated),
            parts: Some(page),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let upload = self.upload(&input.upload_id, &input.bucket, &input.key)?;
        let asked = input
            .multipart_upload
            .and_then(|m| m.parts)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| s3_error!(MalformedXML, "the request lists no parts"))?;
        let stored: BTreeMap<u32, PartMeta> = self
            .meta()
            .parts(&input.upload_id)
            .map_err(internal)?
            .into_iter()
            .collect();
        let mut chosen = Vec::with_capacity(asked.len());
        let mut last = 0i32;
        for (i, part) in asked.iter().enumerate() {
            let n = part.part_number.unwrap_or(0);
            if n <= last {
                return Err(s3_error!(
                    InvalidPartOrder,
                    "parts must be listed in ascending order"
                ));
            }
            last = n;
            let have = stored
                .get(&(n as u32))
                .ok_or_else(|| s3_error!(InvalidPart, "part {n} was not uploaded"))?;
            if let Some(e) = &part.e_tag {
                if e.value() != have.md5 {
                    return Err(s3_error!(
                        InvalidPart,
                        "part {n}'s ETag is not the uploaded part's"
                    ));
                }
            }
            if i + 1 < asked.len() && have.size < MIN_PART {
                return Err(s3_error!(
                    EntityTooSmall,
                    "part {n} is {} bytes; all but the last must be at least 5 MiB",
                    have.size
                ));
            }
            chosen.push((n, have.clone()));
        }
        let this = self.clone();
        let (bucket, key, id) = (input.bucket.clone(), input.key.clone(), input.upload_id.clone());
        // the put takes a while: s3s keeps the connection alive meanwhile
        let future = Box::pin(async move {
            let dir = this.inner.uploads.join(&id);
            let spool = this.inner.spool.clone();
            let parts = chosen.clone();
            let (path, size, md5s) = blocking(move || {
                use std::io::Write;
                let mut out = tempfile::NamedTempFile::new_in(&spool).map_err(internal)?;
                let mut md5s = Vec::with_capacity(parts.len() * 16);
                let mut size = 0u64;
                for (n, p) in &parts {
                    let mut f = std::fs::File::open(dir.join(n.to_string())).map_err(internal)?;
                    size += std::io::copy(&mut f, out.as_file_mut()).map_err(internal)?;
                    md5s.extend_from_slice(&hex::decode(&p.md5).map_err(internal)?);
                }
                out.flush().map_err(internal)?;
                Ok((out.into_temp_path(), size, md5s))
            })
            .await?;
            let mut md5 = Md5::new();
            md5.update(&md5s);
            let etag = format!("{}-{}", hex::encode(md5.finalize()), chosen.len());
            this.commit(
                &bucket,
                &key,
                path,
                size,
                format!("\"{etag}\""),
                upload.content_type,
                upload.metadata,
            )
            .await?;
            this.meta().delete_upload(&id).map_err(internal)?;
            let _ = std::fs::remove_dir_all(this.inner.uploads.join(&id));
            Ok(CompleteMultipartUploadOutput {
                bucket: Some(bucket.clone()),
                key: Some(key.clone()),
                e_tag: Some(ETag::Strong(etag)),
                location: Some(format!("/{bucket}/{key}")),
                ..Default::default()
            })
        });
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            future: Some(future),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.upload(&input.upload_id, &input.bucket, &input.key)?;
        self.meta().delete_upload(&input.upload_id).map_err(internal)?;
        let _ = std::fs::remove_dir_all(self.inner.uploads.join(&input.upload_id));
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        self.need_bucket(&input.bucket)?;
        let uploads = self
            .meta()
            .uploads(&input.bucket)
            .map_err(internal)?
            .into_iter()
            .filter(|(_, u)| {
                input
                    .prefix
                    .as_ref()
                    .is_none_or(|p| u.key.starts_with(p.as_str()))
            })
            .take(1000)
            .map(|(id, u)| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(id),
                initiated: Some(timestamp(u.created_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            uploads: Some(uploads),
            is_truncated: Some(false),
            ..Default::default()
        }))
    }
}

impl S3Gateway {
    /// The upload `id`, which must be of `bucket/key`.
    fn upload(&self, id: &str, bucket: &str, key: &str) -> S3Result<UploadMeta> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(s3_error!(
                NoSuchUpload,
                "no upload '{}'",
                crate::request::printable(id)
            ));
        }
        match self.meta().upload(id).map_err(internal)? {
            Some(u) if u.bucket == bucket && u.key == key => Ok(u),
            _ => Err(s3_error!(NoSuchUpload, "no upload '{id}' of this key")),
        }
    }

    /// Deletes `bucket/key` (no error when there is none, as S3): the deals
    /// of its file are ended as `crowd rm` ends them, then the record goes.
    async fn delete_key(&self, bucket: &str, key: &str) -> S3Result<()> {
        let Some(meta) = self.meta().object(bucket, key).map_err(internal)? else {
            return Ok(());
        };
        if let Some(stored) = meta.stored.clone() {
            let client = self.inner.client.clone();
            let manifest = stored.manifest.clone();
            let result = blocking(move || match client.remove(&manifest) {
                Ok(_) | Err(crowd_client::Error::NotFound(_)) => Ok(()),
                Err(e) => Err(from_client(e)),
            })
            .await;
            result?;
        }
        // only if it is still the object removed (not replaced meanwhile)
        if self.meta().object(bucket, key).map_err(internal)?.as_ref() == Some(&meta) {
            self.meta().delete_object(bucket, key).map_err(internal)?;
        }
        Ok(())
    }
}

/// Continuation tokens: `k` or `p` (a key or a common prefix) and the last
/// entry of the page, hex-encoded (opaque to clients; any bytes allowed
/// in keys).
fn encode_token(last: &str, prefix: bool) -> String {
    format!("{}{}", if prefix { 'p' } else { 'k' }, hex::encode(last))
}

fn decode_token(token: &str) -> S3Result<(String, bool)> {
    let bad = || {
        s3_error!(
            InvalidArgument,
            "the continuation token is not one this gateway gave"
        )
    };
    let (prefix, rest) = match token.split_at_checked(1) {
        Some(("p", rest)) => (true, rest),
        Some(("k", rest)) => (false, rest),
        _ => return Err(bad()),
    };
    if rest.len() > 2 * MAX_KEY_LEN {
        return Err(bad());
    }
    let name = String::from_utf8(hex::decode(rest).map_err(|_| bad())?).map_err(|_| bad())?;
    Ok((name, prefix))
}

/// The access key's secret, and `InvalidAccessKeyId` for any other key.
#[derive(Debug)]
pub struct Auth {
    pub access_key: String,
    pub secret_key: String,
}

#[async_trait::async_trait]
impl s3s::auth::S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<s3s::auth::SecretKey> {
        if access_key == self.access_key {
            Ok(self.secret_key.clone().into())
        } else {
            Err(s3_error!(
                InvalidAccessKeyId,
                "the access key is not this gateway's"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Done = Option<Result<(), (S3ErrorCode, String)>>;

    /// Writes `chunks` into a new file from another thread, a pause between
    /// each, then reports `outcome`; returns what the growing-file stream
    /// yielded: the bytes, and the error it ended with, if any.
    async fn stream_while_writing(
        chunks: Vec<Vec<u8>>,
        len: u64,
        outcome: Done,
    ) -> (Vec<u8>, Option<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("object");
        let mut writer = std::fs::File::create(&path).unwrap();
        let reader = std::fs::File::open(&path).unwrap();
        let (tx, rx) = tokio::sync::watch::channel::<Done>(None);
        let producer = std::thread::spawn(move || {
            use std::io::Write;
            for c in chunks {
                writer.write_all(&c).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = tx.send(outcome);
        });
        let mut stream = Box::pin(growing_file_stream(reader, len, rx));
        let (mut got, mut error) = (Vec::new(), None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(b) => got.extend_from_slice(&b),
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        producer.join().unwrap();
        (got, error)
    }

    #[tokio::test]
    async fn a_growing_file_is_streamed_whole_as_it_is_written() {
        let chunks: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 300_000]).collect();
        let all: Vec<u8> = chunks.concat();
        let (got, error) = stream_while_writing(chunks, all.len() as u64, Some(Ok(()))).await;
        assert_eq!(error, None);
        assert!(got == all, "the streamed bytes differ from the written ones");
    }

    #[tokio::test]
    async fn a_failed_or_short_retrieval_ends_the_stream_with_an_error() {
        let chunks = vec![vec![1u8; 1000], vec![2u8; 1000]];
        let failed = Some(Err((
            S3ErrorCode::InternalError,
            "a tag did not verify".to_string(),
        )));
        let (got, error) = stream_while_writing(chunks.clone(), 5000, failed).await;
        assert!(error.unwrap().contains("a tag did not verify"));
        assert!(got.len() <= 2000);
        // reported done, but fewer bytes than the object's
        let (got, error) = stream_while_writing(chunks, 5000, Some(Ok(()))).await;
        assert_eq!(got.len(), 2000);
        assert!(error.unwrap().contains("2000 bytes, not 5000"));
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        for k in ["", "a", "dir/ü/€", "x y"] {
            for p in [false, true] {
                assert_eq!(decode_token(&encode_token(k, p)).unwrap(), (k.to_string(), p));
            }
        }
        for t in ["", "z", "kzz", "kf", "xff", "kabc", "é"] {
            assert!(decode_token(t).is_err(), "{t}");
        }
    }

    #[test]
    fn url_encoding_keeps_slashes_and_unreserved() {
        assert_eq!(url_encode("a b/c+d~é"), "a%20b/c%2Bd~%C3%A9");
    }
}
