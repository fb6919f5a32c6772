//! The typed messages between `warden demo` and its node processes: requests on the node's
//! stdin, reports (events and replies) on its stdout, one JSON object per line, each line at
//! most [`MAX_LINE`] bytes (longer lines are refused by the reader with an error naming the
//! limit; a node's own reports are bounded by construction: the observer view is truncated).
//!
//! Both sides use these enums; nothing here is an untyped JSON value.

use serde::{Deserialize, Serialize};
// Cluster events cross to the launcher as the library serializes them.
pub use warden_cluster::{ClusterEvent, NodeEvent};

use super::bank::{Audit, AuditorStatus, Book, Served, Transfer};
use super::pipeline::JobOutcome;

/// The longest line either side accepts, in bytes.
pub const MAX_LINE: usize = 4 << 20;

/// The next line of a peer's JSON lines; `None` once its input has ended (or failed). A line
/// longer than [`MAX_LINE`] comes as an error (the codec skips the rest of it), and the lines
/// after it are read as usual (those already buffered with it once more input or the end
/// arrives). tokio-util's framed reader answers `None` once right after such an error and then
/// reads on: that `None` is not the end, and `errored` (kept by the caller, `false` at first)
/// tells the two apart. A read error is the end: it is returned, and the `None` after it ends.
pub async fn next_line<R: tokio::io::AsyncRead + Unpin>(
    lines: &mut tokio_util::codec::FramedRead<R, tokio_util::codec::LinesCodec>,
    errored: &mut bool,
) -> Option<Result<String, tokio_util::codec::LinesCodecError>> {
    use futures::StreamExt;
    loop {
        match lines.next().await {
            None if std::mem::take(errored) => continue,
            Some(Err(e)) => {
                *errored = matches!(e, tokio_util::codec::LinesCodecError::MaxLineLengthExceeded);
                return Some(Err(e));
            }
            other => {
                *errored = false;
                return other;
            }
        }
    }
}
/// The most singletons a node's observer view lists (the rest are counted only).
pub const MAX_OBSERVED_SINGLETONS: usize = 200;

/// A request from the launcher.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Request {
    /// Unique per launcher run; the reply carries it back.
    pub id: u64,
    /// What to do.
    pub op: Op,
}

/// What the launcher asks a node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Bank: a transfer (through its source account).
    Transfer {
        /// The transfer.
        transfer: Transfer,
    },
    /// Bank: write the register.
    RegisterWrite {
        /// The value.
        value: u64,
    },
    /// Bank: read the register (linearizably).
    RegisterRead,
    /// Pipeline: run a job.
    Job {
        /// The job's id.
        job: u64,
    },
    /// A fault: make `target` panic (a singleton, or `worker` for this node's pool).
    Panic {
        /// Where.
        target: String,
    },
    /// A fault: make `target` hang.
    Hang {
        /// Where.
        target: String,
    },
    /// A fault: this node's next log write waits `ms`.
    StallDisk {
        /// For how long.
        ms: u64,
    },
    /// Leave the group in order, then exit.
    Leave,
    /// The demo's state (auditor, or results).
    Status,
    /// Where the key singleton answers from and its counter.
    Probe,
    /// Bank: every account.
    Books,
    /// The singletons running on this node.
    Hosted,
    /// This node's view for the observer page.
    Observe,
}

/// One report from a node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Report {
    /// The node is up and serves requests.
    Ready {
        /// Its name.
        node: String,
        /// Its cluster address.
        addr: String,
        /// Its process id.
        pid: u32,
        /// Its id in the group.
        id: u64,
    },
    /// What its transport saw of a peer.
    Peer {
        /// Its name.
        node: String,
        /// The event.
        event: NodeEvent,
    },
    /// What its cluster layer did.
    Cluster {
        /// Its name.
        node: String,
        /// The event.
        event: ClusterEvent,
    },
    /// A supervised actor crashed.
    Crash {
        /// Where.
        node: String,
        /// Which actor.
        actor: String,
        /// `panic`, `hung`, ...
        kind: String,
        /// The reason in words.
        reason: String,
    },
    /// A supervised actor was restarted.
    Restarted {
        /// Where.
        node: String,
        /// Which actor.
        actor: String,
    },
    /// The answer to a request.
    Reply {
        /// The request's id.
        id: u64,
        /// The answer.
        answer: Answer,
    },
    /// A request line it could not read.
    BadRequest {
        /// What was wrong.
        what: String,
    },
}

