//! The cluster layer of warden, on `ractor_cluster` (never a home-made transport).
//!
//! Today: [`Node`], a ractor_cluster node server bound to loopback by default and guarded by the
//! cluster cookie, with phi-accrual heartbeats between nodes ([`NodeEvent`]: up, suspected,
//! recovered, down, refused). Planned (issue 6): TLS, handshake timeouts, remote monitoring,
//! cluster singletons with replicated checkpoints, and the demo clusters.

#![warn(missing_docs)]

pub mod node;

pub use node::{ClusterError, Node, NodeConfig, NodeEvent, RemoteDown, TlsSettings, HEARTBEAT_GROUP};
