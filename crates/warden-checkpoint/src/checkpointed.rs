//! Checkpointed actors: the user's traits, the snapshot policy and the wrapper actor that
//! restores state before the first message and takes snapshots as the policy says.
//!
//! [`Checkpointed<A>`] is an ordinary ractor actor with `A`'s message type. Its `pre_start`
//! runs `A::pre_start`, then loads the newest usable snapshot of its key (falling back over
//! damaged ones), hands it to [`Checkpoint::restore`] and, in durable mode, replays the journal
//! after it through [`EventSourced::apply`]. Because warden restarts a crashed child by running
//! `pre_start` again, a restart is a restore. Snapshots are cloned by the actor
//! ([`Checkpoint::snapshot`]) and encoded and written elsewhere (see [`crate::service`]).
//!
//! ```
//! use std::time::Duration;
//! use warden_checkpoint::{Checkpoint, Checkpointed, Checkpoints, CheckpointConfig, MemoryStore, SnapshotPolicy};
//! use warden_core::{ChildSpec, Supervisor, SupervisorSpec};
//! # use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Clone)] struct Counter;
//! # enum Msg { Add(u64), Get(RpcReplyPort<u64>), Crash }
//! # #[derive(Serialize, Deserialize)] struct Saved { total: u64 }
//! # impl Actor for Counter {
//! #     type Msg = Msg; type State = u64; type Arguments = ();
//! #     async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<u64, ActorProcessingErr> { Ok(0) }
//! #     async fn handle(&self, _: ActorRef<Msg>, msg: Msg, total: &mut u64) -> Result<(), ActorProcessingErr> {
//! #         match msg { Msg::Add(n) => *total += n, Msg::Get(r) => { let _ = r.send(*total); } Msg::Crash => panic!("bug") }
//! #         Ok(())
//! #     }
//! # }
//! impl Checkpoint for Counter {
//!     type Snapshot = Saved;
//!     fn snapshot(&self, total: &u64) -> Saved { Saved { total: *total } }
//!     fn restore(&self, total: &mut u64, saved: Saved) { *total = saved.total }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let checkpoints = Checkpoints::start(MemoryStore::new(), CheckpointConfig::default()).await?;
//! let policy = SnapshotPolicy::new().every_messages(1); // a snapshot after every message
//! let counter = ChildSpec::worker("counter", Checkpointed::new(Counter, &checkpoints, "counter", policy), ());
//! let handle = counter.handle();
//! let app = Supervisor::start("checkpointed-doc", SupervisorSpec::one_for_one().child(counter)).await?;
//! let wait = Some(Duration::from_secs(5));
//! handle.cast(Msg::Add(5))?;
//! assert_eq!(handle.call(Msg::Get, wait).await?, 5);
//! checkpoints.flush().await?;
//! handle.cast(Msg::Crash)?;                            // the restart restores the snapshot
//! assert_eq!(handle.call(Msg::Get, wait).await?, 5);
//! app.shutdown().await;
//! # Ok(()) }
//! ```

use std::any::TypeId;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::envelope::{self, DecodeError, EncodeError, Kind, Migration, NoMigration};
use crate::service::{unix_ms_now, CheckpointError, CheckpointEvent, Checkpoints, Claim, Take};
use crate::store::{Cause, StoreError, WriteOp};

/// An actor whose state (or part of it) survives restarts.
pub trait Checkpoint: Actor {
    /// The saved part of the state.
    type Snapshot: Serialize + DeserializeOwned + Send + 'static;
    /// The schema version of [`Self::Snapshot`]; bump it when a change needs a migration.
    const SCHEMA_VERSION: u32 = 1;

    /// Copies the part of `state` to save. Runs on the actor's task; keep it to a clone.
    fn snapshot(&self, state: &Self::State) -> Self::Snapshot;

    /// Puts a restored snapshot into the state that `pre_start` just built.
    fn restore(&self, state: &mut Self::State, snapshot: Self::Snapshot);

    /// Upgrades a snapshot written with an older schema version. The default refuses, which
    /// counts as a damaged snapshot (with a clear error naming the version).
    /// Return any error (`?` converts it) or [`Cause::msg`]; it becomes the cause of
    /// [`DecodeError::Migration`].
    fn migrate(&self, old: Migration<'_>) -> Result<Self::Snapshot, Cause> {
        Err(NoMigration { from: old.version(), to: Self::SCHEMA_VERSION }.into())
    }

