//! The Raft log in redb: entries, the vote, the purge point and the node's identity, in one
//! file (`raft.redb`) under the node's data directory, each write in its own durable
//! transaction (one `fsync`), so nothing openraft was told is on disk can be lost to a crash.
//!
//! The same database holds the state machine's snapshot (see
//! [`state_machine`](super::state_machine)). Every call runs on tokio's blocking pool, never
//! on an async worker. A store opened without a directory lives in memory (a node that has no
//! past: it joins as a new member every time it starts).
//!
//! A node's disk can be made slow on purpose ([`DiskStall`]): the demo's `slow-disk` fault
//! holds its next log write for the given time, as a stalled device would.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, Vote};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::timing::storage_error;
use super::{LogId, StorageError, TypeConfig};
use crate::ledger::NodeId;

/// The file under the data directory.
pub const FILE_NAME: &str = "raft.redb";

pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("warden_raft_log");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("warden_raft_meta");

type Entry = openraft::Entry<TypeConfig>;

/// Who this node is in the group: fixed when its data directory was first used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Its Raft id.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// Whether it founded the group (true) or joined one (false).
    pub founded: bool,
}

/// A node's Raft database.
#[derive(Clone)]
pub struct RaftDb {
    pub(crate) db: Arc<redb::Database>,
    pub(crate) stall: DiskStall,
}

impl Debug for RaftDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RaftDb")
    }
}

/// Makes a node's next log write wait (the `slow-disk` fault).
#[derive(Clone, Default, Debug)]
pub struct DiskStall(Arc<Mutex<Option<Duration>>>);

impl DiskStall {
    /// The next write to the log waits `hold` before it starts.
    pub fn stall_next(&self, hold: Duration) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(hold);
    }

    fn take(&self) -> Option<Duration> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Why the database could not be opened, or the node's identity in it read or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the Raft log at {path}: {cause}")]
pub struct OpenError {
    /// Where: the file, `(memory)`, `(tables)` or `(identity)`.
    pub path: String,
    /// Why (a directory that cannot be created is redb's `Io` error).
    pub cause: redb::Error,
}

/// The Raft database's page cache (bytes). redb's default (1 GiB) let every node process of
/// a 10,000-singleton cluster grow to about 1.1 GB of resident memory, most of it log entries
/// already applied; the log is read back only by followers that lag, and the state machine
/// lives in memory, so a smaller cache costs reads of old entries from disk, not commits.
pub const CACHE_BYTES: usize = 64 << 20;

impl RaftDb {
    /// Opens (or creates) `dir/raft.redb`; `None`: a database in memory.
    pub fn open(dir: Option<&Path>) -> Result<RaftDb, OpenError> {
        RaftDb::open_with_cache(dir, CACHE_BYTES)
    }

    /// [`RaftDb::open`] with a page cache of `cache_bytes` (on disk only).
    fn open_with_cache(dir: Option<&Path>, cache_bytes: usize) -> Result<RaftDb, OpenError> {
        let db = match dir {
            Some(dir) => {
                let path = dir.join(FILE_NAME);
                let fail = |cause: redb::Error| OpenError { path: path.display().to_string(), cause };
                std::fs::create_dir_all(dir).map_err(|e| fail(redb::Error::Io(e)))?;
                redb::Database::builder().set_cache_size(cache_bytes).create(&path).map_err(|e| fail(e.into()))?
            }
            None => redb::Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(|e| OpenError { path: "(memory)".into(), cause: e.into() })?,
        };
        let db = RaftDb { db: Arc::new(db), stall: DiskStall::default() };
        db.write(|tx| {
            tx.open_table(LOG)?;
            tx.open_table(META)?;
            tx.open_table(super::state_machine::SNAPSHOT)?;
            Ok(())
        })
        .map_err(|cause| OpenError { path: "(tables)".into(), cause })?;
        Ok(db)
    }

    /// Runs `f` in one durable write transaction.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, redb::Error> {
        if let Some(hold) = self.stall.take() {
            tracing::warn!(target: "warden::cluster", hold_ms = hold.as_millis() as u64, "disk stalled (injected)");
            std::thread::sleep(hold);
        }
        let mut tx = self.db.begin_write()?;
        tx.set_durability(redb::Durability::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Stores a meta value without waiting for the disk: it becomes durable with the next
    /// durable write (the commit index, which a crash may take back a little: openraft then
    /// learns it again from the leader).
    pub(crate) fn set_meta_lazy<T: Serialize>(&self, key: &str, value: &T) -> Result<(), redb::Error> {
        let bytes = encode(value)?;
        let mut tx = self.db.begin_write()?;
        tx.set_durability(redb::Durability::None)?;
        tx.open_table(META)?.insert(key, bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// A meta value.
    pub(crate) fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, redb::Error> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(META)?;
        match table.get(key)? {
            // A value that does not decode is an error, never "absent": a vote read as
            // "never voted" could vote twice in one term.
            Some(v) => rmp_serde::from_slice(v.value())
                .map(Some)
                .map_err(|e| redb::Error::Io(std::io::Error::other(format!("meta {key:?} does not decode: {e}")))),
            None => Ok(None),
        }
    }

    /// Stores a meta value durably.
    pub(crate) fn set_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), redb::Error> {
        let bytes = rmp_serde::to_vec(value).map_err(|e| redb::Error::Io(std::io::Error::other(e.to_string())))?;
        self.write(|tx| {
            tx.open_table(META)?.insert(key, bytes.as_slice())?;
            Ok(())
        })
    }

    /// The node's identity, if its data directory has one.
    pub fn identity(&self) -> Result<Option<Identity>, OpenError> {
        self.meta("identity").map_err(|cause| OpenError { path: "(identity)".into(), cause })
    }

    /// Records the node's identity (once, when the directory is first used).
    pub fn set_identity(&self, identity: &Identity) -> Result<(), OpenError> {
        self.set_meta("identity", identity).map_err(|cause| OpenError { path: "(identity)".into(), cause })
    }

    /// Every entry of the log from `from` on, decoded (for the checker and tests).
    pub fn entries_from(&self, from: u64) -> Result<Vec<Entry>, redb::Error> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(LOG)?;
        let mut out = Vec::new();
        for row in table.range(from..)? {
            let (_, v) = row?;
            if let Ok(e) = rmp_serde::from_slice::<Entry>(v.value()) {
                out.push(e);
            }
        }
        Ok(out)
    }
}

