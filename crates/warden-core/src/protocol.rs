//! The protocol between a supervisor and the children it starts, as plain types: how a child
//! is started (the `Starter` trait, given a [`StartCtx`], answering a `Spawned`), what a
//! child's host reports ([`ChildReport`], among them a
//! [`Crash`] that waits for a [`Directive`]), and the [`Reporter`] it reports through.
//!
//! A leaf: it names no supervisor, spec or host code, so the host (`child.rs`), the specs and
//! the supervisor all depend on it and not on each other for these. The supervisor turns a
//! report into its own message inside the reporter it hands out.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{ActorCell, ActorId};
use tokio::sync::oneshot;

use crate::event::EventBus;
use crate::handle::SlotControl;
use crate::panic_capture::Captured;
use crate::path::ActorPath;
use crate::reason::ExitReason;
use crate::restored::RestoredFrom;

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
    Restart {
        /// The new incarnation's number.
        incarnation: u64,
    },
    /// Stop; the supervisor replaces or forgets the child.
    Exit,
}

/// What a child's host (or its watchdog) tells its supervisor.
pub(crate) enum ChildReport {
    /// It crashed in a handler and waits for a directive.
    Crashed(Crash),
    /// It restarted in place as `incarnation`.
    Recovered { actor: ActorId, incarnation: u64 },
    /// Its `pre_start` restored state (from a checkpoint, say).
    StateRestored { actor: ActorId, incarnation: u64, from: RestoredFrom },
    /// A handler has been stuck past its deadline, or a heartbeat is missing.
    Hung { actor: ActorId, stuck_for: Duration, message_type: &'static str },
}

/// Delivers a report to the supervisor; `false` when the supervisor is gone. One per
/// supervisor, shared by its children.
pub(crate) type Reporter = Arc<dyn Fn(ChildReport) -> bool + Send + Sync>;

/// What a start function is given: where the child sits and whom it reports to.
#[derive(Clone)]
pub(crate) struct StartCtx {
    /// The supervisor's actor, which the child is linked under.
    pub supervisor: ActorCell,
    /// Where the child's reports go.
    pub report: Reporter,
    /// The hang deadline of the child's handlers, if it has one.
    pub deadline: Option<Duration>,
    /// The interval within which the child must call in, if it must.
    pub heartbeat: Option<Duration>,
    pub path: ActorPath,
    pub events: EventBus,
    pub incarnation: u64,
}

/// A started incarnation: its cell, and its task, which ends only once the actor's state is
/// dropped (ractor drops a killed actor's state in that task after it has reported the end).
pub(crate) struct Spawned {
    pub(crate) cell: ActorCell,
    pub(crate) task: ractor::concurrency::JoinHandle<()>,
}

/// The type-erased start function of a child, plus the controls of its stable handle. The
/// worker host (`child.rs`) and the nested supervisor (`supervisor/nested.rs`) implement it;
/// a spec holds one without knowing which.
pub(crate) trait Starter: Send + Sync + 'static {
    /// Spawns a new incarnation linked to `ctx.supervisor`, installs it in the handle and
    /// returns it; `None` when the child chose not to run ([`crate::Ignore`]); `Err` carries
    /// the cause of a failed start.
    fn start(&self, ctx: StartCtx) -> BoxFuture<'static, Result<Option<Spawned>, String>>;
    /// The controls of the child's stable handle.
    fn slot(&self) -> &dyn SlotControl;
    /// The typed handle as `Any` (a `ChildRef<M>`), for `ChildSpec::handle`.
    fn handle_any(&self) -> Box<dyn Any + Send>;
    /// The starter itself, for the one implementation that hands out more than a handle (a
    /// nested supervisor's runtime API).
    fn as_any(&self) -> &dyn Any;
}
