//! Checkpoint recovery for warden: restarts that restore state.
//!
//! An actor opts in by implementing [`Checkpoint`] (what to save and how to put it back) and
//! being wrapped in [`Checkpointed`] with a [`SnapshotPolicy`]. Every (re)start then restores
//! the newest good snapshot before the first message; durable actors ([`EventSourced`])
//! commit each change to a journal before replying and replay it on recovery. A node's
//! [`Checkpoints`] service owns the snapshot actor, the group-committing writer thread and the
//! [`Store`] (by default [`RedbStore`], one redb file; [`MemoryStore`] for tests;
//! [`Replicated`] to copy committed batches elsewhere).
//!
//! Layout: [`envelope`] (the checked byte format), [`store`] and [`redb_store`] (where bytes
//! live), `writer` (group commit), [`service`] (the node's service and its API),
//! [`checkpointed`] (the user's traits and the wrapper actor).
//!
//! A durable account: each deposit is committed to the journal before it is acknowledged, so a
//! crash right after the answer loses nothing.
//!
//! ```
//! use std::time::Duration;
//! use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
//! use serde::{Deserialize, Serialize};
//! use warden_checkpoint::{Checkpoint, Checkpointed, CheckpointConfig, Checkpoints, EventSourced, MemoryStore, SnapshotPolicy};
//! use warden_core::{ChildSpec, Supervisor, SupervisorSpec};
//!
//! #[derive(Clone)]
//! struct Account;
//! enum Cmd { Deposit(u64, RpcReplyPort<u64>), Balance(RpcReplyPort<u64>), Crash }
//! #[derive(Serialize, Deserialize)]
//! struct Deposited(u64);
//!
//! impl Actor for Account {
//!     type Msg = Cmd;
//!     type State = u64;
//!     type Arguments = ();
//!     async fn pre_start(&self, _: ActorRef<Cmd>, _: ()) -> Result<u64, ActorProcessingErr> {
//!         Ok(0)
//!     }
//!     async fn handle(&self, _: ActorRef<Cmd>, cmd: Cmd, balance: &mut u64) -> Result<(), ActorProcessingErr> {
//!         match cmd {
//!             Cmd::Deposit(n, reply) => {
//!                 self.persist(balance, Deposited(n)).await?; // committed, applied, then answered
//!                 let _ = reply.send(*balance);
//!             }
//!             Cmd::Balance(reply) => { let _ = reply.send(*balance); }
//!             Cmd::Crash => panic!("a bug"),
//!         }
//!         Ok(())
//!     }
//! }
//! impl Checkpoint for Account {
//!     type Snapshot = u64;
//!     fn snapshot(&self, balance: &u64) -> u64 { *balance }
//!     fn restore(&self, balance: &mut u64, saved: u64) { *balance = saved }
//! }
//! impl EventSourced for Account {
//!     type Event = Deposited;
//!     fn apply(&self, balance: &mut u64, Deposited(n): &Deposited) { *balance += n }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let checkpoints = Checkpoints::start(MemoryStore::new(), CheckpointConfig::default()).await?;
//! let policy = SnapshotPolicy::new().every_messages(100);
//! let alice = ChildSpec::worker("alice", Checkpointed::durable(Account, &checkpoints, "acct/alice", policy), ());
//! let handle = alice.handle();
//! let app = Supervisor::start("durable-doc", SupervisorSpec::one_for_one().child(alice)).await?;
//! let wait = Some(Duration::from_secs(5));
//! assert_eq!(handle.call(|r| Cmd::Deposit(30, r), wait).await?, 30);
//! handle.cast(Cmd::Crash)?;                                     // restarted: snapshot + journal replay
//! assert_eq!(handle.call(Cmd::Balance, wait).await?, 30);
//! app.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod checkpointed;
pub mod envelope;
pub mod redb_store;
pub mod service;
pub mod store;
mod writer;

pub use checkpointed::{
    Checkpoint, Checkpointed, EventSourced, IfDamaged, PersistError, SnapshotPolicy, DEFAULT_MAX_JOURNAL,
};
pub use envelope::{DecodeError, EncodeError, EncodeProblem, Migration, NoMigration};
pub use redb_store::{OpenProblem, RedbStore};
pub use service::{CheckpointConfig, CheckpointError, CheckpointEvent, CheckpointStats, Checkpoints};
pub use store::{
    Cause, CommitDone, MemoryStore, Replicated, Replicator, SnapshotInfo, Store, StoreError, StoreProblem, WriteOp,
};
