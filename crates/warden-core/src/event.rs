//! Typed supervision events: every decision a supervisor takes, published to subscribers.
//!
//! A tree shares one [`EventBus`] (a bounded `tokio::sync::broadcast` channel). Each event is
//! also emitted through `tracing` with structured fields. A subscriber that falls more than
//! the bus capacity behind loses the oldest events and is told how many (`RecvError::Lagged`);
//! the supervisor itself never waits for subscribers.
//!
//! ```
//! use warden_core::{ChildSpec, Supervisor, SupervisorEvent, SupervisorSpec};
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
//! let app = Supervisor::start("events-doc", SupervisorSpec::one_for_one().child(worker)).await?;
//! let mut events = app.subscribe();
//! handle.cast(0)?; // panics in its handler
//! loop {
//!     if let SupervisorEvent::ChildRestarted { path, .. } = events.recv().await? {
//!         assert_eq!(path.as_str(), "/events-doc/worker");
//!         break;
//!     }
//! }
//! app.shutdown().await;
//! # Ok(()) }
//! ```

use std::time::Duration;

use tokio::sync::broadcast;

use crate::path::ActorPath;
use crate::reason::ExitReason;

/// Default number of events a lagging subscriber may fall behind before it loses some.
pub const DEFAULT_EVENT_CAPACITY: usize = 4096;

/// One supervision decision or observation.
#[derive(Debug, Clone, PartialEq)]
pub enum SupervisorEvent {
    /// A child (or supervisor) started; `incarnation` counts its starts from 1.
    ChildStarted {
        /// The child's path.
        path: ActorPath,
        /// Which start this is, from 1.
        incarnation: u64,
    },
    /// A child exited or crashed.
    ChildExited {
        /// The child's path.
        path: ActorPath,
        /// Why it exited.
        reason: ExitReason,
        /// The incarnation that exited.
        incarnation: u64,
        /// The type of the message whose handling failed; that message is dropped.
        dropped_message: Option<&'static str>,
    },
    /// A restart was scheduled after a backoff delay.
    RestartScheduled {
        /// The child's path.
        path: ActorPath,
        /// How long until the restart.
        delay: Duration,
    },
    /// A child was restarted and its new incarnation is running.
    ChildRestarted {
        /// The child's path.
        path: ActorPath,
        /// The new incarnation.
        incarnation: u64,
        /// `true` when the child was restarted inside its running actor, keeping its mailbox.
        in_place: bool,
    },
    /// A (re)started child resumed from saved state (reported by the checkpoint layer).
    StateRestored {
        /// The child's path.
        path: ActorPath,
        /// The incarnation that resumed.
        incarnation: u64,
        /// Which saved state.
        from: crate::restored::RestoredFrom,
    },
    /// A restart attempt failed; another is scheduled unless intensity is exceeded.
    RestartFailed {
        /// The child's path.
        path: ActorPath,
        /// The cause.
        error: String,
    },
    /// A child was stopped by its supervisor (terminate_child, a group restart or shutdown).
    ChildTerminated {
        /// The child's path.
        path: ActorPath,
        /// `true` if it had to be killed after its shutdown timeout.
        killed: bool,
    },
    /// Messages that were waiting for a child to restart were dropped because it will not
    /// restart; they are counted here instead of vanishing.
    StashDropped {
        /// The child's path.
        path: ActorPath,
        /// How many messages.
        count: usize,
    },
    /// A supervisor saw more restarts than its intensity allows.
    IntensityExceeded {
        /// The supervisor's path.
        path: ActorPath,
        /// Its intensity.
        intensity: u32,
        /// Its period.
        period: Duration,
    },
    /// A supervisor shut down (after its children) and left the decision to its parent.
    SupervisorShutdown {
        /// The supervisor's path.
        path: ActorPath,
        /// The reason it gives its parent.
        reason: ExitReason,
    },
}

impl SupervisorEvent {
    /// The path of the actor the event is about.
    pub fn path(&self) -> &ActorPath {
        match self {
            SupervisorEvent::ChildStarted { path, .. }
            | SupervisorEvent::ChildExited { path, .. }
            | SupervisorEvent::RestartScheduled { path, .. }
            | SupervisorEvent::ChildRestarted { path, .. }
            | SupervisorEvent::RestartFailed { path, .. }
            | SupervisorEvent::StateRestored { path, .. }
            | SupervisorEvent::ChildTerminated { path, .. }
            | SupervisorEvent::StashDropped { path, .. }
            | SupervisorEvent::IntensityExceeded { path, .. }
            | SupervisorEvent::SupervisorShutdown { path, .. } => path,
        }
    }

