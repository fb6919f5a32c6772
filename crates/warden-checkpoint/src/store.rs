//! The store behind checkpoints: a small trait over opaque bytes, an in-memory store for
//! tests, and a replicating wrapper the cluster layer plugs into.
//!
//! A store keeps, per checkpoint key, snapshots and journal entries by sequence number. It
//! never looks inside the bytes (they are [envelopes](crate::envelope)). All calls are
//! blocking: the writer thread and `spawn_blocking` call them, never an actor's task.
//! [`Store::commit`] applies a whole batch atomically and durably, or none of it; that one
//! call is what group commit and retention rely on.
//!
//! ```
//! use std::sync::Arc;
//! use warden_checkpoint::{MemoryStore, Store, WriteOp};
//!
//! let store = MemoryStore::new();
//! let key: Arc<str> = Arc::from("acct-1");
//! store.commit(&[
//!     WriteOp::Append { key: key.clone(), seq: 1, bytes: b"deposit 5".to_vec() },
//!     WriteOp::Append { key: key.clone(), seq: 2, bytes: b"deposit 7".to_vec() },
//! ])?;
//! // A snapshot at 2 that keeps 1 snapshot drops the journal it covers.
//! store.commit(&[WriteOp::Snapshot { key: key.clone(), seq: 2, bytes: b"balance 12".to_vec(), retain: 1, created_unix_ms: 0 }])?;
//! assert_eq!(store.last_seq("acct-1")?, 2);
//! assert!(store.journal_after("acct-1", 0)?.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

/// One change in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Stores a snapshot, then keeps only the newest `retain` snapshots of its key and drops
    /// the journal entries the oldest kept snapshot covers (sequence numbers up to its own).
    Snapshot {
        /// The checkpoint key.
        key: Arc<str>,
        /// The sequence number (for durable actors: the last event the snapshot includes).
        seq: u64,
        /// The envelope.
        bytes: Vec<u8>,
        /// How many snapshots of this key to keep (at least 1).
        retain: usize,
        /// When it was taken, ms since the Unix epoch.
        created_unix_ms: u64,
    },
    /// Appends one journal entry.
    Append {
        /// The checkpoint key.
        key: Arc<str>,
        /// The event's sequence number.
        seq: u64,
        /// The envelope.
        bytes: Vec<u8>,
    },
    /// Deletes one snapshot (an operator discarding a damaged one).
    DeleteSnapshot {
        /// The checkpoint key.
        key: Arc<str>,
        /// Its sequence number.
        seq: u64,
    },
}

impl WriteOp {
    /// The key the change is about.
    pub fn key(&self) -> &Arc<str> {
        match self {
            WriteOp::Snapshot { key, .. } | WriteOp::Append { key, .. } | WriteOp::DeleteSnapshot { key, .. } => key,
        }
    }
}

/// What is known about one stored snapshot without reading it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotInfo {
    /// Its sequence number.
    pub seq: u64,
    /// Its size in bytes, envelope included.
    pub size: u64,
    /// When it was taken, ms since the Unix epoch.
    pub created_unix_ms: u64,
}

/// The error underneath a [`StoreError`]: the store's own error value, kept whole rather than
/// as its text, so a caller can ask what it was with [`Cause::downcast_ref`]. The local store's
/// causes are `redb::Error` and [`OpenProblem`](crate::OpenProblem), and the store layer's own are
/// [`StoreProblem`]; the cluster's replicated
/// store gives its own typed refusals and proposal errors (see `warden_cluster::store`).
///
/// One failed batch answers every write in it, so a cause is shared, not copied: cloning is a
/// reference count. Its `Display` is the inner error's; [`StoreError`]'s own message already
/// includes it, which is why a `StoreError` reports its cause through [`StoreError::cause`]
/// instead of [`std::error::Error::source`] (a chain printer would show the text twice).
///
/// ```
/// use warden_checkpoint::{Cause, StoreError};
///
/// let err = StoreError::Commit { ops: 3, cause: Cause::new(std::io::Error::from(std::io::ErrorKind::StorageFull)) };
/// let io = err.cause().and_then(|c| c.downcast_ref::<std::io::Error>()).map(|e| e.kind());
/// assert_eq!(io, Some(std::io::ErrorKind::StorageFull));
/// ```
#[derive(Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl Cause {
    /// Keeps `error` as a cause.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause(Arc::new(error))
    }

    /// The error itself.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }

    /// The error as an `E`, if it is one.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }

    /// Whether the error is an `E`.
    pub fn is<E: std::error::Error + 'static>(&self) -> bool {
        self.0.is::<E>()
    }

    /// A cause that is only a message (for code that has no error value of its own, such as a
    /// migration that meets a version it does not know).
    pub fn msg(text: impl Into<String>) -> Cause {
        Cause::new(Message(text.into()))
    }
}

