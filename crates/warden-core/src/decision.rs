//! The supervisor's decisions as pure functions over plain data.
//!
//! Nothing here touches an actor, a clock or a channel: the supervisor actor asks these
//! functions what to do and carries the answer out. This is where OTP's rules live:
//! whether an exit calls for a restart ([`restart_wanted`]), which children a strategy stops
//! and starts ([`group_plan`]), what one exit leads to ([`plan_exit`]), whether `start_child`
//! may add a spec ([`plan_start_child`]), what OTP's `try_again` does after a group member
//! failed to start ([`plan_retry`]), what `terminate_child` does ([`plan_terminate`]) and when
//! `restart_child` and `delete_child` may act ([`plan_stopped_only`]), the order children stop in at shutdown
//! ([`plan_shutdown`]), when restarts are too many ([`IntensityWindow`]), and how long to wait
//! before the next one ([`BackoffSchedule`]).
//!
//! ```
//! use std::time::Duration;
//! use warden_core::decision::{group_plan, restart_wanted, ChildView, IntensityWindow};
//! use warden_core::{ExitReason, RestartType, Strategy};
//!
//! // A transient child that exited normally is not restarted; after a panic it is.
//! assert!(!restart_wanted(RestartType::Transient, &ExitReason::Normal));
//! assert!(restart_wanted(RestartType::Transient, &ExitReason::Panic { message: "boom".into() }));
//!
//! // Rest-for-one, the second of three children failed: the third is stopped, both started again.
//! let kids = [ChildView { restart: RestartType::Permanent, running: true }; 3];
//! let plan = group_plan(Strategy::RestForOne, &kids, 1);
//! assert_eq!((plan.stop, plan.start), (vec![2], vec![1, 2]));
//!
//! // Intensity 1 in 5 s: the second restart within the period is one too many.
//! let mut window = IntensityWindow::new(1, Duration::from_secs(5));
//! let t0 = tokio::time::Instant::now();
//! assert!(window.record(t0));
//! assert!(!window.record(t0 + Duration::from_secs(1)));
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::time::Instant;

use crate::reason::ExitReason;
use crate::vocab::{AutoShutdown, Backoff, RestartType, Strategy};

/// Whether a child of restart type `restart` that exited with `reason` is restarted.
pub fn restart_wanted(restart: RestartType, reason: &ExitReason) -> bool {
    match restart {
        RestartType::Permanent => true,
        RestartType::Transient => !reason.is_normal(),
        RestartType::Temporary => false,
    }
}

/// What the decision functions need to know of a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildView {
    /// Its restart type.
    pub restart: RestartType,
    /// Whether it has a live incarnation now.
    pub running: bool,
}

/// The children a restart touches, by index in start order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupPlan {
    /// Running bystanders to stop, in the order to stop them (reverse start order).
    pub stop: Vec<usize>,
    /// Children to start, in start order (the failed child included).
    pub start: Vec<usize>,
    /// Temporary bystanders whose specs are forgotten.
    pub forget: Vec<usize>,
}

/// The plan for restarting child `failed` under `strategy`, once [`restart_wanted`] said yes.
///
/// One-for-one and dynamic touch only the failed child. One-for-all touches every child,
/// rest-for-one the failed child and those after it: running bystanders are stopped in
/// reverse order, temporary bystanders are forgotten, and every other member (also one that
/// was not running) is started again in list order, as OTP does.
pub fn group_plan(strategy: Strategy, children: &[ChildView], failed: usize) -> GroupPlan {
    let members = match strategy {
        Strategy::OneForOne | Strategy::Dynamic { .. } => failed..failed + 1,
        Strategy::OneForAll => 0..children.len(),
        Strategy::RestForOne => failed..children.len(),
    };
    let mut plan = GroupPlan::default();
    for i in members.clone().rev() {
        if i != failed && children[i].running {
            plan.stop.push(i);
        }
    }
    for i in members {
        if i != failed && children[i].restart == RestartType::Temporary {
            plan.forget.push(i);
        } else {
            plan.start.push(i);
        }
    }
    plan
}

