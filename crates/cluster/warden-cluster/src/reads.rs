//! Linearizable reads: the read-index protocol on openraft, for singleton instances.
//!
//! An instance holds the only grant of its singleton (writes carry its token and are checked
//! in the log), and everything it acknowledged was committed first. So when the leader
//! confirms it still leads (a round of heartbeats to a majority) and reports its commit index,
//! and this node has applied up to that index and still sees the instance's grant, no other
//! instance can have written anything the instance does not know: its answer is
//! linearizable. Followers ask the leader over the RPC network; the leader asks openraft.
//! Each confirmation is bounded by [`READ_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use crate::ledger::NodeId;
use crate::raft::network::{self, CallError, Declined, NotDone, Reply, Request};
use crate::raft::state_machine::Shared;
use crate::raft::Raft;
use crate::singleton::Gate;
use openraft::error::Fatal;

/// The longest a linearizable read waits for its confirmation.
pub const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a singleton may not answer a linearizable read now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotServing {
    /// The instance's lease ran out, or its grant was taken away.
    #[error("singleton {0:?} is not served here any more")]
    LostGrant(String),
    /// No leader confirmed within [`READ_TIMEOUT`] (no majority reachable, an election).
    #[error("no leader confirmed the read of {name:?}: {cause}")]
    NoConfirmation {
        /// The singleton.
        name: String,
        /// Why.
        cause: ReadError,
    },
}

/// Why a read could not be confirmed linearizable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// This node knows no leader (an election, or no majority reachable).
    #[error("no leader known")]
    NoLeader,
    /// The node asked was no longer the leader.
    #[error("the leader moved")]
    LeaderMoved,
    /// The leader could not confirm that it still leads.
    #[error("the leader could not confirm it leads: {0}")]
    NotConfirmed(Declined),
    /// The leader's Raft failed (stopped, panicked, a storage error).
    #[error("the leader's Raft failed: {0}")]
    RaftFailed(Box<Fatal<NodeId>>),
    /// The leader did not answer.
    #[error("the leader did not answer: {0}")]
    Unreachable(CallError),
    /// The leader answered something other than a read index.
    #[error("the leader answered something other than a read index")]
    WrongAnswer,
    /// No confirmation within [`READ_TIMEOUT`].
    #[error("no confirmation within {READ_TIMEOUT:?}")]
    TimedOut,
    /// This node did not apply the confirmed index within [`READ_TIMEOUT`].
    #[error("this node did not apply entry {0} within {READ_TIMEOUT:?}")]
    NotApplied(u64),
}

impl From<NotDone> for ReadError {
    fn from(not_done: NotDone) -> ReadError {
        match not_done {
            NotDone::NotLeader(_) => ReadError::LeaderMoved,
            NotDone::Failed(declined) => ReadError::NotConfirmed(declined),
            NotDone::Unknown(fatal) => ReadError::RaftFailed(fatal),
            NotDone::NoAnswer(_) => ReadError::TimedOut,
        }
    }
}

/// A node's way to confirm reads.
#[derive(Clone)]
pub struct ReadBarrier {
    pub(crate) me: NodeId,
    pub(crate) raft: Raft,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for ReadBarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadBarrier")
    }
}

impl ReadBarrier {
    /// The leader's commit index, once it confirmed it leads.
    pub async fn read_index(&self) -> Result<u64, ReadError> {
        let leader = self.raft.metrics().borrow().current_leader.ok_or(ReadError::NoLeader)?;
        if leader == self.me {
            return match self.raft.ensure_linearizable().await {
                Ok(id) => Ok(id.map_or(0, |l| l.index)),
                Err(e) => Err(ReadError::from(NotDone::of_read(e))),
            };
        }
        match network::call(leader, &Request::ReadIndex, READ_TIMEOUT).await {
            Ok(Reply::ReadIndex(Ok(index))) => Ok(index),
            Ok(Reply::ReadIndex(Err(not_done))) => Err(ReadError::from(not_done)),
            Ok(_) => Err(ReadError::WrongAnswer),
            Err(e) => Err(ReadError::Unreachable(e)),
        }
    }

    /// Confirms that a read answered now from this node's applied state is linearizable:
    /// the leader's commit index, applied here (each step within [`READ_TIMEOUT`]).
    pub async fn barrier(&self) -> Result<u64, ReadError> {
        let index = tokio::time::timeout(READ_TIMEOUT, self.read_index()).await.map_err(|_| ReadError::TimedOut)??;
        tokio::time::timeout(READ_TIMEOUT, self.shared.applied_at_least(index))
            .await
            .map_err(|_| ReadError::NotApplied(index))?;
        Ok(index)
    }

    /// See [`SingletonContext::linearizable`](crate::singleton::SingletonContext::linearizable).
    pub(crate) async fn confirm(&self, name: &str, token: u64, gate: &Gate) -> Result<(), NotServing> {
        self.barrier().await.map_err(|cause| NotServing::NoConfirmation { name: name.to_string(), cause })?;
        let still_mine =
            self.shared.read(|l| l.singletons.get(name).and_then(|s| s.ownership.holder()) == Some((self.me, token)));
        if still_mine && gate.open() {
            Ok(())
        } else {
            Err(NotServing::LostGrant(name.to_string()))
        }
    }
}