/// Any error is a cause, so `?` turns one into it (`Cause` itself is not an error type, which
/// is what lets this hold for every one).
impl<E: std::error::Error + Send + Sync + 'static> From<E> for Cause {
    fn from(error: E) -> Cause {
        Cause::new(error)
    }
}

/// A cause made from text alone ([`Cause::msg`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&*self.0, f)
    }
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

/// Causes that the store layer itself gives, when no store's own error is underneath.
#[derive(Debug, thiserror::Error)]
pub enum StoreProblem {
    /// A store that started a commit ([`Store::start_commit`]) gave fewer results than ops.
    #[error("the store gave no result")]
    NoResult,
    /// A store dropped a started commit without answering it.
    #[error("the store dropped the commit unanswered")]
    Unanswered,
    /// The blocking task that ran a read failed (it panicked or was cancelled).
    #[error("the reader task failed: {0}")]
    ReaderTask(tokio::task::JoinError),
    /// A synchronous [`Replicated`] store's replicator refused the batch.
    #[error("not replicated: {0}")]
    NotReplicated(StoreError),
}

/// A store failure, naming the operation and the cause.
///
/// Not `PartialEq`: a cause is an error value of any type (compare with `matches!`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened at `path`.
    #[error("cannot open the checkpoint store at {path}: {cause}")]
    Open {
        /// Where.
        path: PathBuf,
        /// Why.
        cause: Cause,
    },
    /// A read failed.
    #[error("cannot read checkpoint {key:?}: {cause}")]
    Read {
        /// The key being read.
        key: String,
        /// Why.
        cause: Cause,
    },
    /// A batch could not be committed; none of it was applied.
    #[error("cannot commit {ops} checkpoint writes: {cause}")]
    Commit {
        /// The size of the failed batch.
        ops: usize,
        /// Why.
        cause: Cause,
    },
    /// The writer thread has stopped (the store was closed).
    #[error("the checkpoint writer has stopped")]
    Closed,
    /// The store refused a write of `key` and applied nothing of it: this writer may no longer
    /// write the key (in a cluster: another node or a later incarnation holds it), or the
    /// write conflicts with what is stored. The writer must reopen the key before it writes
    /// again.
    #[error("checkpoint {key:?}: write refused: {cause}")]
    Refused {
        /// The key.
        key: String,
        /// Why.
        cause: Cause,
    },
    /// Nobody can tell whether the writes were committed (in a cluster: they were proposed,
    /// and no answer came in time). The writer must assume neither; reopening the key decides
    /// every earlier write of it before anything is read.
    #[error("cannot tell whether {ops} checkpoint writes were committed: {cause}")]
    Uncertain {
        /// How many writes.
        ops: usize,
        /// Why.
        cause: Cause,
    },
}

impl StoreError {
    /// Whether the failed write certainly left nothing behind and the writer may go on
    /// writing the key: false for [`StoreError::Refused`] (it may not write) and
    /// [`StoreError::Uncertain`] (it may have been written).
    pub fn writer_may_continue(&self) -> bool {
        !matches!(self, StoreError::Refused { .. } | StoreError::Uncertain { .. })
    }

