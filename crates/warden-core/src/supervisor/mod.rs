//! The supervisor actor: a thin shell that carries out the decisions of [`crate::decision`].
//!
//! One supervisor is one ractor actor holding plain data: its children in start order,
//! each with a status, an incarnation count and an optional backoff schedule, and one
//! restart-intensity window. Every exit path states which rule applies:
//!
//! * a child exits (ractor's `ActorTerminated` / `ActorFailed`) or crashes in a handler
//!   (a `ChildCrashed` report from the host actor in `child.rs`):
//!   [`plan_exit`] decides whether it is restarted, counts the
//!   restart in the intensity window (too many: shut down and escalate), takes the backoff
//!   delay, and says which siblings are stopped and started again;
//! * a restart that fails is retried later through a message to itself, counted again,
//!   while the child shows as `Restarting` and the runtime API keeps answering; a group
//!   restart is then done again from that child (OTP's `try_again`);
//! * on stop, children are stopped one by one in reverse start order by their shutdown
//!   policies (dynamic children concurrently, under one timer).
//!
//! The files, one concern each: `children.rs` (the child table), `restarts.rs` (exits,
//! restarts, retries), `calls.rs` (the runtime API's answers), `shutdown.rs` (stopping
//! children), `bookkeeping.rs` (events, figures, metrics, crash reports), `dispatch.rs` (the
//! ractor actor: which message leads to which rule), `api.rs` (the handles users hold),
//! `nested.rs` (a supervisor as the child of another: its spec and starter); this
//! file holds the messages, the state and the child operations the others share.
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
mod bookkeeping;
mod calls;
mod children;
mod dispatch;
mod nested;
mod restarts;
mod shutdown;

use bookkeeping::{FailureFacts, Tally};
use restarts::Clues;

pub(crate) use api::ExitNote;
pub use api::{
    ChildCounts, ChildInfo, ChildStatus, SupervisorControl, SupervisorError, SupervisorRef, SupervisorStatus,
};
pub use nested::SupervisorChildSpec;

use std::any::Any;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::decision::{
    forgotten_when_stopped, group_plan, plan_exit, ChildView, ExitFacts, ExitPlan, GroupPlan, IntensityWindow,
};
use crate::event::{EventBus, SupervisorEvent};
use crate::handle::{ChildRef, Slot, SlotControl};
use crate::panic_capture::Captured;
use crate::path::ActorPath;
use crate::reason::{spawn_cause, ExitReason, SHUTDOWN};
use crate::report::{self, CrashReport, Decision};
use crate::spec::{validate_child, ChildSpec, ChildType, RestartType, Shutdown, Strategy, SupervisorSpec};
use crate::StartError;
use children::{Child, Children, Status};

/// How long warden waits for a killed actor to finish. A handler spinning synchronously
/// cannot be pre-empted by tokio; after this bound the supervisor stops waiting, logs the
/// actor as abandoned and goes on.
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// The `warden_children` gauges are refreshed at most this often.
pub const GAUGE_PERIOD: Duration = Duration::from_millis(100);

use crate::protocol::{ChildReport, Reporter, StartCtx, Starter};
pub use crate::protocol::{Crash, Directive};

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
    /// for them). ractor hands a killed actor's state to its supervisor inside the termination
    /// event (except when killed in its post_start or post_stop: then its own task drops it,
    /// which `start_at` waits for), so whatever that state holds (a port, a lock, a checkpoint
    /// key) is released only when this supervisor handles the event: the replacement starts
    /// after it, or after the wait for a handler that spins and cannot be killed. (A child
    /// stopped gracefully drops the user's state in its `post_stop`, in `child.rs`.) Usually
    /// empty.
    teardown: Vec<(ActorId, String, Instant)>,
    /// Where this incarnation writes how it ended, for `SupervisorControl::wait`.
    exit: ExitNote,
    /// A group restart to do again from this child (its start failed; see `retry_group`).
    group_retry: Option<String>,
    /// What this supervisor's children report through (see `reporter`).
    reporter: Reporter,
}

/// The reporter a supervisor hands its children: a child's report becomes one of its
/// messages.
fn reporter(supervisor: ActorRef<SupervisorMsg>) -> Reporter {
    Arc::new(move |report| {
        let msg = match report {
            ChildReport::Crashed(crash) => SupervisorMsg::ChildCrashed(crash),
            ChildReport::Recovered { actor, incarnation } => SupervisorMsg::ChildRecovered { actor, incarnation },
            ChildReport::StateRestored { actor, incarnation, from } => {
                SupervisorMsg::StateRestored { actor, incarnation, from }
            }
            ChildReport::Hung { actor, stuck_for, message_type } => {
                SupervisorMsg::ChildHung { actor, stuck_for, message_type }
            }
        };
        supervisor.cast(msg).is_ok()
    })
}

/// How long a new incarnation waits for the previous one's task to end (its state dropped):
/// at once, normally; a handler spinning synchronously never ends, and then the replacement
/// starts anyway after this wait (the supervisor does not answer meanwhile).
const TEARDOWN_WAIT: Duration = Duration::from_millis(100);

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

impl SupervisorState {
    fn index_of_actor(&self, actor: ActorId) -> Option<usize> {
        self.children.by_actor(actor).filter(|&i| self.children[i].cell().map(|cell| cell.get_id()) == Some(actor))
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.children.by_id(id)
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
            supervisor: myself.get_cell(),
            report: self.reporter.clone(),
            deadline: self.children[idx].spec.deadline,
            heartbeat: self.children[idx].spec.heartbeat,
            path: self.children[idx].path.clone(),
            events: self.events.clone(),
            incarnation,
        };
        // An actor killed in its post_start or post_stop has its state dropped in its own task,
        // after it reported the end (other stops hand the state over in the termination event:
        // see `teardown`). So whatever that state holds is free once the task has ended: wait
        // for it, at most TEARDOWN_WAIT.
        if let Some(task) = self.children[idx].task.take() {
            if !task.is_finished() && tokio::time::timeout(TEARDOWN_WAIT, task).await.is_err() {
                tracing::warn!(path = %self.children[idx].path, wait_ms = TEARDOWN_WAIT.as_millis() as u64,
                    "the previous incarnation has not ended (a handler blocking its thread?); starting its replacement anyway");
            }
        }
        let Some(spawned) = starter.start(ctx).await? else {
            self.children.set_status(idx, Status::Stopped);
            return Ok(Started::Ignored);
        };
        let c = &mut self.children[idx];
        c.incarnation = incarnation;
        c.task = Some(spawned.task);
        self.children.set_status(idx, Status::Running { cell: spawned.cell });
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
        self.drop_or_keep(idx);
        info
    }

    /// Child `idx` stopped for good: its spec goes or stays ([`forgotten_when_stopped`]);
    /// either way its handle hands messages back from now on.
    fn drop_or_keep(&mut self, idx: usize) {
        if forgotten_when_stopped(self.children[idx].spec.restart, self.strategy) {
            self.remove_at(idx);
        } else {
            self.close_slot(idx);
        }
    }

    /// Child `idx` has just started (not restarted): publishes it.
    fn started(&mut self, idx: usize) {
        let (path, incarnation) = (self.children[idx].path.clone(), self.children[idx].incarnation);
        self.observe(SupervisorEvent::ChildStarted { path, incarnation });
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
}

/// How a start ended, when it did not fail.
enum Started {
    /// An incarnation runs.
    Running,
    /// The child chose not to run ([`crate::Ignore`]).
    Ignored,
}

fn starter_key(spec: &ChildSpec) -> usize {
    Arc::as_ptr(&spec.starter) as *const () as usize
}
