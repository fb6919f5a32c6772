//! A node's errors: [`ClusterError`], naming the node and the step that failed, and for each
//! step a typed cause holding the underlying error value (an `std::io::Error`, a rustls or
//! openraft error, ...) so a caller can act on it without reading text: a port in use is
//! `StartProblem::Listen` with `ErrorKind::AddrInUse`, a bad certificate file is
//! `TlsProblem::NoCertificate` or `Pem`, and so on.

use std::net::SocketAddr;
use std::time::Duration;

use crate::ledger::NodeId;

/// Errors of a node.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The node server could not start.
    #[error("node {name}: cannot start on {addr}: {cause}")]
    Start {
        /// The node's name.
        name: String,
        /// The address.
        addr: SocketAddr,
        /// Why.
        cause: StartProblem,
    },
    /// A remote actor cannot be watched.
    #[error("cannot watch {actor}: {cause}")]
    Watch {
        /// The actor.
        actor: String,
        /// Why.
        cause: WatchProblem,
    },
    /// A TLS file could not be used.
    #[error("TLS: {path}: {cause}")]
    Tls {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        cause: TlsProblem,
    },
    /// A connection to a peer failed.
    #[error("node {name}: cannot connect to {addr}: {cause}")]
    Connect {
        /// The node's name.
        name: String,
        /// The peer's address.
        addr: SocketAddr,
        /// Why.
        cause: Box<ConnectProblem>,
    },
    /// The node's Raft log or state, or an actor on them, could not be opened or started.
    #[error("node {name}: its Raft store: {cause}")]
    Storage {
        /// The node's name.
        name: String,
        /// Why.
        cause: Box<StorageProblem>,
    },
    /// The node's configuration does not say how it enters a group.
    #[error("node {name}: {refused}")]
    Entry {
        /// The node's name.
        name: String,
        /// Why.
        refused: crate::node::EntryRefused,
    },
    /// The node could not join the group.
    #[error("node {name}: not added to the group within {within:?}: {last}")]
    Join {
        /// The node's name.
        name: String,
        /// How long it tried ([`crate::NodeConfig::join_timeout`], [`crate::node::JOIN_TIMEOUT`]
        /// unless set).
        within: Duration,
        /// What its last attempt got.
        last: Box<crate::node::JoinAttempt>,
    },
    /// The node could not leave the group in an orderly way.
    #[error("node {name}: cannot leave the group: {cause}")]
    Leave {
        /// The node's name.
        name: String,
        /// Why.
        cause: Box<crate::node::LeaveFailure>,
    },
}

/// Why the node server could not start (in [`ClusterError::Start`]).
#[derive(Debug, thiserror::Error)]
pub enum StartProblem {
    /// The address could not be listened on (with TLS, where warden listens itself).
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
    /// No free port could be found for ractor_cluster's listener.
    #[error("no free port: {0}")]
    FreePort(std::io::Error),
    /// The listener's address could not be read.
    #[error("cannot read the listening address: {0}")]
    LocalAddr(std::io::Error),
    /// ractor_cluster's node server did not start (for instance: its port is in use).
    #[error("the node server did not start: {0}")]
    Server(ractor::SpawnErr),
    /// The heartbeat receiver did not start.
    #[error("the heartbeat receiver did not start: {0}")]
    Receiver(ractor::SpawnErr),
}

/// Why a remote actor cannot be watched (in [`ClusterError::Watch`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchProblem {
    /// The actor is on this node.
    #[error("the actor is local: supervise or link it instead")]
    Local,
    /// This node's server did not answer (it stopped).
    #[error("this node's server did not answer (it has stopped)")]
    ServerGone,
    /// No session with the actor's node.
    #[error("no connected node with id {0}")]
    NotConnected(u64),
    /// [`TransportConfig::max_watches`](crate::TransportConfig::max_watches) actors are
    /// watched already.
    #[error("{max} remote actors are watched already (TransportConfig::max_watches)")]
    TooMany {
        /// The bound.
        max: usize,
    },
}

/// What is wrong with a TLS file or setting (in [`ClusterError::Tls`]).
#[derive(Debug, thiserror::Error)]
pub enum TlsProblem {
    /// The file is missing, unreadable or not PEM.
    #[error("{0}")]
    Pem(tokio_rustls::rustls::pki_types::pem::Error),
    /// The file holds no certificate.
    #[error("no certificate in the file")]
    NoCertificate,
    /// rustls refused a certificate or key.
    #[error("{0}")]
    Rustls(tokio_rustls::rustls::Error),
    /// The client verifier could not be built from the CA certificates.
    #[error("{0}")]
    Verifier(tokio_rustls::rustls::server::VerifierBuilderError),
}

/// Why a connection to a peer failed (in [`ClusterError::Connect`]).
#[derive(Debug, thiserror::Error)]
pub enum ConnectProblem {
    /// ractor_cluster could not connect (the socket, the node server, or TLS).
    #[error("{0}")]
    Client(ractor_cluster::ClientConnectErr),
    /// The configured TLS server name is not a valid name.
    #[error("invalid TLS server name {name:?}: {error}")]
    ServerName {
        /// The name.
        name: String,
        /// rustls's error.
        error: tokio_rustls::rustls::pki_types::InvalidDnsNameError,
    },
}

/// What failed as a node opened its Raft store and started what runs on it (in
/// [`ClusterError::Storage`]).
#[derive(Debug, thiserror::Error)]
pub enum StorageProblem {
    /// The Raft database (its file, tables or the node's identity in it).
    #[error(transparent)]
    Open(crate::raft::log_store::OpenError),
    /// The state machine could not be loaded from it.
    #[error("the state machine: {0}")]
    StateMachine(openraft::StorageError<NodeId>),
    /// openraft refused warden's settings.
    #[error("openraft's settings: {0}")]
    Settings(openraft::ConfigError),
    /// openraft stopped.
    #[error("openraft: {0}")]
    Raft(openraft::error::Fatal<NodeId>),
    /// An actor of the node did not start.
    #[error("cannot start the {actor}: {error}")]
    Spawn {
        /// Which: `RPC actor` or `router`.
        actor: &'static str,
        /// ractor's error.
        error: ractor::SpawnErr,
    },
    /// The checkpoint service did not start.
    #[error("cannot start the checkpoint service: {0}")]
    Checkpoints(warden_checkpoint::StoreError),
}
