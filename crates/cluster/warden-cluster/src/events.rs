//! What a node tells its owner: its singletons starting and stopping, its lease, leadership,
//! and the protocol steps a fault injector can stop a node at.
//!
//! Events go to a bounded broadcast channel ([`EVENT_CAPACITY`]); a subscriber that falls
//! behind loses the oldest and is told how many (`RecvError::Lagged`). The node never waits
//! for its subscribers.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::ledger::NodeId;

/// How many events a subscriber may fall behind.
pub const EVENT_CAPACITY: usize = 4096;

/// A protocol step a node reports when it reaches it (the demo's `stop-at` faults freeze a
/// node right there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// This node just became the group's leader.
    Leader,
    /// This node is about to start a singleton it was granted.
    Grant,
    /// This node stopped a singleton it hands off, and is about to release it.
    Handoff,
    /// The leader is about to propose evicting a node.
    Evict,
    /// This follower heard its leader is down and is about to stand for election
    /// ([`raft::standing`](crate::raft::standing)).
    Stand,
}

impl Phase {
    /// Its name, as the plan format spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Leader => "leader",
            Phase::Grant => "grant",
            Phase::Handoff => "handoff",
            Phase::Evict => "evict",
            Phase::Stand => "stand",
        }
    }

    /// Every step.
    pub const ALL: [Phase; 5] = [Phase::Leader, Phase::Grant, Phase::Handoff, Phase::Evict, Phase::Stand];
}

/// Why an instance was stopped ([`ClusterEvent::Stopped`]). Its `Display` is the text the
/// event's log line carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum StopCause {
    /// Its grant was revoked, or the node's lease ran out: another node may own it now.
    #[error("its grant or the node's lease is gone")]
    Revoked,
}

/// One thing that happened on a node. It serializes as `{"kind": "started", "name": ...}`
/// (the shape `warden node` and the demo's nodes print).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// An instance of a singleton started here.
    Started {
        /// The singleton.
        name: String,
        /// Its grant's token.
        token: u64,
    },
    /// An instance stopped here (killed: its grant or the lease went).
    Stopped {
        /// The singleton.
        name: String,
        /// Why (in JSON: `"why": "revoked"`).
        why: StopCause,
    },
    /// An instance could not start.
    StartFailed {
        /// The singleton.
        name: String,
        /// Why.
        error: String,
    },
    /// A singleton was handed off from here (stopped gracefully and released).
    HandedOff {
        /// The singleton.
        name: String,
    },
    /// The node's lease holds again: it serves.
    Serving,
    /// The node's lease ran out: it serves nothing until it renews.
    NotServing,
    /// The group's leader is now `node` (this node or another).
    Leader {
        /// The leader.
        #[serde(rename = "id")]
        node: NodeId,
    },
    /// This node became a voter: it joined as a learner, caught up, and the leader promoted
    /// it, and the change is complete (no joint configuration left, so the old voters alone
    /// no longer decide). A new founder may report it as it founds the group; a node that
    /// restarts as a voter does not.
    Joined {
        /// Its id.
        id: NodeId,
    },
    /// This node reached a protocol step.
    Phase {
        /// The step.
        step: Phase,
        /// What it concerns (a singleton, a node).
        detail: String,
    },
}

/// The sending side (cheap to clone).
#[derive(Clone, Debug)]
pub struct Events(broadcast::Sender<ClusterEvent>);

impl Default for Events {
    fn default() -> Self {
        Events(broadcast::channel(EVENT_CAPACITY).0)
    }
}

impl Events {
    /// Publishes `event` (nobody listening is fine).
    pub fn send(&self, event: ClusterEvent) {
        let _ = self.0.send(event);
    }

    /// A new subscriber.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_that_falls_behind_by_more_than_the_bound_is_told_how_many_it_lost() {
        let events = Events::default();
        let mut rx = events.subscribe();
        for token in 0..=EVENT_CAPACITY as u64 {
            events.send(ClusterEvent::Started { name: "s".into(), token });
        }
        assert_eq!(rx.try_recv(), Err(broadcast::error::TryRecvError::Lagged(1)), "one event too many");
        // It goes on from the oldest event still held.
        assert!(matches!(rx.try_recv(), Ok(ClusterEvent::Started { token: 1, .. })));
    }
}
