//! The tracker's store: a small ordered key-value trait with atomic, durable
//! batches, a RocksDB implementation (the daemon's) and an in-memory one
//! (tests), exercised by one shared test suite.
//!
//! ## Layout
//!
//! | key | value |
//! | --- | --- |
//! | `genesis` | CBOR [`LedgerConfig`](crate::LedgerConfig), written once by `init` |
//! | `snapshot` | CBOR [`Ledger`](crate::Ledger) after the last settled epoch that is a multiple of `SNAPSHOT_EVERY` (32) |
//! | `log/` ‖ index u64 BE | CBOR [`LogEntry`](crate::LogEntry) |
//! | `addrs/` ‖ peer id | CBOR list of a provider's multiaddresses |
//! | `manifest/` ‖ root CID | CBOR (owner peer id, manifest bytes) |
//! | `mcount/` ‖ peer id | u64 LE: manifests registered by a client |
//! | `history/` ‖ deal u64 BE ‖ epoch u64 BE | `1` proven and paid, `0` faulted |
//! | `dstats/` ‖ deal u64 BE | CBOR (proven epochs, faulted epochs) of a deal in the ledger's state |
//! | `fmanifest/` ‖ manifest CID digest | a registered file's manifest bytes (repairs send it) |
//! | `adeal/` ‖ deal u64 BE | CBOR (last [`Deal`](crate::Deal), its proven and faulted epochs): an archived deal |
//! | `afile/` ‖ file u64 BE | CBOR last [`File`](crate::File): an archived file |
//! | `aroot/` ‖ len u8 ‖ root CID ‖ file u64 BE | empty: archived files by root |
//! | `aown/` ‖ len u8 ‖ peer id ‖ file u64 BE | empty: archived files by owner |
//! | `precord/` ‖ peer id | CBOR (deals, terminated, proven, faulted) of a provider's archived deals |
//!
//! Archived records are written by the batch whose ledger entry archived
//! them (an `Event::Archived`), which also deletes their `dstats/`; they are
//! read on demand, never loaded at start.
//!
//! Each accepted input is one [`Batch`]: its log entry and the side records
//! it changes; the batch settling every 32nd epoch also holds the new snapshot.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crowd_protocol::libp2p::PeerId;

use super::ServiceError;
use crate::DealId;

/// Key layout (see the module documentation).
pub mod keys {
    use super::*;

    pub const GENESIS: &[u8] = b"genesis";
    pub const SNAPSHOT: &[u8] = b"snapshot";
    pub const LOG: &[u8] = b"log/";
    pub const ADDRS: &[u8] = b"addrs/";
    pub const MANIFEST: &[u8] = b"manifest/";
    pub const MANIFEST_COUNT: &[u8] = b"mcount/";
    pub const OWNED: &[u8] = b"mowner/";
    pub const HISTORY: &[u8] = b"history/";
    pub const DEAL_STATS: &[u8] = b"dstats/";
    /// A registered file's manifest by its CID digest (repairs send it).
    pub const FILE_MANIFEST: &[u8] = b"fmanifest/";
    pub const ARCHIVED_DEAL: &[u8] = b"adeal/";
    pub const ARCHIVED_FILE: &[u8] = b"afile/";
    pub const ARCHIVED_ROOT: &[u8] = b"aroot/";
    pub const ARCHIVED_OWN: &[u8] = b"aown/";
    pub const PROVIDER_RECORD: &[u8] = b"precord/";
    /// On a replica: the Raft log id of the last command applied, written
    /// in the batch of whatever that command wrote (CBOR).
    pub const RAFT_APPLIED: &[u8] = b"raft/applied";
    /// On a replica: the last membership applied (CBOR), with its log id.
    pub const RAFT_MEMBERSHIP: &[u8] = b"raft/membership";

    fn join(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut k = prefix.to_vec();
        for p in parts {
            k.extend_from_slice(p);
        }
        k
    }