    /// Asks for a snapshot after the current message (on demand, from inside the actor).
    fn snapshot_when(&self, _state: &Self::State) -> bool {
        false
    }
}

/// A durable actor: every change is an event that is committed to the journal before the
/// handler goes on (and replies). Recovery is the newest snapshot plus the events after it.
pub trait EventSourced: Checkpoint {
    /// One change of the state.
    type Event: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The schema version written with each event. Older events are decoded with the current
    /// type (fields added with `#[serde(default)]` need nothing more).
    const EVENT_VERSION: u32 = 1;

    /// Applies one event to the state; must be deterministic, as replay runs it again.
    fn apply(&self, state: &mut Self::State, event: &Self::Event);

    /// Commits `event` durably, then applies it to `state`; returns its sequence number. Call
    /// it from `handle` and reply only after it returns `Ok`: an acknowledged change then
    /// survives any crash. On `Err` nothing was applied to `state`.
    ///
    /// When the store refused the event, or cannot tell whether it was committed (a cluster
    /// that did not answer in time), the error is final for this incarnation: every later
    /// `persist` fails with [`PersistError::RestartRequired`] until the actor restarts, and the
    /// restart reopens the key, which decides the doubtful write before the state is read
    /// back. Let the error fail the handler (`?`) and the supervisor does exactly that.
    fn persist(
        &self,
        state: &mut Self::State,
        event: Self::Event,
    ) -> impl Future<Output = Result<u64, PersistError>> + Send {
        async move {
            let ctx = JOURNAL.try_with(|c| c.clone()).map_err(|_| PersistError::NotDurable)?;
            if ctx.event_type != TypeId::of::<Self::Event>() {
                return Err(PersistError::WrongEventType { expected: ctx.event_type_name });
            }
            let entry = &ctx.claim.entry;
            if entry.poisoned.load(std::sync::atomic::Ordering::Acquire) {
                return Err(PersistError::RestartRequired { key: ctx.key.to_string() });
            }
            let seq = entry.last_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let bytes = envelope::encode(Kind::Event, Self::EVENT_VERSION, seq, unix_ms_now(), &event)
                .map_err(PersistError::Encode)?;
            if let Err(e) = ctx.service.write(WriteOp::Append { key: ctx.key.clone(), seq, bytes }).await {
                if e.writer_may_continue() {
                    // Certainly not committed: give the number back, so the journal has no
                    // hole. Handlers run one at a time, so nobody took a later number.
                    let _ = entry.last_seq.compare_exchange(
                        seq,
                        seq - 1,
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                } else {
                    // Refused, or perhaps committed: numbering on from here could rewrite or
                    // skip an entry. Only a restart (which reopens the key) may write again.
                    entry.poisoned.store(true, std::sync::atomic::Ordering::Release);
                }
                return Err(PersistError::Store(e));
            }
            self.apply(state, &event);
            Ok(seq)
        }
    }
}

/// Why [`EventSourced::persist`] failed; the event was not applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PersistError {
    /// An earlier write of this incarnation was refused or ended with an unknown outcome;
    /// nothing more may be written until the actor restarts (which reopens the key).
    #[error("checkpoint {key:?}: an earlier write was refused or may not have been committed; restart to write again")]
    RestartRequired {
        /// The key.
        key: String,
    },
    /// Called outside the handler of an actor started with [`Checkpointed::durable`].
    #[error("persist called outside a durable checkpointed actor's handler")]
    NotDurable,
    /// The event type differs from the one the actor was started with.
    #[error("persist called with the wrong event type (this actor journals {expected})")]
    WrongEventType {
        /// The actor's event type.
        expected: &'static str,
    },
    /// The event could not be encoded.
    #[error("cannot encode the event: {0}")]
    Encode(EncodeError),
    /// The commit failed; the event is not in the journal.
    #[error("the journal commit failed: {0}")]
    Store(StoreError),
}

impl PersistError {
    /// Whether this incarnation can write no more: the store refused the event or cannot tell
    /// whether it was committed (or an earlier write ended so). Every later `persist` fails
    /// until the actor restarts, so a handler that answers the error to its caller must then
    /// fail itself (return the error) for the supervisor to restart it; an actor that only
    /// answers would refuse every write from then on.
    pub fn restart_required(&self) -> bool {
        match self {
            PersistError::RestartRequired { .. } => true,
            PersistError::Store(e) => !e.writer_may_continue(),
            PersistError::NotDurable | PersistError::WrongEventType { .. } | PersistError::Encode(_) => false,
        }
    }
}