    /// The error underneath, if this failure has one ([`StoreError::Closed`] has none).
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            StoreError::Open { cause, .. }
            | StoreError::Read { cause, .. }
            | StoreError::Commit { cause, .. }
            | StoreError::Refused { cause, .. }
            | StoreError::Uncertain { cause, .. } => Some(cause),
            StoreError::Closed => None,
        }
    }
}

/// A durable home for snapshots and journal entries.
pub trait Store: Send + Sync + 'static {
    /// Applies every op atomically and durably: when this returns `Ok`, all of them survive
    /// a crash of the process (for durable stores); on `Err`, none was applied.
    fn commit(&self, ops: &[WriteOp]) -> Result<(), StoreError>;
    /// The snapshots of `key`, oldest first.
    fn snapshots(&self, key: &str) -> Result<Vec<SnapshotInfo>, StoreError>;
    /// One snapshot's bytes.
    fn read_snapshot(&self, key: &str, seq: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// The journal entries of `key` with a sequence number above `after`, in order.
    fn journal_after(&self, key: &str, after: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// The highest sequence number used by `key` in snapshots or journal (0 if none).
    fn last_seq(&self, key: &str) -> Result<u64, StoreError>;
    /// Every key with a snapshot or a journal entry.
    fn keys(&self) -> Result<Vec<String>, StoreError>;

    /// Commits `ops` with one result per op, in order. Ops of different keys are independent:
    /// a store that can refuse one key's writes (a cluster refusing a fenced writer) refuses
    /// only those, and the others still commit. The default commits the batch atomically with
    /// [`Store::commit`] and gives every op its result.
    fn commit_each(&self, ops: &[WriteOp]) -> Vec<Result<(), StoreError>> {
        let result = self.commit(ops);
        vec![result; ops.len()]
    }

    /// How many commits the writer thread may have started with [`Store::start_commit`] and
    /// not seen finish, at once. 1 (the default) makes the writer wait for each commit before
    /// it starts the next, which is right for a local store (one write transaction at a time).
    /// A store whose commit is a round trip elsewhere (a cluster's consensus log) allows more,
    /// so that the next batch leaves while the previous one is on its way. The writer never has
    /// two commits in flight that touch the same key, so the store need not keep order between
    /// commits.
    fn commits_in_flight(&self) -> usize {
        1
    }

    /// Starts committing `ops` as [`Store::commit_each`] does and hands the results to `done`
    /// once they are known, perhaps from another thread. The default commits on the caller's
    /// thread before it returns.
    fn start_commit(&self, ops: Vec<WriteOp>, done: CommitDone) {
        done.finish(self.commit_each(&ops));
    }

    /// Makes the caller the only writer of `key` from now on, before it reads the key to
    /// restore it: a store shared by several writers (a cluster) takes or renews the key's
    /// grant for this node and fences every earlier writer of it, this node's own earlier
    /// incarnations included, and returns once every earlier write is decided (committed or
    /// refused for good), so that what the restore reads is final. A store with one process
    /// writing it has nothing to do (the default).
    fn open_key(&self, key: &str) -> Result<(), StoreError> {
        let _ = key;
        Ok(())
    }
}

/// The function a [`CommitDone`] hands its results to.
type SendResults = Box<dyn FnOnce(Vec<Result<(), StoreError>>) + Send>;

/// Where the results of a commit started with [`Store::start_commit`] go: call
/// [`CommitDone::finish`] once, with one result per op. Dropped without it, it reports every op
/// as [`StoreError::Uncertain`] (the store lost track of the commit), so the writer never
/// waits for an answer that cannot come.
pub struct CommitDone {
    send: Option<SendResults>,
    ops: usize,
}

impl std::fmt::Debug for CommitDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitDone").field("ops", &self.ops).finish()
    }
}

impl CommitDone {
    /// Results of a commit of `ops` writes go to `send`.
    pub fn new(ops: usize, send: impl FnOnce(Vec<Result<(), StoreError>>) + Send + 'static) -> CommitDone {
        CommitDone { send: Some(Box::new(send)), ops }
    }

