//! Crash reports: one structured record per failure, and the bounded flight recorder that
//! keeps the latest ones.
//!
//! Every abnormal exit of a child produces one [`CrashReport`]: where (path, ancestors, child
//! id and spec), what (reason, panic location, message type, backtrace on request), and what
//! the supervisor decided. It is emitted as one `tracing` event with every field (target
//! `warden::crash`, so JSON log output carries them all) and kept in the tree's
//! [`FlightRecorder`], which holds the last N reports and can export them as JSON.
//!
//! ```
//! use std::time::Duration;
//! use warden_core::testkit::EventProbe;
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
//! let worker = ChildSpec::worker("parser", Worker, ());
//! let handle = worker.handle();
//! let app = Supervisor::start("report-doc", SupervisorSpec::one_for_one().child(worker)).await?;
//! let mut probe = EventProbe::new(&app);
//! handle.cast(0)?;
//! probe.restarted(&handle.path(), Duration::from_secs(5)).await?;
//! let report = &app.crash_reports()[0];
//! assert_eq!((report.path.as_str(), report.reason_kind), ("/report-doc/parser", "panic"));
//! app.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::vocab::{ChildType, RestartType, Shutdown};

/// Default number of crash reports a tree keeps.
pub const DEFAULT_FLIGHT_RECORDER_CAPACITY: usize = 256;

/// What the supervisor decided about a failed child.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "action", rename_all = "snake_case"))]
pub enum Decision {
    /// Restart, now (`delay_ms` 0) or after a backoff delay.
    Restart {
        /// The backoff delay.
        delay_ms: u64,
    },
    /// Not restarted: its restart type says so (temporary, or transient after a normal exit).
    NotRestarted,
    /// Too many restarts: the supervisor gives up, stops its children and escalates to its
    /// parent.
    Escalate,
    /// The supervisor is shutting down; the child is not restarted.
    ShuttingDown,
}

impl std::fmt::Display for Decision {
    /// `restart`, `restart after 250 ms`, `not_restarted`, `escalate`, `shutting_down`: the
    /// JSON form's `action`, with the delay when there is one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Restart { delay_ms: 0 } => f.write_str("restart"),
            Decision::Restart { delay_ms } => write!(f, "restart after {delay_ms} ms"),
            Decision::NotRestarted => f.write_str("not_restarted"),
            Decision::Escalate => f.write_str("escalate"),
            Decision::ShuttingDown => f.write_str("shutting_down"),
        }
    }
}

/// One failure, with everything known about it.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CrashReport {
    /// When the supervisor handled the failure, in ms since the Unix epoch.
    pub at_unix_ms: u64,
    /// The child's path.
    pub path: String,
    /// The paths of its supervisors, root first.
    pub ancestors: Vec<String>,
    /// The child's id.
    pub child_id: String,
    /// `worker` or `supervisor`.
    pub child_type: &'static str,
    /// `permanent`, `transient` or `temporary`.
    pub restart: &'static str,
    /// `brutal_kill`, `infinity`, or the timeout in ms.
    pub shutdown: String,
    /// The incarnation that failed (its starts, from 1).
    pub incarnation: u64,
    /// `panic`, `error`, `hung`, `killed`, `exit`, `start_failed`.
    pub reason_kind: &'static str,
    /// The reason in words (the panic message, the error, the hang's duration...).
    pub reason: String,
    /// `file:line:column` of a panic, when the child panicked.
    pub panic_location: Option<String>,
    /// The type of the message being handled, which was dropped.
    pub message_type: Option<&'static str>,
    /// The message's `Debug` rendering (at most 1 KiB), only for children started with
    /// `ChildSpec::worker_debug`.
    pub message: Option<String>,
    /// The mailbox length when it failed, when known (ractor does not expose it: `None`).
    pub mailbox_len: Option<usize>,
    /// Restarts counted in the supervisor's intensity window, this one included.
    pub restarts_in_window: usize,
    /// The supervisor's intensity (restarts allowed per period).
    pub intensity: u32,
    /// What the supervisor decided.
    pub decision: Decision,
    /// A backtrace, when enabled with `panic_capture::capture_backtraces`.
    pub backtrace: Option<String>,
    /// The saved state the next incarnation resumed from, filled in when it has (checkpointed
    /// children only; the `warden::crash` log record is written before, so it is absent there).
    pub restored: Option<crate::restored::RestoredFrom>,
}

pub(crate) fn restart_name(r: RestartType) -> &'static str {
    match r {
        RestartType::Permanent => "permanent",
        RestartType::Transient => "transient",
        RestartType::Temporary => "temporary",
    }
}

