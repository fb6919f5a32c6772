//! Child and supervisor specifications: what to start, and the rules that keep it alive.
//!
//! A [`ChildSpec`] is plain data plus a start function, as in OTP: an id, a
//! [`RestartType`], a [`Shutdown`] policy, a [`ChildType`], the `significant` flag and,
//! beyond OTP, an optional restart [`Backoff`]. A [`SupervisorSpec`] lists children with a
//! [`Strategy`], a restart intensity and an [`AutoShutdown`] rule. Specs are cheap to clone:
//! the start function and the child's stable handle are shared, which is what keeps a
//! [`ChildRef`] valid when a whole subtree is restarted from its spec.
//!
//! ```
//! use std::time::Duration;
//! use warden_core::{Backoff, ChildSpec, RestartType, Shutdown, SupervisorSpec};
//! # #[derive(Clone)] struct Db;
//! # impl ractor::Actor for Db {
//! #     type Msg = (); type State = (); type Arguments = String;
//! #     async fn pre_start(&self, _: ractor::ActorRef<()>, _: String) -> Result<(), ractor::ActorProcessingErr> { Ok(()) }
//! # }
//!
//! let db = ChildSpec::worker("db", Db, "postgres://localhost".to_string())
//!     .restart(RestartType::Transient)
//!     .shutdown(Shutdown::Timeout(Duration::from_secs(10)))
//!     .backoff(Backoff::exponential(Duration::from_millis(100), Duration::from_secs(5)))
//!     .deadline(Duration::from_secs(2));
//! let tree = SupervisorSpec::rest_for_one().intensity(5, Duration::from_secs(10)).child(db);
//! assert!(tree.validate().is_ok());
//! ```

use std::sync::Arc;
use std::time::Duration;

use ractor::Message;

use crate::handle::ChildRef;
use crate::protocol::Starter;

pub use crate::vocab::{AutoShutdown, Backoff, ChildType, RestartType, Shutdown, Strategy};

/// The most children a dynamic supervisor holds when its spec names no maximum: 1,000,000
/// (about 1 GiB of idle children); past it `start_child` answers `MaxChildren`.
pub const DEFAULT_MAX_CHILDREN: usize = 1_000_000;

pub use crate::handle::DEFAULT_STASH_CAPACITY;
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
    /// The actor and its arguments are cloned for every new incarnation. The returned
    /// [`WorkerSpec`] knows the child's message type, so its [`handle`](WorkerSpec::handle)
    /// cannot fail; it goes into a tree wherever a `ChildSpec` does.
    pub fn worker<A>(id: impl Into<String>, actor: A, args: A::Arguments) -> WorkerSpec<A::Msg>
    where
        A: ractor::Actor + Clone,
        A::Arguments: Clone + Sync,
    {
        Self::worker_with(id, actor, move || args.clone())
    }

    /// A worker child whose arguments are made fresh by `args` for each incarnation.
    pub fn worker_with<A, F>(id: impl Into<String>, actor: A, args: F) -> WorkerSpec<A::Msg>
    where
        A: ractor::Actor + Clone,
        F: Fn() -> A::Arguments + Send + Sync + 'static,
    {
        Self::worker_rendering(id.into(), actor, Arc::new(args), None)
    }

    /// Like [`ChildSpec::worker`], and crash reports also carry the `Debug` rendering of the
    /// message being handled when the child failed (at most 1 KiB). Opt-in because messages
    /// may carry private data, and because every message is rendered before it is handled.
    pub fn worker_debug<A>(id: impl Into<String>, actor: A, args: A::Arguments) -> WorkerSpec<A::Msg>
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
    ) -> WorkerSpec<A::Msg>
    where
        A: ractor::Actor + Clone,
    {
        let starter = crate::child::WorkerStarter::new(actor, args, &id, render);
        let handle = starter.handle();
        let spec = ChildSpec {
            id,
            restart: RestartType::Permanent,
            shutdown: Shutdown::Timeout(DEFAULT_WORKER_SHUTDOWN),
            child_type: ChildType::Worker,
            significant: false,
            backoff: None,
            deadline: None,
            heartbeat: None,
            starter: Arc::new(starter),
        };
        TypedChildSpec { spec, handle }
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
    ///
    /// For a spec whose type was erased (a `Vec<ChildSpec>` of mixed children, a factory
    /// returning `ChildSpec`); [`WorkerSpec::handle`] is the infallible form.
    pub fn handle<M: Message>(&self) -> Option<ChildRef<M>> {
        self.starter.handle_any().downcast::<ChildRef<M>>().ok().map(|b| *b)
    }
}

