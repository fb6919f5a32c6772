//! The supervision core of warden: Erlang/OTP supervisors for `ractor` actors.
//!
//! Users write ordinary [`ractor::Actor`]s and declare the tree that keeps them alive:
//!
//! ```
//! use warden_core::{ChildSpec, Supervisor, SupervisorSpec};
//! use ractor::{Actor, ActorProcessingErr, ActorRef};
//!
//! #[derive(Clone)]
//! struct Counter;
//!
//! impl Actor for Counter {
//!     type Msg = u64;
//!     type State = u64;
//!     type Arguments = ();
//!     async fn pre_start(&self, _me: ActorRef<u64>, _: ()) -> Result<u64, ActorProcessingErr> {
//!         Ok(0)
//!     }
//!     async fn handle(&self, _me: ActorRef<u64>, n: u64, total: &mut u64) -> Result<(), ActorProcessingErr> {
//!         *total += n;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let counter = ChildSpec::worker("counter", Counter, ());
//! let handle = counter.handle(); // a ChildRef<u64>, known at compile time
//! let app = Supervisor::start("app", SupervisorSpec::one_for_one().child(counter)).await.unwrap();
//! handle.cast(5).unwrap(); // stays valid across restarts
//! app.shutdown().await;
//! # }
//! ```
//!
//! The layout mirrors OTP's: [`spec`] holds child and supervisor specifications,
//! [`decision`] the pure rules (restart types, strategies, intensity, backoff),
//! [`supervisor`] the actor that carries them out and its runtime API, `child` (private) the
//! host actor that restarts a crashed worker in place, [`handle`] the stable child handles,
//! [`event`] the typed supervision events and [`testkit`] helpers for users' own tests.

#![warn(missing_docs)]

mod child;
pub mod control;
pub mod decision;
pub mod event;
pub mod failure_detector;
pub mod handle;
mod metric;
pub mod panic_capture;
pub mod path;
mod protocol;
pub mod reason;
pub mod report;
pub mod restored;
pub mod spec;
pub mod stats;
pub mod supervisor;
pub mod testkit;
pub mod vocab;
mod watchdog;

pub use child::MAX_RENDERED_MESSAGE;
pub use event::{EventBus, SupervisorEvent};
pub use handle::{CallError, ChildRef, SendError};
pub use path::ActorPath;
pub use reason::{ExitReason, Ignore};
pub use report::{CrashReport, Decision, FlightRecorder};
pub use restored::{note_restored, RestoredFrom};
pub use spec::{
    AutoShutdown, Backoff, ChildSpec, ChildType, RestartType, Shutdown, Strategy, SupervisorSpec, TypedChildSpec,
    WorkerSpec, DEFAULT_MAX_CHILDREN,
};
pub use supervisor::{
    ChildCounts, ChildInfo, ChildStatus, Supervisor, SupervisorChildSpec, SupervisorControl, SupervisorError,
    SupervisorMsg, SupervisorRef, SupervisorStatus,
};
pub use watchdog::{heartbeat, MISSED_HEARTBEAT};

/// A specification that cannot be started; names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Two children share an id.
    #[error("two children have the id {0:?}; ids must be unique within a supervisor")]
    DuplicateId(String),
    /// An id is empty or contains `/`.
    #[error("invalid id {0:?}: ids must be non-empty and must not contain '/'")]
    BadId(String),
    /// A dynamic supervisor was given static children.
    #[error("a dynamic supervisor starts without children; add them with start_child")]
    DynamicWithChildren,
    /// A permanent child marked significant (OTP refuses this too).
    #[error("child {0:?} is significant and permanent; significant children must be transient or temporary")]
    SignificantPermanent(String),
}

/// Why a supervisor (tree) could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The specification is invalid.
    #[error("invalid supervisor spec: {0}")]
    Spec(SpecError),
    /// A child failed to start; the children already started were stopped in reverse order.
    #[error("child {path} failed to start: {cause}")]
    Failed {
        /// The path of the child that failed.
        path: ActorPath,
        /// Why.
        cause: String,
    },
}
