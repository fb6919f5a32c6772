//! A test kit for supervision behaviour in users' own tests.
//!
//! * [`EventProbe`] records a tree's events and waits for one that matches, with a deadline.
//! * [`inject_panic`], [`inject_exit`] and [`inject_kill`] make a child fail the way real
//!   children do: a panic in a handler (handled ahead of queued messages), an exit with a
//!   reason, or a kill.
//! * [`tree`] takes a snapshot of a whole tree for assertions.
//! * [`PanicTrap`] turns child panics into test failures instead of letting them vanish into
//!   restarts (a long-standing complaint about actor tests).
//!
//! ```
//! use std::time::Duration;
//! use warden_core::testkit::{inject_panic, tree, EventProbe};
//! use warden_core::{ChildSpec, Supervisor, SupervisorSpec};
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
//! let handle = worker.handle();
//! let app = Supervisor::start("testkit-doc", SupervisorSpec::one_for_one().child(worker)).await?;
//! let mut probe = EventProbe::new(&app);
//! inject_panic(&handle, "a test fault").await?;
//! probe.restarted(&handle.path(), Duration::from_secs(5)).await?;
//! assert_eq!(tree(&app).await?.paths(), ["/testkit-doc", "/testkit-doc/worker"]);
//! app.shutdown().await;
//! # Ok(()) }
//! ```

use std::time::Duration;

use ractor::{ActorCell, Message};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::child::InjectedPanic;
use crate::event::SupervisorEvent;
use crate::handle::ChildRef;
use crate::path::ActorPath;
use crate::reason::ExitReason;
use crate::supervisor::{ChildStatus, SupervisorError, SupervisorRef};

/// Records the events of a tree from the moment it is created.
pub struct EventProbe {
    rx: broadcast::Receiver<SupervisorEvent>,
    seen: Vec<SupervisorEvent>,
}

/// Why a probe gave up waiting.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No matching event before the deadline; lists what was seen.
    #[error("no matching event within {deadline:?}; saw {seen:#?}")]
    Timeout {
        /// The deadline.
        deadline: Duration,
        /// Every event recorded so far.
        seen: Vec<SupervisorEvent>,
    },
    /// The probe fell behind the bus and lost events.
    #[error("the probe lagged and lost {0} events; raise the bus capacity")]
    Lagged(u64),
    /// The bus is gone (the tree's last handle was dropped).
    #[error("the event bus closed")]
    Closed,
}

impl EventProbe {
    /// A probe on `sup`'s tree.
    pub fn new(sup: &SupervisorRef) -> Self {
        Self::from_receiver(sup.subscribe())
    }

    /// A probe on an existing subscription.
    pub fn from_receiver(rx: broadcast::Receiver<SupervisorEvent>) -> Self {
        EventProbe { rx, seen: Vec::new() }
    }

    /// Waits until an event matching `pred` arrives, at most `deadline`; returns it.
    /// Earlier events stay recorded in [`EventProbe::seen`].
    pub async fn wait_for(
        &mut self,
        deadline: Duration,
        mut pred: impl FnMut(&SupervisorEvent) -> bool,
    ) -> Result<SupervisorEvent, ProbeError> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            match tokio::time::timeout_at(until, self.rx.recv()).await {
                Err(_) => return Err(ProbeError::Timeout { deadline, seen: self.seen.clone() }),
                Ok(Err(RecvError::Lagged(n))) => return Err(ProbeError::Lagged(n)),
                Ok(Err(RecvError::Closed)) => return Err(ProbeError::Closed),
                Ok(Ok(e)) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return Ok(e);
                    }
                }
            }
        }
    }

    /// Waits for the `ChildRestarted` event of the child at `path`.
    pub async fn restarted(&mut self, path: &ActorPath, deadline: Duration) -> Result<SupervisorEvent, ProbeError> {
        self.wait_for(deadline, |e| matches!(e, SupervisorEvent::ChildRestarted { path: p, .. } if p == path)).await
    }

    /// Records whatever has arrived without waiting.
    pub fn drain(&mut self) -> &[SupervisorEvent] {
        while let Ok(e) = self.rx.try_recv() {
            self.seen.push(e);
        }
        &self.seen
    }

    /// Every event recorded so far.
    pub fn seen(&self) -> &[SupervisorEvent] {
        &self.seen
    }
}

/// Why a fault could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The child has no running incarnation.
    #[error("child {0} is not running")]
    NotRunning(ActorPath),
    /// The helper actor could not be spawned.
    #[error("could not spawn the fault injector: {0}")]
    Spawn(String),
}

/// Makes the running incarnation of `child` behave as if a handler panicked with `message`.
/// The fault is delivered ahead of queued messages (on ractor's supervision port) and goes
/// through the same path as a real panic: report, supervisor decision, restart.
pub async fn inject_panic<M: Message>(child: &ChildRef<M>, message: &str) -> Result<(), InjectError> {
    let target = child.actor_ref().ok_or_else(|| InjectError::NotRunning(child.path()))?;
    inject_panic_cell(&target.get_cell(), message).await
}