    /// Hands over the commit's results, one per op in order (missing ones count as
    /// [`StoreError::Uncertain`]).
    pub fn finish(mut self, mut results: Vec<Result<(), StoreError>>) {
        results.resize(self.ops, Err(StoreError::Uncertain { ops: 1, cause: Cause::new(StoreProblem::NoResult) }));
        if let Some(send) = self.send.take() {
            send(results);
        }
    }
}

impl Drop for CommitDone {
    fn drop(&mut self) {
        if let Some(send) = self.send.take() {
            let lost = StoreError::Uncertain { ops: self.ops, cause: Cause::new(StoreProblem::Unanswered) };
            send(vec![Err(lost); self.ops]);
        }
    }
}

/// Keeps everything in memory: for tests, and for actors whose state need only survive a
/// restart inside one process. Commits are atomic (one lock).
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    snapshots: BTreeMap<(String, u64), (Vec<u8>, u64)>,
    journal: BTreeMap<(String, u64), Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // A panic while holding this lock cannot leave a half-applied batch (the batch is
        // applied to a copy first), so the data behind a poisoned lock is consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type KeyBounds = (Bound<(String, u64)>, Bound<(String, u64)>);

fn key_range(key: &str) -> KeyBounds {
    (Bound::Included((key.to_string(), 0)), Bound::Included((key.to_string(), u64::MAX)))
}

impl Store for MemoryStore {
    fn commit(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
        let mut guard = self.lock();
        // Apply to copies of the touched keys, then swap in: all or nothing.
        let mut snapshots = guard.snapshots.clone();
        let mut journal = guard.journal.clone();
        for op in ops {
            match op {
                WriteOp::Snapshot { key, seq, bytes, retain, created_unix_ms } => {
                    snapshots.insert((key.to_string(), *seq), (bytes.clone(), *created_unix_ms));
                    let seqs: Vec<u64> = snapshots.range(key_range(key)).map(|((_, s), _)| *s).collect();
                    let keep = (*retain).max(1);
                    if seqs.len() > keep {
                        for s in &seqs[..seqs.len() - keep] {
                            snapshots.remove(&(key.to_string(), *s));
                        }
                    }
                    let oldest = seqs[seqs.len().saturating_sub(keep)];
                    let covered: Vec<u64> =
                        journal.range(key_range(key)).map(|((_, s), _)| *s).take_while(|s| *s <= oldest).collect();
                    for s in covered {
                        journal.remove(&(key.to_string(), s));
                    }
                }
                WriteOp::Append { key, seq, bytes } => {
                    journal.insert((key.to_string(), *seq), bytes.clone());
                }
                WriteOp::DeleteSnapshot { key, seq } => {
                    snapshots.remove(&(key.to_string(), *seq));
                }
            }
        }
        guard.snapshots = snapshots;
        guard.journal = journal;
        Ok(())
    }

    fn snapshots(&self, key: &str) -> Result<Vec<SnapshotInfo>, StoreError> {
        Ok(self
            .lock()
            .snapshots
            .range(key_range(key))
            .map(|((_, seq), (b, at))| SnapshotInfo { seq: *seq, size: b.len() as u64, created_unix_ms: *at })
            .collect())
    }

    fn read_snapshot(&self, key: &str, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().snapshots.get(&(key.to_string(), seq)).map(|(b, _)| b.clone()))
    }

    fn journal_after(&self, key: &str, after: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        if after == u64::MAX {
            return Ok(Vec::new());
        }
        let range = (Bound::Included((key.to_string(), after + 1)), Bound::Included((key.to_string(), u64::MAX)));
        Ok(self.lock().journal.range(range).map(|((_, s), b)| (*s, b.clone())).collect())
    }

    fn last_seq(&self, key: &str) -> Result<u64, StoreError> {
        let g = self.lock();
        let s = g.snapshots.range(key_range(key)).next_back().map(|((_, s), _)| *s).unwrap_or(0);
        let j = g.journal.range(key_range(key)).next_back().map(|((_, s), _)| *s).unwrap_or(0);
        Ok(s.max(j))
    }

    fn keys(&self) -> Result<Vec<String>, StoreError> {
        let g = self.lock();
        let mut keys: Vec<String> = g.snapshots.keys().chain(g.journal.keys()).map(|(k, _)| k.clone()).collect();
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}

