//! The consensus engine under the cluster: openraft, with its log and state machine kept in
//! redb and its messages carried over the nodes' ractor_cluster sessions.
//!
//! warden does not implement consensus. It gives openraft three things: a log store
//! ([`log_store`], one redb file per node), a state machine ([`state_machine`], the
//! [`Ledger`](crate::ledger::Ledger) in memory, snapshotted into the same file), and a network
//! ([`network`], an RPC actor per node reached through a ractor process group). What travels
//! through the log is a [`Batch`] of ledger [`Command`]s; its answer,
//! [`Answers`], holds every command's outcomes.
//!
//! [`timing`] holds the timing settings and the rules that tie them to the lease bound;
//! [`appender`] merges the batches a leader is asked to commit into one entry per round;
//! [`standing`] has a follower stand for election as soon as the leases allow once the
//! transport declares its leader down.

pub mod appender;
pub mod log_store;
pub mod network;
pub mod standing;
pub mod state_machine;
pub mod timing;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::ledger::{Command, NodeId, Outcome};

/// A node as the Raft membership knows it: its name and the address of its cluster port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's name (`n1`).
    pub name: String,
    /// `host:port` of its ractor_cluster node server.
    pub addr: String,
}

/// One Raft log entry's payload: the commands one node proposed together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch(pub Vec<Command>);

/// The answer to a [`Batch`]: each command's outcomes, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answers(pub Vec<Vec<Outcome>>);

openraft::declare_raft_types!(
    /// warden's Raft types.
    pub TypeConfig:
        D = Batch,
        R = Answers,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of a node.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// A storage error.
pub type StorageError = openraft::StorageError<NodeId>;

/// openraft's own storage suite (`openraft::testing::Suite`) run against the log store and
/// the state machine on a real redb file: the engine's checks of what it needs from storage
/// (log state after appends, truncation and purges, the vote, snapshots, applying entries).
#[cfg(test)]
mod engine_suite {
    use super::log_store::{LogStore, RaftDb};
    use super::state_machine::StateMachine;
    use super::{StorageError, TypeConfig};

    struct OnDisk;

    impl openraft::testing::StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for OnDisk {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().map_err(|e| super::timing::storage_error("a temporary directory", e))?;
            let db = RaftDb::open(Some(dir.path())).map_err(|e| super::timing::storage_error("open", e))?;
            let sm = StateMachine::open(db.clone())?;
            Ok((dir, LogStore::new(db), sm))
        }
    }

    #[test]
    fn the_store_passes_the_engines_storage_suite() {
        openraft::testing::Suite::test_all(OnDisk).expect("openraft's storage suite passes");
    }
}