/// What a checkpointed actor does when every stored state it has is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfDamaged {
    /// Fail the start (the supervisor then handles it like any failed start). The damaged
    /// entries are decoded once per process; later attempts fail at once with the same error.
    FailStart,
    /// Start from the newest usable state: an older snapshot, the events before a damaged
    /// one, or fresh. An error event names what was skipped.
    Continue,
}

/// When snapshots are taken.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotPolicy {
    /// After this many messages (or, in durable mode, events) since the last snapshot.
    pub every_messages: Option<u64>,
    /// At this interval while the state has changed (runs a small ticker actor).
    pub every: Option<Duration>,
    /// On a graceful stop (waits for the commit, up to the service's flush timeout).
    pub on_stop: bool,
    /// Allow [`Checkpoints::snapshot_now`] for this actor (runs the ticker actor).
    pub on_demand: bool,
    /// What to do when the stored state is damaged.
    pub if_damaged: IfDamaged,
    /// Snapshots kept (`None`: the service's setting).
    pub retain: Option<usize>,
    /// Durable mode: a snapshot is taken, whatever the other triggers say, once this many
    /// events were journalled since the last one, so that a restart never replays more
    /// (`None`: no limit, through [`SnapshotPolicy::unbounded_journal`]). Default
    /// [`DEFAULT_MAX_JOURNAL`].
    pub max_journal: Option<u64>,
}

/// The most events a durable actor journals between two snapshots unless its policy says
/// otherwise: 10,000. A restart then replays at most that many (plus any written while the
/// last snapshot was on its way).
pub const DEFAULT_MAX_JOURNAL: u64 = 10_000;

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            every_messages: None,
            every: None,
            on_stop: true,
            on_demand: false,
            if_damaged: IfDamaged::FailStart,
            retain: None,
            max_journal: Some(DEFAULT_MAX_JOURNAL),
        }
    }
}

impl SnapshotPolicy {
    /// Snapshots on graceful stop only; add triggers with the other methods.
    pub fn new() -> Self {
        Self::default()
    }
    /// Also after every `n` messages (durable mode: events).
    pub fn every_messages(mut self, n: u64) -> Self {
        self.every_messages = Some(n.max(1));
        self
    }
    /// Durable mode: a snapshot at the latest after `n` events since the last one (see
    /// [`SnapshotPolicy::max_journal`]).
    pub fn max_journal(mut self, n: u64) -> Self {
        self.max_journal = Some(n.max(1));
        self
    }
    /// Durable mode: no forced snapshot; a restart replays the whole journal since the last
    /// snapshot, however long.
    pub fn unbounded_journal(mut self) -> Self {
        self.max_journal = None;
        self
    }
    /// Also every `interval` while changed.
    pub fn every(mut self, interval: Duration) -> Self {
        self.every = Some(interval);
        self
    }
    /// Whether to snapshot on graceful stop.
    pub fn on_stop(mut self, on: bool) -> Self {
        self.on_stop = on;
        self
    }
    /// Allows snapshots on request from outside ([`Checkpoints::snapshot_now`]).
    pub fn on_demand(mut self, on: bool) -> Self {
        self.on_demand = on;
        self
    }
    /// Sets what happens when the stored state is damaged.
    pub fn if_damaged(mut self, what: IfDamaged) -> Self {
        self.if_damaged = what;
        self
    }
    /// Keeps `n` snapshots of this actor.
    pub fn retain(mut self, n: usize) -> Self {
        self.retain = Some(n.max(1));
        self
    }
}

type ReplayFn<A> = fn(&A, &mut <A as Actor>::State, &[u8]) -> Result<(), DecodeError>;

/// What the wrapper needs to know about a durable actor's events.
struct DurableHooks<A: Actor> {
    replay: ReplayFn<A>,
    event_type: TypeId,
    event_type_name: &'static str,
}

impl<A: Actor> Clone for DurableHooks<A> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A: Actor> Copy for DurableHooks<A> {}

fn replay_event<A: EventSourced>(actor: &A, state: &mut A::State, bytes: &[u8]) -> Result<(), DecodeError> {
    let (_, event): (_, A::Event) = envelope::decode(bytes, Kind::Event, A::EVENT_VERSION, |m| Ok(m.decode()?))?;
    actor.apply(state, &event);
    Ok(())
}

