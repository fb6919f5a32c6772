//! The supervisor actor: a thin shell that carries out the decisions of [`crate::decision`].
//!
//! One supervisor is one ractor actor holding plain data: its children in start order,
//! each with a status, an incarnation count and an optional backoff schedule, and one
//! restart-intensity window. Every exit path states which rule applies:
//!
//! * a child exits (ractor's `ActorTerminated` / `ActorFailed`) or crashes in a handler
//!   (a `ChildCrashed` report from the host actor in `child.rs`): [`restart_wanted`] decides whether it
//!   is restarted; if so the restart is recorded in the intensity window (too many: shut
//!   down and escalate), a backoff delay is taken, and [`group_plan`] says which siblings are
//!   stopped and started again;
//! * a restart that fails is retried later through a message to itself, counted again,
//!   while the child shows as `Restarting` and the runtime API keeps answering;
//! * on stop, children are stopped one by one in reverse start order by their shutdown
//!   policies (dynamic children concurrently, under one timer).
//!
//! ```
//! use warden_core::{ChildSpec, ChildStatus, SupervisorError, Supervisor, SupervisorSpec};
//! # #[derive(Clone)] struct Conn;
//! # impl ractor::Actor for Conn {
//! #     type Msg = (); type State = (); type Arguments = u16;
//! #     async fn pre_start(&self, _: ractor::ActorRef<()>, _: u16) -> Result<(), ractor::ActorProcessingErr> { Ok(()) }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let conns = Supervisor::start("conns", SupervisorSpec::dynamic(Some(2))).await?;
//! let first = conns.start_child(ChildSpec::worker("conn", Conn, 8080)).await?;
//! assert_eq!(first.status, ChildStatus::Running);
//! conns.start_child(ChildSpec::worker("conn", Conn, 8081)).await?;
//! // OTP's error cases, by name: the third is one too many.
//! let full = conns.start_child(ChildSpec::worker("conn", Conn, 8082)).await;
//! assert!(matches!(full, Err(SupervisorError::MaxChildren { .. })));
//! assert_eq!(conns.count_children().await?.active, 2);
//! conns.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
mod children;

pub(crate) use api::ExitNote;
pub use api::{
    ChildCounts, ChildInfo, ChildStatus, SupervisorControl, SupervisorError, SupervisorRef, SupervisorStatus,
};

use std::any::Any;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::decision::{group_plan, plan_exit, ChildView, ExitFacts, ExitPlan, GroupPlan, IntensityWindow};
use crate::event::{EventBus, SupervisorEvent};
use crate::handle::{ChildRef, Slot, SlotControl};
use crate::panic_capture::Captured;
use crate::path::ActorPath;
use crate::reason::{spawn_cause, ExitReason, SHUTDOWN};
use crate::report::{self, CrashReport, Decision};
use crate::spec::{
    validate_child, ChildSpec, ChildType, RestartType, Shutdown, StartCtx, Starter, Strategy, SupervisorSpec,
};
use crate::StartError;
use children::{Child, Children, Status};

/// How long warden waits for a killed actor to finish. A handler spinning synchronously
/// cannot be pre-empted by tokio; after this bound the supervisor stops waiting, logs the
/// actor as abandoned and goes on.
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// The `warden_children` gauges are refreshed at most this often.
pub const GAUGE_PERIOD: Duration = Duration::from_millis(100);

/// A crash reported by a child's host actor; the child waits for the directive.
#[doc(hidden)]
pub struct Crash {
    pub(crate) actor: ActorId,
    pub(crate) incarnation: u64,
    pub(crate) reason: ExitReason,
    pub(crate) dropped_message: Option<&'static str>,
    pub(crate) captured: Option<Captured>,
    pub(crate) rendered: Option<String>,
    pub(crate) reply: oneshot::Sender<Directive>,
}

/// What a crashed child is told to do.
#[doc(hidden)]
pub enum Directive {
    /// Start again in place as incarnation `incarnation`.
    Restart { incarnation: u64 },
    /// Stop; the supervisor replaces or forgets the child.
    Exit,
}

/// The messages of a supervisor. Use [`SupervisorRef`] rather than sending these.
pub enum SupervisorMsg {
    #[doc(hidden)]
    ChildCrashed(Crash),
    #[doc(hidden)]
    ChildRecovered { actor: ActorId, incarnation: u64 },
    #[doc(hidden)]
    StateRestored { actor: ActorId, incarnation: u64, from: crate::restored::RestoredFrom },
    #[doc(hidden)]
    ChildHung { actor: ActorId, stuck_for: Duration, message_type: &'static str },
    #[doc(hidden)]
    Retry,
    #[doc(hidden)]
    RefreshGauges,
    #[doc(hidden)]
    Flush,
    #[doc(hidden)]
    StartChild(ChildSpec, RpcReplyPort<Result<ChildInfo, SupervisorError>>),
    #[doc(hidden)]
    TerminateChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    #[doc(hidden)]
    RestartChild(String, RpcReplyPort<Result<ChildInfo, SupervisorError>>),
    #[doc(hidden)]
    DeleteChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    #[doc(hidden)]
    WhichChildren(RpcReplyPort<Vec<ChildInfo>>),
    #[doc(hidden)]
    CountChildren(RpcReplyPort<ChildCounts>),
}

#[cfg(feature = "cluster")]
impl ractor::Message for SupervisorMsg {}

/// The supervisor actor.
pub struct Supervisor;

/// The arguments of a supervisor actor.
pub struct SupervisorInit {
    spec: SupervisorSpec,
    path: ActorPath,
    events: EventBus,
    exit: ExitNote,
}

/// The state of a supervisor actor.
pub struct SupervisorState {
    path: ActorPath,
    strategy: Strategy,
    auto_shutdown: crate::spec::AutoShutdown,
    intensity: IntensityWindow,
    intensity_limit: (u32, Duration),
    children: Children,
    events: EventBus,
    next_dynamic: u64,
    /// The specs of current children, by the address of their shared start function: a
    /// spec (and so its handle) may back only one child at a time.
    starters: HashSet<usize>,
    /// Events noted by `observe`, counted by `settle` (at most a handler's worth).
    tallies: Vec<(Instant, ActorPath, Tally)>,
    /// When the `warden_children` gauges were last set, and whether a refresh is scheduled.
    gauges_at: Option<Instant>,
    gauge_refresh_pending: bool,
    exit_reason: Option<ExitReason>,
    /// Crash reports, reliability figures and metrics on (`SupervisorSpec::record_failures`).
    record: bool,
    /// A `Flush` is on its way (see `EventBus::flush`).
    flush_scheduled: bool,
    /// Incarnations killed but not yet torn down (hung ones, and group-restart members killed
    /// by their shutdown policy): (their actor, the child's id, how long the replacement waits
    /// for them). ractor hands a stopped actor's state to its supervisor inside the
    /// termination event, so whatever that state holds (a port, a lock, a checkpoint key) is
    /// released only when this supervisor handles the event: the replacement starts after it,
    /// or after the wait for a handler that spins and cannot be killed. (A child stopped
    /// gracefully drops its state in its `post_stop`, in `child.rs`.) Usually empty.
    teardown: Vec<(ActorId, String, Instant)>,
    /// Where this incarnation writes how it ended, for `SupervisorControl::wait`.
    exit: ExitNote,
    /// A group restart to do again from this child (its start failed; see `retry_group`).
    group_retry: Option<String>,
}

/// How long the replacement of a killed incarnation (a hung child, or a group-restart member
/// killed by its shutdown policy) waits for it to be torn down: at once, normally; a handler
/// spinning synchronously never ends.
const HUNG_TEARDOWN_WAIT: Duration = Duration::from_millis(100);

impl Supervisor {
    /// Starts a root supervisor named `name` (its path is `/name`) and its children, in
    /// order. If a child fails to start, those already started are stopped in reverse order
    /// and the error names the child and the cause.
    pub async fn start(name: &str, spec: SupervisorSpec) -> Result<SupervisorRef, StartError> {
        Self::start_with_events(name, spec, EventBus::default()).await
    }