/// How a transfer request ended, as the launcher sees it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TransferOutcome {
    /// Acknowledged: debited at the source (the credit follows through the outbox).
    Ok {
        /// Which instance answered.
        served: Served,
    },
    /// Not enough money: nothing happened.
    Insufficient {
        /// Which instance answered.
        served: Served,
    },
    /// Not done: the account is moving, did not answer, or refused.
    Failed {
        /// Why.
        why: String,
    },
}

/// A register operation's outcome.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RegisterOutcome {
    /// A write committed.
    Written {
        /// Which instance answered.
        served: Served,
    },
    /// A linearizable read.
    Value {
        /// The value.
        value: u64,
        /// Which instance answered.
        served: Served,
    },
    /// Not done (perhaps done, for a write whose answer was lost).
    Failed {
        /// Why.
        why: String,
    },
}

/// The demo's state.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "demo", rename_all = "snake_case")]
pub enum Status {
    /// The bank's auditor.
    Bank(AuditorStatus),
    /// The pipeline's results.
    Pipeline {
        /// Recorded job ids.
        completed: Vec<u64>,
        /// Duplicate completions suppressed.
        duplicates: u64,
        /// Which instance answered.
        served: Served,
    },
}

/// The probe's answer: where the key singleton runs and its counter.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Its counter (audits, or jobs recorded).
    pub count: u64,
    /// Which instance answered.
    pub served: Served,
}

/// The answer to a request.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// To [`Op::Transfer`].
    Transfer(TransferOutcome),
    /// To [`Op::RegisterWrite`] and [`Op::RegisterRead`].
    Register(RegisterOutcome),
    /// To [`Op::Job`].
    Job(JobOutcome),
    /// A fault was armed on this node's pool.
    Armed,
    /// A fault was sent to its target.
    Sent,
    /// Done.
    Done,
    /// To [`Op::Status`].
    Status(Status),
    /// To [`Op::Probe`].
    Probe(Probe),
    /// To [`Op::Books`].
    Books {
        /// The money counted.
        audit: Audit,
        /// Every account.
        books: Vec<Book>,
    },
    /// To [`Op::Hosted`].
    Hosted {
        /// The singletons.
        names: Vec<String>,
    },
    /// To [`Op::Observe`]: the node's view, in the observer's own type.
    Observe(Box<warden_observe::snapshot::NodeView>),
    /// The request could not be carried out.
    Error {
        /// Why.
        what: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_reports_round_trip_as_json_lines() {
        let req = Request { id: 7, op: Op::StallDisk { ms: 1500 } };
        let line = serde_json::to_string(&req).unwrap();
        assert_eq!(line, r#"{"id":7,"op":{"op":"stall_disk","ms":1500}}"#);
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), req);
        let rep = Report::Reply {
            id: 7,
            answer: Answer::Transfer(TransferOutcome::Ok { served: Served { node: "n1".into(), token: 3 } }),
        };
        let line = serde_json::to_string(&rep).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&line).unwrap(), rep);
        assert!(serde_json::from_str::<Request>(r#"{"id":1,"op":{"op":"nonsense"}}"#).is_err());
    }

    /// `warden node` and the demo nodes print a transport event as the one `NodeEvent` type.
    #[test]
    fn a_peer_event_has_one_shape() {
        let down = Report::Peer {
            node: "n1".into(),
            event: NodeEvent::Down {
                peer: "n2".into(),
                cause: warden_cluster::DownCause::SessionClosed,
                silent_for: std::time::Duration::from_millis(1_234),
            },
        };
        let line = serde_json::to_string(&down).unwrap();
        assert_eq!(
            line,
            r#"{"ev":"peer","node":"n1","event":{"kind":"down","peer":"n2","cause":{"why":"session_closed"},"silent_ms":1234}}"#
        );
        assert_eq!(serde_json::from_str::<Report>(&line).unwrap(), down);
    }
}
