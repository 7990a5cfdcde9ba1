//! Raft storage in RocksDB: the log (one key per index, big-endian, CBOR
//! entries), the vote and the committed log id; and the replica's tracker
//! as the state machine.
//!
//! Every write Raft relies on for safety (appended entries, the vote, a
//! purge mark, a snapshot) is a synced write: a replica that answered has
//! it on disk. A value that does not decode is a storage error naming it
//! (a truncated or corrupt file), never a panic.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use crowd_protocol::wire::{from_cbor, to_cbor};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::Serialize;

use super::{Replica, ReplicaId, ReplicatedResult, TypeConfig};
use crate::service::Owner;

type StorageResult<T> = Result<T, StorageError<ReplicaId>>;

const LOGS: &str = "raft_logs";
const META: &str = "raft_meta";
const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"last_purged";

fn io_err(
    subject: ErrorSubject<ReplicaId>,
    verb: ErrorVerb,
    e: &(impl std::error::Error + 'static),
) -> StorageError<ReplicaId> {
    StorageIOError::new(subject, verb, AnyError::new(e)).into()
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

/// Memtable size of the Raft database: entries are written once, then
/// read back in order by a lagging follower, so a large memtable buys
/// little. It also sets how much WAL RocksDB preallocates (1.1×), which is
/// how far a replica on a full disk can still write before it stops.
const RAFT_WRITE_BUFFER: usize = 8 << 20;

/// Opens (creating if missing) a replica's Raft database.
pub fn open_db(path: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let cf_opts = || {
        let mut o = Options::default();
        o.set_write_buffer_size(RAFT_WRITE_BUFFER);
        o
    };
    let mut opts = cf_opts();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = [LOGS, META].map(|name| ColumnFamilyDescriptor::new(name, cf_opts()));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?))
}

fn cf<'a>(
    db: &'a DB,
    name: &str,
    subject: ErrorSubject<ReplicaId>,
) -> StorageResult<&'a rocksdb::ColumnFamily> {
    db.cf_handle(name).ok_or_else(|| {
        io_err(
            subject,
            ErrorVerb::Read,
            &std::io::Error::other(format!("no column family {name}")),
        )
    })
}

fn get_meta<T: serde::de::DeserializeOwned>(
    db: &DB,
    name: &'static [u8],
    subject: ErrorSubject<ReplicaId>,
) -> StorageResult<Option<T>> {
    let meta = cf(db, META, subject.clone())?;
    match db
        .get_cf(meta, name)
        .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, &e))?
    {
        None => Ok(None),
        Some(bytes) => from_cbor("raft metadata", &bytes)
            .map(Some)
            .map_err(|e| io_err(subject, ErrorVerb::Read, &e)),
    }
}

fn put_meta<T: Serialize>(
    db: &DB,
    name: &'static [u8],
    value: &T,
    subject: ErrorSubject<ReplicaId>,
) -> StorageResult<()> {
    let meta = cf(db, META, subject.clone())?;
    db.put_cf_opt(meta, name, to_cbor(value), &synced())
        .map_err(|e| io_err(subject, ErrorVerb::Write, &e))
}

