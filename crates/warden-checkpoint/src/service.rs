//! The checkpoint service of a node: the snapshot actor, the writer thread, the key registry
//! and the API to list and inspect what is stored.
//!
//! One [`Checkpoints`] per node (or per tree: it is a cheap handle, start as many as you have
//! stores). Checkpointed actors hand it their snapshots; its snapshot actor (a ractor actor)
//! encodes them off the actors' tasks and passes them to the writer thread, which commits many
//! at once (see the `writer` module). Durable actors' journal entries go to the writer directly:
//! their handler waits for the commit anyway.
//!
//! ```
//! use warden_checkpoint::{CheckpointConfig, Checkpoints};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let checkpoints = Checkpoints::open_dir(dir.path(), CheckpointConfig::default()).await?;
//! // ... checkpointed actors use it ...
//! assert!(checkpoints.keys().await?.is_empty());
//! assert_eq!(checkpoints.stats().failed_commits, 0);
//! checkpoints.close().await?; // flushes, stops the writer, releases the file
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::Sender;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};
use tokio::sync::{broadcast, oneshot};

use crate::envelope::{DecodeError, EncodeError, EncodeProblem};
use crate::redb_store::RedbStore;
use crate::store::{Cause, SnapshotInfo, Store, StoreError, StoreProblem, WriteOp};
use crate::writer::{self, Ack, Job, WriterCounters};

/// Settings of a checkpoint service.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// Snapshots kept per key (default 3): recovery can fall back over this many minus one
    /// damaged snapshots.
    pub retain: usize,
    /// Capacity of the event channel (default 1024).
    pub event_capacity: usize,
    /// How long a graceful stop waits for its final snapshot to commit (default 5 s).
    pub stop_flush_timeout: Duration,
    /// Keys whose actor has gone that the service still remembers (default
    /// [`DEFAULT_MAX_IDLE_KEYS`]). A key is remembered after its actor stops so that a restart
    /// finds its pending snapshot and its damaged entries; past this many, the key released
    /// longest ago is forgotten (when nothing of it is in flight), and a later actor of that
    /// key starts from what the store holds, as after a process restart.
    pub max_idle_keys: usize,
    /// Damaged entries remembered as already reported (default [`DEFAULT_MAX_DAMAGED`]);
    /// past this many, the oldest record is forgotten, and that entry is decoded and
    /// reported again at its key's next restore.
    pub max_damaged: usize,
}

/// Default of [`CheckpointConfig::max_idle_keys`]: keys, about 200 bytes each.
pub const DEFAULT_MAX_IDLE_KEYS: usize = 10_000;

/// Default of [`CheckpointConfig::max_damaged`]: damaged-entry records.
pub const DEFAULT_MAX_DAMAGED: usize = 10_000;

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            retain: 3,
            event_capacity: 1024,
            stop_flush_timeout: Duration::from_secs(5),
            max_idle_keys: DEFAULT_MAX_IDLE_KEYS,
            max_damaged: DEFAULT_MAX_DAMAGED,
        }
    }
}

/// Something the checkpoint service did or met; also logged under target `warden::checkpoint`.
#[derive(Debug, Clone)]
pub enum CheckpointEvent {
    /// An actor resumed from a snapshot (and replayed journal entries after it).
    Restored {
        /// The checkpoint key.
        key: String,
        /// The snapshot's sequence number (0: none, journal only).
        seq: u64,
        /// The snapshot's age.
        age: Duration,
        /// Journal entries replayed.
        replayed: u64,
    },
    /// An actor found nothing stored and started fresh.
    Fresh {
        /// The checkpoint key.
        key: String,
    },
    /// Stored bytes were rejected; recovery fell back (or, per policy, the start failed).
    Corrupt {
        /// The checkpoint key.
        key: String,
        /// The sequence number of the damaged snapshot or journal entry.
        seq: u64,
        /// `snapshot` or `event`.
        what: &'static str,
        /// Why.
        error: DecodeError,
    },
    /// Nothing usable was left after damage; the actor started fresh as its policy allows.
    StartedFreshAfterDamage {
        /// The checkpoint key.
        key: String,
    },
    /// A snapshot could not be encoded; the actor keeps running and its previous snapshot
    /// stays the latest.
    EncodeFailed {
        /// The checkpoint key.
        key: String,
        /// Why.
        error: EncodeError,
    },
    /// A commit failed; nothing of that batch was written and waiting actors were told.
    CommitFailed {
        /// The error.
        error: StoreError,
        /// How many writes the failed batch held.
        ops: usize,
    },
}