/// [`inject_panic`] for any warden-hosted worker, by its cell.
pub async fn inject_panic_cell(target: &ActorCell, message: &str) -> Result<(), InjectError> {
    crate::control::signal(target, InjectedPanic(message.to_string()))
        .await
        .map_err(|e| InjectError::Spawn(e.to_string()))
}

/// Makes the running incarnation of `child` exit with `reason`, as if it had stopped itself.
pub fn inject_exit<M: Message>(child: &ChildRef<M>, reason: ExitReason) -> Result<(), InjectError> {
    let target = child.actor_ref().ok_or_else(|| InjectError::NotRunning(child.path()))?;
    target.stop(reason.to_stop_reason());
    Ok(())
}

/// Kills the running incarnation of `child` (no `post_stop`).
pub fn inject_kill<M: Message>(child: &ChildRef<M>) -> Result<(), InjectError> {
    let target = child.actor_ref().ok_or_else(|| InjectError::NotRunning(child.path()))?;
    target.kill();
    Ok(())
}

/// A snapshot of one node of a tree.
#[derive(Debug, Clone)]
pub struct TreeNode {
    /// The actor's path.
    pub path: ActorPath,
    /// Its status (a root is always `Running` while it answers).
    pub status: ChildStatus,
    /// Its restarts by its supervisor.
    pub restarts: u64,
    /// Its children, for a supervisor.
    pub children: Vec<TreeNode>,
}

impl TreeNode {
    /// Every path in the subtree, depth first.
    pub fn paths(&self) -> Vec<String> {
        let mut out = vec![self.path.to_string()];
        for c in &self.children {
            out.extend(c.paths());
        }
        out
    }

    /// The node at `path`, if present.
    pub fn find(&self, path: &str) -> Option<&TreeNode> {
        if self.path.as_str() == path {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(path))
    }
}

/// A snapshot of the tree under `sup`, asking each supervisor for its children.
pub async fn tree(sup: &SupervisorRef) -> Result<TreeNode, SupervisorError> {
    let mut root = TreeNode { path: sup.path(), status: ChildStatus::Running, restarts: 0, children: Vec::new() };
    // Iterative, so that deep trees need no recursion in async code.
    let mut stack: Vec<(Vec<usize>, SupervisorRef)> = vec![(Vec::new(), sup.clone())];
    while let Some((at, s)) = stack.pop() {
        let kids = s.which_children().await?;
        let mut node = &mut root;
        for &i in &at {
            node = &mut node.children[i];
        }
        for (i, c) in kids.into_iter().enumerate() {
            node.children.push(TreeNode {
                path: c.path.clone(),
                status: c.status,
                restarts: c.restarts,
                children: Vec::new(),
            });
            if let (Some(nested), ChildStatus::Running) = (c.supervisor, c.status) {
                let mut p = at.clone();
                p.push(i);
                stack.push((p, nested));
            }
        }
    }
    Ok(root)
}

/// Fails a test when a child panics, unless the panic was expected.
///
/// Create it right after starting the tree; call [`PanicTrap::check`] (or let it drop) at
/// the end of the test. Panics whose path starts with an allowed prefix are ignored.
pub struct PanicTrap {
    probe: EventProbe,
    allowed: Vec<String>,
}

impl PanicTrap {
    /// A trap on `sup`'s tree.
    pub fn new(sup: &SupervisorRef) -> Self {
        PanicTrap { probe: EventProbe::new(sup), allowed: Vec::new() }
    }

    /// Ignores panics of actors whose path starts with `prefix`.
    pub fn allow(mut self, prefix: &str) -> Self {
        self.allowed.push(prefix.to_string());
        self
    }

    /// The unexpected panics seen so far, as `path: message`.
    pub fn panics(&mut self) -> Vec<String> {
        let allowed = self.allowed.clone();
        self.probe
            .drain()
            .iter()
            .filter_map(|e| match e {
                SupervisorEvent::ChildExited { path, reason: ExitReason::Panic { message }, .. }
                    if !allowed.iter().any(|a| path.as_str().starts_with(a.as_str())) =>
                {
                    Some(format!("{path}: {message}"))
                }
                _ => None,
            })
            .collect()
    }

    /// Panics (failing the test) if an unexpected child panic was seen.
    pub fn check(mut self) {
        let p = self.panics();
        self.allowed.push(String::new()); // disarm the drop check
        assert!(p.is_empty(), "children panicked during the test: {p:#?}");
    }
}

impl Drop for PanicTrap {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let p = self.panics();
        if !p.is_empty() {
            panic!("children panicked during the test: {p:#?}");
        }
    }
}
