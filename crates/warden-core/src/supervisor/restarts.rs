//! A supervisor's restarts: what an exit leads to (`decision::plan_exit`, carried out), group
//! restarts and OTP's `try_again`, and retries of failed starts.

use super::*;

impl SupervisorState {
    /// Child `idx`'s incarnation was killed (`stopped` says so: its actor, and whether it had
    /// to be killed): the replacement waits until this supervisor has handled its termination
    /// event, which carries its state (see `teardown`), or [`TEARDOWN_WAIT`].
    pub(super) fn await_teardown(&mut self, idx: usize, stopped: Option<(ActorId, bool)>) {
        if let Some((actor, true)) = stopped {
            let id = self.children[idx].id().to_string();
            self.teardown.push((actor, id, Instant::now() + TEARDOWN_WAIT));
        }
    }

    /// Whether child `i`'s previous incarnation (killed: hung, or a group-restart member) is
    /// still being torn down; if so, a retry is scheduled for when the wait ends.
    fn tearing_down(&mut self, myself: &ActorRef<SupervisorMsg>, i: usize, now: Instant) -> bool {
        if self.teardown.is_empty() {
            return false;
        }
        self.teardown.retain(|(_, _, deadline)| *deadline > now);
        let pending = self.teardown.iter().map(|(_, child, until)| (child.as_str(), *until));
        match crate::decision::teardown_wait(pending, self.children[i].id(), now) {
            Some(wait) => {
                self.schedule_retry(myself, wait);
                true
            }
            None => false,
        }
    }

    pub(super) fn schedule_retry(&self, myself: &ActorRef<SupervisorMsg>, delay: Duration) {
        if delay.is_zero() {
            // Through the mailbox, so that API calls waiting there are answered in between.
            let _ = myself.cast(SupervisorMsg::Retry);
        } else {
            myself.send_after(delay, || SupervisorMsg::Retry);
        }
    }