    pub fn log(index: u64) -> Vec<u8> {
        join(LOG, &[&index.to_be_bytes()])
    }
    pub fn addrs(peer: &PeerId) -> Vec<u8> {
        join(ADDRS, &[&peer.to_bytes()])
    }
    /// Every client's manifest for a root: `manifest/<root len><root>`.
    pub fn manifests_of(root: &[u8]) -> Vec<u8> {
        join(MANIFEST, &[&[root.len() as u8], root])
    }
    /// One client's manifest for a root: `manifest/<root len><root><peer>`.
    pub fn manifest(root: &[u8], owner: &PeerId) -> Vec<u8> {
        join(&manifests_of(root), &[&owner.to_bytes()])
    }
    /// Every root a client registered: `mowner/<peer len><peer><root>`.
    pub fn owned_prefix(peer: &PeerId) -> Vec<u8> {
        let peer = peer.to_bytes();
        join(OWNED, &[&[peer.len() as u8], &peer])
    }
    pub fn owned(peer: &PeerId, root: &[u8]) -> Vec<u8> {
        join(&owned_prefix(peer), &[root])
    }
    pub fn manifest_count(peer: &PeerId) -> Vec<u8> {
        join(MANIFEST_COUNT, &[&peer.to_bytes()])
    }
    pub fn history_of(deal: DealId) -> Vec<u8> {
        join(HISTORY, &[&deal.to_be_bytes()])
    }
    pub fn history(deal: DealId, epoch: u64) -> Vec<u8> {
        join(HISTORY, &[&deal.to_be_bytes(), &epoch.to_be_bytes()])
    }
    pub fn deal_stats(deal: DealId) -> Vec<u8> {
        join(DEAL_STATS, &[&deal.to_be_bytes()])
    }
    pub fn file_manifest(digest: &[u8; 32]) -> Vec<u8> {
        join(FILE_MANIFEST, &[digest])
    }
    pub fn archived_deal(deal: DealId) -> Vec<u8> {
        join(ARCHIVED_DEAL, &[&deal.to_be_bytes()])
    }
    pub fn archived_file(file: u64) -> Vec<u8> {
        join(ARCHIVED_FILE, &[&file.to_be_bytes()])
    }
    /// Archived files under a root: `aroot/<root len><root>`, then the id.
    pub fn archived_root_prefix(root: &[u8]) -> Vec<u8> {
        join(ARCHIVED_ROOT, &[&[root.len().min(255) as u8], root])
    }
    pub fn archived_root(root: &[u8], file: u64) -> Vec<u8> {
        join(&archived_root_prefix(root), &[&file.to_be_bytes()])
    }
    /// Archived files of an owner: `aown/<peer len><peer>`, then the id.
    pub fn archived_own_prefix(peer: &PeerId) -> Vec<u8> {
        let peer = peer.to_bytes();
        join(ARCHIVED_OWN, &[&[peer.len() as u8], &peer])
    }
    pub fn archived_own(peer: &PeerId, file: u64) -> Vec<u8> {
        join(&archived_own_prefix(peer), &[&file.to_be_bytes()])
    }
    pub fn provider_record(peer: &PeerId) -> Vec<u8> {
        join(PROVIDER_RECORD, &[&peer.to_bytes()])
    }
}

/// A group of writes applied atomically.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push((key.into(), Some(value.into())));
        self
    }
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push((key.into(), None));
        self
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn extend(&mut self, other: Batch) -> &mut Self {
        self.ops.extend(other.ops);
        self
    }
}

/// Key-value pairs in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Ordered key-value storage with atomic, durable batches.
pub trait Store: Send + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ServiceError>;
    /// Applies the whole batch or none of it, durably (synced) before returning.
    fn write(&self, batch: Batch) -> Result<(), ServiceError>;
    /// Up to `limit` entries whose key starts with `prefix`, from `from`
    /// (inclusive; keys below it are skipped) upwards.
    fn scan(&self, prefix: &[u8], from: &[u8], limit: usize) -> Result<Entries, ServiceError>;
    /// The last `limit` entries whose key starts with `prefix`, in key order.
    fn scan_last(&self, prefix: &[u8], limit: usize) -> Result<Entries, ServiceError>;
}

/// The smallest key above every key that starts with `prefix` (`None`: no bound).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// RocksDB on disk.
pub struct RocksStore {
    db: rocksdb::DB,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.db.path())
            .finish()
    }
}

fn rocks_err(e: rocksdb::Error) -> ServiceError {
    ServiceError::Store(e.into_string())
}

impl RocksStore {
    fn options() -> rocksdb::Options {
        let mut opts = rocksdb::Options::default();
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts
    }

    /// Opens (or creates) the store the service writes.
    pub fn open(path: &Path) -> Result<Self, ServiceError> {
        let mut opts = Self::options();
        opts.create_if_missing(true);
        opts.set_max_open_files(256);
        let db = rocksdb::DB::open(&opts, path)
            .map_err(|e| ServiceError::Store(format!("open {}: {}", path.display(), e.into_string())))?;
        Ok(Self { db })
    }

    /// Opens a store another process may be writing, as a RocksDB secondary
    /// (its own info logs in `scratch`), caught up with the primary once: the
    /// view is a consistent point in the primary's write sequence.
    pub fn open_secondary(path: &Path, scratch: &Path) -> Result<Self, ServiceError> {
        if !path.join("CURRENT").exists() {
            return Err(ServiceError::Store(format!(
                "no ledger store at {}",
                path.display()
            )));
        }
        let mut opts = Self::options();
        // a secondary keeps every file open so the primary's compactions
        // cannot pull one from under it
        opts.set_max_open_files(-1);
        let db = rocksdb::DB::open_as_secondary(&opts, path, scratch)
            .map_err(|e| ServiceError::Store(format!("open {}: {}", path.display(), e.into_string())))?;
        db.try_catch_up_with_primary().map_err(rocks_err)?;
        Ok(Self { db })
    }