    /// Like [`Supervisor::start`], publishing on `events` (subscribe before starting to see
    /// the first `ChildStarted` events).
    pub async fn start_with_events(
        name: &str,
        spec: SupervisorSpec,
        events: EventBus,
    ) -> Result<SupervisorRef, StartError> {
        if name.is_empty() || name.contains('/') {
            return Err(StartError::Spec(crate::SpecError::BadId(name.to_string())));
        }
        spec.validate().map_err(StartError::Spec)?;
        crate::panic_capture::install();
        let path = ActorPath::root(name);
        let slot = Arc::new(Slot::<SupervisorMsg>::new(name));
        slot.set_path(path.clone());
        let exit = ExitNote::default();
        let init = SupervisorInit { spec, path: path.clone(), events: events.clone(), exit: exit.clone() };
        let (actor, _join) = Actor::spawn(None, Supervisor, init).await.map_err(|e| match e {
            ractor::SpawnErr::StartupFailed(inner) => match inner.downcast_ref::<StartError>() {
                Some(start_error) => start_error.clone(),
                None => StartError::Failed { path: path.clone(), cause: inner.to_string() },
            },
            other => StartError::Failed { path: path.clone(), cause: other.to_string() },
        })?;
        slot.install(actor, None);
        Ok(SupervisorRef { control: SupervisorControl { handle: ChildRef::from_slot(slot), exit }, events })
    }
}

/// Starts nested supervisors for a [`ChildSpec::supervisor`] and owns their stable handle.
pub(crate) struct SupervisorStarter {
    spec: SupervisorSpec,
    slot: Arc<Slot<SupervisorMsg>>,
    exit: ExitNote,
}

impl SupervisorStarter {
    pub(crate) fn new(spec: SupervisorSpec, id: &str) -> Self {
        SupervisorStarter { spec, slot: Arc::new(Slot::new(id)), exit: ExitNote::default() }
    }

    /// The nested supervisor's runtime API (follows its restarts).
    pub(crate) fn control(&self) -> SupervisorControl {
        SupervisorControl { handle: ChildRef::from_slot(self.slot.clone()), exit: self.exit.clone() }
    }
}

impl Starter for SupervisorStarter {
    fn start(&self, ctx: StartCtx) -> BoxFuture<'static, Result<Option<ActorCell>, String>> {
        let spec = self.spec.clone();
        let slot = self.slot.clone();
        let exit = self.exit.clone();
        Box::pin(async move {
            spec.validate().map_err(|e| e.to_string())?;
            slot.set_path(ctx.path.clone());
            let init = SupervisorInit { spec, path: ctx.path.clone(), events: ctx.events.clone(), exit };
            let (actor, _join) =
                Actor::spawn_linked(None, Supervisor, init, ctx.supervisor.get_cell()).await.map_err(spawn_cause)?;
            slot.install(actor.clone(), Some(ctx.supervisor.get_cell()));
            Ok(Some(actor.get_cell()))
        })
    }

    fn slot(&self) -> &dyn SlotControl {
        &*self.slot
    }

    fn handle_any(&self) -> Box<dyn Any + Send> {
        Box::new(ChildRef::from_slot(self.slot.clone()))
    }

    fn supervisor_control(&self) -> Option<SupervisorControl> {
        Some(self.control())
    }
}

/// Counts noted events in the reliability figures and the `warden_*` metrics. Dynamic
/// children are counted under their spec's path (`/sup/conn`, not `/sup/conn-17`) so that the
/// number of series stays bounded.
fn count(stats: &crate::stats::StatsRegistry, dynamic: bool, tallies: Vec<(Instant, ActorPath, Tally)>) {
    for (at, path, what) in tallies {
        let path = match path.as_str().rsplit_once('-') {
            Some((spec_path, n)) if dynamic && n.bytes().all(|b| b.is_ascii_digit()) => spec_path.to_string(),
            _ => path.to_string(),
        };
        match what {
            Tally::Started => stats.update(&path, |r| {
                r.ready(at);
            }),
            Tally::Restarted => {
                let mut repaired = None;
                stats.update(&path, |r| repaired = r.ready(at));
                crate::metric::restarted(&path, repaired);
            }
            Tally::Failed(kind) => {
                crate::metric::failed(&path, kind);
                stats.update(&path, |r| r.failed(at));
            }
            Tally::Stopped => stats.update(&path, |r| r.stopped(at)),
        }
    }
}

impl SupervisorState {
    /// Publishes `event` now, and notes it for the tree's reliability figures and the
    /// `warden_*` metrics, which [`SupervisorState::settle`] queues for counting once the
    /// handler is done.
    fn observe(&mut self, event: SupervisorEvent) {
        let what = match &event {
            SupervisorEvent::ChildStarted { .. } => Some(Tally::Started),
            SupervisorEvent::ChildRestarted { .. } => Some(Tally::Restarted),
            SupervisorEvent::ChildExited { reason, .. } if reason.is_normal() => Some(Tally::Stopped),
            SupervisorEvent::ChildExited { reason, .. } => Some(Tally::Failed(reason.kind())),
            SupervisorEvent::RestartFailed { .. } => Some(Tally::Failed("start_failed")),
            SupervisorEvent::ChildTerminated { .. } => Some(Tally::Stopped),
            _ => None,
        };
        if let Some(what) = what.filter(|_| self.record) {
            self.tallies.push((Instant::now(), event.path().clone(), what));
        }
        self.events.publish(event);
    }

