//! The runtime API of a supervisor, with OTP's names and error cases.
//!
//! [`SupervisorRef`] is a stable handle (it follows a nested supervisor through its
//! restarts) offering `start_child`, `terminate_child`, `restart_child`, `delete_child`,
//! `which_children` and `count_children`. Each call waits for the supervisor without a
//! time limit, as OTP's supervisor calls do: stopping a child with shutdown `Infinity` can
//! legitimately take long.

use ractor::{ActorCell, ActorId, RpcReplyPort};

use crate::event::{EventBus, SupervisorEvent};
use crate::handle::{CallError, ChildRef};
use crate::path::ActorPath;
use crate::reason::ExitReason;
use crate::spec::{ChildSpec, ChildType, RestartType};
use crate::supervisor::SupervisorMsg;
use crate::SpecError;

/// What a child is doing, as `which_children` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStatus {
    /// An incarnation is running.
    Running,
    /// The child exited and a restart is under way or scheduled (OTP's `restarting`).
    Restarting,
    /// The child is not running and no restart is scheduled (OTP's `undefined`); its spec
    /// is kept.
    Stopped,
}

/// One child, as `which_children` reports it.
#[derive(Debug, Clone)]
pub struct ChildInfo {
    /// The child's id (for dynamic children, the generated instance id).
    pub id: String,
    /// The child's path.
    pub path: ActorPath,
    /// Its state.
    pub status: ChildStatus,
    /// Worker or supervisor.
    pub child_type: ChildType,
    /// Its restart type.
    pub restart: RestartType,
    /// How many times it was restarted by its supervisor.
    pub restarts: u64,
    /// How many times it was started, restarts included.
    pub incarnation: u64,
    /// The running actor, if any.
    pub actor: Option<ActorCell>,
    /// For a supervisor child, a handle to it.
    pub supervisor: Option<SupervisorRef>,
}

impl ChildInfo {
    /// The running actor's id, if any.
    pub fn actor_id(&self) -> Option<ActorId> {
        self.actor.as_ref().map(|a| a.get_id())
    }
}

/// Counts of children (OTP's `count_children`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChildCounts {
    /// All children with a spec, running or not.
    pub specs: usize,
    /// Children with a running incarnation.
    pub active: usize,
    /// Supervisor children.
    pub supervisors: usize,
    /// Worker children.
    pub workers: usize,
}

/// Errors of the runtime API; each names the supervisor or child concerned.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SupervisorError {
    /// No child with this id.
    #[error("supervisor {supervisor} has no child {id:?}")]
    NotFound {
        /// The supervisor's path.
        supervisor: ActorPath,
        /// The id asked for.
        id: String,
    },
    /// `start_child` with the id of a running child.
    #[error("child {path} is already started")]
    AlreadyStarted {
        /// The child's path.
        path: ActorPath,
    },
    /// `start_child` with the id of a child that exists but is not running.
    #[error("child {path} is already present (not running); use restart_child or delete_child")]
    AlreadyPresent {
        /// The child's path.
        path: ActorPath,
    },
    /// `restart_child` or `delete_child` on a running child.
    #[error("child {path} is running; terminate it first")]
    Running {
        /// The child's path.
        path: ActorPath,
    },
    /// `restart_child` or `delete_child` on a child being restarted by its supervisor.
    #[error("child {path} is being restarted by its supervisor")]
    Restarting {
        /// The child's path.
        path: ActorPath,
    },
    /// The child failed to start.
    #[error("child {path} failed to start: {cause}")]
    StartFailed {
        /// The child's path.
        path: ActorPath,
        /// Why.
        cause: String,
    },
    /// A dynamic supervisor already holds `max` children.
    #[error("dynamic supervisor {supervisor} already holds its maximum of {max} children")]
    MaxChildren {
        /// The supervisor's path.
        supervisor: ActorPath,
        /// Its `max_children`.
        max: usize,
    },
    /// The operation does not exist for dynamic supervisors (as in OTP).
    #[error("{operation} is not supported by dynamic supervisor {supervisor}")]
    NotSupported {
        /// The supervisor's path.
        supervisor: ActorPath,
        /// The operation.
        operation: &'static str,
    },
    /// The child spec is invalid.
    #[error("invalid child spec for supervisor {supervisor}: {error}")]
    InvalidSpec {
        /// The supervisor's path.
        supervisor: ActorPath,
        /// What is wrong.
        error: SpecError,
    },
    /// The supervisor did not answer: it is not running, or stopped while handling the call.
    #[error("supervisor {supervisor} is unavailable: {cause}")]
    Unavailable {
        /// The supervisor's path.
        supervisor: ActorPath,
        /// Why.
        cause: String,
    },
}

