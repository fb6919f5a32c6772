//! Child and supervisor specifications: what to start, and the rules that keep it alive.
//!
//! A [`ChildSpec`] is plain data plus a start function, as in OTP: an id, a
//! [`RestartType`], a [`Shutdown`] policy, a [`ChildType`], the `significant` flag and,
//! beyond OTP, an optional restart [`Backoff`]. A [`SupervisorSpec`] lists children with a
//! [`Strategy`], a restart intensity and an [`AutoShutdown`] rule. Specs are cheap to clone:
//! the start function and the child's stable handle are shared, which is what keeps a
//! [`ChildRef`](crate::ChildRef) valid when a whole subtree is restarted from its spec.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{ActorCell, ActorRef, Message};

use crate::event::EventBus;
use crate::handle::{ChildRef, SlotControl};
use crate::path::ActorPath;
use crate::supervisor::SupervisorMsg;

/// OTP's restart types: when a child that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestartType {
    /// Always restarted.
    Permanent,
    /// Restarted only after an abnormal exit (not `normal` or `shutdown`).
    Transient,
    /// Never restarted; its spec is forgotten when it exits, also as a bystander of a group
    /// restart.
    Temporary,
}

/// How a child is stopped by its supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Killed at once (OTP's `brutal_kill`): no `post_stop`.
    BrutalKill,
    /// Asked to stop (its `post_stop` runs), killed if it has not stopped after the timeout.
    Timeout(Duration),
    /// Asked to stop, and waited for without limit (OTP's `infinity`, the default for
    /// supervisors).
    Infinity,
}

/// Whether a child is a worker or a supervisor (OTP's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildType {
    /// An ordinary actor.
    Worker,
    /// A nested supervisor.
    Supervisor,
}

/// The restart strategy of a supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only the child that exited is restarted.
    OneForOne,
    /// All children are stopped (reverse order) and started again (list order).
    OneForAll,
    /// The child that exited and those started after it are stopped and started again.
    RestForOne,
    /// A dynamic supervisor (OTP's `simple_one_for_one`, Elixir's `DynamicSupervisor`):
    /// no children at start; `start_child` adds them, one-for-one restarts, and at most
    /// `max_children` at once (`None`: no limit).
    Dynamic {
        /// The most children this supervisor holds at once.
        max_children: Option<usize>,
    },
}

/// When the exit of significant children shuts the supervisor down (OTP's `auto_shutdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoShutdown {
    /// Significant children have no effect (the default).
    Never,
    /// The supervisor shuts down when any significant child exits and is not restarted.
    AnySignificant,
    /// The supervisor shuts down when all significant children have exited and are not
    /// restarted.
    AllSignificant,
}

/// Restart backoff for one child: exponential with optional jitter, capped, and reset after
/// a quiet period. Each delayed restart still counts towards the supervisor's intensity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first restart after a quiet period.
    pub min: Duration,
    /// The largest delay, jitter included.
    pub max: Duration,
    /// Multiplier between consecutive delays.
    pub factor: f32,
    /// Adds a random part of up to the current delay (capped at `max`).
    pub jitter: bool,
    /// After this long without a failure, the next delay starts from `min` again.
    pub reset_after: Duration,
    /// Seed for the jitter, for reproducible schedules (`None`: random).
    pub seed: Option<u64>,
}

impl Backoff {
    /// Exponential backoff from `min` to `max`, doubling, with jitter, reset after 30 s quiet.
    pub fn exponential(min: Duration, max: Duration) -> Self {
        Backoff { min, max, factor: 2.0, jitter: true, reset_after: Duration::from_secs(30), seed: None }
    }

    /// Sets the multiplier between delays.
    pub fn factor(mut self, factor: f32) -> Self {
        self.factor = factor;
        self
    }

    /// Turns jitter on or off.
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// Sets the quiet period after which the schedule starts over.
    pub fn reset_after(mut self, quiet: Duration) -> Self {
        self.reset_after = quiet;
        self
    }

    /// Seeds the jitter.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

/// What a start function is given: where the child sits and whom it reports to.
#[derive(Clone)]
pub(crate) struct StartCtx {
    pub supervisor: ActorRef<SupervisorMsg>,
    /// The hang deadline of the child's handlers, if it has one.
    pub deadline: Option<Duration>,
    /// The interval within which the child must call in, if it must.
    pub heartbeat: Option<Duration>,
    pub path: ActorPath,
    pub events: EventBus,
    pub incarnation: u64,
}

/// The type-erased start function of a child, plus the controls of its stable handle.
pub(crate) trait Starter: Send + Sync + 'static {
    /// Spawns a new incarnation linked to `ctx.supervisor`, installs it in the handle and
    /// returns its cell; `Err` carries the cause of a failed start.
    fn start(&self, ctx: StartCtx) -> BoxFuture<'static, Result<ActorCell, String>>;
    /// The controls of the child's stable handle.
    fn slot(&self) -> &dyn SlotControl;
    /// The typed handle as `Any` (a `ChildRef<M>`), for [`ChildSpec::handle`].
    fn handle_any(&self) -> Box<dyn Any + Send>;
}