    /// Counts the noted events in the reliability figures and the metrics. Dynamic children
    /// are counted under their spec's path (`/sup/conn`, not `/sup/conn-17`) so that the
    /// number of series stays bounded.
    fn settle(&mut self, myself: &ActorRef<SupervisorMsg>) {
        // The end of a handler: no child slot is held, the gaps may close.
        self.children.compact();
        if !self.record {
            self.tallies.clear();
            return;
        }
        if !self.tallies.is_empty() {
            let tallies = std::mem::take(&mut self.tallies);
            let dynamic = matches!(self.strategy, Strategy::Dynamic { .. });
            if self.events.defer(Box::new(move |bus| count(bus.stats_now(), dynamic, tallies))) {
                self.schedule_flush(myself);
            }
        }
        self.gauge_children(myself);
    }

    /// Refreshes the `warden_children` gauges (running, restarting, stopped). Counting is
    /// O(children), so it runs at most once per [`GAUGE_PERIOD`]; a change inside the period is
    /// picked up by one scheduled refresh at its end.
    fn gauge_children(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let now = Instant::now();
        if self.gauges_at.is_some_and(|t| now.saturating_duration_since(t) < GAUGE_PERIOD) {
            if !self.gauge_refresh_pending {
                self.gauge_refresh_pending = true;
                myself.send_after(GAUGE_PERIOD, || SupervisorMsg::RefreshGauges);
            }
            return;
        }
        self.gauges_at = Some(now);
        self.set_gauges();
    }

    fn set_gauges(&self) {
        let (mut running, mut restarting, mut stopped) = (0u32, 0u32, 0u32);
        for (_, c) in self.children.iter() {
            match c.public_status() {
                ChildStatus::Running => running += 1,
                ChildStatus::Restarting => restarting += 1,
                ChildStatus::Stopped => stopped += 1,
            }
        }
        crate::metric::children(self.path.as_str(), running, restarting, stopped);
    }

    fn index_of_actor(&self, actor: ActorId) -> Option<usize> {
        self.children.by_actor(actor).filter(|&i| self.children[i].cell().map(|cell| cell.get_id()) == Some(actor))
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.children.by_id(id)
    }

    fn info(&self, c: &Child) -> ChildInfo {
        let supervisor =
            c.spec.starter.supervisor_control().map(|control| SupervisorRef { control, events: self.events.clone() });
        ChildInfo {
            id: c.id().to_string(),
            path: c.path.clone(),
            status: c.public_status(),
            child_type: c.spec.child_type,
            restart: c.spec.restart,
            restarts: c.restarts,
            incarnation: c.incarnation,
            actor: c.cell().cloned(),
            supervisor,
        }
    }

    fn counts(&self) -> ChildCounts {
        let mut n = ChildCounts { specs: self.children.len(), ..Default::default() };
        for (_, c) in self.children.iter() {
            if matches!(c.status(), Status::Running { .. }) {
                n.active += 1;
            }
            match c.spec.child_type {
                ChildType::Worker => n.workers += 1,
                ChildType::Supervisor => n.supervisors += 1,
            }
        }
        n
    }

    /// Appends a child for `spec` (not started) and returns its index.
    fn add_child(&mut self, spec: ChildSpec) -> usize {
        let path = match self.strategy {
            Strategy::Dynamic { .. } => {
                self.next_dynamic += 1;
                self.path.child(&format!("{}-{}", spec.id, self.next_dynamic))
            }
            _ => self.path.child(&spec.id),
        };
        self.starters.insert(starter_key(&spec));
        self.children.push(Child::new(spec, path))
    }

    /// Starts child `idx` now. On success it is `Running`, unless it chose not to run
    /// ([`crate::Ignore`]): then it is `Stopped` (see [`SupervisorState::ignored`]).
    async fn start_at(&mut self, myself: &ActorRef<SupervisorMsg>, idx: usize) -> Result<Started, String> {
        let starter: Arc<dyn Starter> = self.children[idx].spec.starter.clone();
        let incarnation = self.children[idx].incarnation + 1;
        let ctx = StartCtx {
            supervisor: myself.clone(),
            deadline: self.children[idx].spec.deadline,
            heartbeat: self.children[idx].spec.heartbeat,
            path: self.children[idx].path.clone(),
            events: self.events.clone(),
            incarnation,
        };
        let Some(cell) = starter.start(ctx).await? else {
            self.children.set_status(idx, Status::Stopped);
            return Ok(Started::Ignored);
        };
        self.children[idx].incarnation = incarnation;
        self.children.set_status(idx, Status::Running { cell });
        Ok(Started::Running)
    }

    /// Child `idx` chose not to run (OTP's `ignore`): nothing is restarted, messages sent to
    /// its handle are handed back; a temporary child's spec and a dynamic child are not kept
    /// (supervisor.erl keeps neither). Returns the child's info, taken before.
    fn ignored(&mut self, idx: usize) -> ChildInfo {
        let info = self.info(&self.children[idx]);
        tracing::info!(path = %info.path, "child chose not to start (ignore)");
        // No repair follows: stop the clock of its reliability figures (a no-op on a first
        // start).
        self.tallies.push((Instant::now(), info.path.clone(), Tally::Stopped));
        let c = &self.children[idx];
        if c.spec.restart == RestartType::Temporary || matches!(self.strategy, Strategy::Dynamic { .. }) {
            self.remove_at(idx);
        } else {
            self.close_slot(idx);
        }
        info
    }

    /// Stops child `idx`'s actor by its shutdown policy and waits for it. Its status is left
    /// for the caller to set. Returns the actor and whether it had to be killed.
    async fn terminate_at(&mut self, idx: usize) -> Option<(ActorId, bool)> {
        let (cell, reply) = match self.children.set_status(idx, Status::Stopped) {
            Status::Running { cell } => (cell, None),
            Status::Crashed { cell, reply, .. } => (cell, reply),
            other => {
                self.children.set_status(idx, other);
                return None;
            }
        };
        let c = &self.children[idx];
        let path = c.path.clone();
        let killed = stop_actor(&cell, reply, c.spec.shutdown, &path).await;
        self.observe(SupervisorEvent::ChildTerminated { path, killed });
        Some((cell.get_id(), killed))
    }

    /// A member of a group restart was killed (its `post_stop` did not run, so its state was
    /// not dropped there): its replacement waits until this supervisor has handled its
    /// termination event, which carries that state, or [`HUNG_TEARDOWN_WAIT`].
    fn await_teardown(&mut self, idx: usize, stopped: Option<(ActorId, bool)>) {
        if let Some((actor, true)) = stopped {
            let id = self.children[idx].id().to_string();
            self.teardown.push((actor, id, Instant::now() + HUNG_TEARDOWN_WAIT));
        }
    }

