//! Exit reasons: why a child stopped, in OTP's vocabulary.
//!
//! ractor reports a stopped actor as a free-form `Option<String>` and a failed one as a boxed
//! error. warden folds both into [`ExitReason`], whose [`ExitReason::is_normal`] answers the one
//! question restart types care about: OTP's `normal`, `shutdown` and `{shutdown, _}` are normal,
//! everything else is abnormal.
//!
//! ```
//! use warden_core::ExitReason;
//!
//! assert!(ExitReason::from_stop_reason(None).is_normal());
//! assert!(ExitReason::from_stop_reason(Some("shutdown: draining")).is_normal());
//! let bad = ExitReason::from_stop_reason(Some("lost the database"));
//! assert!(!bad.is_normal());
//! assert_eq!(bad.kind(), "exit");
//! ```

use std::fmt;

/// The stop reason warden passes to ractor when it asks a child to shut down.
pub const SHUTDOWN: &str = "shutdown";
/// The stop reason a child gets when it stops because of `normal` (OTP's `normal`).
pub const NORMAL: &str = "normal";

/// Why a child exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The child stopped by itself without a reason, or with the reason `"normal"`.
    Normal,
    /// The child was asked to shut down, or stopped with a reason starting with `"shutdown"`.
    /// The text after `"shutdown:"`, if any, is kept.
    Shutdown(Option<String>),
    /// The child was killed (ractor's `kill`, or a shutdown timeout ran out).
    Killed,
    /// A handler panicked. `message` is the panic payload when it was a string.
    Panic {
        /// The panic message.
        message: String,
    },
    /// A handler returned an error; the error's `Display` text.
    Error(String),
    /// The child stopped itself with a reason that is neither normal nor shutdown.
    Exit(String),
    /// The child failed to start (its `pre_start` returned an error or panicked).
    StartFailed(String),
    /// A handler ran past the child's deadline; the child was killed.
    Hung {
        /// How long the handler had been running when the watchdog reported it (at least the
        /// deadline).
        stuck_for: std::time::Duration,
        /// The type of the message being handled.
        message_type: &'static str,
    },
}

impl ExitReason {
    /// OTP's notion of a normal exit: `Normal` and `Shutdown` are normal; a transient child is
    /// not restarted after a normal exit.
    pub fn is_normal(&self) -> bool {
        matches!(self, ExitReason::Normal | ExitReason::Shutdown(_))
    }

    /// Maps the reason string of a ractor `ActorTerminated` event.
    pub fn from_stop_reason(reason: Option<&str>) -> Self {
        match reason {
            None => ExitReason::Normal,
            Some(NORMAL) => ExitReason::Normal,
            Some("killed") | Some("actor_task_cancelled") => ExitReason::Killed,
            Some(r) if r == SHUTDOWN => ExitReason::Shutdown(None),
            Some(r) => match r.strip_prefix("shutdown:") {
                Some(detail) => ExitReason::Shutdown(Some(detail.trim().to_string())),
                None => ExitReason::Exit(r.to_string()),
            },
        }
    }

    /// The reason string to hand to ractor's `stop` so that the parent maps it back to `self`.
    pub fn to_stop_reason(&self) -> Option<String> {
        match self {
            ExitReason::Normal => None,
            ExitReason::Shutdown(None) => Some(SHUTDOWN.to_string()),
            ExitReason::Shutdown(Some(d)) => Some(format!("shutdown: {d}")),
            ExitReason::Killed => Some("killed".to_string()),
            other => Some(other.to_string()),
        }
    }

    /// A short, stable label for the kind of reason (`normal`, `shutdown`, `killed`, `panic`,
    /// `error`, `exit`, `start_failed`, `hung`), for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ExitReason::Normal => "normal",
            ExitReason::Shutdown(_) => "shutdown",
            ExitReason::Killed => "killed",
            ExitReason::Panic { .. } => "panic",
            ExitReason::Error(_) => "error",
            ExitReason::Exit(_) => "exit",
            ExitReason::StartFailed(_) => "start_failed",
            ExitReason::Hung { .. } => "hung",
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown(None) => f.write_str("shutdown"),
            ExitReason::Shutdown(Some(d)) => write!(f, "shutdown: {d}"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::Panic { message } => write!(f, "panic: {message}"),
            ExitReason::Error(e) => write!(f, "error: {e}"),
            ExitReason::Exit(r) => write!(f, "exit: {r}"),
            ExitReason::StartFailed(e) => write!(f, "start failed: {e}"),
            ExitReason::Hung { stuck_for, message_type } => {
                write!(f, "hung: a handler of {message_type} ran for {stuck_for:?}, past its deadline")
            }
        }
    }
}

