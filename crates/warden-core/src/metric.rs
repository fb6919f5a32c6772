//! The core's `warden_*` metrics, recorded through the `metrics` facade crate when the
//! `metrics` feature is on (the `warden` facade switches it on with its `metrics` and `observe`
//! features); without it these functions do nothing and the `metrics` crate is not built.
//!
//! | metric | kind | labels | counts |
//! |---|---|---|---|
//! | `warden_restarts_total` | counter | `path` | restarts of a child |
//! | `warden_recovery_seconds` | histogram | `path` | failure detected to new incarnation ready |
//! | `warden_failures_total` | counter | `path`, `reason` | abnormal exits, by reason kind |
//! | `warden_hangs_total` | counter | `path` | hung handlers and missed heartbeats |
//! | `warden_children` | gauge | `supervisor`, `state` | children running, restarting, stopped |
//!
//! A dynamic child is labelled with its spec's path, so the number of series stays bounded.

use std::time::Duration;

/// A child was restarted; `repaired` is its repair time when the restart completed one.
pub(crate) fn restarted(path: &str, repaired: Option<Duration>) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!("warden_restarts_total", "path" => path.to_string()).increment(1);
        if let Some(d) = repaired {
            metrics::histogram!("warden_recovery_seconds", "path" => path.to_string()).record(d.as_secs_f64());
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (path, repaired);
}

/// A child failed with a reason of `kind` (`ExitReason::kind`).
pub(crate) fn failed(path: &str, kind: &'static str) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!("warden_failures_total", "path" => path.to_string(), "reason" => kind).increment(1);
        if kind == "hung" {
            metrics::counter!("warden_hangs_total", "path" => path.to_string()).increment(1);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (path, kind);
}

/// The number of children of `supervisor` in each state.
pub(crate) fn children(supervisor: &str, running: u32, restarting: u32, stopped: u32) {
    #[cfg(feature = "metrics")]
    {
        let sup = supervisor.to_string();
        metrics::gauge!("warden_children", "supervisor" => sup.clone(), "state" => "running").set(running);
        metrics::gauge!("warden_children", "supervisor" => sup.clone(), "state" => "restarting").set(restarting);
        metrics::gauge!("warden_children", "supervisor" => sup, "state" => "stopped").set(stopped);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (supervisor, running, restarting, stopped);
}
