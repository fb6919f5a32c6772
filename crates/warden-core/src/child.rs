//! The actor that runs a supervised worker: it hosts the user's `ractor::Actor` and restarts
//! it in place.
//!
//! warden spawns every worker inside `Supervised`, a thin ractor actor with the same message
//! type that calls the user's callbacks. When a handler panics or returns an error, the
//! wrapper does not let the actor die: it drops the broken state, reports the crash to the
//! supervisor and waits for its directive. On `Restart` it runs the user's `pre_start` and
//! `post_start` again inside the same ractor actor, so the `ActorRef`, the mailbox and
//! every message queued in it survive; only the message being handled is lost. On `Exit` it
//! stops, and the supervisor starts a new actor (group restarts, shutdown). Catching the
//! panic here rather than in ractor is also what makes restarts cheap: no spawn, no new
//! channels.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

use crate::handle::{ChildRef, Slot, SlotControl};
use crate::panic_capture::{self, Captured, InHandler};
use crate::path::ActorPath;
use crate::protocol::{ChildReport, Crash, Directive, Reporter, Spawned, StartCtx, Starter};
use crate::reason::{panic_message, spawn_cause, ExitReason, SHUTDOWN};
use crate::restored;
use crate::watchdog::{self, Beat, WatchGuard};

type ArgsFn<A> = Arc<dyn Fn() -> <A as Actor>::Arguments + Send + Sync>;

/// A fault injected by the test kit; a control signal (see `control`), so that it overtakes
/// queued messages, and handled exactly like a panic in a handler.
#[derive(Debug)]
pub(crate) struct InjectedPanic(pub String);

/// Starts [`Supervised`] actors for one child spec and owns the child's stable handle.
pub(crate) struct WorkerStarter<A: Actor> {
    actor: A,
    args: ArgsFn<A>,
    slot: Arc<Slot<A::Msg>>,
    render: Option<RenderFn<A>>,
}

/// Renders a message for a crash report (set only when the user opted in).
pub(crate) type RenderFn<A> = fn(&<A as Actor>::Msg) -> String;

/// The longest message rendering kept in a crash report, in bytes.
pub const MAX_RENDERED_MESSAGE: usize = 1024;

