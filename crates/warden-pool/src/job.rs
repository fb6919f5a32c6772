//! Requests in a pool: the [`Job`] a replica receives, the ticket behind it, and the errors a
//! caller can get back.
//!
//! Every request has one ticket, shared by every copy of its job, holding the request (so a
//! retry needs no `Clone`), the caller's reply channel and the request's phase. A phase change
//! happens under the ticket's lock, which is what makes "answered once, or returned with an
//! error, never lost" hold when a replica crashes: a job is only handled by the replica whose
//! dispatch it carries (`claim`), a reply only counts from the replica that claimed it, and a
//! job dropped without a reply (the handler failed, was killed, or forgot to answer) hands the
//! ticket back to the pool.
//!
//! ```
//! use ractor::{Actor, ActorProcessingErr, ActorRef};
//! use warden_pool::Job;
//!
//! /// A replica: the pool's messages are jobs, each answered (or dropped) exactly once.
//! #[derive(Clone)]
//! struct Upper;
//!
//! impl Actor for Upper {
//!     type Msg = Job<String, String>;
//!     type State = ();
//!     type Arguments = ();
//!     async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
//!         Ok(())
//!     }
//!     async fn handle(&self, _: ActorRef<Self::Msg>, job: Self::Msg, _: &mut ()) -> Result<(), ActorProcessingErr> {
//!         let answer = job.request().to_uppercase();
//!         job.reply(answer); // dropping the job unanswered would hand it back to the pool
//!         Ok(())
//!     }
//! }
//! # let _ = Upper;
//! ```

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::pool::PoolInner;

/// Why a request came back without an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Every replica that could take it is at capacity, and the pool rejects when full.
    #[error("pool {pool}: full ({capacity} requests per replica); request rejected")]
    Full {
        /// The pool's name.
        pool: String,
        /// The per-replica capacity.
        capacity: usize,
    },
    /// It was queued, then dropped to make room for a newer request (pool policy
    /// `ShedOldest`); it never started.
    #[error("pool {pool}: request shed to make room for a newer one (it never started)")]
    Shed {
        /// The pool's name.
        pool: String,
    },
    /// It failed on as many replicas as it may be tried on (1 for `call_once`).
    #[error("pool {pool}: request failed after {attempts} attempt(s); last: {last}")]
    Failed {
        /// The pool's name.
        pool: String,
        /// How many replicas started it.
        attempts: u32,
        /// What happened the last time.
        last: String,
    },
    /// It could not be placed on a replica (the pool was stopped, or every replica refused it
    /// too many times).
    #[error("pool {pool}: request could not be placed on a replica: {cause}")]
    Unplaced {
        /// The pool's name.
        pool: String,
        /// Why.
        cause: String,
    },
}

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Sent to `replica` as dispatch number `dispatch`, not started.
    Queued { replica: usize, dispatch: u32 },
    /// Being handled by `replica` (dispatch `dispatch`).
    Started { replica: usize, dispatch: u32 },
    /// Answered, or returned with an error.
    Finished,
}

pub(crate) struct TicketState<Rep> {
    pub phase: Phase,
    pub reply: Option<oneshot::Sender<Result<Rep, PoolError>>>,
    /// How many replicas started it.
    pub starts: u32,
    /// How many times it was sent to a replica.
    pub dispatches: u32,
    pub last_failure: Option<String>,
}

/// One request and its caller.
pub(crate) struct Ticket<Req, Rep> {
    pub request: Req,
    pub key: Option<u64>,
    /// May it be started again after a failure?
    pub retry: bool,
    pub state: Mutex<TicketState<Rep>>,
}

impl<Req, Rep> Ticket<Req, Rep> {
    pub(crate) fn new(
        request: Req,
        key: Option<u64>,
        retry: bool,
        reply: oneshot::Sender<Result<Rep, PoolError>>,
    ) -> Self {
        Ticket {
            request,
            key,
            retry,
            state: Mutex::new(TicketState {
                phase: Phase::Finished,
                reply: Some(reply),
                starts: 0,
                dispatches: 0,
                last_failure: None,
            }),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, TicketState<Rep>> {
        // Phase changes are single assignments: a panic cannot leave a half-made change.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request as a replica receives it. Read it with [`Job::request`], answer with
/// [`Job::reply`]. A job dropped without an answer (the handler returned an error, panicked,
/// was killed as hung, or simply forgot) goes back to the pool, which retries it on another
/// replica or returns an error to the caller; it is never silently lost.
pub struct Job<Req: Send + Sync + 'static, Rep: Send + 'static> {
    pub(crate) ticket: Arc<Ticket<Req, Rep>>,
    pub(crate) pool: Arc<PoolInner<Req, Rep>>,
    pub(crate) replica: usize,
    pub(crate) dispatch: u32,
    /// Answered, or skipped: nothing to hand back on drop.
    pub(crate) done: bool,
}

#[cfg(feature = "cluster")]
impl<Req: Send + Sync + 'static, Rep: Send + 'static> ractor::Message for Job<Req, Rep> {}

impl<Req: Send + Sync + 'static, Rep: Send + 'static> std::fmt::Debug for Job<Req, Rep> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("replica", &self.replica).field("dispatch", &self.dispatch).finish()
    }
}

impl<Req: Send + Sync + 'static, Rep: Send + 'static> Job<Req, Rep> {
    /// The request.
    pub fn request(&self) -> &Req {
        &self.ticket.request
    }

    /// The request's routing key, for key-affinity calls.
    pub fn key(&self) -> Option<u64> {
        self.ticket.key
    }

    /// The index of the replica handling it.
    pub fn replica(&self) -> usize {
        self.replica
    }

    /// How many replicas have started this request, this one included.
    pub fn attempt(&self) -> u32 {
        self.ticket.lock().starts
    }

    /// Answers the caller. A reply from a replica that no longer owns the request (it was
    /// moved or returned meanwhile) is dropped.
    pub fn reply(mut self, value: Rep) {
        self.done = true;
        self.pool.finish(&self.ticket, self.replica, self.dispatch, value);
    }

    /// Forgets the job without handing it back (it was skipped, or a send failed and the
    /// sender keeps responsibility).
    pub(crate) fn defuse(mut self) {
        self.done = true;
    }
}

impl<Req: Send + Sync + 'static, Rep: Send + 'static> Drop for Job<Req, Rep> {
    fn drop(&mut self) {
        if !self.done {
            let why = if std::thread::panicking() {
                format!("replica {} panicked while handling it", self.replica)
            } else {
                format!("replica {} ended without answering (error, kill, stop or a dropped job)", self.replica)
            };
            self.pool.handed_back(&self.ticket, self.replica, self.dispatch, why);
        }
    }
}
