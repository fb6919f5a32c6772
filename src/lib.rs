//! warden: Erlang/OTP-grade fault tolerance for `ractor` actors.
//!
//! Write ordinary [`ractor::Actor`]s and declare, in code, the supervision tree that keeps
//! them alive: OTP's strategies, restart types, intensity limits, escalation and ordered
//! shutdown, plus restart backoff, child handles that stay valid across restarts, hang
//! detection, and one structured crash report per failure with MTBF, MTTR and availability.
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
//! let handle = echo.handle(); // a ChildRef<String>, valid across restarts
//! let app = Supervisor::start("app", SupervisorSpec::one_for_one().child(echo)).await?;
//! handle.cast("hello".to_string())?;
//! assert_eq!(app.count_children().await?.active, 1);
//! app.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layers and features
//!
//! This crate is the facade: it re-exports the layers under `crates/` and offers a
//! [`prelude`]. The supervision core is always there; each further layer is a Cargo feature,
//! and none is on by default, so a program that only wants supervision trees builds only the
//! core (and ractor, tokio, tracing and a few small crates).
//!
//! | feature | module | what it adds | notable dependencies |
//! |---|---|---|---|
//! | (always) | [`warden_core`], re-exported at the top | supervisors, child specs and handles, events, crash reports, reliability figures, hang detection, the test kit | ractor, tokio, tracing, metrics |
//! | `checkpoint` | `checkpoint` | checkpointed and durable actors, snapshot policies, the embedded store | redb, rmp-serde |
//! | `pool` | `pool` | supervised replica pools with routing and failover | none |
//! | `observe` | `observe` | Prometheus exposition, a loopback `/metrics` endpoint, the observer page | axum, metrics-exporter-prometheus |
//! | `cluster` | `cluster` | nodes on ractor_cluster, failure detection of nodes, replicated checkpoints, singletons (implies `checkpoint`) | ractor_cluster, rustls |
//! | `full` | | `checkpoint`, `pool` and `observe` | |
//!
//! `cluster` switches on ractor's own `cluster` feature, under which ractor no longer
//! implements `ractor::Message` for every type: each message type of the program must then
//! say so, with `#[derive(ractor_cluster::RactorMessage)]` for local messages or
//! `RactorClusterMessage` for messages that cross nodes. Without `cluster`, no message type
//! needs anything.
//!
//! The repository's `docs/` map the four steps of fault tolerance (detect, localise,
//! recover, prevent) onto these modules; `docs/architecture.md` has the code map.

#![warn(missing_docs)]

pub use ractor;
/// Checkpoint recovery: checkpointed and durable actors, the snapshot service and its stores.
#[cfg(feature = "checkpoint")]
pub use warden_checkpoint as checkpoint;
/// The cluster layer on ractor_cluster: nodes, their failure detection, replicated
/// checkpoints and singletons.
#[cfg(feature = "cluster")]
pub use warden_cluster as cluster;
pub use warden_core;
pub use warden_core::{
    decision, event, failure_detector, handle, heartbeat, panic_capture, path, reason, report, spec, supervisor,
    testkit, ActorPath, AutoShutdown, Backoff, CallError, ChildCounts, ChildInfo, ChildRef, ChildSpec, ChildStatus,
    ChildType, CrashReport, Decision, EventBus, ExitReason, FlightRecorder, Ignore, RestartType, RestoredFrom,
    SendError, Shutdown, SpecError, StartError, Strategy, Supervisor, SupervisorChildSpec, SupervisorControl,
    SupervisorError, SupervisorEvent, SupervisorRef, SupervisorSpec, SupervisorStatus, TypedChildSpec, WorkerSpec,
    MISSED_HEARTBEAT,
};
/// The observation layer: Prometheus exposition of the `warden_*` metrics and a loopback
/// `/metrics` endpoint.
#[cfg(feature = "observe")]
pub use warden_observe as observe;
/// Supervised worker pools: routing, failover of in-flight requests, bounded queues.
#[cfg(feature = "pool")]
pub use warden_pool as pool;

/// The names most programs need: `use warden::prelude::*;`.
pub mod prelude {
    pub use warden_core::{
        AutoShutdown, Backoff, ChildRef, ChildSpec, ChildStatus, ExitReason, RestartType, Shutdown, Strategy,
        Supervisor, SupervisorEvent, SupervisorRef, SupervisorSpec, WorkerSpec,
    };
}