/// A stable handle to a supervisor: valid across its restarts by its own parent. It offers the
/// runtime API ([`SupervisorControl`], through `Deref`) and the tree's events, crash reports
/// and reliability figures.
#[derive(Clone, Debug)]
pub struct SupervisorRef {
    pub(crate) control: SupervisorControl,
    pub(crate) events: EventBus,
}

/// The runtime API of one supervisor (OTP's `start_child`, `terminate_child`, ...), without
/// the tree's events. Available before the supervisor starts, from its spec
/// ([`ChildSpec::supervisor_control`]), which is what lets a layer that builds a supervisor
/// child (a pool) manage it later. Follows the supervisor across its restarts.
#[derive(Clone, Debug)]
pub struct SupervisorControl {
    pub(crate) handle: ChildRef<SupervisorMsg>,
    pub(crate) exit: ExitNote,
}

/// How the latest incarnation of a supervisor ended, written by it as it stops, so that
/// [`SupervisorControl::wait`] can answer also after the fact.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExitNote(std::sync::Arc<std::sync::Mutex<Option<ExitReason>>>);

impl ExitNote {
    pub(crate) fn set(&self, reason: ExitReason) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
    }

    fn get(&self) -> Option<ExitReason> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Where a supervisor stands, as [`SupervisorControl::status`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupervisorStatus {
    /// Running (or starting its children).
    Running,
    /// Asked to stop: its children are being stopped.
    Stopping,
    /// Not running (stopped, not started yet, or between two incarnations under its parent).
    Stopped,
}

impl std::ops::Deref for SupervisorRef {
    type Target = SupervisorControl;
    fn deref(&self) -> &SupervisorControl {
        &self.control
    }
}

impl SupervisorRef {
    /// Subscribes to the events of the whole tree this supervisor belongs to.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<SupervisorEvent> {
        self.events.subscribe()
    }

    /// The latest crash reports of the whole tree, oldest first (see
    /// [`FlightRecorder`](crate::FlightRecorder); export with `events().recorder().to_json()`).
    pub fn crash_reports(&self) -> Vec<crate::CrashReport> {
        self.events.recorder().reports()
    }

    /// Reliability figures of one actor path (see [`stats`](crate::stats) for definitions).
    pub fn stats(&self, path: &str) -> Option<crate::stats::StatsSnapshot> {
        self.events.stats().path(path)
    }

    /// Reliability figures of every path at or under `path`, summed.
    pub fn subtree_stats(&self, path: &str) -> crate::stats::StatsSnapshot {
        self.events.stats().subtree(path)
    }

    /// The tree's event bus.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The runtime API alone.
    pub fn control(&self) -> &SupervisorControl {
        &self.control
    }
}

impl SupervisorControl {
    /// The supervisor's path (its id alone until it first starts).
    pub fn path(&self) -> ActorPath {
        self.handle.path()
    }

    /// The current incarnation's cell, if running.
    pub fn cell(&self) -> Option<ActorCell> {
        self.handle.actor_ref().map(|a| a.get_cell())
    }

    /// Whether the supervisor is running.
    pub fn is_running(&self) -> bool {
        self.handle.is_running()
    }