    fn collect(
        &self,
        mode: rocksdb::IteratorMode<'_>,
        lower: &[u8],
        prefix: &[u8],
        limit: usize,
    ) -> Result<Entries, ServiceError> {
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_lower_bound(lower.to_vec());
        if let Some(end) = prefix_end(prefix) {
            ro.set_iterate_upper_bound(end);
        }
        let mut out = Vec::new();
        for item in self.db.iterator_opt(mode, ro).take(limit) {
            let (k, v) = item.map_err(rocks_err)?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

impl Store for RocksStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ServiceError> {
        self.db.get(key).map_err(rocks_err)
    }

    fn write(&self, batch: Batch) -> Result<(), ServiceError> {
        let mut wb = rocksdb::WriteBatch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => wb.put(k, v),
                None => wb.delete(k),
            }
        }
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(wb, &opts).map_err(rocks_err)
    }

    fn scan(&self, prefix: &[u8], from: &[u8], limit: usize) -> Result<Entries, ServiceError> {
        let lower = if from > prefix { from } else { prefix };
        self.collect(rocksdb::IteratorMode::Start, lower, prefix, limit)
    }

    fn scan_last(&self, prefix: &[u8], limit: usize) -> Result<Entries, ServiceError> {
        let mut out = self.collect(rocksdb::IteratorMode::End, prefix, prefix, limit)?;
        out.reverse();
        Ok(out)
    }
}

/// In memory, for tests. Clones share the map, so a "restarted" service can
/// reopen what an earlier one wrote; [`MemStore::fail_writes`] makes writes fail.
type Map = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Default, Clone)]
pub struct MemStore {
    map: Arc<Mutex<Map>>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl MemStore {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Map>, ServiceError> {
        self.map
            .lock()
            .map_err(|_| ServiceError::Store("poisoned".into()))
    }

    /// From now on every write fails (a full disk), or succeeds again.
    pub fn fail_writes(&self, fail: bool) {
        self.failing.store(fail, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Store for MemStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ServiceError> {
        Ok(self.lock()?.get(key).cloned())
    }

    fn write(&self, batch: Batch) -> Result<(), ServiceError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ServiceError::Store("write failed (injected)".into()));
        }
        let mut map = self.lock()?;
        for (k, v) in batch.ops {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Ok(())
    }

    fn scan(&self, prefix: &[u8], from: &[u8], limit: usize) -> Result<Entries, ServiceError> {
        let lower = if from > prefix { from } else { prefix };
        Ok(self
            .lock()?
            .range(lower.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn scan_last(&self, prefix: &[u8], limit: usize) -> Result<Entries, ServiceError> {
        let map = self.lock()?;
        let range = match prefix_end(prefix) {
            Some(end) => map.range(prefix.to_vec()..end),
            None => map.range(prefix.to_vec()..),
        };
        let mut out: Entries = range
            .rev()
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.reverse();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// One suite, run against both stores.
    fn suite(s: &dyn Store) {
        assert_eq!(s.get(b"x").unwrap(), None);
        let mut b = Batch::default();
        for i in 0..10u64 {
            b.put(keys::log(i), vec![i as u8]);
        }
        b.put(b"lof".to_vec(), b"before".to_vec())
            .put(b"loh".to_vec(), b"after".to_vec());
        b.put(keys::history(1, 5), vec![1])
            .put(keys::history(2, 0), vec![0]);
        s.write(b).unwrap();
        assert_eq!(s.get(&keys::log(3)).unwrap(), Some(vec![3]));
        let all = s.scan(keys::LOG, keys::LOG, usize::MAX).unwrap();
        assert_eq!(all.len(), 10);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        let tail = s.scan(keys::LOG, &keys::log(7), usize::MAX).unwrap();
        assert_eq!(tail.iter().map(|(_, v)| v[0]).collect::<Vec<_>>(), vec![7, 8, 9]);
        assert_eq!(s.scan(keys::LOG, keys::LOG, 2).unwrap().len(), 2);
        let last = s.scan_last(keys::LOG, 3).unwrap();
        assert_eq!(last.iter().map(|(_, v)| v[0]).collect::<Vec<_>>(), vec![7, 8, 9]);
        assert_eq!(s.scan_last(&keys::history_of(1), 10).unwrap().len(), 1);
        assert!(s.scan_last(&keys::history_of(3), 10).unwrap().is_empty());
        let mut b = Batch::default();
        b.delete(keys::log(0)).put(keys::log(3), vec![33]);
        s.write(b).unwrap();
        assert_eq!(s.get(&keys::log(0)).unwrap(), None);
        assert_eq!(s.get(&keys::log(3)).unwrap(), Some(vec![33]));
    }

    #[test]
    fn mem_store_suite() {
        suite(&MemStore::default());
    }

    #[test]
    fn rocks_store_suite_and_secondary_view() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let s = RocksStore::open(&path).unwrap();
        suite(&s);
        // a secondary sees what the running primary wrote
        let scratch = tempfile::tempdir().unwrap();
        let view = RocksStore::open_secondary(&path, scratch.path()).unwrap();
        assert_eq!(view.get(&keys::log(3)).unwrap(), Some(vec![33]));
        drop(s);
        let err = RocksStore::open_secondary(&dir.path().join("none"), scratch.path()).unwrap_err();
        assert!(err.to_string().contains("no ledger store"), "{err}");
    }

    #[test]
    fn prefix_end_is_the_next_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
    }
}
