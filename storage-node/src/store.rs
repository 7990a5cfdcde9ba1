//! The node's metadata store: a small key-value trait with a RocksDB
//! implementation (what the daemon uses) and an in-memory one (for tests),
//! exercised by one shared test suite.
//!
//! Writes that must land together go in one [`Batch`], applied atomically
//! (RocksDB write batch, synced to the WAL), so a crash never leaves half of
//! an update.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A store failure, one line.
#[derive(Debug, thiserror::Error)]
#[error("metadata store: {0}")]
pub struct StoreError(pub String);

/// Atomic group of writes.
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
}

/// Ordered key-value storage with atomic batches.
pub trait MetaStore: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn write(&self, batch: Batch) -> Result<(), StoreError>;
    /// Every (key, value) whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError>;
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

impl RocksStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_max_open_files(256);
        let db = rocksdb::DB::open(&opts, path)
            .map_err(|e| StoreError(format!("open {}: {e}", path.display())))?;
        Ok(Self { db })
    }
}

impl MetaStore for RocksStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get(key).map_err(|e| StoreError(e.to_string()))
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        let mut wb = rocksdb::WriteBatch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => wb.put(k, v),
                None => wb.delete(k),
            }
        }
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.db
            .write_opt(wb, &opts)
            .map_err(|e| StoreError(e.to_string()))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        let iter = self
            .db
            .iterator(rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward));
        for item in iter {
            let (k, v) = item.map_err(|e| StoreError(e.to_string()))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

/// In memory, for tests.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    map: Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>,
}

impl MemStore {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>>, StoreError> {
        self.map.lock().map_err(|_| StoreError("poisoned".into()))
    }
}

impl MetaStore for MemStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock()?.get(key).cloned())
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        let mut map = self.lock()?;
        for (k, v) in batch.ops {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        Ok(self
            .lock()?
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The suite every implementation passes.
    fn suite(store: &dyn MetaStore) {
        assert_eq!(store.get(b"a").unwrap(), None);
        let mut b = Batch::default();
        b.put(b"p/1".to_vec(), b"one".to_vec())
            .put(b"p/2".to_vec(), b"two".to_vec())
            .put(b"q/1".to_vec(), b"x".to_vec());
        store.write(b).unwrap();
        assert_eq!(store.get(b"p/1").unwrap().as_deref(), Some(&b"one"[..]));
        let scanned = store.scan_prefix(b"p/").unwrap();
        assert_eq!(scanned.len(), 2);
        assert_eq!(scanned[0].0, b"p/1");
        let mut b = Batch::default();
        b.delete(b"p/1".to_vec()).put(b"p/3".to_vec(), b"three".to_vec());
        store.write(b).unwrap();
        let keys: Vec<_> = store
            .scan_prefix(b"p/")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"p/2".to_vec(), b"p/3".to_vec()]);
        assert!(store.scan_prefix(b"zzz").unwrap().is_empty());
    }

    #[test]
    fn mem_store_suite() {
        suite(&MemStore::default());
    }

    #[test]
    fn rocks_store_suite_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RocksStore::open(dir.path()).unwrap();
            suite(&s);
        }
        let s = RocksStore::open(dir.path()).unwrap();
        assert_eq!(s.get(b"p/3").unwrap().as_deref(), Some(&b"three"[..]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Both stores agree on every prefix scan after random batches.
        #[test]
        fn stores_agree_proptest(ops in proptest::collection::vec(
            (proptest::collection::vec(0u8..4, 1..4), proptest::option::of(any::<u8>())), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let rocks = RocksStore::open(dir.path()).unwrap();
            let mem = MemStore::default();
            for chunk in ops.chunks(5) {
                let mut b = Batch::default();
                for (k, v) in chunk {
                    match v { Some(v) => b.put(k.clone(), vec![*v]), None => b.delete(k.clone()) };
                }
                rocks.write(b.clone()).unwrap();
                mem.write(b).unwrap();
            }
            for p in [vec![], vec![0], vec![1, 2], vec![3]] {
                prop_assert_eq!(rocks.scan_prefix(&p).unwrap(), mem.scan_prefix(&p).unwrap());
            }
        }
    }
}
