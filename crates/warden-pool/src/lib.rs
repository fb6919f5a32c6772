//! Supervised worker pools for warden: redundancy and load balancing that fail over without
//! losing requests.
//!
//! A [`PoolSpec`] declares N replicas of an ordinary ractor actor whose message type is
//! [`Job<Req, Rep>`]; [`PoolSpec::build`] gives the pool's child spec, which goes anywhere in a
//! supervision tree (it is a supervisor: it restarts its replicas and escalates like any
//! other), and the [`Pool`] callers send requests through. Routing is
//! round-robin, least-loaded or key affinity ([`Routing`]); a request whose replica crashes,
//! errs or hangs is retried elsewhere (bounded) or returned with an error that says what
//! happened ([`PoolError`]); queues are bounded, and a full pool rejects or sheds ([`OnFull`]).
//!
//! Layout: [`routing`] (pure rules), [`job`] (requests, tickets, errors), `pool` (the spec, the
//! shared state and the handle), `replica` (the host actor of one replica).

#![warn(missing_docs)]

pub mod job;
mod pool;
mod replica;
pub mod routing;

pub use job::{Job, PoolError};
pub use pool::{OnFull, Pool, PoolSpec, PoolStats, ReplicaState, ReplicaStats, DEFAULT_CAPACITY, DEFAULT_MAX_ATTEMPTS};
pub use routing::Routing;
