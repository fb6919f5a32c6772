//! The pool: its specification, the shared state its replicas and callers work on, and the
//! caller's handle.
//!
//! Why not `ractor::factory`: a factory owns its workers' lifecycle (it spawns and replaces
//! them itself, outside any supervision tree: no restart intensity, no escalation, no ordered
//! shutdown, no restart in place), and when it replaces a worker it drops the worker's
//! in-flight jobs on the floor (`replace_worker` in ractor 0.16 calls them "lost"); its dead
//! man's switch kills a stuck worker but does not return the job either. warden's pool needs
//! exactly those things, so it is built on warden's own supervision instead: each replica is a
//! warden child (restarted in place, watched for hangs, counted by intensity) and routing runs
//! in the caller's task against shared counters, with no router actor in between. The bench
//! compares its throughput with a factory's (`pool_throughput_ratio`).

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use ractor::Actor;
use tokio::sync::oneshot;
use warden_core::{ChildRef, ChildSpec, SendError, SupervisorChildSpec, SupervisorControl, SupervisorSpec, WorkerSpec};

use crate::job::{Job, Phase, PoolError, Ticket};
use crate::replica::Replica;
use crate::routing::{self, Candidate, Routing};

/// What a full pool does with a new request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Refuse it with [`PoolError::Full`] (the default).
    Reject,
    /// Accept it and drop the oldest request queued (not started) on the chosen replica,
    /// which gets [`PoolError::Shed`]. Rejects if nothing there is only queued.
    ShedOldest,
}

/// A replica as the pool sees it.
pub(crate) struct ReplicaSlot<Req: Send + Sync + 'static, Rep: Send + 'static> {
    pub index: usize,
    pub handle: ChildRef<Job<Req, Rep>>,
    /// Running and not known to be failing; set by the replica's `post_start`.
    pub up: AtomicBool,
    /// Taken out of the pool by a resize.
    pub removed: AtomicBool,
    /// Requests queued on it or in progress.
    pub load: AtomicUsize,
    pub handled: AtomicU64,
    /// Tickets sent to it, oldest first (some may have moved on; pruned as it goes).
    pub queue: Mutex<VecDeque<Arc<Ticket<Req, Rep>>>>,
}

impl<Req: Send + Sync + 'static, Rep: Send + 'static> ReplicaSlot<Req, Rep> {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Ticket<Req, Rep>>>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub answered: AtomicU64,
    pub retries: AtomicU64,
    pub moved: AtomicU64,
    pub shed: AtomicU64,
    pub rejected: AtomicU64,
    pub failed: AtomicU64,
}

type MakeReplica<Req, Rep> = Box<dyn Fn(usize) -> WorkerSpec<Job<Req, Rep>> + Send + Sync>;

/// What the pool's callers and replicas share.
pub(crate) struct PoolInner<Req: Send + Sync + 'static, Rep: Send + 'static> {
    pub name: String,
    routing: Routing,
    capacity: usize,
    on_full: OnFull,
    max_attempts: u32,
    replicas: RwLock<Vec<Arc<ReplicaSlot<Req, Rep>>>>,
    turn: AtomicUsize,
    pub counters: Counters,
    /// Builds replica `i`'s child spec (deadline included).
    make_replica: MakeReplica<Req, Rep>,
    control: std::sync::OnceLock<SupervisorControl>,
    resizing: tokio::sync::Mutex<()>,
    metrics_at: AtomicU64,
    started: std::time::Instant,
}

/// Most times one request is sent to a replica before it is given up: its attempts plus up
/// to 100 moves off replicas that failed or left while it waited (moves are not failures of
/// the request, but a bound keeps a pathological ping-pong from going on forever).
fn max_dispatches(max_attempts: u32) -> u32 {
    max_attempts.saturating_add(100)
}