    /// Running, stopping (its children are being stopped) or stopped.
    pub fn status(&self) -> SupervisorStatus {
        match self.cell().map(|c| c.get_status()) {
            None | Some(ractor::ActorStatus::Stopped) => SupervisorStatus::Stopped,
            Some(ractor::ActorStatus::Stopping) => SupervisorStatus::Stopping,
            Some(_) => SupervisorStatus::Running,
        }
    }

    async fn ask<R: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<R>) -> SupervisorMsg,
    ) -> Result<R, SupervisorError> {
        self.handle.call(build, None).await.map_err(|e| {
            let cause = match &e {
                CallError::NoReply { .. } => "it stopped before answering".to_string(),
                other => other.to_string(),
            };
            SupervisorError::Unavailable { supervisor: self.path(), cause }
        })
    }

    /// Adds `spec` and starts it (OTP's `start_child`). On a dynamic supervisor the child
    /// gets the instance id `"{id}-{n}"`, returned in the [`ChildInfo`].
    pub async fn start_child(&self, spec: impl Into<ChildSpec>) -> Result<ChildInfo, SupervisorError> {
        let spec = spec.into();
        self.ask(|r| SupervisorMsg::StartChild(spec, r)).await?
    }

    /// Stops a child by its shutdown policy and keeps its spec (a temporary or dynamic
    /// child's spec is removed).
    pub async fn terminate_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_string();
        self.ask(|r| SupervisorMsg::TerminateChild(id, r)).await?
    }

    /// Starts a terminated child again from its spec.
    pub async fn restart_child(&self, id: &str) -> Result<ChildInfo, SupervisorError> {
        let id = id.to_string();
        self.ask(|r| SupervisorMsg::RestartChild(id, r)).await?
    }

    /// Removes the spec of a terminated child.
    pub async fn delete_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_string();
        self.ask(|r| SupervisorMsg::DeleteChild(id, r)).await?
    }

    /// Every child, in start order.
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, SupervisorError> {
        self.ask(SupervisorMsg::WhichChildren).await
    }

    /// Counts of children.
    pub async fn count_children(&self) -> Result<ChildCounts, SupervisorError> {
        self.ask(SupervisorMsg::CountChildren).await
    }

    /// The nested supervisor with id `id`.
    pub async fn supervisor_child(&self, id: &str) -> Result<SupervisorRef, SupervisorError> {
        self.which_children()
            .await?
            .into_iter()
            .find(|c| c.id == id)
            .and_then(|c| c.supervisor)
            .ok_or_else(|| SupervisorError::NotFound { supervisor: self.path(), id: id.to_string() })
    }

    /// Stops the supervisor: its children stop in reverse order by their shutdown policies,
    /// then it exits with reason `shutdown`. Waits until it has stopped.
    pub async fn shutdown(&self) {
        if let Some(cell) = self.cell() {
            let _ = cell.stop_and_wait(Some(crate::reason::SHUTDOWN.to_string()), None).await;
        }
    }

    /// Asks the supervisor to stop, as [`shutdown`](Self::shutdown) does, and returns at once
    /// ([`wait`](Self::wait) for the end, [`status`](Self::status) meanwhile).
    pub fn stop(&self) {
        if let Some(cell) = self.cell() {
            cell.stop(Some(crate::reason::SHUTDOWN.to_string()));
        }
    }

    /// Waits until the current incarnation of the supervisor has stopped and answers how it
    /// ended: `Shutdown(None)` when asked to stop, `Shutdown(Some("reached max restart
    /// intensity"))` when it gave up, `Killed` when it was killed (its `post_stop` did not
    /// run), and so on. Called after it stopped, it answers at once with how it ended
    /// (nothing to subscribe to beforehand); `None` only if it never ran.
    pub async fn wait(&self) -> Option<ExitReason> {
        if let Some(cell) = self.cell() {
            let _ = cell.wait(None).await;
        }
        self.exit.get()
    }
}