/// `Debug`-renders a message, cut at [`MAX_RENDERED_MESSAGE`] bytes.
pub(crate) fn render_debug<M: std::fmt::Debug>(m: &M) -> String {
    let mut s = format!("{m:?}");
    if s.len() > MAX_RENDERED_MESSAGE {
        let mut cut = MAX_RENDERED_MESSAGE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

impl<A: Actor + Clone> WorkerStarter<A> {
    pub(crate) fn new(actor: A, args: ArgsFn<A>, id: &str, render: Option<RenderFn<A>>) -> Self {
        WorkerStarter { actor, args, slot: Arc::new(Slot::new(id)), render }
    }

    /// The child's stable handle.
    pub(crate) fn handle(&self) -> ChildRef<A::Msg> {
        ChildRef::from_slot(self.slot.clone())
    }
}

impl<A: Actor + Clone> Starter for WorkerStarter<A> {
    fn start(&self, ctx: StartCtx) -> BoxFuture<'static, Result<Option<Spawned>, String>> {
        let handler = Supervised {
            inner: self.actor.clone(),
            args: self.args.clone(),
            report: ctx.report.clone(),
            path: ctx.path.clone(),
            render: self.render,
        };
        let slot = self.slot.clone();
        Box::pin(async move {
            slot.set_path(ctx.path.clone());
            let args = make_args::<A>(&handler.args)?;
            let sup = ctx.supervisor.clone();
            let init =
                SupervisedArgs { args, incarnation: ctx.incarnation, deadline: ctx.deadline, heartbeat: ctx.heartbeat };
            let (actor, task) = match Actor::spawn_linked(None, handler, init, sup).await {
                Ok(spawned) => spawned,
                Err(e) if crate::reason::ignored(&e) => return Ok(None),
                Err(e) => return Err(spawn_cause(e)),
            };
            slot.install(actor.clone(), Some(ctx.supervisor));
            Ok(Some(Spawned { cell: actor.get_cell(), task }))
        })
    }

    fn slot(&self) -> &dyn SlotControl {
        &*self.slot
    }

    fn handle_any(&self) -> Box<dyn Any + Send> {
        Box::new(ChildRef::from_slot(self.slot.clone()))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The ractor actor hosting a user's actor `A`.
pub(crate) struct Supervised<A: Actor> {
    inner: A,
    args: ArgsFn<A>,
    /// Where reports go (to the supervisor).
    report: Reporter,
    path: ActorPath,
    /// Renders each message before it is handled, for the crash report (opt-in).
    render: Option<RenderFn<A>>,
}

pub(crate) struct SupervisedArgs<A: Actor> {
    args: A::Arguments,
    incarnation: u64,
    deadline: Option<std::time::Duration>,
    heartbeat: Option<std::time::Duration>,
}

pub(crate) struct SupervisedState<A: Actor> {
    /// `None` only between a crash and the end of the restart.
    inner: Option<A::State>,
    incarnation: u64,
    /// Set when the child has a deadline (boxed: most children have none).
    watched: Option<Box<Watched>>,
}

/// A watched child's handler beat (marked busy while a handler runs, if it has a deadline)
/// and its registrations, which unregister from the watchdog when the actor ends.
pub(crate) struct Watched {
    beat: Option<Arc<Beat>>,
    _guards: [Option<WatchGuard>; 2],
}

/// Why a start did not produce a running child.
enum StartErr {
    /// The child returned [`crate::Ignore`].
    Ignored,
    /// It failed; the cause.
    Failed(String),
}

/// A user callback that failed: its error text, or its panic message and where it happened.
enum Fault {
    Error(String),
    Panic(String, Option<Captured>),
    /// `pre_start` returned [`crate::Ignore`].
    Ignored,
}

impl Fault {
    /// The exit reason of a handler that failed this way, and the panic's record.
    fn into_reason(self) -> (ExitReason, Option<Captured>) {
        match self {
            Fault::Error(e) => (ExitReason::Error(e), None),
            Fault::Panic(message, captured) => (ExitReason::Panic { message }, captured),
            Fault::Ignored => (ExitReason::Error(crate::Ignore.to_string()), None),
        }
    }

    /// A start failure in `stage` (`pre_start`, `post_start`, ...).
    fn start_failed(self, stage: &str) -> String {
        match self {
            Fault::Error(e) => format!("{stage} failed: {e}"),
            Fault::Panic(p, Some(Captured { location: Some(at), .. })) => format!("{stage} panicked at {at}: {p}"),
            Fault::Panic(p, _) => format!("{stage} panicked: {p}"),
            Fault::Ignored => format!("{stage}: {}", crate::Ignore),
        }
    }
}

/// Runs a user callback, turning both its error and its panic into a [`Fault`]. Panics are
/// recorded (location, backtrace on request) by warden's panic hook instead of printed.
async fn guarded<T>(f: impl std::future::Future<Output = Result<T, ActorProcessingErr>>) -> Result<T, Fault> {
    match AssertUnwindSafe(InHandler::new(f)).catch_unwind().await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if e.downcast_ref::<crate::Ignore>().is_some() => Err(Fault::Ignored),
        Ok(Err(e)) => Err(Fault::Error(e.to_string())),
        Err(p) => Err(Fault::Panic(panic_message(p.as_ref()), panic_capture::take())),
    }
}

/// Calls the user's argument function, which may panic.
fn make_args<A: Actor>(args: &ArgsFn<A>) -> Result<A::Arguments, String> {
    std::panic::catch_unwind(AssertUnwindSafe(|| args()))
        .map_err(|p| format!("argument function panicked: {}", panic_message(p.as_ref())))
}

impl<A: Actor> Supervised<A> {
    /// Runs the user's `pre_start` and `post_start`, turning errors and panics into text.
    async fn start_inner(
        &self,
        myself: &ActorRef<A::Msg>,
        args: A::Arguments,
        incarnation: u64,
    ) -> Result<A::State, StartErr> {
        let mut state = self.pre_start_noted(myself, args, incarnation).await?;
        guarded(self.inner.post_start(myself.clone(), &mut state))
            .await
            .map_err(|f| StartErr::Failed(f.start_failed("post_start")))?;
        Ok(state)
    }

    /// Runs the user's `pre_start`; if it restored saved state, tells the supervisor which.
    async fn pre_start_noted(
        &self,
        myself: &ActorRef<A::Msg>,
        args: A::Arguments,
        incarnation: u64,
    ) -> Result<A::State, StartErr> {
        let (started, restored) = restored::collect(guarded(self.inner.pre_start(myself.clone(), args))).await;
        let state = started.map_err(|f| match f {
            Fault::Ignored => StartErr::Ignored,
            f => StartErr::Failed(f.start_failed("pre_start")),
        })?;
        if let Some(from) = restored {
            let _ = (self.report)(ChildReport::StateRestored { actor: myself.get_id(), incarnation, from });
        }
        Ok(state)
    }

    /// The crash protocol: drop the broken state, report, wait for the supervisor's
    /// directive, restart in place or exit. Never returns an error, so ractor never sees the
    /// crash. Callers box this future: it is large, and ractor keeps every actor's processing
    /// loop in one allocation sized for its largest state, which would otherwise cost every
    /// child a few hundred bytes for a path taken only on a crash.
    async fn recover(
        &self,
        myself: &ActorRef<A::Msg>,
        st: &mut SupervisedState<A>,
        mut reason: ExitReason,
        mut dropped_message: Option<&'static str>,
        mut captured: Option<Captured>,
        mut rendered: Option<String>,
    ) -> Result<(), ActorProcessingErr> {
        // ractor does not run post_stop after a panic; neither do we.
        st.inner = None;
        loop {
            let (tx, rx) = oneshot::channel();
            let crash = Crash {
                actor: myself.get_id(),
                incarnation: st.incarnation,
                reason,
                dropped_message: dropped_message.take(),
                captured: captured.take(),
                rendered: rendered.take(),
                reply: tx,
            };
            if !(self.report)(ChildReport::Crashed(crash)) {
                myself.stop(Some(format!("{SHUTDOWN}: supervisor of {} is gone", self.path)));
                return Ok(());
            }
            match rx.await {
                Ok(Directive::Restart { incarnation }) => {
                    let started = match make_args::<A>(&self.args) {
                        Ok(args) => self.start_inner(myself, args, incarnation).await,
                        Err(e) => Err(StartErr::Failed(e)),
                    };
                    match started {
                        Ok(state) => {
                            st.inner = Some(state);
                            st.incarnation = incarnation;
                            let _ = (self.report)(ChildReport::Recovered { actor: myself.get_id(), incarnation });
                            return Ok(());
                        }
                        Err(StartErr::Failed(e)) => reason = ExitReason::StartFailed(e),
                        Err(StartErr::Ignored) => {
                            // Restarted in place, it chose not to run: it stops, and its
                            // supervisor, seeing why, leaves it stopped (counted once).
                            myself.stop(Some(crate::reason::IGNORED_STOP.to_string()));
                            return Ok(());
                        }
                    }
                }
                Ok(Directive::Exit) | Err(_) => {
                    myself.stop(Some(SHUTDOWN.to_string()));
                    return Ok(());
                }
            }
        }
    }
}

impl<A: Actor> Actor for Supervised<A> {
    type Msg = A::Msg;
    type State = SupervisedState<A>;
    type Arguments = SupervisedArgs<A>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        init: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let id = myself.get_id();
        let inner = match self.pre_start_noted(&myself, init.args, init.incarnation).await {
            Ok(inner) => inner,
            Err(StartErr::Ignored) => return Err(Box::new(crate::Ignore)),
            Err(StartErr::Failed(e)) => return Err(e.into()),
        };
        let watched = (init.deadline.is_some() || init.heartbeat.is_some()).then(|| {
            // The watchdog tells this child's supervisor, through a report it is handed.
            let to_supervisor = self.report.clone();
            let report: watchdog::Report = Arc::new(move |hang: watchdog::Hang| {
                let msg =
                    ChildReport::Hung { actor: hang.actor, stuck_for: hang.stuck_for, message_type: hang.message_type };
                if !to_supervisor(msg) {
                    tracing::debug!("hung child's supervisor is gone; nothing to report to");
                }
            });
            let (beat, handler_guard) = match init.deadline {
                Some(deadline) => {
                    let beat = Arc::new(Beat::default());
                    let message_type = std::any::type_name::<A::Msg>();
                    let guard = watchdog::watch(id, beat.clone(), deadline, report.clone(), message_type);
                    (Some(beat), guard)
                }
                None => (None, None),
            };
            let heartbeat_guard = init.heartbeat.and_then(|interval| watchdog::watch_heartbeat(id, interval, report));
            Box::new(Watched { beat, _guards: [handler_guard, heartbeat_guard] })
        });
        Ok(SupervisedState { inner: Some(inner), incarnation: init.incarnation, watched })
    }

    async fn post_start(&self, myself: ActorRef<Self::Msg>, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        let Some(inner) = st.inner.as_mut() else { return Ok(()) };
        match guarded(self.inner.post_start(myself.clone(), inner)).await {
            Ok(()) => Ok(()),
            Err(f) => {
                let reason = ExitReason::StartFailed(f.start_failed("post_start"));
                Box::pin(self.recover(&myself, st, reason, None, None, None)).await
            }
        }
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(inner) = st.inner.as_mut() else {
            // Unreachable: `recover` only returns with a state or after asking ractor to stop,
            // and a stop overtakes queued messages.
            tracing::error!(path = %self.path, "message reached a child without state; dropped");
            return Ok(());
        };
        let beat = st.watched.as_ref().and_then(|w| w.beat.as_ref());
        if let Some(b) = beat {
            b.enter();
        }
        // Rendered before the handler takes the message: only for children that opted in.
        let rendered = self.render.map(|render| render(&msg));
        let handled = guarded(self.inner.handle(myself.clone(), msg, inner)).await;
        if let Some(b) = st.watched.as_ref().and_then(|w| w.beat.as_ref()) {
            b.exit();
        }
        match handled {
            Ok(()) => Ok(()),
            Err(f) => {
                let (reason, captured) = f.into_reason();
                let message_type = Some(std::any::type_name::<A::Msg>());
                Box::pin(self.recover(&myself, st, reason, message_type, captured, rendered)).await
            }
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(injected) = crate::control::read::<InjectedPanic>(&evt) {
            let reason = ExitReason::Panic { message: injected.0.clone() };
            return Box::pin(self.recover(&myself, st, reason, None, None, None)).await;
        }
        let Some(inner) = st.inner.as_mut() else { return Ok(()) };
        match guarded(self.inner.handle_supervisor_evt(myself.clone(), evt, inner)).await {
            Ok(()) => Ok(()),
            Err(f) => {
                let (reason, captured) = f.into_reason();
                Box::pin(self.recover(&myself, st, reason, None, captured, None)).await
            }
        }
    }

    async fn post_stop(&self, myself: ActorRef<Self::Msg>, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        let stopped = match st.inner.as_mut() {
            Some(inner) => self.inner.post_stop(myself, inner).await,
            None => Ok(()),
        };
        // ractor hands a stopped actor's state to its supervisor inside the termination
        // event; drop the user's part here, so that what it holds (a port, a lock, a key) is
        // free before anything starts in its place.
        st.inner = None;
        stopped
    }
}

#[cfg(test)]
mod render_tests {
    use super::*;

    #[test]
    fn a_long_rendering_is_cut_at_the_bound_on_a_character_boundary() {
        // Debug adds a quote, then two-byte characters: the bound falls inside one of them.
        let long = "é".repeat(MAX_RENDERED_MESSAGE);
        let r = render_debug(&long);
        assert!(r.ends_with('…'), "a cut rendering says so");
        let body = r.trim_end_matches('…');
        assert!(body.len() <= MAX_RENDERED_MESSAGE, "{} bytes", body.len());
        assert_eq!(body.len(), MAX_RENDERED_MESSAGE - 1, "cut at the last boundary before the bound");
        let short = render_debug(&"ok");
        assert_eq!(short, "\"ok\"", "a short one is whole");
    }
}