/// Default capacity of the stash that keeps messages sent while a child restarts (Akka's).
pub const DEFAULT_STASH_CAPACITY: usize = 1000;
/// OTP's default shutdown timeout for workers.
pub const DEFAULT_WORKER_SHUTDOWN: Duration = Duration::from_secs(5);

/// The specification of one child: how to start it and the rules of its life.
#[derive(Clone)]
pub struct ChildSpec {
    pub(crate) id: String,
    pub(crate) restart: RestartType,
    pub(crate) shutdown: Shutdown,
    pub(crate) child_type: ChildType,
    pub(crate) significant: bool,
    pub(crate) backoff: Option<Box<Backoff>>,
    pub(crate) deadline: Option<Duration>,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) starter: Arc<dyn Starter>,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("child_type", &self.child_type)
            .field("significant", &self.significant)
            .field("backoff", &self.backoff.as_deref())
            .field("deadline", &self.deadline)
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
}

impl ChildSpec {
    /// A worker child running `actor` with `args`: permanent, 5 s shutdown, not significant.
    ///
    /// The actor and its arguments are cloned for every new incarnation.
    pub fn worker<A>(id: impl Into<String>, actor: A, args: A::Arguments) -> Self
    where
        A: ractor::Actor + Clone,
        A::Arguments: Clone + Sync,
    {
        Self::worker_with(id, actor, move || args.clone())
    }

    /// A worker child whose arguments are made fresh by `args` for each incarnation.
    pub fn worker_with<A, F>(id: impl Into<String>, actor: A, args: F) -> Self
    where
        A: ractor::Actor + Clone,
        F: Fn() -> A::Arguments + Send + Sync + 'static,
    {
        Self::worker_rendering(id.into(), actor, Arc::new(args), None)
    }

    /// Like [`ChildSpec::worker`], and crash reports also carry the `Debug` rendering of the
    /// message being handled when the child failed (at most 1 KiB). Opt-in because messages
    /// may carry private data, and because every message is rendered before it is handled.
    pub fn worker_debug<A>(id: impl Into<String>, actor: A, args: A::Arguments) -> Self
    where
        A: ractor::Actor + Clone,
        A::Arguments: Clone + Sync,
        A::Msg: std::fmt::Debug,
    {
        let render: crate::child::RenderFn<A> = crate::child::render_debug::<A::Msg>;
        Self::worker_rendering(id.into(), actor, Arc::new(move || args.clone()), Some(render))
    }

    fn worker_rendering<A>(
        id: String,
        actor: A,
        args: Arc<dyn Fn() -> A::Arguments + Send + Sync>,
        render: Option<crate::child::RenderFn<A>>,
    ) -> Self
    where
        A: ractor::Actor + Clone,
    {
        let starter = crate::child::WorkerStarter::new(actor, args, &id, render);
        ChildSpec {
            id,
            restart: RestartType::Permanent,
            shutdown: Shutdown::Timeout(DEFAULT_WORKER_SHUTDOWN),
            child_type: ChildType::Worker,
            significant: false,
            backoff: None,
            deadline: None,
            heartbeat: None,
            starter: Arc::new(starter),
        }
    }

    /// A nested supervisor child: permanent, shutdown `Infinity`.
    pub fn supervisor(id: impl Into<String>, spec: SupervisorSpec) -> Self {
        let id = id.into();
        let starter = crate::supervisor::SupervisorStarter::new(spec, &id);
        ChildSpec {
            id,
            restart: RestartType::Permanent,
            shutdown: Shutdown::Infinity,
            child_type: ChildType::Supervisor,
            significant: false,
            backoff: None,
            deadline: None,
            heartbeat: None,
            starter: Arc::new(starter),
        }
    }

    /// For a supervisor child, its runtime API (usable once it runs; follows its restarts).
    /// `None` for workers.
    pub fn supervisor_control(&self) -> Option<crate::supervisor::SupervisorControl> {
        if self.child_type != ChildType::Supervisor {
            return None;
        }
        self.handle::<crate::supervisor::SupervisorMsg>().map(|handle| crate::supervisor::SupervisorControl { handle })
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: RestartType) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the shutdown policy.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Marks the child significant for the supervisor's [`AutoShutdown`].
    pub fn significant(mut self, significant: bool) -> Self {
        self.significant = significant;
        self
    }