/// The log store openraft drives.
#[derive(Clone)]
pub struct LogStore {
    db: RaftDb,
}

impl LogStore {
    /// The log in `db`.
    pub fn new(db: RaftDb) -> Self {
        LogStore { db }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&RaftDb) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, StorageError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| storage_error(what, e))?
            .map_err(|e| storage_error(what, e))
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, redb::Error> {
    rmp_serde::to_vec(value).map_err(|e| redb::Error::Io(std::io::Error::other(e.to_string())))
}

fn read_range(db: &RaftDb, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<Entry>, redb::Error> {
    let tx = db.db.begin_read()?;
    let table = tx.open_table(LOG)?;
    let mut out = Vec::new();
    for row in table.range::<u64>((start, end))? {
        let (_, v) = row?;
        let entry = rmp_serde::from_slice::<Entry>(v.value())
            .map_err(|e| redb::Error::Io(std::io::Error::other(format!("a damaged log entry: {e}"))))?;
        out.push(entry);
    }
    Ok(out)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
        self.blocking("read the log", move |db| read_range(db, start, end)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.blocking("read the log state", |db| {
            let purged: Option<LogId> = db.meta("purged")?;
            let tx = db.db.begin_read()?;
            let table = tx.open_table(LOG)?;
            let last = match table.last()? {
                Some((_, v)) => Some(
                    rmp_serde::from_slice::<Entry>(v.value())
                        .map_err(|e| {
                            redb::Error::Io(std::io::Error::other(format!("the last log entry does not decode: {e}")))
                        })?
                        .log_id,
                ),
                None => None,
            };
            Ok(LogState { last_purged_log_id: purged, last_log_id: last.or(purged) })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let vote = *vote;
        self.blocking("save the vote", move |db| db.set_meta("vote", &vote)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.blocking("read the vote", |db| db.meta("vote")).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.blocking("save the commit index", move |db| db.set_meta_lazy("committed", &committed)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.blocking("read the commit index", |db| Ok(db.meta::<Option<LogId>>("committed")?.flatten())).await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        for e in entries {
            rows.push((e.log_id.index, encode(&e).map_err(|err| storage_error("encode an entry", err))?));
        }
        let result = self
            .blocking("append to the log", move |db| {
                db.write(|tx| {
                    let mut table = tx.open_table(LOG)?;
                    for (index, bytes) in &rows {
                        table.insert(*index, bytes.as_slice())?;
                    }
                    Ok(())
                })
            })
            .await;
        // Durable (the transaction committed with an fsync) before openraft hears of it.
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking("truncate the log", move |db| {
            db.write(|tx| {
                let mut table = tx.open_table(LOG)?;
                // From the back, so that a crash half-way leaves no hole.
                let doomed: Vec<u64> =
                    table.range(log_id.index..)?.filter_map(|r| r.ok().map(|(k, _)| k.value())).collect();
                for index in doomed.into_iter().rev() {
                    table.remove(index)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking("purge the log", move |db| {
            // The purge point is durable before anything goes, so the log state stays right.
            db.set_meta("purged", &log_id)?;
            db.write(|tx| {
                let mut table = tx.open_table(LOG)?;
                let doomed: Vec<u64> =
                    table.range(..=log_id.index)?.filter_map(|r| r.ok().map(|(k, _)| k.value())).collect();
                for index in doomed {
                    table.remove(index)?;
                }
                Ok(())
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page cache stays within its bound while the log grows to many times it (the
    /// dev-dependency on redb switches on its `cache_metrics`, which count the cache's bytes).
    #[test]
    fn the_page_cache_stays_within_its_bound_as_the_log_grows_past_it() {
        const BOUND: usize = 1 << 20;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = RaftDb::open_with_cache(Some(dir.path()), BOUND).expect("opens");
        let entry = vec![7u8; 16 << 10];
        // 8 MiB of entries, in 16 transactions of 32.
        for batch in 0..16u64 {
            db.write(|tx| {
                let mut log = tx.open_table(LOG)?;
                for i in 0..32 {
                    log.insert(batch * 32 + i, entry.as_slice())?;
                }
                Ok(())
            })
            .expect("writes");
            let used = db.db.cache_stats().used_bytes();
            assert!(used <= BOUND, "after batch {batch}: {used} bytes cached, bound {BOUND}");
        }
        // Reading every entry back goes through the cache too.
        let tx = db.db.begin_read().expect("reads");
        let log = tx.open_table(LOG).expect("the log");
        let mut read = 0;
        for row in log.range(0u64..).expect("a range") {
            assert_eq!(row.expect("a row").1.value().len(), entry.len());
            read += 1;
        }
        assert_eq!(read, 16 * 32);
        let stats = db.db.cache_stats();
        assert!(stats.used_bytes() <= BOUND, "{} bytes cached, bound {BOUND}", stats.used_bytes());
        assert!(stats.used_bytes() > 0, "the metrics count (the dev-dependency's cache_metrics feature is on)");
        assert!(stats.evictions() > 0, "a log 8x the bound evicted pages");
    }
}