impl CheckpointEvent {
    fn trace(&self) {
        match self {
            CheckpointEvent::Restored { key, seq, age, replayed } => tracing::debug!(target: "warden::checkpoint",
                key = %key, seq, age_ms = age.as_millis() as u64, replayed, "state restored"),
            CheckpointEvent::Fresh { key } => {
                tracing::debug!(target: "warden::checkpoint", key = %key, "no checkpoint: started fresh")
            }
            CheckpointEvent::Corrupt { key, seq, what, error } => tracing::error!(target: "warden::checkpoint",
                key = %key, seq, what, error = %error, "damaged checkpoint rejected; falling back"),
            CheckpointEvent::StartedFreshAfterDamage { key } => tracing::error!(target: "warden::checkpoint",
                key = %key, "no usable checkpoint left: started fresh, as the actor's policy allows"),
            CheckpointEvent::EncodeFailed { key, error } => {
                tracing::error!(target: "warden::checkpoint", key = %key, error = %error, "snapshot not taken")
            }
            CheckpointEvent::CommitFailed { error, ops } => {
                tracing::error!(target: "warden::checkpoint", ops, error = %error, "checkpoint commit failed")
            }
        }
    }
}

/// Why a checkpointed actor could not claim its key or recover.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CheckpointError {
    /// Another live actor uses the same key.
    #[error("checkpoint key {key:?} is already used by live actor {owner}")]
    KeyInUse {
        /// The key.
        key: String,
        /// The actor holding it.
        owner: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No usable state, and the actor's policy says not to start fresh.
    #[error("checkpoint {key:?}: {what} {seq} is unusable ({error}) and the policy forbids starting fresh")]
    Unusable {
        /// The key.
        key: String,
        /// `snapshot` or `event`.
        what: &'static str,
        /// The sequence number of the damaged entry.
        seq: u64,
        /// Why.
        error: DecodeError,
    },
    /// The key does not name a running checkpointed actor.
    #[error("no running checkpointed actor has the key {0:?}")]
    NotRunning(String),
    /// The snapshot could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Counters of a checkpoint service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CheckpointStats {
    /// Transactions committed.
    pub commits: u64,
    /// Writes committed (snapshots, journal entries, deletions).
    pub ops: u64,
    /// Snapshots skipped because a newer one of the same key replaced them before they were
    /// written (a policy's snapshot waiting behind the writer, or one in the same batch).
    pub superseded: u64,
    /// Transactions that failed.
    pub failed_commits: u64,
    /// Total time spent committing, in µs.
    pub commit_micros: u64,
    /// Writes handed to the writer thread and not taken by it yet (a gauge).
    pub pending_writes: u64,
    /// Keys the service remembers, with a running actor or released (a gauge; see
    /// [`CheckpointConfig::max_idle_keys`]).
    pub keys: u64,
    /// Damaged entries remembered as reported (a gauge; see [`CheckpointConfig::max_damaged`]).
    pub damaged: u64,
}