/// What the supervisor knows of one child's exit, for [`plan_exit`].
#[derive(Debug, Clone)]
pub struct ExitFacts<'a> {
    /// The supervisor's strategy.
    pub strategy: Strategy,
    /// Its auto-shutdown rule.
    pub auto_shutdown: AutoShutdown,
    /// It is already shutting down.
    pub shutting_down: bool,
    /// The child's restart type.
    pub restart: RestartType,
    /// Whether the child is significant.
    pub significant: bool,
    /// Significant children still running or to be restarted besides this one (read only when
    /// the child is significant: counting is O(children)).
    pub significant_left: usize,
    /// Why it exited.
    pub reason: &'a ExitReason,
    /// It crashed in a handler and its actor waits there for a directive (so it can be
    /// restarted in place, keeping its `ActorRef` and mailbox).
    pub waits_in_place: bool,
    /// For one-for-all and rest-for-one: [`group_plan`] from the failed child, and the failed
    /// child's index in the same numbering as the plan's (positions, or the caller's slots);
    /// `None` for one-for-one and dynamic, which touch only the failed child.
    pub group: Option<(GroupPlan, usize)>,
}

/// Whether a child that stops for good loses its spec: a temporary child's and every dynamic
/// child's go (OTP keeps neither); the others are kept, stopped, for `restart_child`.
pub fn forgotten_when_stopped(restart: RestartType, strategy: Strategy) -> bool {
    restart == RestartType::Temporary || matches!(strategy, Strategy::Dynamic { .. })
}

/// What the supervisor does about one exit ([`plan_exit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitPlan {
    /// The supervisor is shutting down: the child is only told to exit.
    ShuttingDown,
    /// Not restarted. `forget`: its spec goes (temporary and dynamic children), else it is
    /// kept, stopped. `auto_shutdown`: the supervisor shuts itself down.
    NotRestarted {
        /// Remove the child's spec.
        forget: bool,
        /// Shut the supervisor down (a significant child exited).
        auto_shutdown: bool,
    },
    /// One restart too many: the supervisor shuts down and its parent decides.
    Escalate,
    /// Restart the failed child alone after `delay`, in place or as a new actor.
    RestartOne {
        /// Backoff before the restart.
        delay: Duration,
        /// The actor waits in its handler: restart inside it.
        in_place: bool,
    },
    /// Restart a group after `delay` (positions in start order, the failed child included).
    RestartGroup {
        /// Backoff before the group starts again.
        delay: Duration,
        /// Who stops, starts and is forgotten.
        group: GroupPlan,
    },
}

/// OTP's rules for one exit, as a plan. Records the restart in `intensity` (and takes the
/// child's next `backoff` delay) when one is due; everything else is read only.
pub fn plan_exit(
    facts: &ExitFacts<'_>,
    intensity: &mut IntensityWindow,
    backoff: Option<&mut BackoffSchedule>,
    now: Instant,
) -> ExitPlan {
    if facts.shutting_down {
        return ExitPlan::ShuttingDown;
    }
    if !restart_wanted(facts.restart, facts.reason) {
        let forget = forgotten_when_stopped(facts.restart, facts.strategy);
        let auto_shutdown = auto_shutdown_due(facts.auto_shutdown, facts.significant, facts.significant_left);
        return ExitPlan::NotRestarted { forget, auto_shutdown };
    }
    if !intensity.record(now) {
        return ExitPlan::Escalate;
    }
    let delay = backoff.map(|b| b.next_delay(now)).unwrap_or(Duration::ZERO);
    match &facts.group {
        Some((group, failed)) if !(group.stop.is_empty() && group.forget.is_empty() && group.start == [*failed]) => {
            ExitPlan::RestartGroup { delay, group: group.clone() }
        }
        _ => ExitPlan::RestartOne { delay, in_place: facts.waits_in_place },
    }
}

/// Whether the supervisor shuts itself down after a significant child exited for good.
///
/// `significant_left` counts the significant children that are still running or will be
/// restarted, after this exit.
pub fn auto_shutdown_due(rule: AutoShutdown, exited_significant: bool, significant_left: usize) -> bool {
    match rule {
        AutoShutdown::Never => false,
        AutoShutdown::AnySignificant => exited_significant,
        AutoShutdown::AllSignificant => exited_significant && significant_left == 0,
    }
}