impl<Req: Send + Sync + 'static, Rep: Send + 'static> PoolInner<Req, Rep> {
    pub(crate) fn slot(&self, index: usize) -> Option<Arc<ReplicaSlot<Req, Rep>>> {
        self.replicas.read().unwrap_or_else(PoisonError::into_inner).get(index).cloned()
    }

    /// Chooses a replica for `ticket` (not `avoid` if there is a choice) and sends it there.
    /// Called with the ticket's phase not `Queued`/`Started`. On failure the ticket is finished
    /// with the error.
    pub(crate) fn dispatch(self: &Arc<Self>, ticket: &Arc<Ticket<Req, Rep>>, avoid: Option<usize>) {
        let mut tried = 0;
        loop {
            let target = match self.choose(ticket.key, avoid) {
                Ok(slot) => slot,
                Err(e) => return self.fail(ticket, e),
            };
            let dispatch = {
                let mut st = ticket.lock();
                if st.phase != Phase::Finished || st.reply.is_none() {
                    return; // answered or failed meanwhile (a shed, say)
                }
                if st.dispatches >= max_dispatches(self.max_attempts) {
                    drop(st);
                    let cause =
                        format!("sent to replicas {} times without being handled", max_dispatches(self.max_attempts));
                    return self.fail(ticket, PoolError::Unplaced { pool: self.name.clone(), cause });
                }
                st.dispatches += 1;
                st.phase = Phase::Queued { replica: target.index, dispatch: st.dispatches };
                st.dispatches
            };
            target.load.fetch_add(1, Ordering::Relaxed);
            target.queue().push_back(ticket.clone());
            let job = Job { ticket: ticket.clone(), pool: self.clone(), replica: target.index, dispatch, done: false };
            match target.handle.cast(job) {
                Ok(()) => return,
                Err(e) => {
                    // Not delivered (not running and its stash full): take it back and try elsewhere.
                    let cause = e.to_string();
                    let job = match e {
                        SendError::NotRunning { message, .. } => message,
                        SendError::StashFull { message, .. } => Some(message),
                    };
                    if let Some(job) = job {
                        job.defuse();
                    }
                    self.leave(&target, ticket, |_| true);
                    tried += 1;
                    if tried > 3 {
                        return self.fail(ticket, PoolError::Unplaced { pool: self.name.clone(), cause });
                    }
                }
            }
        }
    }

    /// Takes the ticket off `slot` (phase back to unplaced) if `phase_ok` holds for its phase.
    fn leave(
        &self,
        slot: &ReplicaSlot<Req, Rep>,
        ticket: &Ticket<Req, Rep>,
        phase_ok: impl FnOnce(Phase) -> bool,
    ) -> bool {
        let mut st = ticket.lock();
        let here =
            matches!(st.phase, Phase::Queued { replica, .. } | Phase::Started { replica, .. } if replica == slot.index);
        if !here || !phase_ok(st.phase) {
            return false;
        }
        st.phase = Phase::Finished;
        drop(st);
        slot.load.fetch_sub(1, Ordering::Relaxed);
        true
    }