    /// Delays restarts of this child by `backoff`.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(Box::new(backoff));
        self
    }

    /// Gives the child a liveness deadline: a handler that runs longer than `deadline` (stuck
    /// on an await that never completes, deadlocked with another actor, or looping) is
    /// reported as hung, the child is killed and handled by its supervisor like any failure.
    /// An idle child is never hung. Workers only; see the watchdog notes in
    /// `docs/detection.md` for what a synchronous loop costs.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Requires the child to call [`heartbeat`](crate::heartbeat) at least every `interval`
    /// (an application-level heartbeat, for actors whose liveness is not about one handler:
    /// a poller, a consumer of an external stream). A child that misses it is reported hung
    /// (`ExitReason::Hung` with message type `"(missed heartbeat)"`), killed and restarted.
    /// Workers only.
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = Some(interval);
        self
    }

    /// Sets how many messages the stable handle keeps while the child restarts
    /// (default [`DEFAULT_STASH_CAPACITY`]); past it, senders get their message back.
    pub fn stash_capacity(self, capacity: usize) -> Self {
        self.starter.slot().set_stash_capacity(capacity);
        self
    }

    /// The child's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The restart type.
    pub fn restart_type(&self) -> RestartType {
        self.restart
    }

    /// The shutdown policy.
    pub fn shutdown_policy(&self) -> Shutdown {
        self.shutdown
    }

    /// Worker or supervisor.
    pub fn child_type(&self) -> ChildType {
        self.child_type
    }

    /// Whether the child is significant.
    pub fn is_significant(&self) -> bool {
        self.significant
    }

    /// The stable handle of this child for message type `M`, valid across restarts (and
    /// before the first start). `None` if the child's messages are not of type `M`.
    pub fn handle<M: Message>(&self) -> Option<ChildRef<M>> {
        self.starter.handle_any().downcast::<ChildRef<M>>().ok().map(|b| *b)
    }
}

/// Default restart intensity: at most 3 restarts in 5 s (Elixir's default; OTP's is 1).
pub const DEFAULT_INTENSITY: u32 = 3;
/// Default intensity period.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(5);

/// The specification of a supervisor: its strategy, limits and children.
#[derive(Clone, Debug)]
pub struct SupervisorSpec {
    pub(crate) strategy: Strategy,
    pub(crate) intensity: u32,
    pub(crate) period: Duration,
    pub(crate) auto_shutdown: AutoShutdown,
    pub(crate) children: Vec<ChildSpec>,
    pub(crate) record_failures: bool,
}

impl SupervisorSpec {
    /// A supervisor with `strategy`, no children, intensity 3 in 5 s, auto-shutdown never.
    pub fn new(strategy: Strategy) -> Self {
        SupervisorSpec {
            strategy,
            intensity: DEFAULT_INTENSITY,
            period: DEFAULT_PERIOD,
            auto_shutdown: AutoShutdown::Never,
            children: Vec::new(),
            record_failures: true,
        }
    }

    /// A one-for-one supervisor.
    pub fn one_for_one() -> Self {
        Self::new(Strategy::OneForOne)
    }

    /// A one-for-all supervisor.
    pub fn one_for_all() -> Self {
        Self::new(Strategy::OneForAll)
    }

    /// A rest-for-one supervisor.
    pub fn rest_for_one() -> Self {
        Self::new(Strategy::RestForOne)
    }

    /// A dynamic supervisor holding at most `max_children` children (`None`: no limit).
    pub fn dynamic(max_children: Option<usize>) -> Self {
        Self::new(Strategy::Dynamic { max_children })
    }

    /// More than `intensity` restarts within `period` shut the supervisor down.
    pub fn intensity(mut self, intensity: u32, period: Duration) -> Self {
        self.intensity = intensity;
        self.period = period;
        self
    }

    /// Sets the auto-shutdown rule for significant children.
    pub fn auto_shutdown(mut self, rule: AutoShutdown) -> Self {
        self.auto_shutdown = rule;
        self
    }

    /// Whether this supervisor writes crash reports (flight recorder and the `warden::crash`
    /// log record), counts its children in the reliability figures and feeds the `warden_*`
    /// metrics. On by default. Turning it off keeps supervision and the event bus unchanged;
    /// it exists for supervisors restarting children at extreme rates, and so that the
    /// benchmark can measure what the bookkeeping costs.
    pub fn record_failures(mut self, on: bool) -> Self {
        self.record_failures = on;
        self
    }

    /// Appends a child; children start in the order they are added.
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The children, in start order.
    pub fn children(&self) -> &[ChildSpec] {
        &self.children
    }

    /// Checks the spec before anything starts: child ids must be unique and non-empty and
    /// may not contain `/`; a dynamic supervisor has no static children; significant
    /// children need a restart type other than permanent (OTP's rule).
    pub fn validate(&self) -> Result<(), crate::SpecError> {
        use crate::SpecError;
        if matches!(self.strategy, Strategy::Dynamic { .. }) && !self.children.is_empty() {
            return Err(SpecError::DynamicWithChildren);
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.children {
            validate_child(c)?;
            if !seen.insert(c.id.as_str()) {
                return Err(SpecError::DuplicateId(c.id.clone()));
            }
        }
        Ok(())
    }
}

pub(crate) fn validate_child(c: &ChildSpec) -> Result<(), crate::SpecError> {
    use crate::SpecError;
    if c.id.is_empty() || c.id.contains('/') {
        return Err(SpecError::BadId(c.id.clone()));
    }
    if c.significant && c.restart == RestartType::Permanent {
        return Err(SpecError::SignificantPermanent(c.id.clone()));
    }
    Ok(())
}
