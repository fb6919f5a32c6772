//! Stopping children: one by its shutdown policy, all of them in reverse start order (dynamic
//! ones concurrently), and the supervisor's own stop.

use super::*;
use crate::decision::{plan_shutdown, ShutdownPlan};

impl SupervisorState {
    /// Stops child `idx`'s actor by its shutdown policy and waits for it. Its status is left
    /// for the caller to set. Returns the actor and whether it had to be killed.
    pub(super) async fn terminate_at(&mut self, idx: usize) -> Option<(ActorId, bool)> {
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

    /// Stops this supervisor: children stop in post_stop; the parent sees `reason`.
    pub(super) fn shut_down(&mut self, myself: &ActorRef<SupervisorMsg>, reason: ExitReason) {
        if self.exit_reason.is_none() {
            myself.stop(reason.to_stop_reason());
            self.exit_reason = Some(reason);
        }
    }

    /// Stops every child: one at a time in reverse start order, or, for a dynamic
    /// supervisor, all at once under one timer (the longest shutdown timeout among them).
    pub(super) async fn stop_all(&mut self) {
        match plan_shutdown(self.strategy, &self.children.order()) {
            ShutdownPlan::AllAtOnce(children) => {
                let mut waits = Vec::new();
                for i in children {
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
            }
            ShutdownPlan::InTurn(children) => {
                for i in children {
                    self.terminate_at(i).await;
                }
            }
        }
        for i in self.children.order() {
            self.close_slot(i);
        }
    }
}

/// Stops one actor by `policy` and waits for it; returns whether it had to be killed.
pub(super) async fn stop_actor(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks the handler's thread: `started` is told once it blocks, `release` lets it go.
    struct Block {
        started: oneshot::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    }

    /// An actor whose handler blocks its thread until the test lets it go: a kill (which
    /// aborts the actor's task) cannot take effect while it blocks.
    struct Blocker;

    impl Actor for Blocker {
        type Msg = Block;
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<Block>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
        async fn handle(&self, _: ActorRef<Block>, block: Block, _: &mut ()) -> Result<(), ActorProcessingErr> {
            let _ = block.started.send(());
            let _ = block.release.recv();
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_child_that_does_not_stop_after_a_kill_is_abandoned_after_kill_wait() {
        let (actor, handle) = Actor::spawn(None, Blocker, ()).await.expect("starts");
        let (release, blocked) = std::sync::mpsc::channel();
        let (started, blocking) = oneshot::channel();
        actor.cast(Block { started, release: blocked }).expect("sent");
        blocking.await.expect("the handler blocks");

        let began = std::time::Instant::now();
        let killed = stop_actor(&actor.get_cell(), None, Shutdown::BrutalKill, &ActorPath::root("blocker")).await;
        let waited = began.elapsed();
        assert!(killed, "a brutal kill reports the child killed");
        assert!(waited >= KILL_WAIT, "gave up after {waited:?}, before KILL_WAIT ({KILL_WAIT:?})");
        assert_ne!(actor.get_status(), ractor::ActorStatus::Stopped, "the child was still blocking: abandoned");

        // Once its thread is free, the kill takes effect.
        release.send(()).expect("the handler waits");
        tokio::time::timeout(Duration::from_secs(10), handle).await.expect("stops once released").ok();
    }
}