    fn choose(&self, key: Option<u64>, avoid: Option<usize>) -> Result<Arc<ReplicaSlot<Req, Rep>>, PoolError> {
        let replicas = self.replicas.read().unwrap_or_else(PoisonError::into_inner);
        let active: Vec<&Arc<ReplicaSlot<Req, Rep>>> =
            replicas.iter().filter(|r| !r.removed.load(Ordering::Relaxed)).collect();
        if active.is_empty() {
            return Err(PoolError::Unplaced { pool: self.name.clone(), cause: "the pool has no replicas".into() });
        }
        let cands: Vec<Candidate> = active
            .iter()
            .map(|r| Candidate {
                index: r.index,
                up: r.up.load(Ordering::Relaxed),
                load: r.load.load(Ordering::Relaxed),
            })
            .collect();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let chosen = match (self.routing, key) {
            (Routing::KeyAffinity, Some(k)) => {
                // The key's replica, up or restarting (its handle keeps the request meanwhile).
                let i = routing::rendezvous(k, cands.iter().map(|c| c.index)).unwrap_or(cands[0].index);
                let c = cands.iter().find(|c| c.index == i).copied().unwrap_or(cands[0]);
                (c.load < self.capacity).then_some(i).ok_or(i)
            }
            (Routing::LeastLoaded, _) => routing::least_loaded(&cands, start, self.capacity, avoid).ok_or(usize::MAX),
            _ => routing::round_robin(&cands, start, self.capacity, avoid).ok_or(usize::MAX),
        };
        let index = match chosen {
            Ok(i) => i,
            Err(full) => {
                // Nobody up with room. If some replica has room but is down (restarting),
                // queue there: its handle stashes until it is back.
                if full == usize::MAX {
                    if let Some(c) = cands.iter().filter(|c| c.load < self.capacity).min_by_key(|c| c.load) {
                        return Ok(active
                            .iter()
                            .find(|r| r.index == c.index)
                            .map(|r| (*r).clone())
                            .unwrap_or_else(|| active[0].clone()));
                    }
                }
                let target = if full == usize::MAX {
                    cands.iter().min_by_key(|c| c.load).map(|c| c.index).unwrap_or(cands[0].index)
                } else {
                    full
                };
                let slot = active
                    .iter()
                    .find(|r| r.index == target)
                    .map(|r| (*r).clone())
                    .unwrap_or_else(|| active[0].clone());
                drop(replicas);
                return self.when_full(slot);
            }
        };
        Ok(active.iter().find(|r| r.index == index).map(|r| (*r).clone()).unwrap_or_else(|| active[0].clone()))
    }

    fn when_full(&self, slot: Arc<ReplicaSlot<Req, Rep>>) -> Result<Arc<ReplicaSlot<Req, Rep>>, PoolError> {
        if self.on_full == OnFull::ShedOldest {
            // The oldest request on that replica that has not started makes room.
            loop {
                let oldest = slot.queue().pop_front();
                let Some(t) = oldest else { break };
                if self.leave(&slot, &t, |p| matches!(p, Phase::Queued { .. })) {
                    self.counters.shed.fetch_add(1, Ordering::Relaxed);
                    self.fail_quietly(&t, PoolError::Shed { pool: self.name.clone() });
                    return Ok(slot);
                }
            }
        }
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        Err(PoolError::Full { pool: self.name.clone(), capacity: self.capacity })
    }