/// How often a claim looks again while the previous holder of its key is on its way out.
const CLAIM_POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// How long a claim waits for the previous holder of its key to release it.
const CLAIM_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// What the registry knows about one key.
pub(crate) struct KeyEntry {
    /// The highest sequence number handed out (snapshots of plain checkpointed actors, events
    /// of durable ones), including writes still in flight.
    pub last_seq: AtomicU64,
    /// The newest snapshot handed to the service, and the newest whose commit has settled.
    pub submitted: AtomicU64,
    pub settled: Arc<AtomicU64>,
    /// Set when a journal write of this key ended refused or with an unknown outcome: the
    /// running incarnation may no longer write (its numbering may be wrong, or it lost the
    /// key); cleared by the next restore, which reopens the key.
    pub poisoned: std::sync::atomic::AtomicBool,
    owner: Mutex<Option<Owner>>,
    /// The one snapshot of this key asked for without an answer (a policy's) that waits for
    /// the snapshot actor: a newer one replaces it instead of queueing behind it, so a slow
    /// disk holds at most this one and the one the writer has in hand.
    pending: Mutex<Option<Take>>,
    /// Its encoded successor on the way to the writer (see `writer::Job::slot`).
    queued: crate::writer::OpSlot,
    /// The number of its latest release (see `Registry::released`).
    released: AtomicU64,
}

struct Owner {
    actor: ActorId,
    /// The owner itself: a stopped owner no longer holds the key, even before its state (and
    /// with it its claim) is dropped.
    cell: ractor::ActorCell,
    /// Asks the owner for a snapshot now (set by actors that run a ticker).
    poke: Option<ActorRef<crate::checkpointed::TickerMsg>>,
}

/// Releases a key when the actor that claimed it goes (restart, stop or kill).
pub(crate) struct Claim {
    pub entry: Arc<KeyEntry>,
    actor: ActorId,
    key: Arc<str>,
    registry: std::sync::Weak<Registry>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let released = {
            let mut owner = self.entry.owner.lock().unwrap_or_else(PoisonError::into_inner);
            if owner.as_ref().map(|o| o.actor) == Some(self.actor) {
                if let Some(poke) = owner.take().and_then(|o| o.poke) {
                    poke.stop(None);
                }
                true
            } else {
                false
            }
        };
        if let (true, Some(registry)) = (released, self.registry.upgrade()) {
            registry.released(&self.key);
        }
    }
}

/// The keys the service knows (with a running actor, or released and remembered) and the
/// damaged entries already reported, each bounded (see [`CheckpointConfig::max_idle_keys`]
/// and [`CheckpointConfig::max_damaged`]).
pub(crate) struct Registry {
    keys: Mutex<Keys>,
    bad: Mutex<Damaged>,
}

#[derive(Default)]
struct Keys {
    map: HashMap<Arc<str>, Arc<KeyEntry>>,
    /// Keys in the order their actors released them, with the number of that release (a key
    /// released again later is only looked at for its latest release).
    released: std::collections::VecDeque<(Arc<str>, u64)>,
    next_release: u64,
    max_idle: usize,
}

#[derive(Default)]
struct Damaged {
    map: HashMap<(Arc<str>, u64), DecodeError>,
    /// Records in the order they were made, for the oldest to go first.
    order: std::collections::VecDeque<(Arc<str>, u64)>,
    max: usize,
}

impl Registry {
    fn new(config: &CheckpointConfig) -> Registry {
        Registry {
            keys: Mutex::new(Keys { max_idle: config.max_idle_keys, ..Keys::default() }),
            bad: Mutex::new(Damaged { max: config.max_damaged, ..Damaged::default() }),
        }
    }

