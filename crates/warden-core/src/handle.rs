//! Stable child handles: an address that stays valid across restarts.
//!
//! ractor gives every incarnation a new `ActorRef`; a reference stored before a restart goes
//! stale. A [`ChildRef`] is created with the child's spec and follows the child through every
//! restart, also when its whole subtree is restarted from specs. What a message sent through
//! it becomes:
//!
//! | child state when sent | what happens |
//! |---|---|
//! | running | delivered to the current incarnation's mailbox |
//! | crashed in a handler, restarting in place | queued in the same mailbox, handled by the new incarnation (the mailbox is kept, as in Akka) |
//! | being replaced (group restart, exit, kill, backoff wait) | kept in the handle's bounded stash and delivered to the new incarnation first, in order |
//! | stash full | handed back: [`SendError::StashFull`] |
//! | not started, terminated, or not restarted | handed back: [`SendError::NotRunning`] |
//!
//! Only the message whose handling crashed the child is dropped, and its type is named in
//! the `ChildExited` event. Messages still queued in the mailbox of an incarnation that is
//! *stopped or killed* (a bystander of a group restart, a child that exits by itself, a
//! killed child) are lost with that mailbox, as in OTP; messages stashed for a child that
//! then is not restarted are dropped and counted in a `StashDropped` event.
//!
//! ```
//! use warden_core::{ChildSpec, SendError, Supervisor, SupervisorSpec};
//! # #[derive(Clone)] struct Worker;
//! # impl ractor::Actor for Worker {
//! #     type Msg = u32; type State = (); type Arguments = ();
//! #     async fn pre_start(&self, _: ractor::ActorRef<u32>, _: ()) -> Result<(), ractor::ActorProcessingErr> { Ok(()) }
//! #     async fn handle(&self, _: ractor::ActorRef<u32>, n: u32, _: &mut ()) -> Result<(), ractor::ActorProcessingErr> {
//! #         if n == 0 { panic!("zero") } Ok(())
//! #     }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let worker = ChildSpec::worker("worker", Worker, ());
//! let handle = worker.handle(); // valid before the child starts...
//! let back = handle.cast(1).unwrap_err(); // ...and hands messages back until it runs
//! assert!(matches!(back, SendError::NotRunning { .. }));
//! assert_eq!(back.into_message(), Some(1));
//! let app = Supervisor::start("handle-doc", SupervisorSpec::one_for_one().child(worker)).await?;
//! handle.cast(0)?; // a crash...
//! handle.cast(1)?; // ...and the same handle keeps working
//! app.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ractor::{ActorCell, ActorRef, ActorStatus, Message, MessagingErr, RpcReplyPort};

use crate::path::ActorPath;

/// Default capacity of the stash that keeps messages sent while a child restarts (Akka's).
pub const DEFAULT_STASH_CAPACITY: usize = 1000;

enum SlotState<M> {
    NotStarted,
    /// The incarnation, and the supervisor that will decide about it when it dies
    /// (`None` for a root supervisor).
    Running(ActorRef<M>, Option<ActorCell>),
    /// Being replaced by the supervisor kept here.
    Restarting(Option<ActorCell>),
    Stopped,
}

pub(crate) struct Slot<M> {
    /// The child's path; until its first start, just its id.
    path: Mutex<ActorPath>,
    state: RwLock<SlotState<M>>,
    stash: Mutex<VecDeque<M>>,
    stash_capacity: AtomicUsize,
}

/// The controls the supervisor needs of a handle, whatever its message type.
pub(crate) trait SlotControl: Send + Sync {
    /// The child is being replaced: keep messages until `install`.
    fn set_restarting(&self);
    /// The child will not run again: hand messages back from now on. Returns how many
    /// stashed messages were dropped.
    fn close(&self) -> usize;
    fn set_stash_capacity(&self, capacity: usize);
    fn set_path(&self, path: ActorPath);
}

impl<M: Message> Slot<M> {
    pub(crate) fn new(id: &str) -> Self {
        Slot {
            path: Mutex::new(ActorPath::unplaced(id)),
            state: RwLock::new(SlotState::NotStarted),
            stash: Mutex::new(VecDeque::new()),
            stash_capacity: AtomicUsize::new(DEFAULT_STASH_CAPACITY),
        }
    }