    /// Finishes the ticket with `err` (counted as a failed request unless it is a shed/full).
    fn fail(&self, ticket: &Ticket<Req, Rep>, err: PoolError) {
        if matches!(err, PoolError::Failed { .. } | PoolError::Unplaced { .. }) {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.fail_quietly(ticket, err);
    }

    fn fail_quietly(&self, ticket: &Ticket<Req, Rep>, err: PoolError) {
        let reply = {
            let mut st = ticket.lock();
            st.phase = Phase::Finished;
            st.reply.take()
        };
        if let Some(r) = reply {
            let _ = r.send(Err(err));
        }
    }

    /// A replica claims a job: only the replica and dispatch the ticket is queued on may run it.
    pub(crate) fn claim(&self, job: &Job<Req, Rep>) -> bool {
        let mut st = job.ticket.lock();
        if st.phase == (Phase::Queued { replica: job.replica, dispatch: job.dispatch }) && st.reply.is_some() {
            st.phase = Phase::Started { replica: job.replica, dispatch: job.dispatch };
            st.starts += 1;
            true
        } else {
            false
        }
    }

    /// Drops the front of a replica's queue while it holds tickets no longer queued there.
    pub(crate) fn prune(&self, slot: &ReplicaSlot<Req, Rep>) {
        let mut q = slot.queue();
        while let Some(front) = q.front() {
            let queued_here = matches!(front.lock().phase, Phase::Queued { replica, .. } if replica == slot.index);
            if queued_here {
                break;
            }
            q.pop_front();
        }
    }

    /// The replica's answer.
    pub(crate) fn finish(&self, ticket: &Ticket<Req, Rep>, replica: usize, dispatch: u32, value: Rep) {
        let reply = {
            let mut st = ticket.lock();
            if st.phase != (Phase::Started { replica, dispatch }) {
                return; // moved or returned meanwhile: this answer is not the caller's any more
            }
            st.phase = Phase::Finished;
            st.reply.take()
        };
        if let Some(slot) = self.slot(replica) {
            slot.load.fetch_sub(1, Ordering::Relaxed);
            slot.handled.fetch_add(1, Ordering::Relaxed);
        }
        self.counters.answered.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = reply {
            let _ = r.send(Ok(value));
        }
    }

    /// A job came back unanswered: retry, move or fail it.
    pub(crate) fn handed_back(
        self: &Arc<Self>,
        ticket: &Arc<Ticket<Req, Rep>>,
        replica: usize,
        dispatch: u32,
        why: String,
    ) {
        let (was_started, starts) = {
            let mut st = ticket.lock();
            let started = match st.phase {
                Phase::Started { replica: r, dispatch: d } if r == replica && d == dispatch => true,
                Phase::Queued { replica: r, dispatch: d } if r == replica && d == dispatch => false,
                _ => return, // not this copy's business any more
            };
            st.phase = Phase::Finished;
            if started {
                st.last_failure = Some(why.clone());
            }
            (started, st.starts)
        };
        if let Some(slot) = self.slot(replica) {
            slot.load.fetch_sub(1, Ordering::Relaxed);
        }
        if was_started && (!ticket.retry || starts >= self.max_attempts) {
            let attempts = starts;
            return self.fail(ticket, PoolError::Failed { pool: self.name.clone(), attempts, last: why });
        }
        if was_started {
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.moved.fetch_add(1, Ordering::Relaxed);
        }
        let avoid = (self.routing != Routing::KeyAffinity).then_some(replica);
        self.dispatch(ticket, avoid);
    }

    /// A replica failed (or stopped): out of rotation, and what waits on it goes elsewhere
    /// (for key affinity: back to the same replica's handle, which keeps it for the next
    /// incarnation).
    pub(crate) fn replica_down(self: &Arc<Self>, index: usize) {
        let Some(slot) = self.slot(index) else { return };
        slot.up.store(false, Ordering::Relaxed);
        let waiting: Vec<Arc<Ticket<Req, Rep>>> = slot.queue().drain(..).collect();
        for t in waiting {
            if self.leave(&slot, &t, |p| matches!(p, Phase::Queued { .. })) {
                self.counters.moved.fetch_add(1, Ordering::Relaxed);
                let avoid = (self.routing != Routing::KeyAffinity).then_some(index);
                self.dispatch(&t, avoid);
            }
        }
    }

    /// Publishes the counters and per-replica gauges, at most every 100 ms (with the
    /// `metrics` feature; nothing without it).
    pub(crate) fn maybe_publish(&self) {
        if !cfg!(feature = "metrics") {
            return;
        }
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.metrics_at.load(Ordering::Relaxed);
        if now < last + 100
            || self.metrics_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        self.publish();
    }

    #[cfg(not(feature = "metrics"))]
    fn publish(&self) {}

    #[cfg(feature = "metrics")]
    fn publish(&self) {
        let c = &self.counters;
        let pool = self.name.clone();
        for (name, v) in [
            ("warden_pool_requests_total", &c.requests),
            ("warden_pool_answered_total", &c.answered),
            ("warden_pool_retries_total", &c.retries),
            ("warden_pool_moved_total", &c.moved),
            ("warden_pool_shed_total", &c.shed),
            ("warden_pool_rejected_total", &c.rejected),
            ("warden_pool_failed_total", &c.failed),
        ] {
            metrics::counter!(name, "pool" => pool.clone()).absolute(v.load(Ordering::Relaxed));
        }
        for r in self.replicas.read().unwrap_or_else(PoisonError::into_inner).iter() {
            let replica = r.index.to_string();
            let state = replica_state(r);
            metrics::gauge!("warden_pool_replica_load", "pool" => pool.clone(), "replica" => replica.clone())
                .set(r.load.load(Ordering::Relaxed) as f64);
            metrics::gauge!("warden_pool_replica_up", "pool" => pool.clone(), "replica" => replica)
                .set(if state == ReplicaState::Up { 1.0 } else { 0.0 });
        }
    }
}

fn replica_state<Req: Send + Sync + 'static, Rep: Send + 'static>(r: &ReplicaSlot<Req, Rep>) -> ReplicaState {
    if r.removed.load(Ordering::Relaxed) {
        ReplicaState::Removed
    } else if r.up.load(Ordering::Relaxed) {
        ReplicaState::Up
    } else {
        ReplicaState::Down
    }
}

/// A replica's state in [`PoolStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    /// In rotation.
    Up,
    /// Starting, restarting, or failed and not back yet (hung ones included).
    Down,
    /// Taken out by a resize.
    Removed,
}