/// Copies committed batches somewhere else (another node, in the cluster layer).
pub trait Replicator: Send + Sync + 'static {
    /// Called after every successful local commit with the committed ops. An error is
    /// reported (tracing, and the service's failure count) but never undoes the local commit.
    fn replicate(&self, ops: &[WriteOp]) -> Result<(), StoreError>;
}

/// A store that copies every batch to a [`Replicator`]. Reads are local.
///
/// Two modes:
/// * [`Replicated::new`] (asynchronous): commits locally first, then replicates; a failed
///   replication is logged and never undoes the local commit. Local durability decides
///   acknowledgements: a replica that is down costs redundancy, not availability.
/// * [`Replicated::synchronous`]: replicates first and commits locally only once the replicator
///   confirmed; a failed replication fails the commit (nothing is written locally), so an
///   acknowledged change exists on the replicas before it exists here. This is what state that
///   moves to another node on failover (cluster singletons) needs: every acknowledged change
///   survives the loss of this node. It costs a round trip to a replica per batch (group
///   commit amortises it).
pub struct Replicated<S> {
    local: S,
    replicator: Box<dyn Replicator>,
    synchronous: bool,
}

impl<S: Store> Replicated<S> {
    /// Wraps `local`, replicating through `replicator` after each local commit.
    pub fn new(local: S, replicator: impl Replicator) -> Self {
        Replicated { local, replicator: Box::new(replicator), synchronous: false }
    }

    /// Wraps `local`, replicating through `replicator` before each local commit; a batch the
    /// replicator refuses is not committed.
    pub fn synchronous(local: S, replicator: impl Replicator) -> Self {
        Replicated { local, replicator: Box::new(replicator), synchronous: true }
    }
}

impl<S: Store> Store for Replicated<S> {
    fn commit(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return self.local.commit(ops);
        }
        if self.synchronous {
            self.replicator.replicate(ops).map_err(|e| StoreError::Commit {
                ops: ops.len(),
                cause: Cause::new(StoreProblem::NotReplicated(e)),
            })?;
            return self.local.commit(ops);
        }
        self.local.commit(ops)?;
        if let Err(e) = self.replicator.replicate(ops) {
            tracing::warn!(target: "warden::checkpoint", ops = ops.len(), error = %e, "replication of a committed batch failed");
        }
        Ok(())
    }
    fn snapshots(&self, key: &str) -> Result<Vec<SnapshotInfo>, StoreError> {
        self.local.snapshots(key)
    }
    fn read_snapshot(&self, key: &str, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.local.read_snapshot(key, seq)
    }
    fn journal_after(&self, key: &str, after: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.local.journal_after(key, after)
    }
    fn last_seq(&self, key: &str) -> Result<u64, StoreError> {
        self.local.last_seq(key)
    }
    fn keys(&self) -> Result<Vec<String>, StoreError> {
        self.local.keys()
    }
}

/// Replicates into another store (for example a second [`MemoryStore`] or a store on other
/// disk): the simplest [`Replicator`], and the one the tests use.
impl<S: Store> Replicator for S {
    fn replicate(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
        self.commit(ops)
    }
}

