//! A supervisor's bookkeeping: events published and noted, the reliability figures and
//! `warden_*` metrics counted off the restart path, gauges, and crash reports queued for the
//! flight recorder.

use super::*;

impl SupervisorState {
    /// Publishes `event` now, and notes it for the tree's reliability figures and the
    /// `warden_*` metrics, which [`SupervisorState::settle`] queues for counting once the
    /// handler is done.
    pub(super) fn observe(&mut self, event: SupervisorEvent) {
        let what = match &event {
            SupervisorEvent::ChildStarted { .. } => Some(Tally::Started),
            SupervisorEvent::ChildRestarted { .. } => Some(Tally::Restarted),
            SupervisorEvent::ChildExited { reason, .. } if reason.is_normal() => Some(Tally::Stopped),
            SupervisorEvent::ChildExited { reason, .. } => Some(Tally::Failed(reason.kind())),
            SupervisorEvent::RestartFailed { .. } => Some(Tally::Failed("start_failed")),
            SupervisorEvent::ChildTerminated { .. } => Some(Tally::Stopped),
            _ => None,
        };
        if let Some(what) = what.filter(|_| self.record) {
            self.tallies.push((Instant::now(), event.path().clone(), what));
        }
        self.events.publish(event);
    }

    /// Counts the noted events in the reliability figures and the metrics. Dynamic children
    /// are counted under their spec's path (`/sup/conn`, not `/sup/conn-17`) so that the
    /// number of series stays bounded.
    pub(super) fn settle(&mut self, myself: &ActorRef<SupervisorMsg>) {
        // The end of a handler: no child slot is held, the gaps may close.
        self.children.compact();
        if !self.record {
            self.tallies.clear();
            return;
        }
        if !self.tallies.is_empty() {
            let tallies = std::mem::take(&mut self.tallies);
            let dynamic = matches!(self.strategy, Strategy::Dynamic { .. });
            if self.events.defer(Box::new(move |bus| count(bus.stats_now(), dynamic, tallies))) {
                self.schedule_flush(myself);
            }
        }
        self.gauge_children(myself);
    }

    /// Refreshes the `warden_children` gauges (running, restarting, stopped). Counting is
    /// O(children), so it runs at most once per [`GAUGE_PERIOD`]; a change inside the period is
    /// picked up by one scheduled refresh at its end.
    pub(super) fn gauge_children(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let now = Instant::now();
        if self.gauges_at.is_some_and(|t| now.saturating_duration_since(t) < GAUGE_PERIOD) {
            if !self.gauge_refresh_pending {
                self.gauge_refresh_pending = true;
                myself.send_after(GAUGE_PERIOD, || SupervisorMsg::RefreshGauges);
            }
            return;
        }
        self.gauges_at = Some(now);
        self.set_gauges();
    }

    pub(super) fn set_gauges(&self) {
        let (mut running, mut restarting, mut stopped) = (0u32, 0u32, 0u32);
        for (_, c) in self.children.iter() {
            match c.public_status() {
                ChildStatus::Running => running += 1,
                ChildStatus::Restarting => restarting += 1,
                ChildStatus::Stopped => stopped += 1,
            }
        }
        crate::metric::children(self.path.as_str(), running, restarting, stopped);
    }

    /// Queues the crash report of a failure (abnormal exits only); it is written within
    /// `FLUSH_DELAY`, off the restart's critical path. What it says is fixed now.
    pub(super) fn record_failure(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        facts: FailureFacts,
        reason: &ExitReason,
        decision: Decision,
    ) {
        if reason.is_normal() {
            return;
        }
        let at_unix_ms = report::unix_ms_now();
        let restarts_in_window = self.intensity.count(Instant::now());
        let intensity = self.intensity_limit.0;
        let reason = reason.clone();
        let first = self.events.defer(Box::new(move |bus| {
            let (child_type, restart, shutdown) = facts.spec;
            bus.record(CrashReport {
                at_unix_ms,
                ancestors: facts.path.ancestors().iter().map(|a| a.to_string()).collect(),
                child_id: facts.path.name().to_string(),
                path: facts.path.to_string(),
                child_type: report::child_type_name(child_type),
                restart: report::restart_name(restart),
                shutdown: report::shutdown_name(shutdown),
                incarnation: facts.incarnation,
                reason_kind: reason.kind(),
                reason: reason.to_string(),
                panic_location: facts.captured.location,
                message_type: facts.message_type,
                message: facts.rendered,
                mailbox_len: None,
                restarts_in_window,
                intensity,
                decision,
                backtrace: facts.captured.backtrace,
                restored: None,
            });
        }));
        if first {
            self.schedule_flush(myself);
        }
    }

    /// Writes the queued bookkeeping in `FLUSH_DELAY`, in one batch.
    pub(super) fn schedule_flush(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            myself.send_after(crate::event::FLUSH_DELAY, || SupervisorMsg::Flush);
        }
    }
}

/// Counts noted events in the reliability figures and the `warden_*` metrics. Dynamic
/// children are counted under their spec's path (`/sup/conn`, not `/sup/conn-17`) so that the
/// number of series stays bounded.
pub(super) fn count(stats: &crate::stats::StatsRegistry, dynamic: bool, tallies: Vec<(Instant, ActorPath, Tally)>) {
    for (at, path, what) in tallies {
        let path = match path.as_str().rsplit_once('-') {
            Some((spec_path, n)) if dynamic && n.bytes().all(|b| b.is_ascii_digit()) => spec_path.to_string(),
            _ => path.to_string(),
        };
        match what {
            Tally::Started => stats.update(&path, |r| {
                r.ready(at);
            }),
            Tally::Restarted => {
                let mut repaired = None;
                stats.update(&path, |r| repaired = r.ready(at));
                crate::metric::restarted(&path, repaired);
            }
            Tally::Failed(kind) => {
                crate::metric::failed(&path, kind);
                stats.update(&path, |r| r.failed(at));
            }
            Tally::Stopped => stats.update(&path, |r| r.stopped(at)),
        }
    }
}

/// What an observed event counts for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Tally {
    Started,
    Restarted,
    Failed(&'static str),
    Stopped,
}

/// What a crash report needs of a child, taken before the supervisor acts (the child may be
/// forgotten by then).
pub(super) struct FailureFacts {
    pub(super) path: ActorPath,
    pub(super) spec: (ChildType, RestartType, Shutdown),
    pub(super) incarnation: u64,
    pub(super) message_type: Option<&'static str>,
    pub(super) captured: Captured,
    pub(super) rendered: Option<String>,
}