/// What OTP's `try_again` does after a member of a group restart failed to start
/// ([`plan_retry`]), by position in start order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetryPlan {
    /// Members after the failed one that were waiting to start: they show as stopped (OTP's
    /// `undefined`) until the group is started again.
    pub show_stopped: Vec<usize>,
    /// The member the group restart starts again from when its retry is due; `None` keeps the
    /// retry already pending from an earlier member (it contains this one).
    pub retry_from: Option<usize>,
}

/// OTP's `try_again` for a group restart (one-for-all, rest-for-one) in which the member at
/// `failed` failed to start. `restarting[i]` says whether the member at position `i` waits to
/// start; `pending` is the position of the member a retry is already pending from, if any
/// (and still waiting). The restarted-so-far members are stopped again when the retry runs
/// (see [`group_plan`]); this decides what shows meanwhile and where the retry starts.
pub fn plan_retry(restarting: &[bool], failed: usize, pending: Option<usize>) -> RetryPlan {
    let show_stopped = (failed + 1..restarting.len()).filter(|&i| restarting[i]).collect();
    let retry_from = match pending {
        Some(earlier) if earlier < failed => None,
        _ => Some(failed),
    };
    RetryPlan { show_stopped, retry_from }
}

/// Where a child with the same spec (or, under a static strategy, the same id) stands, for
/// [`plan_start_child`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// There is none.
    None,
    /// It has a running incarnation.
    Running,
    /// It is kept but has no running incarnation (stopped, or waiting for its restart).
    NotRunning,
}

/// Why `start_child` refuses a spec ([`plan_start_child`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartRefusal {
    /// A dynamic supervisor already holds `max` children.
    MaxChildren {
        /// Its `max_children`.
        max: usize,
    },
    /// The same child runs (OTP's `already_started`).
    AlreadyStarted,
    /// The same child is kept without a running incarnation (OTP's `already_present`).
    AlreadyPresent,
}

/// OTP's checks before `start_child` adds a spec: a dynamic supervisor's `max_children` (it
/// holds `children` now), then a child with the same spec or id: `already_started` only with
/// a running incarnation, `already_present` for one that is stopped or waits for its restart.
pub fn plan_start_child(strategy: Strategy, children: usize, existing: Existing) -> Result<(), StartRefusal> {
    if let Strategy::Dynamic { max_children: Some(max) } = strategy {
        if children >= max {
            return Err(StartRefusal::MaxChildren { max });
        }
    }
    match existing {
        Existing::None => Ok(()),
        Existing::Running => Err(StartRefusal::AlreadyStarted),
        Existing::NotRunning => Err(StartRefusal::AlreadyPresent),
    }
}

/// Where a child named in a runtime call stands, for [`plan_stopped_only`] and
/// [`plan_terminate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// It has a running incarnation.
    Running,
    /// It crashed and waits for its restart (or its group's retry).
    Restarting,
    /// It is kept, stopped.
    Stopped,
}

/// Why a runtime call on one child is refused ([`plan_stopped_only`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallRefusal {
    /// A dynamic supervisor does not support the call (OTP's `simple_one_for_one` answers
    /// `{error, simple_one_for_one}`).
    NotSupported,
    /// No child has that id.
    NotFound,
    /// The child runs.
    Running,
    /// The child waits for its restart.
    Restarting,
}

/// OTP's checks for `restart_child` and `delete_child`, which act only on a kept, stopped
/// child of a static supervisor. `phase` is `None` when no child has the id.
pub fn plan_stopped_only(strategy: Strategy, phase: Option<Phase>) -> Result<(), CallRefusal> {
    if matches!(strategy, Strategy::Dynamic { .. }) {
        return Err(CallRefusal::NotSupported);
    }
    match phase {
        None => Err(CallRefusal::NotFound),
        Some(Phase::Running) => Err(CallRefusal::Running),
        Some(Phase::Restarting) => Err(CallRefusal::Restarting),
        Some(Phase::Stopped) => Ok(()),
    }
}