/// The journal of the durable actor whose handler is running.
struct JournalCtx {
    service: Checkpoints,
    key: Arc<str>,
    claim: Arc<Claim>,
    event_type: TypeId,
    event_type_name: &'static str,
}

tokio::task_local! {
    static JOURNAL: Arc<JournalCtx>;
}

/// Wraps a [`Checkpoint`] actor so that its state is saved and restored.
pub struct Checkpointed<A: Checkpoint> {
    inner: A,
    service: Checkpoints,
    key: Arc<str>,
    policy: SnapshotPolicy,
    durable: Option<DurableHooks<A>>,
}

impl<A: Checkpoint + Clone> Clone for Checkpointed<A> {
    fn clone(&self) -> Self {
        Checkpointed {
            inner: self.inner.clone(),
            service: self.service.clone(),
            key: self.key.clone(),
            policy: self.policy.clone(),
            durable: self.durable,
        }
    }
}

impl<A: Checkpoint> Checkpointed<A> {
    /// `actor`, saved under `key` in `service` as `policy` says. Keys are unique per service
    /// among live actors; a second live actor with the same key fails its start.
    pub fn new(actor: A, service: &Checkpoints, key: impl Into<String>, policy: SnapshotPolicy) -> Self {
        Checkpointed { inner: actor, service: service.clone(), key: Arc::from(key.into()), policy, durable: None }
    }

    /// The checkpoint key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl<A: EventSourced> Checkpointed<A> {
    /// A durable actor: its handler calls [`EventSourced::persist`] for every change, and
    /// recovery replays the journal after the newest snapshot.
    pub fn durable(actor: A, service: &Checkpoints, key: impl Into<String>, policy: SnapshotPolicy) -> Self {
        let hooks = DurableHooks {
            replay: replay_event::<A>,
            event_type: TypeId::of::<A::Event>(),
            event_type_name: std::any::type_name::<A::Event>(),
        };
        Checkpointed { durable: Some(hooks), ..Self::new(actor, service, key, policy) }
    }
}

/// The wrapper's state: the user's state and the snapshot bookkeeping.
pub struct CheckpointedState<A: Actor> {
    inner: A::State,
    claim: Arc<Claim>,
    /// Messages (durable: events) since the last snapshot.
    since: u64,
    /// The sequence number of the last snapshot taken (durable: the event it covers).
    snapshot_seq: u64,
    last_snapshot: Instant,
    journal: Option<Arc<JournalCtx>>,
}

impl<A: Actor> CheckpointedState<A> {
    /// The user's state.
    pub fn inner(&self) -> &A::State {
        &self.inner
    }
}

/// The ticker's messages.
#[doc(hidden)]
pub enum TickerMsg {
    Tick,
    Now(oneshot::Sender<Result<u64, CheckpointError>>),
}

#[cfg(feature = "cluster")]
impl ractor::Message for TickerMsg {}

/// A control signal (`warden_core::control`) from the ticker to its actor: the only way into
/// a running actor that needs no message of the user's type, and it overtakes the mailbox.
struct SnapshotSignal(Mutex<Option<oneshot::Sender<Result<u64, CheckpointError>>>>);

/// A tiny actor linked under a checkpointed actor: its interval ticks and on-demand requests
/// reach the actor as supervision events.
struct Ticker;

struct TickerState {
    owner: ActorCell,
    interval: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for Ticker {
    type Msg = TickerMsg;
    type State = TickerState;
    type Arguments = (ActorCell, Option<Duration>);

    async fn pre_start(
        &self,
        myself: ActorRef<TickerMsg>,
        (owner, every): Self::Arguments,
    ) -> Result<TickerState, ActorProcessingErr> {
        let interval = every.map(|p| myself.send_interval(p, || TickerMsg::Tick));
        Ok(TickerState { owner, interval })
    }

    async fn handle(
        &self,
        myself: ActorRef<TickerMsg>,
        msg: TickerMsg,
        st: &mut TickerState,
    ) -> Result<(), ActorProcessingErr> {
        if st.owner.get_status() as u8 >= ractor::ActorStatus::Stopping as u8 {
            myself.stop(None);
            return Ok(());
        }
        let reply = match msg {
            TickerMsg::Tick => None,
            TickerMsg::Now(reply) => Some(reply),
        };
        warden_core::control::signal_parent(&myself.get_cell(), SnapshotSignal(Mutex::new(reply)));
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<TickerMsg>, st: &mut TickerState) -> Result<(), ActorProcessingErr> {
        if let Some(h) = st.interval.take() {
            h.abort();
        }
        Ok(())
    }
}

impl<A: Checkpoint> Checkpointed<A> {
    fn retain(&self) -> usize {
        self.policy.retain.unwrap_or(self.service.inner.config.retain)
    }

