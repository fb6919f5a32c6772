//! The Raft log in redb: entries, the vote, the purge point and the node's identity, in one
//! file (`raft.redb`) under the node's data directory, each write in its own durable
//! transaction (one `fsync`), so nothing openraft was told is on disk can be lost to a crash.
//!
//! The same database holds the state machine's snapshot (see
//! [`state_machine`](super::state_machine)). Every call runs on tokio's blocking pool, never
//! on an async worker. A store opened without a directory lives in memory (a node that has no
//! past: it joins as a new member every time it starts).
//!
//! The commit index is not a write of its own: openraft reports it after every round, and a
//! transaction (one more `fsync`) for each report cost about a tenth of the group's commit
//! rate. It is kept in memory and stored with the next append, and once more when the node
//! stops; a crash can take back the last rounds' advance, which openraft then learns again
//! from the leader (the index only says how far a restarted node may apply on its own).
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
    /// The newest commit index openraft reported, not yet stored.
    committed: Arc<Mutex<Option<LogId>>>,
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

/// The version of what `raft.redb` holds: the tables, the encoding of log entries (the
/// ledger's commands), of the snapshot (the ledger) and of the meta values. Raise it with any
/// change a build of the previous format would read differently, or not at all. A node
/// refuses to open a directory of another format ([`OpenCause::Format`]) rather than misread
/// it; a directory from before the format was stamped is format 1 (the layout did not change)
/// and is stamped when first opened.
pub const STORE_FORMAT: u16 = 1;

/// The meta key of the store format.
const FORMAT_KEY: &str = "format";

/// Why the database could not be opened, or the node's identity in it read or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the Raft log at {path}: {cause}")]
pub struct OpenError {
    /// Where: the file, `(memory)`, `(tables)` or `(identity)`.
    pub path: String,
    /// Why.
    pub cause: OpenCause,
}

