//! The S3 side's records, in RocksDB at `<home>/gateway/meta`: buckets,
//! objects (which network file holds each, with its ETag, type and user
//! metadata) and multipart uploads with their parts. Every write is synced:
//! an object acknowledged to a client is on disk.
//!
//! Keys: `b\0BUCKET`, `o\0BUCKET\0KEY`, `u\0UPLOAD`, `p\0UPLOAD\0PART` (part
//! numbers as 5 digits, so they sort). Objects sort by their keys' UTF-8
//! bytes, as S3 lists them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::GatewayError;

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketMeta {
    /// Unix seconds.
    pub created: u64,
}

/// An object: where its bytes are and what S3 says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// The file's root (as `crowd put` prints it) and the manifest of the
    /// put that stored it; `None` for an empty object (nothing to store).
    pub stored: Option<Stored>,
    pub size: u64,
    /// Quoted, as S3 sends it: `"md5"` or `"md5-of-md5s-N"`.
    pub etag: String,
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Unix milliseconds.
    pub modified_ms: u64,
}

/// A network file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub root: String,
    pub manifest: String,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadMeta {
    pub bucket: String,
    pub key: String,
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Unix milliseconds.
    pub created_ms: u64,
}

/// One uploaded part (its bytes are a file in the upload's directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartMeta {
    pub size: u64,
    /// Hex MD5 of the part.
    pub md5: String,
    pub modified_ms: u64,
}

/// One page of a listing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Listing {
    pub objects: Vec<(String, ObjectMeta)>,
    pub common_prefixes: Vec<String>,
    /// Where the next page starts (exclusive), when there is one: the last
    /// key or common prefix returned, and whether it was a common prefix
    /// (then every key under it was returned already).
    pub next: Option<(String, bool)>,
}

/// The store.
#[derive(Debug)]
pub struct Meta {
    db: rocksdb::DB,
}

fn io(what: &str, e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Io(format!("{what}: {e}"))
}

fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