    /// Makes `actor` the current incarnation and delivers the stash to it first, in order.
    /// `supervisor` is the actor that restarts it (`None` for a root).
    pub(crate) fn install(&self, actor: ActorRef<M>, supervisor: Option<ActorCell>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut stash = self.stash.lock().unwrap_or_else(|e| e.into_inner());
        let mut undelivered = 0usize;
        for m in stash.drain(..) {
            if actor.send_message(m).is_err() {
                undelivered += 1;
            }
        }
        if undelivered > 0 {
            tracing::warn!(child = %self.path(), undelivered,
                "new incarnation stopped before its stash was delivered");
        }
        *state = SlotState::Running(actor, supervisor);
    }

    fn path(&self) -> ActorPath {
        self.path.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn send(&self, msg: M) -> Result<(), SendError<M>> {
        let msg = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            match &*state {
                SlotState::Running(actor, _) => match actor.send_message(msg) {
                    Ok(()) => return Ok(()),
                    Err(MessagingErr::SendErr(m)) => m,
                    Err(_) => return Err(SendError::NotRunning { path: self.path(), message: None }),
                },
                _ => msg,
            }
            // The read lock is released here: `send_slow` takes the write lock.
        };
        self.send_slow(msg)
    }

    // The incarnation is gone or being replaced. Taking the write lock orders this sender
    // with `install`, so a stashed message is never overtaken by a later one.
    fn send_slow(&self, msg: M) -> Result<(), SendError<M>> {
        let state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let msg = match &*state {
            SlotState::Running(actor, supervisor) => match actor.send_message(msg) {
                Ok(()) => return Ok(()),
                // The incarnation died and its supervisor has not decided yet: keep the
                // message for a restart, unless no supervisor is left to decide.
                Err(MessagingErr::SendErr(m)) if supervisor.as_ref().is_some_and(alive) => m,
                Err(MessagingErr::SendErr(m)) => {
                    return Err(SendError::NotRunning { path: self.path(), message: Some(m) })
                }
                Err(_) => return Err(SendError::NotRunning { path: self.path(), message: None }),
            },
            SlotState::Restarting(supervisor) if supervisor.as_ref().is_none_or(alive) => msg,
            SlotState::Restarting(_) => return Err(SendError::NotRunning { path: self.path(), message: Some(msg) }),
            SlotState::NotStarted | SlotState::Stopped => {
                return Err(SendError::NotRunning { path: self.path(), message: Some(msg) })
            }
        };
        let mut stash = self.stash.lock().unwrap_or_else(|e| e.into_inner());
        let capacity = self.stash_capacity.load(Ordering::Relaxed);
        if stash.len() >= capacity {
            return Err(SendError::StashFull { path: self.path(), capacity, message: msg });
        }
        stash.push_back(msg);
        Ok(())
    }

    fn current(&self) -> Option<ActorRef<M>> {
        match &*self.state.read().unwrap_or_else(|e| e.into_inner()) {
            SlotState::Running(a, _) => Some(a.clone()),
            _ => None,
        }
    }
}

fn alive(cell: &ActorCell) -> bool {
    cell.get_status() < ActorStatus::Stopping
}

impl<M: Message> SlotControl for Slot<M> {
    fn set_restarting(&self) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let supervisor = match &*state {
            SlotState::Running(_, s) | SlotState::Restarting(s) => s.clone(),
            _ => None,
        };
        *state = SlotState::Restarting(supervisor);
    }

    fn close(&self) -> usize {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        *state = SlotState::Stopped;
        let mut stash = self.stash.lock().unwrap_or_else(|e| e.into_inner());
        let n = stash.len();
        stash.clear();
        n
    }

    fn set_stash_capacity(&self, capacity: usize) {
        self.stash_capacity.store(capacity, Ordering::Relaxed);
    }

    fn set_path(&self, path: ActorPath) {
        *self.path.lock().unwrap_or_else(|e| e.into_inner()) = path;
    }
}

/// A handle to a supervised child that stays valid across its restarts.
///
/// Clone it freely; all clones address the same child. See the [module docs](self) for what
/// happens to a message in each state of the child.
pub struct ChildRef<M: Message> {
    slot: Arc<Slot<M>>,
}

impl<M: Message> Clone for ChildRef<M> {
    fn clone(&self) -> Self {
        ChildRef { slot: self.slot.clone() }
    }
}

