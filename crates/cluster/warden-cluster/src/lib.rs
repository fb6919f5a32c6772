//! The cluster layer of warden, on `ractor_cluster` (never a home-made transport).
//!
//! [`Node`]: a ractor_cluster node server bound to loopback by default, guarded by the cluster
//! cookie (and optionally mutual TLS), with phi-accrual heartbeats between nodes
//! ([`NodeEvent`]: up, suspected, recovered, down, refused), bounded handshakes and remote
//! monitoring. [`replication`]: checkpoints committed on a majority of nodes before they count.
//! [`singleton`]: actors that run on exactly one node, move on failover with their state, and
//! stop on the minority side of a split.

#![warn(missing_docs)]

pub mod node;
pub mod replication;
pub mod singleton;

pub use node::{
    ClusterError, Node, NodeConfig, NodeEvent, NodeView, PeerStatus, RemoteDown, TlsSettings, HEARTBEAT_GROUP,
};
pub use replication::{CatchUpError, ClusterReplicator, Replication, REPLICA_GROUP};
pub use singleton::{SingletonConfig, SingletonEvent, SingletonSpec, Singletons};
