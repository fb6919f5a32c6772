//! The cluster layer of warden: nodes that agree, through an existing consensus engine
//! (openraft), on who is a member, which node holds each singleton and each durable key, and
//! every durable write, and that prove each holder's right with fencing tokens.
//!
//! * [`transport`]: ractor_cluster sessions between nodes (loopback by default, the cluster
//!   cookie, optional mutual TLS), phi-accrual heartbeats that catch killed and frozen nodes,
//!   remote watches.
//! * [`raft`]: openraft's log and state machine in redb, and its network over the transport.
//! * [`ledger`]: the replicated state and its one pure transition function.
//! * [`node`]: a member of the group ([`Node`]): found, join, leave, stop; its proposer, its
//!   checkpoint service on the replicated store ([`store`]), its singleton host ([`host`]),
//!   and, while it leads, the leader's loop, which carries out the pure [`placement`] plans.
//! * [`singleton`]: what users write to run an actor on exactly one node at a time,
//!   [`reads`]: linearizable reads for it, and [`route`]: how a message reaches it on another
//!   node (one router per node, not a proxy per singleton).
//!
//! One node per process: ractor's process groups and registry are process-wide.
//!
//! ```no_run
//! use warden_cluster::{Node, NodeConfig, SingletonContext, SingletonSpec};
//! # #[derive(Clone)] struct Counter;
//! # impl ractor::Actor for Counter {
//! #     type Msg = u64; type State = u64; type Arguments = ();
//! #     async fn pre_start(&self, _: ractor::ActorRef<u64>, _: ()) -> Result<u64, ractor::ActorProcessingErr> { Ok(0) }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let counter = SingletonSpec::new("counter", |_: &SingletonContext| (Counter, ()));
//! let node = Node::start(NodeConfig::new("n1", "cookie").data_dir("/tmp/n1").found(), vec![counter]).await?;
//! // Wherever the group placed it: on this node or another.
//! if let Some(counter) = node.locate::<u64>("counter") {
//!     counter.cast(1)?;
//! }
//! node.stop().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod error;
pub mod events;
pub mod host;
mod leader;
pub mod ledger;
pub mod node;
pub mod placement;
pub mod proposer;
pub mod raft;
pub mod reads;
pub mod route;
pub mod singleton;
pub mod store;
pub mod transport;

pub use error::{ClusterError, ConnectProblem, StartProblem, StorageProblem, TlsProblem, WatchProblem};
pub use events::{ClusterEvent, Phase, StopCause};
pub use ledger::NodeId;
pub use node::{entry, Entry, EntryRefused, JoinAttempt, LeaveFailure, Membership, Node, NodeConfig};
pub use reads::{NotServing, ReadError};
pub use route::SingletonRef;
pub use singleton::{SingletonContext, SingletonSpec};
pub use transport::{
    DownCause, NodeEvent, NodeView, PeerState, PeerStatus, RefusedCause, RemoteDown, TlsSettings, Transport,
    TransportConfig, HEARTBEAT_GROUP, MAX_TLS_HANDSHAKES,
};
