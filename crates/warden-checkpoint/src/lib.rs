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

#![warn(missing_docs)]

pub mod checkpointed;
pub mod envelope;
pub mod redb_store;
pub mod service;
pub mod store;
mod writer;

pub use checkpointed::{Checkpoint, Checkpointed, EventSourced, IfDamaged, PersistError, SnapshotPolicy};
pub use envelope::{DecodeError, Migration};
pub use redb_store::RedbStore;
pub use service::{CheckpointConfig, CheckpointError, CheckpointEvent, CheckpointStats, Checkpoints};
pub use store::{MemoryStore, Replicated, Replicator, SnapshotInfo, Store, StoreError, WriteOp};