    fn get(&self, key: &str) -> Option<Arc<KeyEntry>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner).map.get(key).cloned()
    }

    /// The actor of `key` released it. Once more keys wait released than the bound, the ones
    /// released longest ago are forgotten; a key claimed again since stays, and so does one
    /// still in use (a snapshot on its way, which the next restore must wait for, or a claim,
    /// restore or write holding it): it is looked at again at a later release.
    fn released(&self, key: &Arc<str>) {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.next_release += 1;
        let release = keys.next_release;
        let Some(entry) = keys.map.get(key) else { return };
        entry.released.store(release, Ordering::Relaxed);
        keys.released.push_back((key.clone(), release));
        let excess = keys.released.len().saturating_sub(keys.max_idle);
        let mut in_use = Vec::new();
        let mut forgotten = Vec::new();
        for _ in 0..excess {
            let Some((oldest, when)) = keys.released.pop_front() else { break };
            let Some(e) = keys.map.get(&oldest) else { continue };
            if e.released.load(Ordering::Relaxed) != when
                || e.owner.lock().unwrap_or_else(PoisonError::into_inner).is_some()
            {
                // Claimed again (its next release queues it anew), or released again later.
                continue;
            }
            let idle = e.submitted.load(Ordering::Acquire) <= e.settled.load(Ordering::Acquire)
                && e.pending.lock().unwrap_or_else(PoisonError::into_inner).is_none()
                // Only the map holds it.
                && Arc::strong_count(e) == 1;
            if idle {
                keys.map.remove(&oldest);
                forgotten.push(oldest);
            } else {
                in_use.push((oldest, when));
            }
        }
        keys.released.extend(in_use);
        drop(keys);
        for key in forgotten {
            self.forget_damage(&key);
        }
    }

    fn known_bad(&self, key: &Arc<str>, seq: u64) -> Option<DecodeError> {
        self.bad.lock().unwrap_or_else(PoisonError::into_inner).map.get(&(key.clone(), seq)).cloned()
    }

    fn mark_bad(&self, key: &Arc<str>, seq: u64, error: DecodeError) {
        let mut bad = self.bad.lock().unwrap_or_else(PoisonError::into_inner);
        if bad.map.insert((key.clone(), seq), error).is_none() {
            bad.order.push_back((key.clone(), seq));
        }
        while bad.map.len() > bad.max {
            let Some(oldest) = bad.order.pop_front() else { break };
            bad.map.remove(&oldest);
        }
    }

    fn discard_bad(&self, key: &Arc<str>, seq: u64) {
        let mut bad = self.bad.lock().unwrap_or_else(PoisonError::into_inner);
        let record = (key.clone(), seq);
        bad.map.remove(&record);
        bad.order.retain(|r| *r != record);
    }

    /// A forgotten key's damaged-entry records go with it. A scan of the records (at most
    /// `max_damaged`), done only when some are kept and a key is forgotten.
    fn forget_damage(&self, key: &Arc<str>) {
        let mut bad = self.bad.lock().unwrap_or_else(PoisonError::into_inner);
        if bad.map.keys().any(|(k, _)| k == key) {
            bad.map.retain(|(k, _), _| k != key);
            bad.order.retain(|(k, _)| k != key);
        }
    }
}

impl Claim {
    pub(crate) fn set_poke(&self, poke: ActorRef<crate::checkpointed::TickerMsg>) {
        let mut owner = self.entry.owner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(o) = owner.as_mut().filter(|o| o.actor == self.actor) {
            o.poke = Some(poke);
        }
    }
}

pub(crate) struct Inner {
    /// `None` once the service is closed.
    store: Mutex<Option<Arc<dyn Store>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub writer: Sender<Job>,
    snapshotter: ActorRef<SnapshotMsg>,
    /// The keys and the damaged entries already reported (not decoded, nor reported, again
    /// while remembered).
    registry: Arc<Registry>,
    events: broadcast::Sender<CheckpointEvent>,
    counters: Arc<WriterCounters>,
    pub config: CheckpointConfig,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The snapshot actor holds the last other sender; when it stops, the writer thread
        // finishes what is queued and ends.
        self.snapshotter.stop(None);
    }
}

/// A node's checkpoint service; cheap to clone.
#[derive(Clone)]
pub struct Checkpoints {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoints").field("config", &self.inner.config).finish()
    }
}