/// The behaviour every store must have; run against each implementation by its tests.
#[cfg(test)]
pub(crate) fn check_store_contract(store: &dyn Store) {
    let k: Arc<str> = Arc::from("acct/1");
    let snap = |seq: u64| WriteOp::Snapshot {
        key: k.clone(),
        seq,
        bytes: vec![seq as u8; 10],
        retain: 2,
        created_unix_ms: 1000 + seq,
    };
    let append = |seq: u64| WriteOp::Append { key: k.clone(), seq, bytes: vec![seq as u8] };
    assert_eq!(store.last_seq("acct/1").unwrap(), 0);
    store.commit(&[append(1), append(2), append(3)]).unwrap();
    store.commit(&[snap(2)]).unwrap();
    // The only snapshot covers entries up to 2: they are dropped.
    assert_eq!(store.journal_after("acct/1", 0).unwrap(), vec![(3, vec![3])]);
    store.commit(&[append(4), snap(4), append(5), snap(5)]).unwrap();
    let infos = store.snapshots("acct/1").unwrap();
    assert_eq!(infos.iter().map(|i| i.seq).collect::<Vec<_>>(), vec![4, 5], "keeps the newest 2");
    assert_eq!(infos[0], SnapshotInfo { seq: 4, size: 10, created_unix_ms: 1004 });
    assert_eq!(store.journal_after("acct/1", 0).unwrap(), vec![(5, vec![5])], "entries up to the oldest kept go");
    assert_eq!(store.journal_after("acct/1", 5).unwrap(), vec![]);
    assert_eq!(store.read_snapshot("acct/1", 5).unwrap(), Some(vec![5; 10]));
    assert_eq!(store.read_snapshot("acct/1", 2).unwrap(), None);
    assert_eq!(store.last_seq("acct/1").unwrap(), 5);
    store.commit(&[WriteOp::Append { key: Arc::from("acct/10"), seq: 1, bytes: vec![] }]).unwrap();
    assert_eq!(store.keys().unwrap(), vec!["acct/1".to_string(), "acct/10".to_string()]);
    assert_eq!(store.last_seq("acct/10").unwrap(), 1, "keys that share a prefix stay apart");
    store.commit(&[WriteOp::DeleteSnapshot { key: k.clone(), seq: 5 }]).unwrap();
    assert_eq!(store.snapshots("acct/1").unwrap().len(), 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_keeps_the_contract() {
        check_store_contract(&MemoryStore::new());
    }

    #[test]
    fn replicated_store_copies_committed_batches() {
        let replica = MemoryStore::new();
        let store = Replicated::new(MemoryStore::new(), replica.clone());
        check_store_contract(&store);
        assert_eq!(replica.keys().unwrap(), store.keys().unwrap());
        assert_eq!(replica.snapshots("acct/1").unwrap(), store.snapshots("acct/1").unwrap());
    }

    struct Refuses;
    impl Replicator for Refuses {
        fn replicate(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
            Err(StoreError::Commit { ops: ops.len(), cause: Cause::new(std::io::Error::other("no replica answered")) })
        }
    }

    #[test]
    fn synchronous_replication_commits_nothing_the_replicas_refused() {
        let replica = MemoryStore::new();
        let store = Replicated::synchronous(MemoryStore::new(), replica.clone());
        check_store_contract(&store);
        assert_eq!(replica.keys().unwrap(), store.keys().unwrap());

        let local = MemoryStore::new();
        let refused = Replicated::synchronous(local.clone(), Refuses);
        let op = WriteOp::Append { key: Arc::from("k"), seq: 1, bytes: vec![1] };
        let err = refused.commit(std::slice::from_ref(&op)).unwrap_err();
        assert!(
            err.to_string().contains("not replicated: cannot commit 1 checkpoint writes: no replica answered"),
            "{err}"
        );
        // The replicator's own error is there to inspect, not only its text.
        let inner = err.cause().and_then(|c| c.downcast_ref::<StoreProblem>());
        let Some(StoreProblem::NotReplicated(StoreError::Commit { cause, .. })) = inner else { panic!("{err:?}") };
        assert_eq!(cause.downcast_ref::<std::io::Error>().map(|e| e.kind()), Some(std::io::ErrorKind::Other));
        assert_eq!(local.last_seq("k").unwrap(), 0, "nothing written locally");
        // Asynchronous mode keeps the local commit.
        Replicated::new(local.clone(), Refuses).commit(&[op]).unwrap();
        assert_eq!(local.last_seq("k").unwrap(), 1);
    }
}