    /// The child will not run again: hand messages back, count what was stashed.
    fn close_slot(&self, idx: usize) {
        let c = &self.children[idx];
        let dropped = c.spec.starter.slot().close();
        if dropped > 0 {
            self.events.publish(SupervisorEvent::StashDropped { path: c.path.clone(), count: dropped });
        }
    }

    fn remove_at(&mut self, idx: usize) {
        self.close_slot(idx);
        if let Some(c) = self.children.remove(idx) {
            self.starters.remove(&starter_key(&c.spec));
        }
    }

    fn schedule_retry(&self, myself: &ActorRef<SupervisorMsg>, delay: Duration) {
        if delay.is_zero() {
            // Through the mailbox, so that API calls waiting there are answered in between.
            let _ = myself.cast(SupervisorMsg::Retry);
        } else {
            myself.send_after(delay, || SupervisorMsg::Retry);
        }
    }

    /// Stops this supervisor: children stop in post_stop; the parent sees `reason`.
    fn shut_down(&mut self, myself: &ActorRef<SupervisorMsg>, reason: ExitReason) {
        if self.exit_reason.is_none() {
            myself.stop(reason.to_stop_reason());
            self.exit_reason = Some(reason);
        }
    }

    /// A restart is due: record it, escalate if too many. Returns the backoff delay, or
    /// `None` if the supervisor is shutting down.
    fn admit_restart(&mut self, myself: &ActorRef<SupervisorMsg>, idx: usize, now: Instant) -> Option<Duration> {
        if !self.intensity.record(now) {
            let (intensity, period) = self.intensity_limit;
            self.observe(SupervisorEvent::IntensityExceeded { path: self.path.clone(), intensity, period });
            self.shut_down(myself, ExitReason::Shutdown(Some("reached max restart intensity".into())));
            return None;
        }
        let c = &mut self.children[idx];
        c.restarts += 1;
        Some(c.backoff.as_mut().map(|b| b.next_delay(now)).unwrap_or(Duration::ZERO))
    }

