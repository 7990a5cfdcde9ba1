//! The DHT record store: our own provider records kept apart from
//! everyone else's, so remote announcements can never crowd ours out.
//!
//! libp2p's `MemoryStore` counts every key — ours and the ones remote peers
//! announce to us — against one `max_provided_keys` (1024), after which it
//! refuses our own `start_providing` too, and a key whose provider list is
//! full (20) silently ignores our own record. [`BoundedStore`] keeps:
//! - **own** provider records (where the provider is this peer) in a map of
//!   their own, bounded by `max_own` (what the node holds; a refusal is
//!   counted, never silent);
//! - **remote** provider records bounded in keys (`max_remote_keys`) and per
//!   key (`max_providers_per_key`): when full, expired records are purged
//!   first, and a new remote key is refused (counted) rather than evicting
//!   anything of ours;
//! - value records (unused by crowdstore) in a small `MemoryStore`.
//!
//! `providers(key)` answers ours first, then remote ones up to the per-key
//! bound; `provided()` is exactly our own records, which Kademlia
//! republishes on its timer.

use std::borrow::Cow;
use std::collections::{hash_map, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use libp2p::kad::store::{self, MemoryStore, MemoryStoreConfig, RecordStore};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::PeerId;

/// Bounds of a [`BoundedStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhtBounds {
    /// Our own provider records (keys we announce).
    pub max_own: usize,
    /// Keys with remote provider records.
    pub max_remote_keys: usize,
    /// Remote providers kept per key.
    pub max_providers_per_key: usize,
}

impl Default for DhtBounds {
    fn default() -> Self {
        Self {
            max_own: 1 << 20,
            max_remote_keys: 16 * 1024,
            max_providers_per_key: libp2p::kad::K_VALUE.get(),
        }
    }
}

/// Counters a node exports as metrics.
#[derive(Debug, Default)]
pub struct DhtStats {
    /// Remote provider records refused (the store was full).
    pub remote_refused: AtomicU64,
    /// Own records refused (more than `max_own`).
    pub own_refused: AtomicU64,
    /// Remote provider records held now.
    pub remote_records: AtomicU64,
    /// Own provider records held now.
    pub own_records: AtomicU64,
}

/// See the module docs.
pub struct BoundedStore {
    local: PeerId,
    bounds: DhtBounds,
    own: HashMap<RecordKey, ProviderRecord>,
    remote: HashMap<RecordKey, Vec<ProviderRecord>>,
    remote_count: usize,
    values: MemoryStore,
    stats: Arc<DhtStats>,
}

impl std::fmt::Debug for BoundedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedStore")
            .field("own", &self.own.len())
            .field("remote_keys", &self.remote.len())
            .field("remote_records", &self.remote_count)
            .field("bounds", &self.bounds)
            .finish()
    }
}

impl BoundedStore {
    pub fn new(local: PeerId, bounds: DhtBounds, stats: Arc<DhtStats>) -> Self {
        let values = MemoryStore::with_config(
            local,
            MemoryStoreConfig {
                max_records: 256,
                max_value_bytes: 4096,
                ..MemoryStoreConfig::default()
            },
        );
        Self {
            local,
            bounds,
            own: HashMap::new(),
            remote: HashMap::new(),
            remote_count: 0,
            values,
            stats,
        }
    }

    /// Keys we announce.
    pub fn own_len(&self) -> usize {
        self.own.len()
    }

    /// Remote provider records held.
    pub fn remote_len(&self) -> usize {
        self.remote_count
    }

    fn publish_counts(&self) {
        self.stats
            .remote_records
            .store(self.remote_count as u64, Ordering::Relaxed);
        self.stats
            .own_records
            .store(self.own.len() as u64, Ordering::Relaxed);
    }

    /// Drops expired remote records (run only when a bound is reached).
    fn purge_expired(&mut self) {
        let now = Instant::now();
        let mut dropped = 0;
        self.remote.retain(|_, ps| {
            let before = ps.len();
            ps.retain(|p| !p.is_expired(now));
            dropped += before - ps.len();
            !ps.is_empty()
        });
        self.remote_count -= dropped;
    }