/// What [`OpenError`] met.
#[derive(Debug, thiserror::Error)]
pub enum OpenCause {
    /// redb's error (a directory that cannot be created is its `Io` error).
    #[error(transparent)]
    Database(#[from] redb::Error),
    /// The file was written by a build of another [`STORE_FORMAT`].
    #[error(
        "it holds store format {found} and this build reads format {ours} (STORE_FORMAT): run a build of \
         format {found} on it, or start this node on an empty data directory (it joins again as a new member)"
    )]
    Format {
        /// The file's format.
        found: u16,
        /// This build's.
        ours: u16,
    },
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
                let fail = |cause: redb::Error| OpenError { path: path.display().to_string(), cause: cause.into() };
                std::fs::create_dir_all(dir).map_err(|e| fail(redb::Error::Io(e)))?;
                redb::Database::builder().set_cache_size(cache_bytes).create(&path).map_err(|e| fail(e.into()))?
            }
            None => redb::Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(|e| OpenError { path: "(memory)".into(), cause: redb::Error::from(e).into() })?,
        };
        let place = || dir.map_or_else(|| "(memory)".to_string(), |d| d.join(FILE_NAME).display().to_string());
        // The format first, before anything is written: a file of another format stays as it was.
        let stamped = read_meta::<u16>(&db, FORMAT_KEY).map_err(|e| OpenError { path: place(), cause: e.into() })?;
        if let Some(found) = stamped.filter(|f| *f != STORE_FORMAT) {
            return Err(OpenError { path: place(), cause: OpenCause::Format { found, ours: STORE_FORMAT } });
        }
        let db = RaftDb { db: Arc::new(db), stall: DiskStall::default(), committed: Arc::default() };
        db.write(|tx| {
            tx.open_table(LOG)?;
            tx.open_table(META)?;
            tx.open_table(super::state_machine::SNAPSHOT)?;
            Ok(())
        })
        .map_err(|cause| OpenError { path: "(tables)".into(), cause: cause.into() })?;
        if stamped.is_none() {
            db.set_meta(FORMAT_KEY, &STORE_FORMAT).map_err(|e| OpenError { path: place(), cause: e.into() })?;
        }
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

    /// The commit index openraft reported last (kept in memory until the next append).
    fn note_committed(&self, committed: Option<LogId>) {
        *self.committed.lock().unwrap_or_else(PoisonError::into_inner) = committed;
    }

    /// The commit index openraft reported last, if any.
    fn reported_committed(&self) -> Option<LogId> {
        *self.committed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The reported commit index to store with entries up to `last`: never past `last`, so a
    /// restarted node never finds a commit index beyond its own log (if openraft reported
    /// more, every entry up to `last` is committed, and `last` is the right id to store).
    fn committed_up_to(&self, last: LogId) -> Option<LogId> {
        let reported = self.reported_committed()?;
        Some(if reported.index <= last.index { reported } else { last })
    }

    /// Stores the reported commit index durably (when the node stops), if openraft reported
    /// one and the log holds its entry.
    pub(crate) fn store_committed(&self) -> Result<(), redb::Error> {
        let Some(reported) = self.reported_committed() else {
            return Ok(());
        };
        let bytes = encode(&Some(reported))?;
        self.write(|tx| {
            let log = tx.open_table(LOG)?;
            let held = match log.get(reported.index)? {
                Some(v) => rmp_serde::from_slice::<Entry>(v.value()).is_ok_and(|e| e.log_id == reported),
                None => false,
            };
            drop(log);
            if held {
                tx.open_table(META)?.insert("committed", bytes.as_slice())?;
            }
            Ok(())
        })
    }

    /// A meta value.
    pub(crate) fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, redb::Error> {
        read_meta(&self.db, key)
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
        self.meta("identity").map_err(|e| OpenError { path: "(identity)".into(), cause: e.into() })
    }

    /// Records the node's identity (once, when the directory is first used).
    pub fn set_identity(&self, identity: &Identity) -> Result<(), OpenError> {
        self.set_meta("identity", identity).map_err(|e| OpenError { path: "(identity)".into(), cause: e.into() })
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

/// A meta value of `db`; `None` if it was never stored (or the file has no meta table yet: a
/// new file, read before its tables are made).
fn read_meta<T: serde::de::DeserializeOwned>(db: &redb::Database, key: &str) -> Result<Option<T>, redb::Error> {
    let tx = db.begin_read()?;
    let table = match tx.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match table.get(key)? {
        // A value that does not decode is an error, never "absent": a vote read as "never
        // voted" could vote twice in one term.
        Some(v) => rmp_serde::from_slice(v.value())
            .map(Some)
            .map_err(|e| redb::Error::Io(std::io::Error::other(format!("meta {key:?} does not decode: {e}")))),
        None => Ok(None),
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
        // Stored with the next append (see the module's note), not in a transaction of its own.
        self.db.note_committed(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        if let Some(reported) = self.db.reported_committed() {
            return Ok(Some(reported));
        }
        self.blocking("read the commit index", |db| Ok(db.meta::<Option<LogId>>("committed")?.flatten())).await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        let mut last = None;
        for e in entries {
            rows.push((e.log_id.index, encode(&e).map_err(|err| storage_error("encode an entry", err))?));
            last = Some(e.log_id);
        }
        let result = self
            .blocking("append to the log", move |db| {
                let committed = match last.and_then(|last| db.committed_up_to(last)) {
                    Some(c) => Some(encode(&Some(c))?),
                    None => None,
                };
                db.write(|tx| {
                    let mut table = tx.open_table(LOG)?;
                    for (index, bytes) in &rows {
                        table.insert(*index, bytes.as_slice())?;
                    }
                    if let Some(bytes) = &committed {
                        tx.open_table(META)?.insert("committed", bytes.as_slice())?;
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
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn blanks(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        indexes.map(|i| Entry { log_id: id(term, i), payload: EntryPayload::Blank }).collect()
    }

    fn stored_committed(db: &RaftDb) -> Option<LogId> {
        db.meta::<Option<LogId>>("committed").expect("reads").flatten()
    }

    /// A new file is stamped with this build's format; a file of another format is refused,
    /// naming both, and left as it was; a file from before the stamp is taken as format 1.
    #[test]
    fn a_file_of_another_store_format_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = RaftDb::open(Some(dir.path())).expect("opens");
        assert_eq!(db.meta::<u16>(FORMAT_KEY).expect("reads"), Some(STORE_FORMAT), "stamped when created");
        db.set_meta(FORMAT_KEY, &(STORE_FORMAT + 1)).expect("writes");
        drop(db);
        let err = RaftDb::open(Some(dir.path())).expect_err("another format is refused");
        assert!(
            matches!(err.cause, OpenCause::Format { found, ours } if found == STORE_FORMAT + 1 && ours == STORE_FORMAT),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains(FILE_NAME) && text.contains("format 2") && text.contains("format 1"), "{text}");

        // Untouched: still the other format (a refused open stamps nothing).
        let raw = redb::Database::open(dir.path().join(FILE_NAME)).expect("opens raw");
        let tx = raw.begin_write().expect("a transaction");
        tx.open_table(META).expect("meta").remove(FORMAT_KEY).expect("removes");
        tx.commit().expect("commits");
        drop(raw);
        // Without a stamp (a directory from before it): format 1, stamped now.
        let db = RaftDb::open(Some(dir.path())).expect("an unstamped file opens");
        assert_eq!(db.meta::<u16>(FORMAT_KEY).expect("reads"), Some(STORE_FORMAT));
    }

    /// A reported commit index costs no transaction: it is stored with the next append, never
    /// past that append's last entry, and the rest of it when the node stops.
    #[tokio::test]
    async fn the_commit_index_is_stored_with_the_next_append_and_at_stop() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = RaftDb::open(Some(dir.path())).expect("opens");
        let mut log = LogStore::new(db.clone());
        log.blocking_append(blanks(1, 1..=3)).await.expect("appends");
        log.save_committed(Some(id(1, 2))).await.expect("reported");
        assert_eq!(stored_committed(&db), None, "a report alone writes nothing");
        assert_eq!(log.read_committed().await.expect("reads"), Some(id(1, 2)), "but it reads back at once");

        // Reported beyond what the next append holds (openraft may report an index that
        // entries still on their way will reach): stored as that append's last entry.
        log.save_committed(Some(id(1, 9))).await.expect("reported");
        log.blocking_append(blanks(1, 4..=5)).await.expect("appends");
        assert_eq!(stored_committed(&db), Some(id(1, 5)));
        log.save_committed(Some(id(1, 4))).await.expect("reported");
        log.blocking_append(blanks(1, 6..=6)).await.expect("appends");
        assert_eq!(stored_committed(&db), Some(id(1, 4)));

        // At stop, the last report is stored if the log holds its entry.
        log.save_committed(Some(id(1, 6))).await.expect("reported");
        db.store_committed().expect("stores");
        assert_eq!(stored_committed(&db), Some(id(1, 6)));
        log.save_committed(Some(id(2, 6))).await.expect("reported");
        db.store_committed().expect("stores");
        assert_eq!(stored_committed(&db), Some(id(1, 6)), "an id the log does not hold is not stored");
        drop((log, db));

        let db = RaftDb::open(Some(dir.path())).expect("reopens");
        let mut log = LogStore::new(db);
        assert_eq!(log.read_committed().await.expect("reads"), Some(id(1, 6)), "what a restarted node starts from");
    }

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