/// What `terminate_child` does to a child ([`plan_terminate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminatePlan {
    /// It waited for a restart: the restart is cancelled (and a group retry pending from it).
    pub cancel_restart: bool,
    /// Its spec goes ([`forgotten_when_stopped`]); else it is kept, stopped.
    pub forget: bool,
}

/// OTP's `terminate_child` of a child of restart type `restart` in phase `phase`. Whatever
/// incarnation is alive is stopped by its shutdown policy (the mechanism's part); the plan
/// says that a pending restart is cancelled and that the spec is kept for `restart_child`
/// unless the child is temporary or dynamic.
pub fn plan_terminate(strategy: Strategy, restart: RestartType, phase: Phase) -> TerminatePlan {
    TerminatePlan { cancel_restart: phase == Phase::Restarting, forget: forgotten_when_stopped(restart, strategy) }
}

/// How a supervisor stops its children when it shuts down ([`plan_shutdown`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShutdownPlan {
    /// One at a time, in this order (reverse start order), each by its shutdown policy.
    InTurn(Vec<usize>),
    /// All at once under one timer, the longest shutdown timeout among them (a dynamic
    /// supervisor's children have no order between them, as in OTP).
    AllAtOnce(Vec<usize>),
}

/// The order in which a supervisor stops `children` (given in start order) when it shuts
/// down: in reverse start order, one at a time, or all at once for a dynamic supervisor.
pub fn plan_shutdown(strategy: Strategy, children: &[usize]) -> ShutdownPlan {
    let reversed = children.iter().rev().copied().collect();
    match strategy {
        Strategy::Dynamic { .. } => ShutdownPlan::AllAtOnce(reversed),
        _ => ShutdownPlan::InTurn(reversed),
    }
}

/// Whether a child's replacement may start now. `pending` lists the killed incarnations still
/// being torn down, as (child id, the latest instant its replacement waits until); the
/// supervisor drops an entry once that incarnation's end has arrived (its state with it).
/// `None`: start child `id` now (nothing of it pending, or its wait is over); `Some(d)`: try
/// again in `d`. A killed actor's task may never end (a synchronous spin), so the wait always
/// has an end.
pub fn teardown_wait<'a>(
    pending: impl IntoIterator<Item = (&'a str, Instant)>,
    id: &str,
    now: Instant,
) -> Option<Duration> {
    pending.into_iter().filter(|(child, until)| *child == id && *until > now).map(|(_, until)| until - now).max()
}

/// OTP's restart intensity: more than `intensity` restarts within `period` is too many.
///
/// Holds at most `intensity + 1` timestamps.
#[derive(Debug, Clone)]
pub struct IntensityWindow {
    intensity: u32,
    period: Duration,
    restarts: VecDeque<Instant>,
}

impl IntensityWindow {
    /// A window allowing `intensity` restarts per `period`.
    pub fn new(intensity: u32, period: Duration) -> Self {
        IntensityWindow { intensity, period, restarts: VecDeque::with_capacity((intensity as usize + 1).min(16)) }
    }

    /// Records a restart at `now`. Returns `false` when this restart makes more than
    /// `intensity` within the last `period`: the supervisor must give up.
    pub fn record(&mut self, now: Instant) -> bool {
        self.expire(now);
        self.restarts.push_back(now);
        if self.restarts.len() > self.intensity as usize {
            // Keep the bound even if the caller goes on recording.
            while self.restarts.len() > self.intensity as usize + 1 {
                self.restarts.pop_front();
            }
            return self.restarts.len() <= self.intensity as usize;
        }
        true
    }

    /// The restarts counted within the window ending at `now`.
    pub fn count(&mut self, now: Instant) -> usize {
        self.expire(now);
        self.restarts.len()
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&t) = self.restarts.front() {
            if now.saturating_duration_since(t) > self.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
    }
}

/// The restart delays of one child under a [`Backoff`] policy.
#[derive(Debug)]
pub struct BackoffSchedule {
    policy: Backoff,
    delays: Option<backon::ExponentialBackoff>,
    last_failure: Option<Instant>,
    resets: u64,
}