pub(crate) fn shutdown_name(s: Shutdown) -> String {
    match s {
        Shutdown::BrutalKill => "brutal_kill".into(),
        Shutdown::Infinity => "infinity".into(),
        Shutdown::Timeout(t) => format!("{}ms", t.as_millis()),
    }
}

pub(crate) fn child_type_name(t: ChildType) -> &'static str {
    match t {
        ChildType::Worker => "worker",
        ChildType::Supervisor => "supervisor",
    }
}

pub(crate) fn unix_ms_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as u64
}

impl CrashReport {
    /// Emits the report as one `tracing` event (target `warden::crash`) with every field.
    pub fn trace(&self) {
        let decision = self.decision.to_string();
        tracing::error!(
            target: "warden::crash",
            path = %self.path,
            ancestors = ?self.ancestors,
            child_id = %self.child_id,
            child_type = self.child_type,
            restart = self.restart,
            shutdown = %self.shutdown,
            incarnation = self.incarnation,
            reason_kind = self.reason_kind,
            reason = %self.reason,
            panic_location = self.panic_location.as_deref(),
            message_type = self.message_type,
            message = self.message.as_deref(),
            mailbox_len = self.mailbox_len,
            restarts_in_window = self.restarts_in_window,
            intensity = self.intensity,
            decision = %decision,
            backtrace = self.backtrace.as_deref(),
            "crash report"
        );
    }
}

/// The last N crash reports of a tree, oldest first. Pushing past N drops the oldest.
#[derive(Debug)]
pub struct FlightRecorder {
    capacity: usize,
    reports: Mutex<VecDeque<CrashReport>>,
    dropped: std::sync::atomic::AtomicU64,
}

impl FlightRecorder {
    /// A recorder keeping `capacity` reports (at least 1).
    pub fn new(capacity: usize) -> Self {
        FlightRecorder {
            capacity: capacity.max(1),
            reports: Mutex::new(VecDeque::new()),
            dropped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(crate) fn push(&self, report: CrashReport) {
        let mut r = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() >= self.capacity {
            r.pop_front();
            self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r.push_back(report);
    }

    /// Adds `from` to the newest report of `path` whose failed incarnation is older than
    /// `incarnation` and which has no restore note yet.
    pub(crate) fn note_restored(&self, path: &str, incarnation: u64, from: &crate::restored::RestoredFrom) {
        let mut r = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(report) = r.iter_mut().rev().find(|c| c.path == path) {
            if report.incarnation < incarnation && report.restored.is_none() {
                report.restored = Some(from.clone());
            }
        }
    }

    /// The kept reports, oldest first.
    pub fn reports(&self) -> Vec<CrashReport> {
        self.reports.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// How many reports were dropped to keep the bound.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The kept reports as a JSON array (with the `serde` feature).
    #[cfg(feature = "serde")]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.reports()).unwrap_or_else(|_| "[]".into())
    }
}

impl Default for FlightRecorder {
    fn default() -> Self {
        FlightRecorder::new(DEFAULT_FLIGHT_RECORDER_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(n: u64) -> CrashReport {
        CrashReport {
            at_unix_ms: n,
            path: "/a/b".into(),
            ancestors: vec!["/a".into()],
            child_id: "b".into(),
            child_type: "worker",
            restart: "permanent",
            shutdown: "5000ms".into(),
            incarnation: n,
            reason_kind: "panic",
            reason: "panic: boom".into(),
            panic_location: Some("src/x.rs:1:2".into()),
            message_type: Some("M"),
            message: None,
            mailbox_len: None,
            restarts_in_window: 1,
            intensity: 3,
            decision: Decision::Restart { delay_ms: 0 },
            backtrace: None,
            restored: None,
        }
    }

    #[test]
    fn the_recorder_keeps_the_last_n() {
        let r = FlightRecorder::new(3);
        for n in 0..5 {
            r.push(report(n));
        }
        let kept: Vec<u64> = r.reports().iter().map(|x| x.incarnation).collect();
        assert_eq!(kept, [2, 3, 4]);
        assert_eq!(r.dropped(), 2);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn reports_export_as_json_with_every_field() {
        let r = FlightRecorder::new(2);
        r.push(report(1));
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let first = &v[0];
        for field in [
            "at_unix_ms",
            "path",
            "ancestors",
            "child_id",
            "child_type",
            "restart",
            "shutdown",
            "incarnation",
            "reason_kind",
            "reason",
            "panic_location",
            "message_type",
            "message",
            "mailbox_len",
            "restarts_in_window",
            "intensity",
            "decision",
            "backtrace",
        ] {
            assert!(first.get(field).is_some(), "{field} missing in {first}");
        }
        assert_eq!(first["decision"]["action"], "restart");
    }
}