/// A child spec that knows the type of its handle: what [`ChildSpec::worker`] (a
/// [`WorkerSpec`], whose handle is a [`ChildRef<M>`]) and [`ChildSpec::supervisor`] (a
/// [`SupervisorChildSpec`](crate::SupervisorChildSpec), whose handle is its runtime API) return.
///
/// It has the options of a [`ChildSpec`], and goes into a tree wherever one does
/// ([`SupervisorSpec::child`] and `start_child` take `impl Into<ChildSpec>`). Its handle can be
/// taken at any time, before or after the options are set: it is the same stable handle.
///
/// ```
/// use warden_core::{ChildSpec, RestartType, Supervisor, SupervisorSpec};
/// # #[derive(Clone)] struct Counter;
/// # impl ractor::Actor for Counter {
/// #     type Msg = u64; type State = (); type Arguments = ();
/// #     async fn pre_start(&self, _: ractor::ActorRef<u64>, _: ()) -> Result<(), ractor::ActorProcessingErr> { Ok(()) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let counter = ChildSpec::worker("counter", Counter, ()).restart(RestartType::Transient);
/// let handle = counter.handle(); // a ChildRef<u64>: nothing to unwrap
/// let app = Supervisor::start("app", SupervisorSpec::one_for_one().child(counter)).await?;
/// handle.cast(1)?;
/// app.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TypedChildSpec<H> {
    pub(crate) spec: ChildSpec,
    pub(crate) handle: H,
}

/// The spec of a worker child whose messages are `M`.
pub type WorkerSpec<M> = TypedChildSpec<ChildRef<M>>;

impl<H> std::fmt::Debug for TypedChildSpec<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.spec.fmt(f)
    }
}

impl<H: Clone> TypedChildSpec<H> {
    /// The child's stable handle (cheap to clone; valid before the child starts and across
    /// its restarts).
    pub fn handle(&self) -> H {
        self.handle.clone()
    }

    /// The spec and the handle, for code that keeps both.
    pub fn into_parts(self) -> (ChildSpec, H) {
        (self.spec, self.handle)
    }

    /// The untyped spec.
    pub fn spec(&self) -> &ChildSpec {
        &self.spec
    }

    /// The child's id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// Sets the restart type ([`ChildSpec::restart`]).
    pub fn restart(mut self, restart: RestartType) -> Self {
        self.spec = self.spec.restart(restart);
        self
    }

    /// Sets the shutdown policy ([`ChildSpec::shutdown`]).
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.spec = self.spec.shutdown(shutdown);
        self
    }

    /// Marks the child significant ([`ChildSpec::significant`]).
    pub fn significant(mut self, significant: bool) -> Self {
        self.spec = self.spec.significant(significant);
        self
    }

    /// Delays restarts of this child ([`ChildSpec::backoff`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.spec = self.spec.backoff(backoff);
        self
    }
}

impl<M: Message> WorkerSpec<M> {
    /// Gives the worker a liveness deadline ([`ChildSpec::deadline`]).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.spec = self.spec.deadline(deadline);
        self
    }

    /// Requires the worker to call in ([`ChildSpec::heartbeat`]).
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.spec = self.spec.heartbeat(interval);
        self
    }

    /// Sets the handle's stash capacity ([`ChildSpec::stash_capacity`]).
    pub fn stash_capacity(mut self, capacity: usize) -> Self {
        self.spec = self.spec.stash_capacity(capacity);
        self
    }
}

impl<H> From<TypedChildSpec<H>> for ChildSpec {
    fn from(typed: TypedChildSpec<H>) -> ChildSpec {
        typed.spec
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

    /// A dynamic supervisor holding at most `max_children` children (`None`:
    /// [`DEFAULT_MAX_CHILDREN`]). A `start_child` past the maximum answers
    /// `SupervisorError::MaxChildren` and starts nothing. For no limit at all, say so with
    /// [`unbounded`](Self::unbounded).
    pub fn dynamic(max_children: Option<usize>) -> Self {
        Self::new(Strategy::Dynamic { max_children: Some(max_children.unwrap_or(DEFAULT_MAX_CHILDREN)) })
    }

    /// A dynamic supervisor with no maximum number of children: a runaway caller of
    /// `start_child` can then exhaust memory (about 1 KiB per idle child). No effect on the
    /// other strategies.
    pub fn unbounded(mut self) -> Self {
        if let Strategy::Dynamic { max_children } = &mut self.strategy {
            *max_children = None;
        }
        self
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

    /// Appends a child (a [`ChildSpec`] or a [`TypedChildSpec`]); children start in the
    /// order they are added.
    pub fn child(mut self, child: impl Into<ChildSpec>) -> Self {
        self.children.push(child.into());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_supervisor_is_bounded_unless_it_says_otherwise() {
        let bounded = SupervisorSpec::dynamic(None);
        assert_eq!(bounded.strategy, Strategy::Dynamic { max_children: Some(DEFAULT_MAX_CHILDREN) });
        assert_eq!(SupervisorSpec::dynamic(Some(3)).strategy, Strategy::Dynamic { max_children: Some(3) });
        assert_eq!(bounded.unbounded().strategy, Strategy::Dynamic { max_children: None });
        // Not a dynamic supervisor: nothing to unbind.
        assert_eq!(SupervisorSpec::one_for_one().unbounded().strategy, Strategy::OneForOne);
    }
}