impl BackoffSchedule {
    /// A schedule at its start.
    pub fn new(policy: Backoff) -> Self {
        BackoffSchedule { policy, delays: None, last_failure: None, resets: 0 }
    }

    /// The delay before the restart that follows a failure at `now`.
    ///
    /// After `reset_after` without a failure the schedule starts again from `min`. The
    /// result is never above `max`.
    pub fn next_delay(&mut self, now: Instant) -> Duration {
        let quiet = match self.last_failure {
            Some(t) => now.saturating_duration_since(t) >= self.policy.reset_after,
            None => true,
        };
        self.last_failure = Some(now);
        if quiet || self.delays.is_none() {
            self.resets += 1;
            let mut b = backon::ExponentialBuilder::default()
                .with_min_delay(self.policy.min)
                .with_max_delay(self.policy.max)
                .with_factor(self.policy.factor)
                .without_max_times();
            if self.policy.jitter {
                b = b.with_jitter();
                if let Some(seed) = self.policy.seed {
                    b = b.with_jitter_seed(seed.wrapping_add(self.resets));
                }
            }
            self.delays = Some(b.build());
        }
        let d = self.delays.as_mut().and_then(|it| it.next()).unwrap_or(self.policy.max);
        // backon multiplies in f32; whole microseconds keep schedules exact and readable.
        let micros = (d.min(self.policy.max).as_nanos() + 500) / 1000;
        Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX)).min(self.policy.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_waits_for_its_own_teardown_until_the_wait_ends() {
        let now = Instant::now();
        let later = now + Duration::from_millis(80);
        // Nothing pending, or only another child's teardown: start now.
        let nothing: [(&str, Instant); 0] = [];
        assert_eq!(teardown_wait(nothing, "a", now), None);
        assert_eq!(teardown_wait([("b", later)], "a", now), None);
        // Its own: wait for what is left of the bound.
        assert_eq!(teardown_wait([("b", later), ("a", later)], "a", now), Some(Duration::from_millis(80)));
        // Past the bound: start anyway (the old task may never end).
        assert_eq!(teardown_wait([("a", now)], "a", now), None);
        assert_eq!(teardown_wait([("a", later)], "a", later + Duration::from_millis(1)), None);
        // Two of its incarnations pending (killed twice quickly): the later bound.
        let latest = now + Duration::from_millis(95);
        assert_eq!(teardown_wait([("a", later), ("a", latest)], "a", now), Some(Duration::from_millis(95)));
    }

    #[test]
    fn a_failed_group_member_leaves_the_later_ones_stopped_and_is_retried_from() {
        // Four members; the second failed to start, the third and fourth were waiting.
        let plan = plan_retry(&[false, true, true, true], 1, None);
        assert_eq!(plan, RetryPlan { show_stopped: vec![2, 3], retry_from: Some(1) });
        // A retry from an earlier member is pending: it contains this one, and stays.
        assert_eq!(plan_retry(&[true, true, false], 1, Some(0)).retry_from, None);
        // A pending retry from a later member gives way to this one.
        assert_eq!(plan_retry(&[false, true, true], 1, Some(2)).retry_from, Some(1));
        // The last member failed: nothing after it to show.
        assert!(plan_retry(&[false, false, true], 2, None).show_stopped.is_empty());
    }

    #[test]
    fn start_child_checks_the_dynamic_maximum_first_then_the_same_child() {
        let dynamic = Strategy::Dynamic { max_children: Some(2) };
        assert_eq!(plan_start_child(dynamic, 1, Existing::None), Ok(()));
        assert_eq!(plan_start_child(dynamic, 2, Existing::None), Err(StartRefusal::MaxChildren { max: 2 }));
        assert_eq!(plan_start_child(dynamic, 2, Existing::Running), Err(StartRefusal::MaxChildren { max: 2 }));
        assert_eq!(plan_start_child(Strategy::Dynamic { max_children: None }, usize::MAX, Existing::None), Ok(()));
        for strategy in [Strategy::OneForOne, Strategy::OneForAll, Strategy::RestForOne, dynamic] {
            assert_eq!(plan_start_child(strategy, 0, Existing::Running), Err(StartRefusal::AlreadyStarted));
            // OTP: a child waiting for its restart, or stopped, is already_present.
            assert_eq!(plan_start_child(strategy, 0, Existing::NotRunning), Err(StartRefusal::AlreadyPresent));
        }
    }

    #[test]
    fn shutdown_goes_in_reverse_start_order_and_dynamic_children_all_at_once() {
        assert_eq!(plan_shutdown(Strategy::OneForAll, &[0, 3, 1]), ShutdownPlan::InTurn(vec![1, 3, 0]));
        assert_eq!(plan_shutdown(Strategy::RestForOne, &[]), ShutdownPlan::InTurn(vec![]));
        assert_eq!(
            plan_shutdown(Strategy::Dynamic { max_children: None }, &[4, 5]),
            ShutdownPlan::AllAtOnce(vec![5, 4])
        );
    }

    fn facts(strategy: Strategy, restart: RestartType, reason: &ExitReason) -> ExitFacts<'_> {
        ExitFacts {
            strategy,
            auto_shutdown: AutoShutdown::Never,
            shutting_down: false,
            restart,
            significant: false,
            significant_left: 0,
            reason,
            waits_in_place: false,
            group: None,
        }
    }

    #[test]
    fn plan_exit_follows_otp() {
        let now = Instant::now();
        let mut w = IntensityWindow::new(1, Duration::from_secs(5));
        let panic = ExitReason::Panic { message: "p".into() };
        let normal = ExitReason::Normal;
        // Not restarted: a transient child's spec is kept, a temporary one's and a dynamic
        // child's are forgotten; nothing is counted.
        let f = facts(Strategy::OneForOne, RestartType::Transient, &normal);
        assert_eq!(plan_exit(&f, &mut w, None, now), ExitPlan::NotRestarted { forget: false, auto_shutdown: false });
        let f = facts(Strategy::OneForOne, RestartType::Temporary, &panic);
        assert_eq!(plan_exit(&f, &mut w, None, now), ExitPlan::NotRestarted { forget: true, auto_shutdown: false });
        let f = facts(Strategy::Dynamic { max_children: None }, RestartType::Transient, &normal);
        assert_eq!(plan_exit(&f, &mut w, None, now), ExitPlan::NotRestarted { forget: true, auto_shutdown: false });
        assert_eq!(w.count(now), 0);
        // The last significant child exiting for good shuts the supervisor down.
        let f = ExitFacts {
            auto_shutdown: AutoShutdown::AllSignificant,
            significant: true,
            ..facts(Strategy::OneForOne, RestartType::Transient, &normal)
        };
        assert_eq!(plan_exit(&f, &mut w, None, now), ExitPlan::NotRestarted { forget: false, auto_shutdown: true });
        // A crash in a handler restarts in place; the second restart within the period escalates.
        let f = ExitFacts { waits_in_place: true, ..facts(Strategy::OneForOne, RestartType::Permanent, &panic) };
        assert_eq!(plan_exit(&f, &mut w, None, now), ExitPlan::RestartOne { delay: Duration::ZERO, in_place: true });
        assert_eq!(plan_exit(&f, &mut w, None, now), ExitPlan::Escalate);
        // Shutting down: nothing but the exit.
        let f = ExitFacts { shutting_down: true, ..facts(Strategy::OneForOne, RestartType::Permanent, &panic) };
        assert_eq!(plan_exit(&f, &mut w, None, now), ExitPlan::ShuttingDown);
    }

    #[test]
    fn plan_exit_restarts_groups_and_takes_the_backoff() {
        let now = Instant::now();
        let mut w = IntensityWindow::new(10, Duration::from_secs(5));
        let panic = ExitReason::Panic { message: "p".into() };
        let kids = [ChildView { restart: RestartType::Permanent, running: true }; 3];
        // One-for-all from the middle child: a group.
        let group = group_plan(Strategy::OneForAll, &kids, 1);
        let f =
            ExitFacts { group: Some((group.clone(), 1)), ..facts(Strategy::OneForAll, RestartType::Permanent, &panic) };
        let mut b =
            BackoffSchedule::new(Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1)).jitter(false));
        let plan = plan_exit(&f, &mut w, Some(&mut b), now);
        assert_eq!(plan, ExitPlan::RestartGroup { delay: Duration::from_millis(10), group });
        // Rest-for-one from the last child touches only it: a single restart.
        let last = group_plan(Strategy::RestForOne, &kids, 2);
        let f = ExitFacts { group: Some((last, 2)), ..facts(Strategy::RestForOne, RestartType::Permanent, &panic) };
        assert_eq!(plan_exit(&f, &mut w, None, now), ExitPlan::RestartOne { delay: Duration::ZERO, in_place: false });
    }

    fn v(restart: RestartType, running: bool) -> ChildView {
        ChildView { restart, running }
    }

    #[test]
    fn restart_types_against_reasons() {
        use RestartType::*;
        let reasons = [
            ExitReason::Normal,
            ExitReason::Shutdown(None),
            ExitReason::Shutdown(Some("x".into())),
            ExitReason::Killed,
            ExitReason::Panic { message: "p".into() },
            ExitReason::Error("e".into()),
            ExitReason::Exit("boom".into()),
        ];
        for r in &reasons {
            assert!(restart_wanted(Permanent, r), "{r}");
            assert!(!restart_wanted(Temporary, r), "{r}");
            assert_eq!(restart_wanted(Transient, r), !r.is_normal(), "{r}");
        }
    }

    #[test]
    fn one_for_one_touches_only_the_failed_child() {
        use RestartType::*;
        let c = [v(Permanent, true), v(Permanent, false), v(Temporary, true)];
        let p = group_plan(Strategy::OneForOne, &c, 1);
        assert_eq!(p, GroupPlan { stop: vec![], start: vec![1], forget: vec![] });
        let p = group_plan(Strategy::Dynamic { max_children: None }, &c, 0);
        assert_eq!(p.start, vec![0]);
    }

    #[test]
    fn one_for_all_stops_in_reverse_and_starts_in_order() {
        use RestartType::*;
        let c = [
            v(Permanent, true),
            v(Transient, true),
            v(Permanent, false), // the failed one
            v(Temporary, true),
            v(Permanent, false), // terminated earlier: started again, as in OTP
        ];
        let p = group_plan(Strategy::OneForAll, &c, 2);
        assert_eq!(p.stop, vec![3, 1, 0]);
        assert_eq!(p.start, vec![0, 1, 2, 4]);
        assert_eq!(p.forget, vec![3]);
    }

    #[test]
    fn rest_for_one_touches_the_failed_child_and_later_ones() {
        use RestartType::*;
        let c = [v(Permanent, true), v(Permanent, false), v(Permanent, true), v(Temporary, true)];
        let p = group_plan(Strategy::RestForOne, &c, 1);
        assert_eq!(p.stop, vec![3, 2]);
        assert_eq!(p.start, vec![1, 2]);
        assert_eq!(p.forget, vec![3]);
        let p = group_plan(Strategy::RestForOne, &c, 3);
        assert_eq!(p, GroupPlan { stop: vec![], start: vec![3], forget: vec![] });
    }

    #[test]
    fn intensity_allows_exactly_intensity_restarts_per_period() {
        let t0 = Instant::now();
        let mut w = IntensityWindow::new(3, Duration::from_secs(5));
        assert!(w.record(t0));
        assert!(w.record(t0 + Duration::from_secs(1)));
        assert!(w.record(t0 + Duration::from_secs(2)));
        assert!(!w.record(t0 + Duration::from_secs(3)), "fourth in 5 s is one too many");
    }

    #[test]
    fn intensity_window_slides() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = IntensityWindow::new(2, s(5));
        assert!(w.record(t0));
        assert!(w.record(t0 + s(4)));
        // t0 is 5 s old: still inside (OTP keeps R >= Now - Period).
        assert!(!w.record(t0 + s(5)));
        let mut w = IntensityWindow::new(2, s(5));
        assert!(w.record(t0));
        assert!(w.record(t0 + s(4)));
        // t0 has left the window at t0 + 5.001 s.
        assert!(w.record(t0 + s(5) + Duration::from_millis(1)));
        assert_eq!(w.count(t0 + s(5) + Duration::from_millis(1)), 2);
        assert_eq!(w.count(t0 + s(20)), 0);
    }

    #[test]
    fn zero_intensity_refuses_the_first_restart() {
        let mut w = IntensityWindow::new(0, Duration::from_secs(5));
        assert!(!w.record(Instant::now()));
    }

    #[test]
    fn intensity_log_stays_bounded() {
        let t0 = Instant::now();
        let mut w = IntensityWindow::new(2, Duration::from_secs(60));
        for i in 0..100 {
            w.record(t0 + Duration::from_millis(i));
        }
        assert_eq!(w.count(t0 + Duration::from_millis(100)), 3);
    }

    #[test]
    fn backoff_grows_caps_and_resets() {
        let ms = Duration::from_millis;
        let policy = Backoff::exponential(ms(10), ms(80)).jitter(false).reset_after(ms(1000));
        let mut b = BackoffSchedule::new(policy);
        let t0 = Instant::now();
        let d: Vec<_> = (0..6).map(|i| b.next_delay(t0 + ms(i))).collect();
        assert_eq!(d, vec![ms(10), ms(20), ms(40), ms(80), ms(80), ms(80)]);
        // A quiet second later the schedule starts over.
        assert_eq!(b.next_delay(t0 + ms(2000)), ms(10));
    }

    #[test]
    fn jittered_backoff_stays_within_bounds_and_is_seedable() {
        let ms = Duration::from_millis;
        let policy = Backoff::exponential(ms(10), ms(100)).seed(42);
        let t0 = Instant::now();
        let run = || {
            let mut b = BackoffSchedule::new(policy);
            (0..10).map(|i| b.next_delay(t0 + ms(i))).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run(), "same seed, same schedule");
        assert!(a.iter().all(|d| *d >= ms(10) && *d <= ms(100)), "{a:?}");
        assert!(a[0] < ms(20), "first delay within [min, 2 min): {:?}", a[0]);
    }

    #[test]
    fn restart_and_delete_act_only_on_a_stopped_child_of_a_static_supervisor() {
        let dynamic = Strategy::Dynamic { max_children: None };
        assert_eq!(plan_stopped_only(dynamic, Some(Phase::Stopped)), Err(CallRefusal::NotSupported));
        assert_eq!(plan_stopped_only(Strategy::OneForOne, None), Err(CallRefusal::NotFound));
        assert_eq!(plan_stopped_only(Strategy::OneForAll, Some(Phase::Running)), Err(CallRefusal::Running));
        assert_eq!(plan_stopped_only(Strategy::RestForOne, Some(Phase::Restarting)), Err(CallRefusal::Restarting));
        assert_eq!(plan_stopped_only(Strategy::OneForOne, Some(Phase::Stopped)), Ok(()));
    }

    #[test]
    fn terminate_cancels_a_pending_restart_and_keeps_only_static_non_temporary_specs() {
        let kept = plan_terminate(Strategy::OneForOne, RestartType::Permanent, Phase::Running);
        assert_eq!(kept, TerminatePlan { cancel_restart: false, forget: false });
        let pending = plan_terminate(Strategy::OneForAll, RestartType::Transient, Phase::Restarting);
        assert_eq!(pending, TerminatePlan { cancel_restart: true, forget: false });
        assert!(plan_terminate(Strategy::OneForOne, RestartType::Temporary, Phase::Stopped).forget);
        let dynamic = Strategy::Dynamic { max_children: Some(3) };
        assert!(plan_terminate(dynamic, RestartType::Permanent, Phase::Running).forget);
    }

    #[test]
    fn auto_shutdown_rules() {
        use AutoShutdown::*;
        assert!(!auto_shutdown_due(Never, true, 0));
        assert!(auto_shutdown_due(AnySignificant, true, 3));
        assert!(!auto_shutdown_due(AnySignificant, false, 0));
        assert!(!auto_shutdown_due(AllSignificant, true, 1));
        assert!(auto_shutdown_due(AllSignificant, true, 0));
    }
}