    /// Loads the newest usable snapshot into `state` and replays the journal after it.
    async fn recover(
        &self,
        state: &mut A::State,
        claim: &Claim,
    ) -> Result<Option<warden_core::RestoredFrom>, CheckpointError> {
        // A snapshot this key handed over before a crash may still be on its way to the
        // store: wait for it, so that a restart resumes from the newest state taken.
        let entry = &claim.entry;
        if entry.submitted.load(std::sync::atomic::Ordering::Acquire)
            > entry.settled.load(std::sync::atomic::Ordering::Acquire)
        {
            self.service.flush().await?;
        }
        let key = self.key.clone();
        // Become the key's only writer, fencing earlier ones (this node's earlier incarnations
        // included), so that nothing written before can still land after what is read here.
        let k = key.clone();
        self.read(move |s| s.open_key(&k)).await?;
        let k = key.clone();
        let snapshots = self.read(move |s| s.snapshots(&k)).await?;
        // Numbering continues exactly from the highest sequence number stored: the store may
        // have moved on since this process last numbered the key (another node wrote it), or
        // a doubtful write of the last incarnation may not have landed.
        let mut stored_last = snapshots.iter().map(|i| i.seq).max().unwrap_or(0);
        let mut skipped = 0u32;
        let mut first_damage: Option<(&'static str, u64, DecodeError)> = None;
        let mut restored: Option<(u64, u64)> = None; // (seq, created)
        for info in snapshots.iter().rev() {
            if let Some(err) = self.service.known_bad(&key, info.seq) {
                skipped += 1;
                first_damage.get_or_insert(("snapshot", info.seq, err));
                continue;
            }
            let (k, seq) = (key.clone(), info.seq);
            let Some(bytes) = self.read(move |s| s.read_snapshot(&k, seq)).await? else { continue };
            match envelope::decode::<A::Snapshot>(&bytes, Kind::Snapshot, A::SCHEMA_VERSION, |m| self.inner.migrate(m))
            {
                Ok((header, snap)) => {
                    self.inner.restore(state, snap);
                    restored = Some((header.seq, header.created_unix_ms));
                    break;
                }
                Err(error) => {
                    self.service.mark_bad(&key, info.seq, error.clone());
                    self.service.emit(CheckpointEvent::Corrupt {
                        key: key.to_string(),
                        seq: info.seq,
                        what: "snapshot",
                        error: error.clone(),
                    });
                    skipped += 1;
                    first_damage.get_or_insert(("snapshot", info.seq, error));
                }
            }
        }
        if restored.is_none() && self.policy.if_damaged == IfDamaged::FailStart {
            if let Some((what, seq, error)) = first_damage {
                return Err(CheckpointError::Unusable { key: key.to_string(), what, seq, error });
            }
        }
        let base = restored.map_or(0, |(seq, _)| seq);
        let mut replayed = 0u64;
        if let Some(hooks) = self.durable {
            let k = key.clone();
            let entries = self.read(move |s| s.journal_after(&k, base)).await?;
            stored_last = stored_last.max(entries.last().map_or(0, |(seq, _)| *seq));
            for (seq, bytes) in entries {
                let err = match self.service.known_bad(&key, seq) {
                    Some(e) => Err(e),
                    None => (hooks.replay)(&self.inner, state, &bytes),
                };
                if let Err(error) = err {
                    if self.service.known_bad(&key, seq).is_none() {
                        self.service.mark_bad(&key, seq, error.clone());
                        self.service.emit(CheckpointEvent::Corrupt {
                            key: key.to_string(),
                            seq,
                            what: "event",
                            error: error.clone(),
                        });
                    }
                    if self.policy.if_damaged == IfDamaged::FailStart {
                        return Err(CheckpointError::Unusable { key: key.to_string(), what: "event", seq, error });
                    }
                    skipped += 1;
                    break;
                }
                replayed += 1;
            }
        }
        entry.last_seq.store(stored_last, std::sync::atomic::Ordering::Relaxed);
        entry.poisoned.store(false, std::sync::atomic::Ordering::Release);
        let now = unix_ms_now();
        match restored {
            None if replayed == 0 && skipped == 0 => {
                self.service.emit(CheckpointEvent::Fresh { key: key.to_string() });
                Ok(None)
            }
            _ => {
                if restored.is_none() && replayed == 0 {
                    self.service.emit(CheckpointEvent::StartedFreshAfterDamage { key: key.to_string() });
                }
                let (seq, created) = restored.unwrap_or((0, now));
                let age_ms = now.saturating_sub(created);
                self.service.emit(CheckpointEvent::Restored {
                    key: key.to_string(),
                    seq,
                    age: Duration::from_millis(age_ms),
                    replayed,
                });
                Ok(Some(warden_core::RestoredFrom { seq, age_ms, replayed, skipped }))
            }
        }
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn crate::store::Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.service.blocking(f).await
    }

    /// Hands a snapshot of `st` to the service. Returns its sequence number.
    fn take_snapshot(&self, st: &mut CheckpointedState<A>, ack: Option<crate::writer::Ack>) -> Result<u64, StoreError> {
        let entry = &st.claim.entry;
        let seq = match self.durable {
            Some(_) => entry.last_seq.load(std::sync::atomic::Ordering::Relaxed),
            None => entry.last_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
        };
        let snap = self.inner.snapshot(&st.inner);
        let version = A::SCHEMA_VERSION;
        let take = Take {
            key: self.key.clone(),
            seq,
            retain: self.retain(),
            encode: Box::new(move |seq, created| envelope::encode(Kind::Snapshot, version, seq, created, &snap)),
            ack,
            settled: Some((entry.settled.clone(), seq)),
        };
        entry.submitted.fetch_max(seq, std::sync::atomic::Ordering::Release);
        st.since = 0;
        st.snapshot_seq = seq;
        st.last_snapshot = Instant::now();
        self.service.submit_snapshot(entry, take)?;
        Ok(seq)
    }

    fn snapshot_due(&self, st: &CheckpointedState<A>) -> bool {
        if self.inner.snapshot_when(&st.inner) {
            return true;
        }
        if st.since == 0 {
            return false;
        }
        self.policy.every_messages.is_some_and(|n| st.since >= n)
            || self.policy.every.is_some_and(|p| st.last_snapshot.elapsed() >= p)
            || (self.durable.is_some() && self.policy.max_journal.is_some_and(|n| st.since >= n))
    }
}

impl<A: Checkpoint> Actor for Checkpointed<A> {
    type Msg = A::Msg;
    type State = CheckpointedState<A>;
    type Arguments = A::Arguments;

