//! The supervision vocabulary as plain data: restart types, shutdown policies, child types,
//! strategies, the auto-shutdown rule and restart backoff. A leaf: it names no actor, spec or
//! supervisor, so the decision rules (`decision.rs`) and the specs both build on it without
//! depending on each other.

use std::time::Duration;

/// OTP's restart types: when a child that exited is started again.
///
/// | restart type | after a crash (panic, error, hang, kill, abnormal exit) | after a normal exit (`normal`, `shutdown`, `shutdown: ...`) | as a bystander of a group restart | its spec afterwards |
/// |---|---|---|---|---|
/// | `Permanent` (default) | restarted | restarted | restarted | kept |
/// | `Transient` | restarted | not restarted | restarted | kept |
/// | `Temporary` | not restarted | not restarted | stopped, not restarted | forgotten |
///
/// Every restart counts toward the supervisor's intensity; a child that is not restarted
/// can still shut its supervisor down if it is significant ([`AutoShutdown`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestartType {
    /// Always restarted.
    Permanent,
    /// Restarted only after an abnormal exit (not `normal` or `shutdown`).
    Transient,
    /// Never restarted; its spec is forgotten when it exits, also as a bystander of a group
    /// restart.
    Temporary,
}

/// How a child is stopped by its supervisor.
///
/// | policy | what the child is sent | its `post_stop` | how long the supervisor waits | default for |
/// |---|---|---|---|---|
/// | `BrutalKill` | a kill | does not run | until ractor reports it gone | |
/// | `Timeout(t)` | a stop request | runs | `t`, then it is killed | workers (5 s, [`DEFAULT_WORKER_SHUTDOWN`](crate::spec::DEFAULT_WORKER_SHUTDOWN)) |
/// | `Infinity` | a stop request | runs | without limit (OTP's `infinity`) | supervisors |
///
/// Children stop one at a time, in reverse start order, each by its own policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Killed at once (OTP's `brutal_kill`): no `post_stop`.
    BrutalKill,
    /// Asked to stop (its `post_stop` runs), killed if it has not stopped after the timeout.
    Timeout(Duration),
    /// Asked to stop, and waited for without limit (OTP's `infinity`, the default for
    /// supervisors).
    Infinity,
}

/// Whether a child is a worker or a supervisor (OTP's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildType {
    /// An ordinary actor.
    Worker,
    /// A nested supervisor.
    Supervisor,
}

/// The restart strategy of a supervisor.
///
/// | strategy | when child C exits and is to be restarted | children at start | OTP / Elixir |
/// |---|---|---|---|
/// | `OneForOne` | C alone | the spec's, in order | `one_for_one` |
/// | `OneForAll` | every other child stopped (reverse order), then all started again (in order) | the spec's, in order | `one_for_all` |
/// | `RestForOne` | the children started after C stopped (reverse order), then C and those started again (in order) | the spec's, in order | `rest_for_one` |
/// | `Dynamic` | C alone | none; added with `start_child`, at most `max_children` | `simple_one_for_one`, `DynamicSupervisor` |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only the child that exited is restarted.
    OneForOne,
    /// All children are stopped (reverse order) and started again (list order).
    OneForAll,
    /// The child that exited and those started after it are stopped and started again.
    RestForOne,
    /// A dynamic supervisor (OTP's `simple_one_for_one`, Elixir's `DynamicSupervisor`):
    /// no children at start; `start_child` adds them, one-for-one restarts, and at most
    /// `max_children` at once (`None`: no limit; `SupervisorSpec::dynamic(None)` gives the
    /// default maximum, [`SupervisorSpec::unbounded`](crate::spec::SupervisorSpec::unbounded)
    /// none).
    Dynamic {
        /// The most children this supervisor holds at once.
        max_children: Option<usize>,
    },
}

/// When the exit of significant children shuts the supervisor down (OTP's `auto_shutdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoShutdown {
    /// Significant children have no effect (the default).
    Never,
    /// The supervisor shuts down when any significant child exits and is not restarted.
    AnySignificant,
    /// The supervisor shuts down when all significant children have exited and are not
    /// restarted.
    AllSignificant,
}

/// Restart backoff for one child: exponential with optional jitter, capped, and reset after
/// a quiet period. Each delayed restart still counts towards the supervisor's intensity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first restart after a quiet period.
    pub min: Duration,
    /// The largest delay, jitter included.
    pub max: Duration,
    /// Multiplier between consecutive delays.
    pub factor: f32,
    /// Adds a random part of up to the current delay (capped at `max`).
    pub jitter: bool,
    /// After this long without a failure, the next delay starts from `min` again.
    pub reset_after: Duration,
    /// Seed for the jitter, for reproducible schedules (`None`: random).
    pub seed: Option<u64>,
}

impl Backoff {
    /// Exponential backoff from `min` to `max`, doubling, with jitter, reset after 30 s quiet.
    pub fn exponential(min: Duration, max: Duration) -> Self {
        Backoff { min, max, factor: 2.0, jitter: true, reset_after: Duration::from_secs(30), seed: None }
    }

    /// Sets the multiplier between delays.
    pub fn factor(mut self, factor: f32) -> Self {
        self.factor = factor;
        self
    }

    /// Turns jitter on or off.
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// Sets the quiet period after which the schedule starts over.
    pub fn reset_after(mut self, quiet: Duration) -> Self {
        self.reset_after = quiet;
        self
    }

    /// Seeds the jitter.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}