    fn add_remote(&mut self, record: ProviderRecord) -> store::Result<()> {
        if !self.remote.contains_key(&record.key) && self.remote.len() >= self.bounds.max_remote_keys {
            self.purge_expired();
            if self.remote.len() >= self.bounds.max_remote_keys {
                self.stats.remote_refused.fetch_add(1, Ordering::Relaxed);
                return Err(store::Error::MaxRecords);
            }
        }
        let providers = self.remote.entry(record.key.clone()).or_default();
        if let Some(p) = providers.iter_mut().find(|p| p.provider == record.provider) {
            *p = record;
            return Ok(());
        }
        if providers.len() >= self.bounds.max_providers_per_key {
            let now = Instant::now();
            let before = providers.len();
            providers.retain(|p| !p.is_expired(now));
            self.remote_count -= before - providers.len();
            if providers.len() >= self.bounds.max_providers_per_key {
                // full of live records: the first announcers stay (a flood
                // of fresh keys cannot push them out)
                self.stats.remote_refused.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        providers.push(record);
        self.remote_count += 1;
        Ok(())
    }
}

impl RecordStore for BoundedStore {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = std::iter::Map<
        hash_map::Values<'a, RecordKey, ProviderRecord>,
        fn(&'a ProviderRecord) -> Cow<'a, ProviderRecord>,
    >;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.values.get(k)
    }

    fn put(&mut self, r: Record) -> store::Result<()> {
        self.values.put(r)
    }

    fn remove(&mut self, k: &RecordKey) {
        self.values.remove(k)
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.values.records()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> store::Result<()> {
        let result = if record.provider == self.local {
            if !self.own.contains_key(&record.key) && self.own.len() >= self.bounds.max_own {
                self.stats.own_refused.fetch_add(1, Ordering::Relaxed);
                Err(store::Error::MaxProvidedKeys)
            } else {
                self.own.insert(record.key.clone(), record);
                Ok(())
            }
        } else {
            self.add_remote(record)
        };
        self.publish_counts();
        result
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let mut out: Vec<ProviderRecord> = self.own.get(key).cloned().into_iter().collect();
        if let Some(ps) = self.remote.get(key) {
            let room = self.bounds.max_providers_per_key.saturating_sub(out.len());
            out.extend(ps.iter().take(room).cloned());
        }
        out
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.own.values().map(Cow::Borrowed)
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        if *p == self.local {
            self.own.remove(k);
        } else if let hash_map::Entry::Occupied(mut e) = self.remote.entry(k.clone()) {
            let ps = e.get_mut();
            if let Some(i) = ps.iter().position(|r| r.provider == *p) {
                ps.remove(i);
                self.remote_count -= 1;
            }
            if ps.is_empty() {
                e.remove();
            }
        }
        self.publish_counts();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn record(key: u32, provider: PeerId) -> ProviderRecord {
        ProviderRecord::new(RecordKey::new(&key.to_be_bytes()), provider, Vec::new())
    }

    fn bounds() -> DhtBounds {
        DhtBounds {
            max_own: 8,
            max_remote_keys: 16,
            max_providers_per_key: 3,
        }
    }

    #[test]
    fn a_flood_of_remote_records_never_drops_or_refuses_our_own() {
        let me = PeerId::random();
        let stats = Arc::new(DhtStats::default());
        let mut s = BoundedStore::new(me, bounds(), stats.clone());
        for k in 0..4 {
            s.add_provider(record(k, me)).unwrap();
        }
        // many strangers announce many keys, including ours
        let strangers: Vec<PeerId> = (0..10).map(|_| PeerId::random()).collect();
        for (i, p) in strangers.iter().enumerate() {
            for k in 0..100u32 {
                let _ = s.add_provider(record(k + i as u32, *p));
            }
        }
        assert!(s.remote_len() <= 16 * 3);
        assert!(stats.remote_refused.load(Ordering::Relaxed) > 0);
        // ours are all still there, first in every answer, and still addable
        for k in 0..4u32 {
            let ps = s.providers(&RecordKey::new(&k.to_be_bytes()));
            assert_eq!(ps[0].provider, me);
            assert!(ps.len() <= 3);
        }
        assert_eq!(s.provided().count(), 4);
        for k in 4..8 {
            s.add_provider(record(k, me)).unwrap();
        }
        assert_eq!(s.provided().count(), 8);
        // our own bound refuses, and counts it
        assert!(s.add_provider(record(9, me)).is_err());
        assert_eq!(stats.own_refused.load(Ordering::Relaxed), 1);
        assert_eq!(stats.own_records.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn expired_remote_records_make_room() {
        let me = PeerId::random();
        let mut s = BoundedStore::new(me, bounds(), Arc::default());
        let old = PeerId::random();
        for k in 0..16 {
            let mut r = record(k, old);
            r.expires = Some(Instant::now());
            s.add_provider(r).unwrap();
        }
        // full of expired records: a new key purges them
        s.add_provider(record(100, PeerId::random())).unwrap();
        assert_eq!(s.remote_len(), 1);
    }

    proptest! {
        /// Any sequence of adds and removes keeps the counts exact and the bounds held.
        #[test]
        fn bounds_and_counts_hold_proptest(ops in proptest::collection::vec((0u8..3, 0u32..40, 0usize..6), 0..300)) {
            let me = PeerId::random();
            let peers: Vec<PeerId> = (0..6).map(|i| if i == 0 { me } else { PeerId::random() }).collect();
            let mut s = BoundedStore::new(me, bounds(), Arc::default());
            for (op, key, who) in ops {
                let p = peers[who];
                match op {
                    0 | 1 => { let _ = s.add_provider(record(key, p)); }
                    _ => s.remove_provider(&RecordKey::new(&key.to_be_bytes()), &p),
                }
                let counted: usize = s.remote.values().map(Vec::len).sum();
                prop_assert_eq!(counted, s.remote_count);
                prop_assert!(s.remote.len() <= 16);
                prop_assert!(s.remote.values().all(|v| v.len() <= 3 && !v.is_empty()));
                prop_assert!(s.own.len() <= 8);
                prop_assert!(s.own.values().all(|r| r.provider == me));
            }
        }
    }
}