/// Renders a panic payload as text: `&str` and `String` payloads as themselves, anything else
/// as a placeholder.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

/// The cause of a failed ractor spawn as text: the start error itself, not ractor's wrapper.
/// OTP's `ignore`: return it from a child's `pre_start` (`Err(warden::Ignore.into())`) to say
/// the child chose not to run. Its supervisor keeps the spec (a dynamic supervisor keeps
/// nothing), nothing runs, no error is reported and nothing is restarted; `restart_child` may
/// start it later. The start call answers with the child's info, status
/// [`ChildStatus::Stopped`](crate::ChildStatus::Stopped).
///
/// ```
/// use ractor::{Actor, ActorProcessingErr, ActorRef};
///
/// /// Runs only where it is configured.
/// struct Exporter {
///     endpoint: Option<String>,
/// }
///
/// impl Actor for Exporter {
///     type Msg = ();
///     type State = String;
///     type Arguments = ();
///     async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<String, ActorProcessingErr> {
///         match &self.endpoint {
///             Some(url) => Ok(url.clone()),
///             None => Err(warden_core::Ignore.into()),
///         }
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the child chose not to start (OTP's ignore)")]
pub struct Ignore;

/// The stop reason of a child that, restarted in place, chose not to run ([`Ignore`]): its
/// supervisor leaves it stopped (OTP's `{ok, undefined}` from a restart).
pub(crate) const IGNORED_STOP: &str = "warden: ignore";

/// Whether a failed spawn is a child's [`Ignore`].
pub(crate) fn ignored(e: &ractor::SpawnErr) -> bool {
    matches!(e, ractor::SpawnErr::StartupFailed(inner) if inner.downcast_ref::<Ignore>().is_some())
}

pub(crate) fn spawn_cause(e: ractor::SpawnErr) -> String {
    match e {
        ractor::SpawnErr::StartupFailed(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_and_shutdown_are_normal() {
        assert!(ExitReason::Normal.is_normal());
        assert!(ExitReason::Shutdown(None).is_normal());
        assert!(ExitReason::Shutdown(Some("x".into())).is_normal());
        assert!(!ExitReason::Killed.is_normal());
        assert!(!ExitReason::Panic { message: "p".into() }.is_normal());
        assert!(!ExitReason::Error("e".into()).is_normal());
        assert!(!ExitReason::Exit("boom".into()).is_normal());
        assert!(!ExitReason::Hung { stuck_for: std::time::Duration::from_secs(1), message_type: "M" }.is_normal());
    }

    #[test]
    fn stop_reasons_round_trip() {
        for r in [
            ExitReason::Normal,
            ExitReason::Shutdown(None),
            ExitReason::Shutdown(Some("max restart intensity".into())),
            ExitReason::Killed,
            ExitReason::Exit("boom".into()),
        ] {
            let s = r.to_stop_reason();
            let back = ExitReason::from_stop_reason(s.as_deref());
            match (&r, &back) {
                (ExitReason::Exit(_), ExitReason::Exit(_)) => {}
                _ => assert_eq!(r, back, "via {s:?}"),
            }
        }
        assert_eq!(ExitReason::from_stop_reason(Some("normal")), ExitReason::Normal);
        assert_eq!(ExitReason::from_stop_reason(Some("shutdown")), ExitReason::Shutdown(None));
        assert_eq!(ExitReason::from_stop_reason(Some("disk gone")), ExitReason::Exit("disk gone".into()));
    }

    #[test]
    fn panic_payloads_render() {
        let p: Box<dyn std::any::Any + Send> = Box::new("static");
        assert_eq!(panic_message(p.as_ref()), "static");
        let p: Box<dyn std::any::Any + Send> = Box::new(String::from("owned"));
        assert_eq!(panic_message(p.as_ref()), "owned");
        let p: Box<dyn std::any::Any + Send> = Box::new(7u8);
        assert_eq!(panic_message(p.as_ref()), "<non-string panic payload>");
    }
}