impl Meta {
    pub fn open(path: &Path) -> Result<Self, GatewayError> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        let db =
            rocksdb::DB::open(&opts, path).map_err(|e| io(&format!("cannot open {}", path.display()), e))?;
        Ok(Self { db })
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, k: &[u8]) -> Result<Option<T>, GatewayError> {
        match self
            .db
            .get(k)
            .map_err(|e| io("reading the gateway's records", e))?
        {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| io("a gateway record does not decode", e)),
        }
    }

    fn write(&self, batch: rocksdb::WriteBatch) -> Result<(), GatewayError> {
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| io("writing the gateway's records", e))
    }

    fn put<T: Serialize>(&self, k: &[u8], v: &T) -> Result<(), GatewayError> {
        let mut b = rocksdb::WriteBatch::default();
        b.put(k, serde_json::to_vec(v).map_err(|e| io("encoding a record", e))?);
        self.write(b)
    }

    fn delete(&self, k: &[u8]) -> Result<(), GatewayError> {
        let mut b = rocksdb::WriteBatch::default();
        b.delete(k);
        self.write(b)
    }

    /// Entries whose key starts with `prefix`, from `prefix + from` on.
    fn scan<'a>(
        &'a self,
        prefix: Vec<u8>,
        from: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), GatewayError>> + 'a {
        let mut start = prefix.clone();
        start.extend_from_slice(from);
        self.db
            .iterator(rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward))
            .map(|r| {
                r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(|e| io("reading the gateway's records", e))
            })
            .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
    }

    pub fn bucket(&self, name: &str) -> Result<Option<BucketMeta>, GatewayError> {
        self.get(&key(&["b", name]))
    }

    pub fn put_bucket(&self, name: &str, meta: &BucketMeta) -> Result<(), GatewayError> {
        self.put(&key(&["b", name]), meta)
    }

    pub fn delete_bucket(&self, name: &str) -> Result<(), GatewayError> {
        self.delete(&key(&["b", name]))
    }

    pub fn buckets(&self) -> Result<Vec<(String, BucketMeta)>, GatewayError> {
        self.scan(b"b\0".to_vec(), b"")
            .map(|r| {
                let (k, v) = r?;
                let name = String::from_utf8_lossy(&k[2..]).into_owned();
                Ok((
                    name,
                    serde_json::from_slice(&v).map_err(|e| io("a bucket record", e))?,
                ))
            })
            .collect()
    }

    /// Whether `bucket` holds any object.
    pub fn bucket_is_empty(&self, bucket: &str) -> Result<bool, GatewayError> {
        let mut prefix = key(&["o", bucket]);
        prefix.push(0);
        Ok(self.scan(prefix, b"").next().transpose()?.is_none())
    }

    pub fn object(&self, bucket: &str, object: &str) -> Result<Option<ObjectMeta>, GatewayError> {
        self.get(&key(&["o", bucket, object]))
    }

    pub fn put_object(&self, bucket: &str, object: &str, meta: &ObjectMeta) -> Result<(), GatewayError> {
        self.put(&key(&["o", bucket, object]), meta)
    }

    pub fn delete_object(&self, bucket: &str, object: &str) -> Result<(), GatewayError> {
        self.delete(&key(&["o", bucket, object]))
    }

    /// Up to `max` keys and common prefixes of `bucket` under `prefix`,
    /// strictly after `after` (a key, or a common prefix whose keys are all
    /// skipped); with a delimiter, keys sharing the part up to the first
    /// delimiter after the prefix are rolled up into one common prefix.
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<(&str, bool)>,
        max: usize,
    ) -> Result<Listing, GatewayError> {
        let (after, after_prefix) = match after {
            Some((a, p)) => (Some(a), p),
            None => (None, false),
        };
        let mut base = key(&["o", bucket]);
        base.push(0);
        let from = match after {
            Some(a) if a > prefix => a,
            _ => prefix,
        };
        let mut out = Listing::default();
        if max == 0 {
            return Ok(out);
        }
        let delimiter = delimiter.filter(|d| !d.is_empty());
        for r in self.scan(base.clone(), from.as_bytes()) {
            let (k, v) = r?;
            let name = String::from_utf8_lossy(&k[base.len()..]).into_owned();
            if !name.starts_with(prefix) {
                if name.as_str() > prefix {
                    break;
                }
                continue;
            }
            if let Some(a) = after {
                // strictly after the last key or common prefix returned
                if name.as_str() <= a || (after_prefix && name.starts_with(a)) {
                    continue;
                }
            }
            let rolled = delimiter.and_then(|d| {
                name[prefix.len()..]
                    .find(d)
                    .map(|at| name[..prefix.len() + at + d.len()].to_string())
            });
            let entry = match rolled {
                Some(common) => {
                    if out.common_prefixes.last() == Some(&common) {
                        continue;
                    }
                    Entry::Prefix(common)
                }
                None => Entry::Key(
                    name,
                    serde_json::from_slice(&v).map_err(|e| io("an object record", e))?,
                ),
            };
            if out.objects.len() + out.common_prefixes.len() == max {
                out.next = Some(last_of(&out));
                break;
            }
            match entry {
                Entry::Prefix(p) => out.common_prefixes.push(p),
                Entry::Key(n, m) => out.objects.push((n, m)),
            }
        }
        Ok(out)
    }

    pub fn upload(&self, id: &str) -> Result<Option<UploadMeta>, GatewayError> {
        self.get(&key(&["u", id]))
    }

    pub fn put_upload(&self, id: &str, meta: &UploadMeta) -> Result<(), GatewayError> {
        self.put(&key(&["u", id]), meta)
    }

    pub fn put_part(&self, id: &str, number: u32, meta: &PartMeta) -> Result<(), GatewayError> {
        self.put(&key(&["p", id, &format!("{number:05}")]), meta)
    }

    /// The parts of upload `id`, by number.
    pub fn parts(&self, id: &str) -> Result<Vec<(u32, PartMeta)>, GatewayError> {
        let mut prefix = key(&["p", id]);
        prefix.push(0);
        let skip = prefix.len();
        self.scan(prefix, b"")
            .map(|r| {
                let (k, v) = r?;
                let number = std::str::from_utf8(&k[skip..])
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| io("a part record", "bad part number"))?;
                Ok((
                    number,
                    serde_json::from_slice(&v).map_err(|e| io("a part record", e))?,
                ))
            })
            .collect()
    }

    /// Forgets upload `id` and its parts.
    pub fn delete_upload(&self, id: &str) -> Result<(), GatewayError> {
        let mut b = rocksdb::WriteBatch::default();
        for (n, _) in self.parts(id)? {
            b.delete(key(&["p", id, &format!("{n:05}")]));
        }
        b.delete(key(&["u", id]));
        self.write(b)
    }

    /// Uploads in progress in `bucket`.
    pub fn uploads(&self, bucket: &str) -> Result<Vec<(String, UploadMeta)>, GatewayError> {
        let mut out = Vec::new();
        for r in self.scan(b"u\0".to_vec(), b"") {
            let (k, v) = r?;
            let meta: UploadMeta = serde_json::from_slice(&v).map_err(|e| io("an upload record", e))?;
            if meta.bucket == bucket {
                out.push((String::from_utf8_lossy(&k[2..]).into_owned(), meta));
            }
        }
        Ok(out)
    }
}

enum Entry {
    Prefix(String),
    Key(String, ObjectMeta),
}