impl<M: Message> fmt::Debug for ChildRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChildRef({})", self.slot.path())
    }
}

impl<M: Message> ChildRef<M> {
    pub(crate) fn from_slot(slot: Arc<Slot<M>>) -> Self {
        ChildRef { slot }
    }

    /// The child's path (its id alone until it first starts).
    pub fn path(&self) -> ActorPath {
        self.slot.path()
    }

    /// Sends `msg` without waiting for an answer. `Err` hands the message back with the
    /// reason it could not be delivered or kept.
    pub fn cast(&self, msg: M) -> Result<(), SendError<M>> {
        self.slot.send(msg)
    }

    /// Sends the message built by `build` around a reply port and waits for the answer, at
    /// most `timeout` (`None`: without limit). A message kept in the stash waits for the new
    /// incarnation.
    pub async fn call<R, F>(&self, build: F, timeout: Option<Duration>) -> Result<R, CallError>
    where
        R: Send + 'static,
        F: FnOnce(RpcReplyPort<R>) -> M,
    {
        let (tx, rx) = ractor::concurrency::oneshot();
        let port: RpcReplyPort<R> = tx.into();
        self.cast(build(port)).map_err(|e| match e {
            SendError::NotRunning { path, .. } => CallError::NotRunning { path },
            SendError::StashFull { path, capacity, .. } => CallError::StashFull { path, capacity },
        })?;
        let answer = match timeout {
            Some(t) => match tokio::time::timeout(t, rx).await {
                Ok(a) => a,
                Err(_) => return Err(CallError::Timeout { path: self.path(), timeout: t }),
            },
            None => rx.await,
        };
        answer.map_err(|_| CallError::NoReply { path: self.path() })
    }

    /// The current incarnation's `ActorRef`, if one is running. It goes stale at the next
    /// restart; keep the `ChildRef` instead.
    pub fn actor_ref(&self) -> Option<ActorRef<M>> {
        self.slot.current()
    }

    /// Whether an incarnation is installed and its actor is alive.
    pub fn is_running(&self) -> bool {
        self.slot
            .current()
            .map(|a| matches!(a.get_status(), ractor::ActorStatus::Running | ractor::ActorStatus::Starting))
            .unwrap_or(false)
    }
}

/// Why a message could not be delivered; the message is handed back where it still exists.
pub enum SendError<M> {
    /// The child is not running and will not run again (or has not started yet).
    NotRunning {
        /// The child's path.
        path: ActorPath,
        /// The message, handed back (absent only if ractor did not return it).
        message: Option<M>,
    },
    /// The child is restarting and its stash is full.
    StashFull {
        /// The child's path.
        path: ActorPath,
        /// The stash capacity.
        capacity: usize,
        /// The message, handed back.
        message: M,
    },
}

impl<M> SendError<M> {
    /// The undelivered message.
    pub fn into_message(self) -> Option<M> {
        match self {
            SendError::NotRunning { message, .. } => message,
            SendError::StashFull { message, .. } => Some(message),
        }
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NotRunning { path, .. } => {
                write!(f, "child {path} is not running; the message was not delivered")
            }
            SendError::StashFull { path, capacity, .. } => write!(
                f,
                "child {path} is restarting and its stash of {capacity} messages is full; the message was not delivered"
            ),
        }
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SendError({self})")
    }
}

impl<M> std::error::Error for SendError<M> {}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CallError {
    /// The child is not running.
    #[error("child {path} is not running")]
    NotRunning {
        /// The child's path.
        path: ActorPath,
    },
    /// The child is restarting and its stash is full.
    #[error("child {path} is restarting and its stash of {capacity} messages is full")]
    StashFull {
        /// The child's path.
        path: ActorPath,
        /// The stash capacity.
        capacity: usize,
    },
    /// No answer within the timeout.
    #[error("child {path} did not answer within {timeout:?}")]
    Timeout {
        /// The child's path.
        path: ActorPath,
        /// The timeout.
        timeout: Duration,
    },
    /// The reply port was dropped: the child crashed while handling the call, or ignored it.
    #[error("child {path} dropped the call without answering (it crashed or ignored it)")]
    NoReply {
        /// The child's path.
        path: ActorPath,
    },
}