/// One replica in [`PoolStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStats {
    /// Its stable index (`r{index}` is its child id).
    pub index: usize,
    /// Up, down or removed.
    pub state: ReplicaState,
    /// Requests queued on it or in progress.
    pub load: usize,
    /// Requests it answered.
    pub handled: u64,
}

/// A pool's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    /// Requests accepted or refused.
    pub requests: u64,
    /// Requests answered.
    pub answered: u64,
    /// Requests started again after a failure.
    pub retries: u64,
    /// Requests moved, unstarted, off a failing or removed replica.
    pub moved: u64,
    /// Requests shed for newer ones (`OnFull::ShedOldest`).
    pub shed: u64,
    /// Requests refused because the pool was full (`OnFull::Reject`).
    pub rejected: u64,
    /// Requests returned with `Failed` or `Unplaced`.
    pub failed: u64,
    /// Every replica, removed ones included.
    pub replicas: Vec<ReplicaStats>,
}

/// The settings of a pool.
#[derive(Debug, Clone)]
struct Settings {
    routing: Routing,
    capacity: usize,
    on_full: OnFull,
    max_attempts: u32,
    deadline: Option<Duration>,
}

type ReplicaFactory<Req, Rep> =
    Arc<dyn Fn(usize, Weak<PoolInner<Req, Rep>>) -> WorkerSpec<Job<Req, Rep>> + Send + Sync>;

/// The specification of a pool: N replicas of a worker under one supervisor, and the rules
/// that route, retry and bound its requests. Set the options, then [`PoolSpec::build`] gives
/// the pool's child spec (to put in a tree) and its handle (how callers reach it) together,
/// so no option can be set after the handle exists.
///
/// ```
/// use warden_pool::{Job, PoolSpec, Routing};
/// use warden_core::{Supervisor, SupervisorSpec};
/// # #[derive(Clone)] struct Echo;
/// # impl ractor::Actor for Echo {
/// #     type Msg = Job<String, String>; type State = (); type Arguments = ();
/// #     async fn pre_start(&self, _: ractor::ActorRef<Self::Msg>, _: ()) -> Result<(), ractor::ActorProcessingErr> { Ok(()) }
/// #     async fn handle(&self, _: ractor::ActorRef<Self::Msg>, job: Self::Msg, _: &mut ()) -> Result<(), ractor::ActorProcessingErr> {
/// #         let text = job.request().clone(); job.reply(text); Ok(())
/// #     }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (spec, pool) = PoolSpec::new("echo", Echo, (), 2).routing(Routing::LeastLoaded).build();
/// let app = Supervisor::start("app", SupervisorSpec::one_for_one().child(spec)).await?;
/// assert_eq!(pool.call("hi".to_string()).await?, "hi");
/// app.shutdown().await;
/// # Ok(()) }
/// ```
pub struct PoolSpec<Req: Send + Sync + 'static, Rep: Send + 'static> {
    name: String,
    settings: Settings,
    size: usize,
    supervisor: SupervisorSpec,
    factory: ReplicaFactory<Req, Rep>,
}