    /// The rules applied when child `idx` exited with `reason`. `reply` is set when the
    /// child crashed in a handler and its actor waits to be told what to do.
    async fn on_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        idx: usize,
        reason: ExitReason,
        reply: Option<oneshot::Sender<Directive>>,
    ) -> Decision {
        let now = Instant::now();
        let shutting_down = self.exit_reason.is_some();
        let (restart, significant) = (self.children[idx].spec.restart, self.children[idx].spec.significant);
        // Counted only when it matters: a dynamic supervisor may hold very many children.
        let significant_left = if significant && !shutting_down {
            self.children
                .iter()
                .filter(|(i, c)| *i != idx && c.spec.significant && !matches!(c.status(), Status::Stopped))
                .count()
        } else {
            0
        };
        // One-for-one and dynamic touch only this child: no need to look at the others (a
        // dynamic supervisor may hold very many). Group plans are in positions; `order` maps
        // them back to slots.
        let order = match self.strategy {
            Strategy::OneForAll | Strategy::RestForOne if !shutting_down => self.children.order(),
            _ => Vec::new(),
        };
        let group = (!order.is_empty()).then(|| {
            let views: Vec<ChildView> = order.iter().map(|&i| self.children[i].view()).collect();
            let at = order.iter().position(|&i| i == idx).unwrap_or_default();
            (group_plan(self.strategy, &views, at), at)
        });
        let facts = ExitFacts {
            strategy: self.strategy,
            auto_shutdown: self.auto_shutdown,
            shutting_down,
            restart,
            significant,
            significant_left,
            reason: &reason,
            waits_in_place: reply.is_some() && self.children[idx].cell().is_some(),
            group,
        };
        let backoff = self.children[idx].backoff.as_deref_mut();
        let planned = plan_exit(&facts, &mut self.intensity, backoff, now);
        let (delay, plan) = match planned {
            ExitPlan::ShuttingDown => {
                if let Some(r) = reply {
                    let _ = r.send(Directive::Exit);
                }
                return Decision::ShuttingDown;
            }
            ExitPlan::NotRestarted { forget, auto_shutdown } => {
                if let Some(r) = reply {
                    let _ = r.send(Directive::Exit);
                }
                self.children.set_status(idx, Status::Stopped);
                if forget {
                    self.remove_at(idx);
                } else {
                    self.close_slot(idx);
                }
                if auto_shutdown {
                    let why = ExitReason::Shutdown(Some("auto_shutdown: significant child exited".into()));
                    self.shut_down(myself, why);
                }
                return Decision::NotRestarted;
            }
            ExitPlan::Escalate => {
                let (intensity, period) = self.intensity_limit;
                self.observe(SupervisorEvent::IntensityExceeded { path: self.path.clone(), intensity, period });
                self.shut_down(myself, ExitReason::Shutdown(Some("reached max restart intensity".into())));
                if let Some(r) = reply {
                    let _ = r.send(Directive::Exit);
                }
                return Decision::Escalate;
            }
            ExitPlan::RestartOne { delay, .. } => (delay, None),
            ExitPlan::RestartGroup { delay, group } => {
                let slots = |v: Vec<usize>| v.into_iter().filter_map(|p| order.get(p).copied()).collect();
                (
                    delay,
                    Some(GroupPlan { stop: slots(group.stop), start: slots(group.start), forget: slots(group.forget) }),
                )
            }
        };
        self.children[idx].restarts += 1;
        let decision = Decision::Restart { delay_ms: delay.as_millis() as u64 };
        if !delay.is_zero() {
            self.observe(SupervisorEvent::RestartScheduled { path: self.children[idx].path.clone(), delay });
        }
        let not_before = now + delay;

        let Some(plan) = plan else {
            match (reply, self.children[idx].cell().cloned()) {
                // Restart in place: the actor, its ActorRef and its mailbox are kept.
                (Some(reply), Some(cell)) => {
                    self.children.set_status(idx, Status::Crashed { cell, reply: Some(reply), not_before });
                }
                (reply, _) => {
                    if let Some(r) = reply {
                        let _ = r.send(Directive::Exit);
                    }
                    self.children[idx].spec.starter.slot().set_restarting();
                    self.children.set_status(idx, Status::Restarting { not_before });
                }
            }
            if delay.is_zero() {
                if matches!(self.restart_if_due(myself, idx).await, Due::Done | Due::NotRestarting) {
                    self.children.settled(idx);
                }
            } else {
                self.schedule_retry(myself, delay);
            }
            return decision;
        };

        // A group restart: the members are replaced by new actors, in order.
        let forget: Vec<String> = plan.forget.iter().map(|&i| self.children[i].id().to_string()).collect();
        for &i in plan.start.iter().chain(plan.stop.iter()) {
            self.children[i].spec.starter.slot().set_restarting();
        }
        // The failed child first: it is dead, or waiting in its handler for a directive.
        if let Some(reply) = reply {
            match self.children[idx].cell().cloned() {
                Some(cell) => {
                    self.children.set_status(idx, Status::Crashed { cell, reply: Some(reply), not_before });
                }
                None => {
                    let _ = reply.send(Directive::Exit);
                }
            }
        }
        self.terminate_at(idx).await;
        for &i in &plan.stop {
            let stopped = self.terminate_at(i).await;
            self.await_teardown(i, stopped);
        }
        for &i in &plan.start {
            self.children.set_status(i, Status::Restarting { not_before });
        }
        for id in forget {
            if let Some(i) = self.index_of(&id) {
                self.remove_at(i);
            }
        }
        if delay.is_zero() {
            self.resume_restarts(myself).await;
        } else {
            self.schedule_retry(myself, delay);
        }
        decision
    }

    /// [`group_plan`] for a group restart from child `idx`, in slots rather than positions.
    fn group_plan_at(&self, idx: usize) -> GroupPlan {
        let order = self.children.order();
        let views: Vec<ChildView> = order.iter().map(|&i| self.children[i].view()).collect();
        let at = order.iter().position(|&i| i == idx).unwrap_or_default();
        let p = group_plan(self.strategy, &views, at);
        let slots = |v: Vec<usize>| v.into_iter().filter_map(|p| order.get(p).copied()).collect();
        GroupPlan { stop: slots(p.stop), start: slots(p.start), forget: slots(p.forget) }
    }

    /// OTP's `try_again`: a group restart in which child `id` failed to start is done again
    /// from it once its retry is due: the members running by then (started before it failed)
    /// are stopped in reverse order by their shutdown policies, and the group starts again in
    /// order. Returns whether the restarts may go on now.
    async fn retry_group(&mut self, now: Instant) -> bool {
        let Some(id) = self.group_retry.clone() else { return true };
        let Some(idx) = self.index_of(&id) else {
            self.group_retry = None;
            return true;
        };
        match self.children[idx].status() {
            Status::Restarting { not_before } if *not_before <= now => {}
            // Not due yet: the retry message comes when it is.
            Status::Restarting { .. } => return false,
            // Cancelled (`terminate_child`): nothing of the group starts, and the members left
            // stopped hand messages back instead of stashing them.
            _ => {
                self.cancel_group_retry(idx);
                return true;
            }
        }
        self.group_retry = None;
        let plan = self.group_plan_at(idx);
        let forget: Vec<String> = plan.forget.iter().map(|&i| self.children[i].id().to_string()).collect();
        for &i in &plan.stop {
            self.children[i].spec.starter.slot().set_restarting();
            let stopped = self.terminate_at(i).await;
            self.await_teardown(i, stopped);
        }
        for &i in &plan.start {
            self.children[i].spec.starter.slot().set_restarting();
            self.children.set_status(i, Status::Restarting { not_before: now });
        }
        for id in forget {
            if let Some(i) = self.index_of(&id) {
                self.remove_at(i);
            }
        }
        true
    }

    /// The group retry from child `idx` will not happen: the members it left stopped hand
    /// messages back from now on instead of stashing them.
    fn cancel_group_retry(&mut self, idx: usize) {
        self.group_retry = None;
        for i in self.group_plan_at(idx).start {
            if i != idx && matches!(self.children[i].status(), Status::Stopped) {
                self.close_slot(i);
            }
        }
    }

    /// Child `idx` exited with `reason` (`reply` is set when it crashed in a handler and waits
    /// for a directive): publish the event, apply the rules, then, once the child has been
    /// answered, write the crash report. Every exit path of a supervisor goes through here.
    async fn exited(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        idx: usize,
        reason: ExitReason,
        reply: Option<oneshot::Sender<Directive>>,
        clues: Clues,
    ) {
        let c = &self.children[idx];
        let path = c.path.clone();
        let facts = FailureFacts {
            path: path.clone(),
            spec: (c.spec.child_type, c.spec.restart, c.spec.shutdown),
            incarnation: clues.incarnation,
            message_type: clues.message_type,
            captured: clues.captured.unwrap_or_default(),
            rendered: clues.rendered,
        };
        self.observe(match &reason {
            // A restart in place that failed: the child was already counted as exited.
            ExitReason::StartFailed(error) if reply.is_some() => {
                SupervisorEvent::RestartFailed { path: path.clone(), error: error.clone() }
            }
            _ => SupervisorEvent::ChildExited {
                path: path.clone(),
                reason: reason.clone(),
                incarnation: clues.incarnation,
                dropped_message: clues.message_type,
            },
        });
        let decision = self.on_exit(myself, idx, reason.clone(), reply).await;
        if !self.record {
            return;
        }
        if !matches!(decision, Decision::Restart { .. }) {
            // No repair will follow: stop the clock of this path's reliability figures.
            self.tallies.push((Instant::now(), path, Tally::Stopped));
        }
        // The report is only queued here (see `record_failure`): nothing slow runs before the
        // restarted child does.
        self.record_failure(myself, facts, &reason, decision);
    }

    /// Queues the crash report of a failure (abnormal exits only); it is written within
    /// `FLUSH_DELAY`, off the restart's critical path. What it says is fixed now.
    fn record_failure(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        facts: FailureFacts,
        reason: &ExitReason,
        decision: Decision,
    ) {
        if reason.is_normal() {
            return;
        }
        let at_unix_ms = report::unix_ms_now();
        let restarts_in_window = self.intensity.count(Instant::now());
        let intensity = self.intensity_limit.0;
        let reason = reason.clone();
        let first = self.events.defer(Box::new(move |bus| {
            let (child_type, restart, shutdown) = facts.spec;
            bus.record(CrashReport {
                at_unix_ms,
                ancestors: facts.path.ancestors().iter().map(|a| a.to_string()).collect(),
                child_id: facts.path.name().to_string(),
                path: facts.path.to_string(),
                child_type: report::child_type_name(child_type),
                restart: report::restart_name(restart),
                shutdown: report::shutdown_name(shutdown),
                incarnation: facts.incarnation,
                reason_kind: reason.kind(),
                reason: reason.to_string(),
                panic_location: facts.captured.location,
                message_type: facts.message_type,
                message: facts.rendered,
                mailbox_len: None,
                restarts_in_window,
                intensity,
                decision,
                backtrace: facts.captured.backtrace,
                restored: None,
            });
        }));
        if first {
            self.schedule_flush(myself);
        }
    }

    /// Writes the queued bookkeeping in `FLUSH_DELAY`, in one batch.
    fn schedule_flush(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            myself.send_after(crate::event::FLUSH_DELAY, || SupervisorMsg::Flush);
        }
    }

    /// Carries out the restarts that are due, in start order. A failed start is counted
    /// like any restart and retried later; under one-for-all and rest-for-one the children
    /// after it wait for it, so that start order holds.
    /// Whether child `i`'s previous incarnation (killed as hung) is still being torn down; if so,
    /// a retry is scheduled for when the wait ends.
    fn tearing_down(&mut self, myself: &ActorRef<SupervisorMsg>, i: usize, now: Instant) -> bool {
        if self.teardown.is_empty() {
            return false;
        }
        self.teardown.retain(|(_, _, deadline)| *deadline > now);
        let id = self.children[i].id();
        match self.teardown.iter().find(|(_, child, _)| child == id) {
            Some((_, _, deadline)) => {
                self.schedule_retry(myself, deadline.saturating_duration_since(now));
                true
            }
            None => false,
        }
    }

    async fn resume_restarts(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let ordered = matches!(self.strategy, Strategy::OneForAll | Strategy::RestForOne);
        // Ordered strategies look at every child in start order (a group waits for its
        // earlier members); the others only at the children with a restart pending, so a
        // retry costs the same however many children there are.
        if ordered && !self.retry_group(Instant::now()).await {
            return;
        }
        let candidates = if ordered { self.children.order() } else { self.children.pending() };
        for i in candidates {
            if self.exit_reason.is_some() {
                return;
            }
            match self.restart_if_due(myself, i).await {
                Due::Done | Due::NotRestarting => self.children.settled(i),
                Due::Waiting | Due::Failed if ordered => return,
                Due::Waiting | Due::Failed => {}
            }
        }
    }

    /// Restarts child `i` if its restart is due: answers a crashed child waiting in place, or
    /// starts a new actor. A failed start is counted and rescheduled.
    async fn restart_if_due(&mut self, myself: &ActorRef<SupervisorMsg>, i: usize) -> Due {
        let now = Instant::now();
        if matches!(self.children[i].status(), Status::Restarting { not_before } if *not_before <= now)
            && self.tearing_down(myself, i, now)
        {
            return Due::Waiting;
        }
        match self.children[i].status() {
            Status::Crashed { reply, not_before, .. } if reply.is_some() && *not_before <= now => {
                let c = &mut self.children[i];
                let incarnation = c.incarnation + 1;
                if let Some(r) = c.take_reply() {
                    if r.send(Directive::Restart { incarnation }).is_ok() {
                        c.incarnation = incarnation;
                    }
                }
                Due::Done
            }
            Status::Restarting { not_before } if *not_before <= now => match self.start_at(myself, i).await {
                Ok(Started::Ignored) => {
                    self.ignored(i);
                    Due::Done
                }
                Ok(Started::Running) => {
                    let c = &self.children[i];
                    self.observe(SupervisorEvent::ChildRestarted {
                        path: c.path.clone(),
                        incarnation: c.incarnation,
                        in_place: false,
                    });
                    Due::Done
                }
                Err(error) => {
                    self.observe(SupervisorEvent::RestartFailed { path: self.children[i].path.clone(), error });
                    if let Some(delay) = self.admit_restart(myself, i, now) {
                        self.children.set_status(i, Status::Restarting { not_before: now + delay });
                        if matches!(self.strategy, Strategy::OneForAll | Strategy::RestForOne) {
                            // The members after it are not started: they show as stopped
                            // (OTP's `undefined`) until the group is restarted again from it.
                            let after: Vec<usize> = self.children.order().into_iter().filter(|&j| j > i).collect();
                            for j in after {
                                if matches!(self.children[j].status(), Status::Restarting { .. }) {
                                    self.children.set_status(j, Status::Stopped);
                                }
                            }
                            // A group retry still pending from an earlier child contains
                            // this one (both strategies restart from a member onwards): keep it.
                            let earlier =
                                self.group_retry.as_deref().and_then(|id| self.index_of(id)).is_some_and(|j| {
                                    j < i && matches!(self.children[j].status(), Status::Restarting { .. })
                                });
                            if !earlier {
                                self.group_retry = Some(self.children[i].id().to_string());
                            }
                        }
                        self.schedule_retry(myself, delay);
                    }
                    Due::Failed
                }
            },
            Status::Restarting { .. } | Status::Crashed { reply: Some(_), .. } => Due::Waiting,
            _ => Due::NotRestarting,
        }
    }

    async fn api_start_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        spec: ChildSpec,
    ) -> Result<ChildInfo, SupervisorError> {
        validate_child(&spec).map_err(|error| SupervisorError::InvalidSpec { supervisor: self.path.clone(), error })?;
        if let Strategy::Dynamic { max_children: Some(max) } = self.strategy {
            if self.children.len() >= max {
                return Err(SupervisorError::MaxChildren { supervisor: self.path.clone(), max });
            }
        }
        let dynamic = matches!(self.strategy, Strategy::Dynamic { .. });
        let same_spec_running = self.starters.contains(&starter_key(&spec));
        // Static supervisors are small and keyed by id; dynamic ones may hold very many
        // children, so they are checked through the set of specs in use only.
        let existing = if dynamic && !same_spec_running {
            None
        } else {
            self.children
                .iter()
                .map(|(_, c)| c)
                .find(|c| Arc::ptr_eq(&c.spec.starter, &spec.starter) || (!dynamic && c.id() == spec.id))
        };
        if let Some(existing) = existing {
            // OTP: `already_started` only with a running incarnation; a child that crashed
            // and waits for its restart, in place or not, is `already_present`.
            return Err(match existing.status() {
                Status::Running { .. } => SupervisorError::AlreadyStarted { path: existing.path.clone() },
                _ => SupervisorError::AlreadyPresent { path: existing.path.clone() },
            });
        }
        let idx = self.add_child(spec);
        match self.start_at(myself, idx).await {
            Ok(Started::Ignored) => Ok(self.ignored(idx)),
            Ok(Started::Running) => {
                let (path, incarnation) = (self.children[idx].path.clone(), self.children[idx].incarnation);
                self.observe(SupervisorEvent::ChildStarted { path, incarnation });
                Ok(self.info(&self.children[idx]))
            }
            Err(cause) => {
                let path = self.children[idx].path.clone();
                self.remove_at(idx);
                Err(SupervisorError::StartFailed { path, cause })
            }
        }
    }

    async fn api_terminate_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        let idx = self.index_of(id).ok_or_else(|| self.not_found(id))?;
        if matches!(self.children[idx].status(), Status::Restarting { .. }) {
            // A restart is cancelled: no repair will follow (`settle` drops it when not recording).
            self.tallies.push((Instant::now(), self.children[idx].path.clone(), Tally::Stopped));
        }
        self.terminate_at(idx).await;
        self.children.set_status(idx, Status::Stopped);
        if self.group_retry.as_deref() == Some(id) {
            self.cancel_group_retry(idx);
        }
        let c = &self.children[idx];
        if c.spec.restart == RestartType::Temporary || matches!(self.strategy, Strategy::Dynamic { .. }) {
            self.remove_at(idx);
        } else {
            self.close_slot(idx);
        }
        Ok(())
    }

    async fn api_restart_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: &str,
    ) -> Result<ChildInfo, SupervisorError> {
        self.refuse_on_dynamic("restart_child")?;
        let idx = self.index_of(id).ok_or_else(|| self.not_found(id))?;
        self.refuse_unless_stopped(idx)?;
        match self.start_at(myself, idx).await {
            Ok(Started::Ignored) => Ok(self.ignored(idx)),
            Ok(Started::Running) => {
                let (path, incarnation) = (self.children[idx].path.clone(), self.children[idx].incarnation);
                self.observe(SupervisorEvent::ChildStarted { path, incarnation });
                Ok(self.info(&self.children[idx]))
            }
            Err(cause) => Err(SupervisorError::StartFailed { path: self.children[idx].path.clone(), cause }),
        }
    }

    fn api_delete_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        self.refuse_on_dynamic("delete_child")?;
        let idx = self.index_of(id).ok_or_else(|| self.not_found(id))?;
        self.refuse_unless_stopped(idx)?;
        self.remove_at(idx);
        Ok(())
    }

    fn refuse_on_dynamic(&self, operation: &'static str) -> Result<(), SupervisorError> {
        match self.strategy {
            Strategy::Dynamic { .. } => Err(SupervisorError::NotSupported { supervisor: self.path.clone(), operation }),
            _ => Ok(()),
        }
    }

    fn refuse_unless_stopped(&self, idx: usize) -> Result<(), SupervisorError> {
        let c = &self.children[idx];
        match c.status() {
            Status::Running { .. } => Err(SupervisorError::Running { path: c.path.clone() }),
            Status::Crashed { .. } | Status::Restarting { .. } => {
                Err(SupervisorError::Restarting { path: c.path.clone() })
            }
            Status::Stopped => Ok(()),
        }
    }

    fn not_found(&self, id: &str) -> SupervisorError {
        SupervisorError::NotFound { supervisor: self.path.clone(), id: id.to_string() }
    }

    /// Stops every child: one at a time in reverse start order, or, for a dynamic
    /// supervisor, all at once under one timer (the longest shutdown timeout among them).
    async fn stop_all(&mut self) {
        if matches!(self.strategy, Strategy::Dynamic { .. }) {
            let mut waits = Vec::new();
            for i in self.children.order().into_iter().rev() {
                let (cell, reply) = match self.children.set_status(i, Status::Stopped) {
                    Status::Running { cell } => (cell, None),
                    Status::Crashed { cell, reply, .. } => (cell, reply),
                    _ => continue,
                };
                let c = &self.children[i];
                let (shutdown, path) = (c.spec.shutdown, c.path.clone());
                waits.push(async move {
                    let killed = stop_actor(&cell, reply, shutdown, &path).await;
                    (path, killed)
                });
            }
            for (path, killed) in futures::future::join_all(waits).await {
                self.observe(SupervisorEvent::ChildTerminated { path, killed });
            }
        } else {
            for i in self.children.order().into_iter().rev() {
                self.terminate_at(i).await;
            }
        }
        for i in self.children.order() {
            self.close_slot(i);
        }
    }
}