    async fn pre_start(&self, myself: ActorRef<A::Msg>, args: A::Arguments) -> Result<Self::State, ActorProcessingErr> {
        let claim = Arc::new(self.service.claim(&self.key, myself.get_cell()).await?);
        let mut inner = self.inner.pre_start(myself.clone(), args).await?;
        // Counting towards the next snapshot starts from the one restored, so that crashes
        // between snapshots cannot postpone them forever (and replay stays bounded).
        let mut snapshot_seq = 0;
        if let Some(from) = self.recover(&mut inner, &claim).await? {
            snapshot_seq = from.seq;
            warden_core::note_restored(from);
        }
        if self.policy.every.is_some() || self.policy.on_demand {
            let (ticker, _) =
                Actor::spawn_linked(None, Ticker, (myself.get_cell(), self.policy.every), myself.get_cell())
                    .await
                    .map_err(|e| format!("cannot start the snapshot ticker: {e}"))?;
            claim.set_poke(ticker);
        }
        let journal = self.durable.map(|hooks| {
            Arc::new(JournalCtx {
                service: self.service.clone(),
                key: self.key.clone(),
                claim: claim.clone(),
                event_type: hooks.event_type,
                event_type_name: hooks.event_type_name,
            })
        });
        let since = match self.durable {
            Some(_) => claim.entry.last_seq.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(snapshot_seq),
            None => 0,
        };
        Ok(CheckpointedState { inner, claim, since, snapshot_seq, last_snapshot: Instant::now(), journal })
    }

    async fn post_start(&self, myself: ActorRef<A::Msg>, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        self.inner.post_start(myself, &mut st.inner).await
    }