/// The default number of requests one replica may hold, queued or in progress.
pub const DEFAULT_CAPACITY: usize = 1024;
/// The default attempts of a retried request, the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// The restart intensity of a pool's supervisor unless set: 10 restarts within 1 s.
pub const DEFAULT_INTENSITY: (u32, Duration) = (10, Duration::from_secs(1));

impl<Req: Send + Sync + 'static, Rep: Send + 'static> PoolSpec<Req, Rep> {
    /// A pool named `name` of `size` replicas of `worker` (round-robin, capacity 1,024 per
    /// replica, reject when full, 3 attempts; the pool's supervisor allows 10 restarts in 1 s,
    /// which a flaky worker needs).
    pub fn new<W>(name: impl Into<String>, worker: W, args: W::Arguments, size: usize) -> Self
    where
        W: Actor<Msg = Job<Req, Rep>> + Clone,
        W::Arguments: Clone + Sync,
    {
        let factory: ReplicaFactory<Req, Rep> = Arc::new(move |index, pool| {
            let replica = Replica { inner: worker.clone(), pool, index };
            ChildSpec::worker(format!("r{index}"), replica, args.clone())
        });
        PoolSpec {
            name: name.into(),
            settings: Settings {
                routing: Routing::RoundRobin,
                capacity: DEFAULT_CAPACITY,
                on_full: OnFull::Reject,
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                deadline: None,
            },
            size,
            supervisor: SupervisorSpec::one_for_one().intensity(DEFAULT_INTENSITY.0, DEFAULT_INTENSITY.1),
            factory,
        }
    }

    /// Sets the routing.
    pub fn routing(mut self, routing: Routing) -> Self {
        self.settings.routing = routing;
        self
    }

    /// Sets how many requests one replica may hold, queued or in progress (at least 1).
    pub fn capacity(mut self, per_replica: usize) -> Self {
        self.settings.capacity = per_replica.max(1);
        self
    }

    /// Sets what a full pool does.
    pub fn on_full(mut self, policy: OnFull) -> Self {
        self.settings.on_full = policy;
        self
    }

    /// Sets how many replicas may start a retried request (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.settings.max_attempts = n.max(1);
        self
    }

    /// Gives every replica a hang deadline: a handler running longer is killed, its request
    /// retried elsewhere (or returned), and the replica restarted.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.settings.deadline = Some(deadline);
        self
    }

    /// Sets the restart intensity of the pool's supervisor.
    pub fn intensity(mut self, restarts: u32, period: Duration) -> Self {
        self.supervisor = self.supervisor.intensity(restarts, period);
        self
    }

    /// The pool as a child of a tree (a supervisor with id = the pool's name and children
    /// `r0`..`r{n-1}`), and the caller's handle (cheap to clone; valid before the pool starts
    /// and across its restarts).
    pub fn build(self) -> (SupervisorChildSpec, Pool<Req, Rep>) {
        let PoolSpec { name, settings, size, supervisor, factory } = self;
        let inner = Arc::new_cyclic(|weak: &Weak<PoolInner<Req, Rep>>| {
            let weak = weak.clone();
            let deadline = settings.deadline;
            let make_replica: MakeReplica<Req, Rep> = Box::new(move |index| {
                let spec = factory(index, weak.clone());
                match deadline {
                    Some(d) => spec.deadline(d),
                    None => spec,
                }
            });
            PoolInner {
                name: name.clone(),
                routing: settings.routing,
                capacity: settings.capacity,
                on_full: settings.on_full,
                max_attempts: settings.max_attempts,
                replicas: RwLock::new(Vec::new()),
                turn: AtomicUsize::new(0),
                counters: Counters::default(),
                make_replica,
                control: std::sync::OnceLock::new(),
                resizing: tokio::sync::Mutex::new(()),
                metrics_at: AtomicU64::new(0),
                started: std::time::Instant::now(),
            }
        });
        let mut sup = supervisor;
        // Each slot keeps the stable handle of the very spec that goes into the tree.
        let mut slots = Vec::new();
        for index in 0..size {
            let spec = (inner.make_replica)(index);
            slots.push(new_slot(index, &spec));
            sup = sup.child(spec);
        }
        *inner.replicas.write().unwrap_or_else(PoisonError::into_inner) = slots;
        let spec = ChildSpec::supervisor(name, sup);
        let _ = inner.control.set(spec.control());
        (spec, Pool { inner })
    }
}