/// What an observed event counts for.
#[derive(Debug, Clone, Copy)]
enum Tally {
    Started,
    Restarted,
    Failed(&'static str),
    Stopped,
}

/// What the child's host actor or the watchdog knows of a failure, beyond its reason.
#[derive(Default)]
struct Clues {
    /// The incarnation that failed.
    incarnation: u64,
    /// The type of the message being handled.
    message_type: Option<&'static str>,
    /// Where a panic happened.
    captured: Option<Captured>,
    /// The message's rendering, for children that opted in.
    rendered: Option<String>,
}

/// What a crash report needs of a child, taken before the supervisor acts (the child may be
/// forgotten by then).
struct FailureFacts {
    path: ActorPath,
    spec: (ChildType, RestartType, Shutdown),
    incarnation: u64,
    message_type: Option<&'static str>,
    captured: Captured,
    rendered: Option<String>,
}

/// How a start ended, when it did not fail.
enum Started {
    /// An incarnation runs.
    Running,
    /// The child chose not to run ([`crate::Ignore`]).
    Ignored,
}

/// Where a child stands with respect to a restart.
enum Due {
    /// Restarted (or told to restart in place) just now.
    Done,
    /// A restart is scheduled for later.
    Waiting,
    /// The restart failed and was rescheduled (or the supervisor gave up).
    Failed,
    /// The child is not being restarted.
    NotRestarting,
}

fn starter_key(spec: &ChildSpec) -> usize {
    Arc::as_ptr(&spec.starter) as *const () as usize
}

/// Stops one actor by `policy` and waits for it; returns whether it had to be killed.
async fn stop_actor(
    cell: &ActorCell,
    reply: Option<oneshot::Sender<Directive>>,
    policy: Shutdown,
    path: &ActorPath,
) -> bool {
    // A crashed child waits in its handler: tell it to exit, since a stop request would
    // only be seen after that handler returns.
    let asked = match reply {
        Some(r) => r.send(Directive::Exit).is_ok(),
        None => false,
    };
    let graceful = |timeout: Option<Duration>| async move {
        if !asked {
            cell.stop(Some(SHUTDOWN.to_string()));
        }
        cell.wait(timeout).await.is_ok()
    };
    let stopped = match policy {
        Shutdown::BrutalKill => false,
        Shutdown::Timeout(t) => graceful(Some(t)).await,
        Shutdown::Infinity => graceful(None).await,
    };
    if stopped {
        return false;
    }
    if cell.kill_and_wait(Some(KILL_WAIT)).await.is_err() && cell.get_status() != ractor::ActorStatus::Stopped {
        tracing::error!(path = %path, wait_ms = KILL_WAIT.as_millis() as u64,
            "child did not stop after kill (a handler blocking its thread?); abandoned");
    }
    true
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorInit;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        init: SupervisorInit,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let SupervisorInit { spec, path, events, exit } = init;
        let mut state = SupervisorState {
            path,
            strategy: spec.strategy,
            auto_shutdown: spec.auto_shutdown,
            intensity: IntensityWindow::new(spec.intensity, spec.period),
            intensity_limit: (spec.intensity, spec.period),
            record: spec.record_failures,
            flush_scheduled: false,
            teardown: Vec::new(),
            group_retry: None,
            exit,
            children: Children::with_capacity(spec.children.len()),
            events,
            next_dynamic: 0,
            starters: HashSet::new(),
            tallies: Vec::new(),
            gauges_at: None,
            gauge_refresh_pending: false,
            exit_reason: None,
        };
        for child in spec.children {
            let idx = state.add_child(child);
            match state.start_at(&myself, idx).await {
                Ok(Started::Running) => {}
                Ok(Started::Ignored) => {
                    state.ignored(idx);
                    continue;
                }
                Err(cause) => {
                    let path = state.children[idx].path.clone();
                    state.stop_all().await;
                    return Err(Box::new(StartError::Failed { path, cause }));
                }
            }
            let c = &state.children[idx];
            state.observe(SupervisorEvent::ChildStarted { path: c.path.clone(), incarnation: c.incarnation });
        }
        state.settle(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::ChildCrashed(crash) => {
                let Some(idx) = state.index_of_actor(crash.actor) else {
                    let _ = crash.reply.send(Directive::Exit);
                    return Ok(());
                };
                let clues = Clues {
                    incarnation: crash.incarnation,
                    message_type: crash.dropped_message,
                    captured: crash.captured,
                    rendered: crash.rendered,
                };
                state.exited(&myself, idx, crash.reason, Some(crash.reply), clues).await;
            }
            SupervisorMsg::ChildRecovered { actor, incarnation } => {
                if let Some(idx) = state.index_of_actor(actor) {
                    if let Status::Crashed { cell, reply: None, .. } = state.children[idx].status() {
                        let cell = cell.clone();
                        state.children.set_status(idx, Status::Running { cell });
                        let path = state.children[idx].path.clone();
                        state.observe(SupervisorEvent::ChildRestarted { path, incarnation, in_place: true });
                    }
                }
            }
            SupervisorMsg::StateRestored { actor, incarnation, from } => {
                if let Some(idx) = state.index_of_actor(actor) {
                    let path = state.children[idx].path.clone();
                    state.events.recorder().note_restored(&path.to_string(), incarnation, &from);
                    state.observe(SupervisorEvent::StateRestored { path, incarnation, from });
                }
            }
            SupervisorMsg::ChildHung { actor, stuck_for, message_type } => {
                // Only a running child can hang; a crashed one is already being handled.
                let Some(idx) = state.index_of_actor(actor) else { return Ok(()) };
                let Status::Running { cell } = state.children[idx].status() else { return Ok(()) };
                // Kill without waiting: a handler spinning synchronously cannot be pre-empted,
                // and the supervisor must not block on it. The new incarnation starts once the
                // old one is torn down (see `teardown`), at most `HUNG_TEARDOWN_WAIT` later.
                cell.kill();
                let deadline = Instant::now() + HUNG_TEARDOWN_WAIT;
                let id = state.children[idx].id().to_string();
                state.teardown.push((actor, id, deadline));
                state.children.set_status(idx, Status::Restarting { not_before: Instant::now() });
                let c = &state.children[idx];
                let clues = Clues { incarnation: c.incarnation, message_type: Some(message_type), ..Clues::default() };
                state.exited(&myself, idx, ExitReason::Hung { stuck_for, message_type }, None, clues).await;
            }
            SupervisorMsg::Retry => state.resume_restarts(&myself).await,
            SupervisorMsg::Flush => {
                state.flush_scheduled = false;
                let bus = state.events.clone();
                tokio::task::spawn_blocking(move || bus.flush());
            }

            SupervisorMsg::RefreshGauges => {
                state.gauge_refresh_pending = false;
                state.gauges_at = Some(Instant::now());
                state.set_gauges();
                return Ok(());
            }
            SupervisorMsg::StartChild(spec, reply) => {
                let r = state.api_start_child(&myself, spec).await;
                let _ = reply.send(r);
            }
            SupervisorMsg::TerminateChild(id, reply) => {
                let r = state.api_terminate_child(&id).await;
                let _ = reply.send(r);
            }
            SupervisorMsg::RestartChild(id, reply) => {
                let r = state.api_restart_child(&myself, &id).await;
                let _ = reply.send(r);
            }
            SupervisorMsg::DeleteChild(id, reply) => {
                let _ = reply.send(state.api_delete_child(&id));
            }
            SupervisorMsg::WhichChildren(reply) => {
                let _ = reply.send(state.children.iter().map(|(_, c)| state.info(c)).collect());
                return Ok(());
            }
            SupervisorMsg::CountChildren(reply) => {
                let _ = reply.send(state.counts());
                return Ok(());
            }
        }
        state.settle(&myself);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if !state.teardown.is_empty() {
            let gone = match &evt {
                SupervisionEvent::ActorTerminated(cell, ..) | SupervisionEvent::ActorFailed(cell, _) => {
                    state.teardown.iter().position(|(actor, ..)| *actor == cell.get_id())
                }
                _ => None,
            };
            if let Some(pos) = gone {
                // A hung incarnation's teardown: drop its state, then start its replacement.
                state.teardown.remove(pos);
                drop(evt);
                state.resume_restarts(&myself).await;
                state.settle(&myself);
                return Ok(());
            }
        }
        let (cell, reason, ignored) = match evt {
            SupervisionEvent::ActorTerminated(cell, state, reason) => {
                // The stopped incarnation's state (ractor hands it over here) goes before
                // anything is started in its place.
                drop(state);
                let ignored = reason.as_deref() == Some(crate::reason::IGNORED_STOP);
                (cell, ExitReason::from_stop_reason(reason.as_deref()), ignored)
            }
            SupervisionEvent::ActorFailed(cell, err) => (cell, ExitReason::Error(err.to_string()), false),
            _ => return Ok(()),
        };
        // Exits of actors the supervisor stopped itself, or already replaced, are not found.
        let Some(idx) = state.index_of_actor(cell.get_id()) else { return Ok(()) };
        if ignored && matches!(state.children[idx].status(), Status::Crashed { reply: None, .. }) {
            // Restarted in place (the restart already counted), it chose not to run.
            state.children.set_status(idx, Status::Stopped);
            state.ignored(idx);
            state.settle(&myself);
            return Ok(());
        }
        let clues = Clues { incarnation: state.children[idx].incarnation, ..Clues::default() };
        state.exited(&myself, idx, reason, None, clues).await;
        state.settle(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.stop_all().await;
        state.settle(&myself);
        // Nothing queued is left behind by a supervisor that stops.
        state.events.flush();
        let reason = state.exit_reason.clone().unwrap_or(ExitReason::Shutdown(None));
        state.exit.set(reason.clone());
        state.observe(SupervisorEvent::SupervisorShutdown { path: state.path.clone(), reason });
        Ok(())
    }
}