/// The Raft log, vote and committed log id.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> Self {
        Self { db }
    }

    fn last_entry(&self) -> StorageResult<Option<LogId<ReplicaId>>> {
        let logs = cf(&self.db, LOGS, ErrorSubject::Logs)?;
        match self.db.iterator_cf(logs, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (_, bytes) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
                let entry: Entry<TypeConfig> = from_cbor("raft log entry", &bytes)
                    .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(&x) => x,
            Bound::Excluded(&x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let logs = cf(&self.db, LOGS, ErrorSubject::Logs)?;
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(logs, IteratorMode::From(&key(start), Direction::Forward))
        {
            let (k, bytes) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            let index = <[u8; 8]>::try_from(&k[..]).map(u64::from_be_bytes).map_err(|_| {
                io_err(
                    ErrorSubject::Logs,
                    ErrorVerb::Read,
                    &std::io::Error::other("a raft log key is not 8 bytes"),
                )
            })?;
            if !range.contains(&index) {
                break;
            }
            let entry: Entry<TypeConfig> = from_cbor("raft log entry", &bytes)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            if entry.log_id.index != index {
                let e =
                    std::io::Error::other(format!("raft log key {index} holds entry {}", entry.log_id.index));
                return Err(io_err(ErrorSubject::Logs, ErrorVerb::Read, &e));
            }
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id = get_meta::<LogId<ReplicaId>>(&self.db, PURGED, ErrorSubject::Store)?;
        let last_log_id = self.last_entry()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<ReplicaId>) -> StorageResult<()> {
        put_meta(&self.db, VOTE, vote, ErrorSubject::Vote)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<ReplicaId>>> {
        get_meta(&self.db, VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<ReplicaId>>) -> StorageResult<()> {
        put_meta(&self.db, COMMITTED, &committed, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<ReplicaId>>> {
        Ok(get_meta::<Option<LogId<ReplicaId>>>(&self.db, COMMITTED, ErrorSubject::Store)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let logs = cf(&self.db, LOGS, ErrorSubject::Logs)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(logs, key(entry.log_id.index), to_cbor(&entry));
        }
        let written = self
            .db
            .write_opt(batch, &synced())
            .map_err(|e| std::io::Error::other(e.to_string()));
        let failed = written
            .as_ref()
            .err()
            .map(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e));
        callback.log_io_completed(written);
        failed.map_or(Ok(()), Err)
    }

    async fn truncate(&mut self, log_id: LogId<ReplicaId>) -> StorageResult<()> {
        let logs = cf(&self.db, LOGS, ErrorSubject::Logs)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(logs, key(log_id.index), key(u64::MAX));
        self.db
            .write_opt(batch, &synced())
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }

    async fn purge(&mut self, log_id: LogId<ReplicaId>) -> StorageResult<()> {
        put_meta(&self.db, PURGED, &log_id, ErrorSubject::Store)?;
        let logs = cf(&self.db, LOGS, ErrorSubject::Logs)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(logs, key(0), key(log_id.index.saturating_add(1)));
        self.db
            .write_opt(batch, &synced())
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }
}

/// Raft's state machine: the replica's tracker, through its owner thread
/// ([`Owner::apply_replicated`]). Cloning shares it.
#[derive(Debug, Clone)]
pub struct TrackerMachine {
    owner: Owner,
}

fn machine_err(verb: ErrorVerb, why: impl std::fmt::Display) -> StorageError<ReplicaId> {
    io_err(
        ErrorSubject::StateMachine,
        verb,
        &std::io::Error::other(why.to_string()),
    )
}

const NO_SNAPSHOTS: &str = "tracker replicas build no snapshots yet: the log is kept whole";

impl TrackerMachine {
    pub fn new(owner: Owner) -> Self {
        Self { owner }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for TrackerMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        Err(machine_err(ErrorVerb::Read, NO_SNAPSHOTS))
    }
}

impl RaftStateMachine<TypeConfig> for TrackerMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<ReplicaId>>, StoredMembership<ReplicaId, Replica>)> {
        let (applied, membership) = self
            .owner
            .raft_applied()
            .await
            .map_err(|e| machine_err(ErrorVerb::Read, e))?;
        let applied = match applied {
            Some(b) => {
                Some(from_cbor("raft applied log id", &b).map_err(|e| machine_err(ErrorVerb::Read, e))?)
            }
            None => None,
        };
        let membership = match membership {
            Some(b) => from_cbor("raft membership", &b).map_err(|e| machine_err(ErrorVerb::Read, e))?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<ReplicatedResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for entry in entries {
            let applied = to_cbor(&entry.log_id);
            let (membership, cmd) = match entry.payload {
                EntryPayload::Blank => (None, None),
                EntryPayload::Normal(cmd) => (None, Some(cmd)),
                EntryPayload::Membership(m) => {
                    (Some(to_cbor(&StoredMembership::new(Some(entry.log_id), m))), None)
                }
            };
            let result = self
                .owner
                .apply_replicated(applied, membership, cmd)
                .await
                .map_err(|e| machine_err(ErrorVerb::Write, format!("entry {}: {e}", entry.log_id.index)))?;
            out.push(result);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMeta<ReplicaId, Replica>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        Err(machine_err(ErrorVerb::Write, NO_SNAPSHOTS))
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(None)
    }
}