fn new_slot<Req: Send + Sync + 'static, Rep: Send + 'static>(
    index: usize,
    spec: &WorkerSpec<Job<Req, Rep>>,
) -> Arc<ReplicaSlot<Req, Rep>> {
    Arc::new(ReplicaSlot {
        index,
        handle: spec.handle(),
        up: AtomicBool::new(false),
        removed: AtomicBool::new(false),
        load: AtomicUsize::new(0),
        handled: AtomicU64::new(0),
        queue: Mutex::new(VecDeque::new()),
    })
}

/// Hashes a routing key.
fn key_hash(key: &impl Hash) -> u64 {
    // XXH3 (xxhash-rust), not std's DefaultHasher, whose algorithm is unspecified and may
    // change between Rust versions: the same key goes to the same replica in every process of
    // a build, and across builds as long as the key type's `Hash` writes the same bytes (std
    // promises no such thing across versions; integers are written in the machine's byte
    // order and `usize` differs in size between 32- and 64-bit machines).
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    key.hash(&mut h);
    h.finish()
}

/// A handle to a pool: send requests, resize, read the counters.
pub struct Pool<Req: Send + Sync + 'static, Rep: Send + 'static> {
    inner: Arc<PoolInner<Req, Rep>>,
}

impl<Req: Send + Sync + 'static, Rep: Send + 'static> Clone for Pool<Req, Rep> {
    fn clone(&self) -> Self {
        Pool { inner: self.inner.clone() }
    }
}

impl<Req: Send + Sync + 'static, Rep: Send + 'static> Pool<Req, Rep> {
    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    async fn submit(&self, request: Req, key: Option<u64>, retry: bool) -> Result<Rep, PoolError> {
        let inner = &self.inner;
        inner.counters.requests.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let ticket = Arc::new(Ticket::new(request, key, retry, tx));
        inner.dispatch(&ticket, None);
        inner.maybe_publish();
        match rx.await {
            Ok(answer) => answer,
            // Every path finishes the ticket with an answer or an error; a dropped sender
            // means the pool's state itself was dropped.
            Err(_) => Err(PoolError::Unplaced { pool: inner.name.clone(), cause: "the pool was dropped".into() }),
        }
    }

    /// Sends `request` and waits for its answer. If the replica handling it fails (panic,
    /// error, hang, kill), it is retried on another replica, up to the pool's `max_attempts`;
    /// then [`PoolError::Failed`] says what happened.
    pub async fn call(&self, request: Req) -> Result<Rep, PoolError> {
        self.submit(request, None, true).await
    }

    /// Like [`Pool::call`], but the request is started at most once: if its replica fails
    /// after starting it, the caller gets [`PoolError::Failed`] instead of a retry. (A request
    /// that never started may still move to another replica.)
    pub async fn call_once(&self, request: Req) -> Result<Rep, PoolError> {
        self.submit(request, None, false).await
    }

    /// Sends `request` with a routing key (used by [`Routing::KeyAffinity`]), retried like
    /// [`Pool::call`] on the key's replica once it is back.
    pub async fn call_keyed(&self, key: &impl Hash, request: Req) -> Result<Rep, PoolError> {
        self.submit(request, Some(key_hash(key)), true).await
    }