    /// A restart is due: record it, escalate if too many. Returns the backoff delay, or
    /// `None` if the supervisor is shutting down.
    pub(super) fn admit_restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        idx: usize,
        now: Instant,
    ) -> Option<Duration> {
        if !self.intensity.record(now) {
            self.give_up(myself);
            return None;
        }
        let c = &mut self.children[idx];
        c.restarts += 1;
        Some(c.backoff.as_mut().map(|b| b.next_delay(now)).unwrap_or(Duration::ZERO))
    }

    /// One restart too many: shut down, and let the parent decide.
    fn give_up(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let (intensity, period) = self.intensity_limit;
        self.observe(SupervisorEvent::IntensityExceeded { path: self.path.clone(), intensity, period });
        self.shut_down(myself, ExitReason::Shutdown(Some("reached max restart intensity".into())));
    }

    /// The rules applied when child `idx` exited with `reason`. `reply` is set when the
    /// child crashed in a handler and its actor waits to be told what to do.
    pub(super) async fn on_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        idx: usize,
        reason: ExitReason,
        reply: Option<oneshot::Sender<Directive>>,
    ) -> Decision {
        let now = Instant::now();
        let shutting_down = self.exit_reason.is_some();
        let (restart, significant) = (self.children[idx].spec.restart, self.children[idx].spec.significant);
        // Counted only for a significant child that will not be restarted (the only case the
        // count decides): a dynamic supervisor may hold very many children.
        let significant_left = if significant && !shutting_down && !crate::decision::restart_wanted(restart, &reason) {
            self.children
                .iter()
                .filter(|(i, c)| *i != idx && c.spec.significant && !matches!(c.status(), Status::Stopped))
                .count()
        } else {
            0
        };
        // One-for-one and dynamic touch only this child: no need to look at the others (a
        // dynamic supervisor may hold very many).
        let group = match self.strategy {
            Strategy::OneForAll | Strategy::RestForOne if !shutting_down => Some((self.group_plan_at(idx), idx)),
            _ => None,
        };
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
                self.give_up(myself);
                if let Some(r) = reply {
                    let _ = r.send(Directive::Exit);
                }
                return Decision::Escalate;
            }
            ExitPlan::RestartOne { delay, .. } => (delay, None),
            ExitPlan::RestartGroup { delay, group } => (delay, Some(group)),
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

        // A group restart. The failed child first: it is dead, or waiting in its handler for a
        // directive.
        self.children[idx].spec.starter.slot().set_restarting();
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
        self.replace_group(&plan, not_before).await;
        if delay.is_zero() {
            self.resume_restarts(myself).await;
        } else {
            self.schedule_retry(myself, delay);
        }
        decision
    }

    /// The members of a group restart are replaced by new actors: the running ones stop in
    /// reverse order by their shutdown policies, temporary ones are forgotten, and the others
    /// are to start at `not_before`, in order (their handles stash meanwhile).
    async fn replace_group(&mut self, plan: &GroupPlan, not_before: Instant) {
        let forget: Vec<String> = plan.forget.iter().map(|&i| self.children[i].id().to_string()).collect();
        for &i in plan.start.iter().chain(plan.stop.iter()) {
            self.children[i].spec.starter.slot().set_restarting();
        }
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
    }

    /// [`group_plan`] for a group restart from child `idx`, in slots rather than positions.
    pub(super) fn group_plan_at(&self, idx: usize) -> GroupPlan {
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
    pub(super) async fn retry_group(&mut self, now: Instant) -> bool {
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
        self.replace_group(&plan, now).await;
        true
    }

    /// Child `i` failed to start in a group restart (OTP's `try_again`): the members after it,
    /// not started, show as stopped (OTP's `undefined`) until the group is restarted again from
    /// it, unless a retry from an earlier member, which contains this one, is still pending.
    fn retry_group_from(&mut self, i: usize) {
        let order = self.children.order();
        let restarting: Vec<bool> =
            order.iter().map(|&j| matches!(self.children[j].status(), Status::Restarting { .. })).collect();
        let Some(failed) = order.iter().position(|&j| j == i) else { return };
        let pending = self
            .group_retry
            .as_deref()
            .and_then(|id| self.index_of(id))
            .and_then(|j| order.iter().position(|&k| k == j))
            .filter(|&p| restarting[p]);
        let plan = crate::decision::plan_retry(&restarting, failed, pending);
        for p in plan.show_stopped {
            self.children.set_status(order[p], Status::Stopped);
        }
        if let Some(p) = plan.retry_from {
            self.group_retry = Some(self.children[order[p]].id().to_string());
        }
    }

    /// The group retry from child `idx` will not happen: the members it left stopped hand
    /// messages back from now on instead of stashing them.
    pub(super) fn cancel_group_retry(&mut self, idx: usize) {
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
    pub(super) async fn exited(
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

    /// Carries out the restarts that are due, in start order. A failed start is counted
    /// like any restart and retried later; under one-for-all and rest-for-one the children
    /// after it wait for it, so that start order holds.
    pub(super) async fn resume_restarts(&mut self, myself: &ActorRef<SupervisorMsg>) {
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
    pub(super) async fn restart_if_due(&mut self, myself: &ActorRef<SupervisorMsg>, i: usize) -> Due {
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
                            self.retry_group_from(i);
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
}

/// What the child's host actor or the watchdog knows of a failure, beyond its reason.
#[derive(Default)]
pub(super) struct Clues {
    /// The incarnation that failed.
    pub(super) incarnation: u64,
    /// The type of the message being handled.
    pub(super) message_type: Option<&'static str>,
    /// Where a panic happened.
    pub(super) captured: Option<Captured>,
    /// The message's rendering, for children that opted in.
    pub(super) rendered: Option<String>,
}

/// Where a child stands with respect to a restart.
pub(super) enum Due {
    /// Restarted (or told to restart in place) just now.
    Done,
    /// A restart is scheduled for later.
    Waiting,
    /// The restart failed and was rescheduled (or the supervisor gave up).
    Failed,
    /// The child is not being restarted.
    NotRestarting,
}
