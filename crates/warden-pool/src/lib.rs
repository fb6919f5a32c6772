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
//!
//! ```
//! use std::time::Duration;
//! use warden_pool::{Job, OnFull, PoolSpec, Routing};
//! use warden_core::{Supervisor, SupervisorSpec};
//! # #[derive(Clone)] struct Square;
//! # impl ractor::Actor for Square {
//! #     type Msg = Job<u64, u64>; type State = (); type Arguments = ();
//! #     async fn pre_start(&self, _: ractor::ActorRef<Self::Msg>, _: ()) -> Result<(), ractor::ActorProcessingErr> { Ok(()) }
//! #     async fn handle(&self, _: ractor::ActorRef<Self::Msg>, job: Self::Msg, _: &mut ()) -> Result<(), ractor::ActorProcessingErr> {
//! #         let n = *job.request(); job.reply(n * n); Ok(())
//! #     }
//! # }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (child, pool) = PoolSpec::new("squares", Square, (), 3)
//!     .routing(Routing::LeastLoaded)
//!     .capacity(64)
//!     .on_full(OnFull::Reject)
//!     .deadline(Duration::from_secs(1)) // a hung replica is killed; its request goes elsewhere
//!     .build();
//! let app = Supervisor::start("pool-doc", SupervisorSpec::one_for_one().child(child)).await?;
//! assert_eq!(pool.call(7).await?, 49);
//! assert_eq!(pool.stats().answered, 1);
//! app.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod job;
mod pool;
mod replica;
pub mod routing;

pub use job::{Job, PoolError};
pub use pool::{OnFull, Pool, PoolSpec, PoolStats, ReplicaState, ReplicaStats, DEFAULT_CAPACITY, DEFAULT_MAX_ATTEMPTS};
pub use routing::Routing;