    /// The replica a key goes to now.
    pub fn replica_for(&self, key: &impl Hash) -> Option<usize> {
        let replicas = self.inner.replicas.read().unwrap_or_else(PoisonError::into_inner);
        routing::rendezvous(
            key_hash(key),
            replicas.iter().filter(|r| !r.removed.load(Ordering::Relaxed)).map(|r| r.index),
        )
    }

    /// The stable handle of replica `index` (for tests and fault injection).
    pub fn replica(&self, index: usize) -> Option<ChildRef<Job<Req, Rep>>> {
        self.inner.slot(index).map(|s| s.handle.clone())
    }

    /// The counters, and every replica's state and load.
    pub fn stats(&self) -> PoolStats {
        let c = &self.inner.counters;
        let replicas = self.inner.replicas.read().unwrap_or_else(PoisonError::into_inner);
        PoolStats {
            requests: c.requests.load(Ordering::Relaxed),
            answered: c.answered.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            moved: c.moved.load(Ordering::Relaxed),
            shed: c.shed.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            replicas: replicas
                .iter()
                .map(|r| ReplicaStats {
                    index: r.index,
                    state: replica_state(r),
                    load: r.load.load(Ordering::Relaxed),
                    handled: r.handled.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }

    /// Publishes the `warden_pool_*` metrics now (they are also published at most every
    /// 100 ms while requests flow). Only with the `metrics` feature: without it, this does
    /// nothing (the same figures are in [`Pool::stats`]).
    pub fn publish_metrics(&self) {
        self.inner.publish();
    }

    /// Grows or shrinks the pool to `size` replicas while it runs. New replicas take the
    /// lowest free indices (so after shrinking and growing back, keys return to the replicas
    /// they had); removed replicas are the highest, their waiting requests move first, and
    /// the request each may be running finishes before it stops.
    pub async fn resize(&self, size: usize) -> Result<(), warden_core::SupervisorError> {
        let inner = &self.inner;
        let _one_at_a_time = inner.resizing.lock().await;
        let Some(control) = inner.control.get() else {
            return Err(warden_core::SupervisorError::Unavailable {
                supervisor: warden_core::ActorPath::root(&inner.name),
                cause: "the pool has not been put in a tree (child_spec) yet".into(),
            });
        };
        let active: Vec<usize> = {
            let r = inner.replicas.read().unwrap_or_else(PoisonError::into_inner);
            r.iter().filter(|s| !s.removed.load(Ordering::Relaxed)).map(|s| s.index).collect()
        };
        if size > active.len() {
            for _ in active.len()..size {
                let index = {
                    let r = inner.replicas.read().unwrap_or_else(PoisonError::into_inner);
                    r.iter().find(|s| s.removed.load(Ordering::Relaxed)).map(|s| s.index).unwrap_or(r.len())
                };
                let spec = (inner.make_replica)(index);
                let slot = new_slot(index, &spec);
                {
                    let mut r = inner.replicas.write().unwrap_or_else(PoisonError::into_inner);
                    if index < r.len() {
                        r[index] = slot;
                    } else {
                        r.push(slot);
                    }
                }
                if let Err(e) = control.start_child(spec).await {
                    if let Some(s) = inner.slot(index) {
                        s.removed.store(true, Ordering::Relaxed);
                    }
                    return Err(e);
                }
            }
        } else {
            let mut doomed: Vec<usize> = active.clone();
            doomed.sort_unstable();
            for index in doomed.into_iter().rev().take(active.len() - size) {
                if let Some(slot) = inner.slot(index) {
                    slot.removed.store(true, Ordering::Relaxed);
                }
                inner.replica_down(index);
                let id = format!("r{index}");
                control.terminate_child(&id).await?;
                control.delete_child(&id).await?;
            }
        }
        Ok(())
    }
}