/// The last entry of a page: the greater of its last key and last prefix.
fn last_of(l: &Listing) -> (String, bool) {
    let key = l.objects.last().map(|(k, _)| k.as_str());
    let prefix = l.common_prefixes.last().map(String::as_str);
    match (key, prefix) {
        (Some(k), Some(p)) if p > k => (p.to_string(), true),
        (Some(k), _) => (k.to_string(), false),
        (None, Some(p)) => (p.to_string(), true),
        (None, None) => (String::new(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn obj(size: u64) -> ObjectMeta {
        ObjectMeta {
            stored: None,
            size,
            etag: "\"x\"".into(),
            content_type: None,
            metadata: BTreeMap::new(),
            modified_ms: 0,
        }
    }

    /// Every listing, page by page, of `keys` under `prefix`/`delimiter`.
    fn all_pages(m: &Meta, prefix: &str, delimiter: Option<&str>, max: usize) -> (Vec<String>, Vec<String>) {
        let (mut keys, mut prefixes) = (Vec::new(), Vec::new());
        let mut after: Option<(String, bool)> = None;
        for _ in 0..1000 {
            let page = m
                .list(
                    "b",
                    prefix,
                    delimiter,
                    after.as_ref().map(|(a, p)| (a.as_str(), *p)),
                    max,
                )
                .unwrap();
            assert!(page.objects.len() + page.common_prefixes.len() <= max);
            keys.extend(page.objects.into_iter().map(|(k, _)| k));
            prefixes.extend(page.common_prefixes);
            match page.next {
                Some(n) => after = Some(n),
                None => return (keys, prefixes),
            }
        }
        panic!("listing never ended");
    }

    /// The listing S3 defines, computed naively.
    fn expected(keys: &[String], prefix: &str, delimiter: Option<&str>) -> (Vec<String>, Vec<String>) {
        let mut sorted: Vec<_> = keys.to_vec();
        sorted.sort();
        sorted.dedup();
        let (mut k, mut p) = (Vec::new(), Vec::<String>::new());
        for key in sorted.iter().filter(|k| k.starts_with(prefix)) {
            match delimiter.and_then(|d| {
                key[prefix.len()..]
                    .find(d)
                    .map(|at| key[..prefix.len() + at + d.len()].to_string())
            }) {
                Some(c) => {
                    if !p.contains(&c) {
                        p.push(c)
                    }
                }
                None => k.push(key.clone()),
            }
        }
        (k, p)
    }

    #[test]
    fn listing_pages_prefixes_and_delimiters() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(dir.path()).unwrap();
        let keys: Vec<String> = ["a/1", "a/2", "a/b/3", "b", "c/x", "c/y", "d"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for k in &keys {
            m.put_object("b", k, &obj(1)).unwrap();
        }
        m.put_object("other", "a/9", &obj(1)).unwrap();
        for max in [1, 2, 3, 1000] {
            for (prefix, delim) in [
                ("", None),
                ("", Some("/")),
                ("a/", Some("/")),
                ("a", None),
                ("c/", None),
                ("zz", Some("/")),
            ] {
                assert_eq!(
                    all_pages(&m, prefix, delim, max),
                    expected(&keys, prefix, delim),
                    "{prefix:?} {delim:?} {max}"
                );
            }
        }
        assert!(!m.bucket_is_empty("b").unwrap());
        assert!(m.bucket_is_empty("a").unwrap());
    }

    #[test]
    fn uploads_and_parts() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(dir.path()).unwrap();
        let up = UploadMeta {
            bucket: "b".into(),
            key: "k".into(),
            content_type: None,
            metadata: BTreeMap::new(),
            created_ms: 1,
        };
        m.put_upload("u1", &up).unwrap();
        for n in [3u32, 1, 10_000] {
            m.put_part(
                "u1",
                n,
                &PartMeta {
                    size: n.into(),
                    md5: String::new(),
                    modified_ms: 0,
                },
            )
            .unwrap();
        }
        let numbers: Vec<u32> = m.parts("u1").unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(numbers, vec![1, 3, 10_000]);
        assert_eq!(m.uploads("b").unwrap().len(), 1);
        m.delete_upload("u1").unwrap();
        assert!(m.parts("u1").unwrap().is_empty() && m.upload("u1").unwrap().is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn listings_match_the_definition(keys in proptest::collection::vec("[ab/]{1,5}", 0..30), prefix in "[ab/]{0,2}", slash in any::<bool>(), max in 1usize..5) {
            let dir = tempfile::tempdir().unwrap();
            let m = Meta::open(dir.path()).unwrap();
            for k in &keys {
                m.put_object("b", k, &obj(1)).unwrap();
            }
            let delim = slash.then_some("/");
            prop_assert_eq!(all_pages(&m, &prefix, delim, max), expected(&keys, &prefix, delim));
        }
    }
}
