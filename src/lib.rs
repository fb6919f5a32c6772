//! warden: Erlang/OTP-grade fault tolerance for `ractor` actors.
//!
//! Write ordinary [`ractor::Actor`]s and declare, in code, the supervision tree that keeps
//! them alive: OTP's strategies, restart types, intensity limits, escalation and ordered
//! shutdown, plus restart backoff and child handles that stay valid across restarts.
//!
//! This crate is the facade: it re-exports the layers under `crates/` and offers a
//! [`prelude`]. Today it holds the supervision core with detection and localisation
//! ([`warden_core`]), the observation layer ([`observe`]) and checkpoint recovery
//! ([`checkpoint`]); pools and the cluster layer are planned as further crates (see
//! `docs/architecture.md`).
//!
//! ```
//! use warden::prelude::*;
//! # #[derive(Clone)] struct Echo;
//! # impl ractor::Actor for Echo {
//! #     type Msg = String; type State = (); type Arguments = ();
//! #     async fn pre_start(&self, _: ractor::ActorRef<String>, _: ()) -> Result<(), ractor::ActorProcessingErr> { Ok(()) }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let echo = ChildSpec::worker("echo", Echo, ());
//! let app = Supervisor::start("app", SupervisorSpec::one_for_one().child(echo)).await?;
//! assert_eq!(app.count_children().await?.active, 1);
//! app.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub use ractor;
/// Checkpoint recovery: checkpointed and durable actors, the snapshot service and its stores.
pub use warden_checkpoint as checkpoint;
/// The cluster layer on ractor_cluster: nodes and their failure detection.
pub use warden_cluster as cluster;
pub use warden_core;
pub use warden_core::{
    decision, event, failure_detector, handle, heartbeat, panic_capture, path, reason, report, spec, supervisor,
    testkit, ActorPath, AutoShutdown, Backoff, CallError, ChildCounts, ChildInfo, ChildRef, ChildSpec, ChildStatus,
    ChildType, CrashReport, Decision, EventBus, ExitReason, FlightRecorder, RestartType, RestoredFrom, SendError,
    Shutdown, SpecError, StartError, Strategy, Supervisor, SupervisorControl, SupervisorError, SupervisorEvent,
    SupervisorRef, SupervisorSpec, MISSED_HEARTBEAT,
};
/// The observation layer: Prometheus exposition of the `warden_*` metrics and a loopback
/// `/metrics` endpoint.
pub use warden_observe as observe;
/// Supervised worker pools: routing, failover of in-flight requests, bounded queues.
pub use warden_pool as pool;

/// The names most programs need: `use warden::prelude::*;`.
pub mod prelude {
    pub use warden_core::{
        AutoShutdown, Backoff, ChildRef, ChildSpec, ChildStatus, ExitReason, RestartType, Shutdown, Strategy,
        Supervisor, SupervisorEvent, SupervisorRef, SupervisorSpec,
    };
}