    fn trace(&self) {
        match self {
            SupervisorEvent::ChildStarted { path, incarnation } => {
                tracing::debug!(path = %path, incarnation, "child started")
            }
            SupervisorEvent::ChildExited { path, reason, incarnation, dropped_message } => {
                // A failure's one log record is its crash report (target `warden::crash`).
                tracing::debug!(path = %path, reason = %reason, reason_kind = reason.kind(), incarnation,
                    dropped_message = dropped_message.unwrap_or(""), "child exited")
            }
            SupervisorEvent::RestartScheduled { path, delay } => {
                tracing::info!(path = %path, delay_ms = delay.as_millis() as u64, "restart scheduled")
            }
            SupervisorEvent::ChildRestarted { path, incarnation, in_place } => {
                tracing::info!(path = %path, incarnation, in_place, "child restarted")
            }
            SupervisorEvent::RestartFailed { path, error } => {
                tracing::warn!(path = %path, error = %error, "restart failed")
            }
            SupervisorEvent::StateRestored { path, incarnation, from } => {
                tracing::info!(target: "warden::recovery", path = %path, incarnation, seq = from.seq,
                    age_ms = from.age_ms, replayed = from.replayed, skipped = from.skipped, "state restored")
            }
            SupervisorEvent::ChildTerminated { path, killed } => {
                tracing::debug!(path = %path, killed, "child terminated")
            }
            SupervisorEvent::StashDropped { path, count } => {
                tracing::warn!(path = %path, count, "stashed messages dropped: child will not restart")
            }
            SupervisorEvent::IntensityExceeded { path, intensity, period } => {
                tracing::error!(path = %path, intensity, period_ms = period.as_millis() as u64,
                    "restart intensity exceeded; shutting down and escalating")
            }
            SupervisorEvent::SupervisorShutdown { path, reason } => {
                tracing::info!(path = %path, reason = %reason, "supervisor shut down")
            }
        }
    }
}

/// The channel a tree publishes its events on, the tree's flight recorder of crash reports,
/// and its reliability figures. Cloning shares all three.
///
/// Crash reports and the counting behind the reliability figures and metrics are *deferred*:
/// a supervisor queues them here and writes them in one batch [`FLUSH_DELAY`] after the first
/// of them, so that none of that work (building the report, formatting the log record, metric
/// lookups) runs while a restart is under way. Every reader ([`EventBus::recorder`],
/// [`EventBus::stats`], and the `SupervisorRef` queries built on them) writes what is still
/// queued first, so a query never misses a failure that already happened.
#[derive(Clone)]
pub struct EventBus {
    /// Made at the first subscription: tokio's broadcast channel allocates all its slots up
    /// front (about 380 KiB at the default capacity), which every root supervisor would pay
    /// even with no subscriber (a node hosting thousands of singletons runs one root each).
    tx: std::sync::Arc<std::sync::OnceLock<broadcast::Sender<SupervisorEvent>>>,
    capacity: usize,
    recorder: std::sync::Arc<crate::report::FlightRecorder>,
    stats: std::sync::Arc<crate::stats::StatsRegistry>,
    pending: std::sync::Arc<Pending>,
}

/// Queued bookkeeping, and the lock held while writing it (so that a reader that flushes
/// waits for a batch a supervisor is writing).
#[derive(Default)]
struct Pending {
    queue: std::sync::Mutex<Vec<Deferred>>,
    writing: std::sync::Mutex<()>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subscribers = self.tx.get().map_or(0, |tx| tx.receiver_count());
        f.debug_struct("EventBus").field("subscribers", &subscribers).finish()
    }
}

/// Bookkeeping queued by a supervisor: a crash report to write, or figures to count.
pub(crate) type Deferred = Box<dyn FnOnce(&EventBus) + Send>;

/// The most bookkeeping items a tree keeps queued before a supervisor writes them inline.
pub const MAX_PENDING: usize = 65_536;

/// How long after a failure its crash report, figures and metrics are written at the latest
/// (sooner if anyone reads them).
pub const FLUSH_DELAY: Duration = Duration::from_millis(1);

impl EventBus {
    /// A bus keeping up to `capacity` events for slow subscribers, with a flight recorder of
    /// the default size.
    pub fn new(capacity: usize) -> Self {
        Self::with_recorder(capacity, crate::report::DEFAULT_FLIGHT_RECORDER_CAPACITY)
    }

    /// How many events a subscriber may fall behind before it loses some (the buffer each
    /// subscription shares, allocated whole at the first one: about 96 bytes an event).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A bus keeping up to `capacity` events and the last `reports` crash reports.
    pub fn with_recorder(capacity: usize, reports: usize) -> Self {
        EventBus {
            tx: std::sync::Arc::default(),
            capacity: capacity.max(1),
            recorder: std::sync::Arc::new(crate::report::FlightRecorder::new(reports)),
            stats: std::sync::Arc::default(),
            pending: std::sync::Arc::default(),
        }
    }