pub(crate) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Checkpoints {
    /// Starts the service on `store`: spawns the writer thread and the snapshot actor.
    pub async fn start(store: impl Store, config: CheckpointConfig) -> Result<Checkpoints, StoreError> {
        let store: Arc<dyn Store> = Arc::new(store);
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let counters = Arc::new(WriterCounters::default());
        let failure_events = events.clone();
        let (writer, thread) = writer::spawn(store.clone(), counters.clone(), move |error, ops| {
            let event = CheckpointEvent::CommitFailed { error: error.clone(), ops };
            event.trace();
            let _ = failure_events.send(event);
        })
        .map_err(|e| StoreError::Open { path: "<writer thread>".into(), cause: Cause::new(e) })?;
        let (snapshotter, _) = Actor::spawn(
            None,
            SnapshotActor,
            SnapshotArgs { writer: writer.clone(), events: events.clone(), counters: counters.clone() },
        )
        .await
        .map_err(|e| StoreError::Open { path: "<snapshot actor>".into(), cause: Cause::new(e) })?;
        Ok(Checkpoints {
            inner: Arc::new(Inner {
                store: Mutex::new(Some(store)),
                writer_thread: Mutex::new(Some(thread)),
                writer,
                snapshotter,
                registry: Arc::new(Registry::new(&config)),
                events,
                counters,
                config,
            }),
        })
    }

    /// Starts the service on the durable default store: a redb file in `data_dir` (created if
    /// missing).
    pub async fn open_dir(data_dir: impl AsRef<Path>, config: CheckpointConfig) -> Result<Checkpoints, StoreError> {
        let dir = data_dir.as_ref().to_path_buf();
        let store = tokio::task::spawn_blocking(move || RedbStore::open(dir)).await.map_err(|e| {
            StoreError::Open { path: data_dir.as_ref().to_path_buf(), cause: Cause::new(StoreProblem::ReaderTask(e)) }
        })??;
        Self::start(store, config).await
    }

    /// The events of this service (restores, damage, failures).
    pub fn subscribe(&self) -> broadcast::Receiver<CheckpointEvent> {
        self.inner.events.subscribe()
    }

    pub(crate) fn emit(&self, event: CheckpointEvent) {
        event.trace();
        let _ = self.inner.events.send(event);
    }

    /// The service's counters.
    pub fn stats(&self) -> CheckpointStats {
        let c = &self.inner.counters;
        CheckpointStats {
            commits: c.commits.load(Ordering::Relaxed),
            ops: c.ops.load(Ordering::Relaxed),
            superseded: c.superseded.load(Ordering::Relaxed),
            failed_commits: c.failed_commits.load(Ordering::Relaxed),
            commit_micros: c.commit_nanos.load(Ordering::Relaxed) / 1000,
            pending_writes: self.inner.writer.len() as u64,
            keys: self.inner.registry.keys.lock().unwrap_or_else(PoisonError::into_inner).map.len() as u64,
            damaged: self.inner.registry.bad.lock().unwrap_or_else(PoisonError::into_inner).map.len() as u64,
        }
    }

    /// The store (for reads; writes go through the service), until the service is closed.
    pub fn store(&self) -> Result<Arc<dyn Store>, StoreError> {
        self.inner.store.lock().unwrap_or_else(PoisonError::into_inner).clone().ok_or(StoreError::Closed)
    }

    /// Commits what is queued, stops the writer thread and releases the store (a redb file
    /// can then be opened again, by this process or another). Later writes and reads fail
    /// with [`StoreError::Closed`]; actors still running lose their later snapshots.
    pub async fn close(&self) -> Result<(), StoreError> {
        let flushed = self.flush().await;
        let (ack, rx) = oneshot::channel();
        let job = Job { op: None, ack: Some(ack), settled: None, close: true, slot: None };
        if self.inner.writer.send(job).is_ok() {
            let _ = rx.await;
        }
        let thread = self.inner.writer_thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        self.inner.store.lock().unwrap_or_else(PoisonError::into_inner).take();
        self.inner.snapshotter.stop(None);
        flushed
    }

    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store()?;
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(|e| StoreError::Read { key: "*".into(), cause: Cause::new(StoreProblem::ReaderTask(e)) })?
    }

    /// Every key with stored checkpoints.
    pub async fn keys(&self) -> Result<Vec<String>, StoreError> {
        self.blocking(|s| s.keys()).await
    }

    /// The last sequence number written for `key` (snapshot or journal entry; 0: none).
    pub async fn last_seq(&self, key: &str) -> Result<u64, StoreError> {
        let key = key.to_string();
        self.blocking(move |s| s.last_seq(&key)).await
    }

    /// The snapshots of `key` (sequence numbers, sizes, times), oldest first.
    pub async fn list(&self, key: &str) -> Result<Vec<SnapshotInfo>, StoreError> {
        let key = key.to_string();
        self.blocking(move |s| s.snapshots(&key)).await
    }

    /// Checks one stored snapshot's envelope without decoding its payload: its header, or
    /// why it is damaged. `Ok(None)`: there is no such snapshot.
    pub async fn inspect(
        &self,
        key: &str,
        seq: u64,
    ) -> Result<Option<Result<crate::envelope::Header, DecodeError>>, StoreError> {
        let k = key.to_string();
        let bytes = self.blocking(move |s| s.read_snapshot(&k, seq)).await?;
        Ok(bytes.map(|b| crate::envelope::open(&b).map(|(h, _)| h)))
    }

    /// Deletes one snapshot (for an operator discarding a damaged one); waits for the commit.
    pub async fn discard(&self, key: &str, seq: u64) -> Result<(), StoreError> {
        let op = WriteOp::DeleteSnapshot { key: Arc::from(key), seq };
        self.write(op).await?;
        self.inner.registry.discard_bad(&Arc::from(key), seq);
        Ok(())
    }

    /// Sends one write to the writer and waits for its commit.
    pub(crate) async fn write(&self, op: WriteOp) -> Result<(), StoreError> {
        let (ack, rx) = oneshot::channel();
        self.inner
            .writer
            .send(Job { op: Some(op), ack: Some(ack), settled: None, close: false, slot: None })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Waits until every snapshot handed to the service so far is committed (or failed).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (ack, rx) = oneshot::channel();
        self.inner.snapshotter.cast(SnapshotMsg::Flush(ack)).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Asks the running actor that owns `key` for a snapshot now and waits for its commit;
    /// returns its sequence number. Works for actors whose policy has an interval or
    /// `on_demand` set (they run a small ticker actor that carries the request). The request
    /// travels on the actor's supervision port, so it overtakes messages still queued in its
    /// mailbox: the snapshot holds the state after the message being handled.
    pub async fn snapshot_now(&self, key: &str) -> Result<u64, CheckpointError> {
        let entry = self.inner.registry.get(key);
        let poke = entry
            .and_then(|e| e.owner.lock().unwrap_or_else(PoisonError::into_inner).as_ref().and_then(|o| o.poke.clone()));
        let poke = poke.ok_or_else(|| CheckpointError::NotRunning(key.to_string()))?;
        let (tx, rx) = oneshot::channel();
        poke.cast(crate::checkpointed::TickerMsg::Now(tx)).map_err(|_| CheckpointError::NotRunning(key.to_string()))?;
        rx.await.map_err(|_| CheckpointError::NotRunning(key.to_string()))?
    }

    /// Claims `key` for `actor`, loading its last sequence number on first use.
    pub(crate) async fn claim(&self, key: &Arc<str>, actor: ractor::ActorCell) -> Result<Claim, CheckpointError> {
        let existing = self.inner.registry.get(key);
        let entry = match existing {
            Some(e) => e,
            None => {
                let k = key.clone();
                let last = self.blocking(move |s| s.last_seq(&k)).await?;
                let mut keys = self.inner.registry.keys.lock().unwrap_or_else(PoisonError::into_inner);
                keys.map
                    .entry(key.clone())
                    .or_insert_with(|| {
                        Arc::new(KeyEntry {
                            last_seq: AtomicU64::new(last),
                            submitted: AtomicU64::new(0),
                            settled: Arc::new(AtomicU64::new(0)),
                            poisoned: std::sync::atomic::AtomicBool::new(false),
                            owner: Mutex::new(None),
                            pending: Mutex::new(None),
                            queued: Default::default(),
                            released: AtomicU64::new(0),
                        })
                    })
                    .clone()
            }
        };
        // A stopped owner does not count: ractor hands a stopped actor's state (and with it its
        // claim) to its supervisor, which drops it only when it handles the termination event
        // (warden's supervisor does so before starting a hung child's replacement; others may
        // not). A live owner may be on its way out (a graceful stop): wait a little for it.
        let deadline = std::time::Instant::now() + CLAIM_RELEASE_WAIT;
        loop {
            let taken_by = {
                let mut owner = entry.owner.lock().unwrap_or_else(PoisonError::into_inner);
                match owner.as_ref() {
                    Some(o) if o.actor != actor.get_id() && o.cell.get_status() < ractor::ActorStatus::Stopping => {
                        Some(o.actor.to_string())
                    }
                    _ => {
                        *owner = Some(Owner { actor: actor.get_id(), cell: actor.clone(), poke: None });
                        None
                    }
                }
            };
            match taken_by {
                None => {
                    return Ok(Claim {
                        entry,
                        actor: actor.get_id(),
                        key: key.clone(),
                        registry: Arc::downgrade(&self.inner.registry),
                    })
                }
                Some(owner) if std::time::Instant::now() >= deadline => {
                    return Err(CheckpointError::KeyInUse { key: key.to_string(), owner })
                }
                Some(_) => tokio::time::sleep(CLAIM_POLL).await,
            }
        }
    }

    /// Hands a snapshot to the snapshot actor; `ack` (if any) hears of its commit.
    pub(crate) fn submit_snapshot(&self, entry: &Arc<KeyEntry>, take: Take) -> Result<(), StoreError> {
        if take.ack.is_some() {
            // Someone waits for this one: it goes as it is (a waiting actor has at most one).
            return self.inner.snapshotter.cast(SnapshotMsg::Take(take)).map_err(|_| StoreError::Closed);
        }
        {
            let mut pending = entry.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(older) = pending.as_mut() {
                // Not handed on yet: the newer state replaces it (its seq is higher, and the
                // settled mark moves to the newer seq when that one settles).
                *older = take;
                self.inner.counters.superseded.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            *pending = Some(take);
        }
        self.inner.snapshotter.cast(SnapshotMsg::Pending(entry.clone())).map_err(|_| StoreError::Closed)
    }

    /// The error of a damaged entry already reported in this process.
    pub(crate) fn known_bad(&self, key: &Arc<str>, seq: u64) -> Option<DecodeError> {
        self.inner.registry.known_bad(key, seq)
    }

    pub(crate) fn mark_bad(&self, key: &Arc<str>, seq: u64, error: DecodeError) {
        self.inner.registry.mark_bad(key, seq, error);
    }
}

/// A snapshot handed over by an actor: its encoding runs on the snapshot actor.
pub(crate) struct Take {
    pub key: Arc<str>,
    pub seq: u64,
    pub retain: usize,
    pub encode: Box<dyn FnOnce(u64, u64) -> Result<Vec<u8>, EncodeError> + Send>,
    pub ack: Option<Ack>,
    pub settled: Option<(Arc<AtomicU64>, u64)>,
}

pub(crate) enum SnapshotMsg {
    Take(Take),
    /// The key's pending snapshot (see `KeyEntry::pending`), taken when handled.
    Pending(Arc<KeyEntry>),
    Flush(Ack),
}

#[cfg(feature = "cluster")]
impl ractor::Message for SnapshotMsg {}

struct SnapshotActor;

struct SnapshotArgs {
    writer: Sender<Job>,
    events: broadcast::Sender<CheckpointEvent>,
    counters: Arc<WriterCounters>,
}

impl Actor for SnapshotActor {
    type Msg = SnapshotMsg;
    type State = SnapshotArgs;
    type Arguments = SnapshotArgs;

    async fn pre_start(
        &self,
        _: ActorRef<SnapshotMsg>,
        args: SnapshotArgs,
    ) -> Result<SnapshotArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _: ActorRef<SnapshotMsg>,
        msg: SnapshotMsg,
        st: &mut SnapshotArgs,
    ) -> Result<(), ActorProcessingErr> {
        // A policy's snapshot: taken from its key's pending slot; once encoded, it waits for
        // the writer in the key's queued slot, where a newer one replaces it.
        let (msg, queued) = match msg {
            SnapshotMsg::Pending(entry) => match entry.pending.lock().unwrap_or_else(PoisonError::into_inner).take() {
                Some(take) => (SnapshotMsg::Take(take), Some(entry.queued.clone())),
                None => return Ok(()),
            },
            other => (other, None),
        };
        match msg {
            SnapshotMsg::Pending(_) => {}
            SnapshotMsg::Take(take) => {
                let created = unix_ms_now();
                // A user's `Serialize` may panic; that must cost this snapshot, not the service.
                let encoded =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (take.encode)(take.seq, created)))
                        .unwrap_or_else(|p| {
                            Err(EncodeError { what: "snapshot", cause: EncodeProblem::Panicked(panic_text(&p)) })
                        });
                match encoded {
                    Ok(bytes) => {
                        let op = WriteOp::Snapshot {
                            key: take.key,
                            seq: take.seq,
                            bytes,
                            retain: take.retain,
                            created_unix_ms: created,
                        };
                        let job = match queued {
                            Some(slot) => {
                                let mut held = slot.lock().unwrap_or_else(PoisonError::into_inner);
                                let replaced = held.replace((op, take.settled)).is_some();
                                drop(held);
                                if replaced {
                                    // The writer has not taken the older one: it takes this instead.
                                    st.counters.superseded.fetch_add(1, Ordering::Relaxed);
                                    return Ok(());
                                }
                                Job { op: None, ack: None, settled: None, close: false, slot: Some(slot) }
                            }
                            None => {
                                Job { op: Some(op), ack: take.ack, settled: take.settled, close: false, slot: None }
                            }
                        };
                        if let Err(crossbeam_channel::SendError(job)) = st.writer.send(job) {
                            if let Some(ack) = job.ack {
                                let _ = ack.send(Err(StoreError::Closed));
                            }
                        }
                    }
                    Err(error) => {
                        let event = CheckpointEvent::EncodeFailed { key: take.key.to_string(), error: error.clone() };
                        event.trace();
                        let _ = st.events.send(event);
                        if let Some((mark, seq)) = take.settled {
                            mark.fetch_max(seq, Ordering::Release);
                        }
                        if let Some(ack) = take.ack {
                            let _ = ack.send(Err(StoreError::Commit { ops: 1, cause: Cause::new(error) }));
                        }
                    }
                }
            }
            SnapshotMsg::Flush(ack) => {
                if let Err(crossbeam_channel::SendError(job)) =
                    st.writer.send(Job { op: None, ack: Some(ack), settled: None, close: false, slot: None })
                {
                    if let Some(ack) = job.ack {
                        let _ = ack.send(Err(StoreError::Closed));
                    }
                }
            }
        }
        Ok(())
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default()
}