    async fn handle(
        &self,
        myself: ActorRef<A::Msg>,
        msg: A::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match &st.journal {
            None => {
                self.inner.handle(myself, msg, &mut st.inner).await?;
                st.since += 1;
            }
            Some(ctx) => {
                JOURNAL.scope(ctx.clone(), self.inner.handle(myself, msg, &mut st.inner)).await?;
                let last = st.claim.entry.last_seq.load(std::sync::atomic::Ordering::Relaxed);
                st.since = last.saturating_sub(st.snapshot_seq);
            }
        }
        if self.snapshot_due(st) {
            if let Err(e) = self.take_snapshot(st, None) {
                tracing::error!(target: "warden::checkpoint", key = %self.key, error = %e, "snapshot not taken");
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<A::Msg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(signal) = warden_core::control::read::<SnapshotSignal>(&evt) {
            let reply = signal.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            match reply {
                None if st.since > 0 || self.inner.snapshot_when(&st.inner) => {
                    if let Err(e) = self.take_snapshot(st, None) {
                        tracing::error!(target: "warden::checkpoint", key = %self.key, error = %e, "snapshot not taken");
                    }
                }
                None => {}
                Some(reply) => {
                    let (ack, done) = oneshot::channel();
                    match self.take_snapshot(st, Some(ack)) {
                        Ok(seq) => {
                            tokio::spawn(async move {
                                let result = match done.await {
                                    Ok(Ok(())) => Ok(seq),
                                    Ok(Err(e)) => Err(CheckpointError::Store(e)),
                                    Err(_) => Err(CheckpointError::Store(StoreError::Closed)),
                                };
                                let _ = reply.send(result);
                            });
                        }
                        Err(e) => {
                            let _ = reply.send(Err(CheckpointError::Store(e)));
                        }
                    }
                }
            }
            return Ok(());
        }
        // The ticker's own lifecycle is none of the user's business.
        let about_ticker = match &evt {
            SupervisionEvent::ActorStarted(c) | SupervisionEvent::ActorFailed(c, _) => {
                c.is_message_type_of::<TickerMsg>() == Some(true)
            }
            SupervisionEvent::ActorTerminated(c, _, _) => c.is_message_type_of::<TickerMsg>() == Some(true),
            _ => false,
        };
        if about_ticker {
            return Ok(());
        }
        self.inner.handle_supervisor_evt(myself, evt, &mut st.inner).await
    }

    async fn post_stop(&self, myself: ActorRef<A::Msg>, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        if self.policy.on_stop && (st.since > 0 || st.snapshot_seq == 0) {
            let (ack, done) = oneshot::channel();
            match self.take_snapshot(st, Some(ack)) {
                Ok(_) => match tokio::time::timeout(self.service.inner.config.stop_flush_timeout, done).await {
                    Ok(Ok(Ok(()))) => {}
                    Ok(Ok(Err(e))) => {
                        tracing::error!(target: "warden::checkpoint", key = %self.key, error = %e, "final snapshot failed")
                    }
                    Ok(Err(_)) | Err(_) => tracing::error!(target: "warden::checkpoint", key = %self.key,
                        "final snapshot not confirmed before the stop timeout"),
                },
                Err(e) => {
                    tracing::error!(target: "warden::checkpoint", key = %self.key, error = %e, "final snapshot failed")
                }
            }
        }
        self.inner.post_stop(myself, &mut st.inner).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::EncodeProblem;

    #[test]
    fn only_refused_or_doubtful_writes_require_a_restart() {
        let key = || "k".to_string();
        let restart = [
            PersistError::RestartRequired { key: key() },
            PersistError::Store(StoreError::Refused { key: key(), cause: Cause::new(std::io::Error::other("fenced")) }),
            PersistError::Store(StoreError::Uncertain {
                ops: 1,
                cause: Cause::new(std::io::Error::other("no answer")),
            }),
        ];
        let go_on = [
            PersistError::Store(StoreError::Commit { ops: 1, cause: Cause::new(std::io::Error::other("no leader")) }),
            PersistError::Store(StoreError::Closed),
            PersistError::NotDurable,
            PersistError::Encode(EncodeError { what: "event", cause: EncodeProblem::TooLarge { bytes: 1 << 33 } }),
        ];
        assert!(restart.iter().all(PersistError::restart_required));
        assert!(!go_on.iter().any(PersistError::restart_required));
    }
}