    /// The tree's reliability figures (MTBF, MTTR, availability, failure rate) per path,
    /// with everything queued counted first.
    pub fn stats(&self) -> &crate::stats::StatsRegistry {
        self.flush();
        &self.stats
    }

    /// The tree's flight recorder, with every queued crash report written first.
    pub fn recorder(&self) -> &crate::report::FlightRecorder {
        self.flush();
        &self.recorder
    }

    /// Writes the queued crash reports (tracing and the flight recorder) and counts the
    /// queued figures, in the order they were queued. Returns when everything queued before
    /// the call is written (also what another thread was writing).
    pub fn flush(&self) {
        let _writing = self.pending.writing.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let queued = std::mem::take(&mut *self.pending.queue.lock().unwrap_or_else(|e| e.into_inner()));
            if queued.is_empty() {
                return;
            }
            for work in queued {
                work(self);
            }
        }
    }

    /// Queues bookkeeping; returns `true` if the queue was empty (the caller schedules a
    /// flush in [`FLUSH_DELAY`]). The queue is bounded: past [`MAX_PENDING`] items (a storm of
    /// failures outrunning the flush), the caller writes everything queued itself.
    pub(crate) fn defer(&self, work: Deferred) -> bool {
        let len = {
            let mut q = self.pending.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.push(work);
            q.len()
        };
        if len > MAX_PENDING {
            self.flush();
            return false; // a flush is already scheduled for the first of them
        }
        len == 1
    }

    /// The figures without flushing (for deferred work itself).
    pub(crate) fn stats_now(&self) -> &crate::stats::StatsRegistry {
        &self.stats
    }

    /// Emits `report` through `tracing` and keeps it in the flight recorder.
    pub(crate) fn record(&self, report: crate::report::CrashReport) {
        report.trace();
        self.recorder.push(report);
    }

    /// Publishes `event` to every subscriber and to `tracing`; never waits.
    pub fn publish(&self, event: SupervisorEvent) {
        event.trace();
        if let Some(tx) = self.tx.get().filter(|tx| tx.receiver_count() > 0) {
            let _ = tx.send(event);
        }
    }

    /// A new subscriber that sees events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SupervisorEvent> {
        self.tx.get_or_init(|| broadcast::channel(self.capacity).0).subscribe()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(DEFAULT_EVENT_CAPACITY)
    }
}

#[cfg(test)]
mod pending_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_subscriber_that_falls_behind_the_bus_is_told_how_many_events_it_lost() {
        let capacity = 4; // DEFAULT_EVENT_CAPACITY is this bound's default
        let bus = EventBus::new(capacity);
        let mut rx = bus.subscribe();
        for incarnation in 1..=capacity as u64 + 2 {
            bus.publish(SupervisorEvent::ChildStarted { path: ActorPath::root("bus-lag"), incarnation });
        }
        assert_eq!(rx.try_recv(), Err(tokio::sync::broadcast::error::TryRecvError::Lagged(2)));
        // The publisher never waited; the subscriber goes on from the oldest event kept.
        assert!(matches!(rx.try_recv(), Ok(SupervisorEvent::ChildStarted { incarnation: 3, .. })));
    }

    #[test]
    fn a_bus_makes_its_event_buffer_only_for_its_first_subscriber_and_shares_it_with_clones() {
        let bus = EventBus::default();
        let clone = bus.clone();
        bus.publish(SupervisorEvent::ChildStarted { path: ActorPath::root("bus-lazy"), incarnation: 1 });
        assert!(bus.tx.get().is_none(), "no subscriber yet: no buffer, and nothing kept");
        let mut rx = clone.subscribe();
        assert!(bus.tx.get().is_some(), "the clone's subscription made the one shared buffer");
        bus.publish(SupervisorEvent::ChildStarted { path: ActorPath::root("bus-lazy"), incarnation: 2 });
        assert!(matches!(rx.try_recv(), Ok(SupervisorEvent::ChildStarted { incarnation: 2, .. })));
        assert!(rx.try_recv().is_err(), "the event published before any subscriber is not replayed");
    }

    #[test]
    fn the_bookkeeping_queue_is_bounded() {
        let bus = EventBus::new(16);
        let done = Arc::new(AtomicUsize::new(0));
        for i in 0..MAX_PENDING {
            let d = done.clone();
            let first = bus.defer(Box::new(move |_| {
                d.fetch_add(1, Ordering::Relaxed);
            }));
            assert_eq!(first, i == 0);
        }
        assert_eq!(done.load(Ordering::Relaxed), 0, "queued, not written");
        let d = done.clone();
        bus.defer(Box::new(move |_| {
            d.fetch_add(1, Ordering::Relaxed);
        }));
        assert_eq!(done.load(Ordering::Relaxed), MAX_PENDING + 1, "one past the bound writes them all");
    }
}
